# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A detached waiter that acts on its host the moment a PostgreSQL node accepts writes.

A failover promotes a replica, then points the app at it. In Ansible those are tasks seconds apart (the
promotion's play ends, the app hosts' play starts, each task is a module start), and the app is down all that
time. A module can instead leave a waiter before the promotion: a small detached process on the app host that
asks the promoted node every ``poll_interval`` seconds whether it accepts writes (``pg_is_in_recovery()`` is
false) and, the moment it does, does the repoint (``act``). The runbook's own repoint task still runs later: it
takes the waiter first (:func:`take`) and either finds the work done and reports it, or stops a waiter that has
not acted and does the work itself. Used by ``pgbouncer_admin`` (the pause's waiter resumes PgBouncer on the new
primary) and ``database_url_repoint`` (the waiter rewrites DATABASE_URL and restarts the backend).

The rules that keep two hands off the same files:

* the waiter's state is a JSON file; whoever changes it holds its ``flock``;
* the waiter holds that lock for the whole of its action, so :func:`take` either stops a waiter that has not
  acted (``status`` becomes ``cancelled``; the waiter, woken, sees it and exits) or waits for the action to end
  and returns its outcome;
* the waiter never acts after its deadline (``expired``) and never on another target than the one it was given.

The state file never holds a password or a URL.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import time
from typing import Any, Callable, Dict, Mapping, Optional

__all__ = [
    "alive",
    "launch",
    "read_state",
    "run_when_writable",
    "take",
    "WaiterError",
    "write_state",
]

WAITING = "waiting"
# how often take() looks at the lock of a waiter that is acting
LOCK_POLL_S = 0.05


class WaiterError(Exception):
    """The waiter's state file cannot be used; ``msg`` says what to do."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


def read_state(handle: Any) -> Dict[str, Any]:
    handle.seek(0)
    text = handle.read()
    try:
        state = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


def write_state(handle: Any, state: Mapping[str, Any]) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(state, sort_keys=True))
    handle.flush()
    os.fsync(handle.fileno())


def alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError) as exc:
        return getattr(exc, "errno", None) == errno.EPERM
    return True


def _lock(handle: Any, wait_s: Optional[float], pid: Any) -> bool:
    """Take the state file's lock; after ``wait_s`` seconds (None: no limit) kill the waiter that holds it.
    Returns True when the waiter had to be killed."""
    if wait_s is None:
        fcntl.flock(handle, fcntl.LOCK_EX)
        return False
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            if time.monotonic() >= deadline:
                break
            time.sleep(LOCK_POLL_S)
    # the waiter has acted for longer than its action may take: stop it, its lock goes with it
    if alive(pid):
        try:
            os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
    fcntl.flock(handle, fcntl.LOCK_EX)
    return True


def take(state_file: str, wait_s: Optional[float] = None) -> Optional[Dict[str, Any]]:
    """Stop the waiter of ``state_file`` unless it has acted; return its state (None when there is none).

    A waiter that is acting holds the lock: ``take`` waits for it (at most ``wait_s`` seconds, then kills it:
    ``status`` becomes ``killed``). The state is returned once and its file removed, so a later call finds no
    waiter.
    """
    try:
        handle = open(state_file, "r+", encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise WaiterError("the waiter's state file %s cannot be opened (%s): run the task as its owner"
                          % (state_file, exc.strerror)) from None
    with handle:
        state = read_state(handle)
        killed = _lock(handle, wait_s, state.get("pid"))
        state = read_state(handle)
        if killed and state.get("status") in (WAITING, "acting"):
            state.update(status="killed", ended=time.time())
        if state.get("status") == WAITING:
            if alive(state.get("pid")):
                try:
                    os.kill(int(state["pid"]), signal.SIGTERM)
                except OSError:
                    pass
            state.update(status="cancelled", cancelled=True, ended=time.time())
            # a waiter between its question and the lock reads this through its open file, and exits
            write_state(handle, state)
        # read once: a later command finds no waiter
        os.unlink(state_file)
        return state or None


def writable(conn: Any) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_is_in_recovery()")
        return not cur.fetchone()[0]


def run_when_writable(handle: Any, state: Dict[str, Any], connect: Callable[[], Any], poll_interval: float,
                      errors: tuple, act: Callable[[Dict[str, Any]], Dict[str, Any]]) -> None:
    """The waiter's body: ask ``connect()``'s node every ``poll_interval`` whether it accepts writes until
    ``state['deadline']``; then, under the lock and only if nobody took the waiter meanwhile, ``act(state)``
    and record what it returns (``status`` and details) in the state file. ``errors`` are the driver's errors
    (a node that is down or starting is asked again)."""
    deadline = state["deadline"]
    conn = None
    while time.time() < deadline:
        try:
            if conn is None or conn.closed:
                conn = connect()
                conn.autocommit = True
            if writable(conn):
                break
        except errors:
            if conn is not None:
                conn.close()
            conn = None
        time.sleep(poll_interval)
    else:
        fcntl.flock(handle, fcntl.LOCK_EX)
        current = read_state(handle)
        if current.get("status") == WAITING:
            current.update(status="expired", ended=time.time())
            write_state(handle, current)
        return
    if conn is not None:
        conn.close()
    fcntl.flock(handle, fcntl.LOCK_EX)
    current = read_state(handle)
    if current.get("status") != WAITING or current.get("pid") != os.getpid():
        return  # taken: the runbook's own task (or its way back) has the files now
    state.update(status="acting", acted=True, writable_at=time.time())
    write_state(handle, state)
    try:
        state.update(act(state))
    except Exception as exc:  # pylint: disable=broad-except  # the waiter must record why it stopped
        state.update(status="failed", error="%s: %s" % (type(exc).__name__, exc))
    state["ended"] = time.time()
    state["after_s"] = round(state["ended"] - state["started"], 3)
    write_state(handle, state)


def launch(state_file: str, state: Dict[str, Any], body: Callable[[Any, Dict[str, Any]], None]) -> Dict[str, Any]:
    """Start the detached waiter (double fork, new session, no inherited stdio) that runs ``body(handle, state)``
    with the state file open, and return its first state (``status`` waiting, ``pid``)."""
    state = dict(state, status=WAITING)
    fd = os.open(state_file, os.O_RDWR | os.O_CREAT, 0o600)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the detached child
        try:
            os.close(read_end)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            devnull = os.open(os.devnull, os.O_RDWR)
            for target in (0, 1, 2):
                os.dup2(devnull, target)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            handle = os.fdopen(fd, "r+", encoding="utf-8")
            fcntl.flock(handle, fcntl.LOCK_EX)
            state["pid"] = os.getpid()
            write_state(handle, state)
            fcntl.flock(handle, fcntl.LOCK_UN)
            os.write(write_end, b"%d" % os.getpid())
            os.close(write_end)
            body(handle, state)
        finally:
            os._exit(0)
    os.close(fd)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as reader:
        child = reader.read().decode() or None
    state["pid"] = int(child) if child else None
    state.pop("deadline", None)
    return state
