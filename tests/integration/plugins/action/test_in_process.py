# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller-side modules run in Ansible's task worker (plugins/plugin_utils/in_process.py), and the same way
as a module: the same answers, errors, check mode and masking either way.

Every test runs ``ansible localhost -m <module>`` twice against real services, in-process (the default on the
controller with the Python running Ansible) and as a module (``-e akig_runbooks_in_process=false``), and compares:
pg_cluster_info and pg_promote against the PostgreSQL test cluster of tests/support/pg_cluster.py, http_health
against a small HTTP server of the test. The password reaches the modules through an environment lookup; no output
(``-vvv`` included) may contain it.
"""

from __future__ import annotations

import http.server
import re
import threading
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
from ansible_collections.akig.runbooks.tests.support import ansible as support_ansible
from ansible_collections.akig.runbooks.tests.support.ansible import Run
from ansible_collections.akig.runbooks.tests.support.pg_cluster import PRIMARY, SPARE, STANDBY, PgCluster

PASSWORD_ENV = "AKIG_TEST_PG_PASSWORD"
MODULE_PATH = ("-e", "akig_runbooks_in_process=false")
# what differs between two reads of the same state: timings and the way it ran
VOLATILE = {"in_process", "seconds", "elapsed_s", "latency_ms", "duration_s", "read_at", "lag_seconds", "now",
            "current_lsn", "receive_lsn", "replay_lsn", "current_lsn_bytes", "receive_lsn_bytes", "replay_lsn_bytes",
            "replay_timestamp", "connections", "summary", "postmaster_start_time", "slots", "replicas", "wal_receiver", "lag_bytes"}


def stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: stable(item) for key, item in value.items() if key not in VOLATILE}
    if isinstance(value, list):
        return [stable(item) for item in value]
    return value


class Ansible(support_ansible.Ansible):
    def __init__(self, workdir: Path, password: str) -> None:
        super().__init__(workdir, [password], env={PASSWORD_ENV: password})
        self.vars_file = workdir / "pg-vars.yml"
        self.vars_file.write_text("pg_password: \"{{ lookup('ansible.builtin.env', '%s') }}\"\n" % PASSWORD_ENV)

    def both(self, module: str, args: Dict[str, Any], *flags: str) -> tuple[Run, Run]:
        """The same task in-process and as a module, started together."""
        procs = [self.start_adhoc(module, args, "-e", "@%s" % self.vars_file, *flags, *extra)
                 for extra in ((), MODULE_PATH)]
        return self.finish(procs[0]), self.finish(procs[1])


@pytest.fixture
def ansible(tmp_path: Path, cluster: PgCluster) -> Ansible:
    return Ansible(tmp_path, cluster.password)


def nodes_args() -> Dict[str, Any]:
    return dict(nodes=[dict(name="db-1", host=PRIMARY.host, port=PRIMARY.port),
                       dict(name="db-2", host=STANDBY.host, port=STANDBY.port)],
                login_password="{{ pg_password }}", fail_on_error=True)


def test_cluster_info_answers_the_same_in_process_and_as_a_module(ansible: Ansible, cluster: PgCluster) -> None:
    inside, module = ansible.both("akig.runbooks.pg_cluster_info", nodes_args(), "-vvv")
    assert inside.rc == 0 and module.rc == 0, inside.stdout + module.stdout + module.stderr
    assert inside.result["in_process"] is True and "in_process" not in module.result
    assert stable(inside.result) == stable(module.result)
    assert inside.result["nodes"]["db-1"]["accepts_writes"] is True
    assert inside.result["nodes"]["db-2"]["role"] == "standby"
    # the password is an option marked no_log: masked in the invocation either way
    for run in (inside, module):
        assert run.result["invocation"]["module_args"]["login_password"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"


def test_bad_input_fails_with_the_same_message_in_process_and_as_a_module(ansible: Ansible) -> None:
    cases = [
        ("akig.runbooks.pg_cluster_info", dict(nodes_args(), bogus=1)),
        ("akig.runbooks.pg_cluster_info", dict(nodes_args(), nodes=[])),
        ("akig.runbooks.pg_cluster_info", dict(nodes_args(), connect_timeout="soon")),
        ("akig.runbooks.pg_promote", dict(login_host=SPARE.host, login_port=SPARE.port, reference_lsn="0/0")),
        ("akig.runbooks.incident_lock", dict(environment="lab", state="present")),
    ]
    runs = [ansible.both(module, args) for module, args in cases]
    for (module, _args), (inside, outside) in zip(cases, runs):
        assert inside.rc != 0 and outside.rc != 0, module
        assert inside.result["msg"] == outside.result["msg"], (module, inside.result["msg"], outside.result["msg"])
        assert inside.result["in_process"] is True and inside.status == outside.status == "FAILED!"


def test_promote_check_mode_in_process_changes_nothing(ansible: Ansible, cluster: PgCluster) -> None:
    spare = cluster.fresh_spare()
    args = dict(login_host=spare.host, login_port=spare.port, login_password="{{ pg_password }}", wait_seconds=20)
    inside, module = ansible.both("akig.runbooks.pg_promote", args, "--check")
    assert inside.rc == 0 and module.rc == 0, inside.stdout + module.stdout
    assert inside.result["in_process"] is True
    # the same plan both ways; the spare's replay LSN may move between the two runs (its primary's background
    # WAL: a checkpoint, autovacuum), so the LSNs are compared by shape only
    assert inside.result["changed"] is True
    assert _lsn_masked(inside.result["actions"]) == _lsn_masked(module.result["actions"])
    assert cluster.scalar(spare, "SELECT pg_is_in_recovery()") is True


def _lsn_masked(actions: list) -> list:
    return [re.sub(r"\b[0-9A-F]+/[0-9A-F]+\b", "<lsn>", line) for line in actions]


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        body = b'{"status":"ok","database":"up"}'
        self.send_response(200 if self.path == "/api/health" else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        del args


@pytest.fixture
def health_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d" % server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_http_health_runs_as_a_module_under_another_python(tmp_path: Path, health_url: str) -> None:
    """Another interpreter than the one running Ansible: the module runs the usual way, with that interpreter."""
    ansible = support_ansible.Ansible(tmp_path)
    args = dict(urls=[health_url + "/api/health", health_url + "/down"], timeout=2)
    inside = ansible.adhoc("akig.runbooks.http_health", args)
    other = ansible.adhoc("akig.runbooks.http_health", args, "-e", "ansible_python_interpreter=/usr/bin/python3")
    assert inside.rc == 0 and other.rc == 0, inside.stdout + other.stdout + other.stderr
    assert inside.result["in_process"] is True and "in_process" not in other.result
    assert stable(inside.result) == stable(other.result)
    assert [endpoint["ok"] for endpoint in inside.result["endpoints"]] == [True, False]
