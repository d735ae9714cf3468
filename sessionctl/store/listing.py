"""Which sessions exist and when each was last active, in two reads.

Last activity comes from the activity log (activity.py). Which sessions exist
takes a listing of ``sessions/`` (10,000 names: ~4 ms, and four times that once
sidecar index files sit beside the transcripts). ``HOME/activity.stamp``
(:class:`ListingStamp`) records what the last full listing found, keyed by the
directory's ``(st_dev, st_ino, st_mtime_ns)``: while that is unchanged no
entry was added, removed or renamed there, so the log plus the stamp's few
exceptions name exactly the live sessions. Appending to a transcript leaves
the directory alone; creating, deleting, renaming or rewriting a file
(sessionctl's or anyone's) changes it, and the next reader lists again. A stamp
is written only for a directory unchanged for :data:`SETTLE_NS` before the
listing began, so a change within the same timestamp tick as the listing
cannot hide behind an equal mtime.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import operator
import os
import time
from pathlib import Path
from typing import NamedTuple

from sessionctl.fsutil import FILE_MODE
from sessionctl.store.activity import ActivityLog
from sessionctl.store.trash import TRANSCRIPT

STAMP_NAME = "activity.stamp"
#: A listing is stamped only if the directory was last changed this long before it.
SETTLE_NS = 2_000_000_000


class ListingStamp(NamedTuple):
    """What a full listing of ``sessions/`` found; valid while the directory is unchanged."""

    directory: tuple[int, int, int]  # st_dev, st_ino, st_mtime_ns, taken before listing
    logged_live: int  # live sessions the log named
    unlogged: tuple[str, ...]  # live sessions the log did not name (their mtime counts)
    dead: tuple[str, ...]  # names in the log with no live session

    def to_bytes(self) -> bytes:
        return json.dumps(self._asdict(), separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> ListingStamp | None:
        """The stamp, or None for anything malformed (the caller lists the directory)."""
        try:
            doc = json.loads(data)
            stamp = cls(
                directory=tuple(doc["directory"]),
                logged_live=doc["logged_live"],
                unlogged=tuple(doc["unlogged"]),
                dead=tuple(doc["dead"]),
            )
        except (ValueError, TypeError, KeyError):
            return None
        strings = all(isinstance(n, str) for n in (*stamp.unlogged, *stamp.dead))
        numbers = (*stamp.directory, stamp.logged_live)
        if len(stamp.directory) != 3 or not strings or any(type(x) is not int for x in numbers):
            return None
        return stamp


def read_stamp(path: Path) -> ListingStamp | None:
    """The last listing's stamp, or None (missing, unreadable, malformed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return ListingStamp.from_bytes(f.read(64 * 1024 * 1024))


def write_stamp(path: Path, stamp: ListingStamp) -> None:
    """Save a listing's stamp; derived data, so a failure (read-only home) is ignored.

    Written in place with one ``write`` (no temp file for a crash to leave
    behind, no fsync): a reader that meets a torn or half-written stamp finds
    it malformed and lists the directory instead.
    """
    data = stamp.to_bytes()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    with contextlib.suppress(OSError):
        fd = os.open(path, flags, FILE_MODE)
        try:
            if os.fstat(fd).st_mode & 0o777 != FILE_MODE:
                os.fchmod(fd, FILE_MODE)  # created under a strict umask
            os.write(fd, data)
        finally:
            os.close(fd)


def activity_times(sessions_dir: Path, log: ActivityLog) -> dict[str, int]:
    """Return name → last activity (ns) of every live session in ``sessions_dir``.

    Times come from the activity log, falling back to the transcript's mtime
    for a session the log does not know. Which sessions exist comes from the
    stamp while ``sessions_dir`` is unchanged since the last full listing,
    else from listing it again.
    """
    try:
        st = os.stat(sessions_dir, follow_symlinks=False)
    except FileNotFoundError:
        return {}
    directory = (st.st_dev, st.st_ino, st.st_mtime_ns)
    stamp_path = log.path.with_name(STAMP_NAME)
    logged = log.read()
    stamp = read_stamp(stamp_path)
    if stamp is not None and stamp.directory == directory:
        times = _times_from_stamp(sessions_dir, logged, stamp)
        if times is not None:
            return times
    return _times_from_listing(sessions_dir, log, logged, directory, stamp_path)


def _mtime(sessions_dir: Path, name: str) -> int:
    return os.stat(sessions_dir / f"{name}{TRANSCRIPT}", follow_symlinks=False).st_mtime_ns


def _times_from_stamp(
    sessions_dir: Path, logged: dict[str, int], stamp: ListingStamp
) -> dict[str, int] | None:
    for name in stamp.dead:
        logged.pop(name, None)
    now_logged = [name for name in stamp.unlogged if name in logged]  # written since
    if len(logged) != stamp.logged_live + len(now_logged):
        return None  # the log lost names (deleted by hand?): list the directory
    for name in stamp.unlogged:
        if name not in logged:
            try:
                logged[name] = _mtime(sessions_dir, name)
            except FileNotFoundError:
                return None
    return logged


def _times_from_listing(
    sessions_dir: Path,
    log: ActivityLog,
    logged: dict[str, int],
    directory: tuple[int, int, int],
    stamp_path: Path,
) -> dict[str, int]:
    started = time.time_ns()
    try:
        files = set(os.listdir(sessions_dir))
    except FileNotFoundError:
        return {}
    # 10,000 sessions: set operations and C-level maps, no Python loop per name.
    logged_files = list(map(operator.concat, logged, itertools.repeat(TRANSCRIPT)))
    alive = list(map(files.__contains__, logged_files))
    times = dict(itertools.compress(logged.items(), alive))
    dead = tuple(itertools.compress(logged, map(operator.not_, alive)))
    unlogged = []
    for file in files.difference(logged_files):  # copied in by hand, or the log was lost
        if file.endswith(TRANSCRIPT) and file[0] != ".":
            name = file[: -len(TRANSCRIPT)]
            try:
                times[name] = _mtime(sessions_dir, name)
            except FileNotFoundError:
                continue  # deleted while we looked
            unlogged.append(name)
    if log.needs_compaction(len(times)):
        log.compact(times)
    if directory[2] < started - SETTLE_NS:
        logged_live = len(times) - len(unlogged)
        write_stamp(stamp_path, ListingStamp(directory, logged_live, tuple(unlogged), dead))
    return times
