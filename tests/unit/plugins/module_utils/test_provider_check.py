# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for plugins/module_utils/provider_check.py (RB-P2-003: checks that send nothing)."""

from __future__ import annotations

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils.provider_check import (
    ProviderCheckError, check_request, classify, fingerprint)


def test_requests_read_only_and_credentials_only_in_headers() -> None:
    url, headers = check_request("twilio", "http://emu/twilio/", "AC123", "tok")
    assert url == "http://emu/twilio/2010-04-01/Accounts/AC123.json"
    assert headers["Authorization"].startswith("Basic ") and "tok" not in url
    url, headers = check_request("sendgrid", "https://api.sendgrid.com", api_key="SG.k")
    assert url == "https://api.sendgrid.com/v3/scopes" and headers["Authorization"] == "Bearer SG.k"


@pytest.mark.parametrize(("args", "words"), [
    (("twilio", "http://x", "AC1", ""), ["twilio_auth_token missing", "akig_twilio_auth_token"]),
    (("twilio", "http://x", "", ""), ["twilio_account_sid and twilio_auth_token missing"]),
    (("sendgrid", "http://x"), ["sendgrid_api_key missing", "vault"]),
    (("sendgrid", "ftp://x", "", "", "k"), ["http(s) URL"]),
    (("fax", "http://x"), ["provider must be one of"]),
])
def test_missing_credentials_are_refused_naming_them(args, words) -> None:
    with pytest.raises(ProviderCheckError) as err:
        check_request(*args)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize(("provider", "status", "body", "error", "cls"), [
    ("twilio", 200, '{"status": "active"}', "", "ok"),
    ("twilio", 200, '{"status": "suspended"}', "", "credentials"),
    ("twilio", 401, None, "", "credentials"),
    ("sendgrid", 403, None, "", "credentials"),
    ("sendgrid", 200, '{"scopes": ["mail.send", "alerts.read"]}', "", "ok"),
    ("sendgrid", 200, {"scopes": ["alerts.read"]}, "", "credentials"),
    ("sendgrid", 200, "not json", "", "error"),
    ("twilio", 429, None, "", "quota"),
    ("twilio", 503, None, "", "outage"),
    ("sendgrid", 500, None, "", "outage"),
    ("sendgrid", 404, None, "", "error"),
    ("twilio", None, None, "timed out", "timeout"),
    ("twilio", None, None, "Connection refused", "outage"),
])
def test_classify(provider, status, body, error, cls) -> None:
    assert classify(provider, status, body, ["mail.send"], error)["class"] == cls


def test_fingerprint_is_short_and_not_the_value() -> None:
    fp = fingerprint("SG.secret-value")
    assert len(fp) == 12 and "secret" not in fp and fp == fingerprint("SG.secret-value") != fingerprint("other")
