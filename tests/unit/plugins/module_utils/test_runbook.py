"""The run fact of the runbook frame: new_run, run_update, run_failure, run_close."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.akig.runbooks.plugins.module_utils import runbook as rb

T0 = "2026-11-30T14:23:00.000Z"


def run() -> dict:
    return rb.new_run("rb-p1-003-db-failover", T0, "P1", "RB-P1-003", "lab")


def test_new_run_starts_open_with_nothing_recorded():
    r = run()
    assert r["status"] == "open" and r["started"] == T0 and r["lock_held"] is False
    assert r["milestones"] == {} and r["changes"] == [] and r["failure"] is None
    assert r["t0"] == datetime(2026, 11, 30, 14, 23, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("runbook, now, message", [
    ("", T0, "runbook must be the runbook id"),
    ("RB P1", T0, "runbook must be the runbook id"),
    ("rb-p1-003", "yesterday", "ISO 8601"),
    ("rb-p1-003", "2026-11-30T14:23:00", "ISO 8601"),
])
def test_new_run_refuses_bad_input(runbook, now, message):
    with pytest.raises(rb.RunbookError, match=message):
        rb.new_run(runbook, now)


def test_update_does_not_change_its_input_and_merges_by_kind():
    r = run()
    u = rb.run_update(r, {"milestone": "alert_sent", "impact": "API 503", "evidence": ["a", "b"],
                          "changes": [{"host": "db-2", "action": "promoted"}], "figures": {"RPO": "0"},
                          "results": {"pg_failover": {"new_primary": "db-2"}}}, "2026-11-30T14:23:05Z")
    assert r["milestones"] == {} and r["changes"] == []
    assert u["milestones"] == {"alert_sent": "2026-11-30T14:23:05.000Z"}
    u2 = rb.run_update(u, {"milestone": "alert_sent", "evidence": ["b", "c"], "changes": {"host": "app-1", "action": "repointed"},
                           "figures": [{"name": "RPO", "value": "12 bytes"}, {"name": "RTO", "value": "4 s"}],
                           "results": {"pg_failover": {"timeline": 3}}}, "2026-11-30T14:30:00Z")
    assert u2["milestones"]["alert_sent"] == "2026-11-30T14:23:05.000Z"  # the first time wins
    assert u2["evidence"] == ["a", "b", "c"]
    assert [c["host"] for c in u2["changes"]] == ["db-2", "app-1"]
    assert u2["figures"] == [{"name": "RPO", "value": "12 bytes"}, {"name": "RTO", "value": "4 s"}]
    assert u2["results"] == {"pg_failover": {"new_primary": "db-2", "timeline": 3}}


@pytest.mark.parametrize("update, message", [
    ({"colour": "red"}, "unknown key"),
    ({"milestone": "coffee"}, "unknown milestone"),
    ({"changes": [{"host": "db-1"}]}, "host and an action"),
    ({"figures": [{"name": "RTO"}]}, "name and value"),
    ({"status": "done"}, "status must be one of"),
    ({"evidence": {"a": 1}}, "evidence must be a text or a list"),
    ({"results": ["x"]}, "results must be a mapping"),
])
def test_update_refuses_bad_input(update, message):
    with pytest.raises(rb.RunbookError, match=message):
        rb.run_update(run(), update, T0)


def test_update_without_a_run_says_to_open_first():
    with pytest.raises(rb.RunbookError, match="open entry point first"):
        rb.run_update(None, {"impact": "x"})


def test_first_failure_is_kept_and_a_failed_run_stays_failed():
    r = rb.run_update(run(), {"failure": {"task": "Repoint", "host": "app-1", "msg": "boom"}})
    r = rb.run_update(r, {"failure": {"task": "Other", "host": "app-2", "msg": "later"}, "status": "resolved"})
    assert r["status"] == "failed" and r["failure"] == {"task": "Repoint", "host": "app-1", "msg": "boom"}
    assert rb.run_close(r, "2026-11-30T14:40:00Z")["status"] == "failed"


@pytest.mark.parametrize("result, msg", [
    ({"msg": "connection refused"}, "connection refused"),
    ({"censored": "the output has been hidden", "msg": "SECRET"}, rb.NO_LOG_TEXT),
    ({"_ansible_no_log": True, "msg": "SECRET"}, rb.NO_LOG_TEXT),
    ({"unreachable": True, "msg": "ssh: no route"}, "host unreachable: ssh: no route"),
    ({}, "the task failed without a message"),
    ({"msg": ["a", "b"]}, "a; b"),
    ({"msg": "x" * 1000}, "x" * rb.MESSAGE_LIMIT),
])
def test_failure_record_hides_no_log_results(result, msg):
    f = rb.run_failure("Repoint the backend", result, "app-1")
    assert f == {"task": "Repoint the backend", "host": "app-1", "msg": msg}


def test_close_measures_rto_duration_sla_and_tiers():
    r = rb.run_update(run(), {"milestone": "service_restored"}, "2026-11-30T14:23:04.250Z")
    sla = {"severity": "P1", "state": "ok", "resolve": {"remaining_s": 1500, "budget_s": 1800, "breached": False}}
    tier = {"tiers_due": ["tier1"]}
    c = rb.run_close(r, "2026-11-30T14:28:00Z", sla, tier, {"RPO": "0"})
    figures = {f["name"]: f["value"] for f in c["figures"]}
    assert figures == {"RTO": "4.25 s", "Duration": "5 min 00 s", "SLA": "P1 met (25 min 00 s left of 30 min 00 s)",
                       "Escalation": "tier1", "RPO": "0"}
    assert c["status"] == "resolved" and c["ended"] == "2026-11-30T14:28:00.000Z"


def test_close_without_restoration_has_no_rto_and_a_breach_is_said():
    sla = {"severity": "P1", "state": "breached", "resolve": {"remaining_s": 0, "budget_s": 1800, "breached": True}}
    figures = {f["name"]: f["value"] for f in rb.run_close(run(), "2026-11-30T15:00:00Z", sla)["figures"]}
    assert "RTO" not in figures and figures["SLA"].startswith("P1 breached")


@given(st.lists(st.sampled_from(rb.MILESTONES), max_size=10), st.integers(min_value=0, max_value=10**6))
def test_prop_milestones_are_stamped_once_and_never_before_the_start(names, offset):
    r = run()
    for i, name in enumerate(names):
        at = datetime(2026, 11, 30, 14, 23, tzinfo=timezone.utc) + timedelta(seconds=offset + i)
        r = rb.run_update(r, {"milestone": name}, at)
    assert set(r["milestones"]) == set(names)
    for name, stamp in r["milestones"].items():
        assert stamp >= r["started"]
        first = names.index(name)
        expected = datetime(2026, 11, 30, 14, 23, tzinfo=timezone.utc) + timedelta(seconds=offset + first)
        assert stamp == rb.iso(expected)
