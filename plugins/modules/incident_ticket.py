#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: incident_ticket
short_description: Open, comment on and resolve the ticket of an AKIG incident, idempotently
version_added: "0.1.0"
author: AKIG Engineering Team (@akig-sre)
description:
  - Manages the ticket of one incident in AKIG's ticket tracker (REST API C(/incidents) with a
    Bearer token). The ticket is found by the incident id it was opened for (C(GET
    /incidents?incident_id=)), so every state is idempotent.
  - O(state=present) opens the ticket when none exists; an existing ticket is returned unchanged
    (C(changed=false)) whatever its status.
  - O(state=commented) adds O(comment) unless a comment with the same text is already there.
  - O(state=resolved) sets the status to C(resolved) (and adds O(comment) when given and not there yet).
  - "O(metadata) is written at the end of the description as C(key: JSON) lines under a marker line and
    returned parsed as RV(metadata), so a later run that joins the incident can recover it."
options:
  base_url:
    description:
      - Base URL of the tracker API, usually C(akig_ticket_base_url), for example
        V(https://tickets.akig.internal/api/v1).
    type: str
    required: true
  api_token:
    description:
      - Bearer token of the tracker API, usually C(akig_ticket_api_token).
    type: str
    required: true
  incident_id:
    description:
      - Incident id the ticket belongs to, for example V(INC-20261127-1423-P1-3f9a).
    type: str
    required: true
  state:
    description:
      - Wanted state of the ticket.
    type: str
    choices: [present, resolved, commented]
    default: present
  title:
    description:
      - Title of a new ticket. Needed to open one (O(state=present) when no ticket exists).
    type: str
  severity:
    description:
      - Severity of a new ticket. Needed to open one.
    type: str
    choices: [P1, P2, P3]
  description:
    description:
      - Description of a new ticket; O(metadata) is appended to it.
    type: str
    default: ""
  metadata:
    description:
      - Key facts written to the description of a new ticket (for example C(declared_start),
        C(runbook)). Keys are simple names; values any JSON value.
    type: dict
    default: {}
  comment:
    description:
      - Comment to add. Required with O(state=commented); optional with O(state=resolved).
    type: str
  timeout:
    description:
      - Seconds to wait for each tracker call.
    type: int
    default: 5
  validate_certs:
    description:
      - Verify the tracker's TLS certificate.
    type: bool
    default: true
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - Reads the ticket and reports in RV(actions) what would change, without changing it.
      - "Because a preceding O(state=present) task did not really open the ticket, a missing ticket is a
        warning rather than an error in check mode, and so are a missing O(title) or O(severity).
        This also makes C(check_mode: true) a read-only lookup of an incident's ticket."
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: Status and number of comments before and after.
notes:
  - "The module talks HTTP only; run it on the controller (C(delegate_to: localhost))."
  - A tracker failure fails the task with the HTTP status and the tracker's message, never the token.
seealso:
  - module: akig.runbooks.incident_notify
"""

EXAMPLES = r"""
- name: Open the ticket of the incident (idempotent by incident id)
  akig.runbooks.incident_ticket:
    base_url: "{{ akig_ticket_base_url }}"
    api_token: "{{ akig_ticket_api_token }}"
    incident_id: "{{ akig_incident.id }}"
    title: AKIG dashboard unavailable
    severity: P1
    description: Opened by runbook rb-p1-001-critical-bug.
    metadata:
      declared_start: "{{ akig_incident.declared_start }}"
      runbook: rb-p1-001-critical-bug
  delegate_to: localhost
  no_log: true

- name: Look the ticket of an incident up without changing anything
  akig.runbooks.incident_ticket:
    base_url: "{{ akig_ticket_base_url }}"
    api_token: "{{ akig_ticket_api_token }}"
    incident_id: "{{ lookup('ansible.builtin.env', 'AKIG_INCIDENT_ID') }}"
  check_mode: true
  delegate_to: localhost
  register: __ticket
  no_log: true

- name: Resolve the ticket with the measured figures
  akig.runbooks.incident_ticket:
    base_url: "{{ akig_ticket_base_url }}"
    api_token: "{{ akig_ticket_api_token }}"
    incident_id: "{{ akig_incident.id }}"
    state: resolved
    comment: "Resolved by failover; RTO 4 min, RPO 0 s."
  delegate_to: localhost
  no_log: true
"""

RETURN = r"""
found:
  description: Whether a ticket existed for the incident before the task.
  returned: always
  type: bool
  sample: true
ticket_id:
  description: Id of the incident's ticket; null when none exists (or, in check mode, would be opened).
  returned: always
  type: str
  sample: TCK-0001
ticket:
  description: The ticket after the task (before it, in check mode); null when none exists.
  returned: always
  type: dict
  contains:
    id:
      description: Ticket id.
      type: str
      sample: TCK-0001
    incident_id:
      description: Incident id the ticket was opened for.
      type: str
      sample: INC-20261127-1423-P1-3f9a
    status:
      description: C(open) or C(resolved).
      type: str
      sample: open
    severity:
      description: Severity.
      type: str
      sample: P1
    title:
      description: Title.
      type: str
    description:
      description: Description, with the metadata block.
      type: str
    created_at:
      description: When the ticket was opened (ISO 8601 UTC).
      type: str
    updated_at:
      description: When the ticket last changed (ISO 8601 UTC).
      type: str
    resolved_at:
      description: When the ticket was resolved; null while open.
      type: str
    comments:
      description: Comments, each C({ts, text}).
      type: list
      elements: dict
metadata:
  description: The metadata block of the ticket's description, parsed; empty when there is none.
  returned: always
  type: dict
  sample: {"declared_start": "2026-11-27T14:23:00Z", "runbook": "rb-p1-001-critical-bug"}
actions:
  description: Plain sentences, what was done, or in check mode what would be done.
  returned: always
  type: list
  elements: str
  sample: ["Opened P1 ticket TCK-0001 for incident INC-20261127-1423-P1-3f9a"]
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.akig.runbooks.plugins.module_utils.ticket import (
    SEVERITIES,
    STATES,
    TicketClient,
    TicketError,
    TicketInputError,
    ensure_ticket,
)


def argument_spec() -> dict[str, Any]:
    return dict(
        base_url=dict(type="str", required=True),
        api_token=dict(type="str", required=True, no_log=True),
        incident_id=dict(type="str", required=True),
        state=dict(type="str", choices=list(STATES), default="present"),
        title=dict(type="str"),
        severity=dict(type="str", choices=list(SEVERITIES)),
        description=dict(type="str", default=""),
        metadata=dict(type="dict", default={}),
        comment=dict(type="str"),
        timeout=dict(type="int", default=5),
        validate_certs=dict(type="bool", default=True),
    )


# the AnsibleModule arguments, shared with the action plugin that runs the module in Ansible's worker on the controller
# (plugins/action/incident_ticket.py)
MODULE_KWARGS: dict[str, Any] = dict(argument_spec=argument_spec(), required_if=[("state", "commented", ("comment",))],
                                     supports_check_mode=True)


def execute(module: Any) -> None:
    """The module's work on an AnsibleModule (or the in-process stand-in of plugins/plugin_utils/in_process.py)."""
    params = module.params
    incident_id = params["incident_id"]
    operation = {"present": "open", "resolved": "resolve", "commented": "comment on"}[params["state"]]
    try:
        client = TicketClient(
            params["base_url"],
            params["api_token"],
            timeout=params["timeout"],
            validate_certs=params["validate_certs"],
        )
        result = ensure_ticket(
            client,
            incident_id=incident_id,
            state=params["state"],
            title=params["title"],
            severity=params["severity"],
            description=params["description"],
            metadata=params["metadata"],
            comment=params["comment"],
            check_mode=module.check_mode,
        )
    except TicketInputError as exc:
        module.fail_json(msg=f"Cannot {operation} the ticket of incident {incident_id}: {exc}.")
    except TicketError as exc:
        hint = (
            "check akig_ticket_api_token"
            if exc.status in (401, 403)
            else "check akig_ticket_base_url and the tracker's status, then re-run (the module is idempotent)"
        )
        module.fail_json(
            msg=f"Cannot {operation} the ticket of incident {incident_id}: the tracker failed: {exc}; {hint}.",
            status=exc.status,
        )
    for warning in result.pop("warnings"):
        module.warn(warning)
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = diff
    module.exit_json(**result)


def main() -> None:
    execute(AnsibleModule(**MODULE_KWARGS))


if __name__ == "__main__":
    main()
