# -*- coding: utf-8 -*-
# Copyright: (c) 2026, AKIG SRE team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of akig.runbooks.incident_notify: on the controller, the module runs in Ansible's task worker.

See plugins/plugin_utils/in_process.py: the same argument checks, check mode and masking as the module,
without a new Python; anywhere else (another host, become, async with polling, another Python, or
akig_runbooks_in_process=false) the module runs the usual way. In the background (async, poll 0) it runs in a
detached child of the worker, and async_status reads its result as it reads async_wrapper's.
"""

from __future__ import annotations

from ansible_collections.akig.runbooks.plugins.modules import incident_notify as _module
from ansible_collections.akig.runbooks.plugins.plugin_utils.in_process import InProcessAction


class ActionModule(InProcessAction):
    execute = staticmethod(_module.execute)
    module_kwargs = _module.MODULE_KWARGS
    # the alert of a runbook goes out in the background (async, poll 0): a detached child of the worker sends it
    background_in_process = True
