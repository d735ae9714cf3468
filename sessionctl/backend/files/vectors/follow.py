"""Reading what a transcript holds since the store-wide index last covered it.

The index records, per session, the transcript's inode, how many bytes it
covered and the last 64 of them. When the transcript is the same file, no
shorter and those bytes are still in place, only the bytes after them are
read (an append); anything else (a rewrite, a drop's tombstone, a corrupt
line, another inode) means reading the whole transcript once. Records of a
multi-message write still under way (``more`` > 0 at the end) wait for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from sessionctl.backend.files import transcript
from sessionctl.backend.files.vectors.journal import SessionState
from sessionctl.models import Message

TAIL = 64


class Reading(NamedTuple):
    """What one transcript holds: all its messages (``full``) or only the appended ones."""

    uid: str
    messages: list[Message]
    full: bool
    ino: int  # what the next reading may start from (ino 0: read in full next time)
    size: int
    tail: str


def read(
    path: Path,
    state_of: Callable[[str], SessionState | None],
    *,
    force_full: bool = False,
    warn: transcript.Warn | None = None,
) -> Reading:
    """Read ``path`` from where its state (looked up by the header's uid) left off.

    Raises FileNotFoundError (deleted meanwhile) or StoreError/CorruptData.
    """
    fd = transcript.open_transcript(path)
    try:
        st = os.fstat(fd)
        with os.fdopen(os.dup(fd), "rb") as f:
            first = f.readline()
        header = transcript.parse_header(first, path)
        state = state_of(header.uid)
        if state is not None and not force_full:
            grown = _appended(fd, st, state)
            if grown is not None:
                messages, covered = grown
                end = state.size + covered
                return Reading(header.uid, messages, False, st.st_ino, end, _tail(fd, end))
        size = st.st_size
        ends_clean = size > 0 and os.pread(fd, 1, size - 1) == b"\n"
        tail = _tail(fd, size)
    finally:
        os.close(fd)
    scanned = transcript.scan(path, warn)  # a corrupt middle line is reported by number
    if scanned.header.uid != header.uid:
        return Reading(scanned.header.uid, scanned.messages, True, 0, 0, "")
    clean = ends_clean and not scanned.unfinished and scanned.torn is None
    return Reading(header.uid, scanned.messages, True, st.st_ino if clean else 0, size, tail)


def _tail(fd: int, end: int) -> str:
    start = max(0, end - TAIL)
    return os.pread(fd, end - start, start).hex()


def _appended(fd: int, st: os.stat_result, state: SessionState) -> tuple[list[Message], int] | None:
    """The messages appended after ``state``'s point and the bytes they span; None: read all."""
    if not state.ino or st.st_ino != state.ino or st.st_size < state.size:
        return None
    try:
        tail = bytes.fromhex(state.tail)
    except ValueError:
        return None
    if os.pread(fd, len(tail), state.size - len(tail)) != tail:
        return None
    grown = os.pread(fd, st.st_size - state.size, state.size)
    complete = grown[: grown.rfind(b"\n") + 1]  # a torn last line waits for its writer
    added: list[Message] = []
    pending: list[Message] = []
    done = offset = 0
    for line in complete.split(b"\n")[:-1]:
        offset += len(line) + 1
        if not line.strip():
            continue
        record = transcript.decode_record(line)
        message = transcript.as_message(record)
        if message is None:
            return None  # a tombstone or a corrupt line: read it all
        pending.append(message)
        if not transcript.is_unfinished(record):
            added += pending
            pending, done = [], offset
    return added, done
