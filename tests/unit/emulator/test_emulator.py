"""Tests for lab/emulator/akig_saas_emulator.py (the external SaaS API emulator).

Each test starts the emulator in-process on 127.0.0.1, port 0, with its own
temporary state dir, and talks to it over real HTTP with urllib.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
EMULATOR_PATH = REPO_ROOT / "lab" / "emulator" / "akig_saas_emulator.py"


def _load_module() -> ModuleType:
    name = "akig_saas_emulator"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EMULATOR_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


emu = _load_module()

CREDS: dict[str, str] = {
    "twilio_account_sid": "AC" + "0123456789abcdef" * 2,
    "twilio_auth_token": "twilio-auth-token-5f1e2d3c4b5a",
    "sendgrid_api_key": "SG.sendgrid-key-9a8b7c6d.e5f4a3b2c1",
    "slack_webhook_path": "T0AKIG01/B0AKIG02/slackhooksecret0123",
    "ticket_api_token": "ticket-api-token-0f9e8d7c6b5a",
}
SID = CREDS["twilio_account_sid"]
TWILIO_MESSAGES = f"/twilio/2010-04-01/Accounts/{SID}/Messages.json"
SENDGRID_SEND = "/sendgrid/v3/mail/send"
SLACK_HOOK = f"/slack/services/{CREDS['slack_webhook_path']}"
TICKETS = "/tickets/api/v1/incidents"


# --------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


@dataclass
class RunningEmulator:
    base_url: str
    state_dir: Path
    server: Any
    thread: threading.Thread
    log: StringIO = field(default_factory=StringIO)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        basic: tuple[str, str] | None = None,
        bearer: str | None = None,
    ) -> Reply:
        all_headers = dict(headers or {})
        if json_body is not None:
            data = json.dumps(json_body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            all_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if basic is not None:
            token = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
            all_headers["Authorization"] = f"Basic {token}"
        if bearer is not None:
            all_headers["Authorization"] = f"Bearer {bearer}"
        req = urllib.request.Request(
            self.base_url + path, data=data, headers=all_headers, method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return Reply(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as err:
            with err:
                return Reply(err.code, dict(err.headers), err.read())

    # Provider shortcuts ---------------------------------------------------

    def sms(
        self,
        *,
        to: str = "+15551230001",
        body: str = "AKIG RB-P1-001: database failover started",
        key: str | None = None,
        auth: tuple[str, str] | None = None,
        extra: Mapping[str, str] | None = None,
        path: str = TWILIO_MESSAGES,
    ) -> Reply:
        form = {"To": to, "From": "+15559870000", "Body": body, **(extra or {})}
        headers = {"Idempotency-Key": key} if key else None
        return self.request(
            "POST",
            path,
            form={k: v for k, v in form.items() if v is not None},
            headers=headers,
            basic=auth or (SID, CREDS["twilio_auth_token"]),
        )

    def mail(
        self,
        payload: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
        api_key: str | None = None,
    ) -> Reply:
        return self.request(
            "POST",
            SENDGRID_SEND,
            json_body=payload if payload is not None else mail_payload(),
            headers={"Idempotency-Key": key} if key else None,
            bearer=api_key or CREDS["sendgrid_api_key"],
        )

    def slack(
        self, payload: Any, *, path: str = SLACK_HOOK, key: str | None = None
    ) -> Reply:
        return self.request(
            "POST",
            path,
            json_body=payload,
            headers={"Idempotency-Key": key} if key else None,
        )

    def tickets(
        self,
        method: str,
        path: str = "",
        payload: Any = None,
        *,
        token: str | None = None,
        key: str | None = None,
    ) -> Reply:
        return self.request(
            method,
            TICKETS + path,
            json_body=payload,
            headers={"Idempotency-Key": key} if key else None,
            bearer=token or CREDS["ticket_api_token"],
        )

    # Control shortcuts ----------------------------------------------------

    def ledger(self, query: str = "") -> list[dict[str, Any]]:
        reply = self.request("GET", "/_emulator/ledger" + query)
        assert reply.status == 200
        return reply.json()["entries"]

    def rejections(self, query: str = "") -> list[dict[str, Any]]:
        reply = self.request("GET", "/_emulator/rejections" + query)
        assert reply.status == 200
        return reply.json()["entries"]

    def set_mode(self, service: str, mode: str, delay_s: float | None = None) -> Reply:
        payload: dict[str, Any] = {"service": service, "mode": mode}
        if delay_s is not None:
            payload["delay_s"] = delay_s
        return self.request("POST", "/_emulator/mode", json_body=payload)


def mail_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "personalizations": [
            {"to": [{"email": "oncall@akig.example"}, {"email": "cto@akig.example"}]}
        ],
        "from": {"email": "incidents@akig.example", "name": "AKIG Incidents"},
        "subject": "[RB-P1-001] Payments degraded",
        "content": [
            {"type": "text/plain", "value": "Payments API error rate above 5%."},
            {"type": "text/html", "value": "<p>Payments API error rate above 5%.</p>"},
        ],
    }
    payload.update(overrides)
    return payload


def cli_args(
    state_dir: Path, credentials_file: Path, host: str = "127.0.0.1", port: int = 0
) -> list[str]:
    return [
        "--host",
        host,
        "--port",
        str(port),
        "--state-dir",
        str(state_dir),
        "--credentials-file",
        str(credentials_file),
    ]


def write_credentials(path: Path, values: Mapping[str, Any] | None = None) -> Path:
    path.write_text(json.dumps(dict(values if values is not None else CREDS)))
    path.chmod(0o600)
    return path


def start_emulator(state_dir: Path, credentials_file: Path) -> RunningEmulator:
    credentials = emu.load_credentials(credentials_file)
    store = emu.StateStore(state_dir, emu.Redactor(credentials.values()))
    log = StringIO()
    server = emu.make_server("127.0.0.1", 0, emu.Emulator(credentials, store), log)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}
    )
    thread.daemon = True
    thread.start()
    host, port = server.server_address[:2]
    return RunningEmulator(f"http://{host}:{port}", state_dir, server, thread, log)


@pytest.fixture
def creds_file(tmp_path: Path) -> Path:
    return write_credentials(tmp_path / "credentials.json")


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def emulator_factory(
    state_dir: Path, creds_file: Path
) -> Iterator[Callable[[], RunningEmulator]]:
    running: list[RunningEmulator] = []

    def factory() -> RunningEmulator:
        instance = start_emulator(state_dir, creds_file)
        running.append(instance)
        return instance

    yield factory
    for instance in running:
        if instance.thread.is_alive():
            instance.stop()


@pytest.fixture
def emulator(emulator_factory: Callable[[], RunningEmulator]) -> RunningEmulator:
    return emulator_factory()


def ledger_file(instance: RunningEmulator) -> list[dict[str, Any]]:
    path = instance.state_dir / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------
# Health and control API
# --------------------------------------------------------------------------


def test_health_reports_all_modes_ok(emulator: RunningEmulator) -> None:
    reply = emulator.request("GET", "/_emulator/health")
    assert reply.status == 200
    data = reply.json()
    assert data["status"] == "ok"
    assert {s: m["mode"] for s, m in data["modes"].items()} == {
        "twilio": "ok",
        "sendgrid": "ok",
        "slack": "ok",
        "tickets": "ok",
    }


def test_unknown_route_and_wrong_method(emulator: RunningEmulator) -> None:
    assert emulator.request("GET", "/nope").status == 404
    reply = emulator.request("GET", "/_emulator/reset")
    assert reply.status == 405
    assert reply.headers["Allow"] == "POST"
    assert emulator.request("DELETE", SENDGRID_SEND).status == 405


def test_control_api_is_loopback_only(tmp_path: Path) -> None:
    credentials = emu.load_credentials(write_credentials(tmp_path / "c.json"))
    store = emu.StateStore(tmp_path / "s", emu.Redactor(credentials.values()))
    app = emu.Emulator(credentials, store)
    remote = emu.Request("POST", "/_emulator/reset", client_host="192.0.2.10")
    assert app.handle(remote).status == 403
    local = emu.Request("GET", "/_emulator/health", client_host="127.0.0.1")
    assert app.handle(local).status == 200


# --------------------------------------------------------------------------
# Twilio
# --------------------------------------------------------------------------


def test_twilio_send_success_is_ledgered(emulator: RunningEmulator) -> None:
    reply = emulator.sms(key="inc-42:sms:+15551230001")
    assert reply.status == 201
    message = reply.json()
    assert re.fullmatch(r"SM[0-9a-f]{32}", message["sid"])
    assert message["status"] == "queued"
    assert message["to"] == "+15551230001"
    assert message["from"] == "+15559870000"
    assert message["body"] == "AKIG RB-P1-001: database failover started"
    assert message["account_sid"] == SID
    assert message["date_created"].endswith("+0000")

    # the file is readable right after the 2xx
    [entry] = ledger_file(emulator)
    assert entry["seq"] == 1
    assert entry["service"] == "twilio"
    assert entry["operation"] == "message.create"
    assert entry["to"] == ["+15551230001"]
    assert entry["from"] == "+15559870000"
    assert entry["body"] == message["body"]
    assert entry["idempotency_key"] == "inc-42:sms:+15551230001"
    assert entry["provider_id"] == message["sid"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"])
    assert emulator.ledger() == [entry]


def test_twilio_fetch_message(emulator: RunningEmulator) -> None:
    sid = emulator.sms().json()["sid"]
    path = f"/twilio/2010-04-01/Accounts/{SID}/Messages/{sid}.json"
    auth = (SID, CREDS["twilio_auth_token"])
    reply = emulator.request("GET", path, basic=auth)
    assert reply.status == 200
    assert reply.json()["sid"] == sid
    assert reply.json()["status"] == "delivered"
    missing = f"/twilio/2010-04-01/Accounts/{SID}/Messages/SM{'0' * 32}.json"
    assert emulator.request("GET", missing, basic=auth).json()["code"] == 20404
    assert emulator.request("GET", path, basic=(SID, "wrong")).status == 401
    assert len(emulator.ledger()) == 1  # reads are not ledgered


def test_twilio_alternative_idempotency_header_and_service_sid(
    emulator: RunningEmulator,
) -> None:
    reply = emulator.request(
        "POST",
        TWILIO_MESSAGES,
        form={
            "To": "+15551230002",
            "MessagingServiceSid": "MG" + "a" * 32,
            "Body": "x",
        },
        headers={"I-Twilio-Idempotency-Token": "tok-1"},
        basic=(SID, CREDS["twilio_auth_token"]),
    )
    assert reply.status == 201
    [entry] = emulator.ledger()
    assert entry["idempotency_key"] == "tok-1"
    assert entry["from"] == "MG" + "a" * 32


@pytest.mark.parametrize(
    "auth",
    [
        (SID, "wrong-token"),
        ("AC" + "f" * 32, CREDS["twilio_auth_token"]),
        None,
    ],
    ids=["bad-token", "bad-user", "no-auth"],
)
def test_twilio_bad_auth(
    emulator: RunningEmulator, auth: tuple[str, str] | None
) -> None:
    if auth is None:
        reply = emulator.request(
            "POST", TWILIO_MESSAGES, form={"To": "+1555", "Body": "x"}
        )
    else:
        reply = emulator.sms(auth=auth)
    assert reply.status == 401
    assert reply.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert emulator.ledger() == []
    [rejection] = emulator.rejections()
    assert rejection["service"] == "twilio"
    assert rejection["status"] == 401
    assert rejection["reason"] == "auth"


def test_twilio_path_sid_must_match_auth_user(emulator: RunningEmulator) -> None:
    other = "AC" + "e" * 32
    path = f"/twilio/2010-04-01/Accounts/{other}/Messages.json"
    assert emulator.sms(path=path).status == 401
    assert emulator.ledger() == []


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"From": "+15559870000", "Body": "x"}, 21604),
        ({"To": "+15551230001", "From": "+15559870000"}, 21602),
        ({"To": "+15551230001", "Body": "x"}, 21603),
        ({"To": "not-a-number", "From": "+15559870000", "Body": "x"}, 21211),
    ],
    ids=["missing-to", "missing-body", "missing-from", "invalid-to"],
)
def test_twilio_validation(
    emulator: RunningEmulator, form: dict[str, str], code: int
) -> None:
    reply = emulator.request(
        "POST", TWILIO_MESSAGES, form=form, basic=(SID, CREDS["twilio_auth_token"])
    )
    assert reply.status == 400
    assert reply.json()["code"] == code
    assert reply.json()["status"] == 400
    assert emulator.ledger() == []
    assert emulator.rejections()[0]["reason"] == f"validation:{code}"


# --------------------------------------------------------------------------
# SendGrid
# --------------------------------------------------------------------------


def test_sendgrid_send_success(emulator: RunningEmulator) -> None:
    reply = emulator.mail(key="inc-42:mail")
    assert reply.status == 202
    assert reply.body == b""
    message_id = reply.headers["X-Message-Id"]
    assert message_id
    [entry] = ledger_file(emulator)
    assert entry["service"] == "sendgrid"
    assert entry["operation"] == "mail.send"
    assert entry["to"] == ["oncall@akig.example", "cto@akig.example"]
    assert entry["from"] == "incidents@akig.example"
    assert entry["subject"] == "[RB-P1-001] Payments degraded"
    assert entry["body"] == "Payments API error rate above 5%."
    assert entry["idempotency_key"] == "inc-42:mail"
    assert entry["provider_id"] == message_id


@pytest.mark.parametrize("api_key", ["SG.wrong", ""], ids=["wrong", "empty"])
def test_sendgrid_bad_key(emulator: RunningEmulator, api_key: str) -> None:
    reply = emulator.request(
        "POST",
        SENDGRID_SEND,
        json_body=mail_payload(),
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert reply.status == 401
    assert reply.json() == {
        "errors": [
            {
                "message": "The provided authorization grant is invalid, expired, "
                "or revoked",
                "field": None,
                "help": None,
            }
        ]
    }
    assert emulator.ledger() == []
    assert emulator.rejections()[0]["status"] == 401


@pytest.mark.parametrize(
    ("payload", "field_name"),
    [
        (mail_payload(personalizations=[]), "personalizations"),
        (mail_payload(personalizations=[{"to": []}]), "personalizations.0.to"),
        (
            mail_payload(personalizations=[{"to": [{"email": "x"}]}]),
            "personalizations.0.to",
        ),
        (mail_payload(**{"from": {}}), "from.email"),
        (mail_payload(subject=""), "subject"),
        (mail_payload(content=[]), "content"),
        ([], None),
    ],
    ids=[
        "no-pers",
        "no-to",
        "bad-email",
        "no-from",
        "no-subject",
        "no-content",
        "list",
    ],
)
def test_sendgrid_invalid_body(
    emulator: RunningEmulator, payload: Any, field_name: str | None
) -> None:
    reply = emulator.mail(payload)
    assert reply.status == 400
    [error] = reply.json()["errors"]
    assert error["field"] == field_name
    assert error["message"]
    assert emulator.ledger() == []


def test_sendgrid_invalid_json(emulator: RunningEmulator) -> None:
    reply = emulator.request(
        "POST",
        SENDGRID_SEND,
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        bearer=CREDS["sendgrid_api_key"],
    )
    assert reply.status == 400
    assert "errors" in reply.json()


# --------------------------------------------------------------------------
# Slack
# --------------------------------------------------------------------------


def test_slack_webhook_success(emulator: RunningEmulator) -> None:
    reply = emulator.slack(
        {"text": "RB-P1-001 mitigated", "channel": "#inc"}, key="k-s"
    )
    assert reply.status == 200
    assert reply.text == "ok"
    assert reply.headers["Content-Type"].startswith("text/plain")
    [entry] = ledger_file(emulator)
    assert entry["service"] == "slack"
    assert entry["operation"] == "webhook.post"
    assert entry["text"] == "RB-P1-001 mitigated"
    assert entry["to"] == ["#inc"]
    assert entry["idempotency_key"] == "k-s"


def test_slack_blocks_without_text_and_form_payload(emulator: RunningEmulator) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
    assert emulator.slack({"blocks": blocks}).status == 200
    form = emulator.request(
        "POST", SLACK_HOOK, form={"payload": json.dumps({"text": "f"})}
    )
    assert form.status == 200
    # `curl -d '{"text": ...}'` sends JSON with a form content type; Slack takes it
    curl_style = emulator.request(
        "POST",
        SLACK_HOOK,
        data=b'{"text": "c"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert curl_style.status == 200
    assert [e["text"] for e in emulator.ledger()] == [None, "f", "c"]


def test_slack_unknown_path_and_no_text(emulator: RunningEmulator) -> None:
    reply = emulator.slack({"text": "x"}, path="/slack/services/T0000/B0000/wrong")
    assert (reply.status, reply.text) == (404, "no_service")
    reply = emulator.slack({"channel": "#inc"})
    assert (reply.status, reply.text) == (400, "no_text")
    reply = emulator.request("POST", SLACK_HOOK, data=b"not json")
    assert (reply.status, reply.text) == (400, "invalid_payload")
    assert emulator.ledger() == []
    assert [r["status"] for r in emulator.rejections()] == [404, 400, 400]


# --------------------------------------------------------------------------
# Ticket tracker
# --------------------------------------------------------------------------


def new_ticket(instance: RunningEmulator, title: str = "Payments degraded") -> Reply:
    return instance.tickets(
        "POST",
        payload={
            "title": title,
            "severity": "P1",
            "description": "error rate 7%",
            "incident_id": "INC-2024-0042",
        },
        key=f"create:{title}",
    )


def test_tickets_lifecycle(emulator: RunningEmulator) -> None:
    first = new_ticket(emulator)
    assert first.status == 201
    ticket = first.json()
    assert ticket["id"] == "TCK-0001"
    assert ticket["status"] == "open"
    assert ticket["incident_id"] == "INC-2024-0042"
    assert new_ticket(emulator, "Second").json()["id"] == "TCK-0002"

    listed = emulator.tickets("GET", "?status=open").json()
    assert [t["id"] for t in listed["incidents"]] == ["TCK-0001", "TCK-0002"]
    assert emulator.tickets("GET", "/TCK-0001").json()["title"] == "Payments degraded"

    patched = emulator.tickets(
        "PATCH", "/TCK-0001", {"status": "resolved", "comment": "rolled back"}, key="u1"
    )
    assert patched.status == 200
    assert patched.json()["status"] == "resolved"
    assert patched.json()["comments"][0]["text"] == "rolled back"
    open_ids = [
        t["id"] for t in emulator.tickets("GET", "?status=open").json()["incidents"]
    ]
    assert open_ids == ["TCK-0002"]
    resolved = emulator.tickets("GET", "?status=resolved").json()["incidents"]
    assert [t["id"] for t in resolved] == ["TCK-0001"]

    entries = emulator.ledger("?service=tickets")
    assert [(e["operation"], e["provider_id"]) for e in entries] == [
        ("incident.create", "TCK-0001"),
        ("incident.create", "TCK-0002"),
        ("incident.update", "TCK-0001"),
    ]
    assert entries[2]["details"]["status"] == "resolved"
    assert entries[2]["idempotency_key"] == "u1"
    assert [e["seq"] for e in entries] == [1, 2, 3]


def test_tickets_errors(emulator: RunningEmulator) -> None:
    reply = emulator.tickets("GET", "?status=open", token="wrong")
    assert reply.status == 401
    assert reply.json()["error"] == "unauthorized"
    no_auth = emulator.request(
        "POST", TICKETS, json_body={"title": "t", "severity": "P1"}
    )
    assert no_auth.status == 401
    assert emulator.tickets("GET", "/TCK-9999").status == 404
    assert emulator.tickets("PATCH", "/TCK-9999", {"status": "resolved"}).status == 404
    assert emulator.tickets("POST", payload={"severity": "P1"}).status == 400
    new_ticket(emulator)
    assert emulator.tickets("PATCH", "/TCK-0001", {"status": "closed"}).status == 400
    assert emulator.tickets("PATCH", "/TCK-0001", {}).status == 400
    assert emulator.tickets("GET", "?status=bogus").status == 400
    assert len(emulator.ledger()) == 1


def test_ticket_numbering_persists_across_restart(
    emulator_factory: Callable[[], RunningEmulator],
) -> None:
    first = emulator_factory()
    assert new_ticket(first).json()["id"] == "TCK-0001"
    first.stop()
    second = emulator_factory()
    assert new_ticket(second, "after restart").json()["id"] == "TCK-0002"
    assert second.tickets("GET", "/TCK-0001").status == 200
    assert [e["seq"] for e in second.ledger()] == [1, 2]


# --------------------------------------------------------------------------
# Idempotency keys, ledger filters, concurrency
# --------------------------------------------------------------------------


def test_idempotency_keys_recorded_not_deduplicated(emulator: RunningEmulator) -> None:
    assert emulator.sms(key="same").status == 201
    assert emulator.sms(key="same").status == 201
    assert emulator.sms().status == 201
    keys = [e["idempotency_key"] for e in emulator.ledger("?service=twilio")]
    assert keys == ["same", "same", None]
    assert len(emulator.ledger("?idempotency_key=same")) == 2


def test_ledger_filter_by_service(emulator: RunningEmulator) -> None:
    emulator.sms()
    emulator.mail()
    emulator.slack({"text": "x"})
    assert [e["service"] for e in emulator.ledger()] == ["twilio", "sendgrid", "slack"]
    assert [e["seq"] for e in emulator.ledger()] == [1, 2, 3]
    assert [e["service"] for e in emulator.ledger("?service=sendgrid")] == ["sendgrid"]
    reply = emulator.request("GET", "/_emulator/ledger?service=fax")
    assert reply.status == 400
    assert "twilio, sendgrid, slack, tickets" in reply.json()["error"]


def test_concurrent_calls_get_unique_seq(emulator: RunningEmulator) -> None:
    statuses: list[int] = []
    lock = threading.Lock()

    def send(index: int) -> None:
        status = emulator.sms(key=f"k{index}").status
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [201] * 20
    entries = ledger_file(emulator)
    assert sorted(e["seq"] for e in entries) == list(range(1, 21))
    assert sorted(e["idempotency_key"] for e in entries) == sorted(
        f"k{i}" for i in range(20)
    )


# --------------------------------------------------------------------------
# Fault modes
# --------------------------------------------------------------------------


def call_service(instance: RunningEmulator, service: str) -> Reply:
    if service == "twilio":
        return instance.sms()
    if service == "sendgrid":
        return instance.mail()
    if service == "slack":
        return instance.slack({"text": "x"})
    return new_ticket(instance)


SUCCESS = {"twilio": 201, "sendgrid": 202, "slack": 200, "tickets": 201}


@pytest.mark.parametrize("service", ["twilio", "sendgrid", "slack", "tickets"])
def test_outage_mode(emulator: RunningEmulator, service: str) -> None:
    assert emulator.set_mode(service, "outage").status == 200
    reply = call_service(emulator, service)
    assert reply.status == 503
    if service == "twilio":
        assert reply.json()["status"] == 503
        assert reply.json()["code"] == 20503
    elif service == "sendgrid":
        assert reply.json()["errors"][0]["message"]
    elif service == "slack":
        assert reply.text == "service_unavailable"
    assert emulator.ledger() == []
    [rejection] = emulator.rejections()
    assert (rejection["service"], rejection["status"]) == (service, 503)
    assert rejection["reason"] == "mode:outage"
    # other services are unaffected
    other = "slack" if service != "slack" else "tickets"
    assert call_service(emulator, other).status == SUCCESS[other]
    assert emulator.set_mode(service, "ok").status == 200
    assert call_service(emulator, service).status == SUCCESS[service]


@pytest.mark.parametrize("service", ["twilio", "sendgrid", "slack", "tickets"])
def test_quota_mode(emulator: RunningEmulator, service: str) -> None:
    assert emulator.set_mode(service, "quota").status == 200
    reply = call_service(emulator, service)
    assert reply.status == 429
    assert reply.headers["Retry-After"] == "30"
    if service == "twilio":
        assert reply.json()["code"] == 20429
        assert reply.json()["message"] == "Too Many Requests"
    elif service == "sendgrid":
        assert reply.json()["errors"][0]["message"]
    assert emulator.ledger() == []
    assert emulator.rejections()[0]["status"] == 429


def test_quota_mode_still_checks_auth(emulator: RunningEmulator) -> None:
    emulator.set_mode("twilio", "quota")
    assert emulator.sms(auth=(SID, "wrong")).status == 401


def test_slow_mode(emulator: RunningEmulator) -> None:
    reply = emulator.set_mode("sendgrid", "slow", delay_s=0.4)
    assert reply.status == 200
    assert reply.json()["modes"]["sendgrid"] == {"mode": "slow", "delay_s": 0.4}
    started = time.monotonic()
    assert emulator.mail().status == 202
    assert time.monotonic() - started >= 0.4
    assert len(emulator.ledger()) == 1
    started = time.monotonic()
    assert emulator.sms().status == 201
    assert time.monotonic() - started < 0.4


def test_modes_persist_across_restart(
    emulator_factory: Callable[[], RunningEmulator],
) -> None:
    first = emulator_factory()
    first.set_mode("twilio", "outage")
    first.set_mode("slack", "slow", delay_s=0.1)
    first.stop()
    saved = json.loads((first.state_dir / "modes.json").read_text())
    assert saved["twilio"]["mode"] == "outage"

    second = emulator_factory()
    modes = second.request("GET", "/_emulator/mode").json()["modes"]
    assert modes["twilio"]["mode"] == "outage"
    assert modes["slack"] == {"mode": "slow", "delay_s": 0.1}
    assert modes["sendgrid"]["mode"] == "ok"
    assert second.sms().status == 503


def test_corrupt_modes_file_falls_back_to_ok(state_dir: Path, creds_file: Path) -> None:
    state_dir.mkdir()
    (state_dir / "modes.json").write_text(
        json.dumps({"twilio": {"mode": "meltdown"}, "slack": {"mode": "quota"}})
    )
    credentials = emu.load_credentials(creds_file)
    store = emu.StateStore(state_dir, emu.Redactor(credentials.values()))
    assert store.mode_for("twilio")["mode"] == "ok"
    assert store.mode_for("slack")["mode"] == "quota"
    assert any("meltdown" in w for w in store.warnings)


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"service": "fax", "mode": "outage"}, "twilio, sendgrid, slack, tickets"),
        ({"service": "twilio", "mode": "down"}, "ok, outage, quota, slow"),
        ({"service": "twilio", "mode": "slow", "delay_s": -1}, "delay_s"),
        ({"service": "twilio", "mode": "slow", "delay_s": "2"}, "delay_s"),
        ({"service": "twilio", "mode": "slow", "delay": 2}, "unknown field"),
        (["twilio"], "JSON object"),
    ],
    ids=["service", "mode", "negative", "string", "typo", "list"],
)
def test_bad_mode_input(emulator: RunningEmulator, payload: Any, needle: str) -> None:
    reply = emulator.request("POST", "/_emulator/mode", json_body=payload)
    assert reply.status == 400
    assert needle in reply.json()["error"]
    modes = emulator.request("GET", "/_emulator/mode").json()["modes"]
    assert all(m["mode"] == "ok" for m in modes.values())


def test_bad_mode_input_not_json(emulator: RunningEmulator) -> None:
    reply = emulator.request("POST", "/_emulator/mode", data=b"outage please")
    assert reply.status == 400
    assert "error" in reply.json()


# --------------------------------------------------------------------------
# Reset
# --------------------------------------------------------------------------


def test_reset_clears_everything(emulator: RunningEmulator) -> None:
    emulator.sms()
    emulator.sms(auth=(SID, "wrong"))
    new_ticket(emulator)
    emulator.set_mode("slack", "outage")
    reply = emulator.request("POST", "/_emulator/reset")
    assert reply.status == 200
    assert emulator.ledger() == []
    assert emulator.rejections() == []
    assert (emulator.state_dir / "ledger.jsonl").read_text() == ""
    modes = emulator.request("GET", "/_emulator/mode").json()["modes"]
    assert all(m["mode"] == "ok" for m in modes.values())
    assert emulator.tickets("GET").json()["incidents"] == []
    assert new_ticket(emulator).json()["id"] == "TCK-0001"
    assert [e["seq"] for e in emulator.ledger()] == [1]


# --------------------------------------------------------------------------
# Secrets never leak
# --------------------------------------------------------------------------


def test_credentials_never_written(emulator: RunningEmulator) -> None:
    # successful calls of each kind, one carrying a secret in its content
    emulator.sms(body=f"leak {CREDS['twilio_auth_token']}")
    emulator.mail(key=CREDS["sendgrid_api_key"])
    emulator.slack({"text": CREDS["slack_webhook_path"]})
    new_ticket(emulator)
    # rejected calls of each kind
    emulator.sms(auth=(SID, "wrong"))
    emulator.mail(api_key="SG.wrong")
    emulator.slack({"text": "x"}, path="/slack/services/T0000/B0000/nope")
    emulator.tickets("GET", token="wrong")
    emulator.set_mode("twilio", "outage")
    emulator.sms()

    assert "[REDACTED]" in (emulator.state_dir / "ledger.jsonl").read_text()
    files = sorted(p for p in emulator.state_dir.iterdir() if p.is_file())
    assert {p.name for p in files} >= {"ledger.jsonl", "rejections.jsonl"}
    log = emulator.log.getvalue()
    assert "POST /slack/services/<redacted>" in log
    for secret in CREDS.values():
        for path in files:
            assert secret not in path.read_text(), f"{secret!r} found in {path.name}"
        assert secret not in log
        for part in secret.split("/"):  # webhook path segments too
            assert part not in log
    assert "Authorization" not in log


def test_log_has_one_line_per_request(emulator: RunningEmulator) -> None:
    emulator.sms()
    emulator.request("GET", "/_emulator/health")
    # the server writes its log line after the response has gone out: give it a moment
    deadline = time.monotonic() + 5
    while len(emulator.log.getvalue().splitlines()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    lines = emulator.log.getvalue().splitlines()
    assert len(lines) == 2
    assert (
        "POST /twilio/2010-04-01/Accounts/<account_sid>/Messages.json 201" in lines[0]
    )
    assert "GET /_emulator/health 200" in lines[1]


def test_redact_path() -> None:
    assert emu.redact_path(TWILIO_MESSAGES) == (
        "/twilio/2010-04-01/Accounts/<account_sid>/Messages.json"
    )
    assert emu.redact_path(SLACK_HOOK) == "/slack/services/<redacted>"
    assert emu.redact_path("/tickets/api/v1/incidents?status=open&x=secret") == (
        "/tickets/api/v1/incidents?status=...&x=..."
    )


def test_credentials_repr_hides_values(creds_file: Path) -> None:
    credentials = emu.load_credentials(creds_file)
    for secret in CREDS.values():
        assert secret not in repr(credentials)


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def test_port_in_use(
    tmp_path: Path, creds_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        code = emu.main(cli_args(tmp_path / "state", creds_file, port=port))
    assert code == 2
    err = capsys.readouterr().err
    assert (
        f"port 127.0.0.1:{port} is already in use by another process; "
        "stop it or run `lab/akig-lab down`"
    ) in err


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "does not exist"),
        ("{not json", "not valid JSON"),
        (json.dumps({**CREDS, "sendgrid_api_key": ""}), "sendgrid_api_key"),
        (
            json.dumps({k: v for k, v in CREDS.items() if k != "ticket_api_token"}),
            "ticket",
        ),
        (json.dumps({**CREDS, "twilio_account_sid": "XX123"}), "twilio_account_sid"),
        (json.dumps(["x"]), "JSON object"),
    ],
    ids=["missing", "not-json", "empty-key", "missing-key", "bad-sid", "list"],
)
def test_bad_credentials_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    needle: str,
) -> None:
    path = tmp_path / "credentials.json"
    if content is not None:
        path.write_text(content)
    code = emu.main(cli_args(tmp_path / "s", path))
    assert code == 2
    err = capsys.readouterr().err
    assert needle in err
    for secret in CREDS.values():
        assert secret not in err


def test_non_loopback_host_refused(
    tmp_path: Path, creds_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = emu.main(cli_args(tmp_path / "s", creds_file, host="0.0.0.0"))
    assert code == 2
    assert "loopback" in capsys.readouterr().err


@pytest.mark.process  # the emulator's command line, as a process
def test_cli_serves_and_stops_on_sigterm(tmp_path: Path, creds_file: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(EMULATOR_PATH), *cli_args(tmp_path / "state", creds_file)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", first)
        assert match, first
        client = RunningEmulator(
            match.group(1), tmp_path / "state", None, threading.Thread(target=lambda: None)
        )
        assert client.sms(key="cli").status == 201
        assert client.request("GET", "/_emulator/health").json()["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        log = first + proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "received SIGTERM" in log
    assert "stopped" in log
    for secret in CREDS.values():
        assert secret not in log
    assert [e["idempotency_key"] for e in ledger_file(client)] == ["cli"]
