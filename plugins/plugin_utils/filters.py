# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every filter plugin of the collection shares: turning a module_utils input error into the
``AnsibleFilterError`` Ansible shows the user (its message says what is accepted)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from ansible.errors import AnsibleFilterError


def filter_errors(*errors: type[BaseException]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator exposing a pure function as a filter: ``errors`` become ``AnsibleFilterError``."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except errors as exc:
                raise AnsibleFilterError(str(exc)) from exc

        return wrapper

    return decorate
