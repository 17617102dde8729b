# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PgBouncer's admin console and its ``[databases]`` entries: the logic of ``akig.runbooks.pgbouncer_admin``.

* :class:`Console` is one autocommit psycopg2 session on the virtual ``pgbouncer`` database (the admin
  console speaks only the simple query protocol; psycopg2 uses it, and autocommit keeps it from sending
  ``BEGIN``). A login failure becomes a :class:`PgBouncerError` naming ``host:port`` and the user, never
  the password. :meth:`Console.blocking` runs ``PAUSE``/``WAIT_CLOSE`` (which PgBouncer answers only once
  the server connections are released) on a second, asynchronous session with a deadline.
* :func:`summary` turns ``SHOW DATABASES``/``POOLS``/``SERVERS``/``CLIENTS`` into one entry per database.
* :func:`parse_connstr`, :func:`find_entry` and :func:`repoint_text` read and rewrite a database entry of a
  PgBouncer ini file (``name = host=... port=... dbname=...``), keeping every other byte of the file.
* :func:`run` is the whole module: validate, read the state, act (or plan, in check mode), verify.

Behaviour of PgBouncer 1.18 this relies on (checked against a real one by the integration test):
``PAUSE db`` marks the database paused at once (``SHOW DATABASES.paused = 1``) and answers when its server
connections are released and closed; a ``RESUME`` meanwhile resumes, but leaves the ``PAUSE`` unanswered,
so on a timeout the waiting session is closed first (the database stays paused) and then resumed. ``PAUSE``
of a paused database succeeds; ``RESUME`` of one that is not paused is an error (``database X is not
paused``, ``pooler is not paused/suspended``), which this module treats as nothing to do. ``KILL db`` drops
the database's client and server connections and leaves it paused.
"""

from __future__ import annotations

import os
import re
import select
import tempfile
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.akig.runbooks.plugins.module_utils import pg_waiter
from ansible_collections.akig.runbooks.plugins.module_utils.redact import redact

try:
    import psycopg2
    import psycopg2.extensions
except ImportError:  # pragma: no cover - exercised only where psycopg2 is missing
    import traceback

    psycopg2 = None  # type: ignore[assignment]
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR: Optional[str] = traceback.format_exc()
else:
    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None

__all__ = [
    "COMMANDS",
    "HAS_PSYCOPG2",
    "PSYCOPG2_IMPORT_ERROR",
    "Console",
    "PgBouncerError",
    "classify_connect_error",
    "find_entry",
    "mask_connstr",
    "parse_connstr",
    "quote_name",
    "repoint_text",
    "run",
    "summary",
    "waiter_cancel",
]

COMMANDS = ("show", "pause", "resume", "reload", "kill", "repoint", "wait_close")
NEEDS_DATABASE = ("kill", "repoint")
ADMIN_DB = "pgbouncer"
TARGET_RE = re.compile(r"^[^\s'\"=\\]+$")
SECTION_RE = re.compile(r"^\s*\[\s*([^\]]*?)\s*\]\s*$")
ENTRY_RE = re.compile(r'^(?P<lead>\s*)(?P<name>"(?:[^"]|"")*"|[^=\s;#][^=]*?)(?P<eq>\s*=\s*)(?P<value>.*?)(?P<eol>\r?\n?)$')

# (substring of the libpq message (lower case), kind, what to do)
_CONNECT_ERRORS: Tuple[Tuple[str, str, str], ...] = (
    ("not allowed", "auth",
     "the user is not an admin of this PgBouncer: put login_user in its admin_users (stats_users may only SHOW)"),
    ("authentication failed", "auth",
     "check login_user/login_password against PgBouncer's auth_file (or auth_query) and admin_users"),
    ("no password supplied", "auth", "give login_password"),
    ("password", "auth", "check login_user/login_password"),
    ("connection refused", "refused",
     "is pgbouncer running and listening on {target}? (listen_addr/listen_port of its pgbouncer.ini)"),
    ("no such file or directory", "refused", "is pgbouncer running, with its Unix socket in {host}?"),
    ("timeout expired", "timeout",
     "no answer within connect_timeout={timeout} s; check that the host is up and the network path to {target}"),
    ("timed out", "timeout",
     "no answer within connect_timeout={timeout} s; check that the host is up and the network path to {target}"),
    ("no route to host", "network", "check that the host is up and the network path to {target}"),
    ("network is unreachable", "network", "check that the host is up and the network path to {target}"),
    ("could not translate host name", "name", "check login_host"),
    ("no such database", "database", "{target} does not look like PgBouncer (it has no admin database 'pgbouncer')"),
    ("does not exist", "database", "{target} does not look like PgBouncer (it has no admin database 'pgbouncer')"),
    ("server closed the connection unexpectedly", "closed",
     "the server at {target} closed the connection: is it PgBouncer, and is it shutting down?"),
)


class PgBouncerError(Exception):
    """The requested operation cannot be done; ``msg`` says why and what to do. ``result`` goes to fail_json."""

    def __init__(self, msg: str, **result: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.result = result


def _cause(text: str) -> str:
    causes = re.findall(r"failed:\s*(.+)", text)
    cause = causes[-1] if causes else (text.strip().splitlines() or [""])[0]
    cause = re.sub(r"^(FATAL|ERROR):\s*", "", cause.strip())
    return cause.strip().rstrip(".") or "unknown error"


def classify_connect_error(text: str) -> Tuple[str, str, str]:
    """(kind, cause, what to do) for a libpq connection error from PgBouncer."""
    lowered = text.lower()
    for needle, kind, hint in _CONNECT_ERRORS:
        if needle in lowered:
            return kind, _cause(text), hint
    return "other", _cause(text), "check login_host/login_port and that pgbouncer runs at {target}"


def quote_name(name: str) -> str:
    """A database name as the admin console's parser takes it: bare when simple, else in double quotes."""
    if re.match(r"^[a-z_][a-z0-9_]*$", name):
        return name
    return '"%s"' % name.replace('"', '""')


# --------------------------------------------------------------------------
# The admin console
# --------------------------------------------------------------------------


class Console:
    """A session on PgBouncer's admin console (see the module docstring)."""

    def __init__(self, host: str, port: int, user: str, password: Optional[str], connect_timeout: int) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.connect_timeout = connect_timeout
        self.conn = self._connect()

    @property
    def target(self) -> str:
        return "%s:%d" % (self.host, self.port)

    def mask(self, text: Any) -> str:
        return redact(text, self.password)

    def _kwargs(self) -> Dict[str, Any]:
        kwargs: Dict[str, Any] = dict(host=self.host, port=self.port, user=self.user, dbname=ADMIN_DB,
                                      connect_timeout=self.connect_timeout)
        if self.password is not None:
            kwargs["password"] = self.password
        return kwargs

    def _connect_failed(self, exc: Exception) -> PgBouncerError:
        kind, cause, hint = classify_connect_error(str(exc))
        msg = "cannot log in to the PgBouncer admin console at %s as %s: %s; %s" % (
            self.target, self.user, cause,
            hint.format(target=self.target, host=self.host, timeout=self.connect_timeout))
        return PgBouncerError(self.mask(msg), error_kind=kind)

    def _connect(self) -> Any:
        try:
            conn = psycopg2.connect(**self._kwargs())
        except psycopg2.Error as exc:
            raise self._connect_failed(exc) from None
        conn.autocommit = True
        return conn

    def close(self) -> None:
        try:
            self.conn.close()
        except psycopg2.Error:
            pass

    def rows(self, sql: str) -> List[Dict[str, Any]]:
        with self.conn.cursor() as cur:
            cur.execute(sql)
            names = [col[0] for col in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def command(self, sql: str) -> Optional[str]:
        """Run an admin command; None when it succeeded, else PgBouncer's error message."""
        with self.conn.cursor() as cur:
            try:
                cur.execute(sql)
            except psycopg2.Error as exc:
                return self.mask(_cause(str(exc)))
        return None

    def blocking(self, sql: str, timeout: float) -> Tuple[bool, Optional[str], float]:
        """Run ``sql`` on a fresh asynchronous session, waiting at most ``timeout`` seconds.

        Returns (finished, error message or None, seconds). When it does not finish in time the session is
        closed (PgBouncer forgets the waiting command; a database being paused stays paused).
        """
        started = time.monotonic()
        try:
            conn = psycopg2.connect(async_=1, **self._kwargs())
            self._wait(conn, started + max(self.connect_timeout, 1))
        except psycopg2.Error as exc:
            raise self._connect_failed(exc) from None
        try:
            cur = conn.cursor()
            cur.execute(sql)
            try:
                finished = self._wait(conn, started + timeout)
            except psycopg2.Error as exc:
                return True, self.mask(_cause(str(exc))), time.monotonic() - started
            return finished, None, time.monotonic() - started
        finally:
            conn.close()

    @staticmethod
    def _wait(conn: Any, deadline: float) -> bool:
        while True:
            state = conn.poll()
            if state == psycopg2.extensions.POLL_OK:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if state == psycopg2.extensions.POLL_READ:
                select.select([conn.fileno()], [], [], min(left, 0.5))
            elif state == psycopg2.extensions.POLL_WRITE:
                select.select([], [conn.fileno()], [], min(left, 0.5))
            else:  # pragma: no cover - psycopg2 raises rather than returning another state
                raise psycopg2.OperationalError("unexpected poll state %r" % state)


def summary(console: Console) -> Dict[str, Dict[str, Any]]:
    """One entry per database of ``SHOW DATABASES`` (the admin database left out), with its pools' counts."""
    databases: Dict[str, Dict[str, Any]] = {}
    for row in console.rows("SHOW DATABASES"):
        if row["name"] == ADMIN_DB:
            continue
        databases[row["name"]] = dict(
            host=row.get("host"), port=row.get("port"), dbname=row.get("database"),
            paused=bool(row.get("paused")), disabled=bool(row.get("disabled")),
            pool_mode=row.get("pool_mode"), pool_size=row.get("pool_size"),
            current_connections=row.get("current_connections"),
            clients_active=0, clients_waiting=0, servers_active=0, servers_idle=0, servers_used=0,
            servers_login=0, servers=[], clients=0,
        )
    for row in console.rows("SHOW POOLS"):
        entry = databases.get(row["database"])
        if entry is None:
            continue
        entry["clients_active"] += row.get("cl_active") or 0
        entry["clients_waiting"] += row.get("cl_waiting") or 0
        entry["servers_active"] += row.get("sv_active") or 0
        entry["servers_idle"] += row.get("sv_idle") or 0
        entry["servers_used"] += row.get("sv_used") or 0
        entry["servers_login"] += row.get("sv_login") or 0
    for row in console.rows("SHOW SERVERS"):
        entry = databases.get(row["database"])
        if entry is not None:
            entry["servers"].append(dict(user=row.get("user"), state=row.get("state"), addr=row.get("addr"),
                                         port=row.get("port"), close_needed=bool(row.get("close_needed"))))
    for row in console.rows("SHOW CLIENTS"):
        entry = databases.get(row["database"])
        if entry is not None:
            entry["clients"] += 1
    return databases


# --------------------------------------------------------------------------
# The configuration file
# --------------------------------------------------------------------------


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1].replace("''", "'")
    return value


def parse_connstr(text: str) -> List[List[str]]:
    """``key=value`` pairs of a database entry, values as written (quotes kept), in their order."""
    pairs: List[List[str]] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return pairs
        match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*", text[pos:])
        if not match:
            raise ValueError("cannot read %r as key=value pairs" % text[pos:pos + 40])
        key = match.group(1)
        pos += match.end()
        if pos < len(text) and text[pos] == "'":
            end = pos + 1
            while True:
                end = text.find("'", end)
                if end < 0:
                    raise ValueError("unterminated quote in the value of %s" % key)
                if text[end + 1:end + 2] == "'":
                    end += 2
                    continue
                break
            value = text[pos:end + 1]
            pos = end + 1
        else:
            match = re.match(r"[^\s]*", text[pos:])
            value = match.group(0) if match else ""
            pos += len(value)
        pairs.append([key, value])


def render_connstr(pairs: Sequence[Sequence[str]]) -> str:
    return " ".join("%s=%s" % (key, value) for key, value in pairs)


def connstr_values(pairs: Sequence[Sequence[str]]) -> Dict[str, str]:
    return {key: _unquote(value) for key, value in pairs}


def mask_connstr(text: str) -> str:
    """Text with every ``password=`` value of a connection string replaced by ``********``."""
    return re.sub(r"(password\s*=\s*)('(?:[^']|'')*'|\S+)", r"\1********", text)


def _entry_name(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return raw[1:-1].replace('""', '"')
    return raw


def find_entry(text: str, name: str, path: str) -> Tuple[int, re.Match]:
    """(line index, match) of entry ``name`` in the ``[databases]`` section of ``text``, else PgBouncerError."""
    section = None
    seen_databases = False
    for index, line in enumerate(text.splitlines(True)):
        stripped = line.strip()
        if not stripped or stripped[0] in ";#":
            continue
        header = SECTION_RE.match(line)
        if header:
            section = header.group(1).lower()
            seen_databases = seen_databases or section == "databases"
            continue
        if section != "databases":
            continue
        match = ENTRY_RE.match(line)
        if match and _entry_name(match.group("name")) == name:
            return index, match
    if not seen_databases:
        raise PgBouncerError(
            "config_file %s has no [databases] section: give the file that holds PgBouncer's database entries "
            "(its pgbouncer.ini, or the file it %%includes for them)" % path)
    raise PgBouncerError(
        "database entry %r is not in the [databases] section of %s: check the database option, or give as "
        "config_file the file that defines it (an %%include of pgbouncer.ini)" % (name, path))


def repoint_text(text: str, name: str, path: str, host: str, port: int,
                 dbname: Optional[str]) -> Tuple[str, Dict[str, Any], Dict[str, Any]]:
    """(new text, entry before, entry after): entry ``name`` pointed at host:port (and dbname), rest unchanged."""
    index, match = find_entry(text, name, path)
    try:
        pairs = parse_connstr(match.group("value"))
    except ValueError as exc:
        raise PgBouncerError("cannot read the entry %r of %s: %s; fix the line by hand" % (name, path, exc)) from None
    before = connstr_values(pairs)
    wanted = [("host", host), ("port", str(port))] + ([("dbname", dbname)] if dbname else [])
    for key, value in wanted:
        for pair in pairs:
            if pair[0] == key:
                if _unquote(pair[1]) != value:
                    pair[1] = value
                break
        else:
            pairs.append([key, value])
    after = connstr_values(pairs)
    lines = text.splitlines(True)
    if after != before:
        lines[index] = "%s%s%s%s%s" % (match.group("lead"), match.group("name"), match.group("eq"),
                                       render_connstr(pairs), match.group("eol"))
    return "".join(lines), _entry_view(before, name), _entry_view(after, name)


def _entry_view(values: Mapping[str, str], name: str) -> Dict[str, Any]:
    port = values.get("port", "5432")
    return dict(host=values.get("host"), port=int(port) if port.isdigit() else port, dbname=values.get("dbname", name))


# --------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------


class _Run:
    """One run of the module: params, the console, the answer being built."""

    def __init__(self, params: Mapping[str, Any], check_mode: bool,
                 write_file: Optional[Callable[[str, str], Optional[str]]]) -> None:
        self.params = params
        self.check_mode = check_mode
        self.write_file = write_file
        self.command = params["command"]
        self.database = params.get("database")
        self.actions: List[str] = []
        self.result: Dict[str, Any] = dict(changed=False, command=self.command, database=self.database,
                                           actions=self.actions)
        self.console: Optional[Console] = None

    # ---------------------------------------------------------------- checks

    def validate(self) -> None:
        params = self.params
        if self.command in NEEDS_DATABASE and not self.database:
            raise PgBouncerError("command=%s needs database (the name of the entry in [databases])" % self.command)
        if self.database is not None and (not self.database or "\x00" in self.database or self.database == ADMIN_DB):
            raise PgBouncerError("database must name an entry of PgBouncer's [databases], not %r" % self.database)
        if not params.get("login_host"):
            raise PgBouncerError("login_host must not be empty")
        if not 1 <= params["login_port"] <= 65535:
            raise PgBouncerError("login_port must be between 1 and 65535, got %d" % params["login_port"])
        if params["connect_timeout"] < 1:
            raise PgBouncerError("connect_timeout must be at least 1 second, got %d" % params["connect_timeout"])
        if params["timeout"] <= 0:
            raise PgBouncerError("timeout must be more than 0 seconds, got %s" % params["timeout"])
        waiter = params.get("resume_when_writable")
        if waiter:
            if self.command != "pause":
                raise PgBouncerError("resume_when_writable only goes with command=pause (got command=%s)" % self.command)
            missing = [name for name in ("database", "config_file", "target_host") if not params.get(name)]
            if missing:
                raise PgBouncerError("resume_when_writable needs %s: the entry to repoint and the new primary"
                                     % " and ".join(missing))
            if not waiter.get("login_user"):
                raise PgBouncerError("resume_when_writable needs login_user: a PostgreSQL login the waiter may use to "
                                     "ask the new primary whether it accepts writes (the app's own login will do)")
            if float(waiter.get("timeout") or 0) <= 0 or float(waiter.get("poll_interval") or 0) <= 0:
                raise PgBouncerError("resume_when_writable timeout and poll_interval must be more than 0 seconds")
        extras = [name for name in ("reconnect", "resume") if params.get(name)]
        if extras and self.command != "repoint":
            raise PgBouncerError("%s only go with command=repoint (got command=%s); use command=resume on its own"
                                 % (" and ".join(extras), self.command))
        if self.command == "repoint" or waiter:
            missing = [name for name in ("config_file", "target_host") if not params.get(name)]
            if missing:
                raise PgBouncerError("command=repoint needs %s" % " and ".join(missing))
            if not TARGET_RE.match(params["target_host"]):
                raise PgBouncerError("target_host %r is not a host name, an IP address or a socket directory (no "
                                     "spaces, quotes or '=')" % params["target_host"])
            if not 1 <= params["target_port"] <= 65535:
                raise PgBouncerError("target_port must be between 1 and 65535, got %d" % params["target_port"])
            dbname = params.get("target_dbname")
            if dbname is not None and not TARGET_RE.match(dbname):
                raise PgBouncerError("target_dbname %r must be a database name without spaces, quotes or '='" % dbname)

    def connect(self) -> Console:
        params = self.params
        self.console = Console(params["login_host"], params["login_port"], params["login_user"],
                               params.get("login_password"), params["connect_timeout"])
        return self.console

    def entry(self, databases: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        if self.database is None:
            return None
        if self.database not in databases:
            raise PgBouncerError(
                "database %r is not a database of the PgBouncer at %s (SHOW DATABASES lists: %s); check the database "
                "option" % (self.database, self.console.target if self.console else "?",
                            ", ".join(sorted(databases)) or "none"))
        return databases[self.database]

    def scope(self) -> str:
        return "database %s" % self.database if self.database else "every database"

    def admin(self, verb: str) -> str:
        return "%s %s" % (verb, quote_name(self.database)) if self.database else verb

    # -------------------------------------------------------------- commands

    def do_show(self, entry: Optional[Dict[str, Any]]) -> None:
        pass

    def do_pause(self, entry: Optional[Dict[str, Any]]) -> None:
        if entry is not None and entry["paused"] and not entry["servers"]:
            self.actions.append("%s is already paused, with no server connection" % self.scope())
            return
        self.result["changed"] = not (entry is not None and entry["paused"])
        if self.check_mode:
            self.actions.append("would PAUSE %s (waiting up to %s s for its transactions)"
                                % (self.scope(), self.params["timeout"]))
            return
        finished, error, seconds = self.console.blocking(self.admin("PAUSE"), self.params["timeout"])
        self.result["seconds"] = round(seconds, 3)
        if error is not None:
            raise PgBouncerError("PAUSE of %s failed: %s" % (self.scope(), error), **self.result)
        if finished:
            self.actions.append("paused %s in %.2f s (in-flight transactions finished, new ones wait)"
                                % (self.scope(), seconds))
            return
        busy = self.busy_servers()
        undo = ""
        if self.result["changed"]:
            error = self.console.command(self.admin("RESUME"))
            undo = (" It was resumed again, so clients carry on as before." if error is None
                    else " RESUME failed too (%s): resume it by hand." % error)
        self.result["changed"] = False
        raise PgBouncerError(
            "PAUSE of %s did not finish within timeout=%s s: %d server connection(s) still busy (%s).%s End or "
            "wait for the long transactions (SHOW SERVERS / pg_stat_activity), raise timeout, or use command=kill."
            % (self.scope(), self.params["timeout"], len(busy), ", ".join(busy) or "none listed", undo), **self.result)

    def busy_servers(self) -> List[str]:
        busy = []
        for row in self.console.rows("SHOW SERVERS"):
            if self.database is None or row["database"] == self.database:
                busy.append("%s@%s:%s %s" % (row.get("database"), row.get("addr"), row.get("port"), row.get("state")))
        return busy

    def do_resume(self, entry: Optional[Dict[str, Any]]) -> None:
        if entry is not None and not entry["paused"]:
            self.actions.append("%s is not paused" % self.scope())
            return
        if self.check_mode:
            self.result["changed"] = True
            self.actions.append("would RESUME %s" % self.scope())
            return
        error = self.console.command(self.admin("RESUME"))
        if error is None:
            self.result["changed"] = True
            self.actions.append("resumed %s" % self.scope())
        elif "not paused" in error:
            self.actions.append("%s is not paused (%s)" % (self.scope(), error))
        else:
            raise PgBouncerError("RESUME of %s failed: %s" % (self.scope(), error), **self.result)

    def do_reload(self, entry: Optional[Dict[str, Any]]) -> None:
        self.result["changed"] = True
        if self.check_mode:
            self.actions.append("would RELOAD the configuration")
            return
        self.reload()

    def reload(self) -> None:
        error = self.console.command("RELOAD")
        if error is not None:
            raise PgBouncerError("RELOAD failed: %s; check PgBouncer's log" % error, **self.result)
        self.actions.append("reloaded the configuration (RELOAD)")

    def do_kill(self, entry: Dict[str, Any]) -> None:
        connections = len(entry["servers"]) + entry["clients"]
        self.result["changed"] = connections > 0 or not entry["paused"]
        if not self.result["changed"]:
            self.actions.append("%s is paused with no connection: nothing to kill" % self.scope())
            return
        if self.check_mode:
            self.actions.append("would KILL %s: drop %d server and %d client connection(s); it stays paused until "
                                "resume" % (self.scope(), len(entry["servers"]), entry["clients"]))
            return
        error = self.console.command(self.admin("KILL"))
        if error is not None:
            raise PgBouncerError("KILL of %s failed: %s" % (self.scope(), error), **self.result)
        self.actions.append("killed %s: dropped %d server and %d client connection(s); it stays paused until resume"
                            % (self.scope(), len(entry["servers"]), entry["clients"]))

    def do_wait_close(self, entry: Optional[Dict[str, Any]]) -> None:
        if self.check_mode:
            self.actions.append("would WAIT_CLOSE %s" % self.scope())
            return
        finished, error, seconds = self.console.blocking(self.admin("WAIT_CLOSE"), self.params["timeout"])
        self.result["seconds"] = round(seconds, 3)
        if error is not None:
            raise PgBouncerError("WAIT_CLOSE of %s failed: %s" % (self.scope(), error), **self.result)
        if not finished:
            raise PgBouncerError(
                "WAIT_CLOSE of %s did not finish within timeout=%s s: server connections still open (%s); they close "
                "once their transactions end; raise timeout or use command=kill"
                % (self.scope(), self.params["timeout"], ", ".join(self.busy_servers()) or "none listed"),
                **self.result)
        self.actions.append("the server connections of %s to close are closed (%.2f s)" % (self.scope(), seconds))

    def do_repoint(self, entry: Dict[str, Any]) -> None:
        params = self.params
        path = params["config_file"]
        try:
            with open(path, encoding="utf-8", newline="") as handle:
                old_text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise PgBouncerError(
                "config_file %s cannot be read (%s): give the pgbouncer.ini of the PgBouncer at %s (or the file it "
                "%%includes for [databases]) and run the task as its owner (become)"
                % (path, getattr(exc, "strerror", None) or exc, self.console.target)) from None
        host, port, dbname = params["target_host"], params["target_port"], params.get("target_dbname")
        new_text, before, after = repoint_text(old_text, self.database, path, host, port, dbname)
        self.result.update(previous=dict(host=entry["host"], port=entry["port"], dbname=entry["dbname"]),
                           target=after, config_file=path)
        running_ok = self.points_at(entry, after)
        if new_text == old_text and running_ok:
            self.actions.append("%s already points at %s:%d (file and running PgBouncer)" % (self.scope(), host, port))
            self.after_repoint(entry)
            return
        self.result["changed"] = True
        if new_text != old_text:
            self.result["diff"] = dict(before=mask_connstr(old_text), after=mask_connstr(new_text),
                                       before_header=path, after_header=path)
        if self.check_mode:
            self.actions.append("would point %s at %s:%d dbname=%s in %s (was %s:%s), then RELOAD" % (
                self.scope(), host, port, after["dbname"], path, before["host"], before["port"]))
            return
        backup = None
        if new_text != old_text:
            backup = self.write_file(path, new_text) if self.write_file else None
            self.result["backup_file"] = backup
            self.actions.append("pointed %s at %s:%d dbname=%s in %s (was %s:%s)%s" % (
                self.scope(), host, port, after["dbname"], path, before["host"], before["port"],
                "; old file saved as %s" % backup if backup else ""))
        else:
            self.actions.append("%s already said %s:%d; the running PgBouncer did not: reloading" % (path, host, port))
        self.reload()
        now = self.entry(summary(self.console))
        if not self.points_at(now, after):
            msg = ("after RELOAD, SHOW DATABASES says %s points at %s:%s dbname=%s, not %s:%d dbname=%s: is %s the file "
                   "this PgBouncer reads (SHOW CONFIG conffile, %%include)? Check PgBouncer's log"
                   % (self.scope(), now["host"], now["port"], now["dbname"], host, port, after["dbname"], path))
            if new_text != old_text and self.write_file:
                self.write_file(path, old_text)
                self.console.command("RELOAD")
                msg += "; the old file was put back and reloaded"
            raise PgBouncerError(msg, **self.result)
        self.actions.append("SHOW DATABASES confirms %s -> %s:%d dbname=%s" % (self.scope(), host, port, after["dbname"]))
        self.after_repoint(now)

    def after_repoint(self, entry: Mapping[str, Any]) -> None:
        """RECONNECT then RESUME when asked, once the entry is confirmed to point at the target."""
        if self.params.get("reconnect") and entry["servers"]:
            self.result["changed"] = True
            if self.check_mode:
                self.actions.append("would RECONNECT %s (%d server connection(s) to close once released)"
                                    % (self.scope(), len(entry["servers"])))
            else:
                error = self.console.command(self.admin("RECONNECT"))
                if error is not None:
                    raise PgBouncerError("RECONNECT of %s failed: %s" % (self.scope(), error), **self.result)
                self.actions.append("RECONNECT %s: its server connections close as they are released" % self.scope())
        if self.params.get("resume"):
            changed = self.result["changed"]
            self.do_resume(entry)
            self.result["changed"] = changed or self.result["changed"]

    @staticmethod
    def points_at(entry: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
        return (entry["host"] == want["host"] and str(entry["port"]) == str(want["port"])
                and entry["dbname"] == want["dbname"])

    # ------------------------------------------------------------------ run

    def run(self) -> Dict[str, Any]:
        self.validate()
        state_file = waiter_state_file(self.params)
        if (state_file and self.command in ("repoint", "resume", "pause") and not self.check_mode
                and not self.params.get("_from_waiter")):
            # one hand on the entry at a time: a waiter left by an earlier pause is stopped (or its outcome read)
            # before this command acts
            outcome = waiter_cancel(state_file)
            if outcome is not None:
                self.result["waiter"] = outcome
                if outcome.get("status") == "resumed":
                    self.actions.append("the pause's waiter had already pointed %s at %s and resumed it, %.2f s "
                                        "after the pause" % (self.scope(), outcome.get("target"),
                                                             outcome.get("after_s") or 0))
                elif outcome.get("cancelled"):
                    self.actions.append("stopped the pause's waiter (it had not acted)")
        if self.params.get("resume_when_writable") and not self.check_mode:
            try:  # the waiter's state file must be writable before anything is paused
                os.close(os.open(state_file, os.O_RDWR | os.O_CREAT, 0o600))
            except OSError as exc:
                raise PgBouncerError("the waiter's state file %s cannot be written (%s): give "
                                     "resume_when_writable.state_file in a directory this user may write, or run the task "
                                     "as the owner of %s. Nothing was paused."
                                     % (state_file, exc.strerror, os.path.dirname(state_file) or ".")) from None
        console = self.connect()
        try:
            databases = summary(console)
            entry = self.entry(databases)
            getattr(self, "do_" + self.command)(entry)
            after = summary(console) if self.command != "show" else databases
        except psycopg2.Error as exc:
            raise PgBouncerError("the PgBouncer admin console at %s answered an error: %s"
                                 % (console.target, console.mask(_cause(str(exc)))), **self.result) from None
        finally:
            console.close()
        self.result["databases"] = after
        if self.database is not None:
            self.result["paused"] = after[self.database]["paused"] if self.database in after else None
        if (self.command == "pause" and self.params.get("resume_when_writable") and not self.check_mode
                and self.result["paused"]):
            self.result["waiter"] = waiter_launch(self.params, state_file)
            self.actions.append("a waiter points %s at %s:%s and resumes it as soon as that node accepts writes "
                                "(state in %s, gives up after %s s)"
                                % (self.scope(), self.params["target_host"], self.params["target_port"], state_file,
                                   self.params["resume_when_writable"]["timeout"]))
        return self.result


def run(params: Mapping[str, Any], check_mode: bool = False,
        write_file: Optional[Callable[[str, str], Optional[str]]] = None) -> Dict[str, Any]:
    """The whole module. ``write_file(path, text)`` replaces a file atomically and returns its backup's path."""
    return _Run(params, check_mode, write_file).run()


# ------------------------------------------------------------------ the pause's waiter
#
# A planned switch pauses PgBouncer, fences the old primary and promotes the replica, then repoints and resumes
# PgBouncer. Each of those is an Ansible task; the repoint task comes seconds after the promotion, and the app's
# clients wait all that time. With resume_when_writable the pause leaves a small detached process on the PgBouncer
# host (the waiter) that asks the new primary every poll_interval whether it accepts writes, and the moment it does
# points the entry at it and resumes (the same repoint as command=repoint resume=true). The runbook's repoint task
# still runs: it stops a waiter that has not acted (under the state file's lock, so the two never both act) and then
# does the repoint itself, or finds the entry already pointed and resumed and reports the waiter's outcome. The
# waiter never acts after its timeout and never points anywhere but the target it was given; the failover's way
# back (command=resume) stops it first as well.


def waiter_state_file(params: Mapping[str, Any]) -> Optional[str]:
    """Where the waiter of ``params``' entry keeps its state: beside the config file."""
    waiter = params.get("resume_when_writable") or {}
    if waiter.get("state_file"):
        return waiter["state_file"]
    if params.get("config_file") and params.get("database"):
        return "%s.%s.waiter.json" % (params["config_file"], re.sub(r"[^A-Za-z0-9_.-]", "_", params["database"]))
    return None


def waiter_cancel(state_file: str) -> Optional[Dict[str, Any]]:
    """Stop the waiter of ``state_file`` unless it has acted; return its state (None when there is none).

    Takes the state file's lock, which the waiter holds while it repoints, so either the waiter has finished
    (status resumed or failed, returned as it is) or it never acts (status becomes cancelled).
    """
    try:
        return pg_waiter.take(state_file)
    except pg_waiter.WaiterError as exc:
        raise PgBouncerError(exc.msg) from None


def _replace_file(path: str, text: str, backup: bool) -> Optional[str]:
    """Atomic replace keeping owner and mode (the waiter has no AnsibleModule to do it)."""
    saved = None
    info = os.stat(path)
    if backup:
        saved = "%s.%d.%s~" % (path, os.getpid(), time.strftime("%Y-%m-%d@%H:%M:%S"))
        with open(path, "rb") as src, open(saved, "wb") as dst:
            dst.write(src.read())
        os.chmod(saved, info.st_mode & 0o7777)
    handle, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, info.st_mode & 0o7777)
        try:
            os.chown(tmp, info.st_uid, info.st_gid)
        except OSError:
            pass
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return saved


def _act(params: Mapping[str, Any]) -> Callable[[Dict[str, Any]], Dict[str, Any]]:
    def act(_state: Dict[str, Any]) -> Dict[str, Any]:
        repoint = dict(params, command="repoint", resume=True, reconnect=False, resume_when_writable=None,
                       _from_waiter=True)
        try:
            answer = _Run(repoint, False, lambda path, text: _replace_file(path, text, params.get("backup", True))).run()
        except PgBouncerError as exc:
            return dict(status="failed", error=exc.msg)
        return dict(status="resumed", actions=answer.get("actions", []), paused_after=answer.get("paused"))
    return act


def waiter_launch(params: Mapping[str, Any], state_file: str) -> Dict[str, Any]:
    """Start the detached waiter (double fork, new session, no inherited stdio) and return its first state."""
    waiter = params["resume_when_writable"]
    started = time.time()
    state: Dict[str, Any] = dict(started=started, deadline=started + float(waiter["timeout"]),
                                 target="%s:%s" % (params["target_host"], params["target_port"]),
                                 database=params["database"], state_file=state_file)

    def connect() -> Any:
        return psycopg2.connect(host=params["target_host"], port=params["target_port"],
                                dbname=waiter.get("dbname") or params.get("target_dbname") or params["database"],
                                user=waiter["login_user"], password=waiter.get("login_password"),
                                connect_timeout=max(1, int(waiter["poll_interval"] * 10)),
                                application_name="akig-pgbouncer-waiter")

    return pg_waiter.launch(state_file, state, lambda handle, st: pg_waiter.run_when_writable(
        handle, st, connect, float(waiter["poll_interval"]), (psycopg2.Error,), _act(params)))
