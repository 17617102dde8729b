"""The runbook frame on the real lab: on every way a run can end, the incident lock is released,
the ticket says what happened and the contacts are told; no host is touched without the lock.

Each test runs tests/lab/playbooks/frame.yml (a runbook on the frame whose plays fail on demand)
and asserts on state: the lock key in the lab's Redis, the ticket in the emulator's tracker,
the messages in the emulator's ledger, the marker files the mitigation play writes."""
from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from conftest import CACHE, REPO, SAAS, ansible_playbook, http, incident_locks, labctl, ledger

PLAYBOOK = "tests/lab/playbooks/frame.yml"
LOCK_KEY = "akig:incident-lock:lab"


def lock_holders(secrets: dict[str, str]) -> list[bytes]:
    return incident_locks(secrets)


def incident_id(stdout: str) -> str:
    match = re.search(r"(?:Opened|Joined) incident (INC-[0-9A-Za-z-]+)", stdout)
    assert match, stdout[-3000:]
    return match.group(1)


def ticket(secrets: dict[str, str], incident: str) -> dict[str, Any]:
    req = urllib.request.Request(f"{SAAS}/tickets/api/v1/incidents?incident_id={incident}",
                                 headers={"Authorization": f"Bearer {secrets['ticket_api_token']}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        tickets = json.loads(resp.read())["incidents"]
    assert len(tickets) == 1, tickets
    return tickets[0]


def sent_texts() -> list[str]:
    return [str(e.get("text") or e.get("body") or e) for e in ledger() if e["service"] in ("slack", "twilio", "sendgrid")]


@pytest.fixture
def frame(secrets: dict[str, str], tmp_path: Path):
    labctl("fault", "clear")
    http(f"{SAAS}/_emulator/reset", method="POST")
    assert lock_holders(secrets) == [], "a lock is held before the test: another run is going on?"

    def run(*args: str):
        return ansible_playbook(PLAYBOOK, "-e", f"frame_marker_dir={tmp_path}", *args)
    run.markers = tmp_path  # type: ignore[attr-defined]
    return run


def assert_failed_run_cleaned_up(proc, secrets: dict[str, str], what: str) -> dict[str, Any]:
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert lock_holders(secrets) == [], "the incident lock is still held after the failed run"
    tk = ticket(secrets, incident_id(proc.stdout))
    comments = " ".join(c.get("text", "") if isinstance(c, dict) else str(c) for c in tk.get("comments", []))
    assert "FAILED" in comments and what in comments, tk
    assert tk["status"] == "open"  # a failed run does not resolve the ticket
    assert any("FAILED" in t or "ÉCHEC" in t for t in sent_texts()), sent_texts()
    assert "failed — " in proc.stdout and what in proc.stdout
    return tk


def test_success_resolves_the_ticket_and_releases_the_lock(frame, secrets):
    proc = frame("-e", "runbook_lock_refresh_after_s=0")  # every guard refreshes the lock
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "TASK [akig.runbooks.incident_lock : Push back the TTL of the incident lock for lab]" in proc.stdout
    assert lock_holders(secrets) == []
    assert sorted(p.name for p in frame.markers.iterdir()) == ["app-1", "app-2"]
    assert all(p.read_text() == "lock_held=True\n" for p in frame.markers.iterdir())
    assert ticket(secrets, incident_id(proc.stdout))["status"] == "resolved"
    assert "Planted yes" in proc.stdout and "RTO " in proc.stdout


def test_failure_in_the_first_play_touches_no_host(frame, secrets):
    proc = frame("-e", "fail_in=open_play")
    assert_failed_run_cleaned_up(proc, secrets, "planted failure in the open play")
    assert list(frame.markers.iterdir()) == []


def test_failure_in_a_later_play_stops_the_roll(frame, secrets):
    proc = frame("-e", "fail_in=remote_play", "-e", "frame_fail_host=app-1")
    assert_failed_run_cleaned_up(proc, secrets, "planted failure on app-1")
    assert list(frame.markers.iterdir()) == []  # app-2, after app-1 in the roll, is untouched


def test_failure_budget_reached_stops_the_roll(frame, secrets):
    # 1 of 2 hosts is 50 %: over a 40 % budget the roll stops at app-1
    proc = frame("-e", "fail_in=remote_play", "-e", "frame_fail_host=app-1", "-e", "frame_budget=40")
    assert_failed_run_cleaned_up(proc, secrets, "planted failure on app-1")
    assert list(frame.markers.iterdir()) == []


def test_failure_within_the_budget_lets_the_roll_go_on(frame, secrets):
    proc = frame("-e", "fail_in=remote_play", "-e", "frame_fail_host=app-1", "-e", "frame_budget=50")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert [p.name for p in frame.markers.iterdir()] == ["app-2"]
    assert lock_holders(secrets) == []


def test_unreachable_host_in_a_later_play_is_the_failure(frame, secrets):
    proc = frame("-i", "inventories/lab", "-i", "tests/lab/playbooks/ghost.yml", "-e", "frame_hosts=backend:ghost")
    assert_failed_run_cleaned_up(proc, secrets, "unreachable")
    assert "app-ghost" in proc.stdout
    # app-1 and app-2 come before the ghost in the roll: they were acted on under the lock
    assert sorted(p.name for p in frame.markers.iterdir()) == ["app-1", "app-2"]


def test_check_mode_takes_no_lock_and_sends_nothing(frame, secrets):
    proc = frame("--check")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert lock_holders(secrets) == []
    assert sent_texts() == []
    assert list(frame.markers.iterdir()) == []  # copy in check mode writes nothing


def test_a_tag_run_still_opens_locks_and_closes(frame, secrets):
    proc = frame("--tags", "mitigate")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert sorted(p.name for p in frame.markers.iterdir()) == ["app-1", "app-2"]
    assert all(p.read_text() == "lock_held=True\n" for p in frame.markers.iterdir())
    assert lock_holders(secrets) == []
    assert ticket(secrets, incident_id(proc.stdout))["status"] == "resolved"


def test_a_run_that_cannot_take_the_lock_touches_no_host(frame, secrets):
    # another run holds the lock (taken with the real module, with the inventory's lock settings)
    args = ("state=acquired environment=lab runbook=someone-else backend=redis ttl=120 "
            "redis_host={{ incident_lock_redis_host }} redis_port={{ incident_lock_redis_port }} "
            "redis_password={{ incident_lock_redis_password }} redis_db={{ incident_lock_redis_db }}")
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    taken = subprocess.run([str(REPO / ".venv" / "bin" / "ansible"), "localhost", "-m", "akig.runbooks.incident_lock",
                            "-a", args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert taken.returncode == 0, taken.stdout + taken.stderr
    try:
        proc = frame()
        assert proc.returncode != 0
        assert "someone-else" in proc.stdout
        assert list(frame.markers.iterdir()) == []
    finally:
        for db in range(16):
            redis.Redis(host=CACHE, port=6379, password=secrets["redis_password"], db=db).delete(LOCK_KEY)


def test_a_fatal_error_is_caught_by_the_backstop(frame, secrets, tmp_path):
    # a malformed task file included at run time ends the run at once: no later play, no close
    bad = tmp_path / "bad" / "tasks.yml"
    bad.parent.mkdir()
    bad.write_text("- name: broken\n  ansible.builtin.debug:\n    msg: a: b: c\n")
    proc = frame("-e", f"frame_include={bad}")
    assert proc.returncode not in (0, 2), proc.stdout[-3000:]  # a fatal error, not a task failure
    assert "Frame test | Close" not in proc.stdout
    assert lock_holders(secrets) == [], "the backstop did not release the incident lock"
    assert "ended before its close" in proc.stderr + proc.stdout
    tk = ticket(secrets, incident_id(proc.stdout))
    comments = " ".join(c.get("text", "") if isinstance(c, dict) else str(c) for c in tk.get("comments", []))
    assert "ended before its close" in comments, tk


def test_placeholder_contacts_are_refused_outside_the_lab_before_anything(frame, secrets):
    proc = frame("-e", "akig_environment=production")
    assert proc.returncode != 0
    assert "still the collection's placeholders" in proc.stdout, proc.stdout[-3000:]
    assert sent_texts() == [] and [e for e in ledger() if e["service"] == "tickets"] == []
    assert incident_locks(secrets, "production") == []
    assert list(frame.markers.iterdir()) == []
