# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The auth_secret_drift filter (logic in tests/unit/plugins/module_utils/test_auth_recovery.py): its name, its
sidecar doc, use as a Jinja filter, and bad input turned into AnsibleFilterError."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
import yaml
from ansible_collections.akig.runbooks.plugins.filter import auth_recovery

FILTERS = auth_recovery.FilterModule().filters()


def test_the_filter_and_its_doc() -> None:
    assert set(FILTERS) == {"auth_secret_drift"}
    doc = yaml.safe_load((Path(auth_recovery.__file__).parent / "auth_secret_drift.yml").read_text())
    assert doc["DOCUMENTATION"]["name"] == "auth_secret_drift"


def test_as_a_jinja_filter() -> None:
    env = jinja2.Environment()
    env.filters.update(FILTERS)
    fps = {"app-1": {"running": "a", "running_source": "app", "file": "a", "backup": "a"},
           "app-2": {"running": "b", "running_source": "app", "file": "b", "backup": "a"}}
    out = env.from_string("{{ fps | auth_secret_drift('', 'not configured') }}").render(fps=fps)
    assert "secret_drift_one_backend" in out and "not configured" in out


def test_bad_input() -> None:
    # the ValueError that the filter wrapper (plugin_utils/filters.py) turns into AnsibleFilterError; building an
    # AnsibleFilterError here would run ldconfig the first time in a process, which this lane forbids
    with pytest.raises(ValueError, match="mapping host -> fingerprints"):
        auth_recovery.auth_secret_drift(["app-1"])
