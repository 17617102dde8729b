# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Why AKIG's app fails on a host, from what triage read there (pure).

The ``app_recovery`` role's ``triage`` entry point registers five read-only probes
(backend ``/api/health``, frontend ``/healthz``, the pm2 process list, ``git log``,
the tail of the backend's error log) and hands them to the filter
``akig.runbooks.app_diagnosis``, which returns ``{diagnosis, evidence}``.

Diagnoses, first match wins (RB-P1-001):

``database``
    the backend answers 503 with an error that names the database (RB-P1-003 takes over);
``bad_deploy``
    a backend that does not answer 200 while pm2 keeps restarting it or its error log
    shows a boot error, with a previous release to go back to;
``backend_down``
    any other backend that does not answer 200;
``frontend_broken``
    a frontend whose ``/healthz`` does not answer 200;
``healthy``
    none of the above.

Bad input raises :class:`AppDiagnosisError` (a ``ValueError``) whose message says
what is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "CRASH_LOOP_STATES",
    "DIAGNOSES",
    "EVIDENCE_KEYS",
    "AppDiagnosisError",
    "app_diagnosis",
]

DIAGNOSES = ("healthy", "database", "bad_deploy", "backend_down", "frontend_broken")
EVIDENCE_KEYS = ("is_backend", "is_frontend", "backend", "frontend", "pm2", "git", "log")
# pm2 keeps restarting a release that cannot boot; a backend that was stopped or killed shows 'stopped'
CRASH_LOOP_STATES = ("waiting restart", "launching", "errored")
# the boot errors are looked for in the last lines of the error log only (older ones are history)
RECENT_LOG_LINES = 30


class AppDiagnosisError(ValueError):
    """Triage evidence the diagnosis cannot be made from; the message says what is accepted."""


def _register(value: Any, name: str) -> Mapping[str, Any]:
    """A registered task result (a skipped task's too), or none."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise AppDiagnosisError(
            f"evidence.{name} must be the registered result of the triage probe (a mapping) or none, "
            f"got {type(value).__name__}"
        )
    return value


def _status(result: Mapping[str, Any], name: str) -> int:
    """The HTTP status of a registered uri result: -1 when it got no answer, 0 when it did not run."""
    status = result.get("status")
    if status is None:
        return 0
    if isinstance(status, str) and status.strip().lstrip("-").isdigit():
        status = int(status)
    if isinstance(status, bool) or not isinstance(status, int):
        raise AppDiagnosisError(
            f"evidence.{name}.status must be an HTTP status code (the uri module's status), got {status!r}"
        )
    return status


def _lines(result: Mapping[str, Any], name: str) -> list[str]:
    lines = result.get("stdout_lines") or []
    if isinstance(lines, str) or not isinstance(lines, Sequence):
        raise AppDiagnosisError(
            f"evidence.{name}.stdout_lines must be a list of lines (the command module's), got {lines!r}"
        )
    return [str(line) for line in lines]


def _processes(result: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    procs = result.get(key) or []
    if isinstance(procs, str) or not isinstance(procs, Sequence) or not all(
        isinstance(proc, Mapping) for proc in procs
    ):
        raise AppDiagnosisError(
            f"evidence.pm2.{key} must be a list of processes {{name, status}} (the akig.runbooks.pm2 "
            f"module's), got {procs!r}"
        )
    return list(procs)


def app_diagnosis(evidence: Any, boot_error_patterns: Any = ()) -> dict[str, Any]:
    """``{diagnosis, evidence}`` for one app host from its triage probes.

    ``evidence`` is a mapping with ``is_backend`` and ``is_frontend`` (the host's
    groups) and the registered results ``backend`` and ``frontend`` (uri),
    ``pm2`` (akig.runbooks.pm2 in check mode), ``git`` (``git log``) and ``log``
    (the error log's tail); a probe that was skipped or is missing counts as
    not run.  ``boot_error_patterns`` are texts that, found in the last 30
    lines of the error log, mean the deployed code cannot boot.
    """
    if not isinstance(evidence, Mapping):
        raise AppDiagnosisError(
            f"evidence must be a mapping with the keys {', '.join(EVIDENCE_KEYS)}, got {type(evidence).__name__}"
        )
    unknown = sorted(str(key) for key in evidence if key not in EVIDENCE_KEYS)
    if unknown:
        raise AppDiagnosisError(
            f"unknown evidence keys {', '.join(unknown)}; accepted keys: {', '.join(EVIDENCE_KEYS)}"
        )
    roles = {}
    for key in ("is_backend", "is_frontend"):
        value = evidence.get(key, False)
        if not isinstance(value, bool):
            raise AppDiagnosisError(
                f"evidence.{key} must be a boolean (whether the host is in that group), got {value!r}"
            )
        roles[key] = value
    if isinstance(boot_error_patterns, str) or not isinstance(boot_error_patterns, Sequence) or not all(
        isinstance(pattern, str) and pattern for pattern in boot_error_patterns
    ):
        raise AppDiagnosisError(
            "boot_error_patterns must be a list of non-empty texts like ['Cannot find module', 'SyntaxError'], "
            f"got {boot_error_patterns!r}"
        )
    backend = _register(evidence.get("backend"), "backend")
    frontend = _register(evidence.get("frontend"), "frontend")
    pm2 = _register(evidence.get("pm2"), "pm2")
    revisions = _lines(_register(evidence.get("git"), "git"), "git")
    log_lines = _lines(_register(evidence.get("log"), "log"), "log")

    is_backend, is_frontend = roles["is_backend"], roles["is_frontend"]
    backend_status = _status(backend, "backend") if is_backend else 200
    body = backend.get("json")
    backend_error = body.get("error") if isinstance(body, Mapping) else None
    backend_error = "" if backend_error is None else str(backend_error)
    frontend_health = _status(frontend, "frontend") if "status" in frontend else None
    # "online" but not running (the module's ``running``): a worker that died before it was ready, which
    # pm2 6 lists as online with its dead pid until the next restart, or one pm2 gave up on (pid 0)
    crash_loop = any(
        proc.get("status") in CRASH_LOOP_STATES or (proc.get("status") == "online" and proc.get("running") is False)
        for proc in _processes(pm2, "processes")
    )
    procs = _processes(pm2, "all_processes")
    recent_log = "\n".join(log_lines[-RECENT_LOG_LINES:])
    boot_error = any(pattern in recent_log for pattern in boot_error_patterns)

    if backend_status == 503 and "Database" in backend_error:
        diagnosis = "database"
    elif is_backend and backend_status != 200 and (boot_error or crash_loop) and len(revisions) > 1:
        diagnosis = "bad_deploy"
    elif is_backend and backend_status != 200:
        diagnosis = "backend_down"
    elif is_frontend and (frontend_health or 0) != 200:
        diagnosis = "frontend_broken"
    else:
        diagnosis = "healthy"

    return {
        "diagnosis": diagnosis,
        "evidence": {
            "backend_health": backend_status,
            "backend_error": backend_error,
            "frontend_health": frontend_health,
            "pm2": [f"{proc.get('name')}:{proc.get('status')}" for proc in procs],
            "revisions": revisions,
            "boot_error": boot_error,
            "crash_loop": crash_loop,
        },
    }
