# -*- coding: utf-8 -*-
# Copyright (c) 2025, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: timeline
type: notification
author: AKIG Engineering Team (@akig-sre)
short_description: Record an incident timeline and write the incident report
description:
  - Appends one JSON line per task result (ok, changed, failed, unreachable, skipped) to
    C(<output_dir>/<incident_id>/timeline.jsonl), framed by a C(run_start) line when the first play
    starts and a C(run_end) line with per-host counts when the playbook ends.
  - Each line carries the incident id, runbook, severity, phase, task name, role, host, outcome,
    duration and, when an SLA policy is available, the SLA state at that moment.
  - The phase of a task is its first tag among C(detect), C(analyse) (or C(analyze)), C(mitigate),
    C(resolve), C(communicate); else the C(akig_phase) var set on the task, its block or include;
    else the phase of the previous task; else C(unknown).
  - At the end of the run writes C(<output_dir>/<incident_id>/report.md), the AKIG incident report
    (When, Severity, Impact, Root Cause, Fix, Prevention, Cost, Next steps) with the SLA verdict,
    a per-phase summary and the timeline table. Impact, Root Cause, Fix, Prevention, Cost and
    Next steps come from the C(akig_report) fact a runbook sets with M(ansible.builtin.set_fact)
    (keys C(impact), C(root_cause), C(fix), C(prevention) (list), C(cost), C(next_steps) (list));
    missing ones are marked as to be completed.
  - The timeline never contains task arguments, module results, invocation data, environment
    values or variable values. For a failed task without C(no_log), a one-line message of at most
    300 characters is kept; for a C(no_log) task nothing of the result is kept and the line is
    marked C(censored). The C(akig_report) fact of a set_fact result without C(no_log) is the only
    result content read.
  - Task names are written as templated by Ansible. Task names must therefore never contain
    secrets.
  - Works the same under C(ansible-playbook) and C(ansible-runner); it writes files only, never
    to stdout. Write errors are reported once as a warning and never fail the play.
requirements:
  - Enable it with C(callbacks_enabled = akig.runbooks.timeline) in the C([defaults]) section of
    C(ansible.cfg), or C(ANSIBLE_CALLBACKS_ENABLED=akig.runbooks.timeline).
  - A writable O(output_dir) on the controller.
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
  incident_id:
    description:
      - Incident identifier, used as directory name (characters other than letters, digits,
        C(.), C(_) and C(-) are replaced by C(_)).
      - When not set, C(akig_incident.id) from the play variables or extra vars is used; when
        that is not set either, C(UNDECLARED-<runbook>-<run start>).
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
      - SLA elapsed and remaining times are counted from it.
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
"""

import getpass
import json
import os
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, Optional

from ansible.plugins.callback import CallbackBase
from ansible.template import Templar

from ansible_collections.akig.runbooks.plugins.module_utils.timeline import (
    build_run_end,
    build_run_start,
    build_task_record,
    default_incident_id,
    normalize_severity,
    parse_timestamp,
    render_report,
    resolve_phase,
    runbook_from_path,
    sanitize_incident_id,
    sanitize_report_fields,
    seconds_between,
    sla_snapshot,
)

SET_FACT_ACTIONS = frozenset(("set_fact", "ansible.builtin.set_fact", "ansible.legacy.set_fact"))
STAT_KEYS = (("ok", "ok"), ("changed", "changed"), ("failed", "failures"),
             ("unreachable", "unreachable"), ("skipped", "skipped"))


def _default_sla_fn() -> Optional[Callable[..., Any]]:
    try:
        from ansible_collections.akig.runbooks.plugins.module_utils.sla import sla_status
    except ImportError:
        return None
    return sla_status


class FileWriter:
    """Appends lines and replaces whole files, creating directories as needed."""

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


class CallbackModule(CallbackBase):
    """Incident timeline (JSON lines) and incident report for AKIG runbooks."""

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
        self._started = False
        self._playbook_path: Optional[str] = None
        self._run_start: Optional[datetime] = None
        self._incident_id = ""
        self._id_generated = False
        self._runbook = ""
        self._severity: Optional[str] = None
        self._incident_start: Optional[datetime] = None
        self._dir = ""
        self._phases: dict[str, str] = {}
        self._last_phase: Optional[str] = None
        self._task_starts: dict[str, datetime] = {}
        self._host_starts: dict[tuple[str, str], datetime] = {}
        self._records: list[dict[str, Any]] = []
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

    def _start_run(self, play: Any = None) -> None:
        now = self._clock()
        self._started = True
        self._run_start = self._run_start or now
        incident = self._incident_vars(play) if play is not None else {}

        self._runbook = (self._option("runbook") or runbook_from_path(self._playbook_path) or "adhoc")
        self._severity = normalize_severity(self._option("severity") or incident.get("severity"))
        self._incident_id = (
            sanitize_incident_id(self._option("incident_id"))
            or sanitize_incident_id(incident.get("id"))
            or ""
        )
        self._id_generated = not self._incident_id
        self._incident_id = self._incident_id or default_incident_id(self._runbook, self._run_start)
        declared = self._option("incident_start") or incident.get("declared_start")
        self._incident_start = parse_timestamp(declared)
        if declared and self._incident_start is None:
            self._display.warning("akig.runbooks.timeline: incident_start %r is not an ISO 8601 time; "
                                  "using the run start instead" % str(declared)[:64])
        self._incident_start = self._incident_start or self._run_start
        self._dir = os.path.join(os.path.abspath(self._option("output_dir") or "./artifacts/incidents"),
                                 self._incident_id)
        try:
            user: Optional[str] = getpass.getuser()
        except Exception:
            user = None
        self._emit(build_run_start(self._incident_id, self._runbook, self._severity,
                                   self._incident_start, self._run_start, user))

    # -- output ------------------------------------------------------------

    def _io(self, method: str, path: str, text: str) -> None:
        try:
            getattr(self._writer, method)(path, text)
        except OSError as exc:
            if not self._io_warned:
                self._io_warned = True
                self._display.warning("akig.runbooks.timeline: cannot write %s (%s); the incident timeline "
                                      "for this run is incomplete" % (path, exc.strerror or exc))

    def _emit(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
        self._io("append", os.path.join(self._dir, "timeline.jsonl"), line)

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
        self._task_starts[str(getattr(task, "_uuid", id(task)))] = self._clock()
        self._phase_of(task)

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
            facts = data.get("ansible_facts")
            if isinstance(facts, Mapping) and "akig_report" in facts:
                self._report_fields.update(sanitize_report_fields(facts["akig_report"]))
            if isinstance(facts, Mapping) and isinstance(facts.get("akig_incident"), Mapping):
                self._adopt_incident(facts["akig_incident"])

    def _adopt_incident(self, incident: Mapping[str, Any]) -> None:
        """The incident role opened or joined an incident during the run: when the run started
        without one (no env, no vars), move the timeline to that incident and take its severity
        and declared start, so the SLA clock counts from the declared start."""
        if not self._id_generated:
            return
        new_id = sanitize_incident_id(incident.get("id"))
        if not new_id:
            return
        self._id_generated = False
        old_dir = self._dir
        self._incident_id = new_id
        self._severity = normalize_severity(incident.get("severity")) or self._severity
        declared = parse_timestamp(incident.get("declared_start"))
        self._incident_start = declared or self._incident_start
        self._dir = os.path.join(os.path.dirname(old_dir), new_id)
        try:
            user: Optional[str] = getpass.getuser()
        except Exception:
            user = None
        self._emit(build_run_start(self._incident_id, self._runbook, self._severity,
                                   self._incident_start, self._run_start, user))
        for record in self._records:
            record.update(incident_id=new_id, severity=self._severity)
            self._emit(record)
        if isinstance(self._writer, FileWriter):
            try:
                os.remove(os.path.join(old_dir, "timeline.jsonl"))
                os.rmdir(old_dir)
            except OSError:
                pass

    # -- Ansible events ----------------------------------------------------

    def v2_playbook_on_start(self, playbook: Any) -> None:
        self._playbook_path = getattr(playbook, "_file_name", None)
        self._run_start = self._clock()

    def v2_playbook_on_play_start(self, play: Any) -> None:
        if not self._started:
            self._start_run(play)

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
        counts = {}
        for host in sorted(getattr(stats, "processed", {}) or {}):
            summary = stats.summarize(host)
            counts[host] = {key: int(summary.get(source, 0)) for key, source in STAT_KEYS}
        sla = self._sla(now, with_deadline=True)
        self._emit(build_run_end(now, self._incident_id, self._runbook, counts,
                                 seconds_between(self._run_start, now), sla))
        if self._option("report") is not False:
            text = render_report(
                incident_id=self._incident_id,
                runbook=self._runbook,
                severity=self._severity,
                incident_start=self._incident_start or now,
                run_end=now,
                records=self._records,
                fields=self._report_fields,
                sla=sla,
            )
            self._io("write", os.path.join(self._dir, "report.md"), text)
