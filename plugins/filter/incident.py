# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Incident filters: which incident a run joins, its context, and who is told on which channel.

Thin wrappers around ``plugins/module_utils/incident_context.py`` and
``plugins/module_utils/comms_channels.py``; documentation lives in the sidecar YAML
files next to this one (one per filter name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible_collections.akig.runbooks.plugins.plugin_utils.filters import filter_errors
from ansible_collections.akig.runbooks.plugins.module_utils import comms_channels as _comms
from ansible_collections.akig.runbooks.plugins.module_utils import incident_context as _incident

_ERRORS = (_incident.IncidentContextError, _comms.CommsChannelsError)


_filter = filter_errors(*_ERRORS)


def incident_join_id(inputs: Any) -> str:
    return _incident.join_id(inputs)


def incident_context(inputs: Any, lookup: Any = None, now: Any = None, suffix: Any = None) -> dict[str, Any]:
    return _incident.incident_context(inputs, lookup, now, suffix)


def comms_channels(
    channels: Any,
    aliases: Any = None,
    oncall_phone: Any = "",
    oncall_email: Any = "",
    sms_fallbacks: Any = None,
    types: Any = _comms.CHANNEL_TYPES,
) -> list[dict[str, Any]]:
    return _comms.comms_channels(
        channels,
        aliases=aliases,
        oncall_phone=oncall_phone,
        oncall_email=oncall_email,
        sms_fallbacks=sms_fallbacks,
        types=types,
    )


class FilterModule:
    """AKIG incident filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {func.__name__: _filter(func) for func in (incident_join_id, incident_context, comms_channels)}
