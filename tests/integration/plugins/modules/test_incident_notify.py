# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""akig.runbooks.incident_notify through `ansible localhost -m ...` against a private SaaS emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.akig.runbooks.tests.support.ansible import Ansible
from ansible_collections.akig.runbooks.tests.support.emulator import Emulator

REPO = Path(__file__).resolve().parents[4]
VENV_BIN = Path(sys.executable).parent
CREDS = {
    "twilio_account_sid": "ACmodule0123456789abcdef",
    "twilio_auth_token": "twilio-token-CANARY-a81f",
    "sendgrid_api_key": "SG.sendgrid-key-CANARY-2c94",
    "slack_webhook_path": "T0MOD/B0MOD/slackhookCANARYe07",
    "ticket_api_token": "ticket-token-CANARY-77d2",
}
SECRETS = [CREDS["twilio_auth_token"], CREDS["sendgrid_api_key"], "slackhookCANARYe07"]
ONCALL = "+33600000000"


@pytest.fixture(scope="module")
def emulator_credentials() -> dict[str, str]:
    """The shared emulator fixture (tests/support/emulator.py) accepts this file's canary credentials."""
    return CREDS


def provider_args(emu: Emulator) -> dict[str, Any]:
    return {
        "slack_webhook_url": f"{emu.url}/slack/services/{CREDS['slack_webhook_path']}",
        "twilio_base_url": f"{emu.url}/twilio",
        "twilio_account_sid": CREDS["twilio_account_sid"],
        "twilio_auth_token": CREDS["twilio_auth_token"],
        "twilio_from": "+33700000000",
        "sendgrid_base_url": f"{emu.url}/sendgrid",
        "sendgrid_api_key": CREDS["sendgrid_api_key"],
        "sendgrid_from": "incidents@akig.com",
    }


ADHOC_CONFIG = "[defaults]\nlocalhost_warning = false\ndeprecation_warnings = false\n"


def run_module(tmp_path: Path, args: dict[str, Any], *extra: str) -> tuple[str, dict[str, Any], str]:
    """Run the module ad hoc on localhost; returns (status word, result, whole output)."""
    run = Ansible(tmp_path, config=ADHOC_CONFIG).adhoc("akig.runbooks.incident_notify", args, *extra, timeout=120)
    return run.status, run.result, run.output


ALERT = "[INCIDENT ALERT - 14:29 UTC]\nINC-42 P1 - Dashboard AKIG inaccessible\nImpact: 143 utilisateurs"
TIER2 = [
    {"type": "slack", "to": "#akig-incidents"},
    {"type": "sms", "to": ONCALL, "fallbacks": [{"type": "email", "to": "oncall@akig.com"}]},
    {"type": "email", "to": "manager@akig.com"},
    {"type": "email", "to": "cto@akig.com"},
]


def test_sends_on_every_channel(emu: Emulator, tmp_path: Path) -> None:
    status, result, output = run_module(
        tmp_path, {"channels": TIER2, "msg": ALERT, "mode": "all", "idempotency_key": "INC-42:alert",
                   **provider_args(emu)})
    assert status == "CHANGED" and result["delivered"] is True
    assert [d["status"] for d in result["deliveries"]] == [200, 201, 202, 202]
    ledger = emu.ledger()
    assert [(e["service"], e["to"]) for e in ledger] == [
        ("slack", ["#akig-incidents"]), ("twilio", [ONCALL]),
        ("sendgrid", ["manager@akig.com"]), ("sendgrid", ["cto@akig.com"])]
    assert all("INCIDENT ALERT" in (e["text"] or e["body"]) for e in ledger)
    assert ledger[1]["idempotency_key"] == f"INC-42:alert:sms:{ONCALL}"
    for secret in SECRETS:
        assert secret not in output


def test_check_mode_sends_nothing(emu: Emulator, tmp_path: Path) -> None:
    status, result, output = run_module(
        tmp_path, {"channels": TIER2, "msg": ALERT, "mode": "all", **provider_args(emu)}, "--check")
    assert status == "CHANGED" and result["changed"] is True and result["deliveries"] == []
    assert result["actions"] == [
        "Would send a Slack message to #akig-incidents",
        f"Would send an SMS to {ONCALL}; if it fails, an e-mail to oncall@akig.com instead",
        "Would send an e-mail to manager@akig.com",
        "Would send an e-mail to cto@akig.com",
    ]
    assert emu.ledger() == []
    assert emu.call("/_emulator/rejections")["count"] == 0
    for secret in SECRETS:
        assert secret not in output


def test_outage_is_a_warning_unless_fail_on_error(emu: Emulator, tmp_path: Path) -> None:
    emu.call("/_emulator/mode", {"service": "twilio", "mode": "outage"})
    emu.call("/_emulator/mode", {"service": "sendgrid", "mode": "outage"})
    args = {"channels": TIER2[1:2], "msg": ALERT, "mode": "all", **provider_args(emu)}

    status, result, output = run_module(tmp_path, args)
    assert status == "SUCCESS" and result["delivered"] is False
    assert result["failed_channels"] == [f"sms:{ONCALL}", "email:oncall@akig.com"]
    assert "[WARNING]: SMS to +33600000000 failed: HTTP 503" in output

    status, result, output = run_module(tmp_path, dict(args, fail_on_error=True))
    assert status == "FAILED!"
    assert result["msg"].startswith(f"The incident message was not delivered to sms:{ONCALL}")
    assert [d["status"] for d in result["deliveries"]] == [503, 503]
    for secret in SECRETS:
        assert secret not in output


@pytest.mark.parametrize(
    ("channels", "needle"),
    [
        ([{"type": "fax", "to": "+33600000000"}], "value of type must be one of: slack, sms, email, got: fax"),
        ([{"type": "sms"}], "missing required arguments: to found in channels"),
        ([{"type": "sms", "to": ONCALL, "fallbacks": [{"type": "email"}]}],
         "missing required arguments: to found in channels -> fallbacks"),
    ],
)
def test_bad_input_is_a_clear_error(emu: Emulator, tmp_path: Path, channels: list[dict[str, Any]], needle: str) -> None:
    status, result, output = run_module(tmp_path, {"channels": channels, "msg": ALERT, **provider_args(emu)})
    assert status == "FAILED!" and needle in result["msg"]
    assert emu.ledger() == []
    for secret in SECRETS:
        assert secret not in output


def test_ansible_doc_renders(tmp_path: Path) -> None:
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".collections"), ANSIBLE_NOCOLOR="1")
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")
    env["ANSIBLE_CONFIG"] = str(tmp_path / "ansible.cfg")
    for module in ("akig.runbooks.incident_notify", "akig.runbooks.incident_ticket"):
        proc = subprocess.run([str(VENV_BIN / "ansible-doc"), module], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "EXAMPLES" in proc.stdout and "RETURN VALUES" in proc.stdout
        assert "ERROR" not in proc.stderr


BACKGROUND_PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Send in the background
      akig.runbooks.incident_notify: "{{ notify_args }}"
      async: "{{ job_limit }}"
      poll: 0
      register: launched
    - name: Collect
      ansible.builtin.async_status:
        jid: "{{ launched.ansible_job_id }}"
      register: job
      until: job.finished | bool
      retries: 30
      delay: 0.2
      failed_when: false
    - name: Show both
      ansible.builtin.debug:
        msg: "RESULT {{ {'launched': launched, 'job': job} | to_json }} END"
"""


def run_background(tmp_path: Path, args: dict[str, Any], job_limit: int, *extra: str) -> dict[str, Any]:
    import json
    import re

    (tmp_path / "play.yml").write_text(BACKGROUND_PLAY)
    ansible = Ansible(tmp_path, SECRETS, config=ADHOC_CONFIG)
    run = ansible.playbook(tmp_path / "play.yml", {"notify_args": args, "job_limit": job_limit}, "-vvv", *extra,
                           timeout=120)
    assert run.rc == 0, run.output
    return json.loads(re.search(r"RESULT (.*) END", run.stdout).group(1).replace('\\"', '"'))


@pytest.mark.parametrize("way", ["in_process", "module"])
def test_background_send_is_collected_by_async_status_either_way(emu: Emulator, tmp_path: Path, way: str) -> None:
    """async + poll 0 (a runbook's alert): in-process a detached child of the worker sends, as async_wrapper would."""
    args = {"channels": TIER2, "msg": ALERT, "mode": "all", "idempotency_key": "INC-43:alert:" + way,
            **provider_args(emu)}
    extra = () if way == "in_process" else ("-e", "akig_runbooks_in_process=false")
    found = run_background(tmp_path, args, 30, *extra)
    launched, job = found["launched"], found["job"]
    assert launched["started"] in (1, True) and launched["finished"] in (0, False)
    assert launched.get("in_process", False) is (way == "in_process")
    assert job["finished"] in (1, True) and job["delivered"] is True
    assert [d["status"] for d in job["deliveries"]] == [200, 201, 202, 202]
    # each contact exactly once
    mine = [e for e in emu.ledger() if "INC-43:alert:" + way in (e.get("idempotency_key") or "") or e["service"] != "twilio"]
    assert sorted(tuple(e["to"]) for e in mine if e["service"] == "twilio") == [(ONCALL,)]


def test_background_send_that_outlives_its_async_limit_fails_in_the_job(emu: Emulator, tmp_path: Path) -> None:
    emu.mode("slack", "slow", delay_s=5)
    args = {"channels": TIER2[:1], "msg": ALERT, "mode": "all", "idempotency_key": "INC-44:alert", "timeout": 10,
            **provider_args(emu)}
    job = run_background(tmp_path, args, 1)["job"]
    assert job["finished"] in (1, True) and "delivered" not in job, job
    assert job["msg"] == "the job did not finish within async=1 s"
