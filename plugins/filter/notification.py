# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""RB-P2-003 filters: the fallback matrix, the routes it gives for the providers' health, the error classes,
and the runbook's decisions (each provider's health, the outage plan, the plan after recovery, the leftover).

Thin wrappers around ``plugins/module_utils/notification_routes.py`` and
``plugins/module_utils/notification_plan.py``; documentation lives in the sidecar YAML files next to this one
(one per filter name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible_collections.akig.runbooks.plugins.plugin_utils.filters import filter_errors
from ansible_collections.akig.runbooks.plugins.module_utils import notification_plan as _plan
from ansible_collections.akig.runbooks.plugins.module_utils import notification_routes as _routes

_filter = filter_errors(_routes.NotificationRoutesError)


def _plain(value: Any) -> Any:
    """A plain copy (Ansible hands filters lazy containers)."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)


def notification_matrix(matrix: Any) -> dict[str, list[str]]:
    return _routes.validate_matrix(_plain(matrix))


def notification_routes(matrix: Any, health: Any, reroute_on: Any = _routes.DEFAULT_REROUTE_ON) -> dict[str, Any]:
    return _routes.notification_routes(_plain(matrix), _plain(health), _plain(list(reroute_on)))


def notification_error_classes(rows: Any) -> dict[str, int]:
    return _routes.error_classes(_plain(rows))


def notification_log_error_classes(text: Any) -> dict[str, int]:
    return _routes.log_error_classes(None if text is None else str(text))


def notification_replay_problems(inputs: Any) -> list[str]:
    return _routes.replay_problems(_plain(inputs))


def notification_provider_diagnosis(check_class: Any, test_status: Any = None, queue_classes: Any = None) -> str:
    return _routes.provider_diagnosis(_plain(check_class), _plain(test_status), _plain(queue_classes))


def notification_counts(results: Any) -> dict[str, int]:
    return _routes.sum_counts(_plain(results))


def notification_health(checks: Any, tests: Any = (), queue_classes: Any = None) -> dict[str, dict[str, Any]]:
    return _plan.provider_health(_plain(checks), _plain(tests), _plain(queue_classes))


def notification_plan(health: Any, matrix: Any, reroute_on: Any = _routes.DEFAULT_REROUTE_ON) -> dict[str, Any]:
    return _plan.outage_plan(_plain(health), _plain(matrix), _plain(reroute_on))


def notification_resolve_plan(plan: Any, recovered: Any, matrix: Any,
                              reroute_on: Any = _routes.DEFAULT_REROUTE_ON) -> dict[str, Any]:
    return _plan.resolve_plan(_plain(plan), _plain(recovered), _plain(matrix), _plain(reroute_on))


def notification_leftover(by_channel_kind: Any, wait_channels: Any = ()) -> dict[str, int]:
    return _plan.leftover(_plain(by_channel_kind), _plain(wait_channels))


class FilterModule:
    """AKIG notification filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {func.__name__: _filter(func) for func in (notification_matrix, notification_routes,
                                                          notification_error_classes, notification_log_error_classes,
                                                          notification_replay_problems,
                                                          notification_provider_diagnosis, notification_counts,
                                                          notification_health, notification_plan,
                                                          notification_resolve_plan, notification_leftover)}
