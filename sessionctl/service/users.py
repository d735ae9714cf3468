"""Users: a session can belong to one user (as in Zep), kept in its header's metadata.

The owner is the header metadata key ``user`` (what :func:`sessionctl.capture` with
``user=`` writes). Filtering by user is a session-level restriction: a message's own
metadata never makes it part of another user's results.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sessionctl.errors import UsageError

if TYPE_CHECKING:
    from sessionctl.backend.base import SessionStore

USER_KEY = "user"


def check_user(user: object) -> str:
    """Return ``user`` when it is a valid user id (non-empty text, no control
    characters, not only spaces), else raise UsageError."""
    if not isinstance(user, str):
        raise UsageError(f"user must be text, got {type(user).__name__}")
    if not user.strip():
        raise UsageError("user must not be empty")
    if any(unicodedata.category(c) == "Cc" for c in user):
        raise UsageError(f"user must not contain control characters, got {user!r}")
    return user


def owner(metadata: Mapping[str, Any] | None) -> Any:
    """The session's user as stored (None: it belongs to nobody)."""
    return None if metadata is None else metadata.get(USER_KEY)


def refuse_other(name: str, metadata: Mapping[str, Any] | None, user: str) -> None:
    """UsageError when the session ``name`` already belongs to a user other than ``user``."""
    held = owner(metadata)
    if held is not None and held != user:
        raise UsageError(f"session {name!r} belongs to another user ({held!r}), not {user!r}")


def user_sessions(backend: SessionStore, user: str) -> list[str]:
    """Names of the live sessions of ``user``, most recently active first (ties by name).

    One listing: the backend's ``list_live`` already returns every header's metadata
    (one query in PostgreSQL; each header and last record in the file backend). A
    session that cannot be read is left out (with the backend's warning).
    """
    check_user(user)
    return [info.name for info, _ in backend.list_live(None) if owner(info.metadata) == user]
