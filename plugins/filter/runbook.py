# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the runbook frame: the run fact ``akig_run`` (see ``plugins/module_utils/runbook.py``).

Documentation lives in the sidecar YAML files next to this one (one per filter name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible_collections.akig.runbooks.plugins.plugin_utils.filters import filter_errors
from ansible_collections.akig.runbooks.plugins.module_utils import runbook as _runbook


_filter = filter_errors(_runbook.RunbookError)


def run_new(runbook: Any, now: Any, severity: Any = None, title: Any = None, environment: Any = None,
            check_mode: bool = False) -> dict[str, Any]:
    return _runbook.new_run(runbook, now, severity=severity, title=title, environment=environment,
                            check_mode=check_mode)


def run_update(run: Any, update: Any, now: Any = None) -> dict[str, Any]:
    return _runbook.run_update(run, update, now)


def run_failure(task: Any, result: Any = None, host: Any = None) -> dict[str, str]:
    return _runbook.run_failure(task, result, host)


def run_close(run: Any, now: Any, sla: Any = None, escalation: Any = None, figures: Any = None) -> dict[str, Any]:
    return _runbook.run_close(run, now, sla=sla, escalation=escalation, figures=figures)


class FilterModule:
    """Runbook frame filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {func.__name__: _filter(func) for func in (run_new, run_update, run_failure, run_close)}
