# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run ansible, ansible-playbook and ansible-doc from the tests, isolated from the caller.

Every run starts in a scratch ``workdir`` with its own ansible.cfg, ANSIBLE_HOME and temp
directories, this venv's Python as module interpreter and the checkout's ``.collections`` as
collections path; no ANSIBLE_* variable, AKIG_INCIDENT_ID or AKIG_RUNBOOK of the caller's shell
leaks in, so the repository's ansible.cfg (lab inventory, timeline callback) is not involved.
:meth:`Ansible.finish` fails the test when a run's output holds one of ``secrets_to_hide``.

Independent runs can be started together (:meth:`Ansible.start`, then :meth:`Ansible.finish`)
to keep slow files short. The ``run_playbook`` fixture (exposed by the conftest.py of tests/unit
and tests/integration) is :meth:`Ansible.playbook` in the test's ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS_PATH = REPO / ".collections"
PYTHON = Path(sys.executable)
VENV_BIN = PYTHON.parent
RESULT_RE = re.compile(r"^localhost \| (?P<status>[A-Z]+!?) => (?P<json>\{.*)", re.MULTILINE | re.DOTALL)
CALLER_VARIABLES = ("AKIG_INCIDENT_ID", "AKIG_RUNBOOK")  # the caller's incident must not leak into a run
CONFIG = "[defaults]\nretry_files_enabled = false\n"


@dataclass
class Run:
    """A finished run: exit code, outputs, pid; ``status`` and ``result`` of an ad-hoc module run."""

    rc: int
    stdout: str
    stderr: str
    pid: int = 0

    @property
    def returncode(self) -> int:
        return self.rc

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def status(self) -> str:
        match = RESULT_RE.search(self.stdout)
        assert match, "no ad-hoc result in:\n%s\n%s" % (self.stdout, self.stderr)
        return match.group("status")

    @property
    def result(self) -> dict[str, Any]:
        match = RESULT_RE.search(self.stdout)
        assert match, "no ad-hoc result in:\n%s\n%s" % (self.stdout, self.stderr)
        return json.JSONDecoder().raw_decode(match.group("json"))[0]


class Ansible:
    """Start ansible / ansible-playbook / ansible-doc runs in ``workdir`` with an isolated configuration."""

    def __init__(self, workdir: Path, secrets_to_hide: Sequence[str] = (), env: Optional[Mapping[str, str]] = None,
                 config: str = CONFIG) -> None:
        self.workdir = workdir
        self.secrets = [secret for secret in secrets_to_hide if secret]
        (workdir / "ansible.cfg").write_text(config)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_") and k not in CALLER_VARIABLES}
        self.env.update(
            ANSIBLE_CONFIG=str(workdir / "ansible.cfg"),
            ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS_PATH),
            ANSIBLE_HOME=str(workdir / "ansible-home"),
            ANSIBLE_LOCAL_TEMP=str(workdir / "ansible-local"),
            ANSIBLE_REMOTE_TEMP=str(workdir / "ansible-remote"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_LOCALHOST_WARNING="false",
            ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
        )
        self.env.update(env or {})

    # ------------------------------------------------------------------ any command

    def start(self, argv: Sequence[str], env: Optional[Mapping[str, str]] = None) -> "subprocess.Popen[str]":
        return subprocess.Popen([str(arg) for arg in argv], cwd=str(self.workdir), env=dict(self.env, **(env or {})),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(self, proc: "subprocess.Popen[str]", timeout: float = 60) -> Run:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        for secret in self.secrets:
            assert secret not in stdout and secret not in stderr, "a secret leaked into the output of %s" % proc.args[0]
        return Run(proc.returncode, stdout, stderr, proc.pid)

    def run(self, argv: Sequence[str], env: Optional[Mapping[str, str]] = None, timeout: float = 60) -> Run:
        return self.finish(self.start(argv, env), timeout)

    # ------------------------------------------------------------------ ad-hoc module on localhost

    def start_adhoc(self, module: str, args: Mapping[str, Any], *flags: str,
                    env: Optional[Mapping[str, str]] = None) -> "subprocess.Popen[str]":
        """``ansible localhost -m <module> -a <json args>`` (read the answer with ``Run.status`` / ``Run.result``)."""
        return self.start([VENV_BIN / "ansible", "localhost", "-m", module, "-a", json.dumps(dict(args)),
                           "-e", "ansible_python_interpreter=%s" % PYTHON, *flags], env)

    def adhoc(self, module: str, args: Mapping[str, Any], *flags: str, env: Optional[Mapping[str, str]] = None,
              timeout: float = 60) -> Run:
        return self.finish(self.start_adhoc(module, args, *flags, env=env), timeout)

    # ------------------------------------------------------------------ playbooks

    def start_playbook(self, playbook: Path, extra_vars: Optional[Mapping[str, Any]] = None, *flags: str,
                       inventory: str = "localhost,", connection: Optional[str] = "local",
                       env: Optional[Mapping[str, str]] = None) -> "subprocess.Popen[str]":
        """``ansible-playbook -i <inventory> [-c <connection>] <playbook> -e @<vars>``.

        The extra vars (and this venv's Python as interpreter) go through a 0600 file, never the command line.
        """
        handle, vars_path = tempfile.mkstemp(prefix="extra-vars-", suffix=".json", dir=str(self.workdir))
        with os.fdopen(handle, "w", encoding="utf-8") as vars_file:
            json.dump({"ansible_python_interpreter": str(PYTHON), **dict(extra_vars or {})}, vars_file)
        argv: list[Any] = [VENV_BIN / "ansible-playbook", "-i", inventory]
        if connection:
            argv += ["-c", connection]
        return self.start([*argv, playbook, "-e", "@%s" % vars_path, *flags], env)

    def playbook(self, playbook: Path, extra_vars: Optional[Mapping[str, Any]] = None, *flags: str,
                 inventory: str = "localhost,", connection: Optional[str] = "local",
                 env: Optional[Mapping[str, str]] = None, timeout: float = 300) -> Run:
        proc = self.start_playbook(playbook, extra_vars, *flags, inventory=inventory, connection=connection, env=env)
        return self.finish(proc, timeout)


Runner = Callable[..., Run]


@pytest.fixture
def run_playbook(tmp_path: Path) -> Runner:
    """Run a playbook with ``ansible-playbook -i <inventory> -c local`` from ``tmp_path`` (see :meth:`Ansible.playbook`)."""
    return Ansible(tmp_path).playbook
