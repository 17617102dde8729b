#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pm2
short_description: Start, stop, restart, reload or delete a Node.js app managed by pm2
version_added: 0.1.0
author: AKIG Engineering Team (@akig)
description:
  - Manages one app of a L(pm2,https://pm2.keymetrics.io/) daemon, identified by its pm2 name, such as the
    AKIG backend C(akig-backend) (cluster mode, port 4000).
  - Reads C(pm2 jlist), works out what the requested O(state) needs, runs the pm2 commands unless in
    check mode, and then waits until every instance of the app is C(online) with a pid (and, after a
    restart or reload, a new pid) and stays so for one second, so a crash at boot is reported as a
    failure instead of a success.
  - An instance that pm2 reports as C(online) with pid C(0) (what pm2 shows after giving up on a
    crash-looping cluster worker) counts as not running.
  - An app that pm2 does not know yet is started from O(ecosystem) (the app called O(name) in that file)
    or from O(script). O(exec_mode), O(instances) and O(max_memory_restart) apply at that start; pm2
    gets them through a short generated ecosystem file that loads O(ecosystem) and overrides them.
  - The pm2 daemon of O(pm2_home) is looked for through its C(pm2.pid) file, so a read (check mode, or
    O(state=absent) of an unknown app) never starts a daemon.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Changes nothing and reports the plan in RV(actions); RV(processes) shows the current state.
  diff_mode:
    support: full
    details: Status and pid per instance and max_memory_restart, before and after. Never the environment.
  platform:
    platforms: posix
requirements:
  - pm2 (tested with pm2 6) and Node.js on the managed host.
  - runuser (util-linux) for O(user).
options:
  name:
    description:
      - Name of the app in pm2 (the C(name) of the app in the ecosystem file), for example V(akig-backend).
      - One app; V(all) and pm_ids are not accepted.
    type: str
    required: true
  state:
    description:
      - V(started) makes sure every instance runs. An app that is already online is left alone (not changed).
        Stopped or errored instances are started or restarted; running instances are not touched.
        An app pm2 does not know is started from O(ecosystem) or O(script).
      - V(stopped) stops the app (C(pm2 stop)); an app already stopped is not changed.
      - V(restarted) always restarts the app (C(pm2 restart)); O(parallel) restarts all its instances at once.
      - V(reloaded) always reloads the app (C(pm2 reload)), which in cluster mode replaces the instances one at a
        time without downtime. In fork mode pm2 cannot do that; see O(reload_fallback). An app that is not
        running is restarted.
      - V(restarted) and V(reloaded) start an app pm2 does not know from O(ecosystem) or O(script) when given.
      - V(absent) deletes the app from pm2 (C(pm2 delete)); an unknown app is not an error.
      - V(stopped), V(restarted) and V(reloaded) fail on an app pm2 does not know, listing the apps it knows.
    type: str
    choices: [started, stopped, restarted, reloaded, absent]
    default: started
  ecosystem:
    description:
      - Path of a pm2 ecosystem file (C(.config.js), C(.config.cjs), C(.json), C(.yml)) that defines the app O(name),
        used to start the app when pm2 does not know it yet. pm2 runs from the directory of the file.
      - Ignored when pm2 knows the app; the running app keeps the settings it was started with.
    type: path
  script:
    description:
      - Path of the script to start as O(name) when pm2 does not know the app; an alternative to O(ecosystem)
        for a simple app. pm2 runs from the directory of the script.
    type: path
  exec_mode:
    description:
      - V(cluster) (pm2's load balancer, needed for zero-downtime reloads) or V(fork).
      - Applies when the module starts an app pm2 does not know; overrides the ecosystem file. When the running
        app differs the module warns and leaves it (delete it with O(state=absent) to change it).
      - When not given, the ecosystem file or pm2 decides (pm2 uses cluster mode when O(instances) is given).
    type: str
    choices: [fork, cluster]
  instances:
    description:
      - Number of instances when the module starts an app pm2 does not know; V(0) is one per CPU,
        V(-1) one per CPU but one. Overrides the ecosystem file.
      - When the running app has another number of instances the module warns and leaves it.
    type: int
  max_memory_restart:
    description:
      - Memory size above which pm2 restarts an instance, as pm2 writes it, for example V(600M), V(1G), V(512000K)
        or a number of bytes.
      - Applied when the module starts the app. When a running app has a different value, O(state=restarted) and
        O(state=reloaded) apply it (and show it in the diff); O(state=started) only warns.
    type: str
  env:
    description:
      - Environment variables for the app. They reach pm2 through the environment of the pm2 command, never its
        command line, and apply when the module starts an app pm2 does not know, or with O(update_env=true).
      - The values may be secrets and are never logged or returned. Ansible hides every occurrence of each value
        in the output of the task, so a short non-secret value such as a port number also hides numbers that
        contain it; prefer the ecosystem file for non-secret settings.
    type: dict
  pm2_bin:
    description:
      - The pm2 executable, a path or a name looked up on E(PATH) (and in C(/usr/local/bin), C(/usr/bin), C(/bin)).
      - When it cannot be found the module fails before it does anything.
    type: path
    default: pm2
  pm2_home:
    description:
      - The C(PM2_HOME) of the daemon that manages the app.
      - Defaults to C(~/.pm2) of O(user), or of the user the module runs as.
    type: path
  user:
    description:
      - OS user that owns the pm2 daemon. When the module runs as root every pm2 command runs as this user
        through C(runuser), so the files pm2 writes stay that user's.
      - As another user than root the module fails unless it already runs as O(user); use C(become=true).
    type: str
  wait_online:
    description:
      - After starting, restarting or reloading, wait until every instance of the app is C(online) with a pid (after
        a restart or reload, a new pid) and has stayed so for one second. The task fails when that does not happen
        within O(timeout), or at once when pm2 gives up on an instance (status C(errored)).
      - Stopping and deleting always wait for pm2 to confirm.
    type: bool
    default: true
  stable_seconds:
    description:
      - With O(wait_online), how long every instance must stay C(online) with the same pid and restart count
        before the task returns (a crash at boot shows up as a restart within this time).
      - The window is watched in C(/proc) on the host (each instance's pid must stay a live process, and pm2 gives a
        restarted instance a new pid), not with more C(pm2 jlist) runs, each of which costs a Node.js start.
      - Set it lower (or V(0)) when a health check follows the task anyway, as in a failover where every second
        of the restart counts; it must be less than O(timeout).
    type: float
    default: 1.0
  timeout:
    description:
      - Seconds allowed for each pm2 command and for the whole wait after the action.
    type: int
    default: 60
  update_env:
    description:
      - Pass C(--update-env) on restart and reload, so the app gets O(env) (and the rest of the environment of the pm2
        command) instead of the environment it was started with.
      - With O(state=started), an online app whose environment differs from O(env) is reloaded (cluster mode) or
        restarted (fork mode) to apply it; without O(update_env) the module only warns, naming the variables.
    type: bool
    default: false
  reload_fallback:
    description:
      - What O(state=reloaded) does with an app in fork mode, which pm2 cannot reload without downtime.
      - V(true) restarts it instead and says so in RV(actions); V(false) fails without touching it.
    type: bool
    default: true
  parallel:
    description:
      - With O(state=restarted) (and the restart that O(state=reloaded) falls back to) on an app with more than one
        instance, restart every instance at once, one C(pm2 restart <pm_id>) per instance started together, instead
        of one C(pm2 restart <name>). The module then waits as usual for every instance to be online with a new pid.
      - "Why: pm2 restarts the instances of an app with at most two instances one at a time: it stops one, boots its
        replacement, waits for it to be ready, and only then stops the next, so a restart of a 2-instance cluster
        takes about two boot times."
      - At once, no instance serves while the new ones boot. Use it only when the old instances cannot serve anyway,
        for example when a failover repoints the database (RB-P1-003's direct repoint); for a restart with the app
        available, leave it V(false) or use O(state=reloaded).
      - Runs the per-instance commands with the arguments C(pm2 restart <name>) would get (O(update_env),
        O(max_memory_restart)); a failure of any of them fails the task, naming the instance. No effect with one
        instance, on other states, or on a reload in cluster mode (which pm2 does one instance at a time, without
        downtime).
    type: bool
    default: false
    version_added: 0.3.0
notes:
  - The module runs pm2 on the managed host; it needs Node.js there. Run it with the same O(pm2_home) and O(user)
    as the daemon that runs the app (the AKIG servers use a service account, not root's C(~/.pm2)).
  - pm2 keeps its own reload lock; two reloads of one daemon within 30 seconds of each other fail in pm2 unless the
    first has finished.
seealso:
  - name: pm2 process management
    description: pm2 documentation on start, restart, reload and ecosystem files.
    link: https://pm2.keymetrics.io/docs/usage/process-management/
  - module: akig.runbooks.http_health
"""

EXAMPLES = r"""
- name: Make sure the AKIG backend runs, starting it from its ecosystem file if pm2 lost it
  akig.runbooks.pm2:
    name: akig-backend
    ecosystem: /srv/akig/current/ecosystem.config.js
    user: akig
    pm2_home: /home/akig/.pm2
  become: true

- name: Reload the backend with zero downtime and a higher memory limit
  akig.runbooks.pm2:
    name: akig-backend
    state: reloaded
    max_memory_restart: 800M
    user: akig
  become: true
  register: __node_restart_reload

- name: Restart the worker with a rotated SendGrid key (the value never reaches logs)
  akig.runbooks.pm2:
    name: akig-worker
    state: restarted
    update_env: true
    env:
      SENDGRID_API_KEY: "{{ vault_akig_sendgrid_api_key }}"
    user: akig
  become: true
  no_log: true

- name: Restart both backend instances at once after a failover repointed DATABASE_URL (they cannot serve anyway)
  akig.runbooks.pm2:
    name: akig-backend
    state: restarted
    parallel: true
    update_env: true
    env:
      DATABASE_URL: "{{ __rb_database_url }}"
    stable_seconds: 0.3
    user: akig
  become: true
  no_log: true

- name: Start a one-off script in fork mode under a private pm2 home
  akig.runbooks.pm2:
    name: akig-migrate-probe
    script: /srv/akig/current/backend/scripts/probe.js
    exec_mode: fork
    pm2_bin: /srv/akig/node_modules/.bin/pm2
    pm2_home: /srv/akig/pm2

- name: Show what a restart would do, without doing it
  akig.runbooks.pm2:
    name: akig-backend
    state: restarted
    user: akig
  become: true
  check_mode: true
  register: __node_restart_plan

- name: Remove the probe again
  akig.runbooks.pm2:
    name: akig-migrate-probe
    state: absent
    pm2_home: /srv/akig/pm2
"""

RETURN = r"""
actions:
  description:
    - What the task did, in plain sentences; in check mode, what it would do (the plan). Says when a reload fell back to a
      restart, when an app was started from O(ecosystem) or O(script), and how long the app took to come online.
  returned: always
  type: list
  elements: str
  sample:
    - Reloaded akig-backend (2 instances, cluster mode) with zero downtime, one cluster instance at a time.
    - "akig-backend is online 1.3 s after the pm2 command: instance 0 pid 48211, instance 1 pid 48240."
name:
  description: The app name.
  returned: always
  type: str
  sample: akig-backend
pm2_home:
  description: The C(PM2_HOME) the module worked with.
  returned: always
  type: str
  sample: /home/akig/.pm2
processes:
  description: The instances of the app after the task (before it in check mode), ordered by instance number.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: App name.
      type: str
    pm_id:
      description: pm2 process id.
      type: int
    pid:
      description: OS pid, V(0) when not running.
      type: int
    status:
      description: pm2 status (C(online), C(stopped), C(errored), C(launching), C(stopping), C(waiting restart)).
      type: str
    running:
      description:
        - Whether the instance really runs, checked on the host - V(false) for a C(online) instance whose pid has
          exited (pm2 lists a cluster worker that died before it was ready as C(online) until its next restart)
          or is V(0).
      type: bool
    restarts:
      description: Restart count kept by pm2.
      type: int
    memory_bytes:
      description: Resident memory in bytes.
      type: int
    cpu:
      description: CPU use in percent.
      type: float
    uptime_s:
      description: Seconds since the instance started (from pm2's C(pm_uptime)); V(0) when not running.
      type: int
    exec_mode:
      description: V(cluster) or V(fork).
      type: str
    instance:
      description: Instance number (C(NODE_APP_INSTANCE)).
      type: int
  sample:
    - name: akig-backend
      pm_id: 0
      pid: 48211
      status: online
      running: true
      restarts: 3
      memory_bytes: 61210624
      cpu: 0.4
      uptime_s: 12
      exec_mode: cluster
      instance: 0
all_processes:
  description: Every app of the pm2 daemon, same fields as RV(processes). Empty when no daemon runs.
  returned: always
  type: list
  elements: dict
elapsed_s:
  description: Seconds from the first pm2 command to the end of the wait; V(0) when nothing was done.
  returned: always
  type: float
  sample: 2.41
online_after_s:
  description: Seconds from the first pm2 command until every instance was online with its final pid; V(null) when the
    module did not start anything or did not wait.
  returned: always
  type: float
  sample: 1.32
diff:
  description: With C(--diff), the status and pid of each instance and max_memory_restart before and after.
  returned: when diff mode is on
  type: dict
  sample:
    before:
      status: [online, online]
      pids: [48011, 48040]
      max_memory_restart: 600M
    after:
      status: [online, online]
      pids: [48211, 48240]
      max_memory_restart: 800M
"""

from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.akig.runbooks.plugins.module_utils.pm2 import STATES, Pm2Error, run

ARGUMENT_SPEC: Dict[str, Dict[str, Any]] = dict(
    name=dict(type="str", required=True),
    state=dict(type="str", default="started", choices=list(STATES)),
    ecosystem=dict(type="path"),
    script=dict(type="path"),
    exec_mode=dict(type="str", choices=["fork", "cluster"]),
    instances=dict(type="int"),
    max_memory_restart=dict(type="str"),
    env=dict(type="dict", no_log=True),
    pm2_bin=dict(type="path", default="pm2"),
    pm2_home=dict(type="path"),
    user=dict(type="str"),
    wait_online=dict(type="bool", default=True),
    timeout=dict(type="int", default=60),
    stable_seconds=dict(type="float", default=1.0),
    update_env=dict(type="bool", default=False),
    reload_fallback=dict(type="bool", default=True),
    parallel=dict(type="bool", default=False),
)

MUTUALLY_EXCLUSIVE = [("ecosystem", "script")]


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, mutually_exclusive=MUTUALLY_EXCLUSIVE, supports_check_mode=True)
    try:
        result = run(module.params, check_mode=module.check_mode)
    except Pm2Error as exc:
        for warning in exc.result.pop("warnings", []):
            module.warn(warning)
        module.fail_json(msg=exc.msg, **exc.result)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
