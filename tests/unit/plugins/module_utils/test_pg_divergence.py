# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for the pure parts of plugins/module_utils/pg_divergence.py (history files, pg_waldump lines, the CSV).

The pg_waldump lines are real PostgreSQL 15 output (TZ=UTC); the whole module runs against a real crash failover
in tests/integration/plugins/modules/test_pg_diverged_transactions.py.
"""

from __future__ import annotations

import csv
import io

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils.pg_divergence import (
    csv_text,
    fork_point,
    format_lsn,
    old_timeline,
    parse_history,
    parse_waldump_line,
    scan_waldump,
)

HISTORY_3 = "1\t0/3000158\tno recovery target specified\n\n2\t0/5000A28\tno recovery target specified\n"


def record(rmgr: str, tx: int, lsn: str, desc: str) -> str:
    """A pg_waldump (PostgreSQL 15, TZ=UTC) record line."""
    return "rmgr: %-11s len (rec/tot):     65/    65, tx: %10d, lsn: %s, prev 0/01526000, desc: %s" % (rmgr, tx, lsn, desc)


REL = ", blkref #0: rel 1663/5/16385 blk 0"
WALDUMP = "\n".join([
    record("Heap", 725, "0/015265E8", "INSERT off 2 flags 0x00" + REL),
    record("Heap", 726, "0/015266F8", "INSERT off 4 flags 0x00" + REL),
    record("Transaction", 725, "0/01526780", "COMMIT 2026-11-30 19:38:34.430866 UTC; subxacts: 726"),
    record("Heap", 727, "0/015267B0", "DELETE off 1 flags 0x00 KEYS_UPDATED " + REL),
    record("Heap", 727, "0/015267E8", "HOT_UPDATE off 2 xmax 727 flags 0x20 ; new off 5 xmax 0" + REL),
    record("Transaction", 727, "0/01526830", "COMMIT 2026-11-30 19:38:34.431941 UTC"),
    record("Heap", 728, "0/01526858", "DELETE off 3 flags 0x00 KEYS_UPDATED " + REL),
    record("Transaction", 728, "0/01526890", "ABORT 2026-11-30 19:38:34.5 UTC"),
    record("Transaction", 0, "0/015268C0", "COMMIT_PREPARED 731: 2026-11-30 19:38:35.000001 UTC"),
]) + "\n"


def test_history_and_fork_point() -> None:
    history = parse_history(HISTORY_3)
    assert history == [(1, 0x3000158), (2, 0x5000A28)]
    assert format_lsn(fork_point(1, 3, history) or 0) == "0/3000158"
    assert format_lsn(fork_point(2, 3, history) or 0) == "0/5000A28"
    assert fork_point(3, 3, history) is None  # already on the new timeline: rewound or cloned
    with pytest.raises(ValueError, match="later than the new primary"):
        fork_point(4, 3, history)
    with pytest.raises(ValueError, match="not in the new primary's history"):
        fork_point(5, 7, history)
    with pytest.raises(ValueError, match="unreadable history line"):
        parse_history("garbage\n")


def test_old_timeline_is_the_newest_of_checkpoint_and_history_files() -> None:
    assert old_timeline(1, ["000000010000000000000003", "000000010000000000000004"]) == 1
    assert old_timeline(1, ["00000002.history", "000000020000000000000005"]) == 2
    assert old_timeline(3, ["00000002.history"]) == 3
    assert old_timeline(None, []) is None


def test_waldump_lines() -> None:
    commit = parse_waldump_line(WALDUMP.splitlines()[2])
    assert commit == {"kind": "commit", "xid": 725, "lsn": "0/01526780", "commit_time": "2026-11-30T19:38:34.430866Z",
                      "subxacts": [726]}
    assert parse_waldump_line(WALDUMP.splitlines()[3]) == {"kind": "delete", "xid": 727, "lsn": "0/015267B0",
                                                           "rel": (1663, 5, 16385)}
    assert parse_waldump_line(WALDUMP.splitlines()[0]) is None  # an insert: the row is read from the copy
    assert parse_waldump_line(WALDUMP.splitlines()[7]) is None  # an abort
    prepared = parse_waldump_line(WALDUMP.splitlines()[8])
    assert prepared is not None and prepared["xid"] == 731  # the prepared transaction's xid, not the record's 0


def test_scan_counts_deletes_of_committed_transactions_only() -> None:
    scan = scan_waldump(WALDUMP.splitlines() + ["pg_waldump: error: error in WAL record at 0/15268C0"])
    assert scan.records == 9
    assert [commit["xid"] for commit in scan.commits] == [725, 727, 731]
    assert scan.xid_owner() == {725: 725, 726: 725, 727: 727, 731: 731}
    assert dict(scan.committed_deletes()) == {(1663, 5, 16385): 1}  # 728's delete was rolled back


def test_csv_has_keys_and_times_only() -> None:
    rows = [{"database": "akig_db", "table": "public.payments", "pk": {"id": "42"}, "commit_time": "2026-11-30T19:38:34Z",
             "xid": 725, "kind": "lost", "amount": "not written"},
            {"database": "akig_db", "table": "public.leases", "pk": {"a": "1", "b": "x,y"}, "commit_time": "2026-11-30T19:38:35Z",
             "xid": 727, "kind": "conflict"}]
    text = csv_text(rows)
    assert "not written" not in text
    lines = list(csv.reader(io.StringIO(text)))
    assert lines == [["database", "table", "primary_key", "commit_time", "kind", "xid"],
                     ["akig_db", "public.payments", "id=42", "2026-11-30T19:38:34Z", "lost", "725"],
                     ["akig_db", "public.leases", "a=1, b=x,y", "2026-11-30T19:38:35Z", "conflict", "727"]]
