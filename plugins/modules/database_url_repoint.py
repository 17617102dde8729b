#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: database_url_repoint
short_description: Point the DATABASE_URL of an AKIG env file at another PostgreSQL host and port, atomically, with a backup
version_added: 0.1.0
author: AKIG Engineering Team (@akig)
description:
  - Reads the env file O(path) on the backend host, points the host and port of every O(key) line at O(host) and
    O(port), and keeps everything else of the file as it is (user, password, database, query, quotes, C(export),
    comments, the other lines).
  - The file is parsed as the AKIG backend parses it (C(export), quotes, comments, IPv6 literals, a raw C(@) or
    percent-encoding in the password). A file without an O(key) line, or a line that cannot be repointed with
    certainty, fails the task before anything changes; the message names the line and the cause, never any part of
    the URL.
  - When the file changes, and only then, the current file is backed up next to it (C(<path>.<pid>.<date>@<time>~),
    as C(ansible.builtin.copy) does with C(backup=true)), then O(maintenance_file) is created (the app refuses writes
    with its maintenance message while it exists), then the new content is written to a temporary file in the
    same directory, flushed to disk, given the mode and owner of O(path), and renamed over it (readers see the old
    file or the new one, never half).
  - One task instead of reading the file, checking it, touching the maintenance file, reading the owner and mode and
    writing the file. RB-P1-003's direct repoint runs it on every backend host while the app cannot write.
  - Nothing secret is returned; the result gives the line numbers and the host and port each line pointed at.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads and checks the file and says whether it would change; writes nothing, creates no maintenance file.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  path:
    description:
      - The backend's env file, for example C(/srv/akig/shared/.env) (C(akig_backend_env_file)).
    type: path
    required: true
  host:
    description:
      - The new primary's host name or address, as the app should reach it (an IPv6 address without brackets).
    type: str
    required: true
  port:
    description:
      - The new primary's port.
    type: int
    default: 5432
  key:
    description:
      - The variable holding the PostgreSQL URL.
    type: str
    default: DATABASE_URL
  backup:
    description:
      - Keep the current file next to it before writing the new one.
    type: bool
    default: true
  maintenance_file:
    description:
      - A file to create (mode 0644) before the env file changes, so the app refuses writes with its maintenance
        message while it restarts; nothing is created when the file is already pointed at O(host) and O(port).
      - The caller removes it once the app is healthy again.
    type: path
seealso:
  - module: akig.runbooks.pm2
"""

EXAMPLES = r"""
- name: Point DATABASE_URL at the new primary, the app in maintenance mode first
  akig.runbooks.database_url_repoint:
    path: "{{ akig_backend_env_file }}"
    host: db-2.akig.internal
    port: 5432
    maintenance_file: "{{ akig_maintenance_file }}"
  register: repoint

- name: Restart the backend when the file changed
  akig.runbooks.pm2:
    name: akig-backend
    state: restarted
    update_env: true
  when: repoint.changed
"""

RETURN = r"""
lines:
  description: The line numbers (from 1) of the O(key) lines.
  returned: success
  type: list
  elements: int
  sample: [3]
before:
  description: Where each O(key) line pointed before (C(port) is V(null) when the URL had none).
  returned: success
  type: list
  elements: dict
  sample: [{"line": 3, "host": "db-1.akig.internal", "port": 5432}]
host:
  description: The host the lines point at now.
  returned: success
  type: str
port:
  description: The port the lines point at now.
  returned: success
  type: int
backup_file:
  description: The copy of the previous file, when one was made.
  returned: changed and O(backup)
  type: str
  sample: /srv/akig/shared/.env.4242.2026-12-01@13:40:02~
maintenance:
  description: Whether O(maintenance_file) exists after the task (created by it, or there before).
  returned: when O(maintenance_file) is given
  type: bool
msg:
  description: What the task did or would do, in one sentence.
  returned: always
  type: str
"""

import os
import shutil
import time
from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.akig.runbooks.plugins.module_utils.atomic_write import replace_atomically
from ansible_collections.akig.runbooks.plugins.module_utils.database_url import DatabaseUrlError, repoint_env

ARGUMENT_SPEC: Dict[str, Dict[str, Any]] = dict(
    path=dict(type="path", required=True),
    host=dict(type="str", required=True),
    port=dict(type="int", default=5432),
    key=dict(type="str", default="DATABASE_URL", no_log=False),
    backup=dict(type="bool", default=True),
    maintenance_file=dict(type="path"),
)


def _backup(path: str) -> str:
    """A copy of ``path`` next to it, named as ansible.builtin.copy's backup (``<path>.<pid>.<date>@<time>~``),
    with the same mode, owner and times; without the chattr attributes copy's backup also reads (lsattr)."""
    dest = "%s.%s.%s" % (path, os.getpid(), time.strftime("%Y-%m-%d@%H:%M:%S~", time.localtime()))
    shutil.copy2(path, dest)
    stat = os.stat(path)
    os.chown(dest, stat.st_uid, stat.st_gid)
    return dest


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    path = p["path"]
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            text = handle.read()
    except FileNotFoundError:
        module.fail_json(msg="The env file %s does not exist (check akig_backend_env_file). Nothing was changed." % path)
    except (OSError, UnicodeDecodeError) as exc:
        module.fail_json(msg="The env file %s cannot be read (%s). Nothing was changed." % (path, exc.__class__.__name__))
    try:
        plan = repoint_env(text, p["host"], p["port"], p["key"])
    except DatabaseUrlError as exc:
        module.fail_json(msg="%s: %s" % (path, exc))
    result: Dict[str, Any] = dict(changed=plan["changed"], lines=plan["lines"], before=plan["before"], host=plan["host"],
                                  port=plan["port"])
    target = "%s:%s" % (plan["host"], plan["port"])
    maintenance = p["maintenance_file"]
    if maintenance:
        result["maintenance"] = os.path.exists(maintenance)
    if not plan["changed"]:
        module.exit_json(msg="%s already points %s at %s: nothing to do." % (path, p["key"], target), **result)
    if module.check_mode:
        module.exit_json(msg="Would point %s of %s (line %s) at %s%s." % (
            p["key"], path, ", ".join(str(n) for n in plan["lines"]), target,
            ", the app in maintenance mode first" if maintenance else ""), **result)

    if p["backup"]:
        try:
            result["backup_file"] = _backup(path)
        except OSError as exc:
            module.fail_json(msg="Could not back up %s (%s); it is unchanged." % (path, exc), **result)
    if maintenance and not result["maintenance"]:
        try:
            fd = os.open(maintenance, os.O_WRONLY | os.O_CREAT, 0o644)
            os.close(fd)
        except OSError as exc:
            module.fail_json(msg="Could not create the maintenance file %s (%s). The env file is unchanged." % (maintenance, exc),
                             changed=False)
        result["maintenance"] = True
    try:
        replace_atomically(path, plan["text"])
    except OSError as exc:
        module.fail_json(msg="Could not replace %s (%s); it is unchanged%s." % (
            path, exc.__class__.__name__, ", its copy is %s" % result["backup_file"] if result.get("backup_file") else ""),
            **result)
    module.exit_json(msg="Pointed %s of %s (line %s) at %s%s." % (
        p["key"], path, ", ".join(str(n) for n in plan["lines"]), target,
        ", the app in maintenance mode" if result.get("maintenance") else ""), **result)


if __name__ == "__main__":
    main()
