# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure parts of module_utils/pg_follow.py: timeline history, fork point, the new primary_conninfo.

The module itself runs against real PostgreSQL in tests/integration/plugins/modules/test_pg_follow.py.
"""

from __future__ import annotations

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils.pg_follow import (
    fork_point,
    mask_conninfo,
    parse_history,
    plan_conninfo,
)
from ansible_collections.akig.runbooks.plugins.module_utils.pg_replication import PgError

HISTORY_3 = "1\t0/3000148\tno recovery target specified\n\n# a comment\n2\t0/5000A0\tno recovery target specified\n"


def test_parse_history_reads_each_timeline_and_where_it_ended() -> None:
    assert parse_history(HISTORY_3) == [(1, 0x3000148, "0/3000148"), (2, 0x5000A0, "0/5000A0")]
    assert parse_history("") == []
    with pytest.raises(PgError, match="line 1 of the timeline history file"):
        parse_history("one\t0/1\n")


def test_fork_point_of_an_ancestor_timeline_and_of_the_same_timeline() -> None:
    history = parse_history(HISTORY_3)
    assert fork_point(history, 1, 3) == (0x3000148, "0/3000148")
    assert fork_point(history, 2, 3) == (0x5000A0, "0/5000A0")
    assert fork_point(history, 3, 3) is None
    with pytest.raises(ValueError, match="timeline 4 is not in the history of timeline 3"):
        fork_point(history, 4, 3)


def test_the_new_conninfo_keeps_the_current_keywords_and_changes_host_and_port() -> None:
    current = "user=replicator password='s3 cr\\'et' host=10.0.2.11 port=5432 sslmode=prefer application_name=db-3"
    new = plan_conninfo(current, "10.0.2.12", 5433, None, None, None)
    assert new == {"host": "10.0.2.12", "port": "5433", "user": "replicator", "password": "s3 cr'et",
                   "sslmode": "prefer", "application_name": "db-3"}
    assert mask_conninfo(new) == ("host=10.0.2.12 port=5433 user=replicator password=[REDACTED] application_name=db-3 "
                                  "sslmode=prefer")
    given = plan_conninfo(current, "db-2", 5432, "replicator", "/var/lib/postgresql/.pgpass", "db-3b")
    assert (given["passfile"], given["application_name"], given["password"]) == (
        "/var/lib/postgresql/.pgpass", "db-3b", "s3 cr'et")
    other_user = plan_conninfo(current, "db-2", 5432, "streamer", None, None)
    assert other_user["user"] == "streamer" and "password" not in other_user
    assert plan_conninfo("hostaddr=10.0.2.11 user=r", "db-2", 5432, None, None, None) == {
        "host": "db-2", "port": "5432", "user": "r"}


def test_a_conninfo_without_user_or_unreadable_is_refused() -> None:
    with pytest.raises(PgError, match="names no user; give replication_user"):
        plan_conninfo("", "db-2", 5432, None, None, None)
    with pytest.raises(PgError, match="cannot be parsed as a libpq connection string"):
        plan_conninfo("host='unterminated", "db-2", 5432, "r", None, None)
    assert mask_conninfo({}) == ""
