# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The emulator routes of the notification replay (RB-P2-003): Twilio account fetch and message list,
SendGrid scopes, activity feed and custom_args, and the seeded flaky mode."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Optional, Tuple

import pytest

from ansible_collections.akig.runbooks.tests.support.emulator import Emulator, load_emulator_module


def call(emu: Emulator, method: str, path: str, body: Optional[bytes] = None,
         headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], Any]:
    req = urllib.request.Request(emu.url + path, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            status, rheaders, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            status, rheaders, raw = err.code, dict(err.headers), err.read()
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = raw.decode()
    return status, {k.lower(): v for k, v in rheaders.items()}, data


def twilio_auth(emu: Emulator) -> Dict[str, str]:
    creds = emu.credentials
    token = base64.b64encode(("%s:%s" % (creds["twilio_account_sid"], creds["twilio_auth_token"])).encode()).decode()
    return {"Authorization": "Basic " + token}


def sendgrid_auth(emu: Emulator, key: Optional[str] = None) -> Dict[str, str]:
    return {"Authorization": "Bearer " + (key or emu.credentials["sendgrid_api_key"])}


def acct(emu: Emulator) -> str:
    return "/twilio/2010-04-01/Accounts/%s" % emu.credentials["twilio_account_sid"]


def send_sms(emu: Emulator, to: str, body: str) -> Dict[str, Any]:
    data = urllib.parse.urlencode({"To": to, "From": "+33700000000", "Body": body}).encode()
    headers = dict(twilio_auth(emu), **{"Content-Type": "application/x-www-form-urlencoded"})
    status, _headers, message = call(emu, "POST", acct(emu) + "/Messages.json", data, headers)
    assert status == 201
    return message


def send_mail(emu: Emulator, to: str, key: str, subject: str = "Préavis") -> str:
    payload = {"personalizations": [{"to": [{"email": to}]}], "from": {"email": "n@akig.example"},
               "subject": subject, "content": [{"type": "text/plain", "value": "corps"}],
               "custom_args": {"akig_key": key}}
    request_headers = dict(sendgrid_auth(emu), **{"Content-Type": "application/json", "Idempotency-Key": key})
    status, headers, _body = call(emu, "POST", "/sendgrid/v3/mail/send", json.dumps(payload).encode(), request_headers)
    assert status == 202
    return headers["x-message-id"]


def test_twilio_account_fetch(emu: Emulator) -> None:
    status, _headers, account = call(emu, "GET", acct(emu) + ".json", headers=twilio_auth(emu))
    assert status == 200
    assert (account["sid"], account["status"]) == (emu.credentials["twilio_account_sid"], "active")
    assert emu.credentials["twilio_auth_token"] not in json.dumps(account)
    bad = {"Authorization": "Basic " + base64.b64encode(b"ACnope:wrong").decode()}
    assert call(emu, "GET", acct(emu) + ".json", headers=bad)[0] == 401
    assert emu.ledger() == []  # reads are not in the ledger


def test_twilio_list_filters_newest_first_and_pages(emu: Emulator) -> None:
    for i in range(5):
        send_sms(emu, "+33611111111", "message %d" % i)
    send_sms(emu, "+33622222222", "other")
    path = acct(emu) + "/Messages.json?To=%2B33611111111&PageSize=2"
    status, _headers, page = call(emu, "GET", path, headers=twilio_auth(emu))
    assert status == 200
    bodies = [m["body"] for m in page["messages"]]
    assert bodies == ["message 4", "message 3"]
    assert page["page"] == 0 and page["page_size"] == 2 and page["previous_page_uri"] is None
    seen = list(bodies)
    while page["next_page_uri"]:
        assert page["next_page_uri"].startswith("/2010-04-01/Accounts/")
        status, _headers, page = call(emu, "GET", "/twilio" + page["next_page_uri"], headers=twilio_auth(emu))
        seen += [m["body"] for m in page["messages"]]
    assert seen == ["message %d" % i for i in (4, 3, 2, 1, 0)]
    # From filter and a bad page size
    status, _headers, page = call(emu, "GET", acct(emu) + "/Messages.json?From=%2B33799999999", headers=twilio_auth(emu))
    assert page["messages"] == []
    assert call(emu, "GET", acct(emu) + "/Messages.json?PageSize=0", headers=twilio_auth(emu))[0] == 400


def test_twilio_list_date_sent_window(emu: Emulator) -> None:
    send_sms(emu, "+33611111111", "now")
    today = datetime.now(timezone.utc)
    later = (today + timedelta(days=1)).strftime("%Y-%m-%d")
    earlier = (today - timedelta(days=1)).strftime("%Y-%m-%d")

    def bodies(query: str) -> list:
        status, _headers, page = call(emu, "GET", acct(emu) + "/Messages.json?" + query, headers=twilio_auth(emu))
        assert status == 200, page
        return [m["body"] for m in page["messages"]]

    assert bodies("DateSent>=" + earlier) == ["now"]
    assert bodies("DateSent>=" + later) == []
    assert bodies("DateSent<=" + earlier) == []
    assert bodies("DateSent=" + today.strftime("%Y-%m-%d")) == ["now"]
    minute_ago = (today - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert bodies("DateSent%3E=" + urllib.parse.quote(minute_ago)) == ["now"]
    status, _headers, _body = call(emu, "GET", acct(emu) + "/Messages.json?DateSent>=yesterday", headers=twilio_auth(emu))
    assert status == 400


def test_sendgrid_scopes_and_auth(emu: Emulator) -> None:
    status, _headers, data = call(emu, "GET", "/sendgrid/v3/scopes", headers=sendgrid_auth(emu))
    assert status == 200 and "mail.send" in data["scopes"] and "messages.read" in data["scopes"]
    assert call(emu, "GET", "/sendgrid/v3/scopes", headers=sendgrid_auth(emu, "SG.wrong"))[0] == 401


def test_sendgrid_activity_by_custom_arg_and_recipient(emu: Emulator) -> None:
    first = send_mail(emu, "a@akig.example", "seed:1")
    send_mail(emu, "b@akig.example", "seed:2")
    send_mail(emu, "a@akig.example", "seed:3", subject="Relance")
    assert emu.ledger("?service=sendgrid")[0]["details"]["custom_args"] == {"akig_key": "seed:1"}

    def activity(query: str, limit: int = 10) -> list:
        qs = urllib.parse.urlencode({"query": query, "limit": limit})
        status, _headers, data = call(emu, "GET", "/sendgrid/v3/messages?" + qs, headers=sendgrid_auth(emu))
        assert status == 200, data
        return data["messages"]

    found = activity("unique_args['akig_key']=\"seed:1\"")
    assert len(found) == 1 and found[0]["to_email"] == "a@akig.example"
    assert found[0]["msg_id"].split(".", 1)[0] == first and found[0]["status"] == "delivered"
    assert [m["subject"] for m in activity('to_email="a@akig.example"')] == ["Relance", "Préavis"]  # newest first
    assert len(activity('to_email="a@akig.example"', limit=1)) == 1
    assert activity('(to_email="a@akig.example") AND (unique_args[\'akig_key\']="seed:3")')[0]["subject"] == "Relance"
    assert activity("unique_args['akig_key']=\"seed:9\"") == []
    assert len(activity("")) == 3
    bad = urllib.parse.urlencode({"query": "nonsense"})
    status, _headers, data = call(emu, "GET", "/sendgrid/v3/messages?" + bad, headers=sendgrid_auth(emu))
    assert status == 400 and data["errors"][0]["field"] == "query"


def test_flaky_mode_is_seeded_and_mixes_500_and_429(emu: Emulator) -> None:
    def run() -> list:
        emu.reset()
        emu.call("/_emulator/mode", {"service": "sendgrid", "mode": "flaky", "fraction": 0.3, "seed": 42,
                                     "retry_after_s": 2})
        statuses = []
        for _call in range(40):
            status, headers, _body = call(emu, "GET", "/sendgrid/v3/scopes", headers=sendgrid_auth(emu))
            statuses.append(status)
            if status == 429:
                assert headers["retry-after"] == "2"
        return statuses

    first = run()
    assert set(first) == {200, 500, 429}
    assert 4 <= first.count(500) + first.count(429) <= 20
    assert run() == first  # same seed, same sequence
    reasons = {r["reason"] for r in emu.rejections()}
    assert reasons == {"mode:flaky:500", "mode:flaky:429"}
    modes = emu.call("/_emulator/mode")["modes"]["sendgrid"]
    assert modes == {"mode": "flaky", "delay_s": 3.0, "fraction": 0.3, "seed": 42, "retry_after_s": 2}


@pytest.mark.parametrize("body, words", [
    ({"service": "twilio", "mode": "flaky", "fraction": 1.5}, "fraction"),
    ({"service": "twilio", "mode": "flaky", "seed": "x"}, "seed"),
    ({"service": "twilio", "mode": "ok", "fraction": 0.1}, "'flaky' only"),
    ({"service": "twilio", "mode": "rate_limit", "rate": 0}, "more than 0"),
    ({"service": "twilio", "mode": "flaky", "rate": 5}, "'rate_limit' only"),
    ({"service": "twilio", "mode": "quota", "retry_after_s": 5}, "retry_after_s"),
])
def test_flaky_mode_bad_fields(emu: Emulator, body: Dict[str, Any], words: str) -> None:
    req = urllib.request.Request(emu.url + "/_emulator/mode", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 400 and words in json.loads(err.value.read())["error"]


def test_twilio_messages_survive_a_restart(tmp_path: Any) -> None:
    """Messages are appended to twilio_messages.jsonl (no rewrite per send) and read back at start."""
    program = load_emulator_module()
    store = program.StateStore(tmp_path / "state", program.Redactor([]))
    store.save_message({"sid": "SM1", "to": "+33611111111", "body": "a", "status": "queued",
                        "date_created": "Mon, 30 Nov 2026 17:00:00 +0000"})
    store.get_message("SM1")  # marks it delivered: one more line
    again = program.StateStore(tmp_path / "state", program.Redactor([]))
    assert again.get_message("SM1")["status"] == "delivered"
    assert len((tmp_path / "state" / "twilio_messages.jsonl").read_text().splitlines()) == 2


def test_rate_limit_mode_answers_429_over_the_rate(emu: Emulator) -> None:
    emu.call("/_emulator/mode", {"service": "sendgrid", "mode": "rate_limit", "rate": 5, "retry_after_s": 1})
    statuses = [call(emu, "GET", "/sendgrid/v3/scopes", headers=sendgrid_auth(emu))[0] for _call in range(20)]
    # A burst of one second's worth (5) passes, the rest of an instant burst is refused.
    assert statuses.count(200) in (5, 6) and statuses.count(429) == 20 - statuses.count(200)
    assert {r["reason"] for r in emu.rejections()} == {"mode:rate_limit"}
