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


def _run_playbook(tmp_path: Path, callbacks: str) -> tuple:
    (tmp_path / "action_plugins").mkdir(exist_ok=True)
    (tmp_path / "action_plugins" / "worker_probe.py").write_text(WORKER_PROBE)
    (tmp_path / "site.yml").write_text(PLAYBOOK)
    out_file = tmp_path / ("out-%s.json" % (callbacks or "none").replace(",", "_"))
    env = dict(os.environ, PATH="%s:%s" % (VENV_BIN, os.environ.get("PATH", "")),
               ANSIBLE_CONFIG=str(COLLECTION_ROOT / "ansible.cfg"),
               ANSIBLE_CALLBACKS_ENABLED=callbacks or "ansible.builtin.default",
               ANSIBLE_COLLECTIONS_PATH=str(COLLECTION_ROOT / ".collections"),
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
               AKIG_TIMELINE_DIR=str(tmp_path / "incidents"))
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
