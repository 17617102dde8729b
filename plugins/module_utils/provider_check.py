# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Provider checks that send nothing (RB-P2-003): the requests and the classification of the answers.

Twilio: ``GET {base}/2010-04-01/Accounts/{sid}.json`` (the account fetch; ``status`` must be ``active``).
SendGrid: ``GET {base}/v3/scopes`` (the API key's scopes; they must include the required ones, ``mail.send``).
Classes: ok, credentials (401/403, a suspended account, a key without the scope), quota (429), outage (5xx,
refused connection), timeout, error (any other answer). Pure functions; no credential is ever returned.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any
from urllib.parse import quote

PROVIDERS = ("twilio", "sendgrid")


class ProviderCheckError(ValueError):
    """Bad input: the message names the input and what to do."""


def check_request(provider: str, base_url: str, account_sid: str = "", auth_token: str = "",
                  api_key: str = "") -> tuple[str, dict[str, str]]:
    """(url, headers) of the read-only call for ``provider``; missing credentials are refused."""
    base = (base_url or "").rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ProviderCheckError("base_url of %s must be an http(s) URL; got %r" % (provider, base_url))
    if provider == "twilio":
        missing = [n for n, v in (("twilio_account_sid", account_sid), ("twilio_auth_token", auth_token)) if not v]
        if missing:
            raise ProviderCheckError(
                "%s missing for the Twilio check: set akig_twilio_account_sid and akig_twilio_auth_token "
                "(from the vault) in the inventory" % " and ".join(missing))
        auth = base64.b64encode(("%s:%s" % (account_sid, auth_token)).encode()).decode()
        return ("%s/2010-04-01/Accounts/%s.json" % (base, quote(account_sid, safe="")),
                {"Authorization": "Basic " + auth, "Accept": "application/json"})
    if provider == "sendgrid":
        if not api_key:
            raise ProviderCheckError(
                "sendgrid_api_key missing for the SendGrid check: set akig_sendgrid_api_key (from the vault) "
                "in the inventory")
        return ("%s/v3/scopes" % base, {"Authorization": "Bearer " + api_key, "Accept": "application/json"})
    raise ProviderCheckError("provider must be one of %s; got %r" % (", ".join(PROVIDERS), provider))


def classify(provider: str, status: int | None, body: Any = None, required_scopes: Any = ("mail.send",),
             error: str = "") -> dict[str, Any]:
    """The class of one check's answer. ``status`` None: no answer (``error`` says why)."""
    if status is None:
        low = (error or "").lower()
        cls = "timeout" if ("timed out" in low or "timeout" in low) else "outage"
        return {"class": cls, "status": None, "detail": "no answer: %s" % (error or "connection failed")}
    if status in (401, 403):
        return {"class": "credentials", "status": status, "detail": "the provider refused the credentials (HTTP %d)" % status}
    if status == 429:
        return {"class": "quota", "status": status, "detail": "the provider's rate limit or quota is reached (HTTP 429)"}
    if status >= 500:
        return {"class": "outage", "status": status, "detail": "the provider answers HTTP %d" % status}
    if not 200 <= status < 300:
        return {"class": "error", "status": status, "detail": "unexpected answer HTTP %d" % status}
    data = body
    if isinstance(body, (str, bytes)):
        try:
            data = json.loads(body or "{}")
        except ValueError:
            return {"class": "error", "status": status, "detail": "the answer is not JSON"}
    if provider == "twilio":
        state = (data or {}).get("status") if isinstance(data, dict) else None
        if state != "active":
            return {"class": "credentials", "status": status, "detail": "the Twilio account is %s, not active" % (state or "unknown")}
        return {"class": "ok", "status": status, "detail": "account active"}
    scopes = (data or {}).get("scopes") if isinstance(data, dict) else None
    if not isinstance(scopes, list):
        return {"class": "error", "status": status, "detail": "the answer has no scopes"}
    lacking = [s for s in required_scopes if s not in scopes]
    if lacking:
        return {"class": "credentials", "status": status, "detail": "the API key lacks the scopes %s" % ", ".join(lacking)}
    return {"class": "ok", "status": status, "detail": "the API key has %s" % ", ".join(required_scopes)}


def fingerprint(value: str) -> str:
    """The first 12 hex digits of a credential's SHA-256: compare credentials without showing them."""
    return hashlib.sha256((value or "").encode()).hexdigest()[:12]
