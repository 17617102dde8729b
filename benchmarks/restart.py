#!/usr/bin/env python3
"""Benchmark role node_restart with pm2: failed requests and restart -> healthy time under load.

    .venv/bin/python benchmarks/restart.py [--runs 5] [--modes cluster-reload,cluster-restart,fork-restart]
                                           [--rate 200] [--threads 2] [--app-name akig-backend] [--role-var K=V ...]

Starts its own pm2 daemon (a temporary PM2_HOME, pm2 6 from lab/node_modules) running the pm2 tests' node
app (tests/unit/fixtures/pm2app/app.js: GET /api/health answers 200 with its pid, process.send('ready')
after listen for wait_ready, closes its server on SIGINT) on 127.0.0.95:4095, then for each mode:
  cluster-reload   2 instances, cluster mode, node_restart_mode=reloaded  (pm2 reload, zero downtime expected)
  cluster-restart  2 instances, cluster mode, node_restart_mode=restarted (pm2 restart)
  fork-restart     1 instance,  fork mode,    node_restart_mode=restarted (fork mode cannot be reloaded)
  fork-reload      1 instance,  fork mode,    node_restart_mode=reloaded  (not by default: pm2 restarts instead)
Each run sends a steady load (--threads client threads, --rate requests/s in all, 0 = as fast as they can;
one new connection per GET, Connection: close) and runs the REAL role through ansible-playbook
(role akig.runbooks.node_restart on localhost, connection local, the venv's python), then measures:
  requests         GETs sent from 1 s before the playbook to 1 s after it
  failed           refused, reset, timed out (10 s) or non-200 answers among them (total, and max per run)
  restart->healthy from the pm2 restart/reload command (logged by a pass-through pm2 shim given to the role
                   as node_restart_pm2_bin) to the first 200 from a new pid on a connection opened after the
                   last answer from an old pid, i.e. once every instance was replaced (p50/p95/max)
  online (module)  the pm2 module's own online_after_s (pm2 command -> every instance online, new pids)
  playbook         wall time of ansible-playbook (startup, argument checks, the pm2 preflight, the restart, the
                   stability wait and the health gate)
Targets from the issue, printed next to the figures: 0 failed requests with reload; restart -> healthy <= 2 s.
A benchmark, not a test: it prints figures and never fails on them (it exits 1 only when it cannot run).

The role reloads only an app named akig-backend (other pm2 apps are restarted even with
node_restart_mode=reloaded), so the app is called akig-backend here, in its own daemon; --app-name shows the
other case. It uses only 127.0.0.95:4095 and its own PM2_HOME, touches no other pm2 daemon, and kills its
daemon and removes its temporary directory on exit, Ctrl-C and SIGTERM included.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
PM2 = REPO / "lab" / "node_modules" / ".bin" / "pm2"
APP = REPO / "tests" / "unit" / "fixtures" / "pm2app" / "app.js"
VENV_BIN = REPO / ".venv" / "bin"
HOST, PORT = "127.0.0.95", 4095
URL = "http://%s:%d/api/health" % (HOST, PORT)
MODES = {
    "cluster-reload": ("cluster", 2, "reloaded"),
    "cluster-restart": ("cluster", 2, "restarted"),
    "fork-restart": ("fork", 1, "restarted"),
    "fork-reload": ("fork", 1, "reloaded"),
}
TARGET_HEALTHY_S = 2.0
PLAYBOOK = """\
- name: node_restart benchmark
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Restart through the role
      ansible.builtin.include_role:
        name: akig.runbooks.node_restart
"""


class Load:
    """Client threads sending GET /api/health on a new connection each time; every answer is logged."""

    def __init__(self, threads: int, rate: float) -> None:
        self.threads = threads
        self.interval = threads / rate if rate > 0 else 0.0
        self.log: List[Tuple[float, float, bool, int, str]] = []  # (sent, answered, ok, pid, failure kind)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def _one(self) -> Tuple[float, float, bool, int, str]:
        sent = time.time()
        conn = http.client.HTTPConnection(HOST, PORT, timeout=10)
        try:
            conn.request("GET", "/api/health", headers={"Connection": "close"})
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                return sent, time.time(), False, 0, "http %d" % resp.status
            return sent, time.time(), True, int(json.loads(body)["pid"]), ""
        except ConnectionRefusedError:
            kind = "refused"
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
            kind = "reset"
        except socket.timeout:
            kind = "timeout"
        except Exception as exc:  # pylint: disable=broad-except  # every failure counts, whatever its kind
            kind = type(exc).__name__
        finally:
            conn.close()
        return sent, time.time(), False, 0, kind

    def _loop(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            entry = self._one()
            with self._lock:
                self.log.append(entry)
            if self.interval:
                due = max(due + self.interval, time.monotonic() - self.interval)
                self._stop.wait(max(0.0, due - time.monotonic()))

    def __enter__(self) -> "Load":
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(15)


class Bench:
    """The private pm2 daemon, the pm2 shim and the generated playbook, all in one temporary directory."""

    def __init__(self, app_name: str, role_vars: Dict[str, Any]) -> None:
        self.app = app_name
        self.role_vars = role_vars
        self.tmp = Path(tempfile.mkdtemp(prefix="akig-bench-restart-"))
        self.home = self.tmp / "pm2"
        self.shim = self.tmp / "pm2-shim"
        self.shim_log = self.tmp / "pm2-commands.log"
        self.shim.write_text('#!/bin/sh\nprintf \'%%s %%s\\n\' "$(date +%%s.%%N)" "$*" >> "%s"\nexec "%s" "$@"\n' % (self.shim_log, PM2))
        self.shim.chmod(0o755)
        (self.tmp / "ansible.cfg").write_text("[defaults]\nretry_files_enabled = false\n")
        (self.tmp / "play.yml").write_text(PLAYBOOK)
        self.env = dict(os.environ, PM2_HOME=str(self.home))
        self.ansible_env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".collections"), ANSIBLE_CONFIG=str(self.tmp / "ansible.cfg"),
                                ANSIBLE_HOME=str(self.tmp / "ansible-home"), ANSIBLE_LOCAL_TEMP=str(self.tmp / "ansible-tmp"),
                                ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
        self.shape: Optional[Tuple[str, int]] = None

    def pm2(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(PM2), *args], env=self.env, cwd=str(self.tmp), capture_output=True, text=True, timeout=120, check=check)

    def pids(self) -> List[int]:
        out = self.pm2("jlist").stdout
        return sorted(p["pid"] for p in json.loads(out[out.index("["):]) if p["name"] == self.app)

    def deploy(self, exec_mode: str, instances: int) -> None:
        """Run the app in this shape (deleting it first when it runs in another one) and wait until it answers."""
        if self.shape == (exec_mode, instances):
            return
        if self.shape is not None:
            self.pm2("delete", self.app)
        eco = self.tmp / "ecosystem.config.js"
        eco.write_text("module.exports = { apps: [%s] };\n" % json.dumps({
            "name": self.app, "script": str(APP), "exec_mode": exec_mode, "instances": instances, "wait_ready": True,
            "listen_timeout": 8000, "kill_timeout": 3000, "env": {"HOST": HOST, "PORT": str(PORT)}}))
        self.pm2("start", str(eco))
        self.shape = (exec_mode, instances)
        deadline = time.monotonic() + 20
        while True:
            try:
                conn = http.client.HTTPConnection(HOST, PORT, timeout=1)
                conn.request("GET", "/api/health")
                if conn.getresponse().status == 200 and len(self.pids()) == instances and all(self.pids()):
                    conn.close()
                    return
                conn.close()
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark app did not come up on %s; see PM2_HOME=%s %s logs" % (URL, self.home, PM2))
            time.sleep(0.2)

    def playbook(self, mode: str) -> Tuple[subprocess.CompletedProcess[str], float]:
        role_vars = {"ansible_python_interpreter": sys.executable, "node_restart_manager": "pm2", "node_restart_names": [self.app],
                     "node_restart_mode": mode, "node_restart_pm2_bin": str(self.shim), "node_restart_pm2_home": str(self.home),
                     "node_restart_health_url": URL}
        role_vars.update(self.role_vars)
        extra = self.tmp / "vars.json"
        extra.write_text(json.dumps(role_vars))
        begin = time.monotonic()
        proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-v", "-i", "localhost,", str(self.tmp / "play.yml"), "-e", "@%s" % extra],
                              cwd=str(self.tmp), env=self.ansible_env, capture_output=True, text=True, timeout=600, check=False)
        return proc, time.monotonic() - begin

    def commands_since(self, since: float) -> List[Tuple[float, str]]:
        if not self.shim_log.exists():
            return []
        found = []
        for line in self.shim_log.read_text().splitlines():
            stamp, _sep, args = line.partition(" ")
            if float(stamp) >= since and args.split(" ")[:1] in (["restart"], ["reload"]):
                found.append((float(stamp), args))
        return found

    def close(self) -> None:
        if self.home.exists():
            self.pm2("kill", check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


def one_run(bench: Bench, mode: str) -> Dict[str, Any]:
    exec_mode, instances, role_mode = MODES[mode]
    bench.deploy(exec_mode, instances)
    old = set(bench.pids())
    with Load(ARGS.threads, ARGS.rate) as load:
        time.sleep(1.0)
        started = time.time()
        proc, wall = bench.playbook(role_mode)
        time.sleep(1.0)
    new = set(bench.pids())
    log = sorted(load.log)
    commands = bench.commands_since(started)
    cmd_at = commands[0][0] if commands else float("nan")
    answered_old = [answered for _sent, answered, ok, pid, _k in log if ok and pid in old]
    last_old = max(answered_old) if answered_old else cmd_at
    fresh = [answered for sent, answered, ok, pid, _k in log if ok and pid in new and sent >= max(last_old, cmd_at)]
    healthy = (min(fresh) - cmd_at) if fresh and commands and not new & old else float("nan")
    online = re.findall(r'"online_after_s": ([0-9.]+)', proc.stdout)
    kinds: Dict[str, int] = {}
    for _sent, _answered, ok, _pid, kind in log:
        if not ok:
            kinds[kind] = kinds.get(kind, 0) + 1
    return {"ok": proc.returncode == 0, "requests": len(log), "failed": sum(kinds.values()), "kinds": kinds, "healthy_s": healthy,
            "online_s": float(online[-1]) if online else float("nan"), "wall_s": wall, "replaced": bool(old) and not new & old,
            "commands": [args for _t, args in commands], "tail": "" if proc.returncode == 0 else (proc.stdout + proc.stderr)[-1500:]}


def pct(values: List[float], q: float) -> float:
    vals = sorted(v for v in values if v == v)
    if not vals:
        return float("nan")
    return vals[min(len(vals) - 1, max(0, round(q * len(vals) + 0.5) - 1))]


def top(values: List[float]) -> float:
    vals = [v for v in values if v == v]
    return max(vals) if vals else float("nan")


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(mode: str, results: List[Dict[str, Any]]) -> None:
    healthy = [r["healthy_s"] for r in results]
    walls = [r["wall_s"] for r in results]
    online = [r["online_s"] for r in results]
    failed = [r["failed"] for r in results]
    kinds: Dict[str, int] = {}
    for r in results:
        for kind, count in r["kinds"].items():
            kinds[kind] = kinds.get(kind, 0) + count
    p95 = pct(healthy, .95)
    reload = MODES[mode][2] == "reloaded"
    print(f"{mode:15} runs={len(results)} ok={sum(r['ok'] for r in results)} replaced={sum(r['replaced'] for r in results)} "
          f"requests={sum(r['requests'] for r in results)} failed(total)={sum(failed)} failed(max/run)={max(failed)}"
          + (" [" + ", ".join("%s %d" % kv for kv in sorted(kinds.items())) + "]" if kinds else "")
          + (f" (target 0 with reload: {verdict(sum(failed) == 0)})" if reload else ""), flush=True)
    print(f"{'':15} restart->healthy p50={pct(healthy, .5):.2f}s p95={p95:.2f}s max={top(healthy):.2f}s "
          f"(target <= {TARGET_HEALTHY_S:.0f} s: {verdict(all(h == h for h in healthy) and top(healthy) <= TARGET_HEALTHY_S)}) "
          f"online(module) p50={pct(online, .5):.2f}s max={top(online):.2f}s "
          f"playbook p50={pct(walls, .5):.2f}s p95={pct(walls, .95):.2f}s max={top(walls):.2f}s", flush=True)


def check_free() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        if sock.connect_ex((HOST, PORT)) == 0:
            sys.exit("%s:%d is already in use: the benchmark needs it for its own app" % (HOST, PORT))


def parse_role_vars(items: List[str]) -> Dict[str, Any]:
    values: Dict[str, Any] = {}
    for item in items:
        key, _sep, raw = item.partition("=")
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per mode (default 5)")
    parser.add_argument("--modes", default="cluster-reload,cluster-restart,fork-restart", help="comma-separated, from: " + ", ".join(MODES))
    parser.add_argument("--rate", type=float, default=200, help="requests/s over all client threads; 0 = as fast as they can (default 200)")
    parser.add_argument("--threads", type=int, default=2, help="client threads (default 2)")
    parser.add_argument("--app-name", default="akig-backend", help="pm2 app name (default akig-backend, the only app the role reloads)")
    parser.add_argument("--role-var", action="append", default=[], metavar="NAME=VALUE", help="extra role variable (JSON or string), repeatable")
    parser.add_argument("--verbose", action="store_true", help="print every run")
    global ARGS  # pylint: disable=global-statement
    ARGS = parser.parse_args()
    modes = [m for m in ARGS.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error("unknown mode(s) %s; choose from %s" % (", ".join(unknown), ", ".join(MODES)))
    if not os.access(PM2, os.X_OK) or not shutil.which("node"):
        sys.exit("needs Node.js and pm2 in lab/node_modules: run scripts/setup.sh")
    check_free()

    def terminate(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    bench = Bench(ARGS.app_name, parse_role_vars(ARGS.role_var))
    try:
        print("node_restart benchmark: app %s on %s, %d client thread(s) at %s, PM2_HOME %s" % (
            ARGS.app_name, URL, ARGS.threads, "%g req/s" % ARGS.rate if ARGS.rate > 0 else "full speed", bench.home), flush=True)
        for mode in modes:
            results = []
            for run in range(ARGS.runs):
                result = one_run(bench, mode)
                results.append(result)
                if ARGS.verbose or not result["ok"]:
                    print(f"  {mode} run {run + 1}: ok={result['ok']} requests={result['requests']} failed={result['failed']} "
                          f"{result['kinds'] or ''} healthy={result['healthy_s']:.2f}s online={result['online_s']:.2f}s "
                          f"playbook={result['wall_s']:.2f}s pm2 {'; '.join(result['commands']) or '(no restart command)'}", flush=True)
                if result["tail"]:
                    print("  ansible-playbook failed:\n" + result["tail"], flush=True)
            report(mode, results)
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        sys.exit(130)
    finally:
        bench.close()


ARGS = argparse.Namespace()

if __name__ == "__main__":
    main()
