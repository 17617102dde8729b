# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for sizes and PostgreSQL LSNs; documentation lives in the sidecar YAML files."""
from __future__ import annotations

from typing import Any, Callable

from ansible.errors import AnsibleFilterError

from ansible_collections.akig.runbooks.plugins.module_utils.units import UnitsError, lsn_bytes, size_bytes


def _wrap(func: Callable[[Any], int]) -> Callable[[Any], int]:
    def run(value: Any) -> int:
        try:
            return func(value)
        except UnitsError as exc:
            raise AnsibleFilterError(f"{func.__name__}: {exc}") from exc
    run.__name__ = func.__name__
    return run


class FilterModule:
    """Size and LSN filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"size_bytes": _wrap(size_bytes), "pg_lsn_bytes": _wrap(lsn_bytes)}
