"""playbooks/rolling-restart.yml against the real lab: app-1 then app-2, each behind its health gate.

* A rolling reload of the two pm2 clusters under a steady HTTP load on both hosts: every instance
  gets a new pid, app-2's new instances start only after app-1's are all up (one host at a time),
  and no request is refused or reset.
* A host that does not come back stops the roll: app-1 restarts on a DATABASE_URL that points
  nowhere (its health answers 503), the run fails naming it, and app-2 is not touched.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Iterator

import pytest

from conftest import ansible_playbook, APPS, REPO, STATE, http, pm2_procs, wait_until

PLAYBOOK = "playbooks/rolling-restart.yml"


def run_playbook(*args: str) -> subprocess.CompletedProcess[str]:
    return ansible_playbook(PLAYBOOK, *args)


def backend(host: str) -> list[dict[str, Any]]:
    return [p for p in pm2_procs(host) if p["name"] == "akig-backend"]


def started_at(proc: dict[str, Any]) -> float:
    return proc["pm2_env"]["pm_uptime"] / 1000.0


class Load:
    """Threads sending GET /api/health to both backends; refusals and resets are failures."""

    def __init__(self) -> None:
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(addr,), daemon=True) for addr in APPS.values()]

    def _loop(self, addr: str) -> None:
        while not self._stop.is_set():
            try:
                # a slow answer on a busy 2-core machine is not a dropped request: generous timeout
                with urllib.request.urlopen(f"http://{addr}:4000/api/health", timeout=10) as resp:
                    resp.read()
                self.ok += 1
            except urllib.error.HTTPError as exc:
                self.failures.append(f"{addr}: HTTP {exc.code}")
            except Exception as exc:  # pylint: disable=broad-except  # every failure counts, whatever its kind
                self.failures.append(f"{addr}: {exc!r}")
            self._stop.wait(0.02)

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def healthy(lab_up) -> Iterator[None]:
    for addr in APPS.values():
        assert wait_until(lambda a=addr: http(f"http://{a}:4000/api/health", timeout=3)[0] == 200, timeout=30)
    yield


def test_rolling_reload_one_host_at_a_time_without_a_failed_request(healthy) -> None:
    before = {h: {p["pid"] for p in backend(h)} for h in APPS}
    with Load() as load:
        time.sleep(0.5)
        proc = run_playbook()
        time.sleep(0.5)
    assert proc.returncode == 0, proc.stdout[-4000:]
    after = {h: backend(h) for h in APPS}
    for host in APPS:
        assert len(after[host]) == 2 and all(p["pm2_env"]["status"] == "online" for p in after[host])
        assert not before[host] & {p["pid"] for p in after[host]}, f"{host} was not reloaded"
    # one host at a time: app-2's first new instance started after app-1's last one
    assert min(map(started_at, after["app-2"])) > max(map(started_at, after["app-1"]))
    assert load.ok > 50, f"the load sent too few requests to mean anything ({load.ok})"
    assert load.failures == [], load.failures[:10]


def test_a_host_that_does_not_come_back_stops_the_roll(healthy) -> None:
    env_file = STATE / "app-1" / "shared" / "akig.env"
    saved = env_file.with_suffix(".env.test-saved")
    shutil.copy2(env_file, saved)
    app2_before = {p["pid"] for p in backend("app-2")}
    try:
        text = env_file.read_text()
        env_file.write_text("\n".join(
            line.replace("@127.0.0.11:", "@127.0.0.99:").replace("@127.0.0.12:", "@127.0.0.99:")
            for line in text.splitlines()) + "\n")
        proc = run_playbook("-e", "rolling_mode=restarted", "-e", "node_restart_timeout_s=6")
        assert proc.returncode != 0
        assert "fatal: [app-1]" in proc.stdout
        assert "app-2" not in proc.stdout.split("PLAY RECAP")[0], "the roll went on to app-2"
        assert {p["pid"] for p in backend("app-2")} == app2_before
        assert http(f"http://{APPS['app-2']}:4000/api/health")[0] == 200
    finally:
        shutil.move(saved, env_file)
        env = {**os.environ, "PM2_HOME": str(STATE / "app-1" / "pm2")}
        subprocess.run([str(REPO / "lab" / "node_modules" / ".bin" / "pm2"), "restart", "akig-backend"], env=env,
                       capture_output=True, text=True, timeout=60, check=False)
        assert wait_until(lambda: http(f"http://{APPS['app-1']}:4000/api/health", timeout=3)[0] == 200, timeout=30)


@pytest.mark.parametrize("args, message", [
    (["-e", "rolling_mode=bounce"], "rolling_mode must be reloaded, restarted or started (got 'bounce')"),
    (["-e", "rolling_serial=-1"], "rolling_serial a positive number of hosts or a percentage from 1% to 100% (got '-1')"),
    (["-e", "rolling_serial=many"], "(got 'many')"),
    (["-e", "rolling_max_fail_percentage=lots"], "rolling_max_fail_percentage a number from 0 to 100 (got 'lots')"),
])
def test_bad_input_is_refused_before_any_restart(healthy, args, message) -> None:
    before = {h: {p["pid"] for p in backend(h)} for h in APPS}
    proc = run_playbook(*args)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-2000:]
    assert {h: {p["pid"] for p in backend(h)} for h in APPS} == before
