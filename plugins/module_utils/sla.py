# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure SLA, escalation and reliability-metric logic for ``akig.runbooks``.

Everything here is a pure function of its arguments:

* no clock reads -- "now" is always passed in by the caller;
* no module-level mutable state -- :data:`DEFAULT_POLICY` is a deeply frozen
  mapping and every function works on a fresh merged copy;
* no I/O and no imports beyond the standard library.

Invalid input raises :class:`SlaError` (a ``ValueError``) whose message says
what is accepted.  The filter plugins in ``plugins/filter/sla.py`` convert it
to ``AnsibleFilterError``.

Conventions
-----------
* Timestamps: timezone-aware ISO 8601 strings with an offset or ``Z``
  (``2026-11-27T14:23:00Z``, ``2026-11-27T15:23:00+01:00``) or aware
  ``datetime`` objects.  Naive values are rejected.  Output timestamps are
  ISO 8601 in UTC with a ``Z`` suffix.
* Durations: seconds as a non-negative number, or strings like ``90s``,
  ``5m``, ``4h``, ``1d``, ``1h30m`` (units d/h/m/s, largest first, each at
  most once, decimals allowed: ``1.5h``).  A bare numeric string means
  seconds.
* SLA budgets are whole seconds and elapsed time is counted in whole seconds
  (sub-second precision is dropped, i.e. floored), so
  ``remaining_s + elapsed_s == budget_s`` holds exactly.
* A budget is *breached* once ``elapsed >= budget`` (the targets are
  "respond < 5 min", so reaching the deadline is already a miss).
* Ratios (thresholds, targets) are a number in [0, 1] or a percentage
  string, read as the exact decimal they are written as (``0.1`` and
  ``"10%"`` are exactly 1/10).  The error-rate rule ("Taux erreur > 10%")
  is breached only when the rate is strictly greater than the threshold,
  decided exactly by :func:`error_rate_exceeds`, which every caller uses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Any

from ansible_collections.akig.runbooks.plugins.module_utils.timeutil import format_utc, parse_iso8601

__all__ = [
    "DEFAULT_POLICY",
    "SlaError",
    "duration_seconds",
    "error_rate_breach",
    "error_rate_exceeds",
    "error_rate_threshold",
    "escalation_tier",
    "exact_ratio",
    "format_datetime",
    "incident_metrics",
    "merge_policy",
    "parse_datetime",
    "severity_budget",
    "sla_deadline",
    "sla_remaining",
    "sla_status",
]


class SlaError(ValueError):
    """Invalid input to an SLA function; the message says what is accepted."""


# --------------------------------------------------------------------------
# Default policy (AKIG incident runbook document).  Deeply frozen.
# --------------------------------------------------------------------------


def _freeze(obj: Any) -> Any:
    """Return a deeply immutable copy (mappings -> MappingProxyType, lists -> tuples)."""
    if isinstance(obj, Mapping):
        return MappingProxyType({key: _freeze(value) for key, value in obj.items()})
    if isinstance(obj, (list, tuple)):
        return tuple(_freeze(value) for value in obj)
    return obj


def _thaw(obj: Any) -> Any:
    """Return a deep, plain, mutable copy (mappings -> dict, sequences -> list)."""
    if isinstance(obj, Mapping):
        return {key: _thaw(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_thaw(value) for value in obj]
    return obj


DEFAULT_POLICY: Mapping[str, Any] = _freeze(
    {
        # respond/resolve budgets per severity (seconds or duration strings)
        "severities": {
            "P1": {"respond_s": 300, "resolve_s": 1800},
            "P2": {"respond_s": 900, "resolve_s": 14400},
            "P3": {"respond_s": 3600, "resolve_s": 86400},
        },
        # sla_status reports ``at_risk`` once this share of the resolve budget is used
        "at_risk_ratio": 0.8,
        # escalation tiers by elapsed time since the declared incident start;
        # contacts are cumulative: a later tier adds to the earlier ones
        "tiers": [
            {
                "name": "tier1",
                "after_s": 0,
                "contacts": {"slack": ["#akig-incidents"], "sms": ["on-call-engineer"]},
            },
            {
                "name": "tier2",
                "after_s": 300,
                "contacts": {"email": ["manager@akig.com", "cto@akig.com"]},
            },
            {
                "name": "tier3",
                "after_s": 900,
                "contacts": {"email": ["ceo@akig.com"]},
            },
        ],
        # added whenever the incident is flagged a data breach, regardless of time
        "data_breach": {"name": "legal", "contacts": {"email": ["legal@akig.com"]}},
        # error-rate rule: more than ``threshold`` errors within ``window_s``
        "error_rate": {"threshold": 0.10, "window_s": 300},
        # success metrics (per-severity resolution targets are severities.*.resolve_s)
        "targets": {"uptime": 0.999, "mttr_s": 900, "mttf_s": 2592000},
    }
)

_SUB_KEYS = MappingProxyType(
    {
        "error_rate": ("threshold", "window_s"),
        "targets": ("uptime", "mttr_s", "mttf_s"),
        "data_breach": ("name", "contacts"),
    }
)

_SEVERITY_KEYS = ("respond_s", "resolve_s")
_TIER_KEYS = ("name", "after_s", "contacts")
_ISO_EXAMPLE = "timezone-aware ISO 8601 like 2026-11-27T14:23:00Z"
_ANSIBLE_NOW_HINT = "in Ansible use now(utc=true, fmt='%Y-%m-%dT%H:%M:%SZ')"
_DURATION_ACCEPTED = (
    "expected seconds as a number >= 0 or a string like 90s, 5m, 4h, 1d or 1h30m"
)
_UNIT_SECONDS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")
_DURATION_RE = re.compile(r"(?:\d+(?:\.\d+)?[dhms])+")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)([dhms])")


def merge_policy(policy: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Deep-merge ``policy`` over :data:`DEFAULT_POLICY` and return a plain dict.

    Mappings merge recursively; any other value (including lists such as
    ``tiers``) replaces the default wholesale.  ``None`` means "defaults".
    """
    merged = _thaw(DEFAULT_POLICY)
    if policy is None:
        return merged
    if not isinstance(policy, Mapping):
        raise SlaError(
            f"policy must be a mapping that overrides parts of the default policy, "
            f"e.g. {{'severities': {{'P1': {{'resolve_s': '20m'}}}}}}; got {type(policy).__name__}"
        )
    for key in policy:
        if key not in DEFAULT_POLICY:
            raise SlaError(
                f"unknown policy key {key!r}; accepted keys: {', '.join(DEFAULT_POLICY)}"
            )
    for key, allowed in _SUB_KEYS.items():
        sub = policy.get(key)
        if isinstance(sub, Mapping):
            for sub_key in sub:
                if sub_key not in allowed:
                    raise SlaError(
                        f"unknown policy key {key}.{sub_key}; accepted keys: {', '.join(allowed)}"
                    )
    severities = policy.get("severities")
    if isinstance(severities, Mapping):
        for severity, entry in severities.items():
            if isinstance(entry, Mapping):
                for sub_key in entry:
                    if sub_key not in _SEVERITY_KEYS:
                        raise SlaError(
                            f"unknown policy key severities.{severity}.{sub_key}; "
                            f"accepted keys: {', '.join(_SEVERITY_KEYS)}"
                        )
    return _deep_merge(merged, policy)


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = _deep_merge(result[key], value)
        else:
            result[key] = _thaw(value)
    return result


# --------------------------------------------------------------------------
# Parsing helpers
# --------------------------------------------------------------------------


def parse_datetime(value: Any, name: str = "timestamp") -> datetime:
    """Parse an aware ISO 8601 string or aware ``datetime`` into a UTC ``datetime`` (module_utils/timeutil.py)."""
    if not isinstance(value, (datetime, str)):
        raise SlaError(
            f"{name} must be a {_ISO_EXAMPLE} string or an aware datetime, "
            f"got {type(value).__name__} {value!r}"
        )
    parsed = parse_iso8601(value, naive="keep")
    if parsed is None:
        raise SlaError(f"{name} {value!r} is not a {_ISO_EXAMPLE} (offset or Z required)")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        if isinstance(value, datetime):
            raise SlaError(
                f"{name} must be a {_ISO_EXAMPLE} (offset or Z required), got the naive "
                f"datetime {value.isoformat()}; {_ANSIBLE_NOW_HINT}"
            )
        raise SlaError(
            f"{name} {value!r} has no UTC offset; expected a {_ISO_EXAMPLE} "
            f"(offset or Z required); {_ANSIBLE_NOW_HINT}"
        )
    return parsed


def format_datetime(value: datetime) -> str:
    """Format an aware ``datetime`` as ISO 8601 UTC with a ``Z`` suffix (microseconds only when there are any)."""
    return format_utc(value, "auto")


def duration_seconds(value: Any, name: str = "duration") -> float:
    """Convert seconds or a duration string (``90s``, ``5m``, ``1h30m``) into float seconds."""
    if isinstance(value, bool):
        raise SlaError(f"{name} must not be a boolean; {_DURATION_ACCEPTED}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        if seconds < 0:
            raise SlaError(
                f"{name} {value!r} must not be negative; {_DURATION_ACCEPTED}"
            )
        return seconds
    if isinstance(value, (int, float)):
        seconds = float(value)
        if math.isnan(seconds) or math.isinf(seconds):
            raise SlaError(
                f"{name} {value!r} is not a finite number; {_DURATION_ACCEPTED}"
            )
        if seconds < 0:
            raise SlaError(
                f"{name} {value!r} must not be negative; {_DURATION_ACCEPTED}"
            )
        return seconds
    if isinstance(value, str):
        text = value.strip().lower()
        if text.startswith("-"):
            raise SlaError(
                f"{name} {value!r} must not be negative; {_DURATION_ACCEPTED}"
            )
        if _NUMBER_RE.fullmatch(text):
            return float(text)
        if _DURATION_RE.fullmatch(text):
            total = 0.0
            last_rank = -1
            for number, unit in _DURATION_PART_RE.findall(text):
                rank, factor = next(
                    (i, f) for i, (u, f) in enumerate(_UNIT_SECONDS) if u == unit
                )
                if rank <= last_rank:
                    raise SlaError(
                        f"{name} {value!r} must list units largest first and each once "
                        f"(d, h, m, s), e.g. 1h30m; {_DURATION_ACCEPTED}"
                    )
                last_rank = rank
                total += float(number) * factor
            return total
        raise SlaError(f"{name} {value!r} is not a duration; {_DURATION_ACCEPTED}")
    raise SlaError(
        f"{name} must be a number or a duration string, got {type(value).__name__} "
        f"{value!r}; {_DURATION_ACCEPTED}"
    )


def _whole_seconds(value: Any, name: str, positive: bool = True) -> int:
    seconds = duration_seconds(value, name)
    if not seconds.is_integer():
        raise SlaError(f"{name} {value!r} must be a whole number of seconds")
    if positive and seconds <= 0:
        raise SlaError(f"{name} {value!r} must be greater than zero")
    return int(seconds)


_RATIO_ACCEPTED = (
    "expected a number between 0 and 1 (0.1) or a percentage string (10%)"
)


def exact_ratio(value: Any, name: str = "ratio") -> Fraction:
    """A fraction in [0, 1] as the exact rational its decimal text says.

    Accepts a number like ``0.1`` or a percentage string like ``10%``.  A float is
    taken by its decimal text (``repr``, the shortest text that reads back as the
    same float), not by its binary value: ``0.1`` is exactly 1/10 and ``0.3`` exactly
    3/10, the thresholds people write.  Strings are read as decimals (``"10%"`` is
    exactly 1/10).  A ``Fraction`` (or int) is taken as it is.
    """
    if isinstance(value, bool):
        raise SlaError(f"{name} must not be a boolean; {_RATIO_ACCEPTED}")
    if not isinstance(value, (str, float, int, Fraction)):
        raise SlaError(
            f"{name} must be a number, got {type(value).__name__}; {_RATIO_ACCEPTED}"
        )
    try:
        if isinstance(value, str):
            text = value.strip()
            if text.endswith("%"):
                exact = Fraction(Decimal(text[:-1].strip())) / 100
            else:
                exact = Fraction(Decimal(text))
        elif isinstance(value, float):
            exact = Fraction(repr(value))
        else:
            exact = Fraction(value)
    except (ArithmeticError, ValueError):
        raise SlaError(f"{name} {value!r} is not a ratio; {_RATIO_ACCEPTED}") from None
    if not 0 <= exact <= 1:
        raise SlaError(f"{name} {value!r} is out of range; {_RATIO_ACCEPTED}")
    return exact


def _ratio(value: Any, name: str) -> float:
    """A fraction in [0, 1] as a float (see :func:`exact_ratio` for what is accepted)."""
    return float(exact_ratio(value, name))


def _exact(number: float) -> Fraction:
    """The decimal a user meant (0.8 -> 4/5), for exact threshold comparisons."""
    return Fraction(repr(float(number)))


def _elapsed_seconds(start: datetime, now: datetime, what: str = "now") -> int:
    if now < start:
        raise SlaError(
            f"{what} ({format_datetime(now)}) is before start ({format_datetime(start)}); "
            f"{what} must be at or after the incident start"
        )
    delta = now - start
    return delta.days * 86400 + delta.seconds  # floor to whole seconds


# --------------------------------------------------------------------------
# Severity budgets and SLA deadlines
# --------------------------------------------------------------------------


def _severity_key(policy: Mapping[str, Any], severity: Any) -> str:
    severities = policy.get("severities")
    if not isinstance(severities, Mapping) or not severities:
        raise SlaError(
            "policy.severities must be a non-empty mapping like {P1: {respond_s: 300, resolve_s: 1800}}"
        )
    known = ", ".join(str(key) for key in severities)
    if not isinstance(severity, str):
        raise SlaError(f"severity must be a string, one of {known}; got {severity!r}")
    text = severity.strip()
    if text in severities:
        return text
    for key in severities:
        if str(key).lower() == text.lower():
            return key
    raise SlaError(f"unknown severity {severity!r}; expected one of {known}")


def _budget(policy: Mapping[str, Any], key: str, kind: str) -> int:
    if kind not in ("respond", "resolve"):
        raise SlaError(f"kind must be 'respond' or 'resolve', got {kind!r}")
    entry = policy["severities"][key]
    field = f"{kind}_s"
    if not isinstance(entry, Mapping) or entry.get(field) is None:
        raise SlaError(
            f"policy.severities.{key} must be a mapping with respond_s and resolve_s "
            f"(seconds or duration strings like 5m)"
        )
    return _whole_seconds(entry[field], f"policy.severities.{key}.{field}")


def severity_budget(
    severity: str, kind: str = "resolve", policy: Mapping[str, Any] | None = None
) -> int:
    """The respond or resolve budget of ``severity`` in whole seconds."""
    merged = merge_policy(policy)
    return _budget(merged, _severity_key(merged, severity), kind)


def sla_deadline(
    start: Any,
    severity: str,
    kind: str = "resolve",
    policy: Mapping[str, Any] | None = None,
) -> str:
    """ISO 8601 UTC deadline: ``start`` plus the severity's respond/resolve budget."""
    merged = merge_policy(policy)
    start_dt = parse_datetime(start, "start")
    budget = _budget(merged, _severity_key(merged, severity), kind)
    return format_datetime(start_dt + timedelta(seconds=budget))


def sla_remaining(
    start: Any,
    severity: str,
    now: Any,
    kind: str = "resolve",
    policy: Mapping[str, Any] | None = None,
) -> int:
    """Whole seconds left before the deadline; negative once breached.

    ``sla_remaining(...) + elapsed == budget`` exactly (elapsed floored to seconds).
    """
    merged = merge_policy(policy)
    start_dt = parse_datetime(start, "start")
    now_dt = parse_datetime(now, "now")
    budget = _budget(merged, _severity_key(merged, severity), kind)
    return budget - _elapsed_seconds(start_dt, now_dt)


def sla_status(
    start: Any, severity: str, now: Any, policy: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Full SLA picture for an open incident at ``now``.

    ``state`` is ``breached`` once the resolve budget is used up, ``at_risk``
    once ``at_risk_ratio`` (default 80 %) of it is used, else ``ok``.
    """
    merged = merge_policy(policy)
    key = _severity_key(merged, severity)
    start_dt = parse_datetime(start, "start")
    now_dt = parse_datetime(now, "now")
    elapsed = _elapsed_seconds(start_dt, now_dt)
    at_risk_ratio = _ratio(merged.get("at_risk_ratio"), "policy.at_risk_ratio")

    result: dict[str, Any] = {
        "severity": key,
        "start": format_datetime(start_dt),
        "now": format_datetime(now_dt),
        "elapsed_s": elapsed,
    }
    for kind in ("respond", "resolve"):
        budget = _budget(merged, key, kind)
        result[kind] = {
            "budget_s": budget,
            "deadline": format_datetime(start_dt + timedelta(seconds=budget)),
            "remaining_s": budget - elapsed,
            "used_ratio": elapsed / budget,
            "breached": elapsed >= budget,
        }
    resolve_budget = result["resolve"]["budget_s"]
    if elapsed >= resolve_budget:
        state = "breached"
    elif elapsed >= _exact(at_risk_ratio) * resolve_budget:
        state = "at_risk"
    else:
        state = "ok"
    result["state"] = state
    return result


# --------------------------------------------------------------------------
# Escalation
# --------------------------------------------------------------------------


def _contacts(value: Any, where: str) -> list[tuple[str, list[str]]]:
    accepted = "a mapping of channel -> list of targets, e.g. {email: [cto@akig.com]}"
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise SlaError(f"{where} must be {accepted}")
    channels = []
    for channel, targets in value.items():
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, (list, tuple)) or not all(
            isinstance(t, str) for t in targets
        ):
            raise SlaError(
                f"{where}.{channel} must be a list of strings; expected {accepted}"
            )
        channels.append((str(channel), list(targets)))
    return channels


def _tiers(
    policy: Mapping[str, Any],
) -> list[tuple[str, float, list[tuple[str, list[str]]]]]:
    accepted = "a non-empty list like [{name: tier1, after_s: 0, contacts: {slack: ['#akig-incidents']}}]"
    tiers = policy.get("tiers")
    if not isinstance(tiers, (list, tuple)) or not tiers:
        raise SlaError(f"policy.tiers must be {accepted}")
    parsed = []
    previous = None
    for index, tier in enumerate(tiers):
        where = f"policy.tiers[{index}]"
        if not isinstance(tier, Mapping) or not isinstance(tier.get("name"), str):
            raise SlaError(
                f"{where} must be a mapping with a name, after_s and contacts; policy.tiers must be {accepted}"
            )
        for key in tier:
            if key not in _TIER_KEYS:
                raise SlaError(
                    f"unknown key {where}.{key}; accepted keys: {', '.join(_TIER_KEYS)}"
                )
        after = duration_seconds(tier.get("after_s", 0), f"{where}.after_s")
        if previous is not None and after <= previous:
            raise SlaError(
                f"{where}.after_s ({after:g}) must be greater than the previous tier's "
                f"({previous:g}); list tiers in escalation order"
            )
        previous = after
        parsed.append(
            (tier["name"], after, _contacts(tier.get("contacts"), f"{where}.contacts"))
        )
    return parsed


def escalation_tier(
    elapsed: Any, data_breach: bool = False, policy: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Escalation tier due after ``elapsed`` (seconds or duration string) without resolution.

    Contacts are cumulative across tiers, ordered by when they became due
    and de-duplicated, so a later call only ever appends to the list.  A data
    breach adds the ``policy.data_breach`` contacts regardless of time: they
    count as due from 0, right after the tiers due from 0.
    """
    merged = merge_policy(policy)
    elapsed_s = duration_seconds(elapsed, "elapsed")
    if not isinstance(data_breach, bool):
        raise SlaError(
            f"data_breach must be a boolean (true/false), got {data_breach!r}"
        )
    tiers = _tiers(merged)

    due = [tier for tier in tiers if elapsed_s >= tier[1]]
    groups = [(name, contacts) for name, _after, contacts in due]
    if data_breach:
        breach = merged.get("data_breach")
        if not isinstance(breach, Mapping):
            raise SlaError(
                "policy.data_breach must be a mapping like {name: legal, contacts: {email: [legal@akig.com]}}"
            )
        # due from 0, so it goes right after the tiers that are due from 0:
        # the order of groups (and contacts) then only ever grows at the end
        position = sum(1 for _name, after, _group in due if after <= 0)
        groups.insert(
            position,
            (
                str(breach.get("name") or "legal"),
                _contacts(breach.get("contacts"), "policy.data_breach.contacts"),
            ),
        )

    contacts: list[str] = []
    channels: dict[str, list[str]] = {}
    for _name, group in groups:
        for channel, targets in group:
            bucket = channels.setdefault(channel, [])
            for target in targets:
                if target not in bucket:
                    bucket.append(target)
                if target not in contacts:
                    contacts.append(target)

    upcoming = [tier for tier in tiers if elapsed_s < tier[1]]
    return {
        "tier": due[-1][0] if due else None,
        "level": len(due),
        "elapsed_s": elapsed_s,
        "data_breach": data_breach,
        "tiers_due": [name for name, _group in groups],
        "contacts": contacts,
        "channels": channels,
        "next_tier": upcoming[0][0] if upcoming else None,
        "next_in_s": upcoming[0][1] - elapsed_s if upcoming else None,
    }


# --------------------------------------------------------------------------
# Error-rate rule
# --------------------------------------------------------------------------


def _sample_is_error(sample: Any, index: int) -> bool:
    accepted = "each sample must be a mapping {ts, ok: bool} or {ts, status: HTTP code}"
    if "ok" in sample:
        ok = sample["ok"]
        if not isinstance(ok, bool):
            raise SlaError(
                f"samples[{index}].ok must be a boolean, got {ok!r}; {accepted}"
            )
        return not ok
    if "status" in sample:
        status = sample["status"]
        if isinstance(status, str) and status.strip().isdigit():
            status = int(status.strip())
        if isinstance(status, bool) or not isinstance(status, int) or status < 0:
            raise SlaError(
                f"samples[{index}].status must be an HTTP status code (0 = no response), "
                f"got {status!r}; {accepted}"
            )
        return status == 0 or status >= 500
    raise SlaError(f"samples[{index}] has neither ok nor status; {accepted}")


def error_rate_threshold(policy: Mapping[str, Any] | None = None) -> float:
    """The error-rate threshold of the policy (AKIG default: 0.10, the runbook's "Taux erreur > 10%")."""
    rule = merge_policy(policy).get("error_rate")
    if not isinstance(rule, Mapping):
        raise SlaError(
            "policy.error_rate must be a mapping like {threshold: 0.10, window_s: 300}"
        )
    return _ratio(rule.get("threshold"), "policy.error_rate.threshold")


def error_rate_exceeds(errors: Any, total: Any, threshold: Any) -> bool:
    """The error-rate decision: whether ``errors / total`` is strictly greater than ``threshold``.

    This is the one place the decision is made (``error_rate_breach`` and the
    ``http_health`` module both call it).  It is computed exactly, with
    integers and :class:`~fractions.Fraction`: no float rounding can move a
    rate across the threshold.  ``threshold`` is read as its decimal text (see
    :func:`exact_ratio`): ``0.1`` and ``"10%"`` are exactly 1/10, so 1 error
    in 10 requests does *not* breach a 10 % threshold (the runbook's rule is
    "more than 10 %") and 10001 in 100001 does.  No request, no breach.
    """
    for name, value in (("errors", errors), ("total", total)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SlaError(f"{name} must be a whole number >= 0, got {value!r}")
    if errors > total:
        raise SlaError(
            f"errors ({errors}) cannot exceed total ({total}): count the failed requests among all requests"
        )
    limit = exact_ratio(threshold, "threshold")
    return total > 0 and Fraction(errors, total) > limit


def error_rate_breach(
    samples: Any,
    now: Any,
    threshold: Any = None,
    window: Any = None,
    policy: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Error rate over the window ``(now - window, now]`` and whether it exceeds ``threshold``.

    A sample is an error when ``ok`` is false, or its ``status`` is 0 (no
    response) or >= 500.  Samples outside the window (including ones after
    ``now``) are ignored.  An empty window gives rate 0 and no breach.
    ``breached`` comes from :func:`error_rate_exceeds` (exact; equal does not
    breach); ``rate`` is the same quotient as a float, for display.
    """
    merged = merge_policy(policy)
    rule = merged.get("error_rate") or {}
    threshold_in = rule.get("threshold") if threshold is None else threshold
    threshold_v = _ratio(threshold_in, "threshold")
    window_s = duration_seconds(
        rule.get("window_s") if window is None else window, "window"
    )
    if window_s <= 0:
        raise SlaError(
            f"window {window!r} must be greater than zero; {_DURATION_ACCEPTED}"
        )
    now_dt = parse_datetime(now, "now")
    if isinstance(samples, (str, bytes, Mapping)) or not isinstance(
        samples, (list, tuple)
    ):
        raise SlaError(
            "samples must be a list of mappings {ts, ok: bool} or {ts, status: HTTP code}, "
            f"got {type(samples).__name__}"
        )
    window_start = now_dt - timedelta(seconds=window_s)

    errors = total = ignored = 0
    for index, sample in enumerate(samples):
        if not isinstance(sample, Mapping) or "ts" not in sample:
            raise SlaError(
                f"samples[{index}] must be a mapping with ts plus ok (bool) or status (HTTP code), got {sample!r}"
            )
        is_error = _sample_is_error(sample, index)
        ts = parse_datetime(sample["ts"], f"samples[{index}].ts")
        if window_start < ts <= now_dt:
            total += 1
            errors += int(is_error)
        else:
            ignored += 1

    return {
        "rate": errors / total if total else 0.0,
        "errors": errors,
        "total": total,
        "ignored": ignored,
        "window_s": window_s,
        "window_start": format_datetime(window_start),
        "now": format_datetime(now_dt),
        "threshold": threshold_v,
        "breached": error_rate_exceeds(errors, total, threshold_in),
    }


# --------------------------------------------------------------------------
# Reliability metrics over a period
# --------------------------------------------------------------------------

_EMPTY_HISTORY = (
    "incident_metrics needs at least one incident record; for a clean period report "
    "uptime 1.0 directly. Each record is a mapping {id, severity, start, end} (end may be "
    f"given as resolved_at) with {_ISO_EXAMPLE} timestamps"
)


def _incident(
    record: Any, index: int, merged: Mapping[str, Any]
) -> tuple[str, str, datetime, datetime]:
    if not isinstance(record, Mapping):
        raise SlaError(
            f"incidents[{index}] must be a mapping, got {type(record).__name__}; {_EMPTY_HISTORY}"
        )
    ident = str(record.get("id", f"#{index}"))
    where = f"incident {ident!r}"
    if record.get("severity") is None:
        raise SlaError(f"{where} has no severity")
    key = _severity_key(merged, record["severity"])
    if record.get("start") is None:
        raise SlaError(f"{where} has no start; expected a {_ISO_EXAMPLE}")
    end_value = record.get("end")
    if end_value is None:
        end_value = record.get("resolved_at")
    if end_value is None:
        raise SlaError(
            f"{where} has no end (or resolved_at); incident_metrics needs resolved incidents "
            f"with {_ISO_EXAMPLE} timestamps"
        )
    start = parse_datetime(record["start"], f"{where} start")
    end = parse_datetime(end_value, f"{where} end")
    if end < start:
        raise SlaError(
            f"{where} ends ({format_datetime(end)}) before it starts ({format_datetime(start)}); "
            "end/resolved_at must be at or after start"
        )
    return ident, key, start, end


def _union_length(intervals: list[tuple[datetime, datetime]]) -> timedelta:
    total = timedelta(0)
    current_start = current_end = None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        elif end > current_end:
            current_end = end
    if current_end is not None:
        total += current_end - current_start
    return total


def incident_metrics(
    incidents: Any,
    period_start: Any,
    period_end: Any,
    policy: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Count, MTTR, MTTF, uptime and per-severity resolution figures for a period.

    An incident belongs to the period when its ``[start, end)`` interval
    overlaps ``[period_start, period_end)`` (a zero-length incident when its
    start lies inside).  MTTR uses each incident's full resolution time;
    downtime is the union of the incident intervals clipped to the period,
    so overlapping incidents are counted once.  MTTF is the up time in the
    period divided by the number of incidents.
    """
    merged = merge_policy(policy)
    p_start = parse_datetime(period_start, "period_start")
    p_end = parse_datetime(period_end, "period_end")
    if p_end <= p_start:
        raise SlaError(
            f"period_end ({format_datetime(p_end)}) must be after period_start ({format_datetime(p_start)})"
        )
    if isinstance(incidents, (str, bytes, Mapping)) or not isinstance(
        incidents, (list, tuple)
    ):
        raise SlaError(f"incidents must be a list; {_EMPTY_HISTORY}")
    if not incidents:
        raise SlaError(_EMPTY_HISTORY)
    records = [
        _incident(record, index, merged) for index, record in enumerate(incidents)
    ]

    def overlaps(start: datetime, end: datetime) -> bool:
        if start == end:
            return p_start <= start < p_end
        return start < p_end and end > p_start

    selected = [rec for rec in records if overlaps(rec[2], rec[3])]
    if not selected:
        raise SlaError(
            f"none of the {len(records)} incident records overlap the period "
            f"{format_datetime(p_start)} .. {format_datetime(p_end)}; "
            "for a clean period report uptime 1.0 directly"
        )

    targets = merged.get("targets") or {}
    uptime_target = _ratio(targets.get("uptime"), "policy.targets.uptime")
    mttr_target = duration_seconds(targets.get("mttr_s"), "policy.targets.mttr_s")
    mttf_target = duration_seconds(targets.get("mttf_s"), "policy.targets.mttf_s")

    period = p_end - p_start
    downtime = _union_length(
        [(max(s, p_start), min(e, p_end)) for _i, _k, s, e in selected]
    )
    up = period - downtime
    count = len(selected)
    resolutions = [(e - s).total_seconds() for _i, _k, s, e in selected]
    mttr = sum(resolutions) / count
    mttf = up.total_seconds() / count
    uptime = up / period
    period_us = period // timedelta(microseconds=1)
    uptime_exact = Fraction(up // timedelta(microseconds=1), period_us)

    per_severity: dict[str, Any] = {}
    for key in merged["severities"]:
        durations = [(e - s).total_seconds() for _i, k, s, e in selected if k == key]
        target = _budget(merged, key, "resolve")
        within = sum(1 for d in durations if d < target)
        per_severity[key] = {
            "count": len(durations),
            "mean_resolution_s": sum(durations) / len(durations) if durations else None,
            "max_resolution_s": max(durations) if durations else None,
            "target_s": target,
            "within_target": within,
            "met": within == len(durations),
        }

    return {
        "period": {
            "start": format_datetime(p_start),
            "end": format_datetime(p_end),
            "length_s": period.total_seconds(),
        },
        "count": count,
        "ignored": len(records) - count,
        "ids": [ident for ident, _k, _s, _e in selected],
        "mttr_s": mttr,
        "mttf_s": mttf,
        "uptime": uptime,
        "downtime_s": downtime.total_seconds(),
        "per_severity": per_severity,
        "targets": {
            "uptime": uptime_target,
            "mttr_s": mttr_target,
            "mttf_s": mttf_target,
        },
        "targets_met": {
            "uptime": uptime_exact >= _exact(uptime_target),
            "mttr": mttr < mttr_target,
            "mttf": mttf > mttf_target,
        },
    }
