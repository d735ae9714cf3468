"""Checking what `import` and ``Store.from_dict`` are given, field by field.

Import only ever parses JSON: nothing in an imported file is executed. Every
field is checked before anything is written, and the first problem is refused
with one line naming where it is (``line N`` of a JSON-lines file, ``message N``
of a JSON document or of ``from_dict`` data): a :class:`UsageError`, exit 2.
The rules are in docs/format.md ("Import").
"""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, NamedTuple, Protocol, TypeGuard

from sessionctl.errors import UsageError
from sessionctl.ids import new_ulid
from sessionctl.models import FORMAT_NAME, FORMAT_VERSION, ROLE_ALIASES, ROLES, Message
from sessionctl.timeutil import format_iso, now_iso, parse_iso

# A field value (metadata, usage, tool_calls...) nested deeper than this is refused:
# far below what Python's parser can take, so a stored transcript always reads back.
MAX_DEPTH = 100
MAX_SEQ = 2**63 - 1  # seqs are int64 in the semantic index
# Input limits (docs/format.md, "Import"): one JSON line (one message), and the whole input.
MAX_LINE_BYTES = 16 * 2**20
MAX_BYTES = 2**30
_CHUNK = 2**16
_BOM = b"\xef\xbb\xbf"
_SIZE = re.compile(r"([0-9]{1,19})\s*([KMG]?)(?:i?B)?", re.IGNORECASE)
SESSION_KEYS = (
    "created_at", "updated_at", "model", "system", "metadata", "parent", "parent_message",
)  # fmt: skip
_TEXT_FIELDS = ("model", "tool_call_id", "name")
# storage bookkeeping of a raw transcript, not message data: dropped
_BOOKKEEPING = ("pos", "more")
_KNOWN = {"type", "id", "seq", "role", "content", "created_at", "interrupted", "usage"}
_KNOWN |= {"tool_calls", "metadata", *_TEXT_FIELDS, *_BOOKKEEPING}
# A UTC time that format_iso writes back as its own digits (a year from 1000: earlier
# ones print back otherwise), with no, milli- or microsecond fractions.
_UTC_TIME = re.compile(
    r"([1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{3}|[0-9]{6}))?Z"
)
_ID = re.compile(r"[!-~]{1,128}")  # printable ASCII without spaces: ULIDs and peer tools' ids


class Record(NamedTuple):
    """One parsed record and where it came from (``line 3``, ``message 2``)."""

    where: str
    value: Any


class Invalid(Exception):
    """A problem found in one record; the caller adds the source and the place."""


def refuse(source: str, where: str, problem: str) -> UsageError:
    """Return the one-line error for ``problem`` at ``where`` (``line 3``) in ``source``."""
    place = f"{source}: {where}" if where else source
    return UsageError(f"{place}: {problem}; nothing imported")


def show(value: Any) -> str:
    """A short, safe rendering of a bad value for an error message."""
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        text = json.dumps(value[:40] + ("..." if len(value) > 40 else ""), ensure_ascii=True)
        return text
    if value is None or isinstance(value, bool | float):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value) if abs(value) < 10**40 else "a number of more than 40 digits"
    return f"a {type(value).__name__}"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def loads(text: str) -> Any:
    """Parse one JSON value; NaN/Infinity and nesting Python cannot take are refused."""
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise Invalid(f"JSON nested more than {MAX_DEPTH} levels deep") from None


def _utf8(text: str, what: str) -> str:
    """Return ``text``, or raise Invalid when it holds a lone surrogate (``"\\udcff"``)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise Invalid(
                f"{what} holds a lone surrogate at character {exc.start + 1}, which is not UTF-8"
            ) from None
    return text


def check_json(value: Any, what: str) -> None:
    """Raise Invalid unless ``value`` is plain JSON data at most MAX_DEPTH levels deep.

    Iterative, so a cyclic or very deep Python object from ``from_dict`` is refused
    rather than recursing.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _utf8(item, what)
            continue
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise Invalid(f"{what} holds {item}, which is not JSON")
            continue
        if depth > MAX_DEPTH:
            raise Invalid(f"{what} is nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise Invalid(f"{what} has a key that is not text ({show(key)})")
                _utf8(key, what)
                stack.append((inner, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((inner, depth + 1) for inner in item)
        else:
            raise Invalid(f"{what} holds {show(item)}, which is not JSON")


def _text(record: Mapping[str, Any], key: str, what: str) -> str | None:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise Invalid(f"{what}{key} must be text, not {show(value)}")
    return None if value is None else _utf8(value, what + key)


_QUICK_TIMES: dict[str, str] = {}  # the last times checked (a user and an assistant
# message of one exchange often share one): a few hundred at most


def _quick_time(value: str) -> str | None:
    """The stored form of a UTC time already spelled as format_iso spells it, else None."""
    known = _QUICK_TIMES.get(value)
    if known is not None:
        return known
    quick = _UTC_TIME.fullmatch(value)
    if quick:  # UTC, a year from 1000: format_iso's output is the digits, padded
        normal = f"{quick[1]}.{(quick[2] or '').ljust(6, '0')}Z"
        try:
            # parse_iso's check without its Z -> +00:00: 2025-02-30... is refused by the
            # full check, with the message
            datetime.fromisoformat(normal[:-1])
        except ValueError:
            return None
        if len(_QUICK_TIMES) >= 256:
            _QUICK_TIMES.clear()
        _QUICK_TIMES[value] = normal
        return normal
    return None


def _time(record: Mapping[str, Any], key: str, what: str) -> str | None:
    value = _text(record, key, what)
    if value is None:
        return None
    quick = _quick_time(value)
    if quick is not None:
        return quick
    try:
        normal = format_iso(parse_iso(value))
        parse_iso(normal)  # years before 1000 do not print back as ISO
    except (ValueError, OverflowError):
        raise Invalid(
            f"{what}{key} must be an ISO 8601 time like 2024-01-01T12:00:00Z, not {show(value)}"
        ) from None
    return normal


def _object(record: Mapping[str, Any], key: str, what: str) -> dict[str, Any] | None:
    value = record.get(key)
    if value is not None and not isinstance(value, Mapping):
        raise Invalid(f"{what}{key} must be an object, not {show(value)}")
    return None if value is None else dict(value)


# -- the header (or a JSON document's own fields) -------------------------------------------


def session_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return the checked session fields of a header or a JSON document (Invalid if bad).

    ``name`` is only checked to be text here; the name rule is applied when it is used.
    """
    fmt = record.get("format")
    if fmt is not None and fmt != FORMAT_NAME:
        raise Invalid(f"format must be {FORMAT_NAME!r}, not {show(fmt)}")
    version = record.get("version", 1)
    if type(version) is not int or version < 1:
        raise Invalid(f"version must be a whole number from 1, not {show(version)}")
    if version > FORMAT_VERSION:
        raise Invalid(
            f"written by a newer sessionctl (format version {version}); upgrade sessionctl"
        )
    fields: dict[str, Any] = {"name": _text(record, "name", "")}
    for key in ("model", "system", "parent", "parent_message"):
        fields[key] = _text(record, key, "session ")
    for key in ("created_at", "updated_at"):
        fields[key] = _time(record, key, "session ")
    metadata = _object(record, "metadata", "session ")
    if metadata is not None:
        check_json(metadata, "session metadata")
    fields["metadata"] = metadata
    return fields


# -- messages ---------------------------------------------------------------------------------


def _content(value: Any) -> str:
    if value is None or isinstance(value, str):
        return _utf8(value or "", "content")
    if not isinstance(value, list | tuple):
        raise Invalid(f"content must be text or a list of content parts, not {show(value)}")
    texts = []  # OpenAI content parts: keep the text ones (images are not kept)
    for number, part in enumerate(value, start=1):
        if not isinstance(part, Mapping):
            raise Invalid(f"content part {number} must be an object, not {show(part)}")
        kind = part.get("type", "text")
        if not isinstance(kind, str):
            raise Invalid(f"content part {number} type must be text, not {show(kind)}")
        if kind == "text" or "text" in part:
            text = part.get("text")
            if not isinstance(text, str):
                raise Invalid(f"content part {number} text must be text, not {show(text)}")
            texts.append(_utf8(text, f"content part {number} text"))
    return "".join(texts)


# The fields of the records the importers of other tools build (sessionctl.sources):
# such a record with plain values takes the quick check below.
_PLAIN_KEYS = frozenset(("id", "role", "content", "created_at", "model", "usage", "metadata"))
_PLAIN_KEYS |= {"name", "tool_call_id"}
_ROLE_SET = frozenset(ROLES)


def _plain_text(value: object) -> TypeGuard[str]:
    """True for text that is UTF-8 (no lone surrogate)."""
    if type(value) is not str:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _flat(value: object) -> bool:
    """True for an object of text keys to text, whole numbers, true/false or null."""
    if type(value) is not dict:
        return False
    for key, inner in value.items():
        if not _plain_text(key):
            return False
        kind = type(inner)
        if kind is str:
            if not _plain_text(inner):
                return False
        elif kind is not int and kind is not bool and inner is not None:
            return False
    return True


def _plain_message(record: Any, seq: int, now: str | None) -> Message | None:
    """The Message of a record of plain fields and values, or None for the full check.

    Gives what the full check gives whenever it gives a Message (a test compares
    them); anything it does not take for certain (no id, an alias role, nested
    values, a time in another form) is left to the full check and its message.
    """
    if type(record) is not dict or not record.keys() <= _PLAIN_KEYS:
        return None
    role, ident, content = record.get("role"), record.get("id"), record.get("content")
    if role not in _ROLE_SET or type(ident) is not str or not _ID.fullmatch(ident):
        return None
    if type(content) is not str or not (content.isascii() or _plain_text(content)):
        return None
    created = record.get("created_at")
    if created is None:
        stamp = now or now_iso()
    else:
        quick = _quick_time(created) if type(created) is str else None
        if quick is None:
            return None
        stamp = quick
    model, name, call = record.get("model"), record.get("name"), record.get("tool_call_id")
    if model is not None and not _plain_text(model):
        return None
    if (name is not None and not _plain_text(name)) or (call is not None and not _plain_text(call)):
        return None
    usage, metadata = record.get("usage"), record.get("metadata")
    if (usage is not None and not _flat(usage)) or (metadata is not None and not _flat(metadata)):
        return None
    return Message(
        id=ident, seq=seq, role=sys.intern(role), content=content, created_at=stamp,
        usage=None if usage is None else dict(usage), tool_calls=None,
        metadata=None if metadata is None else dict(metadata), model=model,
        tool_call_id=call, name=name,
    )  # fmt: skip


def message_from(record: Any, seq: int, now: str | None = None) -> Message:
    """Return the checked Message for one record (raise Invalid naming the field).

    A message without ``created_at`` gets ``now`` (default: the current time)."""
    quick = _plain_message(record, seq, now)
    return quick if quick is not None else full_message_from(record, seq, now)


def full_message_from(record: Any, seq: int, now: str | None = None) -> Message:
    """:func:`message_from` without its quick path for plain records."""
    if not isinstance(record, Mapping):
        raise Invalid(f"a message must be an object, not {show(record)}")
    kind = record.get("type", "message")
    if kind != "message":
        raise Invalid(f"type must be 'message' (or 'header' on the first line), not {show(kind)}")
    role = record.get("role")
    if role is None:
        raise Invalid("a message needs a 'role'")
    if not isinstance(role, str) or ROLE_ALIASES.get(role, role) not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)} (or llm), not {show(role)}")
    ident = record.get("id")
    if ident is not None and (not isinstance(ident, str) or not _ID.fullmatch(ident)):
        raise Invalid(
            f"id must be 1-128 printable ASCII characters without spaces, not {show(ident)}"
        )
    interrupted = record.get("interrupted")
    if interrupted is not None and not isinstance(interrupted, bool):
        raise Invalid(f"interrupted must be true or false, not {show(interrupted)}")
    tool_calls = record.get("tool_calls")
    if tool_calls is not None and (
        not isinstance(tool_calls, list | tuple)
        or not all(isinstance(call, Mapping) for call in tool_calls)
    ):
        raise Invalid(f"tool_calls must be a list of objects, not {show(tool_calls)}")
    usage = _object(record, "usage", "")
    metadata = _object(record, "metadata", "")
    extra = {k: v for k, v in record.items() if k not in _KNOWN}
    for key, value in (("usage", usage), ("tool_calls", tool_calls), ("metadata", metadata)):
        if value is not None:
            check_json(value, key)
    for key, value in extra.items():
        if not isinstance(key, str):
            raise Invalid(f"a message has a key that is not text ({show(key)})")
        check_json(value, _utf8(key, "a key"))
    return Message(
        id=ident or new_ulid(),
        seq=seq,
        role=sys.intern(ROLE_ALIASES.get(role, role)),
        content=_content(record.get("content")),
        created_at=_time(record, "created_at", "") or now or now_iso(),
        usage=usage,
        tool_calls=None if tool_calls is None else [dict(call) for call in tool_calls],
        metadata=metadata,
        interrupted=bool(interrupted),
        extra=extra or None,
        model=_text(record, "model", ""),
        tool_call_id=_text(record, "tool_call_id", ""),
        name=_text(record, "name", ""),
    )


def _seq(record: Any) -> int | None:
    value = record.get("seq") if isinstance(record, Mapping) else None
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= MAX_SEQ:
        raise Invalid(f"seq must be a whole number from 1 to 2**63-1, not {show(value)}")
    return value


def build_messages(records: Iterable[Record], source: str) -> list[Message]:
    """Check every record and return the messages, or raise UsageError at the first problem.

    Seqs are kept when every message has one (they must go up); when none has one
    they are numbered 1, 2, 3... A mix is refused, as is an id used twice.
    """
    messages: list[Message] = []
    now = now_iso()  # the import time, for messages without a created_at
    seen: dict[str, str] = {}
    numbered: bool | None = None  # do the messages carry their own seqs?
    last = 0
    for record in records:
        try:
            seq = _seq(record.value)
            if numbered is None:
                numbered = seq is not None
            if numbered and seq is None:
                raise Invalid("no seq, but the first message has one: give every message one")
            if not numbered and seq is not None:
                raise Invalid("a seq, but the first message has none: give every message one")
            if seq is not None and seq <= last:
                raise Invalid(f"seq {seq} must be greater than the one before ({last})")
            message = message_from(record.value, seq if seq is not None else last + 1, now)
        except Invalid as exc:
            raise refuse(source, record.where, str(exc)) from None
        if message.id in seen:
            problem = f"id {message.id} is used twice (also at {seen[message.id]})"
            raise refuse(source, record.where, problem + "; ids must be unique")
        seen[message.id] = record.where
        last = message.seq
        messages.append(message)
    return messages


# -- parsing an import file -----------------------------------------------------------------


class Parsed(NamedTuple):
    """What an import file holds: its session fields and its message records."""

    fields: dict[str, Any]
    records: Iterable[Record]  # JSON lines: parsed as they are consumed, one line at a time


def is_record(value: Any) -> bool:
    """True for a first line that starts JSON lines: a header or a message record."""
    if not isinstance(value, dict) or isinstance(value.get("messages"), list):
        return False
    return value.get("type") in ("header", "message") or "role" in value


def parse_document(value: Any, source: str, where: str = "") -> Parsed:
    """Return the records of a JSON document: a messages list or ``{..., "messages": [...]}``."""
    if isinstance(value, list):
        return Parsed({}, [Record(f"message {i}", m) for i, m in enumerate(value, start=1)])
    if not isinstance(value, dict):
        raise refuse(source, where, f"expected a JSON object or list, not {show(value)}")
    messages = value.get("messages")
    if not isinstance(messages, list):
        raise refuse(source, where, "a JSON object needs a 'messages' list")
    try:
        fields = session_fields(value)
    except Invalid as exc:
        raise refuse(source, where, str(exc)) from None
    return Parsed(fields, [Record(f"message {i}", m) for i, m in enumerate(messages, start=1)])


def parse_lines(lines: Iterator[tuple[int, bytes]], source: str) -> Parsed:
    """Parse JSON lines: an optional header on the first line, then message records.

    ``lines`` yields (line number, line) without blank lines. The first line is read
    now; the records are read as they are consumed, so only one line at a time is
    held as text. A first line that is a whole JSON document is read as that document.
    """
    for number, line in lines:
        value = _line_value(number, line, source)
        if not is_record(value):
            parsed = parse_document(value, source, f"line {number}")
            for extra, _ in lines:
                raise refuse(source, f"line {extra}", "more data after the JSON document")
            return parsed
        if value.get("type") != "header":
            return Parsed({}, _records(itertools.chain([(number, line)], lines), source))
        try:
            fields = session_fields(value)
        except Invalid as exc:
            raise refuse(source, f"line {number}", str(exc)) from None
        return Parsed(fields, _records(lines, source))
    raise refuse(source, "", "the input is empty")


def _records(lines: Iterator[tuple[int, bytes]], source: str) -> Iterator[Record]:
    for number, line in lines:
        value = _line_value(number, line, source)
        where = f"line {number}"
        if not isinstance(value, dict):
            raise refuse(source, where, f"expected a JSON object, not {show(value)}")
        if value.get("type") == "header":
            raise refuse(source, where, "a second header; only the first line may be one")
        yield Record(where, value)


def _line_value(number: int, line: bytes, source: str) -> Any:
    where = f"line {number}"
    try:
        return loads(line.decode("utf-8"))
    except Invalid as exc:
        raise refuse(source, where, str(exc)) from None
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text (byte {exc.start + 1} of the line)"
        raise refuse(source, where, problem) from None
    except ValueError as exc:
        raise refuse(source, where, f"not valid JSON ({_reason(exc)})") from None


def _reason(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError) and exc.msg == "Extra data":
        return "more data after the end of the JSON document"
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}"
    return str(exc).split(";")[0]


# -- reading the input: streamed, within limits ---------------------------------------------


class Readable(Protocol):
    """A binary stream (a file opened ``rb``, ``sys.stdin.buffer``, ``io.BytesIO``)."""

    def read(self, size: int = -1, /) -> bytes: ...


def parse_size(text: str, option: str) -> int:
    """Return the byte count of ``16M``, ``1G``, ``512K`` or ``1000`` (K = 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if not match or int(match.group(1)) < 1:
        raise UsageError(
            f"invalid size {text!r} for {option}: use a whole number of bytes above 0,"
            " or one with K, M or G (like 16M)"
        )
    return int(match.group(1)) << 10 * " KMG".index(match.group(2).upper() or " ")


def _size(count: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale and count % scale == 0:
            return f"{count // scale} {unit}"
    return f"{count} bytes"


class _Input:
    """Chunks of a stream, a BOM at the start skipped, never more than ``max_bytes`` in all."""

    def __init__(self, stream: Readable, source: str, max_bytes: int) -> None:
        self.stream, self.source, self.max_bytes = stream, source, max_bytes
        self.total = 0

    def chunk(self) -> bytes:
        data = self.stream.read(_CHUNK)
        if self.total == 0 and data.startswith(_BOM):
            data = data[len(_BOM) :]
            self.total = len(_BOM)
        self.total += len(data)
        if self.total > self.max_bytes:
            raise refuse(
                self.source,
                "",
                f"the input is larger than {_size(self.max_bytes)} (--max-bytes raises the limit)",
            )
        return data

    def rest(self) -> bytes:
        pieces = []
        while chunk := self.chunk():
            pieces.append(chunk)
        return b"".join(pieces)


def _too_long(source: str, number: int, limit: int) -> UsageError:
    problem = f"longer than {_size(limit)} (--max-line-bytes raises the limit for one line)"
    return refuse(source, f"line {number}", problem)


def _lines(
    head: bytes, data: _Input, number: int, limit: int, source: str
) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, line) for each non-blank line; ``head`` was read already."""
    pieces: list[bytes] = []  # the start of a line that goes on in the next chunk
    size = 0
    chunk = head
    while chunk:
        if not pieces and chunk.isspace():  # blank lines cost no Python loop
            number += chunk.count(b"\n")
            chunk = data.chunk()
            continue
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            line = chunk[start:end]
            if pieces:
                line = b"".join([*pieces, line])
                pieces, size = [], 0
            if len(line) > limit:
                raise _too_long(source, number, limit)
            if line.strip():
                yield number, line
            number += 1
            start = end + 1
        if start < len(chunk):
            pieces.append(chunk[start:])
            size += len(chunk) - start
            if size > limit:
                raise _too_long(source, number, limit)
        chunk = data.chunk()
    if pieces and (line := b"".join(pieces)).strip():
        yield number, line


def read_import(
    stream: Readable,
    source: str,
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
    max_bytes: int = MAX_BYTES,
) -> Parsed:
    """Parse an import from ``stream``: JSON lines read line by line, or one JSON document.

    No line may be longer than ``max_line_bytes`` and no input longer than
    ``max_bytes`` (a UsageError as soon as either is passed); a JSON document is
    read whole, so it is bounded by ``max_bytes`` alone.
    """
    data = _Input(stream, source, max_bytes)
    number = 1  # the line the unread input starts on
    head = data.chunk()
    while head and head.isspace():
        number += head.count(b"\n")
        head = data.chunk()
    if not head:
        raise refuse(source, "", "the input is empty")
    skip = len(head) - len(head.lstrip())
    number += head.count(b"\n", 0, skip)
    head = head[skip:]
    if head[:1] == b"{":  # JSON lines, or a document whose first line is not a record
        buffer = bytearray(head)
        while (end := buffer.find(b"\n")) < 0 and len(buffer) <= max_line_bytes:
            more = data.chunk()
            if not more:
                break
            buffer += more
        first = buffer if end < 0 else buffer[:end]
        head = bytes(buffer)
        if len(first) <= max_line_bytes and is_record(_value(first)):
            return parse_lines(_lines(head, data, number, max_line_bytes, source), source)
    elif head[:1] != b"[":
        return parse_lines(_lines(head, data, number, max_line_bytes, source), source)
    return _document(head + data.rest(), source, number, max_line_bytes)


def _value(line: bytearray) -> Any:
    try:
        return loads(line.decode("utf-8"))
    except (Invalid, ValueError):
        return None


def _document(data: bytes, source: str, number: int, max_line_bytes: int) -> Parsed:
    """Parse one JSON document that starts on line ``number``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = number + data.count(b"\n", 0, exc.start)
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise refuse(
            source, f"line {line}", f"not UTF-8 text (byte {column} of the line)"
        ) from None
    end = data.find(b"\n")
    long_first = (end if end >= 0 else len(data)) > max_line_bytes
    try:
        value = loads(text)
    except Invalid as exc:
        raise refuse(source, "", str(exc)) from None
    except ValueError as exc:
        if long_first:  # JSON lines whose first line is too long, not a document
            raise _too_long(source, number, max_line_bytes) from None
        where = f"line {number + exc.lineno - 1}" if isinstance(exc, json.JSONDecodeError) else ""
        raise refuse(source, where, f"not valid JSON ({_reason(exc)})") from None
    if long_first and is_record(value):
        raise _too_long(source, number, max_line_bytes)
    return parse_document(value, source)
