"""Plain data types: messages, session summaries and the transcript records they map to.

They are NamedTuples rather than dataclasses on purpose: defining a dataclass
costs ~1 ms at import (plus importing ``dataclasses``), and every CLI call
pays for it. NamedTuples are immutable, typed, and ~5x cheaper to define.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple, TypeGuard

from sessionctl.errors import UsageError

ROLES = ("system", "user", "assistant", "tool")
ROLE_ALIASES = {"llm": "assistant"}
FORMAT_NAME = "sessionctl-transcript"
FORMAT_VERSION = 1

# Optional message fields, in the order they are written.
OPTIONAL_FIELDS = ("model", "usage", "tool_call_id", "tool_calls", "name", "metadata")
# Fields of a message that a model needs to replay the conversation.
REPLAY_FIELDS = ("tool_call_id", "tool_calls", "name")
# The optional fields Message.to_dict shows when set (seed APIs return metadata too).
PUBLIC_OPTIONAL_FIELDS = ("model", "usage", *REPLAY_FIELDS, "metadata")
# A seq is an int from 1 to MAX_SEQ: the index stores it as a signed 64-bit vector id.
MAX_SEQ = 2**63 - 1


def is_seq(value: object) -> TypeGuard[int]:
    """True for a valid message seq: an int (not a bool) from 1 to :data:`MAX_SEQ`."""
    return type(value) is int and 1 <= value <= MAX_SEQ


# What each message field of a transcript record may hold (None: the key may be absent).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "content": (str, type(None)),
    "created_at": (str,),
    "model": (str, type(None)),
    "usage": (dict, type(None)),
    "tool_call_id": (str, type(None)),
    "tool_calls": (list, type(None)),
    "name": (str, type(None)),
    "metadata": (dict, type(None)),
    "interrupted": (bool,),
}


def record_problem(record: dict[str, Any]) -> str | None:
    """Why a transcript message record is not a valid message, or None when it is.

    Readers treat such a record like any unparsable line: skipped with a warning,
    set aside (never lost) by the next rewrite.
    """
    seq = record.get("seq")
    if "seq" not in record:
        return "no seq"
    if not is_seq(seq):
        return f"seq is not a whole number from 1 to {MAX_SEQ}"
    ident = record.get("id")
    if type(ident) is not str or not ident:
        return "id is not a non-empty string"
    if record.get("role") not in ROLES:
        return f"role is not one of {', '.join(ROLES)}"
    for key, kinds in _FIELD_TYPES.items():
        if key in record and type(record[key]) not in kinds:
            return f"{key} has the wrong type"
    return None


def tool_call_parts(call: object) -> tuple[str, str, str]:
    """(name, id, arguments) of one stored tool call, for people ("?" when missing).

    Calls are stored as the provider sent them (OpenAI's ``{"id", "type",
    "function": {"name", "arguments"}}``); an odd shape shows what it can.
    """
    if not isinstance(call, dict):
        return "?", "", str(call)
    function = call.get("function")
    source = function if isinstance(function, dict) else call
    name, arguments = source.get("name"), source.get("arguments")
    if not isinstance(arguments, str):
        arguments = "" if arguments is None else json.dumps(arguments, ensure_ascii=False)
    ident = call.get("id")
    return (
        name if isinstance(name, str) and name else "?",
        ident if isinstance(ident, str) else "",
        arguments,
    )


def normalize_role(role: str) -> str:
    """Return the canonical role for ``role`` (``llm`` means assistant) or raise UsageError."""
    canonical = ROLE_ALIASES.get(role, role)
    if canonical not in ROLES:
        raise UsageError(f"invalid role {role!r}: use one of {', '.join(ROLES)} (or llm)")
    return canonical


class Message(NamedTuple):
    """One stored message: a record of the transcript."""

    id: str
    seq: int
    role: str
    content: str
    created_at: str
    model: str | None = None
    usage: dict[str, Any] | None = None
    tool_call_id: str | None = None
    tool_calls: list[Any] | None = None
    name: str | None = None
    metadata: dict[str, Any] | None = None
    interrupted: bool = False
    # Fields written by a newer sessionctl: kept so a rewrite never loses them.
    extra: dict[str, Any] | None = None
    # 1-based position in the transcript, kept by the store so the last record
    # alone tells how many messages there are (0: not stored).
    pos: int = 0

    def to_record(self) -> dict[str, Any]:
        """Return the JSON object stored for this message in the transcript."""
        record: dict[str, Any] = {
            "type": "message",
            "id": self.id,
            "seq": self.seq,
            "role": self.role,
            "content": self.content,
            "created_at": self.created_at,
        }
        for key in OPTIONAL_FIELDS:
            value = getattr(self, key)
            if value is not None:
                record[key] = value
        if self.interrupted:
            record["interrupted"] = True
        if self.pos:
            record["pos"] = self.pos
        for key, value in (self.extra or {}).items():
            record.setdefault(key, value)
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Message:
        """Build a message from a transcript record (unknown keys go to ``extra``)."""
        # "pos" and "more" are storage bookkeeping (docs/format.md), never message data.
        known = {"type", "id", "seq", "role", "content", "created_at", "interrupted", "pos", "more"}
        known.update(OPTIONAL_FIELDS)
        content = record.get("content")
        return cls(
            id=str(record["id"]),
            seq=int(record["seq"]),
            role=str(record["role"]),
            content="" if content is None else str(content),
            created_at=str(record.get("created_at", "")),
            model=record.get("model"),
            usage=record.get("usage"),
            tool_call_id=record.get("tool_call_id"),
            tool_calls=record.get("tool_calls"),
            name=record.get("name"),
            metadata=record.get("metadata"),
            interrupted=bool(record.get("interrupted", False)),
            extra={k: v for k, v in record.items() if k not in known} or None,
            pos=pos if is_seq(pos := record.get("pos")) else 0,
        )

    def to_dict(self, *, raw: bool = False) -> dict[str, Any]:
        """Return the public JSON shape: id, seq, role, content, created_at, then each
        optional field that is set (model, usage, tool fields, metadata, interrupted);
        ``raw`` adds what a newer sessionctl wrote, as stored."""
        if raw:
            record = self.to_record()
            del record["type"]
            record.pop("pos", None)  # storage bookkeeping, not message data
            return record
        out: dict[str, Any] = {
            "id": self.id,
            "seq": self.seq,
            "role": self.role,
            "content": self.content,
            "created_at": self.created_at,
        }
        for key in PUBLIC_OPTIONAL_FIELDS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.interrupted:
            out["interrupted"] = True
        return out

    def to_chat(self) -> dict[str, Any]:
        """Return the message as an OpenAI-style chat message (role, content, tool fields)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        for key in REPLAY_FIELDS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


class SessionInfo(NamedTuple):
    """A session's summary, as ``list`` shows it."""

    name: str
    messages: int
    created_at: str
    updated_at: str
    metadata: dict[str, Any]
    model: str | None = None
    system: str | None = None
    parent: str | None = None
    parent_message: str | None = None
    deleted_at: str | None = None
    trash_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the stable JSON shape used by ``list --json``."""
        out: dict[str, Any] = {
            "name": self.name,
            "messages": self.messages,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "model": self.model,
            "system": self.system,
            "parent": self.parent,
            "parent_message": self.parent_message,
            "metadata": self.metadata,
        }
        if self.deleted_at is not None:
            out["deleted_at"] = self.deleted_at
            out["trash_id"] = self.trash_id
        return out


class Page(NamedTuple):
    """One page of sessions and the cursor of the next page (None at the end)."""

    sessions: list[SessionInfo]
    next_cursor: str | None
