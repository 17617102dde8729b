#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: app_maintenance
short_description: Put the AKIG app in its read-only maintenance mode, or take it out once its health check answers 200
version_added: 0.3.0
author: AKIG Engineering Team (@akig)
description:
  - The AKIG backend refuses writes with its maintenance message while its maintenance file exists
    (C(MAINTENANCE_FILE), C(akig_maintenance_file) in the inventory); logging in and reading stay allowed.
  - O(state=present) creates the file (empty, mode C(0644)) unless it exists.
  - O(state=absent) removes it. With O(health_url), first waits until that URL answers HTTP 200 on the backend host,
    polling every O(interval) seconds for at most O(timeout) seconds; when it never does, the task fails and the file
    is kept, so the app goes on refusing writes instead of taking them on a backend that is not healthy.
  - The health gate and the exit from maintenance in one task on the backend host (RB-P1-003's direct repoint, after
    the restart on the new primary), where they were a health-check task and a file task.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Says whether the file would be created or removed; sends no request and changes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  path:
    description:
      - The maintenance file the backend watches, for example C(/srv/akig/shared/maintenance.flag).
    type: path
    required: true
  state:
    description:
      - V(present) puts the app in maintenance mode, V(absent) takes it out.
    type: str
    choices: [present, absent]
    default: present
  health_url:
    description:
      - With O(state=absent), the backend's health check (for example C(http://127.0.0.21:4000/api/health)) that must
        answer HTTP 200 before the file is removed. Redirects are not followed; no proxy is used.
      - Not set, the file is removed at once.
    type: str
  timeout:
    description:
      - Seconds allowed for O(health_url) to answer 200 (each request gets at most the time left, and 2 seconds).
    type: float
    default: 30
  interval:
    description:
      - Seconds between two requests to O(health_url).
    type: float
    default: 0.2
  validate_certs:
    description:
      - Verify the TLS certificate of an C(https) O(health_url).
    type: bool
    default: true
notes:
  - The file's content is not read (the app only checks that it exists). A banner for the users is a separate file
    (C(banner.txt) next to it), which this module leaves alone.
seealso:
  - module: akig.runbooks.database_url_repoint
  - module: akig.runbooks.http_health
"""

EXAMPLES = r"""
- name: Leave maintenance mode once the backend is healthy on the new primary
  akig.runbooks.app_maintenance:
    path: "{{ akig_maintenance_file }}"
    state: absent
    health_url: "{{ akig_backend_url }}/api/health"
    timeout: 30

- name: Put the app in read-only maintenance mode
  akig.runbooks.app_maintenance:
    path: /srv/akig/shared/maintenance.flag
"""

RETURN = r"""
path:
  description: The maintenance file.
  returned: always
  type: str
  sample: /srv/akig/shared/maintenance.flag
maintenance:
  description: Whether the app is in maintenance mode after the task (in check mode, whether it would be).
  returned: always
  type: bool
  sample: false
healthy:
  description:
    - Whether O(health_url) answered 200; V(null) when it was not asked (no O(health_url), O(state=present), check
      mode, or no file to remove).
  returned: always
  type: bool
  sample: true
status:
  description: The last HTTP status of O(health_url); V(null) when it gave none (refused, timeout) or was not asked.
  returned: always
  type: int
  sample: 200
attempts:
  description: Requests sent to O(health_url).
  returned: always
  type: int
  sample: 2
waited_s:
  description: Seconds from the first request to the answer 200 (or to giving up).
  returned: always
  type: float
  sample: 0.21
msg:
  description: What the task did, or would do.
  returned: always
  type: str
  sample: "/srv/akig/shared/maintenance.flag removed: the app writes again (http://127.0.0.21:4000/api/health answered 200 after 1 request(s), 0.01 s)."
"""

import os
from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.akig.runbooks.plugins.module_utils.http_health import HealthError, validate_url, wait_healthy

ARGUMENT_SPEC: Dict[str, Dict[str, Any]] = dict(
    path=dict(type="path", required=True),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    health_url=dict(type="str"),
    timeout=dict(type="float", default=30),
    interval=dict(type="float", default=0.2),
    validate_certs=dict(type="bool", default=True),
)


def check_input(params: Dict[str, Any]) -> None:
    """Refuse what the task cannot use, before any request or change."""
    if params["timeout"] <= 0:
        raise HealthError("timeout must be a positive number of seconds, got %s" % params["timeout"])
    if params["interval"] < 0:
        raise HealthError("interval must be 0 or more seconds, got %s" % params["interval"])
    if params["health_url"]:
        if params["state"] != "absent":
            raise HealthError("health_url gates the exit from maintenance: give it with state=absent only")
        validate_url(params["health_url"])
    parent = os.path.dirname(os.path.abspath(params["path"]))
    if not os.path.isdir(parent):
        raise HealthError("the directory of the maintenance file %s does not exist on this host; check "
                          "akig_maintenance_file (the MAINTENANCE_FILE the backend is started with)" % params["path"])


def execute(module: AnsibleModule) -> None:
    params = module.params
    try:
        check_input(params)
    except HealthError as exc:
        module.fail_json(msg=exc.msg, changed=False)
    path, url = params["path"], params["health_url"]
    exists = os.path.lexists(path)
    result: Dict[str, Any] = dict(path=path, healthy=None, status=None, attempts=0, waited_s=0.0)
    if params["state"] == "present":
        if exists:
            module.exit_json(changed=False, maintenance=True, msg="%s exists: the app is already in maintenance mode." % path,
                             **result)
        if not module.check_mode:
            try:
                with open(path, "a", encoding="utf-8"):
                    pass
                os.chmod(path, 0o644)
            except OSError as exc:
                module.fail_json(msg="could not create the maintenance file %s: %s" % (path, exc), changed=False,
                                 maintenance=False, **result)
        module.exit_json(changed=True, maintenance=True, msg="%s %s: the app refuses writes with its maintenance message."
                         % (path, "would be created" if module.check_mode else "created"), **result)

    if not exists:
        module.exit_json(changed=False, maintenance=False, msg="%s does not exist: the app is not in maintenance mode." % path,
                         **result)
    if module.check_mode:
        module.exit_json(changed=True, maintenance=False, msg="Would remove %s%s (check mode: nothing sent, nothing removed)."
                         % (path, " once %s answers 200" % url if url else ""), **result)
    gate = ""
    if url:
        healthy, status, error, attempts, waited = wait_healthy(url, params["timeout"], params["interval"],
                                                                params["validate_certs"])
        result.update(healthy=healthy, status=status, attempts=attempts, waited_s=round(waited, 3))
        if not healthy:
            module.fail_json(msg="%s did not answer 200 within %s s (%d request(s); last: %s): %s is kept, so the app "
                                 "goes on refusing writes. Check the backend (pm2 logs, its DATABASE_URL), then run "
                                 "the task again." % (url, params["timeout"], attempts,
                                                      "HTTP %s" % status if status is not None else error or "no answer",
                                                      path),
                             changed=False, maintenance=True, **result)
        gate = " (%s answered 200 after %d request(s), %.2f s)" % (url, attempts, waited)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        module.fail_json(msg="could not remove the maintenance file %s: %s" % (path, exc), changed=False,
                         maintenance=True, **result)
    module.exit_json(changed=True, maintenance=False, msg="%s removed: the app writes again%s." % (path, gate), **result)


def main() -> None:
    execute(AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True))


if __name__ == "__main__":
    main()
