# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The communication drills' settings; their fixtures are the shared ones of tests/support.

Nothing here touches the lab (127.0.0.11-41): the emulator (tests/support/emulator.py) is served
in-process on 127.0.0.1, a free port, with its own state dir and this directory's canary
credentials, and is stopped at the end of each test module; ``run_playbook``
(tests/support/ansible.py) runs ``ansible-playbook -c local`` from the test's scratch directory.

The test modules import the fixtures from here (tests/integration/conftest.py exposes the same
ones); ``emulator_credentials`` gives the shared emulator the credentials below.
"""

from __future__ import annotations

import pytest

from ansible_collections.akig.runbooks.tests.support.ansible import Runner, run_playbook  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.akig.runbooks.tests.support.emulator import Emulator, emu, emulator  # noqa: F401  # pylint: disable=unused-import

CREDS = {
    "twilio_account_sid": "ACcomms0123456789abcdef",
    "twilio_auth_token": "twilio-token-CANARY-c0m5",
    "sendgrid_api_key": "SG.sendgrid-key-CANARY-c0m5",
    "slack_webhook_path": "T0COM/B0COM/slackhookCANARYc0m5",
    "ticket_api_token": "ticket-token-CANARY-c0m5",
}
SECRETS = [CREDS["twilio_auth_token"], CREDS["sendgrid_api_key"], "slackhookCANARYc0m5",
           CREDS["ticket_api_token"]]


@pytest.fixture(scope="module")
def emulator_credentials() -> dict[str, str]:
    """The shared emulator fixture accepts the drills' canary credentials."""
    return CREDS
