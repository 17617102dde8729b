"""RB-P1-003 in the PgBouncer topology when the NEW primary dies right after the app was repointed to it.

Run 1 (planned switch db-1 -> db-2, clients writing through every backend) is watched through its timeline;
as soon as both PgBouncers point at db-2 and let the waiting transactions through, db-2's postmaster is
SIGKILLed the way the crash tests kill a primary (`lab/akig-lab fault db_primary_down`, which kills whichever
node is primary: db-2 by then). Run 1 fails (write probe or verify) and leaves both PgBouncers on the dead db-2.

The kill must land at the same step of run 1 every time: `labctl fault` takes about a second, and the runbook
gets through its verify and half of its follow step in that second. So the controller (ansible-playbook's main
process, which starts every task) is stopped (SIGSTOP) the moment the timeline shows both repoints, and
continued (SIGCONT) once db-2 is dead: the task then running finishes, no new task starts in between. A
controller that stalls for a second is a real event too; the database sees nothing of it.

Run 2 is the next run an on-call engineer starts, straight to a failover: `-e rb_p1_003_primary=db-2` (the
primary to replace is no longer the inventory's pg_primary). db-3 never followed db-2 (run 1 died before its
follow step), so it is on timeline 1 while db-2 was primary on timeline 2: promoting it would drop every
payment db-2 acknowledged. Run 2 refuses, promotes nothing, and names the way out. Run 3 takes it: strategy
auto restarts db-2 in place. Asserted from outside: exactly one node accepts writes (db-2), every PgBouncer
points at it and is not paused, a payment through every backend lands on it, every payment acknowledged during
run 1 is there, run 3's report says what it did."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from conftest import APPS, DB, REPO, STATE, ansible_playbook, http, incident_locks, labctl, wait_until
from test_rb_p1_003_pgbouncer import PLAYBOOK, Writers, lab_status, pgbouncer_lab, probe_token, sql, writable  # noqa: F401  # pylint: disable=unused-import

REPOINT_TASK = "Point PgBouncer at the new primary and let the waiting transactions through"


def timeline(incident: str) -> list[dict[str, Any]]:
    path = STATE / "incidents" / incident / "timeline.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line being appended
            pass
    return records


def repointed_hosts(incident: str) -> set[str]:
    return {r["host"] for r in timeline(incident)
            if r.get("task") == REPOINT_TASK and r.get("outcome") in ("ok", "changed") and r.get("host") in APPS}


def start_playbook(log: Path, incident: str, *args: str) -> subprocess.Popen[str]:
    """ansible_playbook (conftest) in the background: same environment, output to a file, a known incident id."""
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
           "AKIG_TIMELINE_DIR": str(STATE / "incidents"), "AKIG_INCIDENT_ID": incident}
    with open(log, "w") as out:
        return subprocess.Popen([str(REPO / ".venv" / "bin" / "ansible-playbook"), PLAYBOOK, *args], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, text=True)


def present(node: str, secrets: dict[str, str], ids: list[int]) -> set[int]:
    if not ids:
        return set()
    return {row[0] for row in sql(node, secrets, f"SELECT id FROM payments WHERE id IN ({','.join(map(str, ids))})")}


def test_new_primary_killed_right_after_repoint_the_next_run_recovers(
        pgbouncer_lab: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = pgbouncer_lab
    contract = sql("db-1", secrets, "SELECT min(id) FROM contracts")[0][0]
    token = probe_token(secrets)
    tag = uuid.uuid4().hex[:4]
    first, second = f"INC-DRILL-KILLNEW-1-{tag}", f"INC-DRILL-KILLNEW-2-{tag}"

    # ---- run 1: planned switch to db-2; db-2 killed as soon as both PgBouncers point at it
    t0 = time.monotonic()
    with Writers(token, contract) as writers:
        assert wait_until(lambda: all(len(writers.acked(h)) >= 5 for h in APPS), timeout=30)
        run1 = start_playbook(tmp_path / "run1.log", first, "-e", "rb_p1_003_strategy=failover",
                              "-e", "pg_failover_candidate=db-2")
        try:
            assert wait_until(lambda: repointed_hosts(first) == set(APPS) or run1.poll() is not None,
                              timeout=240, interval=0.01)
            # freeze the controller before it starts the resolve play's verify (see the docstring)
            os.kill(run1.pid, signal.SIGSTOP)
            repointed = time.monotonic()
            try:
                out1 = (tmp_path / "run1.log").read_text()
                assert repointed_hosts(first) == set(APPS), out1[-4000:]
                labctl("fault", "db_primary_down")
                killed = time.monotonic()
            finally:
                os.kill(run1.pid, signal.SIGCONT)
        except BaseException:
            run1.kill()
            raise
        rc1 = run1.wait(timeout=600)
    out1 = (tmp_path / "run1.log").read_text()
    run1_s = time.monotonic() - t0
    assert "[DEPRECATION WARNING]" not in out1
    killed_node = json.loads((STATE / "faults.json").read_text())["active"]["db_primary_down"]["node"]
    assert killed_node == "db-2"  # the fault kills the primary of the moment: the one run 1 just promoted
    acked = writers.acked()
    print(f"\nrun 1: rc={rc1} in {run1_s:.1f}s; db-2 killed {killed - repointed:.2f}s after both repoints "
          f"(controller stopped meanwhile); "
          f"{len(acked)} payments acknowledged during run 1")
    print("run 1 failure: " + " | ".join(line.strip()[:300] for line in out1.splitlines() if line.startswith("fatal:")))

    # after run 1: it failed at its write probe, both PgBouncers still point at the dead db-2 (not paused),
    # no node accepts writes, db-3 streams from nobody (it followed db-1, which run 1 stopped and fenced)
    assert rc1 != 0, out1[-4000:]
    # the first failure: the write probe when the kill landed before it, else the verify that follows it
    failed = [r["task"] for r in timeline(first) if r.get("outcome") == "failed" and not r.get("ignored")]
    assert failed[:1] in (["Write the probe's row through the app (a real write on the primary, no business data)"],
                          ["Fail unless exactly one node, the new primary, accepts writes"]), failed
    status = lab_status()
    assert {h: status[h]["pgbouncer"] for h in APPS} == {
        h: {"address": f"{addr}:6432", "up": True, "points_to": f"{DB['db-2']}:5432", "paused": False}
        for h, addr in APPS.items()}
    assert {n: writable(n, secrets) for n in DB} == {"db-1": None, "db-2": None, "db-3": False}
    assert status["db-3"]["streaming_from"] is None
    assert incident_locks(secrets) == []  # run 1 released its lock: run 2 may start

    # ---- run 2: the on-call engineer's next run, straight to a failover, the primary to replace named.
    # db-3 never followed db-2 (run 1 died before its follow step): it is still on timeline 1, while db-2 was
    # primary on timeline 2. Promoting db-3 would drop every payment db-2 acknowledged: refused, nothing promoted.
    monkeypatch.setenv("AKIG_INCIDENT_ID", second)
    t1 = time.monotonic()
    run2 = ansible_playbook(PLAYBOOK, "-e", "rb_p1_003_strategy=failover", "-e", "rb_p1_003_primary=db-2")
    print(f"run 2: rc={run2.returncode} in {time.monotonic() - t1:.1f}s")
    assert run2.returncode != 0, run2.stdout[-4000:]
    assert "never followed db-2" in run2.stdout and "rb_p1_003_strategy=auto" in run2.stdout, run2.stdout[-4000:]
    assert "Nothing was promoted" in run2.stdout
    assert {n: writable(n, secrets) for n in DB} == {"db-1": None, "db-2": None, "db-3": False}
    assert incident_locks(secrets) == []

    # ---- run 3: the way out the refusal names - restart db-2 in place (strategy auto): nothing is lost
    third = f"{second}-restart"
    monkeypatch.setenv("AKIG_INCIDENT_ID", third)
    t2 = time.monotonic()
    run3 = ansible_playbook(PLAYBOOK, "-e", "rb_p1_003_primary=db-2")
    print(f"run 3: rc={run3.returncode} in {time.monotonic() - t2:.1f}s")
    assert run3.returncode == 0, run3.stdout[-5000:] + run3.stderr[-2000:]
    # exactly one node accepts writes, db-2; every PgBouncer points at it, not paused
    assert [n for n in DB if writable(n, secrets)] == ["db-2"]
    status = lab_status()
    for host in APPS:
        bouncer = status[host]["pgbouncer"]
        assert bouncer["points_to"] == f"{DB['db-2']}:5432" and bouncer["paused"] is False, (host, bouncer)
    # a payment through every backend is acknowledged and lands on db-2
    made = []
    for host, addr in APPS.items():
        code, body = http(f"http://{addr}:4000/api/payments", method="POST", token=probe_token(secrets),
                          body={"contract_id": contract, "amount_cents": 4321, "due_date": "2026-12-01"})
        assert code == 201, (host, code, body)
        made.append(body["id"])
    assert present("db-2", secrets, made) == set(made)
    # every payment acknowledged during run 1 is there: the restart lost nothing
    assert present("db-2", secrets, acked) == set(acked), sorted(set(acked) - present("db-2", secrets, acked))[:20]
    report = (STATE / "incidents" / third / "report.md").read_text()
    assert "PostgreSQL restarted in place" in report, report[:3000]
    # db-3, left streaming from nobody by run 1, follows db-2 again: the cluster has a replica once more
    assert wait_until(lambda: sql("db-2", secrets, "SELECT application_name, state FROM pg_stat_replication")
                      == [("db-3", "streaming")], timeout=20)
    assert writable("db-3", secrets) is False
    assert "follows db-2" in report, report[:3000]
    assert incident_locks(secrets) == []
