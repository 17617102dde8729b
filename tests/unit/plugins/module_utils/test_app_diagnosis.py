# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for plugins/module_utils/app_diagnosis.py (app_recovery triage: probes -> diagnosis)."""

from __future__ import annotations

from typing import Any

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils.app_diagnosis import AppDiagnosisError, app_diagnosis

PATTERNS = ["Cannot find module", "SyntaxError", "ReferenceError"]
SKIPPED = {"changed": False, "skipped": True}
TWO_DEPLOYS = {"rc": 0, "stdout_lines": ["b2c3 deploy: reports v2", "a1b2 deploy: v1"]}
ONE_DEPLOY = {"rc": 0, "stdout_lines": ["a1b2 deploy: v1"]}
NO_LOG = {"rc": 0, "stdout_lines": []}
BOOT_LOG = {"rc": 0, "stdout_lines": ["Error: Cannot find module 'left-pad'", "    at Module._resolveFilename"]}


def uri(status: int, json: Any = None) -> dict[str, Any]:
    result: dict[str, Any] = {"status": status, "changed": False}
    if json is not None:
        result["json"] = json
    return result


def pm2(*procs: tuple[str, str]) -> dict[str, Any]:
    listed = [{"name": name, "status": status} for name, status in procs]
    return {"changed": False, "processes": [p for p in listed if p["name"] == "akig-backend"], "all_processes": listed}


def backend(**probes: Any) -> dict[str, Any]:
    evidence = {"is_backend": True, "is_frontend": False, "backend": uri(200, {"status": "ok"}), "frontend": SKIPPED,
                "pm2": pm2(("akig-backend", "online")), "git": TWO_DEPLOYS, "log": NO_LOG}
    evidence.update(probes)
    return evidence


def frontend(**probes: Any) -> dict[str, Any]:
    evidence = {"is_backend": False, "is_frontend": True, "backend": SKIPPED, "frontend": uri(200),
                "pm2": pm2(("akig-frontend", "online")), "git": TWO_DEPLOYS, "log": NO_LOG}
    evidence.update(probes)
    return evidence


@pytest.mark.parametrize(
    ("evidence", "diagnosis"),
    [
        (backend(), "healthy"),
        (frontend(), "healthy"),
        (backend(backend=uri(503, {"status": "error", "error": "Database connection failed"})), "database"),
        # a 503 that does not name the database is a backend problem
        (backend(backend=uri(503, {"status": "error", "error": "Redis unavailable"})), "backend_down"),
        # crash loop with a release to go back to
        (backend(backend=uri(-1), pm2=pm2(("akig-backend", "waiting restart"))), "bad_deploy"),
        (backend(backend=uri(-1), pm2=pm2(("akig-backend", "errored"))), "bad_deploy"),
        (backend(backend=uri(-1), pm2=pm2(("akig-backend", "launching"))), "bad_deploy"),
        # pm2 6 lists a cluster worker that died before it was ready as online, with its dead pid, for up to
        # listen_timeout: the module's running=false is the crash loop (both workers can be in that phase)
        (backend(backend=uri(-1), pm2={"processes": [{"name": "akig-backend", "status": "online", "running": False}] * 2}),
         "bad_deploy"),
        # online and running (or evidence without the field): not a crash loop
        (backend(backend=uri(-1), pm2={"processes": [{"name": "akig-backend", "status": "online", "running": True}]}),
         "backend_down"),
        (backend(backend=uri(-1), pm2=pm2(("akig-backend", "online"))), "backend_down"),
        # boot error in the log, pm2 gave up (stopped)
        (backend(backend=uri(-1), pm2=pm2(("akig-backend", "stopped")), log=BOOT_LOG), "bad_deploy"),
        # ... but no previous release: only a restart can help
        (backend(backend=uri(-1), pm2=pm2(("akig-backend", "errored")), git=ONE_DEPLOY), "backend_down"),
        # killed and stays down, clean log
        (backend(backend=uri(-1), pm2=pm2(("akig-backend", "stopped"))), "backend_down"),
        # the backend probe did not run on a backend host: no answer
        (backend(backend=SKIPPED), "backend_down"),
        (frontend(frontend=uri(500)), "frontend_broken"),
        (frontend(frontend=uri(-1)), "frontend_broken"),
        (frontend(frontend=SKIPPED), "frontend_broken"),
        # a frontend-only host ignores a crash-looping backend entry
        (frontend(pm2=pm2(("akig-backend", "errored")), log=BOOT_LOG), "healthy"),
        # both groups: the backend comes first
        (dict(backend(backend=uri(-1)), is_frontend=True, frontend=uri(500)), "backend_down"),
        (dict(backend(), is_frontend=True, frontend=uri(500)), "frontend_broken"),
    ],
)
def test_diagnosis(evidence, diagnosis):
    assert app_diagnosis(evidence, PATTERNS)["diagnosis"] == diagnosis


def test_evidence_of_a_bad_deploy():
    result = app_diagnosis(
        backend(backend=uri(-1), pm2=pm2(("akig-backend", "waiting restart"), ("akig-worker", "online")), log=BOOT_LOG),
        PATTERNS,
    )
    assert result == {
        "diagnosis": "bad_deploy",
        "evidence": {
            "backend_health": -1,
            "backend_error": "",
            "frontend_health": None,
            "pm2": ["akig-backend:waiting restart", "akig-worker:online"],
            "revisions": ["b2c3 deploy: reports v2", "a1b2 deploy: v1"],
            "boot_error": True,
            "crash_loop": True,
        },
    }


def test_only_the_last_30_log_lines_count_as_a_boot_error():
    old = {"rc": 0, "stdout_lines": ["SyntaxError: old release"] + ["GET /api/health 200"] * 30}
    recent = {"rc": 0, "stdout_lines": ["SyntaxError: old release"] + ["GET /api/health 200"] * 29}
    assert app_diagnosis(backend(log=old), PATTERNS)["evidence"]["boot_error"] is False
    assert app_diagnosis(backend(log=recent), PATTERNS)["evidence"]["boot_error"] is True


@pytest.mark.parametrize(
    ("body", "error"),
    [({"error": None}, ""), (["not", "a", "dict"], ""), ({"error": 42}, "42"), (None, "")],
)
def test_backend_error_text(body, error):
    assert app_diagnosis(backend(backend=uri(503, body)), PATTERNS)["evidence"]["backend_error"] == error


def test_non_backend_host_reports_200_for_the_backend():
    assert app_diagnosis(frontend(), PATTERNS)["evidence"]["backend_health"] == 200


@pytest.mark.parametrize(
    ("evidence", "patterns", "message"),
    [
        ("healthy", PATTERNS, "evidence must be a mapping with the keys is_backend, is_frontend, backend"),
        (dict(backend(), pm3={}), PATTERNS, "unknown evidence keys pm3; accepted keys: is_backend, is_frontend"),
        (dict(backend(), is_backend="yes"), PATTERNS, "evidence.is_backend must be a boolean (whether the host is in that group), got 'yes'"),
        (backend(backend="200"), PATTERNS, "evidence.backend must be the registered result of the triage probe (a mapping) or none, got str"),
        (backend(backend={"status": "OK"}), PATTERNS, "evidence.backend.status must be an HTTP status code"),
        (backend(git={"stdout_lines": "a1b2"}), PATTERNS, "evidence.git.stdout_lines must be a list of lines"),
        (backend(pm2={"processes": ["akig-backend"]}), PATTERNS, "evidence.pm2.processes must be a list of processes {name, status}"),
        (backend(), "SyntaxError", "boot_error_patterns must be a list of non-empty texts like ['Cannot find module', 'SyntaxError']"),
        (backend(), [""], "boot_error_patterns must be a list of non-empty texts"),
    ],
)
def test_bad_input(evidence, patterns, message):
    with pytest.raises(AppDiagnosisError) as err:
        app_diagnosis(evidence, patterns)
    assert message in str(err.value)
