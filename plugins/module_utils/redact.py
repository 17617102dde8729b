# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Masking secrets in text that leaves a module: one marker, one way to do it.

Error messages, ``actions`` and diffs may quote what a server or a provider said, and that can
echo a password, a token or a URL carrying one. Before such text is returned it goes through a
:class:`Redactor` built from the secret values the module knows, which puts :data:`MASK` in
their place.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

__all__ = ["MASK", "Redactor", "redact"]

MASK = "[REDACTED]"


class Redactor:
    """Replaces every known secret value found in a text by :data:`MASK`.

    Values shorter than ``min_length`` are ignored (masking a two-letter password would garble
    every word that contains those letters); empty values and non-strings always are. Longer
    values are replaced first, so a secret that contains another one is masked whole. The
    redactor's ``repr`` never shows a secret.
    """

    def __init__(self, secrets: Iterable[Optional[str]], min_length: int = 1) -> None:
        wanted = max(1, min_length)
        self._secrets = sorted(
            {value for value in secrets if isinstance(value, str) and len(value) >= wanted},
            key=len,
            reverse=True,
        )

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __repr__(self) -> str:
        return "Redactor(<%d secret(s)>)" % len(self._secrets)

    def __call__(self, text: Any) -> str:
        value = str(text)
        for secret in self._secrets:
            value = value.replace(secret, MASK)
        return value


def redact(text: Any, *secrets: Optional[str], min_length: int = 1) -> str:
    """``text`` with each of ``secrets`` replaced by :data:`MASK` (a one-off :class:`Redactor`)."""
    return Redactor(secrets, min_length=min_length)(text)
