# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for plugins/module_utils/pg_failover.py: the pg_failover role's decisions (pure functions).

The pg_replication_info results used here have the shape the module returns (see
test_pg_guards_cluster.py for the same decisions fed with what a real cluster returns).
"""

from __future__ import annotations

import copy
import re
from typing import Any, Dict, List, Optional

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils.pg_failover import (
    SLOT_RE,
    FailoverInputError,
    assess_rpo,
    input_problems,
    rejoin_problems,
    slot_name,
)
from hypothesis import given
from hypothesis import strategies as st

MIB = 1024 * 1024

# --------------------------------------------------------------------------- slot names


@pytest.mark.parametrize("host, expected", [
    ("db-1", "db_1_slot"),  # the lab's slots keep their names
    ("db-2", "db_2_slot"),
    ("db-1.prod.akig.internal", "db_1_prod_akig_internal_slot"),
    ("DB-2.Prod.AKIG.internal", "db_2_prod_akig_internal_slot"),
    ("10.0.2.12", "10_0_2_12_slot"),
])
def test_slot_name_is_derived_from_the_host_name(host: str, expected: str) -> None:
    assert slot_name(host) == expected


def test_long_host_names_are_cut_with_a_hash_so_they_stay_distinct() -> None:
    first = "db-1." + "very-long-subdomain." * 4 + "akig.internal"
    second = "db-1." + "very-long-subdomain." * 4 + "akig.internal2"
    assert len(slot_name(first)) == 63 and len(slot_name(second)) == 63
    assert slot_name(first) != slot_name(second)
    assert slot_name(first).endswith("_slot") and slot_name(first).startswith("db_1_very_long")


def test_an_explicit_slot_name_wins_and_is_checked() -> None:
    assert slot_name("db-1.prod.akig.internal", "primary_db") == "primary_db"
    assert slot_name("db-1", "") == "db_1_slot"
    with pytest.raises(FailoverInputError, match="akig_pg_slot_name 'Bad-Slot' of db-1 is not a valid"):
        slot_name("db-1", "Bad-Slot")
    with pytest.raises(FailoverInputError, match="not a valid"):
        slot_name("db-1", "x" * 64)


@given(st.text(min_size=1, max_size=300))
def test_every_derived_slot_name_is_valid_and_stable(host: str) -> None:
    name = slot_name(host)
    assert SLOT_RE.match(name), name
    assert slot_name(host) == name


# --------------------------------------------------------------------------- inputs

GROUPS = {"all": ["db-1", "db-2", "app-1"], "pg_primary": ["db-1"], "pg_replica": ["db-2"], "backend": ["app-1"]}
LAYOUT = {"akig_pg_port": 5432, "akig_pg_data_dir": "/var/lib/postgresql/15/main", "akig_pg_passfile": "/var/lib/postgresql/.pgpass",
          "akig_pg_service_manager": "systemd", "akig_pg_service_name": "postgresql@15-main",
          "akig_pg_bin_dir": "/usr/lib/postgresql/15/bin"}


def hostvars(**per_host: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    out = {host: dict(LAYOUT) for host in ("db-1", "db-2", "app-1")}
    for host, values in per_host.items():
        out[host.replace("_", "-")].update(values)
    return out


def inputs(**change: Any) -> Dict[str, Any]:
    base: Dict[str, Any] = {
        "akig_environment": "lab", "pg_failover_primary": "db-1", "pg_failover_candidate": "", "pg_failover_new_primary": "",
        "pg_failover_primary_group": "pg_primary", "pg_failover_replica_group": "pg_replica",
        "pg_failover_max_lag_bytes": "1MiB", "pg_failover_max_lag_seconds": "5m", "pg_failover_analysis_max_age_s": 15,
        "pg_failover_force": False, "pg_failover_confirm": False, "pg_failover_confirm_exempt_environments": ["lab"],
        "pg_failover_stop_timeout_s": 5, "pg_failover_promote_timeout_s": 30, "pg_failover_catchup_timeout_s": 15,
        "pg_failover_poll_s": 0.2, "pg_failover_secure_logging": True, "pg_failover_rewind_keep_files": [],
        "pg_failover_rejoin_force_writable": False, "pg_failover_keep_diverged": 1,
    }
    base.update(change)
    return base


def test_defaults_of_the_lab_are_accepted() -> None:
    assert input_problems(inputs(), GROUPS, hostvars()) == []
    assert input_problems(inputs(pg_failover_new_primary="db-2"), GROUPS, hostvars(), "rejoin") == []


def test_extra_vars_arrive_as_strings_and_are_accepted() -> None:
    given_as_text = inputs(pg_failover_stop_timeout_s="7", pg_failover_poll_s="0.5", pg_failover_force="yes",
                           pg_failover_max_lag_bytes="2MB", pg_failover_max_lag_seconds="90", pg_failover_keep_diverged="0")
    assert input_problems(given_as_text, GROUPS, hostvars()) == []


@pytest.mark.parametrize("change, message", [
    ({"pg_failover_max_lag_bytes": "lots"}, "pg_failover_max_lag_bytes: size 'lots' is not understood"),
    ({"pg_failover_max_lag_seconds": "soon"}, "pg_failover_max_lag_seconds: duration 'soon' is not a duration"),
    ({"pg_failover_candidate": "db-9"}, "Unknown database host 'db-9' for pg_failover_candidate; valid names: db-2"),
    ({"pg_failover_candidate": "db-1"}, "Unknown database host 'db-1' for pg_failover_candidate; valid names: db-2"),
    ({"pg_failover_candidate": "app-1"}, "Unknown database host 'app-1' for pg_failover_candidate"),
    ({"pg_failover_primary": "db-7"}, "Unknown database host 'db-7' for pg_failover_primary; valid names: db-1, db-2"),
    ({"pg_failover_primary": None}, "pg_failover_primary is not set"),
    ({"pg_failover_primary_group": "pg_primaries"}, "pg_failover_primary_group: the inventory has no group 'pg_primaries'"),
    ({"pg_failover_stop_timeout_s": "abc"}, "pg_failover_stop_timeout_s must be a whole number from 1 to 3600, got 'abc'"),
    ({"pg_failover_stop_timeout_s": 0}, "pg_failover_stop_timeout_s must be a whole number from 1 to 3600, got 0"),
    ({"pg_failover_promote_timeout_s": 2.5}, "pg_failover_promote_timeout_s must be a whole number"),
    ({"pg_failover_catchup_timeout_s": -1}, "pg_failover_catchup_timeout_s must be a whole number from 0 to 3600"),
    ({"pg_failover_poll_s": 0}, "pg_failover_poll_s must be a number of seconds, more than 0 and at most 60, got 0"),
    ({"pg_failover_poll_s": "fast"}, "pg_failover_poll_s must be a number of seconds"),
    ({"pg_failover_analysis_max_age_s": -3}, "pg_failover_analysis_max_age_s must be a number of seconds, 0 or more"),
    ({"pg_failover_force": "maybe"}, "pg_failover_force must be true or false, got 'maybe'"),
    ({"pg_failover_keep_diverged": -1}, "pg_failover_keep_diverged must be a whole number 0 or more, got -1"),
    ({"pg_failover_rewind_keep_files": ["../etc/passwd"]}, "pg_failover_rewind_keep_files: '../etc/passwd' must be a path relative"),
    ({"pg_failover_rewind_keep_files": "node.conf"}, "pg_failover_rewind_keep_files must be a list"),
    ({"pg_failover_confirm_exempt_environments": "lab"}, "pg_failover_confirm_exempt_environments must be a list"),
])
def test_bad_inputs_are_refused_with_a_message_naming_them(change: Dict[str, Any], message: str) -> None:
    problems = input_problems(inputs(**change), GROUPS, hostvars())
    assert any(message in problem for problem in problems), problems


@pytest.mark.parametrize("environment", ["production", "Production", "prod", "staging", None, ""])
def test_confirmation_is_required_outside_the_exempt_environments(environment: Optional[str]) -> None:
    problems = input_problems(inputs(akig_environment=environment), GROUPS, hostvars())
    assert len(problems) == 1 and "pg_failover_confirm=true" in problems[0], problems
    assert input_problems(inputs(akig_environment=environment, pg_failover_confirm="true"), GROUPS, hostvars()) == []


def test_the_exempt_list_is_an_input() -> None:
    assert input_problems(inputs(akig_environment="drill", pg_failover_confirm_exempt_environments=["lab", "drill"]),
                          GROUPS, hostvars()) == []
    # the lab itself needs the yes once it is no longer listed
    assert input_problems(inputs(pg_failover_confirm_exempt_environments=[]), GROUPS, hostvars())


def test_rejoin_confirmation_names_the_node_it_rewinds() -> None:
    problems = input_problems(inputs(akig_environment="production", pg_failover_new_primary="db-2"), GROUPS, hostvars(),
                              "rejoin")
    assert problems == [problem for problem in problems if "a rejoin rewinds or re-clones db-1" in problem] and problems


def test_an_inventory_without_replica_is_refused() -> None:
    no_replica = {"all": ["db-1"], "pg_primary": ["db-1"], "pg_replica": []}
    problems = input_problems(inputs(), no_replica, hostvars())
    assert any("The inventory has no replica: group pg_replica (pg_failover_replica_group) is empty" in p for p in problems)
    assert any("No replica to promote: db-1 is the only database host" in p for p in problems)
    missing = {"all": ["db-1"], "pg_primary": ["db-1"]}
    assert any("has no group 'pg_replica'" in p for p in input_problems(inputs(), missing, hostvars()))


def test_a_switchback_names_the_former_replica_as_primary() -> None:
    assert input_problems(inputs(pg_failover_primary="db-2", pg_failover_candidate="db-1"), GROUPS, hostvars()) == []


def test_rejoin_needs_another_database_host_as_new_primary() -> None:
    for new_primary, valid in (("", True), ("db-1", True), ("db-9", True), ("db-2", False)):
        problems = input_problems(inputs(pg_failover_new_primary=new_primary), GROUPS, hostvars(), "rejoin")
        assert bool(problems) == valid, (new_primary, problems)
        if valid:
            assert "for pg_failover_new_primary (the node that is primary now); valid names: db-2" in problems[0]


def test_production_host_names_get_valid_slot_names() -> None:
    prod = {"all": ["db-1.prod.akig.internal", "db-2.prod.akig.internal"],
            "pg_primary": ["db-1.prod.akig.internal"], "pg_replica": ["db-2.prod.akig.internal"]}
    variables = {host: dict(LAYOUT) for host in prod["all"]}
    assert input_problems(inputs(pg_failover_primary="db-1.prod.akig.internal", akig_environment="production",
                                 pg_failover_confirm=True), prod, variables) == []


def test_invalid_and_shared_slot_names_are_refused() -> None:
    problems = input_problems(inputs(), GROUPS, hostvars(db_1={"akig_pg_slot_name": "Slot-1"}))
    assert any("akig_pg_slot_name 'Slot-1' of db-1 is not a valid replication slot name" in p for p in problems)
    clash = {"all": ["db-1", "db_1"], "pg_primary": ["db-1"], "pg_replica": ["db_1"]}
    variables = {"db-1": dict(LAYOUT), "db_1": dict(LAYOUT)}
    problems = input_problems(inputs(), clash, variables)
    assert any("db-1 and db_1 would both use the replication slot db_1_slot" in p for p in problems), problems


@pytest.mark.parametrize("change, message", [
    ({"akig_pg_port": 70000}, "akig_pg_port of db-2 must be a TCP port"),
    ({"akig_pg_data_dir": "data"}, "akig_pg_data_dir of db-2 must be an absolute path"),
    ({"akig_pg_data_dir": None}, "akig_pg_data_dir of db-2 must be an absolute path"),
    ({"akig_pg_service_manager": "runit"}, "akig_pg_service_manager of db-2 must be systemd or pg_ctl"),
    ({"akig_pg_service_name": None}, "akig_pg_service_name of db-2 is not set"),
    ({"akig_pg_service_manager": "pg_ctl"}, "akig_pg_log_file of db-2 must be an absolute path"),
])
def test_database_host_layouts_are_checked(change: Dict[str, Any], message: str) -> None:
    problems = input_problems(inputs(), GROUPS, hostvars(db_2=change))
    assert any(message in p for p in problems), problems


# --------------------------------------------------------------------------- RPO


def standby(replay: int, received: Optional[int] = None, receiver: Optional[Dict[str, Any]] = None,
            slot: str = "db_2_slot") -> Dict[str, Any]:
    received = replay if received is None else received
    return {
        "reachable": True, "in_recovery": True, "accepts_writes": False,
        "receive_lsn_bytes": received, "replay_lsn_bytes": replay, "lag_bytes": received - replay,
        "lag_seconds": 0.0 if received == replay else 12.0,
        "wal_receiver": receiver if receiver is not None else {
            "status": "streaming", "sender_host": "127.0.0.11", "slot_name": slot, "connected": True,
            "last_msg_receipt_age_s": 0.4},
    }


def primary(current: int, replicas: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    return {"reachable": True, "in_recovery": False, "accepts_writes": True, "current_lsn_bytes": current,
            "replicas": replicas if replicas is not None else [
                {"application_name": "db-2", "client_addr": "127.0.0.12", "state": "streaming", "slot_name": "db_2_slot",
                 "replay_lag": 0.2}]}


NO_RECEIVER = {"status": None, "sender_host": None, "slot_name": None, "connected": False, "last_msg_receipt_age_s": None}


def test_a_stopped_receiver_is_seen_against_the_primarys_wal() -> None:
    # the hole of the old check: received == replayed, so "0 B not replayed", while the primary is far ahead
    stale = standby(10 * MIB, receiver=copy.deepcopy(NO_RECEIVER))
    old = primary(30 * MIB, replicas=[])
    rpo = assess_rpo(stale, old, MIB, 300, "db-2", "db-1", "127.0.0.12")
    assert rpo["basis"] == "old_primary" and rpo["lag_bytes"] == 20 * MIB
    assert rpo["streaming"] is False and rpo["over_budget"] and rpo["over_known"]
    assert "it is 20971520 bytes behind db-1's current WAL" in rpo["summary"] and "over by 19922944" in rpo["summary"]


def test_a_streaming_replica_close_behind_is_within_budget() -> None:
    rpo = assess_rpo(standby(30 * MIB - 300), primary(30 * MIB), MIB, 300, "db-2", "db-1")
    assert (rpo["lag_bytes"], rpo["lag_seconds"], rpo["streaming"], rpo["over_budget"]) == (300, 0.2, True, False)
    assert rpo["replica_state"] == "streaming"


@pytest.mark.parametrize("row", [
    {"application_name": "walreceiver", "client_addr": "10.0.0.5", "state": "streaming", "slot_name": "db_2_slot"},
    {"application_name": "db-2", "client_addr": "10.0.0.5", "state": "streaming", "slot_name": None},
    {"application_name": "walreceiver", "client_addr": "127.0.0.12", "state": "streaming", "slot_name": None},
])
def test_the_replica_row_is_found_by_slot_name_or_address(row: Dict[str, Any]) -> None:
    rpo = assess_rpo(standby(100), primary(100, [dict(row, replay_lag=None)]), MIB, 300, "db-2", "db-1", "127.0.0.12")
    assert rpo["streaming"] is True and rpo["lag_seconds"] == 0.0 and not rpo["over_budget"]


def test_a_catching_up_replica_is_not_streaming() -> None:
    rows = [{"application_name": "db-2", "client_addr": "127.0.0.12", "state": "catchup", "slot_name": "db_2_slot",
             "replay_lag": 3.0}]
    rpo = assess_rpo(standby(100), primary(200, rows), MIB, 300, "db-2", "db-1")
    assert rpo["streaming"] is False and rpo["replica_state"] == "catchup" and not rpo["over_budget"]


def test_seconds_over_budget_refuse() -> None:
    rows = [dict(primary(0)["replicas"][0], replay_lag=400.0)]
    rpo = assess_rpo(standby(100), primary(200, rows), MIB, 300, "db-2", "db-1")
    assert rpo["over_known"] and "lags 400 s (budget 300 s, over by 100 s)" in rpo["summary"]


def test_without_the_old_primary_a_connected_receiver_bounds_the_lag() -> None:
    rpo = assess_rpo(standby(100, 150), None, MIB, 300, "db-2", "db-1")
    assert (rpo["basis"], rpo["lag_bytes"], rpo["lag_seconds"], rpo["unknown"], rpo["over_budget"]) == \
        ("wal_receiver", 50, 0.4, False, False)


def test_without_the_old_primary_no_receiver_means_unknown_hence_over_budget() -> None:
    rpo = assess_rpo(standby(100, receiver=copy.deepcopy(NO_RECEIVER)), None, MIB, 300, "db-2", "db-1")
    assert rpo["basis"] == "unknown" and rpo["unknown"] and rpo["over_budget"] and not rpo["over_known"]
    assert rpo["lag_seconds"] is None and "the WAL it never received is unknown" in rpo["summary"]


def test_a_receiver_still_connecting_counts_as_not_connected() -> None:
    connecting = {"status": "streaming", "sender_host": None, "slot_name": "db_2_slot", "connected": False,
                  "last_msg_receipt_age_s": 0.0}
    assert assess_rpo(standby(100, receiver=connecting), None, MIB, 300, "db-2", "db-1")["unknown"]


def test_an_unknown_replay_position_is_unknown() -> None:
    blind = standby(0)
    blind["replay_lsn_bytes"] = None
    rpo = assess_rpo(blind, primary(100), MIB, 300, "db-2", "db-1")
    assert rpo["lag_bytes"] is None and rpo["unknown"] and rpo["over_budget"]


@given(primary_at=st.integers(0, 2 ** 40), behind=st.integers(0, 2 ** 30), budget=st.integers(0, 2 ** 31),
       replay_lag=st.one_of(st.none(), st.floats(0, 1e5)))
def test_with_the_old_primary_over_budget_exactly_when_a_measure_exceeds_it(primary_at: int, behind: int, budget: int,
                                                                            replay_lag: Optional[float]) -> None:
    replay = max(0, primary_at - behind)
    rows = [{"application_name": "db-2", "client_addr": None, "state": "streaming", "slot_name": "db_2_slot",
             "replay_lag": replay_lag}]
    rpo = assess_rpo(standby(replay), primary(primary_at, rows), budget, 300.0, "db-2", "db-1")
    assert rpo["lag_bytes"] == primary_at - replay
    seconds = replay_lag if replay_lag is not None else 0.0
    assert rpo["over_budget"] == (primary_at - replay > budget or seconds > 300.0)


# --------------------------------------------------------------------------- rejoin


def node(timeline: int, writable: bool = False, sysid: str = "7001", reachable: bool = True) -> Dict[str, Any]:
    return {"reachable": reachable, "accepts_writes": writable if reachable else None,
            "in_recovery": (not writable) if reachable else None, "timeline": timeline if reachable else None,
            "system_identifier": sysid if reachable else None, "role": "primary" if writable else "standby",
            "error": None if reachable else "connection refused"}


def control(timeline: int, state: str = "in production", sysid: str = "7001") -> Dict[str, Any]:
    return {"timeline": timeline, "cluster_state": state, "system_identifier": sysid}


def test_a_fenced_old_primary_rejoins_a_promoted_replica() -> None:
    assert rejoin_problems("db-1", "db-2", node(1, reachable=False), control(1), node(2, writable=True)) == []


def test_a_writable_node_is_refused_unless_forced_by_its_own_flag() -> None:
    problems = rejoin_problems("db-1", "db-2", node(1, writable=True), control(1), node(2, writable=True))
    assert len(problems) == 1 and "Refusing to rejoin db-1: it accepts writes" in problems[0]
    assert "pg_failover_rejoin_force_writable=true" in problems[0]
    assert rejoin_problems("db-1", "db-2", node(1, writable=True), control(1), node(2, writable=True),
                           force_writable=True) == []


@pytest.mark.parametrize("old_tli, new_tli", [(2, 2), (3, 2)])
def test_the_new_primary_must_be_on_a_later_timeline(old_tli: int, new_tli: int) -> None:
    problems = rejoin_problems("db-1", "db-2", node(old_tli, reachable=False), control(old_tli), node(new_tli, writable=True))
    assert len(problems) == 1 and "db-2 is on timeline %d, not later than db-1's timeline %d" % (new_tli, old_tli) in problems[0]
    # forcing a writable node does not lift the timeline check
    assert rejoin_problems("db-1", "db-2", node(old_tli, writable=True), control(old_tli), node(new_tli, writable=True),
                           force_writable=True)


@pytest.mark.parametrize("info, ctl, fresh", [
    (node(2), {}, False),                                   # a running standby on the same timeline
    (node(2, reachable=False), control(2, "shut down in recovery"), False),
    (node(2, reachable=False), control(2, "in production"), True),  # a base backup never started (backup_label)
])
def test_same_timeline_is_fine_for_a_node_that_never_wrote(info: Dict[str, Any], ctl: Dict[str, Any], fresh: bool) -> None:
    assert rejoin_problems("db-1", "db-2", info, ctl, node(2, writable=True), fresh_backup=fresh) == []


def test_another_cluster_is_refused() -> None:
    problems = rejoin_problems("db-1", "db-2", node(1, reachable=False), control(1, sysid="7001"),
                               node(2, writable=True, sysid="9999"))
    assert len(problems) == 1 and "(system identifier 7001) and db-2 (9999) are not copies of the same cluster" in problems[0]


def test_a_new_primary_that_does_not_accept_writes_is_refused() -> None:
    problems = rejoin_problems("db-1", "db-2", node(1, reachable=False), control(1), node(2))
    assert len(problems) == 1 and re.search(r"db-2 does not accept writes .*, so db-1 cannot follow it", problems[0])


def test_a_missing_data_directory_is_resumed_only_after_an_earlier_rejoin() -> None:
    down = node(1, reachable=False)
    assert "has no data directory to rejoin" in rejoin_problems("db-1", "db-2", down, {}, node(2, writable=True))[0]
    assert rejoin_problems("db-1", "db-2", down, {}, node(2, writable=True), resuming=True) == []
