# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""akig.runbooks.pg_diverged_transactions against a real asynchronous crash failover.

The real PostgreSQL 15 cluster of ``tests/support/pg_cluster.py`` plays the failover: its primary is the old
primary, the spare the standby that gets promoted. The spare's WAL receiving is stopped first
(``primary_conninfo = ''`` and a reload, until the primary's ``pg_stat_replication`` no longer lists it), so
what the primary commits afterwards is an acknowledged write the spare never receives; then the primary's
server is SIGKILLed (postmaster and children at once, a ``kill -9``) and the spare promoted. The module runs
through ``ansible localhost -m`` as root on "the old primary's host" (this machine) and must name exactly the
acknowledged-but-missing rows, leave the old data directory byte-for-byte as it was and leave no copy behind.

Afterwards :func:`restore` starts the old primary again (still timeline 1: it was never rewound), waits for the
standby to stream and clones the spare again, so the other pg tests find the cluster as pg_cluster describes it.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set

import psycopg2
import pytest
from ansible_collections.akig.runbooks.tests.support.pg_cluster import PRIMARY, SPARE, STANDBY, Node, PgCluster

from .test_pg_fence import children_of, postmaster_pid, process_alive, wait_until
from .test_pg_modules import WRONG_PASSWORD, Ansible

TABLE = "akig_lost_payments"
KEY = "postgres.public.%s" % TABLE


@pytest.fixture
def ansible(tmp_path: Path, cluster: PgCluster) -> Ansible:
    return Ansible(tmp_path, cluster.password, [cluster.password, cluster.replication_password, WRONG_PASSWORD])


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def fingerprint(data: Path) -> str:
    """SHA-256 over the names and contents of pg_wal's files and global/pg_control."""
    digest = hashlib.sha256()
    for path in sorted((data / "pg_wal").rglob("*")) + [data / "global" / "pg_control"]:
        if path.is_file():
            digest.update(str(path.relative_to(data)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def scratch_left(cluster: PgCluster) -> List[str]:
    return glob.glob(str(cluster.data(PRIMARY).parent / ".akig-divergence-*")) + glob.glob("/tmp/akig-div-*")


def detach(cluster: PgCluster, node: Node) -> None:
    """Stop ``node``'s WAL receiving: it keeps what it has and gets nothing more from the primary."""
    cluster.execute(node, "ALTER SYSTEM SET primary_conninfo = ''")
    cluster.execute(node, "SELECT pg_reload_conf()")
    cluster.wait_for(lambda: cluster.scalar(PRIMARY, "SELECT count(*) FROM pg_stat_replication WHERE application_name "
                                            "= %s", (node.slot,)) == 0, "%s to stop receiving" % node.name)


def kill_server(cluster: PgCluster, node: Node) -> None:
    """kill -9 of the server: the postmaster and all its children at once."""
    pid = postmaster_pid(cluster, node)
    assert pid is not None
    server = [pid] + children_of(pid)
    for target in server:
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # the children are reparented when the postmaster dies: wait for each of them by pid
    wait_until(lambda: not any(process_alive(target) for target in server), "the killed server to be gone")


def promote(cluster: PgCluster, node: Node) -> None:
    cluster.execute(node, "SELECT pg_promote(true, 30)")
    cluster.wait_for(lambda: not cluster.scalar(node, "SELECT pg_is_in_recovery()"), "%s to be promoted" % node.name)


def restore(cluster: PgCluster) -> None:
    """The old primary back as the primary (timeline 1), the standby streaming, the spare cloned again."""
    pid_file = cluster.data(PRIMARY) / "postmaster.pid"
    pid = postmaster_pid(cluster, PRIMARY)
    if pid is not None and not process_alive(pid):
        pid_file.unlink()
    if not cluster.running(PRIMARY):
        cluster.start(PRIMARY)
    cluster.wait_for(lambda: not cluster.scalar(PRIMARY, "SELECT pg_is_in_recovery()"), "the primary to accept writes")
    cluster.wait_streaming(STANDBY)
    cluster.clone(SPARE)


def module_args(cluster: PgCluster, new: Node, **extra: Any) -> Dict[str, Any]:
    args: Dict[str, Any] = {"data_dir": str(cluster.data(PRIMARY)), "bin_dir": "/usr/lib/postgresql/15/bin"}
    args.update(extra)
    return args


def prepare_table(cluster: PgCluster) -> int:
    """The payments-like table, and a fresh id range for this test (returns its base)."""
    cluster.execute(PRIMARY, "CREATE TABLE IF NOT EXISTS %s (id bigint PRIMARY KEY, contract_id int NOT NULL, "
                    "amount_cents int NOT NULL, reference text)" % TABLE)
    return int(cluster.scalar(PRIMARY, "SELECT coalesce(max(id), 0) FROM %s" % TABLE)) + 1000


def ids_on(cluster: PgCluster, node: Node, low: int) -> Set[int]:
    return {row[0] for row in cluster.query(node, "SELECT id FROM %s WHERE id >= %%s" % TABLE, (low,))}


def lost_ids(result: Dict[str, Any]) -> Set[int]:
    return {int(row["pk"]["id"]) for row in result["rows"] if row["kind"] == "lost" and row["table"] == "public." + TABLE}


@pytest.fixture
def failover(cluster: PgCluster) -> Iterator[PgCluster]:
    """A fresh spare before the test; the cluster restored after it, whatever happened."""
    cluster.fresh_spare()
    try:
        yield cluster
    finally:
        restore(cluster)


# --------------------------------------------------------------------------
# Asynchronous crash: exactly the acknowledged-but-missing rows
# --------------------------------------------------------------------------


def test_async_crash_names_exactly_the_acknowledged_rows_the_new_primary_lacks(
        ansible: Ansible, failover: PgCluster, tmp_path: Path) -> None:
    cluster = failover
    base = prepare_table(cluster)
    for offset in range(5):
        cluster.execute(PRIMARY, "INSERT INTO %s VALUES (%%s, 7, 1000, 'before the fork')" % TABLE, (base + offset,))
    cluster.wait_replayed(SPARE)
    detach(cluster, SPARE)

    acknowledged: List[int] = []
    conn = cluster.connect(PRIMARY)
    with conn.cursor() as cur:
        for offset in range(100, 107):  # one transaction each, acknowledged when execute returns (autocommit)
            cur.execute("INSERT INTO %s VALUES (%%s, 7, 4200, 'after the fork')" % TABLE, (base + offset,))
            acknowledged.append(base + offset)
        cur.execute("BEGIN")
        cur.execute("SAVEPOINT s1")
        cur.execute("INSERT INTO %s VALUES (%%s, 8, 990, 'in a subtransaction')" % TABLE, (base + 200,))
        cur.execute("RELEASE SAVEPOINT s1")
        cur.execute("COMMIT")
        acknowledged.append(base + 200)
        cur.execute("BEGIN")
        cur.execute("INSERT INTO %s VALUES (%%s, 8, 1, 'rolled back')" % TABLE, (base + 300,))
        cur.execute("ROLLBACK")
        cur.execute("UPDATE %s SET amount_cents = 1001 WHERE id = %%s" % TABLE, (base,))
        cur.execute("DELETE FROM %s WHERE id = %%s" % TABLE, (base + 1,))
    conn.close()
    kill_server(cluster, PRIMARY)
    promote(cluster, SPARE)
    before = fingerprint(cluster.data(PRIMARY))

    login = {"login_host": SPARE.host, "login_port": SPARE.port, "login_password": "{{ pg_password }}"}
    dest = tmp_path / "dest"
    check = ansible.finish(ansible.start_adhoc("akig.runbooks.pg_diverged_transactions",
                                               dict(module_args(cluster, SPARE), **login), "-e",
                                               "@%s" % ansible.vars_file, "--check"))
    assert check.rc == 0 and check.status == "SUCCESS", check.stdout + check.stderr
    assert check.result["diverged"] is True and check.result["rows"] == [] and not scratch_left(cluster)
    assert len(check.result["transactions"]) >= len(acknowledged) + 2

    started = time.monotonic()
    run = ansible.finish(ansible.start_adhoc("akig.runbooks.pg_diverged_transactions",
                                             dict(module_args(cluster, SPARE, dest=str(dest)), **login), "-e",
                                             "@%s" % ansible.vars_file))
    wall = time.monotonic() - started
    assert run.rc == 0 and run.status == "CHANGED", run.stdout + run.stderr
    result = run.result
    print("\npg_diverged_transactions: %.2f s wall, timings %s" % (wall, result["timings"]))
    assert result["diverged"] is True and (result["old_timeline"], result["new_timeline"]) == (1, 2)
    assert result["fork_lsn"] == check.result["fork_lsn"] and result["diverged_wal_bytes"] > 0
    # exactly the acknowledged rows the new primary never received; the update is a conflict; nothing else
    assert lost_ids(result) == set(acknowledged)
    assert not ids_on(cluster, SPARE, base + 100) & set(acknowledged)
    assert [(row["pk"], row["kind"]) for row in result["rows"] if row["kind"] == "conflict"] == [
        ({"id": str(base)}, "conflict")]
    assert result["counts"][KEY] == {"lost": 8, "conflict": 1, "identical": 0, "without_key": 0}
    assert result["deletes_per_table"] == {KEY: 1}
    xids = {tx["xid"] for tx in result["transactions"]}
    assert all(row["xid"] in xids for row in result["rows"])
    assert all(row["commit_time"].endswith("Z") for row in result["rows"])
    assert set(result["rows"][0]) == {"database", "table", "pk", "commit_time", "xid", "kind"}  # no column values
    # the files: the same rows; the CSV names table, key, commit time and kind
    with open(result["files"]["csv"], encoding="utf-8") as handle:
        lines = list(csv.DictReader(handle))
    assert {line["primary_key"] for line in lines if line["kind"] == "lost"} == {"id=%d" % i for i in acknowledged}
    assert oct(os.stat(result["files"]["csv"]).st_mode & 0o777) == "0o600"
    assert "after the fork" not in Path(result["files"]["json"]).read_text()
    # no copy left, the old data directory untouched, the old server still down
    assert not scratch_left(cluster)
    assert fingerprint(cluster.data(PRIMARY)) == before
    assert not cluster.running(PRIMARY)
    assert (cluster.data(PRIMARY) / "postmaster.pid").exists()  # the crash left it; the module did not touch it

    # refusals, before anything is started or copied: a running server, a bad data dir, a new primary that
    # does not answer, a "new primary" that is a standby
    refusals = {
        "running": dict(module_args(cluster, SPARE), data_dir=str(cluster.data(STANDBY)), **login),
        "bad_dir": dict(module_args(cluster, SPARE), data_dir=str(tmp_path / "nowhere"), **login),
        "no_answer": dict(module_args(cluster, SPARE), **dict(login, login_port=SPARE.port + 7)),
        "standby": dict(module_args(cluster, SPARE), **dict(login, login_host=STANDBY.host, login_port=STANDBY.port)),
    }
    procs = {name: ansible.start_adhoc("akig.runbooks.pg_diverged_transactions", args, "-e", "@%s" % ansible.vars_file)
             for name, args in refusals.items()}
    runs = {name: ansible.finish(proc) for name, proc in procs.items()}
    for run_ in runs.values():
        assert run_.rc != 0 and run_.status == "FAILED!", run_.stdout
    assert "runs (postmaster pid" in runs["running"].result["msg"] and "Stop and fence it first" in runs["running"].result["msg"]
    assert "does not exist" in runs["bad_dir"].result["msg"]
    assert "the new primary does not answer" in runs["no_answer"].result["msg"]
    assert "is a standby (in recovery), not the new primary" in runs["standby"].result["msg"]
    assert not scratch_left(cluster) and fingerprint(cluster.data(PRIMARY)) == before


def test_clean_switchover_has_nothing_diverged_and_a_never_promoted_node_is_refused(ansible: Ansible,
                                                                                    failover: PgCluster) -> None:
    cluster = failover
    prepare_table(cluster)
    cluster.write_rows(50)
    cluster.stop(PRIMARY, "fast")  # the walsenders stream the shutdown checkpoint to the spare before exiting
    promote(cluster, SPARE)
    login = {"login_host": SPARE.host, "login_port": SPARE.port, "login_password": "{{ pg_password }}"}
    run = ansible.module("pg_diverged_transactions", SPARE, module_args(cluster, SPARE))
    assert run.rc == 0 and run.status == "SUCCESS", run.stdout + run.stderr
    result = run.result
    assert (result["diverged"], result["transactions"], result["rows"], result["diverged_wal_bytes"]) == (
        False, [], [], 0), result
    assert result["fork_lsn"] is not None and result["old_wal_end_lsn"] == result["fork_lsn"]
    assert "waldump_s" in result["timings"] and "copy_s" not in result["timings"]
    del login

    # the old primary back (timeline 1, no history file), the promoted spare stopped: its "new primary" never promoted
    cluster.start(PRIMARY)
    cluster.stop(SPARE, "fast")
    never = ansible.module("pg_diverged_transactions", PRIMARY, {"data_dir": str(cluster.data(SPARE)),
                                                                 "bin_dir": "/usr/lib/postgresql/15/bin"})
    assert never.rc != 0 and "has no timeline history file (timeline 1): it was never promoted" in never.result["msg"]


# --------------------------------------------------------------------------
# Under concurrent write load
# --------------------------------------------------------------------------


class Writer(threading.Thread):
    """Commits one payment per transaction as fast as it can, logging each id it sent and each acknowledged."""

    def __init__(self, cluster: PgCluster, base: int) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.next_id = base
        self.attempted: List[int] = []
        self.acknowledged: List[int] = []
        self.error: Optional[str] = None

    def run(self) -> None:
        conn = self.cluster.connect(PRIMARY)
        try:
            with conn.cursor() as cur:
                while True:
                    self.attempted.append(self.next_id)
                    cur.execute("INSERT INTO %s VALUES (%%s, 9, 5000, 'load')" % TABLE, (self.next_id,))
                    self.acknowledged.append(self.next_id)
                    self.next_id += 1
        except psycopg2.Error as exc:
            self.error = str(exc)
        finally:
            conn.close()


def test_under_write_load_the_lost_list_is_the_writers_acknowledged_but_missing_ids(ansible: Ansible,
                                                                                    failover: PgCluster) -> None:
    cluster = failover
    base = prepare_table(cluster) + 100000
    writer = Writer(cluster, base)
    writer.start()
    wait_until(lambda: len(writer.acknowledged) >= 200, "the writer to commit 200 rows")
    detach(cluster, SPARE)
    after_detach = len(writer.acknowledged)
    wait_until(lambda: len(writer.acknowledged) >= after_detach + 300, "the writer to commit 300 rows after the fork")
    kill_server(cluster, PRIMARY)  # while the writer is committing
    writer.join(timeout=10)
    assert not writer.is_alive() and writer.error, "the writer must have stopped on the crash"
    promote(cluster, SPARE)

    run = ansible.module("pg_diverged_transactions", SPARE, module_args(cluster, SPARE))
    assert run.rc == 0 and run.status == "SUCCESS", run.stdout + run.stderr
    result = run.result
    missing = set(writer.acknowledged) - ids_on(cluster, SPARE, base)
    in_flight = set(writer.attempted) - set(writer.acknowledged)  # committed or not: the client never heard back
    lost = lost_ids(result)
    print("\nunder load: %d acknowledged, %d acknowledged but missing on the new primary, %d named lost, timings %s" % (
        len(writer.acknowledged), len(missing), len(lost), result["timings"]))
    assert len(missing) >= 300
    assert missing <= lost <= missing | in_flight and len(in_flight) <= 1
    assert result["conflict_count"] == 0 and not scratch_left(cluster)
