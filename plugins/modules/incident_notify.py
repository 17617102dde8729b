#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: incident_notify
short_description: Send one incident message to Slack, SMS and e-mail, with fallback
version_added: "0.1.0"
author: AKIG Engineering Team (@akig-sre)
description:
  - Sends one message to an ordered list of channels (Slack incoming webhook, SMS through Twilio,
    e-mail through SendGrid) and reports, per channel, what the provider answered.
  - "O(mode=all): every channel is a recipient. When one fails and O(fallback=true), that channel's
    O(channels[].fallbacks) are tried in order until one delivers (the AKIG fallback strategy:
    SMS falls back to e-mail, e-mail to SMS)."
  - "O(mode=first_success): the channels are alternatives for one audience, tried in order (each
    channel's own O(channels[].fallbacks) right after it) until one delivers. With
    O(fallback=false) only the first channel is tried."
  - A provider failure never aborts the play unless O(fail_on_error=true); it is recorded in
    RV(deliveries), RV(failed_channels), RV(undelivered) and as a warning, so communicating
    never blocks the remediation.
  - No credential, webhook URL or authorization header appears in any result, error or warning.
options:
  channels:
    description:
      - Ordered list of channels to send the message on.
    type: list
    elements: dict
    required: true
    suboptions:
      type:
        description: Channel type.
        type: str
        required: true
        choices: [slack, sms, email]
      to:
        description:
          - Target of the message, for V(slack) a channel such as V(#akig-incidents), for V(sms) an
            E.164 phone number such as V(+33612345678), for V(email) one address.
        type: str
        required: true
      fallbacks:
        description:
          - Channels tried in order, when this one fails and O(fallback=true), until one delivers.
        type: list
        elements: dict
        default: []
        suboptions:
          type:
            description: Channel type.
            type: str
            required: true
            choices: [slack, sms, email]
          to:
            description: Target of the message, as for O(channels[].to).
            type: str
            required: true
  msg:
    description:
      - Text of the message (Slack text, SMS body, e-mail text/plain part).
      - Named C(msg) like in the community notification modules; C(message) is reserved by Ansible.
    type: str
    required: true
  subject:
    description:
      - Subject of e-mails. Defaults to the first non-empty line of O(msg).
    type: str
  mode:
    description:
      - V(first_success) stops at the first channel that delivers; V(all) sends on every channel.
    type: str
    choices: [first_success, all]
    default: first_success
  fallback:
    description:
      - Whether a failed channel is followed by its fallbacks (and, in mode V(first_success), by the
        next channel).
    type: bool
    default: true
  slack_webhook_url:
    description:
      - Slack incoming webhook URL (the URL is the secret), usually C(akig_slack_webhook_url).
      - Required for V(slack) channels; without it they fail as not configured.
    type: str
  twilio_base_url:
    description:
      - Base URL of the Twilio API, usually C(akig_twilio_base_url).
    type: str
    default: https://api.twilio.com
  twilio_account_sid:
    description:
      - Twilio account SID, usually C(akig_twilio_account_sid). Required for V(sms) channels.
    type: str
  twilio_auth_token:
    description:
      - Twilio auth token, usually C(akig_twilio_auth_token). Required for V(sms) channels.
    type: str
  twilio_from:
    description:
      - Sender phone number of SMS (E.164). Required for V(sms) channels.
    type: str
  sendgrid_base_url:
    description:
      - Base URL of the SendGrid API, usually C(akig_sendgrid_base_url).
    type: str
    default: https://api.sendgrid.com
  sendgrid_api_key:
    description:
      - SendGrid API key, usually C(akig_sendgrid_api_key). Required for V(email) channels.
    type: str
  sendgrid_from:
    description:
      - Sender address of e-mails. Required for V(email) channels.
    type: str
  timeout:
    description:
      - Seconds to wait for each provider call.
    type: int
    default: 5
  validate_certs:
    description:
      - Verify the providers' TLS certificates.
    type: bool
    default: true
  idempotency_key:
    description:
      - Key sent as the C(Idempotency-Key) header so that a retried run does not notify twice
        visibly.
      - Each delivery gets its own key, C(<idempotency_key>:<type>:<to>), because providers
        de-duplicate per key and every recipient must still get the message once.
    type: str
  fail_on_error:
    description:
      - Fail the task when the message was not delivered (mode V(all), a recipient that neither
        it nor its fallbacks reached; mode V(first_success), no channel delivered).
      - By default a provider failure only produces warnings and is recorded in the result.
    type: bool
    default: false
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Sends nothing; RV(actions) lists what would be sent to whom and RV(changed) is true.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
notes:
  - "The module talks HTTP only; run it on the controller (C(delegate_to: localhost))."
  - Bad input (unknown channel type, missing C(to), empty message) fails before anything is sent.
  - Mark the task C(no_log) when it is given credentials; the result itself never holds them.
seealso:
  - module: akig.runbooks.incident_ticket
  - plugin: akig.runbooks.escalation_tier
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Page the on-call engineer by SMS, falling back to e-mail
  akig.runbooks.incident_notify:
    channels:
      - type: sms
        to: "+33600000000"
      - type: email
        to: oncall@akig.com
    msg: "[INCIDENT ALERT - 14:23 UTC] AKIG dashboard unavailable"
    twilio_base_url: "{{ akig_twilio_base_url }}"
    twilio_account_sid: "{{ akig_twilio_account_sid }}"
    twilio_auth_token: "{{ akig_twilio_auth_token }}"
    twilio_from: "+33700000000"
    sendgrid_base_url: "{{ akig_sendgrid_base_url }}"
    sendgrid_api_key: "{{ akig_sendgrid_api_key }}"
    sendgrid_from: incidents@akig.com
    idempotency_key: "{{ akig_incident.id }}:alert"
  delegate_to: localhost
  no_log: true

- name: Tell everyone due at tier 2; SMS falls back to e-mail
  akig.runbooks.incident_notify:
    mode: all
    channels:
      - type: slack
        to: "#akig-incidents"
      - type: sms
        to: "+33600000000"
        fallbacks:
          - type: email
            to: oncall@akig.com
      - type: email
        to: manager@akig.com
      - type: email
        to: cto@akig.com
    msg: "{{ __alert_text }}"
    subject: "[AKIG P1] Incident alert"
    slack_webhook_url: "{{ akig_slack_webhook_url }}"
    twilio_base_url: "{{ akig_twilio_base_url }}"
    twilio_account_sid: "{{ akig_twilio_account_sid }}"
    twilio_auth_token: "{{ akig_twilio_auth_token }}"
    twilio_from: "+33700000000"
    sendgrid_base_url: "{{ akig_sendgrid_base_url }}"
    sendgrid_api_key: "{{ akig_sendgrid_api_key }}"
    sendgrid_from: incidents@akig.com
  delegate_to: localhost
  register: __notify
  no_log: true
"""

RETURN = r"""
changed:
  description: Whether something was sent (in check mode, whether something would be sent).
  returned: always
  type: bool
delivered:
  description:
    - Mode V(all), every channel was reached, itself or through a fallback; mode V(first_success),
      one channel delivered. Always false in check mode.
  returned: always
  type: bool
  sample: true
deliveries:
  description: One entry per provider call, in the order they were made. Empty in check mode.
  returned: always
  type: list
  elements: dict
  contains:
    type:
      description: Channel type.
      type: str
      sample: sms
    to:
      description: Target.
      type: str
      sample: "+33600000000"
    status:
      description: HTTP status code of the provider's answer, 0 when there was none (not configured, refused,
        timed out).
      type: int
      sample: 201
    ok:
      description: Whether the provider accepted the message.
      type: bool
      sample: true
    provider_id:
      description: Provider message id (Twilio message SID, SendGrid C(X-Message-Id)); null for Slack.
      type: str
      sample: SM0123456789abcdef0123456789abcdef
    error:
      description: Why it failed, without credentials; null on success.
      type: str
      sample: "HTTP 503: Twilio error 20503: Service Unavailable"
    idempotency_key:
      description: C(Idempotency-Key) sent with this call; null without O(idempotency_key).
      type: str
      sample: "INC-20261127-1423-P1-3f9a:alert:sms:+33600000000"
    fallback_for:
      description: The channel (C(type:to)) this call stood in for; null for a primary channel.
      type: str
      sample: "sms:+33600000000"
failed_channels:
  description: The calls that failed, as C(type:to), in order.
  returned: always
  type: list
  elements: str
  sample: ["sms:+33600000000"]
undelivered:
  description: Channels (C(type:to)) that neither they nor their fallbacks reached.
  returned: always
  type: list
  elements: str
  sample: []
actions:
  description:
    - Plain sentences, what was sent to whom and what failed; in check mode what would be sent to whom.
  returned: always
  type: list
  elements: str
  sample:
    - "Could not send an SMS to +33600000000: HTTP 503: Twilio error 20503: Service Unavailable"
    - "Sent an e-mail to oncall@akig.com (fallback for sms:+33600000000)"
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.akig.runbooks.plugins.module_utils.notify import (
    CHANNEL_TYPES,
    MODES,
    NotifyError,
    Providers,
    notify,
)

_TARGET = dict(
    type=dict(type="str", required=True, choices=list(CHANNEL_TYPES)),
    to=dict(type="str", required=True),
)


def argument_spec() -> dict[str, Any]:
    return dict(
        channels=dict(
            type="list",
            elements="dict",
            required=True,
            options=dict(
                _TARGET,
                fallbacks=dict(type="list", elements="dict", default=[], options=dict(_TARGET)),
            ),
        ),
        msg=dict(type="str", required=True),
        subject=dict(type="str"),
        mode=dict(type="str", choices=list(MODES), default="first_success"),
        fallback=dict(type="bool", default=True),
        slack_webhook_url=dict(type="str", no_log=True),
        twilio_base_url=dict(type="str", default="https://api.twilio.com"),
        twilio_account_sid=dict(type="str"),
        twilio_auth_token=dict(type="str", no_log=True),
        twilio_from=dict(type="str"),
        sendgrid_base_url=dict(type="str", default="https://api.sendgrid.com"),
        sendgrid_api_key=dict(type="str", no_log=True),
        sendgrid_from=dict(type="str"),
        timeout=dict(type="int", default=5),
        validate_certs=dict(type="bool", default=True),
        idempotency_key=dict(type="str", no_log=False),
        fail_on_error=dict(type="bool", default=False),
    )


# the AnsibleModule arguments, shared with the action plugin that runs the module in Ansible's worker on the controller
# (plugins/action/incident_notify.py), in the background too (async with poll 0)
MODULE_KWARGS: dict[str, Any] = dict(argument_spec=argument_spec(), supports_check_mode=True)


def execute(module: Any) -> None:
    """The module's work on an AnsibleModule (or the in-process stand-in of plugins/plugin_utils/in_process.py)."""
    params = module.params
    providers = Providers(
        slack_webhook_url=params["slack_webhook_url"],
        twilio_base_url=params["twilio_base_url"],
        twilio_account_sid=params["twilio_account_sid"],
        twilio_auth_token=params["twilio_auth_token"],
        twilio_from=params["twilio_from"],
        sendgrid_base_url=params["sendgrid_base_url"],
        sendgrid_api_key=params["sendgrid_api_key"],
        sendgrid_from=params["sendgrid_from"],
        validate_certs=params["validate_certs"],
    )
    if params["timeout"] <= 0:
        module.fail_json(msg=f"timeout {params['timeout']} must be a positive number of seconds")
    try:
        result = notify(
            params["channels"],
            params["msg"],
            providers=providers,
            subject=params["subject"],
            mode=params["mode"],
            fallback=params["fallback"],
            timeout=params["timeout"],
            idempotency_key=params["idempotency_key"],
            check_mode=module.check_mode,
        )
    except NotifyError as exc:
        module.fail_json(msg=f"Cannot send the incident message: {exc}. Nothing was sent; fix the task's input.")
    warnings = result.pop("warnings")
    for warning in warnings:
        module.warn(warning)
    if params["fail_on_error"] and not module.check_mode and not result["delivered"]:
        module.fail_json(
            msg="The incident message was not delivered to "
            + ", ".join(result["undelivered"])
            + "; see deliveries for each provider's answer, check the provider status and"
            " credentials, or set fail_on_error=false to carry on with the remediation.",
            **result,
        )
    module.exit_json(**result)


def main() -> None:
    execute(AnsibleModule(**MODULE_KWARGS))


if __name__ == "__main__":
    main()
