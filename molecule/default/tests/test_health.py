"""Verify the lab the health role just reported on, from the hosts themselves (testinfra)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

testinfra_hosts = ["ansible://app-1", "ansible://db-2"]
REPO = Path(__file__).resolve().parents[3]
STATE = Path(os.environ.get("AKIG_LAB_STATE", REPO / "lab" / "state"))


@pytest.mark.parametrize("addr", ["127.0.0.21", "127.0.0.22"])
def test_backend_health_answers_200(host, addr: str) -> None:
    if host.backend.get_hostname() != "app-1":
        pytest.skip("checked from app-1")
    out = host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' http://{addr}:4000/api/health")
    assert out == "200"


def test_pm2_runs_the_backend_in_cluster_mode(host) -> None:
    if host.backend.get_hostname() != "app-1":
        pytest.skip("app-1 only")
    pm2_home = STATE / "app-1" / "pm2"
    pm2_bin = REPO / "lab" / "node_modules" / ".bin" / "pm2"
    procs = json.loads(host.check_output(f"PM2_HOME={pm2_home} {pm2_bin} jlist"))
    backends = [p for p in procs if p["name"] == "akig-backend"]
    assert len(backends) == 2
    assert all(p["pm2_env"]["status"] == "online" and p["pid"] for p in backends)


def test_the_replica_is_in_recovery(host) -> None:
    if host.backend.get_hostname() != "db-2":
        pytest.skip("db-2 only")
    # ask PostgreSQL itself (peer authentication on db-2's own socket, no password): in recovery, and
    # streaming from the primary
    out = host.check_output(
        f"runuser -u postgres -- psql -h {STATE / 'db-2' / 'run'} -p 5432 -d postgres -At "
        "-c 'SELECT pg_is_in_recovery(), status FROM pg_stat_wal_receiver'")
    assert out == "t|streaming"
