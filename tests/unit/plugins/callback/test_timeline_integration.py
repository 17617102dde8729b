# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a tiny phase-tagged runbook on localhost, through ansible-playbook and through
ansible-runner, with the akig.runbooks.timeline callback enabled from the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

COLLECTION_ROOT = Path(__file__).resolve().parents[4]
VENV_BIN = Path(sys.executable).parent
SECRET = "CANARY-91be20-never-in-artifacts"

PLAYBOOK = textwrap.dedent(
    """\
    - name: Drill runbook for the timeline callback
      hosts: localhost
      gather_facts: false
      vars:
        akig_incident:
          id: "INC-{{ 2000 + 25 }}-001"
          severity: P1
          declared_start: "2025-11-05T14:23:00Z"
        drill_token: "%(secret)s"
      tasks:
        - name: Probe the dashboard
          ansible.builtin.command: "true"
          changed_when: false
          tags: [detect]

        - name: Read the error budget
          ansible.builtin.debug:
            msg: "{{ drill_token }}"
          tags: [analyze]

        - name: Rotate the leaked token
          ansible.builtin.command: "echo {{ drill_token }}"
          changed_when: true
          no_log: true
          tags: [mitigate]

        - name: Fail while holding the token
          ansible.builtin.fail:
            msg: "token {{ drill_token }} rejected"
          no_log: true
          ignore_errors: true  # noqa ignore-errors - exercising a censored failure

        - name: Fail over the primary
          vars:
            akig_phase: resolve
          block:
            - name: Promote the replica
              ansible.builtin.fail:
                msg: "Replica lag exceeds the RPO budget"
          rescue:
            - name: Keep the old primary
              ansible.builtin.debug:
                msg: rolled back

        - name: Skip the customer notice
          ansible.builtin.debug:
            msg: skipped
          when: false
          tags: [communicate]

        - name: Record the incident report
          ansible.builtin.set_fact:
            akig_report:
              impact: "143 users could not open the dashboard"
              root_cause: "Memory leak loading payments"
              prevention:
                - "Memory monitoring"
                - "Load tests"
              next_steps:
                - "Performance audit"
          tags: [communicate]
    """
    % {"secret": SECRET}
)

EXPECTED = [
    ("Probe the dashboard", "detect", "ok"),
    ("Read the error budget", "analyse", "ok"),
    ("Rotate the leaked token", "mitigate", "changed"),
    ("Fail while holding the token", "mitigate", "failed"),
    ("Promote the replica", "resolve", "failed"),
    ("Keep the old primary", "resolve", "ok"),
    ("Skip the customer notice", "communicate", "skipped"),
    ("Record the incident report", "communicate", "ok"),
]


@pytest.fixture()
def collections_path(tmp_path: Path) -> Path:
    """A collections path holding only this checkout as akig.runbooks."""
    path = tmp_path / "collections"
    (path / "ansible_collections" / "akig").mkdir(parents=True)
    (path / "ansible_collections" / "akig" / "runbooks").symlink_to(COLLECTION_ROOT, target_is_directory=True)
    return path


def _env(collections_path: Path, tmp_path: Path, out: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANSIBLE_", "AKIG_")) and k != "PYTHONPATH"}
    env.update({
        "PATH": "%s%s%s" % (VENV_BIN, os.pathsep, os.environ.get("PATH", "")),
        "ANSIBLE_CALLBACKS_ENABLED": "akig.runbooks.timeline",
        "ANSIBLE_COLLECTIONS_PATH": str(collections_path),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"),
        "AKIG_TIMELINE_DIR": str(out),
        # any exception in a callback method fails the run instead of becoming a warning
        "_ANSIBLE_CALLBACK_DISPATCH_ERROR_BEHAVIOR": "error",
    })
    (tmp_path / "ansible.cfg").write_text("[defaults]\n", encoding="utf-8")
    return env


def _inventory(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("localhost ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable,
                    encoding="utf-8")
    return path


def _assert_artifacts(out: Path, incident_id: str, runbook: str) -> None:
    incident_dir = out / incident_id
    assert sorted(p.name for p in incident_dir.iterdir()) == ["report.md", "timeline.jsonl"]
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(encoding="utf-8"), path

    lines = [json.loads(line) for line in (incident_dir / "timeline.jsonl").read_text(encoding="utf-8").splitlines()]
    header, tasks, footer = lines[0], lines[1:-1], lines[-1]
    assert header["event"] == "run_start"
    assert (header["incident_id"], header["runbook"], header["severity"]) == (incident_id, runbook, "P1")
    assert header["incident_start"] == "2025-11-05T14:23:00.000Z"
    assert [(t["task"], t["phase"], t["outcome"]) for t in tasks] == EXPECTED
    for task in tasks:
        assert task["host"] == "localhost" and task["incident_id"] == incident_id
        assert task["duration_s"] >= 0
        assert task["sla"] is None or task["sla"]["state"] in ("ok", "at_risk", "breached")
        assert not {"args", "invocation", "result", "stdout"} & set(task)
    by_name = {t["task"]: t for t in tasks}
    assert by_name["Rotate the leaked token"]["censored"] is True
    assert by_name["Fail while holding the token"]["censored"] is True
    assert "msg" not in by_name["Fail while holding the token"]
    assert by_name["Promote the replica"]["msg"] == "Replica lag exceeds the RPO budget"
    assert footer["event"] == "run_end"
    assert footer["stats"]["localhost"]["skipped"] == 1
    assert footer["stats"]["localhost"]["failed"] == 0  # ignored and rescued failures

    report = (incident_dir / "report.md").read_text(encoding="utf-8")
    for expected in [
        "## Incident Report: %s" % incident_id,
        "**When**: 2025-11-05 14:23",
        "**Severity**: P1",
        "**Impact**: 143 users could not open the dashboard",
        "**Root Cause**: Memory leak loading payments",
        "**Fix**: _À compléter / To be completed_",
        "- [ ] Memory monitoring\n- [ ] Load tests",
        "**Cost**: _À compléter / To be completed_",
        "- Performance audit",
        "### SLA",
        "| resolve |",
        "| Promote the replica | localhost | failed |",
        "| Skip the customer notice | localhost | skipped |",
    ]:
        assert expected in report


def test_ansible_playbook_run(tmp_path, collections_path):
    out = tmp_path / "incidents"
    playbook = tmp_path / "rb-p9-001-drill.yml"
    playbook.write_text(PLAYBOOK, encoding="utf-8")
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(_inventory(tmp_path / "hosts")), "-c", "local", str(playbook)],
        cwd=tmp_path, env=_env(collections_path, tmp_path, out), capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "akig.runbooks.timeline" not in proc.stdout + proc.stderr  # no warning of ours, no dispatch error
    _assert_artifacts(out, "INC-2025-001", "rb-p9-001-drill")


def test_ansible_runner_run(tmp_path, collections_path):
    ansible_runner = pytest.importorskip("ansible_runner")
    out = tmp_path / "incidents"
    private = tmp_path / "runner"
    (private / "project").mkdir(parents=True)
    (private / "project" / "rb-p9-001-drill.yml").write_text(PLAYBOOK, encoding="utf-8")
    _inventory(private / "inventory" / "hosts")
    env = _env(collections_path, tmp_path, out)
    env["AKIG_INCIDENT_ID"] = "INC-RUNNER-7"
    run = ansible_runner.run(
        private_data_dir=str(private), playbook="rb-p9-001-drill.yml", envvars=env, quiet=True, timeout=120,
    )
    output = run.stdout.read()
    assert (run.status, run.rc) == ("successful", 0), output
    assert "akig.runbooks.timeline" not in output
    _assert_artifacts(out, "INC-RUNNER-7", "rb-p9-001-drill")


ADOPT_PLAYBOOK = textwrap.dedent(
    """\
    - name: A runbook that opens its incident during the run
      hosts: localhost
      gather_facts: false
      tasks:
        - name: Probe before the incident exists
          ansible.builtin.command: "true"
          changed_when: false
          tags: [detect]

        - name: Open the incident
          ansible.builtin.set_fact:
            akig_incident:
              id: INC-20261127-1423-P1-abcd
              severity: P1
              declared_start: "2026-11-27T14:23:00Z"

        - name: Mitigate
          ansible.builtin.command: "true"
          changed_when: false
          tags: [mitigate]
    """
)


def test_incident_opened_during_the_run_is_adopted(tmp_path, collections_path):
    """The incident role sets akig_incident mid-run: the timeline moves to that incident,
    with its severity and declared start, and nothing is left under an UNDECLARED id."""
    out = tmp_path / "incidents"
    playbook = tmp_path / "rb-p9-002-adopt.yml"
    playbook.write_text(ADOPT_PLAYBOOK, encoding="utf-8")
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(_inventory(tmp_path / "hosts")), "-c", "local", str(playbook)],
        cwd=tmp_path, env=_env(collections_path, tmp_path, out), capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["INC-20261127-1423-P1-abcd"]
    lines = [json.loads(line) for line in (out / "INC-20261127-1423-P1-abcd" / "timeline.jsonl").read_text().splitlines()]
    starts = [rec for rec in lines if rec.get("event") == "run_start"]
    assert starts[-1]["severity"] == "P1" and starts[-1]["incident_start"].startswith("2026-11-27T14:23:00")
    tasks = [rec for rec in lines if "task" in rec]
    assert [rec["phase"] for rec in tasks][0] == "detect"
    assert all(rec["incident_id"] == "INC-20261127-1423-P1-abcd" for rec in tasks)
