# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for plugins/module_utils/restart_plan.py (node_restart: names and modes -> manager states)."""

from __future__ import annotations

import pytest
from ansible_collections.akig.runbooks.plugins.module_utils.restart_plan import MODES, RestartPlanError, restart_plan
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize(
    ("names", "mode", "manager", "expected"),
    [
        # the default: no app is special, every name takes the role's mode
        (["akig-backend"], "reloaded", "pm2", [("akig-backend", "reloaded", "reloaded")]),
        (["akig-frontend"], "reloaded", "pm2", [("akig-frontend", "reloaded", "reloaded")]),
        (["akig-backend", "akig-worker"], "restarted", "pm2",
         [("akig-backend", "restarted", "restarted"), ("akig-worker", "restarted", "restarted")]),
        (["akig-backend"], "started", "pm2", [("akig-backend", "started", "started")]),
        # per-app choice
        (["akig-backend", {"name": "akig-frontend", "mode": "restarted"}], "reloaded", "pm2",
         [("akig-backend", "reloaded", "reloaded"), ("akig-frontend", "restarted", "restarted")]),
        ([{"name": "akig-backend"}], "started", "pm2", [("akig-backend", "started", "started")]),
        # systemd has no reload for a Node app: a restart
        (["akig-backend.service", {"name": "akig-worker.service", "mode": "started"}], "reloaded", "systemd",
         [("akig-backend.service", "reloaded", "restarted"), ("akig-worker.service", "started", "started")]),
        ([" akig-backend "], "restarted", "systemd", [("akig-backend", "restarted", "restarted")]),
        ([], "reloaded", "pm2", []),
        ((), "reloaded", "pm2", []),
    ],
)
def test_plan(names, mode, manager, expected):
    assert restart_plan(names, mode, manager) == [{"name": n, "mode": m, "state": s} for n, m, s in expected]


@pytest.mark.parametrize(
    ("names", "mode", "manager", "message"),
    [
        ("akig-backend", "reloaded", "pm2",
         "node_restart_names must be a list whose items are a process name (akig-backend) or a mapping "
         "{name: akig-frontend, mode: restarted} with mode one of reloaded, restarted, started; got 'akig-backend'"),
        ({"name": "akig-backend"}, "reloaded", "pm2", "node_restart_names must be a list whose items are"),
        ([""], "reloaded", "pm2", "node_restart_names[0] has no process name (''); node_restart_names must be a list"),
        ([42], "reloaded", "pm2", "node_restart_names[0] has no process name (42)"),
        ([{"mode": "restarted"}], "reloaded", "pm2", "node_restart_names[0] has no process name ({'mode': 'restarted'})"),
        (["a", {"name": "b", "mode": "bounced"}], "reloaded", "pm2",
         "node_restart_names[1].mode 'bounced' is not a restart mode; use one of reloaded, restarted, started"),
        ([{"name": "b", "state": "restarted"}], "reloaded", "pm2",
         "node_restart_names[0] has unknown keys state; accepted keys: name, mode"),
        (["a"], "bounced", "pm2", "node_restart_mode 'bounced' is not a restart mode; use one of reloaded, restarted, started"),
        (["a"], "reloaded", "supervisord", "node_restart_manager 'supervisord' is not a process manager; use one of pm2, systemd"),
    ],
)
def test_bad_input(names, mode, manager, message):
    with pytest.raises(RestartPlanError) as err:
        restart_plan(names, mode, manager)
    assert message in str(err.value)


item = st.one_of(
    st.sampled_from(["akig-backend", "akig-frontend", "akig-worker"]),
    st.fixed_dictionaries({"name": st.sampled_from(["akig-backend", "akig-frontend"])},
                          optional={"mode": st.sampled_from(MODES)}),
)


@given(names=st.lists(item, max_size=6), mode=st.sampled_from(MODES), manager=st.sampled_from(["pm2", "systemd"]))
def test_prop_plan_keeps_order_and_never_reloads_under_systemd(names, mode, manager):
    plan = restart_plan(names, mode, manager)
    assert [entry["name"] for entry in plan] == [n if isinstance(n, str) else n["name"] for n in names]
    for entry, given_item in zip(plan, names):
        own = given_item.get("mode") if isinstance(given_item, dict) else None
        assert entry["mode"] == (own or mode)
        assert entry["state"] == ("restarted" if manager == "systemd" and entry["mode"] == "reloaded" else entry["mode"])
