# -*- coding: utf-8 -*-
# Copyright: (c) 2026, AKIG SRE team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a controller-side module of the collection inside Ansible's task worker.

A module task on the controller's ``local`` connection costs 0.25-0.35 s before the module does anything on a
2-core machine (AnsiballZ payload, temporary folder, a new Python, its imports), more under load. The modules
that only talk to services over the network (HTTP health, the incident lock, the PostgreSQL nodes) do the same
work from the worker that Ansible already forked for the task. ``InProcessAction`` runs such a module's
``execute(module)`` there, with an ``InProcessModule`` in place of ``AnsibleModule``: the same argument spec and
checks (``ModuleArgumentSpecValidator``), the same check mode, and every ``no_log`` value masked in the result.

It does so only when the module would otherwise run on this very machine with this very Python: the task's
connection is ``local``, without become and without async, and the host's ``ansible_python_interpreter`` is the
Python running Ansible (the default for the controller). Anywhere else, or with ``akig_runbooks_in_process:
false``, the module runs the usual way. The task result says which: ``in_process: true`` when it ran in-process.

A module whose action sets ``background_in_process`` also runs in-process when the task is ``async`` with
``poll: 0`` (a runbook's alert, sent off the critical path): a detached grandchild of the worker runs it and
writes its result to ``<async_dir>/<jid>`` as ``async_wrapper`` does, so ``ansible.builtin.async_status`` reads
it the same way; after ``async`` seconds the job is stopped and fails.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
from typing import Any, Callable, Dict, Optional

from ansible.module_utils.common.arg_spec import ModuleArgumentSpecValidator
from ansible.module_utils.errors import UnsupportedError
from ansible.module_utils.common.parameters import remove_values
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

LOCAL_TRANSPORTS = frozenset(("local", "ansible.builtin.local"))


class ModuleExit(Exception):
    """Raised by InProcessModule.exit_json / fail_json: carries the module's result."""

    def __init__(self, result: Dict[str, Any]) -> None:
        super().__init__(result.get("msg", ""))
        self.result = result


class InProcessModule:
    """The part of AnsibleModule the collection's controller-side modules use, without a new process.

    params are validated against the module's own argument spec and constraints, as AnsibleModule does;
    exit_json and fail_json raise ModuleExit instead of printing and exiting.
    """

    def __init__(self, name: str, args: Dict[str, Any], check_mode: bool, diff: bool, argument_spec: Dict[str, Any],
                 supports_check_mode: bool = False, no_log: bool = False, mutually_exclusive=None,
                 required_together=None, required_one_of=None, required_if=None, required_by=None) -> None:
        del no_log  # AnsibleModule's no_log keeps the invocation out of syslog; nothing is logged here
        self.check_mode = bool(check_mode)
        self._diff = bool(diff)
        self._warnings: list = []
        self.no_log_values: set = set()
        if self.check_mode and not supports_check_mode:
            raise ModuleExit({"skipped": True, "changed": False, "msg": "remote module does not support check mode"})
        validator = ModuleArgumentSpecValidator(argument_spec, mutually_exclusive=mutually_exclusive,
                                                required_together=required_together, required_one_of=required_one_of,
                                                required_if=required_if, required_by=required_by)
        validation = validator.validate(dict(args))
        self.no_log_values.update(getattr(validation, "_no_log_values", set()))
        # as AnsibleModule: the arguments given, updated with the validated ones (defaults, conversions)
        self.params = dict(args)
        self.params.update(validation.validated_parameters)
        if validation.error_messages:
            # the message AnsibleModule gives, even in check mode
            msg = validation.errors.msg
            if isinstance(validation.errors[0], UnsupportedError):
                msg = "Unsupported parameters for (%s) module: %s" % (name, msg)
            self.fail_json(msg=msg)

    def warn(self, warning: str) -> None:
        self._warnings.append(warning)

    def _finish(self, result: Dict[str, Any]) -> Dict[str, Any]:
        # the same JSON a module prints (datetimes and other objects as strings), secrets masked
        result = json.loads(json.dumps(result, default=str))
        if self._warnings:
            result.setdefault("warnings", []).extend(self._warnings)
        result["invocation"] = {"module_args": json.loads(json.dumps(self.params, default=str))}
        return remove_values(result, self.no_log_values)

    def exit_json(self, **kwargs: Any) -> None:
        kwargs.setdefault("changed", False)
        raise ModuleExit(self._finish(kwargs))

    def fail_json(self, msg: str, **kwargs: Any) -> None:
        kwargs["failed"] = True
        kwargs["msg"] = msg
        kwargs.setdefault("changed", False)
        raise ModuleExit(self._finish(kwargs))


def run_in_process(name: str, execute: Callable[[Any], None], module_kwargs: Dict[str, Any], args: Dict[str, Any],
                   check_mode: bool, diff: bool) -> Dict[str, Any]:
    """execute(module) with an InProcessModule; the result it exits or fails with."""
    try:
        module = InProcessModule(name, args, check_mode, diff, **module_kwargs)
        execute(module)
    except ModuleExit as done:
        return done.result
    return {"failed": True, "changed": False,
            "msg": "the module returned without a result (a bug in akig.runbooks: report it with the task)"}


def same_python(interpreter: Optional[str]) -> bool:
    """Whether the interpreter the module would run with is the Python running Ansible."""
    if not interpreter:
        return False
    try:
        return os.path.realpath(interpreter) == os.path.realpath(sys.executable)
    except (OSError, ValueError):
        return False


def _write_job(path: str, info: Dict[str, Any]) -> None:
    """Write a job file atomically, as async_wrapper does (async_status reads it)."""
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(info, handle, default=str)
    os.rename(path + ".tmp", path)


class JobTimeout(BaseException):
    """Raised in the detached child at its async limit: a BaseException, so no network error handler takes it."""


def _job_timed_out(signum, frame):  # pragma: no cover - runs in the detached child
    del signum, frame
    raise JobTimeout()


def launch_in_background(run: Callable[[], Dict[str, Any]], async_dir: str, limit_s: int) -> Dict[str, Any]:
    """Run ``run()`` in a detached grandchild; the job's launch result, as async_wrapper returns it."""
    os.makedirs(async_dir, mode=0o700, exist_ok=True)
    jid = "j%d.%d" % (secrets.randbelow(999999999999), os.getpid())
    path = os.path.join(async_dir, jid)
    _write_job(path, {"started": True, "finished": False, "ansible_job_id": jid})
    child = os.fork()
    if child == 0:  # pragma: no cover - the detached child, measured through async_status in the tests
        code = 0
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            signal.signal(signal.SIGALRM, _job_timed_out)
            signal.alarm(max(int(limit_s), 1))
            try:
                result = run()
            except JobTimeout:
                result = {"failed": True, "changed": False, "msg": "the job did not finish within async=%s s" % limit_s}
            except Exception as exc:  # the job's result says what went wrong, as async_wrapper's does
                result = {"failed": True, "changed": False, "msg": "the job failed: %s" % exc}
            signal.alarm(0)
            result["ansible_job_id"] = jid
            _write_job(path, result)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.waitpid(child, 0)
    return {"failed": False, "started": True, "finished": False, "ansible_job_id": jid, "results_file": path,
            "changed": True}


class InProcessAction(ActionBase):
    """Action plugin base: run the module in the task's worker when it would run on this Python anyway."""

    _supports_check_mode = True
    _supports_async = True

    #: execute(module) of the module, its AnsibleModule keyword arguments, and whether its requirements import here
    execute: Optional[Callable[[Any], None]] = None
    module_kwargs: Dict[str, Any] = {}
    requirements_met: bool = True
    #: async with poll 0 runs in a detached child of the worker (see launch_in_background)
    background_in_process: bool = False

    def _background(self) -> bool:
        return bool(self._task.async_val) and not self._task.poll and self.background_in_process

    def _in_process(self, task_vars: Dict[str, Any]) -> bool:
        if self.execute is None or not self.requirements_met:
            return False
        if (self._task.async_val and not self._background()) or self._play_context.become:
            return False
        if self._connection.transport not in LOCAL_TRANSPORTS:
            return False
        wanted = task_vars.get("akig_runbooks_in_process", True)
        try:
            if not boolean(self._templar.template(wanted), strict=False):
                return False
        except Exception:  # an unreadable switch means the usual way
            return False
        interpreter = task_vars.get("ansible_python_interpreter")
        try:
            interpreter = self._templar.template(interpreter) if interpreter else None
        except Exception:
            return False
        return same_python(interpreter)

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        if not self._in_process(task_vars):
            wrap_async = self._task.async_val and not self._connection.has_native_async
            result.update(self._execute_module(task_vars=task_vars, wrap_async=wrap_async))
            if not wrap_async:
                self._remove_tmp_path(self._connection._shell.tmpdir)
            return result
        name, execute, args = self._task.resolved_action or self._task.action, type(self).execute, dict(self._task.args)
        check_mode, diff, module_kwargs = self._task.check_mode, self._task.diff, self.module_kwargs

        def run() -> Dict[str, Any]:
            return run_in_process(name, execute, module_kwargs, args, check_mode, diff)

        if self._background():
            # where async_status looks for the job (the connection's shell option, as its action plugin reads it)
            async_dir = os.path.expanduser(self.get_shell_option("async_dir", default="~/.ansible_async"))
            result.update(launch_in_background(run, async_dir, self._task.async_val))
        else:
            result.update(run())
        result["in_process"] = True
        return result
