# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for plugins/module_utils/pg_replication.py against a real PostgreSQL 15 cluster.

Nothing is mocked: ``tests/support/pg_cluster.py`` builds a primary (127.0.0.91:55491)
with two streaming standbys (127.0.0.92:55492 and the spare 127.0.0.93:55493) once per
session (the ``cluster`` fixture; the tests that use it are marked ``process``).  Tests that
pause replay on the standby resume it before they return; tests that promote use the spare,
which :meth:`PgCluster.fresh_spare` clones again when needed.

Needs ``/work/main/.collections`` (the directory holding
``ansible_collections/akig/runbooks``) on ``sys.path``.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterator

import psycopg2
import pytest
from ansible_collections.akig.runbooks.plugins.module_utils import pg_replication as pr
from ansible_collections.akig.runbooks.plugins.module_utils.pg_replication import (
    ConnectionOptions,
    PgConnectError,
    PgError,
)
from ansible_collections.akig.runbooks.tests.support.pg_cluster import PRIMARY, SPARE, STANDBY, Node, PgCluster
from hypothesis import given
from hypothesis import strategies as st

LSN = re.compile(r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")


def params(cluster: PgCluster, node: Node, **extra: Any) -> Dict[str, Any]:
    base = dict(login_host=node.host, login_port=node.port, login_user="postgres", login_password=cluster.password,
                login_db="postgres", connect_timeout=3)
    base.update(extra)
    return base


def promote_params(cluster: PgCluster, node: Node, **extra: Any) -> Dict[str, Any]:
    base = params(cluster, node, wait=True, wait_seconds=30, checkpoint=True, expected_timeline_min=None,
                  resume_paused=False)
    base.update(extra)
    return base


def caught_up(cluster: PgCluster, node: Node, **extra: Any) -> Dict[str, Any]:
    """run_info on ``node`` right after it replayed the primary's current LSN.

    The primary writes a little WAL on its own (running-transactions records, checkpoints),
    which may land between the catch-up wait and the look; then wait and look again.
    """
    for _attempt in range(5):
        target = cluster.wait_replayed(node)
        info = pr.run_info(params(cluster, node, **extra))
        if info["lag_bytes"] == 0 and info["replay_lsn_bytes"] >= pr.parse_lsn(target):
            return info
    raise AssertionError("%s never looked caught up: %r" % (node.name, info))


def primary_seeing_caught_up(cluster: PgCluster) -> Dict[str, Any]:
    """run_info on the primary once the standby's feedback says it replayed everything."""
    for _attempt in range(5):
        cluster.wait_replayed(STANDBY)
        cluster.wait_for(
            lambda: cluster.scalar(PRIMARY, "SELECT replay_lsn >= pg_current_wal_lsn() FROM pg_stat_replication "
                                   "WHERE application_name = %s", (STANDBY.slot,)),
            "the primary to see the standby caught up",
        )
        info = pr.run_info(params(cluster, PRIMARY))
        if all(row["lag_bytes"] == 0 for row in info["replicas"] if row["application_name"] == STANDBY.slot):
            return info
    raise AssertionError("the primary never saw the standby caught up: %r" % (info,))


@pytest.fixture
def paused_standby(cluster: PgCluster) -> Iterator[Dict[str, Any]]:
    """The standby with replay paused and WAL received but not replayed; resumed and caught up afterwards."""
    cluster.write_rows(10)  # a replayed commit, so pg_last_xact_replay_timestamp() is set
    cluster.wait_replayed(STANDBY)
    cluster.execute(STANDBY, "SELECT pg_wal_replay_pause()")
    try:
        cluster.wait_for(lambda: cluster.scalar(STANDBY, "SELECT pg_get_wal_replay_pause_state()") == "paused",
                         "replay to pause on the standby")
        primary_lsn = cluster.write_rows(300)
        cluster.wait_received(STANDBY, primary_lsn)
        yield {"primary_lsn": primary_lsn}
    finally:
        cluster.execute(STANDBY, "SELECT pg_wal_replay_resume()")
        cluster.wait_replayed(STANDBY)


# --------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, kind, unreachable, cause",
    [
        ('connection to server at "127.0.0.12", port 5432 failed: Connection refused\n\tIs the server running on '
         "that host and accepting TCP/IP connections?\n", "refused", True, "Connection refused"),
        ('connection to server at "127.0.0.12", port 5432 failed: FATAL:  password authentication failed for user '
         '"postgres"\n', "auth", False, 'password authentication failed for user "postgres"'),
        ('connection to server at "127.0.0.12", port 5432 failed: fe_sendauth: no password supplied\n', "auth", False,
         "fe_sendauth: no password supplied"),
        ('connection to server at "10.9.9.9", port 5432 failed: timeout expired\n', "timeout", True, "timeout expired"),
        ('connection to server at "127.0.0.12", port 5432 failed: FATAL:  the database system is starting up\n',
         "starting", True, "the database system is starting up"),
        ('connection to server at "127.0.0.12", port 5432 failed: FATAL:  the database system is shutting down\n',
         "stopping", True, "the database system is shutting down"),
        ('connection to server at "127.0.0.12", port 5432 failed: FATAL:  sorry, too many clients already\n',
         "full", True, "sorry, too many clients already"),
        ('connection to server at "127.0.0.12", port 5432 failed: FATAL:  no pg_hba.conf entry for host '
         '"127.0.0.1", user "postgres", database "postgres", no encryption\n', "hba", False,
         'no pg_hba.conf entry for host "127.0.0.1", user "postgres", database "postgres", no encryption'),
        ('connection to server at "127.0.0.12", port 5432 failed: FATAL:  database "nope" does not exist\n',
         "database", False, 'database "nope" does not exist'),
        ('could not translate host name "db-9.invalid" to address: Name or service not known\n', "name", False,
         'could not translate host name "db-9.invalid" to address: Name or service not known'),
        # localhost: one line per address tried; the last attempt's cause counts
        ('connection to server at "localhost" (::1), port 5432 failed: Connection refused\n\tIs the server running?\n'
         'connection to server at "localhost" (127.0.0.1), port 5432 failed: FATAL:  password authentication failed '
         'for user "postgres"\n', "auth", False, 'password authentication failed for user "postgres"'),
        ("something new\n", "other", False, "something new"),
    ],
)
def test_classify_connect_error(text: str, kind: str, unreachable: bool, cause: str) -> None:
    got_kind, got_cause, got_unreachable, hint = pr.classify_connect_error(text)
    assert (got_kind, got_cause, got_unreachable) == (kind, cause, unreachable)
    assert hint


@pytest.mark.parametrize(
    "lsn, position",
    [("0/0", 0), ("0/3000148", 0x3000148), ("1/0", 1 << 32), ("FFFFFFFF/FFFFFFFF", (1 << 64) - 1), ("a/b", 0xA0000000B)],
)
def test_parse_lsn(lsn: str, position: int) -> None:
    assert pr.parse_lsn(lsn) == position


@pytest.mark.parametrize("bad", ["", "0", "0/", "/0", "0/3000148/1", "g/1", "100000000/0", "0 / 1", None, 42])
def test_parse_lsn_rejects_what_is_not_an_lsn(bad: Any) -> None:
    with pytest.raises(ValueError, match="is not a PostgreSQL LSN"):
        pr.parse_lsn(bad)


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_parse_lsn_inverts_the_postgresql_notation(position: int) -> None:
    assert pr.parse_lsn("%X/%X" % (position >> 32, position & 0xFFFFFFFF)) == position


@pytest.mark.parametrize(
    "name, timeline",
    [("000000010000000000000003", 1), ("0000000A0000000100000042", 10), ("", None), (None, None), ("zz", None),
     ("XXXXXXXX0000000000000001", None)],
)
def test_timeline_of_walfile(name: Any, timeline: Any) -> None:
    assert pr.timeline_of_walfile(name) == timeline


@pytest.mark.parametrize(
    "change, message",
    [({"login_port": 0}, "login_port must be between 1 and 65535"),
     ({"login_port": 70000}, "login_port must be between 1 and 65535"),
     ({"connect_timeout": 0}, "connect_timeout must be at least 1 second"),
     ({"login_host": ""}, "login_host must not be empty")],
)
def test_connection_options_are_validated(change: Dict[str, Any], message: str) -> None:
    base = dict(login_host="127.0.0.91", login_port=55491, login_user="postgres", login_password="x",
                login_db="postgres", connect_timeout=3)
    base.update(change)
    with pytest.raises(PgError, match=message):
        ConnectionOptions.from_params(base)


def test_mask_hides_the_password_only() -> None:
    opts = ConnectionOptions("db", password="s3cret-pw")
    assert opts.mask("bad s3cret-pw here") == "bad [REDACTED] here"
    assert ConnectionOptions("db").mask("nothing to hide") == "nothing to hide"


# --------------------------------------------------------------------------
# pg_replication_info against the real cluster
# --------------------------------------------------------------------------


def test_primary_reports_role_lsn_replicas_and_slots(cluster: PgCluster) -> None:
    info = primary_seeing_caught_up(cluster)
    assert info["reachable"] is True and info["error"] is None
    assert info["version"] >= 150000
    assert (info["in_recovery"], info["role"], info["timeline"]) == (False, "primary", 1)
    assert LSN.match(info["current_lsn"]) and info["current_lsn_bytes"] == pr.parse_lsn(info["current_lsn"])
    assert info["receive_lsn"] is None and info["replay_lsn"] is None and info["lag_bytes"] is None
    assert info["accepts_writes"] is True
    assert info["wal_receiver"] == {"status": None, "sender_host": None, "sender_port": None, "slot_name": None,
                                    "connected": False, "last_msg_receipt_time": None, "last_msg_receipt_age_s": None}
    assert info["connections"]["max"] == 30 and 1 <= info["connections"]["total"] <= 30

    replicas = {row["application_name"]: row for row in info["replicas"]}
    standby = replicas[STANDBY.slot]
    assert (standby["state"], standby["sync_state"], standby["client_addr"]) == ("streaming", "async", "127.0.0.1")
    for key in ("sent_lsn", "write_lsn", "flush_lsn", "replay_lsn"):
        assert LSN.match(standby[key]) and standby[key + "_bytes"] == pr.parse_lsn(standby[key])
    assert standby["lag_bytes"] == 0
    assert all(isinstance(standby[key], float) or standby[key] is None for key in ("write_lag", "flush_lag", "replay_lag"))

    slots = {row["slot_name"]: row for row in info["slots"]}
    assert slots[STANDBY.slot]["slot_type"] == "physical" and slots[STANDBY.slot]["active"] is True
    assert slots[STANDBY.slot]["restart_lsn_bytes"] == pr.parse_lsn(slots[STANDBY.slot]["restart_lsn"])


def test_caught_up_standby_reports_zero_lag_and_its_wal_receiver(cluster: PgCluster) -> None:
    cluster.write_rows(50)
    info = caught_up(cluster, STANDBY)
    assert (info["reachable"], info["in_recovery"], info["role"], info["timeline"]) == (True, True, "standby", 1)
    assert info["replay_paused"] is False
    assert info["receive_lsn"] == info["replay_lsn"] and info["replay_lsn_bytes"] == pr.parse_lsn(info["replay_lsn"])
    assert info["lag_bytes"] == 0 and info["lag_seconds"] == 0
    assert info["current_lsn"] is None and info["replicas"] == []
    assert info["accepts_writes"] is False
    receiver = dict(info["wal_receiver"])
    assert 0 <= receiver.pop("last_msg_receipt_age_s") < 120 and receiver.pop("last_msg_receipt_time").endswith("Z")
    assert receiver == {"status": "streaming", "sender_host": PRIMARY.host, "sender_port": PRIMARY.port,
                        "slot_name": STANDBY.slot, "connected": True}
    # the same answer when measured against the primary's LSN
    assert caught_up(cluster, STANDBY, primary_lsn=cluster.scalar(PRIMARY, "SELECT pg_current_wal_lsn()::text"))
    # and an old primary LSN never gives a negative lag
    assert pr.run_info(params(cluster, STANDBY, primary_lsn="0/1000000"))["lag_bytes"] == 0


def test_paused_replay_shows_lag(cluster: PgCluster, paused_standby: Dict[str, Any]) -> None:
    info = pr.run_info(params(cluster, STANDBY))
    assert info["replay_paused"] is True
    assert info["lag_bytes"] > 0
    assert info["lag_bytes"] == info["receive_lsn_bytes"] - info["replay_lsn_bytes"]
    assert info["lag_seconds"] is not None and info["lag_seconds"] >= 0
    against_primary = pr.run_info(params(cluster, STANDBY, primary_lsn=paused_standby["primary_lsn"]))
    assert against_primary["lag_bytes"] == pr.parse_lsn(paused_standby["primary_lsn"]) - against_primary["replay_lsn_bytes"]
    assert against_primary["lag_bytes"] > 0
    # the primary sees the same gap for this replica
    replicas = {row["application_name"]: row for row in pr.run_info(params(cluster, PRIMARY))["replicas"]}
    assert replicas[STANDBY.slot]["lag_bytes"] > 0


def test_a_primary_lsn_that_is_not_an_lsn_fails_before_connecting(cluster: PgCluster) -> None:
    with pytest.raises(PgError, match=r"^primary_lsn: 'latest' is not a PostgreSQL LSN"):
        pr.run_info(params(cluster, STANDBY, primary_lsn="latest"))


def test_read_only_database_does_not_accept_writes(cluster: PgCluster) -> None:
    if not cluster.scalar(PRIMARY, "SELECT count(*) FROM pg_database WHERE datname = 'akig_read_only'"):
        cluster.execute(PRIMARY, "CREATE DATABASE akig_read_only")
        cluster.execute(PRIMARY, "ALTER DATABASE akig_read_only SET default_transaction_read_only = on")
    info = pr.run_info(params(cluster, PRIMARY, login_db="akig_read_only"))
    assert info["role"] == "primary" and info["accepts_writes"] is False


def test_stopped_node_is_unreachable_not_a_failure(cluster: PgCluster) -> None:
    cluster.stop(SPARE)
    try:
        info = pr.run_info(params(cluster, SPARE))
    finally:
        cluster.start(SPARE)
    assert info["reachable"] is False
    assert info["error_kind"] == "refused"
    assert info["error"] == (
        "cannot connect to PostgreSQL at 127.0.0.93:55493 as postgres: Connection refused; is PostgreSQL running and "
        "listening on 127.0.0.93:55493?"
    )
    assert info["role"] is None and info["timeline"] is None and info["replicas"] == []


def test_wrong_password_fails_and_never_shows_a_password(cluster: PgCluster) -> None:
    wrong = "Wr0ng-" + cluster.password[::-1]
    with pytest.raises(PgConnectError) as info_error:
        pr.run_info(params(cluster, PRIMARY, login_password=wrong))
    with pytest.raises(PgConnectError) as promote_error:
        pr.run_promote(promote_params(cluster, STANDBY, login_password=wrong), check_mode=True)
    for error, target in ((info_error.value, PRIMARY.target), (promote_error.value, STANDBY.target)):
        assert error.kind == "auth" and error.unreachable is False
        assert error.msg == (
            'cannot connect to PostgreSQL at %s as postgres: password authentication failed for user "postgres"; '
            "check login_user/login_password" % target
        )
        assert wrong not in error.msg and cluster.password not in error.msg


def test_unknown_database_fails(cluster: PgCluster) -> None:
    with pytest.raises(PgConnectError, match=r'database "akig_nope" does not exist; check login_db'):
        pr.run_info(params(cluster, PRIMARY, login_db="akig_nope"))


# --------------------------------------------------------------------------
# The write probe
# --------------------------------------------------------------------------


def test_write_probe_leaves_nothing_behind_and_fails_on_a_standby(cluster: PgCluster) -> None:
    conn = cluster.connect(PRIMARY)
    try:
        with conn.cursor() as cur:
            assert pr._probe_write(cur) is None  # pylint: disable=protected-access  # the probe is the unit here
            cur.execute("SELECT to_regclass('pg_temp.akig_promote_probe')")
            assert cur.fetchone()[0] is None
    finally:
        conn.close()
    conn = cluster.connect(STANDBY)
    try:
        with conn.cursor() as cur:
            error = pr._probe_write(cur)  # pylint: disable=protected-access  # the probe is the unit here
            assert error is not None and "read-only transaction" in error
            cur.execute("SELECT 1")  # the session is still usable
    finally:
        conn.close()


# --------------------------------------------------------------------------
# Promotion
# --------------------------------------------------------------------------


def test_paused_standby_is_refused_and_nothing_changes(cluster: PgCluster, paused_standby: Dict[str, Any]) -> None:
    for check_mode in (True, False):
        with pytest.raises(PgError) as refused:
            pr.run_promote(promote_params(cluster, STANDBY), check_mode=check_mode)
        assert re.fullmatch(
            r"replay is paused on 127\.0\.0\.92:55492 with [1-9][0-9]* bytes not replayed; promoting now would lose "
            r"them; resume replay or pass resume_paused=true",
            refused.value.msg,
        ), refused.value.msg
        assert refused.value.result["changed"] is False
    assert cluster.scalar(STANDBY, "SELECT pg_is_in_recovery()") is True
    assert cluster.scalar(STANDBY, "SELECT pg_is_wal_replay_paused()") is True


def test_check_mode_plans_and_leaves_the_standby_in_recovery(cluster: PgCluster) -> None:
    spare = cluster.fresh_spare()
    replay_lsn = cluster.scalar(spare, "SELECT pg_last_wal_replay_lsn()::text")
    result = pr.run_promote(promote_params(cluster, spare), check_mode=True)
    assert result["changed"] is True
    assert result["actions"][0].startswith(
        "promote 127.0.0.93:55493 (standby on timeline 1, replay LSN ")
    assert result["actions"][0].endswith(") with pg_promote(wait => true, wait_seconds => 30)")
    assert pr.parse_lsn(result["actions"][0].split("replay LSN ")[1].split(")")[0]) >= pr.parse_lsn(replay_lsn)
    assert result["actions"][1:] == [
        "wait until 127.0.0.93:55493 leaves recovery and accepts a write (probe in a rolled-back transaction)",
        "run CHECKPOINT so the new timeline is durable",
    ]
    assert (result["timeline_before"], result["promoted_at"], result["lsn_at_promotion"]) == (1, None, None)
    assert cluster.scalar(spare, "SELECT pg_is_in_recovery()") is True


def test_promotion_moves_to_a_new_timeline_accepts_writes_and_is_idempotent(cluster: PgCluster) -> None:
    spare = cluster.fresh_spare()
    cluster.write_rows(20)
    cluster.wait_replayed(spare)
    result = pr.run_promote(promote_params(cluster, spare), check_mode=False)
    assert result["changed"] is True
    assert result["timeline_before"] == 1 and result["timeline_after"] == 2
    assert 0 < result["duration_s"] < 30
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", result["promoted_at"])
    assert LSN.match(result["lsn_at_promotion"])
    assert result["actions"][0].startswith("promoted 127.0.0.93:55493 from timeline 1 (replay LSN ")
    assert result["actions"][1:] == [
        "verified that 127.0.0.93:55493 left recovery and accepts writes (probe in a rolled-back transaction)",
        "ran CHECKPOINT so the new timeline is durable",
    ]
    assert result["diff"]["after"] == {"role": "primary", "in_recovery": False, "timeline": 2}
    # the promoted node takes writes, and the checkpoint recorded the new timeline
    cluster.execute(spare, "INSERT INTO akig_test_writes (payload) VALUES ('after promotion')")
    assert cluster.scalar(spare, "SELECT timeline_id FROM pg_control_checkpoint()") == 2
    assert cluster.scalar(spare, "SELECT to_regclass('akig_promote_probe')") is None
    info = pr.run_info(params(cluster, spare))
    assert (info["role"], info["timeline"], info["accepts_writes"]) == ("primary", 2, True)

    again = pr.run_promote(promote_params(cluster, spare, expected_timeline_min=2), check_mode=False)
    assert again["changed"] is False
    assert again["actions"] == ["127.0.0.93:55493 is already a primary on timeline 2; nothing to do"]
    assert again["timeline_before"] == again["timeline_after"] == 2
    assert pr.run_promote(promote_params(cluster, spare), check_mode=True)["changed"] is False


def test_a_primary_below_expected_timeline_min_is_refused(cluster: PgCluster) -> None:
    with pytest.raises(PgError, match=r"^refusing to treat 127\.0\.0\.91:55491 as the promoted standby: it is a "
                                      r"primary on timeline 1, lower than expected_timeline_min=2"):
        pr.run_promote(promote_params(cluster, PRIMARY, expected_timeline_min=2), check_mode=False)
    assert pr.run_promote(promote_params(cluster, PRIMARY, expected_timeline_min=1), check_mode=False)["changed"] is False


def test_resume_paused_replays_what_was_received_then_promotes(cluster: PgCluster) -> None:
    spare = cluster.fresh_spare()
    cluster.write_rows(5)
    cluster.wait_replayed(spare)
    cluster.execute(spare, "SELECT pg_wal_replay_pause()")
    cluster.wait_for(lambda: cluster.scalar(spare, "SELECT pg_get_wal_replay_pause_state()") == "paused",
                     "replay to pause on the spare")
    primary_lsn = cluster.write_rows(100)
    rows_on_primary = cluster.scalar(PRIMARY, "SELECT count(*) FROM akig_test_writes")
    cluster.wait_received(spare, primary_lsn)
    plan = pr.run_promote(promote_params(cluster, spare, resume_paused=True), check_mode=True)
    assert plan["actions"][0].startswith("resume WAL replay on 127.0.0.93:55493 (paused with ")
    assert cluster.scalar(spare, "SELECT pg_is_wal_replay_paused()") is True

    result = pr.run_promote(promote_params(cluster, spare, resume_paused=True), check_mode=False)
    assert result["changed"] is True and result["timeline_after"] == 2
    assert result["actions"][0].startswith("resumed WAL replay on 127.0.0.93:55493")
    assert pr.parse_lsn(result["lsn_at_promotion"]) >= pr.parse_lsn(primary_lsn)
    assert cluster.scalar(spare, "SELECT count(*) FROM akig_test_writes") == rows_on_primary


def test_promote_without_waiting_only_requests_it(cluster: PgCluster) -> None:
    spare = cluster.fresh_spare()
    result = pr.run_promote(promote_params(cluster, spare, wait=False), check_mode=False)
    assert result["changed"] is True and result["timeline_after"] is None and result["duration_s"] is None
    assert len(result["actions"]) == 1
    assert result["actions"][0].startswith("requested the promotion of 127.0.0.93:55493 (standby on timeline 1, replay LSN ")
    assert result["actions"][0].endswith(
        ") with pg_promote(wait => false, wait_seconds => 30); not waiting for it to finish")
    cluster.wait_for(lambda: cluster.scalar(spare, "SELECT NOT pg_is_in_recovery()"), "the spare to finish promoting")


def test_standby_cut_off_from_its_primary_reports_and_promotes(cluster: PgCluster) -> None:
    """The runbook's case: the primary is gone, so the standby has no WAL receiver any more."""
    spare = cluster.fresh_spare()
    cluster.write_rows(10)
    primary_lsn = cluster.wait_replayed(spare)
    cluster.execute(spare, "ALTER SYSTEM SET primary_conninfo = ''")
    cluster.execute(spare, "SELECT pg_reload_conf()")
    cluster.wait_for(lambda: not cluster.query(spare, "SELECT 1 FROM pg_stat_wal_receiver"), "the WAL receiver to stop")
    info = pr.run_info(params(cluster, spare, primary_lsn=primary_lsn))
    assert (info["reachable"], info["role"], info["timeline"]) == (True, "standby", 1)
    assert info["wal_receiver"] == {"status": None, "sender_host": None, "sender_port": None, "slot_name": None,
                                    "connected": False, "last_msg_receipt_time": None, "last_msg_receipt_age_s": None}
    assert info["replay_lsn_bytes"] >= pr.parse_lsn(primary_lsn) and info["lag_bytes"] == 0 and info["lag_seconds"] == 0
    result = pr.run_promote(promote_params(cluster, spare), check_mode=False)
    assert (result["changed"], result["timeline_before"], result["timeline_after"]) == (True, 1, 2)


def test_promotion_that_does_not_finish_in_time_fails_and_a_rerun_observes_it(cluster: PgCluster) -> None:
    """Replay blocked by a query on the standby (max_standby_streaming_delay = -1) keeps it in recovery.

    The task logs in to a database with a short statement_timeout, which must not cancel pg_promote(wait).
    """
    spare = cluster.fresh_spare()
    cluster.execute(PRIMARY, "CREATE TABLE IF NOT EXISTS akig_test_conflict (x int)")
    if not cluster.scalar(PRIMARY, "SELECT count(*) FROM pg_database WHERE datname = 'akig_short_statements'"):
        cluster.execute(PRIMARY, "CREATE DATABASE akig_short_statements")
        cluster.execute(PRIMARY, "ALTER DATABASE akig_short_statements SET statement_timeout = '300ms'")
    cluster.wait_replayed(spare)
    cluster.execute(spare, "ALTER SYSTEM SET max_standby_streaming_delay = -1")
    cluster.execute(spare, "SELECT pg_reload_conf()")
    reader = cluster.connect(spare, autocommit=False)
    try:
        with reader.cursor() as cur:
            cur.execute("SELECT count(*) FROM akig_test_conflict")  # holds ACCESS SHARE until rollback
        cluster.execute(PRIMARY, "BEGIN; LOCK TABLE akig_test_conflict IN ACCESS EXCLUSIVE MODE; COMMIT")
        cluster.wait_received(spare, cluster.scalar(PRIMARY, "SELECT pg_current_wal_lsn()::text"))
        with pytest.raises(PgError) as late:
            pr.run_promote(promote_params(cluster, spare, wait_seconds=1, login_db="akig_short_statements"),
                           check_mode=False)
        assert late.value.msg == (
            "promotion of 127.0.0.93:55493 did not finish within 1 s; check the server log of 127.0.0.93:55493 "
            "(logging_collector is off, so it is wherever the server's stderr goes: the pg_ctl -l file or the systemd "
            "journal; data directory %s); the node may still finish promoting -- re-run to observe, it is idempotent"
            % cluster.data(spare)
        )
        assert late.value.result["changed"] is True and "diff" not in late.value.result
        assert late.value.result["actions"][0].endswith("; it did not finish within 1 s")
        assert cluster.scalar(spare, "SELECT pg_is_in_recovery()") is True
    finally:
        reader.rollback()
        reader.close()
    cluster.wait_for(lambda: cluster.scalar(spare, "SELECT NOT pg_is_in_recovery()"), "the late promotion to finish")
    again = pr.run_promote(promote_params(cluster, spare), check_mode=False)
    assert again["changed"] is False and again["timeline_after"] == 2


def test_promote_fails_cleanly_on_a_refused_connection(cluster: PgCluster) -> None:
    with pytest.raises(PgConnectError, match=r"^cannot connect to PostgreSQL at 127\.0\.0\.91:55499 as postgres: "
                                             r"Connection refused"):
        pr.run_promote(promote_params(cluster, Node("gone", "127.0.0.91", 55499)), check_mode=True)


def test_psycopg2_is_importable() -> None:
    assert pr.HAS_PSYCOPG2 is True and pr.PSYCOPG2_IMPORT_ERROR is None and pr.psycopg2 is psycopg2
