# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for the filters in plugins/filter/incident.py and plugins/filter/recovery.py.

The logic is tested in tests/unit/plugins/module_utils (test_incident_context.py, test_comms_channels.py,
test_app_diagnosis.py, test_restart_plan.py); here: the filters exist under their names, have sidecar
docs that ansible-doc renders, work as Jinja filters (input first), and turn bad input into
AnsibleFilterError with the message that says what is accepted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.akig.runbooks.plugins.filter import incident, recovery

FILTERS = {**incident.FilterModule().filters(), **recovery.FilterModule().filters()}
NAMES = {"incident_join_id", "incident_context", "comms_channels", "app_diagnosis", "restart_plan"}
FILTER_DIR = Path(incident.__file__).parent
NOW = "2026-11-27T14:30:00Z"


def test_filter_modules_expose_the_filters():
    assert set(incident.FilterModule().filters()) == {"incident_join_id", "incident_context", "comms_channels"}
    assert set(recovery.FilterModule().filters()) == {"app_diagnosis", "restart_plan"}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_every_filter_has_sidecar_docs(name):
    text = (FILTER_DIR / f"{name}.yml").read_text(encoding="utf-8")
    assert f"  name: {name}\n" in text
    for section in ("DOCUMENTATION:", "EXAMPLES:", "RETURN:", "    _input:", "  _value:", "version_added:"):
        assert section in text
    assert f"akig.runbooks.{name}" in text


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("incident_join_id", ("INC-1",), "the incident inputs must be a mapping"),
        ("incident_context", ({}, None, NOW, "abcd"), "Cannot open incident a new incident without a severity"),
        ("incident_context", ({"severity": "P1", "declared_start": "2999-01-01T00:00:00Z"}, None, NOW, "abcd"),
         "s in the future (controller clock 2026-11-27T14:30:00Z)"),
        ("comms_channels", (["sms"],), "channels must be a mapping of channel type -> list of targets"),
        ("app_diagnosis", ({"is_backend": "yes"},), "evidence.is_backend must be a boolean"),
        ("restart_plan", ("akig-backend",), "node_restart_names must be a list whose items are a process name"),
        ("restart_plan", (["a"], "bounced"), "node_restart_mode 'bounced' is not a restart mode"),
    ],
)
def test_bad_input_raises_ansible_filter_error(name, args, message):
    with pytest.raises(AnsibleFilterError) as err:
        FILTERS[name](*args)
    assert message in str(err.value)
    assert isinstance(err.value.__cause__, ValueError)


@pytest.fixture(scope="module")
def jinja_env():
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    env.filters.update(FILTERS)
    return env


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ {'id': '', 'current_id': 'INC-20261127-1423-P1-3f9a'} | incident_join_id }}", "INC-20261127-1423-P1-3f9a"),
        ("{{ ({'severity': 'P2', 'declared_start': '2026-11-27T15:23:00+01:00'}"
         " | incident_context(none, now, '0a0a')).id }}", "INC-20261127-1423-P2-0a0a"),
        ("{{ ({'sms': ['on-call-engineer']} | comms_channels(aliases={'on-call-engineer': '+336'},"
         " oncall_phone='+336', oncall_email='oncall@akig.com'))[0].fallbacks[0].to }}", "oncall@akig.com"),
        ("{{ ({'is_backend': true, 'backend': {'status': -1}, 'git': {'stdout_lines': ['b', 'a']},"
         " 'pm2': {'processes': [{'name': 'akig-backend', 'status': 'errored'}]}} | app_diagnosis).diagnosis }}",
         "bad_deploy"),
        ("{{ (['akig-backend', {'name': 'akig-frontend', 'mode': 'restarted'}] | restart_plan('reloaded', 'systemd'))"
         " | map(attribute='state') | join(',') }}", "restarted,restarted"),
    ],
)
def test_filters_in_jinja_take_the_input_first(jinja_env, template, expected):
    assert jinja_env.from_string(template).render(now=NOW) == expected


@pytest.mark.process
def test_ansible_doc_renders_every_sidecar(tmp_path):
    ansible_doc = Path(sys.executable).with_name("ansible-doc")
    namespace_root = Path(incident.__file__).parents[4]  # .../ansible_collections
    if not ansible_doc.exists() or namespace_root.name != "ansible_collections":
        pytest.skip("needs ansible-doc next to the test interpreter and an ansible_collections tree")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(namespace_root.parent), ANSIBLE_CONFIG=str(tmp_path / "none.cfg"),
               ANSIBLE_HOME=str(tmp_path / "home"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(ansible_doc), "-t", "filter", *sorted(f"akig.runbooks.{name}" for name in NAMES)],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    for name in NAMES:
        assert f"akig.runbooks.{name}" in proc.stdout
    assert "ERROR" not in proc.stderr, proc.stderr
