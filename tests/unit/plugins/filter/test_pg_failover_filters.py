# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pg_failover filters (plugins/filter/pg_failover.py, database_url.py): the wrappers turn bad input
into AnsibleFilterError, pass good input to module_utils/pg_failover.py, and their docs render."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import ansible.utils.display  # noqa: F401  # pylint: disable=unused-import  # its ldconfig probe runs at import, not in a test
import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.akig.runbooks.plugins.filter.pg_failover import FilterModule

FILTERS = FilterModule().filters()
NAMES = ("pg_slot_name", "pg_failover_problems", "pg_failover_rpo", "pg_rejoin_problems", "pg_node_specs",
         "database_url_repoint")


def test_the_filters_are_registered() -> None:
    assert set(FILTERS) == set(NAMES) - {"database_url_repoint"}


@pytest.mark.parametrize("name, args, message", [
    ("pg_slot_name", ("db-1", "Bad-Name"), "pg_slot_name: akig_pg_slot_name 'Bad-Name' of db-1 is not a valid"),
    ("pg_slot_name", ("",), "pg_slot_name: a slot name needs a host name"),
    ("pg_failover_problems", ("not a dict", {}, {}), "give the inputs as a dict"),
    ("pg_failover_rpo", ({}, None, "lots", "5m", "db-2", "db-1"), "pg_failover_rpo: size 'lots' is not understood"),
    ("pg_failover_rpo", ({}, None, "1MiB", "soon", "db-2", "db-1"), "pg_failover_rpo: duration 'soon' is not a duration"),
    ("pg_failover_rpo", ("x", None, "1MiB", "5m", "db-2", "db-1"), "must be pg_replication_info results"),
    ("pg_rejoin_problems", ({}, "db-1", "db-2", None, {}), "pg_rejoin_problems: node_control must be a dict"),
    ("pg_node_specs", ("db-1", {}), "give a list of inventory host names"),
    ("pg_node_specs", (["db-9"], {"db-1": {}}), "pg_node_specs: db-9 is not a host of the inventory"),
])
def test_bad_input_raises_a_filter_error_saying_what_is_accepted(name: str, args: tuple, message: str) -> None:
    with pytest.raises(AnsibleFilterError) as raised:
        FILTERS[name](*args)
    assert message in str(raised.value)


@pytest.mark.parametrize("name, args, check", [
    ("pg_slot_name", ("db-1.prod.akig.internal",), lambda out: out == "db_1_prod_akig_internal_slot"),
    ("pg_slot_name", ("db-1", None), lambda out: out == "db_1_slot"),
    ("pg_failover_rpo", ({"reachable": True, "in_recovery": True, "replay_lsn_bytes": 10, "lag_bytes": 0,
                          "wal_receiver": {"connected": False}}, None, 1048576, 300, "db-2", "db-1"),
     lambda out: out["unknown"] and out["over_budget"]),
    ("pg_rejoin_problems", ({"reachable": False}, "db-1", "db-2", {"timeline": 1, "system_identifier": "1"},
                            {"accepts_writes": True, "timeline": 2, "system_identifier": "1"}),
     lambda out: out == []),
])
def test_good_input_is_decided_by_module_utils(name: str, args: tuple, check: Callable[[Any], bool]) -> None:
    assert check(FILTERS[name](*args))


@pytest.mark.process
def test_every_filter_and_module_documentation_renders() -> None:
    ansible_doc = Path(sys.executable).parent / "ansible-doc"
    for kind, names in (("filter", NAMES), ("module", ("pg_fence", "pg_promote", "pg_replication_info"))):
        proc = subprocess.run([str(ansible_doc), "-t", kind, *("akig.runbooks.%s" % name for name in names)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        for name in names:
            assert "akig.runbooks.%s" % name in proc.stdout


def test_pg_node_specs_reads_address_and_port_and_probes_only_the_primary_several_times() -> None:
    hostvars = {"db-1": {"akig_address": "10.0.2.11", "akig_pg_port": 5433}, "db-2": {}}
    assert FILTERS["pg_node_specs"](["db-1", "db-2"], hostvars, "db-1", 3, 0.5) == [
        {"name": "db-1", "host": "10.0.2.11", "port": 5433, "attempts": 3, "attempt_interval": 0.5},
        {"name": "db-2", "host": "db-2", "port": 5432, "attempts": 1, "attempt_interval": 0.5},
    ]
