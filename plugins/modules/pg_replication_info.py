#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_replication_info
short_description: Report the streaming replication state of one PostgreSQL node
version_added: 0.1.0
author: AKIG Engineering Team (@akig)
description:
  - Connects to one PostgreSQL node and reports its role (primary or standby), its timeline, its WAL
    positions (LSNs), how far its replay lags, its WAL receiver, the replicas streaming from it, its
    replication slots, whether it accepts writes and how many connections it holds.
  - Read-only; it never changes anything, so it runs unchanged in check mode.
  - A node that is down is a result, not a failure. When the connection is refused, times out, or the
    server is starting up, shutting down or out of connection slots, the module returns
    RV(reachable=false) with the reason in RV(error). Misconfiguration (wrong password, no
    C(pg_hba.conf) entry, unknown database or host name) fails the task.
  - Runbook RB-P1-003 (database unavailable, fail over to the streaming replica) uses it to decide
    whether the primary is really down and whether the replica is close enough to promote.
  - The timeline of a primary is the larger of C(pg_control_checkpoint().timeline_id) and the timeline
    of its current WAL file (right at once after a promotion). The timeline of a standby is the
    C(received_tli) of its streaming WAL receiver, else the larger of its last restartpoint's timeline
    and C(pg_control_recovery().min_recovery_end_timeline).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - akig.runbooks.postgres
attributes:
  check_mode:
    support: full
    details: The module only reads, so check mode returns the same information.
  diff_mode:
    support: none
  platform:
    platforms: posix
requirements:
  - psycopg2
options:
  primary_lsn:
    description:
      - WAL position of the primary, as C(X/Y) (for example the RV(current_lsn) it reported last, when it
        can no longer be asked). On a standby RV(lag_bytes) is then this LSN minus the replay LSN
        instead of the receive LSN minus the replay LSN.
    type: str
  attempts:
    description:
      - Probe the node up to this many times, O(attempt_interval) seconds apart, stopping at the first probe that
        finds it accepting writes. RV(state) is the best state seen, so a node is V(down) only when every probe
        found it down; the other values are those of the probe that saw that state (the latest of equals).
      - A runbook uses several probes before it restarts a server, so one refused or slow connection, a server
        out of connection slots or one still replaying its WAL does not count as down. From 1 to 100.
    type: int
    default: 1
  attempt_interval:
    description:
      - Seconds between two probes when O(attempts) is more than 1. From 0 to 60.
    type: float
    default: 1.0
notes:
  - Needs PostgreSQL 12 or later.
  - O(login_user) sees every value as a superuser or a member of C(pg_monitor); other roles may see V(null) for
    the timeline, the WAL receiver and the replicas' addresses.
  - LSNs are returned as PostgreSQL writes them (C(X/Y), hex) and, in the matching C(*_bytes) value, as
    the integer byte position C(pg_wal_lsn_diff(lsn, '0/0')), which templates can compare and subtract.
  - A failure message names the node and the cause; it never contains the password.
seealso:
  - module: akig.runbooks.pg_promote
  - module: community.postgresql.postgresql_info
"""

EXAMPLES = r"""
- name: Look at the primary before deciding to fail over
  akig.runbooks.pg_replication_info:
    login_host: "{{ hostvars[groups['pg_primary'][0]].ansible_host }}"
    login_password: "{{ vault_pg_superuser_password }}"
  delegate_to: localhost
  register: __pg_failover_primary
  no_log: "{{ pg_failover_secure_logging }}"

- name: Measure the replica's lag against the last LSN the primary reported
  akig.runbooks.pg_replication_info:
    login_host: 10.0.2.12
    login_port: 5432
    login_user: postgres
    login_password: "{{ vault_pg_superuser_password }}"
    primary_lsn: "{{ __pg_failover_primary.current_lsn }}"
  delegate_to: localhost
  register: __pg_failover_replica
  no_log: "{{ pg_failover_secure_logging }}"

- name: Refuse promotion when replica lag exceeds the RPO budget
  ansible.builtin.assert:
    that:
      - __pg_failover_replica.reachable
      - __pg_failover_replica.role == 'standby'
      - __pg_failover_replica.lag_bytes is not none
      - __pg_failover_replica.lag_bytes <= pg_failover_max_lag_bytes
    fail_msg: "replica lags {{ __pg_failover_replica.lag_bytes }} bytes behind; the RPO budget is {{ pg_failover_max_lag_bytes }}"
"""

RETURN = r"""
reachable:
  description: Whether a session could be opened. When V(false) every other value is V(null) or empty.
  returned: always
  type: bool
  sample: true
error:
  description: Why the node is not reachable (node, user, cause, what to check), else V(null).
  returned: always
  type: str
  sample: >-
    cannot connect to PostgreSQL at 127.0.0.11:5432 as postgres: Connection refused; is PostgreSQL
    running and listening on 127.0.0.11:5432?
error_kind:
  description:
    - Short class of the connection problem when RV(reachable=false), else V(null).
    - One of V(refused), V(timeout), V(network), V(starting), V(stopping), V(full), V(closed).
  returned: always
  type: str
  sample: refused
version:
  description: C(server_version_num) of the node.
  returned: always
  type: int
  sample: 150010
in_recovery:
  description: C(pg_is_in_recovery()).
  returned: always
  type: bool
  sample: false
role:
  description: V(primary) when not in recovery, else V(standby).
  returned: always
  type: str
  sample: primary
timeline:
  description: Timeline the node is on (see the description for how it is found).
  returned: always
  type: int
  sample: 1
current_lsn:
  description: C(pg_current_wal_lsn()) of a primary; V(null) on a standby.
  returned: always
  type: str
  sample: 0/3000148
current_lsn_bytes:
  description: RV(current_lsn) as a byte position.
  returned: always
  type: int
  sample: 50331976
receive_lsn:
  description: C(pg_last_wal_receive_lsn()) of a standby (V(null) on a primary, or when it never streamed).
  returned: always
  type: str
  sample: 0/3000148
receive_lsn_bytes:
  description: RV(receive_lsn) as a byte position.
  returned: always
  type: int
  sample: 50331976
replay_lsn:
  description: C(pg_last_wal_replay_lsn()) of a standby; V(null) on a primary.
  returned: always
  type: str
  sample: 0/3000148
replay_lsn_bytes:
  description: RV(replay_lsn) as a byte position.
  returned: always
  type: int
  sample: 50331976
replay_paused:
  description: C(pg_is_wal_replay_paused()) of a standby (a pause was requested); V(null) on a primary.
  returned: always
  type: bool
  sample: false
lag_bytes:
  description:
    - On a standby, bytes of WAL not replayed yet, never negative; receive LSN minus replay LSN, or
      O(primary_lsn) minus replay LSN when O(primary_lsn) is given. V(null) on a primary, and on a
      standby that never streamed when O(primary_lsn) is not given.
  returned: always
  type: int
  sample: 0
lag_seconds:
  description:
    - On a standby, V(0) when RV(lag_bytes) is V(0), else the age of the last replayed transaction
      (C(now() - pg_last_xact_replay_timestamp())). V(null) on a primary or when nothing was replayed yet.
  returned: always
  type: float
  sample: 0.0
wal_receiver:
  description: The WAL receiver of a standby (C(pg_stat_wal_receiver)); all V(null) when none runs (always on a primary).
  returned: always
  type: dict
  contains:
    status:
      description: V(streaming), V(starting), V(waiting) ...
      type: str
      sample: streaming
    sender_host:
      description: Host the standby streams from.
      type: str
      sample: 127.0.0.11
    sender_port:
      description: Port the standby streams from.
      type: int
      sample: 5432
    slot_name:
      description: Replication slot it uses on the primary.
      type: str
      sample: db_2_slot
    connected:
      description:
        - Whether the receiver is connected to its upstream and streaming. V(false) when no receiver runs (the
          upstream is down, or C(primary_conninfo) is empty) and while it is still connecting (PostgreSQL 15
          shows a connecting receiver as V(streaming) without a sender).
      type: bool
      sample: true
    last_msg_receipt_time:
      description:
        - When the receiver last received a message (WAL or keepalive) from its upstream, UTC ISO 8601; V(null)
          when no receiver runs. Once the receiver stops (the upstream crashed) PostgreSQL forgets it.
      type: str
      sample: "2026-11-27T14:23:00.123Z"
    last_msg_receipt_age_s:
      description: Seconds since RV(wal_receiver.last_msg_receipt_time), measured by the node's own clock; V(null) without a receiver.
      type: float
      sample: 0.4
replicas:
  description: On a primary, one entry per row of C(pg_stat_replication); empty on a standby.
  returned: always
  type: list
  elements: dict
  contains:
    application_name:
      description: Name the replica gave (its C(cluster_name) or C(application_name) in C(primary_conninfo)).
      type: str
    client_addr:
      description: IP address of the replica's connection.
      type: str
    state:
      description: V(streaming), V(catchup), V(startup), V(backup) or V(stopping).
      type: str
    sync_state:
      description: V(async), V(potential), V(sync) or V(quorum).
      type: str
    sent_lsn:
      description: Last WAL position sent to the replica.
      type: str
    sent_lsn_bytes:
      description: RV(replicas[].sent_lsn) as a byte position.
      type: int
    write_lsn:
      description: Last WAL position written by the replica.
      type: str
    write_lsn_bytes:
      description: RV(replicas[].write_lsn) as a byte position.
      type: int
    flush_lsn:
      description: Last WAL position flushed by the replica.
      type: str
    flush_lsn_bytes:
      description: RV(replicas[].flush_lsn) as a byte position.
      type: int
    replay_lsn:
      description: Last WAL position replayed by the replica.
      type: str
    replay_lsn_bytes:
      description: RV(replicas[].replay_lsn) as a byte position.
      type: int
    lag_bytes:
      description: The primary's current LSN minus the replica's replay LSN, never negative.
      type: int
    write_lag:
      description: C(write_lag) in seconds, or V(null).
      type: float
    flush_lag:
      description: C(flush_lag) in seconds, or V(null).
      type: float
    replay_lag:
      description: C(replay_lag) in seconds, or V(null).
      type: float
    slot_name:
      description: The replication slot the replica streams through (C(pg_replication_slots.active_pid)), or V(null).
      type: str
  sample:
    - application_name: db-2
      client_addr: 127.0.0.12
      state: streaming
      sync_state: async
      sent_lsn: 0/3000148
      sent_lsn_bytes: 50331976
      write_lsn: 0/3000148
      write_lsn_bytes: 50331976
      flush_lsn: 0/3000148
      flush_lsn_bytes: 50331976
      replay_lsn: 0/3000148
      replay_lsn_bytes: 50331976
      lag_bytes: 0
      write_lag: 0.001
      flush_lag: 0.002
      replay_lag: 0.002
      slot_name: db_2_slot
slots:
  description: The node's replication slots (C(pg_replication_slots)).
  returned: always
  type: list
  elements: dict
  contains:
    slot_name:
      description: Name of the slot.
      type: str
    slot_type:
      description: V(physical) or V(logical).
      type: str
    active:
      description: Whether a consumer uses it now.
      type: bool
    restart_lsn:
      description: Oldest WAL position the slot keeps.
      type: str
    restart_lsn_bytes:
      description: RV(slots[].restart_lsn) as a byte position.
      type: int
  sample:
    - slot_name: db_2_slot
      slot_type: physical
      active: true
      restart_lsn: 0/3000148
      restart_lsn_bytes: 50331976
system_identifier:
  description:
    - C(pg_control_system().system_identifier) as a string, the same on a primary and every standby cloned from
      it (C(Database system identifier) of C(pg_controldata)); V(null) when the login role may not read it.
  returned: always
  type: str
  sample: "7713955421543448012"
state:
  description:
    - What the probes found, from worst to best; V(down) (no PostgreSQL answering - refused, timed out, no route,
      connection closed), V(refusing) (answers but refuses writes or sessions - read-only, shutting down),
      V(overloaded) (no free connection slot), V(in_recovery) (a standby, or a server starting up or replaying
      its WAL after a crash), V(up) (accepts writes).
    - Only V(down) calls for a restart of the server.
  returned: always
  type: str
  sample: up
probes:
  description: The RV(state) of each probe, in order (one entry with O(attempts=1)).
  returned: always
  type: list
  elements: str
  sample: [down, down, up]
accepts_writes:
  description:
    - V(true) when the node is not in recovery and neither C(transaction_read_only) nor
      C(default_transaction_read_only) is on for this session.
  returned: always
  type: bool
  sample: true
connections:
  description: Client connections (C(pg_stat_activity) rows of client backends) and C(max_connections).
  returned: always
  type: dict
  contains:
    total:
      description: Client backends now connected, this one included.
      type: int
    max:
      description: C(max_connections).
      type: int
  sample:
    total: 12
    max: 100
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.akig.runbooks.plugins.module_utils.pg_replication import HAS_PSYCOPG2, PSYCOPG2_IMPORT_ERROR, PgError, run_info
from ansible_collections.akig.runbooks.plugins.module_utils.postgres import postgres_common_argument_spec

ARGUMENT_SPEC = postgres_common_argument_spec()
ARGUMENT_SPEC.update(
    primary_lsn=dict(type="str"),
    attempts=dict(type="int", default=1),
    attempt_interval=dict(type="float", default=1.0),
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if not HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=PSYCOPG2_IMPORT_ERROR)
    try:
        result = run_info(module.params)
    except PgError as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
