# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run comms.yml (open a P1 incident, alert, resolution) against a private SaaS emulator."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from comms_helpers import SECRETS, Emulator, Runner
from comms_helpers import emu, emulator, emulator_credentials, run_playbook  # noqa: F401  # pylint: disable=unused-import  # the fixtures

PLAYBOOK = Path(__file__).with_name("comms.yml")


def seven_minutes_ago() -> str:
    return (datetime.now(timezone.utc) - timedelta(minutes=7)).strftime("%Y-%m-%dT%H:%M:%SZ")


def drill_vars(emu: Emulator) -> dict[str, str]:
    return {**emu.akig_vars(), "comms_emulator_url": emu.url, "comms_declared_start": seven_minutes_ago()}


def test_alert_and_resolution_reach_everyone_due(emu: Emulator, run_playbook: Runner) -> None:
    proc = run_playbook(PLAYBOOK, drill_vars(emu))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert re.search(r"localhost\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0", proc.stdout)

    ledger = emu.ledger()
    (ticket,) = [e for e in ledger if e["operation"] == "incident.create"]
    incident_id = ticket["details"]["incident_id"]
    assert re.fullmatch(r"INC-\d{8}-\d{4}-P1-[0-9a-f]{4}", incident_id)
    messages = [e for e in ledger if e["service"] != "tickets"]
    alerts = [e for e in messages if "INCIDENT ALERT" in (e["text"] or e["body"])]
    assert sorted((e["service"], tuple(e["to"])) for e in alerts) == [
        ("sendgrid", ("cto@akig.com",)), ("sendgrid", ("manager@akig.com",)),
        ("slack", ("#akig-incidents",)), ("twilio", ("+33600000000",))]
    for entry in alerts:
        text = entry["text"] or entry["body"]
        assert incident_id in text and "Impact: 143 utilisateurs affectés (5% du trafic)" in text
        assert entry["idempotency_key"].startswith(f"{incident_id}:alert:")
    resolutions = [e for e in messages if "INCIDENT RESOLVED" in (e["text"] or e["body"])]
    assert len(resolutions) == 4
    assert all("RPO: 0 s" in (e["text"] or e["body"]) for e in resolutions)
    assert [e["details"]["status"] for e in ledger if e["operation"] == "incident.update"] == ["resolved"]
    for secret in SECRETS:
        assert secret not in output


def test_check_mode_sends_nothing(emu: Emulator, run_playbook: Runner) -> None:
    proc = run_playbook(PLAYBOOK, drill_vars(emu), "--check")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert emu.ledger() == []
    assert emu.call("/_emulator/rejections")["count"] == 0
    assert "Would send an e-mail to cto@akig.com" in output
    for secret in SECRETS:
        assert secret not in output
