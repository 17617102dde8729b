# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for the filters in plugins/filter/notification.py (RB-P2-003).

The logic is tested in tests/unit/plugins/module_utils (test_notification_routes.py, test_notification_plan.py);
here: the filters exist under their names, have sidecar docs that ansible-doc renders, work as Jinja filters
(input first) on the playbook's own expressions, and turn bad input into AnsibleFilterError with the message
that says what is accepted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ansible.utils.display  # noqa: F401  # pylint: disable=unused-import
import jinja2
import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.akig.runbooks.plugins.filter import notification

FILTERS = notification.FilterModule().filters()
NAMES = {"notification_matrix", "notification_routes", "notification_error_classes", "notification_log_error_classes",
         "notification_replay_problems", "notification_provider_diagnosis", "notification_counts",
         "notification_health", "notification_plan", "notification_resolve_plan", "notification_leftover"}
FILTER_DIR = Path(notification.__file__).parent
# ansible.utils.display (imported above, at collection) runs ldconfig once on import; an AnsibleFilterError with a
# cause imports it, which would count as a process started by the first test that raises one.
MATRIX = {"sms": ["email", "push"], "email": ["sms", "dashboard"], "preavis": ["phone_call", "registered_mail"]}


def test_the_filter_module_exposes_the_filters():
    assert set(FILTERS) == NAMES


@pytest.mark.parametrize("name", sorted(NAMES))
def test_every_filter_has_sidecar_docs(name):
    text = (FILTER_DIR / f"{name}.yml").read_text(encoding="utf-8")
    assert f"  name: {name}\n" in text
    for section in ("DOCUMENTATION:", "EXAMPLES:", "RETURN:", "    _input:", "  _value:", "version_added:"):
        assert section in text
    assert f"akig.runbooks.{name}" in text


@pytest.mark.parametrize(("name", "args", "message"), [
    ("notification_health", ([{"provider": "twilio", "class": "ok"}],), "no provider check for sendgrid"),
    ("notification_plan", ({"twilio": "ok"}, MATRIX), "no entry for 'sendgrid'"),
    ("notification_resolve_plan", ({}, [], MATRIX), "must be the result of notification_plan"),
    ("notification_leftover", ({"sms/reminder": "many"}, []), "must be a whole number"),
    ("notification_routes", (MATRIX, {"twilio": "ok"}), "no entry for 'sendgrid'"),
])
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


CHECKS = [{"provider": "twilio", "ok": False, "class": "outage", "status": None, "detail": "no connection"},
          {"provider": "sendgrid", "ok": True, "class": "ok", "status": 200, "detail": "scopes ok"}]
TESTS = [{"status": 502, "json": {"provider_status": None}, "ansible_loop_var": "c", "c": {"key": "sms", "value": "+33"}},
         {"status": 200, "json": {"provider_status": 202}, "ansible_loop_var": "c", "c": {"key": "email", "value": "a@b.c"}}]


@pytest.mark.parametrize(("template", "expected"), [
    ("{{ (checks | notification_health(tests, {}) | notification_plan(matrix, ['outage'])).cause }}",
     "twilio is down (5xx or no connection)"),
    ("{{ (checks | notification_health(tests) | notification_plan(matrix)).mitigate_channels | join(',') }}", "sms"),
    ("{{ (checks | notification_health(tests) | notification_plan(matrix)"
     " | notification_resolve_plan([{'provider': 'twilio', 'ok': false}], matrix)).routes }}", "{'sms': 'email'}"),
    ("{{ (checks | notification_health(tests) | notification_plan(matrix)"
     " | notification_resolve_plan(['twilio'], matrix)).back | join(',') }}", "twilio"),
    ("{{ ({'sms/preavis': 2, 'email/reminder': 1} | notification_leftover(['sms'])).waiting }}", "2"),
    ("{{ '{\"error\":\"HTTP 429\"}' | notification_log_error_classes }}", "{'quota': 1}"),
])
def test_filters_in_jinja_take_the_input_first(jinja_env, template, expected):
    assert jinja_env.from_string(template).render(checks=CHECKS, tests=TESTS, matrix=MATRIX) == expected


@pytest.mark.process
def test_ansible_doc_renders_every_sidecar(tmp_path):
    ansible_doc = Path(sys.executable).with_name("ansible-doc")
    namespace_root = Path(notification.__file__).parents[4]  # .../ansible_collections
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
