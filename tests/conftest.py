# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hypothesis profiles for every test under tests/ (and nothing else).

* ``ci``: derandomized (examples drawn from a seed derived from each test, so two runs of the same
  code test the same examples), no deadline (a loaded CI machine must not turn slowness into a
  failure), no example database (nothing a previous run saved changes the next one), and the
  reproduction blob printed with any failure.
* ``dev``: Hypothesis' defaults -- random examples, the default number of them.

``ci`` is loaded when ``HYPOTHESIS_PROFILE=ci`` or when ``CI`` is set (non-empty, as CI runners set
it); ``HYPOTHESIS_PROFILE=dev`` asks for ``dev`` explicitly; otherwise ``dev``. ``--hypothesis-profile``
on the pytest command line still overrides both.

A test's own ``@settings(...)`` (max_examples, deadline, ...) inherits from the loaded profile, because
this file is imported before any test module: it must not set ``derandomize`` or a seed itself.

tests/lab does ``from conftest import ...`` for its own conftest.py: pytest loads this file first (it is
the parent directory's) and drops it from ``sys.modules`` before it loads tests/lab/conftest.py, so that
import keeps finding the lab's module. Keep this file free of fixtures and helpers for that reason.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True, database=None)
settings.register_profile("dev")


def _profile(environ: Mapping[str, str]) -> str:
    chosen = environ.get("HYPOTHESIS_PROFILE", "").strip()
    if chosen in ("ci", "dev"):
        return chosen
    return "ci" if environ.get("CI", "").strip() else "dev"


settings.load_profile(_profile(os.environ))
