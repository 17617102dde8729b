# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure logic of the notification replay: token bucket (injected clock), routes, contacts, input
validation, reconciliation matching and the classification of provider answers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Dict

import pytest

from ansible_collections.akig.runbooks.plugins.module_utils.notification_replay import (
    LatencyHistogram,
    ReplayError,
    TokenBucket,
    contact_for,
    match_sendgrid,
    match_twilio,
    resolve_route,
    validate_params,
    validate_routes,
)
from ansible_collections.akig.runbooks.plugins.module_utils.notification_replay_providers import classify
from ansible_collections.akig.runbooks.tests.support.clock import FakeClock


def test_token_bucket_paces_at_its_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, burst=2, clock=clock, sleep=clock.sleep)
    assert bucket.take() == 0 and bucket.take() == 0  # the burst
    assert bucket.take() == pytest.approx(0.1)
    clock.now += 0.05
    assert bucket.take() == pytest.approx(0.05)
    for _token in range(50):
        bucket.acquire()
    # 50 tokens at 10/s after the burst is spent: 5 s of waiting in total.
    assert sum(clock.slept) == pytest.approx(5.0 - 0.05, abs=0.11)


def test_token_bucket_refill_is_capped_by_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5.0, burst=3, clock=clock, sleep=clock.sleep)
    clock.now += 3600
    assert [bucket.take() for _token in range(3)] == [0, 0, 0]
    assert bucket.take() > 0


def test_token_bucket_pause_holds_everyone_for_retry_after() -> None:
    clock = FakeClock()
    bucket = TokenBucket(None, clock=clock, sleep=clock.sleep)
    assert bucket.take() == 0  # no limit
    bucket.pause(30)
    assert bucket.take() == pytest.approx(30)
    bucket.pause(5)  # a shorter Retry-After does not shorten the pause
    assert bucket.acquire() == pytest.approx(30)
    assert bucket.take() == 0


@pytest.mark.parametrize("rate", [0, -1.0])
def test_token_bucket_refuses_non_positive_rate(rate: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate)


def test_latency_histogram_p95() -> None:
    hist = LatencyHistogram()
    assert hist.percentile_ms(95) is None
    for ms in range(1, 101):
        hist.add(ms / 1000.0)
    assert hist.percentile_ms(95) == pytest.approx(95.1, abs=0.11)


def test_routes_follow_chains_and_refuse_cycles_and_unknown_channels() -> None:
    routes = validate_routes({"sms": "email", "email": "push"})
    assert resolve_route("sms", routes) == "push"
    assert resolve_route("email", routes) == "push"
    assert resolve_route("push", routes) == "push"
    with pytest.raises(ReplayError, match=r"cycle sms -> email -> sms") as err:
        validate_routes({"sms": "email", "email": "sms"})
    assert err.value.option == "routes"
    with pytest.raises(ReplayError, match="unknown channel 'fax'"):
        validate_routes({"fax": "email"})
    with pytest.raises(ReplayError, match="unknown channel 'pigeon'"):
        validate_routes({"sms": "pigeon"})
    with pytest.raises(ReplayError, match="itself"):
        validate_routes({"sms": "sms"})


def test_contact_for_the_target_channel() -> None:
    contacts = {"sms": "+33611111111", "email": "a@akig.example", "postal": "1 rue de la Paix", "push": "user-1"}
    assert contact_for("sms", "+33611111111", contacts, "email") == "a@akig.example"
    assert contact_for("email", "a@akig.example", contacts, "phone_call") == "+33611111111"
    assert contact_for("sms", "+33611111111", contacts, "registered_mail") == "1 rue de la Paix"
    assert contact_for("sms", "+33611111111", '{"email": "b@akig.example"}', "email") == "b@akig.example"
    assert contact_for("sms", "+33611111111", {}, "email") is None
    assert contact_for("email", "a@akig.example", {}, "email") == "a@akig.example"


def params(**extra: Any) -> Dict[str, Any]:
    base: Dict[str, Any] = {
        "channels": ["sms", "email"], "kinds": ["preavis"], "statuses": ["pending"], "routes": {},
        "twilio_base_url": "http://127.0.0.1/twilio", "sendgrid_base_url": "http://127.0.0.1/sendgrid",
        "twilio_account_sid": "ACx", "twilio_auth_token": "t", "twilio_from": "+33700000000",
        "sendgrid_api_key": "SG.x", "sendgrid_from": "n@akig.example",
        "concurrency": 8, "batch_size": 50, "max_attempts": 5,
    }
    base.update(extra)
    return base


@pytest.mark.parametrize("extra, option", [
    ({"twilio_rate": 0.0}, "twilio_rate"),
    ({"sendgrid_rate": -1.0}, "sendgrid_rate"),
    ({"routes": {"email": "fax"}}, "routes"),
    ({"routes": {"sms": "email", "email": "sms"}}, "routes"),
    ({"twilio_auth_token": None}, "twilio_auth_token"),
    ({"channels": ["email"], "sendgrid_from": ""}, "sendgrid_from"),
    ({"channels": []}, "channels"),
    ({"concurrency": 0}, "concurrency"),
    ({"batch_size": 0}, "batch_size"),
    ({"twilio_base_url": "ftp://x"}, "twilio_base_url"),
    ({"run_id": "has space"}, "run_id"),
])
def test_validate_params_names_the_option(extra: Dict[str, Any], option: str) -> None:
    with pytest.raises(ReplayError) as err:
        validate_params(params(**extra))
    assert err.value.option == option


def test_credentials_only_for_the_channels_used() -> None:
    # SMS rerouted to e-mail: Twilio's credentials are not needed.
    validate_params(params(routes={"sms": "email"}, twilio_auth_token=None, twilio_account_sid=None))
    # Task channels need no provider at all.
    validate_params(params(channels=["push", "registered_mail"], twilio_auth_token=None, sendgrid_api_key=None))
    with pytest.raises(ReplayError, match="sendgrid_api_key is required"):
        validate_params(params(routes={"sms": "email"}, sendgrid_api_key=None))


def twilio_msg(sid: str, to: str, body: str, created: datetime) -> Dict[str, Any]:
    return {"sid": sid, "to": to, "body": body, "date_created": created.strftime("%a, %d %b %Y %H:%M:%S +0000")}


def test_match_twilio_by_recipient_body_and_time() -> None:
    locked = datetime(2026, 11, 30, 17, 0, 0, 500000, tzinfo=timezone.utc)
    messages = [
        twilio_msg("SM1", "+33611111111", "hello", locked + timedelta(seconds=1)),
        twilio_msg("SM2", "+33611111111", "other body", locked + timedelta(seconds=1)),
        twilio_msg("SM3", "+33622222222", "hello", locked + timedelta(seconds=1)),
        twilio_msg("SM4", "+33611111111", "hello", locked - timedelta(hours=2)),  # an older, identical message
        twilio_msg("SM5", "+33611111111", "hello", locked),  # same second as the claim, truncated
    ]
    assert match_twilio("+33611111111", "hello", locked, messages, slack_s=0) == ["SM1", "SM5"]
    # A sid already recorded on another row is that row's send, not this one's.
    assert match_twilio("+33611111111", "hello", locked, messages, taken=["SM5"], slack_s=0) == ["SM1"]
    assert match_twilio("+33699999999", "hello", locked, messages) == []


def test_match_sendgrid_by_recipient() -> None:
    messages = [{"msg_id": "abc.filter0001-1-0.0", "to_email": "A@akig.example"},
                {"msg_id": "def.filter0001-2-0.0", "to_email": "b@akig.example"}]
    assert match_sendgrid("a@akig.example", messages) == ["abc"]
    assert match_sendgrid("c@akig.example", messages) == []


@pytest.mark.parametrize("status, headers, kind, retry_after", [
    (201, {}, "ok", None),
    (202, {}, "ok", None),
    (429, {"retry-after": "7"}, "retry", 7.0),
    (503, {}, "retry", None),
    (500, {}, "retry", None),
    (401, {}, "auth", None),
    (403, {}, "auth", None),
    (400, {}, "invalid", None),
])
def test_classify_provider_answers(status: int, headers: Dict[str, str], kind: str, retry_after: Any) -> None:
    result = classify(status, headers, b'{"code": 1, "message": "Some error"}')
    assert (result.kind, result.retry_after) == (kind, retry_after)
    if kind != "ok":
        assert result.error == "HTTP %d: Some error" % status
