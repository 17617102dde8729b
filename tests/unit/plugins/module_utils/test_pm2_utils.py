# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils/pm2.py without a pm2 daemon: parsing, the plan, checks of the input and the goal.

The process lists below have the shape of pm2 6 ``jlist`` output (trimmed to the fields the code
reads). The generated start file is evaluated with the real node; the commands run real processes.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils.pm2 import (
    PID_EXITED,
    Identity,
    Pm2Client,
    Pm2Error,
    Request,
    check_goal,
    describe_status,
    env_differences,
    format_memory,
    is_running,
    known_apps,
    mark_exited,
    output_tail,
    parse_jlist,
    parse_memory,
    plan,
    processes_of,
    request_from_params,
    resolve_binary,
    resolve_identity,
    snapshot,
    start_config,
    summarize,
    wait_for,
    watch_pids,
)
from ansible_collections.akig.runbooks.tests.support.clock import FakeClock

HOME = "/srv/akig/pm2"
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "pm2app"


def proc(name: str, pm_id: int, pid: int, status: str = "online", mode: str = "cluster_mode", instance: int = 0,
         memory: Optional[int] = None, env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    pm2_env: Dict[str, Any] = {"name": name, "pm_id": pm_id, "status": status, "exec_mode": mode, "NODE_APP_INSTANCE": instance,
                               "restart_time": 2, "pm_uptime": 1_700_000_000_000, "env": dict(env or {})}
    if memory is not None:
        pm2_env["max_memory_restart"] = memory
    return {"name": name, "pm_id": pm_id, "pid": pid, "monit": {"memory": 61210624, "cpu": 1.5}, "pm2_env": pm2_env}


BACKEND = [proc("akig-backend", 0, 4101, instance=0, memory=600 * 1024 ** 2), proc("akig-backend", 1, 4102, instance=1, memory=600 * 1024 ** 2)]
WORKER = [proc("akig-worker", 2, 4200, mode="fork_mode")]


def request(**kwargs: Any) -> Request:
    kwargs.setdefault("name", "akig-backend")
    return Request(**kwargs)


# --------------------------------------------------------------------------- parsing


BANNER = """
                        -------------

__/\\\\\\\\\\\\\\\\\\\\\\\\\\____/\\\\\\\\____________/\\\\\\\\____/\\\\\\\\\\\\\\\\\\_____
                          Runtime Edition
\x1b[32m[PM2] \x1b[39mSpawning PM2 daemon with pm2_home=/srv/akig/pm2
\x1b[32m[PM2] \x1b[39mPM2 Successfully daemonized
"""


@pytest.mark.parametrize("prefix", ["", BANNER, "[PM2][WARN] Current process list is not synchronized with saved list.\n", "[1, 2]\n"])
def test_parse_jlist_skips_whatever_pm2_printed_first(prefix: str) -> None:
    assert parse_jlist(prefix + json.dumps(BACKEND)) == BACKEND
    assert parse_jlist(prefix + "[]\n") == []


@pytest.mark.parametrize("text", ["", "[PM2] Spawning PM2 daemon", "not json [", "{\"a\": 1}"])
def test_parse_jlist_fails_clearly_without_a_list(text: str) -> None:
    with pytest.raises(Pm2Error) as err:
        parse_jlist(text)
    assert err.value.msg.startswith("could not find the process list (a JSON array) in the output of pm2 jlist")


def test_online_with_pid_zero_is_not_running() -> None:
    quirk = proc("akig-backend", 1, 0, status="online")
    assert not is_running(quirk)
    assert describe_status(quirk) == "online with pid 0 (pm2 gave up restarting it)"
    assert is_running(BACKEND[0]) and not is_running(proc("a", 3, 0, status="stopped"))
    assert not is_running(proc("a", 3, 77, status="launching"))


def test_online_with_an_exited_pid_is_not_running() -> None:
    """pm2 6 marks a cluster worker that died before it was ready "online" when listen_timeout expires."""
    live, dead, stopped = proc("akig-backend", 0, os.getpid()), proc("akig-backend", 1, 4102), proc("w", 2, 4103, status="stopped")
    marked = mark_exited([live, dead, stopped], exists=lambda pid: pid == os.getpid())
    assert [PID_EXITED in entry for entry in marked] == [False, True, False]
    assert is_running(live) and not is_running(dead)
    assert describe_status(dead) == "online according to pm2, but its pid 4102 has exited (it died before it was ready)"
    assert summarize(dead, now=0)["running"] is False and summarize(dead, now=0)["uptime_s"] == 0
    assert check_goal("online", [live, dead], [])[0] is False


def test_summarize_returns_the_documented_fields_and_no_environment() -> None:
    entry = proc("akig-backend", 1, 4102, instance=1, env={"JWT_SECRET": "hush"})
    assert summarize(entry, now=1_700_000_012.9) == {
        "name": "akig-backend", "pm_id": 1, "pid": 4102, "status": "online", "running": True, "restarts": 2, "memory_bytes": 61210624, "cpu": 1.5,
        "uptime_s": 12, "exec_mode": "cluster", "instance": 1,
    }
    assert summarize(proc("w", 2, 0, status="stopped", mode="fork_mode"), now=1_700_000_012.9)["uptime_s"] == 0
    assert summarize({"name": "bare"}, now=0)["status"] == "unknown"


def test_processes_of_orders_by_instance_and_known_apps() -> None:
    shuffled = [BACKEND[1], WORKER[0], BACKEND[0]]
    assert processes_of(shuffled, "akig-backend") == BACKEND
    assert known_apps(shuffled) == ["akig-backend", "akig-worker"]


@pytest.mark.parametrize("value, text, size", [("600M", "600M", 629145600), ("1g", "1G", 1073741824), ("512000K", "512000K", 524288000),
                                               ("629145600", "629145600", 629145600), (" 600 m ", "600M", 629145600), (2048, "2048", 2048)])
def test_parse_memory(value: Any, text: str, size: int) -> None:
    assert parse_memory(value) == (text, size)


@pytest.mark.parametrize("value", ["600MB", "0", "-1M", "1.5G", "", "lots"])
def test_parse_memory_rejects_what_pm2_would_not_take(value: str) -> None:
    with pytest.raises(ValueError, match="is not a memory size"):
        parse_memory(value)


@pytest.mark.parametrize("value, text", [(629145600, "600M"), (1073741824, "1G"), (2048, "2K"),
                                         (1000, "1000"), (None, None), (0, None), ("", None)])
def test_format_memory(value: Any, text: Optional[str]) -> None:
    assert format_memory(value) == text


def test_snapshot_and_env_differences() -> None:
    assert snapshot(BACKEND) == {"status": ["online", "online"], "pids": [4101, 4102], "max_memory_restart": "600M"}
    assert snapshot([]) == {"status": ["absent"], "pids": [], "max_memory_restart": None}
    running = [proc("a", 0, 1, env={"PORT": "4000", "TOKEN": "old"})]
    assert env_differences(running, {"PORT": "4000", "TOKEN": "new", "EXTRA": "x"}) == ["EXTRA", "TOKEN"]
    assert env_differences(running, {"PORT": 4000}) == []
    assert env_differences(running, None) == []


# --------------------------------------------------------------------------- the plan


def test_plan_started_when_online_is_a_no_op() -> None:
    result = plan(request(state="started"), BACKEND + WORKER, True, HOME)
    assert not result.changed and result.warnings == []
    assert result.notes == ["akig-backend is already online (2 instances, cluster mode, pids 4101, 4102)."]


def test_plan_started_restarts_only_the_instance_pm2_gave_up_on() -> None:
    listed = [BACKEND[0], proc("akig-backend", 1, 0, status="online", instance=1)]
    result = plan(request(state="started"), listed, True, HOME)
    assert [step.args for step in result.steps] == [["restart", "1"]]
    assert result.steps[0].done == ("Restarted instance 1 (pm_id 1) of akig-backend, which was online with pid 0 (pm2 gave up restarting it), "
                                    "leaving the running instances alone.")
    assert result.wait == "online" and result.after["pids"] == [4101, "(new)"]


def test_plan_started_when_stopped_starts_with_memory_limit() -> None:
    listed = [proc("akig-backend", 0, 0, status="stopped"), proc("akig-backend", 1, 0, status="stopped", instance=1)]
    result = plan(request(state="started", max_memory_restart="800M", update_env=True), listed, True, HOME)
    assert [step.args for step in result.steps] == [["start", "akig-backend", "--max-memory-restart", "800M", "--update-env"]]
    assert result.steps[0].would == ("Would start akig-backend (2 instances, cluster mode, now stopped), "
                                     "setting max_memory_restart 800M (was unset).")


def test_plan_unknown_app_without_source_fails_with_known_apps() -> None:
    with pytest.raises(Pm2Error) as err:
        plan(request(state="started"), WORKER, True, HOME)
    assert err.value.msg == ("pm2 app 'akig-backend' is not known to pm2 at PM2_HOME=/srv/akig/pm2; give ecosystem= or script= to start it, "
                             "or check the name (known apps: akig-worker)")
    with pytest.raises(Pm2Error) as err:
        plan(request(state="started"), [], False, HOME)
    assert err.value.msg.endswith("(known apps: none, the pm2 daemon is not running)")


@pytest.mark.parametrize("state, hint", [("stopped", "check the name"), ("restarted", "check the name, or give ecosystem= or script= to start it"),
                                         ("reloaded", "check the name, or give ecosystem= or script= to start it")])
def test_plan_unknown_app_for_other_states(state: str, hint: str) -> None:
    with pytest.raises(Pm2Error) as err:
        plan(request(state=state, name="akig-backnd"), BACKEND + WORKER, True, HOME)
    assert err.value.msg == ("pm2 app 'akig-backnd' is not known to pm2 at PM2_HOME=/srv/akig/pm2, so it cannot be %s; %s "
                             "(known apps: akig-backend, akig-worker)" % (state, hint))


def test_plan_stopped_with_a_script_still_fails_for_an_unknown_app() -> None:
    with pytest.raises(Pm2Error):
        plan(request(state="stopped", script="/srv/app.js"), [], True, HOME)


def test_plan_start_from_source_starts_the_daemon_first() -> None:
    req = request(state="restarted", ecosystem="/srv/akig/ecosystem.config.js", exec_mode="cluster", instances=2,
                  max_memory_restart="600M", env={"PORT": "4000"})
    result = plan(req, [], False, HOME)
    assert [step.args[0] for step in result.steps] == ["ping", "start"]
    assert [step.with_env for step in result.steps] == [False, True], "the daemon must not inherit env="
    assert result.steps[0].would == "Would start the pm2 daemon at PM2_HOME=/srv/akig/pm2."
    assert result.steps[1].would == ("Would start akig-backend from ecosystem file /srv/akig/ecosystem.config.js (cluster mode, 2 instances, "
                                     "max_memory_restart 600M, environment variables PORT), because pm2 did not know it (nothing to restart).")
    assert result.steps[1].args[1:] == ["akig-pm2-start.config.js", "--only", "akig-backend"]
    assert result.steps[1].cwd == "/srv/akig"
    assert '"max_memory_restart": "600M"' in result.steps[1].start_config and "4000" not in result.steps[1].start_config
    assert plan(req, WORKER, True, HOME).steps[0].args[0] == "start"


@pytest.mark.parametrize(
    "listed, changed, args",
    [
        (BACKEND, True, ["stop", "akig-backend"]),
        ([proc("akig-backend", 0, 0, status="errored")], True, ["stop", "akig-backend"]),
        ([proc("akig-backend", 0, 0, status="stopped")], False, None),
    ],
)
def test_plan_stopped(listed: List[Dict[str, Any]], changed: bool, args: Optional[List[str]]) -> None:
    result = plan(request(state="stopped"), listed, True, HOME)
    assert result.changed is changed
    assert (result.steps[0].args if result.steps else None) == args


def test_plan_absent() -> None:
    result = plan(request(state="absent"), BACKEND, True, HOME)
    assert result.steps[0].args == ["delete", "akig-backend"] and result.wait == "absent"
    assert result.steps[0].done == "Deleted akig-backend (2 instances, cluster mode) from pm2."
    gone = plan(request(state="absent"), [], False, HOME)
    assert not gone.changed and gone.notes == ["akig-backend is not known to pm2 at PM2_HOME=/srv/akig/pm2; nothing to delete."]


def test_plan_restarted_applies_memory_limit_and_environment() -> None:
    result = plan(request(state="restarted", max_memory_restart="1G", update_env=True), BACKEND, True, HOME)
    assert result.steps[0].args == ["restart", "akig-backend", "--max-memory-restart", "1G", "--update-env"]
    assert result.steps[0].done == "Restarted akig-backend (2 instances, cluster mode), setting max_memory_restart 1G (was 600M)."
    assert result.after == {"status": ["online", "online"], "pids": ["(new)", "(new)"], "max_memory_restart": "1G"}
    assert result.wait == "online_new"


def test_plan_restarted_in_parallel_is_one_restart_per_instance_with_the_same_arguments() -> None:
    result = plan(request(state="restarted", parallel=True, max_memory_restart="1G", update_env=True), BACKEND, True, HOME)
    step = result.steps[0]
    assert len(result.steps) == 1 and step.args == [] and step.with_env is True
    assert [(command.what, command.args, command.logs) for command in step.concurrent] == [
        ("instance 0 (pm_id 0) of akig-backend", ["restart", "0", "--max-memory-restart", "1G", "--update-env"], "0"),
        ("instance 1 (pm_id 1) of akig-backend", ["restart", "1", "--max-memory-restart", "1G", "--update-env"], "1"),
    ]
    assert step.would.startswith("Would restart the 2 instances of akig-backend at once (cluster mode, one pm2 restart per "
                                 "instance: pm_ids 0, 1)")
    assert result.wait == "online_new" and result.after["pids"] == ["(new)", "(new)"]


@pytest.mark.parametrize("state, listed", [("restarted", WORKER), ("reloaded", BACKEND)])
def test_plan_parallel_changes_nothing_for_one_instance_or_a_cluster_reload(state: str, listed: List[Dict[str, Any]]) -> None:
    name = listed[0]["name"]
    assert plan(request(name=name, state=state, parallel=True), listed, True, HOME).steps[0].args == \
        plan(request(name=name, state=state), listed, True, HOME).steps[0].args
    assert not plan(request(name=name, state=state, parallel=True), listed, True, HOME).steps[0].concurrent


def test_plan_reloaded_in_cluster_mode() -> None:
    result = plan(request(state="reloaded"), BACKEND, True, HOME)
    assert result.steps[0].args == ["reload", "akig-backend"]
    assert result.steps[0].done == "Reloaded akig-backend (2 instances, cluster mode) with zero downtime, one cluster instance at a time."


def test_plan_reloaded_in_fork_mode_falls_back_or_refuses() -> None:
    result = plan(request(name="akig-worker", state="reloaded"), WORKER, True, HOME)
    assert result.steps[0].args == ["restart", "akig-worker"]
    assert result.steps[0].would == ("Would restart akig-worker (1 instance, fork mode): it runs in fork mode, where pm2 cannot reload without "
                                     "downtime, so it is restarted instead (reload_fallback=true).")
    with pytest.raises(Pm2Error, match="runs in fork mode, where pm2 cannot reload it without downtime; use state=restarted"):
        plan(request(name="akig-worker", state="reloaded", reload_fallback=False), WORKER, True, HOME)


def test_plan_reloaded_when_not_running_restarts() -> None:
    listed = [proc("akig-backend", 0, 0, status="errored")]
    result = plan(request(state="reloaded", reload_fallback=False), listed, True, HOME)
    assert result.steps[0].args == ["restart", "akig-backend"]
    assert "it is not running (errored), so it is restarted rather than reloaded" in result.steps[0].done


def test_plan_started_warns_about_settings_it_does_not_apply() -> None:
    req = request(state="started", exec_mode="fork", instances=4, max_memory_restart="1G", env={"TOKEN": "new"})
    result = plan(req, BACKEND, True, HOME)
    assert not result.changed
    assert result.warnings == [
        "akig-backend runs in cluster mode, not fork: exec_mode applies only when the module starts an app pm2 does not know "
        "(delete it with state=absent first to change it)",
        "akig-backend has 2 instance(s), not 4: instances applies only when the module starts an app pm2 does not know (pm2 scale changes it)",
        "akig-backend runs with other values of the environment variables TOKEN than env= gives; set update_env=true to apply them",
        "akig-backend runs with max_memory_restart 600M, not 1G: state=restarted or state=reloaded applies it",
    ]
    assert "new" not in json.dumps(result.warnings)


def test_plan_started_with_update_env_reloads_a_changed_environment() -> None:
    listed = [proc("akig-backend", 0, 11, env={"TOKEN": "old"}), proc("akig-backend", 1, 12, instance=1, env={"TOKEN": "old"})]
    result = plan(request(state="started", env={"TOKEN": "new"}, update_env=True), listed, True, HOME)
    assert result.steps[0].args == ["reload", "akig-backend", "--update-env"] and result.steps[0].with_env
    assert result.steps[0].done == "Reloaded akig-backend (2 instances, cluster mode) to apply the changed environment variables TOKEN."
    same = plan(request(state="started", env={"TOKEN": "old"}, update_env=True), listed, True, HOME)
    assert not same.changed


# --------------------------------------------------------------------------- goals


@pytest.mark.parametrize(
    "goal, listed, old, reached",
    [
        ("online", BACKEND, [], True),
        ("online", [BACKEND[0], proc("akig-backend", 1, 0, instance=1)], [], False),
        ("online", [], [], False),
        ("online_new", BACKEND, [4101], False),
        ("online_new", BACKEND, [4001, 4002], True),
        ("stopped", [proc("akig-backend", 0, 0, status="stopped")], [], True),
        ("stopped", BACKEND, [], False),
        ("absent", [], [], True),
        ("absent", BACKEND, [], False),
    ],
)
def test_check_goal(goal: str, listed: List[Dict[str, Any]], old: List[int], reached: bool) -> None:
    ok, why = check_goal(goal, listed, old)
    assert ok is reached
    assert bool(why) is not reached


def test_check_goal_says_why_not() -> None:
    assert check_goal("online_new", BACKEND, [4101]) == (False, "instance 0 still has its old pid 4101")
    assert check_goal("online", [proc("akig-backend", 1, 0, instance=1)], [])[1] == (
        "instance 1 (pm_id 1) online with pid 0 (pm2 gave up restarting it), pid 0, 2 restarts")


# --------------------------------------------------------------------------- input, binary, user


@pytest.mark.parametrize(
    "params, message",
    [
        ({"name": "all"}, "pm2 app name 'all' is not usable"),
        ({"name": "3"}, "pm2 app name '3' is not usable"),
        ({"name": "a", "max_memory_restart": "lots"}, "max_memory_restart 'lots' is not a memory size"),
        ({"name": "a", "instances": -2}, "instances=-2 is not valid"),
        ({"name": "a", "timeout": 0}, "timeout=0 is not valid"),
        ({"name": "a", "ecosystem": "/nonexistent/ecosystem.config.js"}, "ecosystem file '/nonexistent/ecosystem.config.js' for pm2 app 'a' does not exist"),
    ],
)
def test_request_from_params_rejects_bad_input(params: Dict[str, Any], message: str) -> None:
    with pytest.raises(Pm2Error) as err:
        request_from_params(params)
    assert message in err.value.msg


def test_request_from_params_normalises() -> None:
    req = request_from_params({"name": " akig-backend ", "max_memory_restart": "600m", "env": {"PORT": 4000, "EMPTY": None},
                               "script": str(FIXTURES / "app.js")})
    assert req.name == "akig-backend" and req.max_memory_restart == "600M" and req.env == {"PORT": "4000", "EMPTY": ""}
    assert req.state == "started" and req.timeout == 60 and req.reload_fallback and req.wait_online


def test_resolve_binary(tmp_path: Path) -> None:
    tool = tmp_path / "bin" / "pm2"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o644)
    with pytest.raises(Pm2Error) as err:
        resolve_binary(str(tool))
    assert err.value.msg == "pm2 binary '%s' not found; install pm2 (npm install -g pm2) or set pm2_bin" % tool
    tool.chmod(0o755)
    assert resolve_binary(str(tool)) == str(tool)
    assert resolve_binary("pm2", path=str(tool.parent)) == str(tool)
    with pytest.raises(Pm2Error, match="pm2 binary 'pm2-nope' not found"):
        resolve_binary("pm2-nope", path=str(tool.parent))


def test_resolve_identity() -> None:
    me = pwd.getpwuid(os.geteuid())
    assert resolve_identity(None) == Identity(me.pw_name, me.pw_dir, [])
    assert resolve_identity(me.pw_name).prefix == []
    with pytest.raises(Pm2Error, match="user 'no-such-user-akig' does not exist"):
        resolve_identity("no-such-user-akig")
    with pytest.raises(Pm2Error, match="running pm2 as user 'root' needs root, but the module runs as 'nobody'; add become: true"):
        resolve_identity("root", euid=pwd.getpwnam("nobody").pw_uid)
    if os.geteuid() == 0:
        nobody = resolve_identity("nobody")
        assert nobody.prefix[1:] == ["-u", "nobody", "--"] and nobody.prefix[0].endswith("runuser")


def test_client_passes_env_only_to_commands_that_start_apps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANSIBLE_MODULE_SOMETHING", "x")
    client = Pm2Client("/usr/bin/pm2", HOME, Identity("akig", "/home/akig", ["/usr/sbin/runuser", "-u", "akig", "--"]), env={"TOKEN": "hush"})
    assert client.argv(["jlist"]) == ["/usr/sbin/runuser", "-u", "akig", "--", "/usr/bin/pm2", "jlist"]
    plain = client.command_env(with_env=False)
    assert plain["PM2_HOME"] == HOME and plain["HOME"] == "/home/akig" and plain["USER"] == "akig"
    assert "TOKEN" not in plain and "ANSIBLE_MODULE_SOMETHING" not in plain
    assert client.command_env(with_env=True)["TOKEN"] == "hush"


@pytest.mark.process  # runs `false` and `sleep`
def test_client_reports_failures_and_hangs(tmp_path: Path) -> None:
    me = resolve_identity(None)
    failing = Pm2Client(shutil.which("false") or "/bin/false", str(tmp_path), me)
    with pytest.raises(Pm2Error) as err:
        failing.run(["jlist"])
    assert err.value.msg == "pm2 jlist failed (exit 1) at PM2_HOME=%s: (no output)" % tmp_path
    hanging = Pm2Client(shutil.which("sleep") or "/bin/sleep", str(tmp_path), me, timeout=0.3)
    with pytest.raises(Pm2Error, match=r"pm2 5 did not finish within 0.3 s at PM2_HOME=.*; pm2 may be hung"):
        hanging.run(["5"])


@pytest.mark.process  # a short-lived python3 gives a dead pid
def test_daemon_running_reads_the_pid_file_without_starting_anything(tmp_path: Path) -> None:
    client = Pm2Client("/nonexistent/pm2", str(tmp_path), resolve_identity(None))
    assert client.daemon_running() is False
    assert client.processes() == (False, [])
    (tmp_path / "pm2.pid").write_text(str(os.getpid()))
    assert client.daemon_running() is True
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    (tmp_path / "pm2.pid").write_text(done.stdout.strip())
    assert client.daemon_running() is False


def test_output_tail_drops_tables_and_stack_frames() -> None:
    stderr = "\x1b[31m[PM2][ERROR]\x1b[39m File x malformated\nError: boom\n    at Object.<anonymous> (/tmp/x.js:1:1)\n"
    stdout = "\u250c\u2500\u2500\u2510\n\u2502 id \u2502\n\u2514\u2500\u2500\u2518\n"
    assert output_tail(stdout, stderr) == "[PM2][ERROR] File x malformated | Error: boom"
    assert output_tail("x" * 2000, "").endswith("x") and len(output_tail("x" * 2000, "")) == 800


# --------------------------------------------------------------------------- the generated start file, with the real node


def load_start_config(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    config = tmp_path / "akig-pm2-start.config.js"
    config.write_text(text)
    return subprocess.run(["node", "-e", "console.log(JSON.stringify(require(process.argv[1])))", str(config)], capture_output=True,
                          text=True, timeout=30, check=False)


@pytest.mark.process  # node loads the ecosystem file
@pytest.mark.skipif(not shutil.which("node"), reason="needs Node.js (scripts/setup.sh installs it)")
def test_start_config_loads_the_app_from_the_ecosystem_with_overrides(tmp_path: Path) -> None:
    text = start_config("akig-test-cluster", str(FIXTURES / "ecosystem.config.js"), None, {"instances": 3, "max_memory_restart": "600M"})
    loaded = json.loads(load_start_config(tmp_path, text).stdout)
    assert [app["name"] for app in loaded["apps"]] == ["akig-test-cluster"]
    app = loaded["apps"][0]
    assert app["instances"] == 3 and app["max_memory_restart"] == "600M" and app["exec_mode"] == "cluster" and app["wait_ready"] is True

    missing = load_start_config(tmp_path, start_config("akig-nope", str(FIXTURES / "ecosystem.config.js"), None, {}))
    assert missing.returncode != 0
    assert ("AKIG_PM2: ecosystem file %s defines no app named akig-nope (its apps: akig-test-cluster, akig-test-crash)"
            % (FIXTURES / "ecosystem.config.js")) in missing.stderr

    eco_json = tmp_path / "eco.json"
    eco_json.write_text("{apps: [{name: 'j', script: 'app.js', instances: 1}]}  // JSON5-ish, as pm2 accepts")
    loaded = json.loads(load_start_config(tmp_path, start_config("j", str(eco_json), None, {"exec_mode": "fork"})).stdout)
    assert loaded == {"apps": [{"name": "j", "script": "app.js", "instances": 1, "exec_mode": "fork"}]}

    script = json.loads(load_start_config(tmp_path, start_config("s", None, "/srv/app.js", {"exec_mode": "fork"})).stdout)
    assert script == {"apps": [{"name": "s", "script": "/srv/app.js", "exec_mode": "fork"}]}


# --------------------------------------------------------------------------- waiting: the stable window


class ListedClient:
    """Stands in for Pm2Client.jlist: hands out the given process lists in turn (the last one for ever),
    each read costing ``cost`` seconds of the fake clock, as a pm2 CLI run would."""

    home = HOME
    binary = "/usr/bin/pm2"

    def __init__(self, clock: FakeClock, lists: List[List[Dict[str, Any]]], cost: float = 0.2) -> None:
        self.clock, self.lists, self.cost, self.reads = clock, lists, cost, 0

    def jlist(self) -> List[Dict[str, Any]]:
        self.clock.now += self.cost
        listed = self.lists[min(self.reads, len(self.lists) - 1)]
        self.reads += 1
        return [dict(entry) for entry in listed]


def test_watch_pids_is_true_only_when_every_pid_lives_through_the_window() -> None:
    clock = FakeClock()
    assert watch_pids([4101, 4102], clock.now + 0.3, clock, clock.sleep, lambda pid: True) is True
    assert clock.now >= 100.3 and max(clock.slept) <= 0.05 + 1e-9
    deaths = iter([True, True, True, False])
    clock = FakeClock()
    assert watch_pids([4101, 4102], clock.now + 1.0, clock, clock.sleep, lambda pid: next(deaths)) is False
    assert clock.now < 101.0  # it says so as soon as one is gone, not at the end of the window
    assert watch_pids([os.getpid()], FakeClock().now, FakeClock(), lambda s: None) is True  # the real /proc lookup


def test_wait_for_watches_the_stable_window_in_proc_with_one_pm2_read() -> None:
    clock = FakeClock()
    client = ListedClient(clock, [BACKEND])
    listed, reached = wait_for(client, "akig-backend", "online_new", [4001, 4002], 30, stable_s=0.3, clock=clock, sleep=clock.sleep,
                               is_alive=lambda pid: pid in (4101, 4102))
    assert client.reads == 1, "the stable window cost more pm2 runs"
    assert [entry["pid"] for entry in processes_of(listed, "akig-backend")] == [4101, 4102]
    assert reached == pytest.approx(100.2) and clock.now >= reached + 0.3


def test_wait_for_starts_the_window_again_when_an_instance_dies_in_it() -> None:
    """A crash right after ready: pm2 restarts the instance with a new pid; the window starts again from it."""
    clock = FakeClock()
    crashed = [BACKEND[0], proc("akig-backend", 1, 4103, instance=1)]
    client = ListedClient(clock, [BACKEND, BACKEND, crashed])
    dead = {4102}
    listed, reached = wait_for(client, "akig-backend", "online_new", [4001, 4002], 30, stable_s=1.0, clock=clock, sleep=clock.sleep,
                               is_alive=lambda pid: pid not in dead)
    assert [entry["pid"] for entry in processes_of(listed, "akig-backend")] == [4101, 4103]
    assert client.reads == 3 and reached > 100.2 and clock.now >= reached + 1.0


def test_wait_for_fails_when_an_instance_never_lives_through_the_window() -> None:
    clock = FakeClock()
    client = ListedClient(clock, [BACKEND])
    with pytest.raises(Pm2Error) as failure:
        wait_for(client, "akig-backend", "online", [], 3, stable_s=1.0, clock=clock, sleep=clock.sleep, is_alive=lambda pid: pid != 4102)
    assert failure.value.msg.startswith("pm2 app 'akig-backend' did not come online within 3 s (it kept restarting)")
    assert clock.now >= 103
