# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sizes and PostgreSQL LSNs as numbers: pure functions shared by filters and modules."""
from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT](?:i[bB]?|[bB])|[bB])?\s*$")
_FACTORS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "ki": 1024, "kib": 1024,
    "m": 1000 ** 2, "mb": 1000 ** 2, "mi": 1024 ** 2, "mib": 1024 ** 2,
    "g": 1000 ** 3, "gb": 1000 ** 3, "gi": 1024 ** 3, "gib": 1024 ** 3,
    "t": 1000 ** 4, "tb": 1000 ** 4, "ti": 1024 ** 4, "tib": 1024 ** 4,
}
_LSN = re.compile(r"^\s*([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\s*$")


class UnitsError(ValueError):
    """Bad input; the message says what is accepted."""


def size_bytes(value: object) -> int:
    """'1MiB' -> 1048576, '512kB' -> 512000, 4096 -> 4096. Negative or unknown units are refused."""
    if isinstance(value, bool):
        raise UnitsError(f"size {value!r} is a boolean; give bytes as a number or a string like 1MiB, 512kB, 16MB")
    if isinstance(value, (int, float)):
        if value < 0:
            raise UnitsError(f"size {value!r} is negative; sizes are >= 0 bytes")
        return int(value)
    if not isinstance(value, str):
        raise UnitsError(f"size {value!r} is not a number or a string like 1MiB, 512kB, 16MB")
    match = _SIZE.match(value)
    if not match:
        raise UnitsError(f"size {value!r} is not understood; use bytes or a number with a unit "
                         "(B, kB, KiB, MB, MiB, GB, GiB, TB, TiB), for example 1MiB")
    unit = (match.group(2) or "").lower()
    return int(float(match.group(1)) * _FACTORS[unit])


def lsn_bytes(value: object) -> int:
    """A PostgreSQL LSN 'X/Y' (as printed by pg_controldata or pg_current_wal_lsn()) as a byte position."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _LSN.match(value) if isinstance(value, str) else None
    if not match:
        raise UnitsError(f"LSN {value!r} is not understood; expected two hexadecimal parts like 0/3000148")
    return (int(match.group(1), 16) << 32) + int(match.group(2), 16)
