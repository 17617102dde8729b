# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure parts of plugins/module_utils/redis_keys.py and the redis_flush_problems filter (no server).

The removal, the backup and the restore against a real redis-server are in
tests/integration/roles/test_redis_flush.py.
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

import ansible.utils.display  # noqa: F401  # pylint: disable=unused-import  # its ldconfig probe runs at import, not in a test
import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.akig.runbooks.plugins.filter.redis_flush import redis_flush_problems
from ansible_collections.akig.runbooks.plugins.module_utils.redis_keys import (
    BACKUP_FORMAT,
    BackupWriter,
    RedisKeysError,
    Server,
    backup_file_name,
    flush_input_problems,
    parse_keyspace,
    read_backup,
    restore_hint,
    ttl_summary,
    whole_db,
)
from hypothesis import given
from hypothesis import strategies as st

GOOD: dict[str, Any] = {
    "akig_environment": "lab",
    "redis_flush_db": 0,
    "redis_flush_pattern": "akig:sess:*",
    "redis_flush_confirm": False,
    "redis_flush_confirm_exempt_environments": ["lab"],
    "redis_flush_protected_dbs": [15],
    "redis_flush_batch_size": 1000,
    "redis_flush_backup_dir": "/var/backups/akig/redis",
    "redis_flush_login_host": "127.0.0.31",
    "redis_flush_login_port": 6379,
}


def test_good_inputs_have_no_problem() -> None:
    assert flush_input_problems(GOOD) == []
    assert flush_input_problems(dict(GOOD, akig_environment="production", redis_flush_confirm=True)) == []
    assert flush_input_problems(dict(GOOD, redis_flush_pattern="", redis_flush_confirm="true")) == []


@pytest.mark.parametrize("change, expected", [
    ({"redis_flush_db": 16}, "redis_flush_db must be a database index from 0 to 15"),
    ({"redis_flush_db": -1}, "redis_flush_db must be a database index from 0 to 15"),
    ({"redis_flush_db": "two"}, "the server's own count), got 'two'"),
    ({"redis_flush_db": True}, "redis_flush_db must be a database index"),
    ({"redis_flush_pattern": "*"}, "emptying the whole database 0 (redis_flush_pattern '*' matches every key) needs "
                                   "redis_flush_confirm=true in every environment"),
    ({"redis_flush_pattern": ""}, "emptying the whole database 0 (redis_flush_pattern '' matches every key)"),
    ({"redis_flush_pattern": 3}, "redis_flush_pattern must be a string"),
    ({"akig_environment": "production"}, "removing keys in environment 'production' needs redis_flush_confirm=true"),
    ({"akig_environment": None}, "removing keys in environment None needs redis_flush_confirm=true"),
    ({"redis_flush_confirm": "maybe"}, "redis_flush_confirm must be true or false, got 'maybe'"),
    ({"redis_flush_db": 15, "redis_flush_pattern": "", "redis_flush_confirm": True}, "redis_flush_db 15 is protected"),
    ({"redis_flush_batch_size": 0}, "redis_flush_batch_size must be a whole number from 1 to 100000"),
    ({"redis_flush_backup_dir": "backups"}, "redis_flush_backup_dir must be an absolute directory path"),
    ({"redis_flush_login_host": ""}, "redis_flush_login_host must be the Redis server's address"),
    ({"redis_flush_login_port": 70000}, "redis_flush_login_port must be a TCP port from 1 to 65535"),
    ({"redis_flush_confirm_exempt_environments": "lab"}, "redis_flush_confirm_exempt_environments must be a list"),
])
def test_each_bad_input_is_named(change: dict[str, Any], expected: str) -> None:
    problems = flush_input_problems(dict(GOOD, **change))
    assert any(expected in problem for problem in problems), problems


def test_a_pattern_on_a_protected_db_is_allowed() -> None:
    assert flush_input_problems(dict(GOOD, redis_flush_db=15, redis_flush_pattern="akig:cache:*")) == []


def test_the_filter_wraps_the_check_and_refuses_a_non_mapping() -> None:
    assert redis_flush_problems(GOOD) == []
    with pytest.raises(AnsibleFilterError, match="give the role's inputs as a dict"):
        redis_flush_problems(["redis_flush_db"])


@pytest.mark.parametrize("pattern, whole", [(None, True), ("", True), ("*", True), ("**", True), ("a*", False),
                                            ("akig:sess:*", False), ("?", False)])
def test_whole_db(pattern: Any, whole: bool) -> None:
    assert whole_db(pattern) is whole


def test_ttl_summary_ignores_gone_keys() -> None:
    assert ttl_summary([-1, 1500, 250, -2, -1]) == {"with_ttl": 2, "no_ttl": 2, "min_s": 0.25, "max_s": 1.5}
    assert ttl_summary([]) == {"with_ttl": 0, "no_ttl": 0, "min_s": None, "max_s": None}


def test_parse_keyspace_keeps_the_databases_in_order() -> None:
    info = {"redis_version": "7.0.15", "db10": {"keys": 1, "expires": 0, "avg_ttl": 0},
            "db2": {"keys": 5, "expires": 5, "avg_ttl": 100}}
    assert list(parse_keyspace(info)) == ["db2", "db10"]
    assert parse_keyspace(info)["db2"] == {"keys": 5, "expires": 5, "avg_ttl": 100}


@given(st.one_of(st.none(), st.text(max_size=200)), st.one_of(st.none(), st.integers(0, 15)))
def test_backup_file_names_are_safe(pattern: Any, db: Any) -> None:
    name = backup_file_name(db, pattern, 1_764_519_720_123, 4242)
    assert re.fullmatch(r"redis-(db\d+|all)-[A-Za-z0-9._-]+-20251130T162200123Z-4242\.jsonl", name), name
    assert "/" not in name and len(name) < 120


def test_restore_hint_names_the_module_the_role_and_never_a_password() -> None:
    server = Server(host="127.0.0.31", port=6379, password="hunter2-secret")
    hint = restore_hint("/b/redis-db0.jsonl", server, 0)
    assert hint["args"] == {"state": "restored", "backup_path": "/b/redis-db0.jsonl", "login_host": "127.0.0.31",
                            "login_port": 6379}
    assert "tasks_from: restore" in hint["role"]
    assert "hunter2-secret" not in json.dumps(hint)
    assert "hunter2-secret" not in repr(server.redact)


def test_server_errors_never_show_the_password() -> None:
    server = Server(host="10.0.0.5", port=6380, password="hunter2-secret")
    error = server.error(OSError("connect hunter2-secret failed"), "read keys", 3)
    assert error.msg.startswith("cannot read keys: Redis at 10.0.0.5:6380 (database 3) is unreachable")
    assert "hunter2-secret" not in error.msg and "[REDACTED]" in error.msg


def test_backup_writer_is_private_and_readable_back(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "backups"
    writer = BackupWriter(str(directory), "b.jsonl", {"db": 2, "pattern": "x:*", "mode": "pattern"})
    assert writer.key(2, b"x:\xff1", "string", 1500, b"\x00payload", 1000) == 1
    writer.skip(1, 2, b"x:\xff1", "changed")
    writer.close({"keys": 1, "removed": 1, "complete": True})
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "b.jsonl").stat().st_mode) == 0o600
    records = list(read_backup(writer.path))
    assert records[0]["format"] == BACKUP_FORMAT and records[0]["db"] == 2
    assert records[1]["type"] == "string" and records[1]["pttl"] == 1500 and records[1]["n"] == 1
    assert records[2] == {"db": 2, "skip": 1, "k_skipped": "eDr/MQ==", "why": "changed"}
    assert records[3]["end"] is True
    with pytest.raises(RedisKeysError, match="cannot write the backup in .*nothing was removed"):
        BackupWriter(str(directory), "b.jsonl", {})  # never overwrites a backup


def test_read_backup_refuses_what_is_not_a_backup(tmp_path: Path) -> None:
    other = tmp_path / "other.jsonl"
    other.write_text('{"hello": 1}\n')
    with pytest.raises(RedisKeysError, match="is not a redis_keys backup"):
        list(read_backup(str(other)))
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text(json.dumps({"format": BACKUP_FORMAT}) + "\n{oops\n")
    with pytest.raises(RedisKeysError, match="damaged at line 2"):
        list(read_backup(str(damaged)))
    with pytest.raises(RedisKeysError, match="cannot read the backup"):
        list(read_backup(str(tmp_path / "missing.jsonl")))
