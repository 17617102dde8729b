# -*- coding: utf-8 -*-
# Copyright (c) 2025, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pure helpers for the ``akig.runbooks.timeline`` callback.

Everything here is side-effect free: no clock, no file system, no Ansible
objects. The callback turns Ansible events into plain values and calls these
functions to resolve phases, build the JSON-lines records of the timeline,
choose where a run's files go and render the Markdown incident report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from ansible_collections.akig.runbooks.plugins.module_utils.timeutil import format_utc, parse_iso8601

PHASES = ("detect", "analyse", "mitigate", "resolve", "communicate")
PHASE_ALIASES = {"analyze": "analyse"}
UNKNOWN_PHASE = "unknown"
OTHER_PHASE = "setup/other"
OUTCOMES = ("ok", "changed", "failed", "unreachable", "skipped")
SLA_STATES = ("ok", "at_risk", "breached")
RUN_STATUSES = ("open", "resolved", "failed")
MILESTONES = (
    ("alert_sent", "Alert sent"),
    ("cause_identified", "Cause identified"),
    ("mitigation_applied", "Mitigation applied"),
    ("service_restored", "Service restored"),
    ("resolution_sent", "Resolution sent"),
)

TO_BE_COMPLETED = "_À compléter / To be completed_"
NO_LOG_TEXT = "details hidden (no_log)"
NONE_MARK = "—"
DETAIL_FILE = "timeline.jsonl"

MSG_LIMIT = 300
NAME_LIMIT = 500
TITLE_LIMIT = 200
TEXT_LIMIT = 1000
ITEM_LIMIT = 300
HOST_LIMIT = 100
FIGURE_NAME_LIMIT = 60
FIGURE_VALUE_LIMIT = 200
LIST_LIMIT = 20
CHANGES_LIMIT = 50
FIGURES_LIMIT = 30
REPORT_KEYS = ("impact", "root_cause", "fix", "prevention", "cost", "next_steps")
REPORT_LIST_KEYS = ("prevention", "next_steps")

SlaFn = Callable[..., Any]

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_SEVERITY = re.compile(r"^\s*[Pp]?\s*([0-9])\s*$")
_REDACTIONS = (
    # credentials in URLs: postgres://user:password@host -> postgres://user:***@host
    (re.compile(r"(://[^:/@\s]+:)[^@\s]+@"), r"\1***@"),
    # JSON web tokens
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"), "***"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 ***"),
    # password=..., token: ..., api_key=...
    (re.compile(r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key)(\s*[=:]\s*)[^\s,;]+"), r"\1\2***"),
)


# --------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------

def normalize_phase(value: Any) -> Optional[str]:
    """Return the canonical phase name for ``value`` or None if it is not one."""
    if not isinstance(value, str):
        return None
    name = value.strip().lower()
    name = PHASE_ALIASES.get(name, name)
    return name if name in PHASES else None


def phase_from_tags(tags: Any) -> Optional[str]:
    """First tag (in the task's own order) naming a phase, or None.

    ``tags`` may be a list or a comma separated string, as Ansible accepts both.
    """
    if isinstance(tags, str):
        tags = tags.split(",")
    if not isinstance(tags, Iterable):
        return None
    for tag in tags:
        phase = normalize_phase(tag)
        if phase:
            return phase
    return None


def resolve_phase(tags: Any, phase_var: Any = None, previous: Optional[str] = None) -> str:
    """Phase of a task: phase tag, else ``akig_phase``, else previous task's, else unknown."""
    return (
        phase_from_tags(tags)
        or normalize_phase(phase_var)
        or normalize_phase(previous)
        or UNKNOWN_PHASE
    )


# --------------------------------------------------------------------------
# Scalars
# --------------------------------------------------------------------------

def parse_timestamp(value: Any) -> Optional[datetime]:
    """Parse an ISO 8601 timestamp (``Z`` accepted) into an aware UTC datetime (module_utils/timeutil.py).

    Naive values are taken as UTC. Returns None when ``value`` is empty or invalid.
    """
    return parse_iso8601(value, naive="utc")


def isoformat_utc(value: datetime) -> str:
    """``2025-11-05T14:23:00.000Z`` (UTC, millisecond precision; a naive value is taken as UTC)."""
    return format_utc(value, "milliseconds")


def seconds_between(start: Optional[datetime], end: datetime) -> float:
    """Non-negative duration in seconds, rounded to the millisecond."""
    if start is None:
        return 0.0
    return round(max((end - start).total_seconds(), 0.0), 3)


def sanitize_incident_id(value: Any) -> Optional[str]:
    """Make an incident id safe as a single directory name, or None if empty."""
    if value is None:
        return None
    text = _UNSAFE_ID_CHARS.sub("_", str(value).strip()).strip("._")
    return text[:128] or None


def run_folder_name(playbook: Optional[str], run_start: datetime) -> str:
    """Folder of a run that is not an incident: ``<UTC stamp>-<playbook name>``.

    ``20261130T142300Z-lab-health``; the name is made safe as a single directory name.
    """
    stamp = run_start.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return sanitize_incident_id("%s-%s" % (stamp, playbook or "adhoc")) or stamp


def normalize_severity(value: Any) -> Optional[str]:
    """``1``, ``"p1"``, ``"P1"`` -> ``"P1"``; other non-empty values kept as text."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    if not text:
        return None
    match = _SEVERITY.match(text)
    return "P%s" % match.group(1) if match else text[:32]


def sanitize_text(value: Any, limit: int) -> str:
    """One line of text: control characters collapsed, truncated to ``limit``."""
    text = _CONTROL_CHARS.sub(" ", str(value)).strip()
    text = re.sub(r" {2,}", " ", text)
    if len(text) > limit:
        text = text[: max(limit - 1, 0)] + "…"
    return text


def redact(text: str) -> str:
    """Mask what looks like a credential: passwords in URLs, JWTs, bearer tokens, ``password=...``."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def clean_text(value: Any, limit: int) -> str:
    """``sanitize_text`` with credentials masked first (so truncation cannot expose half of one)."""
    return sanitize_text(redact(_CONTROL_CHARS.sub(" ", str(value))), limit)


def runbook_from_path(path: Any) -> Optional[str]:
    """``/x/playbooks/rb-p1-003-db-failover.yml`` -> ``rb-p1-003-db-failover``."""
    if not path:
        return None
    name = re.split(r"[\\/]", str(path))[-1]
    stem = re.sub(r"\.ya?ml$", "", name)
    return stem or None


# --------------------------------------------------------------------------
# SLA
# --------------------------------------------------------------------------

def _round_or_none(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return round(float(value), 3)


def sla_snapshot(
    sla_fn: Optional[SlaFn],
    start: Optional[datetime],
    severity: Optional[str],
    now: datetime,
    with_deadline: bool = False,
) -> Optional[dict[str, Any]]:
    """Ask ``sla_fn(start, severity, now)`` and keep only the state and numbers.

    Returns None when there is no SLA function, no severity or start, or when
    the function fails or answers something unexpected. Never raises.
    """
    if sla_fn is None or not severity or start is None:
        return None
    try:
        status = sla_fn(start, severity, now)
    except Exception:  # the SLA policy must never break the timeline
        return None
    if not isinstance(status, Mapping) or status.get("state") not in SLA_STATES:
        return None
    resolve = status.get("resolve")
    resolve = resolve if isinstance(resolve, Mapping) else {}
    snapshot: dict[str, Any] = {
        "state": status["state"],
        "elapsed_s": _round_or_none(status.get("elapsed_s")),
        "remaining_s": _round_or_none(resolve.get("remaining_s")),
    }
    if with_deadline:
        deadline = resolve.get("deadline")
        if isinstance(deadline, datetime):
            deadline = isoformat_utc(deadline)
        snapshot["deadline"] = str(deadline) if deadline is not None else None
    return snapshot


# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------

def build_run_start(
    incident_id: Optional[str],
    runbook: str,
    severity: Optional[str],
    incident_start: datetime,
    run_start: datetime,
    controller_user: Optional[str] = None,
) -> dict[str, Any]:
    """The first line of a run. ``incident_id`` is None while the run is not (yet) an incident."""
    record: dict[str, Any] = {
        "event": "run_start",
        "incident_id": incident_id,
        "runbook": runbook,
        "severity": severity,
        "incident_start": isoformat_utc(incident_start),
        "run_start": isoformat_utc(run_start),
    }
    if controller_user:
        record["controller_user"] = controller_user
    return record


def build_task_record(
    *,
    ts: datetime,
    incident_id: Optional[str],
    runbook: str,
    severity: Optional[str],
    phase: str,
    task: str,
    host: str,
    outcome: str,
    duration_s: float,
    sla: Optional[Mapping[str, Any]],
    role: Optional[str] = None,
    task_id: Optional[str] = None,
    censored: bool = False,
    msg: Any = None,
    ignored: bool = False,
) -> dict[str, Any]:
    """One timeline line for one task result on one host.

    Only names, outcome and timing go in. ``msg`` is dropped when ``censored``
    and otherwise reduced to one line of at most ``MSG_LIMIT`` characters,
    with anything that looks like a credential masked.
    """
    if outcome not in OUTCOMES:
        raise ValueError("outcome must be one of %s, got %r" % (", ".join(OUTCOMES), outcome))
    record: dict[str, Any] = {
        "ts": isoformat_utc(ts),
        "incident_id": incident_id,
        "runbook": runbook,
        "severity": severity,
        "phase": phase,
        "task": sanitize_text(task, NAME_LIMIT),
    }
    if task_id:
        record["task_id"] = str(task_id)
    if role:
        record["role"] = str(role)
    record.update(
        host=str(host),
        outcome=outcome,
        duration_s=round(max(float(duration_s), 0.0), 3),
        sla=dict(sla) if sla is not None else None,
    )
    if ignored:
        record["ignored"] = True
    if censored:
        record["censored"] = True
    elif msg and outcome in ("failed", "unreachable"):
        record["msg"] = clean_text(msg, MSG_LIMIT)
    return record


def build_run_end(
    ts: datetime,
    incident_id: Optional[str],
    runbook: str,
    stats: Mapping[str, Mapping[str, int]],
    duration_s: float,
    sla: Optional[Mapping[str, Any]],
) -> dict[str, Any]:
    return {
        "event": "run_end",
        "ts": isoformat_utc(ts),
        "incident_id": incident_id,
        "runbook": runbook,
        "stats": {host: dict(counts) for host, counts in sorted(stats.items())},
        "duration_s": round(max(float(duration_s), 0.0), 3),
        "sla": dict(sla) if sla is not None else None,
    }


def task_records(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The per-task lines among timeline records (headers and footers removed)."""
    return [r for r in records if "event" not in r and "outcome" in r]


# --------------------------------------------------------------------------
# Report inputs: the run fact (akig_run) and the legacy akig_report fact
# --------------------------------------------------------------------------

def _scalar(value: Any, limit: int) -> Optional[str]:
    """Text of a scalar (str, number), cleaned; None for empty values, mappings and lists."""
    if value is None or isinstance(value, (bool, Mapping, list, tuple, set)):
        return None
    text = clean_text(value, limit)
    return text or None


def _text_list(value: Any, limit: int = ITEM_LIMIT, count: int = LIST_LIMIT) -> list[str]:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return []
    items = [_scalar(v, limit) for v in value]
    return [item for item in items if item][:count]


def _pairs(value: Any, keys: tuple[str, str], limits: tuple[int, int], count: int) -> list[dict[str, str]]:
    if not isinstance(value, (list, tuple)):
        return []
    pairs = []
    for item in value:
        if not isinstance(item, Mapping):
            continue
        first, second = (_scalar(item.get(k), n) for k, n in zip(keys, limits))
        if first and second:
            pairs.append({keys[0]: first, keys[1]: second})
        if len(pairs) >= count:
            break
    return pairs


def sanitize_run(raw: Any) -> dict[str, Any]:
    """Keep only what the report renders of the run fact ``akig_run``, cleaned and bounded.

    Known keys: ``runbook``, ``title``, ``severity``, ``status`` (open, resolved, failed),
    ``check_mode``, ``started``/``ended`` (ISO UTC), ``milestones`` (the five of
    ``MILESTONES``, ISO UTC), ``impact``, ``root_cause``, ``cost`` (text or list),
    ``evidence``/``prevention``/``next_steps`` (lists), ``changes`` ([{host, action}]),
    ``figures`` ([{name, value}]), ``failure`` ({task, host, msg} or null). Everything else
    (``results`` and any other key) is dropped; every text is one line, masked and length-limited.
    """
    if not isinstance(raw, Mapping):
        return {}
    run: dict[str, Any] = {}
    for key, limit in (("runbook", 128), ("title", TITLE_LIMIT), ("impact", TEXT_LIMIT),
                       ("root_cause", TEXT_LIMIT)):
        text = _scalar(raw.get(key), limit)
        if text:
            run[key] = text
    severity = normalize_severity(raw.get("severity"))
    if severity:
        run["severity"] = severity
    if raw.get("status") in RUN_STATUSES:
        run["status"] = raw["status"]
    if raw.get("check_mode") is True:
        run["check_mode"] = True
    for key in ("started", "ended"):
        stamp = parse_timestamp(raw.get(key))
        if stamp:
            run[key] = stamp
    milestones = raw.get("milestones")
    if isinstance(milestones, Mapping):
        found = {name: parse_timestamp(milestones.get(name)) for name, _label in MILESTONES}
        found = {name: stamp for name, stamp in found.items() if stamp}
        if found:
            run["milestones"] = found
    cost = raw.get("cost")
    if isinstance(cost, (list, tuple)):
        if _text_list(cost):
            run["cost"] = _text_list(cost)
    elif _scalar(cost, TEXT_LIMIT):
        run["cost"] = _scalar(cost, TEXT_LIMIT)
    for key in ("evidence", "prevention", "next_steps"):
        items = _text_list(raw.get(key))
        if items:
            run[key] = items
    changes = _pairs(raw.get("changes"), ("host", "action"), (HOST_LIMIT, ITEM_LIMIT), CHANGES_LIMIT)
    if changes:
        run["changes"] = changes
    figures = _pairs(raw.get("figures"), ("name", "value"), (FIGURE_NAME_LIMIT, FIGURE_VALUE_LIMIT), FIGURES_LIMIT)
    if figures:
        run["figures"] = figures
    failure = raw.get("failure")
    if isinstance(failure, Mapping):
        run["failure"] = {
            "task": _scalar(failure.get("task"), ITEM_LIMIT) or "an unnamed task",
            "host": _scalar(failure.get("host"), HOST_LIMIT),
            "msg": _scalar(failure.get("msg"), MSG_LIMIT),
        }
    return run


def sanitize_report_fields(raw: Any) -> dict[str, Any]:
    """Keep only the known keys of the legacy ``akig_report`` fact, as text or list of text.

    ``prevention`` and ``next_steps`` are lists (a single string becomes a one
    item list); ``cost`` may be either; the others are text (a list is joined
    with ``; ``). Anything else is dropped.
    """
    if not isinstance(raw, Mapping):
        return {}
    fields: dict[str, Any] = {}
    for key in REPORT_KEYS:
        value = raw.get(key)
        if isinstance(value, (list, tuple)):
            items = _text_list(value)
            if items:
                fields[key] = items if key in REPORT_LIST_KEYS or key == "cost" else "; ".join(items)
        else:
            text = _scalar(value, TEXT_LIMIT)
            if text:
                fields[key] = [text] if key in REPORT_LIST_KEYS else text
    return fields


# --------------------------------------------------------------------------
# Phase durations: a partition of the run's wall time
# --------------------------------------------------------------------------

def _report_phase(phase: Any) -> str:
    return normalize_phase(phase) or OTHER_PHASE


def _ms(start: datetime, instant: datetime) -> int:
    return int(round((instant - start).total_seconds() * 1000))


def partition_phases(
    run_start: datetime,
    run_end: datetime,
    task_starts: Iterable[tuple[datetime, str]],
    activity_end: Optional[datetime] = None,
) -> dict[str, int]:
    """Milliseconds of the run per phase; the values add up to the run's wall time exactly.

    Each instant of ``[run_start, run_end]`` belongs to the phase of the task that started
    most recently (``task_starts``: start time and phase of every task start, handlers and
    ``serial`` batches included). The time before the first task start and after
    ``activity_end`` (the last task result) belongs to ``OTHER_PHASE``, as does the time of
    tasks without a runbook phase. Times outside the run are clamped to it.
    """
    total = max(_ms(run_start, run_end), 0)
    marks = sorted(
        ((min(max(_ms(run_start, when), 0), total), _report_phase(phase)) for when, phase in task_starts),
        key=lambda mark: mark[0],
    )
    parts: dict[str, int] = {}

    def add(phase: str, span: int) -> None:
        parts[phase] = parts.get(phase, 0) + span

    if not marks:
        add(OTHER_PHASE, total)
        return parts
    add(OTHER_PHASE, marks[0][0])
    for (when, phase), (next_when, _next) in zip(marks, marks[1:]):
        add(phase, next_when - when)
    last_when, last_phase = marks[-1]
    end = total if activity_end is None else min(max(_ms(run_start, activity_end), last_when), total)
    add(last_phase, end - last_when)
    add(OTHER_PHASE, total - end)
    return parts


def apportion(values: Sequence[int], unit: int = 100) -> list[int]:
    """Round each of ``values`` to ``unit`` so that the rounded values add up to the rounded sum.

    Largest-remainder rounding: ``apportion([1049, 1049, 1049, 2], 100)`` gives ``[11, 10, 10, 0]``
    tenths of a second for 3.149 s; each value moves by less than one ``unit``.
    """
    total = sum(values)
    target = (total + unit // 2) // unit
    floors = [value // unit for value in values]
    missing = target - sum(floors)
    order = sorted(range(len(values)), key=lambda i: (-(values[i] % unit), i))
    for index in order[:max(missing, 0)]:
        floors[index] += 1
    return floors


def format_tenths(tenths: int) -> str:
    """``123`` -> ``12.3 s``; ``3723`` -> ``6 min 12.3 s``; ``37230`` -> ``1 h 02 min 03.0 s``."""
    tenths = max(int(tenths), 0)
    seconds, tenth = divmod(tenths, 10)
    if seconds < 60:
        return "%d.%d s" % (seconds, tenth)
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return "%d min %02d.%d s" % (minutes, seconds, tenth)
    hours, minutes = divmod(minutes, 60)
    return "%d h %02d min %02d.%d s" % (hours, minutes, seconds, tenth)


def phase_rows(
    run_start: datetime,
    run_end: datetime,
    task_starts: Iterable[tuple[datetime, str]],
    records: Iterable[Mapping[str, Any]] = (),
) -> tuple[list[dict[str, Any]], int]:
    """Rows of the report's phase table, in runbook order then ``OTHER_PHASE``, and the total.

    Each row: ``phase``, ``tenths`` (time, in tenths of a second, apportioned so that the
    column adds up to the total), ``tasks`` (distinct tasks that reported a result) and
    ``failures`` (failed or unreachable results, ignored ones included).
    """
    rows_list = task_records(records)
    ends = [parse_timestamp(r.get("ts")) for r in rows_list]
    activity_end = max((e for e in ends if e is not None), default=None)
    parts = partition_phases(run_start, run_end, task_starts, activity_end)
    tasks: dict[str, set[Any]] = {}
    failures: dict[str, int] = {}
    for record in rows_list:
        phase = _report_phase(record.get("phase"))
        tasks.setdefault(phase, set()).add(record.get("task_id") or record.get("task"))
        if record.get("outcome") in ("failed", "unreachable"):
            failures[phase] = failures.get(phase, 0) + 1
    order = PHASES + (OTHER_PHASE,)
    shown = [p for p in order if parts.get(p, 0) > 0 or tasks.get(p)]
    tenths = apportion([parts.get(p, 0) for p in shown])
    total = apportion([sum(parts.values())])[0]
    rows = [
        {"phase": phase, "tenths": t, "tasks": len(tasks.get(phase, ())), "failures": failures.get(phase, 0)}
        for phase, t in zip(shown, tenths)
    ]
    return rows, total


# --------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------

def observed_failure(records: Iterable[Mapping[str, Any]], failed_hosts: Iterable[str]) -> Optional[dict[str, Any]]:
    """The failure that stopped the run, as the timeline saw it, or None.

    ``failed_hosts`` are the hosts Ansible counts as failed or unreachable at the end (rescued
    and ignored failures are not counted). For each, its last failed or unreachable result
    that was not ignored; the earliest of those is returned as ``task``, ``host``, ``msg``,
    ``censored``.
    """
    failed = set(failed_hosts)
    last: dict[str, Mapping[str, Any]] = {}
    for record in task_records(records):
        if record.get("host") in failed and record.get("outcome") in ("failed", "unreachable") \
                and not record.get("ignored"):
            last[str(record["host"])] = record
    if not last:
        return None
    first = min(last.values(), key=lambda r: str(r.get("ts", "")))
    return {
        "task": first.get("task") or "an unnamed task",
        "host": first.get("host"),
        "msg": first.get("msg") or ("host unreachable" if first.get("outcome") == "unreachable" else None),
        "censored": bool(first.get("censored")),
    }


def status_line(
    run: Mapping[str, Any],
    observed: Optional[Mapping[str, Any]],
    records: Iterable[Mapping[str, Any]] = (),
) -> str:
    """``**Status: FAILED** — task "X" on host: message``, or the run's status.

    A failure recorded by the runbook (``akig_run.failure``) is named first; else the one
    the timeline observed. The message of a task the timeline saw as ``no_log`` is replaced
    by ``NO_LOG_TEXT``, whatever the runbook recorded.
    """
    failure = run.get("failure")
    if not failure and observed:
        failure = observed
    if failure or run.get("status") == "failed":
        if not failure:
            return "**Status: FAILED** — the runbook recorded no failing task; see %s" % DETAIL_FILE
        task = clean_text(failure.get("task") or "an unnamed task", ITEM_LIMIT)
        hidden_tasks = {r.get("task") for r in task_records(records) if r.get("censored")}
        hidden = bool(failure.get("censored")) or task in hidden_tasks
        msg = NO_LOG_TEXT if hidden else clean_text(failure.get("msg") or "no message", MSG_LIMIT)
        host = failure.get("host")
        where = " on %s" % clean_text(host, HOST_LIMIT) if host else ""
        return '**Status: FAILED** — task "%s"%s: %s' % (task, where, msg)
    status = run.get("status")
    if status == "resolved":
        return "**Status**: resolved"
    if status == "open":
        return "**Status**: open — this run did not resolve the incident"
    return "**Status**: completed without a failed task"


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def format_duration(seconds: float) -> str:
    """``45 s``, ``6 min 12 s``, ``1 h 05 min``."""
    total = int(round(max(seconds, 0.0)))
    if total < 60:
        return "%d s" % total
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return "%d min %02d s" % (minutes, secs) if secs else "%d min" % minutes
    hours, minutes = divmod(minutes, 60)
    return "%d h %02d min" % (hours, minutes)


def format_offset(seconds: float) -> str:
    """Time since the start: ``+4.2 s``, ``+6 min 12 s``; ``-1.5 s`` before it."""
    sign = "-" if seconds < 0 else "+"
    seconds = abs(seconds)
    if seconds < 60:
        return "%s%.1f s" % (sign, seconds)
    return sign + format_duration(seconds)


def _md_cell(value: Any, limit: int = NAME_LIMIT) -> str:
    return sanitize_text(value, limit).replace("\\", "\\\\").replace("|", "\\|")


def _when_line(start: datetime, end: datetime) -> str:
    start = start.astimezone(timezone.utc)
    end = end.astimezone(timezone.utc)
    if start.date() == end.date():
        span = "%s-%s UTC" % (start.strftime("%Y-%m-%d %H:%M"), end.strftime("%H:%M"))
    else:
        span = "%s – %s UTC" % (start.strftime("%Y-%m-%d %H:%M"), end.strftime("%Y-%m-%d %H:%M"))
    return "%s (%s total)" % (span, format_duration((end - start).total_seconds()))


def _bullets(values: Any, checkbox: bool = False, placeholder: bool = True) -> list[str]:
    prefix = "- [ ] " if checkbox else "- "
    if isinstance(values, str):
        values = [values]
    if not values:
        return [prefix + TO_BE_COMPLETED] if placeholder else []
    return [prefix + v for v in values]


def _sla_verdict(sla: Optional[Mapping[str, Any]]) -> Optional[str]:
    if not sla:
        return None
    labels = {"ok": "OK (within SLA)", "at_risk": "AT RISK", "breached": "BREACHED"}
    parts = ["**%s**" % labels.get(sla.get("state"), sla.get("state"))]
    if sla.get("elapsed_s") is not None:
        parts.append("elapsed %s" % format_duration(sla["elapsed_s"]))
    if sla.get("remaining_s") is not None:
        remaining = sla["remaining_s"]
        if remaining >= 0:
            parts.append("%s left to resolve" % format_duration(remaining))
        else:
            parts.append("resolution deadline missed by %s" % format_duration(-remaining))
    if sla.get("deadline"):
        parts.append("deadline %s" % sla["deadline"])
    return " — ".join(parts)


def _changes_lines(changes: Sequence[Mapping[str, str]]) -> list[str]:
    """``- db-2: promoted to primary; checkpoint`` — one line per host, in first-seen order."""
    by_host: dict[str, list[str]] = {}
    for change in changes:
        by_host.setdefault(change["host"], []).append(change["action"])
    return ["- %s: %s" % (host, "; ".join(actions)) for host, actions in by_host.items()]


def _milestone_lines(milestones: Mapping[str, datetime], start: datetime) -> list[str]:
    lines = ["| Milestone | Time (UTC) | Since start |", "|---|---|---|"]
    for name, label in MILESTONES:
        when = milestones.get(name)
        if when is None:
            lines.append("| %s | %s | %s |" % (label, NONE_MARK, NONE_MARK))
            continue
        fmt = "%H:%M:%S" if when.date() == start.date() else "%Y-%m-%d %H:%M:%S"
        lines.append("| %s | %s | %s |" % (label, when.strftime(fmt), format_offset((when - start).total_seconds())))
    return lines


def render_report(
    *,
    incident_id: Optional[str],
    run_name: str,
    runbook: str,
    severity: Optional[str],
    run_start: datetime,
    run_end: datetime,
    declared_start: Optional[datetime] = None,
    task_starts: Iterable[tuple[datetime, str]] = (),
    records: Iterable[Mapping[str, Any]] = (),
    run: Optional[Mapping[str, Any]] = None,
    legacy: Optional[Mapping[str, Any]] = None,
    sla: Optional[Mapping[str, Any]] = None,
    observed: Optional[Mapping[str, Any]] = None,
) -> str:
    """Render the AKIG incident report (Markdown) of one run: the runbook document's template, filled.

    ``run`` is the sanitised ``akig_run`` (``sanitize_run``), ``legacy`` the sanitised
    ``akig_report`` (``sanitize_report_fields``), used where ``run`` has nothing.
    ``records`` are the timeline lines of this run, used only for the phase table and the
    status; no task is listed (the detail stays in ``timeline.jsonl``). ``observed`` is the
    failure the timeline saw (``observed_failure``). Without ``incident_id`` the run is not
    an incident: the heading says so and the template's empty fields are left out.
    """
    run = run or {}
    legacy = legacy or {}
    records = list(records)
    incident = bool(incident_id)
    start = declared_start or run.get("started") or run_start
    end = run.get("ended") or run_end
    if end < start:
        end = run_end

    def field(key: str) -> Any:
        return run.get(key) or legacy.get(key)

    def text(key: str, label: str) -> list[str]:
        value = field(key)
        if value:
            return ["**%s**: %s" % (label, value)]
        return ["**%s**: %s" % (label, TO_BE_COMPLETED)] if incident else []

    if incident:
        lines = ["## Incident Report: %s" % incident_id, ""]
    else:
        lines = ["## Run Report: %s" % run_name, "", "_No incident was declared for this run._", ""]
    lines.append(status_line(run, observed, records))
    if run.get("check_mode"):
        lines.append("**Mode**: check mode (dry run): the runbook changed nothing")
    lines.append("**When**: %s" % _when_line(start, end))
    severity = severity or run.get("severity")
    title = run.get("title")
    if incident or severity or title:
        lines.append("**Severity**: %s%s" % (severity or TO_BE_COMPLETED, " - %s" % title if title else ""))
    lines.append("**Runbook**: %s" % (run.get("runbook") or runbook))
    lines += text("impact", "Impact")
    lines.append("")

    root = text("root_cause", "Root Cause")
    evidence = _bullets(run.get("evidence"), placeholder=False)
    if root or evidence:
        lines += (root or ["**Root Cause**:"]) + evidence + [""]

    changes = run.get("changes")
    if changes:
        lines += ["**What the runbook changed**:", *_changes_lines(changes), ""]
    elif legacy.get("fix"):
        lines += ["**What the runbook changed**: %s" % legacy["fix"], ""]
    elif incident:
        lines += ["**What the runbook changed**: _nothing recorded by the runbook_", ""]

    figures = list(run.get("figures") or [])
    verdict = _sla_verdict(sla)
    if verdict and not any(f["name"].upper().startswith("SLA") for f in figures):
        figures.append({"name": "SLA (at run end)", "value": verdict})
    if figures:
        lines += ["### Figures", "", "| Figure | Value |", "|---|---|"]
        lines += ["| %s | %s |" % (_md_cell(f["name"]), _md_cell(f["value"])) for f in figures]
        lines.append("")

    milestones = run.get("milestones") or {}
    if incident or milestones:
        lines += ["### Milestones", "", "Since the start at %s UTC." % start.strftime("%Y-%m-%d %H:%M:%S"), ""]
        lines += _milestone_lines(milestones, start) + [""]

    for key, label, checkbox in (("prevention", "Prevention", True), ("cost", "Cost", False),
                                 ("next_steps", "Next steps", False)):
        value = field(key)
        if isinstance(value, list):
            lines += ["**%s**: " % label, *_bullets(value, checkbox=checkbox), ""]
        elif value:
            lines += ["**%s**: %s" % (label, value), ""]
        elif incident:
            if key == "cost":
                lines += ["**Cost**: %s" % TO_BE_COMPLETED, ""]
            else:
                lines += ["**%s**: " % label, *_bullets(None, checkbox=checkbox), ""]

    rows, total = phase_rows(run_start, run_end, task_starts, records)
    lines += [
        "### Phases",
        "",
        "This run, %s-%s UTC; each moment counts for the phase of the task started last."
        % (run_start.astimezone(timezone.utc).strftime("%H:%M:%S"), run_end.astimezone(timezone.utc).strftime("%H:%M:%S")),
        "",
        "| Phase | Time | Tasks | Failures |",
        "|---|---|---|---|",
    ]
    lines += ["| %s | %s | %d | %d |" % (r["phase"], format_tenths(r["tenths"]), r["tasks"], r["failures"]) for r in rows]
    lines += ["| **run total** | **%s** | %d | %d |" % (
        format_tenths(total), sum(r["tasks"] for r in rows), sum(r["failures"] for r in rows)), ""]
    lines += ["**Detail**: [%s](%s): every task, host, outcome and duration of the run." % (DETAIL_FILE, DETAIL_FILE), ""]
    return "\n".join(lines)
