# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Make a running standby follow a new primary after a failover (the ``pg_follow`` module).

After RB-P1-003 promotes one standby, the other standbys still point at the old primary. This file
repoints one of them, over two ordinary SQL connections (the standby and the new primary), as the
controller does for every PostgreSQL module of the collection:

1. read both nodes (:func:`pg_replication.replication_info`): the standby must be in recovery with replay
   not paused, the new primary out of recovery, both of the same cluster (system identifier);
2. refuse, changing nothing, a standby that holds WAL past the point where the new primary's timeline
   forked off its own (it has transactions the new primary never received; only ``pg_rewind`` -- the
   rejoin path -- can bring it back). The fork point is read from the new primary's timeline history
   file with ``pg_read_file('pg_wal/<TLI>.history')`` (superuser, or EXECUTE on pg_read_file), not over a
   replication connection, so ``pg_hba.conf`` needs no replication entry for the login role;
3. create the standby's physical replication slot on the new primary when it is missing;
4. ``ALTER SYSTEM SET primary_conninfo`` (the new primary's host and port; user, passfile,
   application_name and every other keyword of the current value kept unless given) and
   ``primary_slot_name`` on the standby -- ALTER SYSTEM writes ``postgresql.auto.conf`` and works on a hot
   standby -- then ``pg_reload_conf()``: since PostgreSQL 13 both settings are reloadable and the startup
   process restarts the WAL receiver with them;
5. wait until the standby's ``pg_stat_wal_receiver`` shows it streaming from the new primary on its
   timeline and the new primary's ``pg_stat_replication`` shows the slot's consumer streaming.

A standby that already streams from the new primary through its slot with these settings is left alone
(``changed=false``). In check mode steps 1-2 run and the rest is described. Messages never hold a password:
the current ``primary_conninfo`` may carry one, and it is masked in everything returned.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ansible_collections.akig.runbooks.plugins.module_utils.pg_replication import (
    ConnectionOptions,
    PgError,
    _pg_message,
    connect,
    parse_lsn,
    replication_info,
)
from ansible_collections.akig.runbooks.plugins.module_utils.redact import MASK

try:
    import psycopg2
    import psycopg2.errors
    from psycopg2.extensions import make_dsn, parse_dsn
except ImportError:  # pragma: no cover - the module reports missing psycopg2 before calling this
    psycopg2 = None  # type: ignore[assignment]

__all__ = ["fork_point", "follow", "parse_history", "plan_conninfo", "run_follow"]

POLL_S = 0.2
HISTORY_MAX_BYTES = 1 << 20
REWIND_HINT = ("it needs pg_rewind onto the new timeline, the rejoin path (playbooks/pg-rejoin.yml with this node as "
               "pg_failover_primary), or a fresh base backup")

_RECEIVER_SQL = """
SELECT status, sender_host, sender_port, received_tli, slot_name FROM pg_stat_wal_receiver
"""
_CONSUMER_SQL = """
SELECT s.slot_type, s.active, r.state, r.application_name, host(r.client_addr)
  FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
 WHERE s.slot_name = %s
"""


# ------------------------------------------------------------------------------------------------ pure helpers


def parse_history(text: str) -> List[Tuple[int, int, str]]:
    """``(timeline, switchpoint bytes, switchpoint LSN)`` per line of a timeline history file, in file order.

    Each line is ``<parent timeline> <tab> <LSN where it ended> <tab> <reason>``; comments and blank lines skipped.
    """
    entries: List[Tuple[int, int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        try:
            tli, point = int(fields[0]), fields[1]
            entries.append((tli, parse_lsn(point), point))
        except (IndexError, ValueError):
            raise PgError("line %d of the timeline history file is not '<timeline> <LSN> <reason>': %r" % (number, line)) from None
    return entries


def fork_point(history: List[Tuple[int, int, str]], standby_tli: int, new_tli: int) -> Optional[Tuple[int, str]]:
    """Where ``standby_tli`` ends in the history of ``new_tli`` (bytes, LSN); None when both are the same timeline.

    Raises :class:`ValueError` when ``standby_tli`` is not an ancestor of ``new_tli`` (a diverged history).
    """
    if standby_tli == new_tli:
        return None
    for tli, position, text in history:
        if tli == standby_tli:
            return position, text
    raise ValueError("timeline %d is not in the history of timeline %d" % (standby_tli, new_tli))


def mask_conninfo(params: Mapping[str, str]) -> str:
    """A conninfo string with the password (if any) replaced by the mask."""
    shown = dict(params)
    if "password" in shown:
        shown["password"] = MASK
    return make_dsn(**shown) if shown else ""


def plan_conninfo(current: str, host: str, port: int, user: Optional[str], passfile: Optional[str],
                  application_name: Optional[str]) -> Dict[str, str]:
    """The keywords of the new ``primary_conninfo``: the current ones with the new host/port (and the given options).

    A changed user drops the current password (it was the old user's). No user anywhere is an error.
    """
    try:
        params = dict(parse_dsn(current)) if current else {}
    except psycopg2.ProgrammingError:
        raise PgError("the standby's current primary_conninfo cannot be parsed as a libpq connection string; set "
                      "replication_user and passfile and fix it by hand (ALTER SYSTEM RESET primary_conninfo)") from None
    for key in ("host", "hostaddr", "port"):
        params.pop(key, None)
    new: Dict[str, str] = {"host": host, "port": str(port)}
    if user and params.get("user") not in (None, user):
        params.pop("password", None)
    if user:
        params["user"] = user
    if not params.get("user"):
        raise PgError("the standby's current primary_conninfo names no user; give replication_user (the role the "
                      "standby streams as, with REPLICATION)")
    if passfile:
        params["passfile"] = passfile
    if application_name:
        params["application_name"] = application_name
    new.update(params)
    return new


# ------------------------------------------------------------------------------------------------ reads


def _one(cur: Any, sql: str, params: Tuple[Any, ...] = ()) -> Optional[Tuple[Any, ...]]:
    cur.execute(sql, params)
    return cur.fetchone()


def _settings(cur: Any) -> Tuple[str, str]:
    row = _one(cur, "SELECT current_setting('primary_conninfo'), current_setting('primary_slot_name')")
    return (row[0] or "", row[1] or "") if row else ("", "")


def _receiver(cur: Any) -> Dict[str, Any]:
    row = _one(cur, _RECEIVER_SQL)
    if not row:
        return {"status": None, "sender_host": None, "sender_port": None, "received_tli": None, "slot_name": None}
    return dict(zip(("status", "sender_host", "sender_port", "received_tli", "slot_name"), row))


def _consumer(cur: Any, slot: str) -> Optional[Dict[str, Any]]:
    row = _one(cur, _CONSUMER_SQL, (slot,))
    if not row:
        return None
    return dict(zip(("slot_type", "active", "state", "application_name", "client_addr"), row))


def _history(cur: Any, primary: str, tli: int) -> str:
    name = "pg_wal/%08X.history" % tli
    try:
        row = _one(cur, "SELECT pg_read_file(%s, 0, %s, true)", (name, HISTORY_MAX_BYTES))
    except psycopg2.errors.InsufficientPrivilege:
        raise PgError("cannot read %s on %s to find where its timeline forked off: the login role may not call "
                      "pg_read_file; connect as a superuser or GRANT EXECUTE ON FUNCTION pg_read_file(text, bigint, "
                      "bigint, boolean) to it. Nothing was changed." % (name, primary)) from None
    if not row or row[0] is None:
        raise PgError("%s has no %s (the history of its timeline %d), so where it forked off cannot be known; "
                      "check its data directory (or restore the file from the WAL archive). Nothing was changed."
                      % (primary, name, tli))
    return row[0]


def _streaming(receiver: Mapping[str, Any], consumer: Optional[Mapping[str, Any]], host: str, port: int,
               tli: Optional[int]) -> bool:
    return (receiver["status"] == "streaming" and receiver["sender_host"] == host
            and receiver["sender_port"] == port and (tli is None or receiver["received_tli"] == tli)
            and consumer is not None and consumer.get("state") == "streaming")


def _receiver_text(receiver: Mapping[str, Any]) -> str:
    if receiver["status"] is None:
        return "no WAL receiver running"
    return "WAL receiver %s from %s:%s on timeline %s" % (receiver["status"], receiver["sender_host"] or "?",
                                                          receiver["sender_port"] or "?", receiver["received_tli"])


# ------------------------------------------------------------------------------------------------ the module


def follow(standby_conn: Any, primary_conn: Any, *, standby: str, new_primary: str, host: str, port: int,
           slot_name: str, replication_user: Optional[str] = None, passfile: Optional[str] = None,
           application_name: Optional[str] = None, wait: bool = True, timeout: float = 30,
           poll_interval: float = POLL_S, check_mode: bool = False,
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Dict[str, Any]:
    """Repoint the standby behind ``standby_conn`` at the primary behind ``primary_conn``; see the module docstring.

    ``standby`` and ``new_primary`` name the nodes in messages (``host:port``); ``host``/``port`` are what the
    standby's primary_conninfo gets. Raises :class:`PgError` (with ``result``: what was done so far).
    """
    result: Dict[str, Any] = {
        "changed": False, "standby": standby, "new_primary": new_primary, "following": False, "needs_rewind": False,
        "timeline": None, "standby_timeline": None, "standby_lsn": None, "fork_lsn": None, "slot_name": slot_name,
        "slot_created": False, "primary_conninfo": None, "previous_conninfo": None, "seconds": 0.0, "actions": [],
    }
    actions: List[str] = result["actions"]
    s_info = replication_info(standby_conn)
    p_info = replication_info(primary_conn)
    if p_info["in_recovery"]:
        raise PgError("the new primary %s is in recovery (a standby): a standby can only be made to follow a primary "
                      "here; check new_primary_host/new_primary_port. Nothing was changed." % new_primary, **result)
    if not s_info["in_recovery"]:
        raise PgError("%s is not a standby (it is out of recovery%s): a primary cannot follow another; if it is the old "
                      "primary, %s. Nothing was changed." % (
                          standby, ", accepting writes" if s_info["accepts_writes"] else "", REWIND_HINT), **result)
    if s_info["system_identifier"] and p_info["system_identifier"] and \
            s_info["system_identifier"] != p_info["system_identifier"]:
        raise PgError("%s (system identifier %s) is not a copy of the same cluster as %s (%s); it cannot stream from "
                      "it -- re-clone it with pg_basebackup. Nothing was changed." % (
                          standby, s_info["system_identifier"], new_primary, p_info["system_identifier"]), **result)
    if s_info["replay_paused"]:
        raise PgError("WAL replay is paused on %s (often deliberate); it could not switch to the new primary's timeline. "
                      "Resume it (SELECT pg_wal_replay_resume()) if the WAL it holds is wanted, then re-run. Nothing "
                      "was changed." % standby, **result)

    new_tli, s_tli = p_info["timeline"], s_info["timeline"]
    positions = [(b, t) for b, t in ((s_info["receive_lsn_bytes"], s_info["receive_lsn"]),
                                     (s_info["replay_lsn_bytes"], s_info["replay_lsn"])) if b is not None]
    s_bytes, s_lsn = max(positions) if positions else (None, None)
    result.update(timeline=new_tli, standby_timeline=s_tli, standby_lsn=s_lsn)
    if new_tli is None or s_tli is None:
        raise PgError("the timeline of %s cannot be read (the login role needs superuser or pg_monitor rights); "
                      "nothing was changed" % (new_primary if new_tli is None else standby), **result)

    with primary_conn.cursor() as pcur, standby_conn.cursor() as scur:
        # --- the fork point: may the standby follow at all?
        if s_tli > new_tli:
            result["needs_rewind"] = True
            raise PgError("%s is on timeline %s, later than the new primary %s's timeline %s: it has a history the new "
                          "primary does not; %s. Nothing was changed." % (standby, s_tli, new_primary, new_tli, REWIND_HINT),
                          **result)
        if s_tli == new_tli:
            limit, limit_text = p_info["current_lsn_bytes"], p_info["current_lsn"]
            where = "the new primary's current WAL position %s on the same timeline %s" % (limit_text, new_tli)
        else:
            try:
                fork = fork_point(parse_history(_history(pcur, new_primary, new_tli)), s_tli, new_tli)
            except ValueError:
                result["needs_rewind"] = True
                raise PgError("%s is on timeline %s, which is not in the history of the new primary %s (timeline %s): "
                              "their histories diverged; %s. Nothing was changed." % (
                                  standby, s_tli, new_primary, new_tli, REWIND_HINT), **result) from None
            limit, limit_text = fork if fork else (None, None)
            result["fork_lsn"] = limit_text
            where = "the point %s where timeline %s forked off timeline %s" % (limit_text, new_tli, s_tli)
        if s_bytes is not None and limit is not None and s_bytes > limit:
            result["needs_rewind"] = True
            raise PgError("%s holds WAL up to %s on timeline %s, %d bytes past %s: it has transactions the new primary "
                          "%s never received, so it cannot simply follow it; %s. Nothing was changed." % (
                              standby, s_lsn, s_tli, s_bytes - limit, where, new_primary, REWIND_HINT), **result)
        actions.append("%s holds WAL up to %s on timeline %s, not past %s" % (standby, s_lsn, s_tli, where))

        # --- what must change
        current, current_slot = _settings(scur)
        wanted = plan_conninfo(current, host, port, replication_user, passfile, application_name)
        current_params = dict(parse_dsn(current)) if current else {}
        result["previous_conninfo"] = mask_conninfo(current_params)
        result["primary_conninfo"] = mask_conninfo(wanted)
        set_conninfo = current_params != wanted
        set_slot = current_slot != slot_name
        consumer = _consumer(pcur, slot_name)
        if consumer is not None and consumer["slot_type"] != "physical":
            raise PgError("the slot %s on %s is a %s slot, not a physical one; name another slot for %s (akig_pg_slot_name) "
                          "or drop it. Nothing was changed." % (slot_name, new_primary, consumer["slot_type"], standby),
                          **result)
        receiver = _receiver(scur)
        if (consumer is not None and consumer["active"] and not set_conninfo and not set_slot
                and _streaming(receiver, consumer, host, port, new_tli)):
            result["following"] = True
            actions.append("%s already streams from %s on timeline %s through slot %s; nothing to do"
                           % (standby, new_primary, new_tli, slot_name))
            result["diff"] = {"before": _diff(current_params, current_slot), "after": _diff(wanted, slot_name)}
            return result
        ours = (receiver["slot_name"] == slot_name and receiver["sender_host"] == host and receiver["sender_port"] == port)
        if consumer is not None and consumer["active"] and not ours:
            raise PgError("the slot %s on %s is in use by another standby (%s from %s); each standby needs its own slot -- "
                          "check akig_pg_slot_name. Nothing was changed." % (
                              slot_name, new_primary, consumer["application_name"], consumer["client_addr"]), **result)

        todo: List[str] = []
        if consumer is None:
            todo.append("create the physical replication slot %s on %s (WAL reserved at once)" % (slot_name, new_primary))
        if set_conninfo:
            todo.append("set primary_conninfo of %s to '%s' (was '%s')"
                        % (standby, result["primary_conninfo"], result["previous_conninfo"]))
        if set_slot:
            todo.append("set primary_slot_name of %s to %s (was %s)" % (standby, slot_name, current_slot or "empty"))
        if set_conninfo or set_slot:
            todo.append("reload the configuration of %s (its WAL receiver restarts on the new settings)" % standby)
        result["diff"] = {"before": _diff(current_params, current_slot), "after": _diff(wanted, slot_name)}
        if check_mode:
            result["changed"] = bool(todo)
            if wait:
                todo.append("wait up to %g s until %s streams from %s on timeline %s" % (timeout, standby, new_primary,
                                                                                         new_tli))
            actions.extend(todo)
            return result

        # --- do it
        scur.execute("SET statement_timeout = 0")
        if consumer is None:
            try:
                pcur.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot_name,))
            except psycopg2.errors.DuplicateObject:
                pass  # created meanwhile (a concurrent run): the slot is what we want
            result.update(slot_created=True, changed=True)
            actions.append(todo.pop(0).replace("create", "created", 1))
        if set_conninfo:
            try:
                scur.execute("ALTER SYSTEM SET primary_conninfo = %s", (make_dsn(**wanted),))
            except psycopg2.Error as exc:
                raise PgError("cannot set primary_conninfo on %s: %s; ALTER SYSTEM needs a superuser (or, from "
                              "PostgreSQL 15, GRANT ALTER SYSTEM ON PARAMETER primary_conninfo)" % (
                                  standby, _pg_message(exc)), **result) from None
            result["changed"] = True
            actions.append("set primary_conninfo of %s to '%s' (was '%s')" % (
                standby, result["primary_conninfo"], result["previous_conninfo"]))
        if set_slot:
            scur.execute("ALTER SYSTEM SET primary_slot_name = %s", (slot_name,))
            result["changed"] = True
            actions.append("set primary_slot_name of %s to %s (was %s)" % (standby, slot_name, current_slot or "empty"))
        if set_conninfo or set_slot:
            scur.execute("SELECT pg_reload_conf()")
            actions.append("reloaded the configuration of %s" % standby)
        if not wait:
            return result

        started = clock()
        while True:
            receiver = _receiver(scur)
            consumer = _consumer(pcur, slot_name)
            result["seconds"] = round(clock() - started, 3)
            if _streaming(receiver, consumer, host, port, new_tli):
                break
            if clock() - started >= timeout:
                seen = "%s; %s's pg_stat_replication shows %s" % (
                    _receiver_text(receiver), new_primary,
                    "slot %s %s" % (slot_name, consumer["state"] or "unused") if consumer else "no slot %s" % slot_name)
                raise PgError(
                    "%s did not stream from %s on timeline %s within %g s (%s). Its settings are in place: re-run to wait "
                    "again. Read the server log of %s: 'requested starting point ... is ahead of the WAL flush position' "
                    "or 'forked off current database system timeline ... before current recovery point' means %s; "
                    "'requested WAL segment ... has already been removed' means it fell too far behind: re-clone it "
                    "(pg_basebackup); 'password authentication failed' or 'no pg_hba.conf entry' means the replication "
                    "user, the passfile or pg_hba.conf of %s."
                    % (standby, new_primary, new_tli, timeout, seen, standby, REWIND_HINT, new_primary), **result)
            sleep(poll_interval)
        result["following"] = True
        actions.append("%s streams from %s on timeline %s through slot %s (after %.2f s)" % (
            standby, new_primary, new_tli, slot_name, result["seconds"]))
    return result


def _diff(params: Mapping[str, str], slot: str) -> Dict[str, str]:
    return {"primary_conninfo": mask_conninfo(params), "primary_slot_name": slot}


def run_follow(params: Mapping[str, Any], check_mode: bool, application_name: str = "akig.runbooks.pg_follow") -> Dict[str, Any]:
    """The ``pg_follow`` module: checks the options, connects to both nodes, follows."""
    opts = ConnectionOptions.from_params(params)
    primary_opts = ConnectionOptions(params["new_primary_host"], params["new_primary_port"], opts.user, opts.password,
                                     opts.dbname, opts.connect_timeout)
    if not primary_opts.host:
        raise PgError("new_primary_host must not be empty")
    if not 1 <= primary_opts.port <= 65535:
        raise PgError("new_primary_port must be between 1 and 65535, got %d" % primary_opts.port)
    slot = params["slot_name"]
    if not slot or len(slot) > 63 or not all(c.islower() or c.isdigit() or c == "_" for c in slot) or not slot.isascii():
        raise PgError("slot_name %r is not a valid replication slot name: 1 to 63 lower-case letters, digits and "
                      "underscores (the pg_slot_name filter derives one from the inventory name)" % (slot,))
    timeout = params["timeout"]
    poll = params["poll_interval"]
    if not 0 <= timeout <= 3600:
        raise PgError("timeout must be from 0 to 3600 seconds, got %s" % timeout)
    if not 0 < poll <= 60:
        raise PgError("poll_interval must be more than 0 and at most 60 seconds, got %s" % poll)
    standby_conn = connect(opts, application_name)
    try:
        try:
            primary_conn = connect(primary_opts, application_name)
        except PgError as exc:
            raise PgError(exc.msg + " (the new primary)", **exc.result) from None
        try:
            return follow(standby_conn, primary_conn, standby=opts.target, new_primary=primary_opts.target,
                          host=primary_opts.host, port=primary_opts.port, slot_name=slot,
                          replication_user=params.get("replication_user"), passfile=params.get("passfile"),
                          application_name=params.get("application_name"), wait=params["wait"], timeout=timeout,
                          poll_interval=poll, check_mode=check_mode)
        finally:
            primary_conn.close()
    except PgError as exc:
        raise PgError(opts.mask(exc.msg), **exc.result) from None
    except psycopg2.Error as exc:
        raise PgError(opts.mask("following %s failed on %s: %s; check both nodes, then re-run (it is idempotent)" % (
            primary_opts.target, opts.target, _pg_message(exc)))) from None
    finally:
        standby_conn.close()
