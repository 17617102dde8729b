# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""akig.runbooks.incident_ticket and plugins/module_utils/ticket.py against a private SaaS emulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ansible_collections.akig.runbooks.plugins.module_utils import ticket as t
from ansible_collections.akig.runbooks.tests.support.ansible import Ansible
from ansible_collections.akig.runbooks.tests.support.emulator import Emulator

TOKEN = "ticket-token-CANARY-e3c1"
CREDS = {
    "twilio_account_sid": "ACticket0123456789abcdef",
    "twilio_auth_token": "twilio-token-CANARY-9f00",
    "sendgrid_api_key": "SG.sendgrid-key-CANARY-1d7b",
    "slack_webhook_path": "T0TCK/B0TCK/slackhookCANARY55a",
    "ticket_api_token": TOKEN,
}
INC = "INC-20261127-1423-P1-3f9a"


@pytest.fixture(scope="module")
def emulator_credentials() -> dict[str, str]:
    """The shared emulator fixture (tests/support/emulator.py) accepts this file's canary credentials."""
    return CREDS


def client(emu: Emulator, token: str = TOKEN) -> t.TicketClient:
    return t.TicketClient(f"{emu.url}/tickets/api/v1", token)


OPEN = dict(title="Dashboard AKIG inaccessible", severity="P1", description="Opened by rb-p1-001.",
            metadata={"declared_start": "2026-11-27T14:23:00Z", "impacted_users": 143, "data_breach": False})


# -- module_utils/ticket.py -------------------------------------------------------------------


def test_present_opens_once(emu: Emulator) -> None:
    first = t.ensure_ticket(client(emu), incident_id=INC, **OPEN)
    assert first["changed"] is True and first["found"] is False and first["ticket_id"] == "TCK-0001"
    assert first["metadata"] == OPEN["metadata"]
    assert first["actions"] == [f"Opened P1 ticket TCK-0001 for incident {INC}"]
    second = t.ensure_ticket(client(emu), incident_id=INC, **OPEN)
    assert second["changed"] is False and second["found"] is True and second["ticket_id"] == "TCK-0001"
    assert second["diff"]["before"] == second["diff"]["after"]
    (entry,) = emu.ledger()
    assert entry["operation"] == "incident.create" and entry["details"]["incident_id"] == INC
    assert entry["subject"] == OPEN["title"] and entry["details"]["severity"] == "P1"


def test_comment_and_resolve_are_idempotent(emu: Emulator) -> None:
    t.ensure_ticket(client(emu), incident_id=INC, **OPEN)
    commented = t.ensure_ticket(client(emu), incident_id=INC, state="commented", comment="Replica promoted")
    assert commented["changed"] and commented["ticket"]["comments"][0]["text"] == "Replica promoted"
    again = t.ensure_ticket(client(emu), incident_id=INC, state="commented", comment="Replica promoted")
    assert again["changed"] is False
    resolved = t.ensure_ticket(client(emu), incident_id=INC, state="resolved", comment="RTO 4 min")
    assert resolved["changed"] and resolved["ticket"]["status"] == "resolved"
    assert resolved["diff"] == {"before": {"status": "open", "comments": 1},
                                "after": {"status": "resolved", "comments": 2}}
    assert t.ensure_ticket(client(emu), incident_id=INC, state="resolved", comment="RTO 4 min")["changed"] is False
    assert [e["operation"] for e in emu.ledger()] == ["incident.create", "incident.update", "incident.update"]


def test_check_mode_changes_nothing(emu: Emulator) -> None:
    plan = t.ensure_ticket(client(emu), incident_id=INC, check_mode=True, **OPEN)
    assert plan["changed"] and plan["ticket_id"] is None
    assert plan["actions"] == [f"Would open a P1 ticket 'Dashboard AKIG inaccessible' for incident {INC}"]
    lookup = t.ensure_ticket(client(emu), incident_id=INC, check_mode=True)  # read-only lookup
    assert lookup["found"] is False and lookup["warnings"]
    resolve = t.ensure_ticket(client(emu), incident_id=INC, state="resolved", check_mode=True)
    assert resolve["changed"] and "check mode" in resolve["warnings"][0]
    assert emu.ledger() == []


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"state": "present", "title": "x"}, "severity is needed to open one"),
        ({"state": "present"}, "title and severity are needed to open one"),
        ({"state": "resolved"}, "no ticket exists for incident INC-20261127-1423-P1-3f9a; open one first"),
        ({"state": "commented", "comment": " "}, "state=commented needs a non-empty comment"),
        ({"state": "absent"}, "state 'absent' is not supported"),
        ({"severity": "P9", "title": "x"}, "severity 'P9' is not one of P1, P2, P3"),
        ({"metadata": {"a:b": 1}, "title": "x", "severity": "P1"}, "metadata key 'a:b' is not usable"),
    ],
)
def test_bad_input(emu: Emulator, kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(t.TicketInputError) as err:
        t.ensure_ticket(client(emu), incident_id=INC, **kwargs)
    assert needle in str(err.value)
    assert emu.ledger() == []


def test_tracker_failures_name_the_status_not_the_token(emu: Emulator) -> None:
    with pytest.raises(t.TicketError) as err:
        t.ensure_ticket(client(emu, token="wrong-token-4411"), incident_id=INC, **OPEN)
    assert err.value.status == 401 and "HTTP 401 (unauthorized" in str(err.value)
    assert "wrong-token-4411" not in str(err.value) and "wrong-token" not in repr(client(emu, "wrong-token-4411"))
    emu.call("/_emulator/mode", {"service": "tickets", "mode": "outage"})
    with pytest.raises(t.TicketError) as err:
        t.ensure_ticket(client(emu), incident_id=INC, **OPEN)
    assert err.value.status == 503 and TOKEN not in str(err.value)


def test_metadata_round_trip() -> None:
    text = t.render_description("Body", {"runbook": "rb-p1-001", "impacted_users": None, "ok": True})
    assert text.startswith("Body\n\n" + t.METADATA_MARKER)
    assert t.parse_metadata(text) == {"runbook": "rb-p1-001", "impacted_users": None, "ok": True}
    assert t.parse_metadata("no block") == {} and t.parse_metadata(None) == {}
    assert t.render_description("Body", {}) == "Body"


# -- the module, ad hoc ---------------------------------------------------------------------


ADHOC_CONFIG = "[defaults]\nlocalhost_warning = false\ndeprecation_warnings = false\n"


def run_module(tmp_path: Path, args: dict[str, Any], *extra: str) -> tuple[str, dict[str, Any], str]:
    run = Ansible(tmp_path, config=ADHOC_CONFIG).adhoc("akig.runbooks.incident_ticket", args, *extra, timeout=120)
    return run.status, run.result, run.output


@pytest.mark.process  # ansible ad hoc
def test_module_opens_once_and_check_mode_sends_nothing(emu: Emulator, tmp_path: Path) -> None:
    args = {"base_url": f"{emu.url}/tickets/api/v1", "api_token": TOKEN, "incident_id": INC,
            "title": "Dashboard AKIG inaccessible", "severity": "P1",
            "metadata": {"declared_start": "2026-11-27T14:23:00Z"}}
    status, result, output = run_module(tmp_path, args, "--check")
    assert status == "CHANGED" and result["ticket_id"] is None and emu.ledger() == []
    assert result["actions"] == [f"Would open a P1 ticket 'Dashboard AKIG inaccessible' for incident {INC}"]

    status, first, output = run_module(tmp_path, args)
    assert status == "CHANGED" and first["ticket_id"] == "TCK-0001"
    assert first["metadata"] == {"declared_start": "2026-11-27T14:23:00Z"}
    status, second, output = run_module(tmp_path, args)
    assert status == "SUCCESS" and second["changed"] is False and second["ticket_id"] == "TCK-0001"
    assert len(emu.ledger()) == 1
    assert TOKEN not in output


@pytest.mark.process  # ansible ad hoc
def test_module_errors_are_clear_and_secret_free(emu: Emulator, tmp_path: Path) -> None:
    status, result, output = run_module(
        tmp_path, {"base_url": f"{emu.url}/tickets/api/v1", "api_token": "wrong-token-77f1", "incident_id": INC,
                   "title": "x", "severity": "P1"})
    assert status == "FAILED!"
    assert result["msg"].startswith(f"Cannot open the ticket of incident {INC}: the tracker failed: GET ")
    assert "HTTP 401" in result["msg"] and "check akig_ticket_api_token" in result["msg"]
    assert "wrong-token-77f1" not in output

    status, result, output = run_module(
        tmp_path, {"base_url": f"{emu.url}/tickets/api/v1", "api_token": TOKEN, "incident_id": INC,
                   "state": "commented"})
    assert status == "FAILED!" and "state is commented but all of the following are missing: comment" in result["msg"]
    assert emu.ledger() == []
