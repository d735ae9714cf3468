"""Message rows of ``sc_message`` to :class:`~sessionctl.models.Message` (shared by the
session and vector stores)."""

from __future__ import annotations

from typing import Any

from sessionctl.models import Message

MSG_COLS = (
    "seq, id, role, content, created_at, model, usage, tool_call_id, tool_calls, name,"
    " metadata, interrupted, extra, content_raw"
)


def message(row: tuple[Any, ...]) -> Message:
    return Message(
        id=row[1], seq=int(row[0]), role=row[2],
        content=row[3] if row[13] is None else bytes(row[13]).decode(), created_at=row[4],
        model=row[5], usage=row[6], tool_call_id=row[7], tool_calls=row[8], name=row[9],
        metadata=row[10], interrupted=bool(row[11]), extra=row[12] or None,
    )  # fmt: skip
