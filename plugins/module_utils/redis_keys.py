# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Redis keys of one database, by pattern: read them, back them up, remove them, put them back.

The logic of the modules ``redis_keys_info`` and ``redis_keys`` (and of the role ``redis_flush``):

* **Read** (:func:`keys_info`): ``SCAN`` (never ``KEYS``) in batches, ``TYPE`` and ``PTTL`` of each
  key in one pipeline per batch; counts by type, the TTL summary, a bounded sample of key *names*,
  and, with an expected type, the anomalies (wrong type, no TTL, a value that is not JSON in a
  bounded sample). Values are never returned.
* **Remove by pattern** (:func:`remove_keys`): per batch, ``TYPE`` + ``PTTL`` + ``DUMP``, the batch
  is written to the backup and ``fsync``-ed, then a Lua script ``UNLINK``\\s each key *only if its
  ``DUMP`` is still the one in the backup* (SHA-1 compared on the server): what is removed is
  exactly what the backup holds; a key changed or gone meanwhile is left alone and marked ``skip``
  in the backup. Memory is bounded by the batch size.
* **Remove a whole database** (no pattern): the same backup of every key, then ``DBSIZE`` and
  ``FLUSHDB`` in one ``MULTI`` (``FLUSHALL`` only with ``flush_all``, every database backed up).
* **Restore** (:func:`restore_keys`): ``RESTORE`` of each line with its remaining TTL (a key whose
  TTL ran out since the backup is not restored); a key that exists again is left as it is unless
  ``replace``.

The backup is JSON lines, mode 0600 in a 0700 directory: a header (``format``, ``version``,
``created_ms``, ``server``, ``db``, ``pattern``, ``mode``), one line per key (``n`` its number, ``db``,
``k`` the key and ``v`` the ``DUMP`` payload in base64, ``type``, ``pttl`` in ms or -1, ``at_ms`` when
it was dumped), ``skip`` lines (``skip``: the number of a key line that was not removed), and a footer
(``end``: counts). A run that stopped half-way leaves no
footer; its lines still hold every key removed up to then.

Standalone Redis or a Sentinel primary; not Redis Cluster. Errors are :class:`RedisKeysError`
with a message naming the server (host:port), the database and what to do; the password never
appears (messages go through :class:`~redact.Redactor`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

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

__all__ = [
    "BACKUP_FORMAT", "HAS_REDIS", "REDIS_IMPORT_ERROR", "RedisKeysError", "Server", "BackupWriter",
    "backup_file_name", "connect", "flush_input_problems", "keys_info", "parse_keyspace", "read_backup",
    "remove_keys", "restore_hint", "restore_keys", "ttl_summary",
]

BACKUP_FORMAT = "akig.runbooks.redis_keys/backup"
BACKUP_VERSION = 1
REDIS_TIMEOUT_S = 10.0
STATIC_MAX_DB = 15  # Redis' default ``databases 16``: the static check of the role (the live one asks CONFIG GET)
REDIS_TYPES = ("string", "list", "set", "zset", "hash", "stream")
SAMPLE_MAX = 1000
ANOMALY_SAMPLE = 10

# KEYS: the keys of one batch; ARGV: the SHA-1 (hex) of the DUMP payload backed up for each.
# UNLINK a key only while its DUMP is still that payload. Returns 1 (removed), 0 (changed since the
# backup: left alone) or -1 (gone meanwhile) per key.
_UNLINK_IF_UNCHANGED_LUA = """
local result = {}
for i, key in ipairs(KEYS) do
  local payload = redis.call('DUMP', key)
  if not payload then
    result[i] = -1
  elseif redis.sha1hex(payload) == ARGV[i] then
    redis.call('UNLINK', key)
    result[i] = 1
  else
    result[i] = 0
  end
end
return result
"""


# KEYS: the keys of one batch; ARGV[1]: '1' to DUMP them too. Returns TYPE, PTTL (and the DUMP payload, nil
# when the key is gone) of each key, flat. Read-only.
_DESCRIBE_LUA = """
local out = {}
local n = 0
for _, key in ipairs(KEYS) do
  out[n + 1] = redis.call('TYPE', key)['ok']
  out[n + 2] = redis.call('PTTL', key)
  n = n + 2
  if ARGV[1] == '1' then
    out[n + 1] = redis.call('DUMP', key)
    n = n + 1
  end
end
return out
"""


class RedisKeysError(Exception):
    """A failure to report with ``fail_json``: ``msg`` says what, where and what to do; ``result`` is returned too."""

    def __init__(self, msg: str, **result: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.result = result


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------- inputs (pure)


def _as_int(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return None


def _as_bool(value: Any) -> Optional[bool]:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.strip().lower() in ("true", "yes", "on", "1")
    return None


def whole_db(pattern: Any) -> bool:
    """An empty pattern, or one that matches every key (``*``, ``**``), means the whole database."""
    return pattern is None or (isinstance(pattern, str) and pattern.strip("*") == "")


def flush_input_problems(inputs: Mapping[str, Any]) -> list[str]:
    """Every problem with the inputs of the redis_flush role, checked without connecting anywhere.

    ``inputs``: ``akig_environment``, ``redis_flush_db``, ``redis_flush_pattern``, ``redis_flush_confirm``,
    ``redis_flush_confirm_exempt_environments``, ``redis_flush_batch_size``, ``redis_flush_backup_dir``,
    ``redis_flush_login_host``, ``redis_flush_login_port``, ``redis_flush_protected_dbs``. One sentence per
    problem, naming the input; an empty list when there is none.
    """
    problems: list[str] = []
    env = inputs.get("akig_environment")
    db = _as_int(inputs.get("redis_flush_db"))
    if db is None or not 0 <= db <= STATIC_MAX_DB:
        problems.append(
            "redis_flush_db must be a database index from 0 to %d (Redis' default 16 databases; the module checks the "
            "server's own count), got %r" % (STATIC_MAX_DB, inputs.get("redis_flush_db")))
    pattern = inputs.get("redis_flush_pattern")
    if pattern is not None and not isinstance(pattern, str):
        problems.append("redis_flush_pattern must be a string (a SCAN MATCH pattern such as 'akig:sess:*', or empty "
                        "for the whole database), got %s" % type(pattern).__name__)
        pattern = None
    confirm = _as_bool(inputs.get("redis_flush_confirm", False))
    if confirm is None:
        problems.append("redis_flush_confirm must be true or false, got %r" % inputs.get("redis_flush_confirm"))
        confirm = False
    exempt = inputs.get("redis_flush_confirm_exempt_environments") or []
    if not isinstance(exempt, (list, tuple)) or not all(isinstance(item, str) for item in exempt):
        problems.append("redis_flush_confirm_exempt_environments must be a list of environment names")
        exempt = []
    where = "database %s" % (db if db is not None else inputs.get("redis_flush_db"))
    if whole_db(pattern) and not confirm:
        problems.append(
            "emptying the whole %s (redis_flush_pattern %r matches every key) needs redis_flush_confirm=true in every "
            "environment; give a narrower redis_flush_pattern such as 'akig:sess:*', or confirm with "
            "-e redis_flush_confirm=true" % (where, pattern or ""))
    elif not confirm and (not isinstance(env, str) or env not in exempt):
        problems.append(
            "removing keys in environment %r needs redis_flush_confirm=true (exempt environments: %s); re-run with "
            "-e redis_flush_confirm=true once the backup location (redis_flush_backup_dir) is right"
            % (env, ", ".join(exempt) or "none"))
    protected = inputs.get("redis_flush_protected_dbs") or []
    if not isinstance(protected, (list, tuple)):
        problems.append("redis_flush_protected_dbs must be a list of database indexes")
    elif db is not None and whole_db(pattern) and db in [_as_int(item) for item in protected]:
        problems.append(
            "redis_flush_db %d is protected (redis_flush_protected_dbs: it holds the incident locks); a whole-database "
            "flush of it is refused, give a redis_flush_pattern instead" % db)
    batch = _as_int(inputs.get("redis_flush_batch_size", 1000))
    if batch is None or not 1 <= batch <= 100000:
        problems.append("redis_flush_batch_size must be a whole number from 1 to 100000, got %r"
                        % inputs.get("redis_flush_batch_size"))
    backup_dir = inputs.get("redis_flush_backup_dir")
    if not isinstance(backup_dir, str) or not backup_dir.startswith("/"):
        problems.append("redis_flush_backup_dir must be an absolute directory path on the controller, got %r"
                        % backup_dir)
    host = inputs.get("redis_flush_login_host")
    if "redis_flush_login_host" in inputs and (not isinstance(host, str) or not host.strip()):
        problems.append("redis_flush_login_host must be the Redis server's address (default: the first host of the "
                        "redis group's akig_address), got %r" % host)
    if "redis_flush_login_port" in inputs:
        port = _as_int(inputs.get("redis_flush_login_port"))
        if port is None or not 1 <= port <= 65535:
            problems.append("redis_flush_login_port must be a TCP port from 1 to 65535, got %r"
                            % inputs.get("redis_flush_login_port"))
    return problems


def ttl_summary(pttls: Sequence[int]) -> dict[str, Any]:
    """``{with_ttl, no_ttl, min_s, max_s}`` of PTTL replies (ms; -1 no TTL, -2 gone: ignored)."""
    summary = _TtlStats()
    for pttl in pttls:
        summary.add(int(pttl))
    return summary.result()


@dataclass
class _TtlStats:
    with_ttl: int = 0
    no_ttl: int = 0
    min_ms: Optional[int] = None
    max_ms: Optional[int] = None

    def add(self, pttl: int) -> None:
        if pttl == -1:
            self.no_ttl += 1
        elif pttl >= 0:
            self.with_ttl += 1
            self.min_ms = pttl if self.min_ms is None else min(self.min_ms, pttl)
            self.max_ms = pttl if self.max_ms is None else max(self.max_ms, pttl)

    def result(self) -> dict[str, Any]:
        return {
            "with_ttl": self.with_ttl,
            "no_ttl": self.no_ttl,
            "min_s": None if self.min_ms is None else round(self.min_ms / 1000.0, 3),
            "max_s": None if self.max_ms is None else round(self.max_ms / 1000.0, 3),
        }


def parse_keyspace(info: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """INFO keyspace as redis-py parses it (``{'db0': {'keys': 3, 'expires': 1, 'avg_ttl': 0}}``), plain ints."""
    keyspace: dict[str, dict[str, int]] = {}
    for name, value in info.items():
        if re.fullmatch(r"db\d+", str(name)) and isinstance(value, Mapping):
            keyspace[str(name)] = {str(k): int(v) for k, v in value.items() if _as_int(v) is not None}
    return dict(sorted(keyspace.items(), key=lambda item: int(item[0][2:])))


def backup_file_name(db: Optional[int], pattern: Optional[str], now_ms: int, pid: int) -> str:
    """``redis-db3-akig_sess_-20261130T162200123Z-4242.jsonl``: db, the pattern made file-safe, UTC time, pid."""
    where = "all" if db is None else "db%d" % db
    what = re.sub(r"[^A-Za-z0-9._-]+", "_", pattern or "").strip("_")[:40] or "whole"
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ms / 1000.0)) + "%03dZ" % (now_ms % 1000)
    return "redis-%s-%s-%s-%d.jsonl" % (where, what, stamp, pid)


def restore_hint(backup_path: str, server: "Server", db: Optional[int]) -> dict[str, Any]:
    """How to put the removed keys back: the module call and the role entry point."""
    args = {"state": "restored", "backup_path": backup_path, "login_host": server.host, "login_port": server.port}
    where = "" if db is None else "; they go back to database %d" % db
    return {
        "module": "akig.runbooks.redis_keys",
        "args": args,
        "role": "ansible.builtin.include_role: {name: akig.runbooks.redis_flush, tasks_from: restore} with "
                "redis_flush_restore_path=%s" % backup_path,
        "text": ("restore with akig.runbooks.redis_keys state=restored backup_path=%s login_host=%s login_port=%d "
                 "(and login_password) on this controller; keys that exist again are kept, keys whose TTL ran out "
                 "are not restored%s" % (backup_path, server.host, server.port, where)),
    }


# --------------------------------------------------------------------------- the server


@dataclass
class Server:
    """Where and how to connect (the module's login_* and TLS options)."""

    host: str = "localhost"
    port: int = 6379
    password: Optional[str] = None
    user: Optional[str] = None
    tls: bool = False
    validate_certs: bool = True
    ca_certs: Optional[str] = None
    client_cert_file: Optional[str] = None
    client_key_file: Optional[str] = None
    timeout: float = REDIS_TIMEOUT_S
    redact: Redactor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.redact = Redactor([self.password or ""])

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "Server":
        return cls(host=params.get("login_host") or "localhost", port=int(params.get("login_port") or 6379),
                   password=params.get("login_password") or None, user=params.get("login_user") or None,
                   tls=bool(params.get("tls")), validate_certs=bool(params.get("validate_certs", True)),
                   ca_certs=params.get("ca_certs"), client_cert_file=params.get("client_cert_file"),
                   client_key_file=params.get("client_key_file"),
                   timeout=float(params.get("timeout") or REDIS_TIMEOUT_S))

    @property
    def where(self) -> str:
        return "%s:%d" % (self.host, self.port)

    def client(self, db: int) -> Any:
        options: dict[str, Any] = {}
        try:
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:  # pragma: no cover - redis-py < 4.2
            pass
        else:
            options["retry"] = Retry(NoBackoff(), 0)  # a retried removal could run twice: no silent retries
        if self.tls:
            options.update(ssl=True, ssl_cert_reqs="required" if self.validate_certs else None,
                           ssl_ca_certs=self.ca_certs, ssl_certfile=self.client_cert_file,
                           ssl_keyfile=self.client_key_file)
        return redis_lib.Redis(host=self.host, port=self.port, db=db, password=self.password, username=self.user,
                               socket_timeout=self.timeout, socket_connect_timeout=self.timeout, **options)

    def error(self, exc: BaseException, operation: str, db: Optional[int] = None) -> RedisKeysError:
        """A RedisKeysError for ``exc``: what failed, on which server, what to check."""
        detail = self.redact("%s: %s" % (type(exc).__name__, exc))
        where = self.where + ("" if db is None else " (database %d)" % db)
        if HAS_REDIS and isinstance(exc, redis_lib.AuthenticationError):
            return RedisKeysError(
                "cannot %s on Redis at %s: authentication failed (%s); check login_password (and login_user) for "
                "that server" % (operation, where, detail), error_kind="auth")
        if HAS_REDIS and isinstance(exc, redis_lib.ResponseError) and "NOPERM" in str(exc):
            return RedisKeysError(
                "cannot %s on Redis at %s: the user may not run that command (%s); give login_user the rights for "
                "SCAN, TYPE, PTTL, DUMP, UNLINK, RESTORE, EVAL and CONFIG GET" % (operation, where, detail),
                error_kind="permission")
        if HAS_REDIS and isinstance(exc, (redis_lib.ConnectionError, redis_lib.TimeoutError)) or isinstance(exc, OSError):
            return RedisKeysError(
                "cannot %s: Redis at %s is unreachable (%s); check login_host and login_port and that this host can "
                "reach that server" % (operation, where, detail), error_kind="unreachable")
        return RedisKeysError("cannot %s on Redis at %s: %s" % (operation, where, detail), error_kind="redis")


def _database_count(client: Any) -> Optional[int]:
    try:
        reply = client.config_get("databases")
    except redis_lib.ResponseError:  # CONFIG renamed or forbidden in a hardened production: no live bound
        return None
    value = reply.get("databases") if isinstance(reply, Mapping) else None
    return _as_int(_text(value)) if value is not None else None


def connect(server: Server, db: Optional[int], operation: str, writable: bool = False) -> tuple[Any, dict[str, Any]]:
    """A client on database ``db`` after checking the index, the credentials and (``writable``) the role.

    Returns ``(client, facts)``: ``databases`` (CONFIG GET databases, None when CONFIG is not allowed),
    ``role``, ``version``, ``keyspace``.
    """
    if not HAS_REDIS:
        raise RedisKeysError("the Python library redis is not installed for the interpreter running the module; "
                             "install it (pip install redis) on the host that runs the module")
    if db is not None and db < 0:
        raise RedisKeysError("db %d is out of range: a Redis database index is 0 or more; nothing was read or changed"
                             % db, error_kind="db_range")
    probe = server.client(0)
    try:
        probe.ping()
        databases = _database_count(probe)
        info = probe.info()
    except Exception as exc:  # redis errors and socket errors alike
        if HAS_REDIS and not isinstance(exc, (redis_lib.RedisError, OSError)):
            raise
        raise server.error(exc, operation, db) from None
    finally:
        probe.close()
    facts = {
        "databases": databases,
        "role": str(info.get("role", "")),
        "version": str(info.get("redis_version", "")),
        "keyspace": parse_keyspace(info),
    }
    if db is not None and databases is not None and db >= databases:
        raise RedisKeysError(
            "db %d is out of range: Redis at %s has %d databases (0 to %d, CONFIG GET databases); nothing was read or "
            "changed" % (db, server.where, databases, databases - 1), error_kind="db_range", **facts)
    if writable and facts["role"] not in ("master", ""):
        raise RedisKeysError(
            "cannot %s on Redis at %s: it is a %s (read-only); run against the primary; nothing was changed"
            % (operation, server.where, facts["role"]), error_kind="replica", **facts)
    client = server.client(db or 0)
    try:
        client.ping()  # SELECT happens here: a server without CONFIG still refuses an index out of range
    except Exception as exc:
        if HAS_REDIS and isinstance(exc, redis_lib.ResponseError) and "DB index" in str(exc):
            raise RedisKeysError("db %s is out of range on Redis at %s (%s); nothing was read or changed"
                                 % (db, server.where, server.redact(exc)), error_kind="db_range", **facts) from None
        if HAS_REDIS and not isinstance(exc, (redis_lib.RedisError, OSError)):
            raise
        raise server.error(exc, operation, db) from None
    return client, facts


def _guard(server: Server, operation: str, db: Optional[int]) -> Callable[[BaseException], RedisKeysError]:
    def convert(exc: BaseException) -> RedisKeysError:
        return server.error(exc, operation, db)
    return convert


# --------------------------------------------------------------------------- read


def scan_batches(client: Any, pattern: Optional[str], batch_size: int) -> Iterator[list[bytes]]:
    """The keys matching ``pattern`` (every key when None), ``batch_size`` at a time, by SCAN (never KEYS).

    SCAN returns every key present for the whole scan, possibly twice while the server rehashes.
    """
    cursor: Any = 0
    pending: list[bytes] = []
    while True:
        cursor, keys = client.scan(cursor=cursor, match=pattern or None, count=batch_size)
        pending.extend(keys)
        while len(pending) >= batch_size:
            yield pending[:batch_size]
            pending = pending[batch_size:]
        if int(cursor) == 0:
            break
    if pending:
        yield pending


def _types_and_ttls(client: Any, keys: Sequence[bytes], dump: bool = False) -> list[tuple[str, int, Optional[bytes]]]:
    """TYPE, PTTL (and DUMP) of each key, in one read-only script call per batch (a pipeline of three
    commands per key spends most of its time packing and parsing them in the client)."""
    if not keys:
        return []
    replies = client.eval(_DESCRIBE_LUA, len(keys), *keys, "1" if dump else "0")
    step = 3 if dump else 2
    out = []
    for index in range(len(keys)):
        chunk = replies[index * step:(index + 1) * step]
        out.append((_text(chunk[0]), int(chunk[1]), (chunk[2] or None) if dump else None))
    return out


def keys_info(server: Server, db: int, pattern: Optional[str], batch_size: int = 1000, sample_size: int = 10,
              expect_type: Optional[str] = None, require_ttl: bool = False, json_check: int = 0) -> dict[str, Any]:
    """What matches ``pattern`` in ``db``: counts, types, TTLs, key names sampled, anomalies; values never."""
    client, facts = connect(server, db, "read keys")
    convert = _guard(server, "read keys", db)
    by_type: dict[str, int] = {}
    ttls = _TtlStats()
    sample: list[str] = []
    wrong_type = no_ttl = not_json = json_checked = 0
    wrong_sample: list[str] = []
    no_ttl_sample: list[str] = []
    not_json_sample: list[str] = []
    count = 0
    try:
        for batch in scan_batches(client, None if whole_db(pattern) else pattern, batch_size):
            batch = list(dict.fromkeys(batch))
            described = _types_and_ttls(client, batch)
            to_check: list[bytes] = []
            for key, (kind, pttl, _dump) in zip(batch, described):
                if kind == "none" or pttl == -2:
                    continue  # expired or removed since the SCAN
                count += 1
                by_type[kind] = by_type.get(kind, 0) + 1
                ttls.add(pttl)
                if len(sample) < sample_size:
                    sample.append(_text(key))
                if expect_type and kind != expect_type:
                    wrong_type += 1
                    if len(wrong_sample) < ANOMALY_SAMPLE:
                        wrong_sample.append(_text(key))
                if require_ttl and pttl == -1:
                    no_ttl += 1
                    if len(no_ttl_sample) < ANOMALY_SAMPLE:
                        no_ttl_sample.append(_text(key))
                if json_check and kind == "string" and json_checked + len(to_check) < json_check:
                    to_check.append(key)
            if to_check:
                for key, raw in zip(to_check, client.mget(to_check)):
                    if raw is None:
                        continue
                    json_checked += 1
                    try:
                        json.loads(raw)
                    except ValueError:
                        not_json += 1
                        if len(not_json_sample) < ANOMALY_SAMPLE:
                            not_json_sample.append(_text(key))
        dbsize = int(client.dbsize())
    except RedisKeysError:
        raise
    except Exception as exc:
        if HAS_REDIS and not isinstance(exc, (redis_lib.RedisError, OSError)):
            raise
        raise convert(exc) from None
    finally:
        client.close()
    result: dict[str, Any] = {
        "db": db,
        "pattern": pattern or "",
        "whole_db": whole_db(pattern),
        "count": count,
        "by_type": dict(sorted(by_type.items())),
        "ttl": ttls.result(),
        "sample": sample,
        "dbsize": dbsize,
        "keyspace": facts["keyspace"],
        "databases": facts["databases"],
        "server": {"address": server.where, "role": facts["role"], "version": facts["version"]},
    }
    anomalies = {
        "expect_type": expect_type or None,
        "require_ttl": bool(require_ttl),
        "wrong_type": wrong_type,
        "wrong_type_sample": wrong_sample,
        "no_ttl": no_ttl,
        "no_ttl_sample": no_ttl_sample,
        "json_checked": json_checked,
        "not_json": not_json,
        "not_json_sample": not_json_sample,
    }
    anomalies["total"] = wrong_type + no_ttl + not_json
    result["anomalies"] = anomalies
    result["healthy"] = anomalies["total"] == 0
    return result


# --------------------------------------------------------------------------- backup


class BackupWriter:
    """The backup file: created 0600 (O_EXCL) in a 0700 directory before anything is removed, fsync'd per batch."""

    def __init__(self, directory: str, name: str, header: Mapping[str, Any]) -> None:
        self.path = os.path.join(directory, name)
        self.keys = 0
        self.skipped = 0
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise RedisKeysError(
                "cannot write the backup in %s (%s); nothing was removed; give backup_dir a directory this host "
                "can write (redis_flush_backup_dir in the role)" % (directory, exc.strerror or exc),
                error_kind="backup") from None
        self._file = os.fdopen(fd, "w", encoding="utf-8")
        self._directory = directory
        self.write(dict(header, format=BACKUP_FORMAT, version=BACKUP_VERSION))
        self.sync()

    def write(self, record: Mapping[str, Any]) -> None:
        try:
            self._file.write(json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n")
        except OSError as exc:
            raise self._failed(exc) from None

    def key(self, db: int, key: bytes, kind: str, pttl: int, payload: bytes, at_ms: int) -> int:
        """Write one key; returns its number ``n`` in the file (a ``skip`` line names it)."""
        self.keys += 1
        self.write({"n": self.keys, "db": db, "k": _b64(key), "type": kind, "pttl": pttl, "v": _b64(payload),
                    "at_ms": at_ms})
        return self.keys

    def skip(self, number: int, db: int, key: bytes, why: str) -> None:
        """Key line ``number`` was not removed (changed or gone after it was written): restore ignores it."""
        self.write({"skip": number, "db": db, "k_skipped": _b64(key), "why": why})
        self.skipped += 1

    def sync(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: OSError) -> RedisKeysError:
        return RedisKeysError("cannot write the backup %s (%s); the batch being written was not removed and nothing "
                              "more is removed" % (self.path, exc.strerror or exc), error_kind="backup")

    def close(self, footer: Optional[Mapping[str, Any]] = None) -> None:
        if self._file.closed:
            return
        if footer is not None:
            self.write({"end": True, **footer})
        self.sync()
        self._file.close()

    def abandon(self, footer: Mapping[str, Any]) -> None:
        """After a failure: end the file with ``footer`` if the disk still takes it, never raising."""
        try:
            self.close(footer)
        except (RedisKeysError, OSError, ValueError):
            try:
                self._file.close()
            except OSError:
                pass

    def discard(self) -> None:
        """Nothing was removed: no backup to keep."""
        if not self._file.closed:
            self._file.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _check_backup_dir(directory: str) -> None:
    """Refuse a backup directory that cannot be written (check mode and before connecting)."""
    probe = directory
    while not os.path.isdir(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RedisKeysError("cannot write the backup in %s (%s is not writable by this user); nothing was removed; "
                             "give backup_dir a directory this host can write (redis_flush_backup_dir in the role)"
                             % (directory, probe), error_kind="backup")


# --------------------------------------------------------------------------- remove


def _count(server: Server, client: Any, db: int, pattern: Optional[str], batch_size: int,
           convert: Callable[[BaseException], RedisKeysError]) -> tuple[int, dict[str, int]]:
    count = 0
    by_type: dict[str, int] = {}
    try:
        for batch in scan_batches(client, pattern, batch_size):
            for kind, pttl, _dump in _types_and_ttls(client, list(dict.fromkeys(batch))):
                if kind == "none" or pttl == -2:
                    continue
                count += 1
                by_type[kind] = by_type.get(kind, 0) + 1
    except Exception as exc:
        if HAS_REDIS and not isinstance(exc, (redis_lib.RedisError, OSError)):
            raise
        raise convert(exc) from None
    return count, dict(sorted(by_type.items()))


def remove_keys(server: Server, db: int, pattern: Optional[str], backup_dir: str, batch_size: int = 1000,
                check_mode: bool = False, flush_all: bool = False, flush_async: bool = True,
                progress: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """Remove the keys of ``db`` matching ``pattern`` (whole database when empty) after backing them up.

    ``flush_all`` (no pattern): every database, FLUSHALL. ``progress(removed)`` is called after each batch.
    Returns ``changed``, ``db``, ``pattern``, ``mode``, ``matched``, ``removed``, ``removed_by_type``,
    ``skipped``, ``backup_path``, ``restore``, ``actions``.
    """
    pattern = None if whole_db(pattern) else pattern
    if flush_all and pattern is not None:
        raise RedisKeysError("flush_all empties every database: it takes no pattern (got %r); nothing was changed"
                             % pattern, error_kind="input")
    mode = "flushall" if flush_all else ("pattern" if pattern else "flushdb")
    target = "every database" if flush_all else "database %d" % db
    what = "keys matching %r in %s" % (pattern, target) if pattern else "keys of %s" % target
    _check_backup_dir(backup_dir)
    operation = "remove keys"
    client, facts = connect(server, None if flush_all else db, operation, writable=True)
    convert = _guard(server, operation, db)
    dbs = [db]
    client_db = db
    if flush_all:
        dbs = [int(name[2:]) for name in facts["keyspace"]]
        client_db = 0
    base: dict[str, Any] = {
        "db": None if flush_all else db, "pattern": pattern or "", "mode": mode, "server": server.where,
        "skipped": 0, "backup_path": None, "restore": None,
    }
    try:
        if check_mode:
            matched = 0
            by_type: dict[str, int] = {}
            for index in dbs:
                scan_client = client if index == client_db else server.client(index)
                found, kinds = _count(server, scan_client, index, pattern, batch_size, convert)
                if scan_client is not client:
                    scan_client.close()
                matched += found
                for kind, number in kinds.items():
                    by_type[kind] = by_type.get(kind, 0) + number
            actions = (["would back up then remove %d %s (%s)" % (matched, what, _kinds(by_type))] if matched
                       else ["nothing to remove: no %s" % what])
            return dict(base, changed=matched > 0, matched=matched, removed=0, would_remove=matched,
                        removed_by_type={}, matched_by_type=dict(sorted(by_type.items())), actions=actions)
        return _remove(server, client, client_db, dbs, pattern, mode, what, backup_dir, batch_size, flush_async,
                       base, convert, progress)
    finally:
        client.close()


def _kinds(by_type: Mapping[str, int]) -> str:
    return ", ".join("%s %d" % item for item in sorted(by_type.items())) or "none"


def _remove(server: Server, client: Any, client_db: int, dbs: list[int], pattern: Optional[str], mode: str, what: str,
            backup_dir: str, batch_size: int, flush_async: bool, base: dict[str, Any],
            convert: Callable[[BaseException], RedisKeysError],
            progress: Optional[Callable[[int], None]]) -> dict[str, Any]:
    created = _now_ms()
    header = {"created_ms": created, "server": server.where, "db": base["db"], "pattern": pattern or "", "mode": mode}
    writer = BackupWriter(backup_dir, backup_file_name(base["db"], pattern, created, os.getpid()), header)
    removed = matched = skipped = 0
    removed_by_type: dict[str, int] = {}
    backed_by_type: dict[str, int] = {}
    flushed_size: Optional[int] = None
    try:
        for index in dbs:
            db_client = client if index == client_db else server.client(index)
            unlink = db_client.register_script(_UNLINK_IF_UNCHANGED_LUA) if mode == "pattern" else None
            for batch in scan_batches(db_client, pattern, batch_size):
                batch = list(dict.fromkeys(batch))  # SCAN may return a key twice while the server rehashes
                at_ms = _now_ms()
                kept: list[tuple[bytes, str, str, int]] = []
                for key, (kind, pttl, payload) in zip(batch, _types_and_ttls(db_client, batch, dump=True)):
                    if payload is None or kind == "none" or pttl == -2:
                        continue  # gone since the SCAN (or removed by an earlier batch that saw it too)
                    number = writer.key(index, key, kind, pttl, payload, at_ms)
                    backed_by_type[kind] = backed_by_type.get(kind, 0) + 1
                    kept.append((key, kind, hashlib.sha1(payload).hexdigest(), number))  # nosec - a fingerprint
                matched += len(kept)
                writer.sync()  # the batch is on disk before any of it is removed
                if unlink is None or not kept:
                    continue
                replies = unlink(keys=[item[0] for item in kept], args=[item[2] for item in kept])
                for (key, kind, _sha, number), reply in zip(kept, replies):
                    if int(reply) == 1:
                        removed += 1
                        removed_by_type[kind] = removed_by_type.get(kind, 0) + 1
                    else:
                        skipped += 1
                        writer.skip(number, index, key, "changed" if int(reply) == 0 else "gone")
                if progress is not None:
                    progress(removed)
            if db_client is not client:
                db_client.close()
        if mode != "pattern" and matched:
            pipe = client.pipeline(transaction=True)
            pipe.dbsize()
            if mode == "flushall":
                pipe.flushall(asynchronous=flush_async)
            else:
                pipe.flushdb(asynchronous=flush_async)
            flushed_size = int(pipe.execute()[0])
            removed = matched if mode == "flushall" else flushed_size
            removed_by_type = dict(backed_by_type)
    except RedisKeysError as error:
        writer.abandon({"keys": writer.keys, "removed": removed, "complete": False})
        error.msg += "; %d key(s) were removed before, all of them are in the backup (restore it with state=restored)" % (
            removed)
        error.result.update(removed=removed, backup_path=writer.path)
        raise
    except Exception as exc:
        if HAS_REDIS and not isinstance(exc, (redis_lib.RedisError, OSError)):
            raise
        writer.abandon({"keys": writer.keys, "removed": removed, "complete": False})
        error = convert(exc)
        error.msg += "; %d key(s) were removed before the failure, all of them are in the backup %s" % (
            removed, writer.path)
        error.result.update(removed=removed, backup_path=writer.path)
        raise error from None
    if matched == 0:
        writer.discard()
        return dict(base, changed=False, matched=0, removed=0, removed_by_type={},
                    actions=["nothing to remove: no %s" % what])
    writer.close({"keys": writer.keys, "removed": removed, "skipped": skipped, "complete": True})
    result = dict(base, changed=removed > 0, matched=matched, removed=removed,
                  removed_by_type=dict(sorted(removed_by_type.items())), skipped=skipped, backup_path=writer.path,
                  backup_keys=writer.keys, restore=restore_hint(writer.path, server, base["db"]))
    actions = ["backed up %d %s to %s" % (writer.keys, what, writer.path)]
    if mode == "pattern":
        actions.append("removed %d of them (SCAN + UNLINK in batches of %d)%s" % (
            removed, batch_size, "; %d changed or gone meanwhile were left alone" % skipped if skipped else ""))
    else:
        actions.append("%s: %d key(s) removed" % ("FLUSHALL" if mode == "flushall" else "FLUSHDB of database %d"
                                                  % client_db, removed))
        if flushed_size is not None and mode == "flushdb" and flushed_size != writer.keys:
            result["warning"] = ("database %d held %d key(s) at the FLUSHDB and %d were backed up: keys written or "
                                 "removed by the application during the backup differ" % (client_db, flushed_size,
                                                                                          writer.keys))
    result["actions"] = actions
    return result


# --------------------------------------------------------------------------- restore


def read_backup(path: str) -> Iterator[dict[str, Any]]:
    """The records of a backup file, header first; a bad header or line raises RedisKeysError."""
    try:
        handle = open(path, "r", encoding="utf-8")
    except OSError as exc:
        raise RedisKeysError("cannot read the backup %s (%s); give backup_path the file a removal reported"
                             % (path, exc.strerror or exc), error_kind="backup") from None
    with handle:
        lines = enumerate(handle, 1)
        for number, line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                if number > 1 and not line.endswith("\n") and next(lines, None) is None:
                    # the last line, torn: the disk filled while a batch was written, and that batch was
                    # never removed (removal waits for the batch to be on disk)
                    yield {"torn": number}
                    return
                raise RedisKeysError("the backup %s is damaged at line %d (not JSON); nothing was restored"
                                     % (path, number), error_kind="backup") from None
            if number == 1 and (not isinstance(record, dict) or record.get("format") != BACKUP_FORMAT):
                raise RedisKeysError("%s is not a redis_keys backup (no %s header); nothing was restored"
                                     % (path, BACKUP_FORMAT), error_kind="backup")
            yield record


def restore_keys(server: Server, path: str, db: Optional[int] = None, replace: bool = False,
                 batch_size: int = 1000, check_mode: bool = False) -> dict[str, Any]:
    """Put the keys of a backup back (into ``db`` when given, else each key's own database)."""
    header: dict[str, Any] = {}
    skips: set[int] = set()
    complete = False
    for record in read_backup(path):
        if not header:
            header = record
        elif "skip" in record:
            skips.add(int(record["skip"]))
        elif record.get("end"):
            complete = bool(record.get("complete", True))
    dbs_in_backup = header.get("db")
    if db is not None and dbs_in_backup is None:
        raise RedisKeysError("the backup %s holds several databases (flush_all); restore it without db" % path,
                             error_kind="input")
    operation = "restore keys from %s" % path
    client, _facts = connect(server, db if db is not None else (dbs_in_backup or 0), operation, writable=True)
    convert = _guard(server, operation, db)
    clients: dict[int, Any] = {}
    counts = {"restored": 0, "existing": 0, "expired": 0, "skipped": 0}
    pending: list[tuple[int, dict[str, Any], int]] = []

    def target(record: Mapping[str, Any]) -> int:
        return db if db is not None else int(record["db"])

    def client_for(index: int) -> Any:
        if index not in clients:
            clients[index] = server.client(index)
        return clients[index]

    def flush() -> None:
        by_db: dict[int, list[tuple[dict[str, Any], int]]] = {}
        for index, record, ttl in pending:
            by_db.setdefault(index, []).append((record, ttl))
        for index, entries in by_db.items():
            pipe = client_for(index).pipeline(transaction=False)
            for record, ttl in entries:
                if check_mode:
                    pipe.exists(base64.b64decode(record["k"]))
                else:
                    pipe.restore(base64.b64decode(record["k"]), ttl, base64.b64decode(record["v"]), replace=replace)
            for reply in pipe.execute(raise_on_error=False):
                if isinstance(reply, Exception):
                    if "BUSYKEY" in str(reply):
                        counts["existing"] += 1
                        continue
                    raise reply
                if check_mode and int(reply) and not replace:
                    counts["existing"] += 1
                else:
                    counts["restored"] += 1
        pending.clear()

    try:
        now = _now_ms()
        for record in read_backup(path):
            if "k" not in record:
                continue
            if int(record.get("n", 0)) in skips:
                counts["skipped"] += 1
                continue
            pttl = int(record.get("pttl", -1))
            ttl = 0
            if pttl >= 0:
                ttl = pttl - (now - int(record.get("at_ms", now)))
                if ttl <= 0:
                    counts["expired"] += 1
                    continue
            pending.append((target(record), record, ttl))
            if len(pending) >= batch_size:
                flush()
        flush()
    except RedisKeysError:
        raise
    except Exception as exc:
        if HAS_REDIS and not isinstance(exc, (redis_lib.RedisError, OSError)):
            raise
        error = convert(exc)
        error.result.update(counts)
        raise error from None
    finally:
        client.close()
        for other in clients.values():
            other.close()
    verb = "would restore" if check_mode else "restored"
    actions = ["%s %d key(s) from %s" % (verb, counts["restored"], path)]
    if counts["existing"]:
        actions.append("%d key(s) exist again and were %s" % (counts["existing"], "kept as they are"))
    if counts["expired"]:
        actions.append("%d key(s) not restored: their TTL ran out since the backup" % counts["expired"])
    result = dict(counts, changed=counts["restored"] > 0, backup_path=path, complete=complete,
                  db=db if db is not None else dbs_in_backup, pattern=header.get("pattern", ""), actions=actions)
    if not complete:
        result["warning"] = ("the backup %s has no end record: the removal stopped before the end; it holds every key "
                             "removed up to then" % path)
    return result


# --------------------------------------------------------------------------- argument spec


def argument_spec() -> dict[str, Any]:
    """The options of the doc fragment akig.runbooks.redis (both modules)."""
    return {
        "login_host": {"type": "str", "default": "localhost"},
        "login_port": {"type": "int", "default": 6379},
        "login_user": {"type": "str"},
        "login_password": {"type": "str", "no_log": True},
        "tls": {"type": "bool", "default": False},
        "validate_certs": {"type": "bool", "default": True},
        "ca_certs": {"type": "str"},
        "client_cert_file": {"type": "str"},
        "client_key_file": {"type": "str"},
        "timeout": {"type": "float", "default": REDIS_TIMEOUT_S},
        "db": {"type": "int", "default": 0},
        "pattern": {"type": "str", "default": ""},
        "batch_size": {"type": "int", "default": 1000},
    }


def check_batch_size(batch_size: int) -> None:
    if not 1 <= batch_size <= 100000:
        raise RedisKeysError("batch_size must be from 1 to 100000, got %d; nothing was read or changed" % batch_size,
                             error_kind="input")
