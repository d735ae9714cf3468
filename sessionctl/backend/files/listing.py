"""Which sessions exist and when each was last active, without reading them all.

Last activity comes from the activity log (activity.py). Which sessions exist
takes a listing of ``sessions/`` (10,000 names: ~4 ms, and four times that once
sidecar index files sit beside the transcripts), and parsing a 10,000-line log
costs ~3 ms more. ``HOME/activity.stamp`` (:class:`Snapshot`) saves both: it
holds what the last full listing found, sorted newest first, up to a known
offset of the log, and is valid while

* ``sessions/`` keeps its ``(st_dev, st_ino, st_mtime_ns)``: no entry was
  added, removed or renamed there (appending to a transcript leaves the
  directory alone; creating, deleting, renaming or rewriting a file changes it);
* the log is the same file (compaction replaces it) and no shorter.

A reader then applies only the log lines written since (its *tail*), and a page
of 20 parses about 20 lines of the stamp instead of 10,000. Readers fold a long
tail into a new stamp. A stamp from a full listing is written only for a
directory unchanged for :data:`SETTLE_NS` before the listing began, so a change
within the same timestamp tick as the listing cannot hide behind an equal mtime.
Anything torn, malformed or stale means listing the directory again.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import operator
import os
import time
from pathlib import Path

from sessionctl.backend.files.activity import ActivityLog, LogKey, Times, merge, parse_lines
from sessionctl.backend.files.layout import TRANSCRIPT
from sessionctl.fsutil import FILE_MODE

STAMP_NAME = "activity.stamp"
STAMP_VERSION = 2
#: A listing is stamped only if the directory was last changed this long before it.
SETTLE_NS = 2_000_000_000
#: A reader folds the log's tail into a new stamp once it is this long.
FOLD_BYTES = 64 * 1024

Entry = tuple[str, int]  # (name, last activity in ns)

#: The last snapshot body parsed in this process, with its parse (Snapshot.times).
_parsed: tuple[bytes, dict[str, int]] | None = None


def newest_first(entry: Entry) -> tuple[int, str]:
    """Sort key of the listing order: newest activity first, ties by name."""
    return (-entry[1], entry[0])


class Snapshot:
    """What a full listing found, sorted; valid while directory and log are as keyed.

    On disk: one JSON line (the keys, the unlogged names, the body's length),
    then the body: ``<ns> <name>`` per logged live session, newest first.
    """

    __slots__ = ("body", "directory", "log", "offset", "unlogged")

    def __init__(
        self,
        directory: tuple[int, int, int],
        log: LogKey,
        offset: int,
        unlogged: tuple[str, ...],
        body: bytes,
    ) -> None:
        self.directory = directory  # sessions/: st_dev, st_ino, st_mtime_ns before listing
        self.log = log  # activity.log: st_dev, st_ino, identity
        self.offset = offset  # how far into that log the times reach
        self.unlogged = unlogged  # live sessions the log did not name (their mtime counts)
        self.body = body

    @classmethod
    def build(
        cls,
        directory: tuple[int, int, int],
        log: LogKey,
        offset: int,
        logged: dict[str, int],
        unlogged: tuple[str, ...],
    ) -> Snapshot:
        # By name, then (stable) by time descending: newest first, ties by name.
        entries = sorted(sorted(logged.items()), key=operator.itemgetter(1), reverse=True)
        lines = map("{0[1]} {0[0]}\n".format, entries)
        return cls(directory, log, offset, unlogged, "".join(lines).encode())

    def to_bytes(self) -> bytes:
        head = {
            "v": STAMP_VERSION,
            "directory": self.directory,
            "log": self.log,
            "offset": self.offset,
            "unlogged": self.unlogged,
            "bytes": len(self.body),
        }
        return json.dumps(head, separators=(",", ":")).encode() + b"\n" + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> Snapshot | None:
        """The snapshot, or None for anything torn or malformed (the caller lists)."""
        nl = data.find(b"\n")
        try:
            head = json.loads(data[:nl]) if nl > 0 else None
            if not isinstance(head, dict) or head.get("v") != STAMP_VERSION:
                return None
            directory, log = tuple(head["directory"]), tuple(head["log"])
            offset, unlogged, size = head["offset"], tuple(head["unlogged"]), head["bytes"]
        except (ValueError, TypeError, KeyError):
            return None
        numbers = (*directory, *log[:2], offset, size)
        if len(directory) != 3 or len(log) != 3 or any(type(x) is not int for x in numbers):
            return None
        strings = (log[2], *unlogged)
        if not all(isinstance(n, str) for n in strings) or len(data) - nl - 1 != size:
            return None  # also a stamp torn or overwritten mid-read
        return cls(directory, log, offset, unlogged, data[nl + 1 :])

    def times(self) -> dict[str, int]:
        """Every body line as name → ns (a new dict); ValueError for a malformed body.

        The last body parsed in this process is kept with its parse: one
        ``relevant`` asks for every session's time three times (the search's
        names, the keyword and the vector index), and a stamp read again with
        the same bytes parses the same. Whether the stamp is still valid is
        checked by the caller every time, as before.
        """
        global _parsed
        kept = _parsed
        if kept is not None and kept[0] == self.body:
            return dict(kept[1])
        times = parse_lines(self.body)
        _parsed = (self.body, times)
        return dict(times)

    def parse(self, lines: list[bytes]) -> list[Entry]:
        """Parse some body lines; ValueError for a malformed one."""
        entries = []
        for line in lines:
            ns, sep, name = line.partition(b" ")
            if not sep or not name or not ns.isdigit():
                raise ValueError(line)
            entries.append((name.decode(), int(ns)))
        return entries


def read_snapshot(path: Path) -> Snapshot | None:
    """The last listing's snapshot, or None (missing, unreadable, malformed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return Snapshot.from_bytes(f.read())


def write_snapshot(path: Path, snapshot: Snapshot) -> None:
    """Save a snapshot; derived data, so a failure (read-only home) is ignored.

    Written in place (no temp file for a crash to leave behind, no fsync): a
    reader that meets a torn stamp, or two writers' bytes mixed, finds a body
    of the wrong length and lists the directory instead.
    """
    data = snapshot.to_bytes()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    with contextlib.suppress(OSError):
        fd = os.open(path, flags, FILE_MODE)
        try:
            if os.fstat(fd).st_mode & 0o777 != FILE_MODE:
                os.fchmod(fd, FILE_MODE)  # created under a strict umask
            os.write(fd, data)
        finally:
            os.close(fd)


class _Current:
    """A valid snapshot plus the log lines written since it: the live sessions now."""

    def __init__(self, sessions_dir: Path, snapshot: Snapshot, tail: Times, end: int) -> None:
        self.snapshot = snapshot
        self.tail = tail
        self.end = end  # log offset the tail reaches
        # Everyone whose time is not in the body: written since, or never logged.
        self.overrides = dict(tail)
        for name in snapshot.unlogged:
            if name not in self.overrides:
                self.overrides[name] = _mtime(sessions_dir, name)  # FileNotFoundError: stale

    def times(self) -> dict[str, int]:
        """Every live session's last activity (ValueError for a malformed body)."""
        times = self.snapshot.times()
        merge(times, self.tail)  # the newest time wins, a reset replaces
        times.update((n, t) for n, t in self.overrides.items() if n not in self.tail)
        return times

    def page(self, limit: int | None, after: tuple[int, str] | None) -> list[Entry]:
        """The first ``limit`` sessions in listing order after key ``after`` (all if None)."""
        body = self.snapshot.body
        skip = len(self.overrides)  # at most this many body lines are overridden
        if after is None and limit is not None:
            lines = body.split(b"\n", limit + skip)[:-1]  # the rest stays unsplit
        else:
            lines = body.split(b"\n")[:-1]
            if after is not None:
                at = bisect.bisect_right(lines, after, key=_line_key)
                lines = lines[at:] if limit is None else lines[at : at + limit + skip]
        # A name in the tail takes its tail time here: writers never record a time
        # below the transcript's previous mtime (activity.touch's floor), so that
        # is the newest unless a clock went back across writers (times() merges).
        over = self.overrides
        entries = [e for e in self.snapshot.parse(lines) if e[0] not in over]
        entries += [e for e in over.items() if after is None or newest_first(e) > after]
        entries.sort(key=newest_first)
        return entries if limit is None else entries[:limit]

    def folded(self, log: ActivityLog) -> Snapshot:
        """A new snapshot with the tail folded in (and the log compacted if it outgrew)."""
        snap = self.snapshot
        logged = snap.times()
        merge(logged, self.tail)
        unlogged = tuple(n for n in snap.unlogged if n not in self.tail)
        key, offset = snap.log, self.end
        if log.needs_compaction(len(logged) + len(unlogged)):
            compacted = log.compact([*logged, *unlogged])
            if compacted is not None:
                kept, key, offset = compacted
                logged.update(kept)
                unlogged = tuple(n for n in unlogged if n not in kept)
        return Snapshot.build(snap.directory, key, offset, logged, unlogged)


def _line_key(line: bytes) -> tuple[int, str]:
    ns, _, name = line.partition(b" ")
    return (-int(ns), name.decode())


def newest(
    sessions_dir: Path, log: ActivityLog, limit: int | None, after: tuple[int, str] | None
) -> list[Entry]:
    """The first ``limit`` live sessions newest first (ties by name), after key ``after``.

    ``after`` is a :func:`newest_first` key (a page's last entry); None starts at the top.
    """
    current = _current(sessions_dir, log)
    if current is not None:
        with contextlib.suppress(ValueError):  # a malformed body line: list instead
            return current.page(limit, after)
    times = _times_from_listing(sessions_dir, log)
    entries = [e for e in times.items() if after is None or newest_first(e) > after]
    entries.sort(key=newest_first)
    return entries if limit is None else entries[:limit]


def activity_times(sessions_dir: Path, log: ActivityLog) -> dict[str, int]:
    """Return name → last activity (ns) of every live session in ``sessions_dir``.

    Times come from the activity log, falling back to the transcript's mtime
    for a session the log does not know. Which sessions exist comes from the
    snapshot while it is valid, else from listing ``sessions_dir`` again.
    """
    current = _current(sessions_dir, log)
    if current is not None:
        with contextlib.suppress(ValueError):
            return current.times()
    return _times_from_listing(sessions_dir, log)


def _current(sessions_dir: Path, log: ActivityLog) -> _Current | None:
    """The valid snapshot with the log's tail applied, or None (list instead)."""
    stamp_path = log.path.with_name(STAMP_NAME)
    snapshot = read_snapshot(stamp_path)
    if snapshot is None:
        return None
    try:
        st = os.stat(sessions_dir, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if snapshot.directory != (st.st_dev, st.st_ino, st.st_mtime_ns):
        return None
    tail, _, end = log.read_from(snapshot.log, snapshot.offset)
    if tail is None:
        return None  # compacted, replaced or cut: its offset means nothing now
    try:
        current = _Current(sessions_dir, snapshot, tail, end)
    except FileNotFoundError:
        return None
    if end - snapshot.offset > FOLD_BYTES:
        with contextlib.suppress(ValueError):
            folded = current.folded(log)
            write_snapshot(stamp_path, folded)
            tail, _, end = log.read_from(folded.log, folded.offset)
            if tail is not None:
                return _Current(sessions_dir, folded, tail, end)
    return current


def _mtime(sessions_dir: Path, name: str) -> int:
    return os.stat(sessions_dir / f"{name}{TRANSCRIPT}", follow_symlinks=False).st_mtime_ns


def _times_from_listing(sessions_dir: Path, log: ActivityLog) -> dict[str, int]:
    started = time.time_ns()
    try:
        st = os.stat(sessions_dir, follow_symlinks=False)
        files = set(os.listdir(sessions_dir))
    except FileNotFoundError:
        return {}
    directory = (st.st_dev, st.st_ino, st.st_mtime_ns)
    found, key, offset = log.read_from(None, 0)
    logged: dict[str, int] = found or {}
    # 10,000 sessions: set operations and C-level maps, no Python loop per name.
    logged_files = list(map(operator.concat, logged, itertools.repeat(TRANSCRIPT)))
    live = dict(itertools.compress(logged.items(), map(files.__contains__, logged_files)))
    unlogged = []
    for file in files.difference(logged_files):  # copied in by hand, or the log was lost
        if file.endswith(TRANSCRIPT) and file[0] != ".":
            name = file[: -len(TRANSCRIPT)]
            try:
                live[name] = _mtime(sessions_dir, name)
            except FileNotFoundError:
                continue  # deleted while we looked
            unlogged.append(name)
    if log.needs_compaction(len(live)):
        compacted = log.compact(live)
        if compacted is not None:
            kept, key, offset = compacted
            live.update(kept)
            unlogged = [n for n in unlogged if n not in kept]
    if directory[2] < started - SETTLE_NS and key[1]:
        outside = set(unlogged)
        logged_live = {n: t for n, t in live.items() if n not in outside} if outside else live
        snapshot = Snapshot.build(directory, key, offset, logged_live, tuple(sorted(unlogged)))
        write_snapshot(log.path.with_name(STAMP_NAME), snapshot)
    return live
