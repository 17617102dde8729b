# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""akig.runbooks.provider_check through `ansible localhost -m ...` against a private SaaS emulator: each class
(ok, credentials, quota, outage, timeout), nothing sent (the ledger stays empty), credentials never printed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ansible_collections.akig.runbooks.tests.support.ansible import Ansible
from ansible_collections.akig.runbooks.tests.support.emulator import Emulator

CREDS = {
    "twilio_account_sid": "ACcheck0123456789abcdef",
    "twilio_auth_token": "twilio-token-CANARY-c4e1",
    "sendgrid_api_key": "SG.sendgrid-key-CANARY-93b0",
    "slack_webhook_path": "T0CHK/B0CHK/slackhookCANARYc4e1",
    "ticket_api_token": "ticket-token-CANARY-c4e1",
}
CONFIG = "[defaults]\nlocalhost_warning = false\ndeprecation_warnings = false\n"


@pytest.fixture(scope="module")
def emulator_credentials() -> dict[str, str]:
    return CREDS


def check(tmp_path: Path, emu: Emulator, provider: str, **override: Any) -> tuple[str, dict[str, Any]]:
    args = {"provider": provider, "base_url": f"{emu.url}/{provider}", "timeout": 2}
    if provider == "twilio":
        args.update(twilio_account_sid=CREDS["twilio_account_sid"], twilio_auth_token=CREDS["twilio_auth_token"])
    else:
        args.update(sendgrid_api_key=CREDS["sendgrid_api_key"])
    args.update(override)
    run = Ansible(tmp_path, secrets_to_hide=[CREDS["twilio_auth_token"], CREDS["sendgrid_api_key"], "wrong-CANARY-77"],
                  config=CONFIG).adhoc("akig.runbooks.provider_check", args, timeout=60)
    return run.status, run.result


@pytest.mark.parametrize("provider", ["twilio", "sendgrid"])
@pytest.mark.parametrize(("mode", "override", "cls", "status"), [
    ("ok", {}, "ok", 200),
    ("ok", "wrong", "credentials", 401),
    ("quota", {}, "quota", 429),
    ("outage", {}, "outage", 503),
])
def test_each_class_and_nothing_sent(tmp_path: Path, emu: Emulator, provider: str, mode: str, override: Any,
                                     cls: str, status: int) -> None:
    emu.mode(provider, mode)
    if override == "wrong":
        override = {"twilio_auth_token": "wrong-CANARY-77"} if provider == "twilio" else {"sendgrid_api_key": "wrong-CANARY-77"}
    word, result = check(tmp_path, emu, provider, **override)
    assert word == "SUCCESS" and result["changed"] is False
    assert (result["class"], result["status"], result["ok"]) == (cls, status, cls == "ok")
    assert len(result["credential_fingerprint"]) == 12
    assert emu.ledger() == [], "a check sent something"


def test_timeout_and_no_answer(tmp_path: Path, emu: Emulator) -> None:
    emu.mode("sendgrid", "slow", delay_s=4)
    result = check(tmp_path, emu, "sendgrid", timeout=0.5)[1]
    assert result["class"] == "timeout" and result["status"] is None
    result = check(tmp_path, emu, "twilio", base_url="http://127.0.0.1:9/twilio")[1]
    assert result["class"] == "outage" and result["status"] is None


def test_missing_credentials_fail_naming_them(tmp_path: Path, emu: Emulator) -> None:
    word, result = check(tmp_path, emu, "sendgrid", sendgrid_api_key="")
    assert word.startswith("FAILED")
    assert "sendgrid_api_key missing" in result["msg"] and "akig_sendgrid_api_key" in result["msg"]
