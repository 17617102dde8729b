# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure functions of module_utils/http_health.py: URL checks, percentiles, error rates, summaries."""

from __future__ import annotations

import json
from typing import Any, List

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils.http_health import (
    Endpoint,
    HealthError,
    Sample,
    aggregate,
    endpoints_from,
    error_rate,
    failure_message,
    json_mismatch,
    latency_summary,
    percentile,
    secret_values,
    summarize_endpoint,
    truncate_json,
    validate_url,
)
from hypothesis import given
from hypothesis import strategies as st

LATENCIES = st.lists(st.floats(min_value=0, max_value=60_000, allow_nan=False, allow_infinity=False), min_size=1, max_size=200)


@pytest.mark.parametrize(
    "values, pct, expected",
    [
        ([15, 20, 35, 40, 50], 5, 15),
        ([15, 20, 35, 40, 50], 30, 20),
        ([15, 20, 35, 40, 50], 40, 20),
        ([15, 20, 35, 40, 50], 50, 35),
        ([15, 20, 35, 40, 50], 100, 50),
        ([3, 6, 7, 8, 8, 10, 13, 15, 16, 20], 25, 7),
        ([3, 6, 7, 8, 8, 10, 13, 15, 16, 20], 50, 8),
        ([3, 6, 7, 8, 8, 10, 13, 15, 16, 20], 75, 15),
        ([3, 6, 7, 8, 8, 10, 13, 15, 16, 20], 95, 20),
        ([20, 3, 16, 6, 15, 7, 13, 8, 10, 8], 50, 8),
        ([42.5], 50, 42.5),
        ([42.5], 0, 42.5),
        (list(range(1, 101)), 95, 95),
        (list(range(1, 101)), 95.5, 96),
    ],
)
def test_percentile_is_nearest_rank(values: List[float], pct: float, expected: float) -> None:
    assert percentile(values, pct) == expected


def test_percentile_edge_cases() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1, 2], 101)
    assert latency_summary([]) == {"p50": None, "p95": None, "max": None}
    assert latency_summary([1.004, 2.0, 30.0]) == {"p50": 2.0, "p95": 30.0, "max": 30.0}


@given(LATENCIES)
def test_latency_summary_is_ordered_and_taken_from_the_samples(values: List[float]) -> None:
    summary = latency_summary(values)
    assert summary["p50"] <= summary["p95"] <= summary["max"]
    assert round(min(values), 2) <= summary["p50"]
    assert summary["max"] == round(max(values), 2)


@given(LATENCIES, st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=100))
def test_percentile_is_monotonic_and_one_of_the_values(values: List[float], low: float, high: float) -> None:
    low, high = sorted((low, high))
    assert percentile(values, low) <= percentile(values, high)
    assert percentile(values, high) in values


@pytest.mark.parametrize("errors, total, expected", [(0, 0, 0.0), (0, 10, 0.0), (3, 10, 0.3), (10, 10, 1.0), (1, 3, 0.3333)])
def test_error_rate(errors: int, total: int, expected: float) -> None:
    assert error_rate(errors, total) == expected


@given(st.integers(min_value=0, max_value=10_000).flatmap(lambda total: st.tuples(st.integers(min_value=0, max_value=total), st.just(total))))
def test_error_rate_is_a_share(pair: Any) -> None:
    errors, total = pair
    rate = error_rate(errors, total)
    assert 0.0 <= rate <= 1.0
    assert rate == (round(errors / total, 4) if total else 0.0)
    if errors == total and total:
        assert rate == 1.0


def test_error_rate_rejects_more_errors_than_requests() -> None:
    with pytest.raises(ValueError):
        error_rate(3, 2)


@pytest.mark.parametrize("url", ["http://127.0.0.21:4000/api/health", "https://app.akig.example/healthz", "http://[::1]:4000/",
                                 "http://backend", "HTTP://host/x".lower()])
def test_valid_urls(url: str) -> None:
    assert validate_url(url) == url


@pytest.mark.parametrize("url", ["htp:/x", "http:/x", "http://", "ftp://h/x", "//host/x", "host:4000/x", "http://h:0/x", "http://h:99999/",
                                 "http://h:port/", " http://h/", "http://h /x", "", None, 4000, "http://[::1/"])
def test_malformed_urls(url: Any) -> None:
    with pytest.raises(HealthError) as err:
        validate_url(url)
    assert err.value.msg == "malformed health URL '%s': expected http(s)://host[:port]/path" % (url,)


def test_endpoints_from_strings_and_dicts() -> None:
    endpoints = endpoints_from(
        ["http://a:4000/api/health",
         {"url": "http://b:4000/api/health", "name": "b", "method": "head", "expect_status": 204,
          "expect_json": {"status": "ok"}, "headers": {"X-Probe": 1}}],
        headers={"Authorization": "Bearer t"})
    assert endpoints[0] == Endpoint(url="http://a:4000/api/health", name="http://a:4000/api/health", headers={"Authorization": "Bearer t"})
    assert endpoints[1] == Endpoint(url="http://b:4000/api/health", name="b", method="HEAD", expect_status=[204],
                                    expect_json={"status": "ok"}, headers={"Authorization": "Bearer t", "X-Probe": "1"})


@pytest.mark.parametrize(
    "urls, message",
    [
        ([], "urls is empty"),
        ([42], "urls[0] is a int: give a URL string or a dict"),
        ([{"url": "http://a/", "expect": 200}], "urls[0] has unknown keys expect: accepted keys are"),
        ([{"url": "http://a/", "expect_status": ["ok"]}], "urls[0] expect_status ['ok'] is not a list of HTTP status codes"),
        ([{"url": "http://a/", "expect_status": [600]}], "is not a list of HTTP status codes (100-599)"),
        ([{"url": "http://a/", "expect_json": "ok"}], "urls[0] expect_json must be a dict"),
        ([{"url": "http://a/", "method": "GET /"}], "urls[0] method 'GET /' is not an HTTP method"),
        (["http://a/", {"name": "no url"}], "malformed health URL 'None'"),
    ],
)
def test_endpoints_from_rejects_bad_entries(urls: List[Any], message: str) -> None:
    with pytest.raises(HealthError) as err:
        endpoints_from(urls)
    assert message in err.value.msg


def test_secret_values_are_the_header_values_inside_urls() -> None:
    assert secret_values(["http://a/", {"url": "http://b/", "headers": {"Authorization": "Bearer x", "X-Empty": ""}}]) == ["Bearer x"]
    assert secret_values([]) == []


@pytest.mark.parametrize(
    "expected, body, problem",
    [
        (None, None, None),
        ({"status": "ok"}, {"status": "ok", "db": "up"}, None),
        ({"status": "ok"}, {"status": "degraded"}, "JSON status='degraded', expected 'ok'"),
        ({"status": "ok"}, {"db": "up"}, "JSON key 'status' missing (expected 'ok')"),
        ({"status": "ok"}, ["ok"], "body is not a JSON object (expect_json)"),
        ({"workers": 2}, {"workers": 2}, None),
        ({"workers": 2}, {"workers": "2"}, "JSON workers='2', expected 2"),
    ],
)
def test_json_mismatch(expected: Any, body: Any, problem: Any) -> None:
    assert json_mismatch(expected, body) == problem


def test_truncate_json_keeps_small_bodies_and_cuts_big_ones() -> None:
    small = {"status": "ok"}
    assert truncate_json(small) is small
    big = {"items": ["é" * 50] * 200}
    cut = truncate_json(big)
    assert isinstance(cut, str) and len(cut.encode("utf-8")) <= 4096 and cut.startswith('{"items": [')


def test_summarize_endpoint_and_aggregate() -> None:
    endpoint = Endpoint(url="http://a:4000/api/health", name="app-1")
    samples = [Sample(ok=True, status=200, latency_ms=5.0, body={"status": "ok"}, has_json=True),
               Sample(ok=False, status=503, latency_ms=2.0, body={"status": "down"}, has_json=True, reason="status 503 not in [200]"),
               Sample(ok=False, latency_ms=3000.0, error="timed out", timed_out=True, reason="timed out after 3.0 s"),
               Sample(ok=False, latency_ms=0.5, error="[Errno 111] Connection refused", reason="[Errno 111] Connection refused")]
    result = summarize_endpoint(endpoint, samples)
    assert result["statuses"] == {"200": 1, "503": 1, "timeout": 1, "error": 1}
    assert result["errors"] == 3 and result["error_rate"] == 0.75 and result["ok"] is False
    assert result["status"] == 503 and result["json"] == {"status": "down"}
    assert result["latency_ms"] == {"p50": 2.0, "p95": 5.0, "max": 5.0}, "timeouts and refusals are not latencies"
    assert result["error"] == "[Errno 111] Connection refused" and result["reason"] == "[Errno 111] Connection refused"
    good = summarize_endpoint(Endpoint(url="http://b/", name="b"), [Sample(ok=True, status=200, latency_ms=1.0)])
    total = aggregate([result, good], threshold=0.5)
    assert total["healthy"] is False and total["error_rate"] == 0.6 and total["breached"] is True
    assert total["latency_ms"] == {"p50": 2.0, "p95": 5.0, "max": 5.0} and total["requests"] == 5
    assert all("_latencies" not in entry for entry in total["endpoints"])
    assert total["summary"][1] == "OK   b (http://b/): 1/1 ok, 200 x1; p50 1.0 ms, p95 1.0 ms, max 1.0 ms"
    assert total["summary"][0].startswith("FAIL app-1 (http://a:4000/api/health): 1/4 ok, 200 x1, 503 x1, error x1, timeout x1;")
    assert failure_message(total, 0.5) == ("1 of 2 health endpoints unhealthy: app-1 (3/4 failed, last: [Errno 111] Connection refused); "
                                           "error rate 60.0 % is above the threshold of 50.0 %")
    json.dumps(total)


def test_no_samples_is_not_ok() -> None:
    result = summarize_endpoint(Endpoint(url="http://a/", name="a"), [])
    assert result["ok"] is False and result["error_rate"] == 0.0 and result["latency_ms"]["p50"] is None
