# -*- coding: utf-8 -*-
# Copyright: (c) 2026, AKIG SRE team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of akig.runbooks.app_probe: on the controller, the module runs in Ansible's task worker.

See plugins/plugin_utils/in_process.py: the same argument checks, check mode and masking as the module,
without a new Python; anywhere else (another host, become, async, another Python, or
akig_runbooks_in_process=false) the module runs the usual way.
"""

from __future__ import annotations

from ansible_collections.akig.runbooks.plugins.modules import app_probe as _module
from ansible_collections.akig.runbooks.plugins.plugin_utils.in_process import InProcessAction


class ActionModule(InProcessAction):
    execute = staticmethod(_module.execute)
    module_kwargs = _module.MODULE_KWARGS
