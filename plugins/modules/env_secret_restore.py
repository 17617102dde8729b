#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: env_secret_restore
short_description: Put one secret of an env file back to its value in a backup, atomically, the current file saved first
version_added: 0.2.0
author: AKIG Engineering Team (@akig)
description:
  - Reads the value of O(name) in O(backup) and writes it into O(path) in place of the current one. Only that
    variable changes; every other line of O(path) is kept as it is (a DATABASE_URL repointed by a failover since
    the backup was taken stays repointed).
  - Before the change the current file is copied to O(saved_dir) (mode 0600, same owner), so the change can be
    undone; then the new content is written to a temporary file in the same directory, flushed to disk, given the
    mode and owner of O(path), and renamed over it (atomic, readers see the old file or the new one, never half).
  - Refuses, without changing anything, when O(backup) is missing, unreadable or has no O(name), or when the
    backup holds the same value as O(path) and O(require_change) is true (nothing to restore).
  - Returns fingerprints (HMAC-SHA256 with O(key), 16 hex digits) of the value before and after, never the value.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports whether the value would change (and the fingerprints); writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  path:
    description: The env file the app reads.
    type: path
    required: true
  backup:
    description: The last good copy of the env file to take the value from.
    type: path
    required: true
  name:
    description: The variable to restore.
    type: str
    default: JWT_SECRET
  key:
    description: HMAC key of this run, for the fingerprints in the result.
    type: str
    required: true
  saved_dir:
    description:
      - Where the current file is saved before the change, as C(<basename of path>.before-restore.<UTC time>).
        Defaults to the directory of O(path) (not the backups directory, so a drifted copy is never taken for a
        good backup later).
    type: path
  require_change:
    description: Fail when the backup's value equals the current one (nothing to restore).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Put JWT_SECRET back to the last good backup's value
  akig.runbooks.env_secret_restore:
    path: /srv/akig/shared/.env
    backup: /srv/akig/shared/backups/.env.deploy-41
    key: "{{ run_key }}"
  no_log: true
"""

RETURN = r"""
before:
  description: Fingerprint of the value before (V(null) when the file had no such line).
  returned: always
  type: str
after:
  description: Fingerprint of the value after (the backup's).
  returned: always
  type: str
saved:
  description: Path of the copy of the file as it was before the change; V(null) when nothing changed.
  returned: always
  type: str
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.akig.runbooks.plugins.module_utils.atomic_write import replace_atomically
from ansible_collections.akig.runbooks.plugins.module_utils.auth_recovery import (
    EnvFileError,
    env_value,
    hmac_fingerprint,
    replace_env_value,
)


def read(module, what, path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        module.fail_json(msg="The %s %s does not exist. Nothing was changed." % (what, path))
    except (OSError, UnicodeDecodeError) as exc:
        module.fail_json(msg="The %s %s cannot be read (%s). Nothing was changed." % (what, path, exc.__class__.__name__))
    return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            backup=dict(type="path", required=True),
            name=dict(type="str", default="JWT_SECRET"),
            key=dict(type="str", required=True, no_log=True),
            saved_dir=dict(type="path"),
            require_change=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    path, name, key = p["path"], p["name"], p["key"]
    current_text = read(module, "env file", path)
    backup_text = read(module, "backup env file", p["backup"])
    try:
        wanted = env_value(backup_text, name)
        current = env_value(current_text, name)
    except EnvFileError as exc:
        module.fail_json(msg="An env file cannot be read with certainty: %s. Nothing was changed." % exc)
    if not wanted:
        module.fail_json(msg="The backup env file %s has no %s: choose another backup. Nothing was changed."
                             % (p["backup"], name))
    result = dict(changed=False, before=hmac_fingerprint(key, current) if current is not None else None,
                  after=hmac_fingerprint(key, wanted), saved=None)
    if current == wanted:
        if p["require_change"]:
            module.fail_json(msg="The backup env file %s holds the same %s as %s (fingerprint %s): nothing to restore "
                                 "from it. Nothing was changed." % (p["backup"], name, path, result["after"]), **result)
        module.exit_json(**result)
    try:
        new_text = replace_env_value(current_text, name, wanted)
    except EnvFileError as exc:
        module.fail_json(msg="%s: %s. Nothing was changed." % (path, exc))
    result["changed"] = True
    if module.check_mode:
        module.exit_json(**result)

    stat = os.stat(path)
    directory = os.path.dirname(os.path.abspath(path))
    saved_dir = p["saved_dir"] or directory
    os.makedirs(saved_dir, mode=0o700, exist_ok=True)
    saved = os.path.join(saved_dir, "%s.before-restore.%s" % (os.path.basename(path), time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())))
    fd = os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(current_text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chown(saved, stat.st_uid, stat.st_gid)
    result["saved"] = saved

    try:
        replace_atomically(path, new_text)
    except OSError as exc:
        module.fail_json(msg="Could not replace %s (%s); it is unchanged, its copy is %s." % (path, exc.__class__.__name__, saved),
                         **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
