"""Find messages by seq without reading the whole transcript.

Records are in seq order, so a binary search over byte offsets finds one in
O(log n) small reads: `relevant` on a 100,000-message session reads a few
kilobytes to show its hits instead of parsing ~40 MB.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sessionctl.backend.files.transcript import (
    as_message,
    decode_record,
    open_transcript,
    tail_state,
)
from sessionctl.models import Message, is_seq

_CHUNK = 8192


def _line_at(fd: int, offset: int, size: int) -> tuple[int, bytes] | None:
    """Return (start, line) of the first complete line starting at or after ``offset``."""
    if offset > 0:
        # Skip to just after the next newline (the start of a line).
        pos = offset - 1
        while pos < size:
            chunk = os.pread(fd, _CHUNK, pos)
            if not chunk:
                return None
            idx = chunk.find(b"\n")
            if idx >= 0:
                offset = pos + idx + 1
                break
            pos += len(chunk)
        else:
            return None
    parts: list[bytes] = []
    pos = offset
    while pos < size:
        chunk = os.pread(fd, _CHUNK, pos)
        idx = chunk.find(b"\n")
        if idx >= 0:
            parts.append(chunk[:idx])
            return offset, b"".join(parts)
        parts.append(chunk)
        pos += len(chunk)
    return None  # a torn last line: not a record yet


def _seq_of(record: dict[str, Any] | None) -> int | None:
    if record is None or record.get("type") == "header":
        return None
    seq = record.get("seq")
    return seq if is_seq(seq) else None  # out of range: a malformed line, skipped


def messages_by_seq(path: Path, seqs: Iterable[int]) -> dict[int, Message]:
    """Return the messages with these seqs (missing ones are simply absent)."""
    # The records of a write cut short at the end of the file are no messages (yet):
    # readers skip them and the next writer sets them aside (docs/format.md, "more").
    last = tail_state(path).last
    newest = 0 if last is None else last.seq
    wanted_seqs = sorted(s for s in set(seqs) if s <= newest)
    if len(wanted_seqs) * max(1, newest.bit_length()) >= newest:
        # Many of them: one pass over the file decodes each record once, where a
        # binary search per seq would decode log2(n) records for each.
        return _scan(path, set(wanted_seqs), newest)
    fd = open_transcript(path)
    found: dict[int, Message] = {}
    try:
        size = os.fstat(fd).st_size
        for wanted in wanted_seqs:
            lo, hi = 0, size
            while lo < hi:
                mid = (lo + hi) // 2
                hit = _line_at(fd, mid, size)
                # Skip lines without a seq (header, blanks, corrupt) going forward.
                seq = None
                while hit is not None:
                    seq = _seq_of(decode_record(hit[1]))
                    if seq is not None:
                        break
                    hit = _line_at(fd, hit[0] + len(hit[1]) + 1, size)
                if hit is None or seq is None or seq >= wanted:
                    hi = mid
                else:
                    lo = hit[0] + len(hit[1]) + 1
            hit = _line_at(fd, lo, size)
            while hit is not None:
                record = decode_record(hit[1])
                seq = _seq_of(record)
                if seq is not None and seq > wanted:
                    break
                message = as_message(record)
                if message is not None and message.seq == wanted:
                    found[wanted] = message
                    break
                hit = _line_at(fd, hit[0] + len(hit[1]) + 1, size)
    finally:
        os.close(fd)
    return found


def _scan(path: Path, wanted: set[int], newest: int) -> dict[int, Message]:
    """:func:`messages_by_seq` by reading the transcript from start to ``newest``."""
    found: dict[int, Message] = {}
    if not wanted:
        return found
    with os.fdopen(open_transcript(path), "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break  # a torn last line: not a record yet
            record = decode_record(line[:-1])
            seq = _seq_of(record)
            if seq is None or seq not in wanted:
                if seq is not None and seq >= newest:
                    break
                continue
            message = as_message(record)
            if message is not None:
                found[seq] = message
                if len(found) == len(wanted) or seq >= newest:
                    break
    return found
