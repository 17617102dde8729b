#!/usr/bin/env python3
"""AKIG lab: emulator of the external SaaS APIs used by the incident runbooks.

This is the only emulated part of the lab. It speaks just enough of the real
wire formats of Twilio (SMS), SendGrid v3 (mail), Slack incoming webhooks and
the ticket tracker for the runbooks' ``uri`` calls to work unchanged, and it
records every accepted call in an append-only, fsync'd ledger so tests can
assert exactly-once delivery.

Standard library only. See ``README.md`` beside this file for the routes, the
fault modes and the ledger format.

Usage::

    python3 lab/emulator/akig_saas_emulator.py --host 127.0.0.41 --port 80 \\
        --state-dir lab/state/emulator --credentials-file lab/state/creds.json
"""

from __future__ import annotations

import argparse
import base64
import binascii
import errno
import hmac
import ipaddress
import json
import os
import random
import re
import secrets
import signal
import socketserver
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit

PROG = "akig-saas-emulator"
VERSION = "1.0.0"

SERVICES: tuple[str, ...] = ("twilio", "sendgrid", "slack", "tickets")
MODES: tuple[str, ...] = ("ok", "outage", "quota", "slow", "flaky", "rate_limit")
DEFAULT_RATE_LIMIT = 10.0
DEFAULT_FLAKY_FRACTION = 0.1
DEFAULT_FLAKY_RETRY_AFTER_S = 1
DEFAULT_SLOW_DELAY_S = 3.0
MAX_DELAY_S = 300.0
RETRY_AFTER_S = 30
MAX_BODY_BYTES = 1024 * 1024
TICKET_STATUSES: tuple[str, ...] = ("open", "resolved")
REDACTED = "[REDACTED]"

CREDENTIAL_KEYS: tuple[str, ...] = (
    "twilio_account_sid",
    "twilio_auth_token",
    "sendgrid_api_key",
    "slack_webhook_path",
    "ticket_api_token",
)
IDEMPOTENCY_HEADERS: tuple[str, ...] = ("idempotency-key", "i-twilio-idempotency-token")

TWILIO_API = "/twilio/2010-04-01"
TWILIO_ERRORS_URL = "https://www.twilio.com/docs/errors/"
SENDGRID_ERRORS_HELP = (
    "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
)
E164_RE = re.compile(r"^(?:whatsapp:)?\+?[1-9]\d{1,14}$")
TWILIO_MAX_BODY = 1600


# --------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------


class ControlInputError(ValueError):
    """Invalid control-API input; the message names the accepted values."""


class CredentialsError(Exception):
    """The credentials file is missing or invalid (message never holds values)."""


@dataclass(frozen=True, repr=False)
class Credentials:
    twilio_account_sid: str
    twilio_auth_token: str
    sendgrid_api_key: str
    slack_webhook_path: str
    ticket_api_token: str

    def __repr__(self) -> str:
        return "Credentials(<redacted>)"

    def values(self) -> tuple[str, ...]:
        return tuple(getattr(self, key) for key in CREDENTIAL_KEYS)


def load_credentials(path: Path) -> Credentials:
    """Read and validate the lab controller's credentials file."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CredentialsError(f"credentials file {path} does not exist") from None
    except OSError as exc:
        raise CredentialsError(
            f"cannot read credentials file {path}: {exc.strerror}"
        ) from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CredentialsError(
            f"credentials file {path} is not valid JSON "
            f"(line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise CredentialsError(f"credentials file {path} must hold a JSON object")
    bad = [
        key
        for key in CREDENTIAL_KEYS
        if not isinstance(data.get(key), str) or not data[key].strip()
    ]
    if bad:
        raise CredentialsError(
            f"credentials file {path} is missing or has empty key(s): " + ", ".join(bad)
        )
    values = {key: data[key].strip() for key in CREDENTIAL_KEYS}
    if not re.fullmatch(r"AC[0-9A-Za-z]+", values["twilio_account_sid"]):
        raise CredentialsError(
            f"credentials file {path}: twilio_account_sid must be 'AC' "
            "followed by letters or digits"
        )
    hook = values["slack_webhook_path"].strip("/")
    if not re.fullmatch(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*", hook):
        raise CredentialsError(
            f"credentials file {path}: slack_webhook_path must look like "
            "'T0000/B0000/xxxxxxxx'"
        )
    values["slack_webhook_path"] = hook
    return Credentials(**values)


def credentials_file_warnings(path: Path) -> list[str]:
    """Warnings about a credentials file readable by group or others."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return []
    if mode & 0o077:
        return [f"credentials file {path} has mode {mode:04o}; expected 0600"]
    return []


class Redactor:
    """Replaces every credential value found in strings by ``[REDACTED]``."""

    def __init__(self, values: Iterable[str]) -> None:
        self._values = sorted({v for v in values if v}, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self._values:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self(k): self(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_utc(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rfc2822(moment: datetime) -> str:
    """Twilio's date format, e.g. ``Wed, 18 Aug 2010 20:01:40 +0000``."""
    return moment.strftime("%a, %d %b %Y %H:%M:%S +0000")


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_UNPRINTABLE_RE = re.compile(r"[^\x21-\x7e]")
_TWILIO_ACCOUNT_RE = re.compile(r"^(/twilio/[^/]+/Accounts/)[^/]+")


def redact_path(raw_path: str, redactor: Redactor | None = None) -> str:
    """A request path that is safe to log: no account SID, webhook secret or
    query values (query keys are kept)."""
    parts = urlsplit(raw_path)
    path = _TWILIO_ACCOUNT_RE.sub(r"\1<account_sid>", parts.path)
    if path.startswith("/slack/services/"):
        path = "/slack/services/<redacted>"
    if redactor is not None:
        path = redactor.text(path)
    if parts.query:
        keys = sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True)})
        path += "?" + "&".join(f"{k}=..." for k in keys)
    path = _UNPRINTABLE_RE.sub("?", path)
    return path if len(path) <= 200 else path[:197] + "..."


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """``Authorization: Basic b64(user:password)`` -> (user, password)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return user, password


def parse_bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def secret_equals(given: str | None, expected: str) -> bool:
    """Constant-time comparison that tolerates ``None`` and non-ASCII input."""
    candidate = (given or "").encode("utf-8", "surrogateescape")
    return hmac.compare_digest(candidate, expected.encode("utf-8"))


def default_modes() -> dict[str, dict[str, Any]]:
    return {s: mode_entry("ok", DEFAULT_SLOW_DELAY_S) for s in SERVICES}


def mode_entry(
    mode: str,
    delay_s: float,
    fraction: float = DEFAULT_FLAKY_FRACTION,
    seed: int = 0,
    retry_after_s: int = DEFAULT_FLAKY_RETRY_AFTER_S,
    rate: float = DEFAULT_RATE_LIMIT,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"mode": mode, "delay_s": delay_s}
    if mode == "flaky":
        entry.update(fraction=fraction, seed=seed, retry_after_s=retry_after_s)
    if mode == "rate_limit":
        entry.update(rate=rate, retry_after_s=retry_after_s)
    return entry


def validate_mode_request(payload: Any) -> tuple[str, str, float]:
    """The service, mode and delay of a ``POST /_emulator/mode`` body (see
    :func:`validate_mode_fields` for the flaky mode's own fields)."""
    service, entry = validate_mode_fields(payload)
    return service, entry["mode"], entry["delay_s"]


def validate_mode_fields(payload: Any) -> tuple[str, dict[str, Any]]:
    """Check a ``POST /_emulator/mode`` body; raise ControlInputError with a message
    that names the accepted values."""
    if not isinstance(payload, dict):
        raise ControlInputError(
            'body must be a JSON object like {"service": "twilio", "mode": "outage"}'
        )
    allowed = {"service", "mode", "delay_s", "fraction", "seed", "retry_after_s", "rate"}
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise ControlInputError(
            f"unknown field(s): {', '.join(unknown)}; "
            f"accepted fields: {', '.join(sorted(allowed))}"
        )
    service = payload.get("service")
    if service not in SERVICES:
        raise ControlInputError(
            f"unknown service {service!r}; accepted services: {', '.join(SERVICES)}"
        )
    mode = payload.get("mode")
    if mode not in MODES:
        raise ControlInputError(
            f"unknown mode {mode!r}; accepted modes: {', '.join(MODES)}"
        )
    delay = payload.get("delay_s", DEFAULT_SLOW_DELAY_S)
    if (
        isinstance(delay, bool)
        or not isinstance(delay, int | float)
        or not 0 <= delay <= MAX_DELAY_S
    ):
        raise ControlInputError(
            f"delay_s must be a number between 0 and {MAX_DELAY_S:g}"
        )
    fraction = payload.get("fraction", DEFAULT_FLAKY_FRACTION)
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, int | float)
        or not 0 <= fraction <= 1
    ):
        raise ControlInputError("fraction must be a number between 0 and 1")
    seed = payload.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ControlInputError("seed must be an integer")
    retry_after = payload.get("retry_after_s", DEFAULT_FLAKY_RETRY_AFTER_S)
    if (
        isinstance(retry_after, bool)
        or not isinstance(retry_after, int)
        or not 0 <= retry_after <= MAX_DELAY_S
    ):
        raise ControlInputError(
            f"retry_after_s must be an integer between 0 and {MAX_DELAY_S:g}"
        )
    rate = payload.get("rate", DEFAULT_RATE_LIMIT)
    if (
        isinstance(rate, bool)
        or not isinstance(rate, int | float)
        or not 0 < rate <= 100000
    ):
        raise ControlInputError("rate must be a number of calls per second, more than 0")
    if mode != "flaky" and ({"fraction", "seed"} & set(payload)):
        raise ControlInputError("fraction and seed are accepted with mode 'flaky' only")
    if mode != "rate_limit" and "rate" in payload:
        raise ControlInputError("rate is accepted with mode 'rate_limit' only")
    if mode not in ("flaky", "rate_limit") and "retry_after_s" in payload:
        raise ControlInputError(
            "retry_after_s is accepted with modes 'flaky' and 'rate_limit' only"
        )
    entry = mode_entry(mode, float(delay), float(fraction), seed, retry_after, float(rate))
    return service, entry


def sanitize_modes(data: Any) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Modes as read from ``modes.json``; invalid entries fall back to ok."""
    modes = default_modes()
    warnings: list[str] = []
    if not isinstance(data, dict):
        return modes, ["modes.json does not hold a JSON object; all modes reset to ok"]
    for service, entry in data.items():
        if not isinstance(entry, dict):
            warnings.append(f"modes.json: ignoring entry for {service!r}")
            continue
        try:
            _, modes[service] = validate_mode_fields({"service": service, **entry})
        except ValueError as exc:
            warnings.append(f"modes.json: ignoring entry for {service!r}: {exc}")
            continue
    return modes, warnings


# --------------------------------------------------------------------------
# Durable files
# --------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line and fsync it before returning."""
    line = json.dumps(record, separators=(",", ":"), sort_keys=False) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


class JsonlAppender:
    """An append-only JSON-lines file kept open, with group commit.

    :meth:`append` writes a line (callers serialize it under their own lock, so
    the file order is the call order) and returns a ticket; :meth:`sync` returns
    once that line is fsync'd. Concurrent callers share one fsync: whoever
    syncs covers every line written before it started. A caller answers its
    client only after ``sync``, so the guarantee of ``append_jsonl`` (on disk
    before the answer) holds, without one fsync per line under a global lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._written = 0
        self._synced = 0

    def append(self, record: Mapping[str, Any]) -> int:
        line = json.dumps(record, separators=(",", ":"), sort_keys=False) + "\n"
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(self._fd, line.encode("utf-8"))
            self._written += 1
            return self._written

    def sync(self, ticket: int) -> None:
        with self._sync_lock:
            if self._synced >= ticket:
                return
            with self._lock:
                target, fd = self._written, self._fd
            if fd is not None:
                os.fsync(fd)
            self._synced = target

    def truncate(self) -> None:
        with self._sync_lock, self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            truncate_file(self.path)
            self._written = self._synced = 0


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete JSON-object lines of ``path`` (a torn last line is skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    records: list[dict[str, Any]] = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def truncate_file(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return None


def _last_seq(records: Sequence[Mapping[str, Any]]) -> int:
    seqs = [r["seq"] for r in records if isinstance(r.get("seq"), int)]
    return max(seqs, default=0)


# --------------------------------------------------------------------------
# State: ledger, rejections, modes, tickets, Twilio messages
# --------------------------------------------------------------------------


class StateStore:
    """Everything the emulator keeps in ``STATE_DIR``; thread-safe.

    Files: ``ledger.jsonl`` and ``rejections.jsonl`` (append-only, fsync'd per
    line), ``twilio_messages.jsonl`` (append-only: one line per new message or
    status change, the last line of a sid wins), ``modes.json`` and
    ``tickets.json`` (rewritten atomically). Every value is passed through the redactor before
    it is written, so no credential ever reaches the disk.
    """

    def __init__(self, state_dir: Path, redactor: Redactor) -> None:
        self.state_dir = state_dir
        self.redact = redactor
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.ledger_path = state_dir / "ledger.jsonl"
        self.rejections_path = state_dir / "rejections.jsonl"
        self.modes_path = state_dir / "modes.json"
        self.tickets_path = state_dir / "tickets.json"
        self.messages_path = state_dir / "twilio_messages.jsonl"
        self._lock = threading.RLock()
        self._ledger_file = JsonlAppender(self.ledger_path)
        self._messages_file = JsonlAppender(self.messages_path)
        self.warnings: list[str] = []

        # The ledger is also kept in memory (the file is the durable copy), so that
        # reads and the activity/list routes cost no file read per request.
        self._ledger: list[dict[str, Any]] = read_jsonl(self.ledger_path)
        self._ledger_seq = _last_seq(self._ledger)
        self._rejection_seq = _last_seq(read_jsonl(self.rejections_path))

        raw_modes = read_json(self.modes_path)
        if raw_modes is None:
            self._modes = default_modes()
        else:
            self._modes, warnings = sanitize_modes(raw_modes)
            self.warnings.extend(warnings)

        tickets = read_json(self.tickets_path)
        if not isinstance(tickets, dict):
            tickets = {}
        incidents = tickets.get("incidents")
        self._tickets: dict[str, dict[str, Any]] = (
            {t["id"]: t for t in incidents if isinstance(t, dict) and "id" in t}
            if isinstance(incidents, list)
            else {}
        )
        next_number = tickets.get("next_number")
        self._next_ticket = (
            next_number
            if isinstance(next_number, int) and next_number > 0
            else len(self._tickets) + 1
        )

        # Twilio messages in creation order (the list route answers newest first).
        self._messages: dict[str, dict[str, Any]] = {}
        for message in read_jsonl(self.messages_path):
            if isinstance(message.get("sid"), str):
                self._messages[message["sid"]] = message
        self._flaky: dict[str, random.Random] = {}
        self._buckets: dict[str, tuple[float, float]] = {}

    # -- ledger and rejections ---------------------------------------------

    def append_ledger(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._ledger_seq += 1
            record = {"seq": self._ledger_seq, "ts": iso_utc(utc_now())}
            record.update(self.redact(dict(entry)))
            ticket = self._ledger_file.append(record)
            self._ledger.append(record)
        self._ledger_file.sync(ticket)  # on disk before the caller answers
        return record

    def append_rejection(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._rejection_seq += 1
            record = {"seq": self._rejection_seq, "ts": iso_utc(utc_now())}
            record.update(self.redact(dict(entry)))
            append_jsonl(self.rejections_path, record)
            return record

    def ledger(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._ledger)

    def rejections(self) -> list[dict[str, Any]]:
        with self._lock:
            return read_jsonl(self.rejections_path)

    def ledger_count(self) -> int:
        with self._lock:
            return len(self._ledger)

    # -- modes ---------------------------------------------------------------

    def modes(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {s: dict(m) for s, m in self._modes.items()}

    def mode_for(self, service: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._modes[service])

    def set_mode(self, service: str, mode: str, delay_s: float, **flaky: Any) -> None:
        with self._lock:
            self._modes[service] = mode_entry(mode, delay_s, **flaky)
            self._flaky.pop(service, None)
            self._buckets.pop(service, None)
            write_json_atomic(self.modes_path, self._modes)

    def rate_take(self, service: str) -> bool:
        """A token of a ``rate_limit`` service: ``rate`` calls per second, bursts
        of at most one second's worth; False when the call is over the rate."""
        with self._lock:
            rate = float(self._modes[service].get("rate", DEFAULT_RATE_LIMIT))
            now = time.monotonic()
            tokens, stamp = self._buckets.get(service, (max(1.0, rate), now))
            tokens = min(max(1.0, rate), tokens + (now - stamp) * rate)
            allowed = tokens >= 1.0
            self._buckets[service] = (tokens - 1.0 if allowed else tokens, now)
            return allowed

    def flaky_draw(self, service: str) -> int | None:
        """How the next call of a ``flaky`` service fails (500 or 429, half each)
        or None: draws from a generator seeded by the mode's ``seed`` when the
        mode is set (same seed and call order, same sequence)."""
        with self._lock:
            mode = self._modes[service]
            rng = self._flaky.get(service)
            if rng is None:
                rng = self._flaky[service] = random.Random(mode.get("seed", 0))
            if rng.random() >= mode.get("fraction", 0.0):
                return None
            return 500 if rng.random() < 0.5 else 429

    # -- reset ---------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self._ledger_file.truncate()
            truncate_file(self.rejections_path)
            self._ledger = []
            self._ledger_seq = 0
            self._rejection_seq = 0
            self._modes = default_modes()
            self._flaky = {}
            self._buckets = {}
            write_json_atomic(self.modes_path, self._modes)
            self._tickets = {}
            self._next_ticket = 1
            self._save_tickets()
            self._messages = {}
            self._messages_file.truncate()

    # -- tickets -------------------------------------------------------------

    def _save_tickets(self) -> None:
        write_json_atomic(
            self.tickets_path,
            {
                "next_number": self._next_ticket,
                "incidents": list(self._tickets.values()),
            },
        )

    def create_ticket(
        self,
        fields: Mapping[str, Any],
        ledger: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> dict[str, Any]:
        """Create a ticket and its ledger entry atomically; returns the ticket."""
        with self._lock:
            ticket_id = f"TCK-{self._next_ticket:04d}"
            self._next_ticket += 1
            now = iso_utc(utc_now())
            ticket = self.redact(
                {
                    "id": ticket_id,
                    "status": "open",
                    **fields,
                    "comments": [],
                    "created_at": now,
                    "updated_at": now,
                    "resolved_at": None,
                }
            )
            self._tickets[ticket_id] = ticket
            self._save_tickets()
            self.append_ledger(ledger(ticket))
            return dict(ticket)

    def get_ticket(self, ticket_id: str) -> dict[str, Any] | None:
        with self._lock:
            ticket = self._tickets.get(ticket_id)
            return json.loads(json.dumps(ticket)) if ticket is not None else None

    def list_tickets(
        self, status: str | None = None, incident_id: str | None = None
    ) -> list[dict[str, Any]]:
        with self._lock:
            return [
                json.loads(json.dumps(t))
                for t in self._tickets.values()
                if (status is None or t.get("status") == status)
                and (incident_id is None or t.get("incident_id") == incident_id)
            ]

    def update_ticket(
        self,
        ticket_id: str,
        status: str | None,
        comment: str | None,
        ledger: Callable[[dict[str, Any], str], dict[str, Any]],
    ) -> dict[str, Any] | None:
        with self._lock:
            ticket = self._tickets.get(ticket_id)
            if ticket is None:
                return None
            previous = ticket["status"]
            now = iso_utc(utc_now())
            if status is not None and status != previous:
                ticket["status"] = status
                ticket["resolved_at"] = now if status == "resolved" else None
            if comment is not None:
                ticket["comments"].append({"ts": now, "text": self.redact(comment)})
            ticket["updated_at"] = now
            self._save_tickets()
            self.append_ledger(ledger(ticket, previous))
            return json.loads(json.dumps(ticket))

    # -- Twilio messages -----------------------------------------------------

    def save_message(self, message: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            stored = self.redact(dict(message))
            self._messages[stored["sid"]] = stored
            ticket = self._messages_file.append(stored)
        self._messages_file.sync(ticket)
        return dict(stored)

    def list_messages(
        self, keep: Callable[[dict[str, Any]], bool]
    ) -> list[dict[str, Any]]:
        """The stored messages that ``keep`` accepts, newest first."""
        with self._lock:
            return [dict(m) for m in reversed(self._messages.values()) if keep(m)]

    def get_message(self, sid: str) -> dict[str, Any] | None:
        """A stored message; the first fetch marks it delivered (the emulator
        "delivers" instantly: the ledger entry is the delivery)."""
        with self._lock:
            message = self._messages.get(sid)
            if message is None:
                return None
            if message.get("status") == "queued":
                now = rfc2822(utc_now())
                message.update(status="delivered", date_sent=now, date_updated=now)
                self._messages_file.sync(self._messages_file.append(message))
            return dict(message)


# --------------------------------------------------------------------------
# Requests, responses, routing
# --------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    raw_path: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    client_host: str = "127.0.0.1"

    @property
    def path(self) -> str:
        return urlsplit(self.raw_path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.raw_path).query, keep_blank_values=True)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def query_value(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    @property
    def idempotency_key(self) -> str | None:
        for name in IDEMPOTENCY_HEADERS:
            value = self.header(name)
            if value:
                return value.strip()
        return None


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def json_response(
    status: int, payload: Any, headers: Mapping[str, str] | None = None
) -> Response:
    body = (json.dumps(payload) + "\n").encode("utf-8")
    return Response(status, body, "application/json", dict(headers or {}))


def text_response(
    status: int, text: str, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        status, text.encode("utf-8"), "text/plain; charset=utf-8", dict(headers or {})
    )


class Rejected(Exception):
    """A provider call refused with a 4xx/5xx; ``reason`` is a fixed, secret-free
    string recorded in ``rejections.jsonl``."""

    def __init__(self, response: Response, reason: str) -> None:
        super().__init__(reason)
        self.response = response
        self.reason = reason


Handler = Callable[[Request, dict[str, str]], Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    service: str | None  # None: control API
    operation: str
    handler: Handler


# -- provider-shaped errors ------------------------------------------------


def twilio_error(status: int, code: int, message: str) -> Response:
    return json_response(
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"{TWILIO_ERRORS_URL}{code}",
            "status": status,
        },
    )


def sendgrid_error(
    status: int,
    message: str,
    field_name: str | None = None,
    help_url: str | None = None,
) -> Response:
    return json_response(
        status,
        {"errors": [{"message": message, "field": field_name, "help": help_url}]},
    )


def tickets_error(status: int, error: str, message: str) -> Response:
    return json_response(status, {"error": error, "message": message})


def unauthorized_response(service: str) -> Response:
    if service == "twilio":
        return twilio_error(401, 20003, "Authenticate")
    if service == "sendgrid":
        return sendgrid_error(
            401, "The provided authorization grant is invalid, expired, or revoked"
        )
    if service == "slack":
        return text_response(404, "no_service")
    return tickets_error(401, "unauthorized", "invalid or missing bearer token")


def outage_response(service: str) -> Response:
    if service == "twilio":
        return twilio_error(503, 20503, "Service Unavailable")
    if service == "sendgrid":
        return sendgrid_error(503, "Service Unavailable")
    if service == "slack":
        return text_response(503, "service_unavailable")
    return tickets_error(503, "service_unavailable", "ticket tracker is unavailable")


def flaky_error_response(service: str) -> Response:
    if service == "twilio":
        return twilio_error(500, 20500, "Internal Server Error")
    if service == "sendgrid":
        return sendgrid_error(500, "Internal Server Error")
    if service == "slack":
        return text_response(500, "internal_error")
    return tickets_error(500, "internal_error", "internal server error")


def quota_response(service: str, retry_after_s: int = RETRY_AFTER_S) -> Response:
    retry = {"Retry-After": str(retry_after_s)}
    if service == "twilio":
        response = twilio_error(429, 20429, "Too Many Requests")
    elif service == "sendgrid":
        response = sendgrid_error(429, "too many requests")
    elif service == "slack":
        response = text_response(429, "rate_limited")
    else:
        response = tickets_error(429, "rate_limited", "too many requests")
    response.headers.update(retry)
    return response


def not_found_response(service: str) -> Response:
    if service == "twilio":
        return twilio_error(404, 20404, "The requested resource was not found")
    if service == "sendgrid":
        return sendgrid_error(404, "not found")
    if service == "slack":
        return text_response(404, "no_service")
    return tickets_error(404, "not_found", "no such resource")


def parse_json_body(body: bytes) -> Any:
    """Decoded JSON, or raise ValueError."""
    try:
        return json.loads(body.decode("utf-8") or "null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("body is not valid JSON") from exc


def parse_form(body: bytes) -> dict[str, str]:
    """``application/x-www-form-urlencoded`` -> last value of each field."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}


def parse_slack_payload(body: bytes, content_type: str | None) -> Any:
    """Slack accepts a JSON body, or a form field ``payload`` holding JSON.

    Like Slack, a JSON body sent with a form content type (``curl -d``) works.
    """
    if (content_type or "").lower().startswith("application/x-www-form-urlencoded"):
        form_payload = parse_form(body).get("payload")
        if form_payload is not None:
            return parse_json_body(form_payload.encode("utf-8"))
    return parse_json_body(body)


def validate_sendgrid_mail(payload: Any) -> tuple[list[str], str, str, str]:
    """Return (to, from, subject, body) or raise Rejected with a 400."""

    def bad(message: str, field_name: str | None, anchor: str) -> Rejected:
        help_url = f"{SENDGRID_ERRORS_HELP}#{anchor}" if anchor else None
        return Rejected(
            sendgrid_error(400, message, field_name, help_url),
            f"validation:{field_name or 'body'}",
        )

    if not isinstance(payload, dict):
        raise bad("Bad Request", None, "")
    personalizations = payload.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        raise bad(
            "The personalizations field is required and must have at least one "
            "personalization.",
            "personalizations",
            "message.personalizations",
        )
    recipients: list[str] = []
    for index, item in enumerate(personalizations):
        to = item.get("to") if isinstance(item, dict) else None
        if not isinstance(to, list) or not to:
            raise bad(
                "The to array is required for all personalization objects, and "
                "must have at least one email object with a valid email address.",
                f"personalizations.{index}.to",
                "message.personalizations.to",
            )
        for address in to:
            email = address.get("email") if isinstance(address, dict) else None
            if not isinstance(email, str) or "@" not in email:
                raise bad(
                    "Does not contain a valid address.",
                    f"personalizations.{index}.to",
                    "message.personalizations.to",
                )
            recipients.append(email)
    sender = payload.get("from")
    sender_email = sender.get("email") if isinstance(sender, dict) else None
    if not isinstance(sender_email, str) or "@" not in sender_email:
        raise bad(
            "The from object must be provided for every email send. It is an "
            "object that requires the email parameter, but may also contain a "
            "name parameter.",
            "from.email",
            "message.from",
        )
    subject = payload.get("subject")
    if not isinstance(subject, str) or not subject.strip():
        per_item = [p.get("subject") for p in personalizations if isinstance(p, dict)]
        if not all(isinstance(s, str) and s.strip() for s in per_item):
            raise bad(
                "The subject is required. You can get around this requirement if "
                "you use a template with a subject defined or if every single "
                "personalization has a subject defined.",
                "subject",
                "message.subject",
            )
        subject = per_item[0]
    content = payload.get("content")
    valid_content = isinstance(content, list) and bool(content)
    if valid_content:
        valid_content = all(
            isinstance(c, dict)
            and isinstance(c.get("type"), str)
            and isinstance(c.get("value"), str)
            and c["value"] != ""
            for c in content
        )
    if not valid_content:
        raise bad(
            "Unless a valid template_id is provided, the content parameter is "
            "required. There must be at least one defined content block. We "
            "typically suggest both text/plain and text/html blocks are included, "
            "but only one block is required.",
            "content",
            "message.content",
        )
    plain = [c["value"] for c in content if c["type"].lower() == "text/plain"]
    body = plain[0] if plain else content[0]["value"]
    return recipients, sender_email, subject, body


SENDGRID_KEY_SCOPES: tuple[str, ...] = ("mail.send", "messages.read", "user.profile.read")
_ACTIVITY_CLAUSE_RE = re.compile(
    r"""^\(?\s*(?P<field>[a-z_]+)(?:\[\s*'(?P<arg>[^']+)'\s*\])?\s*=\s*"(?P<value>[^"]*)"\s*\)?$"""
)
ACTIVITY_FIELDS: tuple[str, ...] = (
    "msg_id", "from_email", "subject", "to_email", "status", "unique_args", "custom_args",
)  # fmt: skip


def sendgrid_custom_args(payload: Mapping[str, Any]) -> dict[str, str]:
    """The message's ``custom_args`` (top level, then each personalization's)."""
    merged: dict[str, str] = {}
    sources = [payload.get("custom_args")]
    personalizations = payload.get("personalizations")
    if isinstance(personalizations, list):
        sources += [p.get("custom_args") for p in personalizations if isinstance(p, dict)]
    for source in sources:
        if isinstance(source, dict):
            merged.update({str(k): str(v) for k, v in source.items()})
    return merged


def parse_activity_query(query: str) -> list[tuple[str, str | None, str]]:
    """SendGrid's activity query language, the subset the runbooks use:
    clauses ``field="value"`` or ``unique_args['name']="value"`` joined by ``AND``."""
    clauses: list[tuple[str, str | None, str]] = []
    if not query.strip():
        return clauses
    for part in re.split(r"\s+AND\s+", query.strip()):
        match = _ACTIVITY_CLAUSE_RE.match(part.strip())
        if not match or match["field"] not in ACTIVITY_FIELDS:
            raise ValueError(
                f"invalid query clause {part.strip()[:80]!r}; accepted: "
                + ", ".join(f'{f}="..."' for f in ACTIVITY_FIELDS[:5])
                + ", unique_args['name']=\"...\" joined by AND"
            )
        if (match["arg"] is None) != (match["field"] not in ("unique_args", "custom_args")):
            raise ValueError(f"invalid query clause {part.strip()[:80]!r}")
        clauses.append((match["field"], match["arg"], match["value"]))
    return clauses


def activity_message(entry: Mapping[str, Any], to_email: str, index: int) -> dict[str, Any]:
    return {
        "from_email": entry.get("from"),
        "msg_id": f"{entry.get('provider_id')}.filter0001p1akig-{entry.get('seq')}-{index}.0",
        "subject": entry.get("subject"),
        "to_email": to_email,
        "status": "delivered",
        "opens_count": 0,
        "clicks_count": 0,
        "last_event_time": entry.get("ts"),
    }


def activity_matches(
    message: Mapping[str, Any], entry: Mapping[str, Any], clause: tuple[str, str | None, str]
) -> bool:
    field_name, arg, value = clause
    if arg is not None:
        args = (entry.get("details") or {}).get("custom_args") or {}
        return args.get(arg) == value
    return message.get(field_name) == value


def parse_rfc2822(text: str) -> datetime:
    return datetime.strptime(text, "%a, %d %b %Y %H:%M:%S +0000").replace(tzinfo=UTC)


def _twilio_time(text: str, end_of_day: bool) -> datetime:
    value = text.strip()
    try:
        if len(value) == 10:
            moment = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
            return moment.replace(hour=23, minute=59, second=59) if end_of_day else moment
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"DateSent must be YYYY-MM-DD or an ISO 8601 UTC time, not {value[:40]!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def twilio_date_window(query: Mapping[str, list[str]]) -> tuple[datetime, datetime]:
    """The ``DateSent`` filters as an inclusive window. In a query string
    ``DateSent>=X`` arrives as the key ``DateSent>`` with the value ``X``."""
    low = datetime.min.replace(tzinfo=UTC)
    high = datetime.max.replace(tzinfo=UTC)
    for key, values in query.items():
        for value in values:
            if key == "DateSent":
                low = max(low, _twilio_time(value, False))
                high = min(high, _twilio_time(value, True))
            elif key in ("DateSent>", "DateSent>="):
                low = max(low, _twilio_time(value.lstrip("="), False))
            elif key in ("DateSent<", "DateSent<="):
                high = min(high, _twilio_time(value.lstrip("="), True))
    return low, high


# --------------------------------------------------------------------------
# The emulator application (HTTP-independent, so it is easy to test)
# --------------------------------------------------------------------------


class Emulator:
    def __init__(
        self,
        credentials: Credentials,
        store: StateStore,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.credentials = credentials
        self.store = store
        self.redact = store.redact
        self._sleep = sleep
        self.started = time.monotonic()
        self.routes = self._build_routes()

    def _build_routes(self) -> list[Route]:
        acct = "^" + TWILIO_API + r"/Accounts/(?P<account_sid>[^/]+)"
        incident = r"^/tickets/api/v1/incidents/(?P<ticket_id>[^/]+)$"
        table: list[tuple[str, str, str | None, str, Handler]] = [
            # method, path pattern, service (None: control API), operation, handler
            ("POST", acct + r"/Messages\.json$", "twilio", "message.create",
             self.twilio_create),
            ("GET", acct + r"/Messages\.json$", "twilio", "message.list",
             self.twilio_list),
            ("GET", acct + r"/Messages/(?P<message_sid>[^/]+)\.json$", "twilio",
             "message.fetch", self.twilio_fetch),
            ("GET", acct + r"\.json$", "twilio", "account.fetch",
             self.twilio_account),
            ("POST", r"^/sendgrid/v3/mail/send$", "sendgrid", "mail.send",
             self.sendgrid_send),
            ("GET", r"^/sendgrid/v3/messages$", "sendgrid", "messages.list",
             self.sendgrid_activity),
            ("GET", r"^/sendgrid/v3/scopes$", "sendgrid", "scopes.list",
             self.sendgrid_scopes),
            ("POST", r"^/slack/services/(?P<hook>.+)$", "slack", "webhook.post",
             self.slack_post),
            ("POST", r"^/tickets/api/v1/incidents$", "tickets", "incident.create",
             self.tickets_create),
            ("GET", r"^/tickets/api/v1/incidents$", "tickets", "incident.list",
             self.tickets_list),
            ("GET", incident, "tickets", "incident.fetch", self.tickets_fetch),
            ("PATCH", incident, "tickets", "incident.update", self.tickets_update),
            ("GET", r"^/_emulator/health$", None, "health", self.control_health),
            ("GET", r"^/_emulator/ledger$", None, "ledger", self.control_ledger),
            ("GET", r"^/_emulator/rejections$", None, "rejections",
             self.control_rejections),
            ("POST", r"^/_emulator/reset$", None, "reset", self.control_reset),
            ("GET", r"^/_emulator/mode$", None, "mode.get", self.control_mode_get),
            ("POST", r"^/_emulator/mode$", None, "mode.set", self.control_mode_set),
        ]  # fmt: skip
        return [
            Route(method, re.compile(pattern), service, operation, handler)
            for method, pattern, service, operation, handler in table
        ]

    # -- dispatch ------------------------------------------------------------

    @staticmethod
    def service_of(path: str) -> str | None:
        head = path.lstrip("/").split("/", 1)[0]
        return head if head in SERVICES else None

    def handle(self, req: Request) -> Response:
        path = req.path
        if path.startswith("/_emulator/") and not is_loopback_host(req.client_host):
            return json_response(403, {"error": "the control API is loopback only"})
        matching = [(route, route.pattern.match(path)) for route in self.routes]
        matching = [(route, m) for route, m in matching if m]
        for route, match in matching:
            if route.method == req.method:
                params = {k: unquote(v) for k, v in match.groupdict().items()}
                if route.service is None:
                    return route.handler(req, params)
                return self._provider_call(route, req, params)
        service = self.service_of(path)
        if matching:
            allow = ", ".join(sorted({route.method for route, _ in matching}))
            response = json_response(
                405, {"error": "method not allowed"}, {"Allow": allow}
            )
            reason = "method_not_allowed"
        elif service is not None:
            response, reason = not_found_response(service), "no_route"
        else:
            return json_response(404, {"error": "not found"})
        if service is not None:
            self._record_rejection(service, None, req, response.status, reason)
        return response

    def _provider_call(
        self, route: Route, req: Request, params: dict[str, str]
    ) -> Response:
        service = route.service
        assert service is not None
        mode = self.store.mode_for(service)
        try:
            if mode["mode"] == "slow":
                self._sleep(mode["delay_s"])
            elif mode["mode"] == "outage":
                raise Rejected(outage_response(service), "mode:outage")
            if not self.authenticate(service, req, params):
                raise Rejected(unauthorized_response(service), "auth")
            if mode["mode"] == "quota":
                raise Rejected(quota_response(service), "mode:quota")
            if mode["mode"] == "rate_limit" and not self.store.rate_take(service):
                raise Rejected(
                    quota_response(service, mode.get("retry_after_s", 1)),
                    "mode:rate_limit",
                )
            failure = self.store.flaky_draw(service) if mode["mode"] == "flaky" else None
            if failure == 500:
                # Refused before the handler runs: nothing is sent or recorded.
                raise Rejected(flaky_error_response(service), "mode:flaky:500")
            if failure == 429:
                raise Rejected(
                    quota_response(service, mode.get("retry_after_s", 1)),
                    "mode:flaky:429",
                )
            return route.handler(req, params)
        except Rejected as rejected:
            self._record_rejection(
                service, route.operation, req, rejected.response.status, rejected.reason
            )
            return rejected.response

    def _record_rejection(
        self,
        service: str,
        operation: str | None,
        req: Request,
        status: int,
        reason: str,
    ) -> None:
        self.store.append_rejection(
            {
                "service": service,
                "operation": operation,
                "status": status,
                "reason": reason,
                "idempotency_key": req.idempotency_key,
            }
        )

    def authenticate(
        self, service: str, req: Request, params: Mapping[str, str]
    ) -> bool:
        creds = self.credentials
        if service == "twilio":
            basic = parse_basic_auth(req.header("authorization"))
            user, password = basic if basic else ("", "")
            checks = (
                secret_equals(user, creds.twilio_account_sid),
                secret_equals(password, creds.twilio_auth_token),
                secret_equals(params.get("account_sid"), creds.twilio_account_sid),
            )
            return all(checks)
        if service == "sendgrid":
            token = parse_bearer(req.header("authorization"))
            return secret_equals(token, creds.sendgrid_api_key)
        if service == "slack":
            hook = (params.get("hook") or "").strip("/")
            return secret_equals(hook, creds.slack_webhook_path)
        token = parse_bearer(req.header("authorization"))
        return secret_equals(token, creds.ticket_api_token)

    def _ledger_entry(
        self,
        req: Request,
        service: str,
        operation: str,
        *,
        to: list[str],
        sender: str | None = None,
        subject: str | None = None,
        body: str | None = None,
        text: str | None = None,
        provider_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return {
            "service": service,
            "operation": operation,
            "to": to,
            "from": sender,
            "subject": subject,
            "body": body,
            "text": text,
            "idempotency_key": req.idempotency_key,
            "provider_id": provider_id,
            "details": dict(details or {}),
        }

    # -- Twilio --------------------------------------------------------------

    def _twilio_resource(self, message: Mapping[str, Any]) -> dict[str, Any]:
        sid = self.credentials.twilio_account_sid
        uri = f"/2010-04-01/Accounts/{sid}/Messages/{message['sid']}.json"
        return {
            "account_sid": sid,
            "api_version": "2010-04-01",
            "body": message["body"],
            "date_created": message["date_created"],
            "date_sent": message.get("date_sent"),
            "date_updated": message["date_updated"],
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": message["from"],
            "messaging_service_sid": message.get("messaging_service_sid"),
            "num_media": "0",
            "num_segments": str(max(1, -(-len(message["body"]) // 153))),
            "price": None,
            "price_unit": "USD",
            "sid": message["sid"],
            "status": message["status"],
            "to": message["to"],
            "uri": uri,
        }

    def twilio_create(self, req: Request, params: dict[str, str]) -> Response:
        form = parse_form(req.body)
        to = form.get("To", "").strip()
        body = form.get("Body", "")
        sender = form.get("From", "").strip() or None
        service_sid = form.get("MessagingServiceSid", "").strip() or None
        if not to:
            raise Rejected(
                twilio_error(400, 21604, "A 'To' phone number is required."),
                "validation:21604",
            )
        if not E164_RE.match(to):
            raise Rejected(
                twilio_error(400, 21211, f"Invalid 'To' Phone Number: {to}"),
                "validation:21211",
            )
        if sender is None and service_sid is None:
            raise Rejected(
                twilio_error(400, 21603, "A 'From' phone number is required."),
                "validation:21603",
            )
        if not body.strip():
            raise Rejected(
                twilio_error(400, 21602, "Message body is required."),
                "validation:21602",
            )
        if len(body) > TWILIO_MAX_BODY:
            raise Rejected(
                twilio_error(
                    400,
                    21617,
                    "The concatenated message body exceeds the 1600 character limit.",
                ),
                "validation:21617",
            )
        now = rfc2822(utc_now())
        message = self.store.save_message(
            {
                "sid": "SM" + uuid.uuid4().hex,
                "to": to,
                "from": sender or service_sid,
                "body": body,
                "messaging_service_sid": service_sid,
                "status": "queued",
                "date_created": now,
                "date_updated": now,
                "date_sent": None,
            }
        )
        self.store.append_ledger(
            self._ledger_entry(
                req,
                "twilio",
                "message.create",
                to=[to],
                sender=message["from"],
                body=message["body"],
                provider_id=message["sid"],
                details={"messaging_service_sid": service_sid},
            )
        )
        return json_response(201, self._twilio_resource(message))

    def twilio_account(self, req: Request, params: dict[str, str]) -> Response:
        """``GET /2010-04-01/Accounts/{Sid}.json``: the account, status active."""
        sid = self.credentials.twilio_account_sid
        created = rfc2822(datetime.fromtimestamp(0, UTC))
        return json_response(
            200,
            {
                "auth_token": REDACTED,
                "date_created": created,
                "date_updated": created,
                "friendly_name": "AKIG lab account",
                "owner_account_sid": sid,
                "sid": sid,
                "status": "active",
                "type": "Full",
                "uri": f"/2010-04-01/Accounts/{sid}.json",
            },
        )

    def twilio_list(self, req: Request, params: dict[str, str]) -> Response:
        """``GET .../Messages.json``: filters ``To``, ``From``, ``DateSent``,
        ``DateSent>=``/``DateSent<=`` (a date or an ISO 8601 UTC time; a
        message not yet reported sent is filtered by its creation time),
        ``PageSize`` (1-1000, default 50), ``Page``/``PageToken``; newest first."""
        try:
            size = int(req.query_value("PageSize") or "50")
            page = int(req.query_value("Page") or "0")
        except ValueError:
            size = page = -1
        if not 1 <= size <= 1000 or page < 0:
            raise Rejected(
                twilio_error(400, 20001, "Invalid PageSize or Page"),
                "validation:20001",
            )
        try:
            window = twilio_date_window(req.query)
        except ValueError as exc:
            raise Rejected(twilio_error(400, 20001, str(exc)), "validation:20001") from None
        to = req.query_value("To")
        sender = req.query_value("From")

        def keep(message: dict[str, Any]) -> bool:
            if to is not None and message.get("to") != to:
                return False
            if sender is not None and message.get("from") != sender:
                return False
            sent = parse_rfc2822(message.get("date_sent") or message["date_created"])
            return window[0] <= sent <= window[1]

        found = self.store.list_messages(keep)
        start = page * size
        chunk = found[start : start + size]
        sid = self.credentials.twilio_account_sid
        base = f"/2010-04-01/Accounts/{sid}/Messages.json"
        kept = [
            (k, v)
            for k, values in req.query.items()
            if k not in ("Page", "PageSize", "PageToken")
            for v in values
        ]

        def page_uri(number: int) -> str:
            query = kept + [("PageSize", str(size)), ("Page", str(number))]
            if number:
                query.append(("PageToken", f"PA{number * size}"))
            return base + "?" + urlencode(query, safe="<>=:")

        more = start + size < len(found)
        return json_response(
            200,
            {
                "messages": [self._twilio_resource(m) for m in chunk],
                "end": start + max(len(chunk), 1) - 1,
                "first_page_uri": page_uri(0),
                "next_page_uri": page_uri(page + 1) if more else None,
                "page": page,
                "page_size": size,
                "previous_page_uri": page_uri(page - 1) if page else None,
                "start": start,
                "uri": page_uri(page),
            },
        )

    def twilio_fetch(self, req: Request, params: dict[str, str]) -> Response:
        message = self.store.get_message(params["message_sid"])
        if message is None:
            raise Rejected(not_found_response("twilio"), "not_found")
        return json_response(200, self._twilio_resource(message))

    # -- SendGrid ------------------------------------------------------------

    def sendgrid_send(self, req: Request, params: dict[str, str]) -> Response:
        try:
            payload = parse_json_body(req.body)
        except ValueError:
            raise Rejected(
                sendgrid_error(400, "Bad Request"), "validation:json"
            ) from None
        to, sender, subject, body = validate_sendgrid_mail(payload)
        custom_args = sendgrid_custom_args(payload)
        message_id = secrets.token_urlsafe(16)[:22]
        self.store.append_ledger(
            self._ledger_entry(
                req,
                "sendgrid",
                "mail.send",
                to=to,
                sender=sender,
                subject=subject,
                body=body,
                provider_id=message_id,
                details={"custom_args": custom_args},
            )
        )
        return Response(202, b"", None, {"X-Message-Id": message_id})

    def sendgrid_activity(self, req: Request, params: dict[str, str]) -> Response:
        """``GET /v3/messages?query=...&limit=n`` (Email Activity Feed), newest first."""
        limit_text = req.query_value("limit") or "10"
        try:
            limit = int(limit_text)
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            raise Rejected(
                sendgrid_error(400, "limit must be an integer between 1 and 1000", "limit"),
                "validation:limit",
            )
        try:
            clauses = parse_activity_query(req.query_value("query") or "")
        except ValueError as exc:
            raise Rejected(
                sendgrid_error(400, str(exc), "query"), "validation:query"
            ) from None
        found: list[dict[str, Any]] = []
        arg_clauses = [c for c in clauses if c[1] is not None]
        for entry in reversed(self.store.ledger()):
            if entry.get("service") != "sendgrid" or entry.get("operation") != "mail.send":
                continue
            if not all(activity_matches({}, entry, c) for c in arg_clauses):
                continue  # cheap test first: custom_args are per message
            for index, to_email in enumerate(entry.get("to") or []):
                message = activity_message(entry, to_email, index)
                if all(activity_matches(message, entry, c) for c in clauses):
                    found.append(message)
            if len(found) >= limit:
                break
        return json_response(200, {"messages": found[:limit]})

    def sendgrid_scopes(self, req: Request, params: dict[str, str]) -> Response:
        return json_response(200, {"scopes": list(SENDGRID_KEY_SCOPES)})

    # -- Slack ---------------------------------------------------------------

    def slack_post(self, req: Request, params: dict[str, str]) -> Response:
        try:
            payload = parse_slack_payload(req.body, req.header("content-type"))
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise Rejected(text_response(400, "invalid_payload"), "invalid_payload")
        text = payload.get("text")
        blocks = payload.get("blocks")
        has_text = isinstance(text, str) and text.strip() != ""
        has_blocks = isinstance(blocks, list) and bool(blocks)
        if not has_text and not has_blocks:
            raise Rejected(text_response(400, "no_text"), "no_text")
        channel = payload.get("channel")
        channel = channel if isinstance(channel, str) and channel else None
        self.store.append_ledger(
            self._ledger_entry(
                req,
                "slack",
                "webhook.post",
                to=[channel] if channel else [],
                text=text if has_text else None,
                details={
                    "blocks": len(blocks) if has_blocks else 0,
                    "channel": channel,
                },
            )
        )
        return text_response(200, "ok")

    # -- Ticket tracker ------------------------------------------------------

    @staticmethod
    def _ticket_json(req: Request) -> dict[str, Any]:
        try:
            payload = parse_json_body(req.body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise Rejected(
                tickets_error(400, "bad_request", "body must be a JSON object"),
                "validation:body",
            )
        return payload

    @staticmethod
    def _invalid(field_name: str, message: str) -> Rejected:
        return Rejected(
            tickets_error(400, "invalid_field", f"{field_name}: {message}"),
            f"validation:{field_name}",
        )

    def tickets_create(self, req: Request, params: dict[str, str]) -> Response:
        payload = self._ticket_json(req)
        fields: dict[str, Any] = {}
        for name in ("title", "severity"):
            value = payload.get(name)
            if not isinstance(value, str) or not value.strip():
                raise self._invalid(name, "required non-empty string")
            fields[name] = value
        description = payload.get("description", "")
        if not isinstance(description, str):
            raise self._invalid("description", "must be a string")
        fields["description"] = description
        incident_id = payload.get("incident_id")
        if incident_id is not None and not isinstance(incident_id, str):
            raise self._invalid("incident_id", "must be a string or null")
        fields["incident_id"] = incident_id

        def ledger(ticket: dict[str, Any]) -> dict[str, Any]:
            return self._ledger_entry(
                req,
                "tickets",
                "incident.create",
                to=[],
                subject=ticket["title"],
                body=ticket["description"],
                provider_id=ticket["id"],
                details={
                    "status": ticket["status"],
                    "severity": ticket["severity"],
                    "incident_id": ticket["incident_id"],
                },
            )

        ticket = self.store.create_ticket(fields, ledger)
        return json_response(201, ticket)

    def tickets_list(self, req: Request, params: dict[str, str]) -> Response:
        status = req.query_value("status")
        if status is not None and status not in TICKET_STATUSES:
            raise self._invalid(
                "status", f"must be one of {', '.join(TICKET_STATUSES)}"
            )
        incidents = self.store.list_tickets(status, req.query_value("incident_id"))
        return json_response(200, {"incidents": incidents, "count": len(incidents)})

    def tickets_fetch(self, req: Request, params: dict[str, str]) -> Response:
        ticket = self.store.get_ticket(params["ticket_id"])
        if ticket is None:
            raise Rejected(not_found_response("tickets"), "not_found")
        return json_response(200, ticket)

    def tickets_update(self, req: Request, params: dict[str, str]) -> Response:
        payload = self._ticket_json(req)
        status = payload.get("status")
        comment = payload.get("comment")
        if status is not None and status not in TICKET_STATUSES:
            raise self._invalid(
                "status", f"must be one of {', '.join(TICKET_STATUSES)}"
            )
        if comment is not None and (
            not isinstance(comment, str) or not comment.strip()
        ):
            raise self._invalid("comment", "must be a non-empty string")
        if status is None and comment is None:
            raise self._invalid("status", "give a status and/or a comment")

        def ledger(ticket: dict[str, Any], previous: str) -> dict[str, Any]:
            return self._ledger_entry(
                req,
                "tickets",
                "incident.update",
                to=[],
                subject=ticket["title"],
                body=comment,
                provider_id=ticket["id"],
                details={
                    "status": ticket["status"],
                    "previous_status": previous,
                    "severity": ticket["severity"],
                    "incident_id": ticket["incident_id"],
                },
            )

        ticket = self.store.update_ticket(params["ticket_id"], status, comment, ledger)
        if ticket is None:
            raise Rejected(not_found_response("tickets"), "not_found")
        return json_response(200, ticket)

    # -- control API ---------------------------------------------------------

    def control_health(self, req: Request, params: dict[str, str]) -> Response:
        return json_response(
            200,
            {
                "status": "ok",
                "version": VERSION,
                "modes": self.store.modes(),
                "ledger_entries": self.store.ledger_count(),
                "uptime_s": round(time.monotonic() - self.started, 3),
            },
        )

    @staticmethod
    def _filter(
        entries: list[dict[str, Any]], req: Request, keys: Sequence[str]
    ) -> list[dict[str, Any]]:
        for key in keys:
            wanted = req.query_value(key)
            if wanted is not None:
                entries = [e for e in entries if e.get(key) == wanted]
        return entries

    def _control_entries(
        self, req: Request, entries: list[dict[str, Any]], keys: Sequence[str]
    ) -> Response:
        service = req.query_value("service")
        if service is not None and service not in SERVICES:
            return json_response(
                400,
                {
                    "error": f"unknown service {service!r}; accepted services: "
                    + ", ".join(SERVICES)
                },
            )
        entries = self._filter(entries, req, keys)
        return json_response(200, {"entries": entries, "count": len(entries)})

    def control_ledger(self, req: Request, params: dict[str, str]) -> Response:
        keys = ("service", "operation", "idempotency_key", "provider_id")
        return self._control_entries(req, self.store.ledger(), keys)

    def control_rejections(self, req: Request, params: dict[str, str]) -> Response:
        keys = ("service", "operation", "reason")
        return self._control_entries(req, self.store.rejections(), keys)

    def control_reset(self, req: Request, params: dict[str, str]) -> Response:
        self.store.reset()
        return json_response(200, {"status": "reset", "modes": self.store.modes()})

    def control_mode_get(self, req: Request, params: dict[str, str]) -> Response:
        return json_response(200, {"modes": self.store.modes()})

    def control_mode_set(self, req: Request, params: dict[str, str]) -> Response:
        try:
            service, entry = validate_mode_fields(parse_json_body(req.body))
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})
        flaky = {k: v for k, v in entry.items() if k not in ("mode", "delay_s")}
        self.store.set_mode(service, entry["mode"], entry["delay_s"], **flaky)
        return json_response(
            200, {"service": service, **entry, "modes": self.store.modes()}
        )


# --------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------


class AccessLog:
    """One line per request on a stream; never headers, bodies or secrets."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        with self._lock:
            try:
                stream.write(f"{iso_utc(utc_now())} {PROG}: {line}\n")
                stream.flush()
            except (OSError, ValueError):
                pass


class BodyError(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class EmulatorRequestHandler(BaseHTTPRequestHandler):
    server: EmulatorHTTPServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY the second waits for the
    # client's delayed ACK (~40 ms per answer on a keep-alive connection).
    disable_nagle_algorithm = True
    server_version = f"AKIG-SaaS-Emulator/{VERSION}"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    timeout = 30

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            raise BodyError(json_response(411, {"error": "Content-Length required"}))
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            raise BodyError(
                json_response(400, {"error": "bad Content-Length"})
            ) from None
        if length < 0:
            raise BodyError(json_response(400, {"error": "bad Content-Length"}))
        if length > MAX_BODY_BYTES:
            raise BodyError(json_response(413, {"error": "request body too large"}))
        return self.rfile.read(length)

    def _dispatch(self) -> None:
        started = time.monotonic()
        app = self.server.app
        try:
            body = self._read_body()
        except BodyError as exc:
            response = exc.response
            self.close_connection = True
        else:
            request = Request(
                method=self.command,
                raw_path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                client_host=self.client_address[0],
            )
            try:
                response = app.handle(request)
            except Exception as exc:  # noqa: BLE001 - answer 500, keep serving
                self.server.access_log.write(
                    f"internal error {type(exc).__name__} on {self.command} "
                    f"{redact_path(self.path, app.redact)}"
                )
                response = json_response(500, {"error": "internal emulator error"})
        try:
            self._send(response)
        finally:
            elapsed_ms = (time.monotonic() - started) * 1000
            self.server.access_log.write(
                f"{self.client_address[0]} {self.command} "
                f"{redact_path(self.path, app.redact)} {response.status} "
                f"{elapsed_ms:.0f}ms"
            )

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if response.body and self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _dispatch

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Access lines are written by ``_dispatch``."""

    def log_message(self, fmt: str, *args: Any) -> None:
        """Silence the default logger (it would print the raw request line)."""

    def log_error(self, fmt: str, *args: Any) -> None:
        code = args[0] if args and isinstance(args[0], int) else "-"
        self.server.access_log.write(
            f"{self.client_address[0]} malformed or unsupported request ({code})"
        )


class EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self, address: tuple[str, int], app: Emulator, access_log: AccessLog
    ) -> None:
        self.app = app
        self.access_log = access_log
        super().__init__(address, EmulatorRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() does a reverse DNS lookup (getfqdn); skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


def make_server(
    host: str, port: int, app: Emulator, log_stream: IO[str] | None = None
) -> EmulatorHTTPServer:
    """Bind (raises OSError) and return a server ready for ``serve_forever``."""
    return EmulatorHTTPServer((host, port), app, AccessLog(log_stream))


def bind_error_message(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {host}:{port} is already in use by another process; "
            "stop it or run `lab/akig-lab down`"
        )
    if exc.errno == errno.EACCES:
        return (
            f"permission denied binding {host}:{port} (ports below 1024 need root "
            "or CAP_NET_BIND_SERVICE)"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"address {host} is not available on this host"
    return f"cannot bind {host}:{port}: {exc.strerror or exc}"


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Emulator of the external SaaS APIs (Twilio, SendGrid, Slack, "
        "ticket tracker) for the AKIG runbook lab.",
    )
    parser.add_argument("--host", default="127.0.0.41", help="loopback address")
    parser.add_argument("--port", type=int, default=80, help="TCP port (0: any)")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--credentials-file", type=Path, required=True)
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    return parser.parse_args(argv)


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not 0 <= args.port <= 65535:
        return _error(f"port {args.port} is out of range")
    if not is_loopback_host(args.host):
        return _error(
            f"refusing to listen on {args.host}: the emulator serves the loopback "
            "lab only (use a 127.x.y.z address)"
        )
    try:
        credentials = load_credentials(args.credentials_file)
    except CredentialsError as exc:
        return _error(str(exc))
    for warning in credentials_file_warnings(args.credentials_file):
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    try:
        store = StateStore(args.state_dir, Redactor(credentials.values()))
    except OSError as exc:
        return _error(f"cannot use state dir {args.state_dir}: {exc.strerror or exc}")
    for warning in store.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    try:
        server = make_server(args.host, args.port, Emulator(credentials, store))
    except OSError as exc:
        return _error(bind_error_message(args.host, args.port, exc))

    def stop(signum: int, _frame: object) -> None:
        server.access_log.write(f"received {signal.Signals(signum).name}, stopping")
        threading.Thread(target=server.shutdown, daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    server.access_log.write(
        f"listening on http://{host}:{port} (state dir {args.state_dir}, "
        f"pid {os.getpid()})"
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    server.access_log.write("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
