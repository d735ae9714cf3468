"""The session-level state kept in a transcript's first line."""

from __future__ import annotations

from typing import Any

from sessionctl.backend.base import HeaderPatch, SessionHeader
from sessionctl.models import FORMAT_NAME, FORMAT_VERSION, Message, SessionInfo

_HEADER_KEYS = (
    "uid", "created_at", "updated_at", "model", "system", "metadata",
    "parent", "parent_message", "base_seq", "base_count",
)  # fmt: skip


class Header:
    """Session-level state kept in the transcript's first line (mutable).

    ``base_seq``/``base_count`` are the highest seq ever used and the number
    of messages at the last rewrite: with the last record's seq they give the
    message count and the next seq without reading the whole file.
    """

    __slots__ = (
        "base_count",
        "base_seq",
        "created_at",
        "extra",
        "metadata",
        "model",
        "parent",
        "parent_message",
        "system",
        "uid",
        "updated_at",
    )  # fmt: skip

    def __init__(
        self,
        uid: str,
        created_at: str,
        updated_at: str,
        model: str | None = None,
        system: str | None = None,
        metadata: dict[str, Any] | None = None,
        parent: str | None = None,
        parent_message: str | None = None,
        base_seq: int = 0,
        base_count: int = 0,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.uid = uid
        self.created_at = created_at
        self.updated_at = updated_at
        self.model = model
        self.system = system
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.parent = parent
        self.parent_message = parent_message
        self.base_seq = base_seq
        self.base_count = base_count
        self.extra: dict[str, Any] = dict(extra or {})

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"Header({fields})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Header):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def to_record(self) -> dict[str, Any]:
        """Return the header line's JSON object."""
        record: dict[str, Any] = {
            "type": "header",
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
        }
        for key in _HEADER_KEYS:
            record[key] = getattr(self, key)
        for key, value in self.extra.items():
            record.setdefault(key, value)
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Header:
        """Parse a header record of this or an older format version."""
        known = {"type", "format", "version", *_HEADER_KEYS}
        metadata = record.get("metadata") or {}
        return cls(
            uid=str(record.get("uid") or ""),
            created_at=str(record.get("created_at") or ""),
            updated_at=str(record.get("updated_at") or record.get("created_at") or ""),
            model=record.get("model"),
            system=record.get("system"),
            metadata=dict(metadata) if isinstance(metadata, dict) else {},
            parent=record.get("parent"),
            parent_message=record.get("parent_message"),
            base_seq=int(record.get("base_seq") or 0),
            base_count=int(record.get("base_count") or 0),
            extra={k: v for k, v in record.items() if k not in known},
        )

    def next_seq(self, high_seq: int) -> int:
        """Return the seq the next message gets, given the highest seq used since the header."""
        return max(self.base_seq, high_seq) + 1

    def count(self, last_seq: int) -> int:
        """Return how many messages the transcript holds, given its last message's seq."""
        return self.base_count + max(0, last_seq - self.base_seq)


def message_count(header: Header, last: Message | None) -> int:
    """Return the message count from the last message's position (O(1))."""
    if last is None:
        return 0
    if last.pos:
        return last.pos
    return header.count(last.seq)  # a record without a position (hand-written)


def session_info(name: str, header: Header, count: int, updated_at: str) -> SessionInfo:
    """Return the summary ``list`` shows for a session."""
    return SessionInfo(
        name=name,
        messages=count,
        created_at=header.created_at,
        updated_at=updated_at,
        model=header.model,
        system=header.system,
        parent=header.parent,
        parent_message=header.parent_message,
        metadata=dict(header.metadata),
    )


def public_header(header: Header) -> SessionHeader:
    """The backend-neutral view of ``header`` (no rewrite bookkeeping)."""
    return SessionHeader(
        uid=header.uid,
        created_at=header.created_at,
        updated_at=header.updated_at,
        model=header.model,
        system=header.system,
        metadata=dict(header.metadata),
        parent=header.parent,
        parent_message=header.parent_message,
        extra=dict(header.extra),
    )


def file_header(header: SessionHeader) -> Header:
    """A transcript header for ``header`` (the bookkeeping is filled in on write)."""
    return Header(
        uid=header.uid,
        created_at=header.created_at,
        updated_at=header.updated_at,
        model=header.model,
        system=header.system,
        metadata=dict(header.metadata),
        parent=header.parent,
        parent_message=header.parent_message,
        extra=dict(header.extra),
    )


def apply_patch(header: Header, patch: HeaderPatch) -> bool:
    """Apply ``patch`` to ``header`` in place; return True when that changed anything."""
    before = (header.model, header.system, dict(header.metadata))
    for key, value in patch.fields.items():
        if key not in ("model", "system"):
            raise ValueError(f"unknown header field {key!r}")
        setattr(header, key, value)
    if patch.metadata:
        header.metadata.update(patch.metadata)
    for key in patch.unset:
        header.metadata.pop(key, None)
    return (header.model, header.system, header.metadata) != before
