# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The PostgreSQL connection options shared by the modules that log in to a server.

``pg_replication_info`` and ``pg_promote`` take the same ``login_*`` and ``connect_timeout``
options; their argument spec starts from :func:`postgres_common_argument_spec`, their
documentation from the doc fragment ``akig.runbooks.postgres``, and they form the action group
``akig.runbooks.postgres`` (``meta/runtime.yml``), so a role sets the connection once with
``module_defaults: {group/akig.runbooks.postgres: {...}}``. Keep the three in step.
"""

from __future__ import annotations

from typing import Any, Dict

__all__ = ["postgres_common_argument_spec"]


def postgres_common_argument_spec() -> Dict[str, Dict[str, Any]]:
    """A fresh copy of the connection options' argument spec, for a module to extend with its own."""
    return dict(
        login_host=dict(type="str", required=True),
        login_port=dict(type="int", default=5432),
        login_user=dict(type="str", default="postgres"),
        login_password=dict(type="str", no_log=True),
        login_db=dict(type="str", default="postgres"),
        connect_timeout=dict(type="int", default=3),
    )
