# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pm2 process management for the akig.runbooks.pm2 module.

The module reads ``pm2 jlist``, plans what the requested state needs (:func:`plan`, a pure
function), runs the pm2 commands of the plan unless in check mode, and waits until every
instance of the app is online (or stopped, or gone).

Everything pm2 is asked to do goes through :class:`Pm2Client`, which runs the pm2 CLI with
the right ``PM2_HOME``, as the right OS user (``runuser`` when the module runs as root), and
passes the ``env`` values of the module through the environment of the pm2 command, never
its argument vector.

Notes on pm2 6 that shape this code:

* ``pm2 jlist`` may print banners or ``[PM2]`` lines before the JSON, and spawns a daemon
  when none runs; so the daemon is looked for through ``PM2_HOME/pm2.pid`` first and the
  JSON is taken from the first ``[`` that starts a JSON list.
* After giving up on a crash-looping cluster worker, pm2 can report it ``online`` with
  ``pid: 0``: an instance only counts as running with status ``online`` and a pid > 0.
* ``--max-memory-restart`` on the command line is ignored when starting from an ecosystem
  file, and pm2 has no command-line option for the exec mode; so an app pm2 does not know yet
  is always started from a small generated ecosystem file that loads the given ecosystem file
  (or names the script) and applies those settings.
* ``pm2 restart <name>`` restarts the instances of an app with at most two instances one at a
  time (``API._operate``: ``if (ids.length <= 2) concurrent_actions = 1``), each waiting for the
  previous one to be ready; pm2 has no option against it. ``parallel`` runs one
  ``pm2 restart <pm_id>`` per instance instead, all at once (:meth:`Pm2Client.run_concurrently`).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.akig.runbooks.plugins.module_utils.procfs import alive, pid_exists, runuser_prefix

STATES = ("started", "stopped", "restarted", "reloaded", "absent")
STABLE_S = 1.0
POLL_S = 0.25
# how often the pids of a stable window are looked up in /proc
WATCH_S = 0.05
MEMORY_RE = re.compile(r"^\s*(\d+)\s*([KMG]?)\s*$", re.IGNORECASE)
MEMORY_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
START_CONFIG_NAME = "akig-pm2-start.config.js"
OUTPUT_TAIL = 800


class Pm2Error(Exception):
    """A failure to report with ``fail_json``: ``msg`` plus any result keys known so far."""

    def __init__(self, msg: str, output: str = "", **result: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.output = output
        self.result = result


# --------------------------------------------------------------------------- pure helpers


def parse_memory(value: Any) -> Tuple[str, int]:
    """Normalise a pm2 memory size (``600M``, ``1g``, ``524288000``) to (pm2 text, bytes).

    pm2 accepts digits with an optional upper-case K, M or G suffix (powers of 1024).
    """
    match = MEMORY_RE.match(str(value))
    if not match or int(match.group(1)) <= 0:
        raise ValueError(
            "max_memory_restart %r is not a memory size: give a positive number of bytes or a number "
            "followed by K, M or G, for example 600M" % (value,)
        )
    unit = match.group(2).upper()
    text = "%d%s" % (int(match.group(1)), unit)
    return text, int(match.group(1)) * MEMORY_UNITS[unit]


def format_memory(value: Any) -> Optional[str]:
    """Bytes as pm2 would write them in an ecosystem file: the largest exact unit (629145600 -> 600M)."""
    if value is None or value == "":
        return None
    try:
        size = int(float(value))
    except (TypeError, ValueError):
        return str(value)
    if size <= 0:
        return None
    for unit in ("G", "M", "K"):
        if size % MEMORY_UNITS[unit] == 0:
            return "%d%s" % (size // MEMORY_UNITS[unit], unit)
    return str(size)


def strip_ansi(text: str) -> str:
    return ANSI_RE.sub("", text or "")


def parse_jlist(text: str) -> List[Dict[str, Any]]:
    """The process list from ``pm2 jlist`` output, ignoring anything pm2 printed before it.

    Banners and ``[PM2] ...`` lines also start with ``[``, so every ``[`` is tried in turn until one
    starts a JSON list of objects.
    """
    text = strip_ansi(text)
    decoder = json.JSONDecoder()
    pos = text.find("[")
    while pos != -1:
        try:
            value, end = decoder.raw_decode(text, pos)
        except ValueError:
            pos = text.find("[", pos + 1)
            continue
        if isinstance(value, list) and all(isinstance(entry, dict) for entry in value):
            return value
        pos = text.find("[", max(end, pos + 1))
    raise Pm2Error("could not find the process list (a JSON array) in the output of pm2 jlist: %r" % text[:300])


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def app_name(raw: Mapping[str, Any]) -> str:
    return str(raw.get("name") or (raw.get("pm2_env") or {}).get("name") or "")


def status_of(raw: Mapping[str, Any]) -> str:
    return str((raw.get("pm2_env") or {}).get("status") or "unknown")


def pid_of(raw: Mapping[str, Any]) -> int:
    return _int(raw.get("pid"))


def exec_mode_of(raw: Mapping[str, Any]) -> str:
    mode = str((raw.get("pm2_env") or {}).get("exec_mode") or "fork_mode")
    return mode[:-5] if mode.endswith("_mode") else mode


# Set by Pm2Client.jlist on an "online" entry whose pid no longer exists on the host. pm2 6 does this to a
# cluster worker started with wait_ready that died before it was ready: when listen_timeout expires, pm2
# marks the dead worker "online" (with its old pid) until its next restart, seconds later.
PID_EXITED = "akig_pid_exited"


def mark_exited(raw_list: List[Dict[str, Any]], exists: Callable[[int], bool] = pid_exists) -> List[Dict[str, Any]]:
    """Mark the "online" entries whose pid has exited (:data:`PID_EXITED`); returns the same list."""
    for entry in raw_list:
        if status_of(entry) == "online" and pid_of(entry) > 0 and not exists(pid_of(entry)):
            entry[PID_EXITED] = True
    return raw_list


def is_running(raw: Mapping[str, Any]) -> bool:
    """Online with a live pid: pm2 reports 'online' with pid 0 for a cluster worker it gave up on, and
    'online' with the pid of a worker that died before it was ready (see :data:`PID_EXITED`)."""
    return status_of(raw) == "online" and pid_of(raw) > 0 and not raw.get(PID_EXITED)


def describe_status(raw: Mapping[str, Any]) -> str:
    status = status_of(raw)
    if status == "online" and pid_of(raw) <= 0:
        return "online with pid 0 (pm2 gave up restarting it)"
    if status == "online" and raw.get(PID_EXITED):
        return "online according to pm2, but its pid %s has exited (it died before it was ready)" % pid_of(raw)
    return status


def summarize(raw: Mapping[str, Any], now: float) -> Dict[str, Any]:
    """One process as the module returns it (no environment: pm2_env holds the app's secrets)."""
    env = raw.get("pm2_env") or {}
    monit = raw.get("monit") or {}
    uptime_s = 0
    started_ms = env.get("pm_uptime")
    if is_running(raw) and isinstance(started_ms, (int, float)) and started_ms > 0:
        uptime_s = max(0, int(now - started_ms / 1000.0))
    pm_id = raw.get("pm_id", env.get("pm_id"))
    return {
        "name": app_name(raw),
        "pm_id": _int(pm_id, -1),
        "pid": pid_of(raw),
        "status": status_of(raw),
        "running": is_running(raw),
        "restarts": _int(env.get("restart_time")),
        "memory_bytes": _int(monit.get("memory")),
        "cpu": _float(monit.get("cpu")),
        "uptime_s": uptime_s,
        "exec_mode": exec_mode_of(raw),
        "instance": _int(env.get("NODE_APP_INSTANCE"), 0),
    }


def processes_of(raw_list: Sequence[Mapping[str, Any]], name: str) -> List[Mapping[str, Any]]:
    mine = [entry for entry in raw_list if app_name(entry) == name]
    return sorted(mine, key=lambda entry: (_int((entry.get("pm2_env") or {}).get("NODE_APP_INSTANCE")), _int(entry.get("pm_id"))))


def known_apps(raw_list: Sequence[Mapping[str, Any]]) -> List[str]:
    return sorted({app_name(entry) for entry in raw_list if app_name(entry)})


def snapshot(mine: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """What the diff shows of an app: status and pid per instance and max_memory_restart."""
    memory = None
    for entry in mine:
        memory = format_memory((entry.get("pm2_env") or {}).get("max_memory_restart"))
        if memory:
            break
    return {
        "status": [describe_status(entry) for entry in mine] if mine else ["absent"],
        "pids": [pid_of(entry) for entry in mine],
        "max_memory_restart": memory,
    }


def env_differences(mine: Sequence[Mapping[str, Any]], env: Optional[Mapping[str, Any]]) -> List[str]:
    """Names (never values) of the env= variables whose value differs from what the app runs with."""
    if not env or not mine:
        return []
    names = []
    for key in sorted(env):
        wanted = str(env[key])
        for entry in mine:
            pm2_env = entry.get("pm2_env") or {}
            current = (pm2_env.get("env") or {}).get(key, pm2_env.get(key))
            if current is None or str(current) != wanted:
                names.append(str(key))
                break
    return names


def start_config(name: str, ecosystem: Optional[str], script: Optional[str], overrides: Mapping[str, Any]) -> str:
    """JavaScript of the generated ecosystem file that starts one app.

    It holds no environment values: those reach pm2 through the environment of the pm2 command.
    With ``ecosystem`` it loads that file the way pm2 does (JS, JSON or YAML), keeps the app named
    ``name`` and applies ``overrides``; with ``script`` it describes the app itself.
    """
    spec = json.dumps({"name": name, "ecosystem": ecosystem, "script": script, "overrides": dict(overrides)}, sort_keys=True)
    return """// Generated by akig.runbooks.pm2 to start one app; removed after use.
'use strict';
const fs = require('fs');
const SPEC = %s;

function load(file) {
  if (/\\.ya?ml$/i.test(file)) {
    const yaml = require(require.resolve('js-yaml', { paths: [require.main ? require.main.path : __dirname] }));
    return yaml.load(fs.readFileSync(file, 'utf8'));
  }
  if (/\\.json5?$/i.test(file)) {
    return require('vm').runInThisContext('(' + fs.readFileSync(file, 'utf8') + '\\n)', { filename: file });
  }
  delete require.cache[require.resolve(file)];
  return require(file);
}

let apps;
if (SPEC.ecosystem) {
  const conf = load(SPEC.ecosystem) || {};
  let list = conf.apps || conf.pm2 || conf;
  if (!Array.isArray(list)) list = [list];
  apps = list.filter((app) => app && app.name === SPEC.name).map((app) => Object.assign({}, app, SPEC.overrides));
  if (apps.length === 0) {
    const names = list.map((app) => (app && app.name) || '(unnamed)').join(', ') || 'none';
    throw new Error('AKIG_PM2: ecosystem file ' + SPEC.ecosystem + ' defines no app named ' + SPEC.name + ' (its apps: ' + names + ')');
  }
} else {
  apps = [Object.assign({ name: SPEC.name, script: SPEC.script }, SPEC.overrides)];
}
module.exports = { apps };
""" % spec


# --------------------------------------------------------------------------- the plan


@dataclass
class Command:
    """One of the pm2 commands that a step runs all at once: ``what`` names it in messages
    ("instance 1 (pm_id 3) of akig-backend"), ``logs`` is what ``pm2 logs`` takes to show its logs."""

    what: str
    args: List[str]
    logs: str


@dataclass
class Step:
    """One pm2 command of a plan, or with ``concurrent`` several run at once instead of ``args``.
    ``base`` says what it does ("restart akig-backend (...)"), ``past`` the same once done; check
    mode reports "Would " + base."""

    args: List[str]
    base: str
    past: str
    with_env: bool = False
    start_config: Optional[str] = None
    cwd: Optional[str] = None
    concurrent: List[Command] = field(default_factory=list)

    @property
    def would(self) -> str:
        return "Would %s." % self.base

    @property
    def done(self) -> str:
        return "%s." % self.past

    @property
    def failed(self) -> str:
        return "Failed to %s." % self.base


@dataclass
class Plan:
    steps: List[Step] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    wait: Optional[str] = None  # online | online_new | stopped | absent
    after: Dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.steps)


@dataclass
class Request:
    """The module parameters, checked and normalised."""

    name: str
    state: str = "started"
    ecosystem: Optional[str] = None
    script: Optional[str] = None
    exec_mode: Optional[str] = None
    instances: Optional[int] = None
    max_memory_restart: Optional[str] = None
    env: Optional[Dict[str, str]] = None
    update_env: bool = False
    reload_fallback: bool = True
    parallel: bool = False
    wait_online: bool = True
    timeout: int = 60
    stable_seconds: float = STABLE_S

    @property
    def source(self) -> Optional[str]:
        if self.ecosystem:
            return "ecosystem file %s" % self.ecosystem
        if self.script:
            return "script %s" % self.script
        return None


def request_from_params(params: Mapping[str, Any]) -> Request:
    """Check the parameters that AnsibleModule's spec cannot check; raise Pm2Error before anything runs."""
    name = (params.get("name") or "").strip()
    if not name or name == "all" or name.isdigit():
        raise Pm2Error("pm2 app name %r is not usable: give the name of one app (not 'all' or a pm_id)" % params.get("name"))
    memory = None
    if params.get("max_memory_restart") not in (None, ""):
        try:
            memory = parse_memory(params["max_memory_restart"])[0]
        except ValueError as exc:
            raise Pm2Error(str(exc))
    instances = params.get("instances")
    if instances is not None and instances < -1:
        raise Pm2Error("instances=%s is not valid: give a number of instances, 0 for one per CPU or -1 for one per CPU but one" % instances)
    timeout = params.get("timeout")
    timeout = 60 if timeout is None else int(timeout)
    if timeout <= 0:
        raise Pm2Error("timeout=%s is not valid: give the seconds to wait for pm2, greater than 0" % timeout)
    ecosystem = params.get("ecosystem")
    script = params.get("script")
    for label, path in (("ecosystem file", ecosystem), ("script", script)):
        if path and not os.path.isfile(path):
            raise Pm2Error("%s '%s' for pm2 app '%s' does not exist or is not a file; check the path" % (label, path, name))
    stable = params.get("stable_seconds")
    stable = STABLE_S if stable is None else float(stable)
    if stable < 0 or stable >= timeout:
        raise Pm2Error("stable_seconds=%s is not valid: give 0 or more seconds, less than timeout=%s" % (stable, timeout))
    env = params.get("env")
    return Request(
        name=name,
        state=params.get("state") or "started",
        ecosystem=os.path.abspath(ecosystem) if ecosystem else None,
        script=os.path.abspath(script) if script else None,
        exec_mode=params.get("exec_mode"),
        instances=instances,
        max_memory_restart=memory,
        env=dict((str(key), "" if value is None else str(value)) for key, value in env.items()) if env else None,
        update_env=bool(params.get("update_env")),
        reload_fallback=params.get("reload_fallback", True) is not False,
        parallel=bool(params.get("parallel")),
        wait_online=params.get("wait_online", True) is not False,
        timeout=timeout,
        stable_seconds=stable,
    )


def _known_text(raw_list: Sequence[Mapping[str, Any]], daemon_up: bool) -> str:
    if not daemon_up:
        return "known apps: none, the pm2 daemon is not running"
    return "known apps: %s" % (", ".join(known_apps(raw_list)) or "none")


def _settings_text(req: Request) -> str:
    parts = []
    if req.exec_mode:
        parts.append("%s mode" % req.exec_mode)
    if req.instances is not None:
        parts.append("%s instance%s" % (req.instances, "" if req.instances == 1 else "s"))
    if req.max_memory_restart:
        parts.append("max_memory_restart %s" % req.max_memory_restart)
    if req.env:
        parts.append("environment variables %s" % ", ".join(sorted(req.env)))
    return " (%s)" % ", ".join(parts) if parts else ""


def _instances_text(mine: Sequence[Mapping[str, Any]]) -> str:
    count = len(mine)
    mode = exec_mode_of(mine[0]) if mine else "fork"
    return "%d instance%s, %s mode" % (count, "" if count == 1 else "s", mode)


def _statuses(mine: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(sorted({describe_status(entry) for entry in mine}))


def _memory_args(req: Request) -> List[str]:
    return ["--max-memory-restart", req.max_memory_restart] if req.max_memory_restart else []


def _memory_change(req: Request, mine: Sequence[Mapping[str, Any]]) -> str:
    if not req.max_memory_restart:
        return ""
    before = snapshot(mine)["max_memory_restart"]
    if before == req.max_memory_restart:
        return ""
    return ", setting max_memory_restart %s (was %s)" % (req.max_memory_restart, before or "unset")


def _start_step(req: Request, why: str = "") -> Step:
    overrides: Dict[str, Any] = {}
    if req.exec_mode:
        overrides["exec_mode"] = req.exec_mode
    if req.instances is not None:
        overrides["instances"] = req.instances
    if req.max_memory_restart:
        overrides["max_memory_restart"] = req.max_memory_restart
    what = "%s from %s%s" % (req.name, req.source, _settings_text(req))
    source_path = req.ecosystem or req.script or ""
    return Step(
        args=["start", START_CONFIG_NAME, "--only", req.name],
        base="start %s%s" % (what, why),
        past="Started %s%s" % (what, why),
        with_env=True,
        start_config=start_config(req.name, req.ecosystem, req.script, overrides),
        cwd=os.path.dirname(source_path) or None,
    )


def _unknown_error(req: Request, raw_list: Sequence[Mapping[str, Any]], daemon_up: bool, home: str) -> Pm2Error:
    known = _known_text(raw_list, daemon_up)
    if req.state == "started":
        return Pm2Error(
            "pm2 app '%s' is not known to pm2 at PM2_HOME=%s; give ecosystem= or script= to start it, or check the name (%s)"
            % (req.name, home, known)
        )
    hint = "check the name" if req.state == "stopped" else "check the name, or give ecosystem= or script= to start it"
    return Pm2Error("pm2 app '%s' is not known to pm2 at PM2_HOME=%s, so it cannot be %s; %s (%s)" % (req.name, home, req.state, hint, known))


def _new_after(mine: Sequence[Mapping[str, Any]], memory: Optional[str]) -> Dict[str, Any]:
    return {"status": ["online"] * len(mine), "pids": ["(new)"] * len(mine), "max_memory_restart": memory or snapshot(mine)["max_memory_restart"]}


def plan(req: Request, raw_list: Sequence[Mapping[str, Any]], daemon_up: bool, home: str) -> Plan:
    """What reaching ``req.state`` takes, given the current pm2 process list. Pure: runs nothing."""
    mine = processes_of(raw_list, req.name)
    result = Plan(after=snapshot(mine))
    if req.state == "absent":
        if mine:
            result.steps.append(Step(
                args=["delete", req.name],
                base="delete %s (%s) from pm2" % (req.name, _instances_text(mine)),
                past="Deleted %s (%s) from pm2" % (req.name, _instances_text(mine)),
            ))
            result.wait = "absent"
            result.after = {"status": ["absent"], "pids": [], "max_memory_restart": None}
        else:
            result.notes.append("%s is not known to pm2 at PM2_HOME=%s; nothing to delete." % (req.name, home))
        return result

    if not mine:
        if req.state == "stopped" or not req.source:
            raise _unknown_error(req, raw_list, daemon_up, home)
        why = "" if req.state == "started" else ", because pm2 did not know it (nothing to %s)" % req.state[:-2]
        if not daemon_up:
            # Its own step, so that the daemon does not inherit the env= values of the start command.
            result.steps.append(Step(
                args=["ping"],
                base="start the pm2 daemon at PM2_HOME=%s" % home,
                past="Started the pm2 daemon at PM2_HOME=%s" % home,
            ))
        result.steps.append(_start_step(req, why))
        result.wait = "online"
        result.after = {"status": ["online"], "pids": ["(new)"], "max_memory_restart": req.max_memory_restart}
        return result

    if req.state == "stopped":
        if all(status_of(entry) == "stopped" for entry in mine):
            result.notes.append("%s is already stopped (%s)." % (req.name, _instances_text(mine)))
            return result
        result.steps.append(Step(
            args=["stop", req.name],
            base="stop %s (%s, now %s)" % (req.name, _instances_text(mine), _statuses(mine)),
            past="Stopped %s (%s, was %s)" % (req.name, _instances_text(mine), _statuses(mine)),
        ))
        result.wait = "stopped"
        result.after = {"status": ["stopped"] * len(mine), "pids": [0] * len(mine), "max_memory_restart": result.after["max_memory_restart"]}
        return result

    _warn_settings(req, mine, result)
    if req.state == "started":
        return _plan_started(req, mine, result)
    return _plan_restart(req, mine, result)


def _plan_started(req: Request, mine: Sequence[Mapping[str, Any]], result: Plan) -> Plan:
    env_args = ["--update-env"] if req.update_env else []
    running = [entry for entry in mine if is_running(entry)]
    if len(running) == len(mine):
        changed_env = env_differences(mine, req.env)
        if changed_env and req.update_env:
            verb = "reload" if all(exec_mode_of(entry) == "cluster" for entry in mine) else "restart"
            why = " to apply the changed environment variables %s" % ", ".join(changed_env)
            result.steps.append(Step(
                args=[verb, req.name] + _memory_args(req) + env_args,
                base="%s %s (%s)%s%s" % (verb, req.name, _instances_text(mine), why, _memory_change(req, mine)),
                past="%s %s (%s)%s%s" % ("Reloaded" if verb == "reload" else "Restarted", req.name, _instances_text(mine), why,
                                         _memory_change(req, mine)),
                with_env=True,
            ))
            result.wait = "online_new"
            result.after = _new_after(mine, req.max_memory_restart)
            return result
        if changed_env:
            result.warnings.append(
                "%s runs with other values of the environment variables %s than env= gives; set update_env=true "
                "to apply them" % (req.name, ", ".join(changed_env)))
        if req.max_memory_restart and snapshot(mine)["max_memory_restart"] != req.max_memory_restart:
            result.warnings.append(
                "%s runs with max_memory_restart %s, not %s: state=restarted or state=reloaded applies it"
                % (req.name, snapshot(mine)["max_memory_restart"] or "unset", req.max_memory_restart))
        result.notes.append("%s is already online (%s, pids %s)." % (
            req.name, _instances_text(mine), ", ".join(str(pid_of(entry)) for entry in mine)))
        return result
    if not running:
        result.steps.append(Step(
            args=["start", req.name] + _memory_args(req) + env_args,
            base="start %s (%s, now %s)%s" % (req.name, _instances_text(mine), _statuses(mine), _memory_change(req, mine)),
            past="Started %s (%s, was %s)%s" % (req.name, _instances_text(mine), _statuses(mine), _memory_change(req, mine)),
            with_env=True,
        ))
    else:
        for entry in mine:
            if is_running(entry):
                continue
            label = "instance %s (pm_id %s) of %s" % (_instance_no(entry), entry.get("pm_id"), req.name)
            result.steps.append(Step(
                args=["restart", str(entry.get("pm_id"))] + _memory_args(req) + env_args,
                base="restart %s, which is %s, leaving the running instances alone" % (label, describe_status(entry)),
                past="Restarted %s, which was %s, leaving the running instances alone" % (label, describe_status(entry)),
                with_env=True,
            ))
    result.wait = "online"
    result.after = _new_after(mine, req.max_memory_restart)
    result.after["pids"] = [pid_of(entry) if is_running(entry) else "(new)" for entry in mine]
    return result


def _plan_restart(req: Request, mine: Sequence[Mapping[str, Any]], result: Plan) -> Plan:
    env_args = ["--update-env"] if req.update_env else []
    verb, why = "restart", ""
    if req.state == "reloaded":
        if not any(is_running(entry) for entry in mine):
            why = ": it is not running (%s), so it is restarted rather than reloaded" % _statuses(mine)
        elif any(exec_mode_of(entry) != "cluster" for entry in mine):
            if not req.reload_fallback:
                raise Pm2Error(
                    "pm2 app '%s' runs in fork mode, where pm2 cannot reload it without downtime; use state=restarted, "
                    "set reload_fallback=true to restart it instead, or run it in cluster mode" % req.name)
            why = ": it runs in fork mode, where pm2 cannot reload without downtime, so it is restarted instead (reload_fallback=true)"
        else:
            verb, why = "reload", " with zero downtime, one cluster instance at a time"
    past = "Reloaded" if verb == "reload" else "Restarted"
    memory = _memory_change(req, mine)
    result.wait = "online_new"
    result.after = _new_after(mine, req.max_memory_restart)
    if verb == "restart" and req.parallel and len(mine) > 1:
        result.steps.append(_parallel_restart_step(req, mine, memory + why, env_args))
        return result
    result.steps.append(Step(
        args=[verb, req.name] + _memory_args(req) + env_args,
        base="%s %s (%s)%s%s" % (verb, req.name, _instances_text(mine), memory, why),
        past="%s %s (%s)%s%s" % (past, req.name, _instances_text(mine), memory, why),
        with_env=True,
    ))
    return result


def _parallel_restart_step(req: Request, mine: Sequence[Mapping[str, Any]], tail: str, env_args: List[str]) -> Step:
    """parallel=true: one ``pm2 restart <pm_id>`` per instance, all at once, with the arguments that
    ``pm2 restart <name>`` would get (pm2 itself restarts two instances one after the other)."""
    ids = [str(entry.get("pm_id")) for entry in mine]
    what = "the %d instances of %s at once (%s mode, one pm2 restart per instance: pm_ids %s)%s" % (
        len(mine), req.name, exec_mode_of(mine[0]), ", ".join(ids), tail)
    return Step(
        args=[],
        base="restart %s" % what,
        past="Restarted %s" % what,
        with_env=True,
        concurrent=[Command(
            what="instance %s (pm_id %s) of %s" % (_instance_no(entry), pm_id, req.name),
            args=["restart", pm_id] + _memory_args(req) + env_args,
            logs=pm_id,
        ) for entry, pm_id in zip(mine, ids)],
    )


def _warn_settings(req: Request, mine: Sequence[Mapping[str, Any]], result: Plan) -> None:
    """exec_mode and instances only apply when pm2 starts an app it does not know: say when the app differs."""
    if req.exec_mode and any(exec_mode_of(entry) != req.exec_mode for entry in mine):
        result.warnings.append(
            "%s runs in %s mode, not %s: exec_mode applies only when the module starts an app pm2 does not know "
            "(delete it with state=absent first to change it)" % (req.name, exec_mode_of(mine[0]), req.exec_mode))
    if req.instances is not None and req.instances > 0 and req.instances != len(mine):
        result.warnings.append(
            "%s has %d instance(s), not %d: instances applies only when the module starts an app pm2 does not know "
            "(pm2 scale changes it)" % (req.name, len(mine), req.instances))


# --------------------------------------------------------------------------- running pm2

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def resolve_binary(pm2_bin: Optional[str], path: Optional[str] = None) -> str:
    """Absolute path of the pm2 executable; Pm2Error when it cannot be run."""
    value = pm2_bin or "pm2"
    if os.sep in value:
        candidate = os.path.abspath(os.path.expanduser(value))
        found = candidate if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else None
    else:
        search = path if path is not None else os.environ.get("PATH", "")
        search = os.pathsep.join([search, "/usr/local/bin", "/usr/bin", "/bin"])
        found = shutil.which(value, path=search)
    if not found:
        raise Pm2Error("pm2 binary '%s' not found; install pm2 (npm install -g pm2) or set pm2_bin" % value)
    return found


@dataclass
class Identity:
    """Who pm2 runs as: ``prefix`` is empty or the runuser command line."""

    user: str
    home: str
    prefix: List[str]


def resolve_identity(user: Optional[str], euid: Optional[int] = None) -> Identity:
    euid = os.geteuid() if euid is None else euid
    current = pwd.getpwuid(euid)
    if not user or user == current.pw_name:
        return Identity(current.pw_name, current.pw_dir, [])
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise Pm2Error("user '%s' does not exist on this host; give the OS user that owns the pm2 daemon" % user)
    if euid != 0:
        raise Pm2Error(
            "running pm2 as user '%s' needs root, but the module runs as '%s'; add become: true to the task or "
            "connect as '%s'" % (user, current.pw_name, user))
    prefix = runuser_prefix(entry.pw_name)
    if not prefix:
        raise Pm2Error("runuser (util-linux) not found, so pm2 cannot be run as user '%s'; install util-linux" % user)
    return Identity(entry.pw_name, entry.pw_dir, prefix)


class Pm2Client:
    """Runs the pm2 CLI against one PM2_HOME as one OS user."""

    def __init__(self, binary: str, home: str, identity: Identity, env: Optional[Mapping[str, str]] = None,
                 timeout: float = 60, runner: Runner = subprocess.run, popen: Callable[..., Any] = subprocess.Popen) -> None:
        self.binary = binary
        self.home = home
        self.identity = identity
        self.env = dict(env or {})
        self.timeout = timeout
        self.runner = runner
        self.popen = popen

    def command_env(self, with_env: bool) -> Dict[str, str]:
        environ = dict(os.environ)
        for key in [key for key in environ if key.startswith("ANSIBLE_") or key.startswith("_ANSIBLE")]:
            del environ[key]
        environ["PM2_HOME"] = self.home
        if self.identity.prefix:
            environ.update(HOME=self.identity.home, USER=self.identity.user, LOGNAME=self.identity.user)
        if with_env:
            environ.update(self.env)
        return environ

    def argv(self, args: Sequence[str]) -> List[str]:
        return list(self.identity.prefix) + [self.binary] + list(args)

    def run(self, args: Sequence[str], with_env: bool = False, cwd: Optional[str] = None) -> "subprocess.CompletedProcess[str]":
        try:
            proc = self.runner(
                self.argv(args), env=self.command_env(with_env), cwd=cwd or "/", capture_output=True, text=True,
                timeout=self.timeout, check=False, stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise Pm2Error("pm2 %s did not finish within %s s at PM2_HOME=%s; pm2 may be hung: look at %s/pm2.log"
                           % (" ".join(args), self.timeout, self.home, self.home))
        except OSError as exc:
            raise Pm2Error("could not run pm2 (%s) for PM2_HOME=%s: %s" % (self.binary, self.home, exc))
        if proc.returncode != 0:
            raise Pm2Error("pm2 %s failed (exit %s) at PM2_HOME=%s: %s" % (
                " ".join(args), proc.returncode, self.home, output_tail(proc.stdout, proc.stderr)),
                output=strip_ansi("%s\n%s" % (proc.stderr, proc.stdout)))
        return proc

    def daemon_running(self) -> bool:
        """Whether the daemon of PM2_HOME runs, without starting one (``pm2 jlist`` would)."""
        try:
            with open(os.path.join(self.home, "pm2.pid"), encoding="ascii") as handle:
                pid = int(handle.read().strip() or 0)
        except FileNotFoundError:
            return False
        except (OSError, ValueError):
            return os.path.exists(os.path.join(self.home, "rpc.sock"))
        return pid > 0 and pid_exists(pid)

    def jlist(self) -> List[Dict[str, Any]]:
        return mark_exited(parse_jlist(self.run(["jlist"]).stdout))

    def processes(self) -> Tuple[bool, List[Dict[str, Any]]]:
        if not self.daemon_running():
            return False, []
        return True, self.jlist()

    def run_concurrently(self, commands: Sequence[Command], with_env: bool = False, cwd: Optional[str] = None) -> None:
        """Start every command, then wait for all of them: one deadline, ``timeout`` seconds after the start.

        Their output goes to temporary files, not pipes, so that none can block on a full pipe while
        another is waited for. Raises Pm2Error naming every command that failed or hung (a hung one is
        killed at the deadline), after all have ended; ``result["changed"]`` says whether any succeeded.
        """
        environ = self.command_env(with_env)
        started: List[Tuple[Command, Any, Any]] = []
        problems: List[str] = []
        succeeded = 0
        try:
            for command in commands:
                out = tempfile.TemporaryFile()
                try:
                    proc = self.popen(self.argv(command.args), env=environ, cwd=cwd or "/", stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
                except OSError as exc:
                    out.close()
                    problems.append("%s: could not run pm2 (%s): %s" % (command.what, self.binary, exc))
                    continue
                started.append((command, proc, out))
            deadline = time.monotonic() + self.timeout
            for command, proc, out in started:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    problems.append("%s: pm2 %s did not finish within %s s (killed); pm2 may be hung: look at %s/pm2.log"
                                    % (command.what, " ".join(command.args), self.timeout, self.home))
                    continue
                if proc.returncode == 0:
                    succeeded += 1
                    continue
                out.seek(0)
                text = out.read().decode("utf-8", errors="replace")
                problems.append("%s: pm2 %s failed (exit %s): %s; read its logs: PM2_HOME=%s %s logs %s --lines 50 --nostream" % (
                    command.what, " ".join(command.args), proc.returncode, output_tail(text, ""), self.home, self.binary, command.logs))
        finally:
            for _command, proc, out in started:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                out.close()
        if problems:
            raise Pm2Error("%d of the %d pm2 commands run at once at PM2_HOME=%s failed (%d succeeded): %s" % (
                len(problems), len(commands), self.home, succeeded, " / ".join(problems)), changed=succeeded > 0)

    def run_step(self, step: Step) -> None:
        if step.concurrent:
            self.run_concurrently(step.concurrent, with_env=step.with_env, cwd=step.cwd)
            return
        if step.start_config is None:
            self.run(step.args, with_env=step.with_env, cwd=step.cwd)
            return
        workdir = tempfile.mkdtemp(prefix="akig-pm2-")
        try:
            os.chmod(workdir, 0o755)
            config = os.path.join(workdir, START_CONFIG_NAME)
            with open(config, "w", encoding="utf-8") as handle:
                handle.write(step.start_config)
            os.chmod(config, 0o644)
            args = [config if arg == START_CONFIG_NAME else arg for arg in step.args]
            try:
                self.run(args, with_env=step.with_env, cwd=step.cwd)
            except Pm2Error as exc:
                found = re.search(r"AKIG_PM2: ([^\n]+)", exc.output)
                if found:
                    raise Pm2Error("pm2 app could not be started: %s; check name= and the ecosystem file" % found.group(1).strip())
                raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def output_tail(stdout: str, stderr: str) -> str:
    text = strip_ansi("\n".join(part for part in (stderr, stdout) if part and part.strip())).strip()
    skip = ("\u2502", "\u251c", "\u2514", "\u250c", "at ")  # the process table and stack frames
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(skip)]
    text = " | ".join(lines)
    return text[-OUTPUT_TAIL:] if text else "(no output)"


# --------------------------------------------------------------------------- waiting


def check_goal(goal: str, mine: Sequence[Mapping[str, Any]], old_pids: Sequence[int]) -> Tuple[bool, str]:
    """Whether the app reached ``goal``, and if not, why not (one short clause)."""
    if goal == "absent":
        return (not mine), ("%d instance(s) still listed" % len(mine) if mine else "")
    if not mine:
        return False, "no instance is listed by pm2"
    if goal == "stopped":
        left = [entry for entry in mine if status_of(entry) != "stopped"]
        return (not left), ", ".join(_instance_state(entry) for entry in left)
    down = [entry for entry in mine if not is_running(entry)]
    if down:
        return False, ", ".join(_instance_state(entry) for entry in down)
    if goal == "online_new":
        same = [entry for entry in mine if pid_of(entry) in set(old_pids)]
        if same:
            return False, ", ".join("instance %s still has its old pid %s" % (_instance_no(entry), pid_of(entry)) for entry in same)
    return True, ""


def _instance_no(entry: Mapping[str, Any]) -> int:
    return _int((entry.get("pm2_env") or {}).get("NODE_APP_INSTANCE"))


def _instance_state(entry: Mapping[str, Any]) -> str:
    env = entry.get("pm2_env") or {}
    return "instance %s (pm_id %s) %s, pid %s, %s restarts" % (
        _instance_no(entry), entry.get("pm_id"), describe_status(entry), pid_of(entry), _int(env.get("restart_time")))


def _signature(mine: Sequence[Mapping[str, Any]]) -> Tuple[Tuple[Any, ...], ...]:
    return tuple((entry.get("pm_id"), pid_of(entry), status_of(entry), _int((entry.get("pm2_env") or {}).get("restart_time"))) for entry in mine)


def watch_pids(pids: Sequence[int], until: float, clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep, is_alive: Callable[[int], bool] = alive) -> bool:
    """Whether every pid stays a live process (not a zombie) until the clock reaches ``until``, looked up in
    /proc every :data:`WATCH_S` (no pm2 command, which costs a Node.js start each time). False as soon as one
    exits: pm2 restarting a crashed instance gives it a new pid, so the same live pids mean no restart."""
    while True:
        if not all(is_alive(pid) for pid in pids):
            return False
        left = until - clock()
        if left <= 0:
            return True
        sleep(min(WATCH_S, left))


def wait_for(client: Pm2Client, name: str, goal: str, old_pids: Sequence[int], timeout: float, stable_s: float = STABLE_S,
             clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
             is_alive: Callable[[int], bool] = alive) -> Tuple[List[Dict[str, Any]], float]:
    """Poll ``pm2 jlist`` until the app reaches ``goal``; for online goals it must also stay there, same pids
    (so no restart), for ``stable_s`` seconds (a crash at boot shows up as an exited pid, then a restart). The
    stable window is watched in /proc (:func:`watch_pids`), not with more ``pm2 jlist`` runs. Returns the
    process list in which the goal was reached and the clock time at which it was, with the final pids."""
    start = clock()
    deadline = start + timeout
    stable_since: Optional[float] = None
    reached_at = start
    signature: Tuple[Tuple[Any, ...], ...] = ()
    need_stable = stable_s if goal in ("online", "online_new") else 0.0
    while True:
        raw_list = client.jlist()
        mine = processes_of(raw_list, name)
        now = clock()
        ok, why = check_goal(goal, mine, old_pids)
        if goal in ("online", "online_new"):
            errored = [entry for entry in mine if status_of(entry) == "errored"]
            if errored:
                raise Pm2Error(
                    "pm2 app '%s' did not come online: pm2 gave up restarting it (%s); read its logs: PM2_HOME=%s %s logs %s --lines 50 --nostream"
                    % (name, ", ".join(_instance_state(entry) for entry in errored), client.home, client.binary, name),
                    all_processes=[summarize(entry, time.time()) for entry in raw_list])
        if ok:
            if stable_since is None or _signature(mine) != signature:
                stable_since, signature = now, _signature(mine)
                reached_at = now
            if now - stable_since >= need_stable:
                return raw_list, reached_at
            # the same processes alive until the window ends: stable. Else pm2 is restarting one: read its list again
            window_end = stable_since + need_stable
            if watch_pids([pid_of(entry) for entry in mine], min(window_end, deadline), clock, sleep, is_alive) and clock() >= window_end:
                return raw_list, reached_at
            stable_since = None
            now = clock()
        else:
            stable_since = None
        if now >= deadline:
            target = {"online": "come online", "online_new": "come back online with new pids", "stopped": "stop", "absent": "disappear from pm2"}[goal]
            raise Pm2Error(
                "pm2 app '%s' did not %s within %s s (%s); read its logs: PM2_HOME=%s %s logs %s --lines 50 --nostream"
                % (name, target, timeout, why or "it kept restarting", client.home, client.binary, name),
                all_processes=[summarize(entry, time.time()) for entry in raw_list])
        sleep(POLL_S)


# --------------------------------------------------------------------------- the module's work


def default_home(identity: Identity) -> str:
    return os.path.join(identity.home, ".pm2")


@dataclass
class Prepared:
    """What :func:`prepare` read and decided for one app, nothing changed yet: :func:`apply` carries it out."""

    req: Request
    client: "Pm2Client"
    before_list: List[Dict[str, Any]]
    before: List[Dict[str, Any]]
    todo: Plan
    result: Dict[str, Any]


def prepare(params: Mapping[str, Any], runner: Runner = subprocess.run,
            listing: Optional[Tuple[bool, List[Dict[str, Any]]]] = None) -> Prepared:
    """Check the parameters, read pm2's process list (or take ``listing``, a ``Pm2Client.processes()`` read
    moments ago for the same pm2 home) and plan, changing nothing. Raises Pm2Error on anything the plan
    cannot be carried out with (unknown app, no daemon, bad input)."""
    binary = resolve_binary(params.get("pm2_bin"))
    req = request_from_params(params)
    identity = resolve_identity(params.get("user"))
    home = os.path.abspath(os.path.expanduser(params["pm2_home"])) if params.get("pm2_home") else default_home(identity)
    client = Pm2Client(binary, home, identity, env=req.env, timeout=req.timeout, runner=runner)

    daemon_up, before_list = listing if listing is not None else client.processes()
    before = processes_of(before_list, req.name)
    todo = plan(req, before_list, daemon_up, home)
    result: Dict[str, Any] = {
        "changed": todo.changed,
        "name": req.name,
        "pm2_home": home,
        "actions": [],
        "warnings": list(todo.warnings),
        "elapsed_s": 0.0,
        "online_after_s": None,
    }
    return Prepared(req=req, client=client, before_list=before_list, before=before, todo=todo, result=result)


def unchanged_result(prep: Prepared) -> Dict[str, Any]:
    """The result of a prepared plan that is not carried out (check mode, or nothing to do)."""
    result, todo, before = prep.result, prep.todo, prep.before
    diff_before = snapshot(before)
    result["actions"] = [step.would for step in todo.steps] + todo.notes
    now = time.time()
    result["processes"] = [summarize(entry, now) for entry in before]
    result["all_processes"] = [summarize(entry, now) for entry in prep.before_list]
    result["diff"] = {"before": diff_before, "after": todo.after if todo.changed else diff_before}
    return result


def apply(prep: Prepared, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> Dict[str, Any]:
    """Carry out a prepared plan: its pm2 commands, then the wait (online through the stable window, or
    stopped). Returns the result or raises Pm2Error."""
    req, client, before, todo, result = prep.req, prep.client, prep.before, prep.todo, prep.result
    diff_before = snapshot(before)
    started = clock()
    old_pids = [pid_of(entry) for entry in before if pid_of(entry) > 0]
    for step in todo.steps:
        try:
            client.run_step(step)
        except Pm2Error as exc:
            exc.result.update(changed=bool(result["actions"]) or bool(exc.result.get("changed")), actions=result["actions"] + [step.failed],
                              warnings=result["warnings"])
            raise
        result["actions"].append(step.done)

    if req.wait_online or todo.wait in ("stopped", "absent"):
        goal = todo.wait or "online"
        try:
            after_list, reached = wait_for(client, req.name, goal, old_pids, max(1, int(round(req.timeout - (clock() - started)))),
                                           stable_s=req.stable_seconds, clock=clock, sleep=sleep)
        except Pm2Error as exc:
            exc.result.update(changed=True, actions=result["actions"], warnings=result["warnings"])
            exc.result["processes"] = [entry for entry in exc.result.get("all_processes", []) if entry["name"] == req.name]
            raise
        if goal in ("online", "online_new"):
            result["online_after_s"] = round(reached - started, 3)
            command = "the pm2 commands" if any(step.concurrent for step in todo.steps) else "the pm2 command"
            result["actions"].append("%s is online %.1f s after %s: %s." % (req.name, reached - started, command, ", ".join(
                "instance %s pid %s" % (_instance_no(entry), pid_of(entry)) for entry in processes_of(after_list, req.name))))
    else:
        after_list = client.jlist()
    result["elapsed_s"] = round(clock() - started, 3)
    after = processes_of(after_list, req.name)
    now = time.time()
    result["processes"] = [summarize(entry, now) for entry in after]
    result["all_processes"] = [summarize(entry, now) for entry in after_list]
    result["diff"] = {"before": diff_before, "after": snapshot(after)}
    return result


def run(params: Mapping[str, Any], check_mode: bool, runner: Runner = subprocess.run,
        clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Dict[str, Any]:
    """Do what the module does. Returns its result (with a ``warnings`` list for the module to emit) or
    raises Pm2Error; everything is checked before the first pm2 command that changes anything."""
    prep = prepare(params, runner=runner)
    if check_mode or not prep.todo.changed:
        return unchanged_result(prep)
    return apply(prep, clock=clock, sleep=sleep)
