# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which tests start a process: the ``process`` marker, applied and enforced.

tests/unit holds tests that start no process, so that scripts/test.sh can run them in parallel
(pytest-xdist); a test there that starts one (the PostgreSQL test cluster, redis-server, pm2, node,
ansible or ansible-playbook, any subprocess) is marked ``process`` and runs in its own lane.
Whole files of such tests live in tests/integration instead.

* :func:`mark_items` marks the tests that use a fixture of :data:`PROCESS_FIXTURES` (shared fixtures
  of tests/support that start a server).
* :class:`ProcessRules` (with ``guard``) records every process a test starts (the Python calls that start one are
  wrapped while the plugin is registered) and fails a test that is not marked ``process`` but
  started one, naming the programs (never their arguments, which may hold secrets).
"""

from __future__ import annotations

import functools
import multiprocessing.util
import os
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MARKER = "process"

_SUPPORT = "ansible_collections.akig.runbooks.tests.support."
# (module, fixture) of the tests/support fixtures that start a server
PROCESS_FIXTURES: frozenset[tuple[str, str]] = frozenset({
    (_SUPPORT + "pg_cluster", "cluster"),           # PostgreSQL on the fixed addresses 127.0.0.91-93
    (_SUPPORT + "redis_server", "redis_server"),    # redis-server on a free port
})

_started: list[str] = []
_wrapped: list[tuple[Any, str, Any]] = []


def _program(argv: Any) -> str:
    """The program's name only: arguments may hold secrets."""
    if isinstance(argv, (str, bytes, os.PathLike)):
        first: Any = argv
    elif isinstance(argv, Sequence) and argv:
        first = argv[0]
    else:
        return "?"
    name = os.fsdecode(first).split()[0] if os.fsdecode(first).strip() else "?"
    return Path(name).name


def _wrap(owner: Any, name: str, describe: Callable[..., str]) -> None:
    original = getattr(owner, name, None)
    if original is None:
        return

    @functools.wraps(original)
    def recording(*args: Any, **kwargs: Any) -> Any:
        _started.append(describe(*args, **kwargs))
        return original(*args, **kwargs)

    setattr(owner, name, recording)
    _wrapped.append((owner, name, original))


def watch() -> None:
    """Record the processes started from now on (idempotent)."""
    if _wrapped:
        return
    _wrap(subprocess.Popen, "_execute_child", lambda _self, args, *_a, **_k: _program(args))
    _wrap(multiprocessing.util, "spawnv_passfds", lambda path, *_a, **_k: _program([path]))
    _wrap(os, "posix_spawn", lambda path, *_a, **_k: _program([path]))
    _wrap(os, "posix_spawnp", lambda path, *_a, **_k: _program([path]))
    _wrap(os, "system", lambda command, *_a, **_k: _program(command))
    _wrap(os, "fork", lambda *_a, **_k: "fork()")
    _wrap(os, "forkpty", lambda *_a, **_k: "forkpty()")


def unwatch() -> None:
    while _wrapped:
        owner, name, original = _wrapped.pop()
        setattr(owner, name, original)


def started_since(mark: int) -> list[str]:
    return _started[mark:]


def count() -> int:
    return len(_started)


def process_fixtures(item: pytest.Item) -> list[tuple[str, str]]:
    """The fixtures of :data:`PROCESS_FIXTURES` a test uses (the definitions in effect, not mere names:
    a test file's own fixture of the same name is not one of them)."""
    info = getattr(item, "_fixtureinfo", None)
    found = []
    for name in getattr(item, "fixturenames", ()):
        definitions = info.name2fixturedefs.get(name) if info is not None else None
        if definitions:
            func = getattr(definitions[-1], "func", None)
            key = (getattr(func, "__module__", ""), getattr(func, "__name__", ""))
            if key in PROCESS_FIXTURES:
                found.append(key)
    return found


def mark_items(items: Iterable[pytest.Item]) -> None:
    """Mark the users of process fixtures ``process``."""
    for item in items:
        if process_fixtures(item):
            item.add_marker(MARKER)


def _summary(programs: list[str]) -> str:
    counts: dict[str, int] = {}
    for program in programs:
        counts[program] = counts.get(program, 0) + 1
    return ", ".join(name if n == 1 else "%s (x%d)" % (name, n) for name, n in counts.items())


class ProcessRules:
    """pytest plugin for the tests under ``root``: ``process`` marks and, with ``guard``, the guard."""

    def __init__(self, root: Path, guard: bool) -> None:
        self.root = root.resolve()
        self.guard = guard
        if guard:
            watch()

    def _mine(self, item: pytest.Item) -> bool:
        return Path(str(item.path)).resolve().is_relative_to(self.root)

    def _guarded(self, item: pytest.Item) -> bool:
        return self.guard and item.get_closest_marker(MARKER) is None and self._mine(item)

    def _check(self, item: pytest.Item, mark: int, phase: str) -> None:
        programs = started_since(mark)
        if programs:
            where = self.root.relative_to(REPO_ROOT) if self.root.is_relative_to(REPO_ROOT) else self.root
            pytest.fail(
                "%s started %d process(es) in %s: %s. %s holds only tests that start no process: mark the test "
                "@pytest.mark.%s (scripts/test.sh runs those in their own lane), use a fixture of tests/support that "
                "starts the server, or move the file to tests/integration"
                % (item.nodeid, len(programs), phase, _summary(programs), where, MARKER),
                pytrace=False,
            )

    @pytest.hookimpl(tryfirst=True)  # before -m selects on the marks
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        mark_items(item for item in items if self._mine(item))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        item.stash[_SETUP_MARK] = count()
        return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        result = yield
        if self._guarded(item):
            self._check(item, item.stash.get(_SETUP_MARK, count()), "setup and call")
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Iterator[None]:
        mark = count()
        result = yield
        if self._guarded(item):
            self._check(item, mark, "teardown")
        return result


_SETUP_MARK = pytest.StashKey[int]()


def configure(config: pytest.Config, root: Path, guard: bool) -> None:
    """For a conftest.py's ``pytest_configure``: the rules above for the tests under ``root`` (its directory)."""
    name = "akig-process-rules:%s" % root
    if not config.pluginmanager.has_plugin(name):
        config.pluginmanager.register(ProcessRules(root, guard), name)
