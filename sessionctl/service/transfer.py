"""Whole sessions in and out: to_dict/from_dict, export and import.

Import only ever parses JSON: nothing in an imported file is executed. The checks
of what is imported are in :mod:`sessionctl.service.importing`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from sessionctl.backend.base import SessionHeader
from sessionctl.errors import UsageError
from sessionctl.ids import new_ulid
from sessionctl.jsonlines import encode
from sessionctl.models import FORMAT_NAME, FORMAT_VERSION
from sessionctl.names import check_name, is_valid_name
from sessionctl.redact import redact_message
from sessionctl.service.importing import (
    MAX_BYTES,
    MAX_LINE_BYTES,
    SESSION_KEYS,
    Invalid,
    Readable,
    Record,
    build_messages,
    read_import,
    refuse,
    session_fields,
)
from sessionctl.timeutil import now_iso

if TYPE_CHECKING:
    from sessionctl.service.session import Session
    from sessionctl.service.store import Store

EXPORT_FORMATS = ("jsonl", "json", "markdown")
EXPORT_ALIASES = {"md": "markdown"}
_SESSION_KEYS = (
    "created_at",
    "updated_at",
    "model",
    "system",
    "metadata",
    "parent",
    "parent_message",
)


def session_to_dict(session: Session) -> dict[str, Any]:
    """Return ``session`` as one JSON-ready object: its state and every message (raw)."""
    head, messages = session_stream(session)
    return {**head, "messages": list(messages)}


def session_stream(session: Session) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """Return the :func:`session_to_dict` fields but ``messages``, and the messages (raw
    dicts) as an iterator that reads the transcript as it goes (constant memory)."""
    opened = session._backend.stream(session.name)
    header = opened.header
    out: dict[str, Any] = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "name": session.name}
    for key in SESSION_KEYS:
        out[key] = getattr(header, key)
    return out, (m.to_dict(raw=True) for m in opened.messages)


def json_chunks(
    head: Mapping[str, Any], key: str, items: Iterable[Any], *, ensure_ascii: bool
) -> Iterator[str]:
    """Yield ``json.dumps({**head, key: list(items)}, indent=2)`` piece by piece, the
    same text, with one item in memory at a time (``key`` comes last)."""
    body = json.dumps(dict(head), ensure_ascii=ensure_ascii, indent=2)
    yield (body[:-2] + ",\n" if head else "{\n") + "  " + json.dumps(key) + ": ["
    first = True
    for item in items:
        text = json.dumps(item, ensure_ascii=ensure_ascii, indent=2).replace("\n", "\n    ")
        yield ("\n    " if first else ",\n    ") + text
        first = False
    yield ("]" if first else "\n  ]") + "\n}"


def export_session(session: Session, fmt: str) -> str:
    """Return the session rendered as ``jsonl``, ``json`` or ``markdown`` (or ``md``)."""
    return "".join(export_chunks(session, fmt))


def export_chunks(session: Session, fmt: str) -> Iterator[str]:
    """Yield the export of ``session`` piece by piece (constant memory; see export_session)."""
    fmt = EXPORT_ALIASES.get(fmt, fmt)
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {fmt!r}: use {', '.join(EXPORT_FORMATS)}")
    head, messages = session_stream(session)
    return _export_chunks(head, messages, fmt)


def _export_chunks(
    head: dict[str, Any], messages: Iterator[dict[str, Any]], fmt: str
) -> Iterator[str]:
    if fmt == "json":
        yield from json_chunks(head, "messages", messages, ensure_ascii=False)
        yield "\n"
    elif fmt == "jsonl":
        yield encode({"type": "header", **head}).decode()
        for m in messages:
            yield encode({"type": "message", **m}).decode()
    else:
        yield from _markdown(head, messages)


def _markdown(data: dict[str, Any], messages: Iterable[dict[str, Any]]) -> Iterator[str]:
    lines = [f"# {data['name']}", ""]
    if data.get("parent"):
        lines += [f"Forked from `{data['parent']}`.", ""]
    if data.get("system"):
        lines += ["**system prompt:** " + data["system"], ""]
    yield "\n".join(lines)
    for m in messages:
        stamp = m.get("created_at", "")
        who = m["role"] + (f" ({m['model']})" if m.get("model") else "")
        lines = ["", f"## {who} · {stamp}", "", m.get("content", ""), ""]
        if m.get("interrupted"):
            lines += ["*(interrupted)*", ""]
        yield "\n".join(lines)


def create_from_dict(
    store: Store, data: Mapping[str, Any] | list[Any], *, name: str | None
) -> Session:
    """Create a new session from to_dict()-shaped data (or an OpenAI ``messages`` list);
    never overwrites an existing one. Every field is checked as ``import`` checks it."""
    if isinstance(data, list | tuple):
        data = {"messages": list(data)}
    if not isinstance(data, Mapping) or not isinstance(data.get("messages"), list | tuple):
        raise UsageError("from_dict needs a mapping with a 'messages' list, or such a list")
    try:
        fields = session_fields(data)
    except Invalid as exc:
        raise refuse("data", "", str(exc)) from None
    target = name or fields.get("name")
    if not isinstance(target, str) or not target:
        raise UsageError("no session name: pass name=... (or --as NAME)")
    records = [Record(f"message {i}", m) for i, m in enumerate(data["messages"], start=1)]
    return _create(store, target, fields, records, "data")


def import_session(
    store: Store,
    data: bytes | Readable,
    *,
    where: str,
    name: str | None,
    max_line_bytes: int = MAX_LINE_BYTES,
    max_bytes: int = MAX_BYTES,
) -> Session:
    """Create a session from an exported file (jsonl, json, OpenAI messages): its bytes,
    or a binary stream read line by line within the limits (docs/format.md, "Import").

    ``where`` names the input in errors (a path, or ``-`` for stdin)."""
    if name is not None:
        check_name(name)  # an explicit --as is checked first, even when empty
    source = "stdin" if where == "-" else where
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    limits = {"max_line_bytes": max_line_bytes, "max_bytes": max_bytes}
    fields, records = read_import(stream, source, **limits)
    target = name or fields.get("name")
    if not target and where != "-":
        stem = where.rstrip("/").rsplit("/", 1)[-1].split(".")[0]  # the file name's stem
        target = stem if is_valid_name(stem) else None
    if not target:
        raise UsageError("cannot tell the session name; pass --as NAME")
    return _create(store, target, fields, records, source)


def _create(
    store: Store, name: str, fields: Mapping[str, Any], records: Iterable[Record], source: str
) -> Session:
    session = store.session(name)
    messages = build_messages(records, source)
    redact = store.redactor()
    system = fields.get("system")
    if redact is not None:
        messages = [redact_message(redact, m) for m in messages]
        if isinstance(system, str):
            system = redact.text(system).text
    now = now_iso()
    header = SessionHeader(
        uid=new_ulid(),
        created_at=fields.get("created_at") or now,
        updated_at=now,
        model=fields.get("model"),
        system=system,
        metadata=dict(fields.get("metadata") or {}),
        parent=fields.get("parent"),
        parent_message=fields.get("parent_message"),
    )
    store.backend.create(session.name, header, messages)
    return session
