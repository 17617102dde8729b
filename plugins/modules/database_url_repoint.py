#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: database_url_repoint
short_description: Point the DATABASE_URL of an AKIG env file at another PostgreSQL host and port, atomically, with a backup
version_added: 0.1.0
author: AKIG Engineering Team (@akig)
description:
  - Reads the env file O(path) on the backend host, points the host and port of every O(key) line at O(host) and
    O(port), and keeps everything else of the file as it is (user, password, database, query, quotes, C(export),
    comments, the other lines).
  - The file is parsed as the AKIG backend parses it (C(export), quotes, comments, IPv6 literals, a raw C(@) or
    percent-encoding in the password). A file without an O(key) line, or a line that cannot be repointed with
    certainty, fails the task before anything changes; the message names the line and the cause, never any part of
    the URL.
  - When the file changes, and only then, the current file is backed up next to it (C(<path>.<pid>.<date>@<time>~),
    as C(ansible.builtin.copy) does with C(backup=true)), then O(maintenance_file) is created (the app refuses writes
    with its maintenance message while it exists), then the new content is written to a temporary file in the
    same directory, flushed to disk, given the mode and owner of O(path), and renamed over it (readers see the old
    file or the new one, never half).
  - One task instead of reading the file, checking it, touching the maintenance file, reading the owner and mode and
    writing the file. RB-P1-003's direct repoint runs it on every backend host while the app cannot write.
  - With O(restart), the same task also restarts those pm2 apps so they read the new file (every instance of an app
    at once, as M(akig.runbooks.pm2) does with O(akig.runbooks.pm2#module:parallel=true), through pm2's stable
    window), waits until O(health_url) answers 200, and then removes O(maintenance_file) - the whole repoint of a
    backend host in one module run instead of three (each run of a module is ~0.3-0.5 s on a failover's critical
    path). pm2 is asked for its process list first, so an app pm2 does not know, or a pm2 daemon that does not run,
    fails the task before the file or the maintenance file is touched.
  - A process of O(restart) that started before the file last changed still runs with the previous C(DATABASE_URL)
    (a run that died between the rewrite and the restart); when the file already points at O(host) and O(port), such
    processes are restarted all the same (behind O(maintenance_file)), and the task reports a change.
  - When the restart or the health gate fails, O(maintenance_file) is kept (the app goes on refusing writes with its
    maintenance message) and the task fails, saying what to check; running it again restarts what is still older
    than the file.
  - Nothing secret is returned; the result gives the line numbers and the host and port each line pointed at.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads and checks the file and says whether it would change; writes nothing, creates no maintenance file.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  path:
    description:
      - The backend's env file, for example C(/srv/akig/shared/.env) (C(akig_backend_env_file)).
    type: path
    required: true
  host:
    description:
      - The new primary's host name or address, as the app should reach it (an IPv6 address without brackets).
    type: str
    required: true
  port:
    description:
      - The new primary's port.
    type: int
    default: 5432
  key:
    description:
      - The variable holding the PostgreSQL URL.
    type: str
    default: DATABASE_URL
  backup:
    description:
      - Keep the current file next to it before writing the new one.
    type: bool
    default: true
  maintenance_file:
    description:
      - A file to create (mode 0644) before the env file changes, so the app refuses writes with its maintenance
        message while it restarts; nothing is created when the file is already pointed at O(host) and O(port).
      - The caller removes it once the app is healthy again; with O(restart), this task removes it once the restarted
        app answers 200 on O(health_url) (or, without O(health_url), once pm2's stable window is over).
    type: path
  restart:
    description:
      - pm2 apps to restart once the file points at O(host) and O(port) (the file changed, or a process of the app
        started before the file last changed). Every instance of an app is restarted at once.
      - Empty (the default) restarts nothing; the caller restarts the app.
    type: list
    elements: str
    default: []
  pm2_bin:
    description:
      - The pm2 executable, a path or a name looked up in PATH (O(restart) only).
    type: path
    default: pm2
  pm2_home:
    description:
      - The C(PM2_HOME) of the daemon that runs the apps of O(restart) (default C(~/.pm2) of the user running the task).
    type: path
  restart_timeout:
    description:
      - Seconds each app of O(restart) has to come back online through its stable window.
    type: int
    default: 30
  stable_seconds:
    description:
      - Seconds every restarted instance must stay up (the same pid, watched in C(/proc)) before it counts as online.
    type: float
    default: 1.0
  health_url:
    description:
      - An C(http(s)://) URL on this host that answers 200 once the restarted app serves again, for example
        C(http://127.0.0.21:4000/api/health); polled after the restart, before O(maintenance_file) is removed.
      - Needs O(restart).
    type: str
  health_timeout:
    description:
      - Seconds O(health_url) has to answer 200 (each request gets at most the time left, and 2 seconds).
    type: float
    default: 30
  health_interval:
    description:
      - Seconds between two requests to O(health_url).
    type: float
    default: 0.2
  validate_certs:
    description:
      - Verify the TLS certificate of an C(https) O(health_url).
    type: bool
    default: true
seealso:
  - module: akig.runbooks.pm2
  - module: akig.runbooks.app_maintenance
"""

EXAMPLES = r"""
- name: Point DATABASE_URL at the new primary, the app in maintenance mode first
  akig.runbooks.database_url_repoint:
    path: "{{ akig_backend_env_file }}"
    host: db-2.akig.internal
    port: 5432
    maintenance_file: "{{ akig_maintenance_file }}"
  register: repoint

- name: Restart the backend when the file changed
  akig.runbooks.pm2:
    name: akig-backend
    state: restarted
    update_env: true
  when: repoint.changed

- name: The whole repoint of a pm2 host in one task - file, restart, health gate, maintenance left
  akig.runbooks.database_url_repoint:
    path: "{{ akig_backend_env_file }}"
    host: db-2.akig.internal
    port: 5432
    maintenance_file: "{{ akig_maintenance_file }}"
    restart: [akig-backend]
    pm2_home: /home/akig/.pm2
    stable_seconds: 0.3
    health_url: "{{ akig_backend_url }}/api/health"
"""

RETURN = r"""
lines:
  description: The line numbers (from 1) of the O(key) lines.
  returned: success
  type: list
  elements: int
  sample: [3]
before:
  description: Where each O(key) line pointed before (C(port) is V(null) when the URL had none).
  returned: success
  type: list
  elements: dict
  sample: [{"line": 3, "host": "db-1.akig.internal", "port": 5432}]
host:
  description: The host the lines point at now.
  returned: success
  type: str
port:
  description: The port the lines point at now.
  returned: success
  type: int
backup_file:
  description: The copy of the previous file, when one was made.
  returned: changed and O(backup)
  type: str
  sample: /srv/akig/shared/.env.4242.2026-12-01@13:40:02~
maintenance:
  description: Whether O(maintenance_file) exists after the task (created by it, or there before; V(false) once a
    restart with O(restart) removed it).
  returned: when O(maintenance_file) is given
  type: bool
restarted:
  description: The apps of O(restart) that were restarted, each with its processes after the restart (name, pm_id,
    pid, status; no environment), the pm2 commands run, and seconds until online.
  returned: when O(restart) is given
  type: list
  elements: dict
  sample: [{"name": "akig-backend", "online_after_s": 1.38, "processes": [{"name": "akig-backend", "pm_id": 0, "pid": 4242, "status": "online"}]}]
stale_processes:
  description: The processes of O(restart) that had started before the file last changed (name, pm_id, pid), restarted
    although the file already pointed at O(host) and O(port).
  returned: when O(restart) is given
  type: list
  elements: dict
healthy:
  description: Whether O(health_url) answered 200 after the restart; V(null) when it was not asked.
  returned: when O(restart) is given
  type: bool
health_attempts:
  description: Requests sent to O(health_url).
  returned: when O(health_url) was polled
  type: int
health_waited_s:
  description: Seconds from the first request to O(health_url) to its 200 (or to giving up).
  returned: when O(health_url) was polled
  type: float
msg:
  description: What the task did or would do, in one sentence.
  returned: always
  type: str
"""

import os
import shutil
import time
from typing import Any, Dict, List, Optional

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.akig.runbooks.plugins.module_utils import pm2
from ansible_collections.akig.runbooks.plugins.module_utils.atomic_write import replace_atomically
from ansible_collections.akig.runbooks.plugins.module_utils.database_url import DatabaseUrlError, repoint_env
from ansible_collections.akig.runbooks.plugins.module_utils.http_health import HealthError, validate_url, wait_healthy

ARGUMENT_SPEC: Dict[str, Dict[str, Any]] = dict(
    path=dict(type="path", required=True),
    host=dict(type="str", required=True),
    port=dict(type="int", default=5432),
    key=dict(type="str", default="DATABASE_URL", no_log=False),
    backup=dict(type="bool", default=True),
    maintenance_file=dict(type="path"),
    restart=dict(type="list", elements="str", default=[]),
    pm2_bin=dict(type="path", default="pm2"),
    pm2_home=dict(type="path"),
    restart_timeout=dict(type="int", default=30),
    stable_seconds=dict(type="float", default=1.0),
    health_url=dict(type="str"),
    health_timeout=dict(type="float", default=30),
    health_interval=dict(type="float", default=0.2),
    validate_certs=dict(type="bool", default=True),
)


def _backup(path: str) -> str:
    """A copy of ``path`` next to it, named as ansible.builtin.copy's backup (``<path>.<pid>.<date>@<time>~``),
    with the same mode, owner and times; without the chattr attributes copy's backup also reads (lsattr)."""
    dest = "%s.%s.%s" % (path, os.getpid(), time.strftime("%Y-%m-%d@%H:%M:%S~", time.localtime()))
    shutil.copy2(path, dest)
    stat = os.stat(path)
    os.chown(dest, stat.st_uid, stat.st_gid)
    return dest


def _restart_input_error(p: Dict[str, Any]) -> Optional[str]:
    """What is wrong with the restart and health options, before anything is read or changed (None: nothing)."""
    names = [name.strip() for name in p["restart"]]
    if any(not name for name in names):
        return "restart lists an empty app name; give the pm2 app names (for example akig-backend)"
    if len(set(names)) != len(names):
        return "restart lists an app twice (%s); give each pm2 app once" % ", ".join(sorted({n for n in names if names.count(n) > 1}))
    if p["health_url"] and not names:
        return "health_url gates the app's return after the restart: give it with restart"
    if p["health_url"]:
        try:
            validate_url(p["health_url"])
        except HealthError as exc:
            return str(exc)
    if p["health_timeout"] <= 0:
        return "health_timeout must be a positive number of seconds, got %s" % p["health_timeout"]
    if p["health_interval"] < 0:
        return "health_interval must be 0 or more seconds, got %s" % p["health_interval"]
    return None


def _prepare_restarts(p: Dict[str, Any]) -> List[pm2.Prepared]:
    """pm2's plan to restart each app of ``restart`` (one process list read for all), changing nothing;
    raises Pm2Error for an app pm2 does not know, a daemon that does not run, bad pm2 options."""
    preps: List[pm2.Prepared] = []
    listing = None
    for name in p["restart"]:
        prep = pm2.prepare(dict(name=name.strip(), state="restarted", parallel=True, pm2_bin=p["pm2_bin"],
                                pm2_home=p["pm2_home"], timeout=p["restart_timeout"], stable_seconds=p["stable_seconds"]),
                           listing=listing)
        listing = (True, prep.before_list)  # pm2 knew the app, so its daemon runs
        preps.append(prep)
    return preps


def _stale(preps: List[pm2.Prepared], changed_at: float) -> List[Dict[str, Any]]:
    """The running processes that started before the env file last changed: they still have the previous URL."""
    out = []
    for prep in preps:
        for entry in prep.before:
            started_ms = (entry.get("pm2_env") or {}).get("pm_uptime")
            if pm2.is_running(entry) and isinstance(started_ms, (int, float)) and 0 < started_ms / 1000.0 < changed_at:
                summary = pm2.summarize(entry, time.time())
                out.append({key: summary[key] for key in ("name", "pm_id", "pid")})
    return out


def _restart_summary(out: Dict[str, Any]) -> Dict[str, Any]:
    return {key: out.get(key) for key in ("name", "actions", "processes", "online_after_s", "elapsed_s")}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    path = p["path"]
    problem = _restart_input_error(p)
    if problem:
        module.fail_json(msg="%s. Nothing was changed." % problem)
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            text = handle.read()
    except FileNotFoundError:
        module.fail_json(msg="The env file %s does not exist (check akig_backend_env_file). Nothing was changed." % path)
    except (OSError, UnicodeDecodeError) as exc:
        module.fail_json(msg="The env file %s cannot be read (%s). Nothing was changed." % (path, exc.__class__.__name__))
    try:
        plan = repoint_env(text, p["host"], p["port"], p["key"])
    except DatabaseUrlError as exc:
        module.fail_json(msg="%s: %s" % (path, exc))
    result: Dict[str, Any] = dict(changed=plan["changed"], lines=plan["lines"], before=plan["before"], host=plan["host"],
                                  port=plan["port"])
    target = "%s:%s" % (plan["host"], plan["port"])
    maintenance = p["maintenance_file"]
    if maintenance:
        result["maintenance"] = os.path.exists(maintenance)

    # pm2 is asked before anything changes: an app it does not know must not leave a rewritten file behind
    preps: List[pm2.Prepared] = []
    if p["restart"]:
        try:
            preps = _prepare_restarts(p)
        except pm2.Pm2Error as exc:
            module.fail_json(msg="%s. Nothing was changed (neither %s nor the maintenance file)." % (exc.msg.rstrip("."), path),
                             **{**result, "changed": False})
        result.update(restarted=[], stale_processes=[] if plan["changed"] else _stale(preps, os.stat(path).st_mtime),
                      healthy=None)
    names = ", ".join(prep.req.name for prep in preps)
    restart_due = bool(preps) and (plan["changed"] or bool(result["stale_processes"]))
    if not plan["changed"] and not restart_due:
        module.exit_json(msg="%s already points %s at %s%s: nothing to do." % (
            path, p["key"], target, " and %s started after it last changed" % names if preps else ""), **result)
    result["changed"] = True
    if plan["changed"]:
        doing = "point %s of %s (line %s) at %s" % (p["key"], path, ", ".join(str(n) for n in plan["lines"]), target)
    else:
        doing = "restart %s, whose process(es) %s started before %s last changed (it already points %s at %s)" % (
            names, ", ".join("pid %s" % e["pid"] for e in result["stale_processes"]), path, p["key"], target)
    if module.check_mode:
        then = ""
        if preps and plan["changed"]:
            then = ", then restart %s%s" % (names, " and leave maintenance once %s answers 200" % p["health_url"]
                                            if p["health_url"] and maintenance else "")
        module.exit_json(msg="Would %s%s%s." % (doing, ", the app in maintenance mode first" if maintenance else "", then),
                         **result)

    if plan["changed"] and p["backup"]:
        try:
            result["backup_file"] = _backup(path)
        except OSError as exc:
            module.fail_json(msg="Could not back up %s (%s); it is unchanged." % (path, exc), **{**result, "changed": False})
    if maintenance and not result["maintenance"]:
        try:
            fd = os.open(maintenance, os.O_WRONLY | os.O_CREAT, 0o644)
            os.close(fd)
        except OSError as exc:
            module.fail_json(msg="Could not create the maintenance file %s (%s). The env file is unchanged." % (maintenance, exc),
                             **{**result, "changed": False})
        result["maintenance"] = True
    if plan["changed"]:
        try:
            replace_atomically(path, plan["text"])
        except OSError as exc:
            module.fail_json(msg="Could not replace %s (%s); it is unchanged%s." % (
                path, exc.__class__.__name__, ", its copy is %s" % result["backup_file"] if result.get("backup_file") else ""),
                **result)
    done = "Pointed %s of %s (line %s) at %s" % (p["key"], path, ", ".join(str(n) for n in plan["lines"]), target) \
        if plan["changed"] else "%s already pointed %s at %s" % (path, p["key"], target)
    if not preps:
        module.exit_json(msg="%s%s." % (done, ", the app in maintenance mode" if result.get("maintenance") else ""), **result)

    kept = (" %s is kept, so the app goes on refusing writes with its maintenance message." % maintenance
            if result.get("maintenance") else "")
    for prep in preps:
        try:
            out = pm2.apply(prep)
        except pm2.Pm2Error as exc:
            result["restarted"].append(_restart_summary(dict(exc.result, name=prep.req.name)))
            module.fail_json(msg="%s, but restarting %s failed: %s.%s Check pm2 (pm2 logs %s), then run the task again: it "
                                 "restarts the processes older than the file." % (
                                     done, prep.req.name, exc.msg.rstrip("."), kept, prep.req.name), **result)
        for warning in out.get("warnings", []):
            module.warn(warning)
        result["restarted"].append(_restart_summary(out))
    restarted = "; ".join(action for out in result["restarted"] for action in out["actions"] or [])
    gate = ""
    if p["health_url"]:
        healthy, status, error, attempts, waited = wait_healthy(p["health_url"], p["health_timeout"], p["health_interval"],
                                                                p["validate_certs"])
        result.update(healthy=healthy, health_attempts=attempts, health_waited_s=round(waited, 3))
        if not healthy:
            module.fail_json(msg="%s and restarted %s, but %s did not answer 200 within %s s (%d request(s); last: %s).%s "
                                 "Check the backend (pm2 logs, its DATABASE_URL), then run the task again." % (
                                     done, names, p["health_url"], p["health_timeout"], attempts,
                                     "HTTP %s" % status if status is not None else error or "no answer", kept), **result)
        gate = "; %s answered 200 after %d request(s), %.2f s" % (p["health_url"], attempts, waited)
    if maintenance and result["maintenance"]:
        try:
            os.unlink(maintenance)
        except FileNotFoundError:
            pass
        except OSError as exc:
            module.fail_json(msg="%s and the app is back, but the maintenance file %s could not be removed (%s): remove it "
                                 "(akig.runbooks.app_maintenance state=absent)." % (done, maintenance, exc), **result)
        result["maintenance"] = False
    left = "; %s removed: the app writes again" % maintenance if maintenance else ""
    module.exit_json(msg="%s. %s%s%s." % (done, restarted.rstrip("."), gate, left), **result)


if __name__ == "__main__":
    main()
