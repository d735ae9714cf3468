"""The session name rule (DESIGN §3)."""

from __future__ import annotations

import re

from sessionctl.errors import InvalidName

SESSION_NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
NAME_RULE = "names are 1-128 characters of A-Z a-z 0-9 . _ - and do not start with '.' or '-'"


def is_valid_name(name: str) -> bool:
    """Return True when ``name`` satisfies the session name rule."""
    return SESSION_NAME_PATTERN.fullmatch(name) is not None


def check_name(name: str) -> str:
    """Return ``name`` unchanged, or raise :class:`InvalidName` naming the rule."""
    if not is_valid_name(name):
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise InvalidName(f"invalid session name {shown!r}: {NAME_RULE}")
    return name
