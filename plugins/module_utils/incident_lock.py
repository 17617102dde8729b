# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The incident lock: one destructive runbook run per environment at a time.

The module ``akig.runbooks.incident_lock`` is a thin wrapper around this file;
everything that decides or acts lives here and is tested against a real Redis
and real files (``tests/unit/plugins/module_utils/test_incident_lock.py``).

Model
-----
* One lock per environment (``production``, ``staging``, ``lab`` ...).  Its
  *holder record* says who holds it: ``runbook``, ``incident_id``,
  ``controller_host``, ``pid`` (the ``ansible-playbook``/``ansible`` process of
  the run), ``started_at`` (UTC ISO 8601), ``ttl`` (seconds) and ``token``.
* ``token`` is a fencing token: a counter per environment that only ever
  grows, handed to the run that acquires the lock.  Release and refresh must
  present it, so a run can never delete or extend someone else's lock, and a
  consumer that records the highest token it has seen can refuse a late write
  from a run whose lock expired.
* A lock is *stale* when its TTL has run out (file backend; an expired Redis
  key is simply gone) or when its holder ran on this very controller host and
  its pid no longer exists.  A stale lock is never broken silently: acquire
  needs ``break_stale=True`` and reports the previous holder in ``broken``.

Two stores implement the same five operations (``read``, ``create``,
``delete``, ``extend`` and ``describe``), each in its own file:

* ``incident_lock_redis.py``, :class:`RedisLockStore` -- for shared
  controllers (AWX, several operators).  Key ``akig:incident-lock:<environment>``
  holds the holder JSON with a PX TTL; ``akig:incident-lock:<environment>:fence``
  is the token counter.  Every mutation is one Lua script, so check-and-act is
  atomic on the server.
* ``incident_lock_file.py``, :class:`FileLockStore` -- for a single controller.
  ``<lock_dir>/<env>.lock`` holds the holder JSON, created with create-exclusive
  semantics; the token counter is ``<env>.fence`` and every mutation runs under
  an exclusive ``flock`` of ``<env>.guard``.

This file holds what does not depend on the store: the holder record
(:class:`Lock`), staleness, the operations and the module's entry point
(:func:`run`, which picks the store with :func:`make_store`).  The stores import
it; it imports a store only when :func:`make_store` needs one.

The clock, the sleep, the pid-liveness check, the hostname and the holder pid
are injected through :class:`Runtime` so the tests can drive time and
liveness; :meth:`Runtime.real` builds the production one.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ansible_collections.akig.runbooks.plugins.module_utils.procfs import pid_exists as process_alive
from ansible_collections.akig.runbooks.plugins.module_utils.procfs import process_parent_and_argv
from ansible_collections.akig.runbooks.plugins.module_utils.timeutil import format_utc, parse_iso8601, utc_now

__all__ = [
    "BACKENDS",
    "Holder",
    "Lock",
    "LockError",
    "Runtime",
    "acquire",
    "break_lock",
    "find_run_pid",
    "format_ts",
    "inspect",
    "make_store",
    "parse_lock",
    "parse_ts",
    "process_alive",
    "refresh",
    "release",
    "run",
    "stale_reason",
    "utc_now",
    "validate_params",
]

STATES = ("acquired", "released", "refreshed", "absent", "query")
BACKENDS = ("redis", "file")
ENVIRONMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# How often a lost race (another run created or changed the lock between our
# read and our write) is re-examined at once, before waiting or failing.
RACE_RETRIES = 5

Holder = Dict[str, Any]


class LockError(Exception):
    """The requested lock operation cannot be done; ``msg`` says why and what to do.

    ``result`` carries extra return values for ``fail_json`` (``held_by`` ...).
    """

    def __init__(self, msg: str, **result: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.result = result


# --------------------------------------------------------------------------
# Time, processes, host
# --------------------------------------------------------------------------


def format_ts(value: datetime) -> str:
    """``2026-11-27T14:23:00Z``: UTC, whole seconds (rounded down)."""
    return format_utc(value, "seconds")


def parse_ts(value: Any) -> Optional[datetime]:
    """Parse a timestamp written by :func:`format_ts`; None when it is not one (or has no offset)."""
    return parse_iso8601(value) if isinstance(value, str) else None


_ANSIBLE_CLI_RE = re.compile(r"^ansible(?:-[a-z]+)?$")


def _is_ansible_cli(argv: Tuple[str, ...]) -> bool:
    # ``/venv/bin/python3 /venv/bin/ansible-playbook site.yml`` or ``ansible-playbook site.yml``
    return any(_ANSIBLE_CLI_RE.match(os.path.basename(arg)) for arg in argv[:2])


def find_run_pid(
    start_pid: Optional[int] = None,
    read_proc: Callable[[int], Optional[Tuple[int, Tuple[str, ...]]]] = process_parent_and_argv,
    max_depth: int = 64,
) -> Optional[int]:
    """The pid of the ``ansible-playbook`` (or ``ansible``) process running this module.

    A module is a short-lived grandchild of that process: ``ansible-playbook``
    forks a worker with the same command line, which runs ``/bin/sh -c python
    AnsiballZ_...``.  Walk up from ``start_pid`` (default: our parent) to the
    first ancestor whose command is an ``ansible*`` CLI, then on through its
    parents while they have the very same command line (the workers are forks of
    the main process).  The outermost one lives as long as the run does.

    Returns None when there is no such ancestor (the module runs on a remote
    host, or /proc is not available); staleness then relies on the TTL alone.
    """
    pid = os.getppid() if start_pid is None else start_pid
    found: Optional[int] = None
    found_argv: Tuple[str, ...] = ()
    for _depth in range(max_depth):
        if pid <= 1:
            break
        entry = read_proc(pid)
        if entry is None:
            break
        ppid, argv = entry
        if found is None:
            if argv and _is_ansible_cli(argv):
                found, found_argv = pid, argv
        elif argv == found_argv:
            found = pid
        else:
            break
        pid = ppid
    return found


@dataclass(frozen=True)
class Runtime:
    """The outside world the lock logic looks at; every part is injectable for tests.

    ``pid`` is the pid recorded as holder (the run's ansible process); None when
    it cannot be found.  ``clock`` returns an aware datetime; ``monotonic`` and
    ``sleep`` pace the wait loop.
    """

    hostname: str
    pid: Optional[int]
    clock: Callable[[], datetime] = utc_now
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    pid_alive: Callable[[int], bool] = process_alive

    @classmethod
    def real(cls) -> "Runtime":
        return cls(hostname=socket.gethostname(), pid=find_run_pid())


# --------------------------------------------------------------------------
# The lock as read from a store
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Lock:
    """A lock as found in a store.

    ``holder`` is the stored record; ``raw`` the stored text (used to delete an
    unreadable lock only if it is still the same); ``expires_at`` is None for a
    lock that never expires; ``error`` says why an unreadable lock could not be
    parsed (its holder is then empty).
    """

    holder: Holder
    raw: str
    expires_at: Optional[datetime]
    error: Optional[str] = None

    @property
    def token(self) -> Optional[int]:
        token = self.holder.get("token")
        if isinstance(token, int) and not isinstance(token, bool):
            return token
        return None

    def public(self, now: datetime) -> Holder:
        """The holder record as returned to the caller, with the expiry as seen now."""
        if self.error is not None:
            return {"unreadable": self.error}
        out = dict(self.holder)
        if self.expires_at is None:
            out["expires_at"] = None
            out["expires_in_s"] = None
        else:
            out["expires_at"] = format_ts(self.expires_at)
            out["expires_in_s"] = int(math.floor((self.expires_at - now).total_seconds()))
        return out


def parse_lock(raw: str, expires_at: Optional[datetime], expires_from_record: bool) -> Lock:
    """A stored holder record as a :class:`Lock` (an unreadable one carries its ``error``).

    ``expires_at`` is the expiry the store knows (the Redis key's TTL); with ``expires_from_record``
    it is read from the record's own ``expires_at`` instead (the file store).
    """
    try:
        holder = json.loads(raw)
    except ValueError as exc:
        return Lock({}, raw, None, "not JSON (%s)" % exc)
    if not isinstance(holder, dict):
        return Lock({}, raw, None, "not a JSON object")
    token = holder.get("token")
    if not isinstance(token, int) or isinstance(token, bool) or token < 1:
        return Lock({}, raw, None, "no valid fencing token")
    if expires_from_record:
        expires_at = parse_ts(holder.get("expires_at"))
        if expires_at is None:
            return Lock({}, raw, None, "no valid expires_at")
    return Lock(holder, raw, expires_at)


# --------------------------------------------------------------------------
# Describing locks to people
# --------------------------------------------------------------------------


def stale_reason(lock: Lock, now: datetime, runtime: Runtime) -> Optional[str]:
    """Why ``lock`` looks abandoned, or None when it looks alive (or cannot be judged)."""
    if lock.error is not None:
        return None
    host = lock.holder.get("controller_host")
    pid = lock.holder.get("pid")
    local_pid = host == runtime.hostname and isinstance(pid, int) and not isinstance(pid, bool)
    local_pid = local_pid and pid > 0
    if lock.expires_at is not None and lock.expires_at <= now:
        ago = int((now - lock.expires_at).total_seconds())
        reason = "its TTL ran out %d s ago" % ago
        if local_pid:
            if runtime.pid_alive(pid):
                reason += " (its process, pid %d, still runs on %s and may still be acting)" % (pid, host)
            else:
                reason += " and its process (pid %d) no longer runs on %s" % (pid, host)
        return reason
    if local_pid and not runtime.pid_alive(pid):
        return "its process (pid %d) no longer runs on %s" % (pid, host)
    return None


def _who(lock: Lock, now: datetime) -> str:
    """``runbook rb-p1-003 (incident INC-1, host ctl-1, pid 4242, since ..., expires in 812 s, token 7)``."""
    if lock.error is not None:
        return "an unreadable holder record (%s)" % lock.error
    holder = lock.holder
    parts = [
        "incident %s" % holder["incident_id"] if holder.get("incident_id") else "no incident id",
        "host %s" % (holder.get("controller_host") or "unknown"),
        "pid %s" % (holder["pid"] if holder.get("pid") is not None else "unknown"),
        "since %s" % (holder.get("started_at") or "unknown"),
    ]
    if lock.expires_at is None:
        parts.append("no expiry")
    else:
        left = int(math.floor((lock.expires_at - now).total_seconds()))
        parts.append("expires in %d s" % left if left >= 0 else "expired %d s ago" % -left)
    parts.append("token %s" % lock.token)
    return "runbook %s (%s)" % (holder.get("runbook") or "unknown", ", ".join(parts))


def _holder_fields(runbook: str, incident_id: Optional[str], ttl: float, now: datetime, runtime: Runtime) -> Holder:
    return {
        "runbook": runbook,
        "incident_id": incident_id or None,
        "controller_host": runtime.hostname,
        "pid": runtime.pid,
        "started_at": format_ts(now),
        "ttl": ttl,
    }


def _result(
    store: Any,
    environment: str,
    *,
    changed: bool = False,
    token: Optional[int] = None,
    holder: Optional[Holder] = None,
    held_by: Optional[Holder] = None,
    broken: Optional[Holder] = None,
    stale: Optional[str] = None,
    would_block: bool = False,
    actions: Optional[List[str]] = None,
    waited_s: float = 0.0,
    before: Optional[Lock] = None,
    after: Optional[Lock] = None,
) -> Dict[str, Any]:
    return {
        "changed": changed,
        "environment": environment,
        "lock": store.describe(environment),
        "token": token,
        "holder": holder,
        "held_by": held_by,
        "broken": broken,
        "stale": stale,
        "would_block": would_block,
        "actions": list(actions or []),
        "waited_s": round(waited_s, 3),
        "diff": {
            "before": dict(before.holder) if before is not None and before.error is None else {},
            "after": dict(after.holder) if after is not None else {},
        },
    }


# --------------------------------------------------------------------------
# Operations
# --------------------------------------------------------------------------


def acquire(
    store: Any,
    environment: str,
    runbook: str,
    *,
    incident_id: Optional[str] = None,
    ttl: float = 900,
    wait: float = 0,
    poll_interval: float = 0.5,
    token: Optional[int] = None,
    break_stale: bool = False,
    check_mode: bool = False,
    runtime: Optional[Runtime] = None,
) -> Dict[str, Any]:
    """Take the lock for ``environment``; raise :class:`LockError` when it stays held.

    * free -> create it: changed, a new ``token`` and the ``holder`` record;
    * held with ``token`` -> already ours: not changed (idempotent re-acquire);
    * held and stale -> with ``break_stale`` replace it atomically and report the
      previous holder in ``broken``; without, treat it as held;
    * held -> poll every ``poll_interval`` s for up to ``wait`` s, then fail
      naming the holder.

    In check mode nothing is written and nothing fails because the lock is held:
    the result says what would happen (``would_block`` when it is held).
    """
    rt = runtime or Runtime.real()
    started = rt.monotonic()
    deadline = started + max(0.0, wait)
    name = "incident lock for environment '%s'" % environment
    races = 0
    current = store.read(environment, rt.clock())
    before = current

    def waited() -> float:
        return max(0.0, rt.monotonic() - started)

    while True:
        now = rt.clock()
        if current is None:
            if check_mode:
                return _result(
                    store, environment, changed=True,
                    actions=["Would acquire the %s for runbook %s (%s, ttl %s s)."
                             % (name, runbook, store.describe(environment), ttl)],
                )
            created, lock = store.create(environment, _holder_fields(runbook, incident_id, ttl, now, rt), ttl, now)
            if created and lock is not None:
                public = lock.public(now)
                return _result(
                    store, environment, changed=True, token=lock.token, holder=public, held_by=public,
                    actions=["Acquired the %s for runbook %s with fencing token %s (%s, ttl %s s)."
                             % (name, runbook, lock.token, store.describe(environment), ttl)],
                    waited_s=waited(), before=before, after=lock,
                )
            current = lock
            races += 1
            if current is None or races <= RACE_RETRIES:
                continue  # lost a race: look at the new holder before waiting or failing

        if token is not None and current.token == token:
            public = current.public(now)
            note = "The %s is already held by this run (token %s); nothing to do." % (name, token)
            reason = stale_reason(current, now, rt)
            if reason:
                note += " Note that it looks stale: %s; refresh it with state=refreshed." % reason
            return _result(
                store, environment, token=token, holder=public, held_by=public, stale=reason,
                actions=[note], waited_s=waited(), before=before, after=current,
            )

        reason = stale_reason(current, now, rt)
        if reason and break_stale:
            if check_mode:
                return _result(
                    store, environment, changed=True, held_by=current.public(now), stale=reason,
                    actions=["Would break the stale %s, held by %s, because %s; then acquire it for runbook %s."
                             % (name, _who(current, now), reason, runbook)],
                )
            created, lock = store.create(
                environment, _holder_fields(runbook, incident_id, ttl, now, rt), ttl, now,
                replace_token=current.token,
            )
            if created and lock is not None:
                public = lock.public(now)
                return _result(
                    store, environment, changed=True, token=lock.token, holder=public, held_by=public,
                    broken=current.public(now), stale=reason,
                    actions=[
                        "Broke the stale %s, held by %s, because %s." % (name, _who(current, now), reason),
                        "Acquired the %s for runbook %s with fencing token %s (%s, ttl %s s)."
                        % (name, runbook, lock.token, store.describe(environment), ttl),
                    ],
                    waited_s=waited(), before=before, after=lock,
                )
            current = lock
            races += 1
            if current is None or races <= RACE_RETRIES:
                continue

        if check_mode:
            verdict = (
                "it looks stale (%s) but break_stale is false, so a real run would refuse" % reason
                if reason
                else "a real run would wait up to %s s for it and then fail" % wait
            )
            return _result(
                store, environment, held_by=current.public(now), stale=reason, would_block=True,
                actions=["The %s is held by %s; %s." % (name, _who(current, now), verdict)],
            )

        if rt.monotonic() >= deadline:
            raise LockError(
                _blocked_message(name, current, now, reason, runbook, waited()),
                environment=environment,
                lock=store.describe(environment),
                held_by=current.public(now),
                stale=reason,
                waited_s=round(waited(), 3),
            )
        rt.sleep(max(0.0, min(poll_interval, deadline - rt.monotonic())))
        races = 0
        current = store.read(environment, rt.clock())


def _blocked_message(
    name: str, lock: Lock, now: datetime, reason: Optional[str], runbook: str, waited_s: float
) -> str:
    waited_text = " after waiting %d s" % round(waited_s) if waited_s >= 0.5 else ""
    if lock.error is not None:
        return (
            "%s is held by %s, so runbook %s cannot acquire it%s; nobody can tell who holds it: "
            "inspect it, and once you are sure no run is acting on this environment remove it "
            "with state=absent force_break=true"
            % (name, _who(lock, now), runbook, waited_text)
        )
    if reason:
        return (
            "%s looks stale: it is held by %s, but %s; runbook %s did not acquire it%s because "
            "stale locks are only broken on request: re-run with break_stale=true to break it "
            "(the previous holder is reported in 'broken'), or remove it with state=absent"
            % (name, _who(lock, now), reason, runbook, waited_text)
        )
    return (
        "%s is held by %s, so runbook %s cannot acquire it%s; wait for it to finish (or set wait "
        "to queue behind it), or if that run is dead re-run with break_stale=true (stale locks "
        "only) or, once you have confirmed it is dead, remove it with state=absent force_break=true"
        % (name, _who(lock, now), runbook, waited_text)
    )


def release(
    store: Any,
    environment: str,
    token: int,
    *,
    check_mode: bool = False,
    runtime: Optional[Runtime] = None,
) -> Dict[str, Any]:
    """Delete the lock if it holds ``token``; an absent lock is not an error (not changed)."""
    rt = runtime or Runtime.real()
    now = rt.clock()
    name = "incident lock for environment '%s'" % environment
    if check_mode:
        current = store.read(environment, now)
        status = "absent" if current is None else ("deleted" if current.token == token else "mismatch")
    else:
        status, current = store.delete(environment, token)
    if status == "absent":
        return _result(
            store, environment,
            actions=["The %s was already free; nothing to release." % name],
        )
    if current is None:  # pragma: no cover - the stores never answer so
        raise LockError("internal error: the %s store answered %s without a lock" % (name, status))
    if status == "mismatch":
        raise LockError(
            "cannot release the %s with token %s: it is not this run's lock, it is held by %s. "
            "Leave it alone; if this run's lock expired or was broken while it was acting, check "
            "what the other run did, and refresh long runs with state=refreshed"
            % (name, token, _who(current, now)),
            environment=environment,
            lock=store.describe(environment),
            held_by=current.public(now),
        )
    verb = "Would release" if check_mode else "Released"
    return _result(
        store, environment, changed=True, holder=current.public(now),
        held_by=current.public(now) if check_mode else None,
        actions=["%s the %s held by %s." % (verb, name, _who(current, now))],
        before=current, after=current if check_mode else None,
    )


def refresh(
    store: Any,
    environment: str,
    token: int,
    *,
    ttl: float = 900,
    check_mode: bool = False,
    runtime: Optional[Runtime] = None,
) -> Dict[str, Any]:
    """Reset the TTL of the lock holding ``token`` to ``ttl`` s from now."""
    rt = runtime or Runtime.real()
    now = rt.clock()
    name = "incident lock for environment '%s'" % environment
    before = store.read(environment, now)
    if check_mode:
        current = before
        status = "absent" if current is None else ("extended" if current.token == token else "mismatch")
    else:
        status, current = store.extend(environment, token, ttl, now)
    if status == "absent":
        raise LockError(
            "cannot refresh the %s with token %s: the lock is gone (its TTL ran out or it was "
            "broken), so this run no longer holds it; stop acting on this environment, check what "
            "ran meanwhile, then acquire it again" % (name, token),
            environment=environment,
            lock=store.describe(environment),
            held_by=None,
        )
    if current is None:  # pragma: no cover - the stores never answer so
        raise LockError("internal error: the %s store answered %s without a lock" % (name, status))
    if status == "mismatch":
        raise LockError(
            "cannot refresh the %s with token %s: this run no longer holds it, it is held by %s; "
            "stop acting on this environment and check what the other run did"
            % (name, token, _who(current, now)),
            environment=environment,
            lock=store.describe(environment),
            held_by=current.public(now),
        )
    public = current.public(now)
    if check_mode:
        text = "Would extend the %s (token %s) to expire %s s from now." % (name, token, ttl)
    else:
        text = "Extended the %s (token %s) until %s." % (name, token, public["expires_at"])
    return _result(
        store, environment, changed=True, token=token, holder=public, held_by=public,
        actions=[text], before=before, after=current,
    )


def break_lock(
    store: Any,
    environment: str,
    *,
    token: Optional[int] = None,
    force: bool = False,
    check_mode: bool = False,
    runtime: Optional[Runtime] = None,
) -> Dict[str, Any]:
    """``state=absent``: remove the lock if it is ours (``token``), stale, or ``force``.

    A live lock held by another run is refused unless ``force``.  The removed
    holder is reported in ``broken`` (unless it was ours).
    """
    rt = runtime or Runtime.real()
    name = "incident lock for environment '%s'" % environment
    for _attempt in range(RACE_RETRIES + 1):
        now = rt.clock()
        current = store.read(environment, now)
        if current is None:
            return _result(store, environment, actions=["The %s is already free; nothing to break." % name])
        ours = token is not None and current.token == token
        reason = stale_reason(current, now, rt)
        if not (ours or reason or force):
            raise LockError(
                "refusing to break the %s: it is held by %s and looks alive; wait for it, or "
                "release it with its token (state=released), or, once you have confirmed that run "
                "is dead, re-run with force_break=true" % (name, _who(current, now)),
                environment=environment,
                lock=store.describe(environment),
                held_by=current.public(now),
            )
        if ours:
            why = "it is this run's lock (token %s)" % token
        elif reason:
            why = "it looks stale: %s" % reason
        else:
            why = "force_break=true was given"
        if check_mode:
            return _result(
                store, environment, changed=True, held_by=current.public(now), stale=reason,
                actions=["Would remove the %s, held by %s, because %s." % (name, _who(current, now), why)],
                before=current,
            )
        status, removed = store.delete(environment, current.token, current.raw)
        if status == "deleted" and removed is not None:
            return _result(
                store, environment, changed=True, holder=removed.public(now) if ours else None,
                broken=None if ours else removed.public(now), stale=reason,
                actions=["Removed the %s, held by %s, because %s." % (name, _who(removed, now), why)],
                before=removed,
            )
        # the lock changed between our read and the delete: judge the new one
    raise LockError(
        "cannot break the %s: it kept changing while this run tried (another run is taking it); "
        "query it with state=query and try again" % name,
        environment=environment,
        lock=store.describe(environment),
    )


def inspect(store: Any, environment: str, *, runtime: Optional[Runtime] = None) -> Dict[str, Any]:
    """``state=query``: who holds the lock, whether it looks stale. Never changes anything."""
    rt = runtime or Runtime.real()
    now = rt.clock()
    name = "incident lock for environment '%s'" % environment
    current = store.read(environment, now)
    if current is None:
        return _result(store, environment, actions=["The %s is free." % name])
    reason = stale_reason(current, now, rt)
    text = "The %s is held by %s" % (name, _who(current, now))
    text += "; it looks stale: %s." % reason if reason else "."
    return _result(
        store, environment, held_by=current.public(now), stale=reason, actions=[text],
        before=current, after=current,
    )


# --------------------------------------------------------------------------
# Module entry point
# --------------------------------------------------------------------------


def validate_params(params: Mapping[str, Any]) -> None:
    """Check what the argument spec cannot express; raise LockError saying what is accepted."""
    environment = params.get("environment") or ""
    if not ENVIRONMENT_RE.match(environment):
        raise LockError(
            "environment %r is not a valid incident lock name: use 1 to 63 letters, digits, '.', "
            "'_' or '-', starting with a letter or digit (it names the Redis key and the lock file), "
            "for example production" % environment
        )
    state = params.get("state", "acquired")
    if state == "acquired" and not (params.get("runbook") or "").strip():
        raise LockError(
            "cannot acquire the incident lock for environment '%s' without a runbook: set runbook "
            "to the runbook id of this run (for example rb-p1-003-db-failover) so that others "
            "can see who holds the lock" % environment
        )
    for option, minimum, strict in (("ttl", 0, True), ("wait", 0, False), ("poll_interval", 0, True)):
        value = params.get(option)
        if value is None:
            continue
        if (strict and value <= minimum) or (not strict and value < minimum):
            raise LockError(
                "invalid %s=%s for the incident lock for environment '%s': it must be a number of "
                "seconds %s 0 (defaults: ttl 900, wait 0, poll_interval 0.5)"
                % (option, value, environment, ">" if strict else ">=")
            )
    token = params.get("token")
    if token is not None and token < 1:
        raise LockError(
            "invalid token=%s for the incident lock for environment '%s': fencing tokens are "
            "positive integers, pass the token returned by state=acquired" % (token, environment)
        )
    if params.get("force_break") and state != "absent":
        raise LockError(
            "force_break=true only applies to state=absent (breaking the incident lock for "
            "environment '%s'); it was given with state=%s: remove it, or use state=absent"
            % (environment, state)
        )


def make_store(params: Mapping[str, Any]) -> Any:
    """The store of ``params['backend']`` (the store files import this one, so they are imported here)."""
    if params.get("backend", "redis") == "file":
        from ansible_collections.akig.runbooks.plugins.module_utils.incident_lock_file import FileLockStore

        return FileLockStore(params.get("lock_dir") or "~/.cache/akig-runbooks/locks")
    from ansible_collections.akig.runbooks.plugins.module_utils.incident_lock_redis import RedisLockStore

    return RedisLockStore.connect(
        host=params["redis_host"],
        port=params.get("redis_port") or 6379,
        password=params.get("redis_password"),
        db=params.get("redis_db") or 0,
    )


def run(
    params: Mapping[str, Any],
    *,
    check_mode: bool = False,
    runtime: Optional[Runtime] = None,
    store: Any = None,
) -> Dict[str, Any]:
    """Validate the module parameters and perform ``params['state']``."""
    validate_params(params)
    rt = runtime or Runtime.real()
    store = store if store is not None else make_store(params)
    environment = params["environment"]
    state = params.get("state", "acquired")
    ttl = params.get("ttl") or 900
    if state == "acquired":
        return acquire(
            store, environment, params["runbook"].strip(),
            incident_id=params.get("incident_id"),
            ttl=ttl,
            wait=params.get("wait") or 0,
            poll_interval=params.get("poll_interval") or 0.5,
            token=params.get("token"),
            break_stale=bool(params.get("break_stale")),
            check_mode=check_mode,
            runtime=rt,
        )
    if state == "released":
        return release(store, environment, params["token"], check_mode=check_mode, runtime=rt)
    if state == "refreshed":
        return refresh(store, environment, params["token"], ttl=ttl, check_mode=check_mode, runtime=rt)
    if state == "absent":
        return break_lock(
            store, environment, token=params.get("token"), force=bool(params.get("force_break")),
            check_mode=check_mode, runtime=rt,
        )
    if state == "query":
        return inspect(store, environment, runtime=rt)
    raise LockError("unknown state %r: use one of %s" % (state, ", ".join(STATES)))
