# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""akig.runbooks.pm2 against a real pm2 daemon and real node apps (nothing mocked).

The daemon has its own PM2_HOME under the pytest tmp dir and is killed at the end of the
module; the apps (tests/unit/fixtures/pm2app) listen on free 127.0.0.1 ports. Most cases call
the module's main() in-process (same argument spec, same JSON result); one runs through
``ansible localhost -m akig.runbooks.pm2`` and ``ansible-doc`` renders the documentation.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.akig.runbooks.plugins.modules import pm2 as pm2_module

REPO = Path(__file__).resolve().parents[4]
PM2 = REPO / "lab" / "node_modules" / ".bin" / "pm2"
FIXTURES = REPO / "tests" / "unit" / "fixtures" / "pm2app"
APP = FIXTURES / "app.js"
ECOSYSTEM = FIXTURES / "ecosystem.config.js"
VENV_BIN = Path(sys.executable).parent
RESULT_RE = re.compile(r"^localhost \| (?P<status>[A-Z]+!?) => (?P<json>\{.*)", re.MULTILINE | re.DOTALL)
SECRET = "s3cret-CANARY-pm2-7f1e"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def health(port: int, timeout: float = 2) -> Dict[str, Any]:
    with urllib.request.urlopen("http://127.0.0.1:%d/api/health" % port, timeout=timeout) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def pm2_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if not os.access(PM2, os.X_OK) or not shutil.which("node"):
        pytest.fail("the pm2 module tests need Node.js and pm2 in lab/node_modules: run scripts/setup.sh (npm ci --prefix lab)")
    home = tmp_path_factory.mktemp("pm2") / "home"
    yield home
    subprocess.run([str(PM2), "kill"], env=dict(os.environ, PM2_HOME=str(home)), cwd="/", capture_output=True, timeout=60, check=False)


def jlist(home: Path) -> List[Dict[str, Any]]:
    """The raw process list, read with pm2 itself (not with the module's code)."""
    proc = subprocess.run([str(PM2), "jlist"], env=dict(os.environ, PM2_HOME=str(home)), cwd="/", capture_output=True, text=True,
                          timeout=30, check=True)
    return json.loads(proc.stdout[proc.stdout.index("["):])


def pids(home: Path, name: str | None = None) -> Dict[int, int]:
    return {p["pm_id"]: p["pid"] for p in jlist(home) if name is None or p["name"] == name}


def run_module(home: Path, check: bool = False, diff: bool = False, **args: Any) -> Dict[str, Any]:
    params: Dict[str, Any] = {"pm2_bin": str(PM2), "pm2_home": str(home), "timeout": 30}
    params.update(args)
    params.update(_ansible_check_mode=check, _ansible_diff=diff)
    out = io.StringIO()
    with patch_module_args(params), contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        pm2_module.main()
    return json.loads(out.getvalue())


class Load:
    """A thread sending ~50 requests/s to /api/health for as long as it runs."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ok = 0
        self.failures: List[str] = []
        self.pids: set = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            begin = time.monotonic()
            try:
                # a slow answer on a busy 2-core machine is not a dropped request: only refusals and
                # resets count, so the per-request timeout is generous
                self.pids.add(health(self.port, timeout=10)["pid"])
                self.ok += 1
            except Exception as exc:  # pylint: disable=broad-except  # every failure counts, whatever its kind
                self.failures.append(repr(exc))
            self._stop.wait(max(0.0, 0.02 - (time.monotonic() - begin)))

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)


# --------------------------------------------------------------------------- errors before anything


def test_missing_pm2_binary_fails_before_anything(tmp_path: Path) -> None:
    home = tmp_path / "never"
    result = run_module(home, pm2_bin=str(tmp_path / "no" / "pm2"), name="akig-backend", script=str(APP))
    assert result["failed"] is True
    assert result["msg"] == "pm2 binary '%s' not found; install pm2 (npm install -g pm2) or set pm2_bin" % (tmp_path / "no" / "pm2")
    assert not home.exists()
    on_path = run_module(home, pm2_bin="pm2-not-installed-anywhere", name="akig-backend", script=str(APP))
    assert on_path["msg"].startswith("pm2 binary 'pm2-not-installed-anywhere' not found; install pm2")


@pytest.mark.parametrize(
    "args, message",
    [
        ({"max_memory_restart": "600 MB"}, "max_memory_restart '600 MB' is not a memory size"),
        ({"script": "/nonexistent/app.js"}, "script '/nonexistent/app.js' for pm2 app 'akig-backend' does not exist"),
        ({"name": "all"}, "pm2 app name 'all' is not usable"),
        ({"ecosystem": str(ECOSYSTEM), "script": str(APP)}, "parameters are mutually exclusive: ecosystem|script"),
    ],
)
def test_invalid_input_fails_with_a_clear_message(tmp_path: Path, args: Dict[str, Any], message: str) -> None:
    params = {"name": "akig-backend"}
    params.update(args)
    result = run_module(tmp_path / "home", **params)
    assert result["failed"] is True and message in result["msg"]
    assert not (tmp_path / "home").exists()


# --------------------------------------------------------------------------- a fork-mode app from a script


def test_fork_app_lifecycle(pm2_home: Path) -> None:
    port = free_port()
    name = "akig-test-fork"
    start = dict(name=name, script=str(APP), exec_mode="fork", max_memory_restart="300M", env={"PORT": str(port), "AKIG_TOKEN": SECRET})

    daemon_up = (pm2_home / "pm2.pid").exists()
    plan = run_module(pm2_home, check=True, **start)
    assert plan["changed"] is True and not plan.get("failed")
    assert plan["actions"] == ([] if daemon_up else ["Would start the pm2 daemon at PM2_HOME=%s." % pm2_home]) + [
        "Would start %s from script %s (fork mode, max_memory_restart 300M, environment variables AKIG_TOKEN, PORT)." % (name, APP),
    ]
    assert (pm2_home / "pm2.pid").exists() == daemon_up, "check mode must not start a daemon"

    first = run_module(pm2_home, diff=True, **start)
    assert first["changed"] is True, first
    if not daemon_up:
        assert first["actions"][0] == "Started the pm2 daemon at PM2_HOME=%s." % pm2_home
    assert first["processes"][0]["status"] == "online" and first["processes"][0]["pid"] > 0
    assert first["processes"][0]["exec_mode"] == "fork"
    assert set(first["processes"][0]) == {"name", "pm_id", "pid", "status", "running", "restarts", "memory_bytes", "cpu", "uptime_s", "exec_mode", "instance"}
    assert first["diff"]["after"]["max_memory_restart"] == "300M"
    assert SECRET not in json.dumps(first)
    assert health(port)["status"] == "ok"
    raw = [p for p in jlist(pm2_home) if p["name"] == name]
    assert raw[0]["pm2_env"]["max_memory_restart"] == 300 * 1024 * 1024
    assert raw[0]["pm2_env"]["env"]["AKIG_TOKEN"] == SECRET

    again = run_module(pm2_home, **start)
    assert again["changed"] is False and again["actions"] == ["%s is already online (1 instance, fork mode, pids %s)." % (
        name, first["processes"][0]["pid"])]

    before = pids(pm2_home)
    check = run_module(pm2_home, check=True, diff=True, name=name, state="restarted")
    assert check["changed"] is True and check["actions"] and check["actions"][0].startswith("Would restart %s" % name)
    assert check["diff"]["after"]["pids"] == ["(new)"]
    assert pids(pm2_home) == before
    # parallel changes nothing for an app with one instance
    one = run_module(pm2_home, check=True, name=name, state="restarted", parallel=True)
    assert one["actions"] == ["Would restart %s (1 instance, fork mode)." % name]

    restarted = run_module(pm2_home, name=name, state="restarted")
    assert restarted["changed"] is True
    assert restarted["processes"][0]["pid"] not in before.values()
    assert 0 < restarted["online_after_s"] < 10
    print("fork restart: online after %.2f s" % restarted["online_after_s"])
    assert health(port)["pid"] == restarted["processes"][0]["pid"]

    refused = run_module(pm2_home, name=name, state="reloaded", reload_fallback=False)
    assert refused["failed"] is True and "runs in fork mode, where pm2 cannot reload it without downtime" in refused["msg"]
    assert pids(pm2_home, name) == {restarted["processes"][0]["pm_id"]: restarted["processes"][0]["pid"]}

    reloaded = run_module(pm2_home, name=name, state="reloaded")
    assert reloaded["changed"] is True
    assert "fork mode, where pm2 cannot reload without downtime, so it is restarted instead (reload_fallback=true)" in reloaded["actions"][0]
    assert reloaded["processes"][0]["pid"] != restarted["processes"][0]["pid"]

    stopped = run_module(pm2_home, name=name, state="stopped", diff=True)
    assert stopped["changed"] is True and stopped["processes"][0]["status"] == "stopped" and stopped["processes"][0]["pid"] == 0
    assert stopped["diff"] == {
        "before": {"status": ["online"], "pids": [reloaded["processes"][0]["pid"]], "max_memory_restart": "300M"},
        "after": {"status": ["stopped"], "pids": [0], "max_memory_restart": "300M"},
    }
    with pytest.raises(OSError):
        health(port, timeout=0.5)
    assert run_module(pm2_home, name=name, state="stopped")["changed"] is False

    started = run_module(pm2_home, name=name, state="started")
    assert started["changed"] is True and started["actions"][0].startswith("Started %s (1 instance, fork mode, was stopped)" % name)
    assert health(port)["status"] == "ok"

    gone = run_module(pm2_home, name=name, state="absent")
    assert gone["changed"] is True and gone["processes"] == []
    assert name not in {p["name"] for p in jlist(pm2_home)}
    assert run_module(pm2_home, name=name, state="absent")["changed"] is False


# --------------------------------------------------------------------------- a cluster app from an ecosystem file


@pytest.fixture(scope="module")
def cluster(pm2_home: Path) -> Dict[str, Any]:
    port = free_port()
    result = run_module(pm2_home, name="akig-test-cluster", ecosystem=str(ECOSYSTEM), env={"PORT": str(port)})
    assert result["changed"] is True, result
    assert [p["exec_mode"] for p in result["processes"]] == ["cluster", "cluster"]
    assert [p["instance"] for p in result["processes"]] == [0, 1]
    return {"port": port, "name": "akig-test-cluster"}


def test_cluster_started_twice_is_idempotent(pm2_home: Path, cluster: Dict[str, Any]) -> None:
    before = pids(pm2_home, cluster["name"])
    second = run_module(pm2_home, name=cluster["name"], ecosystem=str(ECOSYSTEM), env={"PORT": str(cluster["port"])})
    assert second["changed"] is False, second
    assert pids(pm2_home, cluster["name"]) == before
    assert {p["name"] for p in second["all_processes"]} >= {cluster["name"]}


def test_cluster_reload_has_zero_downtime_and_applies_max_memory_restart(pm2_home: Path, cluster: Dict[str, Any]) -> None:
    name = cluster["name"]
    before = pids(pm2_home, name)
    with Load(cluster["port"]) as load:
        time.sleep(0.3)
        result = run_module(pm2_home, diff=True, name=name, state="reloaded", max_memory_restart="700M")
        time.sleep(0.3)
    assert result["changed"] is True, result
    assert result["actions"][0] == (
        "Reloaded %s (2 instances, cluster mode), setting max_memory_restart 700M (was unset) with zero downtime, "
        "one cluster instance at a time." % name)
    assert load.failures == [], "%d of %d requests failed during the reload" % (len(load.failures), load.ok + len(load.failures))
    assert load.ok >= 20
    after = pids(pm2_home, name)
    assert set(after) == set(before) and not set(after.values()) & set(before.values())
    assert load.pids & set(after.values()), "the new instances served requests"
    assert result["diff"]["before"]["max_memory_restart"] is None and result["diff"]["after"]["max_memory_restart"] == "700M"
    assert all(p["pm2_env"]["max_memory_restart"] == 700 * 1024 * 1024 for p in jlist(pm2_home) if p["name"] == name)
    print("reload: %d requests, %d failed, online after %.2f s" % (load.ok + len(load.failures), len(load.failures), result["online_after_s"]))


def test_started_restarts_only_the_instance_that_is_down(pm2_home: Path, cluster: Dict[str, Any]) -> None:
    name = cluster["name"]
    before = pids(pm2_home, name)
    down_id, up_id = sorted(before)
    subprocess.run([str(PM2), "stop", str(down_id)], env=dict(os.environ, PM2_HOME=str(pm2_home)), cwd="/", capture_output=True,
                   timeout=30, check=True)
    result = run_module(pm2_home, name=name)
    assert result["changed"] is True
    assert result["actions"][0] == ("Restarted instance 0 (pm_id %d) of %s, which was stopped, leaving the running instances alone."
                                    % (down_id, name))
    after = pids(pm2_home, name)
    assert after[up_id] == before[up_id] and after[down_id] > 0
    assert health(cluster["port"])["status"] == "ok"


def test_update_env_applies_a_changed_secret_without_showing_it(pm2_home: Path, cluster: Dict[str, Any]) -> None:
    name = cluster["name"]
    # a value no earlier test can have applied to the shared cluster
    secret = "%s-%s" % (SECRET, uuid.uuid4().hex[:8])
    env = {"PORT": str(cluster["port"]), "AKIG_TOKEN": secret}
    warned = run_module(pm2_home, name=name, env=env)
    assert warned["changed"] is False, warned
    # without update_env the running app keeps its environment (the module warns instead)
    assert not any(p["pm2_env"]["env"].get("AKIG_TOKEN") == secret for p in jlist(pm2_home) if p["name"] == name)
    applied = run_module(pm2_home, name=name, env=env, update_env=True)
    assert applied["changed"] is True
    assert applied["actions"][0].startswith("Reloaded %s (2 instances, cluster mode) to apply the changed environment variables AKIG_TOKEN" % name)
    assert secret not in json.dumps(applied) and secret not in json.dumps(warned)
    assert all(p["pm2_env"]["env"]["AKIG_TOKEN"] == secret for p in jlist(pm2_home) if p["name"] == name)
    assert run_module(pm2_home, name=name, env=env, update_env=True)["changed"] is False


@pytest.mark.parametrize("state", ["started", "stopped", "restarted", "reloaded"])
def test_unknown_app_fails_listing_known_apps_and_changes_nothing(pm2_home: Path, cluster: Dict[str, Any], state: str) -> None:
    before = pids(pm2_home)
    result = run_module(pm2_home, name="akig-backnd", state=state)
    assert result["failed"] is True
    known = sorted({p["name"] for p in jlist(pm2_home)})
    assert cluster["name"] in known
    if state == "started":
        assert result["msg"] == (
            "pm2 app 'akig-backnd' is not known to pm2 at PM2_HOME=%s; give ecosystem= or script= to start it, or check the name "
            "(known apps: %s)" % (pm2_home, ", ".join(known)))
    else:
        assert result["msg"].startswith("pm2 app 'akig-backnd' is not known to pm2 at PM2_HOME=%s, so it cannot be %s; check the name"
                                        % (pm2_home, state))
        assert result["msg"].endswith("(known apps: %s)" % ", ".join(known))
    assert pids(pm2_home) == before


def test_app_crashing_at_boot_fails_with_its_status(pm2_home: Path, cluster: Dict[str, Any]) -> None:
    result = run_module(pm2_home, name="akig-test-crash", ecosystem=str(ECOSYSTEM), timeout=15)
    assert result["failed"] is True and result["changed"] is True
    assert result["msg"].startswith("pm2 app 'akig-test-crash' did not come online: pm2 gave up restarting it (instance 0")
    assert "errored" in result["msg"] and "logs akig-test-crash --lines 50 --nostream" in result["msg"]
    assert result["processes"][0]["status"] == "errored" and result["processes"][0]["pid"] == 0
    missing = run_module(pm2_home, name="akig-test-nope", ecosystem=str(ECOSYSTEM))
    assert missing["failed"] is True and "defines no app named akig-test-nope (its apps: akig-test-cluster, akig-test-crash)" in missing["msg"]
    assert run_module(pm2_home, name="akig-test-crash", state="absent")["changed"] is True


def test_cluster_worker_dead_before_ready_is_not_taken_for_online(pm2_home: Path, tmp_path: Path) -> None:
    """pm2 6 lists a cluster worker started with wait_ready that died before it was ready as "online", with its
    dead pid, from listen_timeout until its next restart: the module checks the pid on the host."""
    name = "akig-test-unready"
    ecosystem = tmp_path / "unready.config.js"
    ecosystem.write_text("module.exports = {apps: [{name: %s, script: %s, exec_mode: 'cluster', instances: 1, wait_ready: true, "
                         "listen_timeout: 1000, restart_delay: 20000}]};\n" % (json.dumps(name), json.dumps(str(FIXTURES / "crash.js"))))
    try:
        started = run_module(pm2_home, name=name, ecosystem=str(ecosystem), timeout=4)
        assert started["failed"] is True and started["changed"] is True, started
        assert "online according to pm2, but its pid" in started["msg"] and "has exited (it died before it was ready)" in started["msg"]
        # pm2 itself still says online, with the pid of a process that does not exist
        raw = [p for p in jlist(pm2_home) if p["name"] == name]
        assert raw and raw[0]["pm2_env"]["status"] == "online" and raw[0]["pid"] > 0
        assert not Path("/proc/%d" % raw[0]["pid"]).exists()
        read = run_module(pm2_home, check=True, name=name)
        assert read["processes"][0]["status"] == "online" and read["processes"][0]["running"] is False, read
    finally:
        run_module(pm2_home, name=name, state="absent")


def test_instance_dying_right_after_ready_is_not_taken_for_stable(pm2_home: Path, tmp_path: Path) -> None:
    """An app that says it is ready, then exits 300 ms later, again after every restart: online for pm2 at each
    look, but never through the stable window (watched in /proc), so the module fails instead of reporting it up."""
    name = "akig-test-flap"
    ecosystem = tmp_path / "flap.config.js"
    ecosystem.write_text("module.exports = {apps: [{name: %s, script: %s, exec_mode: 'cluster', instances: 1, wait_ready: true, "
                         "listen_timeout: 5000, env: {PORT: '%d', CRASH_AFTER_MS: '300'}}]};\n"
                         % (json.dumps(name), json.dumps(str(APP)), free_port()))
    try:
        started = run_module(pm2_home, name=name, ecosystem=str(ecosystem), timeout=20, stable_seconds=1.0)
        assert started["failed"] is True and started["changed"] is True, started
        assert started["msg"].startswith("pm2 app '%s' did not come online" % name), started["msg"]
        restarts = [p["pm2_env"]["restart_time"] for p in jlist(pm2_home) if p["name"] == name]
        assert restarts and restarts[0] >= 1, "pm2 never restarted it: the window did not see it die"
        # without a stable window the same app passes for online (what the window is for)
        again = run_module(pm2_home, name=name, state="restarted", timeout=20, stable_seconds=0)
        assert not again.get("failed") and again["changed"] is True, again
    finally:
        run_module(pm2_home, name=name, state="absent")


# --------------------------------------------------------------------------- parallel: every instance restarted at once

# The slow app signals ready this long after it starts; pm2 restarts its 2 instances one after the other
# (the second stops only once the first is ready), so their start times differ by at least this much.
# Large enough that two pm2 commands started together on a loaded 2-core machine stay well under it.
BOOT_DELAY_MS = 2000


def wait_until(condition: Callable[[], Any], timeout: float = 30, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "%s did not hold within %s s" % (what, timeout)
        time.sleep(0.1)


def instances(home: Path, name: str) -> List[Dict[str, Any]]:
    """The app's instances as pm2 lists them, by pm_id."""
    return sorted((p for p in jlist(home) if p["name"] == name), key=lambda p: p["pm_id"])


def start_spread_ms(home: Path, name: str) -> int:
    """How far apart pm2 started the instances (pm2_env.pm_uptime: when pm2 forked each one), in ms."""
    started = [p["pm2_env"]["pm_uptime"] for p in instances(home, name)]
    return max(started) - min(started)


def all_online(home: Path, name: str, old: Dict[int, int]) -> bool:
    """Every instance online with a pid that runs and is not one of ``old``."""
    listed = instances(home, name)
    return bool(listed) and all(p["pm2_env"]["status"] == "online" and p["pid"] > 0 and p["pid"] not in old.values()
                                and Path("/proc/%d" % p["pid"]).exists() for p in listed)


@pytest.fixture(scope="module")
def slow_cluster(pm2_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    name = "akig-test-slow"
    ecosystem = tmp_path_factory.mktemp("slow") / "slow.config.js"
    ecosystem.write_text("module.exports = {apps: [{name: %s, script: %s, exec_mode: 'cluster', instances: 2, wait_ready: true, "
                         "listen_timeout: 15000, kill_timeout: 3000}]};\n" % (json.dumps(name), json.dumps(str(APP))))
    port = free_port()
    env = {"PORT": str(port), "BOOT_DELAY_MS": str(BOOT_DELAY_MS)}
    result = run_module(pm2_home, name=name, ecosystem=str(ecosystem), env=env)
    assert result["changed"] is True and [p["exec_mode"] for p in result["processes"]] == ["cluster", "cluster"], result
    yield {"name": name, "port": port, "env": env}
    run_module(pm2_home, name=name, state="absent")


def test_parallel_in_check_mode_changes_nothing(pm2_home: Path, slow_cluster: Dict[str, Any]) -> None:
    name = slow_cluster["name"]
    before = pids(pm2_home, name)
    check = run_module(pm2_home, check=True, diff=True, name=name, state="restarted", parallel=True)
    assert check["changed"] is True and not check.get("failed"), check
    assert check["actions"] == ["Would restart the 2 instances of %s at once (cluster mode, one pm2 restart per instance: pm_ids %s)."
                                % (name, ", ".join(str(pm_id) for pm_id in sorted(before)))]
    assert check["diff"]["after"]["pids"] == ["(new)", "(new)"]
    # a reload in cluster mode stays a reload, one instance at a time
    reload = run_module(pm2_home, check=True, name=name, state="reloaded", parallel=True)
    assert reload["actions"][0].startswith("Would reload %s (2 instances, cluster mode) with zero downtime" % name)
    assert pids(pm2_home, name) == before


def test_parallel_restart_starts_every_instance_at_once(pm2_home: Path, slow_cluster: Dict[str, Any]) -> None:
    name = slow_cluster["name"]
    before = pids(pm2_home, name)
    one_by_one = run_module(pm2_home, name=name, state="restarted")
    assert one_by_one["changed"] is True and one_by_one["actions"][0] == "Restarted %s (2 instances, cluster mode)." % name, one_by_one
    sequential = pids(pm2_home, name)
    assert all_online(pm2_home, name, before)
    spread_sequential = start_spread_ms(pm2_home, name)
    assert spread_sequential >= BOOT_DELAY_MS, "pm2 restarted the 2 instances one after the other"

    at_once = run_module(pm2_home, name=name, state="restarted", parallel=True)
    assert at_once["changed"] is True, at_once
    assert at_once["actions"][0] == ("Restarted the 2 instances of %s at once (cluster mode, one pm2 restart per instance: pm_ids %s)."
                                     % (name, ", ".join(str(pm_id) for pm_id in sorted(before))))
    assert at_once["actions"][1].startswith("%s is online " % name) and " s after the pm2 commands: instance 0 pid " in at_once["actions"][1]
    after = pids(pm2_home, name)
    assert set(after) == set(before) and all_online(pm2_home, name, sequential)
    assert [p["pid"] for p in at_once["processes"]] == [after[pm_id] for pm_id in sorted(after)]
    spread = start_spread_ms(pm2_home, name)
    assert spread < BOOT_DELAY_MS, "the instances started %d ms apart, not at once" % spread
    assert health(slow_cluster["port"])["pid"] in after.values()
    assert at_once["online_after_s"] < one_by_one["online_after_s"]
    print("restarted, boot delay %d ms: one at a time online after %.2f s (starts %d ms apart), at once %.2f s (%d ms apart)" % (
        BOOT_DELAY_MS, one_by_one["online_after_s"], spread_sequential, at_once["online_after_s"], spread))


def test_parallel_restart_passes_update_env_and_max_memory_restart(pm2_home: Path, slow_cluster: Dict[str, Any]) -> None:
    name = slow_cluster["name"]
    secret = "%s-%s" % (SECRET, uuid.uuid4().hex[:8])
    before = pids(pm2_home, name)
    result = run_module(pm2_home, name=name, state="restarted", parallel=True, update_env=True, max_memory_restart="500M",
                        env=dict(slow_cluster["env"], AKIG_TOKEN=secret), stable_seconds=0.3)
    assert result["changed"] is True, result
    assert result["actions"][0] == (
        "Restarted the 2 instances of %s at once (cluster mode, one pm2 restart per instance: pm_ids %s), setting max_memory_restart "
        "500M (was unset)." % (name, ", ".join(str(pm_id) for pm_id in sorted(before))))
    assert secret not in json.dumps(result)
    assert all_online(pm2_home, name, before)
    listed = instances(pm2_home, name)
    assert [p["pm2_env"]["env"]["AKIG_TOKEN"] for p in listed] == [secret] * 2
    assert [p["pm2_env"]["max_memory_restart"] for p in listed] == [500 * 1024 * 1024] * 2
    assert start_spread_ms(pm2_home, name) < BOOT_DELAY_MS


def test_parallel_restart_failure_names_the_instance(pm2_home: Path, slow_cluster: Dict[str, Any], tmp_path: Path) -> None:
    name = slow_cluster["name"]
    before = pids(pm2_home, name)
    first_id, failing_id = sorted(before)
    wrapper = tmp_path / "pm2"
    wrapper.write_text('#!/bin/sh\nif [ "$1" = restart ] && [ "$2" = %d ]; then\n  echo "[PM2][ERROR] Process %d not found (simulated)" >&2\n'
                       '  exit 3\nfi\nexec %s "$@"\n' % (failing_id, failing_id, PM2))
    wrapper.chmod(0o755)
    result = run_module(pm2_home, pm2_bin=str(wrapper), name=name, state="restarted", parallel=True)
    assert result["failed"] is True and result["changed"] is True, result
    assert result["msg"] == (
        "1 of the 2 pm2 commands run at once at PM2_HOME=%s failed (1 succeeded): instance 1 (pm_id %d) of %s: pm2 restart %d failed "
        "(exit 3): [PM2][ERROR] Process %d not found (simulated); read its logs: PM2_HOME=%s %s logs %d --lines 50 --nostream"
        % (pm2_home, failing_id, name, failing_id, failing_id, pm2_home, wrapper, failing_id))
    assert result["actions"] == ["Failed to restart the 2 instances of %s at once (cluster mode, one pm2 restart per instance: "
                                 "pm_ids %d, %d)." % (name, first_id, failing_id)]
    # the other instance was restarted, the failing one left alone
    wait_until(lambda: all_online(pm2_home, name, {}) and pids(pm2_home, name)[first_id] != before[first_id],
               what="instance 0 online with a new pid")
    assert pids(pm2_home, name)[failing_id] == before[failing_id]


def test_parallel_restart_kills_a_hung_command_at_the_timeout(pm2_home: Path, cluster: Dict[str, Any], tmp_path: Path) -> None:
    name = cluster["name"]
    before = pids(pm2_home, name)
    hung_id = max(before)
    wrapper = tmp_path / "pm2"
    hung_pid = tmp_path / "hung.pid"
    wrapper.write_text('#!/bin/sh\nif [ "$1" = restart ] && [ "$2" = %d ]; then echo $$ > %s; exec sleep 120; fi\nexec %s "$@"\n'
                       % (hung_id, hung_pid, PM2))
    wrapper.chmod(0o755)
    begin = time.monotonic()
    result = run_module(pm2_home, pm2_bin=str(wrapper), name=name, state="restarted", parallel=True, timeout=5, stable_seconds=0.3)
    assert time.monotonic() - begin < 20
    assert result["failed"] is True, result
    assert ("instance 1 (pm_id %d) of %s: pm2 restart %d did not finish within 5 s (killed); pm2 may be hung: look at %s/pm2.log"
            % (hung_id, name, hung_id, pm2_home)) in result["msg"]
    assert result["actions"][0].startswith("Failed to restart the 2 instances of %s at once" % name)
    assert not Path("/proc/%s" % hung_pid.read_text().strip()).exists(), "the hung command was killed"
    assert pids(pm2_home, name)[hung_id] == before[hung_id]
    wait_until(lambda: all_online(pm2_home, name, {}), what="%s online" % name)


# --------------------------------------------------------------------------- through ansible, as another user


def test_through_ansible_and_ansible_doc(pm2_home: Path, cluster: Dict[str, Any], tmp_path: Path) -> None:
    # An empty ansible.cfg of its own: ansible-core 2.19 rejects ANSIBLE_CONFIG=/dev/null (no .cfg extension).
    (tmp_path / "ansible.cfg").write_text("[defaults]\nretry_files_enabled = false\n")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".collections"), ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_HOME=str(tmp_path / "ansible-home"), ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"), AKIG_TEST_SECRET=SECRET)
    port = free_port()
    args = {"name": "akig-test-ansible", "script": str(APP), "pm2_bin": str(PM2), "pm2_home": str(pm2_home), "timeout": 30,
            "env": {"PORT": str(port), "AKIG_TOKEN": "{{ lookup('ansible.builtin.env', 'AKIG_TEST_SECRET') }}"}}
    doc = subprocess.Popen([str(VENV_BIN / "ansible-doc"), "akig.runbooks.pm2"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    runs = []
    for flags in ([], ["--check"]):
        runs.append(subprocess.run(
            [str(VENV_BIN / "ansible"), "localhost", "-m", "akig.runbooks.pm2", "-a", json.dumps(args), "--diff",
             "-e", "ansible_python_interpreter=%s" % sys.executable, *flags],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90, check=False))
    doc_out, doc_err = doc.communicate(timeout=60)
    first, second = runs
    assert first.returncode == 0, first.stdout + first.stderr
    result = json.loads(RESULT_RE.search(first.stdout).group("json"))
    assert RESULT_RE.search(first.stdout).group("status") == "CHANGED"
    assert result["processes"][0]["status"] == "online" and health(port)["status"] == "ok"
    assert second.returncode == 0 and "localhost | SUCCESS" in second.stdout, second.stdout + second.stderr
    assert SECRET not in first.stdout + first.stderr + second.stdout + second.stderr
    assert doc.returncode == 0, doc_err
    for text in ("akig.runbooks.pm2", "reload_fallback", "max_memory_restart", "online_after_s", "AKIG Engineering Team", "parallel"):
        assert text in doc_out
    assert run_module(pm2_home, name="akig-test-ansible", state="absent")["changed"] is True


def test_user_runs_pm2_as_that_user() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run pm2 as another user")
    user = pwd.getpwnam("nobody")
    # /tmp, not the pytest tmp dir: nobody cannot traverse /tmp/pytest-of-root (mode 0700).
    base = Path(tempfile.mkdtemp(prefix="akig-pm2-user-"))
    home = base / "pm2"
    try:
        base.chmod(0o755)
        home.mkdir()
        os.chown(home, user.pw_uid, user.pw_gid)
        port = free_port()
        result = run_module(home, name="akig-test-user", script=str(APP), user="nobody", env={"PORT": str(port)})
        assert result["changed"] is True, result
        assert health(port)["status"] == "ok"
        raw = jlist(home)
        assert raw[0]["pm2_env"]["username"] == "nobody"
        assert os.stat(home / "pm2.pid").st_uid == user.pw_uid
        with open("/proc/%d/status" % raw[0]["pid"], encoding="ascii") as handle:
            assert re.search(r"^Uid:\s+%d\b" % user.pw_uid, handle.read(), re.MULTILINE)
        assert run_module(home, name="akig-test-user", user="nobody")["changed"] is False
    finally:
        subprocess.run(["runuser", "-u", "nobody", "--", str(PM2), "kill"], env=dict(os.environ, PM2_HOME=str(home)), cwd="/",
                       capture_output=True, timeout=60, check=False)
        shutil.rmtree(base, ignore_errors=True)
