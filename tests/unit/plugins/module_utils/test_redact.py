# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""plugins/module_utils/redact.py: one marker for masked secrets, and the modules that use it."""

from __future__ import annotations

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils import notify, pg_fence, pg_replication, ticket
from ansible_collections.akig.runbooks.plugins.module_utils.redact import MASK, Redactor, redact
from hypothesis import given
from hypothesis import strategies as st

SECRET = "CANARY-s3cret-7f3a"


def test_the_marker() -> None:
    assert MASK == "[REDACTED]"


def test_every_occurrence_is_replaced() -> None:
    assert redact("a %s b %s" % (SECRET, SECRET), SECRET) == "a [REDACTED] b [REDACTED]"


def test_a_secret_containing_another_is_masked_whole() -> None:
    short, long = "CANARY-1", "CANARY-1-and-more"
    out = Redactor([short, long])("x %s y %s" % (long, short))
    assert out == "x [REDACTED] y [REDACTED]"


@pytest.mark.parametrize("secrets", [[None], [""], [None, ""], []])
def test_nothing_to_mask_leaves_the_text(secrets: list) -> None:
    redactor = Redactor(secrets)
    assert not redactor
    assert redactor("unchanged text") == "unchanged text"


def test_min_length_skips_short_values() -> None:
    assert Redactor(["abc"], min_length=4)("abc abcd") == "abc abcd"
    assert Redactor(["abc"])("abc abcd") == "[REDACTED] [REDACTED]d"


def test_non_text_is_converted_and_repr_hides_the_secrets() -> None:
    redactor = Redactor([SECRET])
    assert redactor(ValueError("bad %s" % SECRET)) == "bad [REDACTED]"
    assert SECRET not in repr(redactor) and "1 secret" in repr(redactor)


# secrets without a character of the marker: the marker itself cannot spell one again
@given(st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=40), st.text(max_size=80), st.text(max_size=80))
def test_no_secret_survives(secret: str, before: str, after: str) -> None:
    assert secret not in redact(before + secret + after + secret, secret)


# The modules mask with the same marker.


def test_pg_connection_options_mask_the_password() -> None:
    opts = pg_replication.ConnectionOptions(host="db", password=SECRET)
    assert opts.mask("auth failed for %s" % SECRET) == "auth failed for [REDACTED]"
    assert pg_replication.ConnectionOptions(host="db").mask("no password") == "no password"


def test_pg_fence_masks_conninfo_passwords() -> None:
    assert pg_fence.mask_conninfo("host=db password=%s user=r" % SECRET) == "host=db password=[REDACTED] user=r"
    assert pg_fence.mask_line("primary_conninfo = 'host=db password=%s'" % SECRET) == (
        "primary_conninfo = 'host=db password=[REDACTED]'")


def test_notify_and_ticket_use_the_shared_redactor() -> None:
    assert notify.Redactor is Redactor
    client = ticket.TicketClient("https://tickets.example/api", SECRET, opener=lambda *a, **k: None)
    assert client._redact("token %s refused" % SECRET) == "token [REDACTED] refused"  # pylint: disable=protected-access
