# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run akig.runbooks.pg_fence, and pg_promote's wait for the old primary's shutdown checkpoint, through ansible.

Like ``test_pg_modules.py`` (whose :class:`Ansible` runner this file reuses), every test drives
``ansible localhost -m akig.runbooks.<module>`` as a subprocess against the real PostgreSQL 15
cluster of ``tests/support/pg_cluster.py``; pg_fence runs on "the database host", which is this
machine, as root, so it runs pg_ctl and pg_controldata as ``postgres`` through runuser.

Which node plays which part:

* the planned failover stops and fences the real primary (127.0.0.91:55491) and promotes the
  spare (127.0.0.93:55493) once it has received the primary's shutdown checkpoint; afterwards
  :func:`restore_primary` undoes the fencing and starts the primary again (still timeline 1, it
  was never promoted or rewound), waits for the standby to stream again, and the spare is cloned
  again, so the other pg tests of the session find the cluster as ``pg_cluster`` describes it;
* the other pg_fence tests make the spare "primary-like" first (promoted to a primary of its own
  with ``pg_promote()``), then stop, crash, hang or fence it, and clone it again afterwards.

Only processes of the test cluster are signalled (the pid in the spare's postmaster.pid).
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils import pg_fence as fence_utils
from ansible_collections.akig.runbooks.tests.support import pg_cluster
from ansible_collections.akig.runbooks.tests.support.ansible import PYTHON, VENV_BIN, Run
from ansible_collections.akig.runbooks.tests.support.pg_cluster import OS_USER, PRIMARY, SPARE, STANDBY, Node, PgCluster

from .test_pg_modules import WRONG_PASSWORD, Ansible, lsn_bytes

LSN_RE = re.compile(r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")
DEAD_CONNINFO = "host=127.0.0.91 port=55499 user=replicator passfile=/nonexistent/.pgpass application_name=spare"
AUTO_CONF = "postgresql.auto.conf"
SIGNAL = "standby.signal"


@pytest.fixture
def ansible(tmp_path: Path, cluster: PgCluster) -> Ansible:
    # pg_basebackup -R wrote the replication password into the standbys' primary_conninfo: pg_fence shows
    # those lines (actions, diff) and must mask it
    return Ansible(tmp_path, cluster.password, [cluster.password, cluster.replication_password, WRONG_PASSWORD])


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def start_fence(ansible: Ansible, args: Dict[str, Any], *flags: str) -> subprocess.Popen:
    return ansible.start([
        str(VENV_BIN / "ansible"), "localhost",
        "-m", "akig.runbooks.pg_fence",
        "-a", json.dumps(args),
        "-e", "ansible_python_interpreter=%s" % PYTHON,
        *flags,
    ])


def fence(ansible: Ansible, args: Dict[str, Any], *flags: str) -> Run:
    return ansible.finish(start_fence(ansible, args, *flags))


def fence_args(cluster: PgCluster, node: Node, **extra: Any) -> Dict[str, Any]:
    args: Dict[str, Any] = {"data_dir": str(cluster.data(node)), "bin_dir": str(pg_cluster.PG_BIN)}
    args.update(extra)
    return args


def postmaster_pid(cluster: PgCluster, node: Node) -> Optional[int]:
    try:
        first = (cluster.data(node) / "postmaster.pid").read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return None
    return int(first) if first.isdigit() else None


def process_state(pid: int) -> Optional[str]:
    """State letter of ``pid`` (Z for a zombie), None when it no longer exists."""
    try:
        text = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()[0]


def process_alive(pid: int) -> bool:
    return process_state(pid) not in (None, "Z", "X")


def children_of(pid: int) -> List[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path("/proc/%s/stat" % entry).read_text()
            except OSError:
                continue
            if int(text[text.rfind(")") + 2:].split()[1]) == pid:
                found.append(int(entry))
    return found


def wait_until(predicate: Any, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(0.05)


def files_of(cluster: PgCluster, node: Node) -> Dict[str, Any]:
    """Content and mtime of postgresql.auto.conf and standby.signal (None when absent)."""
    snapshot: Dict[str, Any] = {}
    for name in (AUTO_CONF, SIGNAL):
        path = cluster.data(node) / name
        snapshot[name] = (path.read_text(), path.stat().st_mtime_ns) if path.exists() else None
    return snapshot


def auto_conf_settings(cluster: PgCluster, node: Node) -> List[str]:
    return [line for line in (cluster.data(node) / AUTO_CONF).read_text().splitlines()
            if line.startswith(("primary_conninfo", "primary_slot_name"))]


def in_recovery(cluster: PgCluster, node: Node) -> bool:
    return bool(cluster.scalar(node, "SELECT pg_is_in_recovery()"))


def primary_like_spare(cluster: PgCluster) -> Node:
    """The spare, promoted to a primary of its own (timeline 2, no standbys): an old primary to stop and fence."""
    spare = cluster.fresh_spare()
    cluster.execute(spare, "SELECT pg_promote(true, 30)")
    cluster.wait_for(lambda: not in_recovery(cluster, spare), "the spare to leave recovery")
    cluster.execute(spare, "INSERT INTO akig_test_writes (payload) VALUES ('written on the primary-like spare')")
    return spare


def reset_spare(cluster: PgCluster) -> None:
    """Clone the spare again, whatever the test left: killed, stopped, hung or fenced."""
    pid = postmaster_pid(cluster, SPARE)
    if pid is not None and process_state(pid) == "T":
        os.kill(pid, signal.SIGCONT)
    if pid is not None and not process_alive(pid):
        # killed: PgCluster.stop would fail on the stale pid file; the zombie may not be reaped yet
        (cluster.data(SPARE) / "postmaster.pid").unlink()
    cluster.clone(SPARE)


def restore_primary(cluster: PgCluster, auto_conf: str) -> None:
    """Undo the fencing of the primary and start it again as the primary (timeline 1) the other tests expect."""
    data = cluster.data(PRIMARY)
    if cluster.running(PRIMARY) and in_recovery(cluster, PRIMARY):
        cluster.stop(PRIMARY)
    (data / SIGNAL).unlink(missing_ok=True)
    (data / AUTO_CONF).write_text(auto_conf)
    os.chmod(data / AUTO_CONF, 0o600)
    os.chown(data / AUTO_CONF, *owner_ids())
    if not cluster.running(PRIMARY):
        cluster.start(PRIMARY)
    cluster.wait_for(lambda: not in_recovery(cluster, PRIMARY), "the primary to accept writes again")
    assert cluster.scalar(PRIMARY, "SELECT timeline_id FROM pg_control_checkpoint()") == 1
    cluster.wait_streaming(STANDBY)


def owner_ids() -> tuple:
    import pwd

    entry = pwd.getpwnam(OS_USER)
    return entry.pw_uid, entry.pw_gid


def assert_fence_files(cluster: PgCluster, node: Node, conninfo: str, slot: Optional[str] = None) -> None:
    signal_file = cluster.data(node) / SIGNAL
    info = signal_file.stat()
    assert signal_file.read_text() == ""
    assert (info.st_uid, info.st_gid) == owner_ids() and stat.S_IMODE(info.st_mode) == 0o600
    conf = cluster.data(node) / AUTO_CONF
    info = conf.stat()
    assert (info.st_uid, info.st_gid) == owner_ids() and stat.S_IMODE(info.st_mode) == 0o600
    expected = ["primary_conninfo = '%s'" % conninfo.replace("'", "''")]
    if slot:
        expected.append("primary_slot_name = '%s'" % slot)
    assert auto_conf_settings(cluster, node) == expected


# --------------------------------------------------------------------------
# Planned failover: fast stop of the primary, promotion after the catch-up
# --------------------------------------------------------------------------


def test_planned_failover_stops_fences_and_promotes_without_loss(ansible: Ansible, cluster: PgCluster) -> None:
    spare = cluster.fresh_spare()
    saved_auto_conf = (cluster.data(PRIMARY) / AUTO_CONF).read_text()
    conninfo = "host=%s port=%d user=replicator passfile=/var/lib/postgresql/.pgpass application_name='old primary'" % (
        spare.host, spare.port)
    try:
        # written just before the stop, not waited for: the shutdown must stream it and the promotion wait for it
        cluster.write_rows(500, 300)
        rows_on_primary = cluster.scalar(PRIMARY, "SELECT count(*) FROM akig_test_writes")
        old_pid = postmaster_pid(cluster, PRIMARY)

        started = time.monotonic()
        stopped = fence(ansible, fence_args(cluster, PRIMARY, primary_conninfo=conninfo,
                                            primary_slot_name="akig_test_old_primary"))
        fence_wall = time.monotonic() - started
        assert stopped.rc == 0 and stopped.status == "CHANGED", stopped.stdout + stopped.stderr
        result = stopped.result
        assert (result["was_running"], result["stop_mode"], result["stopped_cleanly"], result["fenced"]) == (
            True, "fast", True, True), result
        assert result["cluster_state"] == "shut down" and result["timeline"] == 1
        assert LSN_RE.match(result["checkpoint_lsn"]), result
        assert "diff" not in result
        assert result["actions"][0].startswith("stopped the server of %s (postmaster pid %d) with a fast shutdown"
                                               % (cluster.data(PRIMARY), old_pid)), result["actions"]
        assert not process_alive(old_pid) and not cluster.running(PRIMARY)
        assert_fence_files(cluster, PRIMARY, conninfo, "akig_test_old_primary")
        checkpoint = result["checkpoint_lsn"]

        started = time.monotonic()
        promoted = ansible.module("pg_promote", spare, {"wait_received_lsn": checkpoint, "catchup_timeout": 10})
        promote_wall = time.monotonic() - started
        assert promoted.rc == 0 and promoted.status == "CHANGED", promoted.stdout + promoted.stderr
        result = promoted.result
        assert lsn_bytes(result["received_lsn"]) > lsn_bytes(checkpoint), result
        assert lsn_bytes(result["lsn_at_promotion"]) > lsn_bytes(checkpoint), result
        assert isinstance(result["catchup_seconds"], float) and 0 <= result["catchup_seconds"] < 10
        assert result["timeline_before"] == 1 and result["timeline_after"] == 2
        assert re.match(r"waited [0-9.]+ s until %s had received past %s " % (re.escape(SPARE.target), checkpoint),
                        result["actions"][0]), result["actions"]
        # nothing the old primary wrote is missing on the new one
        assert cluster.scalar(spare, "SELECT count(*) FROM akig_test_writes") == rows_on_primary
        print("\npg_fence planned stop+fence: %.2f s wall; pg_promote with wait_received_lsn: %.2f s wall"
              % (fence_wall, promote_wall))

        # both again: nothing to do
        before = files_of(cluster, PRIMARY)
        again = fence(ansible, fence_args(cluster, PRIMARY, primary_conninfo=conninfo,
                                          primary_slot_name="akig_test_old_primary"))
        promote_again = ansible.module("pg_promote", spare, {"wait_received_lsn": checkpoint})
        assert again.rc == 0 and again.status == "SUCCESS", again.stdout + again.stderr
        assert (again.result["changed"], again.result["was_running"], again.result["stop_mode"]) == (False, False, None)
        assert (again.result["stopped_cleanly"], again.result["fenced"]) == (True, True)
        assert again.result["checkpoint_lsn"] == checkpoint
        assert files_of(cluster, PRIMARY) == before
        assert promote_again.rc == 0 and promote_again.status == "SUCCESS", promote_again.stdout
        assert promote_again.result["changed"] is False and promote_again.result["catchup_seconds"] == 0.0
        assert promote_again.result["actions"][1] == (
            "did not wait for it to receive past %s: it is no longer a standby" % checkpoint)
    finally:
        restore_primary(cluster, saved_auto_conf)
        cluster.fresh_spare()


# --------------------------------------------------------------------------
# Crash, hang, check mode, restart of a fenced node
# --------------------------------------------------------------------------


def test_crashed_primary_is_fenced_but_not_reported_clean(ansible: Ansible, cluster: PgCluster) -> None:
    spare = primary_like_spare(cluster)
    try:
        pid = postmaster_pid(cluster, spare)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not process_alive(pid), "the killed postmaster to die")
        run = fence(ansible, fence_args(cluster, spare, primary_conninfo=DEAD_CONNINFO, primary_slot_name="spare_slot"))
        assert run.rc == 0 and run.status == "CHANGED", run.stdout + run.stderr
        result = run.result
        assert (result["was_running"], result["stop_mode"], result["stop_seconds"]) == (False, None, None), result
        assert (result["stopped_cleanly"], result["fenced"]) == (False, True)
        assert result["cluster_state"] == "in production" and result["timeline"] == 2
        assert "the server of %s was not running" % cluster.data(spare) in result["actions"]
        assert_fence_files(cluster, spare, DEAD_CONNINFO, "spare_slot")
    finally:
        reset_spare(cluster)


def test_hung_postmaster_is_escalated_to_sigkill(ansible: Ansible, cluster: PgCluster) -> None:
    spare = primary_like_spare(cluster)
    pid = postmaster_pid(cluster, spare)
    assert pid is not None
    children = children_of(pid)
    assert children, "a running postmaster has children"
    try:
        os.kill(pid, signal.SIGSTOP)
        wait_until(lambda: process_state(pid) == "T", "the postmaster to stop")
        started = time.monotonic()
        run = fence(ansible, fence_args(cluster, spare, primary_conninfo=DEAD_CONNINFO, stop_timeout=1))
        elapsed = time.monotonic() - started
        assert run.rc == 0 and run.status == "CHANGED", run.stdout + run.stderr
        result = run.result
        assert result["was_running"] is True and result["stop_mode"] in ("immediate", "kill"), result
        assert result["stop_mode"] == "kill", result["actions"]  # a stopped process acts on no signal but SIGKILL
        assert (result["stopped_cleanly"], result["fenced"]) == (False, True)
        assert result["cluster_state"] == "in production"
        assert result["actions"][0].startswith("the fast shutdown of the server of %s (postmaster pid %d) did not "
                                               "finish within 1 s" % (cluster.data(spare), pid)), result["actions"]
        assert any(action.startswith("the immediate shutdown of") for action in result["actions"])
        assert any(action.startswith("killed the postmaster (pid %d)" % pid) for action in result["actions"])
        assert 3 <= result["stop_seconds"] < 10 and elapsed < 20
        assert not process_alive(pid)
        wait_until(lambda: not any(process_alive(child) for child in children), "the postmaster's children to go")
        assert not cluster.running(spare)
        # without primary_slot_name the slot line pg_basebackup -R wrote is left alone
        assert_fence_files(cluster, spare, DEAD_CONNINFO, SPARE.slot)
    finally:
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)
        reset_spare(cluster)


def test_check_mode_changes_nothing_then_fenced_node_restarts_read_only(ansible: Ansible, cluster: PgCluster) -> None:
    spare = primary_like_spare(cluster)
    try:
        pid = postmaster_pid(cluster, spare)
        before = files_of(cluster, spare)
        assert before[SIGNAL] is None  # the promotion removed it
        conninfo_with_password = DEAD_CONNINFO + " password=CANARY-conninfo-password"
        plan = fence(ansible, fence_args(cluster, spare, primary_conninfo=conninfo_with_password), "--check", "--diff")
        assert plan.rc == 0 and plan.status == "CHANGED", plan.stdout + plan.stderr
        assert "CANARY-conninfo-password" not in plan.stdout + plan.stderr
        assert "contains a password" in plan.stderr
        result = plan.result
        assert (result["changed"], result["was_running"], result["stop_mode"], result["fenced"]) == (
            True, True, None, False), result
        assert result["cluster_state"] == "in production" and result["stopped_cleanly"] is False
        assert result["actions"][0].startswith("would stop the server of %s (postmaster pid %d) with pg_ctl -m fast"
                                               % (cluster.data(spare), pid)), result["actions"]
        assert any(action.startswith("would create %s" % (cluster.data(spare) / SIGNAL)) for action in result["actions"])
        assert any(action.startswith("would set primary_conninfo = 'host=127.0.0.91 port=55499") and "[REDACTED]" in action
                   for action in result["actions"]), result["actions"]
        diff = plan.stdout.split("localhost | CHANGED", 1)[0]
        assert "+# standby.signal: present" in diff and "-# standby.signal: absent" in diff, plan.stdout
        assert "-# server: running" in diff and "+# server: stopped" in diff, plan.stdout
        assert "+primary_conninfo = 'host=127.0.0.91 port=55499" in diff, plan.stdout
        # nothing changed: same postmaster, still a primary, same files to the nanosecond
        assert postmaster_pid(cluster, spare) == pid and process_alive(pid)
        assert not in_recovery(cluster, spare)
        assert files_of(cluster, spare) == before

        fenced = fence(ansible, fence_args(cluster, spare, primary_conninfo=DEAD_CONNINFO, stop_timeout=10))
        assert fenced.rc == 0 and fenced.status == "CHANGED", fenced.stdout + fenced.stderr
        assert (fenced.result["stop_mode"], fenced.result["stopped_cleanly"], fenced.result["timeline"]) == (
            "fast", True, 2), fenced.result
        after_fence = files_of(cluster, spare)
        recheck = fence(ansible, fence_args(cluster, spare, primary_conninfo=DEAD_CONNINFO), "--check")
        assert recheck.rc == 0 and recheck.status == "SUCCESS", recheck.stdout + recheck.stderr
        assert (recheck.result["changed"], recheck.result["fenced"], recheck.result["stopped_cleanly"]) == (
            False, True, True), recheck.result
        assert files_of(cluster, spare) == after_fence

        # whatever restarts it now gets a read-only standby, not a second primary
        cluster.start(spare)
        assert in_recovery(cluster, spare)
        assert cluster.scalar(spare, "SHOW primary_conninfo") == DEAD_CONNINFO
        assert cluster.scalar(spare, "SHOW transaction_read_only") == "on"
        with pytest.raises(Exception, match="read-only transaction"):
            cluster.execute(spare, "INSERT INTO akig_test_writes (payload) VALUES ('must not be written')")

        # state=stopped stops it again (fast), leaves the files alone
        stopped = fence(ansible, fence_args(cluster, spare, state="stopped"))
        assert stopped.rc == 0 and stopped.status == "CHANGED", stopped.stdout + stopped.stderr
        assert (stopped.result["stop_mode"], stopped.result["fenced"], stopped.result["cluster_state"]) == (
            "fast", True, "shut down in recovery"), stopped.result
        assert stopped.result["stopped_cleanly"] is False  # it was a standby: no shutdown checkpoint of a primary
        assert auto_conf_settings(cluster, spare) == ["primary_conninfo = '%s'" % DEAD_CONNINFO,
                                                      "primary_slot_name = '%s'" % SPARE.slot]
    finally:
        reset_spare(cluster)


def test_systemd_stop_and_its_escalation(cluster: PgCluster) -> None:
    """service_manager=systemd, with a stand-in for systemctl (systemd is not PID 1 where the tests run).

    The stand-in answers ``systemctl show`` like systemd for a loaded unit; ``systemctl stop`` either does
    what the unit would (a fast pg_ctl stop as postgres) or hangs past the task's bound.  Everything
    else (runuser, pg_ctl, pg_controldata) really runs.
    """
    calls: List[List[str]] = []

    def runner(behaviour: str) -> Any:
        def run(argv: List[str], **kwargs: Any) -> subprocess.CompletedProcess:
            if "systemctl" in os.path.basename(argv[0]):
                calls.append(argv)
                if argv[1:3] == ["show", "--property=LoadState"]:
                    return subprocess.CompletedProcess(argv, 0, "loaded\n", "")
                assert argv[1:] == ["--no-ask-password", "stop", "postgresql@15-test"], argv
                assert kwargs["timeout"] == 1 + fence_utils.SYSTEMCTL_MARGIN_S
                if behaviour == "hang":
                    raise subprocess.TimeoutExpired(argv, kwargs["timeout"])
                argv = ["runuser", "-u", OS_USER, "--", str(pg_cluster.PG_BIN / "pg_ctl"), "-D",
                        str(cluster.data(SPARE)), "-m", "fast", "-w", "stop"]
            kwargs.pop("check", None)
            return subprocess.run(argv, check=False, **kwargs)
        return run

    params = dict(data_dir=str(cluster.data(SPARE)), bin_dir=str(pg_cluster.PG_BIN), os_user=OS_USER,
                  service_manager="systemd", service_name="postgresql@15-test", stop_timeout=1, state="fenced",
                  primary_conninfo=DEAD_CONNINFO, primary_slot_name=None)
    spare = primary_like_spare(cluster)
    try:
        result = fence_utils.run(params, check_mode=False, runner=runner("stop"))
        assert (result["stop_mode"], result["stopped_cleanly"], result["fenced"]) == ("systemd", True, True), result
        assert result["actions"][0].startswith("stopped the server of %s (postmaster pid " % cluster.data(spare))
        assert "with systemctl stop postgresql@15-test in" in result["actions"][0]
        assert not cluster.running(spare)

        # restarted (as the standby it was fenced into); this time systemctl stop hangs
        cluster.start(spare)
        pid = postmaster_pid(cluster, spare)
        result = fence_utils.run(dict(params, state="stopped"), check_mode=False, runner=runner("hang"))
        assert (result["was_running"], result["stop_mode"], result["stopped_cleanly"]) == (True, "immediate", False)
        assert result["actions"][0] == (
            "systemctl stop postgresql@15-test did not return within 6 s and the server of %s (postmaster pid %d) "
            "still runs; escalating to an immediate shutdown" % (cluster.data(spare), pid)), result["actions"]
        assert result["actions"][1].startswith("stopped the server of %s (postmaster pid %d) with an immediate "
                                               "shutdown" % (cluster.data(spare), pid)), result["actions"]
        assert result["cluster_state"] == "in archive recovery" and not process_alive(pid)
        assert [call[1] for call in calls] == ["show", "--no-ask-password", "show", "--no-ask-password"]
    finally:
        reset_spare(cluster)


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


def test_bad_input_fails_before_changing_anything(ansible: Ansible, cluster: PgCluster, tmp_path: Path) -> None:
    spare = cluster.fresh_spare()
    pid = postmaster_pid(cluster, spare)
    before = files_of(cluster, spare)
    not_a_data_dir = tmp_path / "not-a-data-dir"
    not_a_data_dir.mkdir()
    secret = "CANARY-broken-conninfo-password"
    data = str(cluster.data(spare))
    cases = [
        (dict(data_dir="/nonexistent/pg/data", primary_conninfo=DEAD_CONNINFO),
         "data_dir /nonexistent/pg/data does not exist; give the data directory of the PostgreSQL server to stop"),
        (dict(data_dir=str(not_a_data_dir), primary_conninfo=DEAD_CONNINFO),
         "data_dir %s is not a PostgreSQL data directory (it has no PG_VERSION file)" % not_a_data_dir),
        (dict(data_dir=data, bin_dir=str(tmp_path), primary_conninfo=DEAD_CONNINFO),
         "pg_ctl not found (or not executable) in bin_dir %s; set bin_dir to the directory of the PostgreSQL "
         "server programs of this data directory (PostgreSQL 15" % tmp_path),
        (dict(data_dir=data, os_user="akig-no-such-user", primary_conninfo=DEAD_CONNINFO),
         "os_user 'akig-no-such-user' does not exist on this host; give the OS user the server runs as, the owner "
         "of the data directory (postgres owns %s)" % data),
        (dict(data_dir=data), "state=fenced needs primary_conninfo"),
        (dict(data_dir=data, primary_conninfo="host=x password=%s\nport=5" % secret),
         "primary_conninfo must be one line"),
        (dict(data_dir=data, primary_conninfo=DEAD_CONNINFO, primary_slot_name="old-primary"),
         "primary_slot_name 'old-primary' is not a valid replication slot name"),
        (dict(data_dir=data, primary_conninfo=DEAD_CONNINFO, stop_timeout=0),
         "stop_timeout must be a whole number of seconds, at least 1"),
        (dict(data_dir=data, primary_conninfo=DEAD_CONNINFO, service_manager="systemd"),
         "service_manager=systemd needs service_name"),
        (dict(data_dir=data, primary_conninfo=DEAD_CONNINFO, service_manager="systemd",
              service_name="postgresql@15-main"),
         "systemd unit postgresql@15-main cannot be used"),
    ]
    procs = [start_fence(ansible, fence_args(cluster, spare, **args)) for args, _message in cases]
    runs = [ansible.finish(proc) for proc in procs]
    for (args, message), run in zip(cases, runs):
        assert run.rc != 0 and run.status == "FAILED!", "%s\n%s%s" % (args, run.stdout, run.stderr)
        assert message in run.result["msg"], (args, run.result["msg"])
        assert secret not in run.stdout + run.stderr
        assert run.result.get("changed", False) is False
    assert "[REDACTED]" in runs[5].result["msg"]
    # nothing changed: the same postmaster still runs the standby, the files are untouched
    assert postmaster_pid(cluster, spare) == pid and process_alive(pid)
    assert in_recovery(cluster, spare)
    assert files_of(cluster, spare) == before


# --------------------------------------------------------------------------
# pg_promote: waiting for the old primary's shutdown checkpoint
# --------------------------------------------------------------------------


def test_promote_catchup_timeout_promotes_nothing(ansible: Ansible, cluster: PgCluster) -> None:
    spare = cluster.fresh_spare()
    far = "FF/0"
    runs = [
        ansible.start_module("pg_promote", spare, {"wait_received_lsn": far, "catchup_timeout": 1,
                                                   "poll_interval": 0.2}),
        ansible.start_module("pg_promote", spare, {"wait_received_lsn": far}, "--check"),
        ansible.start_module("pg_promote", spare, {"wait_received_lsn": "0/1000000"}, "--check"),
        ansible.start_module("pg_promote", spare, {"wait_received_lsn": "not-an-lsn"}),
    ]
    timed_out, plan_far, plan_near, bad = [ansible.finish(proc) for proc in runs]

    assert timed_out.rc != 0 and timed_out.status == "FAILED!", timed_out.stdout + timed_out.stderr
    result = timed_out.result
    assert re.fullmatch(
        re.escape(SPARE.target) + r" did not catch up with the old primary within catchup_timeout=1 s: it has received WAL "
        r"up to [0-9A-F]+/[0-9A-F]+ \(replayed [0-9A-F]+/[0-9A-F]+\), [0-9]+ bytes behind FF/0, and must receive past "
        r"it; nothing was promoted\. Check replication "
        r"\(pg_stat_wal_receiver on " + re.escape(SPARE.target) + r", the server logs of both nodes\), then re-run; or re-run "
        r"without wait_received_lsn to promote anyway \(forcing\), losing the WAL it lacks",
        result["msg"],
    ), result["msg"]
    assert result["changed"] is False and result["promoted_at"] is None
    assert 1 <= result["catchup_seconds"] < 3 and LSN_RE.match(result["received_lsn"])
    behind = int(re.search(r"([0-9]+) bytes behind", result["msg"]).group(1))
    assert behind == lsn_bytes(far) - lsn_bytes(re.search(r"up to (\S+) ", result["msg"]).group(1))
    assert in_recovery(cluster, spare)

    assert plan_far.rc == 0 and plan_far.status == "CHANGED", plan_far.stdout + plan_far.stderr
    assert plan_far.result["actions"][0].startswith(
        "wait up to 15 s until " + SPARE.target + " has received past FF/0 and replayed all it received; it has not yet: "
        "it has received WAL up to "), plan_far.result["actions"]
    assert plan_far.result["catchup_seconds"] == 0.0
    assert plan_near.rc == 0 and plan_near.status == "CHANGED", plan_near.stdout + plan_near.stderr
    assert plan_near.result["actions"][0].startswith(
        SPARE.target + " has already received past 0/1000000 (received "), plan_near.result["actions"]
    assert plan_near.result["actions"][1].startswith("promote " + SPARE.target + " (standby on timeline 1")

    assert bad.rc != 0 and bad.status == "FAILED!", bad.stdout + bad.stderr
    assert bad.result["msg"].startswith("wait_received_lsn: 'not-an-lsn' is not a PostgreSQL LSN")
    assert in_recovery(cluster, spare)
