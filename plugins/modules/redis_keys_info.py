#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: redis_keys_info
short_description: Count and describe the Redis keys of one database that match a pattern, values never shown
version_added: 0.3.0
author: AKIG Engineering Team (@akig)
description:
  - Scans one Redis database for the keys matching O(pattern) with C(SCAN) in batches (never C(KEYS)) and reports how
    many there are, by type, their TTLs (how many have none, the shortest and the longest), a bounded sample of key
    B(names), the database's size and the key counts of every database (C(INFO keyspace)).
  - With O(expect_type) and O(require_ttl) it reports the anomalies, for example the session keys of the AKIG backend
    (V(akig:sess:*), strings holding JSON with a TTL) that are of another type, have no TTL, or, in a sample of
    O(json_check) values, are not JSON. Values are read only for that check and never returned.
  - Read-only; runs unchanged in check mode. Runbook RB-P1-002 uses it to find corrupt sessions, and the role
    C(akig.runbooks.redis_flush) to count what it will remove.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - akig.runbooks.redis
attributes:
  check_mode:
    support: full
    details: The module only reads.
  diff_mode:
    support: none
  platform:
    platforms: posix
requirements:
  - redis (redis-py)
options:
  sample_size:
    description:
      - How many key names to return in RV(sample) (the first found). From 0 to 1000.
    type: int
    default: 10
  expect_type:
    description:
      - The type every matching key should have; the others are counted in RV(anomalies.wrong_type).
    type: str
    choices: [string, list, set, zset, hash, stream]
  require_ttl:
    description:
      - Count the matching keys without a TTL in RV(anomalies.no_ttl).
    type: bool
    default: false
  json_check:
    description:
      - Read the values of up to this many matching string keys and count those that are not JSON in
        RV(anomalies.not_json). V(0) reads no value. From 0 to 100000.
    type: int
    default: 0
notes:
  - Key names can carry identifiers (a session id); keep O(sample_size) small, or V(0), when the result goes into a
    report.
seealso:
  - module: akig.runbooks.redis_keys
  - module: community.general.redis_info
"""

EXAMPLES = r"""
- name: Look for corrupt sessions (wrong type, no TTL, not JSON)
  akig.runbooks.redis_keys_info:
    login_host: "{{ hostvars[groups['redis'][0]].akig_address }}"
    login_port: "{{ akig_redis_port }}"
    login_password: "{{ akig_redis_password }}"
    db: 0
    pattern: "akig:sess:*"
    expect_type: string
    require_ttl: true
    json_check: 200
  register: __rb_p1_002_sessions
  no_log: false  # the password is a no_log option; the result holds no value

- name: Say how many sessions are corrupt
  ansible.builtin.debug:
    msg: "{{ __rb_p1_002_sessions.anomalies.total }} corrupt of {{ __rb_p1_002_sessions.count }} sessions"
"""

RETURN = r"""
db:
  description: The database scanned.
  returned: always
  type: int
  sample: 0
pattern:
  description: The pattern (empty for every key).
  returned: always
  type: str
  sample: "akig:sess:*"
whole_db:
  description: Whether the pattern matches every key.
  returned: always
  type: bool
  sample: false
count:
  description: How many keys match.
  returned: always
  type: int
  sample: 412
by_type:
  description: Matching keys by type.
  returned: always
  type: dict
  sample: {"string": 410, "hash": 2}
ttl:
  description: TTLs of the matching keys.
  returned: always
  type: dict
  contains:
    with_ttl:
      description: Keys with a TTL.
      type: int
    no_ttl:
      description: Keys without one.
      type: int
    min_s:
      description: Shortest TTL in seconds, V(null) when none has one.
      type: float
    max_s:
      description: Longest TTL in seconds, V(null) when none has one.
      type: float
  sample: {"with_ttl": 410, "no_ttl": 2, "min_s": 12.5, "max_s": 3599.9}
sample:
  description: Up to O(sample_size) matching key names (never values).
  returned: always
  type: list
  elements: str
  sample: ["akig:sess:0b8e..."]
dbsize:
  description: Keys in the database (C(DBSIZE)) at the end of the scan.
  returned: always
  type: int
  sample: 1200
keyspace:
  description: C(INFO keyspace) before the scan, per database.
  returned: always
  type: dict
  sample: {"db0": {"keys": 1200, "expires": 1100, "avg_ttl": 3000000}, "db15": {"keys": 1, "expires": 1, "avg_ttl": 0}}
databases:
  description: The server's C(databases) setting (V(null) when C(CONFIG) is not allowed).
  returned: always
  type: int
  sample: 16
server:
  description: Address, role (V(master), V(slave)) and version of the server.
  returned: always
  type: dict
  sample: {"address": "127.0.0.31:6379", "role": "master", "version": "7.0.15"}
anomalies:
  description: Keys that break O(expect_type), O(require_ttl) or (in the O(json_check) sample) hold no JSON.
  returned: always
  type: dict
  contains:
    wrong_type:
      description: Matching keys of another type than O(expect_type).
      type: int
    wrong_type_sample:
      description: Up to 10 of their names.
      type: list
      elements: str
    no_ttl:
      description: Matching keys without a TTL (with O(require_ttl)).
      type: int
    no_ttl_sample:
      description: Up to 10 of their names.
      type: list
      elements: str
    json_checked:
      description: String values read for the JSON check.
      type: int
    not_json:
      description: Of those, the values that are not JSON.
      type: int
    not_json_sample:
      description: Up to 10 of their names.
      type: list
      elements: str
    total:
      description: RV(anomalies.wrong_type) + RV(anomalies.no_ttl) + RV(anomalies.not_json).
      type: int
  sample: {"wrong_type": 0, "no_ttl": 0, "json_checked": 200, "not_json": 37, "total": 37}
healthy:
  description: Whether no anomaly was found.
  returned: always
  type: bool
  sample: false
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.akig.runbooks.plugins.module_utils.redis_keys import (
    HAS_REDIS, REDIS_IMPORT_ERROR, REDIS_TYPES, RedisKeysError, Server, argument_spec, check_batch_size, keys_info)


def main() -> None:
    spec = argument_spec()
    spec.update(
        sample_size={"type": "int", "default": 10},
        expect_type={"type": "str", "choices": list(REDIS_TYPES)},
        require_ttl={"type": "bool", "default": False},
        json_check={"type": "int", "default": 0},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    if not HAS_REDIS:
        module.fail_json(msg=missing_required_lib("redis"), exception=REDIS_IMPORT_ERROR)
    params = module.params
    try:
        check_batch_size(params["batch_size"])
        if not 0 <= params["sample_size"] <= 1000:
            raise RedisKeysError("sample_size must be from 0 to 1000, got %d" % params["sample_size"])
        if not 0 <= params["json_check"] <= 100000:
            raise RedisKeysError("json_check must be from 0 to 100000, got %d" % params["json_check"])
        result = keys_info(Server.from_params(params), params["db"], params["pattern"], params["batch_size"],
                           params["sample_size"], params["expect_type"], params["require_ttl"], params["json_check"])
    except RedisKeysError as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
