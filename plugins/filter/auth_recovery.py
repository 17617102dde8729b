# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""RB-P1-002 filters: the JWT secret drift findings from keyed fingerprints.

A thin wrapper around ``plugins/module_utils/auth_recovery.py``; documentation lives in the sidecar
YAML file next to this one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ansible_collections.akig.runbooks.plugins.plugin_utils.filters import filter_errors
from ansible_collections.akig.runbooks.plugins.module_utils import auth_recovery as _auth

_filter = filter_errors(ValueError)


def auth_secret_drift(hosts: Any, staging: Any = None, staging_reason: Any = "") -> dict[str, Any]:
    # ansible-core 2.19 hands lazy containers to filters: work on a plain copy
    plain = json.loads(json.dumps(hosts, default=str))
    if not isinstance(plain, dict):
        raise ValueError("auth_secret_drift expects a mapping host -> fingerprints, got %s" % type(plain).__name__)
    return _auth.drift_findings(plain, str(staging) if staging else None, str(staging_reason or ""))


class FilterModule:
    """AKIG authentication recovery filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"auth_secret_drift": _filter(auth_secret_drift)}
