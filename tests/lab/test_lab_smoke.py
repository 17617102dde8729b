"""The lab is real: replication streams, Redis answers, pm2 runs the app, the worker
reaches the providers' emulator. Observed from outside, as an operator would."""
from __future__ import annotations

import uuid

from conftest import APPS, http, ledger, pm2_procs, wait_until


def test_primary_streams_to_the_replica(pg) -> None:
    rows = pg("db-1", "SELECT application_name, state FROM pg_stat_replication", dbname="postgres")
    assert ("db-2", "streaming") in rows
    assert pg("db-2", "SELECT pg_is_in_recovery()", dbname="postgres") == [(True,)]
    assert pg("db-1", "SELECT pg_is_in_recovery()", dbname="postgres") == [(False,)]


def test_a_write_on_the_primary_reaches_the_replica(pg) -> None:
    marker = uuid.uuid4().hex
    pg("db-1", "CREATE TABLE IF NOT EXISTS lab_smoke (marker text)")
    pg("db-1", "INSERT INTO lab_smoke VALUES (%s)", (marker,))
    assert wait_until(lambda: pg("db-2", "SELECT 1 FROM lab_smoke WHERE marker = %s", (marker,)), 10)


def test_the_standby_refuses_writes(pg) -> None:
    import psycopg2
    try:
        pg("db-2", "CREATE TABLE must_fail (x int)")
    except psycopg2.errors.ReadOnlySqlTransaction:
        return
    raise AssertionError("db-2 accepted a write while it is a standby")


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
