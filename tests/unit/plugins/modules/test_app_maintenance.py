# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""akig.runbooks.app_maintenance on real files and a real HTTP server on loopback: the maintenance file created and
removed, the health gate that keeps it while the app is not healthy (503, refused), check mode, idempotence and the
refusals before anything changes. The lab tests of RB-P1-003's direct repoint run it on the lab's backends."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import socket
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.akig.runbooks.plugins.modules import app_maintenance as module


def run_module(check: bool = False, **args: Any) -> Dict[str, Any]:
    params = dict(args, _ansible_check_mode=check)
    out = io.StringIO()
    with patch_module_args(params), contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        module.main()
    return json.loads(out.getvalue())


class Health:
    """A backend's /api/health that answers the statuses of ``plan`` in turn, then the last one."""

    def __init__(self, plan: List[int]) -> None:
        self.plan, self.seen = list(plan), 0
        health = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                status = health.plan[min(health.seen, len(health.plan) - 1)]
                health.seen += 1
                body = json.dumps({"status": "ok" if status == 200 else "degraded"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/api/health" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def health(plan: List[int]) -> Iterator[Health]:
    server = Health(plan)
    try:
        yield server
    finally:
        server.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_present_creates_the_file_once(tmp_path: Path) -> None:
    flag = tmp_path / "maintenance.flag"
    first = run_module(path=str(flag))
    assert first["changed"] is True and first["maintenance"] is True and flag.exists()
    assert (flag.stat().st_mode & 0o777) == 0o644
    second = run_module(path=str(flag))
    assert second["changed"] is False and second["maintenance"] is True
    assert second["msg"] == "%s exists: the app is already in maintenance mode." % flag


def test_absent_waits_for_the_health_check_then_removes_the_file(tmp_path: Path) -> None:
    flag = tmp_path / "maintenance.flag"
    flag.write_text("")
    with health([503, 503, 200]) as app:
        result = run_module(path=str(flag), state="absent", health_url=app.url, interval=0.01, timeout=10)
        assert app.seen == 3
    assert result["changed"] is True and result["maintenance"] is False and not flag.exists()
    assert result["healthy"] is True and result["status"] == 200 and result["attempts"] == 3
    assert result["msg"].startswith("%s removed: the app writes again (%s answered 200 after 3 request(s), " % (flag, app.url))


def test_an_app_that_never_gets_healthy_keeps_the_file_and_fails(tmp_path: Path) -> None:
    flag = tmp_path / "maintenance.flag"
    flag.write_text("")
    with health([503]) as app:
        result = run_module(path=str(flag), state="absent", health_url=app.url, interval=0.05, timeout=0.3)
    assert result["failed"] is True and result["changed"] is False and flag.exists()
    assert result["maintenance"] is True and result["healthy"] is False and result["status"] == 503
    assert result["attempts"] >= 2
    assert "did not answer 200 within 0.3 s" in result["msg"] and "last: HTTP 503" in result["msg"]
    assert "is kept, so the app goes on refusing writes" in result["msg"]


def test_an_app_that_refuses_connections_keeps_the_file(tmp_path: Path) -> None:
    flag = tmp_path / "maintenance.flag"
    flag.write_text("")
    url = "http://127.0.0.1:%d/api/health" % free_port()
    result = run_module(path=str(flag), state="absent", health_url=url, interval=0.05, timeout=0.3)
    assert result["failed"] is True and flag.exists() and result["status"] is None
    assert "last: HTTP" not in result["msg"] and "refused" in result["msg"].lower()


def test_absent_without_a_health_url_removes_at_once_and_is_idempotent(tmp_path: Path) -> None:
    flag = tmp_path / "maintenance.flag"
    flag.write_text("")
    first = run_module(path=str(flag), state="absent")
    assert first["changed"] is True and not flag.exists() and first["attempts"] == 0 and first["healthy"] is None
    second = run_module(path=str(flag), state="absent", health_url="http://127.0.0.1:9/api/health")
    assert second["changed"] is False and second["attempts"] == 0, "no file: nothing to gate, nothing sent"


def test_check_mode_sends_nothing_and_changes_nothing(tmp_path: Path) -> None:
    flag = tmp_path / "maintenance.flag"
    with health([200]) as app:
        created = run_module(check=True, path=str(flag))
        assert created["changed"] is True and not flag.exists()
        flag.write_text("")
        removed = run_module(check=True, path=str(flag), state="absent", health_url=app.url)
        assert app.seen == 0
    assert removed["changed"] is True and flag.exists()
    assert removed["msg"] == "Would remove %s once %s answers 200 (check mode: nothing sent, nothing removed)." % (flag, app.url)


@pytest.mark.parametrize("args, message", [
    (dict(state="absent", health_url="ftp://app-1/api/health"), "malformed health URL 'ftp://app-1/api/health'"),
    (dict(state="present", health_url="http://app-1:4000/api/health"), "give it with state=absent only"),
    (dict(state="absent", timeout=0), "timeout must be a positive number of seconds, got 0"),
    (dict(state="absent", interval=-1), "interval must be 0 or more seconds, got -1"),
])
def test_bad_input_is_refused_before_anything_changes(tmp_path: Path, args: Dict[str, Any], message: str) -> None:
    flag = tmp_path / "maintenance.flag"
    flag.write_text("")
    result = run_module(path=str(flag), **args)
    assert result["failed"] is True and result["changed"] is False and message in result["msg"]
    assert flag.exists()


def test_a_missing_directory_names_the_setting(tmp_path: Path) -> None:
    result = run_module(path=str(tmp_path / "nowhere" / "maintenance.flag"))
    assert result["failed"] is True and "check akig_maintenance_file" in result["msg"]
    assert not (tmp_path / "nowhere").exists()
