#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_promote
short_description: Promote a PostgreSQL streaming standby to primary, and prove it accepts writes
version_added: 0.1.0
author: AKIG Engineering Team (@akig)
description:
  - Promotes one PostgreSQL standby with C(pg_promote()), the failover step of runbook RB-P1-003
    (database unavailable, fail over to the streaming replica).
  - Reads the node's state first. A node that is already a primary is left alone (C(changed=false)),
    so re-running the task after a promotion, or after a promotion that finished late, is safe.
  - Refuses, changing nothing, when replay is paused on the standby (a pause is often deliberate, for
    example to stop before a bad change is replayed) unless O(resume_paused=true), and when the node is
    already a primary on a timeline lower than O(expected_timeline_min) (it is then most likely the old
    primary, not the promoted standby).
  - With O(wait_received_lsn) (the old primary's shutdown checkpoint, RV(akig.runbooks.pg_fence#module:checkpoint_lsn)),
    first waits until the standby has received that checkpoint record and replayed everything it received, so a
    planned failover loses nothing; it fails, promoting nothing, when that does not happen within
    O(catchup_timeout).
  - After C(pg_promote(wait => true)) returns, waits until the node is out of recovery B(and) a write
    succeeds (C(CREATE TEMP TABLE akig_promote_probe) in a transaction that is rolled back, so nothing is
    left behind), then runs C(CHECKPOINT) so the new timeline is durable, and checks that the timeline
    went up.
  - The module does not fence the old primary or repoint clients and replicas; the C(pg_failover) role
    does that around it.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - akig.runbooks.postgres
attributes:
  check_mode:
    support: full
    details: Reads the node's state and reports in RV(actions) what would be done; nothing is executed and
      the standby stays in recovery. The refusals apply in check mode too. With O(wait_received_lsn) the standby's
      WAL positions are read once and RV(actions) says whether it has already caught up; there is no waiting.
  diff_mode:
    support: full
    details: The node's role, recovery state and timeline before and after.
  platform:
    platforms: posix
requirements:
  - psycopg2
options:
  wait:
    description:
      - Wait for the promotion to finish, prove the node writable, run the checkpoint and check the
        timeline. With V(false) the task only requests the promotion and returns at once;
        RV(timeline_after) is then V(null) and O(checkpoint) is not done.
    type: bool
    default: true
  wait_seconds:
    description:
      - Seconds C(pg_promote()) waits for the promotion, and the budget for the node to accept a write
        counted from the promotion request. Must be at least 1.
    type: int
    default: 30
  checkpoint:
    description:
      - Run C(CHECKPOINT) once the node accepts writes, so the new timeline is recorded in the control file
        (C(pg_control_checkpoint())) and a crash right after the failover restarts from a checkpoint on it.
    type: bool
    default: true
  expected_timeline_min:
    description:
      - When the node is already a primary, refuse unless its timeline is at least this. Pass the
        standby's timeline plus one on a re-run so an old primary (same or lower timeline) named by
        mistake is not reported as the promoted standby.
      - Not checked when the node is a standby.
    type: int
  resume_paused:
    description:
      - When replay is paused on the standby, resume it (C(pg_wal_replay_resume())) and promote, which
        replays the WAL already received first. Without it a paused standby is refused.
    type: bool
    default: false
  wait_received_lsn:
    description:
      - An LSN such as V(0/3000028), normally the C(Latest checkpoint location) of the old primary after its clean
        shutdown (RV(akig.runbooks.pg_fence#module:checkpoint_lsn) when
        RV(akig.runbooks.pg_fence#module:stopped_cleanly) is true).
      - Before promoting, poll the standby every O(poll_interval) seconds until C(pg_last_wal_receive_lsn()) is
        B(greater) than this LSN (the shutdown checkpoint record starts at it, so the standby must have received
        the record itself) B(and) C(pg_last_wal_replay_lsn()) is at least the received LSN. When that does not
        happen within O(catchup_timeout) seconds the task fails and nothing is promoted; the message gives both
        LSNs and how many bytes are missing. To promote anyway (forcing, losing the WAL the standby lacks), re-run
        without this option.
      - Ignored when the node is already a primary. With O(resume_paused=true) a paused replay is resumed before
        the wait.
    type: str
  catchup_timeout:
    description:
      - Seconds to wait for the standby to catch up with O(wait_received_lsn). V(0) checks once.
    type: int
    default: 15
  poll_interval:
    description:
      - Seconds between two reads of the standby's WAL positions while waiting for O(wait_received_lsn), and
        between two checks whether the promoted node accepts writes. More than 0, at most 60.
    type: float
    default: 0.1
  reference_lsn:
    description:
      - The end of the old primary's WAL after it stopped without a clean shutdown (a crash, an immediate
        shutdown, SIGKILL), RV(akig.runbooks.pg_fence#module:wal_end_lsn). Requires O(max_lag_bytes).
      - Just before promoting, the task compares it with the standby's WAL positions and refuses, promoting
        nothing, when the standby has replayed less than O(reference_lsn) minus O(max_lag_bytes), because the WAL
        it never received would be lost for good. RV(lag_bytes) and RV(unreceived_bytes) say by how much.
      - Ignored when the node is already a primary. In check mode the comparison is made and a refusal fails
        the task as well.
    type: str
  max_lag_bytes:
    description:
      - Bytes of the WAL up to O(reference_lsn) the standby may lack (not replayed yet, or never received).
        0 or more. Requires O(reference_lsn).
    type: int
notes:
  - Needs PostgreSQL 12 or later (C(pg_promote()) appeared in 12).
  - O(login_host) is the standby to promote. O(login_user) must be a superuser or have been granted C(EXECUTE) on
    C(pg_promote()). The write probe creates its temporary table in O(login_db) and rolls it back.
  - Any connection failure fails the task.
  - A failure message names the node, the cause and what to do next; it never contains the password.
  - A C(statement_timeout) set for the role or database does not apply; the task sets it to 0 for its session.
  - When C(pg_promote()) reports that the promotion did not finish in O(wait_seconds), the server may
    still finish it; the task fails, and a re-run reports the node as a primary.
seealso:
  - module: akig.runbooks.pg_replication_info
  - name: pg_promote() in the PostgreSQL documentation
    description: Recovery control functions.
    link: https://www.postgresql.org/docs/15/functions-admin.html#FUNCTIONS-RECOVERY-CONTROL
"""

EXAMPLES = r"""
- name: Promote the replica to primary
  akig.runbooks.pg_promote:
    login_host: "{{ hostvars[groups['pg_replica'][0]].ansible_host }}"
    login_password: "{{ vault_pg_superuser_password }}"
    wait_seconds: 60
  delegate_to: localhost
  register: __pg_failover_promotion
  no_log: "{{ pg_failover_secure_logging }}"

- name: Show the promotion plan without promoting (check mode)
  akig.runbooks.pg_promote:
    login_host: 10.0.2.12
    login_password: "{{ vault_pg_superuser_password }}"
  check_mode: true
  delegate_to: localhost
  register: __pg_failover_plan
  no_log: "{{ pg_failover_secure_logging }}"

- name: Planned failover - promote once the replica has received the old primary's shutdown checkpoint
  akig.runbooks.pg_promote:
    login_host: 10.0.2.12
    login_password: "{{ vault_pg_superuser_password }}"
    wait_received_lsn: "{{ __pg_failover_fence.checkpoint_lsn }}"
    catchup_timeout: 15
  delegate_to: localhost
  when: __pg_failover_fence.stopped_cleanly
  no_log: "{{ pg_failover_secure_logging }}"

- name: Promote again after an interrupted run; refuse if the node turns out to be the old primary
  akig.runbooks.pg_promote:
    login_host: 10.0.2.12
    login_password: "{{ vault_pg_superuser_password }}"
    expected_timeline_min: "{{ __pg_failover_replica.timeline + 1 }}"
  delegate_to: localhost
  no_log: "{{ pg_failover_secure_logging }}"
"""

RETURN = r"""
target:
  description: The node, as C(host:port).
  returned: always
  type: str
  sample: 127.0.0.12:5432
actions:
  description: What the task did, or in check mode would do, in plain sentences.
  returned: always
  type: list
  elements: str
  sample:
    - promote 127.0.0.12:5432 (standby on timeline 1, replay LSN 0/3000148) with pg_promote(wait => true, wait_seconds => 30)
    - wait until 127.0.0.12:5432 leaves recovery and accepts a write (probe in a rolled-back transaction)
    - run CHECKPOINT so the new timeline is durable
timeline_before:
  description: Timeline of the node before the task.
  returned: always
  type: int
  sample: 1
timeline_after:
  description:
    - Timeline of the node after the promotion; always greater than RV(timeline_before) when a promotion
      succeeded. Equal to RV(timeline_before) when nothing was done; V(null) with O(wait=false).
  returned: always
  type: int
  sample: 2
promoted_at:
  description: When the node was seen accepting writes, UTC ISO 8601; V(null) when no promotion was done.
  returned: always
  type: str
  sample: "2026-11-27T14:23:05.412Z"
duration_s:
  description:
    - Seconds from the promotion request until the node accepted a write (the checkpoint not included);
      V(null) when no promotion was done.
  returned: always
  type: float
  sample: 0.143
lsn_at_promotion:
  description:
    - Last WAL position replayed before the node left recovery (where the new timeline forks off).
    - V(null) when no promotion was done, and with O(wait=false).
  returned: always
  type: str
  sample: 0/3000148
received_lsn:
  description:
    - The standby's C(pg_last_wal_receive_lsn()) right before the promotion (after the wait for
      O(wait_received_lsn), when given; in check mode when read). V(null) on a node that is already a primary and
      on a standby that has not received any WAL by streaming.
  returned: always
  type: str
  sample: 0/30000A0
catchup_seconds:
  description:
    - Seconds spent waiting for the standby to receive past O(wait_received_lsn) (V(0.0) when it already had,
      without O(wait_received_lsn), on a primary and in check mode).
  returned: always
  type: float
  sample: 0.204
lag_bytes:
  description:
    - With O(reference_lsn), the bytes of the old primary's WAL up to it the standby had not replayed right before
      the promotion (received but not replayed, or never received); else V(null).
  returned: always
  type: int
  sample: 0
unreceived_bytes:
  description:
    - With O(reference_lsn), the bytes of the old primary's WAL up to it the standby never received (lost for good
      once it is promoted); else V(null).
  returned: always
  type: int
  sample: 0
promotion_requested:
  description:
    - Whether the task called C(pg_promote()). V(false) after a refusal or a failed catch-up, so the node is
      certainly still a standby (and the old primary can safely be brought back); V(true) after a failure past
      that point, when the node may still finish promoting.
  returned: always
  type: bool
  sample: true
error_kind:
  description: Short class of the connection problem when the task failed to connect (V(auth), V(refused) ...).
  returned: failure
  type: str
  sample: auth
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.akig.runbooks.plugins.module_utils.pg_replication import HAS_PSYCOPG2, PSYCOPG2_IMPORT_ERROR, PgError, run_promote
from ansible_collections.akig.runbooks.plugins.module_utils.postgres import postgres_common_argument_spec

ARGUMENT_SPEC = postgres_common_argument_spec()
ARGUMENT_SPEC.update(
    reference_lsn=dict(type="str"),
    max_lag_bytes=dict(type="int"),
    wait=dict(type="bool", default=True),
    wait_seconds=dict(type="int", default=30),
    checkpoint=dict(type="bool", default=True),
    expected_timeline_min=dict(type="int"),
    resume_paused=dict(type="bool", default=False),
    wait_received_lsn=dict(type="str"),
    catchup_timeout=dict(type="int", default=15),
    poll_interval=dict(type="float", default=0.1),
)


# the AnsibleModule arguments, shared with the action plugin that runs the module in Ansible's worker on the controller
# (plugins/action/pg_promote.py)
MODULE_KWARGS = dict(argument_spec=ARGUMENT_SPEC, supports_check_mode=True, required_together=[("reference_lsn", "max_lag_bytes")])


def execute(module) -> None:
    """The module's work on an AnsibleModule (or the in-process stand-in of plugins/plugin_utils/in_process.py)."""
    if not HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=PSYCOPG2_IMPORT_ERROR)
    try:
        result = run_promote(module.params, check_mode=module.check_mode)
    except PgError as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


def main() -> None:
    execute(AnsibleModule(**MODULE_KWARGS))


if __name__ == "__main__":
    main()
