# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The PostgreSQL connection options: argument spec helper, doc fragment and action group agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible_collections.akig.runbooks.plugins.doc_fragments.postgres import ModuleDocFragment
from ansible_collections.akig.runbooks.plugins.module_utils.postgres import postgres_common_argument_spec
from ansible_collections.akig.runbooks.plugins.modules import pg_cluster_info, pg_diverged_transactions, pg_fence
from ansible_collections.akig.runbooks.plugins.modules import pg_follow, pg_promote, pg_replication_info

ROOT = Path(__file__).resolve().parents[4]
FRAGMENT = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]
MODULES = {"pg_replication_info": pg_replication_info, "pg_promote": pg_promote, "pg_follow": pg_follow,
           "pg_diverged_transactions": pg_diverged_transactions}
# members of the group that read several nodes (no login_host): they take the group's login_user/login_password
MULTI_NODE = {"pg_cluster_info": pg_cluster_info}


def test_each_call_returns_a_fresh_spec() -> None:
    first = postgres_common_argument_spec()
    first["login_port"]["default"] = 1
    first["extra"] = {}
    assert postgres_common_argument_spec()["login_port"]["default"] == 5432
    assert "extra" not in postgres_common_argument_spec()


def test_the_password_is_no_log() -> None:
    assert postgres_common_argument_spec()["login_password"]["no_log"] is True


def test_the_fragment_documents_the_spec() -> None:
    spec = postgres_common_argument_spec()
    assert set(FRAGMENT) == set(spec)
    for name, option in spec.items():
        assert FRAGMENT[name]["type"] == option["type"], name
        assert FRAGMENT[name].get("default") == option.get("default"), name
        assert bool(FRAGMENT[name].get("required")) == bool(option.get("required")), name


@pytest.mark.parametrize("name", sorted(MODULES))
def test_the_modules_use_spec_and_fragment(name: str) -> None:
    module = MODULES[name]
    spec = postgres_common_argument_spec()
    assert {key: module.ARGUMENT_SPEC[key] for key in spec} == spec
    documentation = yaml.safe_load(module.DOCUMENTATION)
    assert "akig.runbooks.postgres" in documentation["extends_documentation_fragment"]
    assert not set(documentation["options"]) & set(spec)  # documented once, in the fragment


def test_the_action_group_holds_the_modules_with_the_options() -> None:
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    assert sorted(runtime["action_groups"]["postgres"]) == sorted({**MODULES, **MULTI_NODE})
    for module in MULTI_NODE.values():
        assert {"login_user", "login_password"} <= set(module.ARGUMENT_SPEC)
        assert module.ARGUMENT_SPEC["login_password"]["no_log"] is True
    # pg_fence takes no login_* option: group defaults would make it fail with "Unsupported parameters"
    assert not set(pg_fence.ARGUMENT_SPEC) & set(postgres_common_argument_spec())
