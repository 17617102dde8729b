# -*- coding: utf-8 -*-
# Copyright (c) 2025, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: timeline
type: notification
author: AKIG Engineering Team (@akig-sre)
short_description: Record a runbook run's timeline and write its incident report
description:
  - Appends one JSON line per task result (ok, changed, failed, unreachable, skipped) to
    C(timeline.jsonl) in the run's folder, framed by a C(run_start) line when the first play
    starts and a C(run_end) line with per-host counts when the playbook ends.
  - The run's folder is C(<output_dir>/<incident id>) for an incident. A run that is not an
    incident (a health check, a lab fault, a rejoin without an incident) goes to
    C(<runs_dir>/<UTC stamp>-<playbook name>), for example C(artifacts/runs/20261130T142300Z-lab-health).
  - A run is an incident when an incident id is known from O(incident_id), from C(akig_incident.id)
    in the play variables or extra vars, or from an C(akig_incident) fact set during the run with
    M(ansible.builtin.set_fact) (what the C(akig.runbooks.incident) role does). Until one is known the
    lines go to the run's folder under O(runs_dir), so they are on disk as the tasks run; when the
    incident becomes known the lines written so far are appended to the incident's timeline and the
    run's folder is removed (it is kept when that copy could not be written).
  - Each line carries the incident id (null outside an incident), runbook, severity, phase, task
    name, role, host, outcome, duration and, when an SLA policy is available, the SLA state at that
    moment.
  - The phase of a task is its first tag among C(detect), C(analyse) (or C(analyze)), C(mitigate),
    C(resolve), C(communicate); else the C(akig_phase) var set on the task, its block or include;
    else the phase of the previous task; else C(unknown).
  - At the end of the run writes C(report.md) next to the timeline, the runbook document's incident
    report template filled from the run fact C(akig_run) that the runbook frame sets with
    M(ansible.builtin.set_fact) (the latest value seen wins). Status (C(FAILED) with the failing task,
    host and a masked one-line message, or the fixed text "details hidden (no_log)" for a C(no_log) task), When,
    Severity and title, Impact, Root cause and its evidence, what the runbook changed per host,
    the measured figures (RTO, RPO, SLA, escalation tiers, any C(name)/C(value) pair), the milestones
    (alert sent, cause identified, mitigation applied, service restored, resolution sent, each with
    its UTC time and the time since the start, C(—) when missing), Prevention (checkboxes), Cost,
    Next steps, and the time of each phase, which adds up to the run's wall time.
  - The report lists no task; it links to C(timeline.jsonl) for the detail. The older C(akig_report)
    fact (keys C(impact), C(root_cause), C(fix), C(prevention), C(cost), C(next_steps)) is still read
    and fills what C(akig_run) leaves empty. See C(docs/report.md) in the collection.
  - The timeline never contains task arguments, module results, invocation data, environment
    values or variable values. For a failed task without C(no_log), a one-line message of at most
    300 characters is kept, with what looks like a credential masked; for a C(no_log) task nothing of
    the result is kept and the line is marked C(censored). The C(akig_run), C(akig_report) and
    C(akig_incident) facts of a set_fact result without C(no_log) are the only result content read,
    and only their documented keys, as bounded one-line texts.
  - Task names are written as templated by Ansible. Task names must therefore never contain
    secrets.
  - Works the same under C(ansible-playbook) and C(ansible-runner); it writes files only, never
    to stdout. Write errors are reported once as a warning and never fail the play.
requirements:
  - Enable it with C(callbacks_enabled = akig.runbooks.timeline) in the C([defaults]) section of
    C(ansible.cfg), or C(ANSIBLE_CALLBACKS_ENABLED=akig.runbooks.timeline).
  - A writable O(output_dir) and O(runs_dir) on the controller.
options:
  output_dir:
    description:
      - Directory under which a sub-directory per incident id is created.
      - A relative path set in C(ansible.cfg) is relative to that file's directory; otherwise it is
        relative to the working directory of the controller process (the project directory under
        ansible-runner).
    type: path
    default: ./artifacts/incidents
    env:
      - name: AKIG_TIMELINE_DIR
    ini:
      - section: callback_timeline
        key: output_dir
  runs_dir:
    description:
      - Directory for the runs that are not incidents, one sub-directory C(<UTC stamp>-<playbook name>)
        per run (C(-2), C(-3)... is added when two runs start in the same second).
      - When not set, C(runs) next to O(output_dir), for example C(./artifacts/runs).
      - Relative paths are resolved as for O(output_dir).
    type: path
    env:
      - name: AKIG_TIMELINE_RUNS_DIR
    ini:
      - section: callback_timeline
        key: runs_dir
  incident_id:
    description:
      - Incident identifier, used as directory name (characters other than letters, digits,
        C(.), C(_) and C(-) are replaced by C(_)).
      - When not set, C(akig_incident.id) from the play variables or extra vars is used, or the
        C(akig_incident) fact once a task sets it; when none is known by the end of the run, the run
        is not an incident and its files go to O(runs_dir).
    type: str
    env:
      - name: AKIG_INCIDENT_ID
    ini:
      - section: callback_timeline
        key: incident_id
  runbook:
    description:
      - Runbook name written on every line.
      - Defaults to the playbook file name without its extension, e.g. C(rb-p1-003-db-failover).
    type: str
    env:
      - name: AKIG_RUNBOOK
    ini:
      - section: callback_timeline
        key: runbook
  severity:
    description:
      - Incident severity (C(P1), C(P2), C(P3); C(1) and C(p1) are accepted).
      - When not set, C(akig_incident.severity) from the play variables or extra vars is used.
      - Without a severity no SLA state is recorded.
    type: str
    env:
      - name: AKIG_SEVERITY
    ini:
      - section: callback_timeline
        key: severity
  incident_start:
    description:
      - Declared start of the incident, ISO 8601 (C(2025-11-05T14:23:00Z)); naive times are UTC.
      - When not set, C(akig_incident.declared_start) from the play variables or extra vars is used,
        else the start of this run.
      - SLA elapsed and remaining times are counted from it, and the report's When line and
        milestone offsets start there (else at C(akig_run.started), else at the run start).
    type: str
    env:
      - name: AKIG_INCIDENT_START
    ini:
      - section: callback_timeline
        key: incident_start
  report:
    description: Write C(report.md) at the end of the run.
    type: bool
    default: true
    env:
      - name: AKIG_TIMELINE_REPORT
    ini:
      - section: callback_timeline
        key: report
notes:
  - The SLA state comes from the collection's SLA policy (C(plugins/module_utils/sla.py), function
    C(sla_status)) when it is available and a severity is known; otherwise lines carry C(sla=null).
  - C(timeline.jsonl) is appended to, so several runbook runs for the same incident share one
    timeline; C(report.md) describes the latest run.
  - A run stopped from outside (SIGKILL, Ctrl-C) writes no C(run_end) line and no report; the lines
    written until then stay in its folder.
"""

import errno
import getpass
import json
import os
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, Optional

from ansible.plugins.callback import CallbackBase
from ansible.template import Templar

from ansible_collections.akig.runbooks.plugins.module_utils.timeline import (
    DETAIL_FILE,
    build_run_end,
    build_run_start,
    build_task_record,
    normalize_severity,
    observed_failure,
    parse_timestamp,
    render_report,
    resolve_phase,
    run_folder_name,
    runbook_from_path,
    sanitize_incident_id,
    sanitize_report_fields,
    sanitize_run,
    seconds_between,
    sla_snapshot,
)

SET_FACT_ACTIONS = frozenset(("set_fact", "ansible.builtin.set_fact", "ansible.legacy.set_fact"))
STAT_KEYS = (("ok", "ok"), ("changed", "changed"), ("failed", "failures"),
             ("unreachable", "unreachable"), ("skipped", "skipped"))
DEFAULT_OUTPUT_DIR = "./artifacts/incidents"
MAX_RUN_DIRS_PER_SECOND = 100


def _default_sla_fn() -> Optional[Callable[..., Any]]:
    try:
        from ansible_collections.akig.runbooks.plugins.module_utils.sla import sla_status
    except ImportError:
        return None
    return sla_status


class FileWriter:
    """Appends lines, replaces whole files, claims and discards run folders."""

    def append(self, path: str, line: str) -> None:
        os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def write(self, path: str, text: str) -> None:
        os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
        tmp = "%s.tmp.%d" % (path, os.getpid())
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o640)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)

    def claim_dir(self, path: str) -> str:
        """Create ``path`` (else ``path-2``, ``path-3``...) so that no other run writes there."""
        os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
        for number in range(1, MAX_RUN_DIRS_PER_SECOND + 1):
            candidate = path if number == 1 else "%s-%d" % (path, number)
            try:
                os.mkdir(candidate, 0o750)
            except FileExistsError:
                continue
            return candidate
        raise OSError(errno.EEXIST, "%d run folders already exist for this second" % MAX_RUN_DIRS_PER_SECOND)

    def discard(self, path: str) -> None:
        """Remove the file ``path``, then its folder when nothing else is in it."""
        os.remove(path)
        try:
            os.rmdir(os.path.dirname(path))
        except OSError:
            pass  # something else was put in the run's folder: keep it


def _res_task(result: Any) -> Any:
    return getattr(result, "task", None) or result._task


def _res_host(result: Any) -> Any:
    return getattr(result, "host", None) or result._host


def _res_data(result: Any) -> Mapping[str, Any]:
    data = getattr(result, "result", None)
    if data is None:
        data = result._result
    return data if isinstance(data, Mapping) else {}


def _task_name(result: Any, task: Any) -> str:
    """The name as templated for this run, without the ``role :`` prefix; else Ansible's default."""
    fields = getattr(result, "task_fields", None)
    if isinstance(fields, Mapping) and fields.get("name"):
        return str(fields["name"])
    return str(getattr(task, "name", None) or task.get_name())


def _phase_var(task: Any) -> Any:
    """``akig_phase`` from the task's own vars, then its blocks and includes; nothing else."""
    node, depth = task, 0
    while node is not None and depth < 32:
        node_vars = getattr(node, "vars", None)
        if isinstance(node_vars, Mapping) and node_vars.get("akig_phase") is not None:
            return node_vars.get("akig_phase")
        node, depth = getattr(node, "_parent", None), depth + 1
    return None


def _is_censored(task: Any, data: Mapping[str, Any]) -> bool:
    if data.get("_ansible_no_log") or getattr(task, "no_log", False):
        return True
    items = data.get("results")
    return isinstance(items, list) and any(isinstance(i, Mapping) and i.get("_ansible_no_log") for i in items)


def _fact_sets(data: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The ``ansible_facts`` of a set_fact result, and of each loop item, in order."""
    facts = data.get("ansible_facts")
    if isinstance(facts, Mapping):
        yield facts
    items = data.get("results")
    if isinstance(items, list):
        for item in items:
            facts = item.get("ansible_facts") if isinstance(item, Mapping) else None
            if isinstance(facts, Mapping):
                yield facts


def _user() -> Optional[str]:
    try:
        return getpass.getuser()
    except Exception:
        return None


class CallbackModule(CallbackBase):
    """Runbook run timeline (JSON lines) and incident report for AKIG runbooks."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "akig.runbooks.timeline"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display: Any = None, options: Optional[dict[str, Any]] = None) -> None:
        super().__init__(display=display, options=options)
        self._clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
        self._writer: Any = FileWriter()
        self._sla_fn: Optional[Callable[..., Any]] = _default_sla_fn()
        self._io_warned = False
        self._io_failures = 0
        self._started = False
        self._playbook_path: Optional[str] = None
        self._run_start: Optional[datetime] = None
        self._incident_id: Optional[str] = None
        self._run_name = ""
        self._runbook = ""
        self._severity: Optional[str] = None
        self._declared_start: Optional[datetime] = None
        self._incident_start: Optional[datetime] = None
        self._output_dir = ""
        self._dir = ""
        self._phases: dict[str, str] = {}
        self._last_phase: Optional[str] = None
        self._task_starts: dict[str, datetime] = {}
        self._phase_starts: list[tuple[datetime, str]] = []
        self._host_starts: dict[tuple[str, str], datetime] = {}
        self._records: list[dict[str, Any]] = []
        self._run_fact: dict[str, Any] = {}
        self._report_fields: dict[str, Any] = {}

    # -- options and incident context ------------------------------------

    def _option(self, name: str) -> Any:
        try:
            return self.get_option(name)
        except KeyError:
            return None

    @staticmethod
    def _incident_vars(play: Any) -> dict[str, Any]:
        """``id``, ``severity`` and ``declared_start`` of ``akig_incident`` (play vars, extra vars).

        Each of the three is templated on its own; nothing else of the play's variables is kept.
        Returns {} when the play has no variable manager or no ``akig_incident``.
        """
        try:
            manager = play.get_variable_manager()
            all_vars = manager.get_vars(play=play, include_hostvars=False) if manager is not None else {}
            templar = Templar(loader=getattr(play, "_loader", None), variables=all_vars)
            incident = all_vars.get("akig_incident")
            if isinstance(incident, str):
                incident = templar.template(incident)
        except Exception:
            return {}
        if not isinstance(incident, Mapping):
            return {}
        found: dict[str, Any] = {}
        for key in ("id", "severity", "declared_start"):
            if incident.get(key) is None:
                continue
            try:
                value = templar.template(incident[key])
            except Exception:
                continue
            if not (isinstance(value, str) and "{{" in value):
                found[key] = value
        return found

    def _parse_declared(self, declared: Any) -> Optional[datetime]:
        parsed = parse_timestamp(declared)
        if declared and parsed is None:
            self._display.warning("akig.runbooks.timeline: incident_start %r is not an ISO 8601 time; "
                                  "using the run start instead" % str(declared)[:64])
        return parsed

    def _start_run(self, play: Any = None) -> None:
        now = self._clock()
        self._started = True
        self._run_start = self._run_start or now
        incident = self._incident_vars(play) if play is not None else {}

        self._runbook = (self._option("runbook") or runbook_from_path(self._playbook_path) or "adhoc")
        self._severity = normalize_severity(self._option("severity") or incident.get("severity"))
        self._incident_id = sanitize_incident_id(self._option("incident_id")) or sanitize_incident_id(incident.get("id"))
        self._declared_start = self._parse_declared(self._option("incident_start") or incident.get("declared_start"))
        self._incident_start = self._declared_start or self._run_start
        self._output_dir = os.path.abspath(self._option("output_dir") or DEFAULT_OUTPUT_DIR)
        self._run_name = run_folder_name(runbook_from_path(self._playbook_path) or self._runbook, self._run_start)
        if self._incident_id:
            self._dir = os.path.join(self._output_dir, self._incident_id)
        else:
            self._dir = self._claim_run_dir()
        self._emit(build_run_start(self._incident_id, self._runbook, self._severity,
                                   self._incident_start, self._run_start, _user()))

    def _runs_dir(self) -> str:
        configured = self._option("runs_dir")
        if configured:
            return os.path.abspath(configured)
        return os.path.join(os.path.dirname(self._output_dir), "runs")

    def _claim_run_dir(self) -> str:
        """The run's own folder under runs_dir; a second run in the same second gets ``-2``."""
        path = os.path.join(self._runs_dir(), self._run_name)
        claim = getattr(self._writer, "claim_dir", None)
        if claim is None:
            return path
        try:
            path = claim(path)
        except OSError as exc:
            self._warn_io(path, exc)
        self._run_name = os.path.basename(path)
        return path

    # -- output ------------------------------------------------------------

    def _warn_io(self, path: str, exc: OSError) -> None:
        self._io_failures += 1
        if not self._io_warned:
            self._io_warned = True
            self._display.warning("akig.runbooks.timeline: cannot write %s (%s); the timeline and report "
                                  "of this run are incomplete" % (path, exc.strerror or exc))

    def _io(self, method: str, path: str, text: str) -> None:
        try:
            getattr(self._writer, method)(path, text)
        except OSError as exc:
            self._warn_io(path, exc)

    def _emit(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
        self._io("append", os.path.join(self._dir, DETAIL_FILE), line)

    def _sla(self, now: datetime, with_deadline: bool = False) -> Optional[dict[str, Any]]:
        return sla_snapshot(self._sla_fn, self._incident_start, self._severity, now, with_deadline)

    # -- phases and timing -------------------------------------------------

    def _phase_of(self, task: Any) -> str:
        uuid = str(getattr(task, "_uuid", id(task)))
        if uuid not in self._phases:
            phase = resolve_phase(getattr(task, "tags", None), _phase_var(task), self._last_phase)
            self._phases[uuid] = phase
            self._last_phase = phase
        return self._phases[uuid]

    def _task_started(self, task: Any) -> None:
        now = self._clock()
        self._task_starts[str(getattr(task, "_uuid", id(task)))] = now
        self._phase_starts.append((now, self._phase_of(task)))

    def _record_result(self, result: Any, outcome: str, ignore_errors: bool = False) -> None:
        if not self._started:
            self._start_run()
        now = self._clock()
        task, host, data = _res_task(result), _res_host(result), _res_data(result)
        uuid = str(getattr(task, "_uuid", id(task)))
        host_name = host.get_name() if hasattr(host, "get_name") else str(host)
        start = self._host_starts.pop((host_name, uuid), None) or self._task_starts.get(uuid)
        censored = _is_censored(task, data)
        role = getattr(task, "_role", None)
        record = build_task_record(
            ts=now,
            incident_id=self._incident_id,
            runbook=self._runbook,
            severity=self._severity,
            phase=self._phase_of(task),
            task=_task_name(result, task),
            task_id=uuid,
            role=role.get_name() if role is not None else None,
            host=host_name,
            outcome=outcome,
            duration_s=seconds_between(start, now),
            sla=self._sla(now),
            censored=censored,
            msg=None if censored else data.get("msg"),
            ignored=ignore_errors and outcome == "failed",
        )
        self._records.append(record)
        self._emit(record)
        if outcome in ("ok", "changed") and not censored and getattr(task, "action", None) in SET_FACT_ACTIONS:
            for facts in _fact_sets(data):
                self._read_facts(facts)

    def _read_facts(self, facts: Mapping[str, Any]) -> None:
        """The three facts the report is made of; only their documented keys are kept."""
        if isinstance(facts.get("akig_run"), Mapping):
            self._run_fact = sanitize_run(facts["akig_run"])  # the latest run fact wins
        if "akig_report" in facts:
            self._report_fields.update(sanitize_report_fields(facts["akig_report"]))
        if isinstance(facts.get("akig_incident"), Mapping):
            self._adopt_incident(facts["akig_incident"])

    def _adopt_incident(self, incident: Mapping[str, Any]) -> None:
        """An incident became known during a run that started without one (the incident role
        opened or joined it, or a later play carries akig_incident): take its id, severity and
        declared start, append the lines written so far to the incident's timeline, and remove
        the run's folder, unless that copy could not be written."""
        if self._incident_id:
            return
        new_id = sanitize_incident_id(incident.get("id"))
        if not new_id:
            return
        self._incident_id = new_id
        self._severity = normalize_severity(incident.get("severity")) or self._severity
        self._declared_start = parse_timestamp(incident.get("declared_start")) or self._declared_start
        self._incident_start = self._declared_start or self._incident_start
        run_timeline = os.path.join(self._dir, DETAIL_FILE)
        self._dir = os.path.join(self._output_dir, new_id)
        failures = self._io_failures
        self._emit(build_run_start(self._incident_id, self._runbook, self._severity,
                                   self._incident_start or self._clock(), self._run_start or self._clock(), _user()))
        for record in self._records:
            record.update(incident_id=new_id, severity=self._severity)
            self._emit(record)
        discard = getattr(self._writer, "discard", None)
        if self._io_failures == failures and discard is not None:
            try:
                discard(run_timeline)
            except OSError as exc:
                self._warn_io(run_timeline, exc)

    # -- Ansible events ----------------------------------------------------

    def v2_playbook_on_start(self, playbook: Any) -> None:
        self._playbook_path = getattr(playbook, "_file_name", None)
        self._run_start = self._clock()

    def v2_playbook_on_play_start(self, play: Any) -> None:
        if not self._started:
            self._start_run(play)
        elif not self._incident_id:
            self._adopt_incident(self._incident_vars(play))

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._task_started(task)

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self._task_started(task)

    def v2_runner_on_start(self, host: Any, task: Any) -> None:
        host_name = host.get_name() if hasattr(host, "get_name") else str(host)
        self._host_starts[(host_name, str(getattr(task, "_uuid", id(task))))] = self._clock()

    def v2_runner_on_ok(self, result: Any) -> None:
        changed = _res_data(result).get("changed", False)
        self._record_result(result, "changed" if changed else "ok")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._record_result(result, "failed", ignore_errors=ignore_errors)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record_result(result, "unreachable")

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._record_result(result, "skipped")

    def v2_playbook_on_stats(self, stats: Any) -> None:
        if not self._started:
            self._start_run()
        now = self._clock()
        run_start = self._run_start or now
        counts = {}
        for host in sorted(getattr(stats, "processed", {}) or {}):
            summary = stats.summarize(host)
            counts[host] = {key: int(summary.get(source, 0)) for key, source in STAT_KEYS}
        sla = self._sla(now, with_deadline=True)
        self._emit(build_run_end(now, self._incident_id, self._runbook, counts,
                                 seconds_between(run_start, now), sla))
        if self._option("report") is False:
            return
        failed_hosts = [host for host, count in counts.items() if count["failed"] or count["unreachable"]]
        text = render_report(
            incident_id=self._incident_id,
            run_name=self._run_name,
            runbook=self._runbook,
            severity=self._severity,
            run_start=run_start,
            run_end=now,
            declared_start=self._declared_start,
            task_starts=self._phase_starts,
            records=self._records,
            run=self._run_fact,
            legacy=self._report_fields,
            sla=sla,
            observed=observed_failure(self._records, failed_hosts),
        )
        self._io("write", os.path.join(self._dir, "report.md"), text)
