# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a tiny phase-tagged runbook on localhost, through ansible-playbook and through
ansible-runner, with the akig.runbooks.timeline callback enabled from the environment."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

COLLECTION_ROOT = Path(__file__).resolve().parents[4]
VENV_BIN = Path(sys.executable).parent
SECRET = "CANARY-91be20-never-in-artifacts"

pytestmark = pytest.mark.process  # every test here runs ansible-playbook or ansible-runner

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
        "**Status**: completed without a failed task",  # the ignored and the rescued failures
        "**What the runbook changed**: _nothing recorded by the runbook_",
        "- [ ] Memory monitoring\n- [ ] Load tests",
        "**Cost**: _À compléter / To be completed_",
        "- Performance audit",
        "| SLA (at run end) | **BREACHED**",
        "| Alert sent | — | — |",
        "| resolve | ",
        "**Detail**: [timeline.jsonl](timeline.jsonl)",
    ]:
        assert expected in report, expected
    for task_name, _phase, _outcome in EXPECTED:  # the task-by-task detail stays in timeline.jsonl
        assert task_name not in report
    _assert_phases_add_up(report)


def _assert_phases_add_up(report: str) -> None:
    """The phase column of report.md adds up to its run total (times in tenths of a second)."""
    table = report.split("| Phase | Time | Tasks | Failures |\n|---|---|---|---|\n")[1].split("\n\n")[0]

    def tenths(cell: str) -> int:
        match = re.fullmatch(r"(?:(\d+) h )?(?:(\d+) min )?(\d+)\.(\d) s", cell.strip().strip("*"))
        assert match, cell
        hours, minutes, seconds, tenth = (int(g or 0) for g in match.groups())
        return ((hours * 60 + minutes) * 60 + seconds) * 10 + tenth

    rows = [line.split("|")[1:3] for line in table.splitlines()]
    assert rows[-1][0].strip() == "**run total**"
    assert sum(tenths(cell) for _name, cell in rows[:-1]) == tenths(rows[-1][1]) > 0


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
    assert list((tmp_path / "runs").iterdir()) == []  # the run's folder was moved to the incident
    lines = [json.loads(line) for line in (out / "INC-20261127-1423-P1-abcd" / "timeline.jsonl").read_text().splitlines()]
    starts = [rec for rec in lines if rec.get("event") == "run_start"]
    assert starts[-1]["severity"] == "P1" and starts[-1]["incident_start"].startswith("2026-11-27T14:23:00")
    tasks = [rec for rec in lines if "task" in rec]
    assert [rec["phase"] for rec in tasks][0] == "detect"
    assert all(rec["incident_id"] == "INC-20261127-1423-P1-abcd" for rec in tasks)


FAILING_PLAYBOOK = textwrap.dedent(
    """\
    - name: A runbook that records its run fact, then fails
      hosts: localhost
      gather_facts: false
      vars:
        akig_incident: {id: INC-FAIL-1, severity: P1}
        __now: "{{ now(utc=true, fmt='%%Y-%%m-%%dT%%H:%%M:%%S.%%fZ') }}"
      tasks:
        - name: Start the run fact
          ansible.builtin.set_fact:
            akig_run:
              runbook: rb-p9-003-failing
              title: Base de donnees indisponible
              status: open
              started: "{{ __now }}"
              milestones: {alert_sent: "{{ __now }}"}
          tags: [detect]

        - name: Record the cause and its evidence
          ansible.builtin.set_fact:
            akig_run: >-
              {{ akig_run | combine({'milestones': {'cause_identified': __now},
                                     'root_cause': 'db-1 postmaster killed',
                                     'evidence': ['db-1: connection refused', 'db-2: lag 0 B'],
                                     'figures': [{'name': 'RPO', 'value': '0'}],
                                     'results': {'token': '%(secret)s'}}, recursive=true) }}
          tags: [analyse]

        - name: Promote the replica
          ansible.builtin.fail:
            msg: "Replica lag exceeds the RPO budget"
          tags: [mitigate]

        - name: Never reached
          ansible.builtin.debug:
            msg: unreachable
    """
    % {"secret": SECRET}
)


def test_failed_run_report_has_the_status_and_the_milestones(tmp_path, collections_path):
    out = tmp_path / "incidents"
    playbook = tmp_path / "rb-p9-003-failing.yml"
    playbook.write_text(FAILING_PLAYBOOK, encoding="utf-8")
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(_inventory(tmp_path / "hosts")), "-c", "local", str(playbook)],
        cwd=tmp_path, env=_env(collections_path, tmp_path, out), capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "akig.runbooks.timeline" not in proc.stdout + proc.stderr
    report = (out / "INC-FAIL-1" / "report.md").read_text(encoding="utf-8")
    lines = report.splitlines()
    assert lines[0] == "## Incident Report: INC-FAIL-1"
    assert lines[2] == '**Status: FAILED** — task "Promote the replica" on localhost: Replica lag exceeds the RPO budget'
    assert "**Severity**: P1 - Base de donnees indisponible" in report
    assert "**Root Cause**: db-1 postmaster killed\n- db-1: connection refused\n- db-2: lag 0 B\n" in report
    assert "| RPO | 0 |" in report
    assert "| Milestone | Time (UTC) | Since start |" in report
    assert re.search(r"^\| Alert sent \| \d\d:\d\d:\d\d \| \+\d+\.\d s \|$", report, re.MULTILINE), report
    assert re.search(r"^\| Cause identified \| \d\d:\d\d:\d\d \| \+\d+\.\d s \|$", report, re.MULTILINE), report
    for missing in ("Mitigation applied", "Service restored", "Resolution sent"):
        assert "| %s | — | — |" % missing in report
    assert "Start the run fact" not in report and "Never reached" not in report
    assert SECRET not in report and SECRET not in (out / "INC-FAIL-1" / "timeline.jsonl").read_text(encoding="utf-8")
    _assert_phases_add_up(report)
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


HEALTH_PLAYBOOK = textwrap.dedent(
    """\
    - name: A health check, not an incident
      hosts: localhost
      gather_facts: false
      tasks:
        - name: Probe every component
          ansible.builtin.command: "true"
          changed_when: false
    """
)


def test_run_without_incident_goes_to_the_runs_folder(tmp_path, collections_path):
    out = tmp_path / "incidents"
    playbook = tmp_path / "lab-health.yml"
    playbook.write_text(HEALTH_PLAYBOOK, encoding="utf-8")
    env = _env(collections_path, tmp_path, out)
    env["AKIG_TIMELINE_RUNS_DIR"] = str(tmp_path / "health-runs")
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(_inventory(tmp_path / "hosts")), "-c", "local", str(playbook)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not out.exists()
    (run_dir,) = (tmp_path / "health-runs").iterdir()
    assert re.fullmatch(r"\d{8}T\d{6}Z-lab-health", run_dir.name)
    assert sorted(p.name for p in run_dir.iterdir()) == ["report.md", "timeline.jsonl"]
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert report.startswith("## Run Report: %s\n" % run_dir.name)
    assert "_À compléter" not in report
    _assert_phases_add_up(report)
