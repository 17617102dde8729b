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
  - With O(when_writable), the task is run B(before) the promotion of O(host) (RB-P1-003 runs it on every backend
    host of a planned direct switch, before the old primary is fenced). It checks the file, creates
    O(maintenance_file), and leaves a small detached process on this host (the waiter). The waiter asks pm2 for its
    process list while the switch runs (an app pm2 does not know - the waiter removes the maintenance file and
    changes nothing, and the repoint task later fails with pm2's message), then logs in to
    O(host) and O(port) with the credentials of the file's own C(DATABASE_URL) and asks every
    O(when_writable.poll_interval) seconds whether it accepts writes (C(pg_is_in_recovery()) is false). The moment it
    does, the waiter does the repoint above - backup, rewrite, restart of O(restart), health gate, maintenance left -
    so the app restarts right after the promotion instead of seconds later, when the repoint task's play comes. It
    never acts after O(when_writable.timeout) and never points the file anywhere but O(host) and O(port); until the
    node is promoted the file is unchanged, so a switch that does not happen leaves the app on the old primary.
  - Any later run of this module on the same O(path) (O(waiter_state_file)) first takes the waiter. One that has not
    acted is stopped; one that is acting is waited for (at most O(restart_timeout) + O(health_timeout) + 10 s); one
    that has acted is reported in RV(waiter), and the task has nothing left to do (the repoint task after the
    promotion then returns at the moment the waiter is done). A waiter that failed while acting leaves the
    maintenance file; the later run restarts O(restart) again.
  - O(disarm=true) is the way back of a switch that did not happen. It stops the waiter (without touching the file)
    and removes the maintenance file the waiter's arming created, after O(health_url) answers 200. A waiter that had
    already acted (the node was promoted) is reported, not undone.
  - Nothing secret is returned; the result gives the line numbers and the host and port each line pointed at. The
    waiter's state file holds no URL and no password.
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
      - Required unless O(disarm=true).
    type: str
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
  when_writable:
    description:
      - Do not repoint now - leave a waiter that repoints (and restarts O(restart), and gates on O(health_url)) the
        moment O(host) and O(port) accept writes; see the description. Needs O(restart) and the C(psycopg2) Python
        library on this host.
      - When the file already points at O(host) and O(port) there is nothing to wait for, and no waiter is left.
    type: dict
    suboptions:
      timeout:
        description:
          - Seconds after which the waiter gives up without acting.
        type: float
        required: true
      poll_interval:
        description:
          - Seconds between two questions to the node.
        type: float
        default: 0.05
  waiter_state_file:
    description:
      - The waiter's state file (status, pid, target, what it did; no URL, no password).
      - Default C(<path>.waiter.json), beside O(path).
    type: path
  disarm:
    description:
      - Stop this file's waiter and take the app out of the maintenance its arming created (see the description); the
        file is not read for a repoint, so O(host) may be omitted.
    type: bool
    default: false
seealso:
  - module: akig.runbooks.pm2
  - module: akig.runbooks.app_maintenance
  - module: akig.runbooks.pgbouncer_admin
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

- name: Before the promotion - maintenance on, and a waiter that repoints and restarts the moment db-2 is promoted
  akig.runbooks.database_url_repoint:
    path: "{{ akig_backend_env_file }}"
    host: db-2.akig.internal
    maintenance_file: "{{ akig_maintenance_file }}"
    restart: [akig-backend]
    health_url: "{{ akig_backend_url }}/api/health"
    when_writable:
      timeout: 60

- name: The way back when the switch did not happen - stop the waiter, leave maintenance once healthy
  akig.runbooks.database_url_repoint:
    path: "{{ akig_backend_env_file }}"
    maintenance_file: "{{ akig_maintenance_file }}"
    restart: [akig-backend]
    health_url: "{{ akig_backend_url }}/api/health"
    disarm: true
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
waiter:
  description:
    - With O(when_writable), the waiter left (C(status=waiting), C(pid), C(target), C(state_file)).
    - Otherwise, what an earlier arming's waiter had done when this task took it - C(status) C(repointed) (with
      C(actions), C(restarted), C(healthy), C(after_s) seconds from its arming to the end of its work, and
      C(writable_at)), C(cancelled) (it had not acted), C(expired), C(failed) (C(error)) or C(killed).
  returned: when a waiter was left or found
  type: dict
  sample: {"status": "repointed", "target": "db-2.akig.internal:5432", "after_s": 3.42, "pid": 4242}
msg:
  description: What the task did or would do, in one sentence.
  returned: always
  type: str
"""

import fcntl
import os
import shutil
import time
from typing import Any, Dict, List, Optional

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.akig.runbooks.plugins.module_utils import pg_waiter, pm2
from ansible_collections.akig.runbooks.plugins.module_utils.atomic_write import replace_atomically
from ansible_collections.akig.runbooks.plugins.module_utils.database_url import (
    DatabaseUrlError,
    connect_params,
    env_url,
    repoint_env,
)
from ansible_collections.akig.runbooks.plugins.module_utils.http_health import HealthError, validate_url, wait_healthy

try:
    import psycopg2
except ImportError:  # pragma: no cover - exercised only where psycopg2 is missing
    import traceback

    psycopg2 = None  # type: ignore[assignment]
    PSYCOPG2_IMPORT_ERROR: Optional[str] = traceback.format_exc()
else:
    PSYCOPG2_IMPORT_ERROR = None

ARGUMENT_SPEC: Dict[str, Dict[str, Any]] = dict(
    path=dict(type="path", required=True),
    host=dict(type="str"),
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
    when_writable=dict(type="dict", options=dict(
        timeout=dict(type="float", required=True),
        poll_interval=dict(type="float", default=0.05),
    )),
    waiter_state_file=dict(type="path"),
    disarm=dict(type="bool", default=False),
)


def _backup(path: str) -> str:
    """A copy of ``path`` next to it, named as ansible.builtin.copy's backup (``<path>.<pid>.<date>@<time>~``),
    with the same mode, owner and times; without the chattr attributes copy's backup also reads (lsattr)."""
    dest = "%s.%s.%s" % (path, os.getpid(), time.strftime("%Y-%m-%d@%H:%M:%S~", time.localtime()))
    shutil.copy2(path, dest)
    stat = os.stat(path)
    os.chown(dest, stat.st_uid, stat.st_gid)
    return dest


def _input_error(p: Dict[str, Any]) -> Optional[str]:
    """What is wrong with the options, before anything is read or changed (None: nothing)."""
    names = [name.strip() for name in p["restart"]]
    if p["disarm"] and p["when_writable"]:
        return "disarm stops a waiter and when_writable leaves one: give one of them"
    if not p["disarm"] and not p["host"]:
        return "host is required: the new primary's host name or address, as the app should reach it"
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
    waiter = p["when_writable"]
    if waiter:
        if not names:
            return "when_writable leaves a waiter that restarts the app once the node is promoted: give restart"
        if waiter["timeout"] <= 0 or waiter["poll_interval"] <= 0:
            return "when_writable timeout and poll_interval must be more than 0 seconds"
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


class Repoint:
    """The repoint of one env file: rewrite, restart, health gate, leave maintenance. Run by the task itself, or
    by the waiter it left (which has no AnsibleModule: failures are RepointFailed with the result so far)."""

    def __init__(self, p: Dict[str, Any], preps: List[pm2.Prepared]) -> None:
        self.p = p
        self.preps = preps
        self.target = "%s:%s" % (p["host"], p["port"])

    def restart_and_gate(self, result: Dict[str, Any], done: str) -> str:
        """Restart every app of ``restart``, wait for ``health_url``, remove the maintenance file; update ``result``
        and return the sentence of what was done (raises RepointFailed, the maintenance file kept)."""
        p = self.p
        kept = (" %s is kept, so the app goes on refusing writes with its maintenance message." % p["maintenance_file"]
                if result.get("maintenance") else "")
        result.setdefault("restarted", [])
        for prep in self.preps:
            try:
                out = pm2.apply(prep)
            except pm2.Pm2Error as exc:
                result["restarted"].append(_restart_summary(dict(exc.result, name=prep.req.name)))
                raise RepointFailed("%s, but restarting %s failed: %s.%s Check pm2 (pm2 logs %s), then run the task "
                                    "again: it restarts the processes older than the file." % (
                                        done, prep.req.name, exc.msg.rstrip("."), kept, prep.req.name)) from None
            result.setdefault("warnings", []).extend(out.get("warnings", []))
            result["restarted"].append(_restart_summary(out))
        restarted = "; ".join(action for out in result["restarted"] for action in out["actions"] or [])
        return "%s. %s%s" % (done, restarted.rstrip("."), self.gate_and_leave(result, done, kept))

    def gate_and_leave(self, result: Dict[str, Any], done: str, kept: str) -> str:
        p = self.p
        gate = ""
        if p["health_url"]:
            healthy, status, error, attempts, waited = wait_healthy(p["health_url"], p["health_timeout"],
                                                                    p["health_interval"], p["validate_certs"])
            result.update(healthy=healthy, health_attempts=attempts, health_waited_s=round(waited, 3))
            if not healthy:
                raise RepointFailed("%s, but %s did not answer 200 within %s s (%d request(s); last: %s).%s Check the "
                                    "backend (pm2 logs, its DATABASE_URL), then run the task again." % (
                                        done, p["health_url"], p["health_timeout"], attempts,
                                        "HTTP %s" % status if status is not None else error or "no answer", kept))
            gate = "; %s answered 200 after %d request(s), %.2f s" % (p["health_url"], attempts, waited)
        maintenance = p["maintenance_file"]
        if maintenance and result.get("maintenance"):
            try:
                os.unlink(maintenance)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise RepointFailed("%s and the app is back, but the maintenance file %s could not be removed (%s): "
                                    "remove it (akig.runbooks.app_maintenance state=absent)." % (done, maintenance, exc))
            result["maintenance"] = False
            return "%s; %s removed: the app writes again" % (gate, maintenance)
        return gate

    def rewrite(self, plan: Dict[str, Any], result: Dict[str, Any], backup: bool = True) -> str:
        """Back up (unless done already: ``backup`` false) and replace the file when it changes; the sentence of
        what was done."""
        p = self.p
        path = p["path"]
        if plan["changed"]:
            if p["backup"] and backup:
                try:
                    result["backup_file"] = _backup(path)
                except OSError as exc:
                    raise RepointFailed("Could not back up %s (%s); it is unchanged." % (path, exc)) from None
            try:
                replace_atomically(path, plan["text"])
            except OSError as exc:
                raise RepointFailed("Could not replace %s (%s); it is unchanged%s." % (
                    path, exc.__class__.__name__,
                    ", its copy is %s" % result["backup_file"] if result.get("backup_file") else "")) from None
            return "Pointed %s of %s (line %s) at %s" % (p["key"], path, ", ".join(str(n) for n in plan["lines"]),
                                                         self.target)
        return "%s already pointed %s at %s" % (path, p["key"], self.target)

    def waiter_act(self, _state: Dict[str, Any]) -> Dict[str, Any]:
        """What the waiter does once the node accepts writes (the file is read again: it is the truth now)."""
        out: Dict[str, Any] = dict(maintenance=bool(self.p["maintenance_file"]) and os.path.exists(self.p["maintenance_file"]))
        try:
            with open(self.p["path"], encoding="utf-8", newline="") as handle:
                plan = repoint_env(handle.read(), self.p["host"], self.p["port"], self.p["key"])
            done = self.rewrite(plan, out)
            msg = self.restart_and_gate(out, done)
        except (OSError, DatabaseUrlError, RepointFailed) as exc:
            return dict(out, status="failed", error=getattr(exc, "msg", None) or str(exc))
        return dict(out, status="repointed", msg=msg + ".", healthy=out.get("healthy"))


class RepointFailed(Exception):
    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


def _take_waiter(module: AnsibleModule, p: Dict[str, Any], state_file: str) -> Optional[Dict[str, Any]]:
    try:
        return pg_waiter.take(state_file, wait_s=p["restart_timeout"] + p["health_timeout"] + 10)
    except pg_waiter.WaiterError as exc:
        module.fail_json(msg="%s. Nothing was changed." % exc.msg)
    return None


def _waiter_said(outcome: Dict[str, Any]) -> str:
    status = outcome.get("status")
    if status == "repointed":
        return "the waiter left before the promotion had done it %.2f s after its arming: %s" % (
            outcome.get("after_s") or 0, outcome.get("msg", ""))
    if status == "failed" and not outcome.get("acted"):
        return "the waiter left before the promotion changed nothing (%s)" % outcome.get("error")
    if status == "failed":
        return "the waiter left before the promotion failed while acting (%s)" % outcome.get("error")
    if status == "killed":
        return "the waiter left before the promotion was still acting after the restart and health timeouts and was killed"
    return "the waiter left before the promotion had not acted (%s)" % status


def _sentence(text: str) -> str:
    text = text.rstrip(".")
    return text[:1].upper() + text[1:] + "."


def _disarm(module: AnsibleModule, p: Dict[str, Any], state_file: str) -> None:
    """The way back of a switch that did not happen: stop the waiter, leave the maintenance its arming created."""
    result: Dict[str, Any] = dict(changed=False)
    if module.check_mode:
        module.exit_json(msg="Would stop the waiter of %s (if any) and leave the maintenance its arming created." % p["path"],
                         **result)
    outcome = _take_waiter(module, p, state_file)
    if outcome is None:
        module.exit_json(msg="No waiter for %s: nothing to disarm." % p["path"], **result)
    result.update(changed=True, waiter=outcome)
    if outcome.get("acted"):
        module.warn("%s; disarm does not undo it: the app follows the promoted node." % _waiter_said(outcome))
        module.exit_json(msg=_sentence(_waiter_said(outcome)), **result)
    maintenance = p["maintenance_file"]
    result["maintenance"] = bool(maintenance) and os.path.exists(maintenance)
    if not (outcome.get("maintenance_created") and result["maintenance"]):
        module.exit_json(msg="Stopped the waiter of %s (it had not acted)." % p["path"], **result)
    done = "Stopped the waiter of %s (it had not acted, the file is unchanged)" % p["path"]
    try:
        gate = Repoint(p, []).gate_and_leave(result, done, " %s is kept." % maintenance)
    except RepointFailed as exc:
        module.fail_json(msg=exc.msg, **result)
    module.exit_json(msg="%s%s." % (done, gate), **result)


def _arm(module: AnsibleModule, p: Dict[str, Any], plan: Dict[str, Any], result: Dict[str, Any],
         state_file: str) -> None:
    """Maintenance on, and a waiter that repoints the moment the node accepts writes."""
    if psycopg2 is None:
        module.fail_json(msg=missing_required_lib("psycopg2") + " (the waiter of when_writable asks the new primary with "
                         "it). Nothing was changed.", exception=PSYCOPG2_IMPORT_ERROR, **result)
    path, target = p["path"], "%s:%s" % (p["host"], p["port"])
    try:
        login = connect_params(env_url(plan["text"], p["key"]))
    except DatabaseUrlError as exc:
        module.fail_json(msg="%s: %s. Nothing was changed." % (path, exc), **result)
    names = ", ".join(name.strip() for name in p["restart"])
    timeout = p["when_writable"]["timeout"]
    if module.check_mode:
        module.exit_json(msg="Would put the app in maintenance mode and leave a waiter that points %s of %s at %s, "
                             "restarts %s and leaves maintenance once %s accepts writes (within %s s)." % (
                                 p["key"], path, target, names, target, timeout), **dict(result, changed=True))
    try:
        os.close(os.open(state_file, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as exc:
        module.fail_json(msg="The waiter's state file %s cannot be written (%s): give waiter_state_file in a directory "
                             "this user may write. Nothing was changed." % (state_file, exc.strerror), **result)
    maintenance = p["maintenance_file"]
    created = False
    if maintenance and not result["maintenance"]:
        try:
            os.close(os.open(maintenance, os.O_WRONLY | os.O_CREAT, 0o644))
        except OSError as exc:
            module.fail_json(msg="Could not create the maintenance file %s (%s). Nothing was changed." % (maintenance, exc),
                             **result)
        created = result["maintenance"] = True
    started = time.time()
    repoint = Repoint(p, [])  # the waiter asks pm2 (body below)
    poll = p["when_writable"]["poll_interval"]

    def connect() -> Any:
        return psycopg2.connect(**dict(login, host=p["host"], port=p["port"], connect_timeout=max(1, int(poll * 20)),
                                       application_name="akig-repoint-waiter"))

    state = dict(started=started, deadline=started + timeout, target=target, path=path, state_file=state_file,
                 maintenance_created=created, restart=[name.strip() for name in p["restart"]])

    def body(handle: Any, st: Dict[str, Any]) -> None:
        try:
            repoint.preps = _prepare_restarts(p)
        except pm2.Pm2Error as exc:
            # under the lock, and only if nobody took the waiter meanwhile: a task that took it owns the files now
            fcntl.flock(handle, fcntl.LOCK_EX)
            if pg_waiter.read_state(handle).get("status") == "waiting":
                if created:
                    try:
                        os.unlink(maintenance)
                    except OSError:
                        pass
                st.update(status="failed", acted=False, ended=time.time(), maintenance_created=False,
                          error="%s (the waiter changed nothing and removed the maintenance file of its arming)" % exc.msg)
                pg_waiter.write_state(handle, st)
            return
        pg_waiter.run_when_writable(handle, st, connect, poll, (psycopg2.Error,), repoint.waiter_act)

    result["waiter"] = pg_waiter.launch(state_file, state, body)
    result["changed"] = True
    module.exit_json(msg="%s; a waiter (pid %s) points %s of %s at %s, restarts %s and leaves maintenance once %s "
                         "accepts writes (state in %s, gives up after %s s)." % (
                             "The app is in maintenance mode" if maintenance else "No maintenance file",
                             result["waiter"].get("pid"), p["key"], path, target, names, target, state_file, timeout),
                     **result)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    path = p["path"]
    problem = _input_error(p)
    if problem:
        module.fail_json(msg="%s. Nothing was changed." % problem)
    state_file = p["waiter_state_file"] or "%s.waiter.json" % path
    if p["disarm"]:
        _disarm(module, p, state_file)
    # one hand on the file at a time: an earlier arming's waiter is stopped, waited for (it holds its lock while it
    # acts) or reported before the file or pm2 is read, so what is read next is what the waiter left
    outcome = None if module.check_mode else _take_waiter(module, p, state_file)
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
    if outcome is not None:
        result["waiter"] = outcome

    # pm2 is asked before anything changes: an app it does not know must not leave a rewritten file behind. When a
    # waiter is armed, the waiter asks pm2 while the switch runs (a pm2 command is a Node.js start, ~0.3-0.6 s, that
    # would delay the fence); it asks before it changes anything and removes the maintenance file of the arming
    # when pm2 does not know an app.
    preps: List[pm2.Prepared] = []
    arming = bool(p["when_writable"]) and plan["changed"] and not module.check_mode
    if p["restart"] and not arming:
        try:
            preps = _prepare_restarts(p)
        except pm2.Pm2Error as exc:
            module.fail_json(msg="%s. Nothing was changed (neither %s nor the maintenance file)." % (exc.msg.rstrip("."), path),
                             **{**result, "changed": False})
        result.update(restarted=[], stale_processes=[] if plan["changed"] else _stale(preps, os.stat(path).st_mtime),
                      healthy=None)
    if p["when_writable"]:
        if plan["changed"]:
            _arm(module, p, plan, result, state_file)
        module.exit_json(msg="%s already points %s at %s: no waiter needed (the repoint task restarts what is older than "
                             "the file)." % (path, p["key"], target), **result)
    if outcome and outcome.get("status") == "repointed" and outcome.get("target") == target and not plan["changed"] \
            and not result.get("stale_processes"):
        result.update(changed=True, restarted=outcome.get("restarted", []), healthy=outcome.get("healthy"),
                      maintenance=bool(maintenance) and os.path.exists(maintenance))
        for key in ("backup_file", "health_attempts", "health_waited_s"):
            if key in outcome:
                result[key] = outcome[key]
        module.exit_json(msg=_sentence(_waiter_said(outcome)), **result)
    names = ", ".join(prep.req.name for prep in preps)
    # a waiter that failed while acting may have restarted part of the app: restart all of it again
    redo = bool(preps) and bool(outcome) and bool(outcome.get("acted")) and outcome.get("status") in ("failed", "killed")
    # a waiter that never acted leaves the maintenance of its arming: leave it once the app is healthy
    leave_only = bool(outcome) and outcome.get("maintenance_created") and result.get("maintenance") \
        and not outcome.get("acted")
    restart_due = bool(preps) and (plan["changed"] or bool(result["stale_processes"]) or redo)
    if not plan["changed"] and not restart_due:
        if leave_only and not module.check_mode:
            result["changed"] = True
            done = "%s already points %s at %s and %s" % (path, p["key"], target, _waiter_said(outcome))
            try:
                gate = Repoint(p, preps).gate_and_leave(result, done, " %s is kept." % maintenance)
            except RepointFailed as exc:
                module.fail_json(msg=exc.msg, **result)
            module.exit_json(msg="%s%s." % (done, gate), **result)
        module.exit_json(msg="%s already points %s at %s%s: nothing to do." % (
            path, p["key"], target, " and %s started after it last changed" % names if preps else ""), **result)
    result["changed"] = True
    if plan["changed"]:
        doing = "point %s of %s (line %s) at %s" % (p["key"], path, ", ".join(str(n) for n in plan["lines"]), target)
    elif result["stale_processes"]:
        doing = "restart %s, whose process(es) %s started before %s last changed (it already points %s at %s)" % (
            names, ", ".join("pid %s" % e["pid"] for e in result["stale_processes"]), path, p["key"], target)
    else:
        doing = "restart %s again: %s" % (names, _waiter_said(outcome))
    if module.check_mode:
        then = ""
        if preps and plan["changed"]:
            then = ", then restart %s%s" % (names, " and leave maintenance once %s answers 200" % p["health_url"]
                                            if p["health_url"] and maintenance else "")
        module.exit_json(msg="Would %s%s%s." % (doing, ", the app in maintenance mode first" if maintenance else "", then),
                         **result)

    repoint = Repoint(p, preps)
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
    try:
        done = repoint.rewrite(plan, result, backup=False)
    except RepointFailed as exc:
        module.fail_json(msg=exc.msg, **result)
    if not preps:
        module.exit_json(msg="%s%s." % (done, ", the app in maintenance mode" if result.get("maintenance") else ""), **result)
    try:
        msg = repoint.restart_and_gate(result, done)
    except RepointFailed as exc:
        for warning in result.pop("warnings", []):
            module.warn(warning)
        module.fail_json(msg=exc.msg, **result)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(msg="%s." % msg, **result)


if __name__ == "__main__":
    main()
