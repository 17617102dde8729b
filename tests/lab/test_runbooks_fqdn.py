"""RB-P1-001 and RB-P1-003 on the production-shaped lab (inventories/lab-fqdn): hosts by DNS name
through the controller's resolver, no ansible_host, SSH as akig-ops with become, secrets from an
ansible-vault file. One representative scenario per runbook, each through the way AKIG runs it:
RB-P1-001 (backend crash) through ansible-runner as AWX and the drills do, RB-P1-003 (planned
failover, the path with the most remote steps: fence, promote, repoint; and a crash through PgBouncer, whose
switch play mixes the controller and the app hosts) through ansible-playbook.
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


@pytest.mark.parametrize(("endpoint", "scenario"), [("direct", "planned"), ("pgbouncer", "planned"), ("pgbouncer", "crash")])
def test_rb_p1_003_failover_over_ssh(lab_up, secrets, endpoint, scenario):
    """direct: DATABASE_URL rewritten, backends restarted over SSH. pgbouncer: PAUSE over SSH with become, the
    pause's waiter left detached on each app host (it must outlive the SSH session), which repoints and resumes.
    pgbouncer after a crash: the backends, in the switch play with the controller, repointed over SSH right after
    the promotion, before the write probe."""
    labctl("reset", timeout=300)
    if endpoint == "pgbouncer":
        labctl("db-endpoint", "pgbouncer", timeout=120)
    secrets = json.loads((STATE / "secrets.json").read_text())
    pids = {host: backend_pids(host) for host in APPS}
    incident = f"INC-DRILL-FQDN-{endpoint.upper()}-{scenario.upper()}-{os.getpid()}"
    try:
        if scenario == "crash":
            labctl("fault", "db_primary_down")
        proc = subprocess.run(
            [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", FQDN, "playbooks/rb-p1-003-db-failover.yml",
             "-e", "rb_p1_003_strategy=failover"],
            cwd=REPO, env={**env(), "AKIG_INCIDENT_ID": incident}, capture_output=True, text=True, timeout=900,
            check=False)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        promoted = re.search(r"(db-[23])\.lab\.akig\.internal: promoted to primary", proc.stdout)
        assert promoted, proc.stdout[-4000:]
        new = promoted.group(1)
        # exactly one writable node, and the app writes through it
        conn = psycopg2.connect(host=DB[new], port=5432, user="postgres", dbname="postgres",
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
                assert status[host]["pgbouncer"]["points_to"] == f"{new}.lab.akig.internal:5432", status[host]
                assert status[host]["pgbouncer"]["paused"] is False, status[host]
            # no backend restarted: the app reconnects through its PgBouncer
            assert {host: backend_pids(host) for host in APPS} == pids
        if scenario == "crash":
            # each PgBouncer was repointed (changed) in the switch play, before the write probe's 201
            records = [json.loads(line) for line in
                       (STATE / "incidents" / incident / "timeline.jsonl").read_text().splitlines()]
            tasks = [(r.get("task"), r.get("host"), r.get("outcome")) for r in records if "task" in r]
            first_probe = tasks.index(
                ("Write the probe's row through the app (a real write on the primary, no business data)", "localhost",
                 "changed"))
            for host in APPS:
                assert (("Point PgBouncer at the new primary and let the waiting transactions through",
                         f"{host}.lab.akig.internal", "changed") in tasks[:first_probe]), (host, tasks[:first_probe])
        elif endpoint == "pgbouncer":
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


def test_rb_p1_003_crash_with_a_backend_host_that_does_not_answer_still_fails_over(lab_up, secrets, tmp_path):
    """After a crash the backends are in the switch play, repointed only after the promotion: app-2's SSH refused
    (an extra inventory gives it a closed port) neither delays nor blocks the database's failover. app-1 is repointed
    and the write proven through it; the repoint play's guard then finds app-2 down and the run fails, saying so."""
    labctl("reset", timeout=300)
    labctl("db-endpoint", "pgbouncer", timeout=120)
    secrets = json.loads((STATE / "secrets.json").read_text())
    (tmp_path / "app-2-down.yml").write_text("all:\n  hosts:\n    app-2.lab.akig.internal:\n      ansible_port: 1\n")
    incident = f"INC-DRILL-FQDN-APP2-DOWN-{os.getpid()}"
    try:
        labctl("fault", "db_primary_down")
        proc = subprocess.run(
            [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", FQDN, "-i", str(tmp_path / "app-2-down.yml"),
             "playbooks/rb-p1-003-db-failover.yml", "-e", "rb_p1_003_strategy=failover"],
            cwd=REPO, env={**env(), "AKIG_INCIDENT_ID": incident}, capture_output=True, text=True, timeout=900,
            check=False)
        assert proc.returncode != 0, proc.stdout[-4000:]
        assert "host unreachable before the play started: app-2.lab.akig.internal" in proc.stdout, proc.stdout[-4000:]
        report = (STATE / "incidents" / incident / "report.md").read_text()
        promoted = re.search(r"(db-[23])\.lab\.akig\.internal: promoted to primary", report)
        assert promoted, report[:4000]
        new = promoted.group(1)
        # exactly one node accepts writes, the new primary
        writable = {}
        for node in DB:
            try:
                conn = psycopg2.connect(host=DB[node], port=5432, user="postgres", dbname="postgres", connect_timeout=3,
                                        password=secrets["pg_superuser_password"])
            except psycopg2.OperationalError:
                continue
            with conn.cursor() as cur:
                cur.execute("SELECT pg_is_in_recovery()")
                writable[node] = not cur.fetchone()[0]
            conn.close()
        assert [n for n, w in writable.items() if w] == [new], writable
        status = json.loads(labctl("status", "--json", check=False).stdout)
        assert status["app-1"]["pgbouncer"]["points_to"] == f"{new}.lab.akig.internal:5432", status["app-1"]
        # app-1 writes again: the write was proven through it before the repoint play found app-2 down
        records = [json.loads(line) for line in (STATE / "incidents" / incident / "timeline.jsonl").read_text().splitlines()]
        probes = [r for r in records if r.get("task") == "Write the probe's row through the app (a real write on the "
                  "primary, no business data)" and r.get("outcome") == "changed"]
        assert probes, [r.get("task") for r in records if r.get("outcome") == "failed"]
        assert lock_free(secrets)
        no_secret_in(secrets, proc.stdout, proc.stderr)
    finally:
        labctl("reset", timeout=300)
        labctl("db-endpoint", "direct", timeout=120)
