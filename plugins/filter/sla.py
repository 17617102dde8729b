# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SLA, escalation and reliability-metric filters for ``akig.runbooks``.

Thin wrappers around ``plugins/module_utils/sla.py``; documentation lives in
the sidecar YAML files next to this one (one per filter name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible_collections.akig.runbooks.plugins.plugin_utils.filters import filter_errors
from ansible_collections.akig.runbooks.plugins.module_utils import sla as _sla


_filter = filter_errors(_sla.SlaError)


def sla_deadline(
    start: Any, severity: str, kind: str = "resolve", policy: Any = None
) -> str:
    return _sla.sla_deadline(start, severity, kind=kind, policy=policy)


def sla_status(
    start: Any, severity: str, now: Any, policy: Any = None
) -> dict[str, Any]:
    return _sla.sla_status(start, severity, now, policy=policy)


def sla_remaining(
    start: Any, severity: str, now: Any, kind: str = "resolve", policy: Any = None
) -> int:
    return _sla.sla_remaining(start, severity, now, kind=kind, policy=policy)


def escalation_tier(
    elapsed: Any, data_breach: bool = False, policy: Any = None
) -> dict[str, Any]:
    return _sla.escalation_tier(elapsed, data_breach=data_breach, policy=policy)


def error_rate_breach(
    samples: Any,
    now: Any,
    threshold: Any = None,
    window: Any = None,
    policy: Any = None,
) -> dict[str, Any]:
    return _sla.error_rate_breach(
        samples, now, threshold=threshold, window=window, policy=policy
    )


def incident_metrics(
    incidents: Any, period_start: Any, period_end: Any, policy: Any = None
) -> dict[str, Any]:
    return _sla.incident_metrics(incidents, period_start, period_end, policy=policy)


def duration_seconds(value: Any) -> float:
    return _sla.duration_seconds(value)


class FilterModule:
    """AKIG SLA filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            func.__name__: _filter(func)
            for func in (
                sla_deadline,
                sla_status,
                sla_remaining,
                escalation_tier,
                error_rate_breach,
                incident_metrics,
                duration_seconds,
            )
        }
