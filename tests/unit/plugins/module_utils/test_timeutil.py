# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""plugins/module_utils/timeutil.py: the one ISO 8601 parser and formatter, and its three users."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils import incident_lock, pg_replication, sla, timeline
from ansible_collections.akig.runbooks.plugins.module_utils.timeutil import format_utc, parse_iso8601, utc_now
from hypothesis import given
from hypothesis import strategies as st

UTC = timezone.utc
T0 = datetime(2026, 11, 27, 14, 23, 5, 412345, tzinfo=UTC)
PLUS2 = timezone(timedelta(hours=2))

aware = st.datetimes(
    min_value=datetime(1971, 1, 2), max_value=datetime(9998, 12, 30),
    timezones=st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
)


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-27T14:23:05Z", datetime(2026, 11, 27, 14, 23, 5, tzinfo=UTC)),
    ("2026-11-27T14:23:05z", datetime(2026, 11, 27, 14, 23, 5, tzinfo=UTC)),
    ("  2026-11-27T14:23:05.412Z ", datetime(2026, 11, 27, 14, 23, 5, 412000, tzinfo=UTC)),
    ("2026-11-27T16:23:05+02:00", datetime(2026, 11, 27, 14, 23, 5, tzinfo=UTC)),
    ("2026-11-27 14:23:05+00:00", datetime(2026, 11, 27, 14, 23, 5, tzinfo=UTC)),
])
def test_parse_accepts_z_and_offsets_and_returns_utc(text: str, expected: datetime) -> None:
    parsed = parse_iso8601(text)
    assert parsed == expected
    assert parsed is not None and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("value", ["", "   ", "yesterday", "2026-13-01T00:00:00Z", "2026-11-27T25:00:00Z", None, 1764253385,
                                   ["2026-11-27T14:23:05Z"]])
def test_parse_gives_none_for_what_is_not_a_timestamp(value: Any) -> None:
    for naive in ("reject", "utc", "keep"):
        assert parse_iso8601(value, naive=naive) is None


@pytest.mark.parametrize(("naive", "expected"), [
    ("reject", None),
    ("utc", datetime(2026, 11, 27, 14, 23, 5, tzinfo=UTC)),
    ("keep", datetime(2026, 11, 27, 14, 23, 5)),
])
def test_naive_values_follow_the_policy(naive: str, expected: Optional[datetime]) -> None:
    assert parse_iso8601("2026-11-27T14:23:05", naive=naive) == expected
    assert parse_iso8601(datetime(2026, 11, 27, 14, 23, 5), naive=naive) == expected
    kept = parse_iso8601("2026-11-27T14:23:05", naive=naive)
    assert kept is None or (kept.tzinfo is None) == (naive == "keep")


def test_aware_datetimes_are_converted_to_utc() -> None:
    assert parse_iso8601(datetime(2026, 11, 27, 16, 23, 5, tzinfo=PLUS2)) == datetime(2026, 11, 27, 14, 23, 5, tzinfo=UTC)


@pytest.mark.parametrize(("timespec", "expected"), [
    ("seconds", "2026-11-27T14:23:05Z"),
    ("milliseconds", "2026-11-27T14:23:05.412Z"),
    ("auto", "2026-11-27T14:23:05.412345Z"),
])
def test_format_cuts_to_the_timespec(timespec: str, expected: str) -> None:
    assert format_utc(T0, timespec) == expected
    assert format_utc(T0.astimezone(PLUS2), timespec) == expected
    assert format_utc(T0.replace(tzinfo=None), timespec) == expected  # naive is UTC


def test_format_auto_omits_zero_microseconds() -> None:
    assert format_utc(T0.replace(microsecond=0), "auto") == "2026-11-27T14:23:05Z"


def test_bad_policy_and_timespec_are_refused() -> None:
    with pytest.raises(ValueError, match="naive must be one of reject, utc, keep"):
        parse_iso8601("2026-11-27T14:23:05Z", naive="local")
    with pytest.raises(ValueError, match="timespec must be one of seconds, milliseconds, auto"):
        format_utc(T0, "minutes")


def test_utc_now_is_aware_utc() -> None:
    before = datetime.now(UTC)
    now = utc_now()
    assert now.utcoffset() == timedelta(0) and before <= now <= datetime.now(UTC)


@given(aware)
def test_format_then_parse_is_the_identity(value: datetime) -> None:
    assert parse_iso8601(format_utc(value, "auto")) == value


@given(aware)
def test_seconds_and_milliseconds_never_round_up(value: datetime) -> None:
    for timespec, step in (("seconds", timedelta(seconds=1)), ("milliseconds", timedelta(milliseconds=1))):
        parsed = parse_iso8601(format_utc(value, timespec))
        assert parsed is not None and parsed <= value < parsed + step


# The modules' own names keep their contracts on top of the shared parser and formatter.


def test_incident_lock_timestamps() -> None:
    assert incident_lock.format_ts(T0) == "2026-11-27T14:23:05Z"
    assert incident_lock.parse_ts("2026-11-27T14:23:05Z") == T0.replace(microsecond=0)
    assert incident_lock.parse_ts("2026-11-27T14:23:05") is None  # a holder record always has an offset
    assert incident_lock.parse_ts(T0) is None  # only text is read from a record


def test_pg_replication_and_timeline_write_milliseconds() -> None:
    assert pg_replication.format_ts(T0) == "2026-11-27T14:23:05.412Z"
    assert timeline.isoformat_utc(T0) == "2026-11-27T14:23:05.412Z"
    assert timeline.parse_timestamp("2026-11-27T14:23:05") == datetime(2026, 11, 27, 14, 23, 5, tzinfo=UTC)
    assert timeline.parse_timestamp("") is None


def test_sla_refuses_with_its_own_messages() -> None:
    assert sla.parse_datetime("2026-11-27T16:23:05+02:00") == datetime(2026, 11, 27, 14, 23, 5, tzinfo=UTC)
    assert sla.format_datetime(T0) == "2026-11-27T14:23:05.412345Z"
    with pytest.raises(sla.SlaError, match="has no UTC offset"):
        sla.parse_datetime("2026-11-27T14:23:05")
    with pytest.raises(sla.SlaError, match="got the naive datetime"):
        sla.parse_datetime(datetime(2026, 11, 27, 14, 23, 5))
    with pytest.raises(sla.SlaError, match="is not a timezone-aware ISO 8601"):
        sla.parse_datetime("soon")
    with pytest.raises(sla.SlaError, match="string or an aware datetime, got int"):
        sla.parse_datetime(5)
