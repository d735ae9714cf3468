"""Types private to the file backend (the interfaces are in :mod:`sessionctl.backend.base`)."""

from __future__ import annotations

from collections.abc import Callable

from sessionctl.backend.files.transcript import Header
from sessionctl.models import Message

# Given the current header and messages, return the new ones (under the lock): the
# file backend's whole-transcript rewrite, behind clear, drop by id and edit_messages.
Transform = Callable[[Header, list[Message]], tuple[Header, list[Message]]]
