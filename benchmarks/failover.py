#!/usr/bin/env python3
"""Benchmark RB-P1-003 on the lab, measured where users are: at the app, and at the database.

    .venv/bin/python benchmarks/failover.py [--runs 20] [--scenarios planned,crash,crash-sync]
        [--topologies direct,pgbouncer] [--writers 2] [--candidate NODE] [--lock /tmp/akig-lab.lock]
        [--interval 0.05] [--out results.jsonl]

Each run starts from a fresh lab (`lab/akig-lab reset`, which brings db-1 back as the primary) in the
topology asked for (`lab/akig-lab db-endpoint direct|pgbouncer`), waits for every backend's
/api/health to answer 200, then starts two kinds of load:
  app writers  for EVERY backend (inventory group `backend`), --writers threads that log in once as the
               probe user and create payments through that backend back to back (POST /api/payments,
               keep-alive, 10 s timeout), logging each request: start, end, status, payment id (201 body)
  DB writer    one connection committing one row at a time on whichever node accepts writes (the
               benchmark's first figures, kept for comparison), logging each acknowledged row and node
After a warm-up (until every backend has acknowledged a few payments) comes the scenario:
  planned     RB-P1-003 with rb_p1_003_strategy=failover while the primary is up       t0 = runbook start
  crash       SIGKILL the primary's postmaster (fault db_primary_down), then RB-P1-003  t0 = fault injected
  crash-sync  the same with synchronous replication to the candidate (synchronous_commit=on)
The writers run until every backend has had a 201 from a request started after the runbook ended.

Figures per run (one line each, flushed) and per (topology, scenario) (p50/p95/max, totals):
  RTO_runbook  "RTO x s" as the runbook reports it (runbook start -> its own proven write)
  RTO_app      t0 -> the first 201 on EVERY backend that landed on the new primary (max over backends).
               "Landed on the new primary": the row's xmin is at least the first transaction id the
               DB writer committed on the new primary (transaction ids continue across a promotion and
               every surviving row of the old primary has a smaller one), so a payment acknowledged by
               the old primary after t0 (a planned failover pauses, it does not fail) does not count.
  no-201       the longest stretch without a 201, on completion times, per backend and over all backends,
               from the first 201 after warm-up to the last one of the run
  failed       app requests after t0 that got no 201 (another status or an exception/timeout)
  lost         acknowledged payments (201 ids) missing on the new primary after the run, of acknowledged
  DB gap/lost  the DB writer's gap (last commit on the old primary -> first on the new) and its losses
The lab is touched only while a run holds the lab lock (--lock: fcntl.flock around each run, released
between runs so others can use the lab). At the end the db-endpoint setting found at start is restored
and the lab is reset, and left up. A benchmark, not a test: it prints figures, never fails on them.
No secret is printed: the probe password and the superuser password are read from lab/state/secrets.json.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import http.client
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import psycopg2
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lab"))
import labdata  # noqa: E402  (lab/ is not a package; labdata is the lab's one topology reader)

STATE = Path(os.environ.get("AKIG_LAB_STATE", REPO / "lab" / "state"))
LAB = str(REPO / "lab" / "akig-lab")
GROUP_VARS = yaml.safe_load((REPO / "inventories" / "lab" / "group_vars" / "all.yml").read_text())
BACKEND_PORT = int(GROUP_VARS["akig_backend_port"])
PG_PORT = int(GROUP_VARS["akig_pg_port"])
PROBE_USER = str(GROUP_VARS["akig_probe_user"])
TOPO = labdata.topology()
NODES = TOPO.databases      # db-1 (the initial primary) first, then the replicas
BACKENDS = TOPO.app_hosts   # every backend host -> address
HTTP_TIMEOUT = 10.0
DUE_DATE = "2027-01-05"


def now() -> float:
    return time.monotonic()


def sh(*cmd: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=check, timeout=timeout)


def wait_until(cond, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = now() + timeout
    while True:
        value = cond()
        if value:
            return value
        if now() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def connect(host: str, password: str, timeout: int = 1):
    conn = psycopg2.connect(host=host, port=PG_PORT, user="postgres", dbname="akig_db", password=password,
                            connect_timeout=timeout)
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def lab_lock(path: str | None) -> Iterator[None]:
    if not path:
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------------------- load
class DbWriter(threading.Thread):
    """Commits one row at a time on whichever node accepts writes; logs each acknowledged id and node."""

    def __init__(self, password: str) -> None:
        super().__init__(daemon=True)
        self.password = password
        self.acked: list[tuple[int, str, float]] = []  # (id, node, monotonic time)
        self.stop = threading.Event()

    def run(self) -> None:
        seq = 0
        conn = node = None
        while not self.stop.is_set():
            if conn is None:
                for name, host in NODES.items():
                    try:
                        c = connect(host, self.password)
                        with c.cursor() as cur:
                            cur.execute("SELECT pg_is_in_recovery()")
                            if not cur.fetchone()[0]:
                                conn, node = c, name
                                break
                        c.close()
                    except psycopg2.Error:
                        continue
                if conn is None:
                    self.stop.wait(0.05)
                    continue
            seq += 1
            try:
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO bench_writes (id, node) VALUES (%s, %s)", (seq, node))
                self.acked.append((seq, node, now()))
            except psycopg2.Error:
                with contextlib.suppress(psycopg2.Error):
                    conn.close()
                conn = None
            self.stop.wait(0.005)


class AppWriter(threading.Thread):
    """Logs in once through one backend, then creates payments through it back to back."""

    def __init__(self, backend: str, address: str, password: str, contract_id: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.backend, self.address, self.password, self.contract_id = backend, address, password, contract_id
        # (start, end, status or 0 for an exception, payment id or None, error class or "")
        self.log: list[tuple[float, float, int, int | None, str]] = []
        self.stop = threading.Event()
        self.conn: http.client.HTTPConnection | None = None
        self.token: str | None = None

    def request(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.address, BACKEND_PORT, timeout=HTTP_TIMEOUT)
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            self.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            resp = self.conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        return resp.status, data

    def login(self) -> bool:
        self.token = None
        try:
            status, data = self.request("POST", "/api/login", {"email": PROBE_USER, "password": self.password})
        except (OSError, http.client.HTTPException):
            return False
        if status == 200 and isinstance(data, dict) and data.get("token"):
            self.token = data["token"]
            return True
        return False

    def run(self) -> None:
        while not self.stop.is_set() and not self.login():
            self.stop.wait(0.2)  # before the fault only (the warm-up waits for every writer's first 201)
        n = 0
        while not self.stop.is_set():
            n += 1
            start = now()
            try:
                status, data = self.request("POST", "/api/payments",
                                            {"contract_id": self.contract_id, "amount_cents": 10000 + n % 1000,
                                             "due_date": DUE_DATE})
                pid = int(data["id"]) if status == 201 and isinstance(data, dict) and "id" in data else None
                self.log.append((start, now(), status, pid, ""))
                if status == 401:
                    self.login()
            except (OSError, http.client.HTTPException) as exc:
                self.log.append((start, now(), 0, None, type(exc).__name__))
            if self.interval:
                self.stop.wait(self.interval)

    def acked(self) -> list[tuple[float, float, int]]:
        return [(s, e, p) for s, e, st, p, _ in self.log if st == 201 and p is not None]


def health_all() -> bool:
    for address in BACKENDS.values():
        try:
            c = http.client.HTTPConnection(address, BACKEND_PORT, timeout=2)
            c.request("GET", "/api/health")
            ok = c.getresponse().status == 200
            c.close()
        except (OSError, http.client.HTTPException):
            return False
        if not ok:
            return False
    return True


def first_contract(password: str) -> int:
    conn = connect(NODES[next(iter(NODES))], password, 3)
    with conn.cursor() as cur:
        cur.execute("SELECT min(id) FROM contracts")
        cid = cur.fetchone()[0]
    conn.close()
    if cid is None:
        raise RuntimeError("the lab has no contract to create payments for; run `lab/akig-lab reset`")
    return int(cid)


def writable_nodes(password: str) -> list[str]:
    out = []
    for name, host in NODES.items():
        try:
            c = connect(host, password, 2)
            with c.cursor() as cur:
                cur.execute("SELECT pg_is_in_recovery()")
                if not cur.fetchone()[0]:
                    out.append(name)
            c.close()
        except psycopg2.Error:
            continue
    return out


# ------------------------------------------------------------------------------------------ run
def prepare(topology: str, scenario: str, candidate: str | None) -> tuple[float, dict[str, str]]:
    """Reset the lab into the topology; returns the reset's duration and the lab's (new) secrets."""
    if sh(LAB, "db-endpoint").stdout.strip() != topology:
        sh(LAB, "db-endpoint", topology, check=False)  # before the reset, which keeps it (needs a primary)
    t = now()
    sh(LAB, "reset")
    reset_s = now() - t
    if sh(LAB, "db-endpoint").stdout.strip() != topology:
        sh(LAB, "db-endpoint", topology)
    wait_until(health_all, 120, "every backend's /api/health to answer 200")
    secrets = json.loads((STATE / "secrets.json").read_text())  # a reset generates new ones
    password = secrets["pg_superuser_password"]
    conn = connect(NODES[next(iter(NODES))], password, 3)  # autocommit; no `with conn` (a transaction block)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS bench_writes (id bigint PRIMARY KEY, node text, "
                    "at timestamptz DEFAULT now())")
        if scenario == "crash-sync":
            replicas = [candidate] if candidate else [n for n in NODES if n != next(iter(NODES))]
            names = ", ".join(f'"{r}"' for r in replicas)
            cur.execute(f"ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 ({names})'")
            cur.execute("SELECT pg_reload_conf()")

            def sync_on() -> bool:
                cur.execute("SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')")
                return cur.fetchone()[0] >= 1
            wait_until(sync_on, 30, "a synchronous standby")
    conn.close()
    return reset_s, secrets


def pct(values: list[float], q: float) -> float:
    vals = sorted(v for v in values if v == v)
    if not vals:
        return float("nan")
    return vals[min(len(vals) - 1, max(0, math.ceil(q * len(vals)) - 1))]


def longest_gap(times: list[float], lo: float, hi: float) -> float:
    pts = sorted(t for t in times if lo <= t <= hi)
    if len(pts) < 2:
        return hi - lo
    return max(b - a for a, b in zip(pts, pts[1:]))


def one_run(topology: str, scenario: str, candidate: str | None, writers_per_backend: int,
            warmup_acks: int, interval: float) -> dict[str, Any]:
    reset_s, secrets = prepare(topology, scenario, candidate)
    pw = secrets["pg_superuser_password"]
    contract = first_contract(pw)
    db_writer = DbWriter(pw)
    app_writers = [AppWriter(b, a, secrets["probe_password"], contract, interval)
                   for b, a in BACKENDS.items() for _ in range(writers_per_backend)]
    db_writer.start()
    for w in app_writers:
        w.start()
    try:
        return measure(topology, scenario, candidate, pw, reset_s, db_writer, app_writers, warmup_acks)
    finally:  # never leave a writer running into the next run
        for w in [*app_writers, db_writer]:
            w.stop.set()


def measure(topology: str, scenario: str, candidate: str | None, pw: str, reset_s: float, db_writer: DbWriter,
            app_writers: list[AppWriter], warmup_acks: int) -> dict[str, Any]:
    wait_until(lambda: all(len(w.acked()) >= warmup_acks for w in app_writers) and len(db_writer.acked) >= 20,
               60, f"{warmup_acks} payments acknowledged by every app writer (warm-up)")
    t0 = now()
    fault_s = 0.0
    if scenario.startswith("crash"):
        sh(LAB, "fault", "db_primary_down")
        fault_s = now() - t0
    t_rb = now()
    cmd = [str(REPO / ".venv" / "bin" / "ansible-playbook"), "playbooks/rb-p1-003-db-failover.yml",
           "-e", "rb_p1_003_strategy=failover"]
    if candidate:
        cmd += ["-e", f"pg_failover_candidate={candidate}"]
    proc = sh(*cmd, check=False)
    t_end = now()
    if scenario == "planned":
        t0 = t_rb

    def every_backend_after_runbook() -> bool:
        return all(any(s >= t_end for s, _e, _p in w.acked()) for w in app_writers)
    with contextlib.suppress(TimeoutError):
        wait_until(every_backend_after_runbook, 30, "a 201 on every backend after the runbook")
    for w in app_writers:
        w.stop.set()
    db_writer.stop.set()
    for w in app_writers:
        w.join(HTTP_TIMEOUT + 2)
    db_writer.join(5)
    t_stop = now()

    writable = writable_nodes(pw)
    old = next(iter(NODES))
    new = next((n for n in writable if n != old), writable[0] if writable else None)
    acked_ids = sorted({p for w in app_writers for _s, _e, p in w.acked()})
    xmin: dict[int, int] = {}
    bench: dict[int, int] = {}
    if new:
        conn = connect(NODES[new], pw, 3)
        with conn.cursor() as cur:
            cur.execute("SELECT id, xmin::text::bigint FROM payments WHERE id = ANY(%s)", (acked_ids,))
            xmin = dict(cur.fetchall())
            cur.execute("SELECT id, xmin::text::bigint FROM bench_writes")
            bench = dict(cur.fetchall())
        conn.close()
    # the first transaction id the DB writer committed on the new primary: rows of the old primary are below it
    new_xids = [bench[i] for i, n, _t in db_writer.acked if n == new and i in bench]
    old_xids = [bench[i] for i, n, _t in db_writer.acked if n == old and i in bench]
    boundary = min(new_xids) if new_xids else (max(old_xids) + 1 if old_xids else None)

    per_backend: dict[str, dict[str, float]] = {}
    all_done: list[float] = []
    warm_start = max(min(e for _s, e, _p in w.acked()) for w in app_writers)
    last_201 = max((e for w in app_writers for _s, e, _p in w.acked()), default=t_stop)
    for b in BACKENDS:
        ws = [w for w in app_writers if w.backend == b]
        acks = [(s, e, p) for w in ws for s, e, p in w.acked()]
        landed = [e for _s, e, p in acks
                  if e > t0 and boundary is not None and p in xmin and xmin[p] >= boundary]
        done = [e for _s, e, _p in acks]
        all_done += done
        per_backend[b] = {
            "rto_app": (min(landed) - t0) if landed else float("nan"),
            "no201": longest_gap(done, warm_start, last_201),
            "failed": sum(1 for w in ws for s, _e, st, p, _x in w.log if s >= t0 and not (st == 201 and p)),
        }
    errors: dict[str, int] = {}
    for w in app_writers:
        for s, _e, st, p, x in w.log:
            if s >= t0 and not (st == 201 and p):
                key = x or str(st)
                errors[key] = errors.get(key, 0) + 1
    lost_ids = [p for p in acked_ids if p not in xmin]
    db_present = set(bench)
    db_old = [t for _s, n, t in db_writer.acked if n == old]
    db_new = [t for _s, n, t in db_writer.acked if n != old]
    match = re.search(r"RTO ([0-9.]+) s", proc.stdout)
    rtos_app = [v["rto_app"] for v in per_backend.values()]
    return {
        "topology": topology, "scenario": scenario, "ok": proc.returncode == 0, "rc": proc.returncode,
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "reset_s": round(reset_s, 1), "fault_cmd_s": round(fault_s, 2), "runbook_s": round(t_end - t_rb, 2),
        "rto_runbook": float(match.group(1)) if match else float("nan"),
        "rto_app": max(rtos_app) if all(v == v for v in rtos_app) else float("nan"),
        "no201": longest_gap(all_done, warm_start, last_201),
        "per_backend": per_backend,
        "failed": sum(v["failed"] for v in per_backend.values()), "errors": errors,
        "requests": sum(len(w.log) for w in app_writers),
        "acked_before_t0": sum(1 for w in app_writers for _s, e, _p in w.acked() if e < t0),
        "acked": len(acked_ids), "lost": len(lost_ids), "lost_ids": lost_ids[:50],
        "db_acked": len(db_writer.acked), "db_lost": sum(1 for i, _n, _t in db_writer.acked if i not in db_present),
        "db_gap": (min(db_new) - max(db_old)) if db_old and db_new else float("nan"),
        "new_primary": new, "writable": writable,
        "tail": "\n".join((proc.stdout + proc.stderr).splitlines()[-40:]) if proc.returncode else "",
    }


def fmt(v: float) -> str:
    return "—" if v != v else f"{v:.2f}"


def run_line(i: int, r: dict[str, Any]) -> str:
    pb = " ".join(f"{b}:{fmt(v['rto_app'])}s/{fmt(v['no201'])}s/{v['failed']}" for b, v in r["per_backend"].items())
    return (f"{r['topology']:9} {r['scenario']:10} run {i:2} ok={r['ok']} RTO_runbook={fmt(r['rto_runbook'])}s "
            f"RTO_app={fmt(r['rto_app'])}s no201={fmt(r['no201'])}s failed={r['failed']}/{r['requests']} "
            f"lost={r['lost']}/{r['acked']} (acked before t0 {r['acked_before_t0']}) "
            f"db_gap={fmt(r['db_gap'])}s db_lost={r['db_lost']}/{r['db_acked']} new={r['new_primary']} "
            f"writable={','.join(r['writable'])} reset={r['reset_s']}s [per backend rto/no201/failed: {pb}]"
            + (f" errors={r['errors']}" if r["errors"] else ""))


def table(results: dict[tuple[str, str], list[dict[str, Any]]]) -> str:
    lines = ["| topology | scenario | ok | RTO runbook p50 / p95 / max | RTO app p50 / p95 / max "
             "| longest no-201 p50 / p95 / max | failed app requests (total, max/run) "
             "| payments lost / acknowledged | DB gap p50 / max | DB rows lost / acknowledged |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (topo, scen), rs in results.items():
        if not rs:
            continue
        def three(key: str) -> str:
            vals = [r[key] for r in rs]
            return " / ".join(fmt(x) for x in (pct(vals, .5), pct(vals, .95), max(vals, key=lambda v: -1 if v != v else v)))
        gaps = [r["db_gap"] for r in rs]
        lines.append(
            f"| {topo} | {scen} | {sum(r['ok'] for r in rs)}/{len(rs)} | {three('rto_runbook')} s | {three('rto_app')} s "
            f"| {three('no201')} s | {sum(r['failed'] for r in rs)}, {max(r['failed'] for r in rs)} "
            f"| {sum(r['lost'] for r in rs)} / {sum(r['acked'] for r in rs)} "
            f"| {fmt(pct(gaps, .5))} / {fmt(max((g for g in gaps if g == g), default=float('nan')))} s "
            f"| {sum(r['db_lost'] for r in rs)} / {sum(r['db_acked'] for r in rs)} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="runs per (topology, scenario)")
    parser.add_argument("--scenarios", default="planned,crash,crash-sync")
    parser.add_argument("--topologies", default="direct,pgbouncer")
    parser.add_argument("--writers", type=int, default=2, help="app writer threads per backend")
    parser.add_argument("--interval", type=float, default=0.05,
                        help="pause of each app writer between requests (default 0.05 s, about 20 requests/s per "
                             "writer; 0 = back to back, which on 2 cores starves the runbook: failing requests "
                             "come back in ~1 ms and become a CPU storm)")
    parser.add_argument("--warmup", type=int, default=3, help="payments every app writer acknowledges before t0")
    parser.add_argument("--candidate", default="",
                        help="pg_failover_candidate passed to RB-P1-003 ('' = let the runbook choose)")
    parser.add_argument("--lock", default=None, help="take this flock around each run (e.g. /tmp/akig-lab.lock)")
    parser.add_argument("--out", default=None, help="append each run's figures as JSON lines to this file")
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    topologies = [t for t in args.topologies.split(",") if t]
    bad = [s for s in scenarios if s not in ("planned", "crash", "crash-sync")] + \
          [t for t in topologies if t not in ("direct", "pgbouncer")]
    if bad:
        parser.error(f"unknown scenario or topology: {', '.join(bad)}")
    candidate = args.candidate or None
    with lab_lock(args.lock):
        found = sh(LAB, "db-endpoint").stdout.strip() or "direct"
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; backends {', '.join(BACKENDS)}, "
          f"{args.writers} app writers each; db-endpoint found: {found}", flush=True)
    results: dict[tuple[str, str], list[dict[str, Any]]] = {(t, s): [] for t in topologies for s in scenarios}
    try:
        for i in range(1, args.runs + 1):  # rounds: an interrupted benchmark still covers every combination
            for topo, scen in [(t, s) for t in topologies for s in scenarios]:
                with lab_lock(args.lock):
                    try:
                        r = one_run(topo, scen, candidate, args.writers, args.warmup, args.interval)
                    except (subprocess.SubprocessError, TimeoutError, RuntimeError, psycopg2.Error) as exc:
                        print(f"{topo:9} {scen:10} run {i:2} ERROR {type(exc).__name__}: {exc}", flush=True)
                        continue
                results.setdefault((topo, scen), []).append(r)
                print(run_line(i, r), flush=True)
                if r["tail"]:
                    print("  RB-P1-003 failed, last 40 lines:\n" + r["tail"], flush=True)
                if args.out:
                    with open(args.out, "a") as fh:
                        fh.write(json.dumps(r) + "\n")
    finally:
        with lab_lock(args.lock):
            sh(LAB, "reset", check=False)
            if sh(LAB, "db-endpoint", check=False).stdout.strip() != found:
                sh(LAB, "db-endpoint", found, check=False)
    print()
    print(table(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
