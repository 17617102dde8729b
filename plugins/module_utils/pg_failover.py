# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The decisions of the ``pg_failover`` role, as pure functions (its filters are thin wrappers).

* :func:`slot_name` -- the physical replication slot a database host streams through, derived from
  its inventory name (``db-1.prod.akig.internal`` -> ``db_1_prod_akig_internal_slot``) or given
  per host (``akig_pg_slot_name``), always a valid PostgreSQL slot name.
* :func:`input_problems` -- every input of a failover or a rejoin checked without connecting
  anywhere: types and ranges, host names against the inventory groups, slot names, each database
  host's layout, and the confirmation outside the environments that are exempt from it.
* :func:`assess_rpo` -- how far the candidate is behind, measured against the old primary's
  current WAL when it can be read, else from the candidate's WAL receiver; a lag that cannot be
  known counts as over the budget.
* :func:`rejoin_problems` -- whether a node may be rewound or re-cloned onto the new primary:
  never a writable node unless explicitly forced, only onto a later timeline of the same cluster.

Nothing here connects, reads files or reads the clock; the callers pass what they read.
"""

from __future__ import annotations

import hashlib
import math
import posixpath
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.akig.runbooks.plugins.module_utils.sla import SlaError, duration_seconds
from ansible_collections.akig.runbooks.plugins.module_utils.units import UnitsError, size_bytes

__all__ = [
    "FailoverInputError",
    "OPERATIONS",
    "SLOT_RE",
    "assess_rpo",
    "input_problems",
    "rejoin_problems",
    "slot_name",
]

SLOT_RE = re.compile(r"^[a-z0-9_]{1,63}$")
SLOT_SUFFIX = "_slot"
SLOT_MAX = 63
HASH_CHARS = 8
OPERATIONS = ("failover", "rejoin")
SERVICE_MANAGERS = ("systemd", "pg_ctl")

# integer inputs: (minimum, maximum or None)
_INTS = {
    "pg_failover_stop_timeout_s": (1, 3600),
    "pg_failover_promote_timeout_s": (1, 3600),
    "pg_failover_catchup_timeout_s": (0, 3600),
    "pg_failover_restart_timeout_s": (1, 3600),
    "pg_failover_probe_count": (1, 100),
    "pg_failover_keep_diverged": (0, None),
}
# float inputs: (minimum, maximum, minimum excluded)
_FLOATS = {
    "pg_failover_poll_s": (0.0, 60.0, True),
    "pg_failover_analysis_max_age_s": (0.0, None, False),
    "pg_failover_probe_interval_s": (0.0, 60.0, False),
}
_BOOLS = ("pg_failover_force", "pg_failover_confirm", "pg_failover_secure_logging", "pg_failover_rejoin_force_writable")


class FailoverInputError(ValueError):
    """An input the role cannot use; the message names it and says what is accepted."""


# --------------------------------------------------------------------------- slot names


def slot_name(host: str, explicit: Optional[str] = None) -> str:
    """The replication slot of ``host``: ``explicit`` when given (checked), else derived from the host name.

    Derived: lower case, every character outside ``[a-z0-9_]`` replaced by ``_``, then ``_slot``; a name
    longer than 63 characters is cut and keeps ``_`` + the first 8 hex digits of the SHA-256 of the host
    name before ``_slot``, so two long names that share their beginning still get two slots.
    """
    if explicit is not None and explicit != "":
        if not isinstance(explicit, str) or not SLOT_RE.match(explicit):
            raise FailoverInputError(
                "akig_pg_slot_name %r of %s is not a valid replication slot name: use 1 to 63 lower-case letters, "
                "digits and underscores, or leave it unset to derive one from the host name" % (explicit, host))
        return explicit
    if not isinstance(host, str) or not host:
        raise FailoverInputError("a slot name needs a host name, got %r" % (host,))
    base = re.sub(r"[^a-z0-9_]", "_", host.lower())
    name = base + SLOT_SUFFIX
    if len(name) <= SLOT_MAX:
        return name
    digest = hashlib.sha256(host.encode("utf-8")).hexdigest()[:HASH_CHARS]
    keep = SLOT_MAX - len(SLOT_SUFFIX) - HASH_CHARS - 1
    return "%s_%s%s" % (base[:keep], digest, SLOT_SUFFIX)


# --------------------------------------------------------------------------- inputs


def _names(hosts: Sequence[str]) -> str:
    return ", ".join(hosts) if hosts else "none"


def _as_int(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return None


def _as_float(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _check_int(name: str, value: Any, minimum: int, maximum: Optional[int]) -> Optional[str]:
    number = _as_int(value)
    limits = "from %d to %d" % (minimum, maximum) if maximum is not None else "%d or more" % minimum
    if number is None or number < minimum or (maximum is not None and number > maximum):
        return "%s must be a whole number %s, got %r" % (name, limits, value)
    return None


def _check_float(name: str, value: Any, minimum: float, maximum: Optional[float], exclusive: bool) -> Optional[str]:
    number = _as_float(value)
    low = "more than %g" % minimum if exclusive else "%g or more" % minimum
    limits = "%s and at most %g" % (low, maximum) if maximum is not None else low
    if (number is None or math.isnan(number) or (number <= minimum if exclusive else number < minimum)
            or (maximum is not None and number > maximum)):
        return "%s must be a number of seconds, %s, got %r" % (name, limits, value)
    return None


def _bool(value: Any) -> Optional[bool]:
    try:
        return boolean(value, strict=True)
    except TypeError:
        return None


def _str_list(value: Any) -> Optional[List[str]]:
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return list(value)
    return None


def _hostvar(hostvars: Mapping[str, Any], host: str, key: str) -> Any:
    try:
        variables = hostvars[host]
    except KeyError:
        return None
    return variables[key] if key in variables else None


def _layout_problems(host: str, hostvars: Mapping[str, Any]) -> List[str]:
    """What the failover and the rejoin read from a database host's inventory variables."""
    problems: List[str] = []
    port = _hostvar(hostvars, host, "akig_pg_port")
    if port is not None and _check_int("akig_pg_port", port, 1, 65535):
        problems.append("akig_pg_port of %s must be a TCP port from 1 to 65535, got %r" % (host, port))
    manager = _hostvar(hostvars, host, "akig_pg_service_manager") or "systemd"
    if manager not in SERVICE_MANAGERS:
        problems.append("akig_pg_service_manager of %s must be systemd or pg_ctl, got %r" % (host, manager))
    elif manager == "systemd" and not _hostvar(hostvars, host, "akig_pg_service_name"):
        problems.append("akig_pg_service_name of %s is not set; with akig_pg_service_manager=systemd it names the "
                        "unit of the server (postgresql@15-main on Debian)" % host)
    required = ["akig_pg_data_dir", "akig_pg_passfile"] + (["akig_pg_log_file"] if manager == "pg_ctl" else [])
    for key in required + ["akig_pg_bin_dir"]:
        value = _hostvar(hostvars, host, key)
        if value is None and key not in required:
            continue
        if not isinstance(value, str) or not posixpath.isabs(value):
            problems.append("%s of %s must be an absolute path on that host, got %r" % (key, host, value))
    return problems


def input_problems(inputs: Mapping[str, Any], groups: Mapping[str, Sequence[str]], hostvars: Mapping[str, Any],
                   operation: str = "failover") -> List[str]:
    """Every problem with the inputs of a failover (``main``) or a ``rejoin``, as sentences; [] when none.

    ``inputs`` holds the role's ``pg_failover_*`` variables and ``akig_environment``; ``groups`` and
    ``hostvars`` are the inventory's. Reads only the variables it checks; connects nowhere.
    """
    if operation not in OPERATIONS:
        return ["pg_failover_operation must be failover or rejoin, got %r" % (operation,)]
    problems: List[str] = []

    # the inventory and the host names
    group_names = {}
    for key in ("pg_failover_primary_group", "pg_failover_replica_group"):
        group = inputs.get(key)
        if not isinstance(group, str) or not group:
            problems.append("%s must be the name of an inventory group, got %r" % (key, group))
        elif group not in groups:
            problems.append("%s: the inventory has no group %r (its groups: %s)" % (
                key, group, _names(sorted(name for name in groups if name not in ("all", "ungrouped")))))
        group_names[key] = group if isinstance(group, str) else ""
    primaries = list(groups.get(group_names["pg_failover_primary_group"], []) or [])
    replicas = list(groups.get(group_names["pg_failover_replica_group"], []) or [])
    db_hosts = list(dict.fromkeys(primaries + replicas))
    where = "groups %s and %s" % (group_names["pg_failover_primary_group"], group_names["pg_failover_replica_group"])
    if group_names["pg_failover_primary_group"] in groups and not primaries:
        problems.append("The inventory has no host in group %s (pg_failover_primary_group)"
                        % group_names["pg_failover_primary_group"])
    if group_names["pg_failover_replica_group"] in groups and not replicas:
        problems.append("The inventory has no replica: group %s (pg_failover_replica_group) is empty; a %s needs "
                        "one" % (group_names["pg_failover_replica_group"], operation))

    primary = inputs.get("pg_failover_primary")
    if primary is None or primary == "":
        problems.append("pg_failover_primary is not set and has no default (the first host of %s); name the primary "
                        "to replace with -e pg_failover_primary=HOST, one of: %s" % (
                            group_names["pg_failover_primary_group"] or "pg_failover_primary_group", _names(db_hosts)))
        primary = None
    elif not isinstance(primary, str) or primary not in db_hosts:
        problems.append("Unknown database host %r for pg_failover_primary; valid names: %s (%s)" % (
            primary, _names(db_hosts), where))
        primary = None
    others = [host for host in db_hosts if host != primary]
    if operation == "failover":
        candidate = inputs.get("pg_failover_candidate")
        if candidate is None:
            candidate = ""
        if not isinstance(candidate, str) or (candidate and candidate not in others):
            problems.append("Unknown database host %r for pg_failover_candidate; valid names: %s (or empty for the "
                            "only healthy replica)" % (candidate, _names(others)))
        if primary is not None and not others:
            problems.append("No replica to promote: %s is the only database host in %s" % (primary, where))
    else:
        new_primary = inputs.get("pg_failover_new_primary")
        if not isinstance(new_primary, str) or new_primary not in others:
            problems.append("Unknown database host %r for pg_failover_new_primary (the node that is primary now); "
                            "valid names: %s" % (new_primary, _names(others)))

    # numbers, sizes, durations, flags and lists
    try:
        size_bytes(inputs.get("pg_failover_max_lag_bytes"))
    except UnitsError as exc:
        problems.append("pg_failover_max_lag_bytes: %s" % exc)
    try:
        duration_seconds(inputs.get("pg_failover_max_lag_seconds"))
    except SlaError as exc:
        problems.append("pg_failover_max_lag_seconds: %s" % exc)
    for key, (minimum, maximum) in _INTS.items():
        if key in inputs:
            problem = _check_int(key, inputs[key], minimum, maximum)
            if problem:
                problems.append(problem)
    for key, (low, high, exclusive) in _FLOATS.items():
        if key in inputs:
            problem = _check_float(key, inputs[key], low, high, exclusive)
            if problem:
                problems.append(problem)
    for key in _BOOLS:
        if key in inputs and _bool(inputs[key]) is None:
            problems.append("%s must be true or false, got %r" % (key, inputs[key]))
    keep_files = _str_list(inputs.get("pg_failover_rewind_keep_files", []))
    if keep_files is None:
        problems.append("pg_failover_rewind_keep_files must be a list of file names, got %r"
                        % (inputs.get("pg_failover_rewind_keep_files"),))
    else:
        for name in keep_files:
            if not name or posixpath.isabs(name) or ".." in name.split("/"):
                problems.append("pg_failover_rewind_keep_files: %r must be a path relative to the data directory, "
                                "without '..'" % name)

    # the production confirmation
    exempt = _str_list(inputs.get("pg_failover_confirm_exempt_environments", []))
    environment = inputs.get("akig_environment")
    if exempt is None:
        problems.append("pg_failover_confirm_exempt_environments must be a list of environment names, got %r"
                        % (inputs.get("pg_failover_confirm_exempt_environments"),))
    elif environment not in exempt and _bool(inputs.get("pg_failover_confirm", False)) is not True:
        what = ("a failover fences the primary and promotes a replica" if operation == "failover"
                else "a rejoin rewinds or re-clones %s" % (primary or "the old primary"))
        problems.append("akig_environment is %r, which is not in pg_failover_confirm_exempt_environments (%s): %s, "
                        "so it needs an explicit yes; re-run with -e pg_failover_confirm=true" % (
                            environment, _names(exempt), what))

    # the database hosts: slot names (valid, one per host) and layout
    slots: Dict[str, str] = {}
    for host in db_hosts:
        try:
            name = slot_name(host, _hostvar(hostvars, host, "akig_pg_slot_name"))
        except FailoverInputError as exc:
            problems.append(str(exc))
            continue
        if name in slots:
            problems.append("%s and %s would both use the replication slot %s; set akig_pg_slot_name on one of them"
                            % (slots[name], host, name))
        slots[name] = host
        problems.extend(_layout_problems(host, hostvars))
    return problems


# --------------------------------------------------------------------------- RPO


def _find_replica(old: Mapping[str, Any], target: str, candidate: Mapping[str, Any],
                  address: Optional[str]) -> Optional[Mapping[str, Any]]:
    """The row of ``old``'s pg_stat_replication that is the candidate: by slot, then name, then address."""
    rows = old.get("replicas") or []
    slot = (candidate.get("wal_receiver") or {}).get("slot_name")
    names = {target, target.split(".")[0]}
    for match in (lambda row: slot is not None and row.get("slot_name") == slot,
                  lambda row: row.get("application_name") in names,
                  lambda row: address is not None and row.get("client_addr") == address):
        found = [row for row in rows if match(row)]
        if found:
            return found[0]
    return None


def _over(value: Optional[float], budget: float) -> bool:
    return value is not None and value > budget


def assess_rpo(candidate: Mapping[str, Any], old: Optional[Mapping[str, Any]], budget_bytes: int,
               budget_seconds: float, target: str, old_name: str, address: Optional[str] = None) -> Dict[str, Any]:
    """How far ``candidate`` (a pg_replication_info result) is behind the old primary, against the RPO budget.

    * The old primary answers as a primary (``old`` readable, not in recovery): bytes are its current LSN
      minus the candidate's replay LSN (WAL never received counts, not only WAL not replayed), seconds
      are the replay lag its ``pg_stat_replication`` reports for the candidate; ``streaming`` says whether
      that view shows the candidate streaming.
    * Otherwise: bytes are what the candidate received but did not replay (a lower bound), seconds the
      age of the last message its WAL receiver got from upstream; with no connected receiver (the
      upstream is down, or it stopped receiving) the WAL it never received is ``unknown``.

    ``over_budget`` is true when a known value exceeds the budget or the lag is unknown;
    ``over_known`` only for a known value over the budget.
    """
    receiver = candidate.get("wal_receiver") or {}
    replayed = candidate.get("replay_lsn_bytes")
    reasons: List[str] = []
    streaming: Optional[bool] = None
    row: Optional[Mapping[str, Any]] = None
    readable = bool(old and old.get("reachable") and not old.get("in_recovery")
                    and old.get("current_lsn_bytes") is not None)
    if readable and old is not None:
        basis = "old_primary"
        row = _find_replica(old, target, candidate, address)
        streaming = row is not None and row.get("state") == "streaming"
        lag_bytes = None if replayed is None else max(0, int(old["current_lsn_bytes"]) - int(replayed))
        if row is not None and row.get("replay_lag") is not None:
            lag_seconds: Optional[float] = float(row["replay_lag"])
        elif lag_bytes == 0 or (row is not None and streaming):
            lag_seconds = 0.0  # caught up, or streaming with no lag measured lately (PostgreSQL clears it when idle)
        else:
            lag_seconds = None
        unknown = lag_bytes is None or lag_seconds is None
        if lag_bytes is not None:
            reasons.append("it is %d bytes behind %s's current WAL (not received or not replayed; budget %d%s)" % (
                lag_bytes, old_name, budget_bytes, _over_by(lag_bytes, budget_bytes)))
        if lag_seconds is not None:
            reasons.append("lags %s s (budget %s s%s)" % (_num(lag_seconds), _num(budget_seconds),
                                                          _over_by(lag_seconds, budget_seconds, " s")))
        if unknown:
            reasons.append("%s does not see it streaming, so how long it has been behind is unknown" % old_name)
    else:
        connected = bool(receiver.get("connected"))
        basis = "wal_receiver" if connected else "unknown"
        lag_bytes = candidate.get("lag_bytes")
        lag_seconds = receiver.get("last_msg_receipt_age_s") if connected else None
        unknown = not connected or lag_bytes is None or lag_seconds is None
        if lag_bytes is not None:
            reasons.append("it has %d bytes received but not replayed (budget %d%s)" % (
                lag_bytes, budget_bytes, _over_by(lag_bytes, budget_bytes)))
        if lag_seconds is not None:
            reasons.append("it last heard from upstream %s s ago (budget %s s%s)" % (
                _num(lag_seconds), _num(budget_seconds), _over_by(lag_seconds, budget_seconds, " s")))
        if not connected:
            reasons.append("its WAL receiver is not connected (%s cannot be asked and PostgreSQL forgets when the "
                           "receiver last got WAL once it stops), so the WAL it never received is unknown" % old_name)
    over_known = _over(lag_bytes, budget_bytes) or _over(lag_seconds, budget_seconds)
    return {
        "basis": basis,
        "lag_bytes": lag_bytes,
        "lag_seconds": lag_seconds,
        "streaming": streaming,
        "replica_state": row.get("state") if readable and row is not None else None,
        "unknown": unknown,
        "over_known": over_known,
        "over_budget": over_known or unknown,
        "reasons": reasons,
        "summary": "%s: %s" % (target, "; ".join(reasons)),
    }


def _num(value: float) -> str:
    return ("%.1f" % value).rstrip("0").rstrip(".") if value != int(value) else "%d" % value


def _over_by(value: float, budget: float, unit: str = "") -> str:
    return ", over by %s%s" % (_num(value - budget), unit) if value > budget else ""


# --------------------------------------------------------------------------- rejoin


_STANDBY_STATES = ("shut down in recovery", "in archive recovery", "in crash recovery")


def rejoin_problems(node: str, new_primary: str, node_info: Mapping[str, Any], node_control: Mapping[str, Any],
                    new_info: Mapping[str, Any], force_writable: bool = False, resuming: bool = False,
                    fresh_backup: bool = False) -> List[str]:
    """Why ``node`` must not be rewound or re-cloned onto ``new_primary`` now; [] when it may.

    ``node_info``/``new_info`` are pg_replication_info results, ``node_control`` the node's control file
    as pg_fence reads it ({} when the data directory has none). ``resuming``: an earlier rejoin moved the
    node's data directory aside and did not finish. ``fresh_backup``: the data directory is a base backup
    that was never started (it has a backup_label).
    """
    problems: List[str] = []
    if not new_info.get("accepts_writes"):
        problems.append("%s does not accept writes (%s), so %s cannot follow it; rejoin onto the node that is the "
                        "primary now (pg_failover_new_primary)" % (
                            new_primary, new_info.get("error") or "role %s" % new_info.get("role"), node))
        return problems
    if node_info.get("accepts_writes") and not force_writable:
        problems.append(
            "Refusing to rejoin %s: it accepts writes (a primary). Rewinding or re-cloning it throws away every "
            "transaction only it has. Nothing was changed. Stop its clients and check which node must stay primary; "
            "to rejoin it anyway, re-run with -e pg_failover_rejoin_force_writable=true" % node)
    if not node_control and not node_info.get("reachable"):
        if not resuming:
            problems.append("%s has no data directory to rejoin (no global/pg_control) and no copy an earlier rejoin "
                            "moved aside; set up this node as a new replica instead" % node)
        return problems

    node_tli = node_info.get("timeline") if node_info.get("reachable") else node_control.get("timeline")
    node_sysid = (node_info.get("system_identifier") if node_info.get("reachable") else None) \
        or node_control.get("system_identifier")
    new_tli, new_sysid = new_info.get("timeline"), new_info.get("system_identifier")
    if node_sysid is None or new_sysid is None:
        problems.append("cannot read the system identifier of %s; run the rejoin as a superuser and check its "
                        "data directory" % (node if node_sysid is None else new_primary))
    elif str(node_sysid) != str(new_sysid):
        problems.append("%s (system identifier %s) and %s (%s) are not copies of the same cluster: check "
                        "pg_failover_primary and pg_failover_new_primary in the inventory; nothing was changed" % (
                            node, node_sysid, new_primary, new_sysid))
    if node_tli is None or new_tli is None:
        problems.append("cannot read the timeline of %s" % (node if node_tli is None else new_primary))
    elif node_tli > new_tli or (node_tli == new_tli and not _is_standby_copy(node_info, node_control, fresh_backup)):
        problems.append(
            "%s is on timeline %s, not later than %s's timeline %s: %s was not promoted after %s diverged from it "
            "(or %s was promoted too). Rejoining would rewind a node that may hold the newest writes onto an older "
            "history. Nothing was changed; find which node is the real primary (playbooks/lab-health.yml)" % (
                new_primary, new_tli, node, node_tli, new_primary, node, node))
    return problems


def _is_standby_copy(node_info: Mapping[str, Any], node_control: Mapping[str, Any], fresh_backup: bool) -> bool:
    """On the same timeline, the node never wrote on its own: a standby, or a base backup never started."""
    if node_info.get("reachable"):
        return bool(node_info.get("in_recovery"))
    return fresh_backup or node_control.get("cluster_state") in _STANDBY_STATES
