# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Redis store of the incident lock (``backend=redis``), for controllers that share work.

Key ``akig:incident-lock:<environment>`` holds the holder record (JSON) with a PX TTL;
``akig:incident-lock:<environment>:fence`` is the fencing-token counter. Every mutation is one
Lua script, so check-and-act is atomic on the server. Standalone Redis or a Sentinel primary;
not Redis Cluster (one script uses both keys).

The lock logic (who holds it, staleness, the operations) is in ``incident_lock.py``; this file
only stores and reads holder records.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, Dict, Iterator, Optional, Tuple

from ansible_collections.akig.runbooks.plugins.module_utils.incident_lock import Holder, Lock, LockError, parse_lock
from ansible_collections.akig.runbooks.plugins.module_utils.redact import Redactor

try:
    import redis as redis_lib
except ImportError:  # pragma: no cover - exercised only where redis-py is missing
    import traceback

    redis_lib = None  # type: ignore[assignment]
    HAS_REDIS = False
    REDIS_IMPORT_ERROR: Optional[str] = traceback.format_exc()
else:
    HAS_REDIS = True
    REDIS_IMPORT_ERROR = None

__all__ = ["HAS_REDIS", "KEY_PREFIX", "REDIS_IMPORT_ERROR", "RedisLockStore"]

KEY_PREFIX = "akig:incident-lock:"
REDIS_TIMEOUT_S = 5.0


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# KEYS[1] lock, KEYS[2] fence. ARGV[1] holder JSON object without token,
# ARGV[2] TTL in ms, ARGV[3] token of the (stale) lock to replace, or ''.
# Creates the lock when the key is absent, or replaces it when it still holds
# ARGV[3]; the token is INCR'd inside the script so that successive holders
# always get increasing tokens.  Returns {1, new, previous-or-''} / {0, current}.
_ACQUIRE_LUA = """
local current = redis.call('GET', KEYS[1])
if current then
  if ARGV[3] == '' then return {0, current} end
  local ok, holder = pcall(cjson.decode, current)
  if not ok or type(holder) ~= 'table' or holder['token'] ~= tonumber(ARGV[3]) then
    return {0, current}
  end
end
local token = redis.call('INCR', KEYS[2])
local value = string.sub(ARGV[1], 1, -2) .. ',"token":' .. string.format('%d', token) .. '}'
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {1, value, current or ''}
"""

# KEYS[1] lock. ARGV[1] token. Compare-and-delete: {1, deleted} / {0, ''} / {-1, current}.
_RELEASE_LUA = """
local current = redis.call('GET', KEYS[1])
if not current then return {0, ''} end
local ok, holder = pcall(cjson.decode, current)
if not ok or type(holder) ~= 'table' or holder['token'] ~= tonumber(ARGV[1]) then
  return {-1, current}
end
redis.call('DEL', KEYS[1])
return {1, current}
"""

# KEYS[1] lock. ARGV[1] raw value. Delete an unreadable lock only if unchanged.
_DELETE_RAW_LUA = """
local current = redis.call('GET', KEYS[1])
if not current then return {0, ''} end
if current ~= ARGV[1] then return {-1, current} end
redis.call('DEL', KEYS[1])
return {1, current}
"""

# KEYS[1] lock. ARGV[1] token, ARGV[2] TTL in ms. Compare-and-pexpire.
# {1, current, pttl} / {0, ''} / {-1, current}.
_REFRESH_LUA = """
local current = redis.call('GET', KEYS[1])
if not current then return {0, ''} end
local ok, holder = pcall(cjson.decode, current)
if not ok or type(holder) ~= 'table' or holder['token'] ~= tonumber(ARGV[1]) then
  return {-1, current}
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, current, redis.call('PTTL', KEYS[1])}
"""


def _ttl_ms(ttl: float) -> int:
    return max(1, int(round(ttl * 1000)))


class RedisLockStore:
    """Locks in Redis (standalone or the Sentinel primary; not Redis Cluster).

    ``client`` is a ``redis.Redis``; use :meth:`connect` to build one from the
    module options.  ``secrets`` are scrubbed from every error message.
    """

    backend = "redis"

    def __init__(self, client: Any, location: str, secrets: Tuple[str, ...] = ()) -> None:
        self._client = client
        self._location = location
        self._redact = Redactor(secrets)
        self._acquire = client.register_script(_ACQUIRE_LUA)
        self._release = client.register_script(_RELEASE_LUA)
        self._delete_raw = client.register_script(_DELETE_RAW_LUA)
        self._refresh = client.register_script(_REFRESH_LUA)

    @classmethod
    def connect(
        cls,
        host: str,
        port: int = 6379,
        password: Optional[str] = None,
        db: int = 0,
        timeout: float = REDIS_TIMEOUT_S,
    ) -> "RedisLockStore":
        if not HAS_REDIS:
            raise LockError(
                "cannot use the redis backend of the incident lock: the Python library redis "
                "is not installed for the interpreter running the module; install it "
                "(pip install redis) or use backend=file on a single controller"
            )
        options: Dict[str, Any] = {}
        try:
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:  # pragma: no cover - redis-py < 4.2 does not retry by default
            pass
        else:
            # No silent retries: a retried acquire script could run twice on the server.
            # A failed call fails the task and the operator re-runs it.
            options["retry"] = Retry(NoBackoff(), 0)
        client = redis_lib.Redis(
            host=host,
            port=port,
            db=db,
            password=password or None,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            **options,
        )
        return cls(client, "%s:%s db %s" % (host, port, db), secrets=(password or "",))

    @staticmethod
    def key(environment: str) -> str:
        return KEY_PREFIX + environment

    def describe(self, environment: str) -> str:
        return "redis key %s on %s" % (self.key(environment), self._location)

    @contextmanager
    def _errors(self, environment: str, operation: str) -> Iterator[None]:
        try:
            yield
        except LockError:
            raise
        except Exception as exc:  # redis.RedisError and socket errors alike
            if HAS_REDIS and not isinstance(exc, (redis_lib.RedisError, OSError)):
                raise
            detail = self._redact("%s: %s" % (type(exc).__name__, exc))
            raise LockError(
                "cannot %s the incident lock for environment '%s' (%s): Redis did not answer "
                "as expected (%s); check redis_host, redis_port, redis_db and redis_password and "
                "that this controller can reach that Redis, then re-run"
                % (operation, environment, self.describe(environment), detail)
            ) from None

    def read(self, environment: str, now: datetime) -> Optional[Lock]:
        with self._errors(environment, "read"):
            pipe = self._client.pipeline(transaction=True)
            pipe.get(self.key(environment))
            pipe.pttl(self.key(environment))
            raw, pttl = pipe.execute()
        if raw is None:
            return None
        return parse_lock(_text(raw), self._expiry(now, pttl), expires_from_record=False)

    @staticmethod
    def _expiry(now: datetime, pttl: Any) -> Optional[datetime]:
        pttl = int(pttl)
        if pttl < 0:  # -1: no TTL (set by hand), -2: gone meanwhile
            return None
        return now + timedelta(milliseconds=pttl)

    def create(
        self,
        environment: str,
        fields: Holder,
        ttl: float,
        now: datetime,
        replace_token: Optional[int] = None,
    ) -> Tuple[bool, Optional[Lock]]:
        """Create the lock, or replace the lock holding ``replace_token``.

        Returns (True, new lock) or (False, the lock that is there instead).
        """
        body = json.dumps(fields, separators=(",", ":"))
        with self._errors(environment, "acquire"):
            reply = self._acquire(
                keys=[self.key(environment), self.key(environment) + ":fence"],
                args=[body, _ttl_ms(ttl), "" if replace_token is None else str(replace_token)],
            )
        if int(reply[0]) == 1:
            return True, parse_lock(_text(reply[1]), now + timedelta(seconds=ttl), False)
        return False, parse_lock(_text(reply[1]), None, False)

    def delete(
        self, environment: str, token: Optional[int], raw: Optional[str] = None
    ) -> Tuple[str, Optional[Lock]]:
        """Delete the lock if it still holds ``token`` (or, with token None, is still ``raw``).

        Returns ("deleted", deleted lock), ("absent", None) or ("mismatch", current lock).
        """
        with self._errors(environment, "release"):
            if token is not None:
                reply = self._release(keys=[self.key(environment)], args=[str(token)])
            else:
                reply = self._delete_raw(keys=[self.key(environment)], args=[raw or ""])
        status = int(reply[0])
        if status == 0:
            return "absent", None
        lock = parse_lock(_text(reply[1]), None, False)
        return ("deleted" if status == 1 else "mismatch"), lock

    def extend(
        self, environment: str, token: int, ttl: float, now: datetime
    ) -> Tuple[str, Optional[Lock]]:
        """Reset the TTL of the lock holding ``token``: ("extended" | "absent" | "mismatch", lock)."""
        with self._errors(environment, "refresh"):
            reply = self._refresh(keys=[self.key(environment)], args=[str(token), _ttl_ms(ttl)])
        status = int(reply[0])
        if status == 0:
            return "absent", None
        if status == -1:
            return "mismatch", parse_lock(_text(reply[1]), None, False)
        return "extended", parse_lock(_text(reply[1]), self._expiry(now, reply[2]), False)
