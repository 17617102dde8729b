# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A private SaaS emulator for the tests: lab/emulator/akig_saas_emulator.py served in this process.

The emulator's own server (``make_server``, the code ``main()`` runs) listens on 127.0.0.1, a free
port, with its own state directory and credentials, from a daemon thread of the test process: no
process is started, nothing touches the lab's emulator on 127.0.0.41, and tests can run in
parallel. The emulator's command line itself is tested in tests/unit/emulator/test_emulator.py.

Fixtures (exposed by the conftest.py of tests/unit and tests/integration):

* ``emulator_credentials`` -- the credentials the emulator accepts; a test module overrides it
  with its own canary values (module scope) so that it can look for them in outputs;
* ``emulator`` -- one emulator per test module, stopped at the end of the module;
* ``emu`` -- the same emulator, reset (ledger, modes, tickets) before each test.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
EMULATOR_PATH = REPO / "lab" / "emulator" / "akig_saas_emulator.py"
MODULE_NAME = "akig_saas_emulator"

DEFAULT_CREDENTIALS: dict[str, str] = {
    "twilio_account_sid": "ACsupport0123456789abcdef",
    "twilio_auth_token": "twilio-token-CANARY-5u99",
    "sendgrid_api_key": "SG.sendgrid-key-CANARY-5u99",
    "slack_webhook_path": "T0SUP/B0SUP/slackhookCANARY5u99",
    "ticket_api_token": "ticket-token-CANARY-5u99",
}


def load_emulator_module() -> ModuleType:
    """The emulator program as a module (registered once in sys.modules: its dataclasses need it)."""
    if MODULE_NAME in sys.modules:
        return sys.modules[MODULE_NAME]
    spec = importlib.util.spec_from_file_location(MODULE_NAME, EMULATOR_PATH)
    if spec is None or spec.loader is None:
        raise ImportError("cannot load the SaaS emulator from %s: is the checkout complete?" % EMULATOR_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


class Emulator:
    """A running emulator: its base ``url`` and helpers for its control API (``/_emulator/...``)."""

    def __init__(self, tmp: Path, credentials: Mapping[str, str]) -> None:
        program = load_emulator_module()
        self.credentials = dict(credentials)
        creds_file = tmp / "creds.json"
        creds_file.write_text(json.dumps(self.credentials))
        creds_file.chmod(0o600)
        loaded = program.load_credentials(creds_file)
        store = program.StateStore(tmp / "state", program.Redactor(loaded.values()))
        self.access_log = io.StringIO()
        self.server = program.make_server("127.0.0.1", 0, program.Emulator(loaded, store), self.access_log)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="akig-saas-emulator", daemon=True)
        self.thread.start()
        host, port = self.server.server_address[:2]
        self.url = "http://%s:%d" % (host, port)

    def call(self, path: str, body: Any = None) -> Any:
        """GET ``path`` (POST when there is a JSON ``body``) and return the decoded JSON answer."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def reset(self) -> None:
        self.call("/_emulator/reset", {})

    def mode(self, service: str, mode: str, delay_s: float | None = None) -> None:
        body: dict[str, Any] = {"service": service, "mode": mode}
        if delay_s is not None:
            body["delay_s"] = delay_s
        self.call("/_emulator/mode", body)

    def ledger(self, query: str = "") -> list[dict[str, Any]]:
        return self.call("/_emulator/ledger" + query)["entries"]

    def rejections(self, query: str = "") -> list[dict[str, Any]]:
        return self.call("/_emulator/rejections" + query)["entries"]

    def akig_vars(self) -> dict[str, Any]:
        """The collection-wide provider settings (``akig_*``), pointing at this emulator."""
        creds = self.credentials
        return {
            "akig_environment": "drill",
            "akig_slack_webhook_url": "%s/slack/services/%s" % (self.url, creds["slack_webhook_path"]),
            "akig_twilio_base_url": "%s/twilio" % self.url,
            "akig_twilio_account_sid": creds["twilio_account_sid"],
            "akig_twilio_auth_token": creds["twilio_auth_token"],
            "akig_sendgrid_base_url": "%s/sendgrid" % self.url,
            "akig_sendgrid_api_key": creds["sendgrid_api_key"],
            "akig_ticket_base_url": "%s/tickets/api/v1" % self.url,
            "akig_ticket_api_token": creds["ticket_api_token"],
        }

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def emulator_credentials() -> dict[str, str]:
    """Override in a test module (module scope) to give its emulator that module's canary credentials."""
    return dict(DEFAULT_CREDENTIALS)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory, emulator_credentials: dict[str, str]) -> Iterator[Emulator]:
    emu = Emulator(tmp_path_factory.mktemp("saas"), emulator_credentials)
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def emu(emulator: Emulator) -> Emulator:
    emulator.reset()
    return emulator
