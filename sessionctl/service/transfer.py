"""Whole sessions in and out: to_dict/from_dict, export and import.

Import only ever parses JSON: nothing in an imported file is executed.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sessionctl.backend.files.transcript import Header, encode
from sessionctl.errors import CorruptData, UsageError
from sessionctl.ids import new_ulid
from sessionctl.models import FORMAT_NAME, FORMAT_VERSION, OPTIONAL_FIELDS, Message, normalize_role
from sessionctl.names import check_name, is_valid_name
from sessionctl.timeutil import format_iso, now_iso, parse_iso

if TYPE_CHECKING:
    from sessionctl.service.session import Session
    from sessionctl.service.store import Store

EXPORT_FORMATS = ("jsonl", "json", "markdown")
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
    header: Header = opened.header
    out: dict[str, Any] = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "name": session.name}
    for key in _SESSION_KEYS:
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
    """Return the session rendered as ``jsonl``, ``json`` or ``markdown``."""
    return "".join(export_chunks(session, fmt))


def export_chunks(session: Session, fmt: str) -> Iterator[str]:
    """Yield the export of ``session`` piece by piece (constant memory; see export_session)."""
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


def _message_from(record: Mapping[str, Any], seq: int, where: str) -> Message:
    if not isinstance(record, Mapping):
        raise CorruptData(f"{where}: expected a message object")
    if "role" not in record:
        raise CorruptData(f"{where}: a message needs a 'role'")
    try:
        role = normalize_role(str(record["role"]))
    except UsageError as exc:
        raise CorruptData(f"{where}: {exc}") from None
    content = record.get("content")
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content is not None and not isinstance(content, str):
        raise CorruptData(f"{where}: message content must be text")
    created = record.get("created_at")
    try:
        created = format_iso(parse_iso(created)) if created else now_iso()
    except (TypeError, ValueError):
        created = now_iso()
    known = {"type", "id", "seq", "role", "content", "created_at", "interrupted", *OPTIONAL_FIELDS}
    known |= {"pos", "more"}  # storage bookkeeping of a raw transcript, not message data
    extra = {k: v for k, v in record.items() if k not in known}
    kwargs: dict[str, Any] = {k: record.get(k) for k in OPTIONAL_FIELDS}
    if kwargs["metadata"] is not None and not isinstance(kwargs["metadata"], dict):
        raise CorruptData(f"{where}: message metadata must be an object")
    return Message(
        id=str(record.get("id") or new_ulid()),
        seq=seq,
        role=role,
        content=content or "",
        created_at=created,
        interrupted=bool(record.get("interrupted", False)),
        extra=extra,
        **kwargs,
    )


def _keep_seqs(records: list[Mapping[str, Any]]) -> bool:
    seqs = [r.get("seq") for r in records if isinstance(r, Mapping)]
    if len(seqs) != len(records) or not all(type(s) is int and s > 0 for s in seqs):
        return False
    return all(a < b for a, b in itertools.pairwise(seqs))  # type: ignore[operator]


def build_messages(records: list[Any], where: str) -> list[Message]:
    """Validate imported message records; keep their ids/seqs when they are sound."""
    keep = _keep_seqs(records)
    messages = [
        _message_from(r, r["seq"] if keep else i + 1, f"{where} message {i + 1}")
        for i, r in enumerate(records)
    ]
    if len({m.id for m in messages}) != len(messages):  # duplicate ids: issue fresh ones
        messages = [m._replace(id=new_ulid()) for m in messages]
    return messages


def parse_import(data: bytes, where: str) -> tuple[dict[str, Any], list[Any]]:
    """Return (session fields, message records) from jsonl, json or an OpenAI messages array."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptData(f"{where}: not UTF-8 text (byte {exc.start})") from None
    stripped = text.strip()
    if not stripped:
        raise CorruptData(f"{where}: empty input; nothing to import")
    try:
        whole = json.loads(stripped)
    except ValueError:
        whole = None
    if isinstance(whole, list):
        return {}, whole
    if isinstance(whole, dict) and isinstance(whole.get("messages"), list):
        return {k: whole.get(k) for k in ("name", *_SESSION_KEYS) if k in whole}, whole["messages"]
    if isinstance(whole, dict) and whole.get("type") != "header" and "role" not in whole:
        raise CorruptData(f"{where}: a JSON object needs a 'messages' array")
    fields: dict[str, Any] = {}
    records: list[Any] = []
    # split on \n only: str.splitlines() would also cut at U+2028/U+0085 inside a JSON string
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise CorruptData(
                f"{where}: line {number} is not valid JSON; nothing imported"
            ) from None
        if not isinstance(record, dict):
            raise CorruptData(f"{where}: line {number} is not a JSON object; nothing imported")
        if record.get("type") == "header":
            version = record.get("version", 1)
            if not isinstance(version, int) or version > FORMAT_VERSION:
                raise CorruptData(f"{where}: written by a newer sessionctl; upgrade sessionctl")
            fields = {k: record[k] for k in ("name", *_SESSION_KEYS) if k in record}
        else:
            records.append(record)
    return fields, records


def create_from_dict(
    store: Store, data: Mapping[str, Any] | list[Any], *, name: str | None
) -> Session:
    """Create a new session from to_dict()-shaped data (or an OpenAI ``messages`` list);
    never overwrites an existing one."""
    if isinstance(data, list):
        data = {"messages": data}
    if not isinstance(data, Mapping) or not isinstance(data.get("messages"), list):
        raise UsageError("from_dict needs a mapping with a 'messages' list, or such a list")
    target = name or data.get("name")
    if not isinstance(target, str) or not target:
        raise UsageError("no session name: pass name=... (or --as NAME)")
    return _create(store, target, dict(data), list(data["messages"]), "data")


def import_session(store: Store, data: bytes, *, where: str, name: str | None) -> Session:
    """Create a session from an exported file's bytes (jsonl, json, OpenAI messages)."""
    if name is not None:
        check_name(name)  # an explicit --as is checked first, even when empty
    fields, records = parse_import(data, where)
    target = name or fields.get("name")
    if not target and where != "-":
        stem = Path(where).name.split(".")[0]
        target = stem if is_valid_name(stem) else None
    if not target:
        raise UsageError("cannot tell the session name; pass --as NAME")
    return _create(store, target, fields, records, where)


def _create(
    store: Store, name: str, fields: Mapping[str, Any], records: list[Any], where: str
) -> Session:
    session = store.session(name)
    messages = build_messages(records, where)
    now = now_iso()
    metadata = fields.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise CorruptData(f"{where}: session metadata must be an object")
    for key in ("created_at", "model", "system", "parent", "parent_message"):
        if fields.get(key) is not None and not isinstance(fields.get(key), str):
            raise CorruptData(f"{where}: session {key} must be text")
    header = Header(
        uid=new_ulid(),
        created_at=str(fields.get("created_at") or now),
        updated_at=now,
        model=fields.get("model"),
        system=fields.get("system"),
        metadata=dict(metadata),
        parent=fields.get("parent"),
        parent_message=fields.get("parent_message"),
    )
    store.backend.create(session.name, header, messages)
    return session
