"""RB-P1-001 against the real lab: each fault injected, the runbook run, the lab verified healthy
from outside, and the decision path asserted (the right mitigation, and not the others)."""
from __future__ import annotations

import os
import re
import subprocess
import tarfile
from typing import Iterator

import pytest


from conftest import ansible_playbook, APPS, STATE, http, incident_locks, labctl, ledger, pm2_procs, backend_pids

PLAYBOOK = "playbooks/rb-p1-001-critical-bug.yml"


def run_playbook(*args: str) -> subprocess.CompletedProcess[str]:
    return ansible_playbook(PLAYBOOK, *args)


def diagnoses(out: str) -> dict[str, str]:
    return dict(re.findall(r'"msg": "(app-\d): (\w+) ', out))


def head(host: str) -> str:
    return subprocess.run(["git", "-C", str(STATE / host / "akig"), "log", "-1", "--format=%s"], capture_output=True,
                          text=True, check=True).stdout.strip()


def latest_report() -> str:
    return sorted((STATE / "incidents").glob("INC-*/report.md"), key=lambda p: p.stat().st_mtime)[-1].read_text()


def lock_held(secrets: dict[str, str]) -> bool:
    return bool(incident_locks(secrets))


@pytest.fixture
def cleared(lab_up) -> Iterator[None]:
    yield
    labctl("fault", "clear")


def assert_healthy() -> None:
    for addr in APPS.values():
        assert http(f"http://{addr}:4000/api/health")[0] == 200
    for path in ("/", "/contrats", "/paiements"):
        assert http(f"http://{APPS['app-1']}:3000{path}")[0] == 200


def test_backend_crash_is_restarted_and_nothing_else(cleared, secrets) -> None:
    before = head("app-1")
    labctl("fault", "backend_crash")
    # a secret that only its value gives away (no key=, no URL around it): the archive must still hide it
    out_log = STATE / "app-1" / "pm2" / "logs" / "akig-backend-out.log"
    stamp = subprocess.run(["date", "-u", "+%Y-%m-%dT%H:%M:%S"], capture_output=True, text=True, check=True).stdout.strip()
    with out_log.open("a") as fh:
        fh.write(f"{stamp}: debug retry with {secrets['probe_password']} after a refused login\n")
    proc = run_playbook()
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert diagnoses(proc.stdout) == {"app-1": "backend_down", "app-2": "backend_down"}
    report = latest_report()
    assert "error rate 40.0 %" in report and "breach: True" in report
    assert "app-1: akig-backend restarted, health gate passed" in report
    assert not lock_held(secrets)
    assert head("app-1") == before  # nothing reverted
    assert not re.search(r"TASK \[akig.runbooks.app_recovery : Build the frontend\][^\n]*\n(changed|ok):", proc.stdout)
    assert_healthy()
    # rolling: app-2's backend came back only after app-1's had passed its health gate
    started = {h: [p["pm2_env"]["pm_uptime"] for p in pm2_procs(h) if p["name"] == "akig-backend"] for h in APPS}
    assert min(started["app-2"]) > max(started["app-1"])
    # the last hour of each host's logs is in the incident folder, without a secret
    incident = sorted((STATE / "incidents").glob("INC-*/report.md"), key=lambda p: p.stat().st_mtime)[-1].parent
    with tarfile.open(incident / "logs" / "app-1.tar.gz") as archive:
        members = {m.name: archive.extractfile(m).read().decode() for m in archive.getmembers() if m.isfile()}
    assert {"files/akig-backend-out.log", "files/akig-frontend-out.log", "files/akig-worker-out.log", "MANIFEST.txt"} <= set(members)
    assert '"msg":"listening"' in members["files/akig-backend-out.log"]
    assert "debug retry with [REDACTED] after a refused login" in members["files/akig-backend-out.log"]
    assert (incident / "logs" / "app-2.tar.gz").is_file()
    for value in secrets.values():
        if len(str(value)) >= 8:
            assert all(str(value) not in text for text in members.values())


def test_frontend_broken_is_rebuilt_without_touching_the_backend(cleared) -> None:
    before = {h: backend_pids(h) for h in APPS}
    labctl("fault", "frontend_broken")
    proc = run_playbook()
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert diagnoses(proc.stdout) == {"app-1": "frontend_broken", "app-2": "healthy"}
    assert {h: backend_pids(h) for h in APPS} == before
    assert_healthy()


def test_bad_deploy_is_reverted(cleared) -> None:
    labctl("fault", "bad_deploy")
    proc = run_playbook()
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert diagnoses(proc.stdout) == {"app-1": "bad_deploy", "app-2": "bad_deploy"}
    for host in APPS:
        assert head(host).startswith('Revert "deploy: AKIG 1.5.0')
    assert_healthy()
    report = sorted((STATE / "incidents").glob("*/report.md"), key=lambda p: p.stat().st_mtime)[-1].read_text()
    assert "app-1: bad_deploy; app-2: bad_deploy" in report
    assert "reverted, akig-backend started on the previous code" in report


def test_bad_deploy_revert_is_refused_unless_a_recent_deploy(cleared, secrets) -> None:
    """One injected bad deploy, re-signed twice: each refusal changes nothing, so the second reuses the fault."""
    labctl("fault", "bad_deploy")
    import time
    for author, age_s, refusal in [
        ("oncall@akig.com", 0, "it is a revert made by this runbook"),
        ("deploy@akig.com", 3 * 86400, "it is not a recent deploy"),
    ]:
        stamp = f"{int(time.time()) - age_s} +0000"
        for host in APPS:  # the deployed commit, re-signed as the runbook's own revert, or backdated
            subprocess.run(["git", "-C", str(STATE / host / "akig"), "commit", "--amend", "--no-edit", "--reset-author"],
                           env={**os.environ, "GIT_AUTHOR_NAME": "x", "GIT_AUTHOR_EMAIL": author,
                                "GIT_COMMITTER_NAME": "x", "GIT_COMMITTER_EMAIL": author, "GIT_AUTHOR_DATE": stamp,
                                "GIT_COMMITTER_DATE": stamp},
                           check=True, capture_output=True)
        heads = {h: head(h) for h in APPS}
        proc = run_playbook()
        assert proc.returncode != 0, author
        evidence = re.findall(r'"msg": "(app-\d: \w+ .*)"', proc.stdout)
        assert refusal in proc.stdout, "\n".join(evidence) + "\n" + proc.stdout[-3000:]
        assert {h: head(h) for h in APPS} == heads  # nothing reverted
        assert all(any(p["name"] == "akig-backend" for p in pm2_procs(h)) for h in APPS)  # still in pm2
        assert not lock_held(secrets)


def test_check_mode_changes_nothing(cleared, secrets) -> None:
    labctl("fault", "backend_crash")
    http("http://127.0.0.41/_emulator/reset", method="POST")
    before = {h: (head(h), sorted((p["name"], p["pid"], p["pm2_env"]["status"]) for p in pm2_procs(h))) for h in APPS}
    proc = run_playbook("--check")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert diagnoses(proc.stdout) == {"app-1": "backend_down", "app-2": "backend_down"}
    for addr in APPS.values():
        assert http(f"http://{addr}:4000/api/health", timeout=2)[0] != 200
    # same commits, same processes and pids, nothing sent, no lock left
    assert {h: (head(h), sorted((p["name"], p["pid"], p["pm2_env"]["status"]) for p in pm2_procs(h))) for h in APPS} == before
    assert [e for e in ledger() if e["service"] in ("slack", "twilio", "sendgrid")] == []
    assert not lock_held(secrets)


def test_mitigation_failure_stops_the_roll_and_releases_the_lock(cleared, secrets) -> None:
    labctl("fault", "backend_crash")
    http("http://127.0.0.41/_emulator/reset", method="POST")
    env = STATE / "app-1" / "shared" / "akig.env"
    original = env.read_text()
    # app-1's backend cannot come back: its database is unreachable (port 1)
    env.write_text(re.sub(r"(DATABASE_URL=postgres(?:ql)?://[^@]+@[^:/]+):\d+", r"\1:1", original))
    try:
        proc = run_playbook("-e", "app_recovery_timeout_s=8")
    finally:
        env.write_text(original)
        subprocess.run([str(STATE.parent / "node_modules" / ".bin" / "pm2"), "restart", "akig-backend", "--update-env"],
                       env={**os.environ, "PM2_HOME": str(STATE / "app-1" / "pm2")}, capture_output=True, timeout=60,
                       check=True)
    assert proc.returncode != 0
    assert "rb-p1-001-critical-bug failed" in proc.stdout
    # the roll stopped at app-1: app-2 was not touched (still down)
    assert http(f"http://{APPS['app-2']}:4000/api/health", timeout=2)[0] != 200
    assert not lock_held(secrets)
    report = latest_report()
    assert "FAILED" in report and "app-1" in report
    texts = [str(e.get("text") or e) for e in ledger("slack")]
    assert any("FAILED" in t or "ÉCHEC" in t for t in texts), texts


def test_database_cause_hands_over_to_rb_p1_003_in_the_same_incident(cleared) -> None:
    labctl("fault", "db_primary_down")
    proc = run_playbook("-e", "pg_failover_confirm=true")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert diagnoses(proc.stdout) == {"app-1": "database", "app-2": "database"}
    # nothing was restarted, rebuilt or reverted on the app hosts by RB-P1-001 itself
    assert not re.search(r"TASK \[akig.runbooks.app_recovery : (Build the frontend|Revert the last deploy)[^\n]*\n(changed|ok):",
                         proc.stdout)
    # RB-P1-003 ran in the same run and the same incident: one bounded restart of PostgreSQL fixed it
    assert "PLAY [RB-P1-003 | Open the incident, detect and analyse, then restart or fail over]" in proc.stdout
    assert "db-1: PostgreSQL restarted in place" in proc.stdout
    assert len(set(re.findall(r"INC-\d{8}-\d{4}-P1-[0-9a-f]{4}", proc.stdout))) == 1
    assert_healthy()


@pytest.mark.parametrize("args", [["-e", "rb_p1_001_serial=many"], ["-e", "rb_p1_001_serial=0"],
                                  ["-e", "rb_p1_001_max_fail_percentage=lots"]])
def test_bad_input_costs_nothing(cleared, secrets, args) -> None:
    http("http://127.0.0.41/_emulator/reset", method="POST")
    proc = run_playbook(*args)
    assert proc.returncode != 0
    assert "Nothing was changed" in proc.stdout and "Unexpected Exception" not in proc.stdout + proc.stderr
    assert [e for e in ledger() if e["service"] in ("slack", "twilio", "sendgrid", "tickets")] == []
    assert not lock_held(secrets)
