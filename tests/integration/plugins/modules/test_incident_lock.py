# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the real akig.runbooks.incident_lock module (and role) through ansible.

Every test drives ``ansible localhost -m akig.runbooks.incident_lock`` or
``ansible-playbook`` as a subprocess against the shared redis-server of tests/support
(127.0.0.1, a free port in 56300-56399, a random password, no persistence) or
against lock files in ``tmp_path``.  The runs (tests/support/ansible.py) use their own
empty ansible.cfg, so the repository's ansible.cfg (callbacks, inventory) is not involved,
and the venv's Python as module interpreter.  The Redis password reaches the module
through an environment lookup, the way a vault variable would; no output of any
run may contain it.

Independent runs are started together to keep the file under ~25 s.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils.incident_lock import Runtime, acquire
from ansible_collections.akig.runbooks.plugins.module_utils.incident_lock_redis import RedisLockStore
from ansible_collections.akig.runbooks.tests.support import ansible as support_ansible
from ansible_collections.akig.runbooks.tests.support.ansible import Run

VENV_BIN = Path(sys.executable).parent
PYTHON = Path(sys.executable)
PASSWORD_ENV = "AKIG_TEST_LOCK_PW"
HOSTNAME = socket.gethostname()


# --------------------------------------------------------------------------
# Running ansible
# --------------------------------------------------------------------------


class Ansible(support_ansible.Ansible):
    """The shared runner (tests/support/ansible.py); the Redis password reaches the module through ``PASSWORD_ENV``."""

    def __init__(self, workdir: Path, secrets_to_hide: List[str]) -> None:
        super().__init__(workdir, secrets_to_hide, env={PASSWORD_ENV: secrets_to_hide[0] if secrets_to_hide else ""})

    def start_module(self, args: Dict[str, Any], *flags: str, env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
        return self.start_adhoc("akig.runbooks.incident_lock", args, *flags, env=env)

    def module(self, args: Dict[str, Any], *flags: str) -> Run:
        return self.finish(self.start_module(args, *flags))

    def modules(self, *calls: Any) -> List[Run]:
        """Run several ad-hoc calls at once; each call is (args, flag, ...)."""
        procs = [self.start_module(call[0], *call[1:]) for call in calls]
        return [self.finish(proc) for proc in procs]


@pytest.fixture
def ansible(tmp_path: Path, redis_server: Dict[str, Any]) -> Ansible:
    return Ansible(tmp_path, [redis_server["password"]])


@pytest.fixture
def redis_args(redis_server: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "backend": "redis",
        "redis_host": redis_server["host"],
        "redis_port": redis_server["port"],
        "redis_password": "{{ lookup('ansible.builtin.env', '%s') }}" % PASSWORD_ENV,
    }


@pytest.fixture
def env() -> str:
    return "mod-" + uuid.uuid4().hex[:12]


def lock_key(env: str) -> str:
    return "akig:incident-lock:%s" % env


# --------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------


def test_ansible_doc_renders_the_module_and_the_role(ansible: Ansible) -> None:
    module = ansible.start([str(VENV_BIN / "ansible-doc"), "akig.runbooks.incident_lock"])
    role = ansible.start([str(VENV_BIN / "ansible-doc"), "-t", "role", "akig.runbooks.incident_lock"])
    module_doc, role_doc = ansible.finish(module), ansible.finish(role)
    assert module_doc.rc == 0, module_doc.stderr
    assert "ERROR" not in module_doc.stderr and "WARNING" not in module_doc.stderr, module_doc.stderr
    text = module_doc.stdout
    assert "Takes, refreshes, releases, breaks or inspects the" in " ".join(text.split())
    for option in ("state", "environment", "runbook", "incident_id", "backend", "redis_host", "redis_port",
                   "redis_password", "redis_db", "lock_dir", "ttl", "wait", "poll_interval", "token",
                   "break_stale", "force_break"):
        assert re.search(r"^\s*[-=] %s\b" % option, text, re.MULTILINE), option
    returns = text.split("RETURN VALUES", 1)[1]
    for returned in ("token", "holder", "held_by", "broken", "stale", "actions", "waited_s", "would_block"):
        assert re.search(r"^\s*- %s\b" % returned, returns, re.MULTILINE), returned
    assert role_doc.rc == 0, role_doc.stderr
    assert re.search(r"ENTRY POINT: \W*acquire\W", role_doc.stdout), role_doc.stdout
    assert re.search(r"ENTRY POINT: \W*release\W", role_doc.stdout), role_doc.stdout
    assert "incident_lock_runbook" in role_doc.stdout


# --------------------------------------------------------------------------
# The module through ansible
# --------------------------------------------------------------------------


def test_acquire_then_another_invocation_is_refused_then_break_and_release(
    ansible: Ansible, redis_args: Dict[str, Any], redis_server: Dict[str, Any], env: str
) -> None:
    base = dict(redis_args, environment=env)
    first = ansible.module(dict(base, runbook="rb-p1-003-db-failover", incident_id="INC-2026-042"))
    assert first.rc == 0, first.stdout + first.stderr
    assert first.status == "CHANGED"
    token = first.result["token"]
    assert isinstance(token, int) and token >= 1
    holder = first.result["holder"]
    # the holder is the ansible process of that run, on this controller
    assert holder["pid"] == first.pid
    assert holder["controller_host"] == HOSTNAME
    assert json.loads(redis_server["client"].get(lock_key(env)))["token"] == token

    # that ansible process has exited: the next run sees a stale lock and refuses to break it
    second = ansible.module(dict(base, runbook="rb-p2-001-redis-sessions"))
    assert second.rc != 0 and second.status == "FAILED!"
    msg = second.result["msg"]
    assert msg.startswith(
        "incident lock for environment '%s' looks stale: it is held by runbook rb-p1-003-db-failover "
        "(incident INC-2026-042, host %s, pid %d, since %s, expires in "
        % (env, HOSTNAME, first.pid, holder["started_at"])
    ), msg
    assert "re-run with break_stale=true" in msg
    assert second.result["held_by"]["token"] == token

    broke = ansible.module(dict(base, runbook="rb-p2-001-redis-sessions", break_stale=True))
    assert broke.rc == 0 and broke.status == "CHANGED", broke.stdout
    assert broke.result["broken"]["token"] == token
    assert broke.result["token"] > token

    released = ansible.module(dict(base, state="released", token=broke.result["token"]))
    assert released.rc == 0 and released.status == "CHANGED", released.stdout
    assert released.result["holder"]["runbook"] == "rb-p2-001-redis-sessions"
    assert redis_server["client"].get(lock_key(env)) is None


def test_a_live_holder_blocks_and_check_mode_only_reports(
    ansible: Ansible, redis_args: Dict[str, Any], redis_server: Dict[str, Any], env: str
) -> None:
    # this pytest process holds the lock: a live process on this controller
    store = RedisLockStore.connect(redis_server["host"], redis_server["port"], redis_server["password"])
    held = acquire(store, env, "rb-p1-003-db-failover", incident_id="INC-2026-042", ttl=300,
                   runtime=Runtime(hostname=HOSTNAME, pid=os.getpid()))
    token = held["token"]
    free_env = env + "-free"
    base = dict(redis_args, environment=env, runbook="rb-p2-001-redis-sessions")
    blocked, checked, check_free = ansible.modules(
        (dict(base, wait=1, poll_interval=0.2),),
        (dict(base, wait=600), "--check"),
        (dict(base, environment=free_env), "--check", "--diff"),
    )

    assert blocked.rc != 0 and blocked.status == "FAILED!"
    msg = blocked.result["msg"]
    assert msg.startswith(
        "incident lock for environment '%s' is held by runbook rb-p1-003-db-failover (incident INC-2026-042, "
        "host %s, pid %d, since %s, expires in " % (env, HOSTNAME, os.getpid(), held["holder"]["started_at"]))
    assert "so runbook rb-p2-001-redis-sessions cannot acquire it after waiting 1 s; wait for it to finish" in msg
    assert "re-run with break_stale=true (stale locks only)" in msg
    assert blocked.result["held_by"]["token"] == token
    assert 0.9 <= blocked.result["waited_s"] < 5

    assert checked.rc == 0, checked.stdout + checked.stderr
    assert checked.result["changed"] is False
    assert checked.result["would_block"] is True
    assert checked.result["held_by"]["token"] == token
    assert "a real run would wait up to 600 s for it and then fail" in checked.result["actions"][0]

    assert check_free.rc == 0 and check_free.status == "CHANGED"
    assert check_free.result["token"] is None
    assert check_free.result["actions"][0].startswith("Would acquire the incident lock for environment '%s'" % free_env)
    assert redis_server["client"].get(lock_key(free_env)) is None

    # nobody touched the live lock
    assert json.loads(redis_server["client"].get(lock_key(env)))["token"] == token
    redis_server["client"].delete(lock_key(env))


def test_bad_input_is_refused_clearly_and_the_password_never_shows(
    ansible: Ansible, redis_args: Dict[str, Any], redis_server: Dict[str, Any], env: str
) -> None:
    wrong_password = "WRONG-" + secrets.token_hex(8)
    ansible.secrets.append(wrong_password)
    base = dict(redis_args, environment=env)
    cases = [
        (dict(base), "state is acquired but all of the following are missing: runbook"),
        (dict(base, runbook="rb-x", ttl=0),
         "invalid ttl=0 for the incident lock for environment '%s': it must be a number of seconds > 0" % env),
        (dict(base, runbook="rb-x", backend="nosql"), "value of backend must be one of: redis, file, got: nosql"),
    ]
    wrong_pw_args = dict(base, runbook="rb-x", redis_password="{{ lookup('ansible.builtin.env', 'WRONG_PW') }}")
    procs = [ansible.start_module(args) for args, _msg in cases]
    procs.append(ansible.start_module(wrong_pw_args, "-vvv", env={"WRONG_PW": wrong_password}))
    runs = [ansible.finish(proc) for proc in procs]  # finish() asserts no password in any output
    for (args, expected), run in zip(cases, runs):
        assert run.rc != 0, args
        assert expected in run.result["msg"], (args, run.result["msg"])
    auth = runs[-1]
    assert auth.rc != 0
    assert auth.result["msg"].startswith(
        "cannot read the incident lock for environment '%s' (redis key akig:incident-lock:%s on 127.0.0.1:%d db 0): "
        "Redis did not answer as expected (AuthenticationError" % (env, env, redis_server["port"]))
    # the invocation shown at -vvv masks the password option
    assert '"redis_password": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"' in auth.stdout
    assert redis_server["client"].get(lock_key(env)) is None


@pytest.mark.parametrize(
    "args, expected",
    [
        ({"environment": "production", "runbook": "rb-x"},
         "backend is redis but all of the following are missing: redis_host"),
        ({"environment": "production", "state": "released", "backend": "file"},
         "state is released but all of the following are missing: token"),
        ({"environment": "production", "state": "refreshed", "backend": "file"},
         "state is refreshed but all of the following are missing: token"),
        ({"environment": "production", "runbook": "rb-x", "backend": "file", "force_break": True},
         "force_break=true only applies to state=absent"),
        ({"environment": "prod uction", "runbook": "rb-x", "backend": "file"},
         "environment 'prod uction' is not a valid incident lock name"),
        ({"environment": "production", "runbook": "rb-x", "backend": "file", "wait": -1},
         "invalid wait=-1 for the incident lock for environment 'production'"),
        ({"environment": "production", "runbook": "rb-x", "backend": "file", "ttl": "soon"},
         "argument 'ttl' is of type str and we were unable to convert to int"),
    ],
)
def test_argument_checks_of_the_module_in_process(
    args: Dict[str, Any], expected: str, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    """The same argument spec and checks, without an ansible run each (they never reach a store)."""
    from ansible.module_utils.testing import patch_module_args
    from ansible_collections.akig.runbooks.plugins.modules import incident_lock as module

    with patch_module_args(dict(args, lock_dir=str(tmp_path))), pytest.raises(SystemExit) as exited:
        module.main()
    assert exited.value.code == 1
    result = json.loads(capsys.readouterr().out)
    assert result["failed"] is True
    assert expected in result["msg"], result["msg"]
    assert not list(tmp_path.iterdir())  # nothing was created


def test_file_backend_through_the_module(ansible: Ansible, tmp_path: Path, env: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    proc = ansible.start(
        [str(VENV_BIN / "ansible"), "localhost", "-m", "akig.runbooks.incident_lock",
         "-a", json.dumps({"backend": "file", "environment": env, "runbook": "rb-p3-001-slow-queries", "ttl": 60}),
         "-e", "ansible_python_interpreter=%s" % PYTHON],
        env={"HOME": str(home)},
    )
    run = ansible.finish(proc)
    assert run.rc == 0 and run.status == "CHANGED", run.stdout + run.stderr
    # the default lock_dir is ~/.cache/akig-runbooks/locks of the user running the controller
    lock_dir = home / ".cache" / "akig-runbooks" / "locks"
    assert run.result["lock"] == "lock file %s/%s.lock" % (lock_dir, env)
    stored = json.loads((lock_dir / ("%s.lock" % env)).read_text())
    assert stored["token"] == run.result["token"] and stored["pid"] == run.pid
    assert stored["runbook"] == "rb-p3-001-slow-queries" and stored["ttl"] == 60
    # that run's ansible process is gone, so the lock it left behind is stale here
    from ansible_collections.akig.runbooks.plugins.module_utils.incident_lock import inspect
    from ansible_collections.akig.runbooks.plugins.module_utils.incident_lock_file import FileLockStore

    seen = inspect(FileLockStore(str(lock_dir)), env, runtime=Runtime(hostname=HOSTNAME, pid=os.getpid()))
    assert seen["stale"] == "its process (pid %d) no longer runs on %s" % (run.pid, HOSTNAME)


# --------------------------------------------------------------------------
# The role, in real playbooks
# --------------------------------------------------------------------------

PLAYBOOK = textwrap.dedent(
    """\
    - name: Run a destructive runbook under the incident lock
      hosts: localhost
      gather_facts: false
      vars:
        incident_lock_environment: "{{ lock_env }}"
        incident_lock_runbook: "{{ lock_runbook }}"
        incident_lock_incident_id: INC-2026-777
        incident_lock_redis_host: 127.0.0.1
        incident_lock_redis_port: "{{ lock_port }}"
        incident_lock_redis_password: "{{ lookup('ansible.builtin.env', '%s') }}"
      tasks:
        - name: Take the incident lock
          ansible.builtin.include_role:
            name: akig.runbooks.incident_lock
            tasks_from: acquire

        - name: Act on the environment until the test says stop
          ansible.builtin.wait_for:
            path: "{{ signal_file }}"
            timeout: 60
          when: signal_file | length > 0

        - name: Release the incident lock
          ansible.builtin.include_role:
            name: akig.runbooks.incident_lock
            tasks_from: release
    """ % PASSWORD_ENV
)


def test_role_holds_the_lock_for_the_whole_run(
    ansible: Ansible, redis_server: Dict[str, Any], tmp_path: Path, env: str
) -> None:
    playbook = tmp_path / "runbook.yml"
    playbook.write_text(PLAYBOOK)
    signal = tmp_path / "stop"
    client = redis_server["client"]

    def play(runbook: str, signal_file: str, *flags: str) -> subprocess.Popen:
        extra = json.dumps({"lock_env": env, "lock_runbook": runbook, "lock_port": redis_server["port"],
                            "signal_file": signal_file, "ansible_python_interpreter": str(PYTHON)})
        return ansible.start([str(VENV_BIN / "ansible-playbook"), str(playbook), "-e", extra, *flags])

    holder = play("rb-p1-003-db-failover", str(signal))
    try:
        deadline = time.monotonic() + 30
        while client.get(lock_key(env)) is None:
            assert holder.poll() is None, holder.communicate()
            assert time.monotonic() < deadline, "the holder playbook never took the lock"
            time.sleep(0.1)
        stored = json.loads(client.get(lock_key(env)))
        assert stored["pid"] == holder.pid and stored["runbook"] == "rb-p1-003-db-failover"

        rival = play("rb-p2-001-redis-sessions", "")
        rival_check = play("rb-p2-001-redis-sessions", "", "--check")
        rival_run, rival_check_run = ansible.finish(rival), ansible.finish(rival_check)
    finally:
        signal.write_text("stop")
        holder_run = ansible.finish(holder)

    # the rival run stops, and its error names the live holder although the task is no_log
    assert rival_run.rc == 2, rival_run.stdout
    assert ("incident lock for environment '%s' is held by runbook rb-p1-003-db-failover "
            "(incident INC-2026-777, host %s, pid %d" % (env, HOSTNAME, holder.pid)) in rival_run.stdout
    assert "Stop this run because it could not take the incident lock" in rival_run.stdout
    # in check mode the rival reports and does not fail
    assert rival_check_run.rc == 0, rival_check_run.stdout
    assert "a real run would wait up to 0 s for it and then fail" in rival_check_run.stdout
    # the holder ran to the end and released its lock
    assert holder_run.rc == 0, holder_run.stdout + holder_run.stderr
    assert re.search(r"Released the incident lock for environment '%s' held by runbook rb-p1-003-db-failover"
                     % re.escape(env), holder_run.stdout)
    assert client.get(lock_key(env)) is None
