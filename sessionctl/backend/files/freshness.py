"""Knowing the index is current without reading the whole transcript.

A full catch-up parses every message (~0.8 s for 100,000). After each sync
that saved the index, a small stamp (``NAME.index.stamp``) records the
transcript's inode, size, mtime and last bytes, and the index files' stats.
Next time, under the session lock:

- nothing changed: the index is current, no parsing at all;
- the transcript only grew (same inode, the stamped bytes still in place, only
  new message records after them): embed and add just those;
- anything else (a rewrite, a drop, a corrupt line, other index files): the
  caller runs the full sync, which writes a fresh stamp.

The stamp is derived data like the index: deleting it only costs one full sync.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sessionctl.backend.files.transcript import (
    as_message,
    decode_record,
    is_unfinished,
    read_header,
)
from sessionctl.fsutil import atomic_write

if TYPE_CHECKING:
    from sessionctl.backend.files.sidecar import SidecarIndex
    from sessionctl.embed import Embedder

STAMP_SUFFIX = ".index.stamp"
_TAIL = 64


def _stat(path: Any) -> list[int] | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _index_stats(index: SidecarIndex) -> list[list[int] | None]:
    return [_stat(p) for p in index.files()]


def write_stamp(
    transcript: Path, stamp_path: Path, index: SidecarIndex, uid: str, size: int | None = None
) -> None:
    """Record that ``index`` covers ``name``'s transcript up to ``size`` (default: all of it).

    Call under the session lock, right after the index was saved.
    """
    path = transcript
    stat = _stat(path)
    if stat is None:
        return
    end = stat[1] if size is None else size
    with open(path, "rb") as f:
        f.seek(max(0, end - _TAIL))
        tail = f.read(end - max(0, end - _TAIL))
    stamp = {
        "uid": uid,
        "transcript": [stat[0], end, stat[2]],
        "tail": tail.hex(),
        "index": _index_stats(index),
    }
    try:
        atomic_write(stamp_path, json.dumps(stamp).encode())
    except OSError:
        pass  # derived data: the next search does a full sync


def _read_stamp(stamp_path: Path) -> dict[str, Any] | None:
    try:
        with open(stamp_path, "rb") as f:
            value = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def fast_catch_up(
    transcript: Path, stamp_path: Path, embedder: Embedder, index: SidecarIndex
) -> bool:
    """Bring the index current from the stamp; False when a full sync is needed.

    Call under the session lock.
    """
    stamp = _read_stamp(stamp_path)
    path = transcript
    current = _stat(path)
    if stamp is None or current is None or stamp.get("index") != _index_stats(index):
        return False
    try:
        ino, size, mtime = stamp["transcript"]
        tail = bytes.fromhex(stamp["tail"])
        uid = str(stamp["uid"])
    except (KeyError, TypeError, ValueError):
        return False
    if current[0] != ino or current[1] < size:
        return False
    # The stamp was written right after a sync that verified (or wrote) these index
    # files, and their stats are unchanged: no need to hash the .faiss file again.
    index.trust(stamp["index"][0])
    if current[1] == size:
        return bool(current[2] == mtime) and read_header(path).uid == uid
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        if os.pread(fd, len(tail), size - len(tail)) != tail:
            return False
        grown = os.pread(fd, current[1] - size, size)
    finally:
        os.close(fd)
    if read_header(path).uid != uid:
        return False
    complete = grown[: grown.rfind(b"\n") + 1]  # a torn last line waits for its writer
    added: list[tuple[int, str]] = []
    pending: list[tuple[int, str]] = []
    done = offset = 0
    for line in complete.split(b"\n")[:-1]:
        offset += len(line) + 1
        record = decode_record(line)
        message = as_message(record)
        if message is None:
            return False  # a tombstone or a corrupt line: let the full sync decide
        pending.append((message.seq, message.content))
        if not is_unfinished(record):  # the write this record ends is complete
            added += pending
            pending, done = [], offset
    # Records of a write still going on (or cut short) wait: stamp only up to `done`.
    complete = complete[:done]
    if added:
        report = index.add(added, embedder, transcript_uid=uid)
        if report is None:
            return False
        if report.save_error:
            return True  # current in memory; no stamp, so the next search syncs in full
    write_stamp(transcript, stamp_path, index, uid, size + len(complete))
    return True
