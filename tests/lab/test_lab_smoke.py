"""The lab is real: replication streams, Redis answers, pm2 runs the app, the worker
reaches the providers' emulator. Observed from outside, as an operator would."""
from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest
import yaml

from conftest import APPS, DB, REPO, SAAS, STATE, http, ledger, pm2_procs, wait_until

INVENTORIES = ["lab", "lab-fqdn", "staging", "production"]
PM2 = REPO / "lab" / "node_modules" / ".bin" / "pm2"


def group_vars(inventory: str) -> dict:
    base = REPO / "inventories" / inventory / "group_vars"
    path = base / "all.yml" if (base / "all.yml").exists() else base / "all" / "main.yml"
    return yaml.safe_load(path.read_text())


def test_the_readme_lab_table_is_the_lab_inventory(topology) -> None:
    """The README's host table says what the inventory says: same hosts, same addresses."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## The lab"):text.index("## Inventories")]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0] in topology.hosts:
            rows[cells[0]] = cells[1].split(":")[0]
    assert rows == topology.hosts


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_every_inventory_computes_addresses_one_way(inventory: str) -> None:
    gv = group_vars(inventory)
    assert gv["akig_address"] == "{{ ansible_host | default(inventory_hostname) }}"
    assert gv["akig_backend_url"] == "http://{{ akig_address }}:{{ akig_backend_port }}"
    assert gv["akig_frontend_url"] == "http://{{ akig_address }}:{{ akig_frontend_port }}"
    assert "ansible_host" not in gv["incident_lock_redis_host"]
    # the incident locks have their own Redis database, not the app's (REDIS_URL .../0)
    assert isinstance(gv["incident_lock_redis_db"], int) and gv["incident_lock_redis_db"] != 0
    assert gv["incident_lock_redis_db"] == group_vars("production")["incident_lock_redis_db"]


PGBOUNCER_VARS = ("akig_pgbouncer_port", "akig_pgbouncer_database", "akig_pgbouncer_admin_user",
                  "akig_pgbouncer_admin_password", "akig_pgbouncer_config_file", "akig_pgbouncer_os_user",
                  "akig_pgbouncer_service_manager")


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_every_inventory_says_how_the_app_reaches_the_database(inventory: str) -> None:
    """akig_db_endpoint and the PgBouncer settings, in every inventory; the lab reads its setting from the lab."""
    gv = group_vars(inventory)
    assert all(gv.get(v) for v in PGBOUNCER_VARS), [v for v in PGBOUNCER_VARS if not gv.get(v)]
    assert gv["akig_pgbouncer_port"] == 6432 and gv["akig_pgbouncer_database"] == gv["akig_pg_database"]
    if inventory.startswith("lab"):
        assert "/db_endpoint" in gv["akig_db_endpoint"] and "default('direct', true)" in gv["akig_db_endpoint"]
        assert gv["akig_pgbouncer_service_manager"] == "daemon"
    else:
        assert gv["akig_db_endpoint"] == "direct"
        assert gv["akig_pgbouncer_service_manager"] == "systemd" and gv["akig_pgbouncer_service_name"]
        assert gv["akig_pgbouncer_admin_password"] == "{{ vault_akig_pgbouncer_admin_password }}"
        vault = yaml.safe_load((REPO / "inventories" / inventory / "group_vars" / "all" / "vault.yml.example").read_text())
        assert vault["vault_akig_pgbouncer_admin_password"] == "CHANGE_ME"


def test_redis_persists_with_aof(rds) -> None:
    assert rds.config_get("appendonly") in ({"appendonly": "yes"}, {b"appendonly": b"yes"})


def test_a_replication_slot_cannot_fill_the_primarys_disk(pg) -> None:
    for node in DB:
        assert pg(node, "SHOW max_slot_wal_keep_size", dbname="postgres") == [("1GB",)]


REPLICAS = [n for n in DB if n != "db-1"]  # db-2 and db-3: every replica streams from db-1


def test_primary_streams_to_every_replica(pg) -> None:
    assert len(REPLICAS) >= 2
    rows = pg("db-1", "SELECT application_name, state FROM pg_stat_replication", dbname="postgres")
    assert all((node, "streaming") in rows for node in REPLICAS), rows
    assert pg("db-1", "SELECT pg_is_in_recovery()", dbname="postgres") == [(False,)]
    slots = {r[0] for r in pg("db-1", "SELECT slot_name FROM pg_replication_slots WHERE active", dbname="postgres")}
    assert slots == {n.replace("-", "_") + "_slot" for n in REPLICAS}
    for node in REPLICAS:
        assert pg(node, "SELECT pg_is_in_recovery()", dbname="postgres") == [(True,)]


def test_a_write_on_the_primary_reaches_every_replica(pg) -> None:
    marker = uuid.uuid4().hex
    pg("db-1", "CREATE TABLE IF NOT EXISTS lab_smoke (marker text)")
    pg("db-1", "INSERT INTO lab_smoke VALUES (%s)", (marker,))
    for node in REPLICAS:
        assert wait_until(lambda n=node: pg(n, "SELECT 1 FROM lab_smoke WHERE marker = %s", (marker,)), 10), node


def test_the_standbys_refuse_writes(pg) -> None:
    import psycopg2
    for node in REPLICAS:
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            pg(node, "CREATE TABLE must_fail (x int)")


def test_the_seed_data_is_there(pg) -> None:
    assert pg("db-1", "SELECT count(*) FROM payments")[0][0] >= 200_000
    assert pg("db-1", "SELECT count(*) FROM pg_indexes WHERE indexname = 'payments_contract_id_idx'") == [(1,)]


def test_redis_answers(rds) -> None:
    assert rds.ping() is True


def test_backend_is_healthy_on_every_host_through_pm2() -> None:
    for host, addr in APPS.items():
        status, body = http(f"http://{addr}:4000/api/health")
        assert status == 200, (host, body)
        assert body["checks"]["database"]["status"] == "ok"
        assert body["checks"]["redis"]["status"] == "ok"
        backends = [p for p in pm2_procs(host) if p["name"] == "akig-backend"]
        assert len(backends) == 2 and all(p["pm2_env"]["status"] == "online" for p in backends)
        assert all(p["pm2_env"]["exec_mode"] == "cluster_mode" for p in backends)


def test_frontend_pages_are_served() -> None:
    for path in ("/", "/contrats", "/paiements", "/healthz"):
        status, _body = http(f"http://{APPS['app-1']}:3000{path}")
        assert status == 200, path


def test_login_then_read_contracts_and_payments(login) -> None:
    status, body = login("app-1")
    assert status == 200, body
    token = body["token"]
    status, contracts = http(f"http://{APPS['app-2']}:4000/api/contracts?page=1&per_page=5", token=token)
    assert status == 200 and len(contracts["items"]) == 5
    status, payments = http(f"http://{APPS['app-1']}:4000/api/payments?page=1&per_page=5", token=token)
    assert status == 200, payments
    status, _body = http(f"http://{APPS['app-1']}:4000/api/contracts", token="not-a-jwt")
    assert status == 401


def test_the_worker_delivers_each_queued_message_exactly_once(pg) -> None:
    keys = [f"smoke-{uuid.uuid4().hex}" for _n in range(3)]
    for i, key in enumerate(keys):
        channel, recipient = ("sms", "+33612345678") if i % 2 == 0 else ("email", "locataire@example.org")
        pg("db-1", "INSERT INTO notification_queue (channel, kind, recipient, subject, body, idempotency_key) "
           "VALUES (%s, 'reminder', %s, 'Rappel de loyer', 'Votre loyer est dû', %s)", (channel, recipient, key))
    assert wait_until(lambda: pg("db-1", "SELECT count(*) FROM notification_queue WHERE idempotency_key = ANY(%s) "
                                 "AND status = 'sent'", (keys,))[0][0] == 3, 20)
    seen = [e["idempotency_key"] for e in ledger() if e.get("idempotency_key") in keys]
    assert sorted(seen) == sorted(keys)


def test_pm2_waits_longer_than_the_workers_bounded_shutdown() -> None:
    """The worker needs at most 5 s (send timeout) + 4 s (SHUTDOWN_TIMEOUT_MS) to stop; pm2 must
    not SIGKILL it earlier, or rows sent but not recorded are sent again two minutes later."""
    workers = [p for host in APPS for p in pm2_procs(host) if p["name"] == "akig-worker"]
    assert workers and all(p["pm2_env"]["kill_timeout"] > 9000 for p in workers)


def _emulator_mode(service: str, mode: str, delay_s: float = 0) -> None:
    body = {"service": service, "mode": mode, **({"delay_s": delay_s} if mode == "slow" else {})}
    assert http(f"{SAAS}/_emulator/mode", method="POST", body=body)[0] == 200


def test_a_worker_restart_during_a_batch_sends_nothing_twice(pg) -> None:
    """pm2 restarts the worker in the middle of a slow batch: the sends in flight finish and are
    recorded, the rest go back to the queue at once; every message reaches the provider once,
    and none waits for the 2-minute stuck-row reset."""
    notifier = next(h for h in APPS if any(p["name"] == "akig-worker" for p in pm2_procs(h)))
    keys = [f"restart-{uuid.uuid4().hex}" for _n in range(40)]
    try:
        for service in ("twilio", "sendgrid"):
            _emulator_mode(service, "slow", 1.5)  # 40 rows, 5 at a time: a batch of ~12 s
        # one statement, so the worker's next tick claims all 40 in one batch (row by row, a loaded machine let it
        # claim the first few alone: a batch that ended before the restart, with nothing left to cut short)
        rows = [("sms", "+33612345678") if i % 2 == 0 else ("email", "locataire@example.org") for i in range(len(keys))]
        pg("db-1", "INSERT INTO notification_queue (channel, kind, recipient, subject, body, idempotency_key) VALUES "
           + ", ".join(["(%s, 'reminder', %s, 'Rappel de loyer', 'Votre loyer est dû', %s)"] * len(keys)),
           tuple(v for (channel, recipient), key in zip(rows, keys) for v in (channel, recipient, key)))
        assert wait_until(lambda: [k for k in ledger() if k.get("idempotency_key") in keys], 20), "no send started"
        env = {**os.environ, "PM2_HOME": str(STATE / notifier / "pm2")}
        logs = {f: f.stat().st_size for f in (STATE / notifier / "pm2" / "logs").glob("akig-worker-out*.log")}
        t0 = time.monotonic()
        subprocess.run([str(PM2), "restart", "akig-worker"], env=env, capture_output=True, text=True,
                       timeout=60, check=True)
        restart_s = time.monotonic() - t0
    finally:
        for service in ("twilio", "sendgrid"):
            _emulator_mode(service, "ok")
    assert wait_until(lambda: pg("db-1", "SELECT count(*) FROM notification_queue WHERE idempotency_key = ANY(%s) "
                                 "AND status = 'sent'", (keys,))[0][0] == len(keys), 60), \
        pg("db-1", "SELECT status, count(*) FROM notification_queue WHERE idempotency_key = ANY(%s) GROUP BY 1", (keys,))
    sent = [e["idempotency_key"] for e in ledger() if e.get("idempotency_key") in keys]
    assert sorted(sent) == sorted(keys), "a message reached the provider twice (or never)"
    assert restart_s < 9 + 3, f"the worker took {restart_s:.1f}s to stop"
    shutdown_log = "".join(f.read_bytes()[size:].decode(errors="replace") for f, size in logs.items())
    assert "batch cut short by shutdown" in shutdown_log
    assert "shutdown timeout, forcing exit" not in shutdown_log
