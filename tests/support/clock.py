# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A fake clock for code that takes ``clock`` and ``sleep`` callables: time moves only when the code under
test sleeps (or when a test moves ``now`` itself, e.g. for a command that "takes" time)."""

from __future__ import annotations

from typing import List


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: List[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
