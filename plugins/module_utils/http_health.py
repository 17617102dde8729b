# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""HTTP health probes for the akig.runbooks.http_health module.

Pure parts (URL checks, nearest-rank percentiles, error rates, summaries) are plain functions;
:func:`probe_all` sends the requests, one worker thread per endpoint up to ``concurrency``, with
the standard library's ``urllib`` (no proxy from the environment: health checks go direct).
"""

from __future__ import annotations

import json
import math
import socket
import ssl
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from ansible_collections.akig.runbooks.plugins.module_utils.sla import error_rate_exceeds, error_rate_threshold

JSON_LIMIT = 4096
BODY_LIMIT = 1024 * 1024
ERROR_LIMIT = 200
RETRY_PAUSE_S = 0.1
DEFAULT_STATUS = (200,)
URL_KEYS = {"url", "name", "method", "expect_status", "expect_json", "headers"}


class HealthError(Exception):
    """Bad input, reported with fail_json before any request is sent."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


# --------------------------------------------------------------------------- input


@dataclass
class Endpoint:
    url: str
    name: str
    method: str = "GET"
    expect_status: List[int] = field(default_factory=lambda: list(DEFAULT_STATUS))
    expect_json: Optional[Dict[str, Any]] = None
    headers: Dict[str, str] = field(default_factory=dict)


def malformed(url: Any) -> HealthError:
    return HealthError("malformed health URL '%s': expected http(s)://host[:port]/path" % (url,))


def validate_url(url: Any) -> str:
    """The URL if it is http(s)://host[:port]/path, else HealthError."""
    if not isinstance(url, str) or not url or url != url.strip() or any(ch.isspace() for ch in url):
        raise malformed(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise malformed(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or not parts.netloc:
        raise malformed(url)
    if port is not None and not 0 < port < 65536:
        raise malformed(url)
    return url


def endpoints_from(urls: Sequence[Any], headers: Optional[Mapping[str, Any]] = None) -> List[Endpoint]:
    """Check every entry of ``urls`` (a URL string or a dict) before anything is sent."""
    if not urls:
        raise HealthError("urls is empty: give at least one health URL, for example http://127.0.0.21:4000/api/health")
    result = []
    common = dict((str(key), str(value)) for key, value in (headers or {}).items())
    for index, entry in enumerate(urls):
        if isinstance(entry, str):
            result.append(Endpoint(url=validate_url(entry), name=entry, headers=dict(common)))
            continue
        if not isinstance(entry, Mapping):
            raise HealthError("urls[%d] is a %s: give a URL string or a dict with url, name, method, expect_status, expect_json, headers"
                              % (index, type(entry).__name__))
        unknown = sorted(set(entry) - URL_KEYS)
        if unknown:
            raise HealthError("urls[%d] has unknown keys %s: accepted keys are %s" % (index, ", ".join(map(str, unknown)), ", ".join(sorted(URL_KEYS))))
        url = validate_url(entry.get("url"))
        method = str(entry.get("method") or "GET").upper()
        if not method.isalpha():
            raise HealthError("urls[%d] method %r is not an HTTP method such as GET or HEAD" % (index, entry.get("method")))
        expect = entry.get("expect_status", list(DEFAULT_STATUS))
        if isinstance(expect, (int, str)):
            expect = [expect]
        try:
            statuses = [int(code) for code in expect]
        except (TypeError, ValueError):
            raise HealthError("urls[%d] expect_status %r is not a list of HTTP status codes" % (index, expect))
        if not statuses or any(not 100 <= code <= 599 for code in statuses):
            raise HealthError("urls[%d] expect_status %r is not a list of HTTP status codes (100-599)" % (index, expect))
        expect_json = entry.get("expect_json")
        if expect_json is not None and not isinstance(expect_json, Mapping):
            raise HealthError("urls[%d] expect_json must be a dict of top-level key -> expected value" % index)
        own = entry.get("headers") or {}
        if not isinstance(own, Mapping):
            raise HealthError("urls[%d] headers must be a dict of header name -> value" % index)
        merged = dict(common)
        merged.update((str(key), str(value)) for key, value in own.items())
        result.append(Endpoint(url=url, name=str(entry.get("name") or url), method=method, expect_status=statuses,
                               expect_json=dict(expect_json) if expect_json is not None else None, headers=merged))
    return result


def secret_values(urls: Sequence[Any]) -> List[str]:
    """Header values given inside ``urls`` entries, for the module to hide from its output."""
    values = []
    for entry in urls or []:
        if isinstance(entry, Mapping) and isinstance(entry.get("headers"), Mapping):
            values.extend(str(value) for value in entry["headers"].values() if value not in (None, ""))
    return values


# --------------------------------------------------------------------------- pure statistics


def percentile(values: Sequence[float], pct: float) -> Optional[float]:
    """Nearest-rank percentile: the smallest value with at least ``pct`` % of the values at or below it."""
    if not values:
        return None
    if not 0 <= pct <= 100:
        raise ValueError("percentile %r is outside 0-100" % pct)
    ordered = sorted(values)
    rank = max(1, int(math.ceil(pct / 100.0 * len(ordered))))
    return ordered[rank - 1]


def latency_summary(values: Sequence[float]) -> Dict[str, Optional[float]]:
    """p50, p95 and max of latencies in ms (nearest rank), rounded to 0.01 ms; None without values."""
    def rounded(value: Optional[float]) -> Optional[float]:
        return None if value is None else round(value, 2)
    return {
        "p50": rounded(percentile(values, 50)),
        "p95": rounded(percentile(values, 95)),
        "max": rounded(max(values) if values else None),
    }


def error_rate(errors: int, total: int) -> float:
    """Share of failed requests, 0.0 when there were none, rounded to 4 places for display.

    The breach decision never reads this rounded figure: see :func:`aggregate`."""
    if total <= 0:
        return 0.0
    if not 0 <= errors <= total:
        raise ValueError("errors=%r must be between 0 and total=%r" % (errors, total))
    return round(errors / float(total), 4)


def json_mismatch(expected: Optional[Mapping[str, Any]], body: Any) -> Optional[str]:
    """Why ``body`` does not match ``expected`` (top-level keys), or None when it does."""
    if not expected:
        return None
    if not isinstance(body, Mapping):
        return "body is not a JSON object (expect_json)"
    for key, value in expected.items():
        if key not in body:
            return "JSON key %r missing (expected %r)" % (key, value)
        if body[key] != value:
            return "JSON %s=%r, expected %r" % (key, body[key], value)
    return None


def truncate_json(value: Any) -> Any:
    """A parsed body as returned: the object itself when it serialises to at most 4 KiB, else the
    serialised text cut to 4 KiB."""
    text = json.dumps(value, sort_keys=True)
    if len(text.encode("utf-8")) <= JSON_LIMIT:
        return value
    return text.encode("utf-8")[:JSON_LIMIT].decode("utf-8", "ignore")


def short_error(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(exc, (socket.timeout, TimeoutError)) or isinstance(reason, (socket.timeout, TimeoutError)):
        text = "timed out"
    elif reason is not None:
        text = str(reason)
    else:
        text = str(exc) or type(exc).__name__
    return text[:ERROR_LIMIT]


# --------------------------------------------------------------------------- requests


@dataclass
class Sample:
    ok: bool
    status: Optional[int] = None
    latency_ms: Optional[float] = None
    body: Any = None
    has_json: bool = False
    error: Optional[str] = None
    timed_out: bool = False
    reason: Optional[str] = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report a redirect as what it is (3xx) instead of following it."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:  # pylint: disable=too-many-arguments
        return None


def build_opener(validate_certs: bool = True) -> urllib.request.OpenerDirector:
    context = ssl.create_default_context()
    if not validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context), _NoRedirect())


def open_and_read(opener: urllib.request.OpenerDirector, req: urllib.request.Request, timeout: float) -> Tuple[int, bytes]:
    """Send ``req``: its HTTP status and up to BODY_LIMIT bytes of its body, an error status (4xx, 5xx) included.
    Raises URLError, OSError or ValueError when no HTTP answer came (refused, timeout, TLS)."""
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, resp.read(BODY_LIMIT)
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, exc.read(BODY_LIMIT)
        except (OSError, ValueError):
            return exc.code, b""
        finally:
            exc.close()


def request_once(endpoint: Endpoint, timeout: float, opener: urllib.request.OpenerDirector,
                 clock: Callable[[], float] = time.monotonic) -> Sample:
    """One request; never raises for network or HTTP errors."""
    req = urllib.request.Request(endpoint.url, method=endpoint.method, headers=endpoint.headers)
    begin = clock()
    try:
        status, raw = open_and_read(opener, req, timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        timed_out = isinstance(exc, (socket.timeout, TimeoutError)) or isinstance(getattr(exc, "reason", None), (socket.timeout, TimeoutError))
        error = short_error(exc)
        return Sample(ok=False, latency_ms=round((clock() - begin) * 1000.0, 3), error=error, timed_out=timed_out,
                      reason=("timed out after %s s" % timeout) if timed_out else error)
    latency = round((clock() - begin) * 1000.0, 3)
    body, has_json = None, False
    if raw:
        try:
            body, has_json = json.loads(raw.decode("utf-8")), True
        except ValueError:
            pass
    reason = None
    if status not in endpoint.expect_status:
        reason = "status %s not in %s" % (status, endpoint.expect_status)
    else:
        reason = json_mismatch(endpoint.expect_json, body)
    return Sample(ok=reason is None, status=status, latency_ms=latency, body=body, has_json=has_json, reason=reason)


def request_with_retries(endpoint: Endpoint, timeout: float, retries: int, opener: urllib.request.OpenerDirector,
                         sleep: Callable[[float], None] = time.sleep) -> Sample:
    """Retry a request that got no HTTP response (connection error or timeout) up to ``retries`` times."""
    sample = request_once(endpoint, timeout, opener)
    for _attempt in range(max(0, retries)):
        if sample.status is not None:
            break
        sleep(RETRY_PAUSE_S)
        sample = request_once(endpoint, timeout, opener)
    return sample


def probe_endpoint(endpoint: Endpoint, samples: int, interval: float, timeout: float, retries: int,
                   opener: urllib.request.OpenerDirector, sleep: Callable[[float], None] = time.sleep) -> Dict[str, Any]:
    taken: List[Sample] = []
    for index in range(samples):
        if index and interval > 0:
            sleep(interval)
        taken.append(request_with_retries(endpoint, timeout, retries, opener, sleep=sleep))
    return summarize_endpoint(endpoint, taken)


def summarize_endpoint(endpoint: Endpoint, taken: Sequence[Sample]) -> Dict[str, Any]:
    """The per-endpoint result from its samples (pure)."""
    statuses: Dict[str, int] = {}
    for sample in taken:
        key = str(sample.status) if sample.status is not None else ("timeout" if sample.timed_out else "error")
        statuses[key] = statuses.get(key, 0) + 1
    errors = sum(1 for sample in taken if not sample.ok)
    answered = [sample.latency_ms for sample in taken if sample.status is not None and sample.latency_ms is not None]
    last_status = next((sample.status for sample in reversed(taken) if sample.status is not None), None)
    last_json = next((sample.body for sample in reversed(taken) if sample.has_json), None)
    last_error = next((sample.error for sample in reversed(taken) if sample.error), None)
    last_reason = next((sample.reason for sample in reversed(taken) if sample.reason), None)
    return {
        "name": endpoint.name,
        "url": endpoint.url,
        "ok": bool(taken) and errors == 0,
        "status": last_status,
        "statuses": statuses,
        "latency_ms": latency_summary(answered),
        "error_rate": error_rate(errors, len(taken)),
        "errors": errors,
        "samples": len(taken),
        "json": truncate_json(last_json) if last_json is not None else None,
        "error": last_error,
        "reason": last_reason,
        "_latencies": answered,
    }


def summary_line(result: Mapping[str, Any]) -> str:
    latency = result["latency_ms"]
    timing = "p50 %s ms, p95 %s ms, max %s ms" % (latency["p50"], latency["p95"], latency["max"]) if latency["max"] is not None else "no response"
    counts = ", ".join("%s x%d" % (key, count) for key, count in sorted(result["statuses"].items()))
    text = "%s %s (%s): %d/%d ok, %s; %s" % (
        "OK  " if result["ok"] else "FAIL", result["name"], result["url"], result["samples"] - result["errors"], result["samples"], counts, timing)
    if not result["ok"] and result.get("reason"):
        text += "; last problem: %s" % result["reason"]
    return text


def probe_all(endpoints: Sequence[Endpoint], samples: int = 1, interval: float = 0.0, timeout: float = 3.0, retries: int = 0,
              concurrency: int = 8, threshold: Optional[float] = None, validate_certs: bool = True,
              opener: Optional[urllib.request.OpenerDirector] = None) -> Dict[str, Any]:
    """Probe every endpoint (in parallel, ``concurrency`` at a time) and build the module result."""
    begin = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(endpoints)))) as pool:
        # One opener per endpoint: urllib openers are not documented as thread-safe.
        futures = [pool.submit(probe_endpoint, endpoint, samples, interval, timeout, retries, opener or build_opener(validate_certs))
                   for endpoint in endpoints]
        results = [future.result() for future in futures]
    return aggregate(results, threshold, round(time.monotonic() - begin, 3))


def aggregate(results: Sequence[Dict[str, Any]], threshold: Optional[float] = None, elapsed_s: float = 0.0) -> Dict[str, Any]:
    """Top-level result from per-endpoint results (pure).

    ``breached`` is the SLA error-rate decision itself (``sla.error_rate_exceeds``: errors/requests strictly
    above ``threshold``, compared exactly), so this module and the ``error_rate_breach`` filter always agree;
    ``threshold`` None is the SLA policy's (the runbook's 10 % rule)."""
    latencies: List[float] = []
    for result in results:
        latencies.extend(result.pop("_latencies", []))
    total = sum(result["samples"] for result in results)
    errors = sum(result["errors"] for result in results)
    rate = error_rate(errors, total)
    return {
        "changed": False,
        "healthy": all(result["ok"] for result in results),
        "error_rate": rate,
        "errors": errors,
        "requests": total,
        "breached": error_rate_exceeds(errors, total, error_rate_threshold() if threshold is None else threshold),
        "latency_ms": latency_summary(latencies),
        "endpoints": list(results),
        "summary": [summary_line(result) for result in results],
        "elapsed_s": elapsed_s,
    }


def failure_message(result: Mapping[str, Any], threshold: Optional[float] = None) -> str:
    if threshold is None:
        threshold = error_rate_threshold()
    bad = [entry for entry in result["endpoints"] if not entry["ok"]]
    parts = []
    if bad:
        parts.append("%d of %d health endpoints unhealthy: %s" % (len(bad), len(result["endpoints"]), "; ".join(
            "%s (%d/%d failed, last: %s)" % (entry["name"], entry["errors"], entry["samples"], entry.get("reason") or entry.get("error"))
            for entry in bad)))
    if result["breached"]:
        parts.append("error rate %.1f %% is above the threshold of %.1f %%" % (result["error_rate"] * 100, threshold * 100))
    return "; ".join(parts) or "health check failed"


def run(params: Mapping[str, Any]) -> Dict[str, Any]:
    """Validate everything, then probe. Raises HealthError on bad input (before any request)."""
    samples = int(params.get("samples") or 0)
    if samples < 1:
        raise HealthError("samples=%s is not valid: give 1 or more requests per endpoint" % params.get("samples"))
    concurrency = int(params.get("concurrency") or 0)
    if concurrency < 1:
        raise HealthError("concurrency=%s is not valid: give 1 or more parallel endpoints" % params.get("concurrency"))
    timeout = float(params.get("timeout") if params.get("timeout") is not None else 3)
    if timeout <= 0:
        raise HealthError("timeout=%s is not valid: give the seconds to wait for a response, greater than 0" % params.get("timeout"))
    interval = float(params.get("interval") or 0)
    retries = int(params.get("retries") or 0)
    # no threshold given: the SLA policy's error-rate rule (the only place the runbook's 10 % is written)
    threshold = float(params["error_rate_threshold"]) if params.get("error_rate_threshold") is not None else error_rate_threshold()
    if interval < 0 or retries < 0 or not 0 <= threshold <= 1:
        raise HealthError("interval and retries must be 0 or more and error_rate_threshold between 0 and 1 (got %s, %s, %s)"
                          % (interval, retries, threshold))
    endpoints = endpoints_from(params.get("urls") or [], params.get("headers"))
    return probe_all(endpoints, samples=samples, interval=interval, timeout=timeout, retries=retries, concurrency=concurrency,
                     threshold=threshold, validate_certs=params.get("validate_certs", True) is not False)


GATE_REQUEST_TIMEOUT_S = 2.0


def wait_healthy(url: str, timeout: float, interval: float, validate_certs: bool,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> Tuple[bool, Optional[int], str, int, float]:
    """GET ``url`` until it answers 200 or ``timeout`` seconds have passed: (healthy, last status, last error,
    attempts, seconds waited)."""
    opener = build_opener(validate_certs)
    began = clock()
    attempts, status, error = 0, None, ""
    while True:
        left = timeout - (clock() - began)
        attempts += 1
        try:
            status, _body = open_and_read(opener, urllib.request.Request(url, method="GET"),
                                          max(0.1, min(GATE_REQUEST_TIMEOUT_S, left)))
            error = ""
        except (OSError, ValueError) as exc:
            status, error = None, short_error(exc)
        waited = clock() - began
        if status == 200:
            return True, status, "", attempts, waited
        if waited + interval >= timeout:
            return False, status, error, attempts, waited
        sleep(interval)
