# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""akig.runbooks.http_health against a real threaded HTTP server on 127.0.0.1 (port 0).

The server's endpoints stand in for the AKIG backend: /ok answers {"status": "ok"}, /fail 503,
/delay/<ms> answers after a delay, /flaky fails 3 requests out of every 10, /degraded answers
200 with {"status": "degraded"}, /big a JSON body over 4 KiB, /echo-auth the Authorization header
it got. The module's main() runs in-process with the same argument spec and JSON result as under
ansible; ansible-doc renders its documentation.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.akig.runbooks.plugins.modules import http_health as http_health_module

REPO = Path(__file__).resolve().parents[4]
VENV_BIN = Path(sys.executable).parent
TOKEN = "Bearer CANARY-health-token-91ab"


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits = 0
        self.flaky = 0
        self.lock = threading.Lock()
        self.auth: list = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (the timeout tests) is expected: no traceback on stderr."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)

    @property
    def base(self) -> str:
        return "http://127.0.0.1:%d" % self.server_address[1]


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, format: str, *args: Any) -> None:  # pylint: disable=redefined-builtin  # silence the request log
        return

    def reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not isinstance(body, bytes) else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # pylint: disable=invalid-name  # the name http.server calls
        with self.server.lock:
            self.server.hits += 1
        path = self.path.split("?", 1)[0]
        if path == "/ok":
            self.reply(200, {"status": "ok", "pid": os.getpid()})
        elif path == "/fail":
            self.reply(503, {"status": "down"})
        elif path.startswith("/delay/"):
            time.sleep(int(path.rsplit("/", 1)[1]) / 1000.0)
            self.reply(200, {"status": "ok"})
        elif path == "/flaky":
            with self.server.lock:
                count = self.server.flaky
                self.server.flaky += 1
            self.reply(503 if count % 10 in (2, 5, 8) else 200, {"status": "flaky"})
        elif path == "/degraded":
            self.reply(200, {"status": "degraded", "db": "down"})
        elif path == "/big":
            self.reply(200, {"status": "ok", "items": ["x" * 100] * 100})
        elif path == "/text":
            self.reply(200, b"OK\n")
        elif path == "/echo-auth":
            self.server.auth.append(self.headers.get("Authorization"))
            self.reply(200, {"status": "ok"})
        else:
            self.reply(404, {"status": "not found"})


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_module(check: bool = False, **args: Any) -> Dict[str, Any]:
    params = dict(args, _ansible_check_mode=check)
    out = io.StringIO()
    with patch_module_args(params), contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        http_health_module.main()
    return json.loads(out.getvalue())


def test_latency_percentiles_of_a_slow_endpoint(server: Server) -> None:
    result = run_module(urls=[server.base + "/delay/40", server.base + "/ok"], samples=6)
    slow, fast = result["endpoints"]
    assert result["healthy"] is True and result["changed"] is False and result["breached"] is False
    assert slow["samples"] == 6 and slow["statuses"] == {"200": 6} and slow["ok"] is True
    assert 40 <= slow["latency_ms"]["p50"] <= slow["latency_ms"]["p95"] <= slow["latency_ms"]["max"] < 1000
    assert fast["latency_ms"]["max"] < slow["latency_ms"]["p50"]
    assert result["latency_ms"]["max"] == slow["latency_ms"]["max"]
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["p95"] <= result["latency_ms"]["max"]
    assert fast["json"]["status"] == "ok" and fast["status"] == 200 and fast["error"] is None
    assert result["summary"][0].startswith("OK   %s/delay/40 (%s/delay/40): 6/6 ok, 200 x6; p50 " % (server.base, server.base))


def test_error_rate_of_a_flaky_endpoint_breaches_the_threshold(server: Server) -> None:
    server.flaky = 0
    result = run_module(urls=[{"url": server.base + "/flaky", "name": "flaky backend"}, server.base + "/ok"], samples=10)
    flaky, good = result["endpoints"]
    assert flaky["name"] == "flaky backend"
    assert flaky["statuses"] == {"200": 7, "503": 3} and flaky["errors"] == 3 and flaky["error_rate"] == 0.3
    assert flaky["ok"] is False and flaky["reason"] == "status 503 not in [200]"
    assert good["error_rate"] == 0.0 and good["ok"] is True
    assert result["error_rate"] == 0.15 and result["errors"] == 3 and result["requests"] == 20
    assert result["breached"] is True and result["healthy"] is False
    assert result["summary"][0].startswith("FAIL flaky backend (%s/flaky): 7/10 ok, 200 x7, 503 x3; p50 " % server.base)
    assert result["summary"][0].endswith("; last problem: status 503 not in [200]")
    relaxed = run_module(urls=[server.base + "/flaky", server.base + "/ok"], samples=10, error_rate_threshold=0.2)
    assert relaxed["breached"] is False and relaxed["healthy"] is False


def test_timeouts_count_as_errors_and_are_retried(server: Server) -> None:
    before = server.hits
    result = run_module(urls=[server.base + "/delay/1500"], samples=2, timeout=0.2, retries=1)
    slow = result["endpoints"][0]
    assert slow["statuses"] == {"timeout": 2} and slow["errors"] == 2 and slow["error_rate"] == 1.0
    assert slow["error"] == "timed out" and slow["reason"] == "timed out after 0.2 s"
    assert slow["status"] is None and slow["latency_ms"] == {"p50": None, "p95": None, "max": None}
    assert result["healthy"] is False and result["breached"] is True
    assert server.hits - before == 4, "2 samples x (1 try + 1 retry)"


def test_connection_refused_is_an_error(server: Server) -> None:
    result = run_module(urls=["http://127.0.0.1:%d/api/health" % closed_port()], retries=2)
    down = result["endpoints"][0]
    assert down["statuses"] == {"error": 1} and down["ok"] is False
    assert "refused" in down["error"].lower() and len(down["error"]) <= 200


def test_expect_json_and_expect_status(server: Server) -> None:
    result = run_module(urls=[
        {"url": server.base + "/degraded", "expect_json": {"status": "ok"}},
        {"url": server.base + "/ok", "expect_json": {"status": "ok"}},
        {"url": server.base + "/fail", "expect_status": [503]},
        {"url": server.base + "/text", "expect_json": {"status": "ok"}},
        {"url": server.base + "/big"},
    ])
    degraded, good, expected_503, text, big = result["endpoints"]
    assert degraded["ok"] is False and degraded["status"] == 200
    assert degraded["reason"] == "JSON status='degraded', expected 'ok'" and degraded["json"] == {"status": "degraded", "db": "down"}
    assert good["ok"] is True
    assert expected_503["ok"] is True and expected_503["status"] == 503
    assert text["ok"] is False and text["json"] is None and text["reason"] == "body is not a JSON object (expect_json)"
    assert big["ok"] is True and isinstance(big["json"], str) and len(big["json"]) == 4096
    assert result["healthy"] is False and result["error_rate"] == 0.4


@pytest.mark.parametrize("bad", ["htp:/x", "http://", "ftp://host/x", "http://host:99999/x", "127.0.0.1:4000/api/health", "http://ho st/"])
def test_malformed_url_fails_before_any_request(server: Server, bad: str) -> None:
    before = server.hits
    result = run_module(urls=[server.base + "/ok", bad], samples=3)
    assert result["failed"] is True
    assert result["msg"] == "malformed health URL '%s': expected http(s)://host[:port]/path" % bad
    assert server.hits == before


def test_concurrency_probes_slow_endpoints_in_parallel(server: Server) -> None:
    begin = time.monotonic()
    result = run_module(urls=[server.base + "/delay/500?n=%d" % index for index in range(8)], timeout=3)
    elapsed = time.monotonic() - begin
    assert result["healthy"] is True and len(result["endpoints"]) == 8
    assert all(entry["latency_ms"]["max"] >= 500 for entry in result["endpoints"])
    assert elapsed < 2.0, "8 endpoints of 0.5 s took %.2f s: they were not probed in parallel" % elapsed


def test_fail_on_unhealthy_fails_with_the_result(server: Server) -> None:
    result = run_module(urls=[{"url": server.base + "/fail", "name": "app-2"}, server.base + "/ok"], samples=2, fail_on_unhealthy=True)
    assert result["failed"] is True
    assert result["msg"] == ("1 of 2 health endpoints unhealthy: app-2 (2/2 failed, last: status 503 not in [200]); "
                             "error rate 50.0 % is above the threshold of 10.0 %")
    assert len(result["endpoints"]) == 2 and result["healthy"] is False
    assert run_module(urls=[server.base + "/ok"], fail_on_unhealthy=True)["healthy"] is True


def test_headers_reach_the_server_but_not_the_output(server: Server) -> None:
    server.auth.clear()
    result = run_module(urls=[{"url": server.base + "/echo-auth", "headers": {"Authorization": TOKEN}}], check=True)
    assert server.auth == [TOKEN], "check mode probes too"
    assert result["healthy"] is True and result["changed"] is False
    assert TOKEN not in json.dumps(result)
    shared = run_module(urls=[server.base + "/echo-auth"], headers={"Authorization": TOKEN})
    assert server.auth[-1] == TOKEN and TOKEN not in json.dumps(shared)


@pytest.mark.process  # ansible-doc
def test_ansible_doc_renders(tmp_path: Path) -> None:
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".collections"), ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"),
               ANSIBLE_HOME=str(tmp_path / "ansible-home"))
    proc = subprocess.run([str(VENV_BIN / "ansible-doc"), "akig.runbooks.http_health"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    for text in ("akig.runbooks.http_health", "error_rate_threshold", "expect_json", "breached", "AKIG Engineering Team"):
        assert text in proc.stdout
