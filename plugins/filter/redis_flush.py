# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The redis_flush role's input check as a filter.

A thin wrapper around ``plugins/module_utils/redis_keys.py``; documentation lives in the sidecar
YAML file next to this one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.akig.runbooks.plugins.module_utils.redis_keys import flush_input_problems


def redis_flush_problems(inputs: Any) -> list[str]:
    if not isinstance(inputs, Mapping):
        raise AnsibleFilterError("redis_flush_problems: give the role's inputs as a dict, got %s" % type(inputs).__name__)
    return flush_input_problems(dict(inputs))


class FilterModule:
    """redis_flush filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"redis_flush_problems": redis_flush_problems}
