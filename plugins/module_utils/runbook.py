# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run fact of the runbook frame (``akig_run``): one record per run, updated one way.

Every runbook playbook stands on the ``akig.runbooks.runbook`` role, whose entry points keep one
fact on the controller, ``akig_run``. These pure functions are the only code that changes it:

* ``new_run`` -- the record a run starts with (status ``open``);
* ``run_update`` -- merge what a step learned or did (milestones, changes, evidence, figures,
  results of roles that later plays need, the failure that interrupted the run);
* ``run_failure`` -- the failure record of a rescued task, with the message hidden when the task
  was ``no_log``;
* ``run_close`` -- the final record: status, and the measured figures (duration, RTO, SLA verdict
  and margin, escalation tiers reached).

The timeline callback renders the last ``akig_run`` it sees into the incident report.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Optional

STATUSES = ("open", "resolved", "failed")
MILESTONES = ("alert_sent", "cause_identified", "mitigation_applied", "service_restored", "resolution_sent")
TEXT_KEYS = ("title", "impact", "root_cause", "cost")
LIST_KEYS = ("evidence", "prevention", "next_steps")
UPDATE_KEYS = frozenset(
    TEXT_KEYS + LIST_KEYS + ("milestone", "milestones", "changes", "figures", "results", "failure", "status", "lock_held")
)
MESSAGE_LIMIT = 300
NO_LOG_TEXT = "details hidden (no_log)"
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})$")


class RunbookError(ValueError):
    """Bad input to a run-fact function; the message says what is accepted."""


def _parse_time(value: Any, what: str) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise RunbookError("%s must be timezone-aware; got %r" % (what, value))
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    text = str(value or "").strip()
    if not _ISO.match(text):
        raise RunbookError(
            "%s must be an ISO 8601 UTC time like 2026-11-30T14:23:00.123Z or epoch seconds; got %r" % (what, value)
        )
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(value: datetime) -> str:
    """``2026-11-30T14:23:00.123Z`` (UTC, milliseconds)."""
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (value.microsecond // 1000)


def _text(value: Any, what: str, limit: int = 2000) -> str:
    if value is None:
        return ""
    if isinstance(value, (Mapping, list, tuple, set)):
        raise RunbookError("%s must be text; got %s" % (what, type(value).__name__))
    return " ".join(str(value).split())[:limit]


def _text_list(value: Any, what: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (str, int, float)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise RunbookError("%s must be a text or a list of texts; got %s" % (what, type(value).__name__))
    return [t for t in (_text(v, what) for v in value) if t]


def _figures(value: Any) -> list[dict[str, str]]:
    """Figures as ``[{name, value}]``; a mapping ``{name: value}`` is accepted too (order kept)."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = [{"name": k, "value": v} for k, v in value.items()]
    if not isinstance(value, (list, tuple)):
        raise RunbookError("figures must be a list of {name, value} or a mapping name: value; got %s" % type(value).__name__)
    out = []
    for item in value:
        if not isinstance(item, Mapping) or "name" not in item or "value" not in item:
            raise RunbookError("each figure must be a mapping with name and value; got %r" % (item,))
        out.append({"name": _text(item["name"], "figure name", 80), "value": _text(item["value"], "figure value", 300)})
    return out


def _changes(value: Any) -> list[dict[str, str]]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise RunbookError("changes must be a list of {host, action}; got %s" % type(value).__name__)
    out = []
    for item in value:
        if not isinstance(item, Mapping) or not item.get("host") or not item.get("action"):
            raise RunbookError("each change must be a mapping with a host and an action; got %r" % (item,))
        out.append({"host": _text(item["host"], "change host", 200), "action": _text(item["action"], "change action", 500)})
    return out


def _plain(value: Any) -> Any:
    """A plain copy made of dict, list and scalars (Ansible hands filters lazy containers, which
    template their items when read: they are read here, once, and never deep-copied)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)


def _merge(base: Any, extra: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(extra, Mapping):
        merged = dict(base)
        for key, value in extra.items():
            merged[key] = _merge(base.get(key), value) if key in base else value
        return merged
    return extra


def new_run(runbook: Any, now: Any, severity: Any = None, title: Any = None, environment: Any = None,
            check_mode: bool = False) -> dict[str, Any]:
    """The record a run starts with."""
    runbook = _text(runbook, "runbook", 100)
    if not re.match(r"^[a-z0-9][a-z0-9._-]*$", runbook):
        raise RunbookError(
            "runbook must be the runbook id in lower case, like rb-p1-003-db-failover; got %r" % (runbook,)
        )
    started = _parse_time(now, "now")
    return {
        "runbook": runbook,
        "title": _text(title, "title", 200),
        "severity": _text(severity, "severity", 10) or None,
        "environment": _text(environment, "environment", 100) or None,
        "check_mode": bool(check_mode),
        "status": "open",
        "started": iso(started),
        "t0": started.timestamp(),
        "lock_held": False,
        "milestones": {},
        "impact": "",
        "root_cause": "",
        "evidence": [],
        "changes": [],
        "figures": [],
        "prevention": [],
        "cost": "",
        "next_steps": [],
        "results": {},
        "failure": None,
    }


def run_update(run: Any, update: Any, now: Any = None) -> dict[str, Any]:
    """Merge ``update`` into ``run`` and return the new record (the input is not changed).

    Keys of ``update``: ``milestone`` (a name, or a list; stamped with ``now`` the first time only),
    ``milestones`` (name: ISO time), ``title``/``impact``/``root_cause``/``cost`` (replace),
    ``evidence``/``prevention``/``next_steps`` (appended, duplicates dropped), ``changes`` (appended),
    ``figures`` (a figure replaces the one of the same name), ``results`` (deep-merged: role results
    that later plays read), ``failure`` (the first failure is kept), ``status``, ``lock_held``.
    """
    if not isinstance(run, Mapping) or "runbook" not in run:
        raise RunbookError(
            "no runbook run to update: akig_run is not set; the playbook must run the akig.runbooks.runbook "
            "role's open entry point first"
        )
    if update is None:
        update = {}
    if not isinstance(update, Mapping):
        raise RunbookError("the update must be a mapping; got %s" % type(update).__name__)
    update = _plain(update)
    unknown = sorted(set(update) - UPDATE_KEYS)
    if unknown:
        raise RunbookError("unknown key(s) %s in the run update; accepted: %s" % (", ".join(unknown), ", ".join(sorted(UPDATE_KEYS))))
    new = _plain(run)
    milestones = dict(new.get("milestones") or {})
    names = update.get("milestone")
    if names:
        stamp = iso(_parse_time(now, "now"))
        for name in [names] if isinstance(names, str) else list(names):
            if name not in MILESTONES:
                raise RunbookError("unknown milestone %r; accepted: %s" % (name, ", ".join(MILESTONES)))
            milestones.setdefault(name, stamp)
    for name, stamp in (update.get("milestones") or {}).items():
        if name not in MILESTONES:
            raise RunbookError("unknown milestone %r; accepted: %s" % (name, ", ".join(MILESTONES)))
        milestones.setdefault(name, iso(_parse_time(stamp, "milestone %s" % name)))
    new["milestones"] = milestones
    for key in TEXT_KEYS:
        if key in update and update[key] is not None:
            new[key] = _text(update[key], key)
    for key in LIST_KEYS:
        if key in update:
            items = list(new.get(key) or [])
            for text in _text_list(update[key], key):
                if text not in items:
                    items.append(text)
            new[key] = items
    if "changes" in update:
        new["changes"] = list(new.get("changes") or []) + _changes(update["changes"])
    if "figures" in update:
        figures = {f["name"]: f for f in new.get("figures") or []}
        for fig in _figures(update["figures"]):
            figures[fig["name"]] = fig
        new["figures"] = list(figures.values())
    if "results" in update:
        if not isinstance(update["results"], Mapping):
            raise RunbookError("results must be a mapping of role name to its result")
        new["results"] = _merge(new.get("results") or {}, update["results"])
    if update.get("failure") and not new.get("failure"):
        failure = update["failure"]
        if not isinstance(failure, Mapping):
            raise RunbookError("failure must be a mapping with task, host and msg (see run_failure)")
        new["failure"] = {k: _text(failure.get(k), k, MESSAGE_LIMIT) for k in ("task", "host", "msg")}
        new["status"] = "failed"
    if "status" in update and update["status"] is not None:
        if update["status"] not in STATUSES:
            raise RunbookError("status must be one of %s; got %r" % (", ".join(STATUSES), update["status"]))
        if new.get("status") != "failed":  # a failed run stays failed
            new["status"] = update["status"]
    if "lock_held" in update:
        new["lock_held"] = bool(update["lock_held"])
    return new


def run_failure(task: Any, result: Any = None, host: Any = None) -> dict[str, str]:
    """The failure record of a rescued task: task name, host and a one-line message.

    ``result`` is ``ansible_failed_result``. When the failed task was ``no_log`` (the result is
    censored) the message is a fixed text: nothing of a hidden result reaches the report.
    """
    result = result if isinstance(result, Mapping) else {}
    hidden = bool(result.get("censored")) or bool(result.get("_ansible_no_log"))
    if hidden:
        msg = NO_LOG_TEXT
    elif result.get("unreachable"):
        msg = "host unreachable: %s" % (result.get("msg") or "no answer")
    else:
        msg = result.get("msg") or result.get("stderr") or "the task failed without a message"
        if isinstance(msg, (list, tuple)):
            msg = "; ".join(str(m) for m in msg)
    return {
        "task": _text(task or "an unnamed task", "task", 200),
        "host": _text(host or "localhost", "host", 200),
        "msg": _text(msg, "msg", MESSAGE_LIMIT),
    }


def _duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 120:
        return "%.1f s" % seconds
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 120:
        return "%d min %02d s" % (minutes, sec)
    hours, minutes = divmod(minutes, 60)
    return "%d h %02d min" % (hours, minutes)


def run_close(run: Any, now: Any, sla: Optional[Mapping[str, Any]] = None,
              escalation: Optional[Mapping[str, Any]] = None, figures: Any = None) -> dict[str, Any]:
    """The final record: status ``resolved`` unless a failure was recorded, and the measured figures.

    Figures added, in this order: RTO (start -> ``service_restored``), Duration (start -> now),
    SLA (verdict and margin, from ``sla``, the ``sla_status`` filter's result at ``now``),
    Escalation (tiers reached, from the ``escalation_tier`` filter's result), then ``figures``
    from the playbook (which replace measured ones of the same name).
    """
    closed = run_update(run, {})
    end = _parse_time(now, "now")
    start = _parse_time(closed["started"], "started")
    measured: list[dict[str, Any]] = []
    restored = closed["milestones"].get("service_restored")
    if restored:
        measured.append({"name": "RTO", "value": "%.2f s" % (_parse_time(restored, "service_restored") - start).total_seconds()})
    measured.append({"name": "Duration", "value": _duration((end - start).total_seconds())})
    if isinstance(sla, Mapping) and sla.get("state"):
        resolve = sla.get("resolve") or {}
        remaining = resolve.get("remaining_s")
        budget = resolve.get("budget_s")
        if resolve.get("breached"):
            verdict = "breached (resolution budget %s used up)" % _duration(budget or 0)
        else:
            verdict = "%s (%s left of %s)" % (
                "met" if sla.get("state") == "ok" else sla["state"].replace("_", " "),
                _duration(remaining or 0), _duration(budget or 0))
        measured.append({"name": "SLA", "value": "%s %s" % (sla.get("severity") or "", verdict)})
    if isinstance(escalation, Mapping):
        tiers = escalation.get("tiers_due") or []
        measured.append({"name": "Escalation", "value": ", ".join(tiers) if tiers else "none due"})
    closed = run_update(closed, {"figures": measured})
    if figures:
        closed = run_update(closed, {"figures": figures})
    if closed["status"] == "open":
        closed["status"] = "resolved"
    closed["ended"] = iso(end)
    return closed
