# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """The PostgreSQL connection options (argument spec: module_utils/postgres.py)."""

    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host name or IP address of the PostgreSQL node to connect to.
    type: str
    required: true
  login_port:
    description:
      - TCP port of the node.
    type: int
    default: 5432
  login_user:
    description:
      - Role to log in as. The privileges each module needs are in its notes.
    type: str
    default: postgres
  login_password:
    description:
      - Password of O(login_user). Never returned or logged; a failure message never contains it.
    type: str
  login_db:
    description:
      - Database to connect to.
    type: str
    default: postgres
  connect_timeout:
    description:
      - Seconds to wait for the connection (libpq waits at least 2). Must be at least 1.
      - Whether a connection failure is a result or a failed task is said in each module's documentation.
    type: int
    default: 3
notes:
  - The connection options can be set once for every module of the action group C(akig.runbooks.postgres)
    (M(akig.runbooks.pg_replication_info), M(akig.runbooks.pg_promote)) with
    C(module_defaults) and C(group/akig.runbooks.postgres).
"""
