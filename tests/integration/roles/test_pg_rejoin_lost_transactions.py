# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pg_failover role's rejoin entry point names the lost transactions before pg_rewind, end to end.

A private two-node PostgreSQL 15 cluster of its own (the shared one of tests/support/pg_cluster.py must stay a
timeline-1 primary, and a rejoin rewinds its old primary onto the new timeline for good): ``old``
(127.0.0.94:55494) and ``new`` (127.0.0.95:55495) streaming from it, 10 above on each further pytest-xdist
worker. The new node's WAL receiving is stopped, the old primary commits payments it acknowledges, is killed
(kill -9 of the server) and the new node promoted: an asynchronous crash failover that lost exactly those
payments. Then ``ansible-playbook`` runs the role's ``rejoin`` entry point, as ``playbooks/pg-rejoin.yml``
does, inside an incident: ``lost-transactions.csv`` and ``.json`` in the incident folder must list exactly the
acknowledged payments the new primary lacks, ``pg_failover_lost_transactions_result`` must count them, and
the old primary must stream from the new one afterwards (pg_rewind ran after the list was made).
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence

import psycopg2
import pytest
import yaml
from ansible_collections.akig.runbooks.plugins.module_utils.procfs import alive, descendants
from ansible_collections.akig.runbooks.tests.support.ansible import PYTHON, Ansible
from ansible_collections.akig.runbooks.tests.support.pg_cluster import OS_USER, PG_BIN

OFFSET = 10 * int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0) \
    if os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw") else 0
OLD = ("127.0.0.%d" % (94 + OFFSET), 55494 + OFFSET)
NEW = ("127.0.0.%d" % (95 + OFFSET), 55495 + OFFSET)
INCIDENT = "INC-20261130-2000-P1-test"

CONF = """
wal_level = replica
wal_log_hints = on
max_wal_senders = 10
max_replication_slots = 10
max_connections = 20
shared_buffers = '16MB'
password_encryption = 'scram-sha-256'
fsync = off
wal_receiver_status_interval = 1
include_if_exists = 'node.conf'
"""
HBA = """local all postgres peer
host all all 127.0.0.0/8 scram-sha-256
host replication replicator 127.0.0.0/8 scram-sha-256
"""


def as_postgres(argv: Sequence[str], env: Optional[dict] = None, timeout: float = 60) -> str:
    proc = subprocess.run(["runuser", "-u", OS_USER, "--", *argv], env=dict(os.environ, **(env or {})),
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, "%s failed: %s%s" % (argv[0], proc.stdout, proc.stderr)
    return proc.stdout


def write_as_postgres(path: Path, text: str) -> None:
    path.write_text(text)
    os.chmod(path, 0o600)
    shutil.chown(path, OS_USER, OS_USER)


def wait_until(predicate: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except psycopg2.Error:
            pass
        assert time.monotonic() < deadline, "timed out waiting for %s" % what
        time.sleep(0.05)


class TwoNodes:
    """old (primary) and new (streaming standby on slot new_slot), in one /tmp directory owned by postgres."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="akig-pgrejoin-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        shutil.chown(self.root, OS_USER, OS_USER)
        self.password = secrets.token_urlsafe(18)
        self.replication_password = secrets.token_urlsafe(18)
        self.passfile = self.root / "pgpass"

    def data(self, name: str) -> Path:
        return self.root / name / "data"

    def log(self, name: str) -> Path:
        return self.root / name / "server.log"

    def addr(self, name: str) -> tuple:
        return OLD if name == "old" else NEW

    def _dirs(self, name: str) -> None:
        for directory in (self.root / name, self.root / name / "sock"):
            directory.mkdir(exist_ok=True)
            shutil.chown(directory, OS_USER, OS_USER)

    def _node_conf(self, name: str) -> str:
        host, port = self.addr(name)
        return "listen_addresses = '%s'\nport = %d\nunix_socket_directories = '%s'\ncluster_name = '%s'\n" % (
            host, port, self.root / name / "sock", name)

    def build(self) -> "TwoNodes":
        self._dirs("old")
        pwfile = self.root / "pwfile"
        write_as_postgres(pwfile, self.password + "\n")
        as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data("old")), "-U", "postgres", "--pwfile", str(pwfile),
                     "--auth-local=peer", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        pwfile.unlink()
        with open(self.data("old") / "postgresql.conf", "a", encoding="utf-8") as handle:
            handle.write(CONF)
        write_as_postgres(self.data("old") / "pg_hba.conf", HBA)
        write_as_postgres(self.data("old") / "node.conf", self._node_conf("old"))
        entries = ["%s:%s:*:replicator:%s\n" % (node[0], node[1], self.replication_password) for node in (OLD, NEW)]
        write_as_postgres(self.passfile, "".join(entries))
        self.start("old")
        self.execute("old", "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD %s", (self.replication_password,))
        self.execute("old", "CREATE TABLE payments (id bigint PRIMARY KEY, contract_id int NOT NULL, "
                     "amount_cents int NOT NULL)")
        self._dirs("new")
        as_postgres([str(PG_BIN / "pg_basebackup"), "-h", OLD[0], "-p", str(OLD[1]), "-U", "replicator", "-D",
                     str(self.data("new")), "-R", "-X", "stream", "-C", "-S", "new_slot", "-c", "fast", "--no-sync"],
                    env={"PGPASSWORD": self.replication_password})
        write_as_postgres(self.data("new") / "node.conf", self._node_conf("new"))
        self.start("new")
        wait_until(lambda: self.scalar("old", "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'new' "
                                       "AND state = 'streaming'") == 1, "new to stream from old")
        return self

    def start(self, name: str) -> None:
        as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data(name)), "-l", str(self.log(name)), "-w", "-t", "30",
                     "start"])

    def destroy(self) -> None:
        for name in ("old", "new"):
            if (self.data(name) / "postmaster.pid").exists():
                subprocess.run(["runuser", "-u", OS_USER, "--", str(PG_BIN / "pg_ctl"), "-D", str(self.data(name)),
                                "-m", "immediate", "-w", "-t", "20", "stop"], capture_output=True, timeout=30,
                               check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def connect(self, name: str) -> Any:
        host, port = self.addr(name)
        conn = psycopg2.connect(host=host, port=port, user="postgres", password=self.password, dbname="postgres",
                                connect_timeout=3)
        conn.autocommit = True
        return conn

    def query(self, name: str, sql: str, params: Sequence[Any] = ()) -> List[tuple]:
        conn = self.connect(name)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, tuple(params))
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def execute(self, name: str, sql: str, params: Sequence[Any] = ()) -> None:
        self.query(name, sql, params)

    def scalar(self, name: str, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.query(name, sql, params)
        return rows[0][0] if rows else None

    def kill(self, name: str) -> None:
        """kill -9 of the server: the postmaster and its children at once."""
        pid = int((self.data(name) / "postmaster.pid").read_text().split()[0])
        server = [pid] + descendants(pid)
        for target in server:
            try:
                os.kill(target, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until(lambda: not any(alive(target) for target in server), "the server to die")


@pytest.fixture
def nodes() -> Iterator[TwoNodes]:
    cluster = TwoNodes().build()
    try:
        yield cluster
    finally:
        cluster.destroy()


def inventory(nodes: TwoNodes, path: Path) -> None:
    hosts = {}
    for name in ("old", "new"):
        host, port = nodes.addr(name)
        hosts["db-" + name] = {"akig_address": host, "akig_pg_port": port, "akig_pg_data_dir": str(nodes.data(name)),
                               "akig_pg_log_file": str(nodes.log(name)), "akig_pg_passfile": str(nodes.passfile)}
    path.write_text(yaml.safe_dump({"all": {
        "vars": {"akig_environment": "lab", "ansible_connection": "local", "ansible_python_interpreter": str(PYTHON),
                 "akig_pg_superuser": "postgres",
                 "akig_pg_superuser_password": "{{ lookup('ansible.builtin.env', 'AKIG_TEST_PG_PASSWORD') }}",
                 "akig_pg_replication_user": "replicator", "akig_pg_bin_dir": str(PG_BIN), "akig_pg_os_user": OS_USER,
                 "akig_pg_service_manager": "pg_ctl"},
        "children": {"pg_primary": {"hosts": {"db-old": hosts["db-old"]}},
                     "pg_replica": {"hosts": {"db-new": hosts["db-new"]}}}}}))


PLAYBOOK = """
- name: Rejoin the old primary inside an incident, as playbooks/pg-rejoin.yml does
  hosts: localhost
  gather_facts: false
  tasks:
    - name: The incident the rejoin runs in
      ansible.builtin.set_fact:
        akig_incident: {id: %(incident)s}
    - name: Rejoin
      ansible.builtin.include_role:
        name: akig.runbooks.pg_failover
        tasks_from: rejoin
      vars:
        pg_failover_primary: db-old
        pg_failover_new_primary: db-new
        pg_failover_rewind_keep_files: [node.conf]
        pg_failover_artifacts_dir: %(artifacts)s
    - name: Keep the result for the test
      ansible.builtin.copy:
        content: "{{ pg_failover_lost_transactions_result | to_json }}"
        dest: %(out)s
        mode: "0600"
"""


def test_rejoin_lists_the_lost_payments_in_the_incident_folder_before_rewinding(nodes: TwoNodes, tmp_path: Path) -> None:
    for payment in range(1, 21):
        nodes.execute("old", "INSERT INTO payments VALUES (%s, 1, 100)", (payment,))
    wait_until(lambda: nodes.scalar("new", "SELECT count(*) FROM payments") == 20, "new to replay the payments")
    nodes.execute("new", "ALTER SYSTEM SET primary_conninfo = ''")
    nodes.execute("new", "SELECT pg_reload_conf()")
    wait_until(lambda: nodes.scalar("old", "SELECT count(*) FROM pg_stat_replication") == 0, "new to stop receiving")
    acknowledged = []
    for payment in range(100, 113):
        nodes.execute("old", "INSERT INTO payments VALUES (%s, 2, 4200)", (payment,))
        acknowledged.append(payment)
    nodes.kill("old")
    nodes.execute("new", "SELECT pg_promote(true, 30)")
    wait_until(lambda: not nodes.scalar("new", "SELECT pg_is_in_recovery()"), "new to be promoted")

    inventory(nodes, tmp_path / "hosts.yml")
    artifacts = tmp_path / "artifacts" / "incidents"
    out = tmp_path / "result.json"
    playbook = tmp_path / "rejoin.yml"
    playbook.write_text(PLAYBOOK % {"incident": INCIDENT, "artifacts": artifacts, "out": out})
    ansible = Ansible(tmp_path, [nodes.password, nodes.replication_password],
                      env={"AKIG_TEST_PG_PASSWORD": nodes.password})
    started = time.monotonic()
    run = ansible.playbook(playbook, inventory=str(tmp_path / "hosts.yml"), connection=None, timeout=240)
    (tmp_path / "ansible.out").write_text(run.stdout)
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-1000:] + "\nold's server log:\n" + (
        nodes.log("old").read_text()[-2500:] if nodes.log("old").exists() else "none")
    print("\nrejoin with the lost-transactions list: %.1f s" % (time.monotonic() - started))

    result = json.loads(out.read_text())
    assert (result["checked"], result["diverged"], int(result["lost"]), int(result["conflict"])) == (
        True, True, len(acknowledged), 0), result
    folder = artifacts / INCIDENT
    with open(folder / "lost-transactions.csv", encoding="utf-8") as handle:
        lines = list(csv.DictReader(handle))
    assert sorted(int(line["primary_key"].split("=")[1]) for line in lines) == acknowledged
    assert {(line["table"], line["kind"]) for line in lines} == {("public.payments", "lost")}
    document = json.loads((folder / "lost-transactions.json").read_text())
    assert document["lost_count"] == len(acknowledged) and document["fork_lsn"] == result["fork_lsn"]
    assert result["files"]["csv"] == str(folder / "lost-transactions.csv")
    assert result["lines"][0].startswith("lost: postgres public.payments id=100 committed ")
    # the list was made before pg_rewind: the old primary now streams from the new one, on its timeline
    wait_until(lambda: nodes.scalar("new", "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == 1,
               "the old primary to stream from the new one")
    assert nodes.scalar("old", "SELECT count(*) FROM payments WHERE id >= 100") == 0
    assert not list(Path("/tmp").glob("akig-lost-transactions-db-old-*"))
    assert not list(nodes.root.glob("old/.akig-divergence-*"))
