# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for plugins/module_utils/database_url.py and the database_url_repoint filter.

The env file syntax is the one AKIG's backend reads (lab/app/backend/src/config.js): export,
double quotes with escapes, single quotes, inline comments after unquoted values.
"""

from __future__ import annotations

from typing import Optional
from urllib.parse import quote

import ansible.utils.display  # noqa: F401  # pylint: disable=unused-import  # its ldconfig probe runs at import, not in a test
import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.akig.runbooks.plugins.filter.database_url import database_url_repoint
from ansible_collections.akig.runbooks.plugins.module_utils.database_url import (
    DatabaseUrlError,
    parse_env_value,
    parse_url,
    repoint_env,
    repoint_url,
)
from hypothesis import given
from hypothesis import strategies as st

SECRET = "s3cr!t"


@pytest.mark.parametrize("line, expected", [
    # the lab's own line: host and port replaced
    ("DATABASE_URL=postgresql://akig_app:%s@127.0.0.11:5432/akig_db\n" % SECRET,
     "DATABASE_URL=postgresql://akig_app:%s@127.0.0.12:5433/akig_db\n" % SECRET),
    # export prefix and double quotes, kept
    ('export DATABASE_URL="postgresql://akig_app:%s@db-1.prod:5432/akig_db"\n' % SECRET,
     'export DATABASE_URL="postgresql://akig_app:%s@127.0.0.12:5433/akig_db"\n' % SECRET),
    # single quotes and spaces around '=', kept
    ("DATABASE_URL = 'postgres://akig_app:%s@db-1:5432/akig_db?sslmode=require'\n" % SECRET,
     "DATABASE_URL = 'postgres://akig_app:%s@127.0.0.12:5433/akig_db?sslmode=require'\n" % SECRET),
    # an inline comment after an unquoted value, kept
    ("DATABASE_URL=postgresql://akig_app:%s@db-1:5432/akig_db  # primary\n" % SECRET,
     "DATABASE_URL=postgresql://akig_app:%s@127.0.0.12:5433/akig_db  # primary\n" % SECRET),
    # IPv6 host in brackets
    ("DATABASE_URL=postgresql://akig_app:%s@[fd00::11]:5432/akig_db\n" % SECRET,
     "DATABASE_URL=postgresql://akig_app:%s@127.0.0.12:5433/akig_db\n" % SECRET),
    # a raw '@' in the password: the user part ends at the last '@'
    ("DATABASE_URL=postgresql://akig_app:p@ss@w0rd@db-1:5432/akig_db\n",
     "DATABASE_URL=postgresql://akig_app:p@ss@w0rd@127.0.0.12:5433/akig_db\n"),
    # percent-encoding in the password kept byte for byte
    ("DATABASE_URL=postgresql://akig_app:p%40ss%2Fw%3Fd@db-1:5432/akig_db\n",
     "DATABASE_URL=postgresql://akig_app:p%40ss%2Fw%3Fd@127.0.0.12:5433/akig_db\n"),
    # an escaped quote in a double-quoted password kept
    ('DATABASE_URL="postgresql://akig_app:p\\"w@db-1:5432/akig_db"\n',
     'DATABASE_URL="postgresql://akig_app:p\\"w@127.0.0.12:5433/akig_db"\n'),
    # no port: the new port is added (it is not the default)
    ("DATABASE_URL=postgresql://akig_app:%s@db-1/akig_db\r\n" % SECRET,
     "DATABASE_URL=postgresql://akig_app:%s@127.0.0.12:5433/akig_db\r\n" % SECRET),
])
def test_host_and_port_are_replaced_and_nothing_else(line: str, expected: str) -> None:
    text = "# AKIG backend\nNODE_ENV=production\n" + line + "JWT_SECRET=abc # not a url\n"
    result = repoint_env(text, "127.0.0.12", 5433)
    assert result["text"] == "# AKIG backend\nNODE_ENV=production\n" + expected + "JWT_SECRET=abc # not a url\n"
    assert result["changed"] is True and result["lines"] == [3]


def test_a_url_already_pointing_at_the_target_is_unchanged() -> None:
    text = "DATABASE_URL=postgresql://akig_app:%s@127.0.0.12:5432/akig_db\n" % SECRET
    result = repoint_env(text, "127.0.0.12", 5432)
    assert result["changed"] is False and result["text"] == text
    assert result["before"] == [{"line": 1, "host": "127.0.0.12", "port": 5432}]


def test_a_url_without_port_keeps_none_for_the_default_port() -> None:
    text = "DATABASE_URL=postgresql://akig_app@db-1/akig_db\n"
    assert repoint_env(text, "db-2", 5432)["text"] == "DATABASE_URL=postgresql://akig_app@db-2/akig_db\n"


def test_a_new_ipv6_host_is_bracketed() -> None:
    assert repoint_url("postgresql://u@db-1:5432/d", "fd00::12", 5432)[0] == "postgresql://u@[fd00::12]:5432/d"
    assert repoint_url("postgresql://u@db-1:5432/d", "[fd00::12]", 6432)[0] == "postgresql://u@[fd00::12]:6432/d"


def test_every_database_url_line_is_repointed() -> None:
    text = "DATABASE_URL=postgresql://a@db-1:5432/x\nexport DATABASE_URL='postgresql://b@db-1:5432/y'\n"
    result = repoint_env(text, "db-2", 5432)
    assert result["text"] == "DATABASE_URL=postgresql://a@db-2:5432/x\nexport DATABASE_URL='postgresql://b@db-2:5432/y'\n"
    assert result["lines"] == [1, 2]


def test_other_keys_and_comments_are_left_alone() -> None:
    text = "#DATABASE_URL=postgresql://old@db-0:5432/x\nREPLICA_DATABASE_URL=postgresql://r@db-2:5432/x\n" \
           "DATABASE_URL=postgresql://a@db-1:5432/x"
    result = repoint_env(text, "db-2", 5432)
    assert result["text"].splitlines()[:2] == text.splitlines()[:2] and result["lines"] == [3]
    assert not result["text"].endswith("\n")


@pytest.mark.parametrize("text, message", [
    ("NODE_ENV=production\n", "no DATABASE_URL line"),
    ("DATABASE_URL=mysql://u:%s@db-1/x\n" % SECRET, "line 2 (DATABASE_URL): the URL scheme is 'mysql'"),
    ('DATABASE_URL="postgresql://u:%s@db-1/x\n' % SECRET, "the double-quoted value has no closing quote"),
    ("DATABASE_URL='postgresql://u:%s@db-1/x\n" % SECRET, "the single-quoted value has no closing quote"),
    ("DATABASE_URL=postgresql://u:%s@db-1:5432,db-2:5432/x\n" % SECRET, "the URL names several hosts"),
    ("DATABASE_URL=postgresql:///akig_db?host=/var/run/postgresql\n", "the URL has no host"),
    ("DATABASE_URL=postgresql://u@db-1/x?host=db-3\n", "the URL sets host in its query string"),
    ("DATABASE_URL=postgresql://u@db-1/x?PORT=6432\n", "the URL sets port in its query string"),
    ("DATABASE_URL=postgresql://u:%s@db-1:99999/x\n" % SECRET, "the URL's port is not a TCP port"),
    # raw '/' or '?' in a password: the authority ends early, which is ambiguous or wrong
    ("DATABASE_URL=postgresql://u:pa@x/%s@db-1:5432/x\n" % SECRET, "an '@' after its host"),
    ("DATABASE_URL=postgresql://u:pa?%s@db-1:5432/x\n" % SECRET, "the URL's port is not a TCP port"),
    ("DATABASE_URL=postgresql://u@[fd00::1/x\n", "no closing bracket"),
    ("DATABASE_URL=postgresql://u@[db-1]:5432/x\n", "bracketed host is not an IPv6 address"),
    ("DATABASE_URL=not a url\n", "the value is not a URL"),
])
def test_what_cannot_be_read_with_certainty_is_refused_without_showing_the_url(text: str, message: str) -> None:
    with pytest.raises(DatabaseUrlError, match="nothing was changed") as raised:
        repoint_env("A=1\n" + text, "db-2", 5432)
    assert message in str(raised.value)
    assert SECRET not in str(raised.value) and "pa/" not in str(raised.value) and "pa?" not in str(raised.value)


@pytest.mark.parametrize("host, port", [("", 5432), ("db 2", 5432), ("db-2/x", 5432), ("db-2", 0), ("db-2", "x"),
                                        ("db-2", True), (None, 5432)])
def test_a_bad_target_is_refused(host: Optional[str], port: object) -> None:
    with pytest.raises(DatabaseUrlError, match="the new (host|port)"):
        repoint_env("DATABASE_URL=postgresql://u@db-1/x\n", host, port)  # type: ignore[arg-type]


def test_the_filter_raises_an_ansible_error_naming_the_line() -> None:
    with pytest.raises(AnsibleFilterError, match=r"database_url_repoint: line 2 \(DATABASE_URL\): the URL scheme"):
        database_url_repoint("A=1\nDATABASE_URL=redis://x@y/0\n", "db-2")
    assert database_url_repoint("DATABASE_URL=postgresql://u@db-1/x\n", "db-2", "6432")["port"] == 6432


def test_parse_env_value_reads_like_the_app() -> None:
    assert parse_env_value('"a\\"b\\\\c\\n" # x')[0] == 'a"b\\c\n'
    assert parse_env_value("'a\\nb' # x")[0] == "a\\nb"
    assert parse_env_value("  value#not-a-comment  # comment")[0] == "value#not-a-comment"


_USER = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="@/?#:[]'\"\\"),
                min_size=1, max_size=12)
_PASSWORD = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=0, max_size=24)


@given(user=_USER, password=_PASSWORD, port=st.one_of(st.none(), st.integers(1, 65535)),
       new_port=st.integers(1, 65535), style=st.sampled_from(["", "export ", "quoted", "single"]))
def test_a_percent_encoded_password_survives_any_repoint(user: str, password: str, port: Optional[int], new_port: int,
                                                         style: str) -> None:
    url = "postgresql://%s:%s@db-1.prod.akig.internal%s/akig_db" % (
        user, quote(password, safe=""), "" if port is None else ":%d" % port)
    value = {"quoted": '"%s"' % url, "single": "'%s'" % url}.get(style, url)
    line = "%sDATABASE_URL=%s\n" % ("export " if style == "export " else "", value)
    new = repoint_env(line, "10.0.2.12", new_port)["text"]
    expected_port = "" if (port is None and new_port == 5432) else ":%d" % new_port
    assert new == line.replace("@db-1.prod.akig.internal%s/" % ("" if port is None else ":%d" % port),
                               "@10.0.2.12%s/" % expected_port)
    parts = parse_url(new.split("=", 1)[1].strip().strip("'\""))
    assert (parts.host, parts.port) == ("10.0.2.12", None if not expected_port else new_port)
