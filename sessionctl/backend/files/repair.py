"""Repairs of a transcript by its writers (under the session lock): a torn tail, junk
and unfinished multi-message writes are set aside in the rejects file, never dropped;
a header edit goes through its journal record (see :mod:`.transcript`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from sessionctl.backend.files.transcript import (
    BLOCK,
    Warn,
    as_message,
    decode_record,
    encode_header,
    first_line,
    is_unfinished,
    journal_at_end,
    last_journal,
    line_number,
    reverse_lines,
    unreadable,
)
from sessionctl.fsutil import FILE_MODE, append_private
from sessionctl.jsonlines import encode
from sessionctl.timeutil import now_iso


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


def _repair_torn(fd: int, size: int, path: Path, rejects: Path, warn: Warn | None) -> None:
    start = size
    while start > 0:
        step = min(BLOCK, start)
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
    for offset, line in reverse_lines(fd, size):
        if not line.strip():
            continue
        if offset == 0 or not unreadable(decode_record(line)):
            break
        start = offset
    if start is None:
        return
    first = line_number(fd, start)
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
    for offset, line in reverse_lines(fd, os.fstat(fd).st_size):
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
