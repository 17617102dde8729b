"""RB-P1-002 against the real lab: each auth fault injected, the runbook run, login verified on every backend from
outside, the right mitigation taken and the wrong ones not, and no secret anywhere in the output or the artifacts."""
from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import tarfile
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import redis

from conftest import APPS, CACHE, SAAS, STATE, ansible_playbook, http, incident_locks, labctl, ledger, backend_pids

PLAYBOOK = "playbooks/rb-p1-002-auth-broken.yml"
CHECK_USER = "auth-check@akig.example"


def env_secret(path: Path) -> str:
    return next(ln.split("=", 1)[1] for ln in path.read_text().splitlines() if ln.startswith("JWT_SECRET="))


def env_file(host: str) -> Path:
    return STATE / host / "shared" / "akig.env"


def login(host: str, secrets: dict[str, str], user: str = CHECK_USER, password_key: str = "auth_check_password") -> str | None:
    status, body = http(f"http://{APPS[host]}:4000/api/login", method="POST",
                        body={"email": user, "password": secrets[password_key]})
    return body["token"] if status == 200 else None


def assert_auth_works_everywhere(secrets: dict[str, str]) -> None:
    """Login on every backend, its token accepted by every backend, an account created and deleted."""
    tokens = {h: login(h, secrets) for h in APPS}
    assert all(tokens.values()), tokens
    for issuer, token in tokens.items():
        for host, addr in APPS.items():
            assert http(f"http://{addr}:4000/api/contracts?per_page=1", token=token)[0] == 200, (issuer, host)
    status, body = http(f"http://{APPS['app-2']}:4000/api/users", method="POST", token=tokens["app-1"],
                        body={"email": "lab-test-throwaway@akig.example", "full_name": "T", "password": "x" * 16})
    assert status == 201, body
    assert http(f"http://{APPS['app-1']}:4000/api/users/{body['id']}", method="DELETE", token=tokens["app-2"])[0] == 204


def latest_incident() -> Path:
    return sorted((STATE / "incidents").glob("INC-*/report.md"), key=lambda p: p.stat().st_mtime)[-1].parent


def incident_dirs() -> set[Path]:
    return set((STATE / "incidents").glob("INC-*"))


def artifact_texts(incident: Path) -> list[str]:
    texts = []
    for path in incident.rglob("*"):
        if path.suffixes[-2:] == [".tar", ".gz"]:
            with tarfile.open(path) as archive:
                texts += [archive.extractfile(m).read().decode(errors="replace") for m in archive.getmembers() if m.isfile()]
        elif path.suffix == ".gz":
            texts.append(gzip.decompress(path.read_bytes()).decode(errors="replace"))
        elif path.is_file():
            texts.append(path.read_text(errors="replace"))
    return texts


def assert_no_secret_anywhere(proc: subprocess.CompletedProcess[str], secrets: dict[str, str], *extra: str) -> None:
    """The canary: no lab secret, and no JWT secret (the good one, the drifted one), in the output or the artifacts."""
    texts = [proc.stdout, proc.stderr] + artifact_texts(latest_incident())
    for name, value in list(secrets.items()) + [(f"extra{i}", v) for i, v in enumerate(extra)]:
        value = str(value)
        if len(value) >= 8:
            assert all(value not in text for text in texts), f"the value of {name} leaked"


def session_anomalies(secrets: dict[str, str]) -> int:
    r = redis.Redis(host=CACHE, port=6379, password=secrets["redis_password"], socket_timeout=3)
    bad = sum(1 for k in r.scan_iter("akig:user_sessions:*") if r.type(k) != b"set")
    for key in r.scan_iter("akig:sess:*"):
        try:
            json.loads(r.get(key) or b"")
        except ValueError:
            bad += 1
    return bad


def ticket(secrets: dict[str, str], incident: str) -> dict:
    req = urllib.request.Request(f"{SAAS}/tickets/api/v1/incidents?incident_id={incident}",
                                 headers={"Authorization": f"Bearer {secrets['ticket_api_token']}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        found = json.loads(resp.read())["incidents"]
    assert len(found) == 1, found
    return found[0]


def remove_copies() -> None:
    """The runbook's copies of drifted env files, and the drifted backup a test planted."""
    for host in APPS:
        for saved in (STATE / host / "shared").glob("akig.env.before-restore.*"):
            saved.unlink()
    (STATE / "app-2" / "shared" / "backups" / "akig.env.deploy-2").unlink(missing_ok=True)


@pytest.fixture
def cleared(lab_up) -> Iterator[None]:
    remove_copies()
    yield
    remove_copies()
    labctl("fault", "clear")


def inject_with_an_old_token(fault: str, secrets: dict[str, str]) -> None:
    """A user logged in before the fault keeps using the token: the auth log gets its invalid signatures."""
    token = login("app-1", secrets, "probe@akig.example", "probe_password")
    labctl("fault", fault)
    for addr in APPS.values():
        assert http(f"http://{addr}:4000/api/contracts?per_page=1", token=token)[0] in (200, 401)


@pytest.mark.parametrize("fault,restored", [("jwt_secret_drift", ["app-1", "app-2"]), ("jwt_secret_drift_one", ["app-2"])])
def test_secret_drift_is_restored_from_the_backup_without_a_flush(cleared, secrets, fault, restored) -> None:
    inject_with_an_old_token(fault, secrets)
    drifted = env_secret(env_file(restored[0]))
    assert drifted != secrets["jwt_secret"]
    pids = {h: backend_pids(h) for h in APPS}
    sessions = set(redis.Redis(host=CACHE, port=6379, password=secrets["redis_password"]).scan_iter("akig:sess:*"))
    proc = ansible_playbook(PLAYBOOK)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert_auth_works_everywhere(secrets)
    # the right mitigation: the secret back to the backup's on the drifted backends only, reloaded there only
    for host in APPS:
        assert env_secret(env_file(host)) == secrets["jwt_secret"]
        assert (backend_pids(host) != pids[host]) == (host in restored), host
        saved = list((STATE / host / "shared").glob("akig.env.before-restore.*"))
        assert len(saved) == (1 if host in restored else 0)
        if saved:
            assert env_secret(saved[0]) == drifted and oct(saved[0].stat().st_mode & 0o777) == "0o600"
    # and not the wrong one: the sessions of before are still there (no flush)
    r = redis.Redis(host=CACHE, port=6379, password=secrets["redis_password"])
    assert sessions <= set(r.scan_iter("akig:sess:*"))
    report = (latest_incident() / "report.md").read_text()
    assert "**Status**: resolved" in report
    assert ("alone signs tokens" in report) == (fault == "jwt_secret_drift_one")
    assert "invalid_signature" in report and "corrupt sessions cleared" not in report
    assert "staging not compared: no staging fingerprint source configured" in report
    assert not incident_locks(secrets)
    assert ticket(secrets, latest_incident().name)["status"] == "resolved"
    assert_no_secret_anywhere(proc, secrets, drifted)


def test_corrupt_sessions_are_flushed_without_a_restart(cleared, secrets) -> None:
    labctl("fault", "redis_sessions_corrupt")
    assert login("app-1", secrets) is None  # the symptom: the check account cannot log in
    assert session_anomalies(secrets) > 0
    pids = {h: backend_pids(h) for h in APPS}
    envs = {h: env_file(h).read_text() for h in APPS}
    proc = ansible_playbook(PLAYBOOK)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert_auth_works_everywhere(secrets)
    assert session_anomalies(secrets) == 0
    # no restart, no env file touched
    assert {h: backend_pids(h) for h in APPS} == pids
    assert {h: env_file(h).read_text() for h in APPS} == envs
    report = (latest_incident() / "report.md").read_text()
    assert "corrupt sessions cleared" in report and "JWT_SECRET restored" not in report
    assert not incident_locks(secrets)
    assert_no_secret_anywhere(proc, secrets)


def test_bad_input_is_refused_before_anything_changes(cleared, secrets) -> None:
    labctl("fault", "jwt_secret_drift_one")
    # the backup of the drifted backend holds the drifted secret itself: nothing to restore
    shutil.copy2(env_file("app-2"), STATE / "app-2" / "shared" / "backups" / "akig.env.deploy-2")
    envs = {h: env_file(h).read_text() for h in APPS}
    pids = {h: backend_pids(h) for h in APPS}
    for args, message in [
        ([], "a backup holds a drifted secret"),
        (["-e", "auth_recovery_backup_env_file=/nonexistent/akig.env.deploy-0"], "does not exist"),
        (["-e", "akig_auth_check_password=CHANGE_ME"], "needs a dedicated check account"),
        (["-e", "akig_auth_check_user="], "needs a dedicated check account"),
        (["-e", "auth_recovery_redis_db=99"], "99"),
        (["-e", "auth_recovery_session_pattern=*"], "needs redis_flush_confirm=true"),
    ]:
        http(f"{SAAS}/_emulator/reset", method="POST")
        before = incident_dirs()
        proc = ansible_playbook(PLAYBOOK, *args)
        assert proc.returncode != 0, args
        assert message in proc.stdout, (args, proc.stdout[-3000:])
        assert "Nothing was changed" in proc.stdout or "nothing" in proc.stdout.lower(), args
        # a bad input costs nothing: no page, no ticket, no lock, no incident, no lab change
        assert [e for e in ledger() if e["service"] in ("slack", "twilio", "sendgrid", "tickets")] == [], args
        assert incident_locks(secrets) == [], args
        assert incident_dirs() == before, args
        assert {h: env_file(h).read_text() for h in APPS} == envs
        assert {h: backend_pids(h) for h in APPS} == pids


def test_corrupt_users_table_stops_and_hands_over(cleared, secrets, pg) -> None:
    """Never a restore over the live database: the run stops, names the restore runbook, changes nothing."""
    (uid, good_hash), = pg("db-1", "SELECT id, password_hash FROM users WHERE email = 'user0001@akig.example'")
    pg("db-1", "UPDATE users SET password_hash = 'not-a-bcrypt-hash' WHERE id = %s", (uid,))
    try:
        envs = {h: env_file(h).read_text() for h in APPS}
        pids = {h: backend_pids(h) for h in APPS}
        proc = ansible_playbook(PLAYBOOK)
        assert proc.returncode != 0
        assert "The users table is corrupt" in proc.stdout and "database restore runbook" in proc.stdout
        assert pg("db-1", "SELECT password_hash FROM users WHERE id = %s", (uid,)) == [("not-a-bcrypt-hash",)]
        assert {h: env_file(h).read_text() for h in APPS} == envs and {h: backend_pids(h) for h in APPS} == pids
        report = (latest_incident() / "report.md").read_text()
        assert "1 not bcrypt-shaped" in report and "corrupt users table" in report
        assert ticket(secrets, latest_incident().name)["status"] != "resolved"
        assert not incident_locks(secrets)
    finally:
        pg("db-1", "UPDATE users SET password_hash = %s WHERE id = %s", (good_hash, uid))
