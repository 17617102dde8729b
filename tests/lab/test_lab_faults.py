"""Each fault of the registry (lab/faults.yml) is injected for real, observed from outside the way
an operator would see it, then cleared; the lab must be healthy again after every clear.

Every fault has an observation here (`CHECKS`): the code before its `yield` runs before the fault
is injected, the code after it once the fault is in. A registry entry without one fails the suite."""
from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg2
import pytest

from conftest import APPS, DB, FAULTS, REPO, STATE, http, labctl, pm2_procs, wait_until

BACKENDS = [f"http://{a}:4000" for a in APPS.values()]
FRONTEND = f"http://{APPS['app-1']}:3000"
SMS = {"type": "sms", "phone": "+33612345678"}
EMAIL = {"type": "email", "email": "gestion@akig.example"}


def backend_up(p: dict) -> bool:
    """pm2 shows 'online' with pid 0 once it has given up restarting a cluster worker."""
    return p["pm2_env"]["status"] == "online" and bool(p["pid"])


@dataclass
class Lab:
    """What an observation may use: the fixtures of the lab tests."""
    pg: Callable[..., list[tuple]]
    login: Callable[[str], tuple[int, Any]]

    def token(self, host: str = "app-1") -> str:
        status, body = self.login(host)
        assert status == 200, body
        return body["token"]


Check = Callable[[Lab], Iterator[None]]
CHECKS: dict[str, Check] = {}


def check(name: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS[name] = fn
        return fn
    return register


PRIMARY, *REPLICAS = DB  # the lab's baseline: the first database host is the primary


def streaming_replicas(pg: Callable[..., list[tuple]]) -> list[str]:
    return sorted(r[0] for r in pg(PRIMARY, "SELECT application_name FROM pg_stat_replication "
                                            "WHERE state = 'streaming'", dbname="postgres"))


@pytest.fixture
def cleared(lab_up, pg) -> Iterator[None]:
    yield
    labctl("fault", "clear")
    for url in BACKENDS:
        assert http(f"{url}/api/health")[0] == 200, f"{url} not healthy after clear"
    assert http(f"{FRONTEND}/healthz")[0] == 200
    assert labctl("status", check=False).returncode == 0
    assert wait_until(lambda: streaming_replicas(pg) == sorted(REPLICAS), 30), "replication not streaming after clear"


# --------------------------------------------------------------------------- the registry itself

def test_every_fault_of_the_registry_has_an_observation() -> None:
    assert sorted(CHECKS) == sorted(f["name"] for f in FAULTS)


def test_the_lab_controller_lists_the_registry() -> None:
    listed = json.loads(labctl("faults", "--json").stdout)
    assert [f["name"] for f in listed] == [f["name"] for f in FAULTS]
    text = labctl("faults").stdout
    assert all(f["name"] in text for f in FAULTS) and "clear" in text


def test_the_readme_fault_table_is_the_registry() -> None:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## The lab"):text.index("## Inventories")]
    lines = section[section.index("| fault |"):].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append((cells[0].strip("`"), cells[1], cells[2]))
    assert rows == [(f["name"], f["breaks"], f["description"]) for f in FAULTS]


def test_unknown_fault_is_refused_with_the_list() -> None:
    proc = labctl("fault", "disk_full", check=False)
    assert proc.returncode == 2
    assert "unknown fault 'disk_full'" in proc.stderr and "backend_crash" in proc.stderr
    assert all(f["name"] in proc.stderr for f in FAULTS)


# --------------------------------------------------------------------------- one test per fault

@pytest.mark.parametrize("fault", [f["name"] for f in FAULTS])
def test_fault(cleared, pg, login, fault: str) -> None:
    steps = CHECKS[fault](Lab(pg, login))
    next(steps)  # observe the baseline
    labctl("fault", fault)
    with suppress(StopIteration):
        next(steps)  # observe the fault
        raise AssertionError(f"the observation of {fault} yields more than once")


@check("backend_crash")
def _backend_crash(lab: Lab) -> Iterator[None]:
    yield
    for url in BACKENDS:
        assert http(f"{url}/api/health", timeout=2)[0] == 0  # connection refused
    for host in APPS:
        backends = [p for p in pm2_procs(host) if p["name"] == "akig-backend"]
        assert backends and not any(backend_up(p) for p in backends)


@check("frontend_broken")
def _frontend_broken(lab: Lab) -> Iterator[None]:
    yield
    assert http(f"{FRONTEND}/healthz")[0] == 500
    assert http(f"{FRONTEND}/contrats")[0] == 500
    assert http(f"{BACKENDS[0]}/api/health")[0] == 200  # the backend is not the problem


def _head(host: str, fmt: str = "%H") -> str:
    return subprocess.run(["git", "-C", str(STATE / host / "akig"), "log", "-1", f"--format={fmt}"],
                          capture_output=True, text=True, check=True).stdout.strip()


@check("bad_deploy")
def _bad_deploy(lab: Lab) -> Iterator[None]:
    before = _head("app-1")
    yield
    assert _head("app-1") != before and "deploy" in _head("app-1", "%s")
    for _attempt in range(3):
        assert http(f"{BACKENDS[0]}/api/health", timeout=2)[0] != 200
        time.sleep(0.5)
    backends = [p for p in pm2_procs("app-1") if p["name"] == "akig-backend"]
    assert all(p["pm2_env"]["restart_time"] > 0 or not backend_up(p) for p in backends)


@check("db_primary_down")
def _db_primary_down(lab: Lab) -> Iterator[None]:
    yield
    status, body = wait_until(lambda: (r := http(f"{BACKENDS[0]}/api/health")) and r[0] == 503 and r, 10) or (0, None)
    assert status == 503 and body["error"] == "Database connection failed"
    with pytest.raises(psycopg2.OperationalError):
        lab.pg("db-1", "SELECT 1")
    assert lab.pg("db-2", "SELECT pg_is_in_recovery()", dbname="postgres") == [(True,)]  # nobody promoted it


@check("jwt_secret_drift")
def _jwt_secret_drift(lab: Lab) -> Iterator[None]:
    token = lab.token("app-1")
    fp_before = http(f"{BACKENDS[0]}/api/health")[1]["jwt_fingerprint"]
    yield
    status, body = http(f"{BACKENDS[0]}/api/contracts", token=token)
    assert status == 401 and body["error"] == "Invalid token"
    assert http(f"{BACKENDS[0]}/api/health")[1]["jwt_fingerprint"] != fp_before


@check("jwt_secret_drift_one")
def _jwt_secret_drift_one(lab: Lab) -> Iterator[None]:
    token = lab.token("app-1")
    fps = {h: http(f"http://{a}:4000/api/health")[1]["jwt_fingerprint"] for h, a in APPS.items()}
    assert len(set(fps.values())) == 1
    yield
    after = {h: http(f"http://{a}:4000/api/health")[1]["jwt_fingerprint"] for h, a in APPS.items()}
    assert after["app-1"] == fps["app-1"] and after["app-2"] != fps["app-2"]
    assert http(f"http://{APPS['app-1']}:4000/api/contracts", token=token)[0] == 200
    status, body = http(f"http://{APPS['app-2']}:4000/api/contracts", token=token)
    assert status == 401 and body["error"] == "Invalid token"
    token2 = lab.token("app-2")  # a token app-2 signs is refused by app-1
    assert http(f"http://{APPS['app-1']}:4000/api/contracts", token=token2)[0] == 401


@check("redis_sessions_corrupt")
def _redis_sessions_corrupt(lab: Lab) -> Iterator[None]:
    token = lab.token("app-1")
    yield
    assert http(f"{BACKENDS[0]}/api/contracts", token=token)[0] == 401
    assert lab.login("app-1")[0] != 200


def _payments_latency(token: str) -> float:
    best = 1e9
    for _attempt in range(3):
        t0 = time.monotonic()
        status, _body = http(f"{BACKENDS[0]}/api/payments?page=3&per_page=20", token=token, timeout=60)
        assert status == 200
        best = min(best, time.monotonic() - t0)
    return best


@check("slow_queries")
def _slow_queries(lab: Lab) -> Iterator[None]:
    token = lab.token("app-1")
    fast = _payments_latency(token)
    yield
    assert lab.pg("db-1", "SELECT count(*) FROM pg_indexes WHERE indexname = 'payments_contract_id_idx'") == [(0,)]
    slow = _payments_latency(token)
    assert slow > 3 * fast and slow > 0.1, (fast, slow)


@check("memory_leak")
def _memory_leak(lab: Lab) -> Iterator[None]:
    def backend_memory() -> int:
        return sum(p["monit"]["memory"] for p in pm2_procs("app-1") if p["name"] == "akig-backend")
    yield
    first = wait_until(lambda: backend_memory() or None, 10)
    time.sleep(4)
    assert backend_memory() - first > 16 * 1024 * 1024


def _replica_lag(lab: Lab) -> int:
    """Bytes of WAL the primary wrote that db-2 has not replayed."""
    primary_lsn = lab.pg("db-1", "SELECT pg_current_wal_lsn()::text", dbname="postgres")[0][0]
    return int(lab.pg("db-2", "SELECT pg_wal_lsn_diff(%s, pg_last_wal_replay_lsn())", (primary_lsn,),
                      dbname="postgres")[0][0])


def _write(lab: Lab, rows: int = 2000) -> None:
    lab.pg("db-1", "INSERT INTO lab_lag SELECT md5(g::text) FROM generate_series(1, %s) g", (rows,))


@check("replica_lagging")
def _replica_lagging(lab: Lab) -> Iterator[None]:
    assert "db-2" in streaming_replicas(lab.pg)
    lab.pg("db-1", "CREATE TABLE IF NOT EXISTS lab_lag (marker text)")
    assert wait_until(lambda: lab.pg("db-2", "SELECT to_regclass('lab_lag') IS NOT NULL")[0][0], 10)
    yield
    assert "db-2" not in streaming_replicas(lab.pg)
    assert lab.pg("db-2", "SELECT pg_is_wal_replay_paused()", dbname="postgres") == [(True,)]
    _write(lab)
    first = _replica_lag(lab)
    _write(lab)
    second = _replica_lag(lab)
    assert 0 < first < second, (first, second)
    marker = uuid.uuid4().hex
    lab.pg("db-1", "INSERT INTO lab_lag VALUES (%s)", (marker,))
    time.sleep(1)
    assert not lab.pg("db-2", "SELECT 1 FROM lab_lag WHERE marker = %s", (marker,))  # the replica is stale
    assert http(f"{BACKENDS[0]}/api/health")[0] == 200  # the app does not notice


@check("pgbouncer_down")
def _pgbouncer_down(lab: Lab) -> Iterator[None]:
    def answers(addr: str) -> bool:
        with suppress(OSError), socket.create_connection((addr, 6432), timeout=1):
            return True
        return False

    topology = labctl("db-endpoint").stdout.strip()
    sick, *others = APPS
    assert all(answers(a) for a in APPS.values())
    pid = int((STATE / sick / "pgbouncer" / "pgbouncer.pid").read_text().split()[0])
    yield
    assert not answers(APPS[sick]) and all(answers(APPS[h]) for h in others)
    state = "gone"
    with suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert state in ("gone", "Z"), f"the PgBouncer process {pid} is still there ({state})"
    # the app on that host loses its database only when it goes through PgBouncer
    expected = 503 if topology == "pgbouncer" else 200
    assert wait_until(lambda: http(f"http://{APPS[sick]}:4000/api/health")[0] == expected, 10), topology
    assert http(f"http://{APPS[others[0]]}:4000/api/health")[0] == 200


def _provider_check(provider_status: int, *bodies: dict) -> Check:
    def observe(lab: Lab) -> Iterator[None]:
        for body in bodies:
            assert http(f"{BACKENDS[0]}/api/notifications/test", method="POST", body=body)[0] == 200
        yield
        for body in bodies:
            status, resp = http(f"{BACKENDS[0]}/api/notifications/test", method="POST", body=body)
            assert status == 502 and resp["provider_status"] == provider_status, (body["type"], status, resp)
    return observe


check("sms_provider_down")(_provider_check(503, SMS))
check("email_provider_down")(_provider_check(503, EMAIL))
check("provider_quota")(_provider_check(429, SMS, EMAIL))
check("provider_credentials_expired")(_provider_check(401, SMS, EMAIL))
