"""Names that become one path component of a store: experiments, runs, fits."""

from __future__ import annotations

import re

from storage.errors import StoreError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def is_name(name: object) -> bool:
    """Whether `name` is safe as one path component (no `/`, `..`, or odd characters)."""
    return isinstance(name, str) and _NAME.match(name) is not None and ".." not in name


def check_name(name: str, *, what: str) -> str:
    """`name` if it is safe as one path component (no `/`, `..`, or odd characters)."""
    if not is_name(name):
        raise StoreError(
            f"invalid {what} name {name!r}",
            hint="use letters, digits, '_', '-', '.'; at most 128 characters",
        )
    return name
