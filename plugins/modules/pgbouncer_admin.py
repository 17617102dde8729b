#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pgbouncer_admin
short_description: Drive PgBouncer's admin console (show, pause, resume, reload, kill, wait_close) and repoint a database entry
version_added: 0.1.0
author: AKIG Engineering Team (@akig)
description:
  - Talks to the admin console of one PgBouncer (the virtual database C(pgbouncer)) to switch the database behind
    it without restarting the application, the stable-endpoint path of runbook RB-P1-003 (database unavailable,
    fail over to the streaming replica).
  - A planned failover is O(command=pause) (in-flight transactions finish, new ones wait in PgBouncer), promotion
    of the replica by other tasks, O(command=repoint), O(command=resume). A crash is O(command=repoint),
    O(command=kill) (drop the connections to the dead server), O(command=resume).
  - O(command=show) summarises C(SHOW DATABASES), C(SHOW POOLS), C(SHOW SERVERS) and C(SHOW CLIENTS) per database
    entry. Read-only; it runs in check mode too.
  - O(command=pause) sends C(PAUSE [database]), which PgBouncer answers once the server connections are released
    (with transaction pooling, once the transactions in flight have ended). It waits at most O(timeout) seconds; when the
    pause does not finish in time it resumes the database again (so clients carry on as before) and fails, naming
    the server connections still busy. A database already paused is left alone.
  - O(command=resume) sends C(RESUME [database]); a database that is not paused is left alone (C(changed=false)),
    where PgBouncer itself answers an error.
  - O(command=reload) sends C(RELOAD) (re-read the configuration file).
  - O(command=kill) sends C(KILL database), which drops the database's server B(and client) connections at once and
    leaves it paused until O(command=resume). A database already paused with no connection is left alone.
  - O(command=wait_close) sends C(WAIT_CLOSE [database]) and waits at most O(timeout) seconds until the server
    connections that a reload or reconnect marked for closing are closed.
  - O(command=repoint) points the entry O(database) of the C([databases]) section of O(config_file) at
    O(target_host):O(target_port) (and O(target_dbname)), keeping every other key of the entry and every other byte of
    the file. The file is replaced atomically (temporary file in the same directory, then rename) with the same
    owner and mode, after a backup of the old file (O(backup)). Then C(RELOAD), then C(SHOW DATABASES) must show
    the new host, port and database; if it does not, the old file is put back, reloaded, and the task fails.
    An entry that already points there, in the file and in the running PgBouncer, is left alone (C(changed=false));
    a file that already points there but was not reloaded is reloaded.
  - Every input is checked, and the console, the entry (in the file and in C(SHOW DATABASES)) and the file are read,
    before anything is changed; a failure says what is wrong and what to do.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Connects and reads the state (all of O(command=show)), reads O(config_file) for O(command=repoint), and
      reports in RV(actions) and C(changed) what would be done; no admin command other than C(SHOW) is sent and no
      file is written.
  diff_mode:
    support: full
    details: For O(command=repoint), O(config_file) before and after (C(password=) values of connection strings
      masked).
  platform:
    platforms: posix
requirements:
  - psycopg2
  - PgBouncer 1.18 or later (C(WAIT_CLOSE) needs 1.15).
options:
  command:
    description:
      - What to do; see the description.
    type: str
    required: true
    choices: [show, pause, resume, reload, kill, repoint, wait_close]
  database:
    description:
      - Name of the database entry in PgBouncer's C([databases]) section (the name clients connect to, as in
        C(SHOW DATABASES)). Must exist there; the task fails otherwise, changing nothing.
      - Required with O(command=kill) and O(command=repoint). Without it O(command=pause), O(command=resume) and
        O(command=wait_close) act on every database, and O(command=show) still lists them all.
    type: str
  login_host:
    description:
      - Host name, IP address or Unix socket directory of the PgBouncer (its C(listen_addr) or C(unix_socket_dir)).
    type: str
    default: 127.0.0.1
  login_port:
    description:
      - Port of the PgBouncer (its C(listen_port)).
    type: int
    default: 6432
  login_user:
    description:
      - User to log in to the admin console as. Must be listed in PgBouncer's C(admin_users) (a C(stats_users)
        user may only run C(SHOW)).
    type: str
    default: pgbouncer
  login_password:
    description:
      - Password of O(login_user), checked by PgBouncer against its C(auth_file) or C(auth_query). Never returned
        or logged; a failure message never contains it.
    type: str
  connect_timeout:
    description:
      - Seconds to wait for the connection to the admin console. Must be at least 1.
    type: int
    default: 3
  timeout:
    description:
      - Seconds O(command=pause) and O(command=wait_close) may wait for PgBouncer's answer.
    type: float
    default: 10
  config_file:
    description:
      - The PgBouncer configuration file holding the C([databases]) entry O(database), on the host the task runs
        on (delegate it to the PgBouncer host). Required with O(command=repoint).
      - Either the main C(pgbouncer.ini) or, better, a small file that holds only the C([databases]) section and that
        C(pgbouncer.ini) pulls in with C(%include); the task then rewrites nothing but the database entries, and
        the file with the authentication and pool settings stays as configuration management wrote it.
    type: path
  target_host:
    description:
      - With O(command=repoint), the host (name, IP address or socket directory) the entry must point at, the new
        primary. Written as C(host=).
    type: str
  target_port:
    description:
      - With O(command=repoint), the port of the new primary. Written as C(port=).
    type: int
    default: 5432
  target_dbname:
    description:
      - With O(command=repoint), the database name on the new primary, written as C(dbname=). When omitted the
        entry's C(dbname=) is kept (and without one PgBouncer uses the entry's name).
    type: str
  reconnect:
    description:
      - With O(command=repoint), once C(SHOW DATABASES) confirms the new target, send C(RECONNECT database) so every
        server connection still open to the old server is closed as soon as it is released (a crash failover - the
        old server is dead). Unlike O(command=kill), the clients keep their connections.
    type: bool
    default: false
  resume:
    description:
      - With O(command=repoint), once C(SHOW DATABASES) confirms the new target (and after O(reconnect)), C(RESUME) the
        database if it is paused, so the planned failover's waiting transactions go to the new primary in the same task
        (one task instead of two on the critical path). When the verification fails nothing is resumed.
    type: bool
    default: false
  resume_when_writable:
    description:
      - With O(command=pause), once the pause has finished, leave a detached waiter on this host that asks the new
        primary (O(target_host), O(target_port)) every O(resume_when_writable.poll_interval) seconds whether it accepts
        writes (C(pg_is_in_recovery()) is false) and the moment it does, points the entry at it and resumes - the same
        repoint and checks as O(command=repoint) with O(resume=true). The clients wait only until the promotion, not
        until the runbook's next tasks. Needs O(database), O(config_file) and O(target_host).
      - A later O(command=repoint), O(command=resume) or O(command=pause) on the same entry first stops a waiter that
        has not acted, under the lock of its state file (the waiter holds that lock while it acts, so the two never act
        together), or reports what it did in RV(waiter). The waiter never acts after O(resume_when_writable.timeout)
        and never points anywhere but the target it was given. Not started in check mode.
    type: dict
    suboptions:
      login_user:
        description: PostgreSQL login the waiter uses to ask the new primary (the app's own login will do).
        type: str
        required: true
      login_password:
        description: Its password.
        type: str
      dbname:
        description: Database the waiter connects to; default O(target_dbname), else O(database).
        type: str
      timeout:
        description: Seconds after which the waiter gives up without acting.
        type: float
        default: 60
      poll_interval:
        description: Seconds between two questions to the new primary.
        type: float
        default: 0.05
      state_file:
        description: The waiter's state file; default C(CONFIG_FILE.DATABASE.waiter.json) beside O(config_file).
        type: path
  backup:
    description:
      - With O(command=repoint), save the old O(config_file) next to it (C(FILE.PID.DATE~)) before replacing it;
        RV(backup_file) names it.
    type: bool
    default: true
notes:
  - No maintained collection offers these admin commands. community.postgresql (4.2.0, the version shipped with
    the ansible 12 package this collection is tested with) has no PgBouncer module; its C(postgresql_query)
    could send a bare C(PAUSE) in autocommit mode, but with no timeout (C(PAUSE) blocks until the transactions
    end), no idempotence (C(RESUME) of a running database is an error) and no repoint, and with psycopg 3 it first
    sends C(SET datestyle), which the admin console rejects. Other collections ship roles that install and
    template PgBouncer (for example EnterpriseDB/edb-ansible C(setup_pgbouncer), C(manage_pgbouncer_databases)),
    not these runtime commands. Reference - the module list of community.postgresql 4.2.0 and
    U(https://www.pgbouncer.org/usage.html#admin-console).
  - The admin console speaks only the simple query protocol; the module sends each command on an autocommit
    psycopg2 session (no C(BEGIN)).
  - A C(RESUME) while a C(PAUSE) still waits resumes the database but leaves that C(PAUSE) unanswered, so on a timeout
    the module closes the waiting session first and resumes after.
  - C(KILL) also drops the clients of the database (their next query fails and they reconnect); use it only for a
    dead server (crash path), never in a planned switch.
  - Rewriting the file of a PgBouncer that configuration management templates is a temporary state; record the new
    primary in the inventory too, or the next template run points PgBouncer back at the old one.
seealso:
  - module: akig.runbooks.pg_promote
  - module: akig.runbooks.pg_fence
  - name: PgBouncer admin console
    description: SHOW, PAUSE, RESUME, RELOAD, KILL, WAIT_CLOSE.
    link: https://www.pgbouncer.org/usage.html#admin-console
  - name: PgBouncer configuration
    description: The [databases] section and %include.
    link: https://www.pgbouncer.org/config.html
"""

EXAMPLES = r"""
- name: Planned failover, step 1 - hold new transactions in PgBouncer once the running ones finish
  akig.runbooks.pgbouncer_admin:
    command: pause
    database: akig
    login_user: pgbouncer_admin
    login_password: "{{ vault_akig_pgbouncer_admin_password }}"
    timeout: 5
  no_log: true

- name: Or pause and let a waiter resume on the new primary the moment it is promoted (what RB-P1-003 does)
  akig.runbooks.pgbouncer_admin:
    command: pause
    database: akig
    config_file: /etc/pgbouncer/databases.ini
    target_host: 10.0.2.12
    target_port: 5432
    login_user: pgbouncer_admin
    login_password: "{{ vault_akig_pgbouncer_admin_password }}"
    timeout: 5
    resume_when_writable:
      login_user: akig_app
      login_password: "{{ vault_akig_pg_app_password }}"
      timeout: 60
  become: true
  no_log: true

# ... fence the old primary, promote the replica (akig.runbooks.pg_fence, akig.runbooks.pg_promote) ...

- name: Planned failover, step 2 - point the entry at the new primary
  akig.runbooks.pgbouncer_admin:
    command: repoint
    database: akig
    config_file: /etc/pgbouncer/databases.ini
    target_host: 10.0.2.12
    target_port: 5432
    login_user: pgbouncer_admin
    login_password: "{{ vault_akig_pgbouncer_admin_password }}"
  become: true
  no_log: true

- name: Or steps 2 and 3 in one task (what RB-P1-003 does, to keep its critical path short)
  akig.runbooks.pgbouncer_admin:
    command: repoint
    database: akig
    config_file: /etc/pgbouncer/databases.ini
    target_host: 10.0.2.12
    resume: true
    login_user: pgbouncer_admin
    login_password: "{{ vault_akig_pgbouncer_admin_password }}"
  become: true
  no_log: true

- name: Crash - point at the new primary, close the connections to the dead one as they are released, resume
  akig.runbooks.pgbouncer_admin:
    command: repoint
    database: akig
    config_file: /etc/pgbouncer/databases.ini
    target_host: 10.0.2.12
    reconnect: true
    resume: true
    login_user: pgbouncer_admin
    login_password: "{{ vault_akig_pgbouncer_admin_password }}"
  become: true
  no_log: true

- name: Planned failover, step 3 - let the waiting transactions through, to the new primary
  akig.runbooks.pgbouncer_admin:
    command: resume
    database: akig
    login_user: pgbouncer_admin
    login_password: "{{ vault_akig_pgbouncer_admin_password }}"
  no_log: true

- name: Crash - drop the connections to the dead primary after the repoint, then resume
  akig.runbooks.pgbouncer_admin:
    command: "{{ item }}"
    database: akig
    login_user: pgbouncer_admin
    login_password: "{{ vault_akig_pgbouncer_admin_password }}"
  loop: [kill, resume]
  no_log: true

- name: What does PgBouncer point at, who waits?
  akig.runbooks.pgbouncer_admin:
    command: show
    database: akig
    login_user: pgbouncer_admin
    login_password: "{{ vault_akig_pgbouncer_admin_password }}"
  register: pgbouncer_state
  no_log: true
"""

RETURN = r"""
waiter:
  description:
    - With O(resume_when_writable), the waiter started (C(status=waiting), C(pid), C(target), C(state_file)).
    - With a later O(command=repoint), O(command=resume) or O(command=pause), what the earlier pause's waiter had
      done - C(status) C(resumed) (with C(after_s), seconds from the pause to the resume, and its C(actions)),
      C(failed) (C(error)), C(expired), or C(cancelled) when this task stopped it before it acted.
  returned: when a waiter was started or found
  type: dict
  sample: {"status": "resumed", "target": "10.0.1.12:5432", "after_s": 1.42}
command:
  description: The command run.
  returned: always
  type: str
  sample: repoint
database:
  description: The database entry acted on; V(null) for every database.
  returned: always
  type: str
  sample: akig
actions:
  description: What the task did, or in check mode would do, in plain sentences.
  returned: always
  type: list
  elements: str
  sample:
    - pointed database akig at 10.0.2.12:5432 dbname=akig in /etc/pgbouncer/databases.ini (was 10.0.2.11:5432)
    - reloaded the configuration (RELOAD)
    - SHOW DATABASES confirms database akig -> 10.0.2.12:5432 dbname=akig
databases:
  description:
    - Every database entry of the PgBouncer after the task (the admin database left out), keyed by name -
      C(host), C(port), C(dbname) (C(SHOW DATABASES)), C(paused), C(disabled), C(pool_mode), C(pool_size),
      C(current_connections); summed over its pools C(clients_active), C(clients_waiting), C(servers_active),
      C(servers_idle), C(servers_used), C(servers_login); C(clients) (number of client connections) and
      C(servers) (each server connection's C(user), C(state), C(addr), C(port), C(close_needed)).
  returned: success
  type: dict
  sample:
    akig:
      host: 10.0.2.12
      port: 5432
      dbname: akig
      paused: false
      disabled: false
      pool_mode: null
      pool_size: 20
      current_connections: 2
      clients_active: 4
      clients_waiting: 0
      servers_active: 1
      servers_idle: 1
      servers_used: 0
      servers_login: 0
      clients: 4
      servers:
        - {user: akig, state: active, addr: 10.0.2.12, port: 5432, close_needed: false}
paused:
  description: Whether O(database) is paused after the task; V(null) without O(database).
  returned: success
  type: bool
  sample: true
seconds:
  description: Seconds C(PAUSE) or C(WAIT_CLOSE) took (or waited before the timeout).
  returned: when a pause or wait_close was sent
  type: float
  sample: 0.21
previous:
  description: With O(command=repoint), where the running PgBouncer pointed the entry before the task.
  returned: when command is repoint and the entry was found
  type: dict
  sample: {host: 10.0.2.11, port: 5432, dbname: akig}
target:
  description: With O(command=repoint), the host, port and dbname the entry points at in O(config_file) after the task.
  returned: when command is repoint and the entry was found
  type: dict
  sample: {host: 10.0.2.12, port: 5432, dbname: akig}
config_file:
  description: With O(command=repoint), the file rewritten (or checked).
  returned: when command is repoint and the entry was found
  type: str
  sample: /etc/pgbouncer/databases.ini
backup_file:
  description: The backup of the old O(config_file), when one was written.
  returned: when command is repoint and the file was rewritten with O(backup=true)
  type: str
  sample: /etc/pgbouncer/databases.ini.2211.2026-11-30@17:02:11~
error_kind:
  description: Why the admin console could not be reached - V(auth), V(refused), V(timeout), V(network), V(name),
    V(database), V(closed) or V(other).
  returned: when the login failed
  type: str
  sample: refused
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.akig.runbooks.plugins.module_utils.pgbouncer import (
    COMMANDS,
    HAS_PSYCOPG2,
    PSYCOPG2_IMPORT_ERROR,
    PgBouncerError,
    run,
)

ARGUMENT_SPEC = dict(
    command=dict(type="str", required=True, choices=list(COMMANDS)),
    database=dict(type="str"),
    login_host=dict(type="str", default="127.0.0.1"),
    login_port=dict(type="int", default=6432),
    login_user=dict(type="str", default="pgbouncer"),
    login_password=dict(type="str", no_log=True),
    connect_timeout=dict(type="int", default=3),
    timeout=dict(type="float", default=10),
    config_file=dict(type="path"),
    target_host=dict(type="str"),
    target_port=dict(type="int", default=5432),
    target_dbname=dict(type="str"),
    backup=dict(type="bool", default=True),
    reconnect=dict(type="bool", default=False),
    resume=dict(type="bool", default=False),
    resume_when_writable=dict(type="dict", options=dict(
        login_user=dict(type="str", required=True),
        login_password=dict(type="str", no_log=True),
        dbname=dict(type="str"),
        timeout=dict(type="float", default=60),
        poll_interval=dict(type="float", default=0.05),
        state_file=dict(type="path"),
    )),
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if not HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=PSYCOPG2_IMPORT_ERROR)

    def write_file(path: str, text: str) -> str | None:
        """Replace ``path`` atomically (same directory, same owner and mode); return the backup's path."""
        backup = module.backup_local(path) if module.params["backup"] else None
        handle, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=os.path.dirname(path) or ".")
        try:
            with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            module.atomic_move(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return backup or None

    try:
        result = run(module.params, check_mode=module.check_mode, write_file=write_file)
    except PgBouncerError as exc:
        exc.result.pop("diff", None)
        module.fail_json(msg=exc.msg, **exc.result)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
