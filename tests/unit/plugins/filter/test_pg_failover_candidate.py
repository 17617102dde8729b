# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pg_failover_candidate filter (plugins/filter/pg_candidate.py, logic in module_utils/pg_candidate.py).

Node results are shaped as pg_replication_info returns them (the integration test
tests/integration/plugins/modules/test_pg_follow.py feeds the filter real ones). Properties (hypothesis,
``ci`` profile in CI): the chosen standby is never behind another eligible one; a named healthy candidate always
wins; a refusal never names a target and vice versa.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import ansible.utils.display  # noqa: F401  # pylint: disable=unused-import  # its ldconfig probe runs at import, not in a test
import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.akig.runbooks.plugins.filter.pg_candidate import FilterModule
from ansible_collections.akig.runbooks.plugins.module_utils.pg_candidate import format_bytes, position_of
from hypothesis import given
from hypothesis import strategies as st

pg_failover_candidate = FilterModule().filters()["pg_failover_candidate"]
SYSTEM = "7713955421543448012"


def lsn(position: Optional[int]) -> Optional[str]:
    return None if position is None else "%X/%X" % (position >> 32, position & 0xFFFFFFFF)


def standby(received: Optional[int], replayed: Optional[int] = None, *, connected: bool = True, paused: bool = False,
            timeline: int = 1, system: str = SYSTEM) -> Dict[str, Any]:
    replayed = received if replayed is None else replayed
    return {
        "reachable": True, "in_recovery": True, "role": "standby", "accepts_writes": False, "replay_paused": paused,
        "receive_lsn": lsn(received), "receive_lsn_bytes": received,
        "replay_lsn": lsn(replayed), "replay_lsn_bytes": replayed,
        "timeline": timeline, "system_identifier": system,
        "wal_receiver": {"status": "streaming" if connected else None, "connected": connected},
    }


def primary(current: int = 0x9000000, timeline: int = 1) -> Dict[str, Any]:
    return {"reachable": True, "in_recovery": False, "role": "primary", "accepts_writes": True, "timeline": timeline,
            "current_lsn": lsn(current), "current_lsn_bytes": current, "system_identifier": SYSTEM,
            "wal_receiver": {"status": None, "connected": False}}


DOWN = {"reachable": False, "error": "cannot connect ...: Connection refused", "error_kind": "refused"}


# ----------------------------------------------------------------------------------------------- choice by LSN


def test_the_most_advanced_standby_by_received_lsn_is_chosen_and_the_other_follows() -> None:
    nodes = {"db-1": DOWN, "db-2": standby(0x5000000, connected=False), "db-3": standby(0x5003000, 0x5000000, connected=False)}
    out = pg_failover_candidate(nodes, "db-1")
    assert out["target"] == "db-3" and out["refusal"] is None and not out["already_done"]
    assert out["reason"] == "db-3: received 0/5003000 (12 kB ahead of db-2)"
    assert out["others"] == ["db-2"]
    assert [row["host"] for row in out["ranking"]] == ["db-3", "db-2"]
    assert out["ranking"][0] == {"host": "db-3", "received_lsn": "0/5003000", "replay_lsn": "0/5000000",
                                 "position_bytes": 0x5003000, "position": "received 0/5003000", "timeline": 1,
                                 "priority": 100, "eligible": True, "why_not": None}


def test_replay_lsn_counts_when_nothing_was_received_or_replay_is_further() -> None:
    assert position_of(standby(None, 0x300)) == (0x300, "0/300")
    assert position_of(standby(0x100, 0x300)) == (0x300, "0/300")  # restarted: receive starts again lower
    nodes = {"db-1": DOWN, "db-2": standby(None, 0x5000, connected=False), "db-3": standby(0x4000, connected=False)}
    out = pg_failover_candidate(nodes, "db-1")
    assert out["target"] == "db-2"
    assert out["reason"].startswith("db-2: replayed 0/5000 (4 kB ahead of db-3)")


def test_ties_are_broken_by_priority_then_by_name() -> None:
    nodes = {"db-1": DOWN, "db-2": standby(0x5000, connected=False), "db-3": standby(0x5000, connected=False)}
    assert pg_failover_candidate(nodes, "db-1")["reason"] == \
        "db-2: received 0/5000 (level with db-3 and the same priority 100, chosen by name)"
    # hostvars-like priorities: akig_pg_failover_priority, lower first
    out = pg_failover_candidate(nodes, "db-1", "", {"db-3": {"akig_pg_failover_priority": 10}, "db-2": {}})
    assert out["target"] == "db-3"
    assert out["reason"] == "db-3: received 0/5000 (level with db-2, chosen by priority 10 < 100)"
    assert [row["priority"] for row in out["ranking"]] == [10, 100]
    # a priority never beats a position
    nodes["db-2"] = standby(0x5001, connected=False)
    assert pg_failover_candidate(nodes, "db-1", None, {"db-3": 1})["target"] == "db-2"


def test_unhealthy_standbys_are_ranked_last_with_the_reason() -> None:
    nodes = {
        "db-1": primary(),
        "db-2": standby(0x100, connected=False),               # primary up, not streaming
        "db-3": standby(0x9000, paused=True),
        "db-4": DOWN,
        "db-5": standby(0x200, system="42"),
        "db-6": standby(0x50),
    }
    out = pg_failover_candidate(nodes, "db-1")
    assert out["target"] == "db-6"
    why = {row["host"]: row["why_not"] for row in out["ranking"]}
    assert why["db-6"] is None
    assert why["db-2"].startswith("not streaming while the old primary is up")
    assert why["db-3"].startswith("WAL replay is paused on it")
    assert why["db-4"] == "unreachable (refused)"
    assert why["db-5"].startswith("another cluster (system identifier 42")
    assert "not eligible: db-2 not streaming" in out["reason"]
    assert out["others"] == ["db-2", "db-3", "db-4", "db-5"]


def test_a_standby_on_an_older_timeline_is_not_eligible() -> None:
    nodes = {"db-1": DOWN, "db-2": standby(0x9000, timeline=1, connected=False), "db-3": standby(0x100, timeline=2)}
    out = pg_failover_candidate(nodes, "db-1")
    assert out["target"] == "db-3"
    assert out["ranking"][1]["why_not"] == "on timeline 1, behind timeline 2"


# ----------------------------------------------------------------------------------------------- named candidate


def test_a_named_healthy_candidate_wins_even_when_behind_and_the_reason_says_so() -> None:
    nodes = {"db-1": primary(), "db-2": standby(0x1000), "db-3": standby(0x1800)}
    out = pg_failover_candidate(nodes, "db-1", "db-2")
    assert out["target"] == "db-2" and out["others"] == ["db-3"]
    assert out["reason"] == "db-2: named by pg_failover_candidate, received 0/1000 (db-3 is 2 kB ahead)"
    assert pg_failover_candidate(nodes, "db-1", "db-3")["reason"].endswith("(2 kB ahead of db-2)")


@pytest.mark.parametrize("nodes, candidate, says", [
    ({"db-1": primary(), "db-2": DOWN}, "db-2", "the candidate db-2 cannot be promoted: unreachable (refused)"),
    ({"db-1": DOWN, "db-2": standby(1, paused=True)}, "db-2", "cannot be promoted: WAL replay is paused on it"),
    ({"db-1": primary(), "db-2": standby(1, connected=False)}, "db-2",
     "cannot be promoted: not streaming while the old primary is up (WAL receiver not running)"),
    ({"db-1": DOWN, "db-2": standby(1)}, "db-9", "the candidate db-9 is not one of the database nodes read (db-2)"),
    ({"db-1": DOWN, "db-2": standby(1)}, "db-1", "the candidate db-1 is the primary being replaced"),
    ({"db-1": primary(), "db-2": primary()}, "db-2", "db-1, db-2 accept writes: there are already two primaries"),
    ({"db-1": DOWN, "db-2": primary(timeline=2), "db-3": standby(1)}, "db-3",
     "db-2 already accepts writes (an earlier failover?), so promoting db-3 would leave two primaries"),
    ({"db-1": DOWN, "db-2": DOWN, "db-3": standby(None, None)}, "",
     "no healthy standby to promote: db-2 unreachable (refused); db-3 no WAL position known"),
    ({"db-1": DOWN}, None, "no healthy standby to promote: no standby was read"),
])
def test_refusals_name_the_node_and_the_cause(nodes: Dict[str, Any], candidate: Optional[str], says: str) -> None:
    out = pg_failover_candidate(nodes, "db-1", candidate)
    assert out["target"] == "" and out["others"] == [] and out["reason"] == ""
    assert says in out["refusal"]
    assert "Nothing was changed" in out["refusal"] or "name" in out["refusal"]


# ----------------------------------------------------------------------------------------------- rerun


def test_a_rerun_after_a_successful_failover_finds_the_new_primary_and_its_followers() -> None:
    nodes = {"db-1": standby(0x100, timeline=2), "db-2": primary(timeline=2), "db-3": standby(0x100, timeline=2)}
    out = pg_failover_candidate(nodes, "db-1")
    assert out["target"] == "db-2" and out["already_done"] and out["refusal"] is None
    assert out["reason"] == ("db-2 already accepts writes and db-1 does not: the failover was done by an earlier run; "
                             "nothing to promote")
    assert out["others"] == ["db-3"]
    assert pg_failover_candidate(nodes, "db-1", "db-2")["already_done"]


# ----------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("args, message", [
    (("not a dict", "db-1"), "give the nodes as a dict"),
    (({}, ""), "the old primary must be an inventory host name"),
    (({}, "db-1", 3), "the candidate must be an inventory host name or empty"),
    (({"db-2": standby(1)}, "db-1", "", ["db-2"]), "priorities must be a dict"),
    (({"db-2": standby(1)}, "db-1", "", {"db-2": "high"}), "akig_pg_failover_priority of db-2 must be a whole number"),
    (({"db-2": standby(1)}, "db-1", "", {"db-2": {"akig_pg_failover_priority": 1.5}}), "got 1.5"),
    (({"db-2": standby(1)}, "db-1", "", {"db-2": True}), "got True"),
])
def test_bad_input_is_a_filter_error_naming_it(args: tuple, message: str) -> None:
    with pytest.raises(AnsibleFilterError) as raised:
        pg_failover_candidate(*args)
    assert str(raised.value).startswith("pg_failover_candidate: ") and message in str(raised.value)


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (0, 1023, 1024, 12288, 1536, 5 * 1024 ** 3)] == \
        ["0 bytes", "1023 bytes", "1 kB", "12 kB", "1.5 kB", "5 GB"]


# ----------------------------------------------------------------------------------------------- properties

HOSTS = ("db-2", "db-3", "db-4", "db-5")
node_state = st.one_of(
    st.builds(standby, st.one_of(st.none(), st.integers(0, 1 << 40)), st.one_of(st.none(), st.integers(0, 1 << 40)),
              connected=st.booleans(), paused=st.booleans(), timeline=st.integers(1, 3)),
    st.just(DOWN),
)
clusters = st.fixed_dictionaries({host: node_state for host in HOSTS})
priority_maps = st.dictionaries(st.sampled_from(HOSTS), st.integers(-5, 200))


@given(cluster=clusters, old=st.one_of(st.just(DOWN), st.builds(primary)), priorities=priority_maps)
def test_the_choice_is_never_behind_another_eligible_standby(cluster: Dict[str, Any], old: Dict[str, Any],
                                                             priorities: Dict[str, int]) -> None:
    out = pg_failover_candidate(dict(cluster, **{"db-1": old}), "db-1", None, priorities)
    eligible = [row for row in out["ranking"] if row["eligible"]]
    assert bool(out["target"]) == bool(eligible) == (out["refusal"] is None)
    if eligible:
        chosen = next(row for row in eligible if row["host"] == out["target"])
        assert all(chosen["position_bytes"] >= row["position_bytes"] for row in eligible)
        level = [row for row in eligible if row["position_bytes"] == chosen["position_bytes"]]
        assert min((row["priority"], row["host"]) for row in level) == (chosen["priority"], chosen["host"])
        assert sorted(out["others"] + [out["target"]]) == sorted(HOSTS)


@given(cluster=clusters, old=st.one_of(st.just(DOWN), st.builds(primary)), named=st.sampled_from(HOSTS),
       priorities=priority_maps)
def test_a_named_healthy_candidate_always_wins(cluster: Dict[str, Any], old: Dict[str, Any], named: str,
                                               priorities: Dict[str, int]) -> None:
    out = pg_failover_candidate(dict(cluster, **{"db-1": old}), "db-1", named, priorities)
    healthy = next(row for row in out["ranking"] if row["host"] == named)["eligible"]
    if healthy:
        assert out["target"] == named and out["refusal"] is None and named not in out["others"]
        assert out["reason"].startswith("%s: named by pg_failover_candidate" % named)
    else:
        assert out["target"] == "" and named in out["refusal"]


@pytest.mark.process
def test_the_filter_documentation_renders() -> None:
    ansible_doc = Path(sys.executable).parent / "ansible-doc"
    proc = subprocess.run([str(ansible_doc), "-t", "filter", "akig.runbooks.pg_failover_candidate"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "akig.runbooks.pg_failover_candidate" in proc.stdout and "ranking" in proc.stdout
