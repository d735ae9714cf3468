"""The JSON-lines transcript file: header, records, tail reads and repair.

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
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from sessionctl.backend.files.header import Header as Header  # re-exported: it lives in header.py
from sessionctl.errors import CorruptData, MessageNotFound, StoreError
from sessionctl.fsutil import FILE_MODE, append_private, atomic_write_with, check_own_file
from sessionctl.jsonlines import encode as encode  # re-exported: the line format
from sessionctl.models import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_SEQ,
    ROLE_ALIASES,
    ROLES,
    Message,
    is_seq,
    record_problem,
)
from sessionctl.timeutil import now_iso

Warn = Callable[[str], None]
# Edits the header it is given in place; returns False when nothing changed.
HeaderChange = Callable[[Header], bool]
_BLOCK = 64 * 1024
_STREAM_BLOCK = 1024 * 1024  # forward reads (show, export, rewrites)
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
    previous = next(_reverse_lines(fd, offset), None)
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
        block = min(block * 2, _STREAM_BLOCK)
    return b"".join(pieces)


def journal_at_end(fd: int, path: Path) -> tuple[int, Header] | None:
    """The (offset, header) of a complete journal record ending the file, if one does."""
    size = os.fstat(fd).st_size
    if size < len(_JOURNAL_END) or os.pread(fd, len(_JOURNAL_END), size - len(_JOURNAL_END)) != (
        _JOURNAL_END
    ):
        return None
    last = next(_reverse_lines(fd, size), None)
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
    for offset, line in _reverse_lines(fd, os.fstat(fd).st_size):
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


def _line_number(fd: int, offset: int) -> int:
    """The 1-based number of the line that starts at ``offset`` (reads what is before it)."""
    count, pos = 0, 0
    while pos < offset:
        chunk = os.pread(fd, min(_BLOCK, offset - pos), pos)
        if not chunk:
            break
        count += chunk.count(b"\n")
        pos += len(chunk)
    return count + 1


def _reverse_lines(
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
    block = min(4096, _BLOCK)  # most callers need a line or two: start small, then grow
    while pos > 0:
        step = min(block, pos)
        block = min(block * 2, _BLOCK)
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

        for offset, line in _reverse_lines(fd, size, skip):
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
                warn(skipped_warning(path, _line_number(fd, offset)))
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
        for offset, line in _reverse_lines(fd, os.fstat(fd).st_size):
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


def repair_tail(path: Path, rejects: Path, warn: Warn | None) -> None:
    """Under the write lock: end the file on a newline, setting a torn last line aside,
    set aside unreadable lines after the last record (an append would bury them in the
    middle), and the records of a multi-message write that was cut short."""
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            _repair_torn(fd, size, path, rejects, warn)
        _repair_junk(fd, path, rejects, warn)
        _repair_unfinished(fd, path, rejects, warn)
        _repair_header(fd, path, rejects)
    finally:
        os.close(fd)


def _repair_header(fd: int, path: Path, rejects: Path) -> None:
    """Finish a header edit a crash interrupted: write the journal record's header over
    line 1 (torn or not yet written), then truncate the journal record away."""
    ending = journal_at_end(fd, path)
    line = first_line(fd)
    if ending is None:
        if decode_record(line) is not None:
            return
        found = last_journal(fd, path)  # line 1 torn and messages appended after its journal
        if found is None:
            return  # nothing to repair from: readers say the file is not a session
        _, header = found
    else:
        _, header = ending
    padded = encode_header(header, len(line))
    if len(padded) == len(line) and line.endswith(b"\n"):
        os.pwrite(fd, padded, 0)
        os.fsync(fd)
    elif ending is None:
        return  # not written by sessionctl: leave it for a person
    else:  # a journal record that does not fit line 1 (edited by hand): keep it aside
        set_aside(
            rejects,
            [(None, os.pread(fd, os.fstat(fd).st_size - ending[0], ending[0]))],
            "header journal record that does not fit line 1",
        )
    if ending is not None:
        os.ftruncate(fd, ending[0])
        os.fsync(fd)


def edit_header(path: Path, rejects: Path, warn: Warn | None, change: HeaderChange) -> Header:
    """Under the write lock: apply ``change`` to the header in place, O(1) in the file's size.

    ``change`` edits the header it is given and returns False when nothing changed.
    The new header is journalled at the end of the file (fsync: committed), written
    over line 1 (fsync), and the journal record truncated away (fsync). When it does
    not fit line 1's reserved width (or the file predates the reserve), the file is
    rewritten once, streamed, with a bigger reserve.
    """
    repair_tail(path, rejects, warn)  # also finishes an interrupted edit
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    try:
        check_own_file(fd, path)
        line = first_line(fd)
        header = parse_header(line, path)
        if not change(header):
            return header
        header.updated_at = now_iso()
        padded = encode_header(header, len(line))
        if len(padded) != len(line) or not line.endswith(b"\n"):
            return rewrite(path, rejects, warn, lambda _: header)[0]
        size = os.fstat(fd).st_size
        journal = encode({"header": header.to_record(), "type": JOURNAL})
        append_private(path, journal)  # all or nothing, fsynced: the edit is committed
        try:
            os.pwrite(fd, padded, 0)
            os.fsync(fd)
        except BaseException:  # an I/O error, Ctrl-C: back to the old header, then fail
            os.pwrite(fd, line, 0)
            os.fsync(fd)
            os.ftruncate(fd, size)
            os.fsync(fd)
            raise
        os.ftruncate(fd, size)
        os.fsync(fd)
        return header
    finally:
        os.close(fd)


def _repair_torn(fd: int, size: int, path: Path, rejects: Path, warn: Warn | None) -> None:
    start = size
    while start > 0:
        step = min(_BLOCK, start)
        chunk = os.pread(fd, step, start - step)
        idx = chunk.rfind(b"\n")
        if idx >= 0:
            start = start - step + idx + 1
            break
        start -= step
    segment = os.pread(fd, size - start, start)
    if as_message(decode_record(segment)) is not None or start == 0:
        os.pwrite(fd, b"\n", size)  # a whole record that only lacks its newline
    else:
        set_aside(rejects, [(None, segment)], "torn last line (an interrupted write)")
        os.ftruncate(fd, start)
        if warn is not None:
            warn(f"{path}: set aside a torn last line from an interrupted write")
    os.fsync(fd)


def _repair_junk(fd: int, path: Path, rejects: Path, warn: Warn | None) -> None:
    """Set aside the unreadable lines that end the file (after its last record)."""
    size = os.fstat(fd).st_size
    start = None
    for offset, line in _reverse_lines(fd, size):
        if not line.strip():
            continue
        if offset == 0 or not unreadable(decode_record(line)):
            break
        start = offset
    if start is None:
        return
    first = _line_number(fd, start)
    segment = os.pread(fd, size - start, start)
    junk = [(first + i, line) for i, line in enumerate(segment.split(b"\n")) if line.strip()]
    set_aside(rejects, list(junk), "unreadable line (at the end, before a write)")
    os.ftruncate(fd, start)
    os.fsync(fd)
    if warn is not None:
        last = junk[-1][0]
        what = (
            f"line {first} is not a valid message record"
            if last == first
            else f"lines {first}-{last} are not valid message records"
        )
        warn(f"{path}: {what}; set aside in {rejects.name}")


def _repair_unfinished(fd: int, path: Path, rejects: Path, warn: Warn | None) -> None:
    """Set aside the records of a multi-message write cut short at the end of the file."""
    lines: list[tuple[int, bytes]] = []
    for offset, line in _reverse_lines(fd, os.fstat(fd).st_size):
        if b'"more"' not in line:  # the common case, without parsing a long last line
            break
        record = decode_record(line)
        if not (is_unfinished(record) and as_message(record) is not None):
            break
        lines.append((offset, line))
    if not lines:
        return
    lines.reverse()
    reason = "unfinished multi-message write (interrupted)"
    set_aside(rejects, [(None, line) for _, line in lines], reason)
    os.ftruncate(fd, lines[0][0])
    os.fsync(fd)
    if warn is not None:
        warn(f"{path}: set aside {len(lines)} message(s) of an interrupted multi-message write")


def set_aside(rejects: Path, lines: Sequence[tuple[int | None, bytes]], reason: str) -> None:
    """Append unreadable lines to the session's rejects file so nothing is lost."""
    if not lines:
        return
    payload = b"".join(
        encode(
            {
                "set_aside_at": now_iso(),
                "reason": reason,
                "line": number,
                "data": raw.decode("utf-8", "backslashreplace"),
            }
        )
        for number, raw in lines
    )
    fd = os.open(rejects, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # umask-independent (a 0277 umask would make it 0400)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            payload = b"\n" + payload  # a crash tore the last record: start on a new line
    finally:
        os.close(fd)
    append_private(rejects, payload)


# -- streaming: whole-file reads and rewrites in constant memory ----------------------------


def _forward_lines(fd: int, start: int, end: int) -> Iterator[bytes]:
    """Yield the lines of ``[start, end)`` in order, without their newlines; the text
    after the last newline (if any) comes last."""
    pos = start
    carry: list[bytes] = []
    while pos < end:
        chunk = os.pread(fd, min(_STREAM_BLOCK, end - pos), pos)
        if not chunk:
            break
        pos += len(chunk)
        if b"\n" not in chunk:
            carry.append(chunk)
            continue
        carry.append(chunk)
        parts = b"".join(carry).split(b"\n")
        carry = [parts.pop()]
        yield from parts
    rest = b"".join(carry)
    if rest:
        yield rest


def _complete_end(fd: int, size: int) -> int:
    """Where the records of a multi-message write cut short at the end begin (else ``size``)."""
    cut = size
    for offset, line in _reverse_lines(fd, size):
        if not line.strip():
            continue
        record = decode_record(line)
        if not (is_unfinished(record) and as_message(record) is not None):
            break
        cut = offset
    return cut


class Stream(NamedTuple):
    """A transcript opened for one forward pass: its header, then its messages."""

    header: Header
    messages: Iterator[Message]


def stream(path: Path, warn: Warn | None = None) -> Stream:
    """Open ``path`` for one pass over its messages in constant memory (show, export).

    Sees what :func:`scan` sees: corrupt middle lines reported by number and
    skipped, a torn tail and the records of a write cut short left out. The file
    stays open until the messages are exhausted (a rewrite meanwhile replaces the
    file, never these bytes).
    """
    fd = open_transcript(path)
    try:
        header = header_of(fd, path)
        size = os.fstat(fd).st_size
        end = _complete_end(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return Stream(header, _stream_messages(fd, path, end, size, warn))


def _stream_messages(
    fd: int, path: Path, end: int, size: int, warn: Warn | None
) -> Iterator[Message]:
    try:
        lines = _forward_lines(fd, 0, end)
        next(lines, None)  # the header
        pending: bytes | None = None
        number = 1
        for line in lines:
            if pending is not None:
                yield from _message_or_warn(pending, number, path, warn)
            number += 1
            pending = line
        if pending is not None:
            if end == size and os.pread(fd, 1, size - 1) != b"\n":
                message = as_message(decode_record(pending))  # the text after the last newline
                if message is not None:
                    yield message  # a whole record that only lacks its newline
            else:
                yield from _message_or_warn(pending, number, path, warn)
    finally:
        os.close(fd)


def _message_or_warn(line: bytes, number: int, path: Path, warn: Warn | None) -> Iterator[Message]:
    if not line.strip():
        return
    record = decode_record(line)
    message = as_message(record)
    if message is not None:
        yield message
    elif warn is not None and (record is None or record.get("type") not in ("dropped", JOURNAL)):
        warn(f"{path}: line {number} is not a valid message record; skipped (kept in file)")


class _Sink:
    """Buffered writes to a file descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()

    def write(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= _STREAM_BLOCK:
            self.flush()

    def flush(self) -> None:
        view = memoryview(self.buffer)
        while view:
            view = view[os.write(self.fd, view) :]
        self.buffer = bytearray()


_ROLES = frozenset(ROLES)
_SEQ_FAST_LIMIT = 1 << 53  # larger seqs take the full check (as_message)


def _fast_message(record: dict[str, Any]) -> bool:
    """True when ``record`` is certainly a message :func:`as_message` accepts, as
    sessionctl writes them: a cheaper check for the common case of a rewrite."""
    seq = record.get("seq")
    return (
        record.get("type") == "message"
        and type(seq) is int
        and 0 < seq < _SEQ_FAST_LIMIT
        and type(record.get("id")) is str
        and record.get("role") in _ROLES
        and type(record.get("content")) is str
    )


class Rewritten(NamedTuple):
    """What :func:`rewrite` wrote: the new header, how many messages, the dropped one."""

    header: Header
    messages: int
    dropped: Message | None


def rewrite(
    path: Path,
    rejects: Path,
    warn: Warn | None,
    change: Callable[[Header], Header],
    *,
    drop_id: str | None = None,
) -> Rewritten:
    """Under the write lock: rewrite the transcript in one streamed pass, constant memory.

    The header becomes ``change(header)`` (padded to a fresh reserve); the message
    ``drop_id`` is left out (MessageNotFound when there is none). Positions are
    renumbered, tombstones and journal records folded into the header, corrupt lines
    set aside into ``rejects`` first. Temp file, fsync, rename, fsync of the directory.
    """
    repair_tail(path, rejects, warn)  # a torn tail, a write cut short, an unfinished edit
    src = open_transcript(path)
    try:
        line1 = first_line(src)
        header = change(parse_header(line1, path))
        size = os.fstat(src).st_size
        # base_seq and base_count are known at the end: room for them in the reserve
        width = header_width(len(encode(header.to_record())) + 48)
        count = high = 0
        dropped: Message | None = None
        bad: list[tuple[int | None, bytes]] = []

        def fill(fd: int) -> None:
            nonlocal count, high, dropped
            out = _Sink(fd)
            out.write(b" " * (width - 1) + b"\n")
            for number, line in enumerate(_forward_lines(src, len(line1), size), start=2):
                if not line.strip():
                    continue
                record = decode_record(line)
                if record is not None and _fast_message(record):
                    seq, message_id = record["seq"], record["id"]
                    message = None
                else:
                    burnt = tombstone_high(record)
                    if burnt is not None:
                        high = max(high, burnt)
                        continue
                    if is_journal(record):
                        continue
                    message = as_message(record)
                    if message is None:
                        if warn is not None:
                            warn(
                                f"{path}: line {number} is not a valid message record;"
                                f" set aside into {rejects.name}"
                            )
                        bad.append((number, line))
                        if len(bad) >= 1000:
                            set_aside(rejects, bad, "corrupt line (before rewrite)")
                            bad.clear()
                        continue
                    seq, message_id = message.seq, message.id
                assert record is not None
                high = max(high, seq)
                if drop_id is not None and dropped is None and message_id == drop_id:
                    dropped = message or as_message(record)
                    continue
                count += 1
                if message is None and "more" not in record:  # as sessionctl wrote it
                    pos = record.get("pos")
                    if pos == count:
                        out.write(line + b"\n")  # as it was: no need to encode it again
                        continue
                    old = b',"pos":%d}' % pos if type(pos) is int else b"-"
                    if line.endswith(old):  # pos is the last key: renumber it in the bytes
                        out.write(line[: -len(old)] + b',"pos":%d}\n' % count)
                        continue
                message = message or as_message(record)
                assert message is not None
                out.write(encode(message._replace(pos=count).to_record()))
            if drop_id is not None and dropped is None:
                if count == 0:
                    raise MessageNotFound(f"session {path.stem!r} has no messages to drop")
                raise MessageNotFound(f"no message with id {drop_id!r} in session {path.stem!r}")
            set_aside(rejects, bad, "corrupt line (before rewrite)")
            header.base_seq = max(header.base_seq, high)
            header.base_count = count
            header.updated_at = now_iso()
            out.flush()
            line = encode_header(header, width)
            assert len(line) == width, "the reserve holds the header"
            os.pwrite(fd, line, 0)

        atomic_write_with(path, fill)
    finally:
        os.close(src)
    return Rewritten(header, count, dropped)
