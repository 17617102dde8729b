#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: provider_check
short_description: Check a notification provider (Twilio, SendGrid) and its credentials without sending anything
version_added: "0.3.0"
author: AKIG Engineering Team (@akig-sre)
description:
  - One read-only call per provider. Twilio - the account fetch C(GET /2010-04-01/Accounts/{sid}.json), which
    must answer an C(active) account. SendGrid - C(GET /v3/scopes), whose scopes must include O(required_scopes).
  - Classifies the answer - V(ok); V(credentials) (401/403, an account that is not active, a key without the
    scope); V(quota) (429); V(outage) (5xx, connection refused); V(timeout); V(error) (anything else).
  - A provider that does not work is not a module failure (the runbook decides); missing credentials or a bad
    URL are, with a message naming the input.
  - Credentials are never returned; RV(credential_fingerprint) lets two runs compare them (SHA-256, 12 hex digits).
options:
  provider:
    description: The provider to check.
    type: str
    choices: [twilio, sendgrid]
    required: true
  base_url:
    description:
      - The provider's API base URL without the version part (C(akig_twilio_base_url), C(akig_sendgrid_base_url)),
        for example V(https://api.twilio.com) or V(https://api.sendgrid.com).
    type: str
    required: true
  twilio_account_sid:
    description: The Twilio account SID (O(provider=twilio)).
    type: str
    default: ""
  twilio_auth_token:
    description: The Twilio auth token (O(provider=twilio)).
    type: str
    default: ""
  sendgrid_api_key:
    description: The SendGrid API key (O(provider=sendgrid)).
    type: str
    default: ""
  required_scopes:
    description: The scopes the SendGrid key must have.
    type: list
    elements: str
    default: [mail.send]
  timeout:
    description: Seconds to wait for the answer.
    type: float
    default: 5
attributes:
  check_mode:
    support: full
    description: The check only reads; it runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
notes:
  - The lab points O(base_url) at its emulator, which implements both calls.
seealso:
  - module: akig.runbooks.notification_replay
"""

EXAMPLES = r"""
- name: Check Twilio and its credentials (sends nothing)
  akig.runbooks.provider_check:
    provider: twilio
    base_url: "{{ akig_twilio_base_url }}"
    twilio_account_sid: "{{ akig_twilio_account_sid }}"
    twilio_auth_token: "{{ akig_twilio_auth_token }}"
  register: twilio_check
  no_log: true

- name: Check SendGrid's API key scopes
  akig.runbooks.provider_check:
    provider: sendgrid
    base_url: "{{ akig_sendgrid_base_url }}"
    sendgrid_api_key: "{{ akig_sendgrid_api_key }}"
  register: sendgrid_check
  no_log: true
"""

RETURN = r"""
provider:
  description: The provider checked.
  returned: always
  type: str
  sample: twilio
class:
  description: V(ok), V(credentials), V(quota), V(outage), V(timeout) or V(error).
  returned: always
  type: str
  sample: credentials
ok:
  description: Whether the class is V(ok).
  returned: always
  type: bool
status:
  description: The HTTP status of the answer; null when none came.
  returned: always
  type: int
  sample: 401
detail:
  description: What the answer means, never a credential.
  returned: always
  type: str
  sample: the provider refused the credentials (HTTP 401)
latency_ms:
  description: Time to the answer.
  returned: always
  type: float
credential_fingerprint:
  description: The first 12 hex digits of the SHA-256 of the auth token (Twilio) or API key (SendGrid).
  returned: always
  type: str
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError

from ansible_collections.akig.runbooks.plugins.module_utils.provider_check import (
    ProviderCheckError, check_request, classify, fingerprint)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            provider=dict(type="str", required=True, choices=["twilio", "sendgrid"]),
            base_url=dict(type="str", required=True),
            twilio_account_sid=dict(type="str", default=""),
            twilio_auth_token=dict(type="str", default="", no_log=True),
            sendgrid_api_key=dict(type="str", default="", no_log=True),
            required_scopes=dict(type="list", elements="str", default=["mail.send"]),
            timeout=dict(type="float", default=5.0),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["timeout"] <= 0:
        module.fail_json(msg="timeout must be a positive number of seconds; got %s" % p["timeout"])
    try:
        url, headers = check_request(p["provider"], p["base_url"], p["twilio_account_sid"], p["twilio_auth_token"],
                                     p["sendgrid_api_key"])
    except ProviderCheckError as exc:
        module.fail_json(msg=str(exc))
    secret = p["twilio_auth_token"] if p["provider"] == "twilio" else p["sendgrid_api_key"]
    t0 = time.monotonic()
    status, body, error = None, None, ""
    try:
        resp = open_url(url, method="GET", headers=headers, timeout=p["timeout"], validate_certs=True,
                        follow_redirects="none")
        status, body = resp.getcode(), resp.read()
    except HTTPError as exc:
        status = exc.code
    except (URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        error = "timed out" if "timed out" in str(reason).lower() else type(reason).__name__ if not str(reason) else str(reason)
    latency = round((time.monotonic() - t0) * 1000, 1)
    result = classify(p["provider"], status, body, p["required_scopes"], error)
    module.exit_json(changed=False, provider=p["provider"], ok=result["class"] == "ok", latency_ms=latency,
                     credential_fingerprint=fingerprint(secret), **result)


if __name__ == "__main__":
    main()
