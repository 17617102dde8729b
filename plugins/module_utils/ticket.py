# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Incident tickets in AKIG's tracker (REST API ``/incidents``), idempotent by incident id.

Used by the ``akig.runbooks.incident_ticket`` module.  A ticket carries the
incident id (``incident_id``) it was opened for; :func:`ensure_ticket` reads
the current ticket of an incident, works out what has to change for the
wanted state, and changes it only outside check mode.

Key facts about the incident (declared start, runbook, ...) are written to
the end of the ticket description under a marker line, one ``key: JSON``
line each, and read back by :func:`parse_metadata` -- this is how a later
run that joins the incident recovers them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Callable
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode

from ansible.module_utils.urls import open_url

from ansible_collections.akig.runbooks.plugins.module_utils.redact import Redactor

__all__ = [
    "METADATA_MARKER",
    "STATES",
    "TicketClient",
    "TicketError",
    "TicketInputError",
    "ensure_ticket",
    "parse_metadata",
    "render_description",
    "summarize",
]

STATES = ("present", "resolved", "commented")
SEVERITIES = ("P1", "P2", "P3")
METADATA_MARKER = "-- akig.runbooks incident metadata --"
MAX_ERROR_CHARS = 300

Opener = Callable[..., Any]


class TicketError(Exception):
    """The tracker refused or did not answer; ``status`` is 0 without an HTTP answer."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class TicketInputError(ValueError):
    """Invalid input; the message says what is accepted."""


# --------------------------------------------------------------------------
# Description metadata
# --------------------------------------------------------------------------


def render_description(description: str | None, metadata: Mapping[str, Any] | None) -> str:
    """``description`` followed by the metadata block (keys sorted, values as JSON)."""
    text = (description or "").rstrip()
    if not metadata:
        return text
    for key in metadata:
        if not isinstance(key, str) or not key or ":" in key or "\n" in key:
            raise TicketInputError(
                f"metadata key {key!r} is not usable; use simple names like declared_start"
            )
    lines = [METADATA_MARKER] + [
        f"{key}: {json.dumps(metadata[key], sort_keys=True, ensure_ascii=False)}"
        for key in sorted(metadata)
    ]
    return (text + "\n\n" if text else "") + "\n".join(lines)


def parse_metadata(description: Any) -> dict[str, Any]:
    """The metadata block of a ticket description; {} when there is none."""
    if not isinstance(description, str) or METADATA_MARKER not in description:
        return {}
    block = description.rsplit(METADATA_MARKER, 1)[1]
    found: dict[str, Any] = {}
    for line in block.splitlines():
        key, sep, raw = line.partition(": ")
        if not sep or not key.strip():
            continue
        try:
            found[key.strip()] = json.loads(raw)
        except ValueError:
            found[key.strip()] = raw.strip()
    return found


# --------------------------------------------------------------------------
# HTTP client
# --------------------------------------------------------------------------


class TicketClient:
    """Minimal client of the tracker's ``/incidents`` API (Bearer token)."""

    def __init__(
        self,
        base_url: str,
        api_token: str,
        timeout: float = 5,
        validate_certs: bool = True,
        opener: Opener = open_url,
    ) -> None:
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise TicketInputError(
                f"base_url {base_url!r} must be an http(s) URL like "
                "https://tickets.akig.internal/api/v1"
            )
        if not api_token:
            raise TicketInputError("api_token is empty; set akig_ticket_api_token")
        self.base_url = base_url.rstrip("/")
        self._token = api_token
        self._redact = Redactor([api_token], min_length=4)
        self.timeout = timeout
        self.validate_certs = validate_certs
        self._opener = opener

    def __repr__(self) -> str:
        return f"TicketClient({self.base_url!r}, <token redacted>)"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        what = f"{method} {self.base_url}{path.split('?', 1)[0]}"
        try:
            response = self._opener(
                self.base_url + path,
                data=data,
                headers=headers,
                method=method,
                timeout=self.timeout,
                validate_certs=self.validate_certs,
                follow_redirects="none",
            )
            raw = response.read() or b""
        except HTTPError as exc:
            try:
                raw = exc.read() or b""
            except Exception:  # the body of an error response is best effort
                raw = b""
            raise TicketError(
                self._redact(f"{what} answered {_error_text(int(exc.code), raw)}")[:MAX_ERROR_CHARS],
                int(exc.code),
            ) from None
        except (URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise TicketError(
                self._redact(f"{what} failed: {reason}")[:MAX_ERROR_CHARS]
            ) from None
        try:
            return json.loads(raw.decode("utf-8")) if raw else None
        except ValueError:
            raise TicketError(f"{what} did not answer JSON") from None

    def find(self, incident_id: str) -> dict[str, Any] | None:
        """The ticket opened for ``incident_id`` (the oldest if several), else None."""
        payload = self._call("GET", "/incidents?" + urlencode({"incident_id": incident_id}))
        tickets = payload.get("incidents") if isinstance(payload, Mapping) else None
        if not isinstance(tickets, list):
            raise TicketError("GET /incidents did not answer {incidents: [...]}")
        matching = [
            t for t in tickets if isinstance(t, Mapping) and t.get("incident_id") == incident_id
        ]
        if not matching:
            return None
        return dict(sorted(matching, key=lambda t: str(t.get("created_at") or ""))[0])

    def create(
        self, incident_id: str, title: str, severity: str, description: str
    ) -> dict[str, Any]:
        return self._call(
            "POST",
            "/incidents",
            {
                "incident_id": incident_id,
                "title": title,
                "severity": severity,
                "description": description,
            },
        )

    def update(
        self, ticket_id: str, status: str | None = None, comment: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if status is not None:
            body["status"] = status
        if comment is not None:
            body["comment"] = comment
        return self._call("PATCH", "/incidents/" + quote(ticket_id, safe=""), body)


def _error_text(status: int, raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        payload = json.loads(text) if text else None
    except ValueError:
        payload = None
    if isinstance(payload, Mapping):
        parts = [str(payload[k]) for k in ("error", "message") if payload.get(k)]
        text = ": ".join(parts) or text
    return f"HTTP {status}" + (f" ({text})" if text else "")


# --------------------------------------------------------------------------
# Desired state
# --------------------------------------------------------------------------

_SUMMARY_KEYS = (
    "id",
    "incident_id",
    "status",
    "severity",
    "title",
    "description",
    "created_at",
    "updated_at",
    "resolved_at",
    "comments",
)


def summarize(ticket: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ticket fields a result carries (a copy; unknown fields are dropped)."""
    if ticket is None:
        return None
    return {key: ticket.get(key) for key in _SUMMARY_KEYS}


def _comment_texts(ticket: Mapping[str, Any]) -> list[str]:
    comments = ticket.get("comments") or []
    return [str(c.get("text")) for c in comments if isinstance(c, Mapping)]


def ensure_ticket(
    client: TicketClient,
    *,
    incident_id: str,
    state: str = "present",
    title: str | None = None,
    severity: str | None = None,
    description: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    comment: str | None = None,
    check_mode: bool = False,
) -> dict[str, Any]:
    """Bring the ticket of ``incident_id`` to ``state``; idempotent.

    * ``present``: the ticket exists (created when missing; an existing one is
      returned unchanged, whatever its status).
    * ``commented``: ``comment`` is on the ticket (not added again when a
      comment with the same text is already there).
    * ``resolved``: the ticket's status is ``resolved``; ``comment``, when
      given, is added unless already there.

    Returns ``{changed, found, ticket, ticket_id, metadata, actions, warnings,
    diff}``.  Raises :class:`TicketInputError` for bad input and
    :class:`TicketError` when the tracker fails.
    """
    if state not in STATES:
        raise TicketInputError(f"state {state!r} is not supported; expected one of {', '.join(STATES)}")
    if not isinstance(incident_id, str) or not incident_id.strip():
        raise TicketInputError("incident_id is empty; give the incident id, e.g. INC-20261127-1423-P1-3f9a")
    if severity is not None and severity not in SEVERITIES:
        raise TicketInputError(f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    if state == "commented" and not (comment or "").strip():
        raise TicketInputError("state=commented needs a non-empty comment")
    incident_id = incident_id.strip()
    body = render_description(description, metadata)

    current = client.find(incident_id)
    result: dict[str, Any] = {
        "changed": False,
        "found": current is not None,
        "ticket": summarize(current),
        "ticket_id": current.get("id") if current else None,
        "metadata": parse_metadata(current.get("description")) if current else {},
        "actions": [],
        "warnings": [],
        "diff": {
            "before": {"status": current.get("status"), "comments": len(_comment_texts(current))}
            if current
            else {"status": "absent"},
        },
    }
    actions: list[str] = result["actions"]

    if current is None:
        if state != "present":
            message = (
                f"no ticket exists for incident {incident_id}; open one first with state=present"
            )
            if not check_mode:
                raise TicketInputError(message)
            # in check mode a preceding state=present task did not really create it
            result["warnings"].append(message + " (check mode: assuming it would exist)")
            result["changed"] = True
            actions.append(f"Would {'resolve' if state == 'resolved' else 'comment on'} the ticket of incident {incident_id}")
            result["diff"]["after"] = {"status": "resolved" if state == "resolved" else "open"}
            return result
        missing = [name for name, value in (("title", title), ("severity", severity)) if not value]
        if missing:
            message = (
                f"cannot open a ticket for incident {incident_id}: no ticket exists yet and "
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} needed to open one"
            )
            if not check_mode:
                raise TicketInputError(message)
            result["warnings"].append(message)
        result["changed"] = True
        result["diff"]["after"] = {"status": "open", "comments": 0}
        if check_mode:
            actions.append(f"Would open a {severity or '?'} ticket '{title or '?'}' for incident {incident_id}")
            return result
        created = client.create(incident_id, str(title), str(severity), body)
        result["ticket"] = summarize(created)
        result["ticket_id"] = created.get("id")
        result["metadata"] = parse_metadata(created.get("description"))
        actions.append(f"Opened {severity} ticket {created.get('id')} for incident {incident_id}")
        return result

    ticket_id = str(current.get("id"))
    status = current.get("status")
    if state == "present":
        actions.append(f"Ticket {ticket_id} for incident {incident_id} already exists ({status})")
        result["diff"]["after"] = dict(result["diff"]["before"])
        return result

    want_status = "resolved" if state == "resolved" and status != "resolved" else None
    want_comment = comment if comment and comment not in _comment_texts(current) else None
    if want_status is None and want_comment is None:
        actions.append(
            f"Ticket {ticket_id} for incident {incident_id} is already "
            + ("resolved" if state == "resolved" else "commented")
        )
        result["diff"]["after"] = dict(result["diff"]["before"])
        return result

    result["changed"] = True
    result["diff"]["after"] = {
        "status": want_status or status,
        "comments": len(_comment_texts(current)) + (1 if want_comment else 0),
    }
    verb = "Would" if check_mode else None
    if want_status:
        actions.append(f"{verb + ' resolve' if verb else 'Resolved'} ticket {ticket_id} of incident {incident_id}")
    if want_comment:
        actions.append(f"{verb + ' add' if verb else 'Added'} a comment to ticket {ticket_id} of incident {incident_id}")
    if check_mode:
        return result
    updated = client.update(ticket_id, status=want_status, comment=want_comment)
    result["ticket"] = summarize(updated)
    return result
