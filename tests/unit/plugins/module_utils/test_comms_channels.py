# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for plugins/module_utils/comms_channels.py (incident_comms: contacts due -> notifier channels)."""

from __future__ import annotations

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils import sla
from ansible_collections.akig.runbooks.plugins.module_utils.comms_channels import CommsChannelsError, comms_channels
from hypothesis import given
from hypothesis import strategies as st

PHONE = "+33600000000"
ALIASES = {"on-call-engineer": PHONE, "#akig-incidents": "#inc-room"}
ROLE = {"aliases": ALIASES, "oncall_phone": PHONE, "oncall_email": "oncall@akig.com",
        "sms_fallbacks": {"cto@akig.com": "+33611111111"}}


def test_tier3_with_the_runbook_fallbacks():
    escalation = sla.escalation_tier("16m")
    assert comms_channels(escalation["channels"], **ROLE) == [
        {"type": "slack", "to": "#inc-room", "fallbacks": []},
        {"type": "sms", "to": PHONE, "fallbacks": [{"type": "email", "to": "oncall@akig.com"}]},
        {"type": "email", "to": "manager@akig.com", "fallbacks": []},
        {"type": "email", "to": "cto@akig.com", "fallbacks": [{"type": "sms", "to": "+33611111111"}]},
        {"type": "email", "to": "ceo@akig.com", "fallbacks": []},
    ]


def test_the_whole_escalation_result_is_accepted():
    escalation = sla.escalation_tier("1m")
    assert comms_channels(escalation, **ROLE) == comms_channels(escalation["channels"], **ROLE)


@pytest.mark.parametrize(
    ("channels", "kwargs", "expected"),
    [
        # no on-call e-mail: the SMS has no fallback
        ({"sms": ["on-call-engineer"]}, {"aliases": ALIASES, "oncall_phone": PHONE, "oncall_email": ""},
         [{"type": "sms", "to": PHONE, "fallbacks": []}]),
        # an SMS to someone else has no fallback
        ({"sms": ["+33622222222"]}, ROLE, [{"type": "sms", "to": "+33622222222", "fallbacks": []}]),
        # types the notifier does not send are left out, order kept
        ({"pager": ["x"], "email": ["a@akig.com"], "slack": ["#c"]}, {},
         [{"type": "email", "to": "a@akig.com", "fallbacks": []}, {"type": "slack", "to": "#c", "fallbacks": []}]),
        ({"email": ["a@akig.com"], "slack": ["#c"]}, {"types": ["slack"]}, [{"type": "slack", "to": "#c", "fallbacks": []}]),
        ({}, ROLE, []),
        ({"email": []}, ROLE, []),
        # a placeholder without alias is sent as it is
        ({"sms": ["on-call-engineer"]}, {}, [{"type": "sms", "to": "on-call-engineer", "fallbacks": []}]),
    ],
)
def test_channels(channels, kwargs, expected):
    assert comms_channels(channels, **kwargs) == expected


@pytest.mark.parametrize(
    ("channels", "kwargs", "message"),
    [
        (["sms"], {}, "channels must be a mapping of channel type -> list of targets"),
        ({"sms": "on-call-engineer"}, {}, "channels.sms must be a list of targets (text), got 'on-call-engineer'"),
        ({"sms": [33600000000]}, {}, "channels.sms must be a list of targets (text)"),
        ({}, {"aliases": ["on-call-engineer"]}, "aliases must be a mapping of text to text"),
        ({}, {"aliases": {"on-call-engineer": 33600000000}}, "(quote phone numbers, or YAML reads them as integers)"),
        ({}, {"sms_fallbacks": {"cto@akig.com": 33611111111}}, "sms_fallbacks must be a mapping of text to text"),
        ({}, {"oncall_phone": 33600000000}, "oncall_phone must be text (empty for none; quote phone numbers), got int"),
        ({}, {"oncall_email": ["a@akig.com"]}, "oncall_email must be text"),
        ({}, {"types": "sms"}, "types must be a list of channel types like ['slack', 'sms', 'email']"),
    ],
)
def test_bad_input(channels, kwargs, message):
    with pytest.raises(CommsChannelsError) as err:
        comms_channels(channels, **kwargs)
    assert message in str(err.value)


@given(elapsed=st.integers(0, 3600), breach=st.booleans())
def test_prop_one_channel_per_due_contact_of_a_known_type(elapsed, breach):
    escalation = sla.escalation_tier(elapsed, data_breach=breach)
    result = comms_channels(escalation["channels"], **ROLE)
    expected = [(kind, target) for kind, targets in escalation["channels"].items() if kind in ("slack", "sms", "email")
                for target in targets]
    assert [(item["type"], next((k for k, v in ALIASES.items() if v == item["to"]), item["to"])) for item in result] == expected
    for item in result:  # every fallback switches channel type
        assert all(fallback["type"] != item["type"] for fallback in item["fallbacks"])
