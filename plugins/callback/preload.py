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
  - It loads code only; it reads no variable, opens no connection and prints nothing (a plugin that fails to load
    is reported at C(-vvv) and left to the task that uses it, which reports the error as usual).
  - The first task of a run that uses a module of this collection on a host builds the module's AnsiballZ payload
    (the module and its C(module_utils), zipped; 0.15-0.3 s) into the run's own cache (C(ansiballz_cache) in the
    run's local temporary directory); the tasks after it reuse it. So that no task on a runbook's critical path
    pays for it, the callback also starts one background process (no output) that builds, through
    Ansible's own C(modify_module), the payloads of the collection modules the playbook names (directly or through
    the collection's roles) that have no action plugin, in the order the playbook names them. Ansible's cache is
    written under a file lock and renamed into place, so a task that needs a module being built waits for it
    instead of building it twice. The process is not niced, because a task waiting for a payload must not wait
    for a process that gets less CPU than the task itself would. It ends with the playbook, and the cache goes
    with the run's temporary directory, as usual.
requirements:
  - Enable it with C(callbacks_enabled = akig.runbooks.preload) in the C([defaults]) section of C(ansible.cfg)
    (the collection's C(ansible.cfg) enables it with the timeline and the lock backstop).
"""

import importlib
import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

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


# what the playbook names: a module (plugins/modules/<name>.py) or a role (roles/<name>) of the collection
NAMED_RE = r"\b%s\.([a-z][a-z0-9_]*)\b"

# The background builder: Ansible's own payload builder, run for each module into the run's AnsiballZ cache
# (argv[1]: JSON with the cache's temporary directory, the compression, the collection paths, the modules).
# Whatever fails is left to the task that uses the module, which builds the payload as it always does.
BUILDER = """
import json, sys
job = json.loads(sys.argv[1])
from ansible import constants as C
from ansible.executor import module_common
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar
init_plugin_loader(job["collections_paths"])
C.DEFAULT_LOCAL_TMP = job["local_tmp"]
templar = Templar(loader=None)
for name, path in job["modules"]:
    try:
        module_common.modify_module(module_name=name, module_path=path, module_args={}, templar=templar,
                                    task_vars={"ansible_python_interpreter": sys.executable},
                                    module_compression=job["compression"])
    except Exception:
        pass
"""


def modules_named(playbook_path: str, collection: str, root: str) -> List[str]:
    """The collection's modules without an action plugin that a playbook names, directly or through the
    collection's roles (every task file of a role it names, main.yml first, and the roles those name), in the
    order they are first named: roughly the order a run needs them."""
    pattern = re.compile(NAMED_RE % re.escape(collection))
    plugins_dir, roles_dir = os.path.join(root, "plugins"), os.path.join(root, "roles")
    payloads = set(_plugin_files(plugins_dir, "modules")) - set(_plugin_files(plugins_dir, "action"))
    found: List[str] = []
    seen_roles = set()

    def scan(path: str) -> None:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError:
            return
        for name in pattern.findall(text):
            if name in payloads:
                if name not in found:
                    found.append(name)
            elif name not in seen_roles and os.path.isdir(os.path.join(roles_dir, name, "tasks")):
                seen_roles.add(name)
                tasks = os.path.join(roles_dir, name, "tasks")
                for stem in sorted(os.listdir(tasks), key=lambda f: (f != "main.yml", f)):
                    if stem.endswith((".yml", ".yaml")):
                        scan(os.path.join(tasks, stem))

    scan(playbook_path)
    return found


def start_builder(playbook_path: str, collection: str, root: str) -> Optional["subprocess.Popen[bytes]"]:
    """Start the background builder for the modules the playbook names (None when there is none to build)."""
    from ansible import constants as C
    from ansible.utils.collection_loader import AnsibleCollectionConfig

    names = modules_named(playbook_path, collection, root)
    if not names:
        return None
    job = {
        "local_tmp": C.DEFAULT_LOCAL_TMP,
        "compression": C.DEFAULT_MODULE_COMPRESSION,
        "collections_paths": list(AnsibleCollectionConfig.collection_paths),
        "modules": [[name, os.path.join(root, "plugins", "modules", name + ".py")] for name in names],
    }
    return subprocess.Popen([sys.executable, "-c", BUILDER, json.dumps(job)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "akig.runbooks.preload"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._done = False
        self._builder: Optional["subprocess.Popen[bytes]"] = None

    def v2_playbook_on_start(self, playbook: Any) -> None:
        if self._done:
            return
        self._done = True
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the collection's
        # first the background builder (it runs while this process loads the plugins)
        try:
            self._builder = start_builder(os.path.abspath(playbook._file_name), collection_of(__name__), root)
        except Exception as exc:  # pylint: disable=broad-except  # the tasks build their payloads as usual
            display.vvv("preload: no payload built in the background (%s)" % type(exc).__name__)
        if self._builder is not None:
            display.vvv("preload: building the AnsiballZ payloads of the playbook's modules in the background (pid %d)"
                        % self._builder.pid)
        try:
            summary = preload(collection_of(__name__), os.path.join(root, "plugins"))
        except Exception as exc:  # pylint: disable=broad-except  # never fail a playbook because of a preload
            display.vvv("preload: nothing loaded (%s)" % type(exc).__name__)
            return
        display.vvv("preload: loaded %s in %.3f s%s" % (
            ", ".join("%d %s" % (count, kind) for kind, count in summary["loaded"].items()), summary["seconds"],
            (", failed: %s" % ", ".join("%s (%s)" % item for item in sorted(summary["failed"].items())))
            if summary["failed"] else ""))

    def v2_playbook_on_stats(self, stats: Any) -> None:
        if self._builder is not None and self._builder.poll() is None:
            self._builder.terminate()
            try:
                self._builder.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._builder.kill()
                self._builder.wait()
