# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Role akig.runbooks.node_restart through ansible-playbook, against real service managers.

systemd: this machine (like CI) has no running systemd, so ``systemctl`` is docker-systemctl-replacement
(requirements.txt), a Python systemctl that reads real unit files and really starts and stops the
processes. A ``systemctl`` wrapper that runs it with ``--root`` set to a private tree is put first on
PATH for the ansible-playbook subprocess only: the unit file lives in that tree, nothing is written
to /etc. The unit runs the pm2 tests' node app (tests/unit/fixtures/pm2app/app.js) on 127.0.0.96:4096.

pm2: the pm2 daemon of tests/integration/plugins/modules/test_pm2.py (its ``pm2_home`` fixture: private
PM2_HOME, killed at the end) runs two fork-mode apps on 127.0.0.97:4097 and :4098.

Every case asserts on observable state (main pids, pm2's own process list, the health URL, the
play recap), not only on what the role says.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

# Reuse the pm2 module tests' daemon fixture and helpers.
from ansible_collections.akig.runbooks.tests.integration.plugins.modules import test_pm2 as pm2_tests

pm2_home = pm2_tests.pm2_home  # the fixture: its own PM2_HOME, `pm2 kill` at the end of this module

REPO = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
SYSTEMCTL_REPLACEMENT = VENV_BIN / "systemctl3"
SD_HOST, SD_PORT = "127.0.0.96", 4096
SD_URL = "http://%s:%d/api/health" % (SD_HOST, SD_PORT)
PM2_HOST, PM2_PORTS = "127.0.0.97", (4097, 4098)
RECAP_RE = re.compile(r"^localhost\s+: ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=\d+\s+failed=(?P<failed>\d+)\s+"
                      r"skipped=(?P<skipped>\d+)", re.MULTILINE)
FAILURE_RE = re.compile(r"^(?:fatal: \[localhost\]: FAILED!|failed: \[localhost\] \(item=[^)]*\)) => (?P<json>\{.*\})$", re.MULTILINE)
PLAYBOOK = """\
- name: node_restart under test
  hosts: localhost
  connection: local
  gather_facts: false
  environment: "{{ node_restart_test_environment | default({}) }}"
  tasks:
    - name: Run the role
      ansible.builtin.include_role:
        name: akig.runbooks.node_restart
"""
# pg_failover's direct repoint on a systemd host (the lab's backends run under pm2: this is where the systemd path runs)
REPOINT_PLAYBOOK = """\
- name: pg_failover repoint under test
  hosts: localhost
  connection: local
  gather_facts: false
  environment: "{{ node_restart_test_environment | default({}) }}"
  tasks:
    - name: Run the role's repoint entry point
      ansible.builtin.include_role:
        name: akig.runbooks.pg_failover
        tasks_from: repoint
"""
SD_ENV = "NODE_ENV=production\nDATABASE_URL=postgresql://akig:s3cret-sd@db-1.akig.internal:5432/akig\n"


def health(url: str, timeout: float = 2) -> Dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def wait_healthy(url: str, timeout: float = 15) -> Dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return health(url, timeout=1)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie waiting for init to reap it does not)."""
    try:
        with open("/proc/%d/stat" % pid, encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@dataclass
class Play:
    rc: int
    out: str
    recap: Dict[str, int]
    failures: List[str]
    seconds: float


class Runner:
    """Runs the role through ansible-playbook (localhost, connection local, this venv's python) with the given variables."""

    def __init__(self, base: Path) -> None:
        self.base = base
        (base / "ansible.cfg").write_text("[defaults]\nretry_files_enabled = false\n")
        (base / "play.yml").write_text(PLAYBOOK)
        (base / "repoint.yml").write_text(REPOINT_PLAYBOOK)
        self.env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".collections"), ANSIBLE_CONFIG=str(base / "ansible.cfg"),
                        ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", ANSIBLE_HOME=str(base / "ansible-home"))

    def start(self, role_vars: Dict[str, Any], check: bool = False, path_first: Optional[Path] = None,
              playbook: str = "play.yml") -> Tuple["subprocess.Popen[str]", float]:
        name = uuid.uuid4().hex[:8]
        extra = self.base / ("vars-%s.json" % name)
        extra.write_text(json.dumps(dict(role_vars, ansible_python_interpreter=sys.executable)))
        env = dict(self.env, ANSIBLE_LOCAL_TEMP=str(self.base / ("tmp-%s" % name)))
        if path_first is not None:
            env["PATH"] = "%s%s%s" % (path_first, os.pathsep, self.env.get("PATH", ""))
        proc = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(self.base / playbook), "-e", "@%s" % extra,
                                 *(["--check"] if check else [])],
                                cwd=self.base, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return proc, time.monotonic()

    @staticmethod
    def wait(started: Tuple["subprocess.Popen[str]", float]) -> Play:
        proc, begin = started
        try:
            out = proc.communicate(timeout=120)[0]
        finally:
            if proc.poll() is None:
                proc.kill()
        found = RECAP_RE.search(out)
        assert found, out
        failures = [json.loads(m.group("json"))["msg"] for m in FAILURE_RE.finditer(out)]
        return Play(proc.returncode, out, {k: int(v) for k, v in found.groupdict().items()}, failures, time.monotonic() - begin)

    def __call__(self, role_vars: Dict[str, Any], check: bool = False, path_first: Optional[Path] = None,
                 playbook: str = "play.yml") -> Play:
        return self.wait(self.start(role_vars, check=check, path_first=path_first, playbook=playbook))


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    return Runner(tmp_path_factory.mktemp("node-restart"))


# --------------------------------------------------------------------------- systemd (docker-systemctl-replacement)


@dataclass
class Systemd:
    unit: str
    root: Path
    bin_dir: Path
    env_file: Path

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin_dir / "systemctl"), *args], capture_output=True, text=True, timeout=60, check=check)

    def main_pid(self) -> int:
        out = self.ctl("show", "-p", "MainPID", self.unit).stdout
        found = re.search(r"^MainPID=(\d*)$", out, re.MULTILINE)
        return int(found.group(1) or 0) if found else 0

    def vars(self, **extra: Any) -> Dict[str, Any]:
        values: Dict[str, Any] = {"node_restart_manager": "systemd", "node_restart_names": [self.unit], "node_restart_health_url": SD_URL,
                                  "node_restart_timeout_s": 20, "node_restart_poll_s": 0.1}
        values.update(extra)
        return values


@pytest.fixture(scope="module")
def systemd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Systemd]:
    node = shutil.which("node")
    if not node:
        pytest.fail("the node_restart systemd tests need Node.js (scripts/setup.sh installs it)")
    if not os.access(SYSTEMCTL_REPLACEMENT, os.X_OK):
        pytest.fail("%s is missing: install docker-systemctl-replacement (pip install -c constraints.txt -r requirements.txt)"
                    % SYSTEMCTL_REPLACEMENT)
    base = tmp_path_factory.mktemp("systemd")
    root = base / "root"
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    bin_dir = base / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "systemctl"
    wrapper.write_text('#!/bin/sh\nexec "%s" "%s" --root="%s" "$@"\n' % (sys.executable, SYSTEMCTL_REPLACEMENT, root))
    wrapper.chmod(0o755)
    unit = "akig-restart-test-%s.service" % uuid.uuid4().hex[:8]
    env_file = base / "akig.env"  # read by the app at boot, like the AKIG backend's AKIG_ENV_FILE
    env_file.write_text(SD_ENV)
    (units / unit).write_text(
        "[Unit]\nDescription=akig.runbooks node_restart test backend\n\n"
        "[Service]\nType=simple\nEnvironment=HOST=%s PORT=%d ENV_FILE=%s\nExecStart=%s %s\nTimeoutStopSec=5\n\n"
        "[Install]\nWantedBy=multi-user.target\n" % (SD_HOST, SD_PORT, env_file, node, pm2_tests.APP))
    sd = Systemd(unit, root, bin_dir, env_file)
    try:
        sd.ctl("start", unit)
        wait_healthy(SD_URL)
        yield sd
    finally:
        pid = sd.main_pid()
        sd.ctl("stop", unit, check=False)
        if pid and alive(pid):
            os.kill(pid, 9)


def test_systemd_restart_replaces_the_process_and_waits_until_healthy(runner: Runner, systemd: Systemd) -> None:
    before = systemd.main_pid()
    assert before > 0 and health(SD_URL)["pid"] == before
    # reloaded, the default mode, restarts under systemd (a Node app has no ExecReload)
    play = runner(systemd.vars(), path_first=systemd.bin_dir)
    assert play.rc == 0, play.out
    assert play.recap["changed"] == 1 and play.recap["failed"] == 0, play.out
    assert "changed: [localhost] => (item=%s)" % systemd.unit in play.out
    after = systemd.main_pid()
    assert after > 0 and after != before
    assert not alive(before), "the old main process must be gone"
    # the health gate already waited for 200: the new process answers at once
    assert health(SD_URL)["pid"] == after


def test_pg_failover_direct_repoint_on_a_systemd_host_restarts_the_unit_behind_maintenance(
        runner: Runner, systemd: Systemd, tmp_path: Path) -> None:
    systemd.env_file.write_text(SD_ENV)
    before = systemd.main_pid()
    assert wait_healthy(SD_URL)["database_at"] == "db-1.akig.internal:5432"
    flag = tmp_path / "maintenance.flag"
    repoint_vars = {"akig_db_endpoint": "direct", "akig_process_manager": "systemd", "akig_backend_env_file": str(systemd.env_file),
                    "akig_maintenance_file": str(flag), "akig_backend_url": "http://%s:%d" % (SD_HOST, SD_PORT),
                    "pg_failover_new_primary_address": "db-2.akig.internal", "pg_failover_new_primary_port": 5432,
                    "pg_failover_app_processes": [systemd.unit], "pg_failover_poll_s": 0.1}
    play = runner(repoint_vars, path_first=systemd.bin_dir, playbook="repoint.yml")
    assert play.rc == 0 and play.recap["failed"] == 0, play.out
    after = systemd.main_pid()
    assert after and after != before and not alive(before), "the unit's process was replaced"
    assert health(SD_URL)["database_at"] == "db-2.akig.internal:5432", "the new process read the new DATABASE_URL"
    assert not flag.exists(), "maintenance left once healthy"
    assert "db-2.akig.internal:5432" in systemd.env_file.read_text()
    assert "Restart the backend units so they read the new DATABASE_URL" in play.out
    assert "s3cret-sd" not in play.out

    again = runner(repoint_vars, path_first=systemd.bin_dir, playbook="repoint.yml")
    assert again.rc == 0 and again.recap["changed"] == 0, again.out
    assert systemd.main_pid() == after, "a second run restarts nothing"


def test_systemd_check_mode_restarts_nothing(runner: Runner, systemd: Systemd) -> None:
    before = systemd.main_pid()
    play = runner(systemd.vars(node_restart_mode="restarted"), check=True, path_first=systemd.bin_dir)
    assert play.rc == 0, play.out
    assert play.recap["changed"] == 1, play.out  # the plan: this unit would restart
    assert systemd.main_pid() == before and health(SD_URL)["pid"] == before


def test_systemd_started_is_idempotent_and_starts_a_stopped_unit(runner: Runner, systemd: Systemd) -> None:
    before = systemd.main_pid()
    play = runner(systemd.vars(node_restart_mode="started"), path_first=systemd.bin_dir)
    assert play.rc == 0, play.out
    assert play.recap["changed"] == 0, play.out
    assert systemd.main_pid() == before

    systemd.ctl("stop", systemd.unit)
    assert systemd.ctl("is-active", systemd.unit, check=False).stdout.strip() != "active"
    with pytest.raises(OSError):
        health(SD_URL, timeout=0.5)
    play = runner(systemd.vars(node_restart_mode="started"), path_first=systemd.bin_dir)
    assert play.rc == 0, play.out
    assert play.recap["changed"] == 1, play.out
    started = systemd.main_pid()
    assert started > 0 and started != before and health(SD_URL)["pid"] == started


# --------------------------------------------------------------------------- pm2


@pytest.fixture(scope="module")
def pm2_apps(pm2_home: Path) -> Dict[str, str]:
    apps = {}
    for index, port in enumerate(PM2_PORTS):
        name = "akig-rt-%s" % "ab"[index]
        result = pm2_tests.run_module(pm2_home, name=name, script=str(pm2_tests.APP), exec_mode="fork",
                                      env={"HOST": PM2_HOST, "PORT": str(port)})
        assert result["changed"] is True and not result.get("failed"), result
        apps[name] = "http://%s:%d/api/health" % (PM2_HOST, port)
    return apps


def pm2_vars(home: Path, names: List[str], **extra: Any) -> Dict[str, Any]:
    values: Dict[str, Any] = {"node_restart_manager": "pm2", "node_restart_names": names, "node_restart_pm2_bin": str(pm2_tests.PM2),
                              "node_restart_pm2_home": str(home), "node_restart_timeout_s": 20, "node_restart_poll_s": 0.1,
                              # the health gate follows every restart: a shorter pm2 stability wait keeps the file fast
                              "node_restart_stable_s": 0.3,
                              "node_restart_health_url": "http://%s:%d/api/health" % (PM2_HOST, PM2_PORTS[0])}
    values.update(extra)
    return values


def test_pm2_started_is_idempotent_and_restarted_restarts(runner: Runner, pm2_home: Path, pm2_apps: Dict[str, str]) -> None:
    names = sorted(pm2_apps)
    before = {p["name"]: p["pid"] for p in pm2_tests.jlist(pm2_home)}
    play = runner(pm2_vars(pm2_home, names, node_restart_mode="started"))
    assert play.rc == 0, play.out
    assert play.recap["changed"] == 0, play.out
    assert {p["name"]: p["pid"] for p in pm2_tests.jlist(pm2_home)} == before
    print("pm2 started, nothing to do: %.1f s" % play.seconds)

    # an app that is down is started, the one that is up is left alone
    first, second = names
    subprocess.run([str(pm2_tests.PM2), "stop", first], env=dict(os.environ, PM2_HOME=str(pm2_home)), cwd="/", capture_output=True,
                   timeout=30, check=True)
    play = runner(pm2_vars(pm2_home, names, node_restart_mode="started"))
    assert play.rc == 0 and play.recap["changed"] == 1, play.out
    after = {p["name"]: p["pid"] for p in pm2_tests.jlist(pm2_home)}
    assert after[second] == before[second] and after[first] not in (0, before[first])
    assert health(pm2_apps[first])["pid"] == after[first]
    print("pm2 started, one app down: %.1f s" % play.seconds)

    # restarted replaces the process (the pm2 branch still restarts after the preflight)
    play = runner(pm2_vars(pm2_home, [second], node_restart_mode="restarted", node_restart_health_url=pm2_apps[second]))
    assert play.rc == 0 and play.recap["changed"] == 1, play.out
    final = {p["name"]: p["pid"] for p in pm2_tests.jlist(pm2_home)}
    assert final[first] == after[first] and final[second] != after[second]
    assert health(pm2_apps[second])["pid"] == final[second]


# --------------------------------------------------------------------------- bad input, refused before anything restarts
# These plays change nothing when the role works, so they run side by side (it keeps the file fast): the state of
# both managers is read before and after all of them, and each play must also report changed=0.

NOT_RUNNING_CASE = bool(shutil.which("systemctl")) and not os.path.isdir("/run/systemd/system")
NO_SYSTEMCTL_CASE = not any(os.path.exists(os.path.join(d, "systemctl")) for d in ("/sbin", "/usr/sbin", "/usr/local/sbin"))


@dataclass
class Refusals:
    plays: Dict[str, Play]
    before: Any
    after: Any
    missing_unit: str
    missing_pm2: Path
    bad_url: str


@pytest.fixture(scope="module")
def refusals(runner: Runner, systemd: Systemd, pm2_home: Path, pm2_apps: Dict[str, str],
             tmp_path_factory: pytest.TempPathFactory) -> Refusals:
    def state() -> Any:
        return {p["name"]: (p["pm_id"], p["pid"]) for p in pm2_tests.jlist(pm2_home)}, systemd.main_pid()

    apps = sorted(pm2_apps)
    missing_unit = "akig-restart-test-nope-%s.service" % uuid.uuid4().hex[:6]
    missing_pm2 = tmp_path_factory.mktemp("no-pm2") / "bin" / "pm2"
    bad_url = "http//%s:%d/api/health" % (SD_HOST, SD_PORT)
    cases: Dict[str, Tuple[Dict[str, Any], Optional[Path]]] = {
        # a known unit first: it must not be restarted because of the unknown one after it
        "systemd-unknown-unit": (systemd.vars(node_restart_names=[systemd.unit, missing_unit], node_restart_mode="restarted"), systemd.bin_dir),
        "pm2-unknown-app": (pm2_vars(pm2_home, [apps[0], "akig-rt-nope"], node_restart_mode="restarted"), None),
        "pm2-not-installed": (pm2_vars(pm2_home, apps, node_restart_pm2_bin=str(missing_pm2), node_restart_mode="restarted"), None),
        "pm2-bad-url": (pm2_vars(pm2_home, apps, node_restart_health_url=bad_url, node_restart_mode="restarted"), None),
        "systemd-bad-url": (systemd.vars(node_restart_health_url=bad_url, node_restart_mode="restarted"), systemd.bin_dir),
        "bad-mode": (systemd.vars(node_restart_mode="bounced"), systemd.bin_dir),
    }
    if NO_SYSTEMCTL_CASE:  # the module's PATH has no systemctl at all (the venv only)
        cases["no-systemctl"] = (systemd.vars(node_restart_test_environment={"PATH": str(VENV_BIN)}), None)
    if NOT_RUNNING_CASE:  # this host's real systemctl, without the stand-in
        cases["systemd-not-running"] = (systemd.vars(), None)
    before = state()
    # a short deadline, so that a role that wrongly restarts and then waits for a bad URL fails soon
    started = {name: runner.start(dict(role_vars, node_restart_timeout_s=10), path_first=path_first)
               for name, (role_vars, path_first) in cases.items()}
    plays = {name: runner.wait(handle) for name, handle in started.items()}
    return Refusals(plays, before, state(), missing_unit, missing_pm2, bad_url)


def refused(refusals: Refusals, case: str) -> Play:
    play = refusals.plays[case]
    assert play.rc != 0 and play.recap["failed"] == 1 and play.recap["changed"] == 0, play.out
    assert "changed: [localhost]" not in play.out, play.out
    assert refusals.after == refusals.before, "a refused play restarted something: %s -> %s" % (refusals.before, refusals.after)
    return play


def test_systemd_unknown_unit_fails_before_anything_restarts(refusals: Refusals) -> None:
    play = refused(refusals, "systemd-unknown-unit")
    assert play.failures == ["%s: systemd does not know this unit (check the name: systemctl list-unit-files). Nothing was restarted."
                             % refusals.missing_unit]


@pytest.mark.skipif(not NO_SYSTEMCTL_CASE, reason="Ansible always looks for systemctl in the sbin directories, and this host has one there")
def test_systemd_without_systemctl_fails_clearly(refusals: Refusals) -> None:
    play = refused(refusals, "no-systemctl")
    assert len(play.failures) == 1 and play.failures[0].startswith(
        "node_restart_manager is systemd, but systemctl is not installed on this host (if pm2 runs the app, set node_restart_manager: pm2): "
        'Failed to find required executable "systemctl"'), play.failures
    assert play.failures[0].endswith(". Nothing was restarted.")


@pytest.mark.skipif(not NOT_RUNNING_CASE, reason="needs a systemctl binary on a host where systemd is not running (PID 1 is not systemd)")
def test_systemd_not_running_fails_clearly(refusals: Refusals) -> None:
    play = refused(refusals, "systemd-not-running")
    assert len(play.failures) == 1 and play.failures[0].startswith(
        "node_restart_manager is systemd, but systemd is not running on this host (systemctl cannot reach it): "), play.failures
    assert "\n" not in play.failures[0] and play.failures[0].endswith(". Nothing was restarted.")


def test_pm2_unknown_app_fails_before_anything_restarts(refusals: Refusals, pm2_home: Path) -> None:
    play = refused(refusals, "pm2-unknown-app")
    assert len(play.failures) == 1
    assert play.failures[0].startswith("pm2 app 'akig-rt-nope' is not known to pm2 at PM2_HOME=%s, so it cannot be restarted; check the name"
                                       % pm2_home), play.failures
    assert play.failures[0].endswith("(known apps: akig-rt-a, akig-rt-b)")


def test_pm2_not_installed_fails_before_anything(refusals: Refusals) -> None:
    play = refused(refusals, "pm2-not-installed")
    assert set(play.failures) == {"pm2 binary '%s' not found; install pm2 (npm install -g pm2) or set pm2_bin" % refusals.missing_pm2}, play.failures


@pytest.mark.parametrize("manager", ["pm2", "systemd"])
def test_malformed_health_url_fails_before_anything_restarts(refusals: Refusals, manager: str) -> None:
    play = refused(refusals, "%s-bad-url" % manager)
    assert play.failures == ["node_restart_health_url '%s' is not an http(s)://host[:port]/path URL; nothing was restarted." % refusals.bad_url]


def test_unknown_mode_is_refused_by_the_argument_spec(refusals: Refusals) -> None:
    play = refused(refusals, "bad-mode")
    assert any("node_restart_mode" in msg and "bounced" in msg and "reloaded, restarted, started" in msg for msg in play.failures), play.failures
