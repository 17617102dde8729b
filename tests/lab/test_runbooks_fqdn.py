"""RB-P1-001 and RB-P1-003 on the production-shaped lab (inventories/lab-fqdn): hosts by DNS name
through the controller's resolver, no ansible_host, SSH as akig-ops with become, secrets from an
ansible-vault file. One representative scenario per runbook, each through the way AKIG runs it:
RB-P1-001 (backend crash) through ansible-runner as AWX and the drills do, RB-P1-003 (planned
failover, the path with the most remote steps: fence, promote, repoint) through ansible-playbook.
The other scenarios of each runbook run on inventories/lab (same roles, same variables, local
connection) to keep the suite short."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import psycopg2
import pytest

from conftest import APPS, DB, REPO, STATE, http, incident_locks, labctl, backend_pids

FQDN = "inventories/lab-fqdn"


def env() -> dict[str, str]:
    return {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_VAULT_PASSWORD_FILE": str(STATE / "vault-pass"), "AKIG_TIMELINE_DIR": str(STATE / "incidents"),
            "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}


def lock_free(secrets: dict[str, str]) -> bool:
    return incident_locks(secrets) == []


def no_secret_in(secrets: dict[str, str], *paths_or_texts) -> None:
    for item in paths_or_texts:
        if isinstance(item, Path):
            texts = [p.read_bytes().decode(errors="replace") for p in item.rglob("*") if p.is_file()] if item.is_dir() \
                else [item.read_text(errors="replace")]
        else:
            texts = [item]
        for value in secrets.values():
            if len(str(value)) >= 8:
                assert all(str(value) not in t for t in texts), f"a lab secret leaked into {item if isinstance(item, Path) else 'output'}"


@pytest.fixture
def cleared(lab_up):
    labctl("fault", "clear")
    yield
    labctl("fault", "clear")


def test_rb_p1_001_backend_crash_through_ansible_runner(cleared, secrets, tmp_path):
    labctl("fault", "backend_crash")
    private = tmp_path / "runner"
    private.mkdir()
    proc = subprocess.run(
        [str(REPO / ".venv" / "bin" / "ansible-runner"), "run", str(private), "--project-dir", str(REPO),
         "--inventory", str(REPO / FQDN), "-p", "playbooks/rb-p1-001-critical-bug.yml"],
        cwd=REPO, env=env(), capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    # hosts were reached by their production-style names, and repaired
    assert "app-1.lab.akig.internal: akig-backend restarted" in proc.stdout
    for addr in APPS.values():
        assert http(f"http://{addr}:4000/api/health")[0] == 200
    assert lock_free(secrets)
    incident = sorted((STATE / "incidents").glob("INC-*/report.md"), key=lambda p: p.stat().st_mtime)[-1].parent
    no_secret_in(secrets, proc.stdout, private / "artifacts", incident)


@pytest.mark.parametrize("endpoint", ["direct", "pgbouncer"])
def test_rb_p1_003_planned_failover_over_ssh(lab_up, secrets, endpoint):
    """direct: DATABASE_URL rewritten, backends restarted over SSH. pgbouncer: PAUSE over SSH with become, the
    pause's waiter left detached on each app host (it must outlive the SSH session), which repoints and resumes."""
    labctl("reset", timeout=300)
    if endpoint == "pgbouncer":
        labctl("db-endpoint", "pgbouncer", timeout=120)
    secrets = json.loads((STATE / "secrets.json").read_text())
    pids = {host: backend_pids(host) for host in APPS}
    try:
        proc = subprocess.run(
            [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", FQDN, "playbooks/rb-p1-003-db-failover.yml",
             "-e", "rb_p1_003_strategy=failover"],
            cwd=REPO, env=env(), capture_output=True, text=True, timeout=900, check=False)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        assert "db-2.lab.akig.internal: promoted to primary" in proc.stdout
        # exactly one writable node, and the app writes through it
        conn = psycopg2.connect(host=DB["db-2"], port=5432, user="postgres", dbname="postgres",
                                password=secrets["pg_superuser_password"])
        with conn.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery()")
            assert cur.fetchone() == (False,)
        conn.close()
        for addr in APPS.values():
            assert http(f"http://{addr}:4000/api/health")[0] == 200
        if endpoint == "pgbouncer":
            status = json.loads(labctl("status", "--json", check=False).stdout)
            for host in APPS:
                # the entry names the new primary as the inventory does (its DNS name here)
                assert status[host]["pgbouncer"]["points_to"] == "db-2.lab.akig.internal:5432", status[host]
                assert status[host]["pgbouncer"]["paused"] is False, status[host]
            # no backend restarted: the app reconnects through its PgBouncer
            assert {host: backend_pids(host) for host in APPS} == pids
            # the waiter outlived the SSH session: it resumed each PgBouncer before the repoint task ran
            for host in APPS:
                assert re.search(r'\[%s\.lab\.akig\.internal\] => \{\s*"msg": \[\s*"the pause\'s waiter had already pointed '
                                 % re.escape(host), proc.stdout), (host, proc.stdout[-4000:])
        assert lock_free(secrets)
        no_secret_in(secrets, proc.stdout, proc.stderr)
    finally:
        labctl("reset", timeout=300)
        if endpoint == "pgbouncer":
            labctl("db-endpoint", "direct", timeout=120)
