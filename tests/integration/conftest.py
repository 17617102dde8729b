# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""tests/integration: tests that start processes (servers, daemons, ansible runs), apart from tests/unit.

Shared fixtures (tests/support): ``emulator``/``emu``/``emulator_credentials`` (a private SaaS
emulator served in-process), ``run_playbook`` (ansible-playbook, isolated), ``cluster`` (the
PostgreSQL test cluster on 127.0.0.91-93) and ``redis_server``.

scripts/test.sh runs these tests on two pytest-xdist workers, a file per worker (``--dist loadfile``):
the PostgreSQL test cluster takes its addresses from the worker (127.0.0.91-93 on gw0, 10 above on
each further worker), and node_restart's fixed 127.0.0.96-97 are used by one file only. A new file
that needs fixed addresses must take them from the worker the same way.

This directory is a package (``__init__.py``) so that this module is not imported under the bare
name ``conftest``, which tests/lab's modules import their helpers from.
"""

from __future__ import annotations

from ansible_collections.akig.runbooks.tests.support.ansible import run_playbook  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.akig.runbooks.tests.support.emulator import emu, emulator, emulator_credentials  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.akig.runbooks.tests.support.pg_cluster import cluster  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.akig.runbooks.tests.support.redis_server import redis_server  # noqa: F401  # pylint: disable=unused-import
