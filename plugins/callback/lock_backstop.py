# -*- coding: utf-8 -*-
# Copyright (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: lock_backstop
type: notification
author: AKIG Engineering Team (@akig-sre)
short_description: Release the incident lock of a run that ended before its close
description:
  - The runbook frame (role C(akig.runbooks.runbook)) releases the incident lock in its C(close) entry point on
    every way a run ends that Ansible lets a play handle. A few ways end the run before any later play runs
    (a fatal error such as a malformed file included at run time, or every host of a batch lost in the middle
    of a play); then the lock would stay held until its TTL runs out and block the next runbook.
  - This callback is the backstop for those. It remembers the lock the run holds (the C(akig_incident_lock) fact
    the lock role sets) and, when the C(ansible-playbook) process ends while that lock still has a token,
    releases it with its fencing token (only this run's lock; another holder's is never touched), adds a comment
    to the incident's ticket saying the run ended before its close, and prints a warning.
  - It reads the lock and ticket settings of the controller (C(incident_lock_*), C(akig_ticket_base_url),
    C(akig_ticket_api_token)) from the inventory when each play starts; they stay in memory and are never written
    or printed.
  - A run killed with SIGKILL runs nothing at all; its lock expires after C(incident_lock_ttl) seconds.
requirements:
  - Enable it with C(callbacks_enabled = akig.runbooks.timeline, akig.runbooks.lock_backstop) in C(ansible.cfg).
"""

import atexit
from collections.abc import Mapping
from typing import Any, Optional

from ansible.plugins.callback import CallbackBase
from ansible.utils.display import Display

display = Display()

_SETTINGS = {
    "backend": "incident_lock_backend",
    "redis_host": "incident_lock_redis_host",
    "redis_port": "incident_lock_redis_port",
    "redis_password": "incident_lock_redis_password",
    "redis_db": "incident_lock_redis_db",
    "lock_dir": "incident_lock_dir",
    "ticket_base_url": "akig_ticket_base_url",
    "ticket_api_token": "akig_ticket_api_token",
}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "akig.runbooks.lock_backstop"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._settings: dict[str, Any] = {}
        self._lock: Optional[Mapping[str, Any]] = None
        self._incident: Optional[Mapping[str, Any]] = None
        self._runbook = "a runbook"
        self._done = False
        atexit.register(self._backstop, "the ansible-playbook process ended")

    # -- what the run holds -------------------------------------------------------------------
    def v2_playbook_on_play_start(self, play: Any) -> None:
        try:
            # import now what the backstop needs: at interpreter exit no module may register atexit handlers
            from ansible_collections.akig.runbooks.plugins.module_utils import incident_lock as _lock  # noqa: F401
            from ansible_collections.akig.runbooks.plugins.module_utils import ticket as _ticket  # noqa: F401
            if (self._settings.get("backend") or "redis") == "redis":
                from ansible_collections.akig.runbooks.plugins.module_utils import incident_lock_redis  # noqa: F401
        except Exception as exc:
            display.vvv("lock_backstop: %s" % type(exc).__name__)
        try:
            from ansible.template import Templar, trust_as_template

            manager = play.get_variable_manager()
            host = manager._inventory.get_host("localhost")
            variables = manager.get_vars(play=play, host=host)
            templar = Templar(loader=play._loader, variables=variables)
            for key, var in _SETTINGS.items():
                if var in variables:
                    self._settings[key] = templar.template(trust_as_template("{{ %s }}" % var))
        except Exception as exc:  # never fail a play because of the backstop
            display.vvv("lock_backstop: could not read the lock settings: %s" % type(exc).__name__)

    def v2_runner_on_ok(self, result: Any) -> None:
        facts = (getattr(result, "_result", None) or {}).get("ansible_facts") or {}
        if not isinstance(facts, Mapping):
            return
        if isinstance(facts.get("akig_incident_lock"), Mapping):
            self._lock = dict(facts["akig_incident_lock"])
        if isinstance(facts.get("akig_incident"), Mapping):
            self._incident = dict(facts["akig_incident"])
        run = facts.get("akig_run")
        if isinstance(run, Mapping) and run.get("runbook"):
            self._runbook = str(run["runbook"])

    def v2_playbook_on_stats(self, stats: Any) -> None:
        self._backstop("the playbook ended")

    # -- the backstop ---------------------------------------------------------------------------
    def _backstop(self, how: str) -> None:
        if self._done:
            return
        lock = self._lock or {}
        token = lock.get("token")
        if token in (None, "", "None"):
            return
        self._done = True
        environment = str(lock.get("environment") or "")
        try:
            from ansible_collections.akig.runbooks.plugins.module_utils import incident_lock as _lock

            params = {
                "backend": lock.get("backend") or self._settings.get("backend") or "redis",
                "redis_host": self._settings.get("redis_host"),
                "redis_port": int(self._settings.get("redis_port") or 6379),
                "redis_password": self._settings.get("redis_password") or None,
                "redis_db": int(self._settings.get("redis_db") or 0),
                "lock_dir": self._settings.get("lock_dir"),
            }
            result = _lock.release(_lock.make_store(params), environment, int(token))
            released = "; ".join(result.get("actions") or [])
        except Exception as exc:
            display.warning(
                "%s ended before its close (%s) and the incident lock for environment '%s' could not be released "
                "by the backstop (%s): it expires after its TTL; check it with the incident_lock module "
                "(state=query)" % (self._runbook, how, environment, getattr(exc, "msg", None) or "%s: %s" % (type(exc).__name__, str(exc)[:200])))
            return
        display.warning(
            "%s ended before its close (%s): the backstop released the incident lock. %s Check what the run "
            "did before running it again." % (self._runbook, how, released))
        self._comment_ticket(how)

    def _comment_ticket(self, how: str) -> None:
        incident = (self._incident or {}).get("id")
        url, token = self._settings.get("ticket_base_url"), self._settings.get("ticket_api_token")
        if not (incident and url and token):
            return
        try:
            from ansible_collections.akig.runbooks.plugins.module_utils import ticket as _ticket

            _ticket.ensure_ticket(
                _ticket.TicketClient(str(url), str(token)), incident_id=str(incident), state="commented",
                comment="Runbook %s FAILED: it ended before its close (%s, a fatal error or every host of a play "
                        "lost); the incident lock was released by the controller. Manual action required."
                        % (self._runbook, how))
        except Exception as exc:
            display.warning("the ticket of %s could not be commented by the backstop (%s); note it by hand"
                            % (incident, type(exc).__name__))
