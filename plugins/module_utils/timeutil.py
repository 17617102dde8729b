# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ISO 8601 timestamps in UTC: the one parser and the one formatter of the collection.

Modules, filters and the callback read and write timestamps such as ``2026-11-27T14:23:00Z``.
They differ only in what they accept (a naive value is UTC, or is refused) and how precise they
write (whole seconds, milliseconds); those choices are arguments here, so the parsing itself
lives in one place.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

__all__ = ["NAIVE_POLICIES", "TIMESPECS", "UTC", "format_utc", "parse_iso8601", "utc_now"]

UTC = timezone.utc
NAIVE_POLICIES = ("reject", "utc", "keep")
TIMESPECS = ("seconds", "milliseconds", "auto")


def utc_now() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def parse_iso8601(value: Any, naive: str = "reject") -> Optional[datetime]:
    """An ISO 8601 string (``Z`` or an offset) or a datetime as an aware UTC datetime; None when it is not one.

    ``naive`` says what to do with a value without an offset: ``reject`` (None), ``utc`` (take it as
    UTC) or ``keep`` (return it naive, unchanged, so the caller can say why it refuses it).
    Surrounding white space is ignored; an empty string, another type or an unparsable string give None.
    """
    if naive not in NAIVE_POLICIES:
        raise ValueError("naive must be one of %s, got %r" % (", ".join(NAIVE_POLICIES), naive))
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        if naive == "reject":
            return None
        if naive == "keep":
            return parsed
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_utc(value: datetime, timespec: str = "seconds") -> str:
    """``value`` in UTC as ISO 8601 with a ``Z`` suffix; a naive value is taken as UTC.

    ``timespec``: ``seconds`` (``2026-11-27T14:23:00Z``), ``milliseconds``
    (``2026-11-27T14:23:00.412Z``) or ``auto`` (microseconds only when there are any). Finer digits
    are cut, never rounded up, so a written time is never later than the real one.
    """
    if timespec not in TIMESPECS:
        raise ValueError("timespec must be one of %s, got %r" % (", ".join(TIMESPECS), timespec))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec=timespec) + "Z"
