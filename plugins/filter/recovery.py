# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Recovery filters: the diagnosis of an app host, and how each of its processes is restarted.

Thin wrappers around ``plugins/module_utils/app_diagnosis.py`` and
``plugins/module_utils/restart_plan.py``; documentation lives in the sidecar YAML
files next to this one (one per filter name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible_collections.akig.runbooks.plugins.plugin_utils.filters import filter_errors
from ansible_collections.akig.runbooks.plugins.module_utils import app_diagnosis as _diagnosis
from ansible_collections.akig.runbooks.plugins.module_utils import restart_plan as _restart

_ERRORS = (_diagnosis.AppDiagnosisError, _restart.RestartPlanError)


_filter = filter_errors(*_ERRORS)


def app_diagnosis(evidence: Any, boot_error_patterns: Any = ()) -> dict[str, Any]:
    return _diagnosis.app_diagnosis(evidence, boot_error_patterns)


def restart_plan(names: Any, mode: Any = "reloaded", manager: Any = "pm2") -> list[dict[str, str]]:
    return _restart.restart_plan(names, mode, manager)


class FilterModule:
    """AKIG recovery filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {func.__name__: _filter(func) for func in (app_diagnosis, restart_plan)}
