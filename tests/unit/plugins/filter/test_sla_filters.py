# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for the SLA filters in plugins/filter/sla.py.

Needs ``/work/main/.collections`` (the directory holding
``ansible_collections/akig/runbooks``) on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import jinja2
import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.akig.runbooks.plugins.filter.sla import FilterModule
from ansible_collections.akig.runbooks.plugins.module_utils import sla
from hypothesis import given, settings
from hypothesis import strategies as st

FILTERS = FilterModule().filters()
FILTER_NAMES = {
    "sla_deadline",
    "sla_status",
    "sla_remaining",
    "escalation_tier",
    "error_rate_breach",
    "incident_metrics",
    "duration_seconds",
}
FILTER_DIR = Path(sla.__file__).parents[1] / "filter"
T0 = "2026-11-27T10:00:00Z"
PERIOD = ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")


def test_filter_module_exposes_all_filters():
    assert set(FILTERS) == FILTER_NAMES
    assert all(callable(func) for func in FILTERS.values())


@pytest.mark.parametrize("name", sorted(FILTER_NAMES))
def test_every_filter_has_sidecar_docs(name):
    text = (FILTER_DIR / f"{name}.yml").read_text(encoding="utf-8")
    assert f"  name: {name}\n" in text
    assert 'version_added: "0.1.0"' in text
    for section in (
        "DOCUMENTATION:",
        "EXAMPLES:",
        "RETURN:",
        "    _input:",
        "  _value:",
    ):
        assert section in text
    assert f"akig.runbooks.{name}" in text


@pytest.mark.parametrize(
    ("name", "args", "kwargs", "expected"),
    [
        ("sla_deadline", (T0, "P1"), {}, "2026-11-27T10:30:00Z"),
        ("sla_deadline", (T0, "P1", "respond"), {}, "2026-11-27T10:05:00Z"),
        ("sla_deadline", (T0, "P2"), {"kind": "respond"}, "2026-11-27T10:15:00Z"),
        ("sla_deadline", (T0, "P3"), {}, "2026-11-28T10:00:00Z"),
        ("sla_remaining", (T0, "P1", "2026-11-27T10:12:00Z"), {}, 1080),
        ("sla_remaining", (T0, "P1", "2026-11-27T10:12:00Z", "respond"), {}, -420),
        (
            "sla_remaining",
            (T0, "P2", "2026-11-27T10:12:00Z"),
            {"policy": {"severities": {"P2": {"resolve_s": "1h"}}}},
            2880,
        ),
        ("duration_seconds", ("1h30m",), {}, 5400.0),
        ("duration_seconds", (90,), {}, 90.0),
    ],
)
def test_filters_return_values(name, args, kwargs, expected):
    assert FILTERS[name](*args, **kwargs) == expected


@pytest.mark.parametrize("severity", ["P1", "P2", "P3"])
def test_sla_status_filter_matches_module_utils(severity):
    now = "2026-11-27T10:20:00Z"
    assert FILTERS["sla_status"](T0, severity, now) == sla.sla_status(T0, severity, now)


def test_escalation_and_error_rate_filters():
    tier = FILTERS["escalation_tier"]("16m", data_breach=True)
    assert tier["tier"] == "tier3"
    assert tier["contacts"][-1] == "ceo@akig.com"
    assert "legal@akig.com" in tier["contacts"]
    rate = FILTERS["error_rate_breach"](
        [{"ts": "2026-11-27T10:04:00Z", "status": 503}], "2026-11-27T10:05:00Z"
    )
    assert (rate["rate"], rate["breached"]) == (1.0, True)
    metrics = FILTERS["incident_metrics"](
        [
            {
                "id": "A",
                "severity": "P1",
                "start": "2026-11-03T09:00:00Z",
                "end": "2026-11-03T09:12:00Z",
            }
        ],
        *PERIOD,
    )
    assert (
        metrics["count"],
        metrics["mttr_s"],
        metrics["per_severity"]["P1"]["met"],
    ) == (1, 720.0, True)


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        (
            "sla_deadline",
            (T0, "P4"),
            "unknown severity 'P4'; expected one of P1, P2, P3",
        ),
        (
            "sla_deadline",
            (datetime(2026, 11, 27, 10, 0), "P1"),
            "timezone-aware ISO 8601 like 2026-11-27T14:23:00Z",
        ),
        (
            "sla_status",
            (T0, "P1", "2026-11-27T10:05:00"),
            "timezone-aware ISO 8601 like 2026-11-27T14:23:00Z",
        ),
        ("sla_remaining", (T0, "P1", "2026-11-27T09:00:00Z"), "is before start"),
        ("escalation_tier", (-5,), "elapsed -5 must not be negative"),
        (
            "escalation_tier",
            ("5 parsecs",),
            "'5 parsecs' is not a duration; expected seconds as a number >= 0",
        ),
        (
            "duration_seconds",
            ("5 parsecs",),
            "is not a duration; expected seconds as a number >= 0 or a string like 90s, 5m",
        ),
        ("duration_seconds", ("-5m",), "must not be negative"),
        (
            "error_rate_breach",
            ([{"ts": T0}], T0),
            "samples[0] has neither ok nor status",
        ),
        (
            "incident_metrics",
            ([], *PERIOD),
            "incident_metrics needs at least one incident record; for a clean period report uptime 1.0 directly",
        ),
        (
            "incident_metrics",
            (
                [
                    {
                        "id": "A",
                        "severity": "P1",
                        "start": "2026-11-03T09:00:00Z",
                        "end": "2026-11-03T08:00:00Z",
                    }
                ],
                *PERIOD,
            ),
            "incident 'A' ends (2026-11-03T08:00:00Z) before it starts (2026-11-03T09:00:00Z)",
        ),
    ],
)
def test_filters_raise_ansible_filter_error(name, args, message):
    with pytest.raises(AnsibleFilterError) as err:
        FILTERS[name](*args)
    assert message in str(err.value)
    assert isinstance(err.value.__cause__, sla.SlaError)


def test_policy_must_be_a_mapping():
    with pytest.raises(AnsibleFilterError, match="policy must be a mapping"):
        FILTERS["sla_deadline"](T0, "P1", policy="strict")


@pytest.fixture(scope="module")
def jinja_env():
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    env.filters.update(FILTERS)
    return env


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ start | sla_deadline('P1') }}", "2026-11-27T10:30:00Z"),
        ("{{ start | sla_deadline('P1', 'respond') }}", "2026-11-27T10:05:00Z"),
        (
            "{{ start | sla_remaining('P2', '2026-11-27T10:15:00Z', kind='respond') }}",
            "0",
        ),
        ("{{ (start | sla_status('P1', '2026-11-27T10:24:00Z')).state }}", "at_risk"),
        ("{{ ('5m' | escalation_tier).tier }}", "tier2"),
        (
            "{{ ('1m' | escalation_tier(true)).contacts | join(',') }}",
            "#akig-incidents,on-call-engineer,legal@akig.com",
        ),
        ("{{ '1h30m' | duration_seconds }}", "5400.0"),
    ],
)
def test_filters_in_jinja_use_the_input_as_first_argument(
    jinja_env, template, expected
):
    assert jinja_env.from_string(template).render(start=T0) == expected


@settings(max_examples=100, deadline=None, database=None)
@given(
    minutes=st.integers(0, 3 * 24 * 60), severity=st.sampled_from(["P1", "P2", "P3"])
)
def test_prop_filter_remaining_plus_elapsed_is_budget(minutes, severity):
    now = sla.format_datetime(
        sla.parse_datetime(T0) + timedelta(minutes=minutes, seconds=7)
    )
    status = FILTERS["sla_status"](T0, severity, now)
    remaining = FILTERS["sla_remaining"](T0, severity, now)
    assert remaining + status["elapsed_s"] == status["resolve"]["budget_s"]
    assert sla.parse_datetime(
        FILTERS["sla_deadline"](T0, severity)
    ) >= sla.parse_datetime(T0)


PLAYBOOK = """
- name: Exercise the SLA filters
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Render the filters through Ansible
      ansible.builtin.set_fact:
        __rendered:
          deadline: "{{ '2026-11-27T10:00:00Z' | akig.runbooks.sla_deadline('P1') }}"
          state: "{{ ('2026-11-27T10:00:00Z' | akig.runbooks.sla_status('P1', '2026-11-27T10:25:00Z')).state }}"
          contacts: "{{ ('7m' | akig.runbooks.escalation_tier(data_breach=true)).contacts }}"
          seconds: "{{ '1h30m' | akig.runbooks.duration_seconds }}"
    - name: Reject an unknown severity
      block:
        - name: Use P4
          ansible.builtin.set_fact:
            __p4: "{{ '2026-11-27T10:00:00Z' | akig.runbooks.sla_deadline('P4') }}"
      rescue:
        - name: Keep the error
          ansible.builtin.set_fact:
            __error: "{{ ansible_failed_result.msg }}"
    - name: Write the results
      ansible.builtin.copy:
        content: "{{ {'rendered': __rendered, 'error': __error} | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
"""


@pytest.mark.process
def test_filters_through_ansible_playbook(tmp_path):
    """End to end: FQCN resolution, sidecar-free loading and error text in a real play."""
    playbook_bin = Path(sys.executable).with_name("ansible-playbook")
    namespace_root = Path(sla.__file__).parents[4]  # .../ansible_collections
    if not playbook_bin.exists() or namespace_root.name != "ansible_collections":
        pytest.skip(
            "needs ansible-playbook next to the test interpreter and an ansible_collections tree"
        )
    (tmp_path / "play.yml").write_text(PLAYBOOK, encoding="utf-8")
    out = tmp_path / "out.json"
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(namespace_root.parent),
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
        ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
        ANSIBLE_HOME=str(tmp_path / "home"),
    )
    proc = subprocess.run(
        [
            str(playbook_bin),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"out={out}",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            "play.yml",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text(encoding="utf-8"))
    rendered = result["rendered"]
    assert rendered["deadline"] == "2026-11-27T10:30:00Z"
    assert rendered["state"] == "at_risk"
    assert rendered["contacts"] == [
        "#akig-incidents",
        "on-call-engineer",
        "legal@akig.com",
        "manager@akig.com",
        "cto@akig.com",
    ]
    assert float(rendered["seconds"]) == 5400.0
    assert "unknown severity 'P4'; expected one of P1, P2, P3" in result["error"]
