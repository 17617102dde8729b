#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: redis_keys
short_description: Remove the Redis keys of one database that match a pattern (or the whole database), backup first; restore them
version_added: 0.3.0
author: AKIG Engineering Team (@akig)
description:
  - O(state=absent) with a O(pattern) removes the matching keys of database O(db) with C(SCAN) and C(UNLINK) in batches
    of O(batch_size) (never C(KEYS)). Each batch is written to the backup file (C(DUMP) and C(PTTL) of every key) and
    synced to disk before it is removed, and a key is removed only while its value is still the one backed up (compared
    on the server in one script per batch), so the backup holds exactly what was removed. A key changed or gone in between
    is left alone and counted in RV(skipped).
  - O(state=absent) without a pattern (or with V(*)) backs up every key of O(db), then empties exactly that database
    (C(FLUSHDB), with C(DBSIZE) in the same transaction). C(FLUSHALL) only with O(flush_all=true), every database
    backed up first.
  - The backup is a JSON-lines file, mode 0600, in O(backup_dir) (created 0700) on the host that runs the module
    (the controller, in the role C(akig.runbooks.redis_flush)). When it cannot be written nothing is removed. The
    result gives its path and how to restore it (RV(restore)).
  - O(state=restored) puts the keys of a backup back (C(RESTORE) with the TTL they had left); keys that exist again
    are kept (unless O(replace)) and keys whose TTL ran out since the backup are not restored. A second restore changes
    nothing.
  - Nothing matching is not a change (V(changed=false), no backup file). Check mode counts what would be removed (or
    restored) and changes nothing.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - akig.runbooks.redis
attributes:
  check_mode:
    support: full
    details: Counts the keys that would be removed (by type) or restored; writes no backup and changes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
requirements:
  - redis (redis-py)
options:
  state:
    description:
      - V(absent) removes the keys (after the backup); V(restored) puts the keys of O(backup_path) back.
    type: str
    choices: [absent, restored]
    default: absent
  backup_dir:
    description:
      - Directory for the backup file (created 0700 if missing), on the host that runs the module. Required with
        O(state=absent).
    type: path
  backup_path:
    description:
      - The backup file to restore (RV(backup_path) of the removal). Required with O(state=restored).
    type: path
  flush_all:
    description:
      - With O(state=absent) and no O(pattern), empty B(every) database (C(FLUSHALL)) instead of O(db) only; every
        database is backed up first. Never implied.
    type: bool
    default: false
  flush_async:
    description:
      - Free the memory of a C(FLUSHDB) or C(FLUSHALL) in the background (C(ASYNC)); the keys are gone at once either way.
    type: bool
    default: true
  restore_to_db:
    description:
      - With O(state=restored), the database to restore into; by default each key goes back to the database it was
        removed from.
    type: int
  replace:
    description:
      - With O(state=restored), overwrite keys that exist again.
    type: bool
    default: false
notes:
  - The backup holds the values of the keys (sessions, cache entries); keep O(backup_dir) out of shared artifacts and
    remove it when the incident is closed.
  - Needs Redis 4 or later (C(UNLINK), C(FLUSHDB ASYNC)); the login user needs C(SCAN), C(TYPE), C(PTTL), C(DUMP),
    C(EVAL), C(UNLINK), C(FLUSHDB), C(RESTORE), C(INFO) and C(CONFIG GET) (without C(CONFIG GET) the index is
    still checked by C(SELECT)).
  - Refuses a server that is a replica (read-only).
seealso:
  - module: akig.runbooks.redis_keys_info
  - module: community.general.redis
"""

EXAMPLES = r"""
- name: Remove the corrupt session keys (backup first)
  akig.runbooks.redis_keys:
    login_host: "{{ hostvars[groups['redis'][0]].akig_address }}"
    login_password: "{{ akig_redis_password }}"
    db: 0
    pattern: "akig:sess:*"
    backup_dir: /var/backups/akig/redis
  register: __redis_flush_removed

- name: Put them back
  akig.runbooks.redis_keys:
    login_host: "{{ hostvars[groups['redis'][0]].akig_address }}"
    login_password: "{{ akig_redis_password }}"
    state: restored
    backup_path: "{{ __redis_flush_removed.backup_path }}"
"""

RETURN = r"""
db:
  description: The database emptied or restored into (V(null) for a C(FLUSHALL) or a restore of several databases).
  returned: always
  type: int
  sample: 0
pattern:
  description: The pattern (empty for the whole database).
  returned: always
  type: str
  sample: "akig:sess:*"
mode:
  description: V(pattern) (SCAN + UNLINK), V(flushdb) or V(flushall).
  returned: when O(state=absent)
  type: str
  sample: pattern
matched:
  description: Keys found and backed up (in check mode, found).
  returned: when O(state=absent)
  type: int
  sample: 412
would_remove:
  description: In check mode, how many keys would be removed.
  returned: when O(state=absent) in check mode
  type: int
  sample: 412
matched_by_type:
  description: In check mode, the keys that would be removed by type.
  returned: when O(state=absent) in check mode
  type: dict
  sample: {"string": 412}
removed:
  description: Keys removed.
  returned: when O(state=absent)
  type: int
  sample: 412
removed_by_type:
  description: Keys removed, by type.
  returned: when O(state=absent)
  type: dict
  sample: {"string": 410, "hash": 2}
skipped:
  description: Pattern mode, keys changed or gone between the backup and the removal (left alone); restore, keys
    marked so in the backup.
  returned: always
  type: int
  sample: 0
backup_path:
  description: The backup file (V(null) when nothing was removed).
  returned: always
  type: str
  sample: /var/backups/akig/redis/redis-db0-akig_sess-20261130T162200123Z-4242.jsonl
backup_keys:
  description: Keys written to the backup.
  returned: when something was removed
  type: int
  sample: 412
restore:
  description: How to put the removed keys back (V(null) when nothing was removed).
  returned: when O(state=absent)
  type: dict
  contains:
    module:
      description: The module to use.
      type: str
    args:
      description: Its arguments (plus O(login_password)).
      type: dict
    role:
      description: The role entry point that does it.
      type: str
    text:
      description: The same in one sentence.
      type: str
restored:
  description: Keys restored (in check mode, that would be).
  returned: when O(state=restored)
  type: int
  sample: 412
existing:
  description: Keys of the backup that exist again and were kept.
  returned: when O(state=restored)
  type: int
  sample: 0
expired:
  description: Keys not restored because their TTL ran out since the backup.
  returned: when O(state=restored)
  type: int
  sample: 3
complete:
  description: Whether the backup has its end record (the removal ran to its end).
  returned: when O(state=restored)
  type: bool
  sample: true
warning:
  description: A difference an operator should know (keys written during a whole-database backup, an incomplete backup).
  returned: when there is one
  type: str
actions:
  description: What was done (or in check mode, would be), in plain words.
  returned: always
  type: list
  elements: str
  sample: ["backed up 412 keys matching 'akig:sess:*' in database 0 to /var/backups/...", "removed 412 of them"]
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.akig.runbooks.plugins.module_utils.redis_keys import (
    HAS_REDIS, REDIS_IMPORT_ERROR, RedisKeysError, Server, argument_spec, check_batch_size, remove_keys, restore_keys)


def main() -> None:
    spec = argument_spec()
    spec.update(
        state={"type": "str", "choices": ["absent", "restored"], "default": "absent"},
        backup_dir={"type": "path"},
        backup_path={"type": "path"},
        flush_all={"type": "bool", "default": False},
        flush_async={"type": "bool", "default": True},
        restore_to_db={"type": "int"},
        replace={"type": "bool", "default": False},
    )
    module = AnsibleModule(
        argument_spec=spec,
        required_if=[("state", "absent", ("backup_dir",)), ("state", "restored", ("backup_path",))],
        supports_check_mode=True,
    )
    if not HAS_REDIS:
        module.fail_json(msg=missing_required_lib("redis"), exception=REDIS_IMPORT_ERROR)
    params = module.params
    server = Server.from_params(params)
    try:
        check_batch_size(params["batch_size"])
        if params["state"] == "absent":
            result = remove_keys(server, params["db"], params["pattern"], params["backup_dir"], params["batch_size"],
                                 check_mode=module.check_mode, flush_all=params["flush_all"],
                                 flush_async=params["flush_async"])
        else:
            result = restore_keys(server, params["backup_path"], params["restore_to_db"], params["replace"],
                                  params["batch_size"], check_mode=module.check_mode)
    except RedisKeysError as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    if result.get("warning"):
        module.warn(result["warning"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
