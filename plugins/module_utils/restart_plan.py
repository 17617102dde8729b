# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How each process of a host is restarted (pure), for the ``node_restart`` role.

``node_restart_names`` lists the processes; each item is a name, which takes the
role's ``node_restart_mode``, or a mapping ``{name, mode}`` with its own mode.  The
filter ``akig.runbooks.restart_plan`` turns that list into ``[{name, mode, state}]``:

* pm2: ``state`` is the mode itself.  ``reloaded`` is a zero-downtime reload of an
  app that runs in cluster mode; the pm2 module restarts an app that runs in fork
  mode instead, since pm2 cannot reload it without downtime.
* systemd: ``reloaded`` becomes ``restarted`` (a Node app's unit has no
  ``ExecReload``); ``restarted`` and ``started`` stay.

No app name is special: whether an app is reloaded or restarted is the caller's
choice per item, and how pm2 runs it.  Bad input raises :class:`RestartPlanError`
(a ``ValueError``) whose message says what is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MANAGERS", "MODES", "RestartPlanError", "restart_plan"]

MODES = ("reloaded", "restarted", "started")
MANAGERS = ("pm2", "systemd")
ITEM_KEYS = ("name", "mode")
_ACCEPTED = (
    "node_restart_names must be a list whose items are a process name (akig-backend) or a "
    "mapping {name: akig-frontend, mode: restarted} with mode one of reloaded, restarted, started"
)


class RestartPlanError(ValueError):
    """A restart list the role cannot act on; the message says what is accepted."""


def _mode(value: Any, where: str) -> str:
    if value not in MODES:
        raise RestartPlanError(
            f"{where} {value!r} is not a restart mode; use one of {', '.join(MODES)}"
        )
    return value


def restart_plan(names: Any, mode: Any = "reloaded", manager: Any = "pm2") -> list[dict[str, str]]:
    """``[{name, mode, state}]``: each process, its mode, and the state to ask its manager for.

    An empty list gives an empty plan (the role then only waits for the health gate).
    """
    default_mode = _mode(mode, "node_restart_mode")
    if manager not in MANAGERS:
        raise RestartPlanError(
            f"node_restart_manager {manager!r} is not a process manager; use one of {', '.join(MANAGERS)}"
        )
    if isinstance(names, (str, bytes, Mapping)) or not isinstance(names, Sequence):
        raise RestartPlanError(f"{_ACCEPTED}; got {names!r}")

    plan = []
    for index, item in enumerate(names):
        where = f"node_restart_names[{index}]"
        if isinstance(item, Mapping):
            unknown = sorted(str(key) for key in item if key not in ITEM_KEYS)
            if unknown:
                raise RestartPlanError(
                    f"{where} has unknown keys {', '.join(unknown)}; accepted keys: {', '.join(ITEM_KEYS)}"
                )
            name = item.get("name")
            item_mode = _mode(item.get("mode", default_mode), f"{where}.mode")
        else:
            name, item_mode = item, default_mode
        if not isinstance(name, str) or not name.strip():
            raise RestartPlanError(f"{where} has no process name ({item!r}); {_ACCEPTED}")
        state = "restarted" if manager == "systemd" and item_mode == "reloaded" else item_mode
        plan.append({"name": name.strip(), "mode": item_mode, "state": state})
    return plan
