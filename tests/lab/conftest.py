"""Fixtures for tests that talk to the real lab (PostgreSQL, Redis, pm2, Node, emulator).

The lab must be up (`lab/akig-lab up`; scripts/test.sh does it). Nothing here is mocked.
"""
from __future__ import annotations

import json
import os
import subprocess
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
DB = {"db-1": "127.0.0.11", "db-2": "127.0.0.12"}
APPS = {"app-1": "127.0.0.21", "app-2": "127.0.0.22"}
SAAS = "http://127.0.0.41"


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
    proc = subprocess.run([str(LABCTL), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"akig-lab {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def secrets() -> dict[str, str]:
    path = STATE / "secrets.json"
    assert path.is_file(), "the lab is not up: run `lab/akig-lab up` (scripts/test.sh does it)"
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def lab_up(secrets: dict[str, str]) -> dict[str, str]:
    proc = labctl("status", check=False)
    assert proc.returncode == 0, f"the lab is not healthy before the tests:\n{proc.stdout}{proc.stderr}"
    return secrets


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
    return redis.Redis(host="127.0.0.31", port=6379, password=lab_up["redis_password"], socket_timeout=3)


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
    return subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), playbook, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def ledger(service: str | None = None) -> list[dict[str, Any]]:
    status, body = http(f"{SAAS}/_emulator/ledger" + (f"?service={service}" if service else ""))
    assert status == 200, f"emulator ledger unavailable: {status}"
    return body["entries"]


def pm2_procs(host: str) -> list[dict[str, Any]]:
    env = {**os.environ, "PM2_HOME": str(STATE / host / "pm2")}
    out = subprocess.run([str(REPO / "lab" / "node_modules" / ".bin" / "pm2"), "jlist"], env=env,
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return json.loads(out[out.find("["):])
