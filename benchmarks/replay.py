#!/usr/bin/env python3
"""Benchmark the notification replay (module akig.runbooks.notification_replay, RB-P2-003).

    .venv/bin/python benchmarks/replay.py [--messages 10000] [--big 100000] [--naive 300]
                                          [--concurrency 16] [--batch 200] [--skip-naive]

Starts its own PostgreSQL (the pg test cluster of tests/support/pg_cluster.py, 127.0.0.91:55491, with
lab/sql/schema.sql applied; fsync=off like every test cluster) and its own SaaS emulator PROCESS
(lab/emulator/akig_saas_emulator.py on 127.0.0.1, a free port, a temporary state dir, fsync'd ledger),
nothing of the lab. The replay runs as the module's own process (plugins/modules/notification_replay.py
with an args file, as Ansible runs it), rate limits off. Scenarios:

  clean    --messages pending rows (SMS and e-mail in turn, four kinds, préavis with due times)
  naive    the baseline: ansible-playbook, one ansible.builtin.uri task looping over --naive SMS rows
           (no database update at all, which flatters it), and the ratio of the two rates
  flaky    --messages rows with 10 % of provider calls answered 500 or 429 (Retry-After: 0 s, see
           --flaky-retry-after) and one kill -9 of the replay once 30 % are in the ledger, then a rerun
  big      --big rows, for the peak RSS (memory flat in queue size)

Each replay scenario prints msgs/s (delivered / wall time of the replay process, start-up included),
p95 send latency (the module's own histogram), the replay process's peak RSS (ru_maxrss from wait4),
and duplicates and losses proved by the emulator's ledger (ledger.jsonl) joined with the queue by
idempotency key. Targets from the issue are printed beside: >= 1,000 msg/s rate limits off,
>= 100x the naive loop, 0 duplicates / 0 losses, also with faults and the kill. A benchmark, not a
test: it prints figures and fails only when it cannot run (exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".collections"))

import psycopg2  # noqa: E402

from ansible_collections.akig.runbooks.tests.support.pg_cluster import PRIMARY, SUPERUSER, PgCluster, remove_leftovers  # noqa: E402

MODULE = REPO / "plugins" / "modules" / "notification_replay.py"
EMULATOR = REPO / "lab" / "emulator" / "akig_saas_emulator.py"
SCHEMA = REPO / "lab" / "sql" / "schema.sql"
VENV_BIN = REPO / ".venv" / "bin"
CREDS = {
    "twilio_account_sid": "AC" + secrets.token_hex(16),
    "twilio_auth_token": secrets.token_hex(16),
    "sendgrid_api_key": "SG." + secrets.token_hex(20),
    "slack_webhook_path": "T0BENCH/B0BENCH/" + secrets.token_hex(8),
    "ticket_api_token": secrets.token_hex(16),
}


class Emulator:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        creds = tmp / "creds.json"
        creds.write_text(json.dumps(CREDS))
        creds.chmod(0o600)
        self.state = tmp / "emu-state"
        self.log = open(tmp / "emulator.log", "w+", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, str(EMULATOR), "--host", "127.0.0.1", "--port", "0",
                                      "--state-dir", str(self.state), "--credentials-file", str(creds)],
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 15
        while True:
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", (tmp / "emulator.log").read_text())
            if match:
                self.url = match.group(1)
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the emulator did not start: %s" % (tmp / "emulator.log").read_text()[-500:])
            time.sleep(0.05)

    def call(self, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def ledger_keys(self) -> Counter:
        keys: Counter = Counter()
        with open(self.state / "ledger.jsonl", encoding="utf-8") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                keys[entry.get("idempotency_key")] += 1
        return keys

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Db:
    def __init__(self, cluster: PgCluster) -> None:
        self.cluster = cluster
        self.name = "akig_bench_%s" % secrets.token_hex(3)
        cluster.execute(PRIMARY, "CREATE DATABASE %s" % self.name)
        self.exec(SCHEMA.read_text())

    def connect(self) -> Any:
        conn = psycopg2.connect(host=PRIMARY.host, port=PRIMARY.port, user=SUPERUSER, password=self.cluster.password,
                                dbname=self.name)
        conn.autocommit = True
        return conn

    def exec(self, sql: str, args: tuple = ()) -> List[tuple]:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def reset(self, n: int, channels: Tuple[str, ...] = ("sms", "email")) -> None:
        self.exec("TRUNCATE notification_tasks, notification_queue RESTART IDENTITY CASCADE")
        self.exec(
            """INSERT INTO notification_queue (channel, kind, recipient, subject, body, idempotency_key, contacts, due_at)
               SELECT ch, (ARRAY['reminder','preavis','receipt','alert'])[1 + i %% 4],
                      CASE ch WHEN 'sms' THEN '+3361' || lpad(i::text, 7, '0') ELSE 'user' || i || '@akig.example' END,
                      'AKIG ' || i, 'Votre message AKIG numero ' || i, 'bench:' || i,
                      jsonb_build_object('sms', '+3361' || lpad(i::text, 7, '0'), 'email', 'user' || i || '@akig.example'),
                      CASE WHEN i %% 4 = 1 THEN now() + interval '1 day' END
                 FROM (SELECT i, (%s::text[])[1 + i %% cardinality(%s::text[])] AS ch FROM generate_series(1, %s) i) s""",
            (list(channels), list(channels), n))
        self.exec("ANALYZE notification_queue")

    def drop(self) -> None:
        self.cluster.execute(PRIMARY, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % self.name)


def module_args(db: Db, emu: Emulator, opts: argparse.Namespace, **extra: Any) -> Dict[str, Any]:
    args = {
        "login_host": PRIMARY.host, "login_port": PRIMARY.port, "login_user": SUPERUSER,
        "login_password": db.cluster.password, "login_db": db.name,
        "twilio_base_url": emu.url + "/twilio", "twilio_account_sid": CREDS["twilio_account_sid"],
        "twilio_auth_token": CREDS["twilio_auth_token"], "twilio_from": "+33700000000",
        "sendgrid_base_url": emu.url + "/sendgrid", "sendgrid_api_key": CREDS["sendgrid_api_key"],
        "sendgrid_from": "notifications@akig.example", "concurrency": opts.concurrency, "batch_size": opts.batch,
        "progress_every": 1000000,
    }
    args.update(extra)
    return args


def start_replay(tmp: Path, args: Dict[str, Any]) -> subprocess.Popen:
    argsfile = tmp / ("args-%s.json" % secrets.token_hex(3))
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    argsfile.chmod(0o600)
    env = dict(os.environ, PYTHONPATH=str(REPO / ".collections"))
    return subprocess.Popen([sys.executable, str(MODULE), str(argsfile)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)


def finish_replay(proc: subprocess.Popen) -> Tuple[Dict[str, Any], int, float]:
    """(module result, peak RSS in KiB of the replay process, wall seconds since start)."""
    out = proc.stdout.read() if proc.stdout else b""
    err = proc.stderr.read() if proc.stderr else b""
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    try:
        result = json.loads(out)
    except ValueError:
        raise SystemExit("the replay printed no result (rc %s): %s" % (proc.returncode, (out + err)[-1500:]))
    result["_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)
    return result, usage.ru_maxrss, 0.0


def run_replay(tmp: Path, args: Dict[str, Any]) -> Tuple[Dict[str, Any], int, float]:
    started = time.monotonic()
    proc = start_replay(tmp, args)
    result, rss, _ = finish_replay(proc)
    return result, rss, time.monotonic() - started


def check(db: Db, emu: Emulator) -> Tuple[int, int]:
    """(duplicates, losses): ledger entries beyond one per key, and rows not sent exactly once."""
    keys = emu.ledger_keys()
    duplicates = sum(c - 1 for c in keys.values() if c > 1)
    rows = db.exec("SELECT idempotency_key, status FROM notification_queue")
    lost = sum(1 for key, status in rows if status != "sent" or keys.get(key, 0) == 0)
    return duplicates, lost


def line(name: str, delivered: int, wall: float, result: Dict[str, Any], rss_kib: int, dup: int, lost: int) -> None:
    rate = delivered / wall if wall else 0.0
    print("%-8s %7d msgs in %7.2f s = %7.0f msg/s   p95 send %6s ms   peak RSS %6.1f MiB   duplicates %d   lost %d"
          % (name, delivered, wall, rate, result.get("p95_latency_ms"), rss_kib / 1024.0, dup, lost))
    sys.stdout.flush()


def naive(tmp: Path, emu: Emulator, n: int) -> float:
    """msg/s of an ansible.builtin.uri loop sending n SMS to the emulator."""
    messages = [{"to": "+3362%07d" % i, "body": "Votre message AKIG numero %d" % i, "key": "naive:%d" % i}
                for i in range(n)]
    playbook = tmp / "naive.yml"
    playbook.write_text(json.dumps([{
        "name": "naive replay", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": {"messages": messages},
        "tasks": [{
            "name": "send one SMS per message", "no_log": True,
            "ansible.builtin.uri": {
                "url": "%s/twilio/2010-04-01/Accounts/%s/Messages.json" % (emu.url, CREDS["twilio_account_sid"]),
                "method": "POST", "body_format": "form-urlencoded",
                "body": {"To": "{{ item.to }}", "From": "+33700000000", "Body": "{{ item.body }}"},
                "headers": {"Idempotency-Key": "{{ item.key }}"},
                "url_username": CREDS["twilio_account_sid"], "url_password": CREDS["twilio_auth_token"],
                "force_basic_auth": True, "status_code": [201],
            },
            "loop": "{{ messages }}",
        }],
    }]))
    env = dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_CONFIG=str(tmp / "none.cfg"),
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    started = time.monotonic()
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(playbook)],
                          capture_output=True, text=True, env=env, check=False, cwd=str(tmp))
    wall = time.monotonic() - started
    sent = sum(1 for k in emu.ledger_keys() if k and k.startswith("naive:"))
    if proc.returncode != 0 or sent != n:
        raise SystemExit("the naive loop failed (rc %d, %d/%d sent): %s" % (proc.returncode, sent, n,
                                                                            proc.stdout[-1500:]))
    rate = n / wall
    print("naive    %7d msgs in %7.2f s = %7.1f msg/s   (ansible-playbook, ansible.builtin.uri loop, no DB update)"
          % (n, wall, rate))
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--big", type=int, default=100000, help="rows of the peak-RSS run (0: skip)")
    parser.add_argument("--naive", type=int, default=300)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--flaky-retry-after", type=int, default=0)
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (the test cluster runs PostgreSQL as the postgres user through runuser)")
        return 1
    remove_leftovers()
    tmp = Path(tempfile.mkdtemp(prefix="akig-replay-bench-"))
    cluster = PgCluster()
    emu: Optional[Emulator] = None
    try:
        cluster.build()
        emu = Emulator(tmp)
        db = Db(cluster)
        print("replay benchmark: %d messages, concurrency %d, batch %d, rate limits off; PostgreSQL 15 (fsync=off), "
              "emulator process (ledger fsync'd per entry), %d CPUs" % (opts.messages, opts.concurrency, opts.batch,
                                                                       os.cpu_count() or 0))

        # clean run
        db.reset(opts.messages)
        result, rss, wall = run_replay(tmp, module_args(db, emu, opts))
        dup, lost = check(db, emu)
        delivered = result["counts"]["sent"]
        line("clean", delivered, wall, result, rss, dup, lost)
        print("         in-module rate %s msg/s over %s s (without process start-up); CPU: replay %s s, emulator %s"
              % (result["msgs_per_s"], result["duration_s"], result["_cpu_s"], cpu_of(emu.proc.pid)))
        clean_rate = delivered / wall

        if not opts.skip_naive:
            naive_rate = naive(tmp, emu, opts.naive)
            print("ratio    %.0fx the naive loop (target >= 100x)" % (clean_rate / naive_rate))
        print("target   >= 1,000 msg/s rate limits off: %s" % ("met" if clean_rate >= 1000 else "NOT met"))

        # flaky + kill -9 + rerun
        emu.call("/_emulator/reset", {})
        db.reset(opts.messages)
        for service in ("twilio", "sendgrid"):
            emu.call("/_emulator/mode", {"service": service, "mode": "flaky", "fraction": 0.1, "seed": 12,
                                         "retry_after_s": opts.flaky_retry_after})
        started = time.monotonic()
        proc = start_replay(tmp, module_args(db, emu, opts))
        while emu.call("/_emulator/health")["ledger_entries"] < opts.messages * 0.3:
            if proc.poll() is not None:
                raise SystemExit("the replay ended before the kill")
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        _res, rss1, _ = finish_replay_killed(proc)
        ambiguous = db.exec("SELECT count(*) FROM notification_queue WHERE status = 'sending'")[0][0]
        result, rss2, _ = run_replay(tmp, module_args(db, emu, opts))
        leftovers = result["counts"]["retry_later"]
        if leftovers:  # a message that failed max_attempts times in a row is pending again: one more run
            run_replay(tmp, module_args(db, emu, opts))
        wall = time.monotonic() - started
        dup, lost = check(db, emu)
        rejections = emu.call("/_emulator/rejections")["count"]
        line("flaky", opts.messages, wall, result, max(rss1, rss2), dup, lost)
        c = result["counts"]
        print("         10 %% faults: %d provider calls refused (500/429, Retry-After %d s); kill -9 at 30 %% left %d rows "
              "claimed; rerun: reconciled_sent %d, reconciled_resent %d, reconciled_duplicates %d, retry_later %d"
              % (rejections, opts.flaky_retry_after, ambiguous, c["reconciled_sent"], c["reconciled_resent"],
                 c["reconciled_duplicates"], leftovers))
        for service in ("twilio", "sendgrid"):
            emu.call("/_emulator/mode", {"service": service, "mode": "ok"})

        # peak RSS at 10k (clean run above) and big
        print("memory   peak RSS of the replay process: %.1f MiB at %d messages" % (rss / 1024.0, opts.messages))
        if opts.big:
            emu.call("/_emulator/reset", {})
            db.reset(opts.big)
            result, rss_big, wall = run_replay(tmp, module_args(db, emu, opts))
            dup, lost = check(db, emu)
            line("big", result["counts"]["sent"], wall, result, rss_big, dup, lost)
            print("memory   peak RSS of the replay process: %.1f MiB at %d messages (%.1f MiB at %d)"
                  % (rss_big / 1024.0, opts.big, rss / 1024.0, opts.messages))
        db.drop()
        return 0
    finally:
        if emu is not None:
            emu.stop()
        cluster.destroy()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


def finish_replay_killed(proc: subprocess.Popen) -> Tuple[None, int, float]:
    _pid, _status, usage = os.wait4(proc.pid, 0)
    proc.returncode = -9
    return None, usage.ru_maxrss, 0.0


def cpu_of(pid: int) -> str:
    try:
        fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return "%.1f s" % ((int(fields[11]) + int(fields[12])) / ticks)
    except (OSError, IndexError, ValueError):
        return "?"


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    sys.exit(main())
