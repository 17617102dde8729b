# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""plugins/module_utils/procfs.py: processes from /proc and runuser, on a fake /proc tree and on this process.

The fake tree (a directory standing in for /proc) gives parents, states, command lines and working
directories that a test cannot otherwise arrange without starting processes.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils import pg_fence, pm2, procfs


def _pid_max() -> int:
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text().strip())
    except OSError:
        return 4194304


NO_SUCH_PID = _pid_max() + 1  # above pid_max: no process can have it


@pytest.fixture()
def fake_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A /proc with: 1 init; 100 a postmaster in tmp/data with children 101 (comm with ') ') and 102 (zombie);
    103 a grandchild under 101; 200 unrelated; 300 whose stat cannot be read; 'self' and a non-pid entry."""
    root = tmp_path / "proc"
    data = tmp_path / "data"
    data.mkdir()
    entries: Dict[int, tuple] = {
        1: ("init", "S", 0, b"/sbin/init\0"),
        100: ("postgres", "S", 1, b"/usr/lib/postgresql/15/bin/postgres\0-D\0" + str(data).encode() + b"\0"),
        101: ("odd) name (x", "R", 100, b"postgres: walsender\0"),
        102: ("postgres", "Z", 100, b""),
        103: ("postgres", "S", 101, b"postgres: child\0"),
        200: ("bash", "S", 1, b"-bash\0"),
    }
    for pid, (comm, state, ppid, cmdline) in entries.items():
        folder = root / str(pid)
        folder.mkdir(parents=True)
        (folder / "stat").write_text("%d (%s) %s %d 1 1 0 -1\n" % (pid, comm, state, ppid))
        (folder / "comm").write_text(comm + "\n")
        (folder / "cmdline").write_bytes(cmdline)
    (root / "100" / "cwd").symlink_to(data)
    (root / "300").mkdir()
    (root / "300" / "stat").mkdir()  # reading it fails with an OSError that is not "no such file"
    (root / "self").mkdir()
    (root / "sys").mkdir()
    monkeypatch.setattr(procfs, "PROC", str(root))
    return tmp_path


def test_descendants_children_first(fake_proc: Path) -> None:
    assert procfs.descendants(100) == [101, 102, 103]
    assert procfs.descendants(103) == []
    assert set(procfs.descendants(1)) == {100, 101, 102, 103, 200}


def test_states_and_liveness(fake_proc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert procfs.proc_state(100) == "S"
    assert procfs.proc_state(101) == "R"  # the command name may contain ') '
    assert procfs.proc_state(102) == "Z" and procfs.alive(102) is False  # a zombie is dead
    assert procfs.alive(100) is True
    assert procfs.proc_state(99999) is None and procfs.alive(99999) is False
    # an unreadable stat falls back to kill(pid, 0): "?" when the pid exists
    monkeypatch.setattr(procfs, "pid_exists", lambda pid: pid == 300)
    assert procfs.proc_state(300) == "?" and procfs.alive(300) is True


def test_parent_argv_cwd_and_comm(fake_proc: Path) -> None:
    data = str((fake_proc / "data").resolve())
    assert procfs.process_parent_and_argv(100) == (1, ("/usr/lib/postgresql/15/bin/postgres", "-D", data))
    assert procfs.process_parent_and_argv(102) == (100, ())
    assert procfs.process_parent_and_argv(99999) is None
    assert procfs.process_argv(200) == ("-bash",)
    assert procfs.process_cwd(100) == data and procfs.process_cwd(101) is None
    assert procfs.process_comm(101) == "odd) name (x" and procfs.process_comm(99999) is None


def test_pg_fence_recognises_the_server_by_its_directory(fake_proc: Path) -> None:
    data = str(fake_proc / "data")
    assert pg_fence.is_server_of(100, data) is True
    assert pg_fence.is_server_of(100, str(fake_proc)) is False
    assert pg_fence.is_server_of(101, "/elsewhere") is False  # no cwd: its comm is not postgres
    assert pg_fence.is_server_of(103, "/elsewhere") is True  # no cwd, comm postgres
    assert pg_fence.is_server_of(99999, "/elsewhere") is True  # cannot tell: trust postmaster.pid


def test_the_real_proc_knows_this_process() -> None:
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc on this host: the fake tree above covers the parsing")  # pragma: no cover
    me = os.getpid()
    assert procfs.pid_exists(me) and procfs.alive(me)
    assert procfs.proc_state(me) in ("R", "S")
    parent, argv = procfs.process_parent_and_argv(me) or (None, ())
    assert parent == os.getppid() and argv and os.path.basename(sys.executable).startswith("python")
    assert procfs.process_cwd(me) == os.path.realpath(os.getcwd())


def test_a_pid_above_pid_max_does_not_exist() -> None:
    assert procfs.pid_exists(NO_SUCH_PID) is False
    assert procfs.proc_state(NO_SUCH_PID) is None


def _executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_runuser_from_the_candidates_then_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _executable(tmp_path / "runuser")
    monkeypatch.setattr(procfs, "RUNUSER_CANDIDATES", (str(tmp_path / "absent"), str(tmp_path), str(first)))
    assert procfs.find_runuser() == str(first)
    assert procfs.runuser_prefix("postgres") == [str(first), "-u", "postgres", "--"]

    on_path = tmp_path / "bin"
    on_path.mkdir()
    second = _executable(on_path / "runuser")
    monkeypatch.setattr(procfs, "RUNUSER_CANDIDATES", ())
    monkeypatch.setenv("PATH", str(on_path))
    assert procfs.find_runuser() == str(second)

    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert procfs.find_runuser() is None and procfs.runuser_prefix("postgres") is None


def test_pm2_refuses_another_user_without_runuser(monkeypatch: pytest.MonkeyPatch) -> None:
    import pwd

    other: Optional[str] = next((entry.pw_name for entry in pwd.getpwall() if entry.pw_uid not in (0, os.geteuid())), None)
    if other is None:
        pytest.skip("no second user on this host")  # pragma: no cover
    monkeypatch.setattr(procfs, "RUNUSER_CANDIDATES", ())
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pm2.Pm2Error, match="runuser \\(util-linux\\) not found, so pm2 cannot be run as user"):
        pm2.resolve_identity(other, euid=0)
