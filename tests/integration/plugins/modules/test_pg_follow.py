# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A failover with two standbys on real PostgreSQL 15 (tests/support/pg_cluster.py: primary, standby, spare).

* the pg_failover_candidate filter fed with real pg_replication_info results: the standby whose WAL receiver
  was cut (primary_conninfo cleared and reloaded) while rows were written is behind, and the other is chosen;
  a named candidate is honoured when healthy and refused, saying why, when not;
* akig.runbooks.pg_follow through ``ansible localhost -m``: a standby that received WAL past the point where the
  promoted node's timeline forked off is refused with the pg_rewind message and left as it was (check mode too);
  after a clean stop of the primary and the promotion of the spare, check mode changes nothing, then the standby
  streams from the promoted spare on its new timeline through its own slot, a row written there reaches it, and a
  rerun changes nothing.

The cluster is shared by the session: every test leaves the primary up with both standbys streaming from it
(the ``restored`` fixture starts the primary and clones what no longer streams from it). The standbys' current
primary_conninfo holds the replication password (pg_basebackup -R writes it): no output may show it.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from ansible_collections.akig.runbooks.plugins.filter.pg_candidate import pg_failover_candidate
from ansible_collections.akig.runbooks.plugins.module_utils.pg_replication import run_info
from ansible_collections.akig.runbooks.tests.support import ansible as support_ansible
from ansible_collections.akig.runbooks.tests.support.ansible import Run
from ansible_collections.akig.runbooks.tests.support.pg_cluster import PRIMARY, SPARE, STANDBY, Node, PgCluster

PASSWORD_ENV = "AKIG_TEST_PG_PASSWORD"


class Ansible(support_ansible.Ansible):
    """The shared runner; the password reaches the module through a vars file's env lookup, as a vault variable would."""

    def __init__(self, workdir: Path, password: str, secrets_to_hide: List[str]) -> None:
        super().__init__(workdir, secrets_to_hide, env={PASSWORD_ENV: password})
        self.vars_file = workdir / "pg-vars.yml"
        self.vars_file.write_text("pg_password: \"{{ lookup('ansible.builtin.env', '%s') }}\"\n" % PASSWORD_ENV)

    def start_module(self, module: str, node: Node, args: Optional[Dict[str, Any]] = None,
                     *flags: str) -> "subprocess.Popen[str]":
        module_args = dict(login_host=node.host, login_port=node.port, login_password="{{ pg_password }}")
        module_args.update(args or {})
        return self.start_adhoc("akig.runbooks.%s" % module, module_args, "-e", "@%s" % self.vars_file, *flags)

    def module(self, module: str, node: Node, args: Optional[Dict[str, Any]] = None, *flags: str) -> Run:
        return self.finish(self.start_module(module, node, args, *flags))


def info(cluster: PgCluster, node: Node) -> Dict[str, Any]:
    return run_info({"login_host": node.host, "login_port": node.port, "login_user": "postgres",
                     "login_password": cluster.password, "login_db": "postgres", "connect_timeout": 3})


def settings(cluster: PgCluster, node: Node) -> tuple:
    return tuple(cluster.query(node, "SELECT current_setting('primary_conninfo'), current_setting('primary_slot_name')")[0])


def receiver(cluster: PgCluster, node: Node) -> Any:
    rows = cluster.query(node, "SELECT status, sender_host, sender_port, received_tli FROM pg_stat_wal_receiver")
    return rows[0] if rows else None


def streams_from(cluster: PgCluster, node: Node, upstream: Node) -> bool:
    seen = receiver(cluster, node)
    return bool(seen) and seen[0] == "streaming" and (seen[1], seen[2]) == (upstream.host, upstream.port)


@pytest.fixture
def ansible(tmp_path: Path, cluster: PgCluster) -> Ansible:
    return Ansible(tmp_path, cluster.password, [cluster.password, cluster.replication_password])


@pytest.fixture
def restored(cluster: PgCluster) -> Iterator[PgCluster]:
    """After the test: the primary up and a primary, the standby and the spare streaming from it."""
    yield cluster
    if not cluster.running(PRIMARY):
        cluster.start(PRIMARY)
    for node in (STANDBY, SPARE):
        try:
            healthy = cluster.running(node) and streams_from(cluster, node, PRIMARY) and \
                cluster.scalar(node, "SELECT pg_is_in_recovery()")
        except Exception:  # pylint: disable=broad-except  # stopped or broken: cloned again below
            healthy = False
        if not healthy:
            cluster.clone(node)


def follow_args(upstream: Node, **extra: Any) -> Dict[str, Any]:
    args = {"new_primary_host": upstream.host, "new_primary_port": upstream.port, "slot_name": "akig_test_follower",
            "timeout": 20, "poll_interval": 0.1}
    args.update(extra)
    return args


def test_the_most_advanced_standby_is_chosen_by_received_lsn(restored: PgCluster) -> None:
    cluster = restored
    spare = cluster.fresh_spare()
    saved = cluster.scalar(spare, "SELECT current_setting('primary_conninfo')")
    # cut the spare's WAL receiver: it keeps what it has, receives nothing more
    cluster.execute(spare, "ALTER SYSTEM SET primary_conninfo = ''")
    cluster.execute(spare, "SELECT pg_reload_conf()")
    cluster.wait_for(lambda: receiver(cluster, spare) is None, "the spare's WAL receiver to stop")
    lsn = cluster.write_rows(300)
    cluster.wait_received(STANDBY, lsn)
    nodes = {"primary": info(cluster, PRIMARY), "standby": info(cluster, STANDBY), "spare": info(cluster, spare)}
    try:
        assert nodes["standby"]["receive_lsn_bytes"] > nodes["spare"]["receive_lsn_bytes"]
        gap = nodes["standby"]["receive_lsn_bytes"] - nodes["spare"]["receive_lsn_bytes"]

        # planned (the primary accepts writes): the cut spare is not eligible, named or not
        planned = pg_failover_candidate(nodes, "primary")
        assert (planned["target"], planned["others"]) == ("standby", ["spare"])
        assert planned["ranking"][1]["why_not"].startswith("not streaming while the old primary is up")
        refused = pg_failover_candidate(nodes, "primary", "spare")
        assert refused["target"] == "" and refused["refusal"].startswith(
            "the candidate spare cannot be promoted: not streaming while the old primary is up")

        # crash (the primary seen down): both are eligible, the one that received more wins
        crash = dict(nodes, primary={"reachable": False, "error_kind": "refused"})
        chosen = pg_failover_candidate(crash, "primary")
        assert chosen["target"] == "standby" and chosen["others"] == ["spare"]
        assert chosen["reason"].startswith("standby: received %s (" % nodes["standby"]["receive_lsn"])
        assert [row["host"] for row in chosen["ranking"] if row["eligible"]] == ["standby", "spare"]
        assert gap >= 300 * 200  # the rows the spare never received
        named = pg_failover_candidate(crash, "primary", "spare")
        assert named["target"] == "spare" and named["others"] == ["standby"]
        assert named["reason"].startswith("spare: named by pg_failover_candidate, received %s (standby is "
                                          % nodes["spare"]["receive_lsn"])
    finally:
        cluster.execute(spare, "ALTER SYSTEM SET primary_conninfo = %s", (saved,))
        cluster.execute(spare, "SELECT pg_reload_conf()")
        cluster.wait_streaming(spare)


def test_a_standby_past_the_fork_point_is_refused_and_left_unchanged(ansible: Ansible, restored: PgCluster) -> None:
    cluster = restored
    spare = cluster.fresh_spare()
    cluster.execute(spare, "SELECT pg_promote(true, 30)")
    lsn = cluster.write_rows(50)  # the old timeline goes on past the spare's fork point
    cluster.wait_received(STANDBY, lsn)
    before = settings(cluster, STANDBY)
    plan = ansible.start_module("pg_follow", STANDBY, follow_args(spare), "--check")
    real = ansible.start_module("pg_follow", STANDBY, follow_args(spare))
    for run in (ansible.finish(plan), ansible.finish(real)):
        assert run.rc != 0 and run.status == "FAILED!", run.stdout + run.stderr
        result = run.result
        assert result["needs_rewind"] is True and result["changed"] is False
        assert "holds WAL up to" in result["msg"] and "where timeline 2 forked off timeline 1" in result["msg"]
        assert "it needs pg_rewind onto the new timeline, the rejoin path (playbooks/pg-rejoin.yml" in result["msg"]
        assert "Nothing was changed." in result["msg"]
    assert settings(cluster, STANDBY) == before
    assert streams_from(cluster, STANDBY, PRIMARY)
    assert cluster.scalar(spare, "SELECT count(*) FROM pg_replication_slots") == 0


def test_the_other_standby_follows_the_promoted_one(ansible: Ansible, restored: PgCluster) -> None:
    cluster = restored
    spare = cluster.fresh_spare()
    cluster.write_rows(20)
    cluster.wait_replayed(STANDBY)
    cluster.wait_replayed(spare)
    cluster.stop(PRIMARY, "fast")  # a clean stop: both standbys receive the shutdown checkpoint
    cluster.wait_for(lambda: cluster.scalar(STANDBY, "SELECT pg_last_wal_receive_lsn()::text")
                     == cluster.scalar(spare, "SELECT pg_last_wal_receive_lsn()::text"), "both standbys level")
    nodes = {"primary": info(cluster, PRIMARY), "standby": info(cluster, STANDBY), "spare": info(cluster, spare)}
    choice = pg_failover_candidate(nodes, "primary", None, {"spare": 10})
    assert choice["target"] == "spare" and choice["others"] == ["standby"]
    assert choice["reason"].startswith("spare: received %s (level with standby, chosen by priority 10 < 100)"
                                       % nodes["spare"]["receive_lsn"])
    cluster.execute(spare, "SELECT pg_promote(true, 30)")
    before = settings(cluster, STANDBY)

    plan = ansible.module("pg_follow", STANDBY, follow_args(spare, application_name="standby"), "--check", "--diff")
    assert plan.rc == 0 and plan.status == "CHANGED", plan.stdout + plan.stderr
    assert plan.result["following"] is False and plan.result["fork_lsn"] == nodes["spare"]["receive_lsn"]
    actions = plan.result["actions"]
    assert actions[1] == "create the physical replication slot akig_test_follower on %s (WAL reserved at once)" % spare.target
    assert actions[2].startswith("set primary_conninfo of %s to 'host=%s port=%d user=replicator password=[REDACTED]"
                                 % (STANDBY.target, spare.host, spare.port))
    assert "application_name=standby" in actions[2] and "(was 'user=replicator password=[REDACTED]" in actions[2]
    assert '+    "primary_slot_name": "akig_test_follower"' in plan.stdout  # the --diff output
    assert settings(cluster, STANDBY) == before
    assert cluster.scalar(spare, "SELECT count(*) FROM pg_replication_slots") == 0

    done = ansible.module("pg_follow", STANDBY, follow_args(spare, application_name="standby"))
    assert done.rc == 0 and done.status == "CHANGED", done.stdout + done.stderr
    result = done.result
    assert (result["following"], result["slot_created"], result["timeline"], result["standby_timeline"]) == (True, True, 2, 1)
    assert "diff" not in result and result["seconds"] < 20
    assert streams_from(cluster, STANDBY, spare) and receiver(cluster, STANDBY)[3] == 2
    assert cluster.scalar(spare, "SELECT state FROM pg_stat_replication WHERE application_name = 'standby'") == "streaming"
    conninfo, slot = settings(cluster, STANDBY)
    assert slot == "akig_test_follower" and "host=%s port=%d" % (spare.host, spare.port) in conninfo
    assert "password=" in conninfo  # kept from pg_basebackup -R: the standby still logs in
    cluster.execute(spare, "INSERT INTO akig_test_writes (payload) VALUES ('after the follow')")
    cluster.wait_for(lambda: cluster.scalar(STANDBY, "SELECT count(*) FROM akig_test_writes WHERE payload = 'after the follow'")
                     == 1, "the row written on the new primary to reach the follower")

    # a rerun changes nothing: the module alone, and the role's follow entry point with a follower that is down
    again = ansible.start_module("pg_follow", STANDBY, follow_args(spare, application_name="standby"))
    role, result_file = run_follow_role(ansible, ansible.workdir, spare)
    again_run, role_run = ansible.finish(again), ansible.finish(role, timeout=120)
    assert again_run.rc == 0 and again_run.status == "SUCCESS", again_run.stdout + again_run.stderr
    assert again_run.result["changed"] is False and again_run.result["following"] is True
    assert again_run.result["actions"][-1] == ("%s already streams from %s on timeline 2 through slot akig_test_follower; "
                                               "nothing to do" % (STANDBY.target, spare.target))
    assert role_run.rc == 0, role_run.stdout + role_run.stderr
    assert "WARNING: db-gone do not follow spare" in role_run.stdout
    assert "changed=0" in role_run.stdout and "ignored=1" in role_run.stdout
    outcome = json.loads(result_file.read_text())
    assert (outcome["new_primary"], outcome["followed"], outcome["not_followed"]) == ("spare", ["standby"], ["db-gone"])
    assert outcome["changes"] == [] and "Connection refused" in outcome["problems"]["db-gone"]
    assert outcome["next_steps"] == ["Make db-gone follow spare once it answers again (role pg_failover, entry point "
                                     "follow, pg_failover_followers=[db-gone]): it did not answer (refused)"]
    assert streams_from(cluster, STANDBY, spare)


PLAYBOOK = """\
- name: The follow entry point of pg_failover, as RB-P1-003 runs it after the promotion
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Make the other standbys follow the new primary
      ansible.builtin.include_role:
        name: akig.runbooks.pg_failover
        tasks_from: follow
      vars:
        pg_failover_new_primary: spare
        pg_failover_followers: [standby, db-gone]
        pg_failover_follow_timeout_s: 20

    - name: Hand the result to the test
      ansible.builtin.copy:
        dest: "{{ result_file }}"
        content: "{{ pg_failover_follow_result | to_json }}"
        mode: "0600"
      changed_when: false  # the test's own bookkeeping: the recap counts the role's changes only
"""


def run_follow_role(ansible: Ansible, workdir: Path, spare: Node) -> "tuple[subprocess.Popen[str], Path]":
    """The follow entry point against an inventory shaped like the collection's (akig_address, akig_pg_port ...)."""
    inventory = workdir / "inventory.yml"
    inventory.write_text(textwrap.dedent("""\
        all:
          vars:
            akig_environment: lab
            akig_address: "{{ ansible_host | default(inventory_hostname) }}"
            akig_pg_superuser: postgres
            akig_pg_superuser_password: "{{ lookup('ansible.builtin.env', '%s') }}"
            akig_pg_replication_user: replicator
          hosts:
            standby: {ansible_host: %s, akig_pg_port: %d, akig_pg_slot_name: akig_test_follower}
            spare: {ansible_host: %s, akig_pg_port: %d}
            db-gone: {ansible_host: 127.0.0.1, akig_pg_port: 1}
        """) % (PASSWORD_ENV, STANDBY.host, STANDBY.port, spare.host, spare.port))
    playbook = workdir / "follow.yml"
    playbook.write_text(PLAYBOOK)
    result_file = workdir / "follow-result.json"
    return ansible.start_playbook(playbook, {"result_file": str(result_file)}, inventory=str(inventory)), result_file
