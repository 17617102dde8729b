# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""HTTP clients of the notification replay: Twilio (SMS) and SendGrid (e-mail).

Standard library only (``http.client``), one keep-alive connection per thread and host. Every call
returns a :class:`SendResult` or a list of provider records; nothing here ever puts a credential in
a result or an error text (errors are built from the status and the provider's error message only).

Result kinds:

* ``ok`` -- accepted (2xx);
* ``retry`` -- 5xx or 429 (``retry_after`` holds the seconds of a Retry-After header): nothing was sent;
* ``network`` -- no answer (timeout, connection reset): the message MAY have been sent, the caller
  must look it up in the provider's log before sending it again;
* ``auth`` -- 401/403: the credentials are refused, no further call of that provider makes sense;
* ``invalid`` -- any other 4xx: this message will never be accepted as it is.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import quote, urlencode, urlsplit

__all__ = ["SendResult", "HttpClient", "TwilioClient", "SendGridClient", "ProviderReadError"]

USER_AGENT = "akig.runbooks-notification_replay/1.0"


class ProviderReadError(Exception):
    """A provider log read (reconciliation) failed; ``retry_after`` is set for a 429."""

    def __init__(self, msg: str, status: Optional[int] = None, retry_after: Optional[float] = None) -> None:
        super().__init__(msg)
        self.status = status
        self.retry_after = retry_after


class SendResult:
    """The outcome of one provider send (see the module docstring for ``kind``)."""

    __slots__ = ("kind", "status", "provider_id", "retry_after", "error")

    def __init__(self, kind: str, status: Optional[int] = None, provider_id: Optional[str] = None,
                 retry_after: Optional[float] = None, error: Optional[str] = None) -> None:
        self.kind = kind
        self.status = status
        self.provider_id = provider_id
        self.retry_after = retry_after
        self.error = error

    def __repr__(self) -> str:
        return "SendResult(%s, %s)" % (self.kind, self.status)


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_text(status: int, body: bytes) -> str:
    detail = ""
    try:
        data = json.loads(body.decode("utf-8") or "null")
        if isinstance(data, dict):
            errors = data.get("errors")
            if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                detail = str(errors[0].get("message") or "")
            else:
                detail = str(data.get("message") or data.get("error") or "")
    except (ValueError, UnicodeDecodeError):
        detail = ""
    detail = " ".join(detail.split())[:120]
    return "HTTP %d%s" % (status, ": " + detail if detail else "")


def classify(status: int, headers: Dict[str, str], body: bytes) -> SendResult:
    """A provider answer as a :class:`SendResult` (pure; unit-tested)."""
    if 200 <= status < 300:
        return SendResult("ok", status)
    error = _error_text(status, body)
    if status == 429:
        return SendResult("retry", status, retry_after=_retry_after(headers.get("retry-after")), error=error)
    if status >= 500:
        return SendResult("retry", status, retry_after=_retry_after(headers.get("retry-after")), error=error)
    if status in (401, 403):
        return SendResult("auth", status, error=error)
    return SendResult("invalid", status, error=error)


class HttpClient:
    """Keep-alive HTTP(S) to one base URL; one connection per thread (``http.client`` is not thread-safe)."""

    def __init__(self, base_url: str, timeout: float) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base URL must be http(s)://host[:port][/prefix]")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port
        self.prefix = parts.path
        self.timeout = timeout
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None

    def request(self, method: str, path: str, headers: Dict[str, str],
                body: Optional[bytes] = None) -> Tuple[int, Dict[str, str], bytes]:
        """(status, lower-case headers, body); raises OSError/HTTPException when there is no answer."""
        conn = self._connection()
        all_headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        all_headers.update(headers)
        try:
            conn.request(method, self.prefix + path, body=body, headers=all_headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self._drop()
            raise
        if resp.will_close:
            self._drop()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def close(self) -> None:
        self._drop()


def _network_error(exc: BaseException) -> SendResult:
    kind = "timeout" if isinstance(exc, socket.timeout) else type(exc).__name__
    return SendResult("network", None, error="network error: %s" % kind)


class TwilioClient:
    """Twilio Programmable Messaging: send, list (reconciliation), account fetch."""

    def __init__(self, base_url: str, account_sid: str, auth_token: str, sender: str, timeout: float) -> None:
        self.http = HttpClient(base_url, timeout)
        self.account_sid = account_sid
        self.sender = sender
        token = base64.b64encode(("%s:%s" % (account_sid, auth_token)).encode("utf-8")).decode("ascii")
        self._auth = {"Authorization": "Basic " + token}
        self.messages_path = "/2010-04-01/Accounts/%s/Messages.json" % quote(account_sid, safe="")

    def send(self, to: str, body: str, key: str) -> SendResult:
        data = urlencode({"To": to, "From": self.sender, "Body": body}).encode("utf-8")
        headers = dict(self._auth)
        headers.update({"Content-Type": "application/x-www-form-urlencoded", "Idempotency-Key": key,
                        "I-Twilio-Idempotency-Token": key})
        try:
            status, rheaders, rbody = self.http.request("POST", self.messages_path, headers, data)
        except (OSError, http.client.HTTPException) as exc:
            return _network_error(exc)
        result = classify(status, rheaders, rbody)
        if result.kind == "ok":
            try:
                result.provider_id = json.loads(rbody.decode("utf-8")).get("sid")
            except (ValueError, UnicodeDecodeError, AttributeError):
                result.provider_id = None
        return result

    def list_messages(self, to: str, sent_after: str, page_size: int = 100, max_pages: int = 50) -> List[Dict[str, Any]]:
        """Every message to ``to`` sent at or after ``sent_after`` (ISO 8601 UTC), following next_page_uri."""
        query = "To=%s&DateSent%%3E=%s&PageSize=%d" % (quote(to, safe=""), quote(sent_after, safe=""), page_size)
        path: Optional[str] = self.messages_path + "?" + query
        found: List[Dict[str, Any]] = []
        pages = 0
        while path and pages < max_pages:
            data = self._get_json(path)
            found.extend(m for m in data.get("messages") or [] if isinstance(m, dict))
            path = data.get("next_page_uri")
            pages += 1
        return found

    def account(self) -> Dict[str, Any]:
        return self._get_json("/2010-04-01/Accounts/%s.json" % quote(self.account_sid, safe=""))

    def _get_json(self, path: str) -> Dict[str, Any]:
        try:
            status, headers, body = self.http.request("GET", path, dict(self._auth))
        except (OSError, http.client.HTTPException) as exc:
            raise ProviderReadError("Twilio message list: %s" % _network_error(exc).error) from None
        if status != 200:
            raise ProviderReadError("Twilio message list: %s" % _error_text(status, body), status,
                                    _retry_after(headers.get("retry-after")))
        data = json.loads(body.decode("utf-8"))
        return data if isinstance(data, dict) else {}

    def close(self) -> None:
        self.http.close()


class SendGridClient:
    """SendGrid v3: mail send with custom_args {"akig_key": key}, and the Email Activity feed."""

    def __init__(self, base_url: str, api_key: str, sender: str, timeout: float) -> None:
        self.http = HttpClient(base_url, timeout)
        self.sender = sender
        self._auth = {"Authorization": "Bearer " + api_key}

    def send(self, to: str, subject: Optional[str], body: str, key: str) -> SendResult:
        payload = {
            "personalizations": [{"to": [{"email": to}]}],
            "from": {"email": self.sender},
            "subject": subject or "AKIG",
            "content": [{"type": "text/plain", "value": body or " "}],
            "custom_args": {"akig_key": key},
        }
        headers = dict(self._auth)
        headers.update({"Content-Type": "application/json", "Idempotency-Key": key})
        try:
            status, rheaders, rbody = self.http.request("POST", "/v3/mail/send", headers,
                                                        json.dumps(payload).encode("utf-8"))
        except (OSError, http.client.HTTPException) as exc:
            return _network_error(exc)
        result = classify(status, rheaders, rbody)
        if result.kind == "ok":
            result.provider_id = rheaders.get("x-message-id")
        return result

    def activity(self, key: str, limit: int = 10) -> List[Dict[str, Any]]:
        """The activity-feed messages sent with custom_args akig_key = ``key``."""
        query = "unique_args['akig_key']=\"%s\"" % key.replace('"', "")
        path = "/v3/messages?" + urlencode({"query": query, "limit": str(limit)})
        try:
            status, headers, body = self.http.request("GET", path, dict(self._auth))
        except (OSError, http.client.HTTPException) as exc:
            raise ProviderReadError("SendGrid activity: %s" % _network_error(exc).error) from None
        if status != 200:
            raise ProviderReadError("SendGrid activity: %s" % _error_text(status, body), status,
                                    _retry_after(headers.get("retry-after")))
        data = json.loads(body.decode("utf-8"))
        messages = data.get("messages") if isinstance(data, dict) else None
        return [m for m in messages or [] if isinstance(m, dict)]

    def close(self) -> None:
        self.http.close()


def now_monotonic() -> float:
    return time.monotonic()
