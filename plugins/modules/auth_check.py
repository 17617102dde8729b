#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: auth_check
short_description: Synthetic authentication check of the AKIG backends - login, token use, account creation
version_added: 0.2.0
author: AKIG Engineering Team (@akig)
description:
  - On every backend of O(backends), logs in with the check account (C(POST /api/login)), then uses the token it
    got on every backend (C(GET /api/contracts?per_page=1); a token issued by one backend must be accepted by all
    of them, as behind the load balancer), then creates a throwaway account (C(POST /api/users), a random address
    at O(throwaway_domain)) and deletes it (C(DELETE /api/users/ID)).
  - Reports, per backend and per step, whether it worked and the HTTP status, and which steps fail where. Never
    returns a token or a password.
  - Requests go straight to the backends, never through a proxy from the environment.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Login and token use run (they are how the service is observed); the account creation is skipped.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  backends:
    description: The backends, a mapping name to base URL (C(http://host:4000)).
    type: dict
    required: true
  user:
    description: E-mail of the check account.
    type: str
    required: true
  password:
    description: Its password.
    type: str
    required: true
  throwaway_domain:
    description: Domain of the throwaway accounts (C(auth-check-<random>@<domain>)).
    type: str
    default: akig.example
  create:
    description: Also check the account creation (and deletion).
    type: bool
    default: true
  timeout:
    description: Seconds per request.
    type: float
    default: 5
  fail_on_error:
    description: Fail the task when a step fails somewhere.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Check login, token use and account creation on every backend
  akig.runbooks.auth_check:
    backends:
      app-1: "http://10.0.1.21:4000"
      app-2: "http://10.0.1.22:4000"
    user: "{{ akig_auth_check_user }}"
    password: "{{ akig_auth_check_password }}"
  register: auth
"""

RETURN = r"""
ok:
  description: True when every step worked on every backend.
  returned: always
  type: bool
failing:
  description: The steps that failed, each C(step@backend) (C(token) steps as C(token:<issuer>-><user>@...)).
  returned: always
  type: list
  elements: str
  sample: ["token@app-2 (token from app-1): 401 Invalid token"]
backends:
  description: Per backend, C(login), C(token), C(create) and C(delete), each C({ok, status, error}).
  returned: always
  type: dict
summary:
  description: One line per backend.
  returned: always
  type: list
  elements: str
"""

import json
import re
import secrets
import urllib.error
import urllib.request

from ansible.module_utils.basic import AnsibleModule


def call(opener, url, method="GET", body=None, token=None, timeout=5.0):
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with opener.open(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, None, "no response (%s)" % getattr(exc, "reason", exc.__class__.__name__)
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return status, parsed, error


def step(status, error, good):
    return {"ok": status in good, "status": status, "error": None if status in good else (error or "HTTP %s" % status)}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            backends=dict(type="dict", required=True),
            user=dict(type="str", required=True),
            password=dict(type="str", required=True, no_log=True),
            throwaway_domain=dict(type="str", default="akig.example"),
            create=dict(type="bool", default=True),
            timeout=dict(type="float", default=5.0),
            fail_on_error=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if not p["user"] or not p["password"] or p["password"] in ("CHANGE_ME",):
        module.fail_json(msg="No check account configured (akig_auth_check_user / akig_auth_check_password).")
    backends = []
    for name, url in p["backends"].items():
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
            module.fail_json(msg="Backend %s: the URL must be http(s)://host[:port], got %r" % (name, url))
        backends.append({"name": str(name), "url": url.rstrip("/")})
    if not backends:
        module.fail_json(msg="No backend to check (backends is empty).")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    timeout = p["timeout"]
    results = {}
    tokens = {}
    failing = []
    for b in backends:
        status, body, error = call(opener, b["url"] + "/api/login", "POST", {"email": p["user"], "password": p["password"]},
                                   timeout=timeout)
        results[b["name"]] = {"login": step(status, error, (200,)), "token": {}, "create": None, "delete": None}
        if status == 200 and isinstance(body, dict) and body.get("token"):
            tokens[b["name"]] = body["token"]
        else:
            failing.append("login@%s: %s" % (b["name"], results[b["name"]]["login"]["error"]))
    for issuer, token in tokens.items():
        for b in backends:
            status, _body, error = call(opener, b["url"] + "/api/contracts?per_page=1", token=token, timeout=timeout)
            results[b["name"]]["token"][issuer] = step(status, error, (200,))
            if status != 200:
                failing.append("token@%s (token from %s): %s %s" % (b["name"], issuer, status, error or ""))
    for b in backends:
        token = tokens.get(b["name"])
        r = results[b["name"]]
        if not p["create"] or module.check_mode:
            r["create"] = {"ok": None, "status": None, "error": "skipped (check mode)" if module.check_mode else "skipped"}
            continue
        if not token:
            r["create"] = {"ok": False, "status": None, "error": "no token (login failed)"}
            failing.append("create@%s: no token (login failed)" % b["name"])
            continue
        address = "auth-check-%s@%s" % (secrets.token_hex(6), p["throwaway_domain"])
        status, body, error = call(opener, b["url"] + "/api/users", "POST",
                                   {"email": address, "full_name": "Compte jetable RB-P1-002",
                                    "password": secrets.token_urlsafe(18)}, token=token, timeout=timeout)
        r["create"] = step(status, error, (201,))
        if status != 201:
            failing.append("create@%s: %s %s" % (b["name"], status, error or ""))
            continue
        user_id = body.get("id") if isinstance(body, dict) else None
        status, _body, error = call(opener, "%s/api/users/%s" % (b["url"], user_id), "DELETE", token=token, timeout=timeout)
        r["delete"] = step(status, error, (204,))
        if status != 204:
            failing.append("delete@%s: %s %s (throwaway account %s left behind)" % (b["name"], status, error or "", address))
    summary = []
    for b in backends:
        r = results[b["name"]]
        token_bad = [i for i, s in r["token"].items() if not s["ok"]]
        create, delete = r["create"] or {}, r["delete"] or {}
        if create.get("ok") is None:
            create_text = create.get("error") or "not tried"
        elif create.get("ok") and delete.get("ok"):
            create_text = "ok"
        else:
            create_text = "FAIL (%s)" % (create.get("error") or delete.get("error"))
        token_text = ("FAIL (tokens from %s rejected)" % ", ".join(token_bad)) if token_bad else ("ok" if r["token"] else "not tried")
        summary.append("%s: login %s, token %s, creation %s" % (
            b["name"], "ok" if r["login"]["ok"] else "FAIL (%s)" % r["login"]["error"], token_text, create_text))
    result = dict(changed=False, ok=not failing, failing=failing, backends=results, summary=summary)
    if failing and p["fail_on_error"]:
        module.fail_json(msg="Authentication still fails: " + "; ".join(failing), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
