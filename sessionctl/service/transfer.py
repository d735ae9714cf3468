"""Whole sessions in and out: to_dict/from_dict, export and import.

Import only ever parses JSON: nothing in an imported file is executed. The checks
of what is imported are in :mod:`sessionctl.service.importing`.
"""

from __future__ import annotations

import collections
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from sessionctl.backend.base import SessionHeader
from sessionctl.errors import UsageError
from sessionctl.ids import new_ulid
from sessionctl.jsonlines import encode
from sessionctl.models import FORMAT_NAME, FORMAT_VERSION, tool_call_parts
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
from sessionctl.timeutil import now_iso, parse_iso

if TYPE_CHECKING:
    from sessionctl.service.session import Session
    from sessionctl.service.store import Store

EXPORT_FORMATS = ("jsonl", "json", "markdown", "openai", "openai-ft", "sharegpt")
_SHAREGPT_FROM = {"user": "human", "assistant": "gpt", "system": "system", "tool": "tool"}
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


class Selection(NamedTuple):
    """Which messages an export keeps: the last N, a time range, some roles."""

    last: int | None = None
    since: str | None = None  # ISO times, compared as instants
    until: str | None = None
    roles: frozenset[str] | None = None


def _select(messages: Iterator[dict[str, Any]], pick: Selection) -> Iterator[dict[str, Any]]:
    since = parse_iso(pick.since) if pick.since else None
    until = parse_iso(pick.until) if pick.until else None
    kept: Iterable[dict[str, Any]] = (
        m
        for m in messages
        if (pick.roles is None or m.get("role") in pick.roles)
        and (since is None or _when(m) >= since)
        and (until is None or _when(m) <= until)
    )
    if pick.last is not None:
        kept = collections.deque(kept, maxlen=pick.last)
    yield from kept


def _when(message: Mapping[str, Any]) -> Any:
    try:
        return parse_iso(str(message.get("created_at", "")))
    except ValueError:
        return parse_iso("1970-01-01T00:00:00Z")


def export_chunks(session: Session, fmt: str, pick: Selection | None = None) -> Iterator[str]:
    """Yield the export of ``session`` piece by piece (constant memory; see export_session)."""
    fmt = EXPORT_ALIASES.get(fmt, fmt)
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {fmt!r}: use {', '.join(EXPORT_FORMATS)}")
    head, messages = session_stream(session)
    if pick is not None and pick != Selection():
        messages = _select(messages, pick)
    return _export_chunks(head, messages, fmt)


def chat_message(m: Mapping[str, Any]) -> dict[str, Any]:
    """A stored message as an OpenAI chat message (role, content, tool fields)."""
    out: dict[str, Any] = {"role": m["role"], "content": m.get("content", "")}
    if m.get("tool_calls"):
        calls = []
        for call in m["tool_calls"]:
            call = dict(call)
            function = call.get("function")
            if isinstance(function, Mapping) and not isinstance(function.get("arguments"), str):
                call["function"] = {**function, "arguments": json.dumps(function.get("arguments"))}
            calls.append(call)
        out["tool_calls"] = calls
    for key in ("tool_call_id", "name"):
        if m.get(key) is not None:
            out[key] = m[key]
    return out


def _with_system(
    head: Mapping[str, Any], messages: Iterable[dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    if head.get("system"):
        yield {"role": "system", "content": head["system"]}
    for m in messages:
        yield chat_message(m)


def _export_chunks(
    head: dict[str, Any], messages: Iterator[dict[str, Any]], fmt: str
) -> Iterator[str]:
    if fmt == "openai":
        yield from json_chunks({}, "messages", _with_system(head, messages), ensure_ascii=False)
        yield "\n"
    elif fmt == "openai-ft":
        line = {"messages": list(_with_system(head, messages))}
        yield json.dumps(line, ensure_ascii=False) + "\n"
    elif fmt == "sharegpt":
        turns = [
            {"from": _SHAREGPT_FROM[m["role"]], "value": m.get("content", "")} for m in messages
        ]
        item: dict[str, Any] = {"id": head["name"], "conversations": turns}
        if head.get("system"):
            item["system"] = head["system"]
        yield json.dumps(item, ensure_ascii=False) + "\n"
    elif fmt == "json":
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
        if m["role"] == "tool":  # which call it answers
            name, ident = m.get("name"), m.get("tool_call_id")
            who += (f" `{name}`" if name else "") + (f" (`{ident}`)" if ident else "")
        lines = ["", f"## {who} · {stamp}", ""]
        if m.get("content"):
            lines += [m["content"], ""]
        calls = m.get("tool_calls") or []
        if calls:
            lines += ["**Tool calls:**", ""]
            for call in calls:
                name, ident, arguments = tool_call_parts(call)
                lines.append(
                    f"- `{name}`" + (f" (`{ident}`)" if ident else "") + f": `{arguments}`"
                )
            lines.append("")
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
