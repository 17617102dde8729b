# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for plugins/module_utils/notification_routes.py (RB-P2-003: fallback matrix, routes, error classes)."""

from __future__ import annotations

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils.notification_routes import (
    CHANNELS, HEALTH_CLASSES, PROVIDER_OF_CHANNEL, NotificationRoutesError, error_class, error_classes,
    notification_routes, validate_matrix)
from hypothesis import given
from hypothesis import strategies as st

DOC = {"sms": ["email", "push"], "email": ["sms", "dashboard"], "preavis": ["phone_call", "registered_mail"]}
OK = {"twilio": "ok", "sendgrid": "ok"}


def test_the_documents_matrix_is_valid_and_mutual_fallbacks_are_not_a_cycle() -> None:
    assert validate_matrix(DOC) == DOC
    assert validate_matrix({" sms ": [" email "]}) == {"sms": ["email"]}


@pytest.mark.parametrize(("matrix", "words"), [
    ({"fax": ["email"]}, ["unknown primary channel 'fax'", "sms, email, preavis"]),
    ({"sms": ["email", "pigeon"]}, ["notification_fallback_matrix.sms", "unknown channel 'pigeon'"]),
    ({"sms": ["email", "sms"]}, ["fallback cycle", "sms -> email -> sms"]),
    ({"email": ["push", "push"]}, ["fallback cycle", "email -> push -> push"]),
    ({"sms": []}, ["non-empty list"]),
    ({"sms": "email"}, ["non-empty list"]),
    ({}, ["must be a mapping"]),
    (["sms"], ["must be a mapping"]),
])
def test_bad_matrices_are_refused_naming_the_row(matrix, words) -> None:
    with pytest.raises(NotificationRoutesError) as err:
        validate_matrix(matrix)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize(("health", "routes", "preavis", "unrouted"), [
    (OK, {}, {}, []),
    ({"twilio": "outage", "sendgrid": "ok"}, {"sms": "email"}, {"sms": "phone_call"}, []),
    ({"twilio": "ok", "sendgrid": "timeout"}, {"email": "sms"}, {"email": "phone_call"}, []),
    # both down: the second choice of each row (no chain through the other, dead, provider)
    ({"twilio": "outage", "sendgrid": "outage"}, {"sms": "push", "email": "dashboard"},
     {"sms": "phone_call", "email": "phone_call"}, []),
    # quota waits and credentials are rotated: no reroute by default
    ({"twilio": "quota", "sendgrid": "credentials"}, {}, {}, []),
])
def test_routes_follow_the_matrix_and_the_health(health, routes, preavis, unrouted) -> None:
    r = notification_routes(DOC, health)
    assert r["routes"] == routes
    assert r["preavis_routes"] == preavis
    assert r["unrouted"] == unrouted
    assert r["down"] == [p for p in ("twilio", "sendgrid") if health[p] != "ok"]


def test_a_channel_with_no_usable_fallback_waits_and_provider_check_results_are_read() -> None:
    r = notification_routes({"sms": ["email"]}, {"twilio": {"class": "outage"}, "sendgrid": {"class": "outage"}})
    assert r["routes"] == {} and r["unrouted"] == ["sms", "email"]
    # no preavis row: préavis take their channel's row
    assert notification_routes({"sms": ["push"]}, {"twilio": "outage", "sendgrid": "ok"})["preavis_routes"] == {"sms": "push"}
    assert notification_routes(DOC, {"twilio": "quota", "sendgrid": "ok"}, ["quota"])["routes"] == {"sms": "email"}


@pytest.mark.parametrize(("health", "reroute_on", "words"), [
    ({"twilio": "ok"}, ["outage"], ["no entry for 'sendgrid'"]),
    ({"twilio": "down", "sendgrid": "ok"}, ["outage"], ["provider 'twilio'", "ok, credentials"]),
    (OK, ["ok"], ["not failure classes"]),
    (OK, "outage", ["must be a list"]),
])
def test_bad_health_or_reroute_classes_are_refused(health, reroute_on, words) -> None:
    with pytest.raises(NotificationRoutesError) as err:
        notification_routes(DOC, health, reroute_on)
    for word in words:
        assert word in str(err.value)


@given(st.dictionaries(st.sampled_from(["sms", "email", "preavis"]),
                       st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=4, unique=True), min_size=1),
       st.sampled_from(HEALTH_CLASSES), st.sampled_from(HEALTH_CLASSES))
def test_a_route_always_ends_on_a_usable_channel_and_never_loops(matrix, twilio, sendgrid) -> None:
    try:
        r = notification_routes(matrix, {"twilio": twilio, "sendgrid": sendgrid})
    except NotificationRoutesError as exc:
        assert "cycle" in str(exc)
        return
    health = {"twilio": twilio, "sendgrid": sendgrid}
    for table in (r["routes"], r["preavis_routes"]):
        for channel, target in table.items():
            assert target != channel
            assert target not in table, "a route never leads to a channel that is itself routed away"
            assert PROVIDER_OF_CHANNEL.get(target) is None or health[PROVIDER_OF_CHANNEL[target]] == "ok"


@pytest.mark.parametrize(("text", "cls"), [
    ("HTTP 401: Authenticate", "credentials"),
    ("HTTP 403: forbidden", "credentials"),
    ("HTTP 429: Too Many Requests", "quota"),
    ("HTTP 503", "outage"),
    ("HTTP 500: boom", "outage"),
    ("network error: timeout", "timeout"),
    ("network error: ECONNREFUSED", "outage"),
    ("HTTP 400: bad to", "other"),
    ("reset: stuck in sending since 2026-01-01", "other"),
    (None, "other"),
])
def test_error_class(text, cls) -> None:
    assert error_class(text) == cls


def test_error_classes_count_texts_and_rows() -> None:
    assert error_classes(["HTTP 503", {"last_error": "HTTP 401: Authenticate", "count": 12},
                          {"error": "HTTP 429", "count": 2}]) == {"credentials": 12, "outage": 1, "quota": 2}
    with pytest.raises(NotificationRoutesError):
        error_classes("HTTP 503")


GOOD = {"matrix": DOC, "reroute_on": ["outage"], "twilio_rate": None, "sendgrid_rate": 50, "concurrency": 8,
        "batch_size": 50, "max_messages": 0, "pending_threshold": 1000,
        "credentials": {"akig_twilio_auth_token": "t", "akig_sendgrid_api_key": "k"}, "test_send": True,
        "test_recipients": {"sms": "+33600000001", "email": "oncall@akig.example"},
        "test_allowed": ["+33600000001", "oncall@akig.example"]}


def test_good_inputs_have_no_problem() -> None:
    from ansible_collections.akig.runbooks.plugins.module_utils.notification_routes import replay_problems
    assert replay_problems(GOOD) == []
    assert replay_problems({**GOOD, "test_send": False, "test_recipients": {}, "test_allowed": []}) == []


@pytest.mark.parametrize(("change", "words"), [
    ({"matrix": {"sms": ["fax"], "email": ["sms"]}}, ["unknown channel 'fax'"]),
    ({"matrix": {"sms": ["email", "sms"], "email": ["sms"]}}, ["fallback cycle"]),
    ({"matrix": {"sms": ["email"]}}, ["no row for email"]),
    ({"twilio_rate": 0}, ["notification_replay_twilio_rate", "above 0"]),
    ({"sendgrid_rate": -5}, ["notification_replay_sendgrid_rate", "above 0"]),
    ({"sendgrid_rate": "fast"}, ["notification_replay_sendgrid_rate"]),
    ({"concurrency": 0}, ["concurrency must be a whole number of at least 1"]),
    ({"pending_threshold": "many"}, ["pending_threshold"]),
    ({"credentials": {"akig_twilio_auth_token": "", "akig_sendgrid_api_key": "CHANGE_ME"}},
     ["missing credentials: akig_sendgrid_api_key, akig_twilio_auth_token"]),
    ({"test_recipients": {"sms": "+33699999999"}}, ["'+33699999999' is not in notification_test_recipients_allowed"]),
    ({"test_recipients": {"sms": "0612345678"}}, ["not an E.164 phone number"]),
    ({"test_recipients": {"fax": "x"}}, ["unknown channel 'fax'"]),
    ({"test_allowed": []}, ["notification_test_recipients_allowed must list"]),
    ({"reroute_on": ["ok"]}, ["notification_replay_reroute_on"]),
    ({"senders": {"akig_twilio_from": "CHANGE_ME", "akig_sendgrid_from": "noreply@akig.example"}},
     ["akig_twilio_from 'CHANGE_ME' is not an E.164 phone number"]),
])
def test_each_bad_input_is_named(change, words) -> None:
    from ansible_collections.akig.runbooks.plugins.module_utils.notification_routes import replay_problems
    problems = replay_problems({**GOOD, **change})
    text = ". ".join(problems)
    for word in words:
        assert word in text


def test_credential_values_never_appear_in_problems() -> None:
    from ansible_collections.akig.runbooks.plugins.module_utils.notification_routes import replay_problems
    problems = replay_problems({**GOOD, "credentials": {"akig_twilio_auth_token": "s3cr3t-value", "x": ""},
                                "twilio_rate": 0})
    assert problems and not any("s3cr3t" in p for p in problems)


@pytest.mark.parametrize(("check", "test_status", "queue", "diagnosis"), [
    ("ok", 202, {"credentials": 40}, "ok"),              # the test send works now: old errors do not count
    ("ok", 401, None, "app_credentials"),                 # the vault's key works, the app's does not
    ("ok", None, {"credentials": 40, "outage": 3}, "app_credentials"),
    ("ok", None, {"outage": 40, "credentials": 3}, "ok"),
    ("ok", 429, None, "quota"),
    ("ok", 503, None, "outage"),
    ("credentials", 401, None, "vault_credentials"),      # new keys are needed: nothing to deploy
    ({"class": "outage"}, None, None, "outage"),
    ("timeout", None, None, "timeout"),
    ("quota", 429, None, "quota"),
])
def test_provider_diagnosis(check, test_status, queue, diagnosis) -> None:
    from ansible_collections.akig.runbooks.plugins.module_utils.notification_routes import provider_diagnosis
    assert provider_diagnosis(check, test_status, queue) == diagnosis


def test_sum_counts() -> None:
    from ansible_collections.akig.runbooks.plugins.module_utils.notification_routes import sum_counts
    assert sum_counts([{"counts": {"sent": 3, "failed": 1}}, {"skipped": True}, {"counts": {"sent": 2, "x": True}}]) == {
        "failed": 1, "sent": 5}
    assert sum_counts(None) == {}
