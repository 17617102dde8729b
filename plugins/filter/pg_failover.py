# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pg_failover role's decisions as filters: slot names, input checks, RPO, rejoin checks.

Thin wrappers around ``plugins/module_utils/pg_failover.py``; documentation lives in the sidecar
YAML files next to this one (one per filter name).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Optional

from ansible.errors import AnsibleFilterError
from ansible_collections.akig.runbooks.plugins.module_utils import pg_failover as _pf
from ansible_collections.akig.runbooks.plugins.module_utils.sla import SlaError, duration_seconds
from ansible_collections.akig.runbooks.plugins.module_utils.units import UnitsError, size_bytes


def pg_slot_name(host: Any, explicit: Optional[str] = None) -> str:
    try:
        return _pf.slot_name(host, explicit)
    except _pf.FailoverInputError as exc:
        raise AnsibleFilterError("pg_slot_name: %s" % exc) from exc


def pg_failover_problems(inputs: Any, groups: Any, hostvars: Any, operation: str = "failover") -> list[str]:
    if not isinstance(inputs, Mapping) or not isinstance(groups, Mapping):
        raise AnsibleFilterError("pg_failover_problems: give the inputs as a dict, then groups and hostvars")
    return _pf.input_problems(inputs, groups, hostvars, operation)


def pg_failover_rpo(candidate: Any, old: Any, budget_bytes: Any, budget_seconds: Any, target: str,
                    old_name: str, address: Optional[str] = None) -> dict[str, Any]:
    if not isinstance(candidate, Mapping) or (old is not None and not isinstance(old, Mapping)):
        raise AnsibleFilterError("pg_failover_rpo: the candidate and the old primary must be pg_replication_info "
                                 "results (dicts); the old primary may be none")
    try:
        limit_bytes = size_bytes(budget_bytes)
        limit_seconds = duration_seconds(budget_seconds)
    except (UnitsError, SlaError) as exc:
        raise AnsibleFilterError("pg_failover_rpo: %s" % exc) from exc
    return _pf.assess_rpo(candidate, old, limit_bytes, limit_seconds, target, old_name, address)


def pg_rejoin_problems(node_info: Any, node: str, new_primary: str, node_control: Any, new_info: Any,
                       force_writable: Any = False, resuming: Any = False, fresh_backup: Any = False) -> list[str]:
    for name, value in (("node_info", node_info), ("node_control", node_control), ("new_info", new_info)):
        if not isinstance(value, Mapping):
            raise AnsibleFilterError("pg_rejoin_problems: %s must be a dict, got %s" % (name, type(value).__name__))
    return _pf.rejoin_problems(node, new_primary, node_info, node_control, new_info, force_writable=bool(force_writable),
                               resuming=bool(resuming), fresh_backup=bool(fresh_backup))


def pg_node_specs(names: Any, hostvars: Any, primary: Optional[str] = None, probes: Any = 1,
                  interval: Any = 1.0) -> list[dict[str, Any]]:
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)) or not isinstance(hostvars, Mapping):
        raise AnsibleFilterError("pg_node_specs: give a list of inventory host names, then hostvars")
    specs = []
    for name in names:
        if name not in hostvars:
            raise AnsibleFilterError("pg_node_specs: %s is not a host of the inventory" % name)
        host = hostvars[name]
        specs.append({"name": str(name), "host": str(host.get("akig_address") or name),
                      "port": int(host.get("akig_pg_port") or 5432),
                      "attempts": int(probes) if name == primary else 1,
                      "attempt_interval": float(interval)})
    return specs


class FilterModule:
    """pg_failover filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "pg_slot_name": pg_slot_name,
            "pg_failover_problems": pg_failover_problems,
            "pg_failover_rpo": pg_failover_rpo,
            "pg_rejoin_problems": pg_rejoin_problems,
            "pg_node_specs": pg_node_specs,
        }
