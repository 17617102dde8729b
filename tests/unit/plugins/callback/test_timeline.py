# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the akig.runbooks.timeline callback, with stand-in Ansible objects,
a frozen clock and an in-memory writer. Real runs are in test_timeline_integration.py."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.akig.runbooks.plugins.callback.timeline import CallbackModule, FileWriter
from ansible_collections.akig.runbooks.plugins.module_utils.timeline import TO_BE_COMPLETED

T0 = datetime(2025, 11, 5, 14, 23, 0, tzinfo=timezone.utc)
SECRET = "CANARY-7f3a9c-do-not-log"
OUT = "/incidents"


# -- stand-ins --------------------------------------------------------------

class FrozenClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class MemoryWriter:
    def __init__(self, taken=()) -> None:
        self.files: dict[str, str] = {}
        self.dirs: set[str] = set(taken)

    def append(self, path: str, line: str) -> None:
        self.files[path] = self.files.get(path, "") + line + "\n"

    def write(self, path: str, text: str) -> None:
        self.files[path] = text

    def claim_dir(self, path: str) -> str:
        number, candidate = 1, path
        while candidate in self.dirs:
            number += 1
            candidate = "%s-%d" % (path, number)
        self.dirs.add(candidate)
        return candidate

    def discard(self, path: str) -> None:
        del self.files[path]
        self.dirs.discard(os.path.dirname(path))

    def lines(self, incident_id: str, root: str = OUT) -> list[dict]:
        return [json.loads(line) for line in self.files[f"{root}/{incident_id}/timeline.jsonl"].splitlines()]


class BrokenWriter:
    calls = 0

    def append(self, path: str, line: str) -> None:
        self.calls += 1
        raise PermissionError(13, "Permission denied")

    write = append


class FakeDisplay:
    verbosity = 0

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, msg: str, *args, **kwargs) -> None:
        self.warnings.append(msg)


class OnlyPhaseVars(dict):
    """Task vars that fail the test if anything but ``akig_phase`` is read."""

    def _guard(self, key):
        if key != "akig_phase":
            raise AssertionError("callback read task var %r" % key)

    def __getitem__(self, key):
        self._guard(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self._guard(key)
        return super().get(key, default)

    def _forbidden(self, *args, **kwargs):
        raise AssertionError("callback enumerated task vars")

    items = values = keys = __iter__ = copy = _forbidden


class FakeRole:
    def __init__(self, name: str) -> None:
        self._name = name

    def get_name(self, include_role_fqcn: bool = True) -> str:
        return self._name


class FakeBlock:
    def __init__(self, vars: dict | None = None, parent=None) -> None:
        self.vars = OnlyPhaseVars(vars or {})
        self._parent = parent


class FakeTask:
    _count = 0

    def __init__(self, name, tags=(), no_log=False, vars=None, role=None, parent=None, action="ansible.builtin.command",
                 args=None):
        FakeTask._count += 1
        self._uuid = "uuid-%d" % FakeTask._count
        self.name = name
        self.tags = list(tags)
        self.no_log = no_log
        self.vars = OnlyPhaseVars(vars or {})
        self._role = FakeRole(role) if role else None
        self._parent = parent
        self.action = action
        self._args = args or {}

    @property
    def args(self):
        raise AssertionError("callback read task args")

    def get_name(self) -> str:
        return "%s : %s" % (self._role.get_name(), self.name) if self._role else self.name


class FakeHost:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_name(self) -> str:
        return self.name


class FakeResult:
    def __init__(self, task: FakeTask, host: FakeHost, result: dict | None = None) -> None:
        self._task = task
        self._host = host
        self._result = result or {}


class FakeStats:
    def __init__(self, counts: dict[str, dict[str, int]]) -> None:
        self.processed = {host: 1 for host in counts}
        self._counts = counts

    def summarize(self, host: str) -> dict[str, int]:
        base = dict(ok=0, failures=0, unreachable=0, changed=0, skipped=0, rescued=0, ignored=0)
        base.update(self._counts[host])
        return base


class FakeVariableManager:
    def __init__(self, all_vars: dict) -> None:
        self._vars = all_vars

    def get_vars(self, play=None, include_hostvars=True, **kwargs):
        return dict(self._vars)


class FakePlay:
    _loader = None

    def __init__(self, all_vars: dict | None = None) -> None:
        self._vm = FakeVariableManager(all_vars or {})

    def get_variable_manager(self):
        return self._vm


class FakePlaybook:
    _file_name = "/srv/runbooks/playbooks/rb-p1-003-db-failover.yml"


def fake_sla(start, severity, now, policy=None):
    elapsed = (now - start).total_seconds()
    return {"state": "breached" if elapsed >= 1800 else "ok", "elapsed_s": elapsed,
            "resolve": {"remaining_s": 1800 - elapsed, "deadline": "2025-11-05T14:53:00Z"}}


# -- fixtures ---------------------------------------------------------------

OPTIONS = {"output_dir": OUT, "runs_dir": None, "incident_id": "INC-1", "runbook": None, "severity": "P1",
           "incident_start": None, "report": True}


def make_callback(sla_fn=fake_sla, writer=None, **options) -> CallbackModule:
    cb = CallbackModule(display=FakeDisplay())
    cb._plugin_options = {**OPTIONS, **options}
    cb._clock = FrozenClock()
    cb._writer = writer if writer is not None else MemoryWriter()
    cb._sla_fn = sla_fn
    return cb


def start(cb: CallbackModule, play: FakePlay | None = None) -> None:
    cb.v2_playbook_on_start(FakePlaybook())
    cb.v2_playbook_on_play_start(play or FakePlay())


def run_task(cb, task, host="db1", outcome="ok", result=None, seconds=1.0, ignore_errors=False):
    host = FakeHost(host)
    cb.v2_playbook_on_task_start(task, False)
    cb.v2_runner_on_start(host, task)
    cb._clock.advance(seconds)
    res = FakeResult(task, host, result or {})
    if outcome in ("ok", "changed"):
        res._result.setdefault("changed", outcome == "changed")
        cb.v2_runner_on_ok(res)
    elif outcome == "failed":
        cb.v2_runner_on_failed(res, ignore_errors=ignore_errors)
    elif outcome == "unreachable":
        cb.v2_runner_on_unreachable(res)
    else:
        cb.v2_runner_on_skipped(res)


def finish(cb, counts=None):
    cb.v2_playbook_on_stats(FakeStats(counts or {"db1": {"ok": 1}}))


def all_output(cb) -> str:
    return "\n".join(cb._writer.files.values())


# -- tests --------------------------------------------------------------------

def test_documentation_declares_options_with_env_and_ini():
    import yaml

    from ansible_collections.akig.runbooks.plugins.callback import timeline

    doc = yaml.safe_load(timeline.DOCUMENTATION)
    assert doc["name"] == "timeline" and doc["type"] == "notification"
    assert set(doc["options"]) == {"output_dir", "runs_dir", "incident_id", "runbook", "severity", "incident_start",
                                   "report"}
    assert doc["options"]["output_dir"]["env"] == [{"name": "AKIG_TIMELINE_DIR"}]
    assert doc["options"]["runs_dir"]["env"] == [{"name": "AKIG_TIMELINE_RUNS_DIR"}]
    assert doc["options"]["runs_dir"]["ini"] == [{"section": "callback_timeline", "key": "runs_dir"}]
    assert doc["options"]["report"]["type"] == "bool"
    for option in doc["options"].values():
        assert option["env"] and option["ini"][0]["section"] == "callback_timeline"
    assert CallbackModule.CALLBACK_NEEDS_ENABLED is True
    assert CallbackModule.CALLBACK_TYPE == "notification"


def test_header_lines_and_footer():
    cb = make_callback(incident_start="2025-11-05T14:00:00Z")
    start(cb)
    run_task(cb, FakeTask("Probe API", tags=["detect"]), seconds=2.5)
    finish(cb, {"db1": {"ok": 1, "changed": 0}, "web1": {"failures": 1, "skipped": 2}})
    lines = cb._writer.lines("INC-1")
    assert [line.get("event") for line in lines] == ["run_start", None, "run_end"]
    header, task, footer = lines
    assert header["incident_id"] == "INC-1" and header["runbook"] == "rb-p1-003-db-failover"
    assert header["severity"] == "P1"
    assert header["incident_start"] == "2025-11-05T14:00:00.000Z"
    assert header["run_start"] == "2025-11-05T14:23:00.000Z"
    assert task == {
        "ts": "2025-11-05T14:23:02.500Z", "incident_id": "INC-1", "runbook": "rb-p1-003-db-failover",
        "severity": "P1", "phase": "detect", "task": "Probe API", "task_id": task["task_id"], "host": "db1",
        "outcome": "ok", "duration_s": 2.5, "sla": {"state": "ok", "elapsed_s": 1382.5, "remaining_s": 417.5},
    }
    assert footer["stats"] == {
        "db1": {"ok": 1, "changed": 0, "failed": 0, "unreachable": 0, "skipped": 0},
        "web1": {"ok": 0, "changed": 0, "failed": 1, "unreachable": 0, "skipped": 2},
    }
    assert footer["duration_s"] == 2.5
    assert footer["sla"] == {"state": "ok", "elapsed_s": 1382.5, "remaining_s": 417.5,
                             "deadline": "2025-11-05T14:53:00Z"}


def test_phases_from_tags_vars_blocks_and_previous_task():
    cb = make_callback()
    start(cb)
    block = FakeBlock({"akig_phase": "mitigate"})
    tasks = [
        FakeTask("Gather", tags=[]),                                   # nothing yet -> unknown
        FakeTask("Check", tags=["pg_failover", "detect"]),             # tag
        FakeTask("Inspect", tags=["analyze"]),                         # alias
        FakeTask("Carry on", tags=["pg_failover"]),                    # previous
        FakeTask("Promote", vars={"akig_phase": "resolve"}),           # task var
        FakeTask("Fence", parent=block),                               # block var
        FakeTask("Tagged wins", tags=["communicate"], vars={"akig_phase": "detect"}),
    ]
    for task in tasks:
        run_task(cb, task)
    phases = [line["phase"] for line in cb._writer.lines("INC-1")[1:]]
    assert phases == ["unknown", "detect", "analyse", "analyse", "resolve", "mitigate", "communicate"]


@pytest.mark.parametrize("outcome", ["ok", "changed", "failed", "unreachable", "skipped"])
def test_outcomes(outcome):
    cb = make_callback()
    start(cb)
    run_task(cb, FakeTask("Step", tags=["resolve"]), outcome=outcome)
    assert cb._writer.lines("INC-1")[-1]["outcome"] == outcome


def test_durations_per_host_and_role():
    cb = make_callback()
    start(cb)
    task = FakeTask("Restart node", tags=["mitigate"], role="akig.runbooks.node_restart")
    hosts = [FakeHost("web1"), FakeHost("web2")]
    cb.v2_playbook_on_task_start(task, False)
    cb.v2_runner_on_start(hosts[0], task)
    cb._clock.advance(1)
    cb.v2_runner_on_start(hosts[1], task)
    cb._clock.advance(3)
    cb.v2_runner_on_ok(FakeResult(task, hosts[1], {"changed": True}))
    cb._clock.advance(2)
    cb.v2_runner_on_ok(FakeResult(task, hosts[0], {"changed": False}))
    web2, web1 = cb._writer.lines("INC-1")[1:]
    assert (web2["host"], web2["duration_s"], web2["outcome"]) == ("web2", 3.0, "changed")
    assert (web1["host"], web1["duration_s"], web1["outcome"]) == ("web1", 6.0, "ok")
    assert web1["role"] == "akig.runbooks.node_restart" and web1["task"] == "Restart node"


def test_result_without_any_start_event_still_recorded():
    cb = make_callback()
    task = FakeTask("Late", tags=["resolve"])
    cb.v2_runner_on_ok(FakeResult(task, FakeHost("db1"), {"changed": False}))
    lines = cb._writer.lines("INC-1")
    assert lines[0]["event"] == "run_start" and lines[1]["duration_s"] == 0.0


@pytest.mark.parametrize("how", ["task", "result", "loop_item"])
def test_no_log_task_is_censored_everywhere(how):
    cb = make_callback()
    start(cb)
    task = FakeTask("Rotate DB credentials", tags=["mitigate"], no_log=(how == "task"),
                    args={"password": SECRET}, action="ansible.builtin.set_fact")
    result = {
        "msg": "failed with " + SECRET,
        "invocation": {"module_args": {"password": SECRET}},
        "ansible_facts": {"akig_report": {"impact": SECRET}},
        "_ansible_no_log": how == "result",
    }
    if how == "loop_item":
        result["results"] = [{"_ansible_no_log": True, "msg": SECRET}]
    run_task(cb, task, outcome="failed", result=result)
    task2 = FakeTask("Rotate again", no_log=(how == "task"), action="ansible.builtin.set_fact")
    run_task(cb, task2, outcome="ok", result=dict(result))
    finish(cb)
    assert SECRET not in all_output(cb)
    failed, ok = cb._writer.lines("INC-1")[1:3]
    assert failed["censored"] is True and "msg" not in failed
    assert ok["censored"] is True
    assert "**Impact**: %s" % TO_BE_COMPLETED in cb._writer.files[f"{OUT}/INC-1/report.md"]


def test_failed_message_is_kept_short_for_non_no_log_tasks():
    cb = make_callback()
    start(cb)
    run_task(cb, FakeTask("Check lag", tags=["detect"]), outcome="failed",
             result={"msg": "Replica lag 900 MB exceeds RPO budget\n" + "x" * 1000, "stdout": "details"},
             ignore_errors=True)
    line = cb._writer.lines("INC-1")[-1]
    assert line["msg"].startswith("Replica lag 900 MB exceeds RPO budget x")
    assert len(line["msg"]) == 300
    assert line["ignored"] is True
    assert "details" not in all_output(cb)


def test_only_task_names_and_no_result_values_are_written():
    cb = make_callback()
    start(cb)
    run_task(cb, FakeTask("Read config", tags=["detect"]), outcome="ok",
             result={"stdout": SECRET, "ansible_facts": {"db_password": SECRET}, "invocation": SECRET})
    finish(cb)
    assert SECRET not in all_output(cb)


def test_write_errors_become_one_warning():
    writer = BrokenWriter()
    cb = make_callback(writer=writer)
    start(cb)
    run_task(cb, FakeTask("Probe", tags=["detect"]))
    run_task(cb, FakeTask("Probe again"), outcome="failed")
    finish(cb)
    assert writer.calls == 5  # header, two tasks, footer, report: every write attempted
    assert len(cb._display.warnings) == 1
    assert "cannot write /incidents/INC-1/timeline.jsonl" in cb._display.warnings[0]


def test_report_sections_and_akig_report_fact():
    cb = make_callback(incident_start="2025-11-05T14:20:00Z")
    start(cb)
    run_task(cb, FakeTask("Probe dashboard", tags=["detect"]), seconds=30)
    run_task(cb, FakeTask("Scale up", tags=["mitigate"]), outcome="changed", seconds=60)
    report = {"impact": "143 users", "root_cause": "N+1 queries", "fix": "Eager loading",
              "prevention": ["Memory monitoring", "Load tests"], "cost": "4h dev", "next_steps": ["Audit"],
              "unexpected": SECRET}
    run_task(cb, FakeTask("Record report", tags=["communicate"], action="ansible.builtin.set_fact"),
             result={"ansible_facts": {"akig_report": report}})
    finish(cb)
    text = cb._writer.files[f"{OUT}/INC-1/report.md"]
    assert text.startswith("## Incident Report: INC-1\n")
    for expected in [
        "**Status**: completed without a failed task",
        "**When**: 2025-11-05 14:20-14:24 UTC (4 min 31 s total)",
        "**Severity**: P1",
        "**Impact**: 143 users",
        "**Root Cause**: N+1 queries",
        "**What the runbook changed**: Eager loading",
        "**Prevention**: \n- [ ] Memory monitoring\n- [ ] Load tests",
        "**Cost**: 4h dev",
        "**Next steps**: \n- Audit",
        "| SLA (at run end) | **OK (within SLA)**",
        "| Alert sent | — | — |",
        "### Phases",
        "| detect | 30.0 s | 1 | 0 |",
        "| mitigate | 1 min 00.0 s | 1 | 0 |",
        "| communicate | 1.0 s | 1 | 0 |",
        "| **run total** | **1 min 31.0 s** | 3 | 0 |",
        "**Detail**: [timeline.jsonl](timeline.jsonl)",
    ]:
        assert expected in text, expected
    assert "Probe dashboard" not in text and "Scale up" not in text
    assert SECRET not in all_output(cb)


def test_akig_report_only_read_from_set_fact():
    cb = make_callback()
    start(cb)
    run_task(cb, FakeTask("Other module", action="ansible.builtin.command"),
             result={"ansible_facts": {"akig_report": {"impact": "not from set_fact"}}})
    finish(cb)
    assert "not from set_fact" not in all_output(cb)


def test_report_can_be_disabled():
    cb = make_callback(report=False)
    start(cb)
    finish(cb)
    assert list(cb._writer.files) == [f"{OUT}/INC-1/timeline.jsonl"]


def test_incident_context_from_play_vars_when_options_unset():
    cb = make_callback(incident_id=None, severity=None, incident_start=None)
    play = FakePlay({"akig_incident": {"id": "INC-2025-042", "severity": "p2",
                                       "declared_start": "2025-11-05T14:00:00Z", "token": SECRET},
                     "db_password": SECRET})
    start(cb, play)
    finish(cb)
    header = cb._writer.lines("INC-2025-042")[0]
    assert header["severity"] == "P2" and header["incident_start"] == "2025-11-05T14:00:00.000Z"
    assert SECRET not in all_output(cb)


def test_options_win_over_play_vars_and_id_is_sanitised():
    cb = make_callback(incident_id="../../etc", runbook="drill", severity="P3")
    start(cb, FakePlay({"akig_incident": {"id": "INC-VAR", "severity": "P1"}}))
    header = cb._writer.lines("etc")[0]
    assert (header["incident_id"], header["runbook"], header["severity"]) == ("etc", "drill", "P3")


def test_without_incident_the_run_goes_to_the_runs_folder_next_to_output_dir():
    cb = make_callback(incident_id=None, severity=None)
    start(cb)
    run_task(cb, FakeTask("Probe", tags=["detect"]))
    finish(cb)
    folder = "/runs/20251105T142300Z-rb-p1-003-db-failover"
    assert sorted(cb._writer.files) == [folder + "/report.md", folder + "/timeline.jsonl"]
    lines = cb._writer.lines("20251105T142300Z-rb-p1-003-db-failover", root="/runs")
    assert lines[0]["incident_id"] is None and lines[0]["severity"] is None and lines[1]["sla"] is None
    report = cb._writer.files[folder + "/report.md"]
    assert report.startswith("## Run Report: 20251105T142300Z-rb-p1-003-db-failover\n")
    assert TO_BE_COMPLETED not in report


def test_runs_dir_option_and_a_second_run_in_the_same_second():
    writer = MemoryWriter(taken={"/var/akig/runs/20251105T142300Z-rb-p1-003-db-failover"})
    cb = make_callback(incident_id=None, runs_dir="/var/akig/runs", writer=writer)
    start(cb)
    finish(cb)
    assert sorted(writer.files) == ["/var/akig/runs/20251105T142300Z-rb-p1-003-db-failover-2/report.md",
                                    "/var/akig/runs/20251105T142300Z-rb-p1-003-db-failover-2/timeline.jsonl"]
    assert "## Run Report: 20251105T142300Z-rb-p1-003-db-failover-2" in writer.files[
        "/var/akig/runs/20251105T142300Z-rb-p1-003-db-failover-2/report.md"]


def test_incident_known_during_the_run_moves_the_lines_and_removes_the_run_folder():
    cb = make_callback(incident_id=None, severity=None)
    start(cb)
    run_task(cb, FakeTask("Probe", tags=["detect"]))
    run_task(cb, FakeTask("Open the incident", action="ansible.builtin.set_fact"),
             result={"ansible_facts": {"akig_incident": {"id": "INC-9", "severity": "P1",
                                                         "declared_start": "2025-11-05T14:20:00Z",
                                                         "ticket_token": SECRET}}})
    run_task(cb, FakeTask("Mitigate", tags=["mitigate"]))
    finish(cb)
    assert sorted(cb._writer.files) == [f"{OUT}/INC-9/report.md", f"{OUT}/INC-9/timeline.jsonl"]
    assert not cb._writer.dirs
    lines = cb._writer.lines("INC-9")
    assert [line.get("event") or line["task"] for line in lines] == [
        "run_start", "Probe", "Open the incident", "Mitigate", "run_end"]
    assert {line["incident_id"] for line in lines} == {"INC-9"}
    assert lines[0]["severity"] == "P1" and lines[0]["incident_start"] == "2025-11-05T14:20:00.000Z"
    assert "**When**: 2025-11-05 14:20-14:23 UTC" in cb._writer.files[f"{OUT}/INC-9/report.md"]
    assert SECRET not in all_output(cb)


def test_incident_from_a_later_play_is_adopted():
    cb = make_callback(incident_id=None, severity=None)
    start(cb)
    run_task(cb, FakeTask("Probe", tags=["detect"]))
    cb.v2_playbook_on_play_start(FakePlay({"akig_incident": {"id": "INC-10", "severity": "P2"}}))
    finish(cb)
    assert sorted(cb._writer.files) == [f"{OUT}/INC-10/report.md", f"{OUT}/INC-10/timeline.jsonl"]


class FailingIncidentWriter(MemoryWriter):
    """Writes under runs/ but not in the incident's folder."""

    def append(self, path: str, line: str) -> None:
        if path.startswith(OUT + "/"):
            raise PermissionError(13, "Permission denied")
        super().append(path, line)

    write = append


def test_run_folder_is_kept_when_the_incident_copy_fails():
    writer = FailingIncidentWriter()
    cb = make_callback(incident_id=None, writer=writer)
    start(cb)
    run_task(cb, FakeTask("Open the incident", action="ansible.builtin.set_fact"),
             result={"ansible_facts": {"akig_incident": {"id": "INC-11"}}})
    finish(cb)
    run_file = "/runs/20251105T142300Z-rb-p1-003-db-failover/timeline.jsonl"
    assert [json.loads(line).get("task") for line in writer.files[run_file].splitlines()] == [
        None, "Open the incident"]
    assert len(cb._display.warnings) == 1 and "cannot write /incidents/INC-11/timeline.jsonl" in cb._display.warnings[0]


def test_run_fact_latest_wins_and_only_documented_keys_reach_the_report():
    cb = make_callback()
    start(cb)
    first = {"runbook": "rb-p1-003-db-failover", "title": "Base de données indisponible", "status": "open",
             "started": "2025-11-05T14:23:00.000Z", "impact": "first impact",
             "milestones": {"alert_sent": "2025-11-05T14:23:01.000Z"}}
    run_task(cb, FakeTask("Start the run", action="ansible.builtin.set_fact"), result={"ansible_facts": {"akig_run": first}})
    last = {**first, "status": "resolved", "impact": "API 503 on 2 backends",
            "milestones": {**first["milestones"], "service_restored": "2025-11-05T14:23:04.200Z"},
            "figures": [{"name": "RTO", "value": "4.2 s"}, {"name": "RPO", "value": "0"}],
            "changes": [{"host": "db-2", "action": "promoted to primary (timeline 3)"}],
            "results": {"pg_failover": {"password": SECRET}}, "secret": SECRET}
    run_task(cb, FakeTask("Close the run", action="ansible.legacy.set_fact", tags=["communicate"]),
             result={"ansible_facts": {"akig_run": last}})
    finish(cb)
    report = cb._writer.files[f"{OUT}/INC-1/report.md"]
    for expected in ["**Status**: resolved", "**Severity**: P1 - Base de données indisponible",
                     "**Impact**: API 503 on 2 backends", "| RTO | 4.2 s |", "| RPO | 0 |",
                     "- db-2: promoted to primary (timeline 3)", "| Alert sent | 14:23:01 | +1.0 s |",
                     "| Service restored | 14:23:04 | +4.2 s |", "| Cause identified | — | — |"]:
        assert expected in report, expected
    assert "first impact" not in report and SECRET not in all_output(cb)


def test_run_fact_from_a_looped_set_fact():
    cb = make_callback()
    start(cb)
    run_task(cb, FakeTask("Record", action="ansible.builtin.set_fact"),
             result={"results": [{"ansible_facts": {"akig_run": {"impact": "from the loop"}}}]})
    finish(cb)
    assert "**Impact**: from the loop" in cb._writer.files[f"{OUT}/INC-1/report.md"]


def test_failed_run_says_so_with_the_failing_task():
    cb = make_callback()
    start(cb)
    run_task(cb, FakeTask("Probe", tags=["detect"]), outcome="failed", result={"msg": "rescued later"}, host="db-1")
    run_task(cb, FakeTask("Promote the replica", tags=["mitigate"]), outcome="failed", host="db-2",
             result={"msg": "lag 900 MB exceeds the budget; url postgres://akig:%s@db-2" % SECRET})
    finish(cb, {"db-1": {"ok": 1}, "db-2": {"failures": 1}})
    report = cb._writer.files[f"{OUT}/INC-1/report.md"]
    assert report.splitlines()[2] == ('**Status: FAILED** — task "Promote the replica" on db-2: '
                                      "lag 900 MB exceeds the budget; url postgres://akig:***@db-2")
    assert SECRET not in all_output(cb)


def test_failed_no_log_task_shows_only_its_name():
    cb = make_callback()
    start(cb)
    run_task(cb, FakeTask("Rotate the JWT secret", no_log=True), outcome="failed", result={"msg": SECRET})
    finish(cb, {"db1": {"failures": 1}})
    report = cb._writer.files[f"{OUT}/INC-1/report.md"]
    assert '**Status: FAILED** — task "Rotate the JWT secret" on db1: details hidden (no_log)' in report
    assert SECRET not in all_output(cb)


def test_phase_times_add_up_to_the_run_wall_time():
    cb = make_callback()
    cb.v2_playbook_on_start(FakePlaybook())
    cb._clock.advance(0.4)
    cb.v2_playbook_on_play_start(FakePlay())
    run_task(cb, FakeTask("Probe", tags=["detect"]), seconds=2)
    cb._clock.advance(3)  # a long include between two tasks still counts for detect
    run_task(cb, FakeTask("Notify", tags=["communicate"]), seconds=0.25)
    run_task(cb, FakeTask("Fail over", tags=["mitigate"]), seconds=4)
    cb._clock.advance(1.35)
    finish(cb)
    report = cb._writer.files[f"{OUT}/INC-1/report.md"]
    for expected in ["| detect | 5.0 s | 1 | 0 |", "| communicate | 0.3 s | 1 | 0 |", "| mitigate | 4.0 s | 1 | 0 |",
                     "| setup/other | 1.7 s | 0 | 0 |", "| **run total** | **11.0 s** | 3 | 0 |"]:
        assert expected in report, expected


def test_invalid_incident_start_warns_and_uses_run_start():
    cb = make_callback(incident_start="last tuesday")
    start(cb)
    assert cb._writer.lines("INC-1")[0]["incident_start"] == "2025-11-05T14:23:00.000Z"
    assert len(cb._display.warnings) == 1


def test_sla_function_errors_and_absence_give_null():
    def broken(*args, **kwargs):
        raise ValueError("now is before start")

    for sla_fn in (broken, None):
        cb = make_callback(sla_fn=sla_fn)
        start(cb)
        run_task(cb, FakeTask("Probe", tags=["detect"]))
        finish(cb)
        lines = cb._writer.lines("INC-1")
        assert lines[1]["sla"] is None and lines[-1]["sla"] is None


def test_sla_state_changes_over_time():
    cb = make_callback(incident_start="2025-11-05T13:53:30Z")
    start(cb)
    run_task(cb, FakeTask("Probe", tags=["detect"]), seconds=10)
    run_task(cb, FakeTask("Fix", tags=["resolve"]), seconds=60)
    states = [line["sla"]["state"] for line in cb._writer.lines("INC-1")[1:]]
    assert states == ["ok", "breached"]


def test_default_sla_fn_is_optional(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_sla(name, *args, **kwargs):
        if name.endswith("module_utils.sla"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sla)
    assert CallbackModule(display=FakeDisplay())._sla_fn is None


def test_file_writer_claims_run_folders_and_discards_them(tmp_path):
    writer = FileWriter()
    first = writer.claim_dir(os.path.join(tmp_path, "runs", "20251105T142300Z-lab-health"))
    second = writer.claim_dir(os.path.join(tmp_path, "runs", "20251105T142300Z-lab-health"))
    assert (os.path.basename(first), os.path.basename(second)) == ("20251105T142300Z-lab-health",
                                                                   "20251105T142300Z-lab-health-2")
    writer.append(os.path.join(first, "timeline.jsonl"), "{}")
    writer.discard(os.path.join(first, "timeline.jsonl"))
    assert sorted(os.listdir(os.path.join(tmp_path, "runs"))) == ["20251105T142300Z-lab-health-2"]
    writer.append(os.path.join(second, "timeline.jsonl"), "{}")
    writer.write(os.path.join(second, "notes.txt"), "kept")
    writer.discard(os.path.join(second, "timeline.jsonl"))
    assert os.listdir(second) == ["notes.txt"]


def test_file_writer(tmp_path):
    writer = FileWriter()
    path = os.path.join(tmp_path, "a", "b", "timeline.jsonl")
    writer.append(path, "one")
    writer.append(path, "two")
    writer.write(os.path.join(tmp_path, "a", "b", "report.md"), "# r")
    writer.write(os.path.join(tmp_path, "a", "b", "report.md"), "# report")
    assert open(path, encoding="utf-8").read() == "one\ntwo\n"
    assert sorted(os.listdir(os.path.join(tmp_path, "a", "b"))) == ["report.md", "timeline.jsonl"]
    assert open(os.path.join(tmp_path, "a", "b", "report.md"), encoding="utf-8").read() == "# report"


def test_incident_vars_are_templated_one_by_one():
    from ansible.template import trust_as_template  # play vars from YAML are trusted templates

    cb = make_callback(incident_id=None, severity=None)
    play = FakePlay({"akig_incident": {"id": trust_as_template("INC-{{ 40 + 2 }}"),
                                       "severity": trust_as_template("{{ undefined_severity }}")}})
    start(cb, play)
    header = cb._writer.lines("INC-42")[0]
    assert header["incident_id"] == "INC-42" and header["severity"] is None


def test_task_name_prefers_the_templated_name_from_task_fields():
    cb = make_callback()
    start(cb)
    task = FakeTask("Restart {{ service }}", tags=["mitigate"], role="node_restart")
    result = FakeResult(task, FakeHost("web1"), {"changed": True})
    result.task_fields = {"name": "Restart api"}
    cb.v2_runner_on_ok(result)
    line = cb._writer.lines("INC-1")[-1]
    assert (line["task"], line["role"]) == ("Restart api", "node_restart")
