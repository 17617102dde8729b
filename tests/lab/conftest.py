"""Fixtures for tests that talk to the real lab (PostgreSQL, Redis, pm2, Node, emulator).

The lab must be up (`lab/akig-lab up`; scripts/test.sh does it). Nothing here is mocked.
The topology comes from the lab inventory (inventories/lab/hosts.yml) and the faults from the
registry (lab/faults.yml), both read through lab/labdata.py, as lab/akig-lab reads them.
Secrets are read per test: `akig-lab reset` generates new ones.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import psycopg2
import pytest
import redis

REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("AKIG_LAB_STATE", REPO / "lab" / "state"))
LABCTL = REPO / "lab" / "akig-lab"
sys.path.insert(0, str(REPO / "lab"))
import labdata  # noqa: E402  # lab/labdata.py: the lab's topology and fault registry

TOPOLOGY = labdata.topology()
FAULTS = labdata.faults()[0]
# Shorthands for the topology (derived from the inventory, never written here)
DB = TOPOLOGY.databases
APPS = TOPOLOGY.app_hosts
CACHE = TOPOLOGY.first("redis")[1]
SAAS = f"http://{TOPOLOGY.first('saas')[1]}"
RESET_TIMES: list[float] = []


def http(url: str, *, method: str = "GET", body: Any = None, token: str | None = None,
         timeout: float = 10) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    except (urllib.error.URLError, OSError):
        return 0, None
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_until(pred: Callable[[], Any], timeout: float = 20, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    return last


def labctl(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    t0 = time.monotonic()
    proc = subprocess.run([str(LABCTL), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if args[:1] == ("reset",):
        RESET_TIMES.append(time.monotonic() - t0)
        print(f"[lab] reset took {RESET_TIMES[-1]:.1f}s", file=sys.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"akig-lab {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Resets are the slow part of the lab tests: say how many there were and what each took."""
    if RESET_TIMES:
        terminalreporter.write_line(
            f"lab resets: {len(RESET_TIMES)}, {sum(RESET_TIMES):.1f}s in all ("
            + ", ".join(f"{s:.1f}s" for s in RESET_TIMES) + ")")


def read_secrets() -> dict[str, str]:
    """The lab's secrets as they are now (read again after a reset, which generates new ones)."""
    path = STATE / "secrets.json"
    assert path.is_file(), "the lab is not up: run `lab/akig-lab up` (scripts/test.sh does it)"
    return json.loads(path.read_text())


@pytest.fixture
def secrets() -> dict[str, str]:
    return read_secrets()


@pytest.fixture(scope="session")
def lab_healthy() -> None:
    proc = labctl("status", check=False)
    assert proc.returncode == 0, f"the lab is not healthy before the tests:\n{proc.stdout}{proc.stderr}"


@pytest.fixture
def lab_up(lab_healthy: None, secrets: dict[str, str]) -> dict[str, str]:
    return secrets


@pytest.fixture(scope="session")
def topology() -> labdata.Topology:
    """The lab's hosts, addresses, groups and production-style names (inventories/lab, lab-fqdn)."""
    return TOPOLOGY


@pytest.fixture(scope="session")
def fault_registry() -> list[dict[str, str]]:
    return FAULTS


@pytest.fixture
def pg(lab_up: dict[str, str]) -> Callable[..., list[tuple]]:
    def query(node: str, sql: str, params: tuple = (), dbname: str = "akig_db") -> list[tuple]:
        conn = psycopg2.connect(host=DB[node], port=5432, user="postgres", dbname=dbname,
                                password=lab_up["pg_superuser_password"], connect_timeout=3)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()
    return query


@pytest.fixture
def rds(lab_up: dict[str, str]) -> redis.Redis:
    return redis.Redis(host=CACHE, port=6379, password=lab_up["redis_password"], socket_timeout=3)


@pytest.fixture
def login(lab_up: dict[str, str]) -> Callable[[str], tuple[int, Any]]:
    def do(host: str = "app-1") -> tuple[int, Any]:
        return http(f"http://{APPS[host]}:4000/api/login", method="POST",
                    body={"email": "probe@akig.example", "password": lab_up["probe_password"]})
    return do


def ansible_playbook(playbook: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a playbook of the collection against the lab inventory, the timeline in the lab's incident folder."""
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
           "AKIG_TIMELINE_DIR": str(STATE / "incidents")}
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), playbook, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    # a deprecation today is an error in a later ansible-core: the suite fails on any
    for stream in (proc.stdout, proc.stderr):
        assert "[DEPRECATION WARNING]" not in stream, (
            "ansible printed a deprecation warning: fix it before it becomes an error\n"
            + "\n".join(line for line in stream.splitlines() if "DEPRECATION" in line))
    return proc


def incident_locks(secrets: dict[str, str], environment: str = "lab") -> list[bytes]:
    """The environment's incident lock records, in whichever Redis database the inventory keeps them."""
    key = f"akig:incident-lock:{environment}"
    found = []
    for db in range(16):
        value = redis.Redis(host=CACHE, port=6379, password=secrets["redis_password"], db=db, socket_timeout=3).get(key)
        if value:
            found.append(value)
    return found


def ledger(service: str | None = None) -> list[dict[str, Any]]:
    status, body = http(f"{SAAS}/_emulator/ledger" + (f"?service={service}" if service else ""))
    assert status == 200, f"emulator ledger unavailable: {status}"
    return body["entries"]


def pm2_procs(host: str) -> list[dict[str, Any]]:
    env = {**os.environ, "PM2_HOME": str(STATE / host / "pm2")}
    out = subprocess.run([str(REPO / "lab" / "node_modules" / ".bin" / "pm2"), "jlist"], env=env,
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return json.loads(out[out.find("["):])


def backend_pids(host: str) -> list[int]:
    """The pids of the host's akig-backend instances under pm2, sorted (a restart changes them)."""
    return sorted(p["pid"] for p in pm2_procs(host) if p["name"] == "akig-backend")
