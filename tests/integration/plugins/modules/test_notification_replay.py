# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""notification_replay against a real PostgreSQL (the test cluster, lab/sql/schema.sql applied) and the
SaaS emulator: exactly once proven by the emulator's ledger joined with the queue.

The module runs as a process of its own (plugins/modules/notification_replay.py with an args file, the
way Ansible runs it), so that a test can SIGKILL it mid-run.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterator, List

import psycopg2
import pytest

from ansible_collections.akig.runbooks.tests.support.pg_cluster import PRIMARY, SUPERUSER

REPO = Path(__file__).resolve().parents[4]
MODULE = REPO / "plugins" / "modules" / "notification_replay.py"
SCHEMA = REPO / "lab" / "sql" / "schema.sql"
COLLECTIONS = REPO / ".collections"

pytestmark = pytest.mark.process


class QueueDb:
    def __init__(self, cluster: Any, name: str) -> None:
        self.cluster = cluster
        self.name = name

    def connect(self) -> Any:
        conn = psycopg2.connect(host=PRIMARY.host, port=PRIMARY.port, user=SUPERUSER, password=self.cluster.password,
                                dbname=self.name, connect_timeout=3)
        conn.autocommit = True
        return conn

    def query(self, sql: str, args: tuple = ()) -> List[tuple]:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def scalar(self, sql: str, args: tuple = ()) -> Any:
        return self.query(sql, args)[0][0]

    def seed(self, n: int, channels: tuple = ("sms", "email"), start: int = 1, due_every: int = 4) -> None:
        """``n`` pending rows, channels in turn, the four kinds, contacts for every fallback, préavis due times."""
        self.query(
            """INSERT INTO notification_queue (channel, kind, recipient, subject, body, idempotency_key, contacts, due_at)
               SELECT ch, (ARRAY['reminder','preavis','receipt','alert'])[1 + i %% 4],
                      CASE ch WHEN 'sms' THEN '+3361' || lpad(i::text, 7, '0') WHEN 'email' THEN 'user' || i || '@akig.example'
                              ELSE 'user-' || i END,
                      'AKIG ' || i, 'Votre message AKIG numero ' || i, 'seed:' || i,
                      jsonb_build_object('sms', '+3361' || lpad(i::text, 7, '0'), 'email', 'user' || i || '@akig.example',
                                         'push', 'user-' || i, 'postal', i || ' rue de la Paix, Paris'),
                      CASE WHEN i %% %s = 1 THEN now() + interval '1 day' END
                 FROM (SELECT i, (%s::text[])[1 + i %% cardinality(%s::text[])] AS ch FROM generate_series(%s, %s) i) s""",
            (due_every, list(channels), list(channels), start, start + n - 1))

    def statuses(self) -> Dict[str, int]:
        return dict(self.query("SELECT status, count(*) FROM notification_queue GROUP BY 1"))


@pytest.fixture
def queue_db(cluster: Any) -> Iterator[QueueDb]:
    name = "akig_replay_%s" % secrets.token_hex(4)
    cluster.execute(PRIMARY, "CREATE DATABASE %s" % name)
    db = QueueDb(cluster, name)
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            # The legacy table first (channels sms/email only, a sent row), then the schema twice: idempotent,
            # and the old rows stay valid.
            cur.execute("CREATE TABLE notification_queue (id bigserial PRIMARY KEY, channel text NOT NULL CHECK "
                        "(channel IN ('sms', 'email')), kind text NOT NULL, recipient text NOT NULL, subject text, "
                        "body text NOT NULL, status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', "
                        "'sending', 'sent', 'failed')), attempts integer NOT NULL DEFAULT 0, last_error text, "
                        "idempotency_key text NOT NULL UNIQUE, provider_message_id text, created_at timestamptz NOT "
                        "NULL DEFAULT now(), next_attempt_at timestamptz NOT NULL DEFAULT now(), sent_at timestamptz)")
            cur.execute("INSERT INTO notification_queue (channel, kind, recipient, body, status, idempotency_key) "
                        "VALUES ('sms', 'alert', '+33600000000', 'old', 'sent', 'legacy:1')")
            cur.execute(SCHEMA.read_text())
            cur.execute(SCHEMA.read_text())
            cur.execute("DELETE FROM notification_queue")
    finally:
        conn.close()
    yield db
    cluster.execute(PRIMARY, "DROP DATABASE %s WITH (FORCE)" % name)


def module_args(db: QueueDb, emu: Any, **extra: Any) -> Dict[str, Any]:
    creds = emu.credentials
    args = {
        "login_host": PRIMARY.host, "login_port": PRIMARY.port, "login_user": SUPERUSER,
        "login_password": db.cluster.password, "login_db": db.name,
        "twilio_base_url": emu.url + "/twilio", "twilio_account_sid": creds["twilio_account_sid"],
        "twilio_auth_token": creds["twilio_auth_token"], "twilio_from": "+33700000000",
        "sendgrid_base_url": emu.url + "/sendgrid", "sendgrid_api_key": creds["sendgrid_api_key"],
        "sendgrid_from": "notifications@akig.example",
        "concurrency": 6, "batch_size": 40,
    }
    args.update(extra)
    return args


def start_module(tmp_path: Path, args: Dict[str, Any], check: bool = False) -> subprocess.Popen:
    payload = dict(args)
    if check:
        payload["_ansible_check_mode"] = True
    argsfile = tmp_path / ("args-%s.json" % secrets.token_hex(3))
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": payload}))
    argsfile.chmod(0o600)
    env = dict(os.environ, PYTHONPATH=str(COLLECTIONS))
    return subprocess.Popen([sys.executable, str(MODULE), str(argsfile)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def run_module(tmp_path: Path, args: Dict[str, Any], check: bool = False, timeout: float = 120) -> Dict[str, Any]:
    proc = start_module(tmp_path, args, check)
    out, err = proc.communicate(timeout=timeout)
    try:
        result = json.loads(out)
    except ValueError:
        raise AssertionError("module printed no JSON (rc %s): %s %s" % (proc.returncode, out[-2000:], err[-2000:]))
    result["_raw"] = out + err
    return result


def provider_keys(emu: Any) -> Counter:
    return Counter(e["idempotency_key"] for e in emu.ledger() if e["service"] in ("twilio", "sendgrid"))


def assert_exactly_once(db: QueueDb, emu: Any) -> Dict[str, int]:
    """Every row delivered exactly once: a provider row by one ledger entry of its key on its provider, a
    task channel by one notification_tasks row; a rerouted row by nothing but its fallback row."""
    ledger = [e for e in emu.ledger() if e["service"] in ("twilio", "sendgrid")]
    keys = Counter(e["idempotency_key"] for e in ledger)
    services = {e["idempotency_key"]: e["service"] for e in ledger}
    duplicates = {k: c for k, c in keys.items() if c > 1}
    assert not duplicates, "sent more than once: %s" % list(duplicates.items())[:10]
    rows = db.query("SELECT id, channel, status, idempotency_key, fallback_of, recipient FROM notification_queue")
    tasks = Counter(r[0] for r in db.query("SELECT queue_id FROM notification_tasks"))
    fallbacks = {r[4]: r for r in rows if r[4] is not None}
    lost = []
    for row_id, channel, status, key, _fallback_of, _recipient in rows:
        if status == "rerouted":
            assert key not in keys, "rerouted row %s was also sent on its own channel" % row_id
            assert row_id in fallbacks, "rerouted row %s has no fallback row" % row_id
            continue
        if status != "sent":
            lost.append((row_id, channel, status))
            continue
        if channel in ("sms", "email"):
            assert keys.get(key) == 1, "row %s (%s) sent but not in the ledger" % (row_id, key)
            assert services[key] == {"sms": "twilio", "email": "sendgrid"}[channel]
        else:
            assert tasks[row_id] == 1, "row %s (%s) has %d tasks" % (row_id, channel, tasks[row_id])
    assert not lost, "not delivered: %s" % lost[:10]
    row_keys = {r[3] for r in rows}
    strays = [k for k in keys if k not in row_keys]
    assert not strays, "ledger entries with no queue row: %s" % strays[:10]
    return {"rows": len(rows), "ledger": len(ledger), "tasks": sum(tasks.values())}


# --------------------------------------------------------------------------------------------------


def test_mixed_queue_delivered_exactly_once_then_nothing_to_do(queue_db: QueueDb, emu: Any, tmp_path: Path) -> None:
    queue_db.seed(300, channels=("sms", "email", "push", "registered_mail"))
    progress = tmp_path / "progress.jsonl"
    result = run_module(tmp_path, module_args(queue_db, emu, progress_file=str(progress), progress_every=100,
                                              channels=["sms", "email", "push", "registered_mail"]))
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    assert result["counts"]["sent"] == 300
    assert result["counts"]["retry_later"] == result["counts"]["failed"] == 0
    assert result["by_channel"]["sms"]["sent"] == result["by_channel"]["push"]["sent"] == 75
    seen = assert_exactly_once(queue_db, emu)
    assert seen == {"rows": 300, "ledger": 150, "tasks": 150}
    # SendGrid mails carry the akig_key custom argument the reconciliation queries.
    mail = emu.ledger("?service=sendgrid")[0]
    assert mail["details"]["custom_args"]["akig_key"] == mail["idempotency_key"]
    lines = [json.loads(line) for line in progress.read_text().splitlines()]
    assert [line["processed"] for line in lines if not line["final"]][:3] == [100, 200, 300][: len(lines) - 1] or lines
    assert lines[-1]["final"] and lines[-1]["processed"] == 300
    assert queue_db.scalar("SELECT count(*) FROM notification_queue WHERE claimed_by = %s",
                           (result["claimed_by"],)) == 300
    # Credentials never in the module's output.
    for secret in (emu.credentials["twilio_auth_token"], emu.credentials["sendgrid_api_key"], queue_db.cluster.password):
        assert secret not in result["_raw"]
    again = run_module(tmp_path, module_args(queue_db, emu))
    assert again["counts"]["sent"] == 0 and len(emu.ledger()) == 150


def test_reroutes_only_where_routes_say(queue_db: QueueDb, emu: Any, tmp_path: Path) -> None:
    queue_db.seed(200)
    # One SMS row has no e-mail contact: it cannot be rerouted and stays pending.
    queue_db.query("UPDATE notification_queue SET contacts = contacts - 'email' WHERE idempotency_key = 'seed:2'")
    emu.mode("twilio", "outage")
    result = run_module(tmp_path, module_args(queue_db, emu, routes={"sms": "email"}, twilio_auth_token=None,
                                              twilio_account_sid=None))
    assert result.get("failed") is not True, result
    counts = result["counts"]
    assert counts["rerouted"] == 99 and counts["skipped_no_contact"] == 1
    assert counts["sent"] == 100 + 99
    assert emu.ledger("?service=twilio") == []
    fallbacks = queue_db.query(
        "SELECT f.channel, f.idempotency_key, o.idempotency_key, f.recipient, o.contacts->>'email', o.status "
        "FROM notification_queue f JOIN notification_queue o ON o.id = f.fallback_of")
    assert len(fallbacks) == 99
    for channel, key, orig_key, recipient, email, orig_status in fallbacks:
        assert (channel, key, recipient, orig_status) == ("email", orig_key + ":email", email, "rerouted")
    assert queue_db.query("SELECT status, claimed_by FROM notification_queue WHERE idempotency_key = 'seed:2'") == \
        [("pending", None)]
    # E-mail rows were never rerouted; every mail went out once.
    assert queue_db.scalar("SELECT count(*) FROM notification_queue WHERE channel = 'email' AND fallback_of IS NULL "
                           "AND status = 'sent'") == 100
    queue_db.query("DELETE FROM notification_queue WHERE idempotency_key = 'seed:2'")
    assert_exactly_once(queue_db, emu)


def test_flaky_providers_still_exactly_once(queue_db: QueueDb, emu: Any, tmp_path: Path) -> None:
    queue_db.seed(400)
    for service in ("twilio", "sendgrid"):
        emu.call("/_emulator/mode", {"service": service, "mode": "flaky", "fraction": 0.1, "seed": 7,
                                     "retry_after_s": 0})
    result = run_module(tmp_path, module_args(queue_db, emu))
    assert result.get("failed") is not True, result
    rejected = emu.rejections()
    assert {r["reason"] for r in rejected} == {"mode:flaky:500", "mode:flaky:429"}
    assert result["provider_retries"] >= len(rejected) > 10
    assert result["counts"]["sent"] + result["counts"]["retry_later"] == 400
    if result["counts"]["retry_later"]:  # kept failing: pending again, counted, sent by a second run
        emu.mode("twilio", "ok")
        emu.mode("sendgrid", "ok")
        run_module(tmp_path, module_args(queue_db, emu))
    assert_exactly_once(queue_db, emu)


def test_outage_leaves_rows_pending_and_counted(queue_db: QueueDb, emu: Any, tmp_path: Path) -> None:
    queue_db.seed(20)
    emu.mode("twilio", "outage")
    result = run_module(tmp_path, module_args(queue_db, emu, max_attempts=2))
    assert result["counts"]["sent"] == 10 and result["counts"]["retry_later"] == 10
    assert queue_db.query("SELECT status, attempts, claimed_by, left(last_error, 8) FROM notification_queue "
                          "WHERE channel = 'sms' GROUP BY 1, 2, 3, 4") == [("pending", 1, None, "HTTP 503")]


def test_kill_9_mid_run_then_rerun_sends_nothing_twice(queue_db: QueueDb, emu: Any, tmp_path: Path) -> None:
    queue_db.seed(400)
    # 200 msg/s in all: the run takes 2 s, the kill comes after about 0.5 s of sending.
    proc = start_module(tmp_path, module_args(queue_db, emu, twilio_rate=100, sendgrid_rate=100, concurrency=8,
                                              batch_size=30))
    deadline = time.monotonic() + 60
    while emu.call("/_emulator/health")["ledger_entries"] < 100:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the replay did not send 100 messages in 60 s"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    # The dead process's server sessions end (a statement in flight commits or not): the queue is then still.
    deadline = time.monotonic() + 20
    while queue_db.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                          "'akig.runbooks.notification_replay'"):
        assert time.monotonic() < deadline, "the killed replay's sessions did not end"
        time.sleep(0.02)
    recorded = queue_db.scalar("SELECT count(*) FROM notification_queue WHERE status = 'sent'")
    ambiguous = queue_db.query("SELECT id, idempotency_key FROM notification_queue WHERE status = 'sending'")
    assert ambiguous, "the kill left no claimed row: nothing to reconcile"
    # Calls in flight at the kill may still land in the ledger: this count is a lower bound.
    in_ledger = provider_keys(emu)
    answered_not_recorded = sum(1 for _id, key in ambiguous if in_ledger[key])
    result = run_module(tmp_path, module_args(queue_db, emu))
    assert result.get("failed") is not True, result
    counts = result["counts"]
    assert counts["reconciled_sent"] + counts["reconciled_resent"] == len(ambiguous)
    assert counts["reconciled_sent"] >= answered_not_recorded
    assert counts["reconciled_duplicates"] == 0
    assert recorded + counts["reconciled_sent"] + counts["reconciled_resent"] + counts["sent"] == 400
    assert_exactly_once(queue_db, emu)


def test_kill_9_after_sends_before_records_is_reconciled(queue_db: QueueDb, emu: Any, tmp_path: Path) -> None:
    """The hard case made certain: rows claimed by a dead replay, some of them already in the provider's
    log (sent, answer never recorded), some not; plus a message that went out twice."""
    queue_db.seed(6)
    dead = "replay:dead-run"
    queue_db.query("UPDATE notification_queue SET status = 'sending', claimed_by = %s, locked_at = now() - "
                   "interval '5 minutes'", (dead,))
    rows = dict(queue_db.query("SELECT idempotency_key, id FROM notification_queue"))
    sent = {"seed:1": 1, "seed:2": 1, "seed:3": 2}  # seed:1 email, seed:2 sms, seed:3 email twice
    for key, times in sent.items():
        channel, recipient, subject, body = queue_db.query(
            "SELECT channel, recipient, subject, body FROM notification_queue WHERE id = %s", (rows[key],))[0]
        for _copy in range(times):
            send_direct(emu, channel, recipient, subject, body, key)
    result = run_module(tmp_path, module_args(queue_db, emu))
    counts = result["counts"]
    assert (counts["reconciled_sent"], counts["reconciled_resent"], counts["reconciled_duplicates"]) == (3, 3, 1)
    keys = provider_keys(emu)
    assert keys == Counter({"seed:1": 1, "seed:2": 1, "seed:3": 2, "seed:4": 1, "seed:5": 1, "seed:6": 1})
    assert queue_db.statuses() == {"sent": 6}


def send_direct(emu: Any, channel: str, recipient: str, subject: str, body: str, key: str) -> None:
    """What the dead replay did before it was killed: the provider call itself."""
    import base64
    import urllib.parse
    import urllib.request

    creds = emu.credentials
    if channel == "sms":
        url = "%s/twilio/2010-04-01/Accounts/%s/Messages.json" % (emu.url, creds["twilio_account_sid"])
        data = urllib.parse.urlencode({"To": recipient, "From": "+33700000000", "Body": body}).encode()
        auth = base64.b64encode(("%s:%s" % (creds["twilio_account_sid"], creds["twilio_auth_token"])).encode()).decode()
        headers = {"Authorization": "Basic " + auth, "Idempotency-Key": key}
    else:
        url = "%s/sendgrid/v3/mail/send" % emu.url
        data = json.dumps({"personalizations": [{"to": [{"email": recipient}]}], "from": {"email": "n@akig.example"},
                           "subject": subject, "content": [{"type": "text/plain", "value": body}],
                           "custom_args": {"akig_key": key}}).encode()
        headers = {"Authorization": "Bearer " + creds["sendgrid_api_key"], "Idempotency-Key": key,
                   "Content-Type": "application/json"}
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status in (201, 202)


def test_check_mode_changes_nothing(queue_db: QueueDb, emu: Any, tmp_path: Path) -> None:
    queue_db.seed(40)
    queue_db.query("UPDATE notification_queue SET status = 'sending', claimed_by = 'replay:old', locked_at = now() "
                   "WHERE idempotency_key = 'seed:1'")
    before = queue_db.query("SELECT * FROM notification_queue ORDER BY id")
    result = run_module(tmp_path, module_args(queue_db, emu, routes={"sms": "email"}), check=True)
    assert result["changed"] is False
    assert result["to_reconcile"] == 1
    assert result["would_send"] == 39
    plan = {(e["channel"], e["via"], e["kind"]): e["count"] for e in result["plan"]}
    assert sum(plan.values()) == 39
    assert all(via == "email" for (_channel, via, _kind) in plan)
    assert queue_db.query("SELECT * FROM notification_queue ORDER BY id") == before
    assert emu.ledger() == [] and emu.call("/_emulator/rejections")["count"] == 0


@pytest.mark.parametrize("extra, option, words", [
    ({"routes": {"sms": "fax"}}, "routes", "unknown channel 'fax'"),
    ({"routes": {"sms": "email", "email": "sms"}}, "routes", "cycle sms -> email -> sms"),
    ({"twilio_rate": 0}, "twilio_rate", "more than 0"),
    ({"sendgrid_rate": -5}, "sendgrid_rate", "more than 0"),
    ({"twilio_auth_token": None}, "twilio_auth_token", "twilio_auth_token is required"),
    ({"channels": ["email"], "sendgrid_api_key": None}, "sendgrid_api_key", "required"),
    ({"concurrency": 0}, "concurrency", "between 1 and 64"),
    ({"concurrency": 40}, "concurrency", "max_connections"),  # the test server allows 30
])
def test_bad_input_refused_before_anything(queue_db: QueueDb, emu: Any, tmp_path: Path, extra: Dict[str, Any],
                                           option: str, words: str) -> None:
    queue_db.seed(10)
    before = queue_db.query("SELECT * FROM notification_queue ORDER BY id")
    result = run_module(tmp_path, module_args(queue_db, emu, **extra))
    assert result["failed"] is True
    assert result["option"] == option and words in result["msg"], result["msg"]
    assert queue_db.query("SELECT * FROM notification_queue ORDER BY id") == before
    assert emu.ledger() == []


def test_missing_credentials_of_an_ambiguous_row_refused(queue_db: QueueDb, emu: Any, tmp_path: Path) -> None:
    """Replaying e-mail only, with an SMS row of a dead replay to reconcile and no Twilio credentials."""
    queue_db.seed(4)
    queue_db.query("UPDATE notification_queue SET status = 'sending', claimed_by = 'replay:old', locked_at = now() "
                   "WHERE idempotency_key = 'seed:2'")
    result = run_module(tmp_path, module_args(queue_db, emu, channels=["email"], twilio_auth_token=None))
    assert result["failed"] is True and result["option"] == "twilio_auth_token"
    assert emu.ledger() == []
    assert queue_db.statuses() == {"pending": 3, "sending": 1}


def test_429_retry_after_is_honoured(queue_db: QueueDb, emu: Any, tmp_path: Path) -> None:
    queue_db.seed(8, channels=("sms",))
    emu.call("/_emulator/mode", {"service": "twilio", "mode": "flaky", "fraction": 0.4, "seed": 3,
                                 "retry_after_s": 1})
    result = run_module(tmp_path, module_args(queue_db, emu, concurrency=1))
    throttled = [r for r in emu.rejections() if r["reason"] == "mode:flaky:429"]
    assert throttled, "seed 3 gives no 429: pick another seed"
    # One thread: each 429 holds the next Twilio call for its Retry-After (1 s).
    assert result["duration_s"] >= len(throttled) * 1.0
    assert result["counts"]["sent"] == 8
    assert_exactly_once(queue_db, emu)


def test_replay_under_the_provider_rate(queue_db: QueueDb, emu: Any, tmp_path: Path) -> None:
    """Quota case: under the provider's rate nothing is refused; over it, 429s are waited out, nothing lost."""
    queue_db.seed(80, channels=("sms",))
    emu.call("/_emulator/mode", {"service": "twilio", "mode": "rate_limit", "rate": 50, "retry_after_s": 1})
    under = run_module(tmp_path, module_args(queue_db, emu, twilio_rate=40))
    assert under["counts"]["sent"] == 80 and emu.rejections() == []
    assert under["duration_s"] >= (80 - 4) / 40.0  # the bucket's burst is rate / 10
    queue_db.seed(80, channels=("sms",), start=81)
    over = run_module(tmp_path, module_args(queue_db, emu))
    assert over["counts"]["sent"] == 80 and over["counts"]["retry_later"] == 0
    assert {r["reason"] for r in emu.rejections()} == {"mode:rate_limit"}
    assert over["provider_retries"] >= len(emu.rejections())
    assert_exactly_once(queue_db, emu)
