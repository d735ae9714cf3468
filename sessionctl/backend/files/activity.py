"""When each session was last written, without a stat() per session.

`list --limit 20` over 10,000 sessions must not touch 10,000 files: a stat
costs 3-5 µs here, 30-50 ms in all, more than the rest of the command. Every
write through sessionctl appends ``<ns> <name>`` to ``HOME/activity.log``; a
reader takes the newest time per name, so a line written with a clock that went
back never makes a session look older than it was. A rename or a restore gives
a session a time it had before on purpose: it writes ``=<ns> <name>``, a
*reset* that the times after it start from. A session the log does not know
(a file copied in by hand, or a ``0`` time) falls back to its transcript's
mtime. The log is derived data and only a hint: an append it failed to record
(a full disk) leaves it behind the transcript, so what decides (prune, under
the session's lock) takes the later of the log and the transcript's mtime.

Appends take a shared flock and compaction an exclusive one, so compaction
(when the log outgrows its sessions) never loses a concurrent append. The
first line of each log is a random identity, so that an offset into one log
(listing.py keeps one) is never applied to another.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import operator
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

from sessionctl.fsutil import FILE_MODE, atomic_write

LOG_NAME = "activity.log"
LogKey = tuple[int, int, str]  # st_dev, st_ino, identity: which log file this is
# First line of every log sessionctl creates or compacts: a random identity, so
# a reader holding an offset into one log never applies it to another that got
# the same inode number (a log removed by hand, compacted twice).
_ID_PREFIX = b"#activity-log "
_LINE = re.compile(rb"^(=?)([0-9]{1,20}) ([^\n]+)\n", re.MULTILINE)
COMPACT_BYTES = 256 * 1024
COMPACT_RATIO = 4  # compact when the log is this many times one line per live session


class Times(dict[str, int]):
    """name → last activity (ns) read from some lines of the log.

    ``reset`` names the sessions whose time here starts at a reset record: that
    time replaces an earlier one instead of competing with it (:func:`merge`).
    """

    reset: frozenset[str] = frozenset()


def merge(base: dict[str, int], later: Times) -> None:
    """Apply times read from later lines of the log to ``base``, in place."""
    reset = later.reset
    get = base.get
    for name, ns in later.items():
        base[name] = ns if name in reset else max(get(name, 0), ns)


class ActivityLog:
    """The append-only activity log of one store."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def touch(
        self, name: str, ns: int | None = None, *, floor: int = 0, reset: bool = False
    ) -> bool:
        """Record that ``name`` was written now (or at ``ns``); False if it could not.

        ``floor`` is a time the new one must not fall below (the transcript's
        mtime before the write: a clock gone back then still moves forward).
        ``reset`` records ``ns`` as the session's time even if it is older than
        what the log had (rename, restore). A failure never fails the write
        itself: the transcript's mtime still tells (see the module docstring).
        """
        when = max(time.time_ns() if ns is None else ns, 0 if reset else floor)
        return self._write(f"{'=' if reset else ''}{when} {name}\n".encode())

    def touch_many(self, names: Iterable[str]) -> bool:
        """Record that every one of ``names`` was written now, in one append."""
        when = time.time_ns()
        return self._write("".join(f"{when} {name}\n" for name in names).encode())

    def _write(self, line: bytes) -> bool:
        if not line:
            return True
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
        with contextlib.suppress(OSError):
            for _ in range(3):
                fd = os.open(self.path, flags, FILE_MODE)
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH)
                    st = os.fstat(fd)
                    if st.st_size == 0:  # a new log: its identity comes first
                        fcntl.flock(fd, fcntl.LOCK_EX)
                        if os.fstat(fd).st_size == 0:
                            os.write(fd, _new_identity())
                        fcntl.flock(fd, fcntl.LOCK_SH)
                    if st.st_mode & 0o777 != FILE_MODE:
                        os.fchmod(fd, FILE_MODE)  # created under a strict umask
                    if st.st_ino == os.stat(self.path, follow_symlinks=False).st_ino:
                        # One O_APPEND write (a line, or a few KiB of them): never
                        # interleaved. A short write (full disk) leaves a torn
                        # line that readers skip.
                        return os.write(fd, line) == len(line)
                finally:
                    os.close(fd)  # compacted meanwhile: write to the new file
        return False

    def read(self) -> Times:
        """Return name → last write time (ns) for every name in the log."""
        return self.read_from(None, 0)[0] or Times()

    def read_from(self, key: LogKey | None, offset: int) -> tuple[Times | None, LogKey, int]:
        """Return the times written from ``offset`` on, the log's key and where they end.

        The key is the log file's ``(st_dev, st_ino, identity)``; with ``key``
        given, a log that is not that file (compacted, replaced) or is shorter
        than ``offset`` (cut by hand) gives None for the times. The end is the
        offset just past the last whole line: a torn last line is left for the
        next reader. No log at all reads as empty, with key ``(0, 0, "")``.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return (Times() if key is None else None), (0, 0, ""), 0
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            found = (st.st_dev, st.st_ino, _identity(os.pread(fd, 64, 0)))
            if key is not None and (found != key or st.st_size < offset):
                return None, found, 0
            f.seek(offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        return _parse(data[:end]), found, offset + end

    def needs_compaction(self, live: int) -> bool:
        """True when the log is much longer than one line per live session."""
        try:
            size = os.stat(self.path, follow_symlinks=False).st_size
        except OSError:
            return False
        return size > COMPACT_BYTES and size > COMPACT_RATIO * 48 * max(live, 1)

    def compact(self, live: Iterable[str]) -> tuple[dict[str, int], LogKey, int] | None:
        """Rewrite the log with one line per live session, under an exclusive lock.

        Returns the times kept, the new log's key and its length: appends made
        after the rename land past that length. None when it could not compact.
        """
        keep = set(live)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_ino != os.stat(self.path, follow_symlinks=False).st_ino:
                return None  # another process compacted it meanwhile
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read()
            latest = _parse(data[: data.rfind(b"\n") + 1])
            kept = {name: ns for name, ns in sorted(latest.items()) if name in keep and ns}
            identity = _new_identity()
            lines = "".join(f"{ns} {name}\n" for name, ns in kept.items()).encode()
            st = atomic_write(self.path, identity + lines, unique=True)
            return kept, (st.st_dev, st.st_ino, _identity(identity)), len(identity) + len(lines)
        except OSError:
            return None
        finally:
            os.close(fd)


def _new_identity() -> bytes:
    return _ID_PREFIX + os.urandom(8).hex().encode() + b"\n"


def _identity(head: bytes) -> str:
    """The identity on a log's first line ("" for a log without one, as 0.1.0 wrote)."""
    if not head.startswith(_ID_PREFIX):
        return ""
    return head[len(_ID_PREFIX) : head.find(b"\n")].decode("ascii", "replace")


def parse_lines(data: bytes) -> dict[str, int]:
    """Parse ``<ns> <name>`` lines that must all be well formed and name distinct sessions.

    Raises ValueError otherwise (the log's own parser skips bad lines instead).
    """
    times = _parse_fast(data, distinct=True)
    if times is None:
        times = _parse_strict(data)
    if len(times) != data.count(b"\n"):
        raise ValueError("malformed or repeated lines")
    return times


def _parse(data: bytes) -> Times:
    """Parse whole lines: the newest time per name, from its last reset record on.

    A ``0`` time (written by hand, or by a clock at the epoch) is no time at all:
    the name is left out, so its transcript's mtime counts.
    """
    if data.startswith(_ID_PREFIX):
        data = data[data.find(b"\n") + 1 :]
    times = _parse_fast(data)
    return times if times is not None else _parse_strict(data)


def _parse_fast(data: bytes, *, distinct: bool = False) -> Times | None:
    """Parse a well-formed log with C-level loops only (10k lines: ~2 ms, half the regex's).

    Well-formed: ASCII, every line exactly ``<digits> <name>`` (no reset, no 0
    time). Anything else (a garbled line, a name with a space, a reset) returns
    None for :func:`_parse_strict`. ``distinct``: the caller refuses lines that
    repeat a name (it compares the count), so their order does not matter and
    is not checked (a listing snapshot is newest first: sorting it was most of
    its parse).
    """
    end = data.rfind(b"\n")
    if end < 0:
        return None
    try:
        text = data[:end].decode("ascii")
    except UnicodeDecodeError:
        return None
    fields = text.replace("\n", " ").split(" ")
    times = fields[0::2]
    if len(fields) != 2 * (text.count("\n") + 1) or not "".join(times).isdigit():
        return None
    if "" in fields:  # "12 \n": a line with no name
        return None
    numbers = list(map(int, times))
    if not all(numbers):
        return None
    names = fields[1::2]
    if distinct or all(map(operator.le, numbers, itertools.islice(numbers, 1, None))):
        return Times(zip(names, numbers, strict=True))  # in time order: the last is the newest
    # A clock went back somewhere: order by time (stably), so the newest wins.
    order = sorted(range(len(numbers)), key=numbers.__getitem__)
    return Times((names[i], numbers[i]) for i in order)


def _parse_strict(data: bytes) -> Times:
    """Parse line by line; a torn or garbled line never matches."""
    times = Times()
    reset: set[str] = set()
    for mark, digits, raw in _LINE.findall(data):
        ns, name = int(digits), raw.decode("utf-8", "replace")
        if mark:
            times[name] = ns
            reset.add(name)
        elif ns:
            times[name] = max(times.get(name, 0), ns)
    times = Times((n, t) for n, t in times.items() if t)
    times.reset = frozenset(n for n in reset if n in times)
    return times
