# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The exactly-once replay of ``notification_queue`` (module ``notification_replay``, RB-P2-003).

Twilio's and SendGrid's send APIs take no idempotency key, so exactly-once rests on three things:

1. **Claim before the call.** Rows are claimed the way the app worker claims them
   (``SELECT ... FOR UPDATE SKIP LOCKED`` in a short transaction, ``status='sending'``,
   ``locked_at=now()``) plus ``claimed_by='replay:<run id>'``, committed BEFORE the provider is
   called. The replay therefore never races the worker (a row is claimed by one of them only) and
   the worker's stuck-row reset leaves ``replay:%`` rows alone (contract with the app).
2. **The answer right after.** Each provider answer is written at once, by the thread that made
   the call, in its own autocommit statement.
3. **Reconciliation before anything is resent.** A kill at any point leaves rows in ``sending``
   claimed by an earlier replay: claimed, no recorded answer. Before sending anything, the next run
   looks each of them up in the provider's own log -- Twilio's message list filtered by recipient
   and time (matched by recipient, body and time at or after the claim; sids already recorded on
   another row are not counted), SendGrid's activity feed queried by ``unique_args['akig_key']``
   (every mail carries ``custom_args {"akig_key": <idempotency key>}``), the ``notification_tasks``
   row for the channels that are not providers -- and records it as sent (found once), sent with
   duplicates counted (found more than once), or sends it (not found).

Rerouting (``routes``, e.g. ``{"sms": "email"}``) happens inside the claim transaction: a fallback
row (``fallback_of`` = original, idempotency key ``<original key>:<channel>``, recipient from the
original's ``contacts``) is inserted already claimed and the original becomes ``rerouted``;
``UNIQUE (fallback_of, channel)`` makes a second fallback impossible.

Rows are streamed: the main thread claims ``batch_size`` rows at a time (keyset on ``id``, so a row
released during the run is not claimed twice by it) into a bounded queue that ``concurrency``
threads drain. Memory does not grow with the queue: counters and a latency histogram only.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.akig.runbooks.plugins.module_utils.notification_replay_providers import (
    ProviderReadError,
    SendGridClient,
    SendResult,
    TwilioClient,
)

from ansible_collections.akig.runbooks.plugins.module_utils.pg_replication import HAS_PSYCOPG2

__all__ = [
    "CHANNELS", "KINDS", "PROVIDER_OF", "SINK_CHANNELS", "ReplayError", "TokenBucket", "LatencyHistogram",
    "validate_routes", "resolve_route", "contact_for", "validate_params", "match_twilio", "match_sendgrid",
    "Replay", "HAS_PSYCOPG2", "STATUSES",
]

CHANNELS: Tuple[str, ...] = ("sms", "email", "push", "dashboard", "phone_call", "registered_mail")
KINDS: Tuple[str, ...] = ("reminder", "preavis", "receipt", "alert")
STATUSES: Tuple[str, ...] = ("pending", "failed")
PROVIDER_OF: Dict[str, str] = {"sms": "twilio", "email": "sendgrid"}
SINK_CHANNELS: Tuple[str, ...] = ("push", "dashboard", "phone_call", "registered_mail")
# Where the recipient of a fallback row comes from: the first key of the original's contacts that is set.
CONTACT_KEYS: Dict[str, Tuple[str, ...]] = {
    "sms": ("sms", "phone"),
    "email": ("email",),
    "push": ("push", "user"),
    "dashboard": ("dashboard", "user"),
    "phone_call": ("phone_call", "phone", "sms"),
    "registered_mail": ("registered_mail", "postal"),
}
CREDENTIALS: Dict[str, Tuple[str, ...]] = {
    "twilio": ("twilio_account_sid", "twilio_auth_token", "twilio_from"),
    "sendgrid": ("sendgrid_api_key", "sendgrid_from"),
}
ADVISORY_LOCK_KEY = 0x414B4947  # 'AKIG': one replay at a time per database
MAX_429_RETRIES = 20


class ReplayError(Exception):
    """Bad input or a state that forbids the replay; ``option`` names the input to fix."""

    def __init__(self, msg: str, option: Optional[str] = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.option = option


# --------------------------------------------------------------------------
# Pure logic (unit-tested)
# --------------------------------------------------------------------------


class TokenBucket:
    """A token bucket of ``rate`` tokens/s holding at most ``burst``; ``rate=None`` never waits.

    :meth:`take` is non-blocking (the seconds to wait, 0 when a token was taken) so that the clock can be
    injected; :meth:`acquire` sleeps. :meth:`pause` holds every taker until a Retry-After has passed.
    """

    def __init__(self, rate: Optional[float], burst: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        if rate is not None and not rate > 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.burst = burst if burst is not None else (max(1.0, rate / 10.0) if rate else 1.0)
        self.clock = clock
        self.sleep = sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def take(self) -> float:
        with self._lock:
            now = self.clock()
            if now < self._paused_until:
                return self._paused_until - now
            if self.rate is None:
                return 0.0
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1.0 - 1e-9:  # tolerance: float refills may stop a hair short of 1
                self._tokens = max(0.0, self._tokens - 1.0)
                return 0.0
            return (1.0 - self._tokens) / self.rate

    def acquire(self) -> float:
        """Wait for a token; the seconds waited."""
        waited = 0.0
        while True:
            wait = self.take()
            if wait <= 0:
                return waited
            self.sleep(wait)
            waited += wait

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, self.clock() + seconds)
            self._tokens = 0.0


class LatencyHistogram:
    """Send latencies in 0.1 ms buckets (bounded memory whatever the message count)."""

    def __init__(self) -> None:
        self._buckets: Dict[int, int] = {}
        self.count = 0
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        bucket = min(int(seconds * 10000), 10000 * 600)
        with self._lock:
            self._buckets[bucket] = self._buckets.get(bucket, 0) + 1
            self.count += 1

    def percentile_ms(self, pct: float) -> Optional[float]:
        with self._lock:
            if not self.count:
                return None
            rank = max(1, int(math.ceil(self.count * pct / 100.0)))
            seen = 0
            for bucket in sorted(self._buckets):
                seen += self._buckets[bucket]
                if seen >= rank:
                    return round((bucket + 1) / 10.0, 1)
        return None  # pragma: no cover


def validate_routes(routes: Optional[Mapping[str, Any]]) -> Dict[str, str]:
    """``routes`` checked: known channels, no cycle; raises ReplayError naming the option."""
    clean: Dict[str, str] = {}
    for key, value in (routes or {}).items():
        if key not in CHANNELS:
            raise ReplayError("routes: unknown channel %r (a key); channels are %s" % (key, ", ".join(CHANNELS)),
                              "routes")
        if not isinstance(value, str) or value not in CHANNELS:
            raise ReplayError("routes: unknown channel %r (the route of %s); channels are %s"
                              % (value, key, ", ".join(CHANNELS)), "routes")
        if value == key:
            raise ReplayError("routes: %s routes to itself (a cycle); drop that entry" % key, "routes")
        clean[key] = value
    for start in clean:
        seen = [start]
        current = start
        while current in clean:
            current = clean[current]
            if current in seen:
                raise ReplayError("routes: cycle %s; a route must end on a channel that is not rerouted"
                                  % " -> ".join(seen + [current]), "routes")
            seen.append(current)
    return clean


def resolve_route(channel: str, routes: Mapping[str, str]) -> str:
    """The channel a message of ``channel`` goes through now (routes already validated)."""
    current = channel
    for _step in range(len(CHANNELS) + 1):
        if current not in routes:
            return current
        current = routes[current]
    raise ReplayError("routes: cycle from %s" % channel, "routes")  # pragma: no cover - validated before


def contact_for(original_channel: str, recipient: str, contacts: Any, target: str) -> Optional[str]:
    """The recipient of a fallback row on ``target``, from the original's contacts (None: no address)."""
    if isinstance(contacts, str):
        try:
            contacts = json.loads(contacts)
        except ValueError:
            contacts = {}
    contacts = contacts if isinstance(contacts, dict) else {}
    for key in CONTACT_KEYS[target]:
        value = contacts.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    if original_channel == target:
        return recipient
    return None


def _positive(params: Mapping[str, Any], name: str, minimum: float, maximum: Optional[float] = None) -> None:
    value = params.get(name)
    if value is None:
        return
    if value < minimum or (maximum is not None and value > maximum):
        bound = "between %g and %g" % (minimum, maximum) if maximum is not None else "at least %g" % minimum
        raise ReplayError("%s must be %s (got %s)" % (name, bound, value), name)


def validate_params(params: Mapping[str, Any]) -> Dict[str, str]:
    """Every check that needs no database, before anything is sent; returns the validated routes."""
    for name in ("channels", "kinds", "statuses"):
        values = params.get(name) or []
        allowed = {"channels": CHANNELS, "kinds": KINDS, "statuses": STATUSES}[name]
        if not values:
            raise ReplayError("%s must list at least one of %s" % (name, ", ".join(allowed)), name)
        for value in values:
            if value not in allowed:
                raise ReplayError("%s: unknown value %r; accepted: %s" % (name, value, ", ".join(allowed)), name)
    routes = validate_routes(params.get("routes"))
    for provider in ("twilio", "sendgrid"):
        name = "%s_rate" % provider
        rate = params.get(name)
        if rate is not None and not rate > 0:
            raise ReplayError("%s must be more than 0 messages per second (got %s); omit it for no limit"
                              % (name, rate), name)
        url = params.get("%s_base_url" % provider) or ""
        if not url.startswith(("http://", "https://")):
            raise ReplayError("%s_base_url must be an http:// or https:// URL" % provider, "%s_base_url" % provider)
    _positive(params, "concurrency", 1, 64)
    _positive(params, "batch_size", 1, 10000)
    _positive(params, "max_messages", 0)
    _positive(params, "max_attempts", 1, 20)
    _positive(params, "send_timeout", 0.1, 300)
    _positive(params, "retry_after_max", 0, 3600)
    _positive(params, "progress_every", 1)
    _positive(params, "reconcile_slack", 0, 3600)
    run_id = params.get("run_id")
    if run_id is not None and (not run_id or len(run_id) > 64 or any(c.isspace() for c in run_id)):
        raise ReplayError("run_id must be 1 to 64 characters without spaces", "run_id")
    used = {resolve_route(c, routes) for c in params["channels"]}
    require_credentials(params, used)
    return routes


def require_credentials(params: Mapping[str, Any], channels: Iterable[str]) -> None:
    for channel in sorted(set(channels)):
        provider = PROVIDER_OF.get(channel)
        if provider is None:
            continue
        for name in CREDENTIALS[provider]:
            if not params.get(name):
                raise ReplayError("%s is required: channel %s goes through %s in this replay (give the %s "
                                  "credentials, or route %s elsewhere with routes)"
                                  % (name, channel, provider, provider, channel), name)


def _twilio_time(text: Any) -> Optional[datetime]:
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%a, %d %b %Y %H:%M:%S +0000").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def match_twilio(recipient: str, body: str, locked_at: datetime, messages: Iterable[Mapping[str, Any]],
                 taken: Iterable[str] = (), slack_s: float = 30.0) -> List[str]:
    """The sids of Twilio messages that are this row's send: same recipient and body, created at or
    after the claim (minus ``slack_s`` for clock skew and Twilio's whole seconds), not recorded on
    another row (``taken``). More than one: the message went out more than once."""
    since = locked_at - timedelta(seconds=slack_s + 1)
    taken_set = set(taken)
    sids: List[str] = []
    for message in messages:
        created = _twilio_time(message.get("date_created"))
        sid = message.get("sid")
        if not sid or sid in taken_set or created is None or created < since:
            continue
        if message.get("to") == recipient and message.get("body") == body:
            sids.append(sid)
    return sids


def match_sendgrid(recipient: str, messages: Iterable[Mapping[str, Any]]) -> List[str]:
    """The X-Message-Ids of activity-feed messages (already queried by akig_key) to ``recipient``."""
    ids: List[str] = []
    for message in messages:
        if str(message.get("to_email") or "").lower() == recipient.lower():
            ids.append(str(message.get("msg_id") or "").split(".", 1)[0])
    return ids


# --------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------

ROW_COLUMNS = ("id, channel, kind, recipient, subject, body, attempts, idempotency_key, contacts, due_at, "
               "locked_at, status")


class Row:
    __slots__ = ("id", "channel", "kind", "recipient", "subject", "body", "attempts", "key", "contacts",
                 "due_at", "locked_at", "status", "origin")

    def __init__(self, rec: Sequence[Any], origin: str = "claimed") -> None:
        (self.id, self.channel, self.kind, self.recipient, self.subject, self.body, self.attempts, self.key,
         self.contacts, self.due_at, self.locked_at, self.status) = rec
        self.origin = origin


class Stats:
    OUTCOMES = ("sent", "rerouted", "reconciled_sent", "reconciled_resent", "reconciled_duplicates",
                "retry_later", "failed", "skipped_no_contact", "fallback_existed")

    def __init__(self) -> None:
        self.counts: Dict[str, int] = {k: 0 for k in self.OUTCOMES}
        self.by_channel: Dict[str, Dict[str, int]] = {}
        self.errors: Dict[str, int] = {}
        self.provider_calls = 0
        self.provider_retries = 0
        self._lock = threading.Lock()

    def add(self, outcome: str, channel: Optional[str] = None, n: int = 1) -> None:
        with self._lock:
            self.counts[outcome] = self.counts.get(outcome, 0) + n
            if channel is not None:
                per = self.by_channel.setdefault(channel, {})
                per[outcome] = per.get(outcome, 0) + n

    def error(self, text: str) -> None:
        with self._lock:
            key = (text or "unknown")[:80]
            if key in self.errors or len(self.errors) < 20:
                self.errors[key] = self.errors.get(key, 0) + 1

    def call(self, retry: bool = False) -> None:
        with self._lock:
            self.provider_calls += 1
            if retry:
                self.provider_retries += 1

    def processed(self) -> int:
        with self._lock:
            c = self.counts
            return c["sent"] + c["reconciled_sent"] + c["reconciled_resent"] + c["retry_later"] + c["failed"]


class Replay:
    """One replay run; see the module docstring. ``connect`` opens an autocommit psycopg2 connection."""

    def __init__(self, params: Mapping[str, Any], connect: Callable[[], Any],
                 warn: Callable[[str], None] = lambda _m: None) -> None:
        self.p = dict(params)
        self.routes = validate_params(self.p)
        self.connect = connect
        self.warn = warn
        self.run_id = self.p.get("run_id") or "%s-%s" % (
            datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"), uuid.uuid4().hex[:6])
        self.claimed_by = "replay:%s" % self.run_id
        self.stats = Stats()
        self.latency = LatencyHistogram()
        self.channels = list(self.p["channels"])
        self.kinds = list(self.p["kinds"])
        self.statuses = list(self.p["statuses"])
        self.concurrency = int(self.p.get("concurrency") or 8)
        self.batch_size = int(self.p.get("batch_size") or 50)
        self.max_messages = int(self.p.get("max_messages") or 0)
        self.max_attempts = int(self.p.get("max_attempts") or 5)
        self.retry_after_max = float(self.p.get("retry_after_max") if self.p.get("retry_after_max") is not None else 60)
        self.slack = float(self.p.get("reconcile_slack") if self.p.get("reconcile_slack") is not None else 30)
        self.buckets = {
            "twilio": TokenBucket(self.p.get("twilio_rate")),
            "sendgrid": TokenBucket(self.p.get("sendgrid_rate")),
        }
        self.disabled: Dict[str, str] = {}
        self.clients: Dict[str, Any] = {}
        self._local = threading.local()
        self._pool: "queue.Queue[Any]" = queue.Queue()
        self._conns: List[Any] = []
        self._conns_lock = threading.Lock()
        self._progress_lock = threading.Lock()
        self._next_progress = int(self.p.get("progress_every") or 500)
        self.started = time.monotonic()

    # -- plumbing ---------------------------------------------------------------

    def _client(self, provider: str) -> Any:
        client = self.clients.get(provider)
        if client is None:
            timeout = float(self.p.get("send_timeout") or 10)
            if provider == "twilio":
                client = TwilioClient(self.p["twilio_base_url"], self.p["twilio_account_sid"],
                                      self.p["twilio_auth_token"], self.p["twilio_from"], timeout)
            else:
                client = SendGridClient(self.p["sendgrid_base_url"], self.p["sendgrid_api_key"],
                                        self.p["sendgrid_from"], timeout)
            self.clients[provider] = client
        return client

    def _thread_conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = self._pool.get_nowait()
            except queue.Empty:
                conn = self.connect()
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _exec(self, sql: str, args: Sequence[Any] = (), conn: Any = None) -> List[Tuple[Any, ...]]:
        conn = conn or self._thread_conn()
        with conn.cursor() as cur:
            cur.execute(sql, tuple(args))
            return cur.fetchall() if cur.description else []

    def _progress(self, final: bool = False) -> None:
        path = self.p.get("progress_file")
        processed = self.stats.processed()
        with self._progress_lock:
            if not final and processed < self._next_progress:
                return
            every = int(self.p.get("progress_every") or 500)
            while self._next_progress <= processed:
                self._next_progress += every
            if not path:
                return
            elapsed = max(time.monotonic() - self.started, 1e-6)
            line = {"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "run_id": self.run_id,
                    "processed": processed, "msgs_per_s": round(processed / elapsed, 1), "final": final}
            line.update(self.stats.counts)
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line, sort_keys=True) + "\n")

    # -- entry point ----------------------------------------------------------

    def run(self, check_mode: bool = False) -> Dict[str, Any]:
        main = self.connect()
        self._conns.append(main)
        try:
            self._check_schema(main)
            ambiguous = self._exec("SELECT DISTINCT channel FROM notification_queue WHERE status = 'sending' "
                                   "AND claimed_by LIKE 'replay:%%'", conn=main)
            require_credentials(self.p, [r[0] for r in ambiguous])
            if check_mode:
                return self._plan(main)
            if not self._exec("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,), conn=main)[0][0]:
                raise ReplayError("another notification replay is running on this database (advisory lock %d is "
                                  "held); wait for it to end" % ADVISORY_LOCK_KEY)
            self._open_connections()
            work: "queue.Queue[Optional[Row]]" = queue.Queue(maxsize=max(self.batch_size, 2 * self.concurrency))
            threads = [threading.Thread(target=self._worker, args=(work,), name="replay-%d" % i, daemon=True)
                       for i in range(self.concurrency)]
            for thread in threads:
                thread.start()
            try:
                self._reconcile(main, work)
                self._claim_loop(main, work)
            finally:
                for _thread in threads:
                    work.put(None)
                for thread in threads:
                    thread.join()
            self._progress(final=True)
            return self._result(changed=True)
        finally:
            for client in self.clients.values():
                client.close()
            for conn in self._conns:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - closing on the way out
                    pass

    def _open_connections(self) -> None:
        """One connection per sending thread, opened before anything is claimed or sent."""
        for _index in range(self.concurrency):
            try:
                conn = self.connect()
            except Exception as exc:  # noqa: BLE001 - the message is the connector's (never the password)
                raise ReplayError("could not open %d database connections, one per thread (concurrency): %s; lower "
                                  "concurrency or raise the server's max_connections" % (self.concurrency + 1, exc),
                                  "concurrency") from None
            self._conns.append(conn)
            self._pool.put(conn)

    def _check_schema(self, conn: Any) -> None:
        rows = self._exec("SELECT column_name FROM information_schema.columns WHERE table_name = "
                          "'notification_queue' AND column_name IN ('claimed_by', 'fallback_of', 'contacts', "
                          "'due_at')", conn=conn)
        tasks = self._exec("SELECT to_regclass('notification_tasks') IS NOT NULL", conn=conn)[0][0]
        if len(rows) != 4 or not tasks:
            raise ReplayError("the database has no replay columns (notification_queue.claimed_by, fallback_of, "
                              "contacts, due_at) or no notification_tasks table: apply the AKIG schema "
                              "(lab/sql/schema.sql) first", "login_db")

    def _result(self, changed: bool, plan: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
        elapsed = time.monotonic() - self.started
        delivered = self.stats.counts["sent"] + self.stats.counts["reconciled_resent"]
        result: Dict[str, Any] = {
            "changed": changed,
            "run_id": self.run_id,
            "claimed_by": self.claimed_by,
            "counts": dict(self.stats.counts),
            "by_channel": {k: dict(v) for k, v in sorted(self.stats.by_channel.items())},
            "errors": dict(self.stats.errors),
            "provider_calls": self.stats.provider_calls,
            "provider_retries": self.stats.provider_retries,
            "disabled_providers": dict(self.disabled),
            "duration_s": round(elapsed, 3),
            "msgs_per_s": round(delivered / elapsed, 1) if elapsed > 0 else None,
            "p95_latency_ms": self.latency.percentile_ms(95),
            "routes": dict(self.routes),
        }
        if plan is not None:
            result["plan"] = plan
        return result

    # -- check mode -------------------------------------------------------------

    def _plan(self, conn: Any) -> Dict[str, Any]:
        rows = self._exec(
            "SELECT channel, kind, count(*), count(*) FILTER (WHERE due_at IS NOT NULL AND due_at < now()) "
            "FROM notification_queue WHERE status = ANY(%s) AND channel = ANY(%s) AND kind = ANY(%s) "
            "GROUP BY 1, 2 ORDER BY 1, 2", (self.statuses, self.channels, self.kinds), conn=conn)
        plan = []
        for channel, kind, count, overdue in rows:
            via = resolve_route(channel, self.routes)
            entry = {"channel": channel, "via": via, "kind": kind, "count": count, "overdue": overdue}
            if via != channel:
                keys = list(CONTACT_KEYS[via])
                entry["without_contact"] = self._exec(
                    "SELECT count(*) FROM notification_queue WHERE status = ANY(%s) AND channel = %s AND kind = %s "
                    "AND NOT (contacts ?| %s)", (self.statuses, channel, kind, keys), conn=conn)[0][0]
            plan.append(entry)
        ambiguous = self._exec("SELECT count(*) FROM notification_queue WHERE status = 'sending' AND claimed_by "
                               "LIKE 'replay:%%'", conn=conn)[0][0]
        result = self._result(changed=False, plan=plan)
        result["to_reconcile"] = ambiguous
        result["would_send"] = sum(e["count"] - e.get("without_contact", 0) for e in plan)
        if self.max_messages:
            result["would_send"] = min(result["would_send"], self.max_messages)
        return result

    # -- reconciliation -------------------------------------------------------

    def _reconcile(self, conn: Any, work: "queue.Queue[Optional[Row]]") -> None:
        last = 0
        while True:
            rows = [Row(r, "reconcile") for r in self._exec(
                "SELECT %s FROM notification_queue WHERE status = 'sending' AND claimed_by LIKE 'replay:%%%%' "
                "AND claimed_by <> %%s AND id > %%s ORDER BY id LIMIT %%s" % ROW_COLUMNS,
                (self.claimed_by, last, self.batch_size), conn=conn)]
            if not rows:
                return
            for row in rows:
                last = row.id
                work.put(row)  # the threads look it up first, and send it only if it is not found

    def _settle(self, row: Row) -> bool:
        """Reconcile one ambiguous row of an earlier replay; True when it must be sent (claimed by this run)."""
        found = self._lookup(row)
        if found is None:
            self.stats.add("retry_later", row.channel)
            self.stats.error("reconciliation lookup failed")
            return False  # left in 'sending' for the next run: never resent blind
        if found:
            self._exec("UPDATE notification_queue SET status = 'sent', sent_at = coalesce(sent_at, now()), "
                       "provider_message_id = %s, locked_at = NULL, last_error = NULL WHERE id = %s AND "
                       "status = 'sending'", (found[0], row.id))
            self.stats.add("reconciled_sent", row.channel)
            if len(found) > 1:
                self.stats.add("reconciled_duplicates", row.channel, len(found) - 1)
            return False
        self._exec("UPDATE notification_queue SET claimed_by = %s, locked_at = now() WHERE id = %s "
                   "AND status = 'sending'", (self.claimed_by, row.id))
        return True

    def _lookup(self, row: Row, conn: Any = None) -> Optional[List[str]]:
        """The provider ids under which ``row`` was already delivered ([] = never); None if unknown."""
        if row.channel in SINK_CHANNELS:
            found = self._exec("SELECT id FROM notification_tasks WHERE queue_id = %s", (row.id,), conn=conn)
            return [str(found[0][0])] if found else []
        provider = PROVIDER_OF[row.channel]
        client = self._client(provider)
        locked_at = row.locked_at or datetime.now(timezone.utc)
        for attempt in range(self.max_attempts + MAX_429_RETRIES):
            self.buckets[provider].acquire()
            try:
                self.stats.call(retry=attempt > 0)
                if provider == "twilio":
                    since = (locked_at - timedelta(seconds=self.slack + 1)).strftime("%Y-%m-%dT%H:%M:%SZ")
                    messages = client.list_messages(row.recipient, since)
                    candidates = [m.get("sid") for m in messages if m.get("sid")]
                    taken = [r[0] for r in self._exec(
                        "SELECT provider_message_id FROM notification_queue WHERE provider_message_id = ANY(%s) "
                        "AND id <> %s", (candidates, row.id), conn=conn)] if candidates else []
                    return match_twilio(row.recipient, row.body, locked_at, messages, taken, self.slack)
                return match_sendgrid(row.recipient, client.activity(row.key))
            except ProviderReadError as exc:
                self.stats.error(str(exc))
                if exc.status in (401, 403):
                    self.disabled[provider] = str(exc)
                    return None
                if exc.status == 429:
                    self.buckets[provider].pause(min(exc.retry_after or 1.0, self.retry_after_max))
                    continue
                if attempt + 1 >= self.max_attempts and exc.status != 429:
                    return None
                time.sleep(min(0.05 * 2 ** attempt, 2.0))
        return None

    # -- claiming ---------------------------------------------------------------

    def _claim_loop(self, conn: Any, work: "queue.Queue[Optional[Row]]") -> None:
        cursor = 0
        claimed = 0
        conn.autocommit = False
        try:
            while True:
                limit = self.batch_size
                if self.max_messages:
                    limit = min(limit, self.max_messages - claimed)
                    if limit <= 0:
                        return
                rows, cursor, batch = self._claim_batch(conn, cursor, limit)
                if not batch:
                    return
                claimed += batch
                for row in rows:
                    work.put(row)
                self._progress()
        finally:
            conn.rollback()
            conn.autocommit = True

    def _claim_batch(self, conn: Any, cursor: int, limit: int) -> Tuple[List[Row], int, int]:
        """One claim transaction: (rows to send, new cursor, rows taken from the queue)."""
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT %s FROM notification_queue WHERE status = ANY(%%s) AND channel = ANY(%%s) "
                    "AND kind = ANY(%%s) AND id > %%s ORDER BY id FOR UPDATE SKIP LOCKED LIMIT %%s" % ROW_COLUMNS,
                    (self.statuses, self.channels, self.kinds, cursor, limit))
                found = [Row(r) for r in cur.fetchall()]
                if not found:
                    conn.commit()
                    return [], cursor, 0
                direct = [r.id for r in found if resolve_route(r.channel, self.routes) == r.channel]
                if direct:
                    cur.execute("UPDATE notification_queue SET status = 'sending', claimed_by = %s, locked_at = now() "
                                "WHERE id = ANY(%s) RETURNING id, locked_at", (self.claimed_by, direct))
                    stamps = dict(cur.fetchall())
                else:
                    stamps = {}
                out: List[Row] = []
                skipped: List[Tuple[Row, str]] = []
                for row in found:
                    if row.id in stamps:
                        row.locked_at = stamps[row.id]
                        out.append(row)
                        continue
                    fallback = self._reroute(cur, row)
                    if fallback is None:
                        skipped.append((row, resolve_route(row.channel, self.routes)))
                    elif fallback is not False:
                        out.append(fallback)
                conn.commit()
        except BaseException:
            conn.rollback()
            raise
        for row, via in skipped:
            self.stats.add("skipped_no_contact", row.channel)
            self.stats.error("no %s contact for a rerouted %s message" % (via, row.channel))
        return out, found[-1].id, len(found)

    def _reroute(self, cur: Any, row: Row) -> Any:
        """Insert the claimed fallback row and mark the original rerouted (inside the claim transaction).
        Returns the fallback Row, None when the original has no address on the target channel, False when a
        fallback existed already (the original is then marked rerouted and nothing new is sent)."""
        target = resolve_route(row.channel, self.routes)
        recipient = contact_for(row.channel, row.recipient, row.contacts, target)
        if recipient is None:
            return None
        contacts = row.contacts if isinstance(row.contacts, dict) else {}
        cur.execute(
            "INSERT INTO notification_queue (channel, kind, recipient, subject, body, status, idempotency_key, "
            "fallback_of, contacts, due_at, claimed_by, locked_at) VALUES (%s, %s, %s, %s, %s, 'sending', %s, %s, "
            "%s::jsonb, %s, %s, now()) ON CONFLICT DO NOTHING RETURNING " + ROW_COLUMNS,
            (target, row.kind, recipient, row.subject, row.body, "%s:%s" % (row.key, target), row.id,
             json.dumps(contacts), row.due_at, self.claimed_by))
        created = cur.fetchone()
        cur.execute("UPDATE notification_queue SET status = 'rerouted', claimed_by = %s, locked_at = NULL "
                    "WHERE id = %s", (self.claimed_by, row.id))
        self.stats.add("rerouted", row.channel)
        if created is None:
            self.stats.add("fallback_existed", row.channel)
            return False
        return Row(created, "fallback")

    # -- sending ------------------------------------------------------------------

    def _worker(self, work: "queue.Queue[Optional[Row]]") -> None:
        while True:
            row = work.get()
            if row is None:
                return
            try:
                if row.origin != "reconcile" or self._settle(row):
                    self._deliver(row)
            except Exception as exc:  # noqa: BLE001 - a row must not kill the run; it stays 'sending'
                self.stats.add("retry_later", row.channel)
                self.stats.error("internal error %s: row left claimed for reconciliation" % type(exc).__name__)
                self._local.conn = None  # a broken connection is not reused
            self._progress()

    def _deliver(self, row: Row) -> None:
        if row.channel in SINK_CHANNELS:
            self._deliver_task(row)
            return
        provider = PROVIDER_OF[row.channel]
        client = self._client(provider)
        bucket = self.buckets[provider]
        failures = 0
        throttled = 0
        last_error = None
        while True:
            if provider in self.disabled:
                self._release(row, "not sent: %s refused the credentials in this run" % provider)
                return
            bucket.acquire()
            started = time.monotonic()
            if provider == "twilio":
                res: SendResult = client.send(row.recipient, row.body, row.key)
            else:
                res = client.send(row.recipient, row.subject, row.body, row.key)
            self.latency.add(time.monotonic() - started)
            self.stats.call(retry=failures + throttled > 0)
            if res.kind == "ok":
                self._record_sent(row, res.provider_id)
                return
            last_error = res.error or res.kind
            self.stats.error("%s %s" % (provider, last_error))
            if res.kind == "auth":
                self.disabled[provider] = last_error
                self._release(row, last_error)
                return
            if res.kind == "invalid":
                self._exec("UPDATE notification_queue SET status = 'failed', attempts = attempts + 1, last_error = %s, "
                           "locked_at = NULL WHERE id = %s AND status = 'sending'", (last_error[:300], row.id))
                self.stats.add("failed", row.channel)
                return
            if res.kind == "network":
                found = self._lookup(row)
                if found:
                    self._record_sent(row, found[0])
                    return
                if found is None:  # cannot tell: leave it claimed for the next run's reconciliation
                    self.stats.add("retry_later", row.channel)
                    return
            if res.status == 429:
                throttled += 1
                bucket.pause(min(res.retry_after if res.retry_after is not None else 1.0, self.retry_after_max))
                if throttled <= MAX_429_RETRIES:
                    continue
            else:
                failures += 1
                if failures < self.max_attempts:
                    delay = res.retry_after if res.retry_after is not None else 0.05 * 2 ** failures
                    time.sleep(min(delay, self.retry_after_max, 5.0))
                    continue
            self._release(row, last_error)
            return

    def _record_sent(self, row: Row, provider_id: Optional[str]) -> None:
        self._exec("UPDATE notification_queue SET status = 'sent', sent_at = now(), attempts = attempts + 1, "
                   "provider_message_id = %s, last_error = NULL, locked_at = NULL WHERE id = %s AND status = 'sending'",
                   (provider_id, row.id))
        self.stats.add("reconciled_resent" if row.origin == "reconcile" else "sent", row.channel)

    def _release(self, row: Row, error: str) -> None:
        """Not delivered in this run: back to pending (the worker or the next replay sends it), counted."""
        self._exec("UPDATE notification_queue SET status = 'pending', attempts = attempts + 1, last_error = %s, "
                   "claimed_by = NULL, locked_at = NULL, next_attempt_at = now() WHERE id = %s AND status = 'sending'",
                   ((error or "")[:300], row.id))
        self.stats.add("retry_later", row.channel)

    def _deliver_task(self, row: Row) -> None:
        conn = self._thread_conn()
        conn.autocommit = False
        try:
            with conn.cursor() as cur:
                cur.execute("INSERT INTO notification_tasks (queue_id, channel, recipient, kind) VALUES (%s, %s, %s, %s) "
                            "ON CONFLICT (queue_id) DO NOTHING RETURNING id", (row.id, row.channel, row.recipient, row.kind))
                created = cur.fetchone()
                cur.execute("UPDATE notification_queue SET status = 'sent', sent_at = now(), attempts = attempts + 1, "
                            "provider_message_id = %s, last_error = NULL, locked_at = NULL WHERE id = %s AND "
                            "status = 'sending'", ("task:%s" % (created[0] if created else "existing"), row.id))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.autocommit = True
        self.stats.add("reconciled_resent" if row.origin == "reconcile" else "sent", row.channel)
