#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_fence
short_description: Stop the old PostgreSQL primary and fence it so it can only come back as a standby
version_added: 0.1.0
author: AKIG Engineering Team (@akig)
description:
  - The fencing step of runbook RB-P1-003 (database unavailable, fail over to the streaming replica), in one task
    that runs B(on the database host) of the old primary (use C(delegate_to)).
  - Asks C(pg_ctl status) whether the server of O(data_dir) runs (exit code 0 running, 3 not running; anything else
    fails the task). A C(postmaster.pid) whose pid is a zombie, or no PostgreSQL process of O(data_dir) any more
    (a reused pid), counts as not running and is left alone.
  - Stops a running server with a fast shutdown (C(pg_ctl -D DATA -m fast -w -t STOP_TIMEOUT stop)). Open
    transactions are rolled back, a shutdown checkpoint is written and the walsenders stream all WAL up to and
    including it to the connected standbys before they exit. When that does not finish within O(stop_timeout)
    seconds it escalates to an immediate shutdown (C(-m immediate -w -t 2)) and finally sends SIGKILL to the
    postmaster (the pid on the first line of C(postmaster.pid)) and all its descendants, and waits up to 5 seconds
    for the postmaster to be gone. SIGKILL also ends a hung postmaster, for example one stopped with SIGSTOP, which
    never acts on the shutdown signals of C(pg_ctl). A postmaster that survives SIGKILL fails the task.
  - With O(service_manager=systemd) the server is stopped with C(systemctl stop SERVICE_NAME) instead (systemd
    applies the unit's stop command and its own escalation). When C(systemctl stop) fails, or has not returned
    within O(stop_timeout) plus 5 seconds (the unit's C(TimeoutStopSec) may be much longer; Debian's
    C(postgresql@.service) has one hour), and the postmaster still runs, the task escalates itself as above.
  - With O(state=fenced) it then makes sure C(standby.signal) exists in O(data_dir) and that
    C(postgresql.auto.conf) sets O(primary_conninfo) (and O(primary_slot_name)), so whatever restarts the server
    (an operator, systemd at boot) brings it up as a read-only standby of the new primary, never as a second primary.
  - Finally reads C(pg_controldata) and returns the cluster state and the latest checkpoint. After a clean shutdown
    of a primary that checkpoint is the shutdown checkpoint; pass RV(checkpoint_lsn) to
    M(akig.runbooks.pg_promote) as O(akig.runbooks.pg_promote#module:wait_received_lsn) so the standby is promoted
    only once it has received it (nothing the old primary acknowledged is lost).
  - With O(state=unfenced) it only removes C(standby.signal) (the way back of a failover that promoted nothing).
  - Every input is checked before anything is changed; a failure message says what is wrong and what to do.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Runs only C(pg_ctl status) and C(pg_controldata) and reports in RV(actions) what would be done; nothing
      is stopped or written. RV(cluster_state), RV(checkpoint_lsn) and RV(timeline) are then those of the control
      file before the task.
  diff_mode:
    support: full
    details: The C(primary_conninfo) and C(primary_slot_name) lines of C(postgresql.auto.conf), whether
      C(standby.signal) is present, and whether the server runs, before and after. A password in a conninfo is
      masked.
  platform:
    platforms: posix
requirements:
  - PostgreSQL server programs (C(pg_ctl), C(pg_controldata)) on the managed host.
  - runuser (util-linux) when the module runs as root.
  - Linux C(/proc) to find, check and kill the postmaster's processes (elsewhere only C(pg_ctl) is used and the pid
    file is trusted).
options:
  data_dir:
    description:
      - Data directory of the server to stop (the directory with C(PG_VERSION), C(postmaster.pid) and
        C(postgresql.auto.conf)); on Debian V(/var/lib/postgresql/15/main).
    type: path
    required: true
  bin_dir:
    description:
      - Directory of the PostgreSQL server programs C(pg_ctl) and C(pg_controldata), of the same major version as
        the data directory.
    type: path
    default: /usr/lib/postgresql/15/bin
  os_user:
    description:
      - OS user the server runs as, the owner of O(data_dir). C(pg_ctl) and C(pg_controldata) run as this user,
        through C(runuser -u OS_USER --) when the module runs as root. As another user than root the module fails
        unless it already runs as O(os_user); use C(become=true).
      - C(standby.signal) and C(postgresql.auto.conf) are written owned by this user (and its primary group),
        mode C(0600).
    type: str
    default: postgres
  service_manager:
    description:
      - How the server is stopped. V(pg_ctl) stops it with C(pg_ctl) and escalates as described above.
        V(systemd) runs C(systemctl stop) O(service_name) (needs root), then escalates with C(pg_ctl -m immediate)
        and SIGKILL if the postmaster still runs.
    type: str
    choices: [pg_ctl, systemd]
    default: pg_ctl
  service_name:
    description:
      - The systemd unit of the server, for example V(postgresql@15-main). Required with
        O(service_manager=systemd), which checks that systemd knows the unit before it changes anything; ignored
        otherwise.
    type: str
  stop_timeout:
    description:
      - Seconds the fast shutdown may take before the task escalates to an immediate shutdown (2 seconds), then to
        SIGKILL. At least 1.
      - With O(service_manager=systemd), C(systemctl stop) gets this many seconds plus 5 before the task escalates.
    type: int
    default: 5
  state:
    description:
      - V(fenced) stops the server and makes sure C(standby.signal) exists and C(postgresql.auto.conf) sets
        O(primary_conninfo) and O(primary_slot_name).
      - V(stopped) only makes sure the server is stopped; the files are not touched.
      - V(unfenced) is the way back of a failover that promoted nothing. It removes C(standby.signal), so the next
        start brings the server up as a primary again. It neither stops nor starts the server and leaves
        C(postgresql.auto.conf) alone (C(primary_conninfo) is ignored by a primary).
    type: str
    choices: [fenced, stopped, unfenced]
    default: fenced
  primary_conninfo:
    description:
      - Connection string the fenced server uses to follow the new primary when it restarts as a standby, for
        example C(host=10.0.2.12 port=5432 user=replicator passfile=/var/lib/postgresql/.pgpass
        application_name=db1). Written as C(primary_conninfo = '...') to C(postgresql.auto.conf) (single quotes
        and backslashes doubled, as C(ALTER SYSTEM) writes them), replacing an existing line (and dropping later
        duplicates, which would override it), else appended. A line that already holds this value is left as it is.
      - Required with O(state=fenced); ignored (with a warning) with O(state=stopped).
      - Use C(passfile=), not C(password=); a password would be stored in clear text (the task warns), and is
        masked in messages, RV(actions) and the diff.
    type: str
  primary_slot_name:
    description:
      - Replication slot on the new primary for the fenced server, written as C(primary_slot_name = '...') like
        O(primary_conninfo). 1 to 63 lower-case letters, digits and underscores. When omitted an existing
        C(primary_slot_name) line is left alone.
    type: str
notes:
  - For a stopped server the task also finds the end of its WAL (RV(wal_end_lsn)) with C(pg_waldump) (in
    O(bin_dir)), reading the records from the latest checkpoint on. After a crash, an immediate shutdown or a kill
    this is what the old primary wrote; a standby that has received less than that lacks the difference for good.
  - RV(stopped_cleanly) is the one value that says whether a zero-loss hand-over is possible; see its description.
  - The SIGKILL step kills the processes of the server, never guessed ones; the postmaster pid is checked against
    C(/proc/PID/cwd) (it runs in its data directory) first.
  - The task does not disable the server's service; it does not need to, because a restarted server comes up as a
    standby. A cluster manager (Patroni, pacemaker) that restarts or reconfigures the server must be stopped first;
    the task fails when the server runs again right after it was stopped.
seealso:
  - module: akig.runbooks.pg_promote
  - module: akig.runbooks.pg_replication_info
  - name: pg_ctl in the PostgreSQL documentation
    description: Shutdown modes of pg_ctl stop.
    link: https://www.postgresql.org/docs/15/app-pg-ctl.html
  - name: Standby server operation
    description: What standby.signal and primary_conninfo do.
    link: https://www.postgresql.org/docs/15/warm-standby.html#STANDBY-SERVER-OPERATION
"""

EXAMPLES = r"""
- name: Stop and fence the old primary (on its own host)
  akig.runbooks.pg_fence:
    data_dir: /var/lib/postgresql/15/main
    primary_conninfo: >-
      host=10.0.2.12 port=5432 user=replicator passfile=/var/lib/postgresql/.pgpass application_name=db1
    primary_slot_name: db1_slot
    stop_timeout: 5
  delegate_to: db1
  become: true
  register: __pg_failover_fence

- name: Promote the replica once it has received the old primary's shutdown checkpoint
  akig.runbooks.pg_promote:
    login_host: 10.0.2.12
    login_password: "{{ vault_pg_superuser_password }}"
    wait_received_lsn: "{{ __pg_failover_fence.checkpoint_lsn if __pg_failover_fence.stopped_cleanly else omit }}"
  delegate_to: localhost
  no_log: true

- name: Stop a server managed by systemd, only stop it
  akig.runbooks.pg_fence:
    data_dir: /var/lib/postgresql/15/main
    service_manager: systemd
    service_name: postgresql@15-main
    state: stopped
  become: true

- name: Show what fencing would do, with the configuration diff
  akig.runbooks.pg_fence:
    data_dir: /srv/pg/data
    bin_dir: /usr/pgsql-15/bin
    os_user: postgres
    primary_conninfo: host=10.0.2.12 port=5432 user=replicator passfile=/srv/pg/.pgpass
  become: true
  check_mode: true
  diff: true
"""

RETURN = r"""
data_dir:
  description: The data directory, as an absolute path.
  returned: always
  type: str
  sample: /var/lib/postgresql/15/main
was_running:
  description: Whether the server ran when the task started (a zombie or stale C(postmaster.pid) does not count).
  returned: always
  type: bool
  sample: true
stop_mode:
  description:
    - How this run stopped the server. V(fast), V(immediate) or V(kill) (SIGKILL of the postmaster and its children)
      with O(service_manager=pg_ctl); V(systemd) when C(systemctl stop) stopped it; V(null) when the server was not
      running, and in check mode.
  returned: always
  type: str
  sample: fast
stop_seconds:
  description: Seconds spent stopping the server, escalations included; V(null) when nothing was stopped.
  returned: always
  type: float
  sample: 0.412
stopped_cleanly:
  description:
    - V(true) only when, after the task, the control file says C(shut down), that is the server is stopped and its
      last shutdown was a clean shutdown B(of a primary). That is either this run's fast stop (or C(systemctl stop), when the
      unit's own stop was a clean one) of the running primary, or a clean shutdown earlier (the server was already
      stopped). Only then is the latest checkpoint (RV(checkpoint_lsn)) the shutdown checkpoint that the walsenders
      streamed to every connected standby before exiting, and only then is a zero-loss hand-over guaranteed, once the
      standby has received past it.
    - V(false) after an immediate shutdown or a kill (the control file says C(in production)), after a crash (the
      server was not running and the control file says C(in production)), for a server that was a standby
      (C(shut down in recovery), C(in archive recovery)), and in check mode while the server runs.
  returned: always
  type: bool
  sample: true
fenced:
  description:
    - Whether the server is stopped and C(standby.signal) is present after the task, so that any restart brings it up
      as a read-only standby (with O(state=fenced) also following O(primary_conninfo)). In check mode, whether that
      is already so.
  returned: always
  type: bool
  sample: true
cluster_state:
  description:
    - The C(Database cluster state) of C(pg_controldata) after the task (before it in check mode), for example
      C(shut down), C(in production), C(shut down in recovery), C(in archive recovery).
  returned: always
  type: str
  sample: shut down
checkpoint_lsn:
  description:
    - C(Latest checkpoint location) of C(pg_controldata) after the task (before it in check mode). When
      RV(stopped_cleanly) is V(true), the start of the shutdown checkpoint record; a standby whose
      C(pg_last_wal_receive_lsn()) is greater has received all WAL of the old primary.
  returned: always
  type: str
  sample: 0/3000028
timeline:
  description: C(Latest checkpoint's TimeLineID) of C(pg_controldata), the timeline the server was on.
  returned: always
  type: int
  sample: 1
system_identifier:
  description:
    - C(Database system identifier) of C(pg_controldata), the same on a primary and every standby cloned from it
      (C(pg_control_system()) over SQL).
  returned: always
  type: str
  sample: "7713955421543448012"
wal_end_lsn:
  description:
    - When the server is stopped after the task (in check mode, before it), the end of the valid WAL in its
      C(pg_wal) found with C(pg_waldump) from the latest checkpoint on (the position right after the last record,
      on the checkpoint's timeline); V(null) while the server runs, or when it cannot be found (the reason is in
      RV(actions)).
    - After a crash, an immediate shutdown or a kill, pass it to M(akig.runbooks.pg_promote) as
      O(akig.runbooks.pg_promote#module:reference_lsn), so a standby that never received part of it is not promoted
      beyond the RPO budget.
  returned: always
  type: str
  sample: 0/30001C0
actions:
  description: What the task did, or in check mode would do, in plain sentences.
  returned: always
  type: list
  elements: str
  sample:
    - stopped the server of /var/lib/postgresql/15/main (postmaster pid 4211) with a fast shutdown (pg_ctl -m fast) in 0.31 s
    - created /var/lib/postgresql/15/main/standby.signal (empty, owner postgres, mode 0600) so a restart brings the server up as a standby
    - added primary_conninfo = 'host=10.0.2.12 user=replicator passfile=/var/lib/postgresql/.pgpass' to /var/lib/postgresql/15/main/postgresql.auto.conf
    - "control file after the stop: shut down, latest checkpoint 0/3000028 on timeline 1"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.akig.runbooks.plugins.module_utils.pg_fence import (
    SERVICE_MANAGERS,
    STATES,
    FenceError,
    mask_conninfo,
    run,
)

ARGUMENT_SPEC = dict(
    data_dir=dict(type="path", required=True),
    bin_dir=dict(type="path", default="/usr/lib/postgresql/15/bin"),
    os_user=dict(type="str", default="postgres"),
    service_manager=dict(type="str", default="pg_ctl", choices=list(SERVICE_MANAGERS)),
    service_name=dict(type="str"),
    stop_timeout=dict(type="int", default=5),
    state=dict(type="str", default="fenced", choices=list(STATES)),
    primary_conninfo=dict(type="str"),
    primary_slot_name=dict(type="str"),
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        result = run(module.params, check_mode=module.check_mode)
    except FenceError as exc:
        for warning in exc.result.pop("warnings", []):
            module.warn(warning)
        exc.result.pop("diff", None)
        module.fail_json(msg=mask_conninfo(exc.msg), **exc.result)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
