"""RB-P2-003 (SMS/e-mail outage) against the real lab: a provider fault, a few hundred waiting notifications
(mixed kinds, préavis with due times, some past due), the runbook, then from outside: every message delivered
exactly once (the emulator's ledger joined with the queue), the fallback used where the matrix says and only
there, a préavis past due made the incident P1, the pause switch and the banner as the outcome requires, the
lock free, and no lab secret in the output, the artifacts or the report. Plus the bad inputs, each refused
before any page, ticket or lock."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tarfile
import threading
from collections import Counter
from pathlib import Path
import psycopg2
import pytest

from conftest import APPS, DB, REPO, SAAS, STATE, ansible_playbook, http, incident_locks, labctl, ledger, read_secrets, wait_until

PLAYBOOK = "playbooks/rb-p2-003-notification-outage.yml"
COUNT = 240          # 60 of them préavis
OVERDUE = 3          # préavis already past their due time: the incident is P1
# The inventory's matrix (inventories/lab): sms -> email -> push, email -> sms -> dashboard, préavis -> phone_call
EXPECTED_FALLBACK = {  # fault -> (channel routed away, its fallback, the préavis' fallback)
    "sms_provider_down": ("sms", "email", "phone_call"),
    "email_provider_down": ("email", "sms", "phone_call"),
}

PRIMARY = next(iter(DB))  # the lab's baseline primary (the first database host of the inventory)


def db(secrets: dict[str, str], sql: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(host=DB[PRIMARY], port=5432, user="postgres", dbname="akig_db",
                            password=secrets["pg_superuser_password"], connect_timeout=3)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def paused(secrets: dict[str, str]) -> set[str]:
    return {r[0] for r in db(secrets, "SELECT provider FROM notification_provider_state WHERE paused")}


def incident_dir(out: str) -> Path:
    ids = sorted(set(re.findall(r"INC-\d{8}-\d{4}-P\d-[0-9a-f]{4}", out)))
    assert ids, "no incident id in the output"
    return STATE / "incidents" / ids[-1]


def assert_no_secret(secrets: dict[str, str], texts: dict[str, str]) -> None:
    for name, value in secrets.items():
        if len(str(value)) < 8:
            continue
        for where, text in texts.items():
            assert str(value) not in text, f"the lab secret {name} appears in {where}"


def artifact_texts(folder: Path) -> dict[str, str]:
    texts = {}
    for path in folder.rglob("*"):
        if path.is_file() and path.suffixes[-2:] == [".tar", ".gz"]:
            with tarfile.open(path) as tar:
                for member in tar.getmembers():
                    fh = tar.extractfile(member)
                    if fh:
                        texts[f"{path.name}:{member.name}"] = fh.read().decode(errors="replace")
        elif path.is_file():
            texts[str(path)] = path.read_text(errors="replace")
    return texts


@pytest.fixture(scope="module")
def current_lab() -> None:
    """One reset per module: the lab runs the current app, schema and emulator (a reset deploys them)."""
    labctl("reset", timeout=600)


@pytest.fixture
def fresh_lab(current_lab: None) -> dict[str, str]:
    """The lab at its baseline without a reset: faults cleared, the emulator's ledger and modes reset, the
    queue empty, no provider paused, no banner."""
    labctl("fault", "clear")
    assert http(f"{SAAS}/_emulator/reset", method="POST")[0] == 200
    secrets = read_secrets()
    db(secrets, "DELETE FROM notification_tasks")
    db(secrets, "DELETE FROM notification_queue")
    db(secrets, "UPDATE notification_provider_state SET paused = false, reason = NULL")
    for banner in STATE.glob("app-*/shared/banner.txt"):
        banner.unlink()
    return secrets


@pytest.mark.parametrize("fault", ["sms_provider_down", "email_provider_down", "provider_quota",
                                   "provider_credentials_expired"])
def test_outage_every_message_delivered_exactly_once(fault: str, fresh_lab: dict[str, str]) -> None:
    secrets = fresh_lab
    labctl("fault", fault)
    filled = json.loads(labctl("queue-fill", str(COUNT), "--overdue", str(OVERDUE)).stdout.strip().splitlines()[-1])
    prefix = filled["prefix"]
    # Quota: the provider recovers while the runbook waits for it (after the runbook paused it, as in real life).
    recovery = None
    if fault == "provider_quota":
        def recover() -> None:
            if wait_until(lambda: paused(secrets) == {"twilio", "sendgrid"}, timeout=50, interval=0.2):
                for service in ("twilio", "sendgrid"):
                    http(f"{SAAS}/_emulator/mode", method="POST", body={"service": service, "mode": "ok"})
        recovery = threading.Thread(target=recover, daemon=True)
        recovery.start()
    wait = "0" if fault in EXPECTED_FALLBACK else "40"
    proc = ansible_playbook(PLAYBOOK, "-i", "inventories/lab", "-e", f"rb_p2_003_recovery_wait_s={wait}")
    if recovery:
        recovery.join(timeout=5)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    rows = db(secrets, "SELECT id, channel, kind, status, idempotency_key FROM notification_queue "
                       "WHERE idempotency_key LIKE %s AND fallback_of IS NULL", (prefix + "-%",))
    assert len(rows) == COUNT
    fallbacks = {r[0]: r[1:] for r in db(
        secrets, "SELECT fallback_of, id, channel, status, idempotency_key FROM notification_queue "
                 "WHERE fallback_of IN (SELECT id FROM notification_queue WHERE idempotency_key LIKE %s)",
        (prefix + "-%",))}
    tasks = {r[0]: r[1] for r in db(secrets, "SELECT queue_id, channel FROM notification_tasks")}
    sends = Counter(e["idempotency_key"] for e in ledger() if e["service"] in ("twilio", "sendgrid"))

    routed_away, fallback, preavis_fallback = EXPECTED_FALLBACK.get(fault, (None, None, None))
    for rid, channel, kind, status, key in rows:
        if channel == routed_away:
            # the matrix's fallback, exactly one fallback row, delivered once; the original never sent
            assert status == "rerouted", (rid, channel, kind, status)
            fb_id, fb_channel, fb_status, fb_key = fallbacks[rid]
            assert fb_channel == (preavis_fallback if kind == "preavis" else fallback), (rid, kind, fb_channel)
            assert fb_status == "sent"
            if fb_channel in ("sms", "email"):
                assert sends[fb_key] == 1, (fb_key, sends[fb_key])
            else:
                assert tasks[fb_id] == fb_channel  # one back-office task or app message, by the UNIQUE
            assert sends[key] == 0, f"{key} was sent through the provider that is down"
        else:
            # no fallback where the matrix does not say so: sent once on its own channel
            assert status == "sent", (rid, channel, kind, status)
            assert rid not in fallbacks
            assert sends[key] == 1, (key, sends[key])

    # préavis past due: the frame opened the incident as P1
    tickets = [e for e in ledger("tickets") if e["operation"] == "incident.create"]
    assert [t["details"]["severity"] for t in tickets] == ["P1"]
    # the pause switch and the banner: kept while a provider is still down, gone once every provider works
    status, banner = http(f"http://{next(iter(APPS.values()))}:4000/api/banner")
    if fault in EXPECTED_FALLBACK:
        assert paused(secrets) == {"twilio" if fault == "sms_provider_down" else "sendgrid"}
        assert banner["banner"] and "retardés" in banner["banner"]["message"]
    else:
        assert paused(secrets) == set()
        assert status == 200 and banner == {"banner": None}
    if fault == "provider_credentials_expired":
        env = (STATE / "app-1" / "shared" / "akig.env").read_text()
        assert f"TWILIO_AUTH_TOKEN={secrets['twilio_auth_token']}\n" in env
        assert f"SENDGRID_API_KEY={secrets['sendgrid_api_key']}\n" in env
    assert incident_locks(secrets) == []
    folder = incident_dir(out)
    assert (folder / "report.md").is_file()
    assert_no_secret(secrets, {"output": out, **artifact_texts(folder)})


BAD_INPUTS = [
    (["-e", '{"notification_fallback_matrix": {"sms": ["email", "pigeon"], "email": ["sms"]}}'],
     "unknown channel 'pigeon'"),
    (["-e", '{"notification_fallback_matrix": {"sms": ["email", "sms"], "email": ["sms"]}}'], "fallback cycle"),
    (["-e", '{"notification_provider_rates": {"twilio": 0, "sendgrid": 10}}'], "notification_replay_twilio_rate"),
    (["-e", '{"notification_provider_rates": {"twilio": 10, "sendgrid": -1}}'], "notification_replay_sendgrid_rate"),
    (["-e", '{"akig_sendgrid_api_key": ""}'], "missing credentials: akig_sendgrid_api_key"),
    (["-e", '{"notification_test_recipients": {"sms": "+33612345678"}}'],
     "'+33612345678' is not in notification_test_recipients_allowed"),
]


def test_bad_input_is_refused_before_any_page_ticket_or_lock(lab_up: dict[str, str]) -> None:
    secrets = lab_up
    before, switch, env = len(ledger()), paused(secrets), (STATE / "app-1" / "shared" / "akig.env").read_text()
    for args, words in BAD_INPUTS:
        proc = ansible_playbook(PLAYBOOK, "-i", "inventories/lab", *args)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, args
        assert words in out, (words, out[-2000:])
        assert "Nothing was changed" in out or "nothing was sent or changed" in out
        assert_no_secret(secrets, {"output": out})
    assert len(ledger()) == before, "a bad input paged someone or opened a ticket"
    assert incident_locks(secrets) == []
    assert paused(secrets) == switch and (STATE / "app-1" / "shared" / "akig.env").read_text() == env


def kill_tree(root: int) -> None:
    """SIGKILL a process and every descendant at once. Not a process-group kill: ansible's workers call
    setsid(), so the module runs in a session of its own and a killpg of ansible-playbook misses it."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


REPLAY_PLAYBOOK = """\
- name: Replay the queue through the role (the lab inventory's database, providers and rates)
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Replay
      ansible.builtin.import_role:
        name: akig.runbooks.notification_replay
      vars:
        notification_replay_routes: {}
        notification_replay_preavis_routes: {}
    - name: Keep the counts for the test
      ansible.builtin.copy:
        content: "{{ notification_replay_result.counts | to_json }}"
        dest: "{{ counts_file }}"
        mode: "0600"
"""


def test_replay_killed_mid_run_then_rerun_sends_nothing_twice_and_loses_nothing(
        fresh_lab: dict[str, str], tmp_path: Path) -> None:
    """kill -9 of the replay (ansible-playbook and its module process) while it sends, then a rerun: the rows
    the kill left claimed are reconciled against the emulator's provider logs; the ledger has every message of
    the fill exactly once. The app's worker is paused for both providers, so only the replay sends."""
    secrets = fresh_lab
    db(secrets, "UPDATE notification_provider_state SET paused = true, reason = 'lab test: replay only'")
    try:
        filled = json.loads(labctl("queue-fill", "300").stdout.strip().splitlines()[-1])
        prefix = filled["prefix"]
        playbook = tmp_path / "replay.yml"
        playbook.write_text(REPLAY_PLAYBOOK)
        env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
        argv = [str(REPO / ".venv" / "bin" / "ansible-playbook"), str(playbook), "-i", "inventories/lab",
                "-e", '{"notification_provider_rates": {"twilio": 40, "sendgrid": 40}}']

        def provider_sends() -> int:
            return sum(1 for e in ledger() if e["service"] in ("twilio", "sendgrid"))

        # The providers answer 0.5 s late (the emulator's slow mode records the send, then answers): a kill lands
        # while sends are in flight, so some messages reach the provider and are never recorded as sent.
        for service in ("twilio", "sendgrid"):
            assert http(f"{SAAS}/_emulator/mode", method="POST",
                        body={"service": service, "mode": "slow", "delay_s": 0.5})[0] == 200
        first = subprocess.Popen([*argv, "-e", f"counts_file={tmp_path / 'first.json'}"], cwd=REPO, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            assert wait_until(lambda: provider_sends() >= 40 or first.poll() is not None, timeout=90, interval=0.1)
            assert first.poll() is None, "the replay ended before it could be killed mid-run"
        finally:
            kill_tree(first.pid)  # ansible-playbook, its workers and the module's process: no cleanup at all
            first.wait(timeout=30)
        # no send is in flight at the provider any more: the ledger did not grow during a whole answer delay
        # (two samples 0.6 s apart; wait_until's first call is immediate, so it only starts the series)
        seen = [provider_sends()]
        assert wait_until(lambda: seen.append(provider_sends()) or (len(seen) > 2 and seen[-1] == seen[-2]),
                          timeout=20, interval=0.6)
        for service in ("twilio", "sendgrid"):
            http(f"{SAAS}/_emulator/mode", method="POST", body={"service": service, "mode": "ok"})
        claimed = db(secrets, "SELECT count(*) FROM notification_queue WHERE status = 'sending' "
                              "AND claimed_by LIKE 'replay:%%' AND idempotency_key LIKE %s", (prefix + "-%",))[0][0]
        assert claimed > 0, "the kill left no row claimed: it did not land mid-run"
        sent_before = provider_sends()
        assert sent_before < 300

        second = subprocess.run([*argv, "-e", f"counts_file={tmp_path / 'second.json'}"], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=300, check=False)
        assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
        counts = json.loads((tmp_path / "second.json").read_text())
        # every row the kill left claimed was looked up in the provider's log, not blindly resent
        assert counts.get("reconciled_sent", 0) + counts.get("reconciled_resent", 0) == claimed, (claimed, counts)
        # ... and the ones that had reached the provider were found there and not sent again
        assert counts.get("reconciled_sent", 0) > 0, (claimed, counts)

        rows = db(secrets, "SELECT idempotency_key, status FROM notification_queue WHERE idempotency_key LIKE %s",
                  (prefix + "-%",))
        statuses = Counter(status for key, status in rows)
        assert len(rows) == 300 and set(statuses) == {"sent"}, statuses
        sends = Counter(e["idempotency_key"] for e in ledger() if e["service"] in ("twilio", "sendgrid"))
        assert {key: n for key, n in sends.items() if n != 1} == {}, "sent more than once"
        assert set(sends) == {key for key, status in rows}, "lost or foreign messages"
    finally:
        db(secrets, "UPDATE notification_provider_state SET paused = false, reason = NULL")
