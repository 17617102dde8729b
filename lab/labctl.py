#!/usr/bin/env python3
"""akig-lab: a miniature AKIG production on loopback, built from the real programs.

    lab/akig-lab up            bring the lab up (idempotent)
    lab/akig-lab down          stop everything; no process left, no port bound
    lab/akig-lab status        health of every component (--json for machines)
    lab/akig-lab fault NAME    inject a real fault (see `faults`); NAME=clear restores
    lab/akig-lab faults        list the faults (--json for machines)
    lab/akig-lab reset         down, wipe the state folder (keeping the db-endpoint setting), up
    lab/akig-lab db-endpoint [direct|pgbouncer]   how the app reaches PostgreSQL (no argument: print it)
    lab/akig-lab queue-fill N [--overdue K]   N pending notifications (mixed kinds, K préavis past due)

Topology: the lab inventory, inventories/lab/hosts.yml, is the one place the hosts and their
loopback addresses are written (groups pg_primary, pg_replica: PostgreSQL 15 primary and hot
standbys on :5432, every standby cloned from and streaming from the primary; backend: akig-backend
:4000 under pm2 and PgBouncer :6432; frontend: akig-frontend :3000; notifier: akig-worker; redis:
Redis 7 on :6379; saas: the SaaS emulator on :80). sshd listens on every address, port 22, key in
state/ssh/lab_key.

Database endpoint (state/db_endpoint, `lab/akig-lab db-endpoint`): the app reaches PostgreSQL either
`direct` (DATABASE_URL names the primary, the seed's topology, the default on a fresh lab) or through
`pgbouncer`, the PgBouncer on its own host (DATABASE_URL names <host address>:6432; PgBouncer's
databases.ini names the primary). PgBouncer runs on every backend host in both topologies, so a switch
only rewrites DATABASE_URL and restarts the app. `reset` keeps the setting.

Faults: the registry lab/faults.yml (name, what it breaks, what really happens, inject, clear).

Production shape (inventories/lab-fqdn): `up` adds the hosts' production-style names to
/etc/hosts between "# BEGIN akig-lab" and "# END akig-lab" (`down` removes the block), creates
the operator account akig-ops (the lab key, passwordless sudo), and writes that inventory's
group_vars/all/vault.yml encrypted with state/vault-pass.

State (data directories, logs, keys, generated secrets) lives in lab/state/ (git ignores it),
or in $AKIG_LAB_STATE.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

import labdata

LAB_DIR = Path(__file__).resolve().parent
REPO = LAB_DIR.parent
STATE = Path(os.environ.get("AKIG_LAB_STATE", LAB_DIR / "state")).resolve()
PG_BIN = Path(os.environ.get("AKIG_PG_BIN", "/usr/lib/postgresql/15/bin"))
NODE_MODULES = LAB_DIR / "node_modules"
PM2 = NODE_MODULES / ".bin" / "pm2"
PYTHON = sys.executable

PG_PORT = 5432
BACKEND_PORT = 4000
FRONTEND_PORT = 3000
REDIS_PORT = 6379
SAAS_PORT = 80
PGBOUNCER_BIN = Path(os.environ.get("AKIG_PGBOUNCER_BIN", "/usr/sbin/pgbouncer"))
PGBOUNCER_PORT = 6432
# PgBouncer refuses to run as root: it runs as the PostgreSQL OS user, which owns its files (0600).
PGBOUNCER_OS_USER = "postgres"
PGBOUNCER_ADMIN_USER = "akig_pgbouncer_admin"
PGBOUNCER_DATABASE = "akig_db"
APP_DB_USER = "akig_app"
DB_ENDPOINTS = ("direct", "pgbouncer")
DEFAULT_DB_ENDPOINT = "direct"  # the seed's topology: the app talks to the primary
try:  # the topology and the fault registry, each read from its one file (lab/labdata.py)
    TOPOLOGY = labdata.topology()
    FAULT_REGISTRY, CLEAR_STEPS = labdata.faults()
except labdata.LabDataError as _exc:
    print(f"[lab] ERROR: {_exc}", file=sys.stderr)
    sys.exit(2)
DB_NODES = TOPOLOGY.databases
APP_HOSTS = TOPOLOGY.app_hosts
FRONTEND_HOSTS = list(TOPOLOGY.group("frontend"))
NOTIFIER_HOSTS = list(TOPOLOGY.group("notifier"))
CACHE = (*TOPOLOGY.first("redis"), REDIS_PORT)
SAAS = (*TOPOLOGY.first("saas"), SAAS_PORT)
ALL_ADDRESSES = list(dict.fromkeys(TOPOLOGY.addresses))
REGISTRY = {f["name"]: f for f in FAULT_REGISTRY}
# The worker's shutdown takes at most 9 s (5 s send timeout + SHUTDOWN_TIMEOUT_MS 4 s, see
# app/backend/src/worker.js); pm2 must wait longer before it SIGKILLs it.
WORKER_KILL_TIMEOUT_MS = 12000

# Production shape (inventories/lab-fqdn)
OPS_USER = "akig-ops"
SUDOERS_FILE = Path("/etc/sudoers.d") / OPS_USER
ETC_HOSTS = Path("/etc/hosts")
HOSTS_BEGIN = "# BEGIN akig-lab"
HOSTS_END = "# END akig-lab"
FQDN_INVENTORY_DIR = REPO / "inventories" / "lab-fqdn"
VAULT_FILE = FQDN_INVENTORY_DIR / "group_vars" / "all" / "vault.yml"
VAULT_NAMES_FILE = REPO / "inventories" / "production" / "group_vars" / "all" / "vault.yml.example"
PAYMENTS_INDEX = "payments_contract_id_idx"
LAB_AUTHOR = {
    "GIT_AUTHOR_NAME": "AKIG Deploy Bot", "GIT_AUTHOR_EMAIL": "deploy@akig.example",
    "GIT_COMMITTER_NAME": "AKIG Deploy Bot", "GIT_COMMITTER_EMAIL": "deploy@akig.example",
    # the same release gets the same revision on every host, as with a real deploy
    "GIT_AUTHOR_DATE": "2026-11-01T10:00:00Z", "GIT_COMMITTER_DATE": "2026-11-01T10:00:00Z",
}

FAULTS = {**{name: f["description"] for name, f in REGISTRY.items()},
          "clear": "undo every fault and return the lab to its baseline"}


class LabError(Exception):
    """A problem the operator can act on; the message says what to do."""


def log(msg: str) -> None:
    print(f"[lab] {msg}", flush=True)


# --------------------------------------------------------------------------- helpers

def run(cmd: list[str], *, check: bool = True, env: dict[str, str] | None = None, cwd: Path | None = None,
        capture: bool = True, user: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(cmd, env=full_env, cwd=cwd, text=True, capture_output=capture, timeout=timeout)
    if check and proc.returncode != 0:
        out = ((proc.stderr or "") + (proc.stdout or "")).strip()[-2000:]
        raise LabError(f"command failed ({proc.returncode}): {' '.join(cmd[:6])}...\n{out}")
    return proc


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_owner(host: str, port: int) -> str:
    proc = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if f"{host}:{port}" in line or f"*:{port}" in line or f"0.0.0.0:{port}" in line:
            return line.split("users:")[-1].strip() if "users:" in line else line.strip()
    return "unknown process"


def wait_for(pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def http_json(url: str, *, method: str = "GET", body: Any = None, timeout: float = 3,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    except (urllib.error.URLError, OSError) as exc:
        return 0, {"error": str(getattr(exc, "reason", exc))}
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


def write_private(path: Path, text: str, owner: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)
    if owner:
        shutil.chown(path, owner, owner)


# --------------------------------------------------------------------------- secrets

def load_secrets() -> dict[str, str]:
    path = STATE / "secrets.json"
    tok = secrets.token_hex
    if path.is_file():
        values = json.loads(path.read_text())
        # a secret added after this lab was set up: generated once, kept from then on
        added = {"auth_check_password": lambda: tok(12), "pgbouncer_admin_password": lambda: tok(16)}
        missing = {k: make() for k, make in added.items() if k not in values}
        if missing:
            values.update(missing)
            write_private(path, json.dumps(values, indent=2) + "\n")
        return values
    values = {
        "pg_superuser_password": tok(16),
        "pg_replication_password": tok(16),
        "pg_app_password": tok(16),
        "redis_password": tok(16),
        "jwt_secret": tok(32),
        "probe_password": tok(12),
        "auth_check_password": tok(12),
        "pgbouncer_admin_password": tok(16),
        "twilio_account_sid": "AC" + tok(16),
        "twilio_auth_token": tok(16),
        "sendgrid_api_key": "SG." + tok(11) + "." + tok(21),
        "slack_webhook_path": f"T{tok(4).upper()}/B{tok(4).upper()}/{tok(12)}",
        "ticket_api_token": tok(20),
    }
    write_private(path, json.dumps(values, indent=2) + "\n")
    return values


# --------------------------------------------------------------------------- preflight

def preflight() -> None:
    missing = []
    for path, hint in [
        (PG_BIN / "postgres", "apt-get install postgresql-15"),
        (Path("/usr/bin/redis-server"), "apt-get install redis-server"),
        (Path("/usr/sbin/sshd"), "apt-get install openssh-server"),
        (Path("/usr/bin/sudo"), "apt-get install sudo"),
        (PM2, "npm ci --prefix lab"),
        (PGBOUNCER_BIN, "apt-get install pgbouncer"),
    ]:
        if not path.exists():
            missing.append(f"{path} (install with: {hint})")
    if not shutil.which("node"):
        missing.append("node (install with: apt-get install nodejs)")
    try:
        import psycopg2  # noqa: F401  # the lab controller runs in .venv
    except ImportError:
        missing.append("psycopg2 in this Python (run the lab with lab/akig-lab, which uses .venv)")
    if missing:
        raise LabError("missing prerequisites; run scripts/setup.sh, or install:\n  - " + "\n  - ".join(missing))
    try:
        shutil.chown  # noqa: B018
        import pwd
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise LabError("the 'postgres' system user does not exist; install postgresql-15") from exc
    if os.geteuid() != 0:
        raise LabError("the lab must be run as root (PostgreSQL runs as 'postgres', sshd binds port 22)")


def ensure_traversable(path: Path) -> None:
    """PostgreSQL runs as 'postgres': every folder above its data must be searchable."""
    for parent in [path, *path.parents]:
        try:
            mode = parent.stat().st_mode
        except OSError:
            continue
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)


def check_port_free(service: str, host: str, port: int, ours: bool) -> None:
    if port_open(host, port) and not ours:
        raise LabError(
            f"{service}: {host}:{port} is already in use by {port_owner(host, port)}; "
            f"stop that process (or run `lab/akig-lab down` if it is an earlier lab) and try again")


# --------------------------------------------------------------------------- PostgreSQL

@dataclass
class PgNode:
    name: str
    host: str

    @property
    def dir(self) -> Path:
        return STATE / self.name

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    @property
    def logfile(self) -> Path:
        return self.dir / "log" / "postgresql.log"

    def postmaster_pid(self) -> int | None:
        pid = read_pid(self.data / "postmaster.pid")
        return pid if pid and pid_alive(pid) else None

    def running(self) -> bool:
        return self.postmaster_pid() is not None

    def pg_ctl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args], user="postgres", check=check,
                   timeout=timeout)

    def start(self) -> None:
        if self.running():
            return
        check_port_free(f"PostgreSQL {self.name}", self.host, PG_PORT, ours=False)
        # After a crash the lock files name a dead (possibly zombie, not yet reaped) postmaster,
        # which PostgreSQL would take for a live one: remove them when their pid is dead.
        for lock in [self.data / "postmaster.pid", *self.run_dir.glob(".s.PGSQL.*.lock")]:
            pid = read_pid(lock)
            if pid is None or not pid_alive(pid):
                lock.unlink(missing_ok=True)
        self.pg_ctl("-l", str(self.logfile), "-w", "-t", "60", "start")
        wait_for(lambda: port_open(self.host, PG_PORT), 30, f"PostgreSQL {self.name} on {self.host}:{PG_PORT}")

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self.pg_ctl("-m", mode, "-w", "-t", "30", "stop", check=False)
        pid = self.postmaster_pid()
        if pid:
            os.kill(pid, signal.SIGKILL)

    def node_conf(self) -> str:
        return (
            f"# {self.name}: written by the AKIG lab controller\n"
            f"listen_addresses = '{self.host}'\nport = {PG_PORT}\n"
            f"unix_socket_directories = '{self.run_dir}'\n"
            f"cluster_name = '{self.name}'\n"
        )


def pg_nodes() -> list[PgNode]:
    return [PgNode(n, h) for n, h in DB_NODES.items()]


def pg_connect(node: PgNode, sec: dict[str, str], dbname: str = "postgres", timeout: int = 3):
    import psycopg2
    conn = psycopg2.connect(host=node.host, port=PG_PORT, user="postgres", dbname=dbname,
                            password=sec["pg_superuser_password"], connect_timeout=timeout)
    conn.autocommit = True
    return conn


def pg_query(node: PgNode, sec: dict[str, str], sql: str, params: tuple = (), dbname: str = "postgres") -> list[tuple]:
    conn = pg_connect(node, sec, dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


# Settings added after the lab's first release: `up` appends them to an existing node's
# postgresql.conf when it lacks them (and reloads), so an old lab converges without a reset.
PG_ADDED_SETTINGS = {
    # a replica that stops consuming its slot (replica_lagging) cannot fill the primary's disk
    "max_slot_wal_keep_size": "'1GB'",
}

COMMON_PG_CONF = """
# --- AKIG lab settings (shared by every node; node.conf holds what differs) ---
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '256MB'
max_slot_wal_keep_size = '1GB'
wal_log_hints = on
hot_standby = on
hot_standby_feedback = on
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
shared_buffers = '64MB'
max_connections = 100
log_min_duration_statement = 500
log_line_prefix = '%m [%p] %q%u@%d '
log_connections = off
password_encryption = 'scram-sha-256'
include_if_exists = 'node.conf'
"""

PG_HBA = """# AKIG lab: peer for the local postgres user, SCRAM over loopback TCP
local   all             postgres                                peer
local   all             all                                     scram-sha-256
host    all             all             127.0.0.0/8             scram-sha-256
host    replication     replicator      127.0.0.0/8             scram-sha-256
"""


def pg_prepare_dirs(node: PgNode) -> None:
    for d in (node.dir, node.run_dir, node.logfile.parent):
        d.mkdir(parents=True, exist_ok=True)
        shutil.chown(d, "postgres", "postgres")
    os.chmod(node.dir, 0o700)


def pgpass_path() -> Path:
    return STATE / "pg" / "pgpass"


def pg_up(sec: dict[str, str]) -> None:
    nodes = pg_nodes()
    primary, standbys = nodes[0], nodes[1:]
    (STATE / "pg").mkdir(parents=True, exist_ok=True)
    shutil.chown(STATE / "pg", "postgres", "postgres")
    write_private(pgpass_path(), f"127.0.0.0:*:*:replicator:{sec['pg_replication_password']}\n"
                  + "".join(f"{h}:{PG_PORT}:*:replicator:{sec['pg_replication_password']}\n"
                            for h in DB_NODES.values()), owner="postgres")
    # primary
    if not (primary.data / "PG_VERSION").exists():
        log(f"initdb {primary.name}")
        pg_prepare_dirs(primary)
        pwfile = primary.dir / "pwfile"
        write_private(pwfile, sec["pg_superuser_password"] + "\n", owner="postgres")
        try:
            run([str(PG_BIN / "initdb"), "-D", str(primary.data), "-U", "postgres", "--pwfile", str(pwfile),
                 "--auth-local=peer", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"], user="postgres")
        finally:
            pwfile.unlink(missing_ok=True)
        with open(primary.data / "postgresql.conf", "a") as fh:
            fh.write(COMMON_PG_CONF)
        (primary.data / "pg_hba.conf").write_text(PG_HBA)
        (primary.data / "node.conf").write_text(primary.node_conf())
        for f in ("pg_hba.conf", "node.conf"):
            shutil.chown(primary.data / f, "postgres", "postgres")
        primary.start()
        pg_bootstrap_schema(primary, sec)
    else:
        pg_prepare_dirs(primary)
    # Start whatever node exists; never start a node that would become a second primary.
    for node in nodes:
        pg_converge_conf(node, sec)
        if (node.data / "PG_VERSION").exists() and not node.running():
            pg_guarded_start(node, sec)
    # Every standby that has no data yet: cloned from the current primary (the first node unless a
    # failover moved it), started, streaming.
    for standby in standbys:
        if not (standby.data / "PG_VERSION").exists():
            pg_clone_standby(current_primary(sec) or primary, standby, sec)


def pg_converge_conf(node: PgNode, sec: dict[str, str]) -> None:
    """Append the settings an older lab lacks (PG_ADDED_SETTINGS) and reload a running node."""
    conf = node.data / "postgresql.conf"
    if not conf.exists():
        return
    text = conf.read_text()
    missing = [f"{k} = {v}" for k, v in PG_ADDED_SETTINGS.items()
               if not re.search(rf"^\s*{k}\s*=", text, re.MULTILINE)]
    if not missing:
        return
    with open(conf, "a") as fh:
        fh.write("# added by the AKIG lab controller\n" + "\n".join(missing) + "\n")
    if node.running():
        pg_query(node, sec, "SELECT pg_reload_conf()")


def pg_guarded_start(node: PgNode, sec: dict[str, str]) -> None:
    others = [n for n in pg_nodes() if n.name != node.name and n.running()]
    is_standby = (node.data / "standby.signal").exists()
    if not is_standby:
        for other in others:
            try:
                in_recovery = pg_query(other, sec, "SELECT pg_is_in_recovery()")[0][0]
            except Exception:  # noqa: BLE001  # a node that does not answer cannot be judged
                continue
            if not in_recovery:
                raise LabError(
                    f"{node.name} is configured as a primary but {other.name} is already primary (a failover "
                    f"happened); starting {node.name} would give two primaries. Rejoin it as a standby with "
                    f"the pg_failover role's rejoin entry point, or run `lab/akig-lab reset`.")
    log(f"start PostgreSQL {node.name} ({'standby' if is_standby else 'primary'})")
    node.start()


def pg_bootstrap_schema(primary: PgNode, sec: dict[str, str]) -> None:
    log("create roles, database akig_db, schema and seed data (200k payments)")
    pg_query(primary, sec, "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD %s", (sec["pg_replication_password"],))
    pg_query(primary, sec, "CREATE ROLE akig_app WITH LOGIN PASSWORD %s", (sec["pg_app_password"],))
    pg_query(primary, sec, "CREATE DATABASE akig_db OWNER postgres")
    env = {"PGPASSWORD": sec["pg_superuser_password"]}
    base = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", primary.host, "-U", "postgres", "-d", "akig_db"]
    run([*base, "-f", str(LAB_DIR / "sql" / "schema.sql")], env=env)
    run([*base, "-v", f"probe_password={sec['probe_password']}", "-v", f"auth_check_password={sec['auth_check_password']}",
         "-f", str(LAB_DIR / "sql" / "seed.sql")], env=env, timeout=300)
    for node in DB_NODES:
        slot = node.replace("-", "_") + "_slot"
        pg_query(primary, sec, "SELECT pg_create_physical_replication_slot(%s, true) "
                 "WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)", (slot, slot))
    pg_query(primary, sec, "CHECKPOINT")


AUTH_CHECK_EMAIL = "auth-check@akig.example"


def pg_ensure_auth_check(sec: dict[str, str]) -> None:
    """RB-P1-002's check account and users.created_by, also in a lab seeded before they existed (idempotent)."""
    primary = current_primary(sec)
    if not primary:
        return
    pg_query(primary, sec, "ALTER TABLE users ADD COLUMN IF NOT EXISTS created_by bigint "
             "REFERENCES users (id) ON DELETE SET NULL", dbname="akig_db")
    rows = pg_query(primary, sec, "SELECT password_hash = crypt(%s, password_hash) FROM users WHERE email = %s",
                    (sec["auth_check_password"], AUTH_CHECK_EMAIL), dbname="akig_db")
    if not rows or not rows[0][0]:
        pg_query(primary, sec, "INSERT INTO users (email, full_name, password_hash, role) "
                 "VALUES (%s, 'Contrôle Authentification', crypt(%s, gen_salt('bf', 4)), 'oncall') "
                 "ON CONFLICT (email) DO UPDATE SET password_hash = EXCLUDED.password_hash, role = 'oncall'",
                 (AUTH_CHECK_EMAIL, sec["auth_check_password"]), dbname="akig_db")


def pg_clone_standby(primary: PgNode, standby: PgNode, sec: dict[str, str]) -> None:
    log(f"pg_basebackup {primary.name} -> {standby.name} (streaming standby)")
    pg_prepare_dirs(standby)
    slot = standby.name.replace("-", "_") + "_slot"
    pg_query(primary, sec, "SELECT pg_create_physical_replication_slot(%s, true) "
             "WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)", (slot, slot))
    run([str(PG_BIN / "pg_basebackup"), "-h", primary.host, "-p", str(PG_PORT), "-U", "replicator",
         "-D", str(standby.data), "-X", "stream", "-S", slot, "-c", "fast", "--no-password"],
        user="postgres", env={"PGPASSFILE": str(pgpass_path())}, timeout=600)
    (standby.data / "node.conf").write_text(standby.node_conf())
    write_standby_conf(standby, primary)
    standby.start()


def set_auto_conf(node: PgNode, settings: dict[str, str]) -> None:
    """Set parameters in the node's postgresql.auto.conf (as ALTER SYSTEM would); a reload applies them."""
    auto = node.data / "postgresql.auto.conf"
    lines = [ln for ln in (auto.read_text().splitlines() if auto.exists() else [])
             if not ln.startswith(tuple(settings))]
    lines += [f"{k} = '{v}'" for k, v in settings.items()]
    auto.write_text("\n".join(lines) + "\n")
    shutil.chown(auto, "postgres", "postgres")


def write_standby_conf(standby: PgNode, primary: PgNode) -> None:
    slot = standby.name.replace("-", "_") + "_slot"
    conninfo = (f"host={primary.host} port={PG_PORT} user=replicator passfile={pgpass_path()} "
                f"application_name={standby.name}")
    set_auto_conf(standby, {"primary_conninfo": conninfo, "primary_slot_name": slot})
    (standby.data / "standby.signal").touch()
    for f in ("node.conf", "standby.signal"):
        shutil.chown(standby.data / f, "postgres", "postgres")


def current_primary(sec: dict[str, str]) -> PgNode | None:
    for node in pg_nodes():
        if not node.running():
            continue
        try:
            if not pg_query(node, sec, "SELECT pg_is_in_recovery()")[0][0]:
                return node
        except Exception:  # noqa: BLE001
            continue
    return None


def running_standbys(sec: dict[str, str]) -> list[PgNode]:
    out = []
    for node in pg_nodes():
        if not node.running():
            continue
        try:
            if pg_query(node, sec, "SELECT pg_is_in_recovery()")[0][0]:
                out.append(node)
        except Exception:  # noqa: BLE001  # a node that does not answer is not a usable standby
            continue
    return out


def streaming(node: PgNode, sec: dict[str, str]) -> bool:
    rows = pg_query(node, sec, "SELECT status FROM pg_stat_wal_receiver")
    return bool(rows) and rows[0][0] == "streaming"


# --------------------------------------------------------------------------- Redis

def redis_dir() -> Path:
    return STATE / CACHE[0]


def redis_client(sec: dict[str, str]):
    import redis
    return redis.Redis(host=CACHE[1], port=CACHE[2], password=sec["redis_password"], socket_timeout=2)


def redis_up(sec: dict[str, str]) -> None:
    """Redis with AOF persistence (appendonly yes): the incident locks (their own database index)
    must survive a Redis restart."""
    d = redis_dir()
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "redis.conf"
    write_private(conf, "\n".join([
        f"bind {CACHE[1]}", f"port {CACHE[2]}", "daemonize yes", f"pidfile {d / 'redis.pid'}",
        f"logfile {d / 'redis.log'}", f"dir {d}", "dbfilename dump.rdb", 'save ""',
        "appendonly yes", "appendfsync everysec",
        f"requirepass {sec['redis_password']}", "maxmemory 256mb", "maxmemory-policy noeviction", "",
    ]))
    pid = read_pid(d / "redis.pid")
    if pid and pid_alive(pid) and port_open(CACHE[1], CACHE[2]):
        # a Redis started by an older lab runs without AOF: turn it on in place
        r = redis_client(sec)
        value = next(iter(r.config_get("appendonly").values()), b"")
        if (value.decode() if isinstance(value, bytes) else value) != "yes":
            log(f"Redis {CACHE[0]}: turn on AOF persistence (appendonly yes)")
            r.config_set("appendonly", "yes")
        return
    check_port_free(f"Redis {CACHE[0]}", CACHE[1], CACHE[2], ours=False)
    log(f"start Redis {CACHE[0]}")
    run(["redis-server", str(conf)])
    wait_for(lambda: port_open(CACHE[1], CACHE[2]), 15, f"Redis on {CACHE[1]}:{CACHE[2]}")


def redis_down() -> None:
    d = redis_dir()
    pid = read_pid(d / "redis.pid")
    if pid and pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        try:
            wait_for(lambda: not pid_alive(pid), 10, "Redis to stop")
        except LabError:
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- SaaS emulator

def saas_dir() -> Path:
    return STATE / SAAS[0]


def saas_base() -> str:
    return f"http://{SAAS[1]}:{SAAS[2]}" if SAAS[2] != 80 else f"http://{SAAS[1]}"


def saas_up(sec: dict[str, str]) -> None:
    d = saas_dir()
    d.mkdir(parents=True, exist_ok=True)
    pid = read_pid(d / "emulator.pid")
    if pid and pid_alive(pid) and port_open(SAAS[1], SAAS[2]):
        return
    check_port_free(f"SaaS emulator {SAAS[0]}", SAAS[1], SAAS[2], ours=False)
    creds = d / "credentials.json"
    write_private(creds, json.dumps({k: sec[k] for k in (
        "twilio_account_sid", "twilio_auth_token", "sendgrid_api_key", "slack_webhook_path", "ticket_api_token")}))
    log(f"start the SaaS emulator {SAAS[0]}")
    with open(d / "emulator.log", "ab") as out:
        proc = subprocess.Popen(
            [PYTHON, str(LAB_DIR / "emulator" / "akig_saas_emulator.py"), "--host", SAAS[1], "--port", str(SAAS[2]),
             "--state-dir", str(d), "--credentials-file", str(creds)],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
    (d / "emulator.pid").write_text(f"{proc.pid}\n")
    wait_for(lambda: port_open(SAAS[1], SAAS[2]) or proc.poll() is not None, 15, "the SaaS emulator")
    if proc.poll() is not None:
        raise LabError(f"the SaaS emulator exited at start; see {d / 'emulator.log'}")


def stop_pidfile(path: Path, what: str) -> None:
    pid = read_pid(path)
    if pid and pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        try:
            wait_for(lambda: not pid_alive(pid), 10, f"{what} to stop")
        except LabError:
            os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- sshd

def ssh_dir() -> Path:
    return STATE / "ssh"


def sshd_config_text(d: Path) -> str:
    # Root's key is the lab's shared file; every other account (akig-ops) has its own
    # ~/.ssh/authorized_keys, which sshd reads as that user, as on a production host.
    return "\n".join([
        *[f"ListenAddress {a}:22" for a in ALL_ADDRESSES],
        f"HostKey {d / 'ssh_host_ed25519_key'}", f"PidFile {d / 'sshd.pid'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'} .ssh/authorized_keys", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "Subsystem sftp internal-sftp", "LogLevel ERROR", "MaxStartups 50:30:100", "MaxSessions 50", "",
    ])


def sshd_up() -> None:
    d = ssh_dir()
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    conf = d / "sshd_config"
    pid = read_pid(d / "sshd.pid")
    if pid and pid_alive(pid):
        if conf.read_text() != sshd_config_text(d):  # an older lab's configuration: reload it (SIGHUP)
            conf.write_text(sshd_config_text(d))
            log("reload sshd (new configuration)")
            os.kill(pid, signal.SIGHUP)
            time.sleep(0.5)
            wait_for(lambda: port_open(ALL_ADDRESSES[0], 22), 10, "sshd")
        return
    for addr in ALL_ADDRESSES:
        check_port_free("sshd", addr, 22, ours=False)
    if not (d / "ssh_host_ed25519_key").exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "akig-lab-host", "-f", str(d / "ssh_host_ed25519_key")])
    if not (d / "lab_key").exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "akig-lab-operator", "-f", str(d / "lab_key")])
    shutil.copy(d / "lab_key.pub", d / "authorized_keys")
    os.chmod(d / "authorized_keys", 0o600)
    conf.write_text(sshd_config_text(d))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log("start sshd on the lab addresses (port 22)")
    run(["/usr/sbin/sshd", "-f", str(conf), "-E", str(d / "sshd.log")])
    wait_for(lambda: port_open(ALL_ADDRESSES[0], 22), 10, "sshd")
    write_known_hosts()


def write_known_hosts() -> None:
    """Every lab host's key under its address and, for inventories/lab-fqdn, its production-style name."""
    d = ssh_dir()
    keyline = (d / "ssh_host_ed25519_key.pub").read_text().split()
    names = {addr: [addr] for addr in ALL_ADDRESSES}
    for short, fqdn in TOPOLOGY.fqdns.items():
        names[TOPOLOGY.hosts[short]].append(fqdn)
    text = "".join(f"{','.join(n)} {keyline[0]} {keyline[1]}\n" for n in names.values())
    known = d / "known_hosts"
    if not known.exists() or known.read_text() != text:
        known.write_text(text)


# --------------------------------------------------------------------------- PgBouncer (every backend host)

def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """A SCRAM-SHA-256 verifier as PostgreSQL stores it in pg_authid.rolpassword (RFC 5802/7677):
    SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>. The lab's passwords are hex, which
    SASLprep leaves as they are."""
    import base64
    import hmac
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def scram_matches(verifier: str, password: str) -> bool:
    """Whether a SCRAM-SHA-256 verifier was computed from this password (its own salt and iterations)."""
    import base64
    import binascii
    import hmac
    m = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+", verifier or "")
    if not m:
        return False
    try:
        salt = base64.b64decode(m[2], validate=True)
    except binascii.Error:
        return False
    return hmac.compare_digest(scram_verifier(password, salt, int(m[1])), verifier)


def pgb_dir(host: str) -> Path:
    return app_dir(host) / "pgbouncer"


def pgb_file(host: str, name: str) -> Path:
    """pgbouncer.ini, databases.ini, userlist.txt, hba.conf, pgbouncer.pid, pgbouncer.log."""
    return pgb_dir(host) / name


def pgb_databases_text(primary_host: str) -> str:
    return (
        "; PgBouncer's [databases] section, alone in its file: RB-P1-003 repoints the entry here\n"
        "; (akig.runbooks.pgbouncer_admin command=repoint) and PgBouncer reloads it. Written by the AKIG\n"
        "; lab controller (`lab/akig-lab up` points it at the current primary).\n"
        "[databases]\n"
        f"{PGBOUNCER_DATABASE} = host={primary_host} port={PG_PORT} dbname={PGBOUNCER_DATABASE}\n"
    )


def pgb_ini_text(host: str, addr: str) -> str:
    return f"""; PgBouncer on {host}: the AKIG app's stable database endpoint ({addr}:{PGBOUNCER_PORT}).
; Written by the AKIG lab controller; see docs/pgbouncer.md. No clear-text password in any file:
; userlist.txt holds SCRAM verifiers only.
%include {pgb_file(host, 'databases.ini')}

[pgbouncer]
listen_addr = {addr}
listen_port = {PGBOUNCER_PORT}
; no Unix socket: two PgBouncers on one machine would fight over /tmp/.s.PGSQL.{PGBOUNCER_PORT}
unix_socket_dir =
pidfile = {pgb_file(host, 'pgbouncer.pid')}
logfile = {pgb_file(host, 'pgbouncer.log')}

; Authentication: the hba file says who may log in to what, the userlist holds SCRAM verifiers
; (akig_app's copied from pg_authid on the primary, so PgBouncer logs in to PostgreSQL with the
; client's SCRAM keys; the admin user's computed from its own secret).
auth_type = hba
auth_hba_file = {pgb_file(host, 'hba.conf')}
auth_file = {pgb_file(host, 'userlist.txt')}
; the admin console (PAUSE/RESUME/RELOAD/KILL): one operator user, nobody else
admin_users = {PGBOUNCER_ADMIN_USER}

; Transaction pooling: the app (lab/app/backend/src) keeps no session state: node-postgres sends
; unnamed statements only (no `name:` query, no named prepared statement), no SET, no advisory lock,
; no LISTEN/NOTIFY, no temporary table; its only explicit transaction (the notification queue's
; claim, FOR UPDATE SKIP LOCKED) runs BEGIN..COMMIT on one client. It is also what makes PAUSE
; useful for a planned failover: PAUSE returns once the transactions in flight end (in session mode
; it would wait for every client to disconnect).
pool_mode = transaction
default_pool_size = 10
max_client_conn = 200
; node-postgres 8 sends only user, database and application_name (PgBouncer tracks
; application_name itself); extra_float_digits is what JDBC and other drivers send.
; `options` is not ignored: a client's -c settings would silently not apply.
ignore_startup_parameters = extra_float_digits

; Failover: a server connection idle for more than 5 s is checked (select 1) before a client gets
; it, so a connection to a primary that died silently is found and dropped instead of failing a
; client's transaction (the default, 30 s, leaves that window open for longer); one round trip
; per 5 s per connection costs nothing here.
server_check_query = select 1
server_check_delay = 5
; After a repoint (RELOAD with a new host) connections to the old primary are closed as soon as
; they are released. With transaction pooling that is already the behaviour (server_fast_close
; only changes session pooling); it is set so that a switch to session pooling keeps it.
server_fast_close = 1
; a failed login to the (dead) primary is retried after 1 s, not the default 15 s: once the entry
; points at the new primary, clients get it within a second
server_login_retry = 1
server_connect_timeout = 3
; clients wait at most 30 s for a server (a PAUSE longer than that fails them with a clear error)
query_wait_timeout = 30
log_connections = 0
log_disconnections = 0
"""


def pgb_hba_text(addr: str) -> str:
    return (
        "# PgBouncer's hba (auth_type = hba): the admin console only from this host's loopback and its own\n"
        "# address, for the admin user, with SCRAM; the app database for the app user with SCRAM. Anything\n"
        "# else is refused (the app user cannot log in to the admin console).\n"
        f"host  pgbouncer  {PGBOUNCER_ADMIN_USER}  127.0.0.1/32  scram-sha-256\n"
        f"host  pgbouncer  {PGBOUNCER_ADMIN_USER}  {addr}/32  scram-sha-256\n"
        f"host  {PGBOUNCER_DATABASE}  {APP_DB_USER}  127.0.0.0/8  scram-sha-256\n"
    )


def pgb_userlist_text(host: str, app_verifier: str, sec: dict[str, str]) -> str:
    """SCRAM verifiers only; the admin's is kept while it matches the admin secret (a new salt on
    every `up` would rewrite the file for nothing)."""
    admin = None
    path = pgb_file(host, "userlist.txt")
    if path.exists():
        m = re.search(rf'^"{PGBOUNCER_ADMIN_USER}" "([^"]+)"$', path.read_text(), re.MULTILINE)
        if m and scram_matches(m[1], sec["pgbouncer_admin_password"]):
            admin = m[1]
    admin = admin or scram_verifier(sec["pgbouncer_admin_password"])
    return f'"{APP_DB_USER}" "{app_verifier}"\n"{PGBOUNCER_ADMIN_USER}" "{admin}"\n'


def pgb_pid(host: str) -> int | None:
    pid = read_pid(pgb_file(host, "pgbouncer.pid"))
    return pid if pid and pid_alive(pid) else None


def pgb_admin_connect(addr: str, sec: dict[str, str], timeout: int = 2):
    import psycopg2
    conn = psycopg2.connect(host=addr, port=PGBOUNCER_PORT, user=PGBOUNCER_ADMIN_USER, dbname="pgbouncer",
                            password=sec["pgbouncer_admin_password"], connect_timeout=timeout)
    conn.autocommit = True
    return conn


def pgb_show(addr: str, sec: dict[str, str]) -> dict[str, Any] | None:
    """The app database's entry as the running PgBouncer sees it: {host, port, paused}; None when
    its admin console does not answer."""
    try:
        conn = pgb_admin_connect(addr, sec)
    except Exception:  # noqa: BLE001  # not answering is the answer
        return None
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW DATABASES")
            cols = [c[0] for c in cur.description]
            for row in cur.fetchall():
                entry = dict(zip(cols, row))
                if entry["name"] == PGBOUNCER_DATABASE:
                    return {"host": entry["host"], "port": entry["port"], "paused": bool(entry["paused"])}
        return {"host": None, "port": None, "paused": False}
    except Exception:  # noqa: BLE001
        return None
    finally:
        conn.close()


def pgb_admin(addr: str, sec: dict[str, str], command: str) -> None:
    conn = pgb_admin_connect(addr, sec)
    try:
        with conn.cursor() as cur:
            cur.execute(command)
    finally:
        conn.close()


def pgbouncer_up(sec: dict[str, str]) -> None:
    """PgBouncer on every backend host: its files written (databases.ini pointing at the current
    primary), started when not running, reloaded when a file changed, answering its admin console."""
    primary = current_primary(sec)
    if not primary:
        raise LabError("PgBouncer: no PostgreSQL primary answers, so its database entry has nowhere to point; "
                       "run `lab/akig-lab status`, then `lab/akig-lab fault clear` or `lab/akig-lab reset`")
    rows = pg_query(primary, sec, "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (APP_DB_USER,))
    app_verifier = rows[0][0] if rows else ""
    if not app_verifier.startswith("SCRAM-SHA-256$"):
        raise LabError(f"PgBouncer: the role {APP_DB_USER} on {primary.name} has no SCRAM-SHA-256 password "
                       f"(password_encryption must be scram-sha-256); run `lab/akig-lab reset`")
    for host, addr in APP_HOSTS.items():
        d = pgb_dir(host)
        d.mkdir(parents=True, exist_ok=True)
        shutil.chown(d, PGBOUNCER_OS_USER, PGBOUNCER_OS_USER)
        os.chmod(d, 0o700)
        wanted = {
            "pgbouncer.ini": pgb_ini_text(host, addr),
            "databases.ini": pgb_databases_text(primary.host),
            "hba.conf": pgb_hba_text(addr),
            "userlist.txt": pgb_userlist_text(host, app_verifier, sec),
        }
        changed = []
        for name, text in wanted.items():
            path = pgb_file(host, name)
            if not path.exists() or path.read_text() != text:
                write_private(path, text, owner=PGBOUNCER_OS_USER)
                changed.append(name)
            elif (path.stat().st_mode & 0o777) != 0o600:
                os.chmod(path, 0o600)
        pid = pgb_pid(host)
        if pid and port_open(addr, PGBOUNCER_PORT):
            if changed:
                log(f"reload PgBouncer {host} ({', '.join(changed)} changed)")
                os.kill(pid, signal.SIGHUP)
                wait_for(lambda a=addr, p=primary.host: (pgb_show(a, sec) or {}).get("host") == p, 15,
                         f"PgBouncer {host} to point at {primary.name} after its reload")
            continue
        if pid:  # alive but not listening: a stuck process
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda p=pid: not pid_alive(p), 10, f"the stuck PgBouncer {host} to die")
        pgbouncer_start(host, addr, sec)


def pgbouncer_start(host: str, addr: str, sec: dict[str, str]) -> None:
    check_port_free(f"PgBouncer {host}", addr, PGBOUNCER_PORT, ours=False)
    pgb_file(host, "pgbouncer.pid").unlink(missing_ok=True)  # a killed PgBouncer leaves its pidfile behind
    log(f"start PgBouncer {host} ({addr}:{PGBOUNCER_PORT})")
    run([str(PGBOUNCER_BIN), "-d", "-q", str(pgb_file(host, "pgbouncer.ini"))], user=PGBOUNCER_OS_USER)
    try:
        wait_for(lambda: pgb_show(addr, sec) is not None, 15, f"PgBouncer {host} to answer on {addr}:{PGBOUNCER_PORT}")
    except LabError as exc:
        tail = pgb_file(host, "pgbouncer.log")
        raise LabError(f"{exc}; see {tail}") from exc


def pgbouncer_down() -> None:
    for host in APP_HOSTS:
        stop_pidfile(pgb_file(host, "pgbouncer.pid"), f"PgBouncer {host}")


# --------------------------------------------------------------------------- database endpoint (direct | pgbouncer)

def db_endpoint_path() -> Path:
    return STATE / "db_endpoint"


def read_db_endpoint() -> str:
    """The lab's topology setting; `direct` when the lab has none yet."""
    try:
        value = db_endpoint_path().read_text().strip()
    except FileNotFoundError:
        return DEFAULT_DB_ENDPOINT
    if value not in DB_ENDPOINTS:
        raise LabError(f"{db_endpoint_path()} holds {value!r}, not one of {', '.join(DB_ENDPOINTS)}; "
                       f"set it with `lab/akig-lab db-endpoint direct` (or pgbouncer)")
    return value


def database_url(addr: str, sec: dict[str, str], endpoint: str, primary_host: str) -> str:
    """DATABASE_URL for a backend host: the primary itself, or the PgBouncer on the host."""
    where = f"{addr}:{PGBOUNCER_PORT}" if endpoint == "pgbouncer" else f"{primary_host}:{PG_PORT}"
    return f"postgresql://{APP_DB_USER}:{sec['pg_app_password']}@{where}/akig_db"


def env_database_target(path: Path) -> str | None:
    """host:port of DATABASE_URL in an env file (never the password)."""
    try:
        m = re.search(r"^DATABASE_URL=postgresql://[^@\n]*@([^/\n]+)/", path.read_text(), re.MULTILINE)
    except OSError:
        return None
    return m[1] if m else None


def endpoint_matches(addr: str, target: str | None, endpoint: str) -> bool:
    if endpoint == "pgbouncer":
        return target == f"{addr}:{PGBOUNCER_PORT}"
    return bool(target) and target.rsplit(":", 1)[-1] == str(PG_PORT) and target.rsplit(":", 1)[0] in DB_NODES.values()


def set_db_endpoint(sec: dict[str, str], endpoint: str) -> None:
    """Persist the setting, rewrite DATABASE_URL on every backend host (env file and its deploy backup),
    restart the app through pm2 where it changed, wait until every backend is healthy."""
    if endpoint not in DB_ENDPOINTS:
        raise LabError(f"db-endpoint: {endpoint!r} is not one of {', '.join(DB_ENDPOINTS)}")
    primary = current_primary(sec)
    if not primary:
        raise LabError("db-endpoint: no PostgreSQL primary answers; run `lab/akig-lab status`, then "
                       "`lab/akig-lab fault clear` (or `reset`), and switch again")
    pgbouncer_up(sec)  # running in both topologies; pointing at the current primary
    db_endpoint_path().write_text(endpoint + "\n")
    changed = []
    for host, addr in APP_HOSTS.items():
        url = database_url(addr, sec, endpoint, primary.host)
        for path in (env_file(host), app_dir(host) / "shared" / "backups" / "akig.env.deploy-1"):
            if path.exists() and f"\nDATABASE_URL={url}\n" not in "\n" + path.read_text():
                set_env_key(path, "DATABASE_URL", url)
                if host not in changed:
                    changed.append(host)
    for host in changed:
        log(f"{host}: DATABASE_URL -> {endpoint} ({env_database_target(env_file(host))}); restart the app")
        pm2(host, "reload", "akig-backend", timeout=90)
        if host in NOTIFIER_HOSTS:
            pm2(host, "restart", "akig-worker", timeout=60)
    for host, addr in APP_HOSTS.items():
        wait_for(lambda a=addr: http_json(f"http://{a}:{BACKEND_PORT}/api/health")[0] == 200, 45,
                 f"akig-backend on {host} to be healthy on the {endpoint} endpoint")
    log(f"database endpoint: {endpoint}" + ("" if changed else " (already set; nothing restarted)"))


# --------------------------------------------------------------------------- the app (pm2)

def app_dir(host: str) -> Path:
    return STATE / host


def checkout(host: str) -> Path:
    return app_dir(host) / "akig"


def env_file(host: str) -> Path:
    return app_dir(host) / "shared" / "akig.env"


def pm2_home(host: str) -> Path:
    return app_dir(host) / "pm2"


def pm2(host: str, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run([str(PM2), *args], env={"PM2_HOME": str(pm2_home(host))}, check=check, cwd=app_dir(host),
               timeout=timeout)


def pm2_list(host: str) -> list[dict[str, Any]]:
    if not (pm2_home(host) / "pm2.pid").exists():
        return []
    pid = read_pid(pm2_home(host) / "pm2.pid")
    if not pid or not pid_alive(pid):
        return []
    proc = pm2(host, "jlist", check=False)
    try:
        return json.loads(proc.stdout[proc.stdout.find("["):]) if "[" in proc.stdout else []
    except ValueError:
        return []


def app_env_text(host: str, addr: str, sec: dict[str, str], primary_host: str, endpoint: str | None = None) -> str:
    """The backend's env file; DATABASE_URL follows the lab's db-endpoint setting (direct: the primary,
    pgbouncer: the PgBouncer on this host)."""
    return "\n".join([
        "# AKIG backend environment (written by the lab controller; a deploy keeps a backup in shared/backups/)",
        f"HOST={addr}", f"PORT={BACKEND_PORT}",
        f"DATABASE_URL={database_url(addr, sec, endpoint or read_db_endpoint(), primary_host)}",
        f"REDIS_URL=redis://:{sec['redis_password']}@{CACHE[1]}:{CACHE[2]}/0",
        f"JWT_SECRET={sec['jwt_secret']}", "JWT_TTL_S=3600",
        f"TWILIO_ACCOUNT_SID={sec['twilio_account_sid']}", f"TWILIO_AUTH_TOKEN={sec['twilio_auth_token']}",
        "TWILIO_FROM=+33100000000", f"TWILIO_BASE_URL={saas_base()}/twilio",
        f"SENDGRID_API_KEY={sec['sendgrid_api_key']}", "SENDGRID_FROM=noreply@akig.example",
        f"SENDGRID_BASE_URL={saas_base()}/sendgrid",
        f"MAINTENANCE_FILE={app_dir(host) / 'shared' / 'maintenance.flag'}",
        "WORKER_INTERVAL_MS=500", "WORKER_BATCH=50", "WORKER_MAX_ATTEMPTS=8",
        "DB_POOL_MAX=10", "DB_CONNECT_TIMEOUT_MS=2000", "",
    ])


def ecosystem(host: str, addr: str) -> str:
    co = checkout(host)
    env = {"AKIG_ENV_FILE": str(env_file(host)), "NODE_ENV": "production"}
    apps = [{
        "name": "akig-backend", "script": str(co / "backend" / "src" / "server.js"), "cwd": str(co / "backend"),
        "exec_mode": "cluster", "instances": 2, "wait_ready": True, "listen_timeout": 8000, "kill_timeout": 5000,
        "autorestart": True, "exp_backoff_restart_delay": 200,
        "merge_logs": True, "time": True, "env": env,
    }]
    if host in NOTIFIER_HOSTS:
        apps += [{
            "name": "akig-worker", "script": str(co / "backend" / "src" / "worker.js"), "cwd": str(co / "backend"),
            "exec_mode": "fork", "autorestart": True, "kill_timeout": WORKER_KILL_TIMEOUT_MS, "time": True, "env": env,
        }]
    if host in FRONTEND_HOSTS:
        apps += [{
            "name": "akig-frontend", "script": str(co / "frontend" / "serve.js"), "cwd": str(co / "frontend"),
            "exec_mode": "fork", "autorestart": True, "time": True,
            "env": {"HOST": addr, "PORT": str(FRONTEND_PORT), "BACKEND_URL": f"http://{addr}:{BACKEND_PORT}",
                    "DIST_DIR": str(co / "frontend" / "dist"), "NODE_ENV": "production"},
        }]
    return "module.exports = " + json.dumps({"apps": apps}, indent=2) + ";\n"


def git(co: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["git", "-C", str(co), *args], env=LAB_AUTHOR, check=check)


def deploy_checkout(host: str) -> None:
    """The app is a git checkout with deploy history, as on AKIG's servers."""
    co = checkout(host)
    if (co / ".git").exists():
        return
    co.mkdir(parents=True)
    git(co, "init", "-q", "-b", "main")
    git(co, "config", "user.name", "AKIG Deploy Bot")
    git(co, "config", "user.email", "deploy@akig.example")
    (co / ".gitignore").write_text("frontend/dist/\nnode_modules/\n")
    for part in ("backend", "frontend"):
        shutil.copytree(LAB_DIR / "app" / part, co / part, ignore=shutil.ignore_patterns("node_modules", "dist", "test"))
    git(co, "add", "-A")
    git(co, "commit", "-q", "-m", "deploy: AKIG 1.4.0")
    git(co, "tag", "baseline")


def build_frontend(host: str) -> None:
    fe = checkout(host) / "frontend"
    run(["npm", "run", "--silent", "build"], cwd=fe, timeout=120)


def app_up(sec: dict[str, str]) -> None:
    primary = current_primary(sec)
    primary_host = primary.host if primary else DB_NODES["db-1"]
    for host, addr in APP_HOSTS.items():
        d = app_dir(host)
        (d / "shared" / "backups").mkdir(parents=True, exist_ok=True)
        deploy_checkout(host)
        if not env_file(host).exists():
            text = app_env_text(host, addr, sec, primary_host)
            write_private(env_file(host), text)
            write_private(d / "shared" / "backups" / "akig.env.deploy-1", text)
        (d / "ecosystem.config.js").write_text(ecosystem(host, addr))
        if host in FRONTEND_HOSTS and not (checkout(host) / "frontend" / "dist" / "index.html").exists():
            log(f"npm run build (frontend, {host})")
            build_frontend(host)
        procs = pm2_list(host)
        online = {p["name"] for p in procs if proc_up(p)}
        wanted = ({"akig-backend"} | ({"akig-worker"} if host in NOTIFIER_HOSTS else set())
                  | ({"akig-frontend"} if host in FRONTEND_HOSTS else set()))
        if wanted <= online:
            continue
        check_port_free(f"akig-backend {host}", addr, BACKEND_PORT, ours=bool(procs))
        log(f"pm2 start {host} ({', '.join(sorted(wanted - online))})")
        pm2(host, "startOrRestart", str(d / "ecosystem.config.js"), timeout=90)
    for host, addr in APP_HOSTS.items():
        wait_for(lambda a=addr: http_json(f"http://{a}:{BACKEND_PORT}/api/health")[0] == 200, 45,
                 f"akig-backend on {host} to report healthy (see `lab/akig-lab status`)")
    wait_frontends("")


def wait_frontends(why: str) -> None:
    for host in FRONTEND_HOSTS:
        wait_for(lambda a=APP_HOSTS[host]: http_json(f"http://{a}:{FRONTEND_PORT}/healthz")[0] == 200, 20,
                 f"akig-frontend on {host}{why}")


def app_down() -> None:
    for host in APP_HOSTS:
        home = pm2_home(host)
        pid = read_pid(home / "pm2.pid")
        if pid and pid_alive(pid):
            pm2(host, "kill", check=False, timeout=60)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- up / down / status

def up() -> None:
    preflight()
    t0 = time.monotonic()
    STATE.mkdir(parents=True, exist_ok=True)
    ensure_traversable(STATE)
    sec = load_secrets()
    read_db_endpoint()  # a malformed setting stops here, before anything starts
    sshd_up()
    redis_up(sec)
    saas_up(sec)
    pg_up(sec)
    pg_ensure_auth_check(sec)
    pgbouncer_up(sec)
    app_up(sec)
    write_baseline(sec)
    production_shape(sec)
    log(f"lab is up in {time.monotonic() - t0:.1f}s")


def down() -> None:
    t0 = time.monotonic()
    app_down()
    pgbouncer_down()
    stop_pidfile(saas_dir() / "emulator.pid", "the SaaS emulator")
    redis_down()
    for node in pg_nodes():
        if node.data.exists():
            node.stop("fast")
    stop_pidfile(ssh_dir() / "sshd.pid", "sshd")
    remove_etc_hosts_block()
    bound = [f"{h}:{p}" for h, p in lab_ports() if port_open(h, p)]
    if bound:
        raise LabError(f"still bound after down: {', '.join(bound)} ({port_owner(*bound[0].split(':')[0:1], int(bound[0].split(':')[1]))})")
    log(f"lab is down in {time.monotonic() - t0:.1f}s; no lab port is bound")


def lab_ports() -> list[tuple[str, int]]:
    ports = [(h, PG_PORT) for h in DB_NODES.values()]
    ports += [(h, BACKEND_PORT) for h in APP_HOSTS.values()] + [(APP_HOSTS[h], FRONTEND_PORT) for h in FRONTEND_HOSTS]
    ports += [(h, PGBOUNCER_PORT) for h in APP_HOSTS.values()]
    ports += [(CACHE[1], CACHE[2]), (SAAS[1], SAAS[2])] + [(a, 22) for a in ALL_ADDRESSES]
    return ports


def status_data() -> dict[str, Any]:
    sec = load_secrets() if (STATE / "secrets.json").exists() else None
    out: dict[str, Any] = {}
    for node in pg_nodes():
        item: dict[str, Any] = {"address": f"{node.host}:{PG_PORT}", "running": node.running()}
        if item["running"] and sec:
            try:
                rec = pg_query(node, sec, "SELECT pg_is_in_recovery()")[0][0]
                item["role"] = "standby" if rec else "primary"
                if rec:
                    row = pg_query(node, sec, "SELECT status, sender_host FROM pg_stat_wal_receiver")
                    item["streaming_from"] = row[0][1] if row and row[0][0] == "streaming" else None
                    item["replay_paused"] = pg_query(node, sec, "SELECT pg_is_wal_replay_paused()")[0][0]
                else:
                    item["replicas"] = [r[0] for r in pg_query(
                        node, sec, "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'")]
                item["ok"] = True
            except Exception as exc:  # noqa: BLE001
                item["ok"], item["error"] = False, type(exc).__name__
        else:
            item["ok"] = False
        out[node.name] = item
    try:
        out[CACHE[0]] = {"address": f"{CACHE[1]}:{CACHE[2]}", "ok": bool(sec and redis_client(sec).ping())}
    except Exception as exc:  # noqa: BLE001
        out[CACHE[0]] = {"address": f"{CACHE[1]}:{CACHE[2]}", "ok": False, "error": type(exc).__name__}
    try:
        endpoint = read_db_endpoint()
    except LabError:
        endpoint = "invalid"
    out["db_endpoint"] = {"setting": endpoint}
    for host, addr in APP_HOSTS.items():
        code, body = http_json(f"http://{addr}:{BACKEND_PORT}/api/health")
        procs = {p["name"] + (f"#{p.get('pm2_env', {}).get('NODE_APP_INSTANCE', 0)}" if p["name"] == "akig-backend" else ""):
                 p.get("pm2_env", {}).get("status") for p in pm2_list(host)}
        item = {"address": addr, "backend_health": code, "ok": code == 200, "pm2": procs}
        if isinstance(body, dict):
            item["revision"] = str(body.get("revision", ""))[:12]
            if code != 200:
                item["error"] = body.get("error")
        if host in FRONTEND_HOSTS:
            fcode, _ = http_json(f"http://{addr}:{FRONTEND_PORT}/healthz")
            item["frontend_health"] = fcode
            item["ok"] = item["ok"] and fcode == 200
        if host in NOTIFIER_HOSTS:
            item["ok"] = item["ok"] and procs.get("akig-worker") == "online"
        shown = pgb_show(addr, sec) if sec else None
        item["pgbouncer"] = {"address": f"{addr}:{PGBOUNCER_PORT}", "up": shown is not None,
                             **({"points_to": f"{shown['host']}:{shown['port']}", "paused": shown["paused"]}
                                if shown else {})}
        target = env_database_target(env_file(host))
        item["database_url"] = target
        item["ok"] = item["ok"] and shown is not None and not shown["paused"] and endpoint_matches(addr, target, endpoint)
        out[host] = item
    code, body = http_json(f"{saas_base()}/_emulator/health")
    out[SAAS[0]] = {"address": f"{SAAS[1]}:{SAAS[2]}", "ok": code == 200,
                     "modes": body.get("modes") if isinstance(body, dict) else None}
    out["sshd"] = {"ok": port_open(ALL_ADDRESSES[0], 22)}
    faults = read_faults()
    out["faults"] = sorted(faults.get("active", {}))
    return out


def status(as_json: bool) -> int:
    data = status_data()
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        for name, item in data.items():
            if name == "faults":
                print(f"{'faults':8} {', '.join(item) or 'none'}")
                continue
            if name == "db_endpoint":
                print(f"{'endpoint':8} {item['setting']}")
                continue
            detail = {k: v for k, v in item.items() if k not in ("ok",)}
            print(f"{name:8} {'OK ' if item.get('ok') else 'KO '} {json.dumps(detail, ensure_ascii=False)}")
    return 0 if all(v.get("ok") for k, v in data.items() if k not in ("faults", "db_endpoint")) else 1


# --------------------------------------------------------------------------- faults

def read_faults() -> dict[str, Any]:
    path = STATE / "faults.json"
    return json.loads(path.read_text()) if path.exists() else {"active": {}}


def write_faults(data: dict[str, Any]) -> None:
    (STATE / "faults.json").write_text(json.dumps(data, indent=2) + "\n")


def write_baseline(sec: dict[str, str]) -> None:
    data = read_faults()
    if "baseline" not in data:
        data["baseline"] = {
            "revision": git(checkout(next(iter(APP_HOSTS))), "rev-parse", "baseline").stdout.strip(),
            "jwt_fingerprint": fingerprint(sec["jwt_secret"]),
        }
        write_faults(data)


def record_fault(name: str, **details: Any) -> None:
    data = read_faults()
    data["active"][name] = {"injected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **details}
    write_faults(data)


def backend_pids(host: str) -> list[int]:
    return [p["pid"] for p in pm2_list(host) if p["name"] == "akig-backend" and p.get("pid")]


def proc_up(p: dict[str, Any]) -> bool:
    """pm2 may report 'online' with pid 0 after it gave up restarting a cluster worker."""
    return p.get("pm2_env", {}).get("status") == "online" and bool(p.get("pid"))


def crash_and_stay_down(host: str) -> None:
    """SIGKILL every akig-backend process, then leave it stopped (pm2 will not bring it back),
    as after a crash that pm2 could not recover from."""
    killed = set(backend_pids(host))
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # pm2 restarts a killed worker after its (exponential) restart delay; a stop that lands before
    # that timer fires is undone by it (the worker comes back "online", with or without a pid).
    # Let pm2 finish its restarts first, then stop: nothing is pending any more.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        procs = [p for p in pm2_list(host) if p["name"] == "akig-backend"]
        if procs and all(proc_up(p) and p["pid"] not in killed for p in procs):
            break
        time.sleep(0.2)
    pm2(host, "stop", "akig-backend", check=False, timeout=60)
    addr = APP_HOSTS[host]

    def down() -> bool:
        procs = [p for p in pm2_list(host) if p["name"] == "akig-backend"]
        if (any(p.get("pm2_env", {}).get("status") != "stopped" or p.get("pid") for p in procs)
                or http_json(f"http://{addr}:{BACKEND_PORT}/api/health", timeout=1)[0] == 200):
            pm2(host, "stop", "akig-backend", check=False, timeout=60)
            return False
        return True

    wait_for(down, 30, f"akig-backend on {host} to stay down", interval=0.5)


def crash_loop_observed(host: str, timeout: float = 60) -> None:
    """Wait until the new release is seen failing from outside: /api/health no longer answers 200."""
    addr = APP_HOSTS[host]
    wait_for(lambda: all(http_json(f"http://{addr}:{BACKEND_PORT}/api/health", timeout=1)[0] != 200
                         or time.sleep(0.5) for _ in range(2)),
             timeout, f"the bad release on {host} to fail its health check", interval=0.5)


def fault_backend_crash(sec: dict[str, str]) -> None:
    for host in APP_HOSTS:
        crash_and_stay_down(host)
    record_fault("backend_crash", hosts=list(APP_HOSTS))


def fault_frontend_broken(sec: dict[str, str]) -> None:
    removed = {}
    for host in FRONTEND_HOSTS:
        dist = checkout(host) / "frontend" / "dist"
        removed[host] = [p.name for p in dist.glob("*.js")]
        for p in dist.glob("*.js"):
            p.unlink()
    record_fault("frontend_broken", removed=removed)


BAD_DEPLOY_LINE = "require('./akig-payments-v2');  // deploy 1.5.0: new payments module\n"


def deploy_commit(host: str, message: str, mutate: Callable[[Path], None], when: str | None = None) -> str:
    """Commit a deploy on the host's checkout; ``when`` (ISO time) dates it, the same on every host."""
    co = checkout(host)
    mutate(co)
    git(co, "add", "-A")
    env = {**LAB_AUTHOR, **({"GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when} if when else {})}
    run(["git", "-C", str(co), "commit", "-q", "-m", message], env=env)
    return git(co, "rev-parse", "HEAD").stdout.strip()


def deploy_time() -> str:
    """A fault's deploy happens now (a runbook reverts only a recent deploy), to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def fault_bad_deploy(sec: dict[str, str]) -> None:
    revs = {}
    when = deploy_time()
    for host in APP_HOSTS:
        def mutate(co: Path) -> None:
            server = co / "backend" / "src" / "server.js"
            text = server.read_text()
            lines = text.splitlines(keepends=True)
            # after the last top-level require: a module the deploy forgot to ship -> crash at boot
            idx = max((i for i, ln in enumerate(lines) if ln.startswith(("const ", "'use strict'")) and "require(" in ln),
                      default=0)
            lines.insert(idx + 1, BAD_DEPLOY_LINE)
            server.write_text("".join(lines))
        revs[host] = deploy_commit(host, "deploy: AKIG 1.5.0 (payments v2)", mutate, when)
        # a cold deploy: stop the old release, start the new one
        pm2(host, "stop", "akig-backend", check=False, timeout=60)
        pm2(host, "start", str(app_dir(host) / "ecosystem.config.js"), "--only", "akig-backend", check=False,
            timeout=60)
    for host in APP_HOSTS:
        crash_loop_observed(host)
    record_fault("bad_deploy", revisions=revs)


def fault_db_primary_down(sec: dict[str, str]) -> None:
    primary = current_primary(sec)
    if not primary:
        raise LabError("no running primary to take down; run `lab/akig-lab fault clear` or `lab/akig-lab status`")
    pid = primary.postmaster_pid()
    assert pid
    kill_tree(pid)
    wait_for(lambda: not port_open(primary.host, PG_PORT), 15, f"{primary.name} to stop accepting connections")
    record_fault("db_primary_down", node=primary.name, pid=pid)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and its children at once, as a host crash or the OOM killer would."""
    children = [int(c) for c in run(["ps", "-o", "pid=", "--ppid", str(pid)], check=False).stdout.split()]
    for p in [pid, *children]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not any(pid_alive(p) for p in [pid, *children]), 10, f"process {pid} and its children to die")


def set_env_key(path: Path, key: str, value: str) -> None:
    lines = path.read_text().splitlines()
    out = [f"{key}={value}" if ln.startswith(f"{key}=") else ln for ln in lines]
    write_private(path, "\n".join(out) + "\n")


def fault_jwt_secret_drift(sec: dict[str, str]) -> None:
    new = secrets.token_hex(32)
    for host in APP_HOSTS:
        set_env_key(env_file(host), "JWT_SECRET", new)
        pm2(host, "reload", "akig-backend", timeout=90)
    record_fault("jwt_secret_drift", fingerprint=fingerprint(new), baseline=fingerprint(sec["jwt_secret"]))


def fault_jwt_secret_drift_one(sec: dict[str, str]) -> None:
    host = list(APP_HOSTS)[-1]  # app-2: the others keep the right secret
    new = secrets.token_hex(32)
    set_env_key(env_file(host), "JWT_SECRET", new)
    pm2(host, "reload", "akig-backend", timeout=90)
    record_fault("jwt_secret_drift_one", host=host, fingerprint=fingerprint(new),
                 baseline=fingerprint(sec["jwt_secret"]))


def fault_provider_credentials_expired(sec: dict[str, str]) -> None:
    """Credentials the providers no longer accept (as after an expiry or a rotation nobody deployed)."""
    stale = {"TWILIO_AUTH_TOKEN": secrets.token_hex(16),
             "SENDGRID_API_KEY": "SG." + secrets.token_hex(11) + "." + secrets.token_hex(21)}
    for host in APP_HOSTS:
        for key, value in stale.items():
            set_env_key(env_file(host), key, value)
        pm2(host, "reload", "akig-backend", timeout=90)
        if host in NOTIFIER_HOSTS:
            pm2(host, "restart", "akig-worker", timeout=60)
    record_fault("provider_credentials_expired", fingerprints={k: fingerprint(v) for k, v in stale.items()})


def fault_replica_lagging(sec: dict[str, str]) -> None:
    """Pause the replica's replay and stop its WAL receiver: it falls further behind with every write."""
    standbys = running_standbys(sec)
    if not standbys:
        raise LabError("no running replica to make lag; run `lab/akig-lab fault clear` (or `lab/akig-lab reset`)")
    node = standbys[0]
    # the receiver first: a paused startup process would not act on the new primary_conninfo
    set_auto_conf(node, {"primary_conninfo": ""})
    pg_query(node, sec, "SELECT pg_reload_conf()")
    wait_for(lambda: not pg_query(node, sec, "SELECT 1 FROM pg_stat_wal_receiver"), 15,
             f"the WAL receiver of {node.name} to stop")
    pg_query(node, sec, "SELECT pg_wal_replay_pause()")
    record_fault("replica_lagging", node=node.name)


def fault_redis_sessions_corrupt(sec: dict[str, str]) -> None:
    r = redis_client(sec)
    sess = list(r.scan_iter("akig:sess:*"))
    for key in sess:
        r.set(key, b"\x80\x04\x95corrupt\xff", keepttl=True)
    user_ids = [row[0] for row in pg_query(current_primary(sec) or pg_nodes()[0], sec,
                                            "SELECT id FROM users ORDER BY id LIMIT 50", dbname="akig_db")]
    probe = pg_query(current_primary(sec) or pg_nodes()[0], sec,
                     "SELECT id FROM users WHERE email IN ('probe@akig.example', %s)", (AUTH_CHECK_EMAIL,),
                     dbname="akig_db")
    for uid in set(user_ids + [p[0] for p in probe]):
        r.delete(f"akig:user_sessions:{uid}")
        r.set(f"akig:user_sessions:{uid}", b"\x00corrupt")
    record_fault("redis_sessions_corrupt", sessions=len(sess))


def fault_slow_queries(sec: dict[str, str]) -> None:
    primary = current_primary(sec)
    if not primary:
        raise LabError("no running primary; clear the database fault first")
    pg_query(primary, sec, f"DROP INDEX IF EXISTS {PAYMENTS_INDEX}", dbname="akig_db")
    record_fault("slow_queries", index=PAYMENTS_INDEX)


LEAK_SNIPPET = (
    "\n// deploy 1.5.1: response cache for the payments page\n"
    "const __akigPaymentsCache = [];\n"
    "setInterval(() => { __akigPaymentsCache.push(Buffer.alloc(1024 * 1024, 1)); }, 250).unref();\n"
)


def fault_memory_leak(sec: dict[str, str]) -> None:
    revs = {}
    when = deploy_time()
    for host in APP_HOSTS:
        def mutate(co: Path) -> None:
            with open(co / "backend" / "src" / "server.js", "a") as fh:
                fh.write(LEAK_SNIPPET)
        revs[host] = deploy_commit(host, "deploy: AKIG 1.5.1 (payments cache)", mutate, when)
        pm2(host, "reload", "akig-backend", timeout=90)
    record_fault("memory_leak", revisions=revs)


def fault_pgbouncer_down(sec: dict[str, str]) -> None:
    """SIGKILL the PgBouncer of the first backend host (as the OOM killer would); nothing restarts it."""
    host, addr = next(iter(APP_HOSTS.items()))
    pid = pgb_pid(host)
    if not pid:
        raise LabError(f"PgBouncer {host} is not running; run `lab/akig-lab fault clear` first")
    kill_tree(pid)
    wait_for(lambda: not port_open(addr, PGBOUNCER_PORT), 10, f"PgBouncer {host} to stop accepting connections")
    record_fault("pgbouncer_down", host=host, pid=pid, db_endpoint=read_db_endpoint())


def emulator_mode(service: str, mode: str) -> None:
    code, body = http_json(f"{saas_base()}/_emulator/mode", method="POST", body={"service": service, "mode": mode})
    if code != 200:
        raise LabError(f"the SaaS emulator refused mode {service}={mode}: {code} {body}")


def fault_sms_provider_down(sec: dict[str, str]) -> None:
    emulator_mode("twilio", "outage")
    record_fault("sms_provider_down")


def fault_email_provider_down(sec: dict[str, str]) -> None:
    emulator_mode("sendgrid", "outage")
    record_fault("email_provider_down")


def fault_provider_quota(sec: dict[str, str]) -> None:
    emulator_mode("twilio", "quota")
    emulator_mode("sendgrid", "quota")
    record_fault("provider_quota")


def clear_emulator(sec: dict[str, str]) -> None:
    for service in ("twilio", "sendgrid", "slack", "tickets"):
        emulator_mode(service, "ok")


def clear_database(sec: dict[str, str]) -> None:
    """Start what is down, guarded against a second primary; recreate the index."""
    for node in pg_nodes():
        if (node.data / "PG_VERSION").exists() and not node.running():
            pg_guarded_start(node, sec)
    primary = current_primary(sec)
    if primary:
        pg_query(primary, sec, f"CREATE INDEX IF NOT EXISTS {PAYMENTS_INDEX} ON payments (contract_id)",
                 dbname="akig_db")


def clear_replica(sec: dict[str, str]) -> None:
    """A replica whose WAL receiver was stopped streams again from the primary; paused replay resumes."""
    primary = current_primary(sec)
    for node in running_standbys(sec):
        changed = False
        if primary and not pg_query(node, sec, "SHOW primary_conninfo")[0][0]:
            # its slot on the current primary (after a failover the new primary has none for it)
            slot = node.name.replace("-", "_") + "_slot"
            pg_query(primary, sec, "SELECT pg_create_physical_replication_slot(%s, true) "
                     "WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)", (slot, slot))
            write_standby_conf(node, primary)
            pg_query(node, sec, "SELECT pg_reload_conf()")
            changed = True
        if pg_query(node, sec, "SELECT pg_is_wal_replay_paused()")[0][0]:
            pg_query(node, sec, "SELECT pg_wal_replay_resume()")
            changed = True
        if changed and primary:
            wait_for(lambda n=node: streaming(n, sec), 30, f"{node.name} to stream from {primary.name} again")


def clear_pgbouncer(sec: dict[str, str]) -> None:
    """Every backend host's PgBouncer running, pointing at the current primary, not paused."""
    if not current_primary(sec):
        return  # clear_database could not bring a primary back; status says so
    pgbouncer_up(sec)
    for host, addr in APP_HOSTS.items():
        if (pgb_show(addr, sec) or {}).get("paused"):
            log(f"resume PgBouncer {host} (left paused)")
            pgb_admin(addr, sec, "RESUME")


def clear_redis(sec: dict[str, str]) -> None:
    """Drop what is not a valid session."""
    r = redis_client(sec)
    for key in list(r.scan_iter("akig:user_sessions:*")):
        if r.type(key) != b"set":
            r.delete(key)
    for key in list(r.scan_iter("akig:sess:*")):
        try:
            json.loads(r.get(key) or b"")
        except ValueError:
            r.delete(key)


def clear_app_hosts(sec: dict[str, str]) -> None:
    """Code back to the baseline tree, env back to the deploy backup, processes online."""
    primary = current_primary(sec)
    for host, addr in APP_HOSTS.items():
        co = checkout(host)
        restart = False
        if git(co, "diff", "--quiet", "baseline", "HEAD", "--", ".", check=False).returncode != 0:
            git(co, "reset", "-q", "--hard", "baseline")
            restart = True
        backup = app_dir(host) / "shared" / "backups" / "akig.env.deploy-1"
        current = env_file(host).read_text()
        wanted = backup.read_text()
        first_db = next(iter(DB_NODES.values()))
        if primary and f"@{primary.host}:" not in wanted:  # keep a failover's repointing
            wanted = wanted.replace(f"@{first_db}:", f"@{primary.host}:")
        if current != wanted:
            write_private(env_file(host), wanted)
            restart = True
        if host in FRONTEND_HOSTS and http_json(f"http://{addr}:{FRONTEND_PORT}/healthz")[0] != 200:
            build_frontend(host)
        (app_dir(host) / "shared" / "maintenance.flag").unlink(missing_ok=True)
        procs = pm2_list(host)
        if not procs or restart or not all(proc_up(p) for p in procs):
            # a fresh pm2 entry: no restart timer or grown restart delay left over from a crash loop
            if restart or not all(proc_up(p) for p in procs if p["name"] == "akig-backend"):
                pm2(host, "delete", "akig-backend", check=False, timeout=60)
            pm2(host, "startOrRestart", str(app_dir(host) / "ecosystem.config.js"), timeout=90)
    for host, addr in APP_HOSTS.items():
        wait_for(lambda a=addr: http_json(f"http://{a}:{BACKEND_PORT}/api/health")[0] == 200, 45,
                 f"akig-backend on {host} to be healthy after clear")
    wait_frontends(" after clear")


def fault_clear(sec: dict[str, str]) -> None:
    """Every clear step of the registry, in its order: the lab back to its baseline."""
    baseline = read_faults().get("baseline", {})
    for step in CLEAR_STEPS:
        globals()[step](sec)
    data = read_faults()
    data["active"] = {}
    data["baseline"] = baseline
    write_faults(data)


def registry_problems() -> list[str]:
    """Registry entries whose inject or clear function does not exist in this file."""
    funcs = {n for n, v in globals().items() if callable(v)}
    problems = [f"clear step {s!r} has no function {s}()" for s in CLEAR_STEPS if s not in funcs]
    problems += [f"fault {f['name']!r}: no function {f['inject']}()" for f in FAULT_REGISTRY if f["inject"] not in funcs]
    return problems


def inject(name: str) -> None:
    if name not in FAULTS:
        raise LabError(f"unknown fault {name!r}; choose one of: {', '.join(FAULTS)}")
    if not (STATE / "secrets.json").exists():
        raise LabError("the lab is not set up; run `lab/akig-lab up` first")
    sec = load_secrets()
    if name == "clear":
        fault_clear(sec)
        log("faults cleared; the lab is at its baseline")
        return
    globals()[REGISTRY[name]["inject"]](sec)
    log(f"fault {name}: {FAULTS[name]}")


# --------------------------------------------------------------------------- notification queue

QUEUE_KINDS = ("reminder", "preavis", "receipt", "alert")


def queue_fill(sec: dict[str, str], count: int, overdue: int = 0, prefix: str | None = None) -> dict[str, Any]:
    """N pending messages of mixed kinds on sms and e-mail, each with its recipient's contact points
    (sms, email, postal); every fourth is a préavis with a due time, the first `overdue` préavis already
    past it. One transaction on the primary; returns what was inserted (no secret)."""
    if count < 1 or count > 200000:
        raise LabError(f"queue-fill: N must be between 1 and 200000; got {count}")
    preavis = len(range(1, count, 4))
    if overdue < 0 or overdue > preavis:
        raise LabError(f"queue-fill: --overdue must be between 0 and the number of préavis ({preavis}); got {overdue}")
    primary = current_primary(sec)
    if not primary:
        raise LabError("queue-fill: no primary answers; bring the lab up first")
    prefix = prefix or "fill-" + secrets.token_hex(4)
    rows, late = [], 0
    for i in range(count):
        kind = QUEUE_KINDS[i % 4]
        channel = "sms" if (i // 4) % 2 == 0 else "email"
        phone, email = f"+3361{i % 10000000:07d}", f"locataire{i}@akig.example"
        due = None
        if kind == "preavis":
            due = "now() - interval '1 hour'" if late < overdue else "now() + interval '2 days'"
            late += due.startswith("now() -")
        contacts = json.dumps({"sms": phone, "email": email, "postal": f"{i} rue des Baux, 75011 Paris"})
        rows.append((channel, kind, phone if channel == "sms" else email, f"AKIG {kind} {i}",
                     f"AKIG: message {kind} {i} ({prefix})", f"{prefix}-{i}", contacts, due))
    conn = pg_connect(primary, sec, "akig_db", timeout=5)
    try:
        conn.autocommit = False
        with conn.cursor() as cur:
            for chunk in range(0, len(rows), 1000):
                part = rows[chunk:chunk + 1000]
                values = ",".join(
                    cur.mogrify("(%s,%s,%s,%s,%s,%s,%s::jsonb," + (r[7] or "NULL") + ")", r[:7]).decode()
                    for r in part)
                cur.execute("INSERT INTO notification_queue (channel, kind, recipient, subject, body, "
                            "idempotency_key, contacts, due_at) VALUES " + values)
        conn.commit()
    finally:
        conn.close()
    return {"inserted": count, "prefix": prefix, "preavis": preavis, "overdue": overdue,
            "by_channel": {"sms": sum(r[0] == "sms" for r in rows), "email": sum(r[0] == "email" for r in rows)}}


# --------------------------------------------------------------------------- production shape

def production_shape(sec: dict[str, str]) -> None:
    """What inventories/lab-fqdn needs: the operator account, the names, the known host keys, the vault."""
    ensure_ops_user()
    write_known_hosts()
    write_etc_hosts_block()
    write_vault(sec)


def ensure_ops_user() -> None:
    """akig-ops, as in production: logs in over SSH with the lab key, root through passwordless sudo."""
    import pwd
    try:
        pw = pwd.getpwnam(OPS_USER)
    except KeyError:
        log(f"create the operator account {OPS_USER} (SSH with the lab key, passwordless sudo)")
        run(["useradd", "--create-home", "--shell", "/bin/bash", "--comment", "AKIG operations (lab)", OPS_USER])
        pw = pwd.getpwnam(OPS_USER)
    # sshd runs without PAM and refuses a locked account ('!' password): no password at all, key only
    shadow = run(["getent", "shadow", OPS_USER]).stdout.split(":")
    if len(shadow) > 1 and shadow[1].startswith("!"):
        run(["usermod", "-p", "*", OPS_USER])
    ssh = Path(pw.pw_dir) / ".ssh"
    ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chown(ssh, pw.pw_uid, pw.pw_gid)
    key = (ssh_dir() / "lab_key.pub").read_text()
    keys = ssh / "authorized_keys"
    if not keys.exists() or keys.read_text() != key:
        write_private(keys, key)
        os.chown(keys, pw.pw_uid, pw.pw_gid)
    rule = (f"# written by lab/akig-lab up: the lab's operator account, as in production\n"
            f"{OPS_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n")
    if not SUDOERS_FILE.exists() or SUDOERS_FILE.read_text() != rule:
        tmp = SUDOERS_FILE.with_name(f".{OPS_USER}.new")  # sudo ignores names with a dot
        tmp.write_text(rule)
        os.chmod(tmp, 0o440)
        run(["visudo", "-cqf", str(tmp)])
        os.replace(tmp, SUDOERS_FILE)


def etc_hosts_entries() -> dict[str, str]:
    """Production-style name -> address, for every host of inventories/lab-fqdn."""
    return {fqdn: TOPOLOGY.hosts[short] for short, fqdn in TOPOLOGY.fqdns.items()}


def without_hosts_block(text: str) -> str:
    """The text with the akig-lab block removed; every other line is kept as it was."""
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        mark = line.strip()
        if not inside and mark == HOSTS_BEGIN:
            inside = True
        elif inside:
            inside = mark != HOSTS_END
        else:
            out.append(line)
    if inside:
        raise LabError(f"{ETC_HOSTS} has '{HOSTS_BEGIN}' without '{HOSTS_END}'; "
                       f"remove the lab's lines from it by hand, then run the command again")
    return "".join(out)


def with_hosts_block(text: str, entries: dict[str, str]) -> str:
    """The text with one akig-lab block (at the end) holding exactly `entries`."""
    base = without_hosts_block(text)
    if base and not base.endswith("\n"):
        base += "\n"
    block = [HOSTS_BEGIN, "# the AKIG lab under production-style names (inventories/lab-fqdn); "
             "`lab/akig-lab down` removes this block",
             *(f"{addr} {name}" for name, addr in entries.items()), HOSTS_END]
    return base + "\n".join(block) + "\n"


def rewrite_in_place(path: Path, text: str) -> None:
    """/etc/hosts may be a bind mount (containers): rewrite it in place, never rename over it."""
    if path.read_text() == text:
        return
    with open(path, "r+") as fh:
        fh.write(text)
        fh.truncate()


def write_etc_hosts_block() -> None:
    rewrite_in_place(ETC_HOSTS, with_hosts_block(ETC_HOSTS.read_text(), etc_hosts_entries()))


def remove_etc_hosts_block() -> None:
    if ETC_HOSTS.exists():
        rewrite_in_place(ETC_HOSTS, without_hosts_block(ETC_HOSTS.read_text()))


def vault_pass_path() -> Path:
    return STATE / "vault-pass"


def vault_values(sec: dict[str, str]) -> dict[str, str]:
    """The production vault's variable names (vault.yml.example), each with this lab's secret."""
    names = list(yaml.safe_load(VAULT_NAMES_FILE.read_text()) or {})
    missing = [n for n in names if n.removeprefix("vault_akig_") not in sec]
    if missing:
        raise LabError(f"{VAULT_NAMES_FILE} names {', '.join(missing)}, which the lab does not generate; "
                       f"add the secret to load_secrets() in lab/labctl.py (then `lab/akig-lab reset`)")
    return {n: sec[n.removeprefix("vault_akig_")] for n in names}


def write_vault(sec: dict[str, str]) -> None:
    """inventories/lab-fqdn/group_vars/all/vault.yml, encrypted with this lab's vault password."""
    from ansible.parsing.vault import AnsibleVaultError, VaultLib, VaultSecret
    if not vault_pass_path().exists():
        write_private(vault_pass_path(), secrets.token_urlsafe(32) + "\n")
    secret = VaultSecret(vault_pass_path().read_text().strip().encode())
    vault = VaultLib([("default", secret)])
    plain = ("---\n# Generated by `lab/akig-lab up` from this lab's secrets (lab/state); regenerated on every up.\n"
             + yaml.safe_dump(vault_values(sec), default_flow_style=False, sort_keys=False)).encode()
    if VAULT_FILE.exists():
        try:
            if vault.decrypt(VAULT_FILE.read_bytes()) == plain:
                return
        except AnsibleVaultError:
            pass  # another lab's password: regenerate
    write_private(VAULT_FILE, vault.encrypt(plain, secret=secret).decode())


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="akig-lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up")
    sub.add_parser("down")
    sub.add_parser("reset")
    de = sub.add_parser("db-endpoint", help="how the app reaches PostgreSQL: direct or through the host's PgBouncer")
    de.add_argument("endpoint", nargs="?", choices=DB_ENDPOINTS, help="no argument: print the setting")
    st = sub.add_parser("status")
    st.add_argument("--json", action="store_true")
    f = sub.add_parser("fault")
    f.add_argument("name", metavar="NAME", help="one of: " + ", ".join(FAULTS))
    fl = sub.add_parser("faults")
    fl.add_argument("--json", action="store_true")
    qf = sub.add_parser("queue-fill", help="insert N pending notifications of mixed kinds (préavis with due times)")
    qf.add_argument("count", metavar="N", type=int)
    qf.add_argument("--overdue", type=int, default=0, help="préavis already past their due time")
    qf.add_argument("--prefix", help="idempotency-key prefix (default: fill-<random>)")
    args = parser.parse_args(argv)
    problems = registry_problems()
    if problems:
        print(f"[lab] ERROR: {labdata.FAULTS_FILE} and lab/labctl.py disagree: " + "; ".join(problems), file=sys.stderr)
        return 2
    try:
        if args.cmd == "up":
            up()
            return status(False)
        if args.cmd == "down":
            down()
        elif args.cmd == "reset":
            try:  # the topology setting survives a reset (a malformed one does not)
                endpoint = read_db_endpoint()
            except LabError:
                endpoint = DEFAULT_DB_ENDPOINT
            down()
            shutil.rmtree(STATE, ignore_errors=True)
            STATE.mkdir(parents=True, exist_ok=True)
            db_endpoint_path().write_text(endpoint + "\n")
            up()
        elif args.cmd == "db-endpoint" and args.endpoint is None:
            print(read_db_endpoint())
        elif args.cmd == "db-endpoint":
            if not (STATE / "secrets.json").exists():
                raise LabError("the lab is not set up; run `lab/akig-lab up` first")
            set_db_endpoint(load_secrets(), args.endpoint)
        elif args.cmd == "status":
            return status(args.json)
        elif args.cmd == "faults" and args.json:
            print(json.dumps(FAULT_REGISTRY, indent=2))
        elif args.cmd == "faults":
            for k, v in FAULTS.items():
                print(f"{k:30} {v}")
        elif args.cmd == "fault":
            inject(args.name)
        elif args.cmd == "queue-fill":
            print(json.dumps(queue_fill(load_secrets(), args.count, args.overdue, args.prefix)))
    except LabError as exc:
        print(f"[lab] ERROR: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
