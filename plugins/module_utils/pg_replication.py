# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PostgreSQL streaming replication: observe a node, promote a standby.

The modules ``akig.runbooks.pg_replication_info`` and ``akig.runbooks.pg_promote``
are thin wrappers around this file; all SQL and all decisions live here and are
tested against a real PostgreSQL 15 primary with streaming standbys
(``tests/unit/plugins/module_utils/test_pg_replication.py``).

* :func:`connect` opens an autocommit psycopg2 connection and turns a failure
  into a :class:`PgConnectError` whose message names ``host:port``, the user, the
  cause and what to check -- never the password.  ``unreachable`` says whether the
  node looks down (refused, timed out, starting up or shutting down, out of
  connection slots) as opposed to misconfigured (authentication, pg_hba.conf,
  unknown database or host name).
* :func:`replication_info` reads role, timeline, LSNs, lag, the WAL receiver,
  the replicas and slots of one node; :func:`run_info` is the whole
  ``pg_replication_info`` module.
* :func:`promote` is the whole ``pg_promote`` decision and action: refuse,
  no-op on a primary, plan in check mode, or (after waiting, when asked, until the
  standby has received the old primary's shutdown checkpoint) ``pg_promote()`` then
  prove the node writable and make the new timeline durable.

Timeline: PostgreSQL has no function returning the current timeline directly.
On a primary it is the larger of ``pg_control_checkpoint().timeline_id`` and the
timeline in ``pg_walfile_name(pg_current_wal_lsn())`` (the latter is right at
once after a promotion, before any checkpoint).  On a standby it is the
``received_tli`` of a streaming WAL receiver, else the larger of the last
restartpoint's timeline and ``pg_control_recovery().min_recovery_end_timeline``.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.akig.runbooks.plugins.module_utils.redact import redact
from ansible_collections.akig.runbooks.plugins.module_utils.timeutil import format_utc, utc_now

try:
    import psycopg2
    import psycopg2.errors
except ImportError:  # pragma: no cover - exercised only where psycopg2 is missing
    import traceback

    psycopg2 = None  # type: ignore[assignment]
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR: Optional[str] = traceback.format_exc()
else:
    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None

__all__ = [
    "HAS_PSYCOPG2",
    "PSYCOPG2_IMPORT_ERROR",
    "ConnectionOptions",
    "PgConnectError",
    "PgError",
    "NODE_STATES",
    "classify_connect_error",
    "combine_states",
    "connect",
    "node_state",
    "parse_lsn",
    "promote",
    "replication_info",
    "run_info",
    "run_promote",
    "timeline_of_walfile",
]

LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
PROBE_SQL = "CREATE TEMP TABLE akig_promote_probe(x int)"
POLL_S = 0.1

# (kind, substring of the libpq message (lower case), node looks down?, what to do next)
_CONNECT_ERRORS: Tuple[Tuple[str, str, bool, str], ...] = (
    ("auth", "password authentication failed", False, "check login_user/login_password"),
    ("auth", "no password supplied", False, "check login_user/login_password"),
    ("auth", "authentication failed", False, "check login_user/login_password"),
    ("hba", "no pg_hba.conf entry", False,
     "pg_hba.conf on the server has no entry for this client, user and database; add one or connect from an allowed host"),
    ("database", "does not exist", False, "check login_db (and login_user)"),
    ("refused", "connection refused", True, "is PostgreSQL running and listening on {target}?"),
    # a Unix socket directory as login_host: no socket file, no server
    ("refused", "no such file or directory", True, "is PostgreSQL running, with its socket in {target}?"),
    ("timeout", "timeout expired", True,
     "no answer within connect_timeout={timeout} s; check that the host is up and the network path to {target}"),
    ("timeout", "timed out", True,
     "no answer within connect_timeout={timeout} s; check that the host is up and the network path to {target}"),
    ("network", "no route to host", True, "check that the host is up and the network path to {target}"),
    ("network", "network is unreachable", True, "check that the host is up and the network path to {target}"),
    ("starting", "starting up", True, "the server is starting up; retry shortly"),
    ("starting", "not yet accepting connections", True, "the server is starting up or recovering; retry shortly"),
    ("starting", "in recovery mode", True, "the server is recovering after a crash; retry shortly"),
    ("stopping", "shutting down", True, "the server is shutting down"),
    ("full", "too many clients", True, "the server has no free connection slots (max_connections)"),
    ("full", "connection slots are reserved", True, "the server has no free connection slots (max_connections)"),
    ("closed", "server closed the connection unexpectedly", True,
     "the server closed the connection; it may have crashed or be restarting"),
    ("name", "could not translate host name", False, "check login_host"),
)


class PgError(Exception):
    """The requested operation cannot be done; ``msg`` says why and what to do next.

    ``result`` carries extra return values for ``fail_json``.
    """

    def __init__(self, msg: str, **result: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.result = result


class PgConnectError(PgError):
    """No session could be opened; ``unreachable`` is true when the node looks down."""

    def __init__(self, msg: str, kind: str, unreachable: bool) -> None:
        super().__init__(msg, error_kind=kind)
        self.kind = kind
        self.unreachable = unreachable


# --------------------------------------------------------------------------
# Connecting
# --------------------------------------------------------------------------


class ConnectionOptions:
    """The login_* and connect_timeout options of both modules."""

    def __init__(
        self,
        host: str,
        port: int = 5432,
        user: str = "postgres",
        password: Optional[str] = None,
        dbname: str = "postgres",
        connect_timeout: int = 3,
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.dbname = dbname
        self.connect_timeout = connect_timeout

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "ConnectionOptions":
        opts = cls(
            host=params["login_host"],
            port=params["login_port"],
            user=params["login_user"],
            password=params.get("login_password"),
            dbname=params["login_db"],
            connect_timeout=params["connect_timeout"],
        )
        opts.validate()
        return opts

    @property
    def target(self) -> str:
        return "%s:%d" % (self.host, self.port)

    def validate(self) -> None:
        if not self.host:
            raise PgError("login_host must not be empty")
        if not 1 <= self.port <= 65535:
            raise PgError("login_port must be between 1 and 65535, got %d" % self.port)
        if self.connect_timeout < 1:
            raise PgError("connect_timeout must be at least 1 second, got %d" % self.connect_timeout)

    def mask(self, text: str) -> str:
        """``text`` with the password (if any) replaced by the mask of module_utils/redact.py."""
        return redact(text, self.password)


def _libpq_cause(text: str) -> str:
    """The cause in a libpq connection error, without the 'connection to server at ... failed:' preamble.

    With several addresses for one host libpq reports one line per attempt; the last
    attempt's cause is the one that counts.
    """
    causes = re.findall(r"failed:\s*(.+)", text)
    cause = causes[-1] if causes else (text.strip().splitlines() or [""])[0]
    cause = re.sub(r"^(FATAL|ERROR):\s*", "", cause.strip())
    return cause.strip().rstrip(".") or "unknown error"


def classify_connect_error(text: str) -> Tuple[str, str, bool, str]:
    """(kind, cause, node looks down, what to do next) for a libpq connection error message."""
    cause = _libpq_cause(text)
    lowered = text.lower()
    for kind, needle, unreachable, hint in _CONNECT_ERRORS:
        if needle in lowered:
            return kind, cause, unreachable, hint
    return "other", cause, False, "check login_host/login_port and that the server at {target} is up"


def connect(opts: ConnectionOptions, application_name: str = "akig.runbooks") -> Any:
    """An autocommit psycopg2 connection, or :class:`PgConnectError` (the message never holds the password)."""
    kwargs: Dict[str, Any] = dict(
        host=opts.host,
        port=opts.port,
        user=opts.user,
        dbname=opts.dbname,
        connect_timeout=opts.connect_timeout,
        application_name=application_name,
    )
    if opts.password is not None:
        kwargs["password"] = opts.password
    try:
        conn = psycopg2.connect(**kwargs)
    except psycopg2.Error as exc:
        kind, cause, unreachable, hint = classify_connect_error(str(exc))
        msg = "cannot connect to PostgreSQL at %s as %s: %s; %s" % (
            opts.target, opts.user, cause, hint.format(target=opts.target, timeout=opts.connect_timeout)
        )
        raise PgConnectError(opts.mask(msg), kind, unreachable) from None
    conn.autocommit = True
    return conn


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def parse_lsn(value: str) -> int:
    """The byte position of an LSN written 'X/Y' (hex), or ValueError."""
    match = LSN_RE.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise ValueError("%r is not a PostgreSQL LSN; write it as two hex numbers 'X/Y', for example 0/3000148" % (value,))
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def timeline_of_walfile(name: Optional[str]) -> Optional[int]:
    """The timeline in a WAL file name (its first 8 hex digits), or None."""
    if not name or len(name) < 8:
        return None
    try:
        return int(name[:8], 16)
    except ValueError:
        return None


def _int(value: Any) -> Optional[int]:
    if value is None:
        return None
    return int(value)


def _float(value: Any) -> Optional[float]:
    if value is None:
        return None
    return round(float(value), 3)


def _nonneg(value: Any) -> Optional[int]:
    if value is None:
        return None
    return max(0, int(value))


def _one(cur: Any, sql: str, params: Tuple[Any, ...] = ()) -> Tuple[Any, ...]:
    cur.execute(sql, params)
    return cur.fetchone()


def _optional(cur: Any, sql: str, params: Tuple[Any, ...] = ()) -> Optional[Tuple[Any, ...]]:
    """One row, or None when the login role may not run ``sql`` (a monitoring role, not a superuser)."""
    try:
        return _one(cur, sql, params)
    except psycopg2.errors.InsufficientPrivilege:
        return None


def format_ts(value: datetime) -> str:
    """``2026-11-27T14:23:05.412Z``: UTC, milliseconds."""
    return format_utc(value, "milliseconds")


# --------------------------------------------------------------------------
# Observing a node
# --------------------------------------------------------------------------

_COMMON_SQL = """
SELECT current_setting('server_version_num')::int,
       pg_is_in_recovery(),
       current_setting('transaction_read_only'),
       current_setting('default_transaction_read_only'),
       current_setting('max_connections')::int,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')
"""

# Each WAL position is read once per statement (MATERIALIZED), so the values and the
# differences returned together agree with each other.
_PRIMARY_SQL = """
WITH w AS MATERIALIZED (SELECT pg_current_wal_lsn() AS lsn)
SELECT lsn::text, pg_wal_lsn_diff(lsn, '0/0'), pg_walfile_name(lsn) FROM w
"""

_STANDBY_SQL = """
WITH w AS MATERIALIZED (
    SELECT pg_last_wal_receive_lsn() AS received, pg_last_wal_replay_lsn() AS replayed,
           pg_is_wal_replay_paused() AS paused, now() - pg_last_xact_replay_timestamp() AS replay_age
)
SELECT received::text, pg_wal_lsn_diff(received, '0/0'),
       replayed::text, pg_wal_lsn_diff(replayed, '0/0'),
       paused,
       pg_wal_lsn_diff(coalesce(%s::pg_lsn, received), replayed),
       extract(epoch FROM replay_age)
  FROM w
"""

# last_msg_receipt_time is the last message (WAL or keepalive) from the upstream; its age is taken on the
# node itself, so the controller's clock does not matter. The view has no row while no receiver runs.
_WAL_RECEIVER_SQL = """
SELECT status, sender_host, sender_port, slot_name, received_tli,
       last_msg_receipt_time, extract(epoch FROM now() - last_msg_receipt_time)
  FROM pg_stat_wal_receiver
"""

_REPLICAS_SQL = """
WITH w AS MATERIALIZED (SELECT pg_current_wal_lsn() AS lsn)
SELECT application_name, host(client_addr), state, sync_state,
       sent_lsn::text, write_lsn::text, flush_lsn::text, replay_lsn::text,
       pg_wal_lsn_diff(sent_lsn, '0/0'), pg_wal_lsn_diff(write_lsn, '0/0'),
       pg_wal_lsn_diff(flush_lsn, '0/0'), pg_wal_lsn_diff(replay_lsn, '0/0'),
       pg_wal_lsn_diff(w.lsn, replay_lsn),
       extract(epoch FROM write_lag), extract(epoch FROM flush_lag), extract(epoch FROM replay_lag),
       s.slot_name
  FROM pg_stat_replication r CROSS JOIN w
  LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
 ORDER BY application_name, client_addr, r.pid
"""

_SLOTS_SQL = """
SELECT slot_name, slot_type, active, restart_lsn::text, pg_wal_lsn_diff(restart_lsn, '0/0')
  FROM pg_replication_slots
 ORDER BY slot_name
"""

_LSN_NAMES = ("sent_lsn", "write_lsn", "flush_lsn", "replay_lsn")


def _empty_info() -> Dict[str, Any]:
    return {
        "reachable": False,
        "error": None,
        "error_kind": None,
        "version": None,
        "in_recovery": None,
        "role": None,
        "timeline": None,
        "current_lsn": None,
        "current_lsn_bytes": None,
        "receive_lsn": None,
        "receive_lsn_bytes": None,
        "replay_lsn": None,
        "replay_lsn_bytes": None,
        "replay_paused": None,
        "lag_bytes": None,
        "lag_seconds": None,
        "wal_receiver": _no_receiver(),
        "replicas": [],
        "slots": [],
        "accepts_writes": None,
        "connections": {"total": None, "max": None},
        "system_identifier": None,
        "state": None,
    }


def _no_receiver() -> Dict[str, Any]:
    return {"status": None, "sender_host": None, "sender_port": None, "slot_name": None, "connected": False,
            "last_msg_receipt_time": None, "last_msg_receipt_age_s": None}


def replication_info(conn: Any, primary_lsn: Optional[str] = None) -> Dict[str, Any]:
    """What one reachable node says about its role, timeline, WAL positions, lag, replicas and slots."""
    if primary_lsn is not None:
        parse_lsn(primary_lsn)
    info = _empty_info()
    info["reachable"] = True
    with conn.cursor() as cur:
        version, in_recovery, tx_read_only, default_read_only, max_conn, total_conn = _one(cur, _COMMON_SQL)
        info.update(
            version=version,
            in_recovery=in_recovery,
            role="standby" if in_recovery else "primary",
            accepts_writes=(not in_recovery) and tx_read_only == "off" and default_read_only == "off",
            connections={"total": int(total_conn), "max": max_conn},
        )
        checkpoint = _optional(cur, "SELECT timeline_id FROM pg_control_checkpoint()")
        checkpoint_tli = checkpoint[0] if checkpoint else None
        system = _optional(cur, "SELECT system_identifier::text FROM pg_control_system()")
        info["system_identifier"] = system[0] if system else None

        if not in_recovery:
            current, current_bytes, walfile = _one(cur, _PRIMARY_SQL)
            candidates = [t for t in (checkpoint_tli, timeline_of_walfile(walfile)) if t is not None]
            info.update(
                current_lsn=current,
                current_lsn_bytes=_int(current_bytes),
                timeline=max(candidates) if candidates else None,
            )
            cur.execute(_REPLICAS_SQL)
            info["replicas"] = [_replica_row(row) for row in cur.fetchall()]
        else:
            row = _one(cur, _STANDBY_SQL, (primary_lsn,))
            receive, receive_bytes, replay, replay_bytes, paused, pending, replay_age = row
            lag_bytes = _nonneg(pending)
            if lag_bytes == 0:
                lag_seconds: Optional[float] = 0.0
            else:
                lag_seconds = None if replay_age is None else max(0.0, _float(replay_age) or 0.0)
            info.update(
                receive_lsn=receive,
                receive_lsn_bytes=_int(receive_bytes),
                replay_lsn=replay,
                replay_lsn_bytes=_int(replay_bytes),
                replay_paused=paused,
                lag_bytes=lag_bytes,
                lag_seconds=lag_seconds,
            )
            receiver = _optional(cur, _WAL_RECEIVER_SQL)
            received_tli = None
            if receiver:
                status, sender_host, sender_port, slot_name, received_tli, receipt_time, receipt_age = receiver
                info["wal_receiver"] = {
                    "status": status, "sender_host": sender_host, "sender_port": sender_port, "slot_name": slot_name,
                    # PostgreSQL 15 shows a receiver that is still connecting as streaming, without a sender
                    "connected": status == "streaming" and sender_host is not None,
                    "last_msg_receipt_time": format_ts(receipt_time) if receipt_time is not None else None,
                    "last_msg_receipt_age_s": None if receipt_age is None else max(0.0, _float(receipt_age) or 0.0),
                }
            if receiver and info["wal_receiver"]["status"] == "streaming" and received_tli:
                info["timeline"] = received_tli
            else:
                recovery = _optional(cur, "SELECT min_recovery_end_timeline FROM pg_control_recovery()")
                candidates = [t for t in (checkpoint_tli, recovery[0] if recovery else None) if t]
                info["timeline"] = max(candidates) if candidates else None

        cur.execute(_SLOTS_SQL)
        info["slots"] = [
            {"slot_name": name, "slot_type": slot_type, "active": active, "restart_lsn": restart,
             "restart_lsn_bytes": _int(restart_bytes)}
            for name, slot_type, active, restart, restart_bytes in cur.fetchall()
        ]
    return info


def _replica_row(row: Tuple[Any, ...]) -> Dict[str, Any]:
    name, addr, state, sync_state = row[0:4]
    lsns, lsn_bytes, lag_bytes, lags = row[4:8], row[8:12], row[12], row[13:16]
    replica: Dict[str, Any] = {"application_name": name, "client_addr": addr, "state": state, "sync_state": sync_state}
    for key, lsn, position in zip(_LSN_NAMES, lsns, lsn_bytes):
        replica[key] = lsn
        replica[key + "_bytes"] = _int(position)
    replica["lag_bytes"] = _nonneg(lag_bytes)
    replica.update(write_lag=_float(lags[0]), flush_lag=_float(lags[1]), replay_lag=_float(lags[2]))
    replica["slot_name"] = row[16]
    return replica


# What a probe says about a node, from worst to best. Only "down" (no PostgreSQL answering) calls for a
# restart; the others answer and a restart would only cut their sessions.
NODE_STATES = ("down", "refusing", "overloaded", "in_recovery", "up")
_STATE_OF_ERROR = {"full": "overloaded", "starting": "in_recovery", "stopping": "refusing"}


def node_state(info: Mapping[str, Any]) -> str:
    """One of :data:`NODE_STATES` for one probe (a :func:`replication_info` or unreachable result).

    ``up`` accepts writes; ``in_recovery`` is a standby, or a server starting up or replaying its WAL
    after a crash; ``overloaded`` has no free connection slot; ``refusing`` answers but refuses writes
    or sessions (read-only, shutting down); ``down`` does not answer (refused, timed out, no route,
    connection closed).
    """
    if info.get("reachable"):
        if info.get("accepts_writes"):
            return "up"
        return "in_recovery" if info.get("in_recovery") else "refusing"
    return _STATE_OF_ERROR.get(info.get("error_kind") or "", "down")


def combine_states(states: Sequence[str]) -> str:
    """The best state seen over several probes: a node is ``down`` only when every probe found it down."""
    if not states:
        raise ValueError("no probe to combine")
    return max(states, key=NODE_STATES.index)


def _probe_once(opts: ConnectionOptions, primary_lsn: Optional[str], application_name: str) -> Dict[str, Any]:
    try:
        conn = connect(opts, application_name)
    except PgConnectError as exc:
        if not exc.unreachable:
            raise
        info = _empty_info()
        info.update(error=exc.msg, error_kind=exc.kind)
        return info
    try:
        return replication_info(conn, primary_lsn)
    except psycopg2.Error as exc:
        raise PgError(opts.mask("cannot read the replication state of %s: %s" % (opts.target, _pg_message(exc)))) from None
    finally:
        conn.close()


def run_info(params: Mapping[str, Any], application_name: str = "akig.runbooks.pg_replication_info",
             sleep: Callable[[float], None] = time.sleep) -> Dict[str, Any]:
    """The ``pg_replication_info`` module: a down node is a result (``reachable: false``), not a failure.

    With ``attempts`` > 1 the node is probed up to that many times, ``attempt_interval`` seconds apart,
    stopping at the first probe that finds it ``up``; the result is the best probe's (the latest of equals),
    with ``state`` the best state seen and ``probes`` every probe's state.
    """
    opts = ConnectionOptions.from_params(params)
    primary_lsn = params.get("primary_lsn")
    attempts = 1 if params.get("attempts") is None else params["attempts"]
    interval = 1.0 if params.get("attempt_interval") is None else params["attempt_interval"]
    if primary_lsn is not None:
        try:
            parse_lsn(primary_lsn)
        except ValueError as exc:
            raise PgError("primary_lsn: %s" % exc) from None
    if not isinstance(attempts, int) or not 1 <= attempts <= 100:
        raise PgError("attempts must be a whole number from 1 to 100, got %r" % (attempts,))
    if not 0 <= interval <= 60:
        raise PgError("attempt_interval must be from 0 to 60 seconds, got %r" % (interval,))
    probes: List[Dict[str, Any]] = []
    states: List[str] = []
    for attempt in range(attempts):
        if attempt:
            sleep(interval)
        probes.append(_probe_once(opts, primary_lsn, application_name))
        states.append(node_state(probes[-1]))
        if states[-1] == "up":
            break
    state = combine_states(states)
    best = [info for info, seen in zip(probes, states) if seen == state][-1]
    return dict(best, state=state, probes=states)


def _pg_message(exc: BaseException) -> str:
    text = getattr(exc, "pgerror", None) or str(exc)
    return " ".join(text.split()) or exc.__class__.__name__


# --------------------------------------------------------------------------
# Promoting a standby
# --------------------------------------------------------------------------


def _server_log_hint(cur: Any, target: str) -> str:
    """Where the server log of the node is, as far as SQL can tell, as a phrase: 'the server log at /path'."""
    where = _optional(cur, "SELECT current_setting('data_directory'), current_setting('logging_collector'), pg_current_logfile()")
    if not where:
        return "the server log of %s" % target
    data_directory, collector, logfile = where
    if logfile:
        path = logfile if logfile.startswith("/") else "%s/%s" % (data_directory.rstrip("/"), logfile)
        return "the server log at %s" % path
    return (
        "the server log of %s (logging_collector is %s, so it is wherever the server's stderr goes: the pg_ctl -l "
        "file or the systemd journal; data directory %s)" % (target, collector, data_directory)
    )


def _probe_write(cur: Any) -> Optional[str]:
    """None when a write succeeds inside a transaction that is then rolled back, else the error."""
    try:
        cur.execute("BEGIN")
        try:
            cur.execute(PROBE_SQL)
        finally:
            cur.execute("ROLLBACK")
    except psycopg2.Error as exc:
        return _pg_message(exc)
    return None


def _primary_timeline(cur: Any) -> Optional[int]:
    checkpoint = _optional(cur, "SELECT timeline_id FROM pg_control_checkpoint()")
    walfile = _one(cur, "SELECT pg_walfile_name(pg_current_wal_lsn())")[0]
    candidates = [t for t in (checkpoint[0] if checkpoint else None, timeline_of_walfile(walfile)) if t is not None]
    return max(candidates) if candidates else None


def promote(
    conn: Any,
    target: str,
    *,
    wait: bool = True,
    wait_seconds: int = 30,
    checkpoint: bool = True,
    expected_timeline_min: Optional[int] = None,
    resume_paused: bool = False,
    wait_received_lsn: Optional[str] = None,
    catchup_timeout: float = 15,
    poll_interval: float = POLL_S,
    reference_lsn: Optional[str] = None,
    max_lag_bytes: Optional[int] = None,
    check_mode: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], datetime] = utc_now,
) -> Dict[str, Any]:
    """Promote the standby behind ``conn`` (named ``target`` in messages); see the ``pg_promote`` module.

    Read the state, then refuse, do nothing (already a primary), plan (check mode) or promote.
    With ``wait_received_lsn`` (the old primary's shutdown checkpoint), first wait until the standby
    has received past it and replayed all it received (:func:`_wait_caught_up`).
    With ``reference_lsn`` (the end of the old primary's WAL) and ``max_lag_bytes``, refuse when the
    standby has not replayed more than ``max_lag_bytes`` of it (:func:`_check_reference`).
    Raises :class:`PgError` when it refuses or when the promotion fails or cannot be proved;
    its ``result`` then says what was done so far, and ``promotion_requested`` whether
    ``pg_promote()`` was called (until then the standby is certainly still a standby).
    """
    if wait_seconds < 1:
        raise PgError("wait_seconds must be at least 1, got %d" % wait_seconds)
    wanted = _check_catchup_options(wait_received_lsn, catchup_timeout, poll_interval)
    reference = _check_reference_options(reference_lsn, max_lag_bytes)
    state = replication_info(conn)
    timeline = state["timeline"]
    result: Dict[str, Any] = {
        "changed": False,
        "target": target,
        "timeline_before": timeline,
        "timeline_after": timeline,
        "promoted_at": None,
        "duration_s": None,
        "lsn_at_promotion": None,
        "received_lsn": state["receive_lsn"],
        "catchup_seconds": 0.0,
        "lag_bytes": None,
        "unreceived_bytes": None,
        "promotion_requested": False,
        "actions": [],
    }

    if not state["in_recovery"]:
        if expected_timeline_min is not None and (timeline is None or timeline < expected_timeline_min):
            raise PgError(
                "refusing to treat %s as the promoted standby: it is a primary on timeline %s, lower than "
                "expected_timeline_min=%d; this looks like the old primary, not a promoted standby -- check "
                "login_host, and fence this node if it is the failed primary" % (target, timeline, expected_timeline_min),
                **result,
            )
        result["actions"] = ["%s is already a primary on timeline %s; nothing to do" % (target, timeline)]
        if wanted is not None:
            result["actions"].append("did not wait for it to receive past %s: it is no longer a standby"
                                     % wait_received_lsn)
        result["diff"] = {"before": _diff_state(state), "after": _diff_state(state)}
        return result

    pending_text = "an unknown number of bytes"
    if state["lag_bytes"] is not None:
        pending_text = "%d bytes" % state["lag_bytes"]
    if state["replay_paused"] and not resume_paused:
        raise PgError(
            "replay is paused on %s with %s not replayed; promoting now would lose them; resume replay or "
            "pass resume_paused=true" % (target, pending_text),
            **result,
        )
    promote_call = "pg_promote(wait => %s, wait_seconds => %d)" % ("true" if wait else "false", wait_seconds)
    if check_mode:
        plan: List[str] = []
        if state["replay_paused"]:
            plan.append("resume WAL replay on %s (paused with %s not replayed) so the promotion replays them"
                        % (target, pending_text))
        if wanted is not None:
            with conn.cursor() as cur:
                position = _catchup_position(cur)
            result["received_lsn"] = position[0]
            if _caught_up(position, wanted):
                plan.append("%s has already received past %s (received %s, replayed %s); no need to wait" % (
                    target, wait_received_lsn, position[0], position[2]))
            else:
                plan.append("wait up to %s s until %s has received past %s and replayed all it received; it has not "
                            "yet: %s" % (_seconds(catchup_timeout), target, wait_received_lsn,
                                         _behind_text(position, wanted, wait_received_lsn)))
        if reference is not None:
            with conn.cursor() as cur:
                _check_reference(cur, target, reference_lsn or "", reference, max_lag_bytes or 0, result)
            plan.extend(result["actions"])
        plan.append("promote %s (standby on timeline %s, replay LSN %s) with %s" % (target, timeline, state["replay_lsn"], promote_call))
        if wait:
            plan.append("wait until %s leaves recovery and accepts a write (probe in a rolled-back transaction)" % target)
            if checkpoint:
                plan.append("run CHECKPOINT so the new timeline is durable")
        result.update(changed=True, actions=plan)
        result["diff"] = {"before": _diff_state(state), "after": {"role": "primary", "in_recovery": False}}
        return result

    result.update(changed=True, timeline_after=None)
    done: List[str] = result["actions"]
    with conn.cursor() as cur:
        # a statement_timeout set for the role or database must not cancel pg_promote(wait) or CHECKPOINT
        cur.execute("SET statement_timeout = 0")
        log_hint = _server_log_hint(cur, target)
        if state["replay_paused"]:
            cur.execute("SELECT pg_wal_replay_resume()")
            done.append("resumed WAL replay on %s (paused with %s not replayed) so the promotion replayed them"
                        % (target, pending_text))
        if wanted is not None:
            result["changed"] = bool(done)
            _wait_caught_up(cur, target, wait_received_lsn or "", wanted, catchup_timeout, poll_interval, result,
                            clock, sleep)
            result["changed"] = True
        if reference is not None:
            result["changed"] = bool(done)
            _check_reference(cur, target, reference_lsn or "", reference, max_lag_bytes or 0, result)
            result["changed"] = True
        started = clock()
        result["promotion_requested"] = True
        try:
            cur.execute("SELECT pg_promote(%s, %s)", (wait, wait_seconds))
            finished = cur.fetchone()[0]
        except psycopg2.errors.ObjectNotInPrerequisiteState as exc:
            raise PgError("%s left recovery while this task was promoting it (%s): another actor promoted it; "
                          "re-run to observe, it is idempotent" % (target, _pg_message(exc)), **result) from None
        except psycopg2.errors.InsufficientPrivilege as exc:
            result["changed"] = bool(done)
            raise PgError("cannot promote %s: %s; connect as a superuser or GRANT EXECUTE ON FUNCTION pg_promote "
                          "to the login_user" % (target, _pg_message(exc)), **result) from None
        requested = "requested the promotion of %s (standby on timeline %s, replay LSN %s) with %s" % (
            target, timeline, state["replay_lsn"], promote_call)
        if not finished:
            done.append("%s; it did not finish within %d s" % (requested, wait_seconds))
            raise PgError(
                "promotion of %s did not finish within %d s; check %s; the node may still finish promoting -- "
                "re-run to observe, it is idempotent" % (target, wait_seconds, log_hint),
                **result,
            )
        if not wait:
            done.append("%s; not waiting for it to finish" % requested)
            result["diff"] = {"before": _diff_state(state), "after": {"role": "primary", "in_recovery": False}}
            return result

        deadline = started + wait_seconds
        while True:
            in_recovery = _one(cur, "SELECT pg_is_in_recovery()")[0]
            last_error = "still in recovery" if in_recovery else _probe_write(cur)
            if last_error is None:
                break
            if clock() >= deadline:
                done.append("%s; it did not accept a write within %d s" % (requested, wait_seconds))
                raise PgError(
                    "%s was promoted but did not accept a write within %d s (%s); check %s; re-run to observe, "
                    "it is idempotent" % (target, wait_seconds, last_error, log_hint),
                    **result,
                )
            sleep(poll_interval)
        duration = clock() - started
        result.update(
            promoted_at=format_ts(now()),
            duration_s=round(duration, 3),
            lsn_at_promotion=_one(cur, "SELECT pg_last_wal_replay_lsn()::text")[0],
        )
        done.append("promoted %s from timeline %s (replay LSN %s) with %s in %.2f s" %
                    (target, timeline, result["lsn_at_promotion"], promote_call, duration))
        done.append("verified that %s left recovery and accepts writes (probe in a rolled-back transaction)" % target)
        if checkpoint:
            try:
                cur.execute("CHECKPOINT")
            except psycopg2.Error as exc:
                result["timeline_after"] = _primary_timeline(cur)
                raise PgError(
                    "%s was promoted to timeline %s and accepts writes, but CHECKPOINT failed: %s; check %s, then "
                    "run CHECKPOINT on it by hand" % (target, result["timeline_after"], _pg_message(exc), log_hint),
                    **result,
                ) from None
            done.append("ran CHECKPOINT so the new timeline is durable")
        result["timeline_after"] = _primary_timeline(cur)
    if timeline is not None and (result["timeline_after"] is None or result["timeline_after"] <= timeline):
        raise PgError(
            "%s was promoted but its timeline is %s, not greater than %s before the promotion; something else is "
            "wrong -- check %s before sending writes to it" % (target, result["timeline_after"], timeline, log_hint),
            **result,
        )
    result["diff"] = {
        "before": _diff_state(state),
        "after": {"role": "primary", "in_recovery": False, "timeline": result["timeline_after"]},
    }
    return result


_CATCHUP_SQL = """
WITH w AS MATERIALIZED (
    SELECT pg_last_wal_receive_lsn() AS received, pg_last_wal_replay_lsn() AS replayed, pg_is_in_recovery() AS recovery
)
SELECT received::text, pg_wal_lsn_diff(received, '0/0'), replayed::text, pg_wal_lsn_diff(replayed, '0/0'), recovery
  FROM w
"""

# (received LSN, its byte position, replayed LSN, its byte position, in recovery)
Position = Tuple[Optional[str], Optional[int], Optional[str], Optional[int], bool]


def _check_catchup_options(lsn: Optional[str], timeout: float, interval: float) -> Optional[int]:
    """The byte position of ``wait_received_lsn`` (None without one), or PgError for bad options."""
    if timeout < 0:
        raise PgError("catchup_timeout must be 0 or more seconds, got %s" % timeout)
    if not 0 < interval <= 60:
        raise PgError("poll_interval must be more than 0 and at most 60 seconds, got %s" % interval)
    if lsn is None:
        return None
    try:
        return parse_lsn(lsn)
    except ValueError as exc:
        raise PgError("wait_received_lsn: %s" % exc) from None


def _check_reference_options(lsn: Optional[str], max_lag_bytes: Optional[int]) -> Optional[int]:
    """The byte position of ``reference_lsn`` (None without one), or PgError for bad options."""
    if (lsn is None) != (max_lag_bytes is None):
        raise PgError("reference_lsn and max_lag_bytes go together: give both (the end of the old primary's WAL and "
                      "the bytes of it the standby may lack) or neither")
    if lsn is None:
        return None
    if not isinstance(max_lag_bytes, int) or max_lag_bytes < 0:
        raise PgError("max_lag_bytes must be a whole number of bytes, 0 or more, got %r" % (max_lag_bytes,))
    try:
        return parse_lsn(lsn)
    except ValueError as exc:
        raise PgError("reference_lsn: %s" % exc) from None


def _check_reference(cur: Any, target: str, lsn: str, reference: int, max_lag_bytes: int,
                     result: Dict[str, Any]) -> None:
    """Refuse (PgError) when the standby lacks more than ``max_lag_bytes`` of the WAL up to ``reference``.

    The standby replays everything it received before it is promoted, so what it lacks for good is
    ``reference - received``; the budget is on ``reference - replayed``, which also counts what is received
    but not yet replayed (the same measure as against a running primary's current LSN).
    """
    received, received_bytes, replayed, replayed_bytes, _recovery = _catchup_position(cur)
    result["received_lsn"] = received
    have = max(position for position in (received_bytes, replayed_bytes, 0) if position is not None)
    lag = max(0, reference - (replayed_bytes or 0))
    unreceived = max(0, reference - have)
    result.update(lag_bytes=lag, unreceived_bytes=unreceived)
    text = ("has received WAL up to %s and replayed up to %s: %d bytes behind the old primary's WAL end %s, "
            "%d of them never received" % (received, replayed, lag, lsn, unreceived))
    if lag > max_lag_bytes:
        raise PgError(
            "refusing to promote %s: it %s, more than max_lag_bytes=%d (over by %d); promoting it would lose the "
            "transactions in the WAL it never received. Nothing was promoted. Bring the old primary back if you "
            "can (its WAL is intact), or accept the loss by promoting without reference_lsn (the pg_failover role: "
            "pg_failover_force=true)." % (target, text, max_lag_bytes, lag - max_lag_bytes),
            **result)
    result["actions"].append("%s %s, within max_lag_bytes=%d" % (target, text, max_lag_bytes))


def _catchup_position(cur: Any) -> Position:
    received, received_bytes, replayed, replayed_bytes, recovery = _one(cur, _CATCHUP_SQL)
    return received, _int(received_bytes), replayed, _int(replayed_bytes), recovery


def _caught_up(position: Position, wanted: int) -> bool:
    """Received the record at ``wanted`` itself (strictly past its start) and replayed all it received."""
    received_bytes, replayed_bytes = position[1], position[3]
    return (received_bytes is not None and replayed_bytes is not None
            and received_bytes > wanted and replayed_bytes >= received_bytes)


def _seconds(value: float) -> str:
    return ("%g" % value) if value != int(value) else "%d" % value


def _behind_text(position: Position, wanted: int, lsn: str) -> str:
    received, received_bytes, replayed, replayed_bytes = position[0:4]
    if received_bytes is None:
        return ("it has received no WAL by streaming (pg_last_wal_receive_lsn() is NULL; replayed %s), so it is not "
                "known to have the WAL up to %s" % (replayed, lsn))
    if received_bytes <= wanted:
        gap = wanted - received_bytes
        where = ("%d bytes behind %s" % (gap, lsn)) if gap else "exactly up to %s" % lsn
        return "it has received WAL up to %s (replayed %s), %s, and must receive past it" % (received, replayed, where)
    return ("it received past %s (up to %s) but replayed only up to %s, %d bytes behind what it received"
            % (lsn, received, replayed, received_bytes - (replayed_bytes or 0)))


def _wait_caught_up(cur: Any, target: str, lsn: str, wanted: int, timeout: float, interval: float,
                    result: Dict[str, Any], clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
    """Poll until the standby has received past ``lsn`` and replayed all it received, or PgError at ``timeout``."""
    started = clock()
    deadline = started + timeout
    while True:
        position = _catchup_position(cur)
        result["received_lsn"] = position[0]
        result["catchup_seconds"] = round(clock() - started, 3)
        if not position[4]:
            raise PgError("%s left recovery while this task waited for it to receive past %s: another actor "
                          "promoted it; re-run to observe, it is idempotent" % (target, lsn), **result)
        if _caught_up(position, wanted):
            result["actions"].append(
                "waited %.2f s until %s had received past %s (received %s, replayed %s)" % (
                    result["catchup_seconds"], target, lsn, position[0], position[2]))
            return
        if clock() >= deadline:
            result["actions"].append("waited %s s for %s to receive past %s; it did not" % (
                _seconds(timeout), target, lsn))
            raise PgError(
                "%s did not catch up with the old primary within catchup_timeout=%s s: %s; nothing was promoted. "
                "Check replication (pg_stat_wal_receiver on %s, the server logs of both nodes), then re-run; or "
                "re-run without wait_received_lsn to promote anyway (forcing), losing the WAL it lacks" % (
                    target, _seconds(timeout), _behind_text(position, wanted, lsn), target),
                **result)
        sleep(interval)


def _diff_state(state: Mapping[str, Any]) -> Dict[str, Any]:
    return {"role": state["role"], "in_recovery": state["in_recovery"], "timeline": state["timeline"]}


def run_promote(params: Mapping[str, Any], check_mode: bool, application_name: str = "akig.runbooks.pg_promote") -> Dict[str, Any]:
    """The ``pg_promote`` module: every connection failure fails the task."""
    opts = ConnectionOptions.from_params(params)
    catchup_timeout = 15 if params.get("catchup_timeout") is None else params["catchup_timeout"]
    poll_interval = POLL_S if params.get("poll_interval") is None else params["poll_interval"]
    _check_catchup_options(params.get("wait_received_lsn"), catchup_timeout, poll_interval)  # before connecting
    _check_reference_options(params.get("reference_lsn"), params.get("max_lag_bytes"))
    conn = connect(opts, application_name)
    try:
        return promote(
            conn,
            opts.target,
            wait=params["wait"],
            wait_seconds=params["wait_seconds"],
            checkpoint=params["checkpoint"],
            expected_timeline_min=params.get("expected_timeline_min"),
            resume_paused=params["resume_paused"],
            wait_received_lsn=params.get("wait_received_lsn"),
            catchup_timeout=catchup_timeout,
            poll_interval=poll_interval,
            reference_lsn=params.get("reference_lsn"),
            max_lag_bytes=params.get("max_lag_bytes"),
            check_mode=check_mode,
        )
    except PgError as exc:
        raise PgError(opts.mask(exc.msg), **exc.result) from None
    except psycopg2.Error as exc:
        raise PgError(opts.mask("promotion of %s failed: %s; check the node, then re-run to observe, it is idempotent"
                                % (opts.target, _pg_message(exc)))) from None
    finally:
        conn.close()
