# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run akig.runbooks.pg_replication_info and akig.runbooks.pg_promote through ansible.

Every test drives ``ansible localhost -m akig.runbooks.<module>`` (or ``ansible-doc``) as
a subprocess against the real PostgreSQL 15 cluster of ``tests/support/pg_cluster.py``
(primary 127.0.0.91:55491, standby 127.0.0.92:55492, spare 127.0.0.93:55493 on the first
pytest-xdist worker, 10 above on each further worker), from a
temporary working directory with its own empty ansible.cfg and the venv's Python as the
module interpreter (tests/support/ansible.py).  The password reaches the module the way a vault variable would: a
vars file passed with ``-e @file`` defines ``pg_password`` as an environment lookup, and
the module arguments use ``{{ pg_password }}``.  No output of any run may contain the
password (nor the wrong one the failure test uses).

Independent runs are started together to keep the file well under a minute.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from ansible_collections.akig.runbooks.tests.support import ansible as support_ansible
from ansible_collections.akig.runbooks.tests.support.ansible import VENV_BIN, Run
from ansible_collections.akig.runbooks.tests.support.pg_cluster import PRIMARY, SPARE, STANDBY, Node, PgCluster

PASSWORD_ENV = "AKIG_TEST_PG_PASSWORD"


def lsn_bytes(lsn: str) -> int:
    high, low = lsn.split("/")
    return (int(high, 16) << 32) | int(low, 16)


# --------------------------------------------------------------------------
# Running ansible
# --------------------------------------------------------------------------


class Ansible(support_ansible.Ansible):
    """The shared runner (tests/support/ansible.py); the password reaches the modules through a vars file's env lookup."""

    def __init__(self, workdir: Path, password: str, secrets_to_hide: List[str]) -> None:
        super().__init__(workdir, secrets_to_hide, env={PASSWORD_ENV: password})
        self.vars_file = workdir / "pg-vars.yml"
        self.vars_file.write_text("pg_password: \"{{ lookup('ansible.builtin.env', '%s') }}\"\n" % PASSWORD_ENV)

    def start_module(self, module: str, node: Node, args: Optional[Dict[str, Any]] = None, *flags: str,
                     password: Optional[str] = None) -> subprocess.Popen:
        module_args = dict(login_host=node.host, login_port=node.port, login_password="{{ pg_password }}")
        module_args.update(args or {})
        return self.start_adhoc("akig.runbooks.%s" % module, module_args, "-e", "@%s" % self.vars_file, *flags,
                                env=None if password is None else {PASSWORD_ENV: password})

    def module(self, module: str, node: Node, args: Optional[Dict[str, Any]] = None, *flags: str) -> Run:
        return self.finish(self.start_module(module, node, args, *flags))


WRONG_PASSWORD = "Wr0ng-pg-Pa55word-for-tests"


@pytest.fixture
def ansible(tmp_path: Path, cluster: PgCluster) -> Ansible:
    return Ansible(tmp_path, cluster.password, [cluster.password, WRONG_PASSWORD])


# --------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------


def test_ansible_doc_renders_the_pg_modules(ansible: Ansible) -> None:
    info_proc = ansible.start([str(VENV_BIN / "ansible-doc"), "akig.runbooks.pg_replication_info"])
    promote_proc = ansible.start([str(VENV_BIN / "ansible-doc"), "akig.runbooks.pg_promote"])
    fence_proc = ansible.start([str(VENV_BIN / "ansible-doc"), "akig.runbooks.pg_fence"])
    info_doc, promote_doc, fence_doc = ansible.finish(info_proc), ansible.finish(promote_proc), ansible.finish(fence_proc)
    connection = ("login_host", "login_port", "login_user", "login_password", "login_db", "connect_timeout")
    for run, options, returns in (
        (info_doc, connection + ("primary_lsn",),
         ("reachable", "error", "version", "in_recovery", "role", "timeline", "current_lsn", "receive_lsn",
          "replay_lsn", "replay_paused", "lag_bytes", "lag_seconds", "wal_receiver", "replicas", "slots",
          "accepts_writes", "connections")),
        (promote_doc, connection + ("wait", "wait_seconds", "checkpoint", "expected_timeline_min", "resume_paused",
                                    "wait_received_lsn", "catchup_timeout", "poll_interval"),
         ("actions", "timeline_before", "timeline_after", "promoted_at", "duration_s", "lsn_at_promotion",
          "received_lsn", "catchup_seconds")),
        (fence_doc,
         ("data_dir", "bin_dir", "os_user", "service_manager", "service_name", "stop_timeout", "state",
          "primary_conninfo", "primary_slot_name"),
         ("cluster_state", "checkpoint_lsn", "timeline", "stopped_cleanly", "was_running", "stop_mode", "fenced",
          "actions")),
    ):
        assert run.rc == 0, run.stderr
        assert "ERROR" not in run.stderr and "WARNING" not in run.stderr, run.stderr
        for option in options:
            assert re.search(r"^\s*[-=] %s\b|^\s+%s\s" % (option, option), run.stdout, re.MULTILINE), option
        returned = run.stdout.split("RETURN VALUES", 1)[1]
        for name in returns:
            assert re.search(r"^\s*[-=]? ?%s\b" % name, returned, re.MULTILINE), name


# --------------------------------------------------------------------------
# pg_replication_info
# --------------------------------------------------------------------------


def test_info_reports_primary_standby_and_a_stopped_node(ansible: Ansible, cluster: PgCluster) -> None:
    cluster.write_rows(20)
    primary_lsn = cluster.wait_replayed(STANDBY)
    cluster.stop(SPARE)
    try:
        runs = [
            ansible.start_module("pg_replication_info", PRIMARY),
            ansible.start_module("pg_replication_info", STANDBY, {"primary_lsn": primary_lsn}),
            ansible.start_module("pg_replication_info", SPARE, None, "--check"),
        ]
        primary, standby, stopped = [ansible.finish(proc) for proc in runs]
    finally:
        cluster.start(SPARE)

    assert primary.rc == 0 and primary.status == "SUCCESS", primary.stdout + primary.stderr
    result = primary.result
    assert (result["changed"], result["reachable"], result["role"], result["timeline"]) == (False, True, "primary", 1)
    assert result["accepts_writes"] is True
    streaming = [row for row in result["replicas"] if row["application_name"] == STANDBY.slot]
    assert len(streaming) == 1 and streaming[0]["state"] == "streaming"

    assert standby.rc == 0 and standby.status == "SUCCESS", standby.stdout + standby.stderr
    result = standby.result
    assert (result["changed"], result["role"], result["in_recovery"]) == (False, "standby", True)
    # lag against the primary's LSN it has replayed past: 0, however much WAL arrived meanwhile
    assert result["replay_lsn_bytes"] >= lsn_bytes(primary_lsn) and result["lag_bytes"] == 0
    assert result["replay_paused"] is False
    assert result["wal_receiver"]["status"] == "streaming"

    assert stopped.rc == 0 and stopped.status == "SUCCESS", stopped.stdout + stopped.stderr
    result = stopped.result
    assert (result["changed"], result["reachable"], result["error_kind"]) == (False, False, "refused")
    assert SPARE.target in result["error"] and "Connection refused" in result["error"]


def test_info_with_a_wrong_password_fails_without_showing_it(ansible: Ansible) -> None:
    run = ansible.finish(ansible.start_module("pg_replication_info", PRIMARY, None, "-vvv", password=WRONG_PASSWORD))
    assert run.rc != 0 and run.status == "FAILED!", run.stdout + run.stderr
    assert run.result["msg"] == (
        'cannot connect to PostgreSQL at ' + PRIMARY.target + ' as postgres: password authentication failed for user '
        '"postgres"; check login_user/login_password'
    )
    assert run.result["error_kind"] == "auth"


def test_cluster_info_reads_every_node_at_once_down_and_misconfigured_ones_included(
        ansible: Ansible, cluster: PgCluster) -> None:
    cluster.stop(SPARE)
    try:
        nodes = [dict(name="db-1", host=PRIMARY.host, port=PRIMARY.port, attempts=2, attempt_interval=0.1),
                 dict(name="db-2", host=STANDBY.host, port=STANDBY.port),
                 dict(name="db-3", host=SPARE.host, port=SPARE.port)]
        args = dict(nodes=nodes, login_password="{{ pg_password }}")
        run = ansible.finish(ansible.start_adhoc("akig.runbooks.pg_cluster_info", args, "-e", "@%s" % ansible.vars_file))
        wrong = ansible.finish(ansible.start_adhoc("akig.runbooks.pg_cluster_info", dict(args, fail_on_error=True),
                                                   "-e", "@%s" % ansible.vars_file, env={PASSWORD_ENV: WRONG_PASSWORD}))
        duplicate = ansible.finish(ansible.start_adhoc("akig.runbooks.pg_cluster_info",
                                                       dict(args, nodes=[nodes[0], nodes[0]]),
                                                       "-e", "@%s" % ansible.vars_file))
    finally:
        cluster.start(SPARE)
    assert run.rc == 0 and run.status == "SUCCESS", run.stdout + run.stderr
    found = run.result["nodes"]
    assert (found["db-1"]["role"], found["db-1"]["accepts_writes"], found["db-1"]["probes"]) == ("primary", True, ["up"])
    assert (found["db-2"]["role"], found["db-2"]["in_recovery"]) == ("standby", True)
    assert (found["db-3"]["reachable"], found["db-3"]["state"]) == (False, "down")
    assert run.result["unreadable"] == {} and run.result["changed"] is False
    # a wrong password is a misconfiguration, not an outage: listed per node, and fatal with fail_on_error
    assert wrong.rc != 0 and wrong.status == "FAILED!", wrong.stdout
    assert set(wrong.result["unreadable"]) == {"db-1", "db-2"} and "password authentication failed" in wrong.result["msg"]
    assert duplicate.rc != 0 and "names must be unique; repeated: db-1" in duplicate.result["msg"]


# --------------------------------------------------------------------------
# pg_promote
# --------------------------------------------------------------------------


def test_promote_check_mode_then_for_real_then_again(ansible: Ansible, cluster: PgCluster) -> None:
    spare = cluster.fresh_spare()
    plan = ansible.module("pg_promote", spare, {"wait_seconds": 20}, "--check", "--diff")
    assert plan.rc == 0 and plan.status == "CHANGED", plan.stdout + plan.stderr
    assert plan.result["changed"] is True
    assert re.fullmatch(
        r"promote " + re.escape(SPARE.target) + r" \(standby on timeline 1, replay LSN [0-9A-F]+/[0-9A-F]+\) with "
        r"pg_promote\(wait => true, wait_seconds => 20\)",
        plan.result["actions"][0],
    ), plan.result["actions"]
    assert plan.result["actions"][-1] == "run CHECKPOINT so the new timeline is durable"
    diff = plan.stdout.split("localhost | CHANGED", 1)[0]  # the callback prints the diff before the result
    assert '-    "role": "standby"' in diff and '+    "role": "primary"' in diff, plan.stdout
    assert cluster.scalar(spare, "SELECT pg_is_in_recovery()") is True

    done = ansible.module("pg_promote", spare, {"wait_seconds": 20})
    assert done.rc == 0 and done.status == "CHANGED", done.stdout + done.stderr
    result = done.result
    assert result["timeline_before"] == 1 and result["timeline_after"] > result["timeline_before"]
    assert result["duration_s"] > 0 and result["promoted_at"].endswith("Z") and "diff" not in result
    cluster.execute(spare, "INSERT INTO akig_test_writes (payload) VALUES ('written through the promoted spare')")
    assert cluster.scalar(spare, "SELECT pg_is_in_recovery()") is False

    again = ansible.module("pg_promote", spare, {"expected_timeline_min": result["timeline_after"]})
    assert again.rc == 0 and again.status == "SUCCESS", again.stdout + again.stderr
    assert again.result["changed"] is False
    assert again.result["actions"] == [
        SPARE.target + " is already a primary on timeline %d; nothing to do" % result["timeline_after"]
    ]


def test_promote_refuses_a_paused_standby_and_a_bad_password(ansible: Ansible, cluster: PgCluster) -> None:
    cluster.write_rows(5)
    cluster.wait_replayed(STANDBY)
    cluster.execute(STANDBY, "SELECT pg_wal_replay_pause()")
    try:
        cluster.wait_for(lambda: cluster.scalar(STANDBY, "SELECT pg_get_wal_replay_pause_state()") == "paused",
                         "replay to pause on the standby")
        cluster.wait_received(STANDBY, cluster.write_rows(100))
        paused = ansible.start_module("pg_promote", STANDBY)
        bad_password = ansible.start_module("pg_promote", STANDBY, None, "--check", password=WRONG_PASSWORD)
        paused_run, bad_run = ansible.finish(paused), ansible.finish(bad_password)
        assert cluster.scalar(STANDBY, "SELECT pg_is_in_recovery()") is True
        assert cluster.scalar(STANDBY, "SELECT pg_is_wal_replay_paused()") is True
    finally:
        cluster.execute(STANDBY, "SELECT pg_wal_replay_resume()")
        cluster.wait_replayed(STANDBY)

    assert paused_run.rc != 0 and paused_run.status == "FAILED!", paused_run.stdout + paused_run.stderr
    assert re.fullmatch(
        r"replay is paused on " + re.escape(STANDBY.target) + r" with [1-9][0-9]* bytes not replayed; promoting now would lose "
        r"them; resume replay or pass resume_paused=true",
        paused_run.result["msg"],
    ), paused_run.result["msg"]
    assert paused_run.result["changed"] is False

    assert bad_run.rc != 0 and bad_run.status == "FAILED!", bad_run.stdout + bad_run.stderr
    assert "password authentication failed" in bad_run.result["msg"]
    assert STANDBY.target in bad_run.result["msg"]
