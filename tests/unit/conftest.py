# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""tests/unit: tests that start no process, run in parallel by scripts/test.sh (pytest-xdist).

A test here that starts a process (a server, a daemon, ansible, any subprocess) is marked
``process`` and runs in its own lane; a test that starts one without the mark fails, naming the
program (tests/support/processes.py). Tests that use a fixture below that starts a server are
marked automatically. Whole files of process tests belong in tests/integration.

Shared fixtures (tests/support): ``emulator``/``emu``/``emulator_credentials`` (a private SaaS
emulator served in-process), ``run_playbook`` (ansible-playbook, isolated), ``cluster`` (the
PostgreSQL test cluster) and ``redis_server``.

This directory is a package (``__init__.py``) so that this module is not imported under the bare
name ``conftest``, which tests/lab's modules import their helpers from.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.akig.runbooks.tests.support import processes
from ansible_collections.akig.runbooks.tests.support.ansible import run_playbook  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.akig.runbooks.tests.support.emulator import emu, emulator, emulator_credentials  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.akig.runbooks.tests.support.pg_cluster import cluster  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.akig.runbooks.tests.support.redis_server import redis_server  # noqa: F401  # pylint: disable=unused-import


def pytest_configure(config: pytest.Config) -> None:
    processes.configure(config, Path(__file__).parent, guard=True)
