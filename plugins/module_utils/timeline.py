# -*- coding: utf-8 -*-
# Copyright (c) 2025, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pure helpers for the ``akig.runbooks.timeline`` callback.

Everything here is side-effect free: no clock, no file system, no Ansible
objects. The callback turns Ansible events into plain values and calls these
functions to resolve phases, build the JSON-lines records of the incident
timeline and render the Markdown incident report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional

PHASES = ("detect", "analyse", "mitigate", "resolve", "communicate")
PHASE_ALIASES = {"analyze": "analyse"}
UNKNOWN_PHASE = "unknown"
OUTCOMES = ("ok", "changed", "failed", "unreachable", "skipped")
SLA_STATES = ("ok", "at_risk", "breached")

TO_BE_COMPLETED = "_À compléter / To be completed_"
MSG_LIMIT = 300
NAME_LIMIT = 500
REPORT_TEXT_LIMIT = 4000
REPORT_LIST_LIMIT = 50
REPORT_KEYS = ("impact", "root_cause", "fix", "prevention", "cost", "next_steps")
REPORT_LIST_KEYS = ("prevention", "next_steps")

SlaFn = Callable[..., Any]

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_SEVERITY = re.compile(r"^\s*[Pp]?\s*([0-9])\s*$")


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
    """Parse an ISO 8601 timestamp (``Z`` accepted) into an aware UTC datetime.

    Naive values are taken as UTC. Returns None when ``value`` is empty or invalid.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text[-1] in "zZ":
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def isoformat_utc(value: datetime) -> str:
    """``2025-11-05T14:23:00.000Z`` (UTC, millisecond precision)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


def default_incident_id(runbook: str, run_start: datetime) -> str:
    """Id used when neither AKIG_INCIDENT_ID nor ``akig_incident.id`` is set."""
    stamp = run_start.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return sanitize_incident_id("UNDECLARED-%s-%s" % (runbook, stamp)) or "UNDECLARED"


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
    incident_id: str,
    runbook: str,
    severity: Optional[str],
    incident_start: datetime,
    run_start: datetime,
    controller_user: Optional[str] = None,
) -> dict[str, Any]:
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
    incident_id: str,
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
    and otherwise reduced to one line of at most ``MSG_LIMIT`` characters.
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
        record["msg"] = sanitize_text(msg, MSG_LIMIT)
    return record


def build_run_end(
    ts: datetime,
    incident_id: str,
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


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def _clean_item(value: Any) -> Optional[str]:
    if value is None or isinstance(value, (Mapping, list, tuple, set)):
        return None
    text = str(value).strip()
    if not text:
        return None
    return text[:REPORT_TEXT_LIMIT]


def sanitize_report_fields(raw: Any) -> dict[str, Any]:
    """Keep only the known ``akig_report`` keys, as text or list of text.

    ``prevention`` and ``next_steps`` are lists (a single string becomes a one
    item list); ``cost`` may be either; the others are text. Anything else is
    dropped.
    """
    if not isinstance(raw, Mapping):
        return {}
    fields: dict[str, Any] = {}
    for key in REPORT_KEYS:
        value = raw.get(key)
        if isinstance(value, (list, tuple)):
            items = [item for item in (_clean_item(v) for v in value[:REPORT_LIST_LIMIT]) if item]
            if items:
                fields[key] = items if key in REPORT_LIST_KEYS or key == "cost" else "; ".join(items)
        else:
            text = _clean_item(value)
            if text:
                fields[key] = [text] if key in REPORT_LIST_KEYS else text
    return fields


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


def _md_cell(value: Any) -> str:
    return sanitize_text(value, NAME_LIMIT).replace("\\", "\\\\").replace("|", "\\|")


def _record_window(record: Mapping[str, Any]) -> Optional[tuple[datetime, datetime]]:
    end = parse_timestamp(record.get("ts"))
    if end is None:
        return None
    return end - timedelta(seconds=float(record.get("duration_s") or 0.0)), end


def task_records(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The per-task lines among timeline records (headers and footers removed)."""
    return [r for r in records if "event" not in r and "outcome" in r]


def summarize_phases(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per phase, in runbook order: wall-clock span, distinct tasks, failures.

    ``failures`` counts failed and unreachable results (ignored ones included).
    """
    summary: dict[str, dict[str, Any]] = {}
    for record in task_records(records):
        phase = record.get("phase") or UNKNOWN_PHASE
        entry = summary.setdefault(phase, {"phase": phase, "start": None, "end": None, "tasks": set(), "failures": 0})
        entry["tasks"].add(record.get("task_id") or record.get("task"))
        if record.get("outcome") in ("failed", "unreachable"):
            entry["failures"] += 1
        window = _record_window(record)
        if window:
            start, end = window
            entry["start"] = start if entry["start"] is None else min(entry["start"], start)
            entry["end"] = end if entry["end"] is None else max(entry["end"], end)
    order = {name: index for index, name in enumerate(PHASES)}
    result = []
    for phase in sorted(summary, key=lambda p: (order.get(p, len(PHASES)), p)):
        entry = summary[phase]
        span = (entry["end"] - entry["start"]).total_seconds() if entry["start"] else 0.0
        result.append({
            "phase": phase,
            "duration_s": round(span, 3),
            "tasks": len(entry["tasks"]),
            "failures": entry["failures"],
        })
    return result


def _when_line(start: datetime, end: datetime) -> str:
    start = start.astimezone(timezone.utc)
    end = end.astimezone(timezone.utc)
    if start.date() == end.date():
        span = "%s-%s UTC" % (start.strftime("%Y-%m-%d %H:%M"), end.strftime("%H:%M"))
    else:
        span = "%s – %s UTC" % (start.strftime("%Y-%m-%d %H:%M"), end.strftime("%Y-%m-%d %H:%M"))
    return "%s (%s total)" % (span, format_duration((end - start).total_seconds()))


def _text_or_todo(value: Any) -> str:
    return value if isinstance(value, str) and value else TO_BE_COMPLETED


def _bullets(values: Any, checkbox: bool = False) -> list[str]:
    if not values:
        return ["- [ ] " + TO_BE_COMPLETED if checkbox else "- " + TO_BE_COMPLETED]
    if isinstance(values, str):
        values = [values]
    prefix = "- [ ] " if checkbox else "- "
    return [prefix + sanitize_text(v, REPORT_TEXT_LIMIT) for v in values]


def _sla_verdict(sla: Optional[Mapping[str, Any]]) -> str:
    if not sla:
        return "_SLA not evaluated (no severity or no SLA policy available)_"
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


def render_report(
    *,
    incident_id: str,
    runbook: str,
    severity: Optional[str],
    incident_start: datetime,
    run_end: datetime,
    records: Iterable[Mapping[str, Any]],
    fields: Optional[Mapping[str, Any]] = None,
    sla: Optional[Mapping[str, Any]] = None,
) -> str:
    """Render the AKIG incident report (Markdown) for one run.

    ``fields`` is the sanitised ``akig_report`` (see ``sanitize_report_fields``);
    missing entries are rendered as ``TO_BE_COMPLETED``. ``records`` are the
    timeline lines written for this run.
    """
    fields = fields or {}
    rows = task_records(records)
    multi_day = len({str(r.get("ts", ""))[:10] for r in rows}) > 1
    lines = [
        "## Incident Report: %s" % incident_id,
        "",
        "**When**: %s" % _when_line(incident_start, run_end),
        "**Severity**: %s" % (severity or TO_BE_COMPLETED),
        "**Runbook**: %s" % runbook,
        "**Impact**: %s" % _text_or_todo(fields.get("impact")),
        "",
        "**Root Cause**: %s" % _text_or_todo(fields.get("root_cause")),
        "**Fix**: %s" % _text_or_todo(fields.get("fix")),
        "",
        "**Prevention**: ",
        *_bullets(fields.get("prevention"), checkbox=True),
        "",
    ]
    cost = fields.get("cost")
    if isinstance(cost, list):
        lines += ["**Cost**: ", *_bullets(cost), ""]
    else:
        lines += ["**Cost**: %s" % _text_or_todo(cost), ""]
    lines += ["**Next steps**: ", *_bullets(fields.get("next_steps")), ""]

    lines += ["### SLA", "", _sla_verdict(sla), ""]

    lines += ["### Phases", "", "| Phase | Duration | Tasks | Failures |", "|---|---|---|---|"]
    phases = summarize_phases(rows)
    for entry in phases:
        lines.append("| %s | %s | %d | %d |" % (
            entry["phase"], format_duration(entry["duration_s"]), entry["tasks"], entry["failures"]))
    if not phases:
        lines.append("| – | – | 0 | 0 |")
    lines.append("")

    lines += ["### Timeline", "", "| Time (UTC) | Phase | Task | Host | Outcome | Duration |", "|---|---|---|---|---|---|"]
    for record in rows:
        ts = parse_timestamp(record.get("ts"))
        when = ts.strftime("%Y-%m-%d %H:%M:%S" if multi_day else "%H:%M:%S") if ts else "?"
        outcome = str(record.get("outcome"))
        if record.get("ignored"):
            outcome += " (ignored)"
        lines.append("| %s | %s | %s | %s | %s | %s |" % (
            when,
            _md_cell(record.get("phase", UNKNOWN_PHASE)),
            _md_cell(record.get("task", "")),
            _md_cell(record.get("host", "")),
            outcome,
            "%.1f s" % float(record.get("duration_s") or 0.0),
        ))
    if not rows:
        lines.append("| – | – | _no task ran_ | – | – | – |")
    lines.append("")
    return "\n".join(lines)
