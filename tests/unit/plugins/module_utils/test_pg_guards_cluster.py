# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The failover guards of pg_replication.py, pg_fence.py and pg_failover.py against a real PostgreSQL 15 cluster.

Nothing is mocked: the ``cluster`` fixture (tests/support/pg_cluster.py) is a primary
(127.0.0.91:55491) with two streaming standbys (127.0.0.92:55492 and the spare 127.0.0.93:55493).
What these tests do to the spare (stop its WAL receiver, promote it, crash it, fence it) is undone
with :meth:`PgCluster.fresh_spare`, so the other pg tests of the session find the cluster as
pg_cluster describes it. pg_fence runs as root on "the database host", which is this machine.

The headline case: a replica whose WAL receiver stopped shows 0 bytes received-but-not-replayed, which
the old RPO check read as "no lag"; measured against the primary's WAL it is as far behind as the
primary wrote since, and promoting it past the end of a crashed primary's WAL is refused.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Dict, Iterator, List

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils import pg_fence as fence
from ansible_collections.akig.runbooks.plugins.module_utils import pg_replication as pr
from ansible_collections.akig.runbooks.plugins.module_utils.pg_failover import assess_rpo
from ansible_collections.akig.runbooks.tests.support.pg_cluster import PG_BIN, PRIMARY, SPARE, STANDBY, Node, PgCluster

MIB = 1024 * 1024


def params(cluster: PgCluster, node: Node, **extra: Any) -> Dict[str, Any]:
    base = dict(login_host=node.host, login_port=node.port, login_user="postgres", login_password=cluster.password,
                login_db="postgres", connect_timeout=3)
    base.update(extra)
    return base


def fence_params(cluster: PgCluster, node: Node, **extra: Any) -> Dict[str, Any]:
    base = dict(data_dir=str(cluster.data(node)), bin_dir=str(PG_BIN), os_user="postgres", service_manager="pg_ctl",
                stop_timeout=5, state="stopped")
    base.update(extra)
    return base


@pytest.fixture
def detached_spare(cluster: PgCluster) -> Iterator[Node]:
    """The spare as a standby whose WAL receiver is stopped (primary_conninfo emptied); re-cloned afterwards."""
    spare = cluster.fresh_spare()
    cluster.execute(spare, "ALTER SYSTEM SET primary_conninfo = ''")
    cluster.execute(spare, "SELECT pg_reload_conf()")
    try:
        cluster.wait_for(lambda: cluster.scalar(spare, "SELECT count(*) FROM pg_stat_wal_receiver") == 0,
                         "the spare's WAL receiver to stop")
        yield spare
    finally:
        cluster.clone(SPARE)


@pytest.fixture
def crashed_spare(cluster: PgCluster) -> Iterator[Dict[str, Any]]:
    """The spare promoted to a primary of its own, written to, then SIGKILLed (a crash); re-cloned afterwards."""
    spare = cluster.fresh_spare()
    try:
        cluster.execute(spare, "SELECT pg_promote(true, 30)")
        cluster.wait_for(lambda: cluster.scalar(spare, "SELECT NOT pg_is_in_recovery()"), "the spare to promote")
        cluster.execute(spare, "CREATE TABLE crash_me AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 5000) g")
        flushed = cluster.scalar(spare, "SELECT pg_current_wal_flush_lsn()::text")
        pid_file = cluster.data(spare) / "postmaster.pid"
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        cluster.wait_for(lambda: not fence.alive(pid), "the spare's postmaster to be gone")
        if fence.proc_state(pid) == "Z":
            # nothing reaps it in this container: PostgreSQL would take the zombie's pid (in the data directory's
            # and the socket's lock files) for a running server
            pid_file.unlink()
            for lock in cluster.sockdir(spare).glob(".s.PGSQL.*.lock"):
                lock.unlink()
        yield {"node": spare, "flushed": flushed}
    finally:
        cluster.clone(SPARE)


# --------------------------------------------------------------------------- pure: the end of WAL pg_waldump names


@pytest.mark.parametrize("text, size, end", [
    ("pg_waldump: error: error in WAL record at 0/15B30E8: invalid record length at 0/15B3280: wanted 24, got 0", None,
     "0/15B3280"),
    ("pg_waldump: error: error in WAL record at 0/3FFFFD0: invalid magic number 0000 in log segment "
     "000000010000000000000004, offset 0", 16 * MIB, "0/4000000"),
    ("pg_waldump: error: error in WAL record at 1/3FFFFD0: invalid magic number 0000 in WAL segment "
     "000000020000000100000004, LSN 1/4000000, offset 0", 16 * MIB, "1/4000000"),
    ('pg_waldump: error: could not find file "000000010000000000000003": No such file or directory', 16 * MIB,
     "0/3000000"),
    ("pg_waldump: error: error in WAL record at 0/2000060: something new", None, "0/2000060"),
    ("pg_waldump: error: could not open directory", None, None),
])
def test_parse_waldump_end(text: str, size: Any, end: Any) -> None:
    assert fence.parse_waldump_end(text, size) == end


# --------------------------------------------------------------------------- what pg_replication_info returns


def test_info_reports_the_system_identifier_the_receiver_and_the_replicas_slots(cluster: PgCluster) -> None:
    cluster.wait_streaming(STANDBY)
    primary = pr.run_info(params(cluster, PRIMARY))
    standby = pr.run_info(params(cluster, STANDBY))
    assert primary["system_identifier"] and primary["system_identifier"].isdigit()
    assert standby["system_identifier"] == primary["system_identifier"]
    assert (primary["state"], primary["probes"], standby["state"]) == ("up", ["up"], "in_recovery")
    receiver = standby["wal_receiver"]
    assert receiver["status"] == "streaming" and receiver["connected"] is True
    assert receiver["slot_name"] == STANDBY.slot and receiver["last_msg_receipt_time"].endswith("Z")
    assert 0 <= receiver["last_msg_receipt_age_s"] < 120
    row = [r for r in primary["replicas"] if r["application_name"] == STANDBY.slot]
    assert row and row[0]["slot_name"] == STANDBY.slot and row[0]["state"] == "streaming"


def test_a_stopped_receiver_hides_its_lag_from_received_minus_replayed_but_not_from_the_primary(
        cluster: PgCluster, detached_spare: Node) -> None:
    cluster.write_rows(count=4000, size=400)  # > 1 MiB of WAL the spare never receives
    spare = pr.run_info(params(cluster, detached_spare))
    primary = pr.run_info(params(cluster, PRIMARY))
    # the hole: nothing received-but-not-replayed, so the old check saw no lag
    assert spare["lag_bytes"] == 0 and spare["lag_seconds"] == 0.0
    assert spare["wal_receiver"]["connected"] is False and spare["wal_receiver"]["status"] is None
    rpo = assess_rpo(spare, primary, MIB, 300, "spare", "primary", detached_spare.host)
    assert rpo["basis"] == "old_primary" and rpo["streaming"] is False
    assert rpo["lag_bytes"] >= MIB and rpo["over_known"] and rpo["over_budget"]
    # without the primary to compare with, the lag is unknown, which also counts as over the budget
    alone = assess_rpo(spare, None, MIB, 300, "spare", "primary")
    assert alone["basis"] == "unknown" and alone["unknown"] and alone["over_budget"]


def test_a_streaming_standby_is_within_the_budget(cluster: PgCluster) -> None:
    cluster.wait_replayed(STANDBY)
    primary = pr.run_info(params(cluster, PRIMARY))
    rpo = assess_rpo(pr.run_info(params(cluster, STANDBY)), primary, MIB, 300, "standby", "primary", STANDBY.host)
    assert rpo["streaming"] is True and not rpo["over_budget"], rpo


def test_probes_classify_a_server_that_never_answers_as_down_only_after_every_probe(cluster: PgCluster) -> None:
    slept: List[float] = []
    closed = params(cluster, PRIMARY, login_port=55499, connect_timeout=2, attempts=3, attempt_interval=0.25)
    info = pr.run_info(closed, sleep=slept.append)
    assert (info["reachable"], info["state"], info["probes"], info["error_kind"]) == (False, "down", ["down"] * 3, "refused")
    assert slept == [0.25, 0.25]
    # a server that answers stops the probes at once
    slept.clear()
    info = pr.run_info(params(cluster, PRIMARY, attempts=5, attempt_interval=0.25), sleep=slept.append)
    assert (info["state"], info["probes"], slept) == ("up", ["up"], [])


@pytest.mark.parametrize("attempts, interval, message", [(0, 1.0, "attempts must be"), (3, -1.0, "attempt_interval must be")])
def test_probe_options_are_checked(cluster: PgCluster, attempts: int, interval: float, message: str) -> None:
    with pytest.raises(pr.PgError, match=message):
        pr.run_info(params(cluster, PRIMARY, attempts=attempts, attempt_interval=interval))


# --------------------------------------------------------------------------- pg_promote against the old primary's WAL


def test_promotion_is_refused_when_the_standby_lacks_more_than_the_budget(cluster: PgCluster, detached_spare: Node) -> None:
    reference = cluster.write_rows(count=4000, size=400)
    for check_mode in (True, False):
        with pytest.raises(pr.PgError, match="refusing to promote .*never received.*Nothing was promoted") as raised:
            pr.run_promote(params(cluster, detached_spare, wait=True, wait_seconds=30, checkpoint=True, resume_paused=False,
                                  reference_lsn=reference, max_lag_bytes=MIB), check_mode=check_mode)
        result = raised.value.result
        assert result["promotion_requested"] is False and result["unreceived_bytes"] >= MIB
        assert result["lag_bytes"] >= result["unreceived_bytes"]
        assert cluster.scalar(detached_spare, "SELECT pg_is_in_recovery()") is True
        assert cluster.password not in raised.value.msg


def test_promotion_goes_on_when_the_standby_has_the_old_primarys_wal(cluster: PgCluster, detached_spare: Node) -> None:
    received = cluster.scalar(detached_spare, "SELECT pg_last_wal_replay_lsn()::text")
    result = pr.run_promote(params(cluster, detached_spare, wait=True, wait_seconds=30, checkpoint=True,
                                   resume_paused=False, reference_lsn=received, max_lag_bytes=0), check_mode=False)
    assert result["changed"] and result["promotion_requested"] is True
    assert (result["lag_bytes"], result["unreceived_bytes"]) == (0, 0)
    assert any("within max_lag_bytes=0" in action for action in result["actions"])
    assert cluster.scalar(detached_spare, "SELECT pg_is_in_recovery()") is False


@pytest.mark.parametrize("extra, message", [
    ({"reference_lsn": "0/1"}, "reference_lsn and max_lag_bytes go together"),
    ({"max_lag_bytes": 5}, "reference_lsn and max_lag_bytes go together"),
    ({"reference_lsn": "nope", "max_lag_bytes": 5}, "reference_lsn: 'nope' is not a PostgreSQL LSN"),
    ({"reference_lsn": "0/1", "max_lag_bytes": -1}, "max_lag_bytes must be a whole number of bytes"),
])
def test_reference_options_are_checked_before_connecting(extra: Dict[str, Any], message: str) -> None:
    # port 9 answers nothing: a check made after connecting would fail with a connection error instead
    base = dict(login_host="127.0.0.91", login_port=9, login_user="postgres", login_password=None, login_db="postgres",
                connect_timeout=2, wait=True, wait_seconds=30, checkpoint=True, resume_paused=False)
    with pytest.raises(pr.PgError, match=message):
        pr.run_promote(dict(base, **extra), check_mode=False)


# --------------------------------------------------------------------------- pg_fence: WAL end, identifier, unfence


def test_fence_finds_the_end_of_a_crashed_primarys_wal(cluster: PgCluster, crashed_spare: Dict[str, Any]) -> None:
    node = crashed_spare["node"]
    checked = fence.run(fence_params(cluster, node), check_mode=True)
    done = fence.run(fence_params(cluster, node), check_mode=False)
    for result in (checked, done):
        assert result["was_running"] is False and result["stopped_cleanly"] is False
        assert result["cluster_state"] == "in production"
        # every WAL record flushed before the kill is before the end found
        assert pr.parse_lsn(result["wal_end_lsn"]) >= pr.parse_lsn(crashed_spare["flushed"])
        assert result["system_identifier"] == cluster.scalar(PRIMARY, "SELECT system_identifier::text FROM pg_control_system()")
    assert checked["wal_end_lsn"] == done["wal_end_lsn"]


def test_fence_finds_the_end_after_a_clean_shutdown(cluster: PgCluster, crashed_spare: Dict[str, Any]) -> None:
    node = crashed_spare["node"]
    cluster.start(node)  # crash recovery, then a primary again
    cluster.wait_for(lambda: cluster.scalar(node, "SELECT NOT pg_is_in_recovery()"), "the spare to recover")
    result = fence.run(fence_params(cluster, node), check_mode=False)
    assert result["stop_mode"] == "fast" and result["stopped_cleanly"] is True
    # the end is right after the shutdown checkpoint record
    assert pr.parse_lsn(result["wal_end_lsn"]) > pr.parse_lsn(result["checkpoint_lsn"])


def test_unfenced_removes_standby_signal_only(cluster: PgCluster, crashed_spare: Dict[str, Any]) -> None:
    node = crashed_spare["node"]
    signal_file = cluster.data(node) / "standby.signal"
    fenced = fence.run(fence_params(cluster, node, state="fenced", primary_conninfo="host=127.0.0.91 port=55491 "
                                    "user=replicator", primary_slot_name="akig_test_spare"), check_mode=False)
    assert fenced["fenced"] and signal_file.exists()
    auto_conf = (cluster.data(node) / "postgresql.auto.conf").read_text()
    planned = fence.run(fence_params(cluster, node, state="unfenced"), check_mode=True)
    assert planned["changed"] is True and signal_file.exists()
    assert any(action.startswith("would remove %s" % signal_file) for action in planned["actions"])
    done = fence.run(fence_params(cluster, node, state="unfenced"), check_mode=False)
    assert done["changed"] is True and done["fenced"] is False and not signal_file.exists()
    assert (cluster.data(node) / "postgresql.auto.conf").read_text() == auto_conf
    again = fence.run(fence_params(cluster, node, state="unfenced"), check_mode=False)
    assert again["changed"] is False
    # started now, it is a primary again (not a standby)
    cluster.start(node)
    cluster.wait_for(lambda: cluster.scalar(node, "SELECT NOT pg_is_in_recovery()"), "the spare to come up as a primary")


def test_fence_reports_an_unknown_wal_end_without_pg_waldump(cluster: PgCluster, crashed_spare: Dict[str, Any]) -> None:
    bin_dir = cluster.root / "bin-without-pg_waldump"  # the cluster's folder: postgres can run what is in it
    bin_dir.mkdir(exist_ok=True)
    for program in ("pg_ctl", "pg_controldata"):
        if not (bin_dir / program).exists():
            (bin_dir / program).symlink_to(PG_BIN / program)
    result = fence.run(fence_params(cluster, crashed_spare["node"], bin_dir=str(bin_dir)), check_mode=True)
    assert result["wal_end_lsn"] is None
    assert any("is unknown: pg_waldump not found in bin_dir" in action for action in result["actions"])
