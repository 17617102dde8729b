# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers and fixtures of the communication drills: a private SaaS emulator, an ansible-playbook runner.

Nothing here touches the lab (127.0.0.11-41): the emulator listens on 127.0.0.1 on a free port
with its own state dir and credentials, and is stopped at the end of each test module.

The test modules import the fixtures from here. There is deliberately no conftest.py in this
directory: tests/lab does `from conftest import ...`, and a second conftest module collected in
the same session would shadow it.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
EMULATOR = REPO / "lab" / "emulator" / "akig_saas_emulator.py"
VENV_BIN = Path(sys.executable).parent
CREDS = {
    "twilio_account_sid": "ACcomms0123456789abcdef",
    "twilio_auth_token": "twilio-token-CANARY-c0m5",
    "sendgrid_api_key": "SG.sendgrid-key-CANARY-c0m5",
    "slack_webhook_path": "T0COM/B0COM/slackhookCANARYc0m5",
    "ticket_api_token": "ticket-token-CANARY-c0m5",
}
SECRETS = [CREDS["twilio_auth_token"], CREDS["sendgrid_api_key"], "slackhookCANARYc0m5",
           CREDS["ticket_api_token"]]


class Emulator:
    """A private akig_saas_emulator process; control API helpers."""

    def __init__(self, tmp: Path) -> None:
        creds = tmp / "creds.json"
        creds.write_text(json.dumps(CREDS))
        creds.chmod(0o600)
        self.proc = subprocess.Popen(
            [sys.executable, str(EMULATOR), "--host", "127.0.0.1", "--port", "0",
             "--state-dir", str(tmp / "state"), "--credentials-file", str(creds)],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stderr], daemon=True).start()
        while True:
            found = re.search(r"listening on (http://[\d.]+:\d+)", lines.get(timeout=10))
            if found:
                self.url = found.group(1)
                break

    def call(self, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def reset(self) -> None:
        self.call("/_emulator/reset", {})

    def ledger(self, query: str = "") -> list[dict[str, Any]]:
        return self.call("/_emulator/ledger" + query)["entries"]

    def akig_vars(self) -> dict[str, Any]:
        """The collection-wide provider settings, pointing at this emulator."""
        return {
            "akig_environment": "drill",
            "akig_slack_webhook_url": f"{self.url}/slack/services/{CREDS['slack_webhook_path']}",
            "akig_twilio_base_url": f"{self.url}/twilio",
            "akig_twilio_account_sid": CREDS["twilio_account_sid"],
            "akig_twilio_auth_token": CREDS["twilio_auth_token"],
            "akig_sendgrid_base_url": f"{self.url}/sendgrid",
            "akig_sendgrid_api_key": CREDS["sendgrid_api_key"],
            "akig_ticket_base_url": f"{self.url}/tickets/api/v1",
            "akig_ticket_api_token": CREDS["ticket_api_token"],
        }

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


Runner = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emu = Emulator(tmp_path_factory.mktemp("saas"))
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def emu(emulator: Emulator) -> Emulator:
    emulator.reset()
    return emulator


@pytest.fixture
def run_playbook(tmp_path: Path) -> Runner:
    """Run a playbook with `ansible-playbook -i <inventory> -c local` from a scratch directory.

    The repository's ansible.cfg (lab inventory) is not used; extra vars go through a 0600 file.
    """
    (tmp_path / "ansible.cfg").write_text("[defaults]\nlocalhost_warning = false\nretry_files_enabled = false\n")

    def run(playbook: Path, extra_vars: dict[str, Any], *args: str, inventory: str = "localhost,",
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        vars_file = tmp_path / "vars.json"
        vars_file.write_text(json.dumps({"ansible_python_interpreter": sys.executable, **extra_vars}))
        vars_file.chmod(0o600)
        environ = dict(os.environ, ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                       ANSIBLE_COLLECTIONS_PATH=str(REPO / ".collections"))
        for name in ("AKIG_INCIDENT_ID", "AKIG_RUNBOOK"):  # the caller's shell must not leak in
            environ.pop(name, None)
        environ.update(env or {})
        return subprocess.run(
            [str(VENV_BIN / "ansible-playbook"), "-i", inventory, "-c", "local", str(playbook),
             "-e", f"@{vars_file}", *args],
            cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=300, check=False,
        )

    return run
