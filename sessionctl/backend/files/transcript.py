"""The JSON-lines transcript file: header, records, tail reads and repair.

Layout (docs/format.md): line 1 is a header record, every later line is a
message record. Readers never lock: an append in progress shows up as a torn
last line, which readers ignore. Writers (under the session lock) repair a
torn tail and set aside any line that cannot be parsed, never dropping it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from sessionctl.backend.files.header import Header as Header  # re-exported: it lives in header.py
from sessionctl.errors import CorruptData, StoreError, UsageError
from sessionctl.fsutil import FILE_MODE, append_private
from sessionctl.models import FORMAT_NAME, FORMAT_VERSION, MAX_SEQ, Message, is_seq, record_problem
from sessionctl.timeutil import now_iso

Warn = Callable[[str], None]
_BLOCK = 64 * 1024


def encode(record: dict[str, Any]) -> bytes:
    """Return one JSON line (UTF-8, compact, newline-terminated)."""
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
    try:
        return text.encode()
    except UnicodeEncodeError:
        # Lone surrogates, e.g. command-line bytes that were not UTF-8.
        raise UsageError("text is not valid UTF-8 (undecodable bytes); nothing written") from None


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


def parse_header(line: bytes, path: Path) -> Header:
    """Parse line 1, or raise CorruptData saying why."""
    record = decode_record(line)
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
    """Return the header of the transcript at ``path`` (reads only line 1)."""
    fd = open_transcript(path)
    with os.fdopen(fd, "rb") as f:
        line = f.readline()
    return parse_header(line, path)


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
    header = parse_header(lines[0], path)
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
        dropped = tombstone_high(record)
        if dropped is not None:
            high = max(high, dropped)
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


def _reverse_lines(fd: int, size: int) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, line) from the end of the file backwards, the torn tail excluded.

    Linear in what it reads, also for a line of many blocks (a 10 MB message): the
    pieces of a line are joined once, when its start is found.
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
        for offset, line in _reverse_lines(fd, size):
            record = decode_record(line)
            message = as_message(record)
            if tombstone_high(record) is not None:
                at_end = False
            if message is None:
                if offset and line.strip() and not (record and record.get("type") == "dropped"):
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
