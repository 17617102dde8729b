"""PgBouncer on every backend host, the two database topologies (`lab/akig-lab db-endpoint`), the second
replica db-3, and RB-P1-001 repairing a PgBouncer that is down. Observed from outside, on the real lab:
real PgBouncer and PostgreSQL processes, payments written through the app's HTTP API."""
from __future__ import annotations

import base64
import json
import os
import pwd
import re
import time
from pathlib import Path
from typing import Any, Iterator

import psycopg2
import pytest

import labctl as lab_controller  # lab/labctl.py (conftest puts lab/ on sys.path)
from conftest import APPS, DB, REPO, STATE, ansible_playbook, http, incident_locks, labctl, pm2_procs, read_secrets, \
    wait_until

ADMIN = "akig_pgbouncer_admin"
PORT = 6432
PGB_FILES = ("pgbouncer.ini", "databases.ini", "userlist.txt", "hba.conf")
RB_P1_001 = "playbooks/rb-p1-001-critical-bug.yml"
VALIDATE = str(REPO / "tests" / "lab" / "playbooks" / "pgbouncer_validate.yml")


def sql(node: str, query: str, params: tuple = (), dbname: str = "akig_db") -> list[tuple]:
    """A query as the superuser, with the secrets as they are now (a reset generates new ones)."""
    conn = psycopg2.connect(host=DB[node], port=5432, user="postgres", dbname=dbname, connect_timeout=3,
                            password=read_secrets()["pg_superuser_password"])
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def primary() -> str:
    found = []
    for node in DB:
        try:
            if not sql(node, "SELECT pg_is_in_recovery()", dbname="postgres")[0][0]:
                found.append(node)
        except psycopg2.OperationalError:
            continue
    assert len(found) == 1, f"expected exactly one writable node, found {found}"
    return found[0]


def admin_show(addr: str, what: str, user: str = ADMIN, password: str | None = None) -> list[dict[str, Any]]:
    conn = psycopg2.connect(host=addr, port=PORT, user=user, dbname="pgbouncer", connect_timeout=3,
                            password=password if password is not None else read_secrets()["pgbouncer_admin_password"])
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"SHOW {what}")
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, row)) for row in cur.fetchall()]
    finally:
        conn.close()


def app_clients(addr: str) -> int:
    """Client connections of the app's user that this PgBouncer holds."""
    return sum(1 for c in admin_show(addr, "CLIENTS") if c["user"] == "akig_app" and c["database"] == "akig_db")


def endpoint() -> str:
    return labctl("db-endpoint").stdout.strip()


def database_target(host: str) -> str:
    """host:port of DATABASE_URL in the backend's env file (the password is not kept)."""
    line = next(ln for ln in (STATE / host / "shared" / "akig.env").read_text().splitlines()
                if ln.startswith("DATABASE_URL="))
    return line.split("@", 1)[1].split("/", 1)[0]


def write_payment(host: str, contract: int) -> int:
    status, body = http(f"http://{APPS[host]}:4000/api/login", method="POST",
                        body={"email": "probe@akig.example", "password": read_secrets()["probe_password"]})
    assert status == 200, (host, status, body)
    status, body = http(f"http://{APPS[host]}:4000/api/payments", method="POST", token=body["token"],
                        body={"contract_id": contract, "amount_cents": 4242, "due_date": "2026-12-05"})
    assert status == 201, (host, status, body)
    return body["id"]


def streaming_replicas(node: str) -> list[str]:
    return sorted(r[0] for r in sql(node, "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'",
                                    dbname="postgres"))


@pytest.fixture
def endpoint_kept(lab_up) -> Iterator[None]:
    """The lab's topology setting and baseline as they were before the test."""
    before = endpoint()
    yield
    labctl("fault", "clear")
    labctl("db-endpoint", before)


def test_both_topologies_pgbouncer_everywhere_and_three_nodes_after_a_reset(endpoint_kept) -> None:
    # the setting survives a reset; the reset brings back db-1 primary, db-2 and db-3 streaming
    labctl("db-endpoint", "pgbouncer")
    labctl("reset", timeout=600)
    assert endpoint() == "pgbouncer"
    replicas = sorted(n for n in DB if n != "db-1")
    assert primary() == "db-1" and len(replicas) >= 2
    assert wait_until(lambda: streaming_replicas("db-1") == replicas, 30), streaming_replicas("db-1")
    sql("db-1", "CREATE TABLE IF NOT EXISTS lab_pgbouncer (marker text)")
    marker = os.urandom(8).hex()
    sql("db-1", "INSERT INTO lab_pgbouncer VALUES (%s)", (marker,))
    for node in replicas:
        assert sql(node, "SELECT pg_is_in_recovery()", dbname="postgres") == [(True,)]
        assert wait_until(lambda n=node: sql(n, "SELECT 1 FROM lab_pgbouncer WHERE marker = %s", (marker,)), 10), node

    secrets = read_secrets()
    postgres_uid = pwd.getpwnam("postgres").pw_uid
    for host, addr in APPS.items():
        d = STATE / host / "pgbouncer"
        # files 0600, owned by the user PgBouncer runs as (not root), no lab secret in any file of its folder
        for name in PGB_FILES:
            st = (d / name).stat()
            assert (st.st_mode & 0o777, st.st_uid) == (0o600, postgres_uid), (host, name, oct(st.st_mode))
        pid = int((d / "pgbouncer.pid").read_text().split()[0])
        uid_line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("Uid:"))
        assert int(uid_line.split()[1]) == postgres_uid
        for path in d.iterdir():
            text = path.read_text(errors="replace")
            leaked = [key for key, value in secrets.items() if value in text]
            assert not leaked, f"{path} holds the clear-text value of {leaked}"
        users = [ln.split('"')[1::2] for ln in (d / "userlist.txt").read_text().splitlines() if ln.strip()]
        assert sorted(u for u, _v in users) == sorted(["akig_app", ADMIN])
        assert all(v.startswith("SCRAM-SHA-256$4096:") for _u, v in users)
        # the app's verifier is PostgreSQL's own; the admin's, computed by the lab (RFC 7677), matches its secret
        verifiers = dict(users)
        assert verifiers["akig_app"] == sql("db-1", "SELECT rolpassword FROM pg_authid WHERE rolname = 'akig_app'")[0][0]
        assert lab_controller.scram_matches(verifiers[ADMIN], secrets["pgbouncer_admin_password"])
        salt = verifiers["akig_app"].split("$")[1].split(":")[1]
        assert lab_controller.scram_verifier(secrets["pg_app_password"], base64.b64decode(salt)) == verifiers["akig_app"]
        # its entry points at the current primary, in the file RB-P1-003 repoints and in the running PgBouncer
        assert f"akig_db = host={DB['db-1']} port=5432 dbname=akig_db" in (d / "databases.ini").read_text()
        entry = next(e for e in admin_show(addr, "DATABASES") if e["name"] == "akig_db")
        assert (entry["host"], entry["port"], entry["paused"]) == (DB["db-1"], 5432, 0)
        # the admin console: the app user is refused, and so is a wrong admin password
        for user, password in (("akig_app", secrets["pg_app_password"]), (ADMIN, "wrong-" + os.urandom(6).hex())):
            with pytest.raises(psycopg2.OperationalError):
                admin_show(addr, "VERSION", user=user, password=password)

    contract = sql("db-1", "SELECT min(id) FROM contracts")[0][0]
    # pgbouncer topology: the app talks to its host's PgBouncer; a payment written through the app lands on db-1
    for host, addr in APPS.items():
        assert database_target(host) == f"{addr}:{PORT}"
        pay_id = write_payment(host, contract)
        assert sql("db-1", "SELECT amount_cents FROM payments WHERE id = %s", (pay_id,)) == [(4242,)]
        assert app_clients(addr) > 0, f"the app on {host} holds no connection through PgBouncer"
    # direct topology: DATABASE_URL names the primary, PgBouncer keeps running but the app no longer uses it
    labctl("db-endpoint", "direct")
    for host, addr in APPS.items():
        assert database_target(host) == f"{DB['db-1']}:5432"
        pay_id = write_payment(host, contract)
        assert sql("db-1", "SELECT amount_cents FROM payments WHERE id = %s", (pay_id,)) == [(4242,)]
        assert admin_show(addr, "DATABASES"), f"PgBouncer on {host} stopped with the switch"
        assert wait_until(lambda a=addr: app_clients(a) == 0, 15), f"the app on {host} still goes through PgBouncer"
    status = json.loads(labctl("status", "--json").stdout)
    assert status["db_endpoint"] == {"setting": "direct"}
    assert all(status[h]["pgbouncer"]["up"] and status[h]["ok"] for h in APPS)


def test_a_pgbouncer_that_is_down_is_the_cause_rb_p1_001_starts_it(endpoint_kept) -> None:
    labctl("db-endpoint", "pgbouncer")
    sick, addr = next(iter(APPS.items()))
    pids = {h: sorted(p["pid"] for p in pm2_procs(h) if p["name"] == "akig-backend") for h in APPS}
    db_primary = primary()
    labctl("fault", "pgbouncer_down")
    status, body = wait_until(lambda: (r := http(f"http://{addr}:4000/api/health")) and r[0] == 503 and r, 10) or (0, None)
    assert status == 503, body  # the backend blames the database
    t0 = time.monotonic()
    proc = ansible_playbook(RB_P1_001)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-4000:]
    diagnoses = dict(re.findall(r'"msg": "(app-\d): (\w+) ', proc.stdout))
    assert diagnoses == {sick: "pgbouncer_down", **{h: "healthy" for h in APPS if h != sick}}
    report = sorted((STATE / "incidents").glob("INC-*/report.md"), key=lambda p: p.stat().st_mtime)[-1].read_text()
    assert f"{sick}: PgBouncer started again (it was down), akig-backend healthy through it" in report
    assert "rb-p1-003" not in report.lower()  # no hand-over: the database was never the cause
    assert primary() == db_primary
    assert admin_show(addr, "DATABASES")
    for host, a in APPS.items():
        assert http(f"http://{a}:4000/api/health")[0] == 200, host
    # the backends were not restarted: their pool reconnected through the PgBouncer
    assert {h: sorted(p["pid"] for p in pm2_procs(h) if p["name"] == "akig-backend") for h in APPS} == pids
    assert not incident_locks(read_secrets())
    print(f"RB-P1-001 repaired {sick}'s PgBouncer in {elapsed:.1f}s")


def test_a_pgbouncer_topology_that_cannot_work_is_refused_before_anything_changes(lab_up) -> None:
    incidents = set((STATE / "incidents").glob("INC-*")) if (STATE / "incidents").exists() else set()
    # RB-P1-001: a placeholder admin password, refused before the incident is opened
    proc = ansible_playbook(RB_P1_001, "-e", "akig_db_endpoint=pgbouncer", "-e", "akig_pgbouncer_admin_password=CHANGE_ME")
    assert proc.returncode != 0
    assert "Refusing the PgBouncer settings; nothing was changed." in proc.stdout, proc.stdout[-3000:]
    assert all(f"{h}: akig_pgbouncer_admin_password is not set" in proc.stdout for h in APPS), proc.stdout[-3000:]
    assert "Open the run" not in proc.stdout
    assert (set((STATE / "incidents").glob("INC-*")) if (STATE / "incidents").exists() else set()) == incidents
    assert not incident_locks(read_secrets())
    # an endpoint that is neither topology
    proc = ansible_playbook(VALIDATE, "-e", "akig_db_endpoint=bouncer")
    assert proc.returncode != 0 and "akig_db_endpoint must be 'direct' or 'pgbouncer', got 'bouncer'" in proc.stdout
    # admin consoles that do not answer (nothing listens on that port), named with their address
    proc = ansible_playbook(VALIDATE, "-e", "akig_db_endpoint=pgbouncer", "-e", "akig_pgbouncer_port=6499")
    assert proc.returncode != 0
    assert "Refusing the pgbouncer topology (akig_db_endpoint=pgbouncer); nothing was changed." in proc.stdout
    assert all(f"{addr}:6499" in proc.stdout for addr in APPS.values()), proc.stdout[-3000:]
    # a database entry PgBouncer does not have
    proc = ansible_playbook(VALIDATE, "-e", "akig_db_endpoint=pgbouncer", "-e", "akig_pgbouncer_database=akig_nope")
    assert proc.returncode != 0 and "akig_nope" in proc.stdout, proc.stdout[-3000:]
    # the good settings pass
    proc = ansible_playbook(VALIDATE, "-e", "akig_db_endpoint=pgbouncer")
    assert proc.returncode == 0, proc.stdout[-3000:]
    for value in read_secrets().values():
        assert value not in proc.stdout and value not in proc.stderr
