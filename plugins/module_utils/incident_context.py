# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which incident a run opens or joins, and what is known about it (pure).

The ``incident`` role's main entry point calls these through the filters
``akig.runbooks.incident_join_id`` and ``akig.runbooks.incident_context``:

1. :func:`join_id` -- the id to join: the ``incident_id`` input, else the incident
   already recorded earlier in the run (``current_id``), else none (open a new one).
2. the role looks the ticket of that id up (when ticketing is on);
3. :func:`incident_context` -- every field from the inputs, else the ticket (its
   metadata block, then its fields), else the id when it has the generated shape
   ``INC-<yyyymmdd>-<hhmm>-<severity>-<4 hex>``; the checks that refuse an unknown
   severity, a start without timezone and a start in the future; the start in UTC;
   the id of a new incident.

Pure: the controller clock (``now``) and the random suffix of a new id come in as
arguments.  Bad input raises :class:`IncidentContextError` (a ``ValueError``) whose
message says what to do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ansible_collections.akig.runbooks.plugins.module_utils.sla import (
    SlaError,
    format_datetime,
    parse_datetime,
)

__all__ = [
    "INPUT_KEYS",
    "SEVERITIES",
    "IncidentContextError",
    "incident_context",
    "join_id",
]

SEVERITIES = ("P1", "P2", "P3")
# the role's inputs, without their incident_ prefix, plus what the role reads from the run
INPUT_KEYS = (
    "id",
    "severity",
    "title",
    "declared_start",
    "impacted_users",
    "runbook",
    "data_breach",
    "current_id",
    "play_name",
)
LOOKUP_KEYS = ("found", "ticket", "metadata")
# ISO 8601 date and time with seconds, optional fraction, and a mandatory offset or Z
ISO_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:?\d{2})$"
)
# generated ids: INC-<yyyymmdd>-<hhmm of the declared start, UTC>-<severity>-<4 hex>
ID_RE = re.compile(r"^INC-(\d{8})-(\d{4})-(P[123])-[0-9a-f]{4}$")
SUFFIX_RE = re.compile(r"^[0-9a-f]{4}$")
_FRACTION_RE = re.compile(r"\.\d+")
_TRUE_TEXT = ("yes", "on", "1", "true")


class IncidentContextError(ValueError):
    """Input the incident context cannot be worked out from; the message says what to do."""


def _text(value: Any) -> str:
    """A role input as trimmed text; empty for none, empty or false values (Jinja's default('', true))."""
    if value is None or value is False or value == "":
        return ""
    return str(value).strip()


def _truthy(value: Any) -> bool:
    """Ansible's ``bool`` filter: booleans as they are; yes/on/1/true (any case) and 1 are true."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() in _TRUE_TEXT
    return value == 1


def _inputs(inputs: Any) -> dict[str, Any]:
    accepted = ", ".join(INPUT_KEYS)
    if not isinstance(inputs, Mapping):
        raise IncidentContextError(
            f"the incident inputs must be a mapping with the keys {accepted} "
            f"(the role's incident_* inputs), got {type(inputs).__name__}"
        )
    unknown = sorted(str(key) for key in inputs if key not in INPUT_KEYS)
    if unknown:
        raise IncidentContextError(
            f"unknown incident input keys {', '.join(unknown)}; accepted keys: {accepted}"
        )
    return {key: inputs.get(key) for key in INPUT_KEYS}


def _lookup(lookup: Any) -> tuple[bool | None, Mapping[str, Any], Mapping[str, Any]]:
    """(found, ticket, metadata) from the registered incident_ticket lookup (skipped or failed: nothing)."""
    if lookup is None:
        return None, {}, {}
    if not isinstance(lookup, Mapping):
        raise IncidentContextError(
            "the ticket lookup must be the registered result of akig.runbooks.incident_ticket "
            f"(a mapping with {', '.join(LOOKUP_KEYS)}) or none, got {type(lookup).__name__}"
        )
    found = lookup.get("found")
    ticket = lookup.get("ticket") or {}
    metadata = lookup.get("metadata") or {}
    for name, value in (("ticket", ticket), ("metadata", metadata)):
        if not isinstance(value, Mapping):
            raise IncidentContextError(
                f"the ticket lookup's {name} must be a mapping, got {type(value).__name__}; "
                "pass the registered result of akig.runbooks.incident_ticket"
            )
    return (None if found is None else bool(found)), ticket, metadata


def join_id(inputs: Any) -> str:
    """The id of the incident to join: the ``id`` input, else ``current_id``, else '' (open a new one)."""
    values = _inputs(inputs)
    return _text(values["id"]) or _text(values["current_id"])


def _start_text(value: Any) -> str:
    """incident_declared_start as text; a YAML timestamp (a datetime) gets its "T" separator back."""
    if isinstance(value, datetime):
        value = str(value)
    return re.sub(r"^(\d{4}-\d{2}-\d{2}) ", r"\1T", _text(value).upper())


def _id_start(parts: tuple[str, ...] | None) -> str:
    if parts is None:
        return ""
    day, hhmm = parts[0], parts[1]
    return f"{day[0:4]}-{day[4:6]}-{day[6:8]}T{hhmm[0:2]}:{hhmm[2:4]}:00Z"


def incident_context(
    inputs: Any, lookup: Any = None, now: Any = None, suffix: Any = None
) -> dict[str, Any]:
    """The context of the incident this run opens or joins; raises when it cannot be opened or joined.

    ``inputs`` holds the role inputs without their ``incident_`` prefix (see
    :data:`INPUT_KEYS`); ``lookup`` the registered ticket lookup, or none;
    ``now`` the controller clock (timezone-aware ISO 8601); ``suffix`` the 4
    hex digits that end a new incident's id (needed only when opening one).
    """
    values = _inputs(inputs)
    try:
        now_dt = parse_datetime(now, "now")
    except SlaError as exc:
        raise IncidentContextError(
            f"{exc}; the role passes the controller clock read once for the whole incident"
        ) from None
    found, ticket, meta = _lookup(lookup)

    ident = join_id(values)
    joining = bool(ident)
    # no id given, or an id given for which the tracker has no ticket yet: this run opens it
    first_run = not joining or found is False
    match = ID_RE.match(ident)
    id_parts = match.groups() if match else None
    id_start = _id_start(id_parts)
    start_text = _start_text(values["declared_start"])
    ticket_start = meta.get("declared_start") or ticket.get("created_at") or ""

    severity = (
        _text(values["severity"])
        or meta.get("severity")
        or ticket.get("severity")
        or (id_parts[2] if id_parts else "")
    )
    title = _text(values["title"]) or ticket.get("title") or ""
    declared_start = str(
        start_text or ticket_start or id_start or (format_datetime(now_dt) if first_run else "")
    )
    if start_text:
        start_source = "incident_declared_start"
    elif ticket_start:
        start_source = "the ticket"
    elif id_start:
        start_source = "the incident id"
    else:
        start_source = "the controller clock"
    impacted_users = values["impacted_users"]
    if impacted_users is None:
        impacted_users = meta.get("impacted_users")
    runbook = (
        _text(values["runbook"])
        or meta.get("runbook")
        or _text(values["play_name"])
        or "adhoc"
    )
    data_breach = _truthy(values["data_breach"]) or _truthy(meta.get("data_breach", False))

    if severity not in SEVERITIES:
        if joining and not first_run:
            raise IncidentContextError(
                f"Cannot join incident {ident}: its severity is unknown (no ticket found and the id "
                "does not carry it); pass incident_severity (P1, P2 or P3)"
            )
        raise IncidentContextError(
            f"Cannot open incident {ident or 'a new incident'} without a severity: "
            "set incident_severity to P1, P2 or P3"
        )

    not_iso = IncidentContextError(
        f"The declared start {declared_start} (from {start_source}) is not a timezone-aware ISO 8601 "
        "time: give incident_declared_start with seconds and an offset or Z, like 2026-11-27T14:23:00Z "
        "or 2026-11-27T15:23:00+01:00"
    )
    if not declared_start:
        raise IncidentContextError(
            f"Cannot join incident {ident}: its declared start is unknown (no ticket to read it "
            "from and the id does not carry it); pass incident_declared_start like 2026-11-27T14:23:00Z"
        )
    if not ISO_RE.match(declared_start):
        raise not_iso
    try:
        start_dt = parse_datetime(declared_start, "declared start")
        start_s = parse_datetime(_FRACTION_RE.sub("", declared_start, count=1), "declared start")
    except SlaError:
        raise not_iso from None

    # whole seconds: a fraction of a second ahead of the controller clock is not "in the future"
    age_s = (now_dt - start_s).total_seconds()
    if age_s < 0:
        raise IncidentContextError(
            f"The declared start {declared_start} (from {start_source}) is {int(abs(age_s))} s in the "
            f"future (controller clock {format_datetime(now_dt)}); an incident cannot start after it "
            "is declared: check the time and its UTC offset"
        )
    start_utc = format_datetime(start_dt)

    if joining:
        final_id = ident
    else:
        if not isinstance(suffix, str) or not SUFFIX_RE.match(suffix):
            raise IncidentContextError(
                f"opening a new incident needs its id suffix as 4 lowercase hex digits like 3f9a, got "
                f"{suffix!r}; the role passes '%04x' | format(65536 | random)"
            )
        final_id = f"INC-{start_utc[0:10].replace('-', '')}-{start_utc[11:13]}{start_utc[14:16]}-{severity}-{suffix}"

    return {
        "id": final_id,
        "joining": joining,
        "first_run": first_run,
        "severity": severity,
        "title": title or f"{severity} incident ({runbook})",
        "declared_start": declared_start,
        "start_source": start_source,
        "start_utc": start_utc,
        "impacted_users": impacted_users,
        "runbook": str(runbook),
        "data_breach": data_breach,
    }
