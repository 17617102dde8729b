# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for plugins/module_utils/incident_lock.py against a real Redis and real files.

No store is mocked: the session fixture ``redis_server`` (tests/support/redis_server.py)
starts its own ``redis-server`` on 127.0.0.1 (a free port in 56300-56399, a random
password, no persistence) and stops it at the end (the tests that use it are marked
``process``); the file backend works in ``tmp_path``.  Only the clock,
the pid-liveness check, the hostname and the holder pid are injected.

Needs ``/work/main/.collections`` (the directory holding
``ansible_collections/akig/runbooks``) on ``sys.path``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import secrets
import socket
import subprocess
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils import incident_lock as il
from ansible_collections.akig.runbooks.plugins.module_utils.incident_lock import LockError, Runtime
from ansible_collections.akig.runbooks.plugins.module_utils.incident_lock_file import FileLockStore
from ansible_collections.akig.runbooks.plugins.module_utils.incident_lock_redis import RedisLockStore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

T0 = datetime(2026, 11, 27, 14, 23, 0, tzinfo=timezone.utc)
HOST = "ctl-test"
OTHER_HOST = "ctl-other"
HOLDER_PID = 4242


# --------------------------------------------------------------------------
# Injected world
# --------------------------------------------------------------------------


class FakeTime:
    """A clock and a monotonic counter that only move when ``sleep`` is called."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start
        self.mono = 1000.0
        self.sleeps: List[float] = []

    def clock(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


def runtime(
    pid: Optional[int] = HOLDER_PID,
    hostname: str = HOST,
    dead: tuple = (),
    fake: Optional[FakeTime] = None,
) -> Runtime:
    """A runtime whose pids are all alive except ``dead``."""

    def alive(candidate: int) -> bool:
        return candidate not in dead

    if fake is None:
        return Runtime(hostname=hostname, pid=pid, pid_alive=alive)
    return Runtime(
        hostname=hostname, pid=pid, pid_alive=alive,
        clock=fake.clock, monotonic=fake.monotonic, sleep=fake.sleep,
    )


@pytest.fixture
def env() -> str:
    return "env-" + uuid.uuid4().hex[:12]


def _redis_store(server: Dict[str, Any]) -> RedisLockStore:
    return RedisLockStore.connect(host=server["host"], port=server["port"], password=server["password"])


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.process), "file"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    """A factory of independent store instances (own connection / own file handles)."""
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        return lambda: _redis_store(server)
    lock_dir = tmp_path / "locks"
    return lambda: FileLockStore(str(lock_dir))


@pytest.fixture
def store(make_store: Callable[[], Any]) -> Any:
    return make_store()


def take(store: Any, env: str, runbook: str = "rb-p1-003-db-failover", **kwargs: Any) -> Dict[str, Any]:
    kwargs.setdefault("incident_id", "INC-2026-042")
    kwargs.setdefault("runtime", runtime())
    return il.acquire(store, env, runbook, **kwargs)


# --------------------------------------------------------------------------
# Acquire, release, refresh
# --------------------------------------------------------------------------


def test_acquire_free_lock_returns_token_and_holder(store: Any, env: str) -> None:
    result = take(store, env, ttl=900)
    assert result["changed"] is True
    assert isinstance(result["token"], int) and result["token"] >= 1
    holder = result["holder"]
    assert holder["runbook"] == "rb-p1-003-db-failover"
    assert holder["incident_id"] == "INC-2026-042"
    assert holder["controller_host"] == HOST
    assert holder["pid"] == HOLDER_PID
    assert holder["token"] == result["token"]
    assert holder["ttl"] == 900
    assert il.parse_ts(holder["started_at"]) is not None and holder["started_at"].endswith("Z")
    assert 895 <= holder["expires_in_s"] <= 900
    assert result["held_by"] == holder
    assert result["broken"] is None and result["would_block"] is False
    assert result["actions"] == [
        "Acquired the incident lock for environment '%s' for runbook rb-p1-003-db-failover with "
        "fencing token %d (%s, ttl 900 s)." % (env, result["token"], store.describe(env))
    ]
    assert result["diff"]["before"] == {}
    assert result["diff"]["after"]["token"] == result["token"]


def test_redis_layout_is_the_documented_one(redis_server: Dict[str, Any], env: str) -> None:
    store = _redis_store(redis_server)
    result = take(store, env, ttl=120)
    client = redis_server["client"]
    stored = json.loads(client.get("akig:incident-lock:%s" % env))
    assert stored == {
        "runbook": "rb-p1-003-db-failover",
        "incident_id": "INC-2026-042",
        "controller_host": HOST,
        "pid": HOLDER_PID,
        "started_at": result["holder"]["started_at"],
        "ttl": 120,
        "token": result["token"],
    }
    assert 110_000 < client.pttl("akig:incident-lock:%s" % env) <= 120_000
    assert int(client.get("akig:incident-lock:%s:fence" % env)) == result["token"]
    assert store.describe(env) == "redis key akig:incident-lock:%s on %s:%s db 0" % (
        env, redis_server["host"], redis_server["port"])


def test_file_layout_is_the_documented_one(tmp_path: Path, env: str) -> None:
    lock_dir = tmp_path / "deep" / "locks"
    fake = FakeTime()
    result = take(FileLockStore(str(lock_dir)), env, ttl=60, runtime=runtime(fake=fake))
    stored = json.loads((lock_dir / ("%s.lock" % env)).read_text())
    assert stored == {
        "runbook": "rb-p1-003-db-failover",
        "incident_id": "INC-2026-042",
        "controller_host": HOST,
        "pid": HOLDER_PID,
        "started_at": "2026-11-27T14:23:00Z",
        "ttl": 60,
        "expires_at": "2026-11-27T14:24:00Z",
        "token": result["token"],
    }
    assert (lock_dir / ("%s.fence" % env)).read_text().strip() == str(result["token"])
    assert (lock_dir / ("%s.lock" % env)).stat().st_mode & 0o777 == 0o600
    assert lock_dir.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in lock_dir.iterdir()) == sorted(
        ["%s.lock" % env, "%s.fence" % env, "%s.guard" % env])  # no temp file left behind


def test_second_acquire_fails_naming_the_holder(store: Any, env: str) -> None:
    first = take(store, env, ttl=900)
    with pytest.raises(LockError) as caught:
        take(store, env, "rb-p2-001-redis-sessions", runtime=runtime(pid=5151))
    msg = caught.value.msg
    assert msg.startswith(
        "incident lock for environment '%s' is held by runbook rb-p1-003-db-failover "
        "(incident INC-2026-042, host ctl-test, pid 4242, since %s, expires in "
        % (env, first["holder"]["started_at"])
    )
    assert "token %d)" % first["token"] in msg
    assert "rb-p2-001-redis-sessions cannot acquire it" in msg
    assert "wait for it to finish" in msg
    assert "re-run with break_stale=true (stale locks only)" in msg
    assert "state=absent force_break=true" in msg
    assert caught.value.result["held_by"]["token"] == first["token"]
    assert caught.value.result["stale"] is None
    # the lock is untouched
    assert store.read(env, datetime.now(timezone.utc)).token == first["token"]


def test_reacquire_with_own_token_is_idempotent(store: Any, env: str) -> None:
    first = take(store, env)
    again = take(store, env, token=first["token"])
    assert again["changed"] is False
    assert again["token"] == first["token"]
    assert again["holder"]["token"] == first["token"]
    assert "already held by this run" in again["actions"][0]


def test_reacquire_with_a_foreign_token_is_refused(store: Any, env: str) -> None:
    first = take(store, env)
    with pytest.raises(LockError, match="is held by runbook rb-p1-003-db-failover"):
        take(store, env, token=first["token"] + 1000, runtime=runtime(pid=5151))


def test_release_with_the_right_token(store: Any, env: str) -> None:
    first = take(store, env)
    result = il.release(store, env, first["token"], runtime=runtime())
    assert result["changed"] is True
    assert result["holder"]["token"] == first["token"]
    assert result["held_by"] is None
    assert result["actions"][0].startswith("Released the incident lock for environment '%s' held by runbook" % env)
    assert store.read(env, datetime.now(timezone.utc)) is None


def test_release_with_a_wrong_token_is_refused_and_names_the_holder(store: Any, env: str) -> None:
    first = take(store, env)
    with pytest.raises(LockError) as caught:
        il.release(store, env, first["token"] + 1, runtime=runtime())
    assert caught.value.msg.startswith(
        "cannot release the incident lock for environment '%s' with token %d: it is not this "
        "run's lock, it is held by runbook rb-p1-003-db-failover (" % (env, first["token"] + 1)
    )
    assert caught.value.result["held_by"]["token"] == first["token"]
    assert store.read(env, datetime.now(timezone.utc)).token == first["token"]


def test_release_of_a_free_lock_is_not_a_change(store: Any, env: str) -> None:
    result = il.release(store, env, 7, runtime=runtime())
    assert result["changed"] is False
    assert result["actions"] == ["The incident lock for environment '%s' was already free; nothing to release." % env]


def test_refresh_extends_the_ttl(store: Any, env: str) -> None:
    first = take(store, env, ttl=5)
    assert first["holder"]["expires_in_s"] <= 5
    result = il.refresh(store, env, first["token"], ttl=3600, runtime=runtime())
    assert result["changed"] is True
    assert result["token"] == first["token"]
    assert result["holder"]["expires_in_s"] >= 3590
    current = store.read(env, datetime.now(timezone.utc))
    assert current.token == first["token"]
    assert current.expires_at - datetime.now(timezone.utc) > timedelta(seconds=3590)
    assert result["actions"][0].startswith("Extended the incident lock for environment '%s' (token %d) until "
                                           % (env, first["token"]))


def test_refresh_with_a_wrong_token_or_of_a_lost_lock_fails(store: Any, env: str) -> None:
    with pytest.raises(LockError, match="the lock is gone .* stop acting on this environment"):
        il.refresh(store, env, 3, ttl=60, runtime=runtime())
    first = take(store, env)
    with pytest.raises(LockError, match="this run no longer holds it, it is held by runbook rb-p1-003"):
        il.refresh(store, env, first["token"] + 1, ttl=60, runtime=runtime())


def test_fencing_tokens_strictly_increase(store: Any, env: str) -> None:
    fake = FakeTime()
    tokens = []
    for _round in range(4):
        result = take(store, env, runtime=runtime(fake=fake), ttl=60)
        tokens.append(result["token"])
        il.release(store, env, result["token"], runtime=runtime(fake=fake))
    # a break hands out a bigger token too
    tokens.append(take(store, env, runtime=runtime(fake=fake), ttl=60)["token"])
    broke = take(store, env, runtime=runtime(pid=5151, dead=(HOLDER_PID,), fake=fake), break_stale=True)
    tokens.append(broke["token"])
    assert tokens == sorted(set(tokens)), tokens
    assert broke["broken"]["token"] == tokens[-2]


# --------------------------------------------------------------------------
# Exactly one wins
# --------------------------------------------------------------------------


def test_exactly_one_of_eight_threads_wins(make_store: Callable[[], Any], env: str) -> None:
    contenders = 8
    barrier = threading.Barrier(contenders)
    outcomes: List[Any] = [None] * contenders

    def contend(index: int) -> None:
        store = make_store()
        barrier.wait()
        try:
            outcomes[index] = take(store, env, "rb-thread-%d" % index, runtime=runtime(pid=10_000 + index))
        except LockError as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    winners = [o for o in outcomes if isinstance(o, dict)]
    losers = [o for o in outcomes if isinstance(o, LockError)]
    assert len(winners) == 1, outcomes
    assert len(losers) == contenders - 1, outcomes
    token = winners[0]["token"]
    winner_runbook = winners[0]["holder"]["runbook"]
    for loser in losers:
        assert loser.result["held_by"]["token"] == token
        assert "is held by runbook %s (" % winner_runbook in loser.msg


def _contend_in_process(spec: Dict[str, Any], env: str, index: int, barrier: Any, queue: Any) -> None:
    if spec["backend"] == "redis":
        store = RedisLockStore.connect(host=spec["host"], port=spec["port"], password=spec["password"])
    else:
        store = FileLockStore(spec["lock_dir"])
    barrier.wait()
    try:
        result = take(store, env, "rb-process-%d" % index, runtime=runtime(pid=os.getpid()))
        queue.put(("won", result["token"], None))
    except LockError as exc:
        queue.put(("held", exc.result["held_by"]["token"], exc.msg))


@pytest.mark.process  # forks four contenders (and redis-server for "redis")
@pytest.mark.parametrize("backend", ["redis", "file"])
def test_exactly_one_of_four_processes_wins(backend: str, request: pytest.FixtureRequest, tmp_path: Path, env: str) -> None:
    if backend == "redis":
        server = request.getfixturevalue("redis_server")
        spec = {"backend": "redis", "host": server["host"], "port": server["port"], "password": server["password"]}
    else:
        spec = {"backend": "file", "lock_dir": str(tmp_path / "locks")}
    ctx = multiprocessing.get_context("fork")
    contenders = 4
    barrier = ctx.Barrier(contenders)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_contend_in_process, args=(spec, env, i, barrier, queue)) for i in range(contenders)]
    for proc in procs:
        proc.start()
    outcomes = [queue.get(timeout=30) for _proc in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    won = [o for o in outcomes if o[0] == "won"]
    held = [o for o in outcomes if o[0] == "held"]
    assert len(won) == 1, outcomes
    assert len(held) == contenders - 1, outcomes
    assert all(token == won[0][1] for _kind, token, _msg in held)
    # the holders were live processes of this host when they lost
    assert all("looks stale" not in msg for _kind, _token, msg in held)


# --------------------------------------------------------------------------
# Stale locks
# --------------------------------------------------------------------------


def test_dead_holder_on_this_host_is_stale_and_only_broken_on_request(store: Any, env: str) -> None:
    first = take(store, env)
    survivor = runtime(pid=5151, dead=(HOLDER_PID,))
    with pytest.raises(LockError) as caught:
        take(store, env, "rb-p2-001-redis-sessions", runtime=survivor)
    msg = caught.value.msg
    assert msg.startswith("incident lock for environment '%s' looks stale: it is held by runbook "
                          "rb-p1-003-db-failover (" % env)
    assert "but its process (pid 4242) no longer runs on ctl-test" in msg
    assert "re-run with break_stale=true" in msg
    assert caught.value.result["stale"] == "its process (pid 4242) no longer runs on ctl-test"
    assert store.read(env, datetime.now(timezone.utc)).token == first["token"]

    result = take(store, env, "rb-p2-001-redis-sessions", runtime=survivor, break_stale=True)
    assert result["changed"] is True
    assert result["token"] > first["token"]
    assert result["broken"]["token"] == first["token"]
    assert result["broken"]["runbook"] == "rb-p1-003-db-failover"
    assert result["holder"]["runbook"] == "rb-p2-001-redis-sessions"
    assert result["actions"][0].startswith("Broke the stale incident lock for environment '%s'" % env)
    assert store.read(env, datetime.now(timezone.utc)).token == result["token"]


def test_dead_pid_on_another_host_is_not_stale(store: Any, env: str) -> None:
    take(store, env, runtime=runtime(hostname=OTHER_HOST))
    with pytest.raises(LockError) as caught:
        take(store, env, runtime=runtime(pid=5151, dead=(HOLDER_PID,)), break_stale=True)
    assert "is held by runbook rb-p1-003-db-failover (incident INC-2026-042, host ctl-other, pid 4242" in caught.value.msg
    assert "looks stale" not in caught.value.msg


def test_holder_without_pid_is_judged_by_ttl_only(store: Any, env: str) -> None:
    take(store, env, runtime=runtime(pid=None))
    with pytest.raises(LockError, match=r"host ctl-test, pid unknown, since"):
        take(store, env, runtime=runtime(pid=5151, dead=(HOLDER_PID,)), break_stale=True)


def test_file_lock_past_its_ttl_is_stale(tmp_path: Path, env: str) -> None:
    store = FileLockStore(str(tmp_path))
    fake = FakeTime()
    first = take(store, env, ttl=60, runtime=runtime(fake=fake))
    fake.advance(61)
    other = runtime(pid=5151, fake=fake)
    with pytest.raises(LockError) as caught:
        take(store, env, "rb-p2-001-redis-sessions", runtime=other)
    assert caught.value.result["stale"] == (
        "its TTL ran out 1 s ago (its process, pid 4242, still runs on ctl-test and may still be acting)")
    assert "expired 1 s ago" in caught.value.msg
    result = take(store, env, "rb-p2-001-redis-sessions", runtime=other, break_stale=True, ttl=60)
    assert result["broken"]["token"] == first["token"]
    assert result["holder"]["expires_at"] == "2026-11-27T14:25:01Z"


def test_redis_lock_past_its_ttl_is_simply_free(redis_server: Dict[str, Any], env: str) -> None:
    store = _redis_store(redis_server)
    first = take(store, env, ttl=0.3)
    time.sleep(0.45)
    result = take(store, env, "rb-p2-001-redis-sessions", runtime=runtime(pid=5151))
    assert result["changed"] is True
    assert result["broken"] is None
    assert result["token"] > first["token"]


# --------------------------------------------------------------------------
# Waiting
# --------------------------------------------------------------------------


def test_wait_then_acquire_when_the_holder_releases(store: Any, env: str) -> None:
    first = take(store, env)
    timer = threading.Timer(0.4, il.release, args=(store, env, first["token"]), kwargs={"runtime": runtime()})
    timer.start()
    try:
        result = take(store, env, "rb-p2-001-redis-sessions", runtime=runtime(pid=5151), wait=10, poll_interval=0.05)
    finally:
        timer.join()
    assert result["changed"] is True
    assert result["token"] > first["token"]
    assert 0.3 <= result["waited_s"] < 5


def test_wait_gives_up_after_the_deadline(store: Any, env: str) -> None:
    take(store, env)
    fake = FakeTime(datetime.now(timezone.utc))
    with pytest.raises(LockError) as caught:
        take(store, env, "rb-p2-001-redis-sessions", runtime=runtime(pid=5151, fake=fake), wait=30, poll_interval=5)
    assert "rb-p2-001-redis-sessions cannot acquire it after waiting 30 s" in caught.value.msg
    assert caught.value.result["waited_s"] == 30
    assert fake.sleeps == [5.0] * 6


# --------------------------------------------------------------------------
# Check mode
# --------------------------------------------------------------------------


def test_check_mode_on_a_free_lock_changes_nothing(store: Any, env: str) -> None:
    result = take(store, env, check_mode=True)
    assert result["changed"] is True
    assert result["token"] is None
    assert result["actions"][0].startswith("Would acquire the incident lock for environment '%s'" % env)
    assert store.read(env, datetime.now(timezone.utc)) is None


def test_check_mode_on_a_held_lock_reports_and_does_not_fail(store: Any, env: str) -> None:
    first = take(store, env)
    fake = FakeTime(datetime.now(timezone.utc))
    result = take(store, env, "rb-p2-001-redis-sessions", runtime=runtime(pid=5151, fake=fake),
                  wait=600, check_mode=True)
    assert fake.sleeps == []  # check mode does not wait
    assert result["changed"] is False
    assert result["would_block"] is True
    assert result["held_by"]["token"] == first["token"]
    assert "a real run would wait up to 600 s for it and then fail" in result["actions"][0]
    # stale but not breakable, and stale with break_stale
    dead = runtime(pid=5151, dead=(HOLDER_PID,))
    stale = take(store, env, runtime=dead, check_mode=True)
    assert stale["would_block"] is True and stale["stale"]
    breaking = take(store, env, runtime=dead, check_mode=True, break_stale=True)
    assert breaking["changed"] is True and breaking["would_block"] is False
    assert breaking["actions"][0].startswith("Would break the stale incident lock")
    assert store.read(env, datetime.now(timezone.utc)).token == first["token"]
    # release and refresh in check mode leave it alone too
    assert il.release(store, env, first["token"], check_mode=True, runtime=runtime())["changed"] is True
    assert il.refresh(store, env, first["token"], ttl=5000, check_mode=True, runtime=runtime())["changed"] is True
    current = store.read(env, datetime.now(timezone.utc))
    assert current.token == first["token"]
    assert current.expires_at - datetime.now(timezone.utc) < timedelta(seconds=901)


# --------------------------------------------------------------------------
# Breaking (state=absent) and query
# --------------------------------------------------------------------------


def test_break_refuses_a_live_lock_without_force(store: Any, env: str) -> None:
    first = take(store, env)
    with pytest.raises(LockError) as caught:
        il.break_lock(store, env, runtime=runtime(pid=5151))
    assert caught.value.msg.startswith(
        "refusing to break the incident lock for environment '%s': it is held by runbook "
        "rb-p1-003-db-failover (" % env)
    assert "re-run with force_break=true" in caught.value.msg
    forced = il.break_lock(store, env, force=True, runtime=runtime(pid=5151))
    assert forced["changed"] is True
    assert forced["broken"]["token"] == first["token"]
    assert "because force_break=true was given" in forced["actions"][0]
    assert store.read(env, datetime.now(timezone.utc)) is None
    assert il.break_lock(store, env, runtime=runtime())["changed"] is False


def test_break_removes_a_stale_lock_and_own_lock_without_force(store: Any, env: str) -> None:
    first = take(store, env)
    stale = il.break_lock(store, env, runtime=runtime(pid=5151, dead=(HOLDER_PID,)))
    assert stale["changed"] is True and stale["broken"]["token"] == first["token"]
    second = take(store, env)
    own = il.break_lock(store, env, token=second["token"], runtime=runtime())
    assert own["changed"] is True and own["broken"] is None and own["holder"]["token"] == second["token"]


def test_query_reports_free_held_and_stale(store: Any, env: str) -> None:
    assert il.inspect(store, env, runtime=runtime())["held_by"] is None
    first = take(store, env)
    held = il.inspect(store, env, runtime=runtime(pid=5151))
    assert held["changed"] is False and held["held_by"]["token"] == first["token"] and held["stale"] is None
    stale = il.inspect(store, env, runtime=runtime(pid=5151, dead=(HOLDER_PID,)))
    assert stale["stale"] == "its process (pid 4242) no longer runs on ctl-test"
    assert stale["actions"][0].endswith("it looks stale: its process (pid 4242) no longer runs on ctl-test.")


def _write_garbage(store: Any, env: str, server: Optional[Dict[str, Any]]) -> None:
    if isinstance(store, RedisLockStore):
        server["client"].set("akig:incident-lock:%s" % env, "not json {")
    else:
        os.makedirs(store.lock_dir, exist_ok=True)
        Path(store.path(env)).write_text("not json {")


def test_an_unreadable_lock_is_held_until_forcibly_removed(store: Any, env: str, request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("redis_server") if isinstance(store, RedisLockStore) else None
    _write_garbage(store, env, server)
    with pytest.raises(LockError, match="is held by an unreadable holder record .*force_break=true"):
        take(store, env, break_stale=True)
    assert il.inspect(store, env, runtime=runtime())["held_by"]["unreadable"].startswith("not JSON")
    with pytest.raises(LockError, match="refusing to break"):
        il.break_lock(store, env, runtime=runtime())
    assert il.break_lock(store, env, force=True, runtime=runtime())["changed"] is True
    assert take(store, env)["changed"] is True


# --------------------------------------------------------------------------
# Invariant: whatever the interleaving, one holder and growing tokens
# --------------------------------------------------------------------------

OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["acquire", "release", "refresh", "die", "tick"]),
        st.integers(min_value=0, max_value=2),  # which of three runs
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_file_store_invariants_under_any_interleaving(tmp_path: Path, operations: list) -> None:
    """Three runs acquire (breaking stale locks), release, refresh, die and let time pass.

    Whatever the interleaving: tokens handed out strictly increase; the lock on disk
    is always the latest acquisition; a run that still believes it holds an older
    token is behind the current one (so a fencing check rejects it), and its
    release or refresh never touches the current holder's lock.
    """
    env = "inv-" + uuid.uuid4().hex[:8]
    store = FileLockStore(str(tmp_path / "locks"))
    fake = FakeTime()
    dead: set = set()
    believed: Dict[int, int] = {}  # run -> token it believes it holds
    issued: List[int] = []

    def rt(run: int) -> Runtime:
        return Runtime(hostname=HOST, pid=100 + run, pid_alive=lambda pid: pid not in dead,
                       clock=fake.clock, monotonic=fake.monotonic, sleep=fake.sleep)

    for op, run in operations:
        before = store.read(env, fake.clock())
        if op == "acquire":
            dead.discard(100 + run)  # a new process of that run
            try:
                result = il.acquire(store, env, "rb-%d" % run, ttl=30, token=believed.get(run),
                                    break_stale=True, runtime=rt(run))
            except LockError:
                assert before is not None and before.token not in (None, believed.get(run))
            else:
                if result["changed"]:
                    issued.append(result["token"])
                believed[run] = result["token"]
        elif op in ("release", "refresh") and run in believed:
            token = believed[run]
            try:
                if op == "release":
                    il.release(store, env, believed.pop(run), runtime=rt(run))
                else:
                    il.refresh(store, env, token, ttl=30, runtime=rt(run))
            except LockError:
                believed.pop(run, None)
                after = store.read(env, fake.clock())
                assert (after.token if after else None) == (before.token if before else None)
                assert before is None or before.token != token
        elif op == "die":
            dead.add(100 + run)  # its lock, if any, is now stale
        elif op == "tick":
            fake.advance(20)

        current = store.read(env, fake.clock())
        assert issued == sorted(set(issued))
        if current is not None:
            assert current.token == issued[-1]
        for token in believed.values():
            assert current is None or token <= current.token


# --------------------------------------------------------------------------
# Parameters, errors, processes
# --------------------------------------------------------------------------

BASE = {"environment": "production", "state": "acquired", "runbook": "rb-p1-003-db-failover",
        "ttl": 900, "wait": 0, "poll_interval": 0.5, "token": None, "force_break": False}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"environment": "prod uction"}, "environment 'prod uction' is not a valid incident lock name"),
        ({"environment": "../etc"}, "is not a valid incident lock name"),
        ({"runbook": " "}, "cannot acquire the incident lock for environment 'production' without a runbook"),
        ({"ttl": 0}, "invalid ttl=0 for the incident lock for environment 'production': it must be a number of seconds > 0"),
        ({"ttl": -5}, "invalid ttl=-5"),
        ({"wait": -1}, "invalid wait=-1 .* >= 0"),
        ({"poll_interval": 0.0}, "invalid poll_interval=0.0"),
        ({"token": 0}, "invalid token=0 .* positive integers"),
        ({"force_break": True}, "force_break=true only applies to state=absent"),
    ],
)
def test_invalid_parameters_are_refused_with_what_is_accepted(change: Dict[str, Any], message: str) -> None:
    with pytest.raises(LockError, match=message):
        il.validate_params(dict(BASE, **change))


def test_run_dispatches_every_state(tmp_path: Path) -> None:
    params = dict(BASE, backend="file", lock_dir=str(tmp_path), incident_id=None, break_stale=False)
    rt = runtime()
    acquired = il.run(params, runtime=rt)
    token = acquired["token"]
    assert il.run(dict(params, state="query"), runtime=rt)["held_by"]["token"] == token
    assert il.run(dict(params, state="refreshed", token=token), runtime=rt)["changed"] is True
    assert il.run(dict(params, state="released", token=token), runtime=rt)["changed"] is True
    assert il.run(dict(params, state="absent"), runtime=rt)["changed"] is False


def test_redis_errors_are_explained_without_the_password(redis_server: Dict[str, Any], env: str) -> None:
    wrong = "WRONG-" + secrets.token_hex(8)
    store = RedisLockStore.connect(host=redis_server["host"], port=redis_server["port"], password=wrong)
    with pytest.raises(LockError) as caught:
        take(store, env)
    assert caught.value.msg.startswith(
        "cannot read the incident lock for environment '%s' (redis key akig:incident-lock:%s on 127.0.0.1:%d db 0): "
        "Redis did not answer as expected (AuthenticationError" % (env, env, redis_server["port"]))
    assert "check redis_host, redis_port, redis_db and redis_password" in caught.value.msg
    assert wrong not in caught.value.msg and redis_server["password"] not in caught.value.msg
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    nowhere = RedisLockStore.connect(host="127.0.0.1", port=closed, password=wrong, timeout=1)
    with pytest.raises(LockError, match="cannot read the incident lock .*ConnectionError") as caught:
        take(nowhere, env)
    assert wrong not in caught.value.msg


def test_file_errors_name_the_directory(tmp_path: Path, env: str) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(LockError, match="cannot read the incident lock for environment '%s' "
                                        r"\(lock file %s/%s.lock\).*writable directory" % (env, blocker, env)):
        take(FileLockStore(str(blocker)), env)


@pytest.mark.process  # starts `true`
def test_process_alive_tells_live_from_dead_pids() -> None:
    assert il.process_alive(os.getpid()) is True
    child = subprocess.Popen(["true"])
    child.wait()  # reaped: the pid no longer exists
    assert il.process_alive(child.pid) is False


def test_find_run_pid_climbs_to_the_ansible_main_process() -> None:
    playbook = ("/venv/bin/python3", "/venv/bin/ansible-playbook", "site.yml")
    table = {
        900: (801, ("/venv/bin/python", "/root/.ansible/tmp/x/AnsiballZ_incident_lock.py")),
        801: (800, ("/bin/sh", "-c", "/venv/bin/python /root/.ansible/tmp/x/AnsiballZ_incident_lock.py")),
        800: (700, ("/bin/sh", "-c", "/bin/sh -c '...'")),
        700: (600, playbook),   # worker, a fork of the main process
        600: (500, playbook),   # main ansible-playbook process
        500: (1, ("bash",)),
    }
    assert il.find_run_pid(start_pid=900, read_proc=table.get) == 600
    adhoc = ("ansible", "localhost", "-m", "ping")
    assert il.find_run_pid(start_pid=42, read_proc={42: (41, ("sh",)), 41: (40, adhoc), 40: (1, ("sshd",))}.get) == 41
    assert il.find_run_pid(start_pid=900, read_proc={900: (1, ("sshd",))}.get) is None
    assert il.find_run_pid(start_pid=900, read_proc=lambda pid: None) is None
