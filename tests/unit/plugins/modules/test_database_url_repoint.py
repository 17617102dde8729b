# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""akig.runbooks.database_url_repoint on real env files in a temporary directory: the rewrite, the backup, the
maintenance file, the owner and mode kept, idempotence, check mode, and the refusals that change nothing and never
show the URL. The parsing itself is covered by the filter's tests (the same module_utils code); the lab tests of
RB-P1-003 run the module on the lab's backends."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
from pathlib import Path
from typing import Any, Dict

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.akig.runbooks.plugins.modules import database_url_repoint as module

SECRET = "S3cr@t-p%40ss"
ENV = ("# AKIG backend\nNODE_ENV=production\n"
       "export DATABASE_URL=\"postgresql://akig:%s@db-1.akig.internal:5432/akig?sslmode=prefer\"  # the primary\n"
       "REDIS_URL=redis://cache-1:6379/0\n" % SECRET)


def run_module(check: bool = False, **args: Any) -> Dict[str, Any]:
    params = dict(args, _ansible_check_mode=check)
    out = io.StringIO()
    with patch_module_args(params), contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        module.main()
    return json.loads(out.getvalue())


@pytest.fixture(name="env")
def env_fixture(tmp_path: Path) -> Path:
    path = tmp_path / "akig.env"
    path.write_text(ENV)
    path.chmod(0o640)
    return path


def test_repoints_the_host_and_port_keeps_the_rest_and_backs_up(env: Path, tmp_path: Path) -> None:
    flag = tmp_path / "maintenance.flag"
    result = run_module(path=str(env), host="db-2.akig.internal", port=6543, maintenance_file=str(flag))
    assert result["changed"] is True and result["lines"] == [3] and result["maintenance"] is True
    assert result["before"] == [{"line": 3, "host": "db-1.akig.internal", "port": 5432}]
    assert env.read_text() == ENV.replace("db-1.akig.internal:5432", "db-2.akig.internal:6543")
    assert stat.S_IMODE(env.stat().st_mode) == 0o640 and flag.exists()
    backup = Path(result["backup_file"])
    assert backup.parent == env.parent and backup.name.startswith("akig.env.") and backup.name.endswith("~")
    assert backup.read_text() == ENV
    assert result["msg"] == "Pointed DATABASE_URL of %s (line 3) at db-2.akig.internal:6543, the app in maintenance mode." % env
    assert SECRET not in json.dumps(result) and "akig?sslmode" not in json.dumps(result)
    assert sorted(p.name for p in env.parent.iterdir()) == sorted(["akig.env", backup.name, "maintenance.flag"]), \
        "no temporary file left behind"


def test_a_second_run_changes_nothing_and_creates_no_maintenance_file(env: Path, tmp_path: Path) -> None:
    run_module(path=str(env), host="db-2.akig.internal")
    flag = tmp_path / "maintenance.flag"
    before = sorted(os.listdir(tmp_path))
    result = run_module(path=str(env), host="db-2.akig.internal", maintenance_file=str(flag))
    assert result["changed"] is False and result["maintenance"] is False and "backup_file" not in result
    assert result["msg"] == "%s already points DATABASE_URL at db-2.akig.internal:5432: nothing to do." % env
    assert sorted(os.listdir(tmp_path)) == before


def test_check_mode_writes_nothing(env: Path, tmp_path: Path) -> None:
    flag = tmp_path / "maintenance.flag"
    result = run_module(check=True, path=str(env), host="db-3.akig.internal", maintenance_file=str(flag))
    assert result["changed"] is True and env.read_text() == ENV and not flag.exists()
    assert result["msg"] == ("Would point DATABASE_URL of %s (line 3) at db-3.akig.internal:5432, the app in maintenance "
                             "mode first." % env)
    assert os.listdir(tmp_path) == ["akig.env"]


def test_a_url_it_cannot_read_is_refused_before_anything_changes(tmp_path: Path) -> None:
    env = tmp_path / "akig.env"
    env.write_text("DATABASE_URL=postgresql://akig:pa/ss@x@db-1:5432/akig\n")
    flag = tmp_path / "maintenance.flag"
    result = run_module(path=str(env), host="db-2", maintenance_file=str(flag))
    assert result["failed"] is True and result["msg"].startswith("%s: line 1 (DATABASE_URL): " % env)
    assert result["msg"].endswith("; nothing was changed") and "pa/ss" not in json.dumps(result)
    assert os.listdir(tmp_path) == ["akig.env"]


@pytest.mark.parametrize("content, args, message", [
    ("NODE_ENV=production\n", dict(host="db-2"),
     "{path}: no DATABASE_URL line (KEY=VALUE, optionally after export) in the env file; nothing was changed"),
    (ENV, dict(host="db 2"), None),
    (ENV, dict(host="db-2", port=70000), None),
])
def test_bad_input_is_refused_with_the_file_unchanged(tmp_path: Path, content: str, args: Dict[str, Any], message: Any) -> None:
    env = tmp_path / "akig.env"
    env.write_text(content)
    result = run_module(path=str(env), maintenance_file=str(tmp_path / "maintenance.flag"), **args)
    assert result["failed"] is True and env.read_text() == content and os.listdir(tmp_path) == ["akig.env"]
    if message:
        assert result["msg"] == message.format(path=env)
    assert SECRET not in json.dumps(result)


def test_a_missing_env_file_is_named(tmp_path: Path) -> None:
    result = run_module(path=str(tmp_path / "nope.env"), host="db-2")
    assert result["failed"] is True
    assert result["msg"] == ("The env file %s does not exist (check akig_backend_env_file). Nothing was changed."
                             % (tmp_path / "nope.env"))


@pytest.mark.parametrize("args, message", [
    ({"health_url": "http://127.0.0.1:4000/api/health"}, "health_url gates the app's return after the restart: give it with restart"),
    ({"restart": ["akig-backend", " "]}, "restart lists an empty app name"),
    ({"restart": ["akig-backend", "akig-backend"]}, "restart lists an app twice (akig-backend)"),
    ({"restart": ["akig-backend"], "health_url": "127.0.0.1:4000/api/health"}, "127.0.0.1:4000/api/health"),
    ({"restart": ["akig-backend"], "health_timeout": 0}, "health_timeout must be a positive number of seconds, got 0"),
])
def test_restart_options_it_cannot_use_are_refused_before_anything_changes(
        env: Path, tmp_path: Path, args: Dict[str, Any], message: str) -> None:
    flag = tmp_path / "maintenance.flag"
    result = run_module(path=str(env), host="db-2.akig.internal", maintenance_file=str(flag),
                        pm2_bin=str(tmp_path / "no-pm2-here"), **args)
    assert result["failed"] is True and message in result["msg"] and result["msg"].endswith("Nothing was changed.")
    assert env.read_text() == ENV and os.listdir(tmp_path) == ["akig.env"]


def test_a_pm2_that_is_not_installed_is_refused_before_anything_changes(env: Path, tmp_path: Path) -> None:
    result = run_module(path=str(env), host="db-2.akig.internal", maintenance_file=str(tmp_path / "maintenance.flag"),
                        restart=["akig-backend"], pm2_bin=str(tmp_path / "no-pm2-here"))
    assert result["failed"] is True and result["changed"] is False
    assert result["msg"].startswith("pm2 binary '%s' not found" % (tmp_path / "no-pm2-here"))
    assert result["msg"].endswith("Nothing was changed (neither %s nor the maintenance file)." % env)
    assert env.read_text() == ENV and os.listdir(tmp_path) == ["akig.env"]
