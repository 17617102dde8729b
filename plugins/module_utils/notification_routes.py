# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""RB-P2-003: the fallback matrix (data from the inventory), the routes it gives for the providers'
health, and the class of a provider error.

Pure functions, no Ansible imports (tested in tests/unit/plugins/module_utils/test_notification_routes.py).

The matrix maps a primary -- a provider channel (``sms``, ``email``) or the kind ``preavis`` -- to an
ordered list of fallback channels, as in AKIG's incident document:

    sms:     [email, push]                   # SMS (Twilio)      -> e-mail (SendGrid) -> push notification
    email:   [sms, dashboard]                # e-mail (SendGrid) -> SMS (Twilio)      -> dashboard message
    preavis: [phone_call, registered_mail]   # préavis critical  -> phone-call task   -> registered-mail task

Routes are not chained: a message whose provider is down goes to the FIRST fallback of its own row that
is usable now (a channel with no provider -- push, dashboard, phone_call, registered_mail -- is always
usable; a provider channel only when its provider is ``ok``). So ``sms: [email]`` and ``email: [sms]``
together are fine (each is used only while the other provider works), while a row that lists its own
primary (``sms: [email, sms]``) or a channel twice is a cycle and is refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

CHANNELS = ("sms", "email", "push", "dashboard", "phone_call", "registered_mail")
PROVIDER_OF_CHANNEL = {"sms": "twilio", "email": "sendgrid"}
PROVIDERS = ("twilio", "sendgrid")
PRIMARIES = ("sms", "email", "preavis")
HEALTH_CLASSES = ("ok", "credentials", "quota", "outage", "timeout", "error")
DEFAULT_REROUTE_ON = ("outage", "timeout", "error")
MATRIX_VAR = "notification_fallback_matrix"


class NotificationRoutesError(ValueError):
    """Bad input: the message says which input and what is accepted."""


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def validate_matrix(matrix: Any, name: str = MATRIX_VAR) -> dict[str, list[str]]:
    """A plain copy of the matrix once every row is known, non-empty and free of cycles."""
    if not isinstance(matrix, Mapping) or not matrix:
        raise NotificationRoutesError(
            "%s must be a mapping of primary (%s) to a list of fallback channels; got %r"
            % (name, ", ".join(PRIMARIES), matrix))
    out: dict[str, list[str]] = {}
    for key, fallbacks in matrix.items():
        primary = _text(key)
        if primary not in PRIMARIES:
            raise NotificationRoutesError(
                "%s: unknown primary channel %r; the primaries are %s" % (name, key, ", ".join(PRIMARIES)))
        if isinstance(fallbacks, (str, bytes)) or not isinstance(fallbacks, (list, tuple)) or not fallbacks:
            raise NotificationRoutesError(
                "%s.%s must be a non-empty list of fallback channels; got %r" % (name, primary, fallbacks))
        seen = [primary] if primary in CHANNELS else []
        row = []
        for item in fallbacks:
            channel = _text(item)
            if channel not in CHANNELS:
                raise NotificationRoutesError(
                    "%s.%s: unknown channel %r; the channels are %s" % (name, primary, item, ", ".join(CHANNELS)))
            if channel in seen:
                raise NotificationRoutesError(
                    "%s.%s: fallback cycle: %s comes back to %s; a row lists each channel once and never its primary"
                    % (name, primary, " -> ".join([primary] + row + [channel]), channel))
            seen.append(channel)
            row.append(channel)
        out[primary] = row
    return out


def health_class(value: Any, provider: str = "") -> str:
    """The class of one provider's health: a class name, or a provider_check result ({'class': ...})."""
    cls = value.get("class") if isinstance(value, Mapping) else value
    cls = _text(cls)
    if cls not in HEALTH_CLASSES:
        raise NotificationRoutesError(
            "the health of provider %r must be one of %s; got %r" % (provider, ", ".join(HEALTH_CLASSES), value))
    return cls


def _health(health: Any) -> dict[str, str]:
    if not isinstance(health, Mapping):
        raise NotificationRoutesError("the providers' health must be a mapping provider -> class; got %r" % (health,))
    out = {}
    for provider in PROVIDERS:
        if provider not in health:
            raise NotificationRoutesError(
                "the providers' health has no entry for %r; give one for each of %s" % (provider, ", ".join(PROVIDERS)))
        out[provider] = health_class(health[provider], provider)
    return out


def notification_routes(matrix: Any, health: Any, reroute_on: Any = DEFAULT_REROUTE_ON) -> dict[str, Any]:
    """The routes to use now.

    Returns ``routes`` (provider channel -> fallback channel, for the messages that are not préavis),
    ``preavis_routes`` (the same for préavis), ``rerouted`` (the provider channels routed away), ``unrouted``
    (provider channels routed away with no usable fallback: their messages wait), ``down`` (providers whose
    class is not ok) and ``health`` (provider -> class).
    """
    rows = validate_matrix(matrix)
    classes = _health(health)
    if isinstance(reroute_on, (str, bytes)) or not isinstance(reroute_on, (list, tuple)):
        raise NotificationRoutesError("reroute_on must be a list of health classes; got %r" % (reroute_on,))
    bad = [c for c in reroute_on if c not in HEALTH_CLASSES or c == "ok"]
    if bad:
        raise NotificationRoutesError(
            "reroute_on: %r are not failure classes; choose from %s" % (bad, ", ".join(HEALTH_CLASSES[1:])))

    def usable(channel: str) -> bool:
        provider = PROVIDER_OF_CHANNEL.get(channel)
        return provider is None or classes[provider] == "ok"

    away = [ch for ch, prov in PROVIDER_OF_CHANNEL.items() if classes[prov] in reroute_on]
    routes: dict[str, str] = {}
    preavis_routes: dict[str, str] = {}
    unrouted = []
    for channel in away:
        target = next((c for c in rows.get(channel, []) if usable(c)), None)
        if target:
            routes[channel] = target
        else:
            unrouted.append(channel)
        preavis_target = next((c for c in rows.get("preavis", rows.get(channel, [])) if usable(c)), None)
        if preavis_target:
            preavis_routes[channel] = preavis_target
    return {
        "routes": routes,
        "preavis_routes": preavis_routes,
        "rerouted": away,
        "unrouted": unrouted,
        "down": [p for p in PROVIDERS if classes[p] != "ok"],
        "health": classes,
    }


_HTTP = re.compile(r"\bHTTP\s+(\d{3})\b")


def error_class(text: Any) -> str:
    """The class of one provider error text (the worker's log, the queue's last_error): credentials (401/403),
    quota (429), outage (5xx, connection refused or reset), timeout, or other."""
    s = str(text or "")
    m = _HTTP.search(s)
    if m:
        code = int(m.group(1))
        if code in (401, 403):
            return "credentials"
        if code == 429:
            return "quota"
        if code >= 500:
            return "outage"
        return "other"
    low = s.lower()
    if "timeout" in low or "timed out" in low:
        return "timeout"
    if "network error" in low or "econnrefused" in low or "econnreset" in low:
        return "outage"
    return "other"


def error_classes(rows: Any) -> dict[str, int]:
    """Counts by class of a list of error texts, or of rows ``{error|last_error, count}``."""
    if not isinstance(rows, (list, tuple)):
        raise NotificationRoutesError("error_classes takes a list of error texts or rows; got %r" % (rows,))
    out: dict[str, int] = {}
    for row in rows:
        if isinstance(row, Mapping):
            text = row.get("error", row.get("last_error"))
            count = int(row.get("count", 1) or 0)
        else:
            text, count = row, 1
        cls = error_class(text)
        out[cls] = out.get(cls, 0) + count
    return dict(sorted(out.items()))


# One failed send attempt in the worker's JSON log lines: "error":"HTTP 503 ..." or "error":"network error: ...".
_LOG_ERROR = re.compile(r'"error":"((?:HTTP [0-9]{3}|network error)[^"]*)"')


def log_error_classes(text: Any) -> dict[str, int]:
    """Counts by class of the provider errors in a stretch of the worker's log (its JSON lines' ``error``)."""
    if text is None:
        return {}
    if not isinstance(text, str):
        raise NotificationRoutesError("log_error_classes takes the text of the worker's log; got %r"
                                      % (type(text).__name__,))
    return error_classes(_LOG_ERROR.findall(text))


_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PLACEHOLDERS = ("", "CHANGE_ME", "changeme", "TODO")


def _rate_problem(name: str, value: Any) -> str | None:
    if value is None or value == "" or str(value).lower() in ("none", "null"):
        return None
    try:
        rate = float(value)
    except (TypeError, ValueError):
        return "%s must be a number of messages per second above 0 (or null for no limit); got %r" % (name, value)
    if math.isnan(rate) or math.isinf(rate) or rate <= 0:
        return "%s must be a number of messages per second above 0 (or null for no limit); got %r" % (name, value)
    return None


def replay_problems(inputs: Any) -> list[str]:
    """Every problem of the inputs of RB-P2-003 / the notification_replay role, each naming its input (empty: fine).

    ``inputs``: matrix, reroute_on, twilio_rate, sendgrid_rate, concurrency, batch_size, max_messages,
    credentials (name -> value; the value is only tested for emptiness or a placeholder, never shown),
    test_send, test_recipients ({sms, email}), test_allowed (list), pending_threshold.
    """
    if not isinstance(inputs, Mapping):
        return ["the inputs must be a mapping; got %r" % (inputs,)]
    problems = []
    try:
        rows = validate_matrix(inputs.get("matrix"))
        missing = [ch for ch in PROVIDER_OF_CHANNEL if ch not in rows]
        if missing:
            problems.append("%s has no row for %s: give each provider channel its fallbacks"
                            % (MATRIX_VAR, ", ".join(missing)))
    except NotificationRoutesError as exc:
        problems.append(str(exc))
    reroute_on = inputs.get("reroute_on", list(DEFAULT_REROUTE_ON))
    if isinstance(reroute_on, (str, bytes)) or not isinstance(reroute_on, (list, tuple)) or any(
            c not in HEALTH_CLASSES or c == "ok" for c in reroute_on):
        problems.append("notification_replay_reroute_on must be a list of failure classes among %s; got %r"
                        % (", ".join(HEALTH_CLASSES[1:]), reroute_on))
    for name in ("twilio_rate", "sendgrid_rate"):
        problem = _rate_problem("notification_replay_" + name, inputs.get(name))
        if problem:
            problems.append(problem)
    for name, low in (("concurrency", 1), ("batch_size", 1), ("max_messages", 0), ("pending_threshold", 1)):
        if name not in inputs:
            continue
        value = inputs.get(name)
        try:
            ok = int(str(value)) >= low and float(str(value)) == int(str(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            problems.append("%s must be a whole number of at least %d; got %r" % (name, low, value))
    senders = inputs.get("senders") or {}
    for name, value in (senders.items() if isinstance(senders, Mapping) else []):
        pattern = _E164 if "twilio" in name else _EMAIL
        if not pattern.match(str(value or "")):
            problems.append("%s %r is not %s (the sender of the replayed messages)" % (
                name, value, "an E.164 phone number" if "twilio" in name else "an e-mail address"))
    creds = inputs.get("credentials") or {}
    if isinstance(creds, Mapping):
        empty = [n for n, v in creds.items() if v is None or str(v).strip() in PLACEHOLDERS]
        if empty:
            problems.append("missing credentials: %s empty or a placeholder; set them in the environment's vault "
                            "(vault_akig_*)" % ", ".join(sorted(empty)))
    if inputs.get("test_send", True) in (True, "true", "True", 1):
        recipients = inputs.get("test_recipients")
        allowed = inputs.get("test_allowed")
        if not isinstance(allowed, (list, tuple)) or not allowed:
            problems.append("notification_test_recipients_allowed must list the test recipients the runbook may "
                            "send to; got %r" % (allowed,))
            allowed = []
        if not isinstance(recipients, Mapping) or not recipients:
            problems.append("notification_test_recipients must give a test recipient per channel ({sms: '+33...', "
                            "email: '...'}); got %r" % (recipients,))
            recipients = {}
        for channel, value in recipients.items():
            if channel not in PROVIDER_OF_CHANNEL:
                problems.append("notification_test_recipients: unknown channel %r; use sms and email" % (channel,))
            elif not (_E164 if channel == "sms" else _EMAIL).match(str(value or "")):
                problems.append("notification_test_recipients.%s %r is not %s" % (
                    channel, value, "an E.164 phone number" if channel == "sms" else "an e-mail address"))
            elif value not in allowed:
                problems.append("notification_test_recipients.%s %r is not in notification_test_recipients_allowed; "
                                "a test message goes only to an allowed recipient" % (channel, value))
    return problems


DIAGNOSES = ("ok", "outage", "timeout", "error", "quota", "app_credentials", "vault_credentials")
CLASS_OF_DIAGNOSIS = {"app_credentials": "credentials", "vault_credentials": "credentials"}


def provider_diagnosis(check_class: Any, test_status: Any = None, queue_classes: Any = None) -> str:
    """What is wrong with one provider, from three views.

    ``check_class``: the read-only check with the vault's credentials (provider_check). ``test_status``: the
    provider's HTTP status in the app's test send (POST /api/notifications/test), None when none was made or no
    answer came. ``queue_classes``: the class counts of the channel's recent errors (queue and worker log).

    The vault's credentials refused -> ``vault_credentials`` (new keys are needed: nothing to deploy). The vault's
    work but the app's are refused (its test send, else its recent errors, say 401/403) -> ``app_credentials``
    (the rotation path deploys the vault's). Otherwise the check's class, or the test send's when it failed alone.
    """
    cls = health_class(check_class, "check")
    if cls == "credentials":
        return "vault_credentials"
    if cls != "ok":
        return cls
    try:
        status = int(test_status) if test_status not in (None, "", "None") else None
    except (TypeError, ValueError):
        status = None
    if status is not None:
        if status in (401, 403):
            return "app_credentials"
        if status == 429:
            return "quota"
        if status >= 500:
            return "outage"
        return "ok"
    counts = queue_classes if isinstance(queue_classes, Mapping) else {}
    recent = {k: int(v or 0) for k, v in counts.items() if k != "other"}
    if recent and max(recent, key=lambda k: (recent[k], k)) == "credentials":
        return "app_credentials"
    return "ok"


def sum_counts(results: Any) -> dict[str, int]:
    """The sum of the ``counts`` of several replay results (skipped results count nothing)."""
    total: dict[str, int] = {}
    for res in results if isinstance(results, (list, tuple)) else []:
        counts = res.get("counts") if isinstance(res, Mapping) else None
        for key, value in (counts or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + int(value)
    return dict(sorted(total.items()))
