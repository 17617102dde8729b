# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for the file side of plugins/module_utils/pgbouncer.py: reading and rewriting a [databases] entry.

The admin console side runs against a real PgBouncer in
tests/integration/plugins/modules/test_pgbouncer_admin.py.
"""

from __future__ import annotations

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils.pgbouncer import (
    PgBouncerError,
    classify_connect_error,
    find_entry,
    mask_connstr,
    parse_connstr,
    quote_name,
    repoint_text,
    run,
)
from hypothesis import given
from hypothesis import strategies as st

INI = """;; PgBouncer for AKIG
[pgbouncer]
listen_port = 6432
; akig = host=wrong
[databases]
# the app's database
"akig" = host=10.0.2.11 port=5432 dbname=akig application_name='akig via pgbouncer' password='it''s'
reports = host=10.0.2.11 dbname=reports\r
[users]
akig = pool_mode=transaction
"""


def test_parse_connstr_keeps_values_as_written() -> None:
    pairs = parse_connstr("host=10.0.2.11  port = 5432 application_name='a b' password='it''s'")
    assert pairs == [["host", "10.0.2.11"], ["port", "5432"], ["application_name", "'a b'"],
                     ["password", "'it''s'"]]
    with pytest.raises(ValueError, match="unterminated quote"):
        parse_connstr("host='10.0.2.11")
    with pytest.raises(ValueError):
        parse_connstr("=oops")


def test_repoint_changes_only_host_and_port_of_the_entry() -> None:
    new, before, after = repoint_text(INI, "akig", "/etc/pgbouncer/pgbouncer.ini", "10.0.2.12", 5433, None)
    assert before == {"host": "10.0.2.11", "port": 5432, "dbname": "akig"}
    assert after == {"host": "10.0.2.12", "port": 5433, "dbname": "akig"}
    assert new == INI.replace('"akig" = host=10.0.2.11 port=5432', '"akig" = host=10.0.2.12 port=5433')
    # already there: the text is returned unchanged, byte for byte
    same, before2, after2 = repoint_text(new, "akig", "f", "10.0.2.12", 5433, "akig")
    assert same == new and before2 == after2


def test_repoint_adds_missing_keys_and_keeps_crlf() -> None:
    new, before, after = repoint_text(INI, "reports", "f", "db-2.akig.internal", 5432, "reports2")
    assert before == {"host": "10.0.2.11", "port": 5432, "dbname": "reports"}
    assert after == {"host": "db-2.akig.internal", "port": 5432, "dbname": "reports2"}
    assert "reports = host=db-2.akig.internal dbname=reports2 port=5432\r\n" in new


def test_missing_section_or_entry_names_the_file() -> None:
    with pytest.raises(PgBouncerError, match=r"has no \[databases\] section"):
        find_entry("[pgbouncer]\nlisten_port = 6432\n", "akig", "/etc/pgbouncer/pgbouncer.ini")
    # an entry of another section, or a commented one, is not the entry
    with pytest.raises(PgBouncerError, match=r"'listen_port' is not in the \[databases\] section of f"):
        find_entry(INI, "listen_port", "f")
    with pytest.raises(PgBouncerError, match=r"'db2' is not in"):
        find_entry(INI + "[databases]\n;db2 = host=x\n", "db2", "f")


def test_mask_connstr_and_quote_name() -> None:
    assert mask_connstr("akig = host=h password='it''s' user=u\nx = password=abc") == \
        "akig = host=h password=******** user=u\nx = password=********"
    assert quote_name("akig") == "akig"
    assert quote_name("my-db") == '"my-db"'
    assert quote_name('a"b') == '"a""b"'


def test_classify_connect_errors() -> None:
    assert classify_connect_error('connection to server at "h", port 1 failed: FATAL:  not allowed\n')[:2] == \
        ("auth", "not allowed")
    assert classify_connect_error("failed: FATAL:  SASL authentication failed")[0] == "auth"
    assert classify_connect_error("failed: Connection refused\n\tIs the server running")[0] == "refused"
    assert classify_connect_error("something new")[0] == "other"


@pytest.mark.parametrize("params, needle", [
    (dict(command="kill", database=None), "command=kill needs database"),
    (dict(command="repoint", config_file=None, target_host=None), "command=repoint needs config_file and target_host"),
    (dict(command="repoint", target_host="a'b"), "target_host"),
    (dict(command="repoint", target_port=0), "target_port must be between 1 and 65535"),
    (dict(command="show", login_port=70000), "login_port"),
    (dict(command="pause", timeout=0), "timeout must be more than 0"),
    (dict(command="show", database="pgbouncer"), "must name an entry"),
])
def test_bad_options_fail_before_connecting(params: dict, needle: str) -> None:
    full = dict(command="show", database="akig", login_host="127.0.0.1", login_port=1, login_user="u",
                login_password="p", connect_timeout=1, timeout=1, config_file="/nonexistent", target_host="h",
                target_port=5432, target_dbname=None, backup=True)
    full.update(params)
    with pytest.raises(PgBouncerError, match=needle):
        run(full)


@given(st.from_regex(r"[a-z0-9.\-]{1,20}", fullmatch=True), st.integers(1, 65535))
def test_repoint_is_idempotent(host: str, port: int) -> None:
    once, _before, after = repoint_text(INI, "akig", "f", host, port, None)
    twice = repoint_text(once, "akig", "f", host, port, None)[0]
    assert twice == once and after["host"] == host and after["port"] == port
    assert once.splitlines()[:6] == INI.splitlines()[:6] and once.splitlines()[7:] == INI.splitlines()[7:]
