# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The role akig.runbooks.redis_flush and the modules redis_keys / redis_keys_info against a real redis-server.

The shared redis-server of tests/support (127.0.0.1, a free port in 56300-56399, a random password, no
persistence) holds the keys; each test uses its own database indexes and key prefixes (the incident lock
tests use other keys), and FLUSHALL is tested on a private redis-server of its own. Every run goes through
ansible (tests/support/ansible.py): ``ansible-playbook`` for the role, ``ansible localhost -m`` for the
modules. The password reaches ansible through an environment lookup, the way a vault variable would, and no
output of any run may contain it. Independent runs are started together to keep the file short.

Assertions are on the server's state: what is left in each database (values, types, TTLs), what the backup
file holds (mode 0600, restores exactly what was removed), and the runbook run fact the role records into.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from ansible_collections.akig.runbooks.tests.support import ansible as support_ansible
from ansible_collections.akig.runbooks.tests.support.redis_server import port_is_free, redis_server_binary

PASSWORD_ENV = "AKIG_TEST_REDIS_PW"
VENV_BIN = Path(sys.executable).parent


# --------------------------------------------------------------------------- helpers


class Ansible(support_ansible.Ansible):
    """The shared runner; the Redis password reaches the runs through ``PASSWORD_ENV`` only."""

    def __init__(self, workdir: Path, password: str) -> None:
        super().__init__(workdir, [password], env={PASSWORD_ENV: password})

    def start_module(self, module: str, args: dict[str, Any], *flags: str) -> "subprocess.Popen[str]":
        return self.start_adhoc("akig.runbooks.%s" % module, args, *flags)


@pytest.fixture
def ansible(tmp_path: Path, redis_server: dict[str, Any]) -> Ansible:
    return Ansible(tmp_path, redis_server["password"])


def login(server: dict[str, Any]) -> dict[str, Any]:
    return {"login_host": server["host"], "login_port": server["port"],
            "login_password": "{{ lookup('ansible.builtin.env', '%s') }}" % PASSWORD_ENV}


def db_client(server: dict[str, Any], db: int) -> redis.Redis:
    return redis.Redis(host=server["host"], port=server["port"], password=server["password"], db=db)


def populate(client: redis.Redis, prefix: str, strings: int = 50) -> None:
    """``strings`` JSON strings with a TTL, plus one key of every other type (one without a TTL)."""
    pipe = client.pipeline()
    for index in range(strings):
        pipe.set("%s%04d" % (prefix, index), json.dumps({"user_id": index}), ex=3600)
    pipe.hset(prefix + "hash", mapping={"a": "1", "b": "2"})
    pipe.expire(prefix + "hash", 600)
    pipe.rpush(prefix + "list", "x", "y", "z")
    pipe.sadd(prefix + "set", "m", "n")
    pipe.zadd(prefix + "zset", {"p": 1.5, "q": 2.5})
    pipe.set(prefix + "nottl", b"\x80\x04not json")
    pipe.execute()


def value_of(client: redis.Redis, key: bytes) -> tuple[Any, ...]:
    """A key's type and value, compared as data: a DUMP payload is not canonical (a set restored from its DUMP
    can be re-encoded in another order), so two equal sets may DUMP differently."""
    kind = client.type(key).decode()
    if kind == "string":
        return kind, client.get(key)
    if kind == "hash":
        return kind, sorted(client.hgetall(key).items())
    if kind == "list":
        return kind, client.lrange(key, 0, -1)
    if kind == "set":
        return kind, sorted(client.smembers(key))
    if kind == "zset":
        return kind, client.zrange(key, 0, -1, withscores=True)
    if kind == "stream":
        return kind, client.xrange(key)
    return kind, client.dump(key)


def snapshot(client: redis.Redis, pattern: str = "*") -> dict[bytes, tuple[Any, int]]:
    """Every key matching ``pattern``: its type and value, and its TTL in seconds (-1 none)."""
    return {key: (value_of(client, key), client.ttl(key)) for key in client.scan_iter(match=pattern, count=1000)}


def assert_same(before: dict[bytes, tuple[Any, int]], after: dict[bytes, tuple[Any, int]], slack_s: int = 30) -> None:
    assert set(after) == set(before), (sorted(set(before) ^ set(after))[:10])
    for key, (payload, ttl) in before.items():
        assert after[key][0] == payload, key
        if ttl == -1:
            assert after[key][1] == -1, key
        else:
            assert 0 < after[key][1] <= ttl and ttl - after[key][1] <= slack_s, (key, ttl, after[key][1])


def write_inventory(tmp_path: Path, server: dict[str, Any], backup_dir: Path, environment: str = "lab") -> Path:
    """An inventory shaped like the collection's: a redis group, akig_address, akig_redis_port/_password."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(textwrap.dedent("""\
        all:
          vars:
            akig_environment: %s
            akig_address: "{{ ansible_host | default(inventory_hostname) }}"
            akig_redis_port: %d
            akig_redis_password: "{{ lookup('ansible.builtin.env', '%s') }}"
            incident_lock_redis_db: 15
            redis_flush_backup_dir: %s
          children:
            redis:
              hosts:
                cache-test:
                  ansible_host: %s
        """) % (environment, server["port"], PASSWORD_ENV, backup_dir, server["host"]))
    return inventory


PLAYBOOK = """\
- name: Flush Redis keys through the role, as a runbook does (validate first, then the frame's run fact)
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Check the flush's inputs before anything is opened
      ansible.builtin.include_role:
        name: akig.runbooks.redis_flush
        tasks_from: validate

    - name: Open a run fact as the frame's open entry point would
      ansible.builtin.set_fact:
        akig_run: "{{ 'rb-p1-002-auth-broken' | akig.runbooks.run_new(now(utc=true, fmt='%Y-%m-%dT%H:%M:%S.%fZ'), 'P1') }}"
      when: record_run | default(false) | bool

    - name: Flush
      ansible.builtin.include_role:
        name: akig.runbooks.redis_flush

    - name: Restore what was removed
      ansible.builtin.include_role:
        name: akig.runbooks.redis_flush
        tasks_from: restore
      vars:
        redis_flush_restore_path: "{{ redis_flush_result.backup_path }}"
      when:
        - restore_after | default(false) | bool
        - redis_flush_result.backup_path is not none

    - name: Hand the results to the test
      ansible.builtin.copy:
        dest: "{{ result_file }}"
        content: "{{ {'result': redis_flush_result, 'restored': redis_flush_restored | default(none),
                      'run': akig_run | default(none)} | to_json }}"
        mode: "0600"
      check_mode: false
      changed_when: false  # the test's own bookkeeping: the recap counts the role's changes only
"""


def run_role(ansible: Ansible, tmp_path: Path, inventory: Path, extra: dict[str, Any], *flags: str,
             name: str = "run") -> "tuple[subprocess.Popen[str], Path]":
    playbook = tmp_path / "flush.yml"
    if not playbook.exists():
        playbook.write_text(PLAYBOOK)
    result_file = tmp_path / ("%s.json" % name)
    proc = ansible.start_playbook(playbook, dict(extra, result_file=str(result_file)), *flags,
                                  inventory=str(inventory))
    return proc, result_file


def finish_role(ansible: Ansible, started: "tuple[subprocess.Popen[str], Path]") -> "tuple[support_ansible.Run, Any]":
    proc, result_file = started
    run = ansible.finish(proc, timeout=180)
    data = json.loads(result_file.read_text()) if result_file.exists() else None
    return run, data


# --------------------------------------------------------------------------- documentation


def test_ansible_doc_renders_both_modules_and_the_role(ansible: Ansible) -> None:
    procs = [ansible.start([VENV_BIN / "ansible-doc", "akig.runbooks.redis_keys"]),
             ansible.start([VENV_BIN / "ansible-doc", "akig.runbooks.redis_keys_info"]),
             ansible.start([VENV_BIN / "ansible-doc", "-t", "role", "akig.runbooks.redis_flush"]),
             ansible.start([VENV_BIN / "ansible-doc", "-t", "filter", "akig.runbooks.redis_flush_problems"])]
    keys, info, role, problems = [ansible.finish(proc) for proc in procs]
    for run in (keys, info, role, problems):
        assert run.rc == 0 and "WARNING" not in run.stderr, run.stderr
    assert "backup_dir" in keys.stdout and "flush_all" in keys.stdout and "restore_to_db" in keys.stdout
    assert "expect_type" in info.stdout and "json_check" in info.stdout
    for entry in ("main", "validate", "restore"):
        assert re.search(r"ENTRY POINT: \W*%s\W" % entry, role.stdout), role.stdout[:2000]


# --------------------------------------------------------------------------- the role, end to end


def test_role_removes_only_the_pattern_in_the_target_db_then_restores_it_exactly(
        ansible: Ansible, tmp_path: Path, redis_server: dict[str, Any]) -> None:
    target, other_db = db_client(redis_server, 3), db_client(redis_server, 4)
    for client in (target, other_db):
        client.flushdb()
    populate(target, "t3:sess:")
    populate(target, "t3:keep:", strings=20)
    populate(other_db, "t3:sess:", strings=20)  # same names, another database
    removed_before = snapshot(target, "t3:sess:*")
    kept_before, other_before = snapshot(target, "t3:keep:*"), snapshot(other_db)
    backup_dir = tmp_path / "backups"
    inventory = write_inventory(tmp_path, redis_server, backup_dir)
    extra = {"redis_flush_db": 3, "redis_flush_pattern": "t3:sess:*", "redis_flush_reason": "corrupt sessions",
             "redis_flush_expect_type": "string", "redis_flush_require_ttl": True, "redis_flush_json_check": 100,
             "record_run": True}

    first, data = finish_role(ansible, run_role(ansible, tmp_path, inventory, extra))
    assert first.rc == 0, first.stdout[-3000:] + first.stderr
    result = data["result"]
    assert result["db"] == 3 and result["pattern"] == "t3:sess:*" and result["mode"] == "pattern"
    assert result["matched"] == result["removed"] == len(removed_before) == 55
    assert result["removed_by_type"] == {"hash": 1, "list": 1, "set": 1, "string": 51, "zset": 1}
    # the info step saw the corruption the runbook looks for: 4 keys of another type, 4 without TTL, 1 not JSON
    assert result["anomalies"]["wrong_type"] == 4 and result["anomalies"]["not_json"] == 1
    assert result["anomalies"]["no_ttl"] == 4  # list, set, zset and the string without TTL
    assert all(name.startswith("t3:sess:") for name in result["sample"]) and len(result["sample"]) == 5
    # only the pattern, only in database 3
    assert snapshot(target, "t3:sess:*") == {}
    assert_same(kept_before, snapshot(target, "t3:keep:*"), slack_s=0 + 60)
    assert_same(other_before, snapshot(other_db), slack_s=60)
    # the backup: 0600 in a 0700 directory, its path and the restore procedure reported and recorded
    backup = Path(result["backup_path"])
    assert backup.parent == backup_dir
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600 and stat.S_IMODE(backup_dir.stat().st_mode) == 0o700
    lines = [json.loads(line) for line in backup.read_text().splitlines()]
    assert lines[0]["format"] == "akig.runbooks.redis_keys/backup" and lines[-1]["end"] is True
    assert len([line for line in lines if "k" in line]) == 55
    assert "state=restored" in result["restore"] and str(backup) in result["restore"]
    run = data["run"]
    assert run["results"]["redis_flush"]["removed"] == 55
    assert {"name": "redis keys removed (db 3, t3:sess:*)", "value": "55"} in run["figures"]  # figures are text
    assert any("removed 55 key(s) matching 't3:sess:*' of Redis database 3 (corrupt sessions)" in change["action"]
               for change in run["changes"]), run["changes"]
    # values never leave Redis: nothing of a value is in the output
    assert "user_id" not in first.stdout

    # idempotence: nothing matches any more, nothing changes, no new backup; then the restore
    second, again = finish_role(ansible, run_role(ansible, tmp_path, inventory, dict(extra, restore_after=False),
                                                  name="second"))
    assert second.rc == 0, second.stdout[-3000:]
    assert again["result"]["changed"] is False and again["result"]["removed"] == 0
    assert again["result"]["backup_path"] is None
    assert "changed=0" in second.stdout
    assert sorted(backup_dir.iterdir()) == [backup]

    restore = ansible.finish(ansible.start_module("redis_keys", dict(login(redis_server), state="restored",
                                                                     backup_path=str(backup))))
    assert restore.status == "CHANGED", restore.stdout
    assert restore.result["restored"] == 55 and restore.result["existing"] == 0 and restore.result["db"] == 3
    assert_same(removed_before, snapshot(target, "t3:sess:*"))
    assert_same(kept_before, snapshot(target, "t3:keep:*"), slack_s=60)
    again_restore = ansible.finish(ansible.start_module("redis_keys", dict(login(redis_server), state="restored",
                                                                           backup_path=str(backup))))
    assert again_restore.status == "SUCCESS" and again_restore.result["existing"] == 55, again_restore.stdout


def test_role_check_mode_counts_and_changes_nothing_then_whole_db_flush_with_confirmation(
        ansible: Ansible, tmp_path: Path, redis_server: dict[str, Any]) -> None:
    target, neighbour = db_client(redis_server, 5), db_client(redis_server, 6)
    for client in (target, neighbour):
        client.flushdb()
    populate(target, "t5:cache:", strings=30)
    populate(neighbour, "t6:cache:", strings=10)
    target_before, neighbour_before = snapshot(target), snapshot(neighbour)
    backup_dir = tmp_path / "backups"
    inventory = write_inventory(tmp_path, redis_server, backup_dir)
    whole = {"redis_flush_db": 5, "redis_flush_pattern": "", "redis_flush_confirm": True, "restore_after": True}

    check, planned = finish_role(ansible, run_role(ansible, tmp_path, inventory, whole, "--check", name="check"))
    assert check.rc == 0, check.stdout[-3000:]
    assert planned["result"]["check_mode"] is True
    assert planned["result"]["would_remove"] == 35 and planned["result"]["removed"] == 0
    assert "would back up then remove 35 keys of database 5" in check.stdout
    assert_same(target_before, snapshot(target), slack_s=60)
    assert not backup_dir.exists() or not any(backup_dir.iterdir())

    # FLUSHDB of exactly database 5 (the neighbour keeps everything), then the role's restore entry point
    flush, data = finish_role(ansible, run_role(ansible, tmp_path, inventory, whole, name="flush"))
    assert flush.rc == 0, flush.stdout[-3000:]
    assert data["result"]["mode"] == "flushdb" and data["result"]["removed"] == 35
    assert "FLUSHDB of database 5: 35 key(s) removed" in flush.stdout
    assert data["restored"]["restored"] == 35 and data["restored"]["changed"] is True
    assert_same(target_before, snapshot(target))
    assert_same(neighbour_before, snapshot(neighbour), slack_s=60)


def test_bad_inputs_are_refused_naming_the_input_and_nothing_is_removed(
        ansible: Ansible, tmp_path: Path, redis_server: dict[str, Any]) -> None:
    client = db_client(redis_server, 7)
    client.flushdb()
    populate(client, "t7:sess:", strings=10)
    before = snapshot(client)
    backup_dir = tmp_path / "backups"
    lab = write_inventory(tmp_path, redis_server, backup_dir)
    (tmp_path / "production").mkdir()
    production = write_inventory(tmp_path / "production", redis_server, backup_dir, environment="production")
    pattern = {"redis_flush_db": 7, "redis_flush_pattern": "t7:sess:*"}
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    wrong = dict(login(redis_server), login_password="not-the-password", db=7, pattern="t7:*", backup_dir=str(backup_dir))
    started = {
        "db_static": run_role(ansible, tmp_path, lab, dict(pattern, redis_flush_db=16), name="db_static"),
        "star": run_role(ansible, tmp_path, lab, dict(pattern, redis_flush_pattern="*"), name="star"),
        "empty": run_role(ansible, tmp_path, lab, dict(pattern, redis_flush_pattern=""), name="empty"),
        "production": run_role(ansible, tmp_path, production, pattern, name="production"),
        "protected": run_role(ansible, tmp_path, lab, {"redis_flush_db": 15, "redis_flush_confirm": True},
                              name="protected"),
        "backup_dir": run_role(ansible, tmp_path, lab, dict(pattern, redis_flush_backup_dir=str(not_a_dir / "sub")),
                               name="backup_dir"),
    }
    modules = {
        "db_live": ansible.start_module("redis_keys", dict(login(redis_server), db=16, pattern="t7:*",
                                                           backup_dir=str(backup_dir))),
        "db_negative": ansible.start_module("redis_keys_info", dict(login(redis_server), db=-1)),
        "password": ansible.start_module("redis_keys", wrong),
        "unreachable": ansible.start_module("redis_keys_info", dict(login(redis_server), login_port=1, db=7)),
    }
    runs = {name: finish_role(ansible, proc)[0] for name, proc in started.items()}
    runs.update({name: ansible.finish(proc) for name, proc in modules.items()})
    for name, run in runs.items():
        assert run.rc != 0, (name, run.stdout[-2000:])
    where = "%s:%d" % (redis_server["host"], redis_server["port"])
    assert "redis_flush_db must be a database index from 0 to 15" in runs["db_static"].stdout
    assert "needs redis_flush_confirm=true in every environment" in runs["star"].stdout
    assert "emptying the whole database 7" in runs["empty"].stdout
    assert "removing keys in environment 'production' needs redis_flush_confirm=true" in runs["production"].stdout
    assert "redis_flush_db 15 is protected" in runs["protected"].stdout
    assert "cannot write the backup in %s" % (not_a_dir / "sub") in runs["backup_dir"].stdout
    assert "nothing was removed" in runs["backup_dir"].stdout
    assert runs["db_live"].result["msg"].startswith(
        "db 16 is out of range: Redis at %s has 16 databases (0 to 15, CONFIG GET databases)" % where)
    assert runs["db_negative"].result["msg"].startswith("db -1 is out of range")
    assert runs["password"].result["msg"].startswith("cannot remove keys on Redis at %s (database 7): authentication "
                                                     "failed" % where), runs["password"].result["msg"]
    assert "not-the-password" not in runs["password"].stdout
    assert "Redis at %s:1 (database 7) is unreachable" % redis_server["host"] in runs["unreachable"].result["msg"]
    # nothing anywhere was removed, and no backup was left behind
    assert_same(before, snapshot(client), slack_s=120)
    assert not backup_dir.exists() or not any(backup_dir.iterdir())


# --------------------------------------------------------------------------- FLUSHALL, on a private server


@pytest.fixture
def private_redis(tmp_path: Path) -> Any:
    """A redis-server of this test only (FLUSHALL must not touch the shared one), 4 databases."""
    binary = redis_server_binary()
    password = secrets.token_hex(16)
    for port in range(56450, 56499):
        if not port_is_free(port):
            continue
        conf = tmp_path / "redis.conf"
        conf.write_text("bind 127.0.0.1\nport %d\nsave \"\"\nappendonly no\nrequirepass %s\ndir %s\ndatabases 4\n"
                        "logfile %s\n" % (port, password, tmp_path, tmp_path / "redis.log"))
        conf.chmod(0o600)
        proc = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=port, password=password)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                client.ping()
                break
            except redis.RedisError:
                time.sleep(0.05)
        else:
            proc.kill()
            proc.wait()
            continue
        try:
            yield {"host": "127.0.0.1", "port": port, "password": password, "client": client}
        finally:
            client.close()
            proc.terminate()
            proc.wait(timeout=10)
        return
    pytest.fail("no free port for a private redis-server in 56450-56498")


def test_flush_all_only_when_asked_backs_up_every_db_and_restores_them(tmp_path: Path, private_redis: dict[str, Any]) -> None:
    ansible = Ansible(tmp_path, private_redis["password"])
    for db in (0, 2, 3):
        populate(db_client(private_redis, db), "db%d:" % db, strings=5)
    before = {db: snapshot(db_client(private_redis, db)) for db in range(4)}
    backup_dir = tmp_path / "backups"
    base = dict(login(private_redis), backup_dir=str(backup_dir))
    live_range = ansible.start_module("redis_keys_info", dict(login(private_redis), db=4))
    pattern_and_all = ansible.start_module("redis_keys", dict(base, flush_all=True, pattern="db0:*"))
    flush_db = ansible.finish(ansible.start_module("redis_keys", dict(base, db=2)))
    assert flush_db.status == "CHANGED" and flush_db.result["removed"] == 10
    assert db_client(private_redis, 2).dbsize() == 0 and db_client(private_redis, 3).dbsize() == 10  # FLUSHDB only
    assert ansible.finish(live_range).result["msg"].startswith("db 4 is out of range: Redis at 127.0.0.1:%d has 4 "
                                                               "databases" % private_redis["port"])
    refused = ansible.finish(pattern_and_all)
    assert refused.rc != 0 and "flush_all empties every database: it takes no pattern" in refused.result["msg"]

    everything = ansible.finish(ansible.start_module("redis_keys", dict(base, flush_all=True)))
    assert everything.status == "CHANGED" and everything.result["mode"] == "flushall"
    assert everything.result["removed"] == 20 and everything.result["db"] is None
    assert all(db_client(private_redis, db).dbsize() == 0 for db in range(4))
    restored = ansible.finish(ansible.start_module("redis_keys", dict(login(private_redis), state="restored",
                                                                      backup_path=everything.result["backup_path"])))
    assert restored.result["restored"] == 20, restored.stdout
    for db in (0, 3):
        assert_same(before[db], snapshot(db_client(private_redis, db)))
    assert db_client(private_redis, 2).dbsize() == 0  # emptied before the FLUSHALL: not in its backup
    os.remove(everything.result["backup_path"])


# --------------------------------------------------------------------------- the removal script itself


def test_a_key_is_removed_only_while_its_value_is_the_one_backed_up(redis_server: dict[str, Any]) -> None:
    """The per-batch script behind pattern mode: UNLINK only when DUMP still has the backed-up SHA-1."""
    import hashlib

    from ansible_collections.akig.runbooks.plugins.module_utils.redis_keys import _UNLINK_IF_UNCHANGED_LUA

    client = db_client(redis_server, 8)
    client.flushdb()
    client.set("t8:same", "v1")
    client.set("t8:changed", "v1")
    backed_up = {key: hashlib.sha1(client.dump(key)).hexdigest() for key in ("t8:same", "t8:changed")}  # nosec
    client.set("t8:changed", "v2")  # the application writes between the backup and the removal
    script = client.register_script(_UNLINK_IF_UNCHANGED_LUA)
    replies = script(keys=["t8:same", "t8:changed", "t8:gone"],
                     args=[backed_up["t8:same"], backed_up["t8:changed"], "0" * 40])
    assert replies == [1, 0, -1]
    assert client.exists("t8:same") == 0 and client.get("t8:changed") == b"v2"


# --------------------------------------------------------------------------- a backup disk that fills up


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Any:
    """A 128 KiB tmpfs: the backup fills it half-way through the removal."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k,mode=0700", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights): %s" % mounted.stderr.strip())
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_a_full_backup_disk_stops_the_removal_and_what_was_removed_is_restorable(
        ansible: Ansible, tiny_disk: Path, redis_server: dict[str, Any]) -> None:
    client = db_client(redis_server, 9)
    client.flushdb()
    populate(client, "t9:sess:", strings=3000)
    before = snapshot(client)
    run = ansible.finish(ansible.start_module("redis_keys", dict(login(redis_server), db=9, pattern="t9:sess:*",
                                                                 batch_size=200, backup_dir=str(tiny_disk / "b"))))
    assert run.rc != 0, run.stdout[-2000:]
    msg = run.result["msg"]
    assert "No space left on device" in msg and "the batch being written was not removed" in msg, msg
    removed = run.result["removed"]
    assert 0 < removed < 3005 and msg.endswith("%d key(s) were removed before, all of them are in the backup "
                                               "(restore it with state=restored)" % removed)
    assert client.dbsize() == 3005 - removed  # exactly the batches that reached the disk were removed
    restore = ansible.finish(ansible.start_module("redis_keys", dict(login(redis_server), state="restored",
                                                                     backup_path=run.result["backup_path"])))
    assert restore.status == "CHANGED" and restore.result["restored"] == removed, restore.stdout
    assert restore.result["complete"] is False and "has no end record" in restore.stdout
    assert_same(before, snapshot(client), slack_s=120)
