# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""plugins/module_utils/notify.py against a real SaaS emulator (own instance, real HTTP, served in-process)."""

from __future__ import annotations

import io
import json
import re
import socket
import urllib.request
from email.message import Message
from typing import Any
from urllib.error import HTTPError

import pytest

from ansible_collections.akig.runbooks.plugins.module_utils import notify as n
from ansible_collections.akig.runbooks.tests.support.emulator import Emulator

CREDS = {
    "twilio_account_sid": "ACunit0123456789abcdef",
    "twilio_auth_token": "twilio-token-CANARY-5d1e",
    "sendgrid_api_key": "SG.sendgrid-key-CANARY-77a0",
    "slack_webhook_path": "T0UNIT/B0UNIT/slackhookCANARY9c2",
    "ticket_api_token": "ticket-token-CANARY-0b3f",
}
SECRETS = [
    CREDS["twilio_auth_token"],
    CREDS["sendgrid_api_key"],
    CREDS["slack_webhook_path"],
    "slackhookCANARY9c2",
]
ONCALL = "+33600000000"


@pytest.fixture(scope="module")
def emulator_credentials() -> dict[str, str]:
    """The shared emulator fixture (tests/support/emulator.py) accepts this file's canary credentials."""
    return CREDS


def providers(emu: Emulator, **overrides: Any) -> n.Providers:
    settings: dict[str, Any] = dict(
        slack_webhook_url=f"{emu.url}/slack/services/{CREDS['slack_webhook_path']}",
        twilio_base_url=f"{emu.url}/twilio",
        twilio_account_sid=CREDS["twilio_account_sid"],
        twilio_auth_token=CREDS["twilio_auth_token"],
        twilio_from="+33700000000",
        sendgrid_base_url=f"{emu.url}/sendgrid",
        sendgrid_api_key=CREDS["sendgrid_api_key"],
        sendgrid_from="incidents@akig.com",
    )
    settings.update(overrides)
    return n.Providers(**settings)


def assert_no_secret(result: Any) -> None:
    text = json.dumps(result) + repr(result)
    for secret in SECRETS:
        assert secret not in text


MESSAGE = "[INCIDENT ALERT - 14:29 UTC]\nINC-1 P1 - Dashboard AKIG inaccessible\nImpact: 143 utilisateurs"


# -- success per channel -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "to", "service", "status", "id_re"),
    [
        ("slack", "#akig-incidents", "slack", 200, None),
        ("sms", ONCALL, "twilio", 201, r"^SM[0-9a-f]{32}$"),
        ("email", "cto@akig.com", "sendgrid", 202, r"^\S{10,}$"),
    ],
)
def test_each_channel_delivers(emu: Emulator, kind: str, to: str, service: str, status: int, id_re: str | None) -> None:
    result = n.notify([{"type": kind, "to": to}], MESSAGE, providers=providers(emu), subject="[AKIG P1] alert")

    assert result["changed"] and result["delivered"]
    (delivery,) = result["deliveries"]
    assert delivery["ok"] and delivery["status"] == status and delivery["error"] is None
    if id_re:
        assert re.match(id_re, delivery["provider_id"])
    else:
        assert delivery["provider_id"] is None
    (entry,) = emu.ledger()
    assert entry["service"] == service and entry["to"] == [to]
    assert "Impact: 143 utilisateurs" in (entry["text"] if kind == "slack" else entry["body"])
    if kind == "email":
        assert entry["subject"] == "[AKIG P1] alert" and entry["from"] == "incidents@akig.com"
    if delivery["provider_id"]:
        assert entry["provider_id"] == delivery["provider_id"]
    assert result["actions"] == [f"Sent {n._describe({'type': kind, 'to': to})}"]
    assert_no_secret(result)


def test_email_subject_defaults_to_the_first_line(emu: Emulator) -> None:
    n.notify([{"type": "email", "to": "cto@akig.com"}], "\n  first line \nsecond", providers=providers(emu))
    assert emu.ledger()[0]["subject"] == "first line"


# -- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "to", "override", "status", "needle"),
    [
        ("sms", ONCALL, {"twilio_auth_token": "wrong-token-value"}, 401, "Twilio error 20003: Authenticate"),
        ("email", "cto@akig.com", {"sendgrid_api_key": "SG.wrong-key-value"}, 401, "authorization grant is invalid"),
        ("slack", "#akig-incidents", {"slack_webhook_url": None}, 404, "no_service"),
    ],
)
def test_bad_credentials_are_recorded_not_raised(
    emu: Emulator, kind: str, to: str, override: dict[str, Any], status: int, needle: str
) -> None:
    if kind == "slack":
        override = {"slack_webhook_url": f"{emu.url}/slack/services/T0UNIT/B0UNIT/wrongpath"}
    result = n.notify([{"type": kind, "to": to}], MESSAGE, providers=providers(emu, **override))

    (delivery,) = result["deliveries"]
    assert not delivery["ok"] and delivery["status"] == status
    assert needle in delivery["error"]
    assert result["delivered"] is False and result["changed"] is False
    assert result["failed_channels"] == [f"{kind}:{to}"] and result["undelivered"] == [f"{kind}:{to}"]
    assert any(needle in w for w in result["warnings"])
    assert emu.ledger() == []
    for value in override.values():
        assert value not in json.dumps(result)
    assert_no_secret(result)


def test_twilio_outage_falls_back_to_email(emu: Emulator) -> None:
    emu.mode("twilio", "outage")
    channels = [
        {"type": "slack", "to": "#akig-incidents"},
        {"type": "sms", "to": ONCALL, "fallbacks": [{"type": "email", "to": "oncall@akig.com"}]},
    ]
    result = n.notify(channels, MESSAGE, providers=providers(emu), mode="all", idempotency_key="INC-1:alert")

    assert result["delivered"] is True and result["changed"] is True
    assert [(d["type"], d["ok"], d["status"]) for d in result["deliveries"]] == [
        ("slack", True, 200), ("sms", False, 503), ("email", True, 202)]
    assert result["deliveries"][2]["fallback_for"] == f"sms:{ONCALL}"
    assert result["failed_channels"] == [f"sms:{ONCALL}"] and result["undelivered"] == []
    assert "Twilio error 20503" in result["deliveries"][1]["error"]
    assert result["actions"][2] == f"Sent an e-mail to oncall@akig.com (fallback for sms:{ONCALL})"
    assert [w for w in result["warnings"] if "SMS to +33600000000 failed" in w]
    (mail,) = emu.ledger("?service=sendgrid")
    assert mail["to"] == ["oncall@akig.com"] and "INCIDENT ALERT" in mail["body"]
    assert mail["idempotency_key"] == "INC-1:alert:email:oncall@akig.com"
    assert [r["reason"] for r in emu.rejections("?service=twilio")] == ["mode:outage"]


def test_fallback_false_records_the_failure_only(emu: Emulator) -> None:
    emu.mode("twilio", "outage")
    channels = [{"type": "sms", "to": ONCALL, "fallbacks": [{"type": "email", "to": "oncall@akig.com"}]}]
    result = n.notify(channels, MESSAGE, providers=providers(emu), mode="all", fallback=False)
    assert result["delivered"] is False and [d["type"] for d in result["deliveries"]] == ["sms"]
    assert emu.ledger() == []


def test_first_success_stops_at_the_first_delivery(emu: Emulator) -> None:
    chain = [{"type": "sms", "to": ONCALL}, {"type": "email", "to": "oncall@akig.com"}]
    result = n.notify(chain, MESSAGE, providers=providers(emu), mode="first_success")
    assert [d["type"] for d in result["deliveries"]] == ["sms"] and result["delivered"]
    assert [e["service"] for e in emu.ledger()] == ["twilio"]

    emu.reset()
    emu.mode("twilio", "quota")
    result = n.notify(chain, MESSAGE, providers=providers(emu), mode="first_success")
    assert [(d["type"], d["status"]) for d in result["deliveries"]] == [("sms", 429), ("email", 202)]
    assert result["delivered"] and result["failed_channels"] == [f"sms:{ONCALL}"]

    emu.reset()
    emu.mode("twilio", "outage")
    result = n.notify(chain, MESSAGE, providers=providers(emu), mode="first_success", fallback=False)
    assert [d["type"] for d in result["deliveries"]] == ["sms"] and not result["delivered"]
    assert result["undelivered"] == [f"sms:{ONCALL}", "email:oncall@akig.com"]


def test_provider_failures_never_raise(emu: Emulator) -> None:
    for service in ("twilio", "sendgrid", "slack"):
        emu.mode(service, "outage")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    channels = [
        {"type": "slack", "to": "#akig-incidents"},
        {"type": "sms", "to": ONCALL, "fallbacks": [{"type": "email", "to": "oncall@akig.com"}]},
        {"type": "email", "to": "cto@akig.com", "fallbacks": [{"type": "sms", "to": "+33611111111"}]},
    ]
    for prov in (providers(emu), providers(emu, twilio_base_url=dead, sendgrid_base_url=dead),
                 n.Providers()):
        result = n.notify(channels, MESSAGE, providers=prov, mode="all")
        assert result["delivered"] is False and result["changed"] is False
        assert len(result["deliveries"]) == 5 and not any(d["ok"] for d in result["deliveries"])
        assert result["undelivered"] == ["slack:#akig-incidents", f"sms:{ONCALL}", "email:cto@akig.com"]
        assert_no_secret(result)
    assert "not configured: set slack_webhook_url" in result["deliveries"][0]["error"]
    assert emu.ledger() == []


def test_slow_provider_times_out(emu: Emulator) -> None:
    emu.mode("twilio", "slow", delay_s=1.5)
    result = n.notify([{"type": "sms", "to": ONCALL}], MESSAGE, providers=providers(emu), timeout=0.5)
    (delivery,) = result["deliveries"]
    assert delivery["status"] == 0 and not delivery["ok"]
    assert "0.5s" in delivery["error"] or "timed out" in delivery["error"]


# -- secrets and idempotency ------------------------------------------------------------------


def test_provider_error_text_is_redacted() -> None:
    prov = n.Providers(twilio_account_sid="ACsid", twilio_auth_token="leaky-token-1234", twilio_from="+3370",
                       twilio_base_url="https://api.example")

    def opener(url: str, **kwargs: Any) -> Any:
        raise HTTPError(url, 400, "Bad", Message(), io.BytesIO(
            b'{"code": 21211, "message": "token leaky-token-1234 and url ' + url.encode() + b'"}'))

    result = n.notify([{"type": "sms", "to": ONCALL}], "x", providers=prov, opener=opener)
    error = result["deliveries"][0]["error"]
    assert "leaky-token-1234" not in json.dumps(result) and "[REDACTED]" in error
    assert error.startswith("HTTP 400: Twilio error 21211")
    assert "leaky" not in repr(prov) and "ACsid" not in repr(prov)


def test_idempotency_key_is_sent_per_delivery(emu: Emulator) -> None:
    channels = [{"type": "sms", "to": ONCALL}, {"type": "email", "to": "cto@akig.com"},
                {"type": "slack", "to": "#akig-incidents"}]
    result = n.notify(channels, MESSAGE, providers=providers(emu), mode="all", idempotency_key="INC-7:alert")
    keys = [d["idempotency_key"] for d in result["deliveries"]]
    assert keys == [f"INC-7:alert:sms:{ONCALL}", "INC-7:alert:email:cto@akig.com", "INC-7:alert:slack:#akig-incidents"]
    assert sorted(e["idempotency_key"] for e in emu.ledger()) == sorted(keys)
    found = emu.ledger("?idempotency_key=" + urllib.request.quote(keys[0]))
    assert len(found) == 1 and found[0]["service"] == "twilio"


def test_without_key_no_header_is_sent(emu: Emulator) -> None:
    n.notify([{"type": "sms", "to": ONCALL}], MESSAGE, providers=providers(emu))
    assert emu.ledger()[0]["idempotency_key"] is None


# -- check mode and input ---------------------------------------------------------------------


def test_check_mode_sends_nothing(emu: Emulator) -> None:
    channels = [{"type": "slack", "to": "#akig-incidents"},
                {"type": "sms", "to": ONCALL, "fallbacks": [{"type": "email", "to": "oncall@akig.com"}]}]
    result = n.notify(channels, MESSAGE, providers=providers(emu), mode="all", check_mode=True)
    assert result["changed"] is True and result["deliveries"] == [] and result["delivered"] is False
    assert result["actions"] == [
        "Would send a Slack message to #akig-incidents",
        f"Would send an SMS to {ONCALL}; if it fails, an e-mail to oncall@akig.com instead",
    ]
    assert emu.ledger() == [] and emu.rejections() == []

    chain = n.notify(channels, MESSAGE, providers=n.Providers(), mode="first_success", check_mode=True)
    assert chain["actions"][1].startswith("If that fails, would send an SMS")
    single = n.notify(channels, MESSAGE, providers=n.Providers(), mode="first_success", fallback=False,
                      check_mode=True)
    assert single["actions"] == ["Would send a Slack message to #akig-incidents"]


@pytest.mark.parametrize(
    ("channels", "message", "needle"),
    [
        ([{"type": "fax", "to": "1"}], "m", "channels[0].type 'fax' is not a channel type; expected one of slack, sms, email"),
        ([{"type": "sms"}], "m", "channels[0] (sms) has no 'to'; give an E.164 phone number"),
        ([{"type": "email", "to": " "}], "m", "channels[0] (email) has no 'to'"),
        ([{"type": "sms", "to": ONCALL, "fallbacks": [{"type": "pigeon", "to": "x"}]}], "m",
         "channels[0].fallbacks[0].type 'pigeon'"),
        ([{"type": "sms", "to": ONCALL, "cc": "x"}], "m", "unknown key(s) cc"),
        ([], "m", "channels is empty"),
        ("sms", "m", "channels must be a list"),
        ([{"type": "sms", "to": ONCALL}], "  ", "the message text is empty"),
    ],
)
def test_bad_input_is_refused_before_sending(channels: Any, message: str, needle: str) -> None:
    def opener(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("nothing may be sent on bad input")

    with pytest.raises(n.NotifyError) as err:
        n.notify(channels, message, providers=n.Providers(), opener=opener)
    assert needle in str(err.value)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(n.NotifyError, match="mode 'some' is not supported; expected one of first_success, all"):
        n.notify([{"type": "sms", "to": ONCALL}], "m", providers=n.Providers(), mode="some")
