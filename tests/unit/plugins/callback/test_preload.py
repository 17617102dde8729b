# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The akig.runbooks.preload callback: the collection's plugins are loaded in ansible-playbook's main process,
so the worker forked for each task finds them loaded (observed from inside a real worker)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ansible_collections.akig.runbooks.plugins.callback.preload import collection_of

COLLECTION_ROOT = Path(__file__).resolve().parents[4]
SIZE_1MB = 1000000  # what akig.runbooks.size_bytes makes of '1MB' (SI units)
VENV_BIN = Path(sys.executable).parent


def test_collection_of_names_the_collection_of_a_plugin_module():
    assert collection_of("ansible_collections.akig.runbooks.plugins.callback.preload") == "akig.runbooks"
    with pytest.raises(ValueError, match="not a module of a collection"):
        collection_of("preload")


# an action plugin next to the playbook reports, from inside the worker of its task and before the task uses
# anything, whether the collection's filters and action plugins were already loaded in that worker
WORKER_PROBE = textwrap.dedent(
    """\
    import sys
    from ansible.plugins.action import ActionBase


    class ActionModule(ActionBase):
        def run(self, tmp=None, task_vars=None):
            prefix = "ansible_collections.akig.runbooks.plugins."
            return {"changed": False,
                    "filters": sorted(m for m in sys.modules if m.startswith(prefix + "filter.")),
                    "actions": sorted(m for m in sys.modules if m.startswith(prefix + "action."))}
    """
)

PLAYBOOK = textwrap.dedent(
    """\
    - name: What a task's worker finds loaded
      hosts: localhost
      gather_facts: false
      tasks:
        - name: Ask the worker
          worker_probe:
          register: probe

        - name: Use a filter of the collection (it works either way)
          ansible.builtin.set_fact:
            size: "{{ '1MB' | akig.runbooks.size_bytes }}"

        - name: Keep the answer
          ansible.builtin.copy:
            content: "{{ {'filters': probe.filters, 'actions': probe.actions, 'size': size} | to_json }}"
            dest: "{{ out_file }}"
            mode: "0600"
    """
)


def _playbook_env(run_dir: Path, callbacks: str) -> dict:
    """ansible-playbook's environment: this checkout's collection and ansible.cfg, only the given callbacks, the
    run's temporary files (the AnsiballZ cache among them) and incidents under run_dir."""
    return dict(os.environ, PATH="%s:%s" % (VENV_BIN, os.environ.get("PATH", "")),
                ANSIBLE_CONFIG=str(COLLECTION_ROOT / "ansible.cfg"),
                ANSIBLE_CALLBACKS_ENABLED=callbacks or "ansible.builtin.default",
                ANSIBLE_COLLECTIONS_PATH=str(COLLECTION_ROOT / ".collections"),
                ANSIBLE_LOCAL_TEMP=str(run_dir / "tmp"),
                AKIG_TIMELINE_DIR=str(run_dir / "incidents"))


def _run_playbook(tmp_path: Path, callbacks: str) -> tuple:
    (tmp_path / "action_plugins").mkdir(exist_ok=True)
    (tmp_path / "action_plugins" / "worker_probe.py").write_text(WORKER_PROBE)
    (tmp_path / "site.yml").write_text(PLAYBOOK)
    out_file = tmp_path / ("out-%s.json" % (callbacks or "none").replace(",", "_"))
    env = _playbook_env(tmp_path, callbacks)
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-vvv", "-i", "localhost,", "-c", "local",
                           str(tmp_path / "site.yml"), "-e", "out_file=%s" % out_file,
                           "-e", "ansible_python_interpreter=%s" % sys.executable],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    said = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("preload:")]
    return json.loads(out_file.read_text()), said


@pytest.mark.process
def test_a_task_worker_finds_the_collection_loaded_only_with_the_callback(tmp_path):
    without, said_without = _run_playbook(tmp_path, "")
    with_preload, said = _run_playbook(tmp_path, "akig.runbooks.preload")
    action_files = sorted(f[:-3] for f in os.listdir(COLLECTION_ROOT / "plugins" / "action")
                          if f.endswith(".py") and not f.startswith("_"))
    # at -vvv the callback says what it loaded, in one line, and that nothing failed
    assert said_without == []
    assert len(said) == 1, said
    assert re.match(r"preload: loaded \d+ filter, 0 test, %d action, \d+ builtin_action in [0-9.]+ s$" % len(action_files),
                    said[0]), said[0]
    # the filter works both ways
    assert without["size"] == with_preload["size"] == SIZE_1MB
    # without the callback the worker starts with nothing of the collection: every task loads it again
    assert without["filters"] == [] and without["actions"] == []
    filter_files = sorted(f[:-3] for f in os.listdir(COLLECTION_ROOT / "plugins" / "filter")
                          if f.endswith(".py") and not f.startswith("_"))
    assert with_preload["filters"] == ["ansible_collections.akig.runbooks.plugins.filter.%s" % s for s in filter_files]
    # the action plugins, with the modules and module_utils they import
    assert with_preload["actions"] == ["ansible_collections.akig.runbooks.plugins.action.%s" % s for s in action_files]


def test_modules_named_by_the_failover_playbook_are_those_without_an_action_plugin():
    from ansible_collections.akig.runbooks.plugins.callback.preload import modules_named

    named = modules_named(str(COLLECTION_ROOT / "playbooks" / "rb-p1-003-db-failover.yml"), "akig.runbooks", str(COLLECTION_ROOT))
    # through pg_failover (and node_restart, which pg_failover's repoint names): the modules run on the hosts
    for module in ("pgbouncer_admin", "pg_fence", "database_url_repoint", "pm2", "app_maintenance"):
        assert module in named, named
    # modules with an action plugin run in the controller's process (no payload), roles are not modules
    for not_a_payload in ("pg_promote", "app_probe", "incident_lock", "pg_failover", "runbook", "node_restart"):
        assert not_a_payload not in named, named
    assert len(named) == len(set(named))
    assert named.index("database_url_repoint") < named.index("app_maintenance")  # in the order the tasks name them
    assert modules_named(str(COLLECTION_ROOT / "playbooks" / "no-such.yml"), "akig.runbooks", str(COLLECTION_ROOT)) == []


# the first task waits until a payload of database_url_repoint is in the run's cache (a condition, bounded by
# `waits` x 0.1 s), the second runs the module, which fails cleanly on a missing file (ignored)
PAYLOAD_PLAYBOOK = textwrap.dedent(
    """\
    - name: Who builds the payload
      hosts: localhost
      gather_facts: false
      tasks:
        - name: Wait until the payload of akig.runbooks.database_url_repoint is in the run's cache
          ansible.builtin.find:
            paths: "{{ lookup('ansible.builtin.env', 'ANSIBLE_LOCAL_TEMP') }}"
            recurse: true
            patterns: "*.database_url_repoint-*"
            excludes: ["*.lock", "*-part"]
          register: found
          until: found.matched > 0
          retries: "{{ waits | int }}"
          delay: 0.1
          ignore_errors: true

        - name: Run the module on a file that does not exist (it fails, and says so)
          akig.runbooks.database_url_repoint:
            path: /nonexistent/akig.env
            host: 127.0.0.1
            port: 5432
          register: repoint
          ignore_errors: true

        - name: Keep what happened
          ansible.builtin.copy:
            content: "{{ {'found_before_use': found.matched | default(0) > 0, 'msg': repoint.msg} | to_json }}"
            dest: "{{ out_file }}"
            mode: "0600"
    # the module is named here, so the callback builds it: akig.runbooks.database_url_repoint
    """
)


def _run_payload_playbook(tmp_path: Path, callbacks: str, waits: int) -> tuple:
    run_dir = tmp_path / (callbacks or "none").replace(",", "_")
    run_dir.mkdir()
    (run_dir / "site.yml").write_text(PAYLOAD_PLAYBOOK)
    out_file = run_dir / "out.json"
    env = dict(_playbook_env(run_dir, callbacks), ANSIBLE_DEBUG="1")
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(run_dir / "site.yml"),
                           "-e", "out_file=%s" % out_file, "-e", "waits=%d" % waits,
                           "-e", "ansible_python_interpreter=%s" % sys.executable],
                          capture_output=True, text=True, env=env, cwd=run_dir, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # which process built the payload: a worker logs "Lock acquired: <cache file>.lock" then "Creating module"
    lines = [line.split("ANSIBALLZ: ", 1)[1] for line in proc.stdout.splitlines() if "ANSIBALLZ: " in line]
    built_by_a_task = [prev.split("/")[-1] for prev, line in zip(lines, lines[1:])
                       if line == "Creating module" and prev.startswith("Lock acquired: ")]
    return json.loads(out_file.read_text()), built_by_a_task


@pytest.mark.process
def test_the_payload_of_a_module_the_playbook_names_is_built_before_its_task(tmp_path):
    with_preload, built = _run_payload_playbook(tmp_path, "akig.runbooks.preload", waits=300)
    assert with_preload["found_before_use"] is True
    assert "/nonexistent/akig.env" in with_preload["msg"]  # the module ran from the prebuilt payload
    assert not [name for name in built if "database_url_repoint" in name], built
    assert [name for name in built if "ansible.modules.find" in name], built  # what the tasks build is seen

    without, built_without = _run_payload_playbook(tmp_path, "", waits=10)
    assert without["found_before_use"] is False  # nobody built it ahead of the task
    assert [name for name in built_without if "database_url_repoint" in name], built_without
    assert "/nonexistent/akig.env" in without["msg"]
