# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""akig.runbooks.app_probe against a real threaded HTTP server on 127.0.0.1 (port 0) that answers the two routes
of the AKIG backend the module uses, with the backend's contract: POST /api/login {email, password} -> 200
{token} or 401; POST /api/health/write-probe {probe} with "Authorization: Bearer <token>" -> 201 {writes}, 401 for
an unknown token, or 503 while the server is told the database is down. The real backend is exercised by the lab
tests of RB-P1-003 (tests/lab/test_rb_p1_003.py counts the probe's row on the new primary). The module's main()
runs in-process with the same argument spec and JSON result as under ansible.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.akig.runbooks.plugins.modules import app_probe

USER, PASSWORD = "probe@akig.example", "CANARY-probe-password-5e1d"


class App(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.requests: List[str] = []
        self.tokens: List[str] = []
        self.writes: Dict[str, int] = {}
        self.db_down_for = 0  # write requests answered 503 before the database "comes back"

    @property
    def base(self) -> str:
        return "http://127.0.0.1:%d" % self.server_address[1]


class Handler(BaseHTTPRequestHandler):
    server: App

    def log_message(self, format: str, *args: Any) -> None:  # pylint: disable=redefined-builtin  # silence the request log
        return

    def reply(self, status: int, body: Dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # pylint: disable=invalid-name  # the name http.server calls
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        with self.server.lock:
            self.server.requests.append(self.path)
            if self.path == "/api/login":
                if body.get("email") == USER and body.get("password") == PASSWORD:
                    token = "tok-%d" % (len(self.server.tokens) + 1)
                    self.server.tokens.append(token)
                    return self.reply(200, {"token": token})
                return self.reply(401, {"error": "invalid credentials"})
            if self.path == "/api/health/write-probe":
                auth = self.headers.get("Authorization", "")
                if not auth.startswith("Bearer ") or auth[7:] not in self.server.tokens:
                    return self.reply(401, {"error": "invalid token"})
                if self.server.db_down_for > 0:
                    self.server.db_down_for -= 1
                    return self.reply(503, {"error": "database unavailable"})
                name = body["probe"]
                self.server.writes[name] = self.server.writes.get(name, 0) + 1
                return self.reply(201, {"probe": name, "writes": self.server.writes[name]})
        return self.reply(404, {"error": "not found"})


@pytest.fixture(name="app")
def app_fixture() -> Iterator[App]:
    srv = App()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def run_module(check: bool = False, **args: Any) -> Dict[str, Any]:
    params = dict(args, _ansible_check_mode=check)
    out = io.StringIO()
    with patch_module_args(params), contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        app_probe.main()
    return json.loads(out.getvalue())


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_login_returns_a_token_and_changes_nothing(app: App) -> None:
    result = run_module(url=app.base, mode="login", user=USER, password=PASSWORD)
    assert result["ok"] is True and result["changed"] is False and result["status"] == 200
    assert result["token"] == "tok-1" and result["attempts"] == 1 and result["login_attempts"] == 1
    assert app.requests == ["/api/login"] and app.writes == {}
    assert PASSWORD not in json.dumps(result)


def test_write_with_a_token_sends_one_request(app: App) -> None:
    token = run_module(url=app.base, mode="login", user=USER, password=PASSWORD)["token"]
    app.requests.clear()
    result = run_module(url=app.base, token=token, user=USER, password=PASSWORD, probe="oncall-lab")
    assert result["changed"] is True and result["ok"] is True and result["status"] == 201
    assert result["writes"] == 1 and result["probe"] == "oncall-lab" and result["logged_in"] is False
    assert app.requests == ["/api/health/write-probe"] and app.writes == {"oncall-lab": 1}
    assert result["at"].endswith("Z") and token not in json.dumps(result) and PASSWORD not in json.dumps(result)


def test_write_without_a_token_logs_in_first(app: App) -> None:
    result = run_module(url=app.base + "/", user=USER, password=PASSWORD)
    assert result["ok"] is True and result["logged_in"] is True and result["login_attempts"] == 1
    assert app.requests == ["/api/login", "/api/health/write-probe"] and app.writes == {"oncall": 1}


def test_a_refused_token_is_replaced_by_one_fresh_login(app: App) -> None:
    result = run_module(url=app.base, token="expired-token", user=USER, password=PASSWORD, retries=5, delay=0)
    assert result["ok"] is True and result["logged_in"] is True and result["attempts"] == 2
    assert app.requests == ["/api/health/write-probe", "/api/login", "/api/health/write-probe"]
    assert "expired-token" not in json.dumps(result)


def test_the_write_is_retried_until_the_database_answers(app: App) -> None:
    app.db_down_for = 3
    result = run_module(url=app.base, user=USER, password=PASSWORD, retries=5, delay=0.01)
    assert result["ok"] is True and result["attempts"] == 4 and app.writes == {"oncall": 1}


def test_a_write_that_never_succeeds_fails_with_what_it_saw(app: App) -> None:
    app.db_down_for = 10
    result = run_module(url=app.base, user=USER, password=PASSWORD, retries=2, delay=0.01)
    assert result["failed"] is True and result["ok"] is False and result["attempts"] == 3 and result["status"] == 503
    assert result["msg"] == ("no write through %s/api/health/write-probe after 3 attempt(s): HTTP 503; the app cannot "
                             "write to the database yet" % app.base)
    assert app.writes == {}


def test_bad_credentials_fail_the_login_and_the_write_without_writing(app: App) -> None:
    login = run_module(url=app.base, mode="login", user=USER, password="wrong-password")
    assert login["failed"] is True and login["token"] == "" and login["status"] == 401
    assert login["msg"].startswith("the probe user could not log in through %s/api/login after 1 attempt(s): HTTP 401;" % app.base)
    assert "wrong-password" not in json.dumps(login)
    write = run_module(url=app.base, user=USER, password="wrong-password", retries=1, delay=0)
    assert write["failed"] is True and write["logged_in"] is True and write["login_attempts"] == 2
    assert write["msg"] == "no write through %s: the probe user could not log in after 2 attempt(s): HTTP 401" % app.base
    assert app.writes == {} and "/api/health/write-probe" not in app.requests


def test_a_backend_that_does_not_answer_is_named() -> None:
    result = run_module(url="http://127.0.0.1:%d" % closed_port(), mode="login", user=USER, password=PASSWORD)
    assert result["failed"] is True and result["status"] is None and "refused" in result["msg"].lower()


@pytest.mark.parametrize("args, message", [
    (dict(url="127.0.0.1:4000"), "malformed backend URL '127.0.0.1:4000': expected http(s)://host[:port], for example akig_backend_url"),
    (dict(url="http://"), "malformed backend URL 'http://': expected http(s)://host[:port], for example akig_backend_url"),
    (dict(mode="login", password=PASSWORD), "user and password are required to log in (mode=login): give the on-call probe user "
                                            "(akig_probe_user, akig_probe_password)"),
    (dict(user=USER), "user and password are required to log in (mode=write without a token): give the on-call probe user "
                      "(akig_probe_user, akig_probe_password)"),
    (dict(user=USER, password=PASSWORD, retries=-1), "retries must be 0 or more, got -1"),
    (dict(user=USER, password=PASSWORD, timeout=0), "timeout must be a positive number of seconds, got 0.0"),
])
def test_bad_input_fails_before_any_request(app: App, args: Dict[str, Any], message: str) -> None:
    result = run_module(**dict(dict(url=app.base), **args))
    assert result["failed"] is True and result["msg"] == message
    assert app.requests == []


def test_check_mode_sends_nothing(app: App) -> None:
    login = run_module(check=True, url=app.base, mode="login", user=USER, password=PASSWORD)
    write = run_module(check=True, url=app.base, user=USER, password=PASSWORD)
    assert login["changed"] is False and login["token"] == "" and login["ok"] is None
    assert write["changed"] is False and write["ok"] is None and write["msg"] == "check mode: nothing sent to %s" % app.base
    assert app.requests == []
