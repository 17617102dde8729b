# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``database_url_repoint``: point an env file's DATABASE_URL at another host and port.

A thin wrapper around ``plugins/module_utils/database_url.py``; documentation lives in
``database_url_repoint.yml`` next to this file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.akig.runbooks.plugins.module_utils import database_url as _du


def database_url_repoint(text: Any, host: Any, port: Any = _du.DEFAULT_PORT, key: str = "DATABASE_URL") -> dict[str, Any]:
    try:
        return _du.repoint_env(text, host, port, key)
    except _du.DatabaseUrlError as exc:
        # the message names the line and the cause, never the URL (it holds a password)
        raise AnsibleFilterError("database_url_repoint: %s" % exc) from None


class FilterModule:
    """DATABASE_URL filter."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"database_url_repoint": database_url_repoint}
