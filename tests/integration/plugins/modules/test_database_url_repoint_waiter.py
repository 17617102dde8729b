# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""akig.runbooks.database_url_repoint with ``when_writable``: the waiter left before a promotion, against a real pm2
daemon, real node apps and a real PostgreSQL standby that is promoted (the test cluster's spare).

The app reads its env file at boot and its /api/health says which host:port its DATABASE_URL names; the waiter logs
in with that URL's own credentials (the test cluster's superuser here), so a waiter that repoints has really seen the
node accept writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
from ansible_collections.akig.runbooks.tests.integration.plugins.modules import test_pm2 as pm2_tests
from ansible_collections.akig.runbooks.tests.integration.plugins.modules.test_database_url_repoint_restart import (
    health_everywhere,
    run_module,
)
from ansible_collections.akig.runbooks.tests.support.pg_cluster import PRIMARY, STANDBY, PgCluster
# the pause waiter tests read a waiter's state file and watch it exit the same way
from ansible_collections.akig.runbooks.tests.integration.plugins.modules.test_pgbouncer_admin import _gone, _state, wait_until

pm2_home = pm2_tests.pm2_home  # the fixture: its own PM2_HOME, `pm2 kill` at the end of this module


@pytest.fixture(name="app")
def app_fixture(pm2_home: Path, tmp_path: Path, cluster: PgCluster, request: pytest.FixtureRequest) -> Iterator[Dict[str, Any]]:
    """A 2-instance cluster app whose env file logs in to the test cluster's primary, removed from pm2 afterwards."""
    env = tmp_path / "akig.env"
    text = "NODE_ENV=production\nDATABASE_URL=postgresql://postgres:%s@%s:%d/postgres\n" % (
        cluster.password, PRIMARY.host, PRIMARY.port)
    env.write_text(text)
    port = pm2_tests.free_port()
    name = "akig-waiter-%s" % request.node.name[-12:].strip("_[]")
    started = pm2_tests.run_module(pm2_home, name=name, script=str(pm2_tests.APP), exec_mode="cluster", instances=2,
                                   env={"PORT": str(port), "ENV_FILE": str(env)})
    assert started["changed"] is True, started
    yield {"name": name, "port": port, "env": env, "text": text, "flag": tmp_path / "maintenance.flag",
           "state": Path("%s.waiter.json" % env), "url": "http://127.0.0.1:%d/api/health" % port,
           "password": cluster.password}
    pm2_tests.run_module(pm2_home, name=name, state="absent")


def _args(app: Dict[str, Any], host: str, port: int, **extra: Any) -> Dict[str, Any]:
    args = dict(path=str(app["env"]), host=host, port=port, maintenance_file=str(app["flag"]), restart=[app["name"]],
                health_url=app["url"], health_interval=0.05)
    args.update(extra)
    return args


def test_the_waiter_repoints_and_restarts_the_moment_the_node_is_promoted(pm2_home: Path, app: Dict[str, Any],
                                                                          cluster: PgCluster) -> None:
    spare = cluster.fresh_spare()
    before = pm2_tests.pids(pm2_home, app["name"])
    armed = run_module(pm2_home, **_args(app, spare.host, spare.port, when_writable={"timeout": 60, "poll_interval": 0.05}))
    assert armed["changed"] is True and armed.get("failed") is not True, armed
    assert armed["waiter"]["status"] == "waiting" and armed["waiter"]["pid"] and armed["maintenance"] is True
    assert app["flag"].exists(), "the app refuses writes from the arming on"
    # the spare is still a standby: nothing but the maintenance file has changed
    assert _state(app["state"])["status"] == "waiting"
    assert app["env"].read_text() == app["text"] and pm2_tests.pids(pm2_home, app["name"]) == before
    assert set(health_everywhere(app["port"], 2).values()) == {PRIMARY.target}

    cluster.execute(spare, "SELECT pg_promote()")
    done = wait_until(lambda: _state(app["state"]) if _state(app["state"]).get("status") not in (None, "waiting", "acting")
                      else None, "the waiter to record its outcome", timeout=60)
    assert done["status"] == "repointed", done
    after = pm2_tests.pids(pm2_home, app["name"])
    assert not set(after.values()) & set(before.values()), "every instance restarted"
    assert set(health_everywhere(app["port"], 2).values()) == {spare.target}, "every instance reads the new URL"
    assert not app["flag"].exists(), "maintenance left once healthy"
    assert app["env"].read_text() == app["text"].replace(PRIMARY.target, spare.target)
    assert app["password"] not in app["state"].read_text()
    wait_until(lambda: _gone(done["pid"]), "the waiter to exit")

    # the runbook's repoint task afterwards: the waiter's work reported, nothing restarted twice, its state consumed
    repoint = run_module(pm2_home, **_args(app, spare.host, spare.port))
    assert repoint["changed"] is True and repoint["waiter"]["status"] == "repointed", repoint
    assert repoint["msg"].startswith("The waiter left before the promotion had done it"), repoint["msg"]
    assert [r["name"] for r in repoint["restarted"]] == [app["name"]] and repoint["healthy"] is True
    assert pm2_tests.pids(pm2_home, app["name"]) == after and not app["state"].exists()
    assert app["password"] not in json.dumps(repoint) and app["password"] not in json.dumps(armed)
    again = run_module(pm2_home, **_args(app, spare.host, spare.port))
    assert again["changed"] is False and "waiter" not in again


def test_a_waiter_never_acts_on_a_node_that_stays_a_standby_and_disarm_leaves_maintenance(pm2_home: Path,
                                                                                          app: Dict[str, Any]) -> None:
    before = pm2_tests.pids(pm2_home, app["name"])
    armed = run_module(pm2_home, **_args(app, STANDBY.host, STANDBY.port, when_writable={"timeout": 1.0}))
    assert armed["changed"] is True and armed["waiter"]["status"] == "waiting", armed
    expired = wait_until(lambda: _state(app["state"]) if _state(app["state"]).get("status") == "expired" else None,
                         "the waiter to give up", timeout=15)
    wait_until(lambda: _gone(expired["pid"]), "the waiter to exit")
    assert app["env"].read_text() == app["text"] and pm2_tests.pids(pm2_home, app["name"]) == before
    assert app["flag"].exists(), "the arming's maintenance stays until the way back or the repoint"

    back = run_module(pm2_home, path=str(app["env"]), maintenance_file=str(app["flag"]), restart=[app["name"]],
                      health_url=app["url"], disarm=True)
    assert back["changed"] is True and back["waiter"]["status"] == "expired" and back["maintenance"] is False, back
    assert not app["flag"].exists() and not app["state"].exists()
    assert app["env"].read_text() == app["text"] and pm2_tests.pids(pm2_home, app["name"]) == before
    nothing = run_module(pm2_home, path=str(app["env"]), maintenance_file=str(app["flag"]), disarm=True)
    assert nothing["changed"] is False and nothing["msg"].startswith("No waiter")


def test_the_repoint_task_stops_a_waiter_that_has_not_acted_and_does_the_work_itself(pm2_home: Path,
                                                                                     app: Dict[str, Any]) -> None:
    before = pm2_tests.pids(pm2_home, app["name"])
    armed = run_module(pm2_home, **_args(app, STANDBY.host, STANDBY.port, when_writable={"timeout": 60}))
    pid = armed["waiter"]["pid"]
    repoint = run_module(pm2_home, **_args(app, STANDBY.host, STANDBY.port))
    assert repoint["changed"] is True and repoint["waiter"]["status"] == "cancelled", repoint
    wait_until(lambda: _gone(pid), "the cancelled waiter to exit")
    after = pm2_tests.pids(pm2_home, app["name"])
    assert not set(after.values()) & set(before.values())
    assert set(health_everywhere(app["port"], 2).values()) == {STANDBY.target}
    assert not app["flag"].exists() and not app["state"].exists()


def test_check_mode_leaves_no_waiter_and_bad_input_changes_nothing(pm2_home: Path, app: Dict[str, Any]) -> None:
    plan = run_module(pm2_home, check=True, **_args(app, STANDBY.host, STANDBY.port, when_writable={"timeout": 60}))
    assert plan["changed"] is True and plan["msg"].startswith("Would put the app in maintenance mode and leave a waiter")
    assert not app["flag"].exists() and not app["state"].exists()
    # pm2 is asked by the waiter, while the switch runs: an app it does not know leaves nothing changed
    unknown = run_module(pm2_home, **_args(app, STANDBY.host, STANDBY.port, restart=["akig-no-such-app"],
                                           when_writable={"timeout": 60}))
    assert unknown["changed"] is True and unknown["waiter"]["status"] == "waiting", unknown
    failed = wait_until(lambda: _state(app["state"]) if _state(app["state"]).get("status") == "failed" else None,
                        "the waiter to find the app unknown", timeout=30)
    assert failed["acted"] is False and "akig-no-such-app" in failed["error"], failed
    assert not app["flag"].exists() and app["env"].read_text() == app["text"]
    repoint = run_module(pm2_home, **_args(app, STANDBY.host, STANDBY.port, restart=["akig-no-such-app"]))
    assert repoint.get("failed") is True and "Nothing was changed" in repoint["msg"], repoint
    assert repoint["waiter"]["status"] == "failed" and not app["state"].exists() and not app["flag"].exists()
    assert app["env"].read_text() == app["text"]
    both = run_module(pm2_home, **_args(app, STANDBY.host, STANDBY.port, disarm=True, when_writable={"timeout": 60}))
    assert both.get("failed") is True and both["msg"].startswith("disarm stops a waiter and when_writable leaves one")
