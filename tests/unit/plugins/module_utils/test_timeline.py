# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the pure helpers behind the akig.runbooks.timeline callback."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
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


def test_default_incident_id_names_runbook_and_time():
    assert tl.default_incident_id("rb-p1-003-db-failover", T0) == "UNDECLARED-rb-p1-003-db-failover-20251105T142300Z"


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


# -- report ---------------------------------------------------------------------

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


def _timeline():
    return [
        {"event": "run_start"},
        _record(ts=T0 + timedelta(seconds=10), outcome="ok", duration_s=10, task_id="1"),
        _record(ts=T0 + timedelta(seconds=20), outcome="ok", host="db2", duration_s=5, task_id="1"),
        _record(ts=T0 + timedelta(seconds=80), phase="mitigate", task="Promote | replica", outcome="failed",
                duration_s=30, task_id="2"),
        _record(ts=T0 + timedelta(seconds=90), phase="mitigate", outcome="failed", ignored=True, duration_s=5,
                task_id="3"),
        _record(ts=T0 + timedelta(seconds=95), phase="unknown", outcome="skipped", duration_s=0, task_id="4"),
        _record(ts=T0 + timedelta(seconds=100), phase="communicate", outcome="changed", duration_s=2, task_id="5"),
        {"event": "run_end"},
    ]


def test_summarize_phases_in_runbook_order():
    assert tl.summarize_phases(_timeline()) == [
        {"phase": "detect", "duration_s": 20.0, "tasks": 1, "failures": 0},
        {"phase": "mitigate", "duration_s": 40.0, "tasks": 2, "failures": 2},
        {"phase": "communicate", "duration_s": 2.0, "tasks": 1, "failures": 0},
        {"phase": "unknown", "duration_s": 0.0, "tasks": 1, "failures": 0},
    ]


def test_render_report_sections():
    text = tl.render_report(
        incident_id="INC-1", runbook="rb-p1-003-db-failover", severity="P1", incident_start=T0,
        run_end=T0 + timedelta(minutes=6), records=_timeline(),
        fields={"impact": "143 users", "prevention": ["Memory monitoring", "Load tests"], "cost": ["Dev: 4h"]},
        sla={"state": "ok", "elapsed_s": 360.0, "remaining_s": 1440.0, "deadline": "2025-11-05T14:53:00.000Z"},
    )
    assert text.startswith("## Incident Report: INC-1\n")
    assert "**When**: 2025-11-05 14:23-14:29 UTC (6 min total)" in text
    assert "**Severity**: P1" in text
    assert "**Impact**: 143 users" in text
    assert "**Root Cause**: %s" % tl.TO_BE_COMPLETED in text
    assert "**Fix**: %s" % tl.TO_BE_COMPLETED in text
    assert "- [ ] Memory monitoring\n- [ ] Load tests" in text
    assert "**Cost**: \n- Dev: 4h" in text
    assert "**Next steps**: \n- %s" % tl.TO_BE_COMPLETED in text
    assert "**OK (within SLA)** — elapsed 6 min — 24 min left to resolve — deadline 2025-11-05T14:53:00.000Z" in text
    assert "| mitigate | 40 s | 2 | 2 |" in text
    assert "| 14:24:20 | mitigate | Promote \\| replica | db1 | failed | 30.0 s |" in text
    assert "| failed (ignored) |" in text
    assert text.index("### Phases") < text.index("### Timeline")


def test_render_report_without_data():
    text = tl.render_report(incident_id="INC-2", runbook="rb", severity=None, incident_start=T0,
                            run_end=T0 + timedelta(days=1, hours=1), records=[])
    assert "**When**: 2025-11-05 14:23 – 2025-11-06 15:23 UTC (25 h 00 min total)" in text
    assert "**Severity**: %s" % tl.TO_BE_COMPLETED in text
    assert "- [ ] %s" % tl.TO_BE_COMPLETED in text
    assert "_SLA not evaluated" in text
    assert "_no task ran_" in text


def test_render_report_breached_sla():
    text = tl.render_report(incident_id="I", runbook="rb", severity="P1", incident_start=T0, run_end=T0,
                            records=[], sla={"state": "breached", "elapsed_s": 2000, "remaining_s": -200})
    assert "**BREACHED** — elapsed 33 min 20 s — resolution deadline missed by 3 min 20 s" in text
