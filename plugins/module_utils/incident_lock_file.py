# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The file store of the incident lock (``backend=file``), for a single controller.

``<lock_dir>/<environment>.lock`` holds the holder record (JSON), created exclusively;
``<environment>.fence`` is the fencing-token counter and every change runs under an exclusive
``flock`` of ``<environment>.guard``. The directory must be on a local file system.

The lock logic (who holds it, staleness, the operations) is in ``incident_lock.py``; this file
only stores and reads holder records.
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Iterator, Optional, Tuple

from ansible_collections.akig.runbooks.plugins.module_utils.incident_lock import (
    Holder,
    Lock,
    LockError,
    format_ts,
    parse_lock,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX; the file backend says so when used
    fcntl = None  # type: ignore[assignment]

__all__ = ["FileLockStore", "ceil_to_second"]


def ceil_to_second(value: datetime) -> datetime:
    """``value`` rounded up to a whole second (an expiry is never written earlier than it is)."""
    if value.microsecond:
        value = value.replace(microsecond=0) + timedelta(seconds=1)
    return value


class FileLockStore:
    """Locks as JSON files in ``lock_dir`` on this controller (one controller only).

    ``<env>.lock`` is the holder record, made visible only once complete: it is
    written to a temporary file opened with ``O_CREAT|O_EXCL`` and hard-linked
    into place with ``link(2)``, which fails if the lock file exists -- the same
    create-exclusive guarantee as ``O_CREAT|O_EXCL`` on the lock file itself,
    without a moment where the lock file exists but is empty.  ``<env>.fence``
    holds the last token handed out; ``<env>.guard`` is an empty file whose
    exclusive ``flock`` serialises every change, so check-and-act is atomic.
    The directory must be on a local file system.
    """

    backend = "file"

    def __init__(self, lock_dir: str) -> None:
        self.lock_dir = os.path.abspath(os.path.expanduser(lock_dir))

    def path(self, environment: str, suffix: str = "lock") -> str:
        return os.path.join(self.lock_dir, "%s.%s" % (environment, suffix))

    def describe(self, environment: str) -> str:
        return "lock file %s" % self.path(environment)

    @contextmanager
    def _errors(self, environment: str, operation: str) -> Iterator[None]:
        try:
            yield
        except LockError:
            raise
        except OSError as exc:
            raise LockError(
                "cannot %s the incident lock for environment '%s' (%s): %s; check that "
                "lock_dir is a writable directory on a local file system of this controller"
                % (operation, environment, self.describe(environment), exc)
            ) from None

    @contextmanager
    def _guard(self, environment: str) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover - non-POSIX controller
            raise LockError(
                "cannot use the file backend of the incident lock on this platform (no fcntl); "
                "use backend=redis"
            )
        os.makedirs(self.lock_dir, mode=0o700, exist_ok=True)
        fd = os.open(self.path(environment, "guard"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def _load(self, environment: str) -> Optional[Lock]:
        try:
            with open(self.path(environment), "r", encoding="utf-8") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return None
        return parse_lock(raw, None, expires_from_record=True)

    def _fence(self, environment: str) -> int:
        try:
            with open(self.path(environment, "fence"), "r", encoding="ascii") as handle:
                return max(0, int(handle.read().strip() or 0))
        except FileNotFoundError:
            return 0
        except ValueError:
            return 0

    def _write_atomically(self, target: str, text: str, exclusive: bool) -> bool:
        """Write ``text`` to ``target`` all at once; with ``exclusive`` only if it does not exist."""
        tmp = os.path.join(
            self.lock_dir, ".%s.%d.%s.tmp" % (os.path.basename(target), os.getpid(), uuid.uuid4().hex)
        )
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.write(fd, text.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            if exclusive:
                try:
                    os.link(tmp, target)
                except FileExistsError:
                    return False
            else:
                os.replace(tmp, target)
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        self._sync_dir()
        return True

    def _sync_dir(self) -> None:
        try:
            fd = os.open(self.lock_dir, os.O_RDONLY)
        except OSError:  # pragma: no cover - best effort durability
            return
        try:
            os.fsync(fd)
        except OSError:  # pragma: no cover
            pass
        finally:
            os.close(fd)

    def read(self, environment: str, now: datetime) -> Optional[Lock]:
        with self._errors(environment, "read"):
            return self._load(environment)

    def create(
        self,
        environment: str,
        fields: Holder,
        ttl: float,
        now: datetime,
        replace_token: Optional[int] = None,
    ) -> Tuple[bool, Optional[Lock]]:
        with self._errors(environment, "acquire"), self._guard(environment):
            current = self._load(environment)
            if current is not None and (replace_token is None or current.token != replace_token):
                return False, current
            token = max(self._fence(environment), (current.token or 0) if current else 0) + 1
            self._write_atomically(self.path(environment, "fence"), "%d\n" % token, exclusive=False)
            expires_at = ceil_to_second(now + timedelta(seconds=ttl))
            holder = dict(fields, expires_at=format_ts(expires_at), token=token)
            raw = json.dumps(holder, separators=(",", ":"))
            if current is not None:
                os.unlink(self.path(environment))
            if not self._write_atomically(self.path(environment), raw, exclusive=True):
                # someone wrote the lock file without taking the guard
                return False, self._load(environment)
            return True, Lock(holder, raw, expires_at)

    def delete(
        self, environment: str, token: Optional[int], raw: Optional[str] = None
    ) -> Tuple[str, Optional[Lock]]:
        with self._errors(environment, "release"), self._guard(environment):
            current = self._load(environment)
            if current is None:
                return "absent", None
            same = current.token == token if token is not None else current.raw == raw
            if not same:
                return "mismatch", current
            os.unlink(self.path(environment))
            self._sync_dir()
            return "deleted", current

    def extend(
        self, environment: str, token: int, ttl: float, now: datetime
    ) -> Tuple[str, Optional[Lock]]:
        with self._errors(environment, "refresh"), self._guard(environment):
            current = self._load(environment)
            if current is None:
                return "absent", None
            if current.token != token:
                return "mismatch", current
            expires_at = ceil_to_second(now + timedelta(seconds=ttl))
            holder = dict(current.holder, ttl=ttl, expires_at=format_ts(expires_at))
            raw = json.dumps(holder, separators=(",", ":"))
            self._write_atomically(self.path(environment), raw, exclusive=False)
            return "extended", Lock(holder, raw, expires_at)
