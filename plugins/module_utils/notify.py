# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Incident notifications over Slack, SMS (Twilio) and e-mail (SendGrid).

Used by the ``akig.runbooks.incident_notify`` module; everything here is a
plain function of its arguments (the HTTP opener is injectable) so it can be
tested against the lab's SaaS emulator.

Rules the functions keep:

* a provider failure never raises: it becomes a *delivery* with ``ok: false``
  and a sanitised ``error`` (HTTP status, provider error code and message,
  with every credential value replaced by ``[REDACTED]``, module_utils/redact.py);
* only bad input raises :class:`NotifyError`, before anything is sent;
* no result ever contains a credential, a webhook URL or an auth header;
* in check mode nothing is sent and the plan is returned as ``actions``.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode, urlsplit

from ansible.module_utils.urls import open_url

from ansible_collections.akig.runbooks.plugins.module_utils.redact import Redactor

__all__ = [
    "CHANNEL_TYPES",
    "MODES",
    "NotifyError",
    "Providers",
    "Redactor",
    "channel_label",
    "normalize_channels",
    "notify",
    "plan",
    "send_one",
]

CHANNEL_TYPES = ("slack", "sms", "email")
MODES = ("first_success", "all")
MAX_ERROR_CHARS = 300
DEFAULT_SUBJECT = "AKIG incident notification"
_TYPE_WORDS = {"slack": "Slack", "sms": "SMS", "email": "e-mail"}

Opener = Callable[..., Any]


class NotifyError(ValueError):
    """Invalid input to :func:`notify`; the message says what is accepted."""


@dataclass(frozen=True)
class Providers:
    """Provider connection settings. ``repr`` never shows a credential."""

    slack_webhook_url: str | None = field(default=None, repr=False)
    twilio_base_url: str | None = "https://api.twilio.com"
    twilio_account_sid: str | None = field(default=None, repr=False)
    twilio_auth_token: str | None = field(default=None, repr=False)
    twilio_from: str | None = None
    sendgrid_base_url: str | None = "https://api.sendgrid.com"
    sendgrid_api_key: str | None = field(default=None, repr=False)
    sendgrid_from: str | None = None
    validate_certs: bool = True

    def secrets(self) -> list[str]:
        """Every value that must never appear in a result."""
        values = [
            self.slack_webhook_url,
            self.twilio_account_sid,
            self.twilio_auth_token,
            self.sendgrid_api_key,
        ]
        if self.slack_webhook_url:
            path = urlsplit(self.slack_webhook_url).path
            values.append(path)
            # the emulator and Slack both use /services/<T>/<B>/<secret>
            if "/services/" in path:
                values.append(path.split("/services/", 1)[1])
        if self.twilio_account_sid and self.twilio_auth_token:
            values.append(
                base64.b64encode(
                    f"{self.twilio_account_sid}:{self.twilio_auth_token}".encode()
                ).decode()
            )
        return [v for v in values if v]

    def missing(self, channel_type: str) -> list[str]:
        """Names of the options a channel type needs but that are not set."""
        needed = {
            "slack": ("slack_webhook_url",),
            "sms": (
                "twilio_base_url",
                "twilio_account_sid",
                "twilio_auth_token",
                "twilio_from",
            ),
            "email": ("sendgrid_base_url", "sendgrid_api_key", "sendgrid_from"),
        }[channel_type]
        return [name for name in needed if not getattr(self, name)]


# --------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------


def _one_channel(value: Any, where: str, allow_fallbacks: bool) -> dict[str, Any]:
    accepted = (
        "each channel must be a mapping {type: slack|sms|email, to: TARGET"
        + (", fallbacks: [{type, to}, ...]}" if allow_fallbacks else "}")
    )
    if not isinstance(value, Mapping):
        raise NotifyError(f"{where} must be a mapping; {accepted}")
    unknown = sorted(
        set(value) - ({"type", "to", "fallbacks"} if allow_fallbacks else {"type", "to"})
    )
    if unknown:
        raise NotifyError(
            f"{where} has unknown key(s) {', '.join(map(str, unknown))}; {accepted}"
        )
    kind = value.get("type")
    if kind not in CHANNEL_TYPES:
        raise NotifyError(
            f"{where}.type {kind!r} is not a channel type; expected one of "
            f"{', '.join(CHANNEL_TYPES)}"
        )
    target = value.get("to")
    if not isinstance(target, str) or not target.strip():
        hint = {
            "slack": "a channel like '#akig-incidents'",
            "sms": "an E.164 phone number like '+33612345678'",
            "email": "an address like 'cto@akig.com'",
        }[kind]
        raise NotifyError(
            f"{where} ({kind}) has no 'to'; give {hint}"
        )
    channel: dict[str, Any] = {"type": kind, "to": target.strip()}
    if allow_fallbacks:
        fallbacks = value.get("fallbacks") or []
        if not isinstance(fallbacks, (list, tuple)):
            raise NotifyError(f"{where}.fallbacks must be a list; {accepted}")
        channel["fallbacks"] = [
            _one_channel(fb, f"{where}.fallbacks[{i}]", False)
            for i, fb in enumerate(fallbacks)
        ]
    return channel


def normalize_channels(channels: Any) -> list[dict[str, Any]]:
    """Validate the channel list and return plain dicts ``{type, to, fallbacks}``."""
    if isinstance(channels, (str, bytes, Mapping)) or not isinstance(
        channels, (list, tuple)
    ):
        raise NotifyError(
            "channels must be a list of mappings {type: slack|sms|email, to: TARGET}"
        )
    if not channels:
        raise NotifyError("channels is empty; give at least one {type, to}")
    return [
        _one_channel(ch, f"channels[{i}]", True) for i, ch in enumerate(channels)
    ]


def channel_label(channel: Mapping[str, Any]) -> str:
    """``sms:+33600000000``: how a channel is named in results."""
    return f"{channel['type']}:{channel['to']}"


def _describe(channel: Mapping[str, Any]) -> str:
    kind, target = channel["type"], channel["to"]
    if kind == "slack":
        return f"a Slack message to {target}"
    if kind == "sms":
        return f"an SMS to {target}"
    return f"an e-mail to {target}"


def _delivery_key(idempotency_key: str | None, channel: Mapping[str, Any]) -> str | None:
    """Per-delivery key: providers de-duplicate per key, and every recipient needs its own."""
    if not idempotency_key:
        return None
    return f"{idempotency_key}:{channel_label(channel)}"


# --------------------------------------------------------------------------
# Sending
# --------------------------------------------------------------------------


def _error_text(kind: str, status: int, raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    detail = text
    try:
        payload = json.loads(text) if text else None
    except ValueError:
        payload = None
    if isinstance(payload, Mapping):
        if kind == "sms" and "message" in payload:
            code = payload.get("code")
            detail = f"Twilio error {code}: {payload['message']}" if code else str(payload["message"])
        elif isinstance(payload.get("errors"), list):
            messages = [
                str(e.get("message")) for e in payload["errors"] if isinstance(e, Mapping)
            ]
            detail = "; ".join(m for m in messages if m) or text
        elif "message" in payload or "error" in payload:
            detail = str(payload.get("message") or payload.get("error"))
    return f"HTTP {status}" + (f": {detail}" if detail else "")


def _request(
    kind: str, providers: Providers, channel: Mapping[str, Any], message: str, subject: str
) -> tuple[str, bytes, dict[str, str]]:
    """URL, body and headers of the provider call for one channel."""
    if kind == "slack":
        body = json.dumps({"text": message, "channel": channel["to"]}).encode()
        return providers.slack_webhook_url or "", body, {"Content-Type": "application/json"}
    if kind == "sms":
        base = (providers.twilio_base_url or "").rstrip("/")
        url = f"{base}/2010-04-01/Accounts/{providers.twilio_account_sid}/Messages.json"
        body = urlencode(
            {"To": channel["to"], "From": providers.twilio_from, "Body": message}
        ).encode()
        credentials = f"{providers.twilio_account_sid}:{providers.twilio_auth_token}"
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode(),
        }
        return url, body, headers
    base = (providers.sendgrid_base_url or "").rstrip("/")
    body = json.dumps(
        {
            "personalizations": [{"to": [{"email": channel["to"]}]}],
            "from": {"email": providers.sendgrid_from},
            "subject": subject,
            "content": [{"type": "text/plain", "value": message}],
        }
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {providers.sendgrid_api_key}",
    }
    return f"{base}/v3/mail/send", body, headers


def _provider_id(kind: str, response: Any, raw: bytes) -> str | None:
    if kind == "sms":
        try:
            payload = json.loads(raw.decode("utf-8"))
        except ValueError:
            return None
        return payload.get("sid") if isinstance(payload, Mapping) else None
    if kind == "email":
        headers = getattr(response, "headers", None)
        return headers.get("X-Message-Id") if headers is not None else None
    return None


def send_one(
    channel: Mapping[str, Any],
    message: str,
    *,
    providers: Providers,
    subject: str | None = None,
    timeout: float = 5,
    idempotency_key: str | None = None,
    fallback_for: str | None = None,
    opener: Opener = open_url,
) -> dict[str, Any]:
    """Send ``message`` on one channel; never raises for provider trouble.

    Returns the delivery record ``{type, to, status, ok, provider_id, error,
    idempotency_key, fallback_for}``; ``status`` is the HTTP status code, or
    0 when there was no HTTP answer (not configured, refused, timed out).
    """
    kind = channel["type"]
    redact = Redactor(providers.secrets(), min_length=4)
    key = _delivery_key(idempotency_key, channel)
    delivery: dict[str, Any] = {
        "type": kind,
        "to": channel["to"],
        "status": 0,
        "ok": False,
        "provider_id": None,
        "error": None,
        "idempotency_key": key,
        "fallback_for": fallback_for,
    }
    missing = providers.missing(kind)
    if missing:
        delivery["error"] = (
            f"{_TYPE_WORDS[kind]} is not configured: set {', '.join(missing)}"
        )
        return delivery
    url, body, headers = _request(
        kind, providers, channel, message, subject or _default_subject(message)
    )
    if key:
        headers["Idempotency-Key"] = key
    try:
        response = opener(
            url,
            data=body,
            headers=headers,
            method="POST",
            timeout=timeout,
            validate_certs=providers.validate_certs,
            follow_redirects="none",
        )
        raw = response.read() or b""
        status = int(getattr(response, "status", None) or response.getcode())
    except HTTPError as exc:
        try:
            raw = exc.read() or b""
        except Exception:  # the body of an error response is best effort
            raw = b""
        delivery["status"] = int(exc.code)
        delivery["error"] = redact(_error_text(kind, int(exc.code), raw))[:MAX_ERROR_CHARS]
        return delivery
    except (socket.timeout, TimeoutError):
        delivery["error"] = f"no answer from the {_TYPE_WORDS[kind]} provider within {timeout:g}s"
        return delivery
    except URLError as exc:
        delivery["error"] = redact(
            f"cannot reach the {_TYPE_WORDS[kind]} provider: {exc.reason}"
        )[:MAX_ERROR_CHARS]
        return delivery
    except (OSError, ValueError) as exc:
        delivery["error"] = redact(
            f"cannot reach the {_TYPE_WORDS[kind]} provider: {exc}"
        )[:MAX_ERROR_CHARS]
        return delivery
    delivery["status"] = status
    if 200 <= status < 300:
        delivery["ok"] = True
        delivery["provider_id"] = _provider_id(kind, response, raw)
    else:
        delivery["error"] = redact(_error_text(kind, status, raw))[:MAX_ERROR_CHARS]
    return delivery


def _default_subject(message: str) -> str:
    for line in message.splitlines():
        if line.strip():
            return line.strip()[:150]
    return DEFAULT_SUBJECT


# --------------------------------------------------------------------------
# Plan and run
# --------------------------------------------------------------------------


def plan(channels: Sequence[Mapping[str, Any]], mode: str, fallback: bool) -> list[str]:
    """Plain sentences saying what would be sent to whom (check mode)."""
    actions: list[str] = []
    for index, channel in enumerate(channels):
        fallbacks = channel.get("fallbacks") or []
        if mode == "first_success" and index > 0:
            sentence = f"If that fails, would send {_describe(channel)}"
        else:
            sentence = f"Would send {_describe(channel)}"
        if fallback and fallbacks:
            sentence += "; if it fails, " + ", then ".join(
                _describe(fb) for fb in fallbacks
            ) + " instead"
        actions.append(sentence)
        if mode == "first_success" and not fallback:
            break
    return actions


def _outcome_sentence(delivery: Mapping[str, Any]) -> str:
    what = _describe(delivery)
    prefix = "Sent" if delivery["ok"] else "Could not send"
    text = f"{prefix} {what}"
    if delivery.get("fallback_for"):
        text += f" (fallback for {delivery['fallback_for']})"
    if not delivery["ok"]:
        text += f": {delivery['error']}"
    return text


def notify(
    channels: Any,
    message: str,
    *,
    providers: Providers,
    subject: str | None = None,
    mode: str = "first_success",
    fallback: bool = True,
    timeout: float = 5,
    idempotency_key: str | None = None,
    check_mode: bool = False,
    opener: Opener = open_url,
) -> dict[str, Any]:
    """Send ``message`` on ``channels`` and return what happened.

    ``mode=all``: every channel is a recipient; when one fails and ``fallback``
    is true, its ``fallbacks`` are tried in order until one delivers.
    ``mode=first_success``: the channels are alternatives tried in order
    (each channel's own ``fallbacks`` right after it) until one delivers;
    with ``fallback`` false only the first channel is tried.

    The result holds ``changed`` (something was sent), ``delivered`` (every
    recipient reached in mode ``all``, at least one in ``first_success``),
    ``deliveries``, ``failed_channels``, ``undelivered``, ``actions`` and
    ``warnings``.  Raises :class:`NotifyError` for bad input only.
    """
    if mode not in MODES:
        raise NotifyError(f"mode {mode!r} is not supported; expected one of {', '.join(MODES)}")
    if not isinstance(message, str) or not message.strip():
        raise NotifyError("the message text is empty; give the text to send")
    normalized = normalize_channels(channels)
    if check_mode:
        return {
            "changed": True,
            "delivered": False,
            "deliveries": [],
            "failed_channels": [],
            "undelivered": [],
            "actions": plan(normalized, mode, fallback),
            "warnings": [],
        }

    deliveries: list[dict[str, Any]] = []

    def attempt(channel: Mapping[str, Any], fallback_for: str | None = None) -> bool:
        delivery = send_one(
            channel,
            message,
            providers=providers,
            subject=subject,
            timeout=timeout,
            idempotency_key=idempotency_key,
            fallback_for=fallback_for,
            opener=opener,
        )
        deliveries.append(delivery)
        return bool(delivery["ok"])

    def reach(channel: Mapping[str, Any]) -> bool:
        if attempt(channel):
            return True
        if fallback:
            for backup in channel["fallbacks"]:
                if attempt(backup, fallback_for=channel_label(channel)):
                    return True
        return False

    undelivered: list[str] = []
    if mode == "all":
        for channel in normalized:
            if not reach(channel):
                undelivered.append(channel_label(channel))
        delivered = not undelivered
    else:
        delivered = False
        for channel in normalized:
            if reach(channel):
                delivered = True
                break
            if not fallback:
                break
        if not delivered:
            undelivered = [channel_label(ch) for ch in normalized]

    failed = [channel_label(d) for d in deliveries if not d["ok"]]
    warnings = [
        f"{_TYPE_WORDS[d['type']]} to {d['to']} failed: {d['error']}"
        for d in deliveries
        if not d["ok"]
    ]
    if undelivered:
        warnings.append(
            "not delivered to "
            + ", ".join(undelivered)
            + (" (every channel failed)" if mode == "first_success" else "")
        )
    return {
        "changed": any(d["ok"] for d in deliveries),
        "delivered": delivered,
        "deliveries": deliveries,
        "failed_channels": failed,
        "undelivered": undelivered,
        "actions": [_outcome_sentence(d) for d in deliveries],
        "warnings": warnings,
    }
