# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real redis-server for the incident lock tests.

The session fixture ``redis_server`` (exposed by the conftest.py of tests/unit and
tests/integration) starts ``redis-server`` on 127.0.0.1, a free port in 56300-56399, with a
random password and no persistence, and stops it at the end of the session. It yields
``{"host", "port", "password", "client"}``; the password is never printed. The tests that use
it are marked ``process`` (processes.py).
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

REDIS_SERVER = "/usr/bin/redis-server"
PORTS = range(56300, 56400)


def redis_server_binary() -> str:
    found = shutil.which("redis-server") or REDIS_SERVER
    if not os.access(found, os.X_OK):
        pytest.fail(
            "redis-server is not installed (looked on PATH and at %s); the incident lock tests "
            "need a real Redis: install the Debian package redis-server (scripts/setup.sh does)"
            % REDIS_SERVER
        )
    return found


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Start redis-server on 127.0.0.1:<free port in 56300-56399>; stop it at the end."""
    binary = redis_server_binary()
    workdir = tmp_path_factory.mktemp("redis")
    password = secrets.token_hex(16)
    ports = list(PORTS)
    random.shuffle(ports)
    for port in ports:
        if not port_is_free(port):
            continue
        conf = workdir / ("redis-%d.conf" % port)
        conf.write_text(
            "bind 127.0.0.1\nport %d\nsave \"\"\nappendonly no\nrequirepass %s\ndir %s\n"
            "daemonize no\nlogfile %s\n" % (port, password, workdir, workdir / "redis.log")
        )
        conf.chmod(0o600)
        proc = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                client.ping()
                break
            except redis.RedisError:
                time.sleep(0.05)
        else:
            proc.kill()
            proc.wait()
            continue  # lost the port to someone else, or it did not start: try the next one
        try:
            yield {"host": "127.0.0.1", "port": port, "password": password, "client": client}
        finally:
            client.close()
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return
    pytest.fail("could not start redis-server on any free port in 56300-56399 of 127.0.0.1")
