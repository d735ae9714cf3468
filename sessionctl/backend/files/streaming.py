"""Whole-file reads and rewrites of a transcript in constant memory (show, export,
drop by id, clear): forward streaming with the same rules as :func:`.transcript.scan`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from sessionctl.backend.files.repair import repair_tail, set_aside
from sessionctl.backend.files.transcript import (
    JOURNAL,
    STREAM_BLOCK,
    Header,
    HeaderChange,
    Warn,
    as_message,
    decode_record,
    encode_header,
    first_line,
    header_of,
    header_width,
    is_journal,
    is_unfinished,
    open_transcript,
    parse_header,
    reverse_lines,
    tombstone_high,
)
from sessionctl.errors import MessageNotFound
from sessionctl.fsutil import append_private, atomic_write_with, check_own_file
from sessionctl.jsonlines import encode
from sessionctl.models import ROLES, Message
from sessionctl.timeutil import now_iso


def _forward_lines(fd: int, start: int, end: int) -> Iterator[bytes]:
    """Yield the lines of ``[start, end)`` in order, without their newlines; the text
    after the last newline (if any) comes last."""
    pos = start
    carry: list[bytes] = []
    while pos < end:
        chunk = os.pread(fd, min(STREAM_BLOCK, end - pos), pos)
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
    for offset, line in reverse_lines(fd, size):
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
        if len(self.buffer) >= STREAM_BLOCK:
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
