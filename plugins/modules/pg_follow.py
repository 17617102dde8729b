#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_follow
short_description: Make a running PostgreSQL standby follow a new primary after a failover
version_added: 0.1.0
author: AKIG Engineering Team (@akig)
description:
  - After a failover promotes one standby, repoints another running standby (O(login_host)) at the new primary
    (O(new_primary_host)), so the cluster keeps a replica. Runbook RB-P1-003 runs it for every standby but the one it
    promoted; the old primary rejoins through C(pg_rewind) instead (the C(pg_failover) role's C(rejoin) entry point).
  - Refuses, changing nothing, a node that is not in recovery, a paused replay, a new primary that is in recovery or
    of another cluster, and a standby that holds WAL past the point where the new primary's timeline forked off its
    own -- it has transactions the new primary never received and needs C(pg_rewind) (the message says so). The fork
    point is read from the new primary's timeline history file, C(pg_read_file('pg_wal/<timeline>.history')), over the
    same SQL login (no replication connection, so C(pg_hba.conf) needs no replication entry for O(login_user)).
  - Creates the standby's physical replication slot O(slot_name) on the new primary when it is missing, sets
    C(primary_conninfo) and C(primary_slot_name) on the standby with C(ALTER SYSTEM) (which works on a hot standby; it
    writes C(postgresql.auto.conf), which overrides C(postgresql.conf)) and reloads its configuration; since PostgreSQL
    13 the WAL receiver restarts on the new settings without a server restart.
  - The new C(primary_conninfo) keeps every keyword of the current one (user, passfile, password, application_name,
    sslmode ...) and changes the host and the port, and the user, passfile and application_name when given. A new
    user drops the current password.
  - With O(wait), waits until the standby's C(pg_stat_wal_receiver) shows it streaming from the new primary on the new
    primary's timeline and the new primary's C(pg_stat_replication) shows the slot's consumer streaming.
  - Idempotent. A standby that already streams that way with these settings is left alone (C(changed=false)).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - akig.runbooks.postgres
attributes:
  check_mode:
    support: full
    details: Both nodes are read and every refusal applies; RV(actions) says what would be done and C(changed) whether
      anything would change. Nothing is created, set or reloaded.
  diff_mode:
    support: full
    details: C(primary_conninfo) (password masked) and C(primary_slot_name) of the standby before and after.
  platform:
    platforms: posix
requirements:
  - psycopg2
options:
  new_primary_host:
    description:
      - Host name or address of the new primary, as the standby must reach it (it goes into C(primary_conninfo)); the
        module connects to it with the same O(login_user) and O(login_password).
    type: str
    required: true
  new_primary_port:
    description: Port of the new primary.
    type: int
    default: 5432
  slot_name:
    description:
      - The standby's physical replication slot on the new primary (created when missing, with its WAL reserved at
        once), set as its C(primary_slot_name). The C(pg_slot_name) filter derives it from the inventory name.
    type: str
    required: true
  replication_user:
    description:
      - The role the standby streams as (C(user) in C(primary_conninfo)). Default the user of the current
        C(primary_conninfo); required when it names none.
    type: str
  passfile:
    description: C(passfile) in C(primary_conninfo), a path on the standby's host. Default the current one.
    type: str
  application_name:
    description: C(application_name) in C(primary_conninfo) (what the new primary shows). Default the current one.
    type: str
  wait:
    description: Wait until the standby streams from the new primary (see the description).
    type: bool
    default: true
  timeout:
    description: Seconds to wait for it, from 0 to 3600. The settings stay in place when it does not stream in time.
    type: float
    default: 30
  poll_interval:
    description: Seconds between two looks while waiting; more than 0, at most 60.
    type: float
    default: 0.2
notes:
  - Needs PostgreSQL 13 or later (C(primary_conninfo) reloadable).
  - O(login_host) is the standby. O(login_user) must be a superuser on both nodes (C(ALTER SYSTEM), C(pg_read_file),
    C(pg_create_physical_replication_slot), the WAL receiver's and the replicas' addresses).
  - The current C(primary_conninfo) may hold a password; it is masked in every value returned and in every message.
  - Runs on the controller, like M(akig.runbooks.pg_promote); a member of the action group C(akig.runbooks.postgres).
seealso:
  - module: akig.runbooks.pg_promote
  - module: akig.runbooks.pg_replication_info
  - name: Replication settings of a standby (primary_conninfo, primary_slot_name)
    description: PostgreSQL documentation.
    link: https://www.postgresql.org/docs/15/runtime-config-replication.html#RUNTIME-CONFIG-REPLICATION-STANDBY
"""

EXAMPLES = r"""
- name: Make db-3 follow db-2, promoted by the failover
  akig.runbooks.pg_follow:
    login_host: 10.0.2.13
    login_password: "{{ vault_akig_pg_superuser_password }}"
    new_primary_host: 10.0.2.12
    slot_name: "{{ 'db-3' | akig.runbooks.pg_slot_name }}"
    replication_user: replicator
    passfile: /var/lib/postgresql/.pgpass
    application_name: db-3
    timeout: 30
  delegate_to: localhost
  register: __pg_failover_follow
  no_log: true

- name: What would change (check mode)
  akig.runbooks.pg_follow:
    login_host: 10.0.2.13
    login_password: "{{ vault_akig_pg_superuser_password }}"
    new_primary_host: 10.0.2.12
    slot_name: db_3_slot
  check_mode: true
  delegate_to: localhost
"""

RETURN = r"""
standby:
  description: The standby, as C(host:port).
  returned: always
  type: str
  sample: 10.0.2.13:5432
new_primary:
  description: The new primary, as C(host:port).
  returned: always
  type: str
  sample: 10.0.2.12:5432
following:
  description: Whether the standby was seen streaming from the new primary (in check mode, already).
  returned: always
  type: bool
  sample: true
needs_rewind:
  description: The standby holds WAL past the fork point (or another timeline); it needs C(pg_rewind), nothing was changed.
  returned: always
  type: bool
  sample: false
timeline:
  description: The new primary's timeline.
  returned: always
  type: int
  sample: 2
standby_timeline:
  description: The standby's timeline before the task.
  returned: always
  type: int
  sample: 1
standby_lsn:
  description: The furthest WAL position the standby held before the task (received or replayed).
  returned: always
  type: str
  sample: 0/5000A0
fork_lsn:
  description: Where the standby's timeline ends in the new primary's history; V(null) on the same timeline.
  returned: always
  type: str
  sample: 0/5000A0
slot_name:
  description: The slot on the new primary.
  returned: always
  type: str
  sample: db_3_slot
slot_created:
  description: Whether the task created the slot.
  returned: always
  type: bool
  sample: true
primary_conninfo:
  description: The standby's C(primary_conninfo) after the task (or to be set, in check mode), password masked.
  returned: always
  type: str
  sample: host=10.0.2.12 port=5432 user=replicator passfile=/var/lib/postgresql/.pgpass application_name=db-3
previous_conninfo:
  description: Its C(primary_conninfo) before the task, password masked.
  returned: always
  type: str
  sample: host=10.0.2.11 port=5432 user=replicator passfile=/var/lib/postgresql/.pgpass application_name=db-3
seconds:
  description: Seconds spent waiting for the standby to stream.
  returned: always
  type: float
  sample: 0.84
actions:
  description: What the task checked and did, or in check mode would do, in plain sentences.
  returned: always
  type: list
  elements: str
  sample:
    - 10.0.2.13:5432 holds WAL up to 0/5000A0 on timeline 1, not past the point 0/5000A0 where timeline 2 forked off timeline 1
    - created the physical replication slot db_3_slot on 10.0.2.12:5432 (WAL reserved at once)
    - reloaded the configuration of 10.0.2.13:5432
error_kind:
  description: Short class of the connection problem when the task failed to connect (V(refused), V(timeout) ...).
  returned: failure
  type: str
  sample: refused
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.akig.runbooks.plugins.module_utils.pg_follow import run_follow
from ansible_collections.akig.runbooks.plugins.module_utils.pg_replication import HAS_PSYCOPG2, PSYCOPG2_IMPORT_ERROR, PgError
from ansible_collections.akig.runbooks.plugins.module_utils.postgres import postgres_common_argument_spec

ARGUMENT_SPEC = postgres_common_argument_spec()
ARGUMENT_SPEC.update(
    new_primary_host=dict(type="str", required=True),
    new_primary_port=dict(type="int", default=5432),
    slot_name=dict(type="str", required=True),
    replication_user=dict(type="str"),
    passfile=dict(type="str", no_log=False),
    application_name=dict(type="str"),
    wait=dict(type="bool", default=True),
    timeout=dict(type="float", default=30),
    poll_interval=dict(type="float", default=0.2),
)


# the AnsibleModule arguments, shared with the action plugin that runs the module in Ansible's worker on the controller
# (plugins/action/pg_follow.py)
MODULE_KWARGS = dict(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)


def execute(module) -> None:
    """The module's work on an AnsibleModule (or the in-process stand-in of plugins/plugin_utils/in_process.py)."""
    if not HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=PSYCOPG2_IMPORT_ERROR)
    try:
        result = run_follow(module.params, check_mode=module.check_mode)
    except PgError as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


def main() -> None:
    execute(AnsibleModule(**MODULE_KWARGS))


if __name__ == "__main__":
    main()
