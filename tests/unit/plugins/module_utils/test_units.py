from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.akig.runbooks.plugins.module_utils.units import UnitsError, lsn_bytes, size_bytes


@pytest.mark.parametrize(("value", "expected"), [
    (0, 0), (4096, 4096), ("1MiB", 1048576), ("1 MiB", 1048576), ("512kB", 512000), ("16MB", 16_000_000),
    ("2GiB", 2 * 1024 ** 3), ("100", 100), ("1.5KiB", 1536), ("10b", 10),
])
def test_size_bytes(value: object, expected: int) -> None:
    assert size_bytes(value) == expected


@pytest.mark.parametrize("value", [-1, "-1MiB", "1 parsec", "MiB", None, True, "5m"])
def test_size_bytes_refuses(value: object) -> None:
    with pytest.raises(UnitsError, match="size"):
        size_bytes(value)


@pytest.mark.parametrize(("value", "expected"), [("0/0", 0), ("0/3000148", 0x3000148), ("1/0", 1 << 32), (7, 7)])
def test_lsn_bytes(value: object, expected: int) -> None:
    assert lsn_bytes(value) == expected


@pytest.mark.parametrize("value", ["", "0-3000148", "G/1", None, -5, "0/123456789"])
def test_lsn_bytes_refuses(value: object) -> None:
    with pytest.raises(UnitsError, match="LSN"):
        lsn_bytes(value)


@given(st.integers(min_value=0, max_value=2 ** 64 - 1))
def test_lsn_round_trip_is_order_preserving(position: int) -> None:
    text = f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"
    assert lsn_bytes(text) == position
