"""Each fault is injected for real, observed from outside the way an operator would see
it, then cleared; the lab must be healthy again after every clear."""
from __future__ import annotations

import time
from typing import Iterator

import pytest

from conftest import APPS, STATE, http, labctl, pm2_procs, wait_until

BACKENDS = [f"http://{a}:4000" for a in APPS.values()]
FRONTEND = f"http://{APPS['app-1']}:3000"


def backend_up(p: dict) -> bool:
    """pm2 shows 'online' with pid 0 once it has given up restarting a cluster worker."""
    return p["pm2_env"]["status"] == "online" and bool(p["pid"])


@pytest.fixture
def cleared(lab_up) -> Iterator[None]:
    yield
    labctl("fault", "clear")
    for url in BACKENDS:
        assert http(f"{url}/api/health")[0] == 200, f"{url} not healthy after clear"
    assert http(f"{FRONTEND}/healthz")[0] == 200
    assert labctl("status", check=False).returncode == 0


def test_unknown_fault_is_refused_with_the_list() -> None:
    proc = labctl("fault", "disk_full", check=False)
    assert proc.returncode == 2
    assert "unknown fault 'disk_full'" in proc.stderr and "backend_crash" in proc.stderr


def test_backend_crash(cleared) -> None:
    labctl("fault", "backend_crash")
    for url in BACKENDS:
        assert http(f"{url}/api/health", timeout=2)[0] == 0  # connection refused
    for host in APPS:
        backends = [p for p in pm2_procs(host) if p["name"] == "akig-backend"]
        assert backends and not any(backend_up(p) for p in backends)


def test_frontend_broken(cleared) -> None:
    labctl("fault", "frontend_broken")
    assert http(f"{FRONTEND}/healthz")[0] == 500
    assert http(f"{FRONTEND}/contrats")[0] == 500
    assert http(f"{BACKENDS[0]}/api/health")[0] == 200  # the backend is not the problem


def test_bad_deploy(cleared) -> None:
    import subprocess
    before = subprocess.run(["git", "-C", str(STATE / "app-1" / "akig"), "rev-parse", "HEAD"],
                            capture_output=True, text=True, check=True).stdout
    labctl("fault", "bad_deploy")
    after = subprocess.run(["git", "-C", str(STATE / "app-1" / "akig"), "log", "-1", "--format=%H %s"],
                           capture_output=True, text=True, check=True).stdout
    assert after.split()[0] != before.strip() and "deploy" in after
    for _attempt in range(3):
        assert http(f"{BACKENDS[0]}/api/health", timeout=2)[0] != 200
        time.sleep(0.5)
    backends = [p for p in pm2_procs("app-1") if p["name"] == "akig-backend"]
    assert all(p["pm2_env"]["restart_time"] > 0 or not backend_up(p) for p in backends)


def test_db_primary_down(cleared, pg) -> None:
    labctl("fault", "db_primary_down")
    status, body = wait_until(lambda: (r := http(f"{BACKENDS[0]}/api/health")) and r[0] == 503 and r, 10) or (0, None)
    assert status == 503 and body["error"] == "Database connection failed"
    import psycopg2
    with pytest.raises(psycopg2.OperationalError):
        pg("db-1", "SELECT 1")
    assert pg("db-2", "SELECT pg_is_in_recovery()", dbname="postgres") == [(True,)]  # nobody promoted it


def test_jwt_secret_drift(cleared, login) -> None:
    status, body = login("app-1")
    assert status == 200
    token = body["token"]
    fp_before = http(f"{BACKENDS[0]}/api/health")[1]["jwt_fingerprint"]
    labctl("fault", "jwt_secret_drift")
    status, body = http(f"{BACKENDS[0]}/api/contracts", token=token)
    assert status == 401 and body["error"] == "Invalid token"
    assert http(f"{BACKENDS[0]}/api/health")[1]["jwt_fingerprint"] != fp_before


def test_redis_sessions_corrupt(cleared, login) -> None:
    status, body = login("app-1")
    assert status == 200
    token = body["token"]
    labctl("fault", "redis_sessions_corrupt")
    assert http(f"{BACKENDS[0]}/api/contracts", token=token)[0] == 401
    assert login("app-1")[0] != 200


def _payments_latency(token: str) -> float:
    best = 1e9
    for _attempt in range(3):
        t0 = time.monotonic()
        status, _body = http(f"{BACKENDS[0]}/api/payments?page=3&per_page=20", token=token, timeout=60)
        assert status == 200
        best = min(best, time.monotonic() - t0)
    return best


def test_slow_queries(cleared, login, pg) -> None:
    token = login("app-1")[1]["token"]
    fast = _payments_latency(token)
    labctl("fault", "slow_queries")
    assert pg("db-1", "SELECT count(*) FROM pg_indexes WHERE indexname = 'payments_contract_id_idx'") == [(0,)]
    slow = _payments_latency(token)
    assert slow > 3 * fast and slow > 0.1, (fast, slow)


def test_memory_leak(cleared) -> None:
    def backend_memory() -> int:
        return sum(p["monit"]["memory"] for p in pm2_procs("app-1") if p["name"] == "akig-backend")
    labctl("fault", "memory_leak")
    first = wait_until(lambda: backend_memory() or None, 10)
    time.sleep(4)
    assert backend_memory() - first > 16 * 1024 * 1024


@pytest.mark.parametrize(("fault", "kind", "body", "provider_status"), [
    ("sms_provider_down", "sms", {"type": "sms", "phone": "+33612345678"}, 503),
    ("email_provider_down", "email", {"type": "email", "email": "gestion@akig.example"}, 503),
    ("provider_quota", "sms", {"type": "sms", "phone": "+33612345678"}, 429),
])
def test_provider_faults(cleared, fault: str, kind: str, body: dict, provider_status: int) -> None:
    assert http(f"{BACKENDS[0]}/api/notifications/test", method="POST", body=body)[0] == 200
    labctl("fault", fault)
    status, resp = http(f"{BACKENDS[0]}/api/notifications/test", method="POST", body=body)
    assert status == 502 and resp["provider_status"] == provider_status
