#!/usr/bin/env python3
"""Benchmark RB-P1-003 on the lab: RTO, acknowledged commits lost, and the planned write gap.

    .venv/bin/python benchmarks/failover.py [--runs 20] [--scenarios planned,crash,crash-sync]

Each run starts from a fresh lab (`lab/akig-lab reset`), starts a writer that commits one row
at a time on whichever node is primary and logs every acknowledged commit, then:
  planned     RB-P1-003 with rb_p1_003_strategy=failover while the primary is up
  crash       SIGKILL the primary's postmaster (fault db_primary_down), then RB-P1-003 failover
  crash-sync  the same with synchronous replication to db-2 (synchronous_commit=on)
RTO  = runbook start -> first successful write through the app (measured by the runbook itself).
Lost = acknowledged commits missing on the new primary afterwards.
Gap  = last acknowledged commit on the old primary -> first on the new one (client's view).
Prints p50, p95 and max per scenario. A benchmark, not a test: it prints figures and never fails
on them. It needs the lab (and stops nothing else); it takes about 45 s per run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import psycopg2

REPO = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("AKIG_LAB_STATE", REPO / "lab" / "state"))
NODES = {"db-1": "127.0.0.11", "db-2": "127.0.0.12"}


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=check, timeout=900)


def connect(host: str, password: str, timeout: int = 1):
    conn = psycopg2.connect(host=host, port=5432, user="postgres", dbname="akig_db", password=password,
                            connect_timeout=timeout)
    conn.autocommit = True
    return conn


class Writer(threading.Thread):
    """Commits one row at a time on whichever node accepts writes; logs each acknowledged id."""

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
                    time.sleep(0.05)
                    continue
            seq += 1
            try:
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO bench_writes (id) VALUES (%s)", (seq,))
                self.acked.append((seq, node, time.monotonic()))
            except psycopg2.Error:
                try:
                    conn.close()
                except psycopg2.Error:
                    pass
                conn = None
            time.sleep(0.005)


def one_run(scenario: str) -> dict[str, float]:
    sh(str(REPO / "lab" / "akig-lab"), "reset")
    secrets = json.loads((STATE / "secrets.json").read_text())
    pw = secrets["pg_superuser_password"]
    conn = connect(NODES["db-1"], pw, 3)  # autocommit, and no `with conn` (that opens a transaction block)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS bench_writes (id bigint PRIMARY KEY, at timestamptz DEFAULT now())")
        if scenario == "crash-sync":
            cur.execute("""ALTER SYSTEM SET synchronous_standby_names = '"db-2"'""")
            cur.execute("SELECT pg_reload_conf()")
    conn.close()
    time.sleep(1.0)
    writer = Writer(pw)
    writer.start()
    time.sleep(2.0)
    if scenario.startswith("crash"):
        sh(str(REPO / "lab" / "akig-lab"), "fault", "db_primary_down")
    proc = sh(str(REPO / ".venv" / "bin" / "ansible-playbook"), "playbooks/rb-p1-003-db-failover.yml",
              "-e", "rb_p1_003_strategy=failover", check=False)
    time.sleep(1.0)
    writer.stop.set()
    writer.join(5)
    match = re.search(r"RTO ([0-9.]+) s", proc.stdout)
    rto = float(match.group(1)) if match else float("nan")
    present: set[int] = set()
    conn = connect(NODES["db-2"], pw, 3)
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM bench_writes")
        present = {row[0] for row in cur.fetchall()}
    conn.close()
    lost = sum(1 for seq, _node, _t in writer.acked if seq not in present)
    old = [t for _s, n, t in writer.acked if n == "db-1"]
    new = [t for _s, n, t in writer.acked if n == "db-2"]
    gap = (min(new) - max(old)) if old and new else float("nan")
    return {"ok": proc.returncode == 0, "rto_s": rto, "lost": lost, "acked": len(writer.acked), "gap_s": gap}


def pct(values: list[float], q: float) -> float:
    vals = sorted(v for v in values if v == v)
    if not vals:
        return float("nan")
    return vals[min(len(vals) - 1, max(0, round(q * len(vals) + 0.5) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--scenarios", default="planned,crash,crash-sync")
    args = parser.parse_args()
    for scenario in args.scenarios.split(","):
        results = [one_run(scenario) for _run in range(args.runs)]
        rtos = [r["rto_s"] for r in results]
        gaps = [r["gap_s"] for r in results]
        print(f"{scenario:11} runs={len(results)} ok={sum(r['ok'] for r in results)} "
              f"RTO p50={pct(rtos, .5):.2f}s p95={pct(rtos, .95):.2f}s max={max(rtos):.2f}s "
              f"lost(total)={sum(r['lost'] for r in results)} of {sum(r['acked'] for r in results)} acked "
              f"lost(max/run)={max(r['lost'] for r in results)}"
              + (f" write-gap p50={pct(gaps, .5):.2f}s max={max(gaps):.2f}s" if scenario == "planned" else ""),
              flush=True)
    sh(str(REPO / "lab" / "akig-lab"), "reset")


if __name__ == "__main__":
    main()
