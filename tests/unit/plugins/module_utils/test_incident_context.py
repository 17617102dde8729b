# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for plugins/module_utils/incident_context.py (the incident role's open-or-join logic)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils import incident_context as ic
from ansible_collections.akig.runbooks.plugins.module_utils.incident_context import IncidentContextError
from hypothesis import given
from hypothesis import strategies as st

NOW = "2026-11-27T14:30:00Z"
UTC = timezone.utc


def inputs(**values: Any) -> dict[str, Any]:
    """The role's inputs as the role passes them (defaults: opening a P1 incident with nothing else known)."""
    base: dict[str, Any] = {
        "id": "",
        "severity": "",
        "title": "",
        "declared_start": "",
        "impacted_users": None,
        "runbook": "",
        "data_breach": False,
        "current_id": "",
        "play_name": "RB-P1-001 | Open the incident",
    }
    base.update(values)
    return base


def found(ticket: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    """A registered incident_ticket lookup that found the ticket."""
    return {"changed": False, "found": True, "ticket": ticket or {}, "metadata": metadata}


SKIPPED = {"changed": False, "skipped": True, "skip_reason": "Conditional result was False"}
NOT_FOUND = {"changed": False, "found": False, "ticket": None, "metadata": {}}
TRACKER_DOWN = {"changed": False, "failed": False, "msg": "ticket tracker unreachable"}


# -- which incident -----------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, ""),
        ({"id": "  INC-20261127-1423-P1-3f9a "}, "INC-20261127-1423-P1-3f9a"),
        ({"current_id": "INC-20261127-1423-P1-3f9a"}, "INC-20261127-1423-P1-3f9a"),
        ({"id": "DRILL-42", "current_id": "INC-20261127-1423-P1-3f9a"}, "DRILL-42"),
        ({"id": None}, ""),
        ({"id": 42}, "42"),
    ],
)
def test_join_id(values, expected):
    assert ic.join_id(inputs(**values)) == expected


# -- opening ------------------------------------------------------------------


def test_open_a_new_incident_names_it_from_the_start_in_utc():
    ctx = ic.incident_context(
        inputs(severity="P1", declared_start="2026-11-27T15:23:00+01:00", title="Dashboard AKIG inaccessible",
               runbook="rb-p1-001-critical-bug", impacted_users=143),
        SKIPPED, NOW, "3f9a",
    )
    assert ctx == {
        "id": "INC-20261127-1423-P1-3f9a",
        "joining": False,
        "first_run": True,
        "severity": "P1",
        "title": "Dashboard AKIG inaccessible",
        "declared_start": "2026-11-27T15:23:00+01:00",
        "start_source": "incident_declared_start",
        "start_utc": "2026-11-27T14:23:00Z",
        "impacted_users": 143,
        "runbook": "rb-p1-001-critical-bug",
        "data_breach": False,
    }


@pytest.mark.parametrize(
    ("values", "field", "expected"),
    [
        ({}, "declared_start", NOW),  # no start: the controller clock
        ({}, "start_source", "the controller clock"),
        ({}, "title", "P2 incident (RB-P1-001 | Open the incident)"),
        ({}, "runbook", "RB-P1-001 | Open the incident"),
        ({"play_name": ""}, "runbook", "adhoc"),
        # a YAML timestamp (unquoted in the inventory) is a datetime: it gets its T back
        ({"declared_start": datetime(2026, 11, 27, 14, 0, tzinfo=UTC)}, "start_utc", "2026-11-27T14:00:00Z"),
        ({"declared_start": "2026-11-27 14:00:00+00:00"}, "start_utc", "2026-11-27T14:00:00Z"),
        ({"declared_start": "2026-11-27t14:00:00z"}, "start_utc", "2026-11-27T14:00:00Z"),
        ({"declared_start": "2026-11-27T15:00:00+0100"}, "start_utc", "2026-11-27T14:00:00Z"),
        ({"declared_start": "2026-11-27T14:00:00.250Z"}, "start_utc", "2026-11-27T14:00:00.250000Z"),
        ({"data_breach": "yes"}, "data_breach", True),
        ({"data_breach": "false"}, "data_breach", False),
        ({"title": "  Export PDF  "}, "title", "Export PDF"),
    ],
)
def test_open_defaults(values, field, expected):
    ctx = ic.incident_context(inputs(severity="P2", **values), None, NOW, "00ff")
    assert ctx[field] == expected


def test_a_fraction_of_a_second_ahead_of_the_clock_is_not_the_future():
    ctx = ic.incident_context(inputs(severity="P3", declared_start="2026-11-27T14:30:00.900Z"), None, NOW, "abcd")
    assert ctx["start_utc"] == "2026-11-27T14:30:00.900000Z"


def test_an_id_the_tracker_does_not_know_is_opened_under_that_id():
    ctx = ic.incident_context(inputs(id="DRILL-42", severity="P2"), NOT_FOUND, NOW, "abcd")
    assert (ctx["id"], ctx["joining"], ctx["first_run"], ctx["declared_start"]) == ("DRILL-42", True, True, NOW)


# -- joining ------------------------------------------------------------------


def test_join_by_generated_id_without_a_ticket_reads_the_id():
    ctx = ic.incident_context(inputs(id="INC-20251105-1423-P2-abcd"), SKIPPED, NOW)
    assert (ctx["id"], ctx["joining"], ctx["first_run"]) == ("INC-20251105-1423-P2-abcd", True, False)
    assert (ctx["severity"], ctx["start_utc"], ctx["start_source"]) == ("P2", "2025-11-05T14:23:00Z", "the incident id")


def test_join_through_the_ticket_prefers_its_metadata_then_its_fields():
    lookup = found(
        {"title": "Export PDF en échec", "severity": "P1", "created_at": "2025-11-05T14:30:00Z"},
        severity="P3", declared_start="2025-11-05T14:23:00Z", impacted_users=12,
        runbook="rb-p3-002-feature-degraded", data_breach="True",
    )
    ctx = ic.incident_context(inputs(id="INC-20251105-1423-P3-0a0a"), lookup, NOW)
    assert ctx == {
        "id": "INC-20251105-1423-P3-0a0a",
        "joining": True,
        "first_run": False,
        "severity": "P3",
        "title": "Export PDF en échec",
        "declared_start": "2025-11-05T14:23:00Z",
        "start_source": "the ticket",
        "start_utc": "2025-11-05T14:23:00Z",
        "impacted_users": 12,
        "runbook": "rb-p3-002-feature-degraded",
        "data_breach": True,
    }


def test_inputs_win_over_the_ticket():
    lookup = found({"title": "old"}, severity="P3", declared_start="2025-11-05T14:23:00Z", runbook="rb-old")
    ctx = ic.incident_context(
        inputs(id="X-1", severity="P1", title="new", declared_start="2025-11-05T14:00:00Z", runbook="rb-new",
               impacted_users=0),
        lookup, NOW,
    )
    assert (ctx["severity"], ctx["title"], ctx["start_utc"], ctx["runbook"], ctx["impacted_users"]) == (
        "P1", "new", "2025-11-05T14:00:00Z", "rb-new", 0)


def test_ticket_created_at_is_the_start_without_metadata():
    ctx = ic.incident_context(inputs(id="X-1"), found({"severity": "P2", "created_at": "2025-11-05T14:30:00Z"}), NOW)
    assert (ctx["severity"], ctx["start_utc"], ctx["start_source"]) == ("P2", "2025-11-05T14:30:00Z", "the ticket")


def test_tracker_failure_joins_from_the_id_alone():
    ctx = ic.incident_context(inputs(current_id="INC-20251105-1423-P1-9999"), TRACKER_DOWN, NOW)
    assert (ctx["id"], ctx["severity"], ctx["first_run"]) == ("INC-20251105-1423-P1-9999", "P1", False)


# -- refusals (the same messages as the role's former asserts) -----------------


@pytest.mark.parametrize(
    ("values", "lookup", "message"),
    [
        ({}, None, "Cannot open incident a new incident without a severity: set incident_severity to P1, P2 or P3"),
        ({"severity": "P4"}, None, "Cannot open incident a new incident without a severity"),
        ({"id": "DRILL-7"}, NOT_FOUND, "Cannot open incident DRILL-7 without a severity: set incident_severity"),
        (
            {"id": "INC-custom-42"},
            SKIPPED,
            "Cannot join incident INC-custom-42: its severity is unknown (no ticket found and the id does not "
            "carry it); pass incident_severity (P1, P2 or P3)",
        ),
        (
            {"id": "INC-custom-42", "severity": "P2"},
            SKIPPED,
            "Cannot join incident INC-custom-42: its declared start is unknown (no ticket to read it from and the "
            "id does not carry it); pass incident_declared_start like 2026-11-27T14:23:00Z",
        ),
        (
            {"severity": "P1", "declared_start": "2025-11-05T14:23:00"},
            None,
            "The declared start 2025-11-05T14:23:00 (from incident_declared_start) is not a timezone-aware ISO 8601 "
            "time: give incident_declared_start with seconds and an offset or Z, like 2026-11-27T14:23:00Z or "
            "2026-11-27T15:23:00+01:00",
        ),
        ({"severity": "P1", "declared_start": "2025-11-05T14:23Z"}, None, "is not a timezone-aware ISO 8601 time"),
        ({"severity": "P1", "declared_start": "2025-13-45T14:23:00Z"}, None, "is not a timezone-aware ISO 8601 time"),
        (
            {"id": "X-1"},
            found({"severity": "P2", "created_at": "yesterday"}),
            "The declared start yesterday (from the ticket) is not a timezone-aware ISO 8601 time",
        ),
        (
            {"severity": "P1", "declared_start": "2999-01-01T00:00:00Z"},
            None,
            "The declared start 2999-01-01T00:00:00Z (from incident_declared_start) is ",
        ),
        (
            {"severity": "P1", "declared_start": "2026-11-27T14:30:05Z"},
            None,
            "The declared start 2026-11-27T14:30:05Z (from incident_declared_start) is 5 s in the future (controller "
            "clock 2026-11-27T14:30:00Z); an incident cannot start after it is declared: check the time and its UTC "
            "offset",
        ),
        ({"severity": "P1", "declared_start": "2026-11-27T15:31:00+01:00"}, None, "is 60 s in the future"),
    ],
)
def test_refusals(values, lookup, message):
    with pytest.raises(IncidentContextError) as err:
        ic.incident_context(inputs(**values), lookup, NOW, "abcd")
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("P1", None, NOW, "abcd"), "the incident inputs must be a mapping with the keys id, severity, title"),
        (({"severity": "P1", "sevirity": "P2"}, None, NOW, "abcd"), "unknown incident input keys sevirity; accepted keys: id,"),
        (({"severity": "P1"}, "found", NOW, "abcd"), "the ticket lookup must be the registered result of akig.runbooks.incident_ticket"),
        (({"severity": "P1"}, {"found": True, "ticket": "TCK-1"}, NOW, "abcd"), "the ticket lookup's ticket must be a mapping, got str"),
        (({"severity": "P1"}, None, "2026-11-27T14:30:00", "abcd"), "now '2026-11-27T14:30:00' has no UTC offset"),
        (({"severity": "P1"}, None, None, "abcd"), "now must be a timezone-aware ISO 8601 like 2026-11-27T14:23:00Z"),
        (({"severity": "P1"}, None, NOW, None), "opening a new incident needs its id suffix as 4 lowercase hex digits like 3f9a, got None"),
        (({"severity": "P1"}, None, NOW, "3F9A"), "needs its id suffix as 4 lowercase hex digits like 3f9a, got '3F9A'"),
        (({"severity": "P1"}, None, NOW, 1234), "got 1234; the role passes '%04x' | format(65536 | random)"),
    ],
)
def test_bad_input_says_what_is_accepted(args, message):
    with pytest.raises(IncidentContextError) as err:
        ic.incident_context(*args)
    assert message in str(err.value)


def test_joining_needs_no_suffix():
    assert ic.incident_context(inputs(id="INC-20251105-1423-P2-abcd"), None, NOW)["id"] == "INC-20251105-1423-P2-abcd"


# -- properties -----------------------------------------------------------------


@given(
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2026, 11, 27, 14, 29),
                       timezones=st.integers(-12 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))),
    severity=st.sampled_from(ic.SEVERITIES),
    suffix=st.integers(0, 0xFFFF).map(lambda n: "%04x" % n),
)
def test_prop_a_new_id_carries_its_severity_and_start_to_the_minute(start, severity, suffix):
    text = start.replace(microsecond=0).isoformat()
    opened = ic.incident_context(inputs(severity=severity, declared_start=text), None, NOW, suffix)
    assert ic.ID_RE.match(opened["id"]) and opened["id"].endswith("-" + suffix)
    # joined later by its id alone, with no ticket: same severity, same start to the minute
    joined = ic.incident_context(inputs(id=opened["id"]), SKIPPED, NOW)
    assert joined["severity"] == severity
    assert joined["start_utc"] == opened["start_utc"][:17] + "00Z"
    assert (joined["joining"], joined["first_run"], joined["id"]) == (True, False, opened["id"])
