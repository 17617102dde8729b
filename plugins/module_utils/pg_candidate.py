# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Which standby a failover promotes, and which nodes must follow it afterwards.

:func:`choose_candidate` is the logic of the filter ``akig.runbooks.pg_failover_candidate``; it takes
what ``pg_replication_info`` (or ``pg_cluster_info``) returned for every database node and decides:

* a rerun after a successful failover (the old primary does not accept writes, exactly one other node
  does): that node, nothing to promote;
* a named candidate (``pg_failover_candidate``): that node when it is a healthy standby, else a refusal
  that says why (not read, unreachable, not in recovery, replay paused, not streaming while the old
  primary is up, another cluster, an older timeline, no WAL position);
* otherwise the most advanced healthy standby by the WAL it holds -- ``pg_last_wal_receive_lsn()``, or
  the replay LSN when nothing was received by streaming (or when replay is further, after a restart) --
  ties broken by priority (``akig_pg_failover_priority``, lower first, 100 when unset), then by name.

Every standby is listed in ``ranking`` with its positions, priority, eligibility and the reason it is not
eligible; ``others`` are the nodes that must follow the new primary once it is promoted (every node but
the old primary -- which rejoins through pg_rewind -- and the target that does not accept writes).

Pure: nothing here connects, reads files or reads the clock.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

__all__ = ["DEFAULT_PRIORITY", "CandidateInputError", "choose_candidate", "format_bytes", "position_of"]

DEFAULT_PRIORITY = 100
PRIORITY_VAR = "akig_pg_failover_priority"


class CandidateInputError(ValueError):
    """The input cannot be used; the message names it and says what is accepted."""


def format_bytes(size: int) -> str:
    """``12 kB``, ``3.4 MB``: WAL distances in the reason sentences (powers of 1024, as PostgreSQL prints them)."""
    value = float(abs(size))
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            if unit == "bytes":
                return "%d bytes" % abs(size)
            return ("%.1f %s" % (value, unit)).replace(".0 ", " ")
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _int_or_none(value: Any) -> Optional[int]:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def position_of(info: Mapping[str, Any]) -> Tuple[Optional[int], Optional[str]]:
    """(byte position, LSN text) of the WAL a standby holds: the received LSN, or the replay LSN when larger or alone."""
    received = _int_or_none(info.get("receive_lsn_bytes"))
    replayed = _int_or_none(info.get("replay_lsn_bytes"))
    if received is None and replayed is None:
        return None, None
    if replayed is None or (received is not None and received >= replayed):
        return received, info.get("receive_lsn")
    return replayed, info.get("replay_lsn")


def _priority(priorities: Optional[Mapping[str, Any]], host: str) -> int:
    """The host's priority: an int, or a mapping (its hostvars) holding ``akig_pg_failover_priority``; else 100."""
    if priorities is None or host not in priorities:
        return DEFAULT_PRIORITY
    value = priorities[host]
    if isinstance(value, Mapping):
        if PRIORITY_VAR not in value:
            return DEFAULT_PRIORITY
        value = value[PRIORITY_VAR]
    if value is None or value == "":
        return DEFAULT_PRIORITY
    number = None if isinstance(value, bool) else _int_or_none(value)
    if number is None or str(number) != str(value).strip().lstrip("+"):
        raise CandidateInputError("%s of %s must be a whole number (lower is preferred, %d when unset), got %r"
                                  % (PRIORITY_VAR, host, DEFAULT_PRIORITY, value))
    return number


def _writable(info: Any) -> bool:
    return isinstance(info, Mapping) and bool(info.get("reachable")) and bool(info.get("accepts_writes"))


def _why_not(host: str, info: Any, old_up: bool, old_system: Optional[str], top_timeline: Optional[int]) -> Optional[str]:
    """Why ``host`` cannot be promoted, as a phrase; None when it is a healthy standby."""
    if not isinstance(info, Mapping):
        return "was not read"
    if not info.get("reachable"):
        return "unreachable (%s)" % (info.get("error_kind") or info.get("error") or "no answer")
    if not info.get("in_recovery"):
        return "not in recovery (it is a primary%s)" % (" accepting writes" if info.get("accepts_writes") else "")
    if info.get("replay_paused"):
        return "WAL replay is paused on it (often deliberate, to stop before a bad change; resume it first)"
    system = info.get("system_identifier")
    if old_system and system and str(system) != str(old_system):
        return "another cluster (system identifier %s, the old primary's is %s)" % (system, old_system)
    timeline = _int_or_none(info.get("timeline"))
    if top_timeline is not None and timeline is not None and timeline < top_timeline:
        return "on timeline %d, behind timeline %d" % (timeline, top_timeline)
    receiver = info.get("wal_receiver") if isinstance(info.get("wal_receiver"), Mapping) else {}
    if old_up and not receiver.get("connected"):
        return ("not streaming while the old primary is up (WAL receiver %s): it may miss what the primary still writes"
                % (receiver.get("status") or "not running"))
    if position_of(info)[0] is None:
        return "no WAL position known (neither received nor replayed LSN)"
    return None


def _row(host: str, info: Any, priority: int, why_not: Optional[str]) -> Dict[str, Any]:
    info = info if isinstance(info, Mapping) else {}
    position, lsn = position_of(info)
    return {
        "host": host,
        "received_lsn": info.get("receive_lsn"),
        "replay_lsn": info.get("replay_lsn"),
        "position_bytes": position,
        # the received LSN unless only the replay LSN is known, or it is further (see position_of)
        "position": None if position is None else "%s %s" % (
            "received" if lsn == info.get("receive_lsn") and info.get("receive_lsn_bytes") == position else "replayed", lsn),
        "timeline": _int_or_none(info.get("timeline")),
        "priority": priority,
        "eligible": why_not is None,
        "why_not": why_not,
    }


def _ahead_text(best: Dict[str, Any], second: Dict[str, Any]) -> str:
    gap = (best["position_bytes"] or 0) - (second["position_bytes"] or 0)
    if gap > 0:
        return "%s ahead of %s" % (format_bytes(gap), second["host"])
    if best["priority"] != second["priority"]:
        return "level with %s, chosen by priority %d < %d" % (second["host"], best["priority"], second["priority"])
    return "level with %s and the same priority %d, chosen by name" % (second["host"], best["priority"])


def choose_candidate(nodes: Mapping[str, Any], old_primary: str, candidate: Optional[str] = None,
                     priorities: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The failover decision; see the module docstring and the filter's documentation.

    Returns ``target`` ('' when refused), ``reason``, ``refusal`` (None unless refused), ``already_done``,
    ``ranking`` (every node but the old primary, best first: eligible by position desc, priority, name;
    then the others by name) and ``others`` (the nodes that must follow the target).
    """
    if not isinstance(nodes, Mapping):
        raise CandidateInputError("nodes must be a dict of inventory host -> pg_replication_info result, got %s"
                                  % type(nodes).__name__)
    if not isinstance(old_primary, str) or not old_primary:
        raise CandidateInputError("the old primary must be an inventory host name, got %r" % (old_primary,))
    if candidate is not None and not isinstance(candidate, str):
        raise CandidateInputError("the candidate must be an inventory host name or empty, got %r" % (candidate,))
    if priorities is not None and not isinstance(priorities, Mapping):
        raise CandidateInputError("priorities must be a dict of host -> whole number (or hostvars), got %s"
                                  % type(priorities).__name__)
    candidate = (candidate or "").strip()
    hosts = sorted(str(host) for host in nodes)
    old = nodes.get(old_primary) if isinstance(nodes.get(old_primary), Mapping) else {}
    old_up = _writable(old)
    old_system = old.get("system_identifier") if old.get("reachable") else None

    # the highest timeline a usable node reports: a standby on a lower one holds an abandoned history
    timelines = [_int_or_none(nodes[h].get("timeline")) for h in hosts
                 if isinstance(nodes[h], Mapping) and nodes[h].get("reachable")
                 and (h == old_primary or nodes[h].get("in_recovery"))]
    known = [t for t in timelines if t is not None]
    top_timeline = max(known) if known else None

    rows: List[Dict[str, Any]] = []
    for host in hosts:
        if host == old_primary:
            continue
        info = nodes[host]
        row = _row(host, info, _priority(priorities, host), _why_not(host, info, old_up, old_system, top_timeline))
        rows.append(row)
    eligible = sorted((r for r in rows if r["eligible"]),
                      key=lambda r: (-(r["position_bytes"] or 0), r["priority"], r["host"]))
    ranking = eligible + [r for r in rows if not r["eligible"]]
    writable_others = [h for h in hosts if h != old_primary and _writable(nodes[h])]

    def result(target: str, reason: str, refusal: Optional[str] = None, already_done: bool = False) -> Dict[str, Any]:
        others = [r["host"] for r in rows if r["host"] != target and not _writable(nodes[r["host"]])] if target else []
        return {"target": target, "reason": reason, "refusal": refusal, "already_done": already_done,
                "ranking": ranking, "others": others}

    def not_eligible_text() -> str:
        return "; ".join("%s %s" % (r["host"], r["why_not"]) for r in rows if not r["eligible"])

    if writable_others:
        # a rerun after a successful failover: the old primary no longer writes, one other node does
        if not old_up and len(writable_others) == 1 and candidate in ("", writable_others[0]):
            done = writable_others[0]
            return result(done, "%s already accepts writes and %s does not: the failover was done by an earlier "
                                "run; nothing to promote" % (done, old_primary), already_done=True)
        names = ", ".join(writable_others)
        if old_up or len(writable_others) > 1:
            writers = ", ".join(([old_primary] if old_up else []) + writable_others)
            return result("", "", "%s accept writes: there are already two primaries. Nothing was changed; check the "
                                  "topology (playbooks/lab-health.yml) and stop the wrong one before anything else"
                          % writers)
        return result("", "", "%s already accepts writes (an earlier failover?), so promoting %s would leave two "
                              "primaries. Nothing was changed; leave pg_failover_candidate empty (or name %s) to finish "
                              "that failover" % (names, candidate, names))

    if candidate:
        if candidate == old_primary:
            return result("", "", "the candidate %s is the primary being replaced; name a standby" % candidate)
        if candidate not in nodes:
            return result("", "", "the candidate %s is not one of the database nodes read (%s); name one of them"
                          % (candidate, ", ".join(h for h in hosts if h != old_primary) or "none"))
        row = next(r for r in rows if r["host"] == candidate)
        if not row["eligible"]:
            return result("", "", "the candidate %s cannot be promoted: %s. Nothing was changed; repair it or name "
                                  "another standby (pg_failover_candidate), or leave it empty to choose the most "
                                  "advanced healthy one" % (candidate, row["why_not"]))
        rivals = [r for r in eligible if r["host"] != candidate]
        if not rivals:
            tail = "the only healthy standby"
        else:
            gap = (row["position_bytes"] or 0) - (rivals[0]["position_bytes"] or 0)
            tail = ("%s ahead of %s" % (format_bytes(gap), rivals[0]["host"]) if gap > 0
                    else "%s is %s ahead" % (rivals[0]["host"], format_bytes(-gap)) if gap < 0
                    else "level with %s" % rivals[0]["host"])
        return result(candidate, "%s: named by pg_failover_candidate, %s (%s)" % (candidate, row["position"], tail))

    if not eligible:
        why = not_eligible_text() or "no standby was read"
        return result("", "", "no healthy standby to promote: %s. Nothing was changed; repair one (or name a healthy "
                              "one with pg_failover_candidate)" % why)
    best = eligible[0]
    if len(eligible) == 1:
        reason = "%s: %s, the only healthy standby" % (best["host"], best["position"])
    else:
        reason = "%s: %s (%s)" % (best["host"], best["position"], _ahead_text(best, eligible[1]))
    excluded = not_eligible_text()
    if excluded:
        reason += "; not eligible: %s" % excluded
    return result(best["host"], reason)
