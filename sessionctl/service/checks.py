"""Argument checks shared by the service modules (no service imports: no cycles)."""

from __future__ import annotations

from collections.abc import Iterable

from sessionctl.errors import UsageError
from sessionctl.models import normalize_role


def roles_filter(role: str | Iterable[str] | None) -> frozenset[str] | None:
    """Return the canonical roles to keep, or None for all."""
    if role is None:
        return None
    roles = [role] if isinstance(role, str) else list(role)
    return frozenset(normalize_role(r) for r in roles) or None


def check_top_k(top_k: int) -> int:
    """Return ``top_k`` or raise UsageError: it must be a whole number ≥ 0."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise UsageError(f"top_k must be a whole number of 0 or more, got {top_k!r}")
    return top_k
