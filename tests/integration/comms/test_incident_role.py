# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run incident_role.yml: refusals, open/join through the ticket, join by AKIG_INCIDENT_ID on several hosts."""

from __future__ import annotations

import re
from pathlib import Path

from comms_helpers import SECRETS, Emulator, Runner
from comms_helpers import emu, emulator, emulator_credentials, run_playbook  # noqa: F401  # pylint: disable=unused-import  # the fixtures

PLAYBOOK = Path(__file__).with_name("incident_role.yml")


def test_incident_role(emu: Emulator, run_playbook: Runner) -> None:
    proc = run_playbook(PLAYBOOK, emu.akig_vars(), inventory="localhost,h1,h2,",
                        env={"AKIG_INCIDENT_ID": "INC-20251105-1423-P2-abcd"})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert re.search(r"localhost\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0\s+skipped=\d+\s+rescued=5",
                     proc.stdout), proc.stdout[-2000:]
    # the refusals changed nothing; opening then joining made one ticket, DRILL-42 another
    ledger = emu.ledger()
    assert [e["operation"] for e in ledger] == ["incident.create", "incident.create"]
    assert ledger[1]["details"]["incident_id"] == "DRILL-42"
    assert ledger[0]["subject"] == "Export PDF en échec" and ledger[0]["details"]["severity"] == "P3"
    assert '"runbook: \\"rb-p3-002-feature-degraded\\""' not in ledger[0]["body"]
    assert 'declared_start: "2025-11-05T14:23:00Z"' in ledger[0]["body"]
    for secret in SECRETS:
        assert secret not in output
