# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who gets an incident message, on which channel, with which fallback (pure).

The ``incident_comms`` role turns the contacts due at the current escalation tier
(the ``channels`` of ``akig.runbooks.escalation_tier``) into the channel list of the
``akig.runbooks.incident_notify`` module through the filter
``akig.runbooks.comms_channels``:

* placeholders of the escalation policy (``on-call-engineer``, ``#akig-incidents``)
  become what they stand for (``aliases``);
* the runbook's fallbacks: the on-call engineer's SMS falls back to an e-mail to
  ``oncall_email``; an e-mail to an address listed in ``sms_fallbacks`` falls back
  to an SMS to that address's number;
* only the channel types the notifier sends (slack, sms, email) are kept.

Bad input raises :class:`CommsChannelsError` (a ``ValueError``) whose message says
what is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["CHANNEL_TYPES", "CommsChannelsError", "comms_channels"]

CHANNEL_TYPES = ("slack", "sms", "email")


class CommsChannelsError(ValueError):
    """Input the channel list cannot be built from; the message says what is accepted."""


def _mapping_of_text(value: Any, name: str, example: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(key, str) and isinstance(target, str) for key, target in value.items()
    ):
        raise CommsChannelsError(
            f"{name} must be a mapping of text to text, like {example} (quote phone numbers, or "
            f"YAML reads them as integers); got {value!r}"
        )
    return dict(value)


def comms_channels(
    channels: Any,
    aliases: Any = None,
    oncall_phone: Any = "",
    oncall_email: Any = "",
    sms_fallbacks: Any = None,
    types: Any = CHANNEL_TYPES,
) -> list[dict[str, Any]]:
    """The ``channels`` of incident_notify for the contacts due, in escalation order.

    ``channels`` maps a channel type to its targets (``{sms: [on-call-engineer],
    email: [cto@akig.com]}``, the ``channels`` of ``escalation_tier``; the whole
    ``escalation_tier`` result is accepted too).  Each target becomes
    ``{type, to, fallbacks}``; types outside ``types`` are left out.
    """
    if isinstance(channels, Mapping) and isinstance(channels.get("channels"), Mapping):
        channels = channels["channels"]  # the escalation_tier result itself
    accepted = "a mapping of channel type -> list of targets, like {sms: [on-call-engineer], email: [cto@akig.com]}"
    if not isinstance(channels, Mapping):
        raise CommsChannelsError(
            f"channels must be {accepted} (the channels of akig.runbooks.escalation_tier), "
            f"got {type(channels).__name__}"
        )
    alias = _mapping_of_text(aliases, "aliases", "{on-call-engineer: '+33600000000'}")
    fallback_sms = _mapping_of_text(
        sms_fallbacks, "sms_fallbacks", "{cto@akig.com: '+33611111111'}"
    )
    for name, value in (("oncall_phone", oncall_phone), ("oncall_email", oncall_email)):
        if value is not None and not isinstance(value, str):
            raise CommsChannelsError(
                f"{name} must be text (empty for none; quote phone numbers), got {type(value).__name__} {value!r}"
            )
    if isinstance(types, str) or not isinstance(types, Sequence):
        raise CommsChannelsError(
            f"types must be a list of channel types like {list(CHANNEL_TYPES)}, got {types!r}"
        )

    result: list[dict[str, Any]] = []
    for kind, targets in channels.items():
        if kind not in types:
            continue
        if isinstance(targets, str) or not isinstance(targets, Sequence) or not all(
            isinstance(target, str) for target in targets
        ):
            raise CommsChannelsError(
                f"channels.{kind} must be a list of targets (text), got {targets!r}; channels must be {accepted}"
            )
        for target in targets:
            to = alias.get(target, target)
            fallbacks: list[dict[str, str]] = []
            if kind == "sms" and to == oncall_phone and oncall_email:
                fallbacks = [{"type": "email", "to": oncall_email}]
            elif kind == "email" and to in fallback_sms:
                fallbacks = [{"type": "sms", "to": fallback_sms[to]}]
            result.append({"type": kind, "to": to, "fallbacks": fallbacks})
    return result
