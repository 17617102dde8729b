# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pg_failover role's choice of the standby to promote, as a filter.

A thin wrapper around ``plugins/module_utils/pg_candidate.py``; the documentation lives in the sidecar
``pg_failover_candidate.yml`` next to this file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Optional

from ansible.errors import AnsibleFilterError
from ansible_collections.akig.runbooks.plugins.module_utils import pg_candidate as _pc


def _plain(value: Any) -> Any:
    """A plain copy of what Ansible passes (lazy containers in ansible-core 2.19): dicts and lists all the way down."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _priorities(hosts: Any, priorities: Any) -> Optional[dict[str, Any]]:
    """host -> priority, read only for the nodes (hostvars are big and lazy: copy what is needed, not all of it)."""
    if priorities is None:
        return None
    if not isinstance(priorities, Mapping):
        raise AnsibleFilterError("pg_failover_candidate: priorities must be a dict of host -> whole number, or hostvars; "
                                 "got %s" % type(priorities).__name__)
    chosen: dict[str, Any] = {}
    for host in hosts:
        if host not in priorities:
            continue
        value = priorities[host]
        if isinstance(value, Mapping):
            value = value[_pc.PRIORITY_VAR] if _pc.PRIORITY_VAR in value else None
        chosen[str(host)] = value
    return chosen


def pg_failover_candidate(nodes: Any, old_primary: Any, candidate: Any = None,
                          priorities: Any = None) -> dict[str, Any]:
    if not isinstance(nodes, Mapping):
        raise AnsibleFilterError("pg_failover_candidate: give the nodes as a dict of inventory host -> "
                                 "pg_replication_info result (pg_cluster_info's nodes), got %s" % type(nodes).__name__)
    plain = _plain(nodes)
    try:
        return _pc.choose_candidate(plain, old_primary, candidate if candidate else None,
                                    _priorities(list(plain), priorities))
    except _pc.CandidateInputError as exc:
        raise AnsibleFilterError("pg_failover_candidate: %s" % exc) from exc


class FilterModule:
    """pg_failover candidate filter."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"pg_failover_candidate": pg_failover_candidate}
