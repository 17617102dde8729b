# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""akig.runbooks.pgbouncer_admin against a real PgBouncer in front of real PostgreSQL servers.

Two independent servers of the PostgreSQL test cluster (``tests/support/pg_cluster.py``, addresses from
the pytest-xdist worker): the primary and the standby, which answer ``inet_server_port()`` with different
ports, so a query shows which one it landed on. Each test starts its own ``pgbouncer`` (the Debian
package's binary, run as the OS user ``postgres``: it refuses to run as root) on a free loopback port in
a temporary directory, with transaction pooling, SCRAM authentication from a userlist that holds only
SCRAM verifiers (copied from ``pg_authid``; PgBouncer then logs in to PostgreSQL with the client's SCRAM
keys, no clear-text password in any file), and the admin console restricted to one user (``admin_users``).

The module is driven through ``ansible`` (show, check mode and diff, repoint and its idempotence, every bad
input) and, where timing matters (pause with a transaction in flight, kill, the pause timeout), in process
through :func:`pgbouncer.run`, the module's whole logic. Passwords reach ansible through an environment
lookup and never appear in any output.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Dict, Optional

import psycopg2
import pytest
from ansible_collections.akig.runbooks.plugins.module_utils import pgbouncer
from ansible_collections.akig.runbooks.tests.support.ansible import Ansible, Run
from ansible_collections.akig.runbooks.tests.support.pg_cluster import OS_USER, PRIMARY, STANDBY, PgCluster

APP_USER = "akig_pgb_app"
ADMIN_USER = "akig_pgb_admin"
ENTRY = "akig"
PGBOUNCER = "/usr/sbin/pgbouncer"
ENV_ADMIN = "AKIG_TEST_PGB_ADMIN_PASSWORD"
ENV_APP = "AKIG_TEST_PGB_APP_PASSWORD"
WRONG_PASSWORD = "wrong-" + secrets.token_hex(12)  # drawn per run: a wrong password, never one written in the repo


def wait_until(predicate: Any, what: str, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------
# Fixtures: roles with SCRAM verifiers, a pgbouncer per test
# --------------------------------------------------------------------------


class Secrets(dict):
    """Passwords and verifiers; never shown in a failure report."""

    def __repr__(self) -> str:
        return "<%d secrets>" % len(self)


@pytest.fixture(scope="module")
def roles(cluster: PgCluster) -> Iterator[Dict[str, str]]:
    """Roles on the primary (replayed by the standby); their passwords and SCRAM verifiers."""
    found: Dict[str, str] = Secrets(app=secrets.token_urlsafe(18), admin=secrets.token_urlsafe(18))
    for name, key in ((APP_USER, "app"), (ADMIN_USER, "admin")):
        cluster.execute(PRIMARY, "DROP ROLE IF EXISTS %s" % name)
        cluster.execute(PRIMARY, "CREATE ROLE %s LOGIN PASSWORD %%s" % name, (found[key],))
        found[key + "_verifier"] = cluster.scalar(PRIMARY, "SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                                                  (name,))
        assert found[key + "_verifier"].startswith("SCRAM-SHA-256$")
    cluster.wait_replayed(STANDBY)
    yield found
    for name in (APP_USER, ADMIN_USER):
        cluster.execute(PRIMARY, "DROP ROLE IF EXISTS %s" % name)


class Bouncer:
    """A running pgbouncer and its files."""

    def __init__(self, root: Path, roles: Dict[str, str]) -> None:
        self.root = root
        self.port = free_port()
        self.roles = roles
        self.ini = root / "pgbouncer.ini"
        uid, gid = pwd.getpwnam(OS_USER).pw_uid, pwd.getpwnam(OS_USER).pw_gid
        os.chmod(root, 0o755)
        os.chown(root, uid, gid)
        userlist = root / "userlist.txt"
        userlist.write_text('"%s" "%s"\n"%s" "%s"\n' % (APP_USER, roles["app_verifier"], ADMIN_USER,
                                                        roles["admin_verifier"]))
        self.ini.write_text(
            "; akig.runbooks pgbouncer_admin test\n"
            "[databases]\n"
            "%s = host=%s port=%d dbname=postgres application_name=akig_pgb_test\n"
            "spare_entry = host=%s port=%d dbname=postgres\n"
            "\n[pgbouncer]\n"
            "listen_addr = 127.0.0.1\nlisten_port = %d\nunix_socket_dir =\n"
            "auth_type = scram-sha-256\nauth_file = %s\nadmin_users = %s\n"
            "pool_mode = transaction\ndefault_pool_size = 5\n"
            "pidfile = %s\nlogfile = %s\n"
            "ignore_startup_parameters = extra_float_digits\n"
            "server_login_retry = 1\nserver_connect_timeout = 3\n"
            % (ENTRY, PRIMARY.host, PRIMARY.port, STANDBY.host, STANDBY.port, self.port, userlist, ADMIN_USER,
               root / "pgbouncer.pid", root / "pgbouncer.log"))
        for path, mode in ((userlist, 0o600), (self.ini, 0o640)):
            os.chmod(path, mode)
            os.chown(path, uid, gid)
        with open(root / "stderr.log", "wb") as errors:
            self.proc = subprocess.Popen([PGBOUNCER, "-q", str(self.ini)], user=uid, group=gid, extra_groups=[],
                                         stdout=subprocess.DEVNULL, stderr=errors)
        wait_until(self._answers, "pgbouncer to accept admin logins on 127.0.0.1:%d" % self.port)

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError("pgbouncer exited (rc %s): %s" % (self.proc.returncode, self.log()[-2000:]))
        try:
            self.admin().close()
        except psycopg2.OperationalError:
            return False
        return True

    def log(self) -> str:
        return "".join(path.read_text() for path in (self.root / "stderr.log", self.root / "pgbouncer.log")
                       if path.exists())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def admin(self) -> Any:
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=ADMIN_USER, password=self.roles["admin"],
                                dbname="pgbouncer", connect_timeout=3)
        conn.autocommit = True
        return conn

    def client(self) -> Any:
        return psycopg2.connect(host="127.0.0.1", port=self.port, user=APP_USER, password=self.roles["app"],
                                dbname=ENTRY, connect_timeout=3)

    def databases(self) -> Dict[str, Dict[str, Any]]:
        conn = self.admin()
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW DATABASES")
                names = [col[0] for col in cur.description]
                return {row[0]: dict(zip(names, row)) for row in cur.fetchall()}
        finally:
            conn.close()

    def params(self, command: str, **extra: Any) -> Dict[str, Any]:
        params: Dict[str, Any] = dict(command=command, database=ENTRY, login_host="127.0.0.1", login_port=self.port,
                                      login_user=ADMIN_USER, login_password=self.roles["admin"], connect_timeout=3,
                                      timeout=10, config_file=None, target_host=None, target_port=5432,
                                      target_dbname=None, backup=True, reconnect=False, resume=False,
                                      resume_when_writable=None)
        params.update(extra)
        return params

    def module_args(self, command: str, **extra: Any) -> Dict[str, Any]:
        args: Dict[str, Any] = dict(command=command, database=ENTRY, login_host="127.0.0.1", login_port=self.port,
                                    login_user=ADMIN_USER,
                                    login_password="{{ lookup('ansible.builtin.env', '%s') }}" % ENV_ADMIN)
        args.update(extra)
        return args


@pytest.fixture
def bouncer(roles: Dict[str, str]) -> Iterator[Bouncer]:
    # not in tmp_path: pytest's base directory is 0700 and pgbouncer runs as postgres
    root = Path(tempfile.mkdtemp(prefix="akig-pgbouncer-test-"))
    running = None
    try:
        running = Bouncer(root, roles)
        yield running
    finally:
        if running is not None:
            running.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def ansible(tmp_path: Path, roles: Dict[str, str]) -> Ansible:
    workdir = tmp_path / "ansible"
    workdir.mkdir()
    return Ansible(workdir, [roles["admin"], roles["app"], WRONG_PASSWORD],
                   env={ENV_ADMIN: roles["admin"], ENV_APP: roles["app"]})


def server_port(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT inet_server_port()")
        port = cur.fetchone()[0]
    conn.commit()
    return port


class Query(threading.Thread):
    """One query on a connection through PgBouncer, in a thread (it may have to wait for a RESUME)."""

    def __init__(self, conn: Any) -> None:
        super().__init__(daemon=True)
        self.conn = conn
        self.port: Optional[int] = None
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            self.port = server_port(self.conn)
        except BaseException as exc:  # pylint: disable=broad-except  # reported by the test
            self.error = exc


# --------------------------------------------------------------------------
# Through ansible: show, check mode, repoint, idempotence, bad input
# --------------------------------------------------------------------------


def test_show_check_mode_repoint_and_idempotence_through_ansible(bouncer: Bouncer, ansible: Ansible) -> None:
    before_bytes = bouncer.ini.read_bytes()
    before_stat = bouncer.ini.stat()
    repoint = bouncer.module_args("repoint", config_file=str(bouncer.ini), target_host=STANDBY.host,
                                  target_port=STANDBY.port)
    show = ansible.start_adhoc("akig.runbooks.pgbouncer_admin", bouncer.module_args("show"), "--check")
    check = ansible.start_adhoc("akig.runbooks.pgbouncer_admin", repoint, "--check", "--diff")
    show_run, check_run = ansible.finish(show), ansible.finish(check)

    assert show_run.status == "SUCCESS", show_run.output
    entry = show_run.result["databases"][ENTRY]
    assert (entry["host"], entry["port"], entry["dbname"]) == (PRIMARY.host, PRIMARY.port, "postgres")
    assert entry["paused"] is False
    assert show_run.result["changed"] is False and "pgbouncer" not in show_run.result["databases"]

    assert check_run.status == "CHANGED", check_run.output
    assert "-%s = host=%s port=%d" % (ENTRY, PRIMARY.host, PRIMARY.port) in check_run.stdout
    assert "+%s = host=%s port=%d" % (ENTRY, STANDBY.host, STANDBY.port) in check_run.stdout
    assert bouncer.ini.read_bytes() == before_bytes and bouncer.ini.stat().st_mtime_ns == before_stat.st_mtime_ns
    assert bouncer.databases()[ENTRY]["host"] == PRIMARY.host
    assert not list(bouncer.root.glob("pgbouncer.ini.*~"))

    client = bouncer.client()
    assert server_port(client) == PRIMARY.port
    done = ansible.adhoc("akig.runbooks.pgbouncer_admin", repoint, "--diff")
    assert done.status == "CHANGED", done.output
    assert done.result["previous"] == {"host": PRIMARY.host, "port": PRIMARY.port, "dbname": "postgres"}
    assert done.result["target"] == {"host": STANDBY.host, "port": STANDBY.port, "dbname": "postgres"}
    # the file: only the entry's host and port changed, same owner and mode; the old bytes are in the backup
    after = bouncer.ini.read_text()
    assert after == before_bytes.decode().replace(
        "%s = host=%s port=%d" % (ENTRY, PRIMARY.host, PRIMARY.port),
        "%s = host=%s port=%d" % (ENTRY, STANDBY.host, STANDBY.port))
    now = bouncer.ini.stat()
    assert (now.st_uid, now.st_gid, stat.S_IMODE(now.st_mode)) == (before_stat.st_uid, before_stat.st_gid, 0o640)
    assert Path(done.result["backup_file"]).read_bytes() == before_bytes
    # the running PgBouncer: SHOW DATABASES, and the next query of the same client lands on the other server
    assert bouncer.databases()[ENTRY]["host"] == STANDBY.host
    assert wait_until(lambda: server_port(client) == STANDBY.port, "the client's next transaction on the standby")
    closed = pgbouncer.run(bouncer.params("wait_close"))  # no server connection to the old primary is left
    assert closed["changed"] is False and "seconds" in closed
    assert {(server["addr"], server["port"]) for server in closed["databases"][ENTRY]["servers"]} == {
        (STANDBY.host, STANDBY.port)}
    client.close()

    again = ansible.adhoc("akig.runbooks.pgbouncer_admin", repoint)
    assert again.status == "SUCCESS", again.output
    assert again.result["changed"] is False and bouncer.ini.read_text() == after


def test_bad_input_fails_before_changing_anything(bouncer: Bouncer, ansible: Ansible, tmp_path: Path) -> None:
    before = bouncer.ini.read_bytes()
    no_section = tmp_path / "no-databases.ini"
    no_section.write_text("[pgbouncer]\nlisten_port = 6432\n")
    other_entries = tmp_path / "other.ini"
    other_entries.write_text("[databases]\nsomething_else = host=127.0.0.1\n")
    repoint = dict(config_file=str(bouncer.ini), target_host=STANDBY.host, target_port=STANDBY.port)
    closed_port = free_port()
    # through ansible: the connection failures (the password must not leak) and a missing entry
    cases = {
        "refused": (bouncer.module_args("show", login_port=closed_port),
                    ["127.0.0.1:%d" % closed_port, "Connection refused", "is pgbouncer running"]),
        "password": (bouncer.module_args("pause", login_password=WRONG_PASSWORD),
                     ["127.0.0.1:%d" % bouncer.port, ADMIN_USER, "authentication failed", "login_password"]),
        "unknown_db": (bouncer.module_args("repoint", database="nope", **repoint),
                       ["'nope' is not a database of the PgBouncer", "akig, spare_entry"]),
    }
    started = {name: ansible.start_adhoc("akig.runbooks.pgbouncer_admin", case[0]) for name, case in cases.items()}
    runs: Dict[str, Run] = {name: ansible.finish(proc) for name, proc in started.items()}
    for name, (_args, needles) in cases.items():
        run = runs[name]
        assert run.status == "FAILED!", (name, run.output)
        for needle in needles:
            assert needle in run.result["msg"], (name, needle, run.result["msg"])
    assert runs["password"].result["error_kind"] == "auth" and runs["refused"].result["error_kind"] == "refused"
    # in process: the rest of the bad input
    local = {
        "not_admin": (bouncer.params("pause", login_user=APP_USER, login_password=bouncer.roles["app"]),
                      ["not allowed", "admin_users"]),
        "unreadable": (bouncer.params("repoint", **dict(repoint, config_file=str(tmp_path / "missing.ini"))),
                       ["missing.ini cannot be read", "No such file"]),
        "no_section": (bouncer.params("repoint", **dict(repoint, config_file=str(no_section))),
                       ["has no [databases] section"]),
        "no_entry": (bouncer.params("repoint", **dict(repoint, config_file=str(other_entries))),
                     ["'akig' is not in the [databases] section of %s" % other_entries]),
        "no_target": (bouncer.params("repoint", config_file=str(bouncer.ini)), ["command=repoint needs target_host"]),
        "bad_target": (bouncer.params("repoint", **dict(repoint, target_host="db 2")), ["target_host 'db 2'"]),
        "kill_all": (bouncer.params("kill", database=None), ["command=kill needs database"]),
        "unknown_kill": (bouncer.params("kill", database="nope"), ["'nope' is not a database"]),
    }
    for name, (params, needles) in local.items():
        with pytest.raises(pgbouncer.PgBouncerError) as failure:
            pgbouncer.run(params, write_file=_plain_write)
        for needle in needles:
            assert needle in failure.value.msg, (name, needle, failure.value.msg)
        assert bouncer.roles["app"] not in failure.value.msg and bouncer.roles["admin"] not in failure.value.msg
    assert bouncer.ini.read_bytes() == before
    entry = bouncer.databases()[ENTRY]
    assert (entry["host"], entry["paused"]) == (PRIMARY.host, 0)
    assert not list(bouncer.root.glob("pgbouncer.ini.*~"))


# --------------------------------------------------------------------------
# In process: pause / resume, kill, the pause timeout
# --------------------------------------------------------------------------


def test_planned_path_pause_repoint_resume(bouncer: Bouncer) -> None:
    """A transaction in flight finishes during PAUSE; a new one waits and, after RESUME, runs on the new server."""
    in_flight, waiting = bouncer.client(), bouncer.client()
    with in_flight.cursor() as cur:
        cur.execute("SELECT inet_server_port()")
        assert cur.fetchone()[0] == PRIMARY.port  # the transaction stays open
    paused: Dict[str, Any] = {}
    pauser = threading.Thread(target=lambda: paused.update(pgbouncer.run(bouncer.params("pause"))), daemon=True)
    pauser.start()
    wait_until(lambda: bouncer.databases()[ENTRY]["paused"] == 1, "PgBouncer to mark the database paused")
    assert pauser.is_alive()  # PAUSE waits for the open transaction
    with in_flight.cursor() as cur:
        cur.execute("SELECT 1")  # the client in a transaction carries on during the pause
    in_flight.commit()
    pauser.join(10)
    assert not pauser.is_alive() and paused["changed"] is True and paused["paused"] is True
    assert paused["databases"][ENTRY]["servers"] == []

    query = Query(waiting)
    query.start()
    wait_until(lambda: pgbouncer.run(bouncer.params("show"))["databases"][ENTRY]["clients_waiting"] == 1,
               "the new transaction to wait in PgBouncer")
    again = pgbouncer.run(bouncer.params("pause"))
    assert again["changed"] is False

    moved = pgbouncer.run(bouncer.params("repoint", config_file=str(bouncer.ini), target_host=STANDBY.host,
                                         target_port=STANDBY.port), write_file=_plain_write)
    assert moved["changed"] is True and moved["databases"][ENTRY]["host"] == STANDBY.host
    assert query.is_alive()  # still waiting: the repoint does not resume

    resumed = pgbouncer.run(bouncer.params("resume"))
    assert resumed["changed"] is True and resumed["paused"] is False
    query.join(10)
    assert query.error is None and query.port == STANDBY.port
    assert server_port(in_flight) == STANDBY.port
    assert pgbouncer.run(bouncer.params("resume"))["changed"] is False  # PgBouncer: "database akig is not paused"
    # every database at once
    assert pgbouncer.run(bouncer.params("resume", database=None))["changed"] is False
    in_flight.close()
    waiting.close()


def test_repoint_with_resume_and_reconnect_in_one_task(bouncer: Bouncer) -> None:
    """RB-P1-003's one-task switch: repoint + RESUME (planned) and repoint + RECONNECT + RESUME (crash)."""
    waiting, idle = bouncer.client(), bouncer.client()
    assert server_port(idle) == PRIMARY.port
    assert pgbouncer.run(bouncer.params("pause"))["changed"] is True
    query = Query(waiting)
    query.start()
    wait_until(lambda: pgbouncer.run(bouncer.params("show"))["databases"][ENTRY]["clients_waiting"] == 1,
               "a transaction to wait in PgBouncer")
    switched = pgbouncer.run(bouncer.params("repoint", config_file=str(bouncer.ini), target_host=STANDBY.host,
                                            target_port=STANDBY.port, resume=True), write_file=_plain_write)
    assert switched["changed"] is True and switched["paused"] is False
    assert any(a.startswith("resumed") for a in switched["actions"])
    query.join(10)
    assert query.error is None and query.port == STANDBY.port
    # the crash path back: a server connection to STANDBY is open; reconnect closes it once released,
    # the clients keep their connections and their next transaction lands on PRIMARY
    assert server_port(idle) == STANDBY.port
    back = pgbouncer.run(bouncer.params("repoint", config_file=str(bouncer.ini), target_host=PRIMARY.host,
                                        target_port=PRIMARY.port, reconnect=True, resume=True),
                         write_file=_plain_write)
    assert back["changed"] is True and back["paused"] is False
    assert any(a.startswith("RECONNECT") for a in back["actions"])
    assert server_port(idle) == PRIMARY.port and server_port(waiting) == PRIMARY.port
    again = pgbouncer.run(bouncer.params("repoint", config_file=str(bouncer.ini), target_host=PRIMARY.host,
                                         target_port=PRIMARY.port, resume=True), write_file=_plain_write)
    assert again["changed"] is False  # already there, not paused
    with pytest.raises(pgbouncer.PgBouncerError, match="only go with command=repoint"):
        pgbouncer.run(bouncer.params("pause", resume=True))
    waiting.close()
    idle.close()


def _waiter(bouncer: Bouncer, **extra: Any) -> Dict[str, Any]:
    opts: Dict[str, Any] = dict(login_user=APP_USER, login_password=bouncer.roles["app"], dbname="postgres",
                                timeout=30, poll_interval=0.05, state_file=None)
    opts.update(extra)
    return opts


def _state(path: Path) -> Dict[str, Any]:
    """The waiter's state as a reader without its lock sees it: {} while it is being rewritten."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_pause_waiter_resumes_on_the_new_primary_once_it_accepts_writes(bouncer: Bouncer) -> None:
    """resume_when_writable: the pause's waiter repoints and resumes by itself when the target accepts writes;
    the runbook's repoint afterwards only reports it."""
    state_file = Path("%s.%s.waiter.json" % (bouncer.ini, ENTRY))
    # the entry starts on the standby (in recovery); the "new primary" is the writable PRIMARY
    pgbouncer.run(bouncer.params("repoint", config_file=str(bouncer.ini), target_host=STANDBY.host,
                                 target_port=STANDBY.port), write_file=_plain_write)
    waiting = bouncer.client()
    paused = pgbouncer.run(bouncer.params("pause", config_file=str(bouncer.ini), target_host=PRIMARY.host,
                                          target_port=PRIMARY.port, resume_when_writable=_waiter(bouncer)))
    assert paused["changed"] is True and paused["waiter"]["status"] == "waiting" and paused["waiter"]["pid"]
    query = Query(waiting)
    query.start()
    query.join(15)  # the waiter resumes: the waiting transaction runs on the new primary
    assert not query.is_alive() and query.error is None and query.port == PRIMARY.port
    done = wait_until(lambda: _state(state_file) if _state(state_file).get("status") not in (None, "waiting", "acting") else None,
                      "the waiter to record its outcome")
    assert done["status"] == "resumed", done
    assert done["after_s"] < 10
    assert bouncer.databases()[ENTRY]["port"] == PRIMARY.port and bouncer.databases()[ENTRY]["paused"] == 0
    wait_until(lambda: _gone(done["pid"]), "the waiter to exit")
    # the runbook's repoint: nothing left to do, the waiter's outcome reported, its state file consumed
    repoint = pgbouncer.run(bouncer.params("repoint", config_file=str(bouncer.ini), target_host=PRIMARY.host,
                                           target_port=PRIMARY.port, resume=True), write_file=_plain_write)
    assert repoint["changed"] is False and repoint["waiter"]["status"] == "resumed"
    assert any("waiter had already pointed" in a for a in repoint["actions"])
    assert not state_file.exists()
    waiting.close()


def test_pause_waiter_is_stopped_by_the_way_back_and_never_acts_after_its_timeout(bouncer: Bouncer,
                                                                                  cluster: PgCluster) -> None:
    """A waiter whose target stays in recovery waits; resume (the way back) stops it before resuming; a waiter
    that times out leaves the entry paused and acts no more."""
    state_file = Path("%s.%s.waiter.json" % (bouncer.ini, ENTRY))
    pause = dict(config_file=str(bouncer.ini), target_host=STANDBY.host, target_port=STANDBY.port)
    paused = pgbouncer.run(bouncer.params("pause", resume_when_writable=_waiter(bouncer), **pause))
    pid = paused["waiter"]["pid"]
    # it asks the standby (in recovery) over and over: its session is there
    wait_until(lambda: cluster.scalar(STANDBY, "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                               "'akig-pgbouncer-waiter'") == 1, "the waiter to ask the standby")
    assert bouncer.databases()[ENTRY]["paused"] == 1 and bouncer.databases()[ENTRY]["port"] == PRIMARY.port
    # the way back: resume names the same entry and file, so it stops the waiter first
    back = pgbouncer.run(bouncer.params("resume", config_file=str(bouncer.ini)))
    assert back["changed"] is True and back["waiter"]["status"] == "cancelled"
    wait_until(lambda: _gone(pid), "the waiter to be stopped")
    assert bouncer.databases()[ENTRY]["paused"] == 0 and bouncer.databases()[ENTRY]["port"] == PRIMARY.port
    # a waiter that times out
    again = pgbouncer.run(bouncer.params("pause", resume_when_writable=_waiter(bouncer, timeout=0.6), **pause))
    expired = wait_until(lambda: _state(state_file) if _state(state_file).get("status") == "expired" else None,
                         "the second waiter to time out")
    wait_until(lambda: _gone(again["waiter"]["pid"]), "the expired waiter to exit")
    assert bouncer.databases()[ENTRY]["paused"] == 1 and bouncer.databases()[ENTRY]["port"] == PRIMARY.port
    resumed = pgbouncer.run(bouncer.params("resume", config_file=str(bouncer.ini)))
    assert resumed["changed"] is True and resumed["waiter"]["status"] == "expired" and expired["pid"]
    assert not state_file.exists()


def test_waiter_options_are_checked_before_anything(bouncer: Bouncer) -> None:
    for extra, message in (
            (dict(command="repoint", config_file=str(bouncer.ini), target_host=PRIMARY.host,
                  resume_when_writable=_waiter(bouncer)), "only goes with command=pause"),
            (dict(resume_when_writable=_waiter(bouncer)), "needs config_file and target_host"),
            (dict(config_file=str(bouncer.ini), target_host=PRIMARY.host,
                  resume_when_writable=_waiter(bouncer, login_user="")), "needs login_user"),
            (dict(config_file=str(bouncer.ini), target_host=PRIMARY.host,
                  resume_when_writable=_waiter(bouncer, timeout=0)), "more than 0 seconds")):
        params = bouncer.params(extra.pop("command", "pause"), **extra)
        with pytest.raises(pgbouncer.PgBouncerError, match=message):
            pgbouncer.run(params)
    # a state file the waiter could not write: refused before the PAUSE
    with pytest.raises(pgbouncer.PgBouncerError, match="cannot be written.*Nothing was paused"):
        pgbouncer.run(bouncer.params("pause", config_file=str(bouncer.ini), target_host=PRIMARY.host,
                                     resume_when_writable=_waiter(bouncer, state_file="/nonexistent/dir/waiter.json")))
    assert bouncer.databases()[ENTRY]["paused"] == 0


def _plain_write(path: str, text: str) -> None:
    Path(path).write_text(text)


def test_crash_path_kill_drops_server_connections_then_resume(bouncer: Bouncer, cluster: PgCluster) -> None:
    clients = [bouncer.client(), bouncer.client()]
    holding = clients[0].cursor()
    holding.execute("SELECT 1")  # one server connection held by an open transaction
    assert server_port(clients[1]) == PRIMARY.port
    before = pgbouncer.run(bouncer.params("show"))["databases"][ENTRY]
    assert len(before["servers"]) == 2 and before["clients"] == 2

    planned = pgbouncer.run(bouncer.params("kill"), check_mode=True)
    assert planned["changed"] is True and len(planned["databases"][ENTRY]["servers"]) == 2

    killed = pgbouncer.run(bouncer.params("kill"))
    assert killed["changed"] is True and killed["paused"] is True
    assert killed["databases"][ENTRY]["servers"] == [] and killed["databases"][ENTRY]["clients"] == 0
    wait_until(lambda: cluster.scalar(PRIMARY, "SELECT count(*) FROM pg_stat_activity WHERE usename = %s",
                                      (APP_USER,)) == 0, "PostgreSQL to see PgBouncer's server connections go")
    assert pgbouncer.run(bouncer.params("kill"))["changed"] is False  # paused, nothing left to drop

    assert pgbouncer.run(bouncer.params("resume"))["changed"] is True
    fresh = bouncer.client()
    assert server_port(fresh) == PRIMARY.port
    # every database at once: PAUSE / RESUME without a database
    assert pgbouncer.run(bouncer.params("pause", database=None))["changed"] is True
    query = Query(fresh)
    query.start()
    wait_until(lambda: pgbouncer.run(bouncer.params("show"))["databases"][ENTRY]["clients_waiting"] == 1,
               "a transaction to wait while every database is paused")
    assert pgbouncer.run(bouncer.params("resume", database=None))["changed"] is True
    query.join(10)
    assert query.error is None and query.port == PRIMARY.port
    for conn in [fresh, *clients]:
        conn.close()


def test_pause_timeout_resumes_and_fails(bouncer: Bouncer) -> None:
    long_tx = bouncer.client()
    with long_tx.cursor() as cur:
        cur.execute("SELECT 1")  # never committed during the pause
    with pytest.raises(pgbouncer.PgBouncerError) as failure:
        pgbouncer.run(bouncer.params("pause", timeout=0.5))
    assert "did not finish within timeout=0.5 s" in failure.value.msg
    assert "resumed again" in failure.value.msg and "1 server connection(s) still busy" in failure.value.msg
    assert bouncer.databases()[ENTRY]["paused"] == 0
    other = bouncer.client()
    assert server_port(other) == PRIMARY.port  # nobody is left waiting
    long_tx.commit()
    # check mode of every changing command sends nothing but SHOW
    for command in ("pause", "kill", "reload"):
        planned = pgbouncer.run(bouncer.params(command), check_mode=True)
        assert planned["changed"] is True and planned["actions"][0].startswith("would ")
    assert bouncer.databases()[ENTRY]["paused"] == 0
    assert server_port(long_tx) == PRIMARY.port
    for conn in (long_tx, other):
        conn.close()
