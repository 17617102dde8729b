#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_diverged_transactions
short_description: Name the transactions an old PostgreSQL primary committed after the failover's fork point
version_added: 0.2.0
author: AKIG Engineering Team (@akig)
description:
  - After an asynchronous crash failover (runbook RB-P1-003) the old primary may hold acknowledged commits that its
    standby never received. This module lists them B(before) C(pg_rewind) discards them, so each one can be re-entered
    or reconciled. It runs B(on the old primary's host) (C(delegate_to), C(become)), on the B(stopped) old primary's
    data directory, and reads the new primary over a connection (the O(login_host) options).
  - "Fork point: the new primary's timeline history file, read with C(pg_read_file('pg_wal/<TLI>.history')) over SQL
    (a superuser login, as C(pg_rewind) needs), says where the old primary's last timeline ended in its lineage."
  - "Committed after the fork: C(pg_waldump) reads the old C(pg_wal) (read only) from the fork point to the end of its
    valid WAL on the old timeline; every C(COMMIT) record gives an xid (with its subtransactions) and a commit time,
    and C(DELETE) records are counted per table. When the old WAL ends at or before the fork point, or holds no commit
    after it, the task returns RV(diverged=false) and starts nothing."
  - "Rows: the data directory is copied (C(cp -a)) into a private scratch directory (size and free space checked
    first), C(standby.signal), C(recovery.signal) and C(postmaster.pid) are removed from the B(copy), which gets its own
    configuration (C(listen_addresses=''), a Unix socket in a 0700 directory, C(archive_mode=off), no WAL senders, slots
    or logical workers, C(max_connections=10), C(default_transaction_read_only=on), no preloaded libraries) and is
    started: it runs crash recovery to the end of its own WAL. Every row of a user table with a primary key whose
    C(xmin) is one of those xids is compared by primary key with the new primary: missing there is V(lost) (the
    acknowledged write the new primary never received), different is V(conflict), equal is counted as identical."
  - The copy is stopped and the scratch directory removed at the end, also when the task fails. The old data directory
    is only read.
  - Values of non-key columns are never returned or written (they may hold personal data); only the database, table,
    primary key, commit time, xid and kind.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - akig.runbooks.postgres
attributes:
  check_mode:
    support: full
    details: Finds the fork point and, with C(pg_waldump) (read only), the transactions committed after it, and checks
      the free space for the copy; nothing is copied or started, RV(rows) stays empty.
  diff_mode:
    support: none
  platform:
    platforms: posix
requirements:
  - psycopg2 on the old primary's host.
  - PostgreSQL server programs (C(pg_ctl), C(pg_controldata), C(pg_waldump)) of the data directory's version.
  - runuser (util-linux) when the module runs as root.
  - The old primary's host can log in to the new primary as O(login_user) (as C(pg_rewind --source-server) does).
options:
  data_dir:
    description:
      - Data directory of the old primary. Its server must be stopped (see M(akig.runbooks.pg_fence)); a running
        server is refused.
    type: path
    required: true
  bin_dir:
    description:
      - Directory of the PostgreSQL server programs of the data directory's major version.
    type: path
    default: /usr/lib/postgresql/15/bin
  os_user:
    description:
      - OS user that owns O(data_dir); the PostgreSQL programs and the copy run as this user (through C(runuser) when
        the module runs as root).
    type: str
    default: postgres
  scratch_dir:
    description:
      - Directory in which the scratch copy is made (a private C(.akig-divergence-*) directory inside it). Default
        the parent of O(data_dir), the same filesystem. The copy needs the data directory's size plus 10% and 64 MiB.
    type: path
  scratch_port:
    description:
      - Port number of the copy. It only names the copy's Unix socket, in a private directory; the copy listens on no
        TCP address.
    type: int
    default: 54329
  start_timeout:
    description:
      - Seconds the copy's start (its crash recovery) may take.
    type: int
    default: 600
  dest:
    description:
      - Directory on the host in which to write C(lost-transactions.json) (every value this task returns, all rows) and
        C(lost-transactions.csv) (columns database, table, primary_key, commit_time, kind, xid), mode 0600. Created
        (0700) if missing. Written only when transactions diverged and not in check mode.
    type: path
  max_rows:
    description:
      - At most this many rows in RV(rows); the files hold them all (RV(rows_truncated) says when the list is cut).
    type: int
    default: 1000
notes:
  - Why a copy, C(pg_waldump) xids and C(xmin) rather than logical decoding - logical decoding needs C(wal_level=logical)
    and a replication slot created on the old primary B(before) the fork; neither exists on AKIG's clusters, and a slot
    cannot be created after the fact for WAL already written. Why not decode the tuples in the raw WAL - full-page
    images, TOAST, HOT updates and compression would make that a re-implementation of PostgreSQL's heap; the copy's own
    crash recovery rebuilds the rows exactly, and C(xmin) ties each row to the transaction that wrote it.
  - A row written by a transaction that began before the fork and committed after it is found (its xid committed after
    the fork). A row inserted and deleted after the fork, or rows of unlogged tables (emptied by crash recovery), are not
    rows of the old primary any more and are not listed.
  - Deleted rows are counted per table (RV(deletes_per_table)) but not listed - at C(wal_level=replica) a C(DELETE)
    record holds the tuple's position (block and offset), not its key, and the copy's recovery removes the row; naming
    them would take a full comparison of each table with the new primary.
  - Tables without a primary key are counted (C(without_key) in RV(counts)); their rows cannot be matched by key.
  - Tablespaces outside the data directory are refused (the copy would share them). A C(pg_wal) that is a symbolic link
    is copied; other symbolic links (configuration, certificates) are left out of the copy.
  - C(changed) is true only when O(dest) was written.
seealso:
  - module: akig.runbooks.pg_fence
  - module: akig.runbooks.pg_promote
  - name: pg_waldump
    description: The WAL reader the module uses.
    link: https://www.postgresql.org/docs/15/pgwaldump.html
  - name: Timelines
    description: What a timeline history file holds.
    link: https://www.postgresql.org/docs/15/continuous-archiving.html#BACKUP-TIMELINES
"""

EXAMPLES = r"""
- name: Name the transactions only the old primary has, before pg_rewind discards them
  akig.runbooks.pg_diverged_transactions:
    data_dir: /var/lib/postgresql/15/main
    login_host: db-2.prod.akig.internal
    login_user: postgres
    login_password: "{{ vault_akig_pg_superuser_password }}"
    dest: /var/tmp/akig-lost-transactions
  delegate_to: db-1.prod.akig.internal
  become: true
  no_log: true
  register: lost

- name: Only the fork point and whether anything diverged (nothing copied or started)
  akig.runbooks.pg_diverged_transactions:
    data_dir: /var/lib/postgresql/15/main
    login_host: db-2.prod.akig.internal
    login_password: "{{ vault_akig_pg_superuser_password }}"
  become: true
  check_mode: true
"""

RETURN = r"""
diverged:
  description: Whether the old primary committed transactions after the fork point (something the new primary may lack).
  returned: always
  type: bool
  sample: true
fork_lsn:
  description: Where the old primary's timeline ends in the new primary's history; V(null) when the old primary is on
    the new primary's timeline already (rewound or cloned).
  returned: always
  type: str
  sample: 0/5000A28
old_wal_end_lsn:
  description: End of the old primary's valid WAL on its timeline (V(null) when there is no fork point).
  returned: always
  type: str
  sample: 0/50F1B30
diverged_wal_bytes:
  description: Bytes of WAL the old primary wrote after the fork point.
  returned: always
  type: int
  sample: 987400
old_timeline:
  description: The old primary's last timeline.
  returned: always
  type: int
  sample: 1
new_timeline:
  description: The new primary's timeline.
  returned: always
  type: int
  sample: 2
history_source:
  description: How the fork point was read.
  returned: always
  type: str
  sample: pg_read_file('pg_wal/00000002.history') on 10.0.2.12:5432
transactions:
  description: The transactions committed on the old primary after the fork point, in commit order.
  returned: always
  type: list
  elements: dict
  sample: [{"xid": 7842, "commit_time": "2026-11-30T14:23:04.512311Z"}]
rows:
  description:
    - Rows written by those transactions that the new primary lacks (V(lost)) or holds differently (V(conflict)),
      ordered by commit time; at most O(max_rows). Only the key, never other column values.
  returned: always
  type: list
  elements: dict
  sample: [{"database": "akig_db", "table": "public.payments", "pk": {"id": "200311"},
            "commit_time": "2026-11-30T14:23:04.512311Z", "xid": 7842, "kind": "lost"}]
rows_truncated:
  description: Whether RV(rows) was cut at O(max_rows).
  returned: always
  type: bool
lost_count:
  description: Rows the new primary never received.
  returned: always
  type: int
  sample: 3
conflict_count:
  description: Rows the new primary holds with other values.
  returned: always
  type: int
  sample: 0
counts:
  description: Per table (C(database.schema.table)) the rows written after the fork - lost, conflict, identical, and
    without_key (in a table without a primary key).
  returned: always
  type: dict
  sample: {"akig_db.public.payments": {"lost": 3, "conflict": 0, "identical": 0, "without_key": 0}}
deletes_per_table:
  description: Per table the rows deleted by transactions committed after the fork (not listed one by one, see notes).
  returned: always
  type: dict
  sample: {"akig_db.public.payments": 1}
files:
  description: The C(json) and C(csv) paths written under O(dest); empty when nothing was written.
  returned: always
  type: dict
  sample: {"json": /var/tmp/akig-lost-transactions/lost-transactions.json,
           "csv": /var/tmp/akig-lost-transactions/lost-transactions.csv}
copy_bytes:
  description: Size of the data directory copied (when a copy was needed).
  returned: when transactions diverged
  type: int
timings:
  description: Seconds spent per step (waldump_s, copy_s, recovery_s, compare_s, total_s).
  returned: always
  type: dict
actions:
  description: What the task did, in plain sentences.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.akig.runbooks.plugins.module_utils.pg_divergence import DivergenceError, psycopg2, run
from ansible_collections.akig.runbooks.plugins.module_utils.pg_fence import FenceError
from ansible_collections.akig.runbooks.plugins.module_utils.pg_replication import PgError
from ansible_collections.akig.runbooks.plugins.module_utils.postgres import postgres_common_argument_spec


def argument_spec() -> dict:
    spec = postgres_common_argument_spec()
    spec.update(
        data_dir=dict(type="path", required=True),
        bin_dir=dict(type="path", default="/usr/lib/postgresql/15/bin"),
        os_user=dict(type="str", default="postgres"),
        scratch_dir=dict(type="path"),
        scratch_port=dict(type="int", default=54329),
        start_timeout=dict(type="int", default=600),
        dest=dict(type="path"),
        max_rows=dict(type="int", default=1000),
    )
    return spec


ARGUMENT_SPEC = argument_spec()


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if psycopg2 is None:
        module.fail_json(msg=missing_required_lib("psycopg2"))
    for name in ("start_timeout", "scratch_port"):
        if module.params[name] < 1:
            module.fail_json(msg="%s must be at least 1, got %d" % (name, module.params[name]))
    if module.params["max_rows"] < 0:
        module.fail_json(msg="max_rows must be 0 or more, got %d" % module.params["max_rows"])
    try:
        result = run(module.params, check_mode=module.check_mode)
    except (DivergenceError, FenceError, PgError) as exc:
        extra = dict(getattr(exc, "result", {}) or {})
        for warning in extra.pop("warnings", []):
            module.warn(warning)
        module.fail_json(msg=exc.msg, **extra)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
