# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit and property tests for plugins/module_utils/sla.py.

Needs ``/work/main/.collections`` (the directory holding
``ansible_collections/akig/runbooks``) on ``sys.path``.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils import http_health, sla
from ansible_collections.akig.runbooks.plugins.module_utils.sla import SlaError
from hypothesis import example, given, settings
from hypothesis import strategies as st

UTC = timezone(timedelta(0))
T0 = "2026-11-27T10:00:00Z"
T0_DT = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
SEVERITIES = ("P1", "P2", "P3")
BUDGETS = {
    ("P1", "respond"): 300,
    ("P1", "resolve"): 1800,
    ("P2", "respond"): 900,
    ("P2", "resolve"): 4 * 3600,
    ("P3", "respond"): 3600,
    ("P3", "resolve"): 24 * 3600,
}
NAIVE_TEXT = "timezone-aware ISO 8601 like 2026-11-27T14:23:00Z"
DURATION_TEXT = (
    "expected seconds as a number >= 0 or a string like 90s, 5m, 4h, 1d or 1h30m"
)
EMPTY_TEXT = (
    "incident_metrics needs at least one incident record; "
    "for a clean period report uptime 1.0 directly"
)

PROPS = settings(max_examples=200, deadline=None, database=None)

# -- strategies -------------------------------------------------------------

offsets = st.integers(min_value=-12 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware_datetimes = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=offsets,
)
elapsed_seconds = st.integers(min_value=0, max_value=10 * 86400)
elapsed_deltas = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10))
severities = st.sampled_from(SEVERITIES)
kinds = st.sampled_from(("respond", "resolve"))


def at(seconds: float, base: datetime = T0_DT) -> str:
    return sla.format_datetime(base + timedelta(seconds=seconds))


# -- default policy -----------------------------------------------------------


def test_default_policy_is_frozen():
    with pytest.raises(TypeError):
        sla.DEFAULT_POLICY["severities"] = {}
    with pytest.raises(TypeError):
        sla.DEFAULT_POLICY["severities"]["P1"]["resolve_s"] = 1
    assert isinstance(sla.DEFAULT_POLICY["tiers"], tuple)


def test_default_policy_matches_runbook_document():
    policy = sla.merge_policy()
    assert {
        (sev, kind): policy["severities"][sev][f"{kind}_s"]
        for sev in SEVERITIES
        for kind in ("respond", "resolve")
    } == BUDGETS
    assert [(t["name"], t["after_s"]) for t in policy["tiers"]] == [
        ("tier1", 0),
        ("tier2", 300),
        ("tier3", 900),
    ]
    assert policy["error_rate"] == {"threshold": 0.10, "window_s": 300}
    assert policy["targets"] == {"uptime": 0.999, "mttr_s": 900, "mttf_s": 720 * 3600}


def test_merge_policy_deep_merges_and_copies():
    override = {
        "severities": {"P1": {"resolve_s": "20m"}},
        "targets": {"uptime": "99.5%"},
    }
    merged = sla.merge_policy(override)
    assert merged["severities"]["P1"] == {"respond_s": 300, "resolve_s": "20m"}
    assert merged["severities"]["P2"]["resolve_s"] == 14400
    assert merged["targets"]["mttr_s"] == 900
    merged["severities"]["P1"]["resolve_s"] = 1
    merged["tiers"].append({})
    assert override == {
        "severities": {"P1": {"resolve_s": "20m"}},
        "targets": {"uptime": "99.5%"},
    }
    assert sla.merge_policy()["severities"]["P1"]["resolve_s"] == 1800
    assert len(sla.merge_policy()["tiers"]) == 3


def test_merge_policy_replaces_lists():
    tiers = [{"name": "only", "after_s": 0, "contacts": {"email": ["a@akig.com"]}}]
    assert sla.merge_policy({"tiers": tiers})["tiers"] == tiers


def test_merge_policy_can_add_a_severity():
    policy = {"severities": {"P4": {"respond_s": "1d", "resolve_s": "7d"}}}
    assert sla.sla_deadline(T0, "P4", policy=policy) == "2026-12-04T10:00:00Z"
    assert sla.sla_deadline(T0, "P1", policy=policy) == "2026-11-27T10:30:00Z"


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (
            "P1=20m",
            "policy must be a mapping that overrides parts of the default policy",
        ),
        (["severities"], "policy must be a mapping"),
        (
            {"severites": {}},
            "unknown policy key 'severites'; accepted keys: severities, ",
        ),
        (
            {"error_rate": {"window": "5m"}},
            "unknown policy key error_rate.window; accepted keys: threshold, window_s",
        ),
        (
            {"severities": {"P1": {"resolve": "20m"}}},
            "unknown policy key severities.P1.resolve; accepted keys: respond_s, resolve_s",
        ),
        (
            {"targets": {"mttr": 1}},
            "unknown policy key targets.mttr; accepted keys: uptime, mttr_s, mttf_s",
        ),
    ],
)
def test_merge_policy_rejects_bad_overrides(policy, message):
    with pytest.raises(SlaError, match=None) as err:
        sla.merge_policy(policy)
    assert message in str(err.value)


# -- datetimes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-27T14:23:00Z", datetime(2026, 11, 27, 14, 23, tzinfo=UTC)),
        ("2026-11-27T14:23:00z", datetime(2026, 11, 27, 14, 23, tzinfo=UTC)),
        ("2026-11-27T15:23:00+01:00", datetime(2026, 11, 27, 14, 23, tzinfo=UTC)),
        (
            "2026-11-27T09:23:00.250-05:00",
            datetime(2026, 11, 27, 14, 23, 0, 250000, tzinfo=UTC),
        ),
        (" 2026-11-27 14:23:00+00:00 ", datetime(2026, 11, 27, 14, 23, tzinfo=UTC)),
        (
            datetime(2026, 11, 27, 16, 23, tzinfo=timezone(timedelta(hours=2))),
            datetime(2026, 11, 27, 14, 23, tzinfo=UTC),
        ),
    ],
)
def test_parse_datetime_accepts_aware_values(value, expected):
    parsed = sla.parse_datetime(value)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (datetime(2026, 11, 27, 14, 23), "start must be a " + NAIVE_TEXT),
        ("2026-11-27T14:23:00", "has no UTC offset; expected a " + NAIVE_TEXT),
        ("2026-11-27", "has no UTC offset"),
        ("yesterday", "start 'yesterday' is not a " + NAIVE_TEXT),
        ("", "is not a " + NAIVE_TEXT),
        (
            1764253380,
            "start must be a " + NAIVE_TEXT + " string or an aware datetime, got int",
        ),
        (None, "got NoneType"),
    ],
)
def test_parse_datetime_rejects(value, message):
    with pytest.raises(SlaError) as err:
        sla.parse_datetime(value, "start")
    assert message in str(err.value)


def test_naive_error_points_at_ansible_now():
    with pytest.raises(SlaError, match=r"now\(utc=true, fmt='%Y-%m-%dT%H:%M:%SZ'\)"):
        sla.sla_status(T0, "P1", datetime(2026, 11, 27, 10, 5))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (T0_DT, "2026-11-27T10:00:00Z"),
        (T0_DT.astimezone(timezone(timedelta(hours=-3))), "2026-11-27T10:00:00Z"),
        (T0_DT + timedelta(microseconds=5), "2026-11-27T10:00:00.000005Z"),
    ],
)
def test_format_datetime(value, expected):
    assert sla.format_datetime(value) == expected


# -- durations ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0.0),
        (90, 90.0),
        (2.5, 2.5),
        ("90", 90.0),
        ("90.5", 90.5),
        ("90s", 90.0),
        ("5m", 300.0),
        ("4h", 14400.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1d2h3m4s", 93784.0),
        ("1.5h", 5400.0),
        (" 5M ", 300.0),
        ("0s", 0.0),
        (timedelta(minutes=5), 300.0),
    ],
)
def test_duration_seconds(value, expected):
    result = sla.duration_seconds(value)
    assert result == expected
    assert isinstance(result, float)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "duration -1 must not be negative; " + DURATION_TEXT),
        (-0.5, "must not be negative"),
        ("-5m", "duration '-5m' must not be negative; " + DURATION_TEXT),
        (timedelta(seconds=-1), "must not be negative"),
        ("5 parsecs", "duration '5 parsecs' is not a duration; " + DURATION_TEXT),
        ("5 m", "is not a duration"),
        ("m", "is not a duration"),
        ("", "is not a duration"),
        ("1w", "is not a duration"),
        ("30m1h", "must list units largest first and each once"),
        ("5m5m", "must list units largest first and each once"),
        (float("nan"), "is not a finite number"),
        (float("inf"), "is not a finite number"),
        (True, "must not be a boolean"),
        (None, "must be a number or a duration string, got NoneType"),
        ([5], "got list"),
    ],
)
def test_duration_seconds_rejects(value, message):
    with pytest.raises(SlaError) as err:
        sla.duration_seconds(value)
    assert message in str(err.value)


# -- deadlines, remaining, status ---------------------------------------------


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("kind", ["respond", "resolve"])
def test_sla_deadline(severity, kind):
    expected = at(BUDGETS[(severity, kind)])
    assert sla.sla_deadline(T0, severity, kind) == expected
    assert sla.severity_budget(severity, kind) == BUDGETS[(severity, kind)]


def test_sla_deadline_defaults_to_resolve_and_normalises_to_utc():
    assert sla.sla_deadline("2026-11-27T11:00:00+01:00", "P1") == "2026-11-27T10:30:00Z"
    assert sla.sla_deadline(T0, "p2") == "2026-11-27T14:00:00Z"


def test_sla_deadline_policy_override_with_duration_string():
    policy = {"severities": {"P1": {"resolve_s": "1h30m"}}}
    assert sla.sla_deadline(T0, "P1", policy=policy) == "2026-11-27T11:30:00Z"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: sla.sla_deadline(T0, "P4"),
            "unknown severity 'P4'; expected one of P1, P2, P3",
        ),
        (
            lambda: sla.sla_deadline(T0, 1),
            "severity must be a string, one of P1, P2, P3; got 1",
        ),
        (
            lambda: sla.sla_deadline(T0, "P1", "ack"),
            "kind must be 'respond' or 'resolve', got 'ack'",
        ),
        (
            lambda: sla.sla_deadline(
                T0, "P1", policy={"severities": {"P1": {"resolve_s": "5 parsecs"}}}
            ),
            "policy.severities.P1.resolve_s '5 parsecs' is not a duration",
        ),
        (
            lambda: sla.sla_deadline(
                T0, "P1", policy={"severities": {"P1": {"resolve_s": 0}}}
            ),
            "policy.severities.P1.resolve_s 0 must be greater than zero",
        ),
        (
            lambda: sla.sla_deadline(
                T0, "P1", policy={"severities": {"P1": {"resolve_s": 1.5}}}
            ),
            "must be a whole number of seconds",
        ),
        (
            lambda: sla.sla_deadline(T0, "P1", policy={"severities": {"P1": "30m"}}),
            "policy.severities.P1 must be a mapping with respond_s and resolve_s",
        ),
        (
            lambda: sla.sla_deadline(T0, "P1", policy={"severities": []}),
            "policy.severities must be a non-empty mapping",
        ),
        (
            lambda: sla.sla_remaining(T0, "P1", "2026-11-27T09:59:59Z"),
            "now (2026-11-27T09:59:59Z) is before start (2026-11-27T10:00:00Z)",
        ),
        (lambda: sla.sla_remaining(T0, "P1", "2026-11-27T10:05:00"), NAIVE_TEXT),
    ],
)
def test_sla_bad_input(call, message):
    with pytest.raises(SlaError) as err:
        call()
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("now", "kind", "expected"),
    [
        (T0, "resolve", 1800),
        (at(720), "resolve", 1080),
        (at(720), "respond", -420),
        (at(1800), "resolve", 0),
        (at(1800.999), "resolve", 0),
        (at(1801), "resolve", -1),
    ],
)
def test_sla_remaining(now, kind, expected):
    assert sla.sla_remaining(T0, "P1", now, kind) == expected


@pytest.mark.parametrize(
    ("elapsed", "state"),
    [
        (0, "ok"),
        (1439, "ok"),
        (1439.999, "ok"),
        (1440, "at_risk"),  # exactly 80 % of 30 min
        (1799, "at_risk"),
        (1800, "breached"),  # resolve < 30 min: reaching the deadline is a miss
        (86400, "breached"),
    ],
)
def test_sla_status_state_p1(elapsed, state):
    assert sla.sla_status(T0, "P1", at(elapsed))["state"] == state


@pytest.mark.parametrize("severity", SEVERITIES)
def test_sla_status_shape(severity):
    respond = BUDGETS[(severity, "respond")]
    resolve = BUDGETS[(severity, "resolve")]
    status = sla.sla_status(T0, severity, at(respond))
    assert status == {
        "severity": severity,
        "start": T0,
        "now": at(respond),
        "elapsed_s": respond,
        "respond": {
            "budget_s": respond,
            "deadline": at(respond),
            "remaining_s": 0,
            "used_ratio": 1.0,
            "breached": True,
        },
        "resolve": {
            "budget_s": resolve,
            "deadline": at(resolve),
            "remaining_s": resolve - respond,
            "used_ratio": respond / resolve,
            "breached": False,
        },
        "state": "ok",
    }


def test_sla_status_at_risk_ratio_override():
    policy = {"at_risk_ratio": "50%"}
    assert sla.sla_status(T0, "P1", at(899), policy)["state"] == "ok"
    assert sla.sla_status(T0, "P1", at(900), policy)["state"] == "at_risk"
    with pytest.raises(SlaError, match="policy.at_risk_ratio 1.5 is out of range"):
        sla.sla_status(T0, "P1", T0, {"at_risk_ratio": 1.5})


def test_sla_status_accepts_aware_datetimes():
    status = sla.sla_status(
        T0_DT, "P2", T0_DT.astimezone(timezone(timedelta(hours=9))) + timedelta(hours=1)
    )
    assert status["elapsed_s"] == 3600
    assert status["now"] == "2026-11-27T11:00:00Z"


# -- escalation ---------------------------------------------------------------

TIER1 = ["#akig-incidents", "on-call-engineer"]
TIER2 = TIER1 + ["manager@akig.com", "cto@akig.com"]
TIER3 = TIER2 + ["ceo@akig.com"]


@pytest.mark.parametrize(
    ("elapsed", "tier", "level", "contacts"),
    [
        (0, "tier1", 1, TIER1),
        (299, "tier1", 1, TIER1),
        ("4m59s", "tier1", 1, TIER1),
        (299.9, "tier1", 1, TIER1),
        (300, "tier2", 2, TIER2),
        ("5m", "tier2", 2, TIER2),
        (899, "tier2", 2, TIER2),
        ("15m", "tier3", 3, TIER3),
        ("1d", "tier3", 3, TIER3),
    ],
)
def test_escalation_tier(elapsed, tier, level, contacts):
    result = sla.escalation_tier(elapsed)
    assert result["tier"] == tier
    assert result["level"] == level
    assert result["contacts"] == contacts
    assert result["data_breach"] is False
    assert "legal@akig.com" not in result["contacts"]


def test_escalation_tier_channels_and_next():
    result = sla.escalation_tier("7m")
    assert result["channels"] == {
        "slack": ["#akig-incidents"],
        "sms": ["on-call-engineer"],
        "email": ["manager@akig.com", "cto@akig.com"],
    }
    assert result["tiers_due"] == ["tier1", "tier2"]
    assert result["next_tier"] == "tier3"
    assert result["next_in_s"] == 480.0
    last = sla.escalation_tier(3600)
    assert last["next_tier"] is None
    assert last["next_in_s"] is None


@pytest.mark.parametrize(
    ("elapsed", "tiers_due", "contacts"),
    [
        (0, ["tier1", "legal"], TIER1 + ["legal@akig.com"]),
        ("5m", ["tier1", "legal", "tier2"], TIER1 + ["legal@akig.com"] + TIER2[2:]),
        (
            "2h",
            ["tier1", "legal", "tier2", "tier3"],
            TIER1 + ["legal@akig.com"] + TIER3[2:],
        ),
    ],
)
def test_escalation_data_breach_adds_legal_regardless_of_time(
    elapsed, tiers_due, contacts
):
    # legal is due from 0, so it is listed right after tier1 and later tiers append
    result = sla.escalation_tier(elapsed, data_breach=True)
    assert result["tiers_due"] == tiers_due
    assert result["contacts"] == contacts
    assert "legal@akig.com" in result["channels"]["email"]
    assert result["data_breach"] is True


def test_escalation_custom_tiers_and_deduplication():
    policy = {
        "tiers": [
            {
                "name": "page",
                "after_s": "1m",
                "contacts": {"sms": "oncall", "email": ["ops@akig.com"]},
            },
            {
                "name": "mgmt",
                "after_s": "10m",
                "contacts": {"email": ["ops@akig.com", "cto@akig.com"]},
            },
        ],
        "data_breach": {
            "name": "dpo",
            "contacts": {"email": ["cto@akig.com", "dpo@akig.com"]},
        },
    }
    early = sla.escalation_tier(30, policy=policy)
    assert (early["tier"], early["level"], early["contacts"], early["next_tier"]) == (
        None,
        0,
        [],
        "page",
    )
    breach = sla.escalation_tier(30, data_breach=True, policy=policy)
    assert (breach["tier"], breach["contacts"], breach["tiers_due"]) == (
        None,
        ["cto@akig.com", "dpo@akig.com"],
        ["dpo"],
    )
    late = sla.escalation_tier("10m", data_breach=True, policy=policy)
    assert late["contacts"] == [
        "cto@akig.com",
        "dpo@akig.com",
        "oncall",
        "ops@akig.com",
    ]
    assert late["channels"] == {
        "email": ["cto@akig.com", "dpo@akig.com", "ops@akig.com"],
        "sms": ["oncall"],
    }
    assert late["tiers_due"] == ["dpo", "page", "mgmt"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"elapsed": -1}, "elapsed -1 must not be negative"),
        (
            {"elapsed": "5 parsecs"},
            "elapsed '5 parsecs' is not a duration; " + DURATION_TEXT,
        ),
        (
            {"elapsed": 0, "data_breach": "yes"},
            "data_breach must be a boolean (true/false), got 'yes'",
        ),
        (
            {"elapsed": 0, "policy": {"tiers": []}},
            "policy.tiers must be a non-empty list",
        ),
        (
            {
                "elapsed": 0,
                "policy": {
                    "tiers": [
                        {"name": "a", "after_s": 60},
                        {"name": "b", "after_s": 60},
                    ]
                },
            },
            "policy.tiers[1].after_s (60) must be greater than the previous tier's (60)",
        ),
        (
            {"elapsed": 0, "policy": {"tiers": [{"name": "a", "after": "5m"}]}},
            "unknown key policy.tiers[0].after; accepted keys: name, after_s, contacts",
        ),
        (
            {"elapsed": 0, "policy": {"tiers": [{"after_s": 0}]}},
            "policy.tiers[0] must be a mapping with a name",
        ),
        (
            {
                "elapsed": 0,
                "policy": {"tiers": [{"name": "a", "contacts": ["x@akig.com"]}]},
            },
            "policy.tiers[0].contacts must be a mapping of channel -> list of targets",
        ),
        (
            {
                "elapsed": 0,
                "policy": {"tiers": [{"name": "a", "contacts": {"email": [1]}}]},
            },
            "policy.tiers[0].contacts.email must be a list of strings",
        ),
    ],
)
def test_escalation_bad_input(kwargs, message):
    with pytest.raises(SlaError) as err:
        sla.escalation_tier(**kwargs)
    assert message in str(err.value)


# -- error rate ---------------------------------------------------------------

NOW = "2026-11-27T10:05:00Z"


def sample(seconds_before_now, **kwargs):
    return {"ts": at(300 - seconds_before_now), **kwargs}


def test_error_rate_empty_window():
    assert sla.error_rate_breach([], NOW) == {
        "rate": 0.0,
        "errors": 0,
        "total": 0,
        "ignored": 0,
        "window_s": 300.0,
        "window_start": T0,
        "now": NOW,
        "threshold": 0.1,
        "breached": False,
    }


@pytest.mark.parametrize(
    ("errors", "total", "breached"),
    [
        (0, 10, False),
        (1, 10, False),
        (2, 20, False),
        (2, 19, True),
        (11, 100, True),
        (3, 3, True),
    ],
)
def test_error_rate_strictly_more_than_threshold(errors, total, breached):
    samples = [sample(i, ok=i >= errors) for i in range(total)]
    result = sla.error_rate_breach(samples, NOW)
    assert (result["errors"], result["total"], result["breached"]) == (
        errors,
        total,
        breached,
    )
    assert result["rate"] == errors / total


def test_error_rate_window_bounds_and_classification():
    samples = [
        sample(
            300, status=500
        ),  # exactly window start: excluded, window is (now-5m, now]
        sample(299, status=500),
        sample(200, status=0),
        sample(150, status="503"),
        sample(100, status=404),
        sample(50, status=200, ok=False),  # ok wins over status
        sample(0, ok=True),  # exactly now: included
        sample(-1, status=500),  # after now: ignored
        sample(900, ok=False),
    ]
    result = sla.error_rate_breach(samples, NOW)
    assert (result["errors"], result["total"], result["ignored"]) == (4, 6, 3)
    assert result["breached"] is True


def test_error_rate_threshold_and_window_arguments():
    samples = [sample(400, ok=False), sample(10, ok=False)] + [sample(5, ok=True)] * 18
    assert sla.error_rate_breach(samples, NOW)["rate"] == 1 / 19
    wide = sla.error_rate_breach(samples, NOW, threshold="10%", window="10m")
    assert (wide["errors"], wide["total"], wide["breached"], wide["window_s"]) == (
        2,
        20,
        False,
        600.0,
    )
    assert (
        sla.error_rate_breach(samples, NOW, threshold=0.05, window=600)["breached"]
        is True
    )
    policy = {"error_rate": {"threshold": 0.01, "window_s": "1m"}}
    assert sla.error_rate_breach(samples, NOW, policy=policy)["breached"] is True


@pytest.mark.parametrize(
    ("samples", "kwargs", "message"),
    [
        (
            "oops",
            {},
            "samples must be a list of mappings {ts, ok: bool} or {ts, status: HTTP code}, got str",
        ),
        ({"ts": NOW}, {}, "samples must be a list"),
        (
            [{"ok": True}],
            {},
            "samples[0] must be a mapping with ts plus ok (bool) or status (HTTP code)",
        ),
        ([{"ts": NOW}], {}, "samples[0] has neither ok nor status"),
        ([{"ts": NOW, "ok": "yes"}], {}, "samples[0].ok must be a boolean, got 'yes'"),
        (
            [{"ts": NOW, "status": "bad"}],
            {},
            "samples[0].status must be an HTTP status code",
        ),
        (
            [{"ts": "2026-11-27T10:04:00", "ok": True}],
            {},
            "samples[0].ts '2026-11-27T10:04:00' has no UTC offset",
        ),
        (
            [],
            {"threshold": 2},
            "threshold 2 is out of range; expected a number between 0 and 1 (0.1)",
        ),
        ([], {"threshold": "lots"}, "threshold 'lots' is not a ratio"),
        ([], {"window": 0}, "window 0 must be greater than zero"),
        ([], {"window": "-5m"}, "window '-5m' must not be negative"),
    ],
)
def test_error_rate_bad_input(samples, kwargs, message):
    with pytest.raises(SlaError) as err:
        sla.error_rate_breach(samples, NOW, **kwargs)
    assert message in str(err.value)


# -- the error-rate decision (one function, exact; shared with http_health) ------


@pytest.mark.parametrize(
    ("errors", "total", "threshold", "breached"),
    [
        # the runbook's "Taux erreur > 10%": equal does not breach, however it is written
        (1, 10, 0.1, False),
        (1, 10, "10%", False),
        (1, 10, "0.1", False),
        (10000, 100000, 0.10, False),
        (10001, 100001, 0.10, True),  # 10.0009 %: http_health used to round it to 0.1 and miss it
        # the threshold is the decimal it is written as, not its binary value (which is below 0.3)
        (3, 10, 0.3, False),
        (7, 10, 0.7, False),
        (3, 10, "30 %", False),
        # 1/3 as a float reads 0.3333333333333333, less than 3/9: a breach, though the float
        # rate 3/9 prints the same digits (the case that split rate and decision before)
        (3, 9, 1 / 3, True),
        (0, 0, 0.0, False),  # no request, no breach
        (0, 5, 0.0, False),
        (1, 5, 0.0, True),
        (5, 5, 1.0, False),  # nothing is more than 100 %
        (5, 5, 1, False),
    ],
)
def test_error_rate_exceeds_boundary(errors, total, threshold, breached):
    assert sla.error_rate_exceeds(errors, total, threshold) is breached


@pytest.mark.parametrize(
    ("errors", "total", "threshold", "message"),
    [
        (3, 2, 0.1, "errors (3) cannot exceed total (2)"),
        (-1, 2, 0.1, "errors must be a whole number >= 0, got -1"),
        (1, 2.0, 0.1, "total must be a whole number >= 0, got 2.0"),
        (True, 2, 0.1, "errors must be a whole number >= 0, got True"),
        (1, 2, 1.5, "threshold 1.5 is out of range; expected a number between 0 and 1 (0.1)"),
        (1, 2, "ten", "threshold 'ten' is not a ratio"),
        (1, 2, float("nan"), "threshold nan is not a ratio"),
        (1, 2, None, "threshold must be a number, got NoneType"),
        (1, 2, True, "threshold must not be a boolean"),
    ],
)
def test_error_rate_exceeds_bad_input(errors, total, threshold, message):
    with pytest.raises(SlaError) as err:
        sla.error_rate_exceeds(errors, total, threshold)
    assert message in str(err.value)


def test_error_rate_threshold_comes_from_the_policy():
    assert sla.error_rate_threshold() == 0.10
    assert sla.error_rate_threshold({"error_rate": {"threshold": "5%"}}) == 0.05
    with pytest.raises(SlaError, match="policy.error_rate.threshold 7 is out of range"):
        sla.error_rate_threshold({"error_rate": {"threshold": 7}})


def _health_verdict(errors: int, total: int, threshold=None) -> dict:
    """http_health's top-level result for one endpoint that failed ``errors`` of ``total`` requests."""
    endpoint = http_health.Endpoint(url="http://127.0.0.1:9/api/health", name="api")
    taken = [http_health.Sample(ok=False, status=503, latency_ms=1.0)] * errors + [
        http_health.Sample(ok=True, status=200, latency_ms=1.0)
    ] * (total - errors)
    return http_health.aggregate([http_health.summarize_endpoint(endpoint, taken)], threshold)


@pytest.mark.parametrize(
    ("errors", "total", "breached"), [(10001, 100001, True), (10000, 100000, False)]
)
def test_http_health_and_error_rate_breach_agree_at_the_boundary(errors, total, breached):
    samples = [{"ts": NOW, "ok": index >= errors} for index in range(total)]
    filter_result = sla.error_rate_breach(samples, NOW)
    module_result = _health_verdict(errors, total)
    assert (filter_result["errors"], filter_result["total"]) == (errors, total)
    assert (module_result["errors"], module_result["requests"]) == (errors, total)
    # both shown as 10 % (the module rounds its display to 4 places) ...
    assert module_result["error_rate"] == 0.1
    # ... and both decide the same way, from the policy's threshold
    assert filter_result["breached"] is module_result["breached"] is breached


@PROPS
@given(
    pair=st.integers(0, 400).flatmap(
        lambda total: st.tuples(st.integers(0, total), st.just(total))
    ),
    # the module's option is a float: None (the policy's), any float, and whole percents, where
    # errors/total often lands exactly on the threshold
    threshold=st.one_of(
        st.none(), st.floats(0, 1), st.integers(0, 100).map(lambda pct: pct / 100)
    ),
)
def test_prop_http_health_and_error_rate_breach_agree(pair, threshold):
    errors, total = pair
    samples = [{"ts": NOW, "ok": index >= errors} for index in range(total)]
    filter_result = sla.error_rate_breach(samples, NOW, threshold=threshold)
    assert _health_verdict(errors, total, threshold)["breached"] is filter_result["breached"]


# -- incident metrics ---------------------------------------------------------

PERIOD = ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")
MONTH_S = 30 * 86400


def incident(ident, severity, start, minutes, key="end"):
    begin = sla.parse_datetime(start)
    return {
        "id": ident,
        "severity": severity,
        "start": start,
        key: sla.format_datetime(begin + timedelta(minutes=minutes)),
    }


def test_incident_metrics_basic():
    incidents = [
        incident("INC-1", "P1", "2026-11-03T09:00:00Z", 12),
        incident("INC-2", "P2", "2026-11-10T14:00:00Z", 90, key="resolved_at"),
    ]
    result = sla.incident_metrics(incidents, *PERIOD)
    assert result["count"] == 2
    assert result["ids"] == ["INC-1", "INC-2"]
    assert result["mttr_s"] == (720 + 5400) / 2
    assert result["downtime_s"] == 6120
    assert result["uptime"] == pytest.approx(1 - 6120 / MONTH_S)
    assert result["mttf_s"] == (MONTH_S - 6120) / 2
    assert result["per_severity"]["P1"] == {
        "count": 1,
        "mean_resolution_s": 720.0,
        "max_resolution_s": 720.0,
        "target_s": 1800,
        "within_target": 1,
        "met": True,
    }
    assert result["per_severity"]["P3"]["count"] == 0
    assert result["per_severity"]["P3"]["mean_resolution_s"] is None
    assert result["per_severity"]["P3"]["met"] is True
    assert result["targets_met"] == {"uptime": False, "mttr": False, "mttf": False}


def test_incident_metrics_overlap_counted_once_and_clipped():
    incidents = [
        incident("A", "P1", "2026-11-05T10:00:00Z", 60),
        incident(
            "B", "P2", "2026-11-05T10:30:00Z", 60
        ),  # overlaps A: union 10:00-11:30
        incident("C", "P3", "2026-11-05T11:00:00Z", 10),  # inside the union
        incident(
            "D", "P3", "2026-10-31T23:00:00Z", 120
        ),  # straddles period start: 60 min inside
        incident("E", "P1", "2026-10-01T00:00:00Z", 5),  # before the period: ignored
    ]
    result = sla.incident_metrics(incidents, *PERIOD)
    assert result["count"] == 4
    assert result["ignored"] == 1
    assert result["downtime_s"] == 90 * 60 + 60 * 60
    assert result["mttr_s"] == (60 + 60 + 10 + 120) * 60 / 4
    assert result["per_severity"]["P3"]["max_resolution_s"] == 7200.0
    assert result["per_severity"]["P3"]["met"] is True


def test_incident_metrics_targets_met_for_a_good_quarter():
    incidents = [
        incident("A", "P1", "2026-01-10T00:00:00Z", 10),
        incident("B", "P2", "2026-02-10T00:00:00Z", 12),
    ]
    result = sla.incident_metrics(
        incidents, "2026-01-01T00:00:00Z", "2026-04-01T00:00:00Z"
    )
    assert result["targets_met"] == {"uptime": True, "mttr": True, "mttf": True}


def test_incident_metrics_per_severity_target_missed_and_policy_targets():
    incidents = [
        incident("A", "P1", "2026-11-02T00:00:00Z", 30),
        incident("B", "P1", "2026-11-03T00:00:00Z", 5),
    ]
    result = sla.incident_metrics(
        incidents, *PERIOD, policy={"targets": {"mttr_s": "1h", "uptime": "99%"}}
    )
    assert (
        result["per_severity"]["P1"]["within_target"] == 1
    )  # exactly 30 min is not < 30 min
    assert result["per_severity"]["P1"]["met"] is False
    assert result["targets"] == {"uptime": 0.99, "mttr_s": 3600.0, "mttf_s": 2592000.0}
    assert result["targets_met"]["mttr"] is True
    assert result["targets_met"]["uptime"] is True


@pytest.mark.parametrize(
    ("target", "downtime_s", "met"),
    [
        (0.999, 2592, True),
        ("99.9%", 2592, True),
        ("99.9%", 2593, False),
        ("99.9 %", 2592, True),
    ],
)
def test_incident_metrics_uptime_target_boundary(target, downtime_s, met):
    # 99.9 % of 30 days leaves exactly 2592 s of downtime
    record = incident("A", "P2", "2026-11-02T00:00:00Z", downtime_s / 60)
    result = sla.incident_metrics(
        [record], *PERIOD, policy={"targets": {"uptime": target}}
    )
    assert result["targets_met"]["uptime"] is met


def test_incident_metrics_zero_length_incident():
    result = sla.incident_metrics(
        [incident("A", "P3", "2026-11-01T00:00:00Z", 0)], *PERIOD
    )
    assert (
        result["count"],
        result["mttr_s"],
        result["downtime_s"],
        result["uptime"],
    ) == (1, 0.0, 0.0, 1.0)


@pytest.mark.parametrize(
    ("incidents", "period", "message"),
    [
        ([], PERIOD, EMPTY_TEXT),
        ((), PERIOD, EMPTY_TEXT),
        ("INC-1", PERIOD, "incidents must be a list; " + EMPTY_TEXT),
        (
            [incident("A", "P1", "2026-11-03T09:00:00Z", -5)],
            PERIOD,
            "incident 'A' ends (2026-11-03T08:55:00Z) before it starts (2026-11-03T09:00:00Z)",
        ),
        (
            [{"id": "A", "severity": "P1", "start": "2026-11-03T09:00:00Z"}],
            PERIOD,
            "incident 'A' has no end (or resolved_at)",
        ),
        (
            [
                {
                    "id": "A",
                    "start": "2026-11-03T09:00:00Z",
                    "end": "2026-11-03T09:00:00Z",
                }
            ],
            PERIOD,
            "incident 'A' has no severity",
        ),
        (
            [incident("A", "P4", "2026-11-03T09:00:00Z", 5)],
            PERIOD,
            "unknown severity 'P4'; expected one of P1, P2, P3",
        ),
        (
            [
                {
                    "severity": "P1",
                    "start": "2026-11-03T09:00:00",
                    "end": "2026-11-03T09:05:00Z",
                }
            ],
            PERIOD,
            "incident '#0' start '2026-11-03T09:00:00' has no UTC offset",
        ),
        (["INC-1"], PERIOD, "incidents[0] must be a mapping, got str"),
        (
            [incident("A", "P1", "2026-10-03T09:00:00Z", 5)],
            PERIOD,
            "none of the 1 incident records overlap the period 2026-11-01T00:00:00Z .. 2026-12-01T00:00:00Z",
        ),
        (
            [incident("A", "P1", "2026-11-03T09:00:00Z", 5)],
            (PERIOD[1], PERIOD[0]),
            "period_end (2026-11-01T00:00:00Z) must be after period_start (2026-12-01T00:00:00Z)",
        ),
    ],
)
def test_incident_metrics_bad_input(incidents, period, message):
    with pytest.raises(SlaError) as err:
        sla.incident_metrics(incidents, *period)
    assert message in str(err.value)


# -- properties ---------------------------------------------------------------


@PROPS
@given(
    start=aware_datetimes, severity=severities, kind=kinds, budget=st.integers(1, 10**8)
)
def test_prop_deadline_never_precedes_start(start, severity, kind, budget):
    policy = {"severities": {severity: {f"{kind}_s": budget}}}
    deadline = sla.parse_datetime(sla.sla_deadline(start, severity, kind, policy))
    assert deadline >= start
    assert deadline - start == timedelta(seconds=budget)


@PROPS
@given(start=aware_datetimes, elapsed=elapsed_deltas, severity=severities, kind=kinds)
def test_prop_remaining_plus_elapsed_is_budget(start, elapsed, severity, kind):
    now = start + elapsed
    status = sla.sla_status(start, severity, now)
    remaining = sla.sla_remaining(start, severity, now, kind)
    assert remaining == status[kind]["remaining_s"]
    assert (
        remaining + status["elapsed_s"]
        == status[kind]["budget_s"]
        == BUDGETS[(severity, kind)]
    )
    assert status[kind]["breached"] == (remaining <= 0)
    assert status["elapsed_s"] == math.floor(elapsed.total_seconds())


@PROPS
@given(start=aware_datetimes, a=elapsed_deltas, b=elapsed_deltas, severity=severities)
def test_prop_state_is_monotonic(start, a, b, severity):
    order = {"ok": 0, "at_risk": 1, "breached": 2}
    early, late = sorted((a, b))
    first = sla.sla_status(start, severity, start + early)["state"]
    second = sla.sla_status(start, severity, start + late)["state"]
    assert order[first] <= order[second]


@PROPS
@given(a=st.floats(0, 10**7), b=st.floats(0, 10**7), breach=st.booleans())
def test_prop_escalation_is_monotonic(a, b, breach):
    early, late = sorted((a, b))
    first = sla.escalation_tier(early, data_breach=breach)
    second = sla.escalation_tier(late, data_breach=breach)
    assert first["level"] <= second["level"]
    assert set(first["contacts"]) <= set(second["contacts"])
    assert len(second["contacts"]) == len(set(second["contacts"]))
    assert second["contacts"][: len(first["contacts"])] == first["contacts"]
    assert second["tiers_due"][: len(first["tiers_due"])] == first["tiers_due"]
    for channel, targets in first["channels"].items():
        assert second["channels"][channel][: len(targets)] == targets


@PROPS
@given(seconds=elapsed_seconds)
def test_prop_duration_string_round_trip(seconds):
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = (
        "".join(
            f"{n}{u}"
            for n, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s"))
            if n
        )
        or "0s"
    )
    assert sla.duration_seconds(text) == seconds
    assert sla.escalation_tier(text)["level"] == sla.escalation_tier(seconds)["level"]


samples_strategy = st.lists(
    st.fixed_dictionaries(
        {"ts": st.integers(-600, 900)},
        optional={
            "ok": st.booleans(),
            "status": st.sampled_from([0, 200, 302, 404, 500, 503]),
        },
    ).filter(lambda s: "ok" in s or "status" in s),
    max_size=40,
)


@PROPS
@given(
    samples=samples_strategy,
    threshold=st.floats(0, 1),
    window=st.integers(1, 1200),
)
# found on a fresh clone: 3 errors of 9 against 1/3 -- breached, although the float rate prints
# the same digits as the threshold (the decision is exact, the rate is for display)
@example(
    samples=[{"ts": -i, "ok": i >= 3} for i in range(9)], threshold=1 / 3, window=1200
)
def test_prop_error_rate_in_unit_interval(samples, threshold, window):
    data = [{**s, "ts": at(s["ts"])} for s in samples]
    result = sla.error_rate_breach(data, at(300), threshold=threshold, window=window)
    assert 0.0 <= result["rate"] <= 1.0
    assert 0 <= result["errors"] <= result["total"]
    assert result["total"] + result["ignored"] == len(samples)
    # the decision, recomputed independently in integers: errors/total > threshold's decimal text
    numerator, denominator = Decimal(repr(threshold)).as_integer_ratio()
    exact = result["errors"] * denominator > numerator * result["total"]
    assert result["breached"] == (result["total"] > 0 and exact)
    # the float rate, rounded for display, never contradicts the decision (it may equal the threshold)
    if result["breached"]:
        assert result["rate"] >= threshold
    else:
        assert result["total"] == 0 or result["rate"] <= threshold
    if result["total"] == 0:
        assert result["rate"] == 0.0


incidents_strategy = st.lists(
    st.tuples(
        st.sampled_from(SEVERITIES),
        st.integers(-2 * 86400, 9 * 86400),  # start, relative to the period start
        st.integers(0, 3 * 86400),  # duration
    ),
    min_size=1,
    max_size=12,
)


@PROPS
@given(incidents=incidents_strategy, first_start=st.integers(0, 7 * 86400 - 1))
def test_prop_metrics_bounds(incidents, first_start):
    period_start = T0_DT
    period_end = T0_DT + timedelta(days=7)
    records = [
        {
            "id": f"I{i}",
            "severity": sev,
            "start": at(offset, period_start),
            "end": at(offset + duration, period_start),
        }
        for i, (sev, offset, duration) in enumerate(
            [(incidents[0][0], first_start, incidents[0][2]), *incidents[1:]]
        )
    ]
    result = sla.incident_metrics(records, period_start, period_end)
    assert 0.0 <= result["uptime"] <= 1.0
    assert 0.0 <= result["downtime_s"] <= 7 * 86400
    assert result["mttr_s"] >= 0
    assert result["mttf_s"] >= 0
    assert 1 <= result["count"] <= len(records)
    assert sum(v["count"] for v in result["per_severity"].values()) == result["count"]
    clipped = [
        max(0, min(offset + duration, 7 * 86400) - max(offset, 0))
        for _sev, offset, duration in [
            (incidents[0][0], first_start, incidents[0][2]),
            *incidents[1:],
        ]
    ]
    # the union is no longer than the sum and no shorter than the longest piece
    assert max(clipped) <= result["downtime_s"] <= sum(clipped)
