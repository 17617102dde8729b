# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for plugins/module_utils/notification_plan.py (RB-P2-003's decisions: the providers' health, the outage
plan, the plan after the rotation and the wait, the queue's leftover) and the worker log's error classes."""

from __future__ import annotations

import json

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils.notification_plan import (
    DIAGNOSIS_WORDS, NO_CAUSE, leftover, outage_plan, provider_health, recovered_providers, resolve_plan)
from ansible_collections.akig.runbooks.plugins.module_utils.notification_routes import (
    DIAGNOSES, PROVIDERS, NotificationRoutesError, log_error_classes)
from hypothesis import given
from hypothesis import strategies as st

DOC = {"sms": ["email", "push"], "email": ["sms", "dashboard"], "preavis": ["phone_call", "registered_mail"]}
REROUTE_ON = ["outage", "timeout", "error"]


def check(provider: str, cls: str = "ok", status: int | None = 200) -> dict:
    """A provider_check result as registered in a loop (credentials options included, as Ansible keeps them)."""
    return {"provider": provider, "ok": cls == "ok", "class": cls, "status": status, "detail": "%s %s" % (provider, cls),
            "credential_fingerprint": "0123456789ab", "invocation": {"module_args": {"sendgrid_api_key": "SG.x"}},
            "ansible_loop_var": "__notification_replay_provider", "__notification_replay_provider": provider}


def app_test(channel: str, provider_status: int | None, http: int = 200) -> dict:
    return {"status": http, "json": {"status": "sent" if http == 200 else "failed", "provider_status": provider_status},
            "ansible_loop_var": "__notification_replay_channel",
            "__notification_replay_channel": {"key": channel, "value": "x"}}


def health(**diagnoses: str) -> dict:
    return {p: {"class": "ok", "status": 200, "detail": "", "test_status": None, "diagnosis": diagnoses.get(p, "ok")}
            for p in PROVIDERS}


# --- provider_health -------------------------------------------------------------------------------------------

def test_health_joins_each_check_with_its_channels_test_send_and_queue_errors() -> None:
    h = provider_health([check("sendgrid", "ok"), check("twilio", "outage", None)],
                        [app_test("sms", None, 502), app_test("email", 401, 502)],
                        {"sms": {"outage": 40}, "email": {"credentials": 3}})
    assert list(h) == ["twilio", "sendgrid"]
    assert h["twilio"] == {"class": "outage", "status": None, "detail": "twilio outage", "test_status": None,
                           "diagnosis": "outage"}
    assert h["sendgrid"] == {"class": "ok", "status": 200, "detail": "sendgrid ok", "test_status": 401,
                             "diagnosis": "app_credentials"}
    assert "fingerprint" not in json.dumps(h) and "SG.x" not in json.dumps(h)


def test_health_without_test_sends_reads_the_queue_and_skipped_sends_count_as_none() -> None:
    skipped = {"skipped": True, "ansible_loop_var": "item", "item": {"key": "sms", "value": "x"}}
    h = provider_health([check("twilio"), check("sendgrid")], [skipped], {"sms": {"credentials": 40, "outage": 2}})
    assert h["twilio"]["test_status"] is None and h["twilio"]["diagnosis"] == "app_credentials"
    assert h["sendgrid"]["diagnosis"] == "ok"
    assert provider_health([check("twilio"), check("sendgrid")])["twilio"]["diagnosis"] == "ok"


def test_health_the_first_answer_of_a_channel_counts() -> None:
    h = provider_health([check("twilio"), check("sendgrid")], [app_test("sms", 202), app_test("sms", 401)])
    assert h["twilio"]["test_status"] == 202 and h["twilio"]["diagnosis"] == "ok"


@pytest.mark.parametrize(("checks", "words"), [
    ({"twilio": "ok"}, ["must be the list of provider_check results"]),
    ([check("twilio")], ["no provider check for sendgrid"]),
    ([check("twilio"), {"provider": "fax", "class": "ok"}], ["provider 'fax'", "twilio, sendgrid"]),
    ([check("twilio"), {"provider": "sendgrid", "failed": True, "msg": "boom"}], ["provider 'sendgrid'"]),
])
def test_health_refuses_what_is_not_one_check_per_provider(checks, words) -> None:
    with pytest.raises(NotificationRoutesError) as err:
        provider_health(checks)
    for word in words:
        assert word in str(err.value)


# --- outage_plan -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("diagnoses", "expected"), [
    ({}, {"failing": [], "rotate": [], "vault_refused": [], "wait_for": [], "routes": {}, "preavis_routes": {},
          "mitigate_channels": [], "cause": NO_CAUSE}),
    ({"twilio": "outage"}, {"failing": ["twilio"], "rotate": [], "wait_for": ["twilio"], "routes": {"sms": "email"},
                            "preavis_routes": {"sms": "phone_call"}, "mitigate_channels": ["sms"],
                            "cause": "twilio is down (5xx or no connection)"}),
    ({"twilio": "quota", "sendgrid": "quota"}, {"failing": ["twilio", "sendgrid"], "wait_for": ["twilio", "sendgrid"],
                                                "routes": {}, "mitigate_channels": [],
                                                "cause": "twilio refuses for quota (429); sendgrid refuses for quota (429)"}),
    ({"twilio": "app_credentials", "sendgrid": "app_credentials"},
     {"failing": ["twilio", "sendgrid"], "rotate": ["twilio", "sendgrid"], "wait_for": [], "routes": {},
      "cause": "twilio " + DIAGNOSIS_WORDS["app_credentials"] + "; sendgrid " + DIAGNOSIS_WORDS["app_credentials"]}),
    ({"sendgrid": "vault_credentials"}, {"failing": ["sendgrid"], "rotate": [], "vault_refused": ["sendgrid"],
                                         "wait_for": ["sendgrid"], "routes": {},
                                         "cause": "sendgrid refuses the vault's credentials too: new keys are needed"}),
    # both down: the second choice of each row; the préavis rows route both channels
    ({"twilio": "timeout", "sendgrid": "error"}, {"routes": {"sms": "push", "email": "dashboard"},
                                                  "preavis_routes": {"sms": "phone_call", "email": "phone_call"},
                                                  "mitigate_channels": ["sms", "email"]}),
])
def test_the_plan_for_each_health(diagnoses, expected) -> None:
    plan = outage_plan(health(**diagnoses), DOC, REROUTE_ON)
    for key, value in expected.items():
        assert plan[key] == value, key
    assert plan["diagnosis"] == {p: diagnoses.get(p, "ok") for p in PROVIDERS}


def test_the_plan_reroutes_credentials_only_when_asked_and_keeps_the_evidence_verbatim() -> None:
    h = health(twilio="app_credentials")
    assert outage_plan(h, DOC, ["credentials"])["routes"] == {"sms": "email"}
    assert outage_plan({"twilio": "outage", "sendgrid": "ok"}, DOC)["routes"] == {"sms": "email"}
    plan = outage_plan(h, DOC)
    assert plan["evidence"] == ["twilio: " + json.dumps(h["twilio"]), "sendgrid: " + json.dumps(h["sendgrid"])]
    assert plan["evidence"][0].startswith('twilio: {"class": "ok", "status": 200, "detail": "", "test_status": null,')


@pytest.mark.parametrize(("h", "words"), [
    ([], ["must be a mapping provider -> {diagnosis"]),
    ({"twilio": "ok"}, ["no entry for 'sendgrid'"]),
    ({"twilio": "down", "sendgrid": "ok"}, ["diagnosis of provider 'twilio'", "app_credentials, vault_credentials"]),
    ({"twilio": {"class": "ok"}, "sendgrid": "ok"}, ["diagnosis of provider 'twilio'", "None"]),
])
def test_the_plan_refuses_a_health_without_diagnoses(h, words) -> None:
    with pytest.raises(NotificationRoutesError) as err:
        outage_plan(h, DOC)
    for word in words:
        assert word in str(err.value)


def test_the_plan_refuses_a_bad_matrix_or_reroute_classes() -> None:
    with pytest.raises(NotificationRoutesError, match="fallback cycle"):
        outage_plan(health(), {"sms": ["email", "sms"]})
    with pytest.raises(NotificationRoutesError, match="not failure classes"):
        outage_plan(health(), DOC, ["ok"])


# --- resolve_plan ----------------------------------------------------------------------------------------------

def plan_of(**diagnoses: str) -> dict:
    return outage_plan(health(**diagnoses), DOC, REROUTE_ON)


def waited(provider: str, ok: bool) -> dict:
    return {**check(provider, "ok" if ok else "outage"), "ansible_loop_var": "__rb_provider", "__rb_provider": provider}


@pytest.mark.parametrize(("diagnoses", "recovered", "expected"), [
    # nothing failed: everything replayed, the banner (none) comes down
    ({}, [], {"back": [], "still": [], "routes": {}, "wait_channels": [], "replay_channels": ["sms", "email"],
              "unbanner": True}),
    # Twilio down and still down: its messages keep their route (SMS -> e-mail), nothing waits, banner stays
    ({"twilio": "outage"}, [waited("twilio", False)],
     {"back": [], "still": ["twilio"], "routes": {"sms": "email"}, "preavis_routes": {"sms": "phone_call"},
      "wait_channels": [], "replay_channels": ["sms", "email"], "unbanner": False}),
    # Twilio back: unpaused, no route left
    ({"twilio": "outage"}, [waited("twilio", True)],
     {"back": ["twilio"], "still": [], "routes": {}, "preavis_routes": {}, "wait_channels": [],
      "replay_channels": ["sms", "email"], "unbanner": True}),
    # quota on both, only SendGrid back: SMS waits (quota is not rerouted), e-mail is replayed
    ({"twilio": "quota", "sendgrid": "quota"}, [waited("twilio", False), waited("sendgrid", True)],
     {"back": ["sendgrid"], "still": ["twilio"], "routes": {}, "wait_channels": ["sms"], "replay_channels": ["email"],
      "unbanner": False}),
    # rotated credentials count as back, first; a recovered one follows
    ({"twilio": "timeout", "sendgrid": "app_credentials"}, ["twilio"],
     {"back": ["sendgrid", "twilio"], "still": [], "replay_channels": ["sms", "email"], "unbanner": True}),
    # both down and neither back: each has its second choice, nothing waits
    ({"twilio": "outage", "sendgrid": "outage"}, [],
     {"still": ["twilio", "sendgrid"], "routes": {"sms": "push", "email": "dashboard"}, "wait_channels": []}),
])
def test_the_resolve_plan(diagnoses, recovered, expected) -> None:
    r = resolve_plan(plan_of(**diagnoses), recovered, DOC, REROUTE_ON)
    for key, value in expected.items():
        assert r[key] == value, key


def test_a_provider_waits_when_the_matrix_gives_it_no_usable_fallback() -> None:
    r = resolve_plan(plan_of(twilio="outage", sendgrid="outage"), [], {"sms": ["email"], "email": ["sms"]})
    assert r["routes"] == {} and r["unrouted"] == ["sms", "email"]
    assert r["wait_channels"] == ["sms", "email"] and r["replay_channels"] == []


def test_recovered_providers_reads_names_and_check_results() -> None:
    assert recovered_providers(None) == []
    assert recovered_providers([waited("twilio", True), waited("sendgrid", False), {"failed": True, "msg": "x"},
                                "twilio"]) == ["twilio"]
    # a provider that was not failing (or is rotated) is not unpaused twice
    assert resolve_plan(plan_of(twilio="app_credentials"), ["twilio", "sendgrid"], DOC)["back"] == ["twilio"]
    with pytest.raises(NotificationRoutesError, match="unknown provider 'fax'"):
        recovered_providers(["fax"])
    with pytest.raises(NotificationRoutesError, match="must be a list"):
        recovered_providers("twilio")


@pytest.mark.parametrize(("plan", "words"), [
    ({}, ["must be the result of notification_plan"]),
    ("twilio", ["must be the result of notification_plan"]),
    ({"failing": ["fax"], "rotate": [], "diagnosis": {}}, ["plan.failing", "'fax'"]),
    ({"failing": ["twilio"], "rotate": [], "diagnosis": {"twilio": "outage"}}, ["no entry for 'sendgrid'"]),
])
def test_the_resolve_plan_refuses_what_is_not_a_plan(plan, words) -> None:
    with pytest.raises(NotificationRoutesError) as err:
        resolve_plan(plan, [], DOC)
    for word in words:
        assert word in str(err.value)


@given(st.sampled_from(DIAGNOSES), st.sampled_from(DIAGNOSES), st.lists(st.sampled_from(PROVIDERS), unique=True))
def test_every_provider_is_back_or_still_and_every_channel_is_replayed_or_waits(twilio, sendgrid, recovered) -> None:
    plan = plan_of(twilio=twilio, sendgrid=sendgrid)
    r = resolve_plan(plan, recovered, DOC, REROUTE_ON)
    assert sorted(r["back"] + r["still"]) == sorted(plan["failing"])
    assert not set(r["back"]) & set(r["still"])
    assert set(plan["rotate"]) <= set(r["back"])
    assert sorted(r["wait_channels"] + r["replay_channels"]) == ["email", "sms"]
    assert set(r["routes"]) <= {"sms": "twilio", "email": "sendgrid"}.keys()
    for channel, target in r["routes"].items():
        assert {"sms": "twilio", "email": "sendgrid"}[channel] in r["still"]
        assert {"sms": "twilio", "email": "sendgrid"}.get(target) not in r["still"]
    assert r["unbanner"] is (not r["still"])


# --- leftover --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("queue", "wait", "expected"), [
    ({}, [], {"left": 0, "waiting": 0}),
    ({"sms/reminder": 120, "sms/preavis": "60", "email/receipt": 3}, ["sms"], {"left": 3, "waiting": 180}),
    ({"sms/reminder": 120, "email/receipt": 3}, [], {"left": 123, "waiting": 0}),
    ({"sms/reminder": 1, "email/receipt": 2, "push/alert": 4}, ["sms", "email"], {"left": 4, "waiting": 3}),
    # a channel is the whole part before the slash: "smsx" is not "sms"; a key without a slash is deliverable
    ({"smsx/reminder": 5, "sms": 7}, ["sms"], {"left": 12, "waiting": 0}),
])
def test_leftover(queue, wait, expected) -> None:
    assert leftover(queue, wait) == expected


@pytest.mark.parametrize(("queue", "wait", "words"), [
    ([], [], ["must be a mapping 'channel/kind' -> count"]),
    ({"sms/reminder": "many"}, [], ["'sms/reminder'", "whole number"]),
    ({}, "sms", ["wait_channels must be a list"]),
])
def test_leftover_refuses_bad_input(queue, wait, words) -> None:
    with pytest.raises(NotificationRoutesError) as err:
        leftover(queue, wait)
    for word in words:
        assert word in str(err.value)


# --- log_error_classes -----------------------------------------------------------------------------------------

def test_log_error_classes_reads_the_error_of_each_failed_send_attempt() -> None:
    log = "\n".join([
        '{"level":"warn","msg":"send failed","id":1,"error":"HTTP 401: Authenticate"}',
        '{"level":"warn","msg":"send failed","id":2,"error":"HTTP 503"}',
        '{"level":"warn","msg":"send failed","id":3,"error":"network error: ECONNREFUSED"}',
        '{"level":"warn","msg":"send failed","id":4,"error":"network error: timeout"}',
        '{"level":"info","msg":"tick","error":"stuck in sending"}',  # not a send attempt's error
        'plain text "error":"HTTP 429: slow down" at the end',
    ])
    assert log_error_classes(log) == {"credentials": 1, "outage": 2, "quota": 1, "timeout": 1}
    assert log_error_classes("") == {} and log_error_classes(None) == {}
    with pytest.raises(NotificationRoutesError, match="the text of the worker's log"):
        log_error_classes(["HTTP 503"])
