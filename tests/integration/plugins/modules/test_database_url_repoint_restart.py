# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""akig.runbooks.database_url_repoint with ``restart``: the whole direct repoint of a backend host in one module run
(env file, pm2 restart, health gate, maintenance file), against a real pm2 daemon and real node apps.

The app (tests/unit/fixtures/pm2app/app.js with ENV_FILE) reads its env file once at boot, like the AKIG backend,
and its /api/health says which host:port its DATABASE_URL names, so each case sees which URL the running processes
have, not only what the module says. The daemon is the pm2 module tests' (its own PM2_HOME, killed at the end).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.akig.runbooks.plugins.modules import database_url_repoint as module
from ansible_collections.akig.runbooks.tests.integration.plugins.modules import test_pm2 as pm2_tests

pm2_home = pm2_tests.pm2_home  # the fixture: its own PM2_HOME, `pm2 kill` at the end of this module

SECRET = "S3cr@t-restart-CANARY"
ENV = ("NODE_ENV=production\nDATABASE_URL=postgresql://akig:%s@db-1.akig.internal:5432/akig\n"
       "REDIS_URL=redis://cache-1:6379/0\n" % SECRET)


def run_module(home: Path, check: bool = False, **args: Any) -> Dict[str, Any]:
    params: Dict[str, Any] = {"pm2_bin": str(pm2_tests.PM2), "pm2_home": str(home), "stable_seconds": 0.3}
    params.update(args)
    params.update(_ansible_check_mode=check)
    out = io.StringIO()
    with patch_module_args(params), contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        module.main()
    return json.loads(out.getvalue())


def health_everywhere(port: int, instances: int) -> Dict[int, Any]:
    """pid -> database_at of every instance behind the port (cluster mode spreads the connections)."""
    seen: Dict[int, Any] = {}
    deadline = time.monotonic() + 10
    while len(seen) < instances and time.monotonic() < deadline:
        body = pm2_tests.health(port)
        seen[body["pid"]] = body["database_at"]
    return seen


@pytest.fixture(name="app")
def app_fixture(pm2_home: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Dict[str, Any]]:
    """A 2-instance cluster app reading tmp_path/akig.env at boot, removed from pm2 afterwards."""
    env = tmp_path / "akig.env"
    env.write_text(ENV)
    env.chmod(0o640)
    port = pm2_tests.free_port()
    name = "akig-repoint-%s" % request.node.name[-12:].strip("_[]")
    started = pm2_tests.run_module(pm2_home, name=name, script=str(pm2_tests.APP), exec_mode="cluster", instances=2,
                                   env={"PORT": str(port), "ENV_FILE": str(env)})
    assert started["changed"] is True, started
    yield {"name": name, "port": port, "env": env, "flag": tmp_path / "maintenance.flag",
           "url": "http://127.0.0.1:%d/api/health" % port}
    pm2_tests.run_module(pm2_home, name=name, state="absent")


def test_repoints_restarts_every_instance_and_leaves_maintenance_once_healthy(pm2_home: Path, app: Dict[str, Any]) -> None:
    before = pm2_tests.pids(pm2_home, app["name"])
    assert set(health_everywhere(app["port"], 2).values()) == {"db-1.akig.internal:5432"}

    result = run_module(pm2_home, path=str(app["env"]), host="db-2.akig.internal", port=6543, maintenance_file=str(app["flag"]),
                        restart=[app["name"]], health_url=app["url"], health_interval=0.05)

    assert result["changed"] is True and result.get("failed") is not True, result
    after = pm2_tests.pids(pm2_home, app["name"])
    assert sorted(after) == sorted(before) and not set(after.values()) & set(before.values()), "every instance restarted"
    seen = health_everywhere(app["port"], 2)
    assert set(seen) == set(after.values()) and set(seen.values()) == {"db-2.akig.internal:6543"}, \
        "every running instance read the new DATABASE_URL"
    assert not app["flag"].exists() and result["maintenance"] is False
    assert result["healthy"] is True and result["health_attempts"] >= 1 and result["stale_processes"] == []
    assert [r["name"] for r in result["restarted"]] == [app["name"]]
    assert {p["pid"] for p in result["restarted"][0]["processes"]} == set(after.values())
    assert "at once" in result["restarted"][0]["actions"][0]
    assert result["msg"].startswith("Pointed DATABASE_URL of %s (line 2) at db-2.akig.internal:6543. " % app["env"])
    assert result["msg"].endswith("; %s removed: the app writes again." % app["flag"])
    assert Path(result["backup_file"]).read_text() == ENV
    assert SECRET not in json.dumps(result)

    again = run_module(pm2_home, path=str(app["env"]), host="db-2.akig.internal", port=6543, maintenance_file=str(app["flag"]),
                       restart=[app["name"]], health_url=app["url"])
    assert again["changed"] is False and again["stale_processes"] == [] and again["restarted"] == []
    assert pm2_tests.pids(pm2_home, app["name"]) == after, "a second run restarts nothing"
    assert again["msg"] == ("%s already points DATABASE_URL at db-2.akig.internal:6543 and %s started after it last changed: "
                            "nothing to do." % (app["env"], app["name"]))


def test_processes_older_than_the_file_are_restarted_although_it_already_points_there(pm2_home: Path, app: Dict[str, Any]) -> None:
    # a run that died between the rewrite and the restart: the file names db-2, the processes still run with db-1
    app["env"].write_text(ENV.replace("db-1.akig.internal:5432", "db-2.akig.internal:5432"))
    before = pm2_tests.pids(pm2_home, app["name"])
    result = run_module(pm2_home, path=str(app["env"]), host="db-2.akig.internal", maintenance_file=str(app["flag"]),
                        restart=[app["name"]], health_url=app["url"])
    assert result["changed"] is True and result.get("failed") is not True, result
    assert sorted((p["pm_id"], p["pid"]) for p in result["stale_processes"]) == sorted(before.items())
    assert "backup_file" not in result, "the file did not change: nothing to back up"
    assert set(health_everywhere(app["port"], 2).values()) == {"db-2.akig.internal:5432"}
    assert not app["flag"].exists()
    assert result["msg"].startswith("%s already pointed DATABASE_URL at db-2.akig.internal:5432. " % app["env"])


def test_an_app_pm2_does_not_know_fails_before_the_file_or_the_maintenance_file_changes(pm2_home: Path, app: Dict[str, Any],
                                                                                        tmp_path: Path) -> None:
    before = pm2_tests.pids(pm2_home, app["name"])
    listing = sorted(os.listdir(tmp_path))
    result = run_module(pm2_home, path=str(app["env"]), host="db-2.akig.internal", maintenance_file=str(app["flag"]),
                        restart=[app["name"], "akig-nope"], health_url=app["url"])
    assert result["failed"] is True and result["changed"] is False
    assert "akig-nope" in result["msg"] and result["msg"].endswith(
        "Nothing was changed (neither %s nor the maintenance file)." % app["env"])
    assert app["env"].read_text() == ENV and sorted(os.listdir(tmp_path)) == listing
    assert pm2_tests.pids(pm2_home, app["name"]) == before


def test_check_mode_asks_pm2_and_changes_nothing(pm2_home: Path, app: Dict[str, Any], tmp_path: Path) -> None:
    before = pm2_tests.pids(pm2_home, app["name"])
    result = run_module(pm2_home, check=True, path=str(app["env"]), host="db-3.akig.internal", maintenance_file=str(app["flag"]),
                        restart=[app["name"]], health_url=app["url"])
    assert result["changed"] is True and result.get("failed") is not True
    assert result["msg"] == ("Would point DATABASE_URL of %s (line 2) at db-3.akig.internal:5432, the app in maintenance mode "
                             "first, then restart %s and leave maintenance once %s answers 200." % (app["env"], app["name"], app["url"]))
    assert app["env"].read_text() == ENV and os.listdir(tmp_path) == ["akig.env"]
    assert pm2_tests.pids(pm2_home, app["name"]) == before


def test_a_backend_that_never_answers_keeps_the_maintenance_file_and_says_so(pm2_home: Path, app: Dict[str, Any]) -> None:
    silent = "http://127.0.0.1:%d/api/health" % pm2_tests.free_port()  # nothing listens there
    result = run_module(pm2_home, path=str(app["env"]), host="db-2.akig.internal", maintenance_file=str(app["flag"]),
                        restart=[app["name"]], health_url=silent, health_timeout=0.6, health_interval=0.1)
    assert result["failed"] is True and result["changed"] is True
    assert app["flag"].exists() and result["maintenance"] is True and result["healthy"] is False
    assert "did not answer 200 within 0.6 s" in result["msg"]
    assert "%s is kept, so the app goes on refusing writes with its maintenance message." % app["flag"] in result["msg"]
    assert set(health_everywhere(app["port"], 2).values()) == {"db-2.akig.internal:5432"}, "the restart itself happened"
