"""The JSON-lines transcript file: header, records, scans and tail reads.

Layout (docs/format.md): line 1 is a header record, every later line is a
message record. Readers never lock: an append in progress shows up as a torn
last line, which readers ignore. Writers (under the session lock) repair a
torn tail and set aside any line that cannot be parsed, never dropping it.

Line 1 is padded with spaces to a reserved width, so a header edit (meta,
model, system) overwrites it in place instead of rewriting the file: the new
header is first appended as a journal record (``{"header": {...}, "type":
"header-edit"}``, fsynced: the commit point), then written over line 1, then
the journal record is truncated away. While a journal record ends the file it
is the header (readers check the file's last bytes); a crash at any step
leaves the old header or the new one, and the next writer finishes the edit.

Writers' repairs live in :mod:`.repair`; whole-file streaming reads, rewrites and
the header edit in :mod:`.streaming`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from sessionctl.backend.files.header import Header as Header  # re-exported: it lives in header.py
from sessionctl.errors import CorruptData, StoreError
from sessionctl.jsonlines import encode as encode  # re-exported: the line format
from sessionctl.models import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_SEQ,
    ROLE_ALIASES,
    Message,
    is_seq,
    record_problem,
)
from sessionctl.timeutil import now_iso

Warn = Callable[[str], None]
# Edits the header it is given in place; returns False when nothing changed.
HeaderChange = Callable[[Header], bool]
BLOCK = 64 * 1024
STREAM_BLOCK = 1024 * 1024  # forward reads (show, export, rewrites)
JOURNAL = "header-edit"  # the record type of a header edit's journal record
# The journal record's last bytes: its type is written last, so that one small read
# of the file's end tells whether it ends in one.
_JOURNAL_END = b',"type":"header-edit"}\n'
MIN_HEADER_WIDTH = 1024


def decode_record(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def is_unfinished(record: dict[str, Any] | None) -> bool:
    """True for a record written with later records of the same write (``more`` > 0).

    A multi-message append (``store``: prompt and answer) marks every record but its
    last with how many follow. When such a record ends the file, the write was cut
    short (or is still going on): readers skip it and the next writer sets it aside,
    so a crash never leaves half of a batch behind.
    """
    return record is not None and type(record.get("more")) is int and record["more"] > 0


def finish_previous(fd: int, offset: int) -> None:
    """Before the record at ``offset`` is truncated away: if the record before it says
    more records of its write follow (``"more": N``), make that ``0`` in place (same
    length), so that the truncated file never looks like a write cut short."""
    previous = next(reverse_lines(fd, offset), None)
    if previous is None or not is_unfinished(decode_record(previous[1])):
        return
    start, line = previous
    head, key, digits = line.rpartition(b',"more":')
    digits = digits[:-1] if digits.endswith(b"}") else b""
    if not key or not digits.isdigit():
        return  # not as sessionctl writes it (``more`` is always the last key)
    os.pwrite(fd, b" " * (len(digits) - 1) + b"0", start + len(head) + len(key))
    os.fsync(fd)


def as_message(record: dict[str, Any] | None) -> Message | None:
    """The message a record holds; None for any other record or an invalid one."""
    if record is None or record.get("type", "message") != "message":
        return None
    if record_problem(record) is not None:
        return None
    try:
        return Message.from_record(record)
    except (KeyError, TypeError, ValueError):
        return None


def tombstone_high(record: dict[str, Any] | None) -> int | None:
    """The highest seq a valid drop tombstone names; None when ``record`` is none.

    A tombstone whose seq or high is not a valid seq is a malformed line.
    """
    if record is None or record.get("type") != "dropped":
        return None
    seq, high = record.get("seq"), record.get("high", 0)
    if not is_seq(seq):
        return None
    if is_seq(high):
        return max(seq, high)
    return seq if high == 0 and type(high) is int else None


def _problem(record: dict[str, Any] | None) -> str:
    """Why a line that is neither a message nor a tombstone was skipped (for warnings)."""
    if record is None:
        return "not a JSON object"
    if record.get("type") == "dropped":
        return f"a drop tombstone whose seq or high is not from 1 to {MAX_SEQ}"
    if record.get("type", "message") != "message":
        return "unknown record type"
    return record_problem(record) or "unreadable fields"


def header_width(length: int) -> int:
    """The reserved width of line 1 for a header of ``length`` bytes (newline included):
    at least twice that and 1024 bytes, a power of two, so that edits fit in place."""
    need = max(MIN_HEADER_WIDTH, 2 * length)
    return 1 << (need - 1).bit_length()


def encode_header(header: Header, width: int | None = None) -> bytes:
    """Return line 1 for ``header``: its JSON padded with spaces to ``width`` bytes
    (newline included; JSON allows trailing whitespace). None, or a width it does
    not fit in: a fresh reserve (:func:`header_width`)."""
    body = encode(header.to_record())[:-1]
    if width is None or len(body) + 1 > width:
        width = header_width(len(body) + 1)
    return body + b" " * (width - len(body) - 1) + b"\n"


def is_journal(record: dict[str, Any] | None) -> bool:
    """True for a header edit's journal record (never a message)."""
    return record is not None and record.get("type") == JOURNAL


def parse_header(line: bytes, path: Path) -> Header:
    """Parse line 1, or raise CorruptData saying why."""
    return parse_header_record(decode_record(line), path)


def parse_header_record(record: dict[str, Any] | None, path: Path) -> Header:
    """Parse a header record (line 1, or a journal record's ``header``)."""
    if record is None or record.get("type") != "header" or record.get("format") != FORMAT_NAME:
        raise CorruptData(f"{path}: line 1 is not a sessionctl header; the file is not a session")
    version = record.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CorruptData(
            f"{path}: written by a newer sessionctl (format {version!r}); upgrade sessionctl"
        )
    for key in ("model", "system", "parent", "parent_message"):
        if not isinstance(record.get(key), (str, type(None))):
            raise CorruptData(f"{path}: line 1 has a malformed header field ({key} is not text)")
    for key in ("base_seq", "base_count"):
        value = record.get(key)
        if value is not None and not ((value == 0 and type(value) is int) or is_seq(value)):
            raise CorruptData(
                f"{path}: line 1 has a malformed header field "
                f"({key} is not a whole number from 0 to {MAX_SEQ})"
            )
    try:
        return Header.from_record(record)
    except (TypeError, ValueError) as exc:  # a hand-edited field of the wrong type
        raise CorruptData(f"{path}: line 1 has a malformed header field ({exc})") from None


def open_transcript(path: Path) -> int:
    """Open a transcript for reading, refusing symlinks and non-regular files."""
    try:
        # O_NONBLOCK: a FIFO in a transcript's place must not hang the reader.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: a symlink
            raise StoreError(
                f"{path} is a symbolic link; sessionctl does not follow links"
            ) from exc
        if exc.errno == 21:  # EISDIR
            raise StoreError(f"{path} is a directory, not a transcript; move it away") from exc
        raise StoreError(f"cannot read {path}: {exc.strerror}") from exc
    import stat

    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StoreError(f"{path} is not a regular file; move it away")
    return fd


def read_header(path: Path) -> Header:
    """Return the header of the transcript at ``path`` (line 1 and the file's last bytes)."""
    fd = open_transcript(path)
    try:
        return header_of(fd, path)
    finally:
        os.close(fd)


def first_line(fd: int) -> bytes:
    """Return line 1 with its newline (without one: the file holds nothing else)."""
    pieces: list[bytes] = []
    pos = 0
    block = 4096
    while True:
        chunk = os.pread(fd, block, pos)
        end = chunk.find(b"\n")
        if end >= 0:
            pieces.append(chunk[: end + 1])
            break
        if not chunk:
            break
        pieces.append(chunk)
        pos += len(chunk)
        block = min(block * 2, STREAM_BLOCK)
    return b"".join(pieces)


def journal_at_end(fd: int, path: Path) -> tuple[int, Header] | None:
    """The (offset, header) of a complete journal record ending the file, if one does."""
    size = os.fstat(fd).st_size
    if size < len(_JOURNAL_END) or os.pread(fd, len(_JOURNAL_END), size - len(_JOURNAL_END)) != (
        _JOURNAL_END
    ):
        return None
    last = next(reverse_lines(fd, size), None)
    if last is None or last[0] == 0:
        return None
    return _journal_header(last[0], last[1], path)


def _journal_header(offset: int, line: bytes, path: Path) -> tuple[int, Header] | None:
    record = decode_record(line)
    if not is_journal(record) or not isinstance(record["header"] if record else None, dict):
        return None
    assert record is not None
    return offset, parse_header_record(record["header"], path)


def last_journal(fd: int, path: Path) -> tuple[int, Header] | None:
    """The last complete journal record anywhere (reads backwards: only for recovery)."""
    for offset, line in reverse_lines(fd, os.fstat(fd).st_size):
        if offset > 0 and JOURNAL.encode() in line:
            found = _journal_header(offset, line, path)
            if found is not None:
                return found
    return None


def header_of(fd: int, path: Path) -> Header:
    """The header: a journal record ending the file (an edit committed but maybe not yet
    written over line 1), else line 1, else (line 1 torn) the last journal record.

    Readers take no lock: the file's end is checked before and after line 1 is read,
    so a line 1 read while a writer overwrote it is never trusted (the journal record
    is there for the whole overwrite).
    """
    for attempt in range(3):
        before = journal_at_end(fd, path)
        line = first_line(fd)
        after = journal_at_end(fd, path)
        if after is not None:
            return after[1]
        if before is not None:
            continue  # an edit finished while line 1 was read: read it again
        if decode_record(line) is not None or attempt == 2:
            return parse_header(line, path)
        found = last_journal(fd, path)  # line 1 torn by a crash in its overwrite
        if found is not None:
            return found[1]
    return parse_header(first_line(fd), path)


class Scan(NamedTuple):
    """A whole transcript, parsed: messages in file order, plus what could not be read."""

    header: Header
    messages: list[Message]
    bad_lines: list[tuple[int, bytes]]
    torn: bytes | None
    high_seq: int  # the highest seq any record names (messages and tombstones)
    # the records of a multi-message write that was cut short (at the end of the file)
    unfinished: tuple[tuple[int, bytes], ...] = ()


def scan(path: Path, warn: Warn | None = None) -> Scan:
    """Read every record; report corrupt middle lines by number and skip a torn tail."""
    fd = open_transcript(path)
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    torn = lines.pop() or None  # text after the last newline: an append in progress
    if not lines:
        if torn is not None and decode_record(torn) is not None:
            lines, torn = [torn], None
        else:
            raise CorruptData(f"{path}: empty or torn header; the file is not a session")
    journal: dict[str, Any] | None = None  # the last journal record's header
    journal_last = False  # ... and whether it ends the file
    messages: list[Message] = []
    bad: list[tuple[int, bytes]] = []
    unfinished: list[tuple[int, bytes]] = []  # trailing records of an unfinished write
    high = 0
    if torn is not None and as_message(decode_record(torn)) is not None:
        lines.append(torn)  # complete record, only its newline is missing
        torn = None
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        record = decode_record(line)
        journal_last = False
        dropped = tombstone_high(record)
        if dropped is not None:
            high = max(high, dropped)
            unfinished.clear()
            continue
        if is_journal(record) and isinstance(record.get("header") if record else None, dict):
            assert record is not None
            journal, journal_last = record["header"], True
            unfinished.clear()
            continue
        message = as_message(record)
        if message is None:
            bad.append((number, line))
            if warn is not None:
                why = _problem(record)
                warn(
                    f"{path}: line {number} is not a valid message record ({why}); "
                    "skipped (kept in file)"
                )
        else:
            messages.append(message)
            high = max(high, message.seq)
            if is_unfinished(record):
                unfinished.append((number, line))
            else:
                unfinished.clear()
    if unfinished:
        del messages[-len(unfinished) :]
    if journal is not None and (journal_last or decode_record(lines[0]) is None):
        header = parse_header_record(journal, path)  # see header_of
    else:
        header = parse_header(lines[0], path)
    return Scan(header, messages, bad, torn, high, tuple(unfinished))


def skipped_warning(path: Path, number: int) -> str:
    """The one-line warning for a line a reader skipped because it is not a record."""
    return (
        f"{path}: line {number} is not a valid message record; skipped (kept in the file"
        f" until a write sets it aside in {path.stem}.rejects)"
    )


def unreadable(record: dict[str, Any] | None) -> bool:
    """True for a line that is no record at all, or a message record that cannot be
    read; False for any other record (the header, a tombstone, a kind not known here)."""
    if record is None:
        return True
    return record.get("type", "message") == "message" and as_message(record) is None


def line_number(fd: int, offset: int) -> int:
    """The 1-based number of the line that starts at ``offset`` (reads what is before it)."""
    count, pos = 0, 0
    while pos < offset:
        chunk = os.pread(fd, min(BLOCK, offset - pos), pos)
        if not chunk:
            break
        count += chunk.count(b"\n")
        pos += len(chunk)
    return count + 1


def reverse_lines(
    fd: int, size: int, skip: Callable[[bytes, int, int], bool] | None = None
) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, line) from the end of the file backwards, the torn tail excluded.

    Linear in what it reads, also for a line of many blocks (a 10 MB message): the
    pieces of a line are joined once, when its start is found. ``skip(block, start,
    end)`` may pass over the whole lines ``block[start:end]`` holds without their
    being split and yielded.
    """
    pos = size
    carry: list[bytes] = []  # later pieces of a line that starts before ``pos``, last first
    first = True
    block = min(4096, BLOCK)  # most callers need a line or two: start small, then grow
    while pos > 0:
        step = min(block, pos)
        block = min(block * 2, BLOCK)
        pos -= step
        chunk = os.pread(fd, step, pos)
        if b"\n" not in chunk:
            carry.append(chunk)
            continue
        if skip is not None and not first:
            start, end = chunk.find(b"\n") + 1, chunk.rfind(b"\n")
            if start < end and skip(chunk, start, end):
                carry.append(chunk[end + 1 :])
                yield pos + end + 1, b"".join(reversed(carry))  # the line after the block's
                carry = [chunk[: start - 1]]
                continue
        parts = chunk.split(b"\n")
        carry.append(parts[-1])
        last = b"".join(reversed(carry))  # the line that starts after this chunk's last newline
        carry = [parts[0]]
        offsets = []
        offset = pos + len(parts[0]) + 1
        for part in parts[1:]:
            offsets.append(offset)
            offset += len(part) + 1
        complete = [*parts[1:-1], last]
        if first:
            first = False
            tail = complete.pop()  # text after the file's last newline: an append in progress
            tail_offset = offsets.pop()
            if tail and as_message(decode_record(tail)) is not None:
                complete.append(tail)  # a valid last record without its newline
                offsets.append(tail_offset)
        yield from reversed(list(zip(offsets, complete, strict=True)))
    rest = b"".join(reversed(carry))
    if rest:
        yield 0, rest


def tail(
    path: Path, k: int, roles: frozenset[str] | None = None, warn: Warn | None = None
) -> list[Message]:
    """Return the last ``k`` messages (oldest first) by seeking from the end of the file.

    A line that is not a record, among those read, is skipped and reported to ``warn``
    by its line number, as a full read does.
    """
    if k <= 0:
        return []
    fd = open_transcript(path)
    try:
        size = os.fstat(fd).st_size
        found: list[Message] = []
        bad: list[int] = []  # offsets of lines that are not records
        at_end = True  # skipping the records of an unfinished write
        skip = None
        if roles is not None:
            names = [*roles, *(a for a, r in ROLE_ALIASES.items() if r in roles)]
            wanted = [b'"%s"' % name.encode() for name in names]

            def skip(block: bytes, start: int, end: int) -> bool:
                """Lines in which no JSON string is a wanted role name: names are plain
                letters, so without a ``\\u`` escape such a string shows as the name in
                quotes (``"system"``; a quote inside a string is ``\\"``). Exact, and no
                line is parsed; a block where one shows is read line by line."""
                return (
                    not at_end
                    and block.find(b"\\u", start, end) < 0
                    and all(block.find(w, start, end) < 0 for w in wanted)
                )

        for offset, line in reverse_lines(fd, size, skip):
            if roles is not None and not at_end:
                match = _ROLE_OF.match(line)
                if (
                    match is not None
                    and ROLE_ALIASES.get(role := match.group(1).decode(), role) not in roles
                ):
                    continue  # another role, seen without parsing the line
            record = decode_record(line)
            message = as_message(record)
            if tombstone_high(record) is not None or is_journal(record):
                at_end = False
            if message is None:
                if offset and line.strip() and unreadable(record):
                    bad.append(offset)
                continue  # the header, a tombstone, a blank or a corrupt line
            if at_end and is_unfinished(record):
                continue
            at_end = False
            if roles is None or message.role in roles:
                found.append(message)
                if len(found) >= k:
                    break
        if warn is not None:
            for offset in reversed(bad):
                warn(skipped_warning(path, line_number(fd, offset)))
    finally:
        os.close(fd)
    found.reverse()
    return found


# The role of a message record as sessionctl writes it (compact, keys in this order):
# ``recent --role`` skips other roles' records without parsing them.
_ROLE_OF = re.compile(rb'\{"type":"message","id":"[^"\\]*","seq":-?[0-9]+,"role":"([a-z]+)","')


class TailState(NamedTuple):
    """The end of a transcript: its last message and the highest seq ever used there."""

    last: Message | None
    last_offset: int
    high_seq: int


def tail_state(path: Path) -> TailState:
    """Read backwards to the last message, noting drop tombstones written after it."""
    fd = open_transcript(path)
    high = 0
    at_end = True  # skipping the records of an unfinished write
    try:
        for offset, line in reverse_lines(fd, os.fstat(fd).st_size):
            record = decode_record(line)
            dropped = tombstone_high(record)
            if dropped is not None:
                high = max(high, dropped)
                at_end = False
                continue
            if is_journal(record):
                at_end = False
                continue
            message = as_message(record)
            if message is not None:
                if at_end and is_unfinished(record):
                    continue
                return TailState(message, offset, max(high, message.seq))
    finally:
        os.close(fd)
    return TailState(None, 0, high)


def tombstone(message: Message, high: int) -> dict[str, Any]:
    """Return the record that marks ``message`` as dropped from the end of the file.

    Readers skip it; it keeps the dropped seq from being used again without
    rewriting the whole transcript.
    """
    return {
        "type": "dropped",
        "seq": message.seq,
        "id": message.id,
        "high": high,
        "dropped_at": now_iso(),
    }
