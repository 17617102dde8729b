# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the pure helpers behind the akig.runbooks.timeline callback."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.akig.runbooks.plugins.module_utils import timeline as tl

T0 = datetime(2025, 11, 5, 14, 23, 0, tzinfo=timezone.utc)


# -- phases -----------------------------------------------------------------

@pytest.mark.parametrize(
    "tags, phase_var, previous, expected",
    [
        (["detect"], None, None, "detect"),
        (["rb-p1-003", "Mitigate", "detect"], None, None, "mitigate"),
        (["analyze"], None, None, "analyse"),
        ("pg_failover,resolve", None, None, "resolve"),
        (["detect"], "resolve", "mitigate", "detect"),
        (["pg_failover"], "communicate", "detect", "communicate"),
        (["pg_failover"], "ANALYZE", None, "analyse"),
        ([], "{{ phase }}", "mitigate", "mitigate"),
        ([], None, "resolve", "resolve"),
        ([], None, None, "unknown"),
        (None, 42, None, "unknown"),
    ],
)
def test_resolve_phase(tags, phase_var, previous, expected):
    assert tl.resolve_phase(tags, phase_var, previous) == expected


@settings(derandomize=True, database=None)
@given(st.lists(st.text(max_size=12), max_size=6), st.one_of(st.none(), st.text(max_size=12)),
       st.one_of(st.none(), st.sampled_from(tl.PHASES)))
def test_resolve_phase_always_returns_a_known_phase(tags, phase_var, previous):
    assert tl.resolve_phase(tags, phase_var, previous) in tl.PHASES + (tl.UNKNOWN_PHASE,)


# -- scalars ----------------------------------------------------------------

@pytest.mark.parametrize(
    "value, expected",
    [
        ("2025-11-05T14:23:00Z", T0),
        ("2025-11-05T15:23:00+01:00", T0),
        ("2025-11-05 14:23:00", T0),
        (T0.replace(tzinfo=None), T0),
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_timestamp(value, expected):
    assert tl.parse_timestamp(value) == expected


def test_isoformat_utc_uses_z_and_milliseconds():
    assert tl.isoformat_utc(T0 + timedelta(microseconds=123456)) == "2025-11-05T14:23:00.123Z"


@pytest.mark.parametrize(
    "value, expected",
    [("P1", "P1"), ("p2", "P2"), (3, "P3"), ("1", "P1"), ("SEV-A", "SEV-A"), ("", None), (None, None)],
)
def test_normalize_severity(value, expected):
    assert tl.normalize_severity(value) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("INC-2025-001", "INC-2025-001"),
        ("../../etc/passwd", "etc_passwd"),
        ("inc 42/a", "inc_42_a"),
        ("..", None),
        ("", None),
        (None, None),
    ],
)
def test_sanitize_incident_id(value, expected):
    assert tl.sanitize_incident_id(value) == expected


@pytest.mark.parametrize(
    "playbook, expected",
    [("lab-health", "20251105T142300Z-lab-health"), ("../x y", "20251105T142300Z-.._x_y"), (None, "20251105T142300Z-adhoc")],
)
def test_run_folder_name_is_stamp_then_playbook(playbook, expected):
    assert tl.run_folder_name(playbook, T0) == expected


@pytest.mark.parametrize(
    "path, expected",
    [("/x/playbooks/rb-p1-003-db-failover.yml", "rb-p1-003-db-failover"), ("site.yaml", "site"), (None, None)],
)
def test_runbook_from_path(path, expected):
    assert tl.runbook_from_path(path) == expected


@pytest.mark.parametrize(
    "seconds, expected",
    [(0, "0 s"), (45.4, "45 s"), (360, "6 min"), (372, "6 min 12 s"), (3900, "1 h 05 min")],
)
def test_format_duration(seconds, expected):
    assert tl.format_duration(seconds) == expected


# -- SLA ----------------------------------------------------------------------

def _fake_sla(start, severity, now, policy=None):
    elapsed = (now - start).total_seconds()
    return {"state": "at_risk" if elapsed > 60 else "ok", "elapsed_s": elapsed, "severity": severity,
            "resolve": {"remaining_s": 1800 - elapsed, "deadline": start + timedelta(seconds=1800)}}


def test_sla_snapshot_keeps_state_and_numbers_only():
    snap = tl.sla_snapshot(_fake_sla, T0, "P1", T0 + timedelta(seconds=90))
    assert snap == {"state": "at_risk", "elapsed_s": 90.0, "remaining_s": 1710.0}
    snap = tl.sla_snapshot(_fake_sla, T0, "P1", T0, with_deadline=True)
    assert snap["deadline"] == "2025-11-05T14:53:00.000Z"


def test_sla_snapshot_is_none_without_policy_severity_or_on_error():
    def broken(*args):
        raise ValueError("now is before start")

    assert tl.sla_snapshot(None, T0, "P1", T0) is None
    assert tl.sla_snapshot(_fake_sla, T0, None, T0) is None
    assert tl.sla_snapshot(broken, T0, "P1", T0) is None
    assert tl.sla_snapshot(lambda *a: {"state": "weird"}, T0, "P1", T0) is None


# -- records ------------------------------------------------------------------

def _record(**overrides):
    values = dict(ts=T0, incident_id="INC-1", runbook="rb", severity="P1", phase="detect", task="Probe",
                  host="db1", outcome="failed", duration_s=1.23456, sla=None)
    values.update(overrides)
    return tl.build_task_record(**values)


def test_task_record_shape():
    record = _record(role="pg_failover", task_id="u-1", msg="line one\nline two")
    assert record == {
        "ts": "2025-11-05T14:23:00.000Z", "incident_id": "INC-1", "runbook": "rb", "severity": "P1",
        "phase": "detect", "task": "Probe", "task_id": "u-1", "role": "pg_failover", "host": "db1",
        "outcome": "failed", "duration_s": 1.235, "sla": None, "msg": "line one line two",
    }


def test_task_record_msg_truncated_and_dropped_when_censored():
    assert len(_record(msg="x" * 1000)["msg"]) == tl.MSG_LIMIT
    censored = _record(msg="CANARY", censored=True)
    assert censored["censored"] is True and "msg" not in censored
    assert "msg" not in _record(outcome="ok", msg="fine")


def test_task_record_rejects_unknown_outcome():
    with pytest.raises(ValueError, match="outcome must be one of"):
        _record(outcome="rescued")


def test_run_end_record():
    record = tl.build_run_end(T0, "INC-1", "rb", {"b": {"ok": 1}, "a": {"ok": 2}}, 12.3456, None)
    assert record["event"] == "run_end" and list(record["stats"]) == ["a", "b"]
    assert record["duration_s"] == 12.346 and record["sla"] is None


# -- redaction ------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, leaked, kept",
    [
        ("connect to postgres://akig:S3cr3t-pw@db-1:5432/akig failed", "S3cr3t-pw", "postgres://akig:***@db-1"),
        ("login refused: password=S3cr3t-pw for akig", "S3cr3t-pw", "password=***"),
        ("Authorization: Bearer abc.DEF-123 rejected", "abc.DEF-123", "Bearer ***"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl expired", "eyJhbGciOiJIUzI1NiJ9", "token *** expired"),
        ("api_key: AK-123456 over quota", "AK-123456", "api_key: ***"),
    ],
)
def test_clean_text_masks_credentials(text, leaked, kept):
    cleaned = tl.clean_text(text, 300)
    assert leaked not in cleaned and kept in cleaned


def test_clean_text_masks_before_truncating():
    cleaned = tl.clean_text("x" * 40 + " postgres://akig:S3cr3t-pw@db-1", 60)
    assert "S3cr3t" not in cleaned and len(cleaned) <= 60


# -- the run fact ---------------------------------------------------------------

RUN = {
    "runbook": "rb-p1-003-db-failover",
    "title": "Base de données indisponible",
    "severity": "P1",
    "status": "resolved",
    "started": "2025-11-05T14:23:00.000Z",
    "ended": "2025-11-05T14:29:00.000Z",
    "milestones": {"alert_sent": "2025-11-05T14:23:02.100Z", "cause_identified": "2025-11-05T14:23:40Z",
                   "service_restored": "2025-11-05T14:27:30.500Z", "bogus": "2025-11-05T14:23:00Z"},
    "impact": "API 503 on 2 backends\n(every user)",
    "root_cause": "db-1 postmaster killed",
    "evidence": ["db-1: connection refused", "db-2: lag 0 B", {"nested": "dropped"}],
    "changes": [{"host": "db-2", "action": "promoted to primary (timeline 3)"},
                {"host": "app-1", "action": "DATABASE_URL repointed"},
                {"host": "db-2", "action": "checkpoint"},
                {"host": "app-2"}],
    "figures": [{"name": "RTO", "value": "4.2 s"}, {"name": "RPO", "value": 0},
                {"name": "SLA", "value": "met (25 min 48 s left)"}, {"name": "Escalation", "value": "tier 1"}],
    "prevention": ["Alert on replica lag"],
    "cost": "2 min of 503",
    "next_steps": ["Rejoin db-1 as a replica"],
    "failure": None,
    "results": {"pg_failover": {"dsn": "postgres://akig:S3cr3t-pw@db-2/akig"}},
    "t0": 1762352580.0,
}


def test_sanitize_run_keeps_documented_keys_as_bounded_text():
    run = tl.sanitize_run(RUN)
    assert "results" not in run and "t0" not in run and "failure" not in run
    assert run["impact"] == "API 503 on 2 backends (every user)"
    assert run["evidence"] == ["db-1: connection refused", "db-2: lag 0 B"]
    assert run["changes"][1] == {"host": "app-1", "action": "DATABASE_URL repointed"} and len(run["changes"]) == 3
    assert run["figures"][1] == {"name": "RPO", "value": "0"}
    assert set(run["milestones"]) == {"alert_sent", "cause_identified", "service_restored"}
    assert run["started"] == T0 and run["status"] == "resolved"
    assert tl.sanitize_run("not a mapping") == {}
    assert tl.sanitize_run({"status": "weird", "title": {"a": 1}, "evidence": "one"}) == {"evidence": ["one"]}


def test_sanitize_run_bounds_lengths_and_counts():
    run = tl.sanitize_run({"impact": "x" * 5000, "evidence": ["e%d" % i for i in range(100)],
                           "failure": {"task": "Promote", "msg": "m" * 1000}})
    assert len(run["impact"]) == tl.TEXT_LIMIT and len(run["evidence"]) == tl.LIST_LIMIT
    assert len(run["failure"]["msg"]) == tl.MSG_LIMIT and run["failure"]["host"] is None


def test_sanitize_report_fields_keeps_known_keys_as_text():
    fields = tl.sanitize_report_fields({
        "impact": "143 users", "root_cause": ["N+1 queries", "no index"], "fix": None,
        "prevention": "Memory monitoring", "cost": ["Dev: 4h", "Infra: $50"],
        "next_steps": ["Audit", {"nested": "dropped"}], "password": "dropped",
    })
    assert fields == {
        "impact": "143 users", "root_cause": "N+1 queries; no index", "prevention": ["Memory monitoring"],
        "cost": ["Dev: 4h", "Infra: $50"], "next_steps": ["Audit"],
    }
    assert tl.sanitize_report_fields("not a dict") == {}


# -- phases: a partition of the wall time ------------------------------------------

def _at(seconds):
    return T0 + timedelta(seconds=seconds)


def test_partition_gives_each_instant_to_the_task_started_last():
    starts = [(_at(1), "detect"), (_at(3), "unknown"), (_at(4), "communicate"), (_at(6), "detect"),
              (_at(9), "mitigate")]
    parts = tl.partition_phases(T0, _at(27), starts, activity_end=_at(25))
    # 0-1 setup, 1-3 detect, 3-4 no phase, 4-6 communicate, 6-9 detect, 9-25 mitigate, 25-27 setup
    assert parts == {"setup/other": 4000, "detect": 5000, "communicate": 2000, "mitigate": 16000}
    assert sum(parts.values()) == 27000


def test_partition_without_tasks_and_with_times_outside_the_run():
    assert tl.partition_phases(T0, _at(5), []) == {"setup/other": 5000}
    parts = tl.partition_phases(T0, _at(5), [(_at(-2), "detect"), (_at(9), "resolve")], activity_end=_at(12))
    assert parts == {"setup/other": 0, "detect": 5000, "resolve": 0}


@settings(derandomize=True, database=None, max_examples=300)
@given(
    st.integers(min_value=0, max_value=10_000_000),
    st.lists(st.tuples(st.integers(min_value=-5_000, max_value=10_005_000),
                       st.sampled_from(tl.PHASES + (tl.UNKNOWN_PHASE, "handler"))), max_size=40),
    st.one_of(st.none(), st.integers(min_value=-5_000, max_value=10_005_000)),
)
def test_phase_times_always_add_up_to_the_wall_time(total_ms, starts, activity_end_ms):
    end = T0 + timedelta(milliseconds=total_ms)
    marks = [(T0 + timedelta(milliseconds=ms), phase) for ms, phase in starts]
    activity_end = None if activity_end_ms is None else T0 + timedelta(milliseconds=activity_end_ms)
    parts = tl.partition_phases(T0, end, marks, activity_end)
    assert sum(parts.values()) == total_ms
    assert all(value >= 0 for value in parts.values())
    assert set(parts) <= set(tl.PHASES) | {tl.OTHER_PHASE}
    rows, total = tl.phase_rows(T0, end, marks)
    assert sum(row["tenths"] for row in rows) == total == (total_ms + 50) // 100


@settings(derandomize=True, database=None)
@given(st.lists(st.integers(min_value=0, max_value=10**7), max_size=12), st.sampled_from([1, 10, 100, 1000]))
def test_apportion_keeps_the_sum_and_moves_each_value_by_less_than_a_unit(values, unit):
    rounded = tl.apportion(values, unit)
    assert sum(rounded) == (sum(values) + unit // 2) // unit
    assert all(abs(r * unit - v) < unit for r, v in zip(rounded, values))


@pytest.mark.parametrize("tenths, expected", [(0, "0.0 s"), (123, "12.3 s"), (3723, "6 min 12.3 s"),
                                              (37230, "1 h 02 min 03.0 s")])
def test_format_tenths(tenths, expected):
    assert tl.format_tenths(tenths) == expected


# -- status -----------------------------------------------------------------------

def _record(**overrides):
    values = dict(ts=T0, incident_id="INC-1", runbook="rb", severity="P1", phase="detect", task="Probe",
                  host="db1", outcome="failed", duration_s=1.23456, sla=None)
    values.update(overrides)
    return tl.build_task_record(**values)


def test_observed_failure_skips_ignored_and_rescued_hosts():
    records = [
        _record(ts=_at(1), host="db-1", task="Rescued", msg="rescued"),
        _record(ts=_at(2), host="db-2", task="Ignored", msg="ignored", ignored=True),
        _record(ts=_at(3), host="db-2", task="Promote the replica", msg="lag too high"),
        _record(ts=_at(4), host="app-1", task="Rotate", censored=True),
        _record(ts=_at(5), host="app-2", task="Fine", outcome="ok"),
    ]
    assert tl.observed_failure(records, ["db-2", "app-1"]) == {
        "task": "Promote the replica", "host": "db-2", "msg": "lag too high", "censored": False}
    assert tl.observed_failure(records, ["app-1"])["censored"] is True
    assert tl.observed_failure(records, []) is None


def test_status_line_prefers_the_runbook_failure_and_hides_no_log_messages():
    records = [_record(task="Rotate the JWT secret", censored=True)]
    failure = {"task": "Rotate the JWT secret", "host": "app-1", "msg": "secret=abc rejected"}
    run = tl.sanitize_run({"status": "failed", "failure": failure})
    line = tl.status_line(run, {"task": "Abort", "host": "localhost", "msg": "aborted"}, records)
    assert line == '**Status: FAILED** — task "Rotate the JWT secret" on app-1: details hidden (no_log)'
    observed = tl.observed_failure([_record(task="Promote", host="db-2", msg="lag at postgres://a:pw@db-2")], ["db-2"])
    assert tl.status_line({"status": "resolved"}, observed) == \
        '**Status: FAILED** — task "Promote" on db-2: lag at postgres://a:***@db-2'
    assert tl.status_line({"status": "failed"}, None).startswith("**Status: FAILED** — the runbook recorded no")
    assert tl.status_line({"status": "resolved"}, None) == "**Status**: resolved"
    assert tl.status_line({"status": "open"}, None).startswith("**Status**: open")
    assert tl.status_line({}, None) == "**Status**: completed without a failed task"


# -- report -----------------------------------------------------------------------

def _timeline():
    return [
        {"event": "run_start"},
        _record(ts=_at(10), outcome="ok", duration_s=10, task_id="1", task="Validating arguments against arg spec"),
        _record(ts=_at(20), outcome="ok", host="db2", duration_s=5, task_id="1"),
        _record(ts=_at(80), phase="mitigate", task="Promote | replica", outcome="failed", duration_s=30, task_id="2"),
        _record(ts=_at(90), phase="mitigate", outcome="failed", ignored=True, duration_s=5, task_id="3"),
        _record(ts=_at(95), phase="unknown", outcome="skipped", duration_s=0, task_id="4"),
        _record(ts=_at(100), phase="communicate", outcome="changed", duration_s=2, task_id="5"),
        {"event": "run_end"},
    ]


TASK_STARTS = [(_at(0.5), "detect"), (_at(50), "mitigate"), (_at(85.5), "mitigate"), (_at(92), "unknown"),
               (_at(98), "communicate")]


def _render(**overrides):
    values = dict(incident_id="INC-1", run_name="20251105T142300Z-rb", runbook="rb-p1-003-db-failover",
                  severity="P1", run_start=T0, run_end=_at(101.25), task_starts=TASK_STARTS, records=_timeline(),
                  run=tl.sanitize_run(RUN),
                  sla={"state": "ok", "elapsed_s": 360.0, "remaining_s": 1440.0, "deadline": "2025-11-05T14:53:00.000Z"})
    values.update(overrides)
    return tl.render_report(**values)


def test_render_report_fills_the_template_from_the_run_fact():
    text = _render()
    assert text.startswith("## Incident Report: INC-1\n\n**Status**: resolved\n**When**: ")
    for expected in [
        "**When**: 2025-11-05 14:23-14:29 UTC (6 min total)",
        "**Severity**: P1 - Base de données indisponible",
        "**Runbook**: rb-p1-003-db-failover",
        "**Impact**: API 503 on 2 backends (every user)",
        "**Root Cause**: db-1 postmaster killed\n- db-1: connection refused\n- db-2: lag 0 B\n",
        "**What the runbook changed**:\n- db-2: promoted to primary (timeline 3); checkpoint\n- app-1: DATABASE_URL repointed\n",
        "| RTO | 4.2 s |", "| RPO | 0 |", "| SLA | met (25 min 48 s left) |", "| Escalation | tier 1 |",
        "| Alert sent | 14:23:02 | +2.1 s |",
        "| Cause identified | 14:23:40 | +40.0 s |",
        "| Mitigation applied | — | — |",
        "| Service restored | 14:27:30 | +4 min 30 s |",
        "| Resolution sent | — | — |",
        "**Prevention**: \n- [ ] Alert on replica lag",
        "**Cost**: 2 min of 503",
        "**Next steps**: \n- Rejoin db-1 as a replica",
        "**Detail**: [timeline.jsonl](timeline.jsonl)",
    ]:
        assert expected in text, expected
    assert "SLA (at run end)" not in text  # the runbook gave its own SLA figure
    assert "S3cr3t" not in text and "pg_failover" not in text


def test_render_report_has_no_task_table():
    text = _render()
    assert "Validating arguments" not in text and "Promote \\| replica" not in text and "| db2 |" not in text
    assert "### Timeline" not in text


def test_render_report_phase_column_adds_up_to_the_run_total():
    text = _render()
    table = text.split("| Phase | Time | Tasks | Failures |\n|---|---|---|---|\n")[1].split("\n\n")[0]
    phases = {cells[1].strip(): cells[2].strip() for cells in (line.split("|") for line in table.splitlines())}
    assert list(phases) == ["detect", "mitigate", "communicate", "setup/other", "**run total**"]
    # 0-0.5 setup, 0.5-50 detect, 50-92 mitigate, 92-98 no phase, 98-100 communicate, 100-101.25 setup
    assert phases["detect"] == "49.5 s" and phases["mitigate"] == "42.0 s" and phases["communicate"] == "2.0 s"
    assert phases["setup/other"] == "7.8 s" and phases["**run total**"] == "**1 min 41.3 s**"
    assert "| mitigate | 42.0 s | 2 | 2 |" in text


def test_render_report_failed_run_names_the_task_near_the_top():
    run = tl.sanitize_run({**RUN, "status": "failed",
                           "failure": {"task": "Promote the replica", "host": "db-2", "msg": "lag 900 MB > budget"}})
    text = _render(run=run)
    assert text.splitlines()[2] == '**Status: FAILED** — task "Promote the replica" on db-2: lag 900 MB > budget'


def test_render_report_uses_the_legacy_fact_and_callback_sla_as_fallbacks():
    legacy = tl.sanitize_report_fields({"impact": "143 users", "fix": "Failed over to db-2", "cost": ["Dev: 4h"]})
    text = _render(run={}, legacy=legacy, declared_start=T0, run_end=_at(360))
    assert "**Impact**: 143 users" in text
    assert "**What the runbook changed**: Failed over to db-2" in text
    assert "**Root Cause**: %s" % tl.TO_BE_COMPLETED in text
    assert "**Cost**: \n- Dev: 4h" in text
    assert "**Next steps**: \n- %s" % tl.TO_BE_COMPLETED in text
    assert "**Severity**: P1\n" in text
    assert "| SLA (at run end) | **OK (within SLA)** — elapsed 6 min — 24 min left to resolve — deadline " in text
    assert "| Alert sent | — | — |" in text


def test_render_report_of_a_run_that_is_not_an_incident():
    text = _render(incident_id=None, run_name="20251105T142300Z-lab-health", run={}, severity=None, sla=None,
                   records=[], task_starts=[(_at(1), "unknown")], run_end=_at(3))
    assert text.startswith("## Run Report: 20251105T142300Z-lab-health\n\n_No incident was declared for this run._")
    assert "**Status**: completed without a failed task" in text
    assert tl.TO_BE_COMPLETED not in text and "Milestones" not in text and "Severity" not in text
    assert "| setup/other | 3.0 s | 0 | 0 |" in text and "| **run total** | **3.0 s** | 0 | 0 |" in text


def test_render_report_when_spans_days():
    text = _render(run={}, declared_start=T0, run_end=T0 + timedelta(days=1, hours=1), records=[], task_starts=[])
    assert "**When**: 2025-11-05 14:23 – 2025-11-06 15:23 UTC (25 h 00 min total)" in text


def test_render_report_check_mode_is_said():
    assert "**Mode**: check mode" in _render(run=tl.sanitize_run({**RUN, "check_mode": True}))
