#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: app_probe
short_description: Prove the AKIG app writes, end to end - log in as the probe user, then write the probe's row
version_added: 0.1.0
author: AKIG Engineering Team (@akig)
description:
  - Talks to one AKIG backend the way a user does. O(mode=login) logs in as the on-call probe user
    (C(POST /api/login)) and returns the session token. O(mode=write) proves a real write through the app's
    database pool (C(POST /api/health/write-probe), which upserts the probe's own row and touches no business
    data), logging in first unless O(token) is given.
  - A given O(token) the app refuses (401) is replaced by a fresh login, once.
  - Each request is tried up to O(retries) + 1 times, O(delay) seconds apart, until it gets the expected status
    (200 for the login, 201 for the write).
  - The URL is checked before the first request; a malformed one, or a login without O(user) and O(password), fails
    the task without sending anything.
  - Requests go straight to the backend, never through a proxy from the environment, and redirects are not followed.
  - RB-P1-003 logs in before a planned switch, while the database still answers, and proves the write after the
    promotion with one request; the runbook's RTO clock stops at this module's successful write.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: In check mode nothing is sent (a login is a change of the app's state, a write even more so).
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  url:
    description:
      - The backend's base URL, C(http(s)://host[:port]), for example C(http://app-1.example:4000).
    type: str
    required: true
  mode:
    description:
      - V(login) logs in and returns RV(token); V(write) proves a write (logging in first without O(token)).
    type: str
    choices: [login, write]
    default: write
  user:
    description:
      - The on-call probe user's e-mail. Required to log in.
    type: str
  password:
    description:
      - The probe user's password. Required to log in. Never logged or returned.
    type: str
  token:
    description:
      - A session token from an earlier O(mode=login) (its RV(token)); with it O(mode=write) sends one request.
    type: str
    default: ""
  probe:
    description:
      - The probe row's name (the C(probe) column of C(health_write_probe)).
    type: str
    default: oncall
  retries:
    description:
      - How many times a request is tried again when it does not get the expected status.
    type: int
    default: 0
  delay:
    description:
      - Seconds between two tries.
    type: float
    default: 0.2
  timeout:
    description:
      - Seconds each request may take.
    type: float
    default: 3
  validate_certs:
    description:
      - Verify the TLS certificate of an C(https) URL.
    type: bool
    default: true
notes:
  - The action plugin of the same name runs the module inside Ansible's worker on the controller (a C(local)
    connection, no become, the Python running Ansible); elsewhere it runs as a plain module.
seealso:
  - module: akig.runbooks.http_health
"""

EXAMPLES = r"""
- name: Log in ahead of a planned switch, while the database answers
  akig.runbooks.app_probe:
    url: "{{ hostvars[groups['backend'][0]].akig_backend_url }}"
    mode: login
    user: "{{ akig_probe_user }}"
    password: "{{ akig_probe_password }}"
  register: probe_session
  failed_when: false
  no_log: true

- name: Prove a write through the app with that session (one request), logging in again if it expired
  akig.runbooks.app_probe:
    url: "{{ hostvars[groups['backend'][0]].akig_backend_url }}"
    token: "{{ probe_session.token | default('') }}"
    user: "{{ akig_probe_user }}"
    password: "{{ akig_probe_password }}"
    probe: oncall
    retries: 50
    delay: 0.2
  no_log: true
"""

RETURN = r"""
ok:
  description: Whether the login (mode login) or the write (mode write) succeeded. V(null) in check mode.
  returned: always
  type: bool
token:
  description: The session token (mode login). Empty when the login failed or in check mode. Register it with no_log.
  returned: mode login
  type: str
status:
  description: The HTTP status of the last request of the mode's step, V(null) without an answer or in check mode.
  returned: always
  type: int
  sample: 201
attempts:
  description: Requests sent for the mode's step (the login's own requests are in RV(login_attempts)).
  returned: always
  type: int
  sample: 1
logged_in:
  description: Whether mode write logged in itself (no token given, or the given one was refused).
  returned: mode write
  type: bool
login_attempts:
  description: Login requests sent.
  returned: always
  type: int
writes:
  description: The probe row's write count as the app reported it.
  returned: mode write, on success
  type: int
  sample: 12
probe:
  description: The probe row's name.
  returned: mode write
  type: str
at:
  description: When the mode's step succeeded (UTC, ISO 8601 with microseconds).
  returned: on success
  type: str
  sample: "2026-12-01T13:20:01.123456Z"
elapsed_s:
  description: Seconds the task spent sending requests and waiting between tries.
  returned: always
  type: float
"""

import datetime
import json
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Optional, Tuple

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.akig.runbooks.plugins.module_utils.http_health import HealthError, build_opener, open_and_read, short_error, validate_url

ARGUMENT_SPEC: Dict[str, Dict[str, Any]] = dict(
    url=dict(type="str", required=True),
    mode=dict(type="str", choices=["login", "write"], default="write"),
    user=dict(type="str"),
    password=dict(type="str", no_log=True),
    token=dict(type="str", default="", no_log=True),
    probe=dict(type="str", default="oncall"),
    retries=dict(type="int", default=0),
    delay=dict(type="float", default=0.2),
    timeout=dict(type="float", default=3),
    validate_certs=dict(type="bool", default=True),
)

# the AnsibleModule arguments, shared with the action plugin that runs the module in Ansible's worker on the controller
MODULE_KWARGS: Dict[str, Any] = dict(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def post_json(opener: Any, url: str, body: Dict[str, Any], timeout: float,
              token: str = "") -> Tuple[Optional[int], Any, Optional[str]]:
    """POST a JSON body: (status or None, decoded JSON body or None, error text or None). Never raises."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"), method="POST", headers=headers)
    try:
        status, raw = open_and_read(opener, req, timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, None, short_error(exc)
    try:
        decoded = json.loads(raw.decode("utf-8")) if raw else None
    except ValueError:
        decoded = None
    return status, decoded, None


class Prober:
    """The requests of one task, with the retry rule and the counts the result reports."""

    def __init__(self, params: Dict[str, Any], sleep: Any = time.sleep) -> None:
        self.params = params
        self.base = params["url"].rstrip("/")
        self.opener = build_opener(params["validate_certs"])
        self.sleep = sleep
        self.login_attempts = 0

    def _until(self, path: str, body: Dict[str, Any], expect: int, token: str = "") -> Tuple[int, Optional[int], Any, Optional[str]]:
        attempts, status, decoded, error = 0, None, None, None
        for attempt in range(max(0, self.params["retries"]) + 1):
            if attempt:
                self.sleep(max(0.0, self.params["delay"]))
            attempts += 1
            status, decoded, error = post_json(self.opener, self.base + path, body, self.params["timeout"], token)
            if status == expect or (token and status == 401):
                break
        return attempts, status, decoded, error

    def login(self) -> Tuple[str, Optional[int], Optional[str], int]:
        """(token or '', last status, last error or reason, attempts)."""
        attempts, status, decoded, error = self._until(
            "/api/login", {"email": self.params["user"], "password": self.params["password"]}, 200)
        self.login_attempts += attempts
        token = decoded.get("token") if status == 200 and isinstance(decoded, dict) else None
        if status == 200 and not (isinstance(token, str) and token):
            return "", status, "the login answered 200 without a token", attempts
        return (token or ""), status, error, attempts

    def write(self, token: str) -> Tuple[int, Optional[int], Any, Optional[str]]:
        return self._until("/api/health/write-probe", {"probe": self.params["probe"]}, 201, token)


def _why(status: Optional[int], error: Optional[str]) -> str:
    """What the last request got: the connection error, or the HTTP status (with what was wrong with the answer)."""
    if status is None:
        return error or "no answer"
    return "HTTP %s (%s)" % (status, error) if error else "HTTP %s" % status


def check_input(params: Dict[str, Any]) -> None:
    try:
        validate_url(params["url"])
    except HealthError:
        raise HealthError("malformed backend URL '%s': expected http(s)://host[:port], for example akig_backend_url"
                          % (params["url"],))
    if (params["mode"] == "login" or not params["token"]) and not (params["user"] and params["password"]):
        raise HealthError("user and password are required to log in (mode=%s%s): give the on-call probe user "
                          "(akig_probe_user, akig_probe_password)" % (params["mode"], "" if params["mode"] == "login" else " without a token"))
    if params["retries"] < 0:
        raise HealthError("retries must be 0 or more, got %s" % params["retries"])
    if params["delay"] < 0:
        raise HealthError("delay must be a positive number of seconds, got %s" % params["delay"])
    if params["timeout"] <= 0:
        raise HealthError("timeout must be a positive number of seconds, got %s" % params["timeout"])


def execute(module: Any) -> None:
    """The module's work on an AnsibleModule (or the in-process stand-in of plugins/plugin_utils/in_process.py)."""
    params = module.params
    try:
        check_input(params)
    except HealthError as exc:
        module.fail_json(msg=exc.msg, changed=False)
    mode = params["mode"]
    if module.check_mode:
        result: Dict[str, Any] = dict(changed=False, ok=None, status=None, attempts=0, login_attempts=0, elapsed_s=0.0,
                                      msg="check mode: nothing sent to %s" % params["url"])
        if mode == "login":
            result["token"] = ""
        else:
            result.update(logged_in=False, probe=params["probe"])
        module.exit_json(**result)
    began = time.monotonic()
    prober = Prober(params)
    if mode == "login":
        token, status, error, attempts = prober.login()
        result = dict(changed=False, ok=bool(token), token=token, status=status, attempts=attempts,
                      login_attempts=prober.login_attempts, elapsed_s=round(time.monotonic() - began, 3))
        if not token:
            module.fail_json(msg="the probe user could not log in through %s/api/login after %d attempt(s): %s; check "
                                 "akig_probe_user and akig_probe_password, and that the backend answers"
                             % (prober.base, attempts, _why(status, error)), **result)
        result["at"] = _now()
        module.exit_json(**result)

    token, logged_in = params["token"], False
    attempts, status, decoded, error = (0, None, None, None)
    if token:
        attempts, status, decoded, error = prober.write(token)
    if not token or status == 401:
        token, login_status, login_error, login_tries = prober.login()
        logged_in = True
        if not token:
            module.fail_json(msg="no write through %s: the probe user could not log in after %d attempt(s): %s"
                                 % (prober.base, login_tries, _why(login_status, login_error)),
                             changed=False, ok=False, status=login_status, attempts=attempts, logged_in=True,
                             login_attempts=prober.login_attempts, probe=params["probe"],
                             elapsed_s=round(time.monotonic() - began, 3))
        more, status, decoded, error = prober.write(token)
        attempts += more
    result = dict(ok=status == 201, status=status, attempts=attempts, logged_in=logged_in,
                  login_attempts=prober.login_attempts, probe=params["probe"], elapsed_s=round(time.monotonic() - began, 3))
    if status != 201:
        module.fail_json(msg="no write through %s/api/health/write-probe after %d attempt(s): %s; the app cannot write "
                             "to the database yet" % (prober.base, attempts, _why(status, error)), changed=False, **result)
    result["writes"] = decoded.get("writes") if isinstance(decoded, dict) else None
    result["at"] = _now()
    module.exit_json(changed=True, **result)


def main() -> None:
    execute(AnsibleModule(**MODULE_KWARGS))


if __name__ == "__main__":
    main()
