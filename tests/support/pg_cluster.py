# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A throwaway PostgreSQL 15 primary with two streaming standbys, for the pg module tests.

Layout (nothing here touches the lab on 127.0.0.11-127.0.0.41 or port 5432):

* ``primary`` -- 127.0.0.91:55491, built with ``initdb``;
* ``standby`` -- 127.0.0.92:55492, ``pg_basebackup -R -X stream -S akig_test_standby``;
  tests may pause and resume its replay but must leave it a streaming standby;
* ``spare``   -- 127.0.0.93:55493, same as ``standby`` with slot ``akig_test_spare``;
  the promotion tests promote it and :meth:`PgCluster.fresh_spare` clones it again.

Everything lives in one ``/tmp/akig-pgtest-*`` directory owned by the OS user
``postgres`` (the servers run as that user through ``runuser``), with the Unix
sockets inside it.  TCP uses SCRAM; the superuser ``postgres`` and the role
``replicator`` get random passwords that are never written to the test output.

The pg tests share one cluster per pytest session through the ``cluster`` fixture
(exposed by the conftest.py of tests/unit and tests/integration; the tests that use it
are marked ``process``, see processes.py): :func:`acquire` builds it on first use and
:func:`release` stops the servers and deletes the directory when the last user is done
(an ``atexit`` hook does the same if a run is interrupted).
A directory left behind by a killed run is found by its prefix, its servers are
stopped and it is removed before a new cluster is built.
"""

from __future__ import annotations

import atexit
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import psycopg2
import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"
ROOT_PREFIX = "akig-pgtest-"
SUPERUSER = "postgres"
REPLICATION_USER = "replicator"
OWNER_FILE = "owner.pid"


@dataclass(frozen=True)
class Node:
    name: str
    host: str
    port: int
    slot: Optional[str] = None

    @property
    def target(self) -> str:
        return "%s:%d" % (self.host, self.port)


def _worker_offset() -> int:
    """pytest-xdist worker gwN gets its own addresses and ports (N * 10 above gw0's), so test files that
    use the cluster can run on two workers at once (scripts/test.sh: --dist loadfile)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return 10 * int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0


_OFFSET = _worker_offset()
PRIMARY = Node("primary", "127.0.0.%d" % (91 + _OFFSET), 55491 + _OFFSET)
STANDBY = Node("standby", "127.0.0.%d" % (92 + _OFFSET), 55492 + _OFFSET, "akig_test_standby")
SPARE = Node("spare", "127.0.0.%d" % (93 + _OFFSET), 55493 + _OFFSET, "akig_test_spare")
NODES = (PRIMARY, STANDBY, SPARE)

COMMON_CONF = """
# --- akig.runbooks pg module tests ---
wal_level = replica
wal_log_hints = on
hot_standby = on
max_wal_senders = 10
max_replication_slots = 10
max_connections = 30
shared_buffers = '16MB'
password_encryption = 'scram-sha-256'
fsync = off
wal_receiver_status_interval = 1
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
include_if_exists = 'node.conf'
"""

PG_HBA = """# akig.runbooks pg module tests: peer on the socket, SCRAM over loopback TCP
local   all             postgres                                peer
host    all             all             127.0.0.0/8             scram-sha-256
host    replication     replicator      127.0.0.0/8             scram-sha-256
"""


class ClusterError(RuntimeError):
    """The test cluster could not be built or driven."""


def _run(argv: Sequence[str], env: Optional[Dict[str, str]] = None, timeout: float = 60) -> str:
    full = ["runuser", "-u", OS_USER, "--", *argv]
    proc = subprocess.run(
        full, env=dict(os.environ, **(env or {})), capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise ClusterError("%s failed (rc %d): %s%s" % (" ".join(argv), proc.returncode, proc.stdout, proc.stderr))
    return proc.stdout


def _chown(path: Path) -> None:
    shutil.chown(path, OS_USER, OS_USER)


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _stop_data_dir(data: Path) -> None:
    """Stop the server of ``data`` (immediate mode) if its postmaster.pid names a live process."""
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return
    subprocess.run(
        ["runuser", "-u", OS_USER, "--", str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "20",
         "stop"],
        capture_output=True, text=True, timeout=30, check=False,
    )


def _owner_alive(root: Path) -> bool:
    try:
        pid = int((root / OWNER_FILE).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def remove_leftovers() -> None:
    """Stop the servers of and delete test clusters whose pytest process is gone (killed runs)."""
    for found in glob.glob(os.path.join("/tmp", ROOT_PREFIX + "*")):
        root = Path(found)
        if _owner_alive(root):
            continue  # another test session still uses it
        for node in NODES:
            _stop_data_dir(root / node.name / "data")
        shutil.rmtree(root, ignore_errors=True)


class PgCluster:
    """The three-node test cluster; see the module docstring."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX, dir="/tmp"))
        os.chmod(self.root, 0o755)
        _chown(self.root)
        (self.root / OWNER_FILE).write_text("%d\n" % os.getpid())
        self.password = secrets.token_urlsafe(18)
        self.replication_password = secrets.token_urlsafe(18)
        self.log: List[str] = []

    # ----------------------------------------------------------------- paths

    def data(self, node: Node) -> Path:
        return self.root / node.name / "data"

    def logfile(self, node: Node) -> Path:
        return self.root / node.name / "server.log"

    def sockdir(self, node: Node) -> Path:
        return self.root / node.name / "sock"

    def _node_dirs(self, node: Node) -> None:
        for directory in (self.root / node.name, self.sockdir(node)):
            directory.mkdir(parents=True, exist_ok=True)
            _chown(directory)

    def _write(self, path: Path, text: str, mode: int = 0o600) -> None:
        path.write_text(text)
        os.chmod(path, mode)
        _chown(path)

    def _node_conf(self, node: Node) -> str:
        return (
            "listen_addresses = '%s'\nport = %d\nunix_socket_directories = '%s'\ncluster_name = '%s'\n"
            % (node.host, node.port, self.sockdir(node), node.slot or "akig_test_primary")
        )

    # ------------------------------------------------------------- lifecycle

    def build(self) -> "PgCluster":
        for node in NODES:
            if _port_open(node.host, node.port):
                raise ClusterError(
                    "%s is already in use; the pg module tests need %s for their own cluster (stop whatever "
                    "listens there)" % (node.target, ", ".join(n.target for n in NODES))
                )
        self._node_dirs(PRIMARY)
        pwfile = self.root / PRIMARY.name / "pwfile"
        self._write(pwfile, self.password + "\n")
        try:
            _run([str(PG_BIN / "initdb"), "-D", str(self.data(PRIMARY)), "-U", SUPERUSER, "--pwfile", str(pwfile),
                  "--auth-local=peer", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        finally:
            pwfile.unlink()
        with open(self.data(PRIMARY) / "postgresql.conf", "a", encoding="utf-8") as handle:
            handle.write(COMMON_CONF)
        self._write(self.data(PRIMARY) / "pg_hba.conf", PG_HBA)
        self._write(self.data(PRIMARY) / "node.conf", self._node_conf(PRIMARY))
        self.start(PRIMARY)
        self.execute(PRIMARY, "CREATE ROLE %s WITH REPLICATION LOGIN PASSWORD %%s" % REPLICATION_USER,
                     (self.replication_password,))
        self.execute(PRIMARY, "CREATE TABLE akig_test_writes (id bigserial PRIMARY KEY, payload text)")
        self.clone(STANDBY)
        self.clone(SPARE)
        return self

    def start(self, node: Node) -> None:
        _run([str(PG_BIN / "pg_ctl"), "-D", str(self.data(node)), "-l", str(self.logfile(node)), "-w", "-t", "30",
              "start"], timeout=40)

    def stop(self, node: Node, mode: str = "fast") -> None:
        if (self.data(node) / "postmaster.pid").exists():
            _run([str(PG_BIN / "pg_ctl"), "-D", str(self.data(node)), "-m", mode, "-w", "-t", "30", "stop"],
                 timeout=40)

    def running(self, node: Node) -> bool:
        return (self.data(node) / "postmaster.pid").exists() and _port_open(node.host, node.port)

    def clone(self, node: Node) -> None:
        """(Re)create ``node`` as a streaming standby of the primary on its own slot, and start it."""
        assert node.slot, "only standbys are cloned"
        self.stop(node, "immediate")
        shutil.rmtree(self.root / node.name, ignore_errors=True)
        self._node_dirs(node)
        self.execute(PRIMARY, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                     (node.slot,))
        _run([str(PG_BIN / "pg_basebackup"), "-h", PRIMARY.host, "-p", str(PRIMARY.port), "-U", REPLICATION_USER,
              "-D", str(self.data(node)), "-R", "-X", "stream", "-C", "-S", node.slot, "-c", "fast", "--no-sync"],
             env={"PGPASSWORD": self.replication_password})
        self._write(self.data(node) / "node.conf", self._node_conf(node))
        self.start(node)
        self.wait_streaming(node)

    def fresh_spare(self) -> Node:
        """The spare as a streaming standby: reused when it streams within a few seconds, else cloned again."""
        try:
            reusable = (
                self.running(SPARE)
                and self.scalar(SPARE, "SELECT pg_is_in_recovery() AND NOT pg_is_wal_replay_paused()")
                and self.scalar(SPARE, "SELECT count(*) FROM pg_settings WHERE sourcefile IS NOT NULL "
                                "AND sourcefile LIKE '%%postgresql.auto.conf' AND name <> 'primary_conninfo' "
                                "AND name <> 'primary_slot_name'") == 0
            )
            if reusable:
                self.wait_streaming(SPARE, timeout=3)
                return SPARE
        except (ClusterError, psycopg2.Error):
            pass  # stopped, promoted, detached or reconfigured by an earlier test
        self.clone(SPARE)
        return SPARE

    def destroy(self) -> None:
        for node in NODES:
            try:
                self.stop(node, "immediate")
            except (ClusterError, subprocess.TimeoutExpired):
                _stop_data_dir(self.data(node))
        shutil.rmtree(self.root, ignore_errors=True)

    # --------------------------------------------------------------- queries

    def connect(self, node: Node, autocommit: bool = True) -> Any:
        conn = psycopg2.connect(host=node.host, port=node.port, user=SUPERUSER, password=self.password,
                                dbname="postgres", connect_timeout=3, application_name="akig_pg_cluster_fixture")
        conn.autocommit = autocommit
        return conn

    def query(self, node: Node, sql: str, params: Sequence[Any] = ()) -> List[tuple]:
        conn = self.connect(node)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, tuple(params))
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def execute(self, node: Node, sql: str, params: Sequence[Any] = ()) -> None:
        self.query(node, sql, params)

    def scalar(self, node: Node, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.query(node, sql, params)
        return rows[0][0] if rows else None

    def write_rows(self, count: int = 200, size: int = 200) -> str:
        """Insert ``count`` rows of ``size`` bytes on the primary; return its WAL LSN afterwards."""
        self.execute(PRIMARY, "INSERT INTO akig_test_writes (payload) SELECT repeat('x', %s) FROM generate_series(1, %s)",
                     (size, count))
        return self.scalar(PRIMARY, "SELECT pg_current_wal_lsn()::text")

    # ----------------------------------------------------------------- waits

    def wait_for(self, predicate: Any, what: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if predicate():
                    return
            except psycopg2.Error:
                pass
            if time.monotonic() > deadline:
                raise ClusterError("timed out after %.0f s waiting for %s" % (timeout, what))
            time.sleep(0.05)

    def wait_streaming(self, node: Node, timeout: float = 20) -> None:
        self.wait_for(
            lambda: self.scalar(PRIMARY, "SELECT count(*) FROM pg_stat_replication WHERE application_name = %s "
                                "AND state = 'streaming'", (node.slot,)) == 1,
            "%s to stream from the primary" % node.name, timeout,
        )

    def wait_received(self, node: Node, lsn: str, timeout: float = 15) -> None:
        self.wait_for(
            lambda: self.scalar(node, "SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn", (lsn,)),
            "%s to receive up to %s" % (node.name, lsn), timeout,
        )

    def wait_replayed(self, node: Node, lsn: Optional[str] = None, timeout: float = 15) -> str:
        """Wait until ``node`` has replayed the primary's current LSN (or ``lsn``); return that LSN."""
        target = lsn or self.scalar(PRIMARY, "SELECT pg_current_wal_lsn()::text")
        self.wait_for(
            lambda: self.scalar(node, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)),
            "%s to replay up to %s" % (node.name, target), timeout,
        )
        return target


# ------------------------------------------------------------------ sharing

_shared: Dict[str, Any] = {"cluster": None, "users": 0}


def acquire() -> PgCluster:
    """The session's cluster, built on first use."""
    if _shared["cluster"] is None:
        remove_leftovers()
        cluster = PgCluster()
        _shared["cluster"] = cluster
        try:
            cluster.build()
        except BaseException:
            cluster.destroy()
            _shared["cluster"] = None
            raise
    _shared["users"] += 1
    return _shared["cluster"]


def release() -> None:
    """Give the cluster back; the last user stops it and deletes its directory."""
    _shared["users"] -= 1
    if _shared["users"] <= 0 and _shared["cluster"] is not None:
        _shared["cluster"].destroy()
        _shared["cluster"] = None


@atexit.register
def _destroy_at_exit() -> None:
    if _shared["cluster"] is not None:
        _shared["cluster"].destroy()
        _shared["cluster"] = None


@pytest.fixture(scope="session")
def cluster() -> Iterator[PgCluster]:
    """The session's test cluster (see the module docstring)."""
    yield acquire()
    release()
