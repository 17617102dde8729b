# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Processes on this host, read from Linux ``/proc``, and running a program as another user.

Shared by the modules that look at or act on processes: ``pg_fence`` (is the postmaster alive,
which processes descend from it), ``pm2`` (does the daemon run, run pm2 as its user) and
``incident_lock`` (which ``ansible-playbook`` process holds the lock). Without ``/proc`` (another
OS, a restricted container) the helpers fall back to ``kill(pid, 0)`` or answer "unknown" as each
documents; none raises for a process that is gone.
"""

from __future__ import annotations

import os
import shutil
from typing import Dict, List, Optional, Tuple

__all__ = [
    "RUNUSER_CANDIDATES",
    "alive",
    "descendants",
    "find_runuser",
    "pid_exists",
    "proc_state",
    "process_argv",
    "process_comm",
    "process_cwd",
    "process_parent_and_argv",
    "runuser_prefix",
]

RUNUSER_CANDIDATES = ("/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser", "/bin/runuser")
PROC = "/proc"


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_runuser() -> Optional[str]:
    """Path of ``runuser`` (util-linux): the usual places first, then PATH; None when it is missing."""
    return next((path for path in RUNUSER_CANDIDATES if _executable(path)), None) or shutil.which("runuser")


def runuser_prefix(user: str) -> Optional[List[str]]:
    """The argv prefix that runs a command as ``user`` (``runuser -u USER --``); None without runuser."""
    runuser = find_runuser()
    return [runuser, "-u", user, "--"] if runuser else None


def pid_exists(pid: int) -> bool:
    """Whether a process with this pid exists on this host (zombies count), by ``kill(pid, 0)``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it just belongs to another user
    return True


def _stat_fields(stat: str) -> List[str]:
    """The fields of a ``/proc/PID/stat`` line after the command name (state, ppid, ...).

    The command name (field 2, in parentheses) may itself contain spaces and parentheses, so the
    fields start after the last ``)``.
    """
    return stat[stat.rfind(")") + 2:].split()


def _read(pid: int, name: str) -> str:
    with open("%s/%d/%s" % (PROC, pid, name), encoding="utf-8", errors="replace") as handle:
        return handle.read()


def proc_state(pid: int) -> Optional[str]:
    """The state letter of process ``pid`` (R, S, D, T, Z ...), or None when there is no such process.

    Without a readable ``/proc`` it answers ``?`` for a process that exists.
    """
    try:
        stat = _read(pid, "stat")
    except FileNotFoundError:
        return None
    except OSError:
        stat = ""
    if stat:
        fields = _stat_fields(stat)
        return fields[0] if fields else "?"
    return "?" if pid_exists(pid) else None


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is dead: it only waits for its parent to reap it)."""
    return proc_state(pid) not in (None, "Z", "X")


def process_argv(pid: int) -> Optional[Tuple[str, ...]]:
    """The command line of ``pid`` (empty for a kernel thread or a zombie), or None when unreadable."""
    try:
        with open("%s/%d/cmdline" % (PROC, pid), "rb") as handle:
            cmdline = handle.read()
    except OSError:
        return None
    return tuple(part.decode("utf-8", "replace") for part in cmdline.split(b"\0") if part)


def process_parent_and_argv(pid: int) -> Optional[Tuple[int, Tuple[str, ...]]]:
    """(parent pid, argv) of ``pid``, or None when ``/proc`` does not tell."""
    try:
        fields = _stat_fields(_read(pid, "stat"))
        ppid = int(fields[1])
    except (OSError, IndexError, ValueError):
        return None
    argv = process_argv(pid)
    if argv is None:
        return None
    return ppid, argv


def process_cwd(pid: int) -> Optional[str]:
    """The working directory of ``pid`` (links resolved), or None when it cannot be read."""
    try:
        return os.path.realpath(os.readlink("%s/%d/cwd" % (PROC, pid)))
    except OSError:
        return None


def process_comm(pid: int) -> Optional[str]:
    """The command name of ``pid`` (``/proc/PID/comm``), or None when it cannot be read."""
    try:
        return _read(pid, "comm").strip()
    except OSError:
        return None


def descendants(pid: int) -> List[int]:
    """Pids of all descendants of ``pid`` (children first, each generation by pid), from ``/proc``; [] without it."""
    parents: Dict[int, List[int]] = {}
    try:
        entries = os.listdir(PROC)
    except OSError:
        return []
    for child in sorted(int(entry) for entry in entries if entry.isdigit()):
        try:
            ppid = int(_stat_fields(_read(child, "stat"))[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(child)
    found: List[int] = []
    queue = [pid]
    while queue:
        for child in parents.get(queue.pop(0), []):
            if child not in found:
                found.append(child)
                queue.append(child)
    return found
