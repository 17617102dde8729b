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
"""

from __future__ import annotations

import json
import os
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


class InProcessAction(ActionBase):
    """Action plugin base: run the module in the task's worker when it would run on this Python anyway."""

    _supports_check_mode = True
    _supports_async = True

    #: execute(module) of the module, its AnsibleModule keyword arguments, and whether its requirements import here
    execute: Optional[Callable[[Any], None]] = None
    module_kwargs: Dict[str, Any] = {}
    requirements_met: bool = True

    def _in_process(self, task_vars: Dict[str, Any]) -> bool:
        if self.execute is None or not self.requirements_met:
            return False
        if self._task.async_val or self._play_context.become:
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
        result.update(run_in_process(self._task.resolved_action or self._task.action, type(self).execute, self.module_kwargs, dict(self._task.args),
                                     self._task.check_mode, self._task.diff))
        result["in_process"] = True
        return result
