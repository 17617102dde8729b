# -*- coding: utf-8 -*-
# Copyright (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: preload
type: notification
author: AKIG Engineering Team (@akig-sre)
short_description: Load the collection's filter, test and action plugins once, before the first task
description:
  - C(ansible-playbook) forks a new worker process from its main process for every task and host. A worker
    inherits what the main process has loaded, and nothing a worker loads outlives its task. The main process
    never loads a collection's Jinja filters or action plugins itself, so every task that uses one of this
    collection's filters loads all of its filter files again (the loader reads every file of C(plugins/filter)
    to find a name), and every task of a module with an action plugin imports the plugin, the module and its
    C(module_utils) again. On a 2-core controller under load that is 0.1-0.3 s per task (C(benchmarks/preload.py)
    prints the figures).
  - When the playbook starts, this callback loads the collection's filter and test plugins (every name each file
    declares), its action plugins with the modules and C(module_utils) they import, and the builtin action plugins
    the runbooks use, in the main process. Every worker forked after that finds them loaded.
  - It loads code only; it reads no variable, opens no connection, writes nothing and prints nothing (a plugin
    that fails to load is reported at C(-vvv) and left to the task that uses it, which reports the error as usual).
requirements:
  - Enable it with C(callbacks_enabled = akig.runbooks.preload) in the C([defaults]) section of C(ansible.cfg)
    (the collection's C(ansible.cfg) enables it with the timeline and the lock backstop).
"""

import importlib
import os
import time
from typing import Any, Dict, List

from ansible.plugins.callback import CallbackBase
from ansible.utils.display import Display

display = Display()

# the builtin action plugins the runbooks' tasks use (the generic module action is "normal")
BUILTIN_ACTIONS = ("ansible.builtin.set_fact", "ansible.builtin.assert", "ansible.builtin.debug",
                   "ansible.builtin.validate_argument_spec", "ansible.builtin.add_host", "ansible.builtin.fail",
                   "ansible.builtin.normal", "ansible.builtin.include_vars", "ansible.builtin.uri",
                   "ansible.builtin.command", "ansible.builtin.shell", "ansible.builtin.pause")
# Jinja plugin kinds: the directory under plugins/, and the factory every file of it defines
JINJA_KINDS = (("filter", "FilterModule", "filters"), ("test", "TestModule", "tests"))


def collection_of(module_name: str) -> str:
    """'ansible_collections.akig.runbooks.plugins.callback.preload' -> 'akig.runbooks'."""
    parts = module_name.split(".")
    if len(parts) < 3 or parts[0] != "ansible_collections":
        raise ValueError("%s is not a module of a collection" % module_name)
    return "%s.%s" % (parts[1], parts[2])


def _plugin_files(plugins_dir: str, kind: str) -> List[str]:
    folder = os.path.join(plugins_dir, kind)
    if not os.path.isdir(folder):
        return []
    return sorted(name[:-3] for name in os.listdir(folder) if name.endswith(".py") and not name.startswith("_"))


def preload(collection: str, plugins_dir: str) -> Dict[str, Any]:
    """Load the collection's filter, test and action plugins and the builtin actions in this process.

    Returns what was loaded (counts per kind), what failed (plugin -> exception type) and the time taken.
    """
    from ansible.plugins.loader import action_loader, filter_loader, test_loader

    loaders = {"filter": filter_loader, "test": test_loader}
    started = time.perf_counter()
    loaded: Dict[str, int] = {"filter": 0, "test": 0, "action": 0, "builtin_action": 0}
    failed: Dict[str, str] = {}
    package = "ansible_collections.%s.plugins" % collection
    for kind, factory, method in JINJA_KINDS:
        for stem in _plugin_files(plugins_dir, kind):
            try:
                module = importlib.import_module("%s.%s.%s" % (package, kind, stem))
                names = list(getattr(getattr(module, factory)(), method)())
            except Exception as exc:  # pylint: disable=broad-except  # reported, then left to the task that uses it
                failed["%s/%s" % (kind, stem)] = type(exc).__name__
                continue
            for name in names:
                try:
                    if loaders[kind].get("%s.%s" % (collection, name)) is not None:
                        loaded[kind] += 1
                except Exception as exc:  # pylint: disable=broad-except
                    failed["%s %s.%s" % (kind, collection, name)] = type(exc).__name__
    for stem in _plugin_files(plugins_dir, "action"):
        try:
            if action_loader.get("%s.%s" % (collection, stem), class_only=True) is not None:
                loaded["action"] += 1
        except Exception as exc:  # pylint: disable=broad-except
            failed["action %s.%s" % (collection, stem)] = type(exc).__name__
    for name in BUILTIN_ACTIONS:
        try:
            if action_loader.get(name, class_only=True) is not None:
                loaded["builtin_action"] += 1
        except Exception as exc:  # pylint: disable=broad-except
            failed["action %s" % name] = type(exc).__name__
    return {"loaded": loaded, "failed": failed, "seconds": round(time.perf_counter() - started, 3)}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "akig.runbooks.preload"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._done = False

    def v2_playbook_on_start(self, playbook: Any) -> None:
        if self._done:
            return
        self._done = True
        try:
            summary = preload(collection_of(__name__), os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        except Exception as exc:  # pylint: disable=broad-except  # never fail a playbook because of a preload
            display.vvv("preload: nothing loaded (%s)" % type(exc).__name__)
            return
        display.vvv("preload: loaded %s in %.3f s%s" % (
            ", ".join("%d %s" % (count, kind) for kind, count in summary["loaded"].items()), summary["seconds"],
            (", failed: %s" % ", ".join("%s (%s)" % item for item in sorted(summary["failed"].items())))
            if summary["failed"] else ""))
