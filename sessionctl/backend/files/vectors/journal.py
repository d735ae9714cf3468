"""The store-wide index on disk: append-only vector and row files plus a journal.

Files under ``HOME/index/`` (docs/index.md, "The store-wide index")::

    journal.jsonl     line 1: what the index is (model, dimension, generation);
                      then session states, tombstones and commit records
    vectors.G.f32     float32 unit vectors, one row of ``dimension`` each
    rows.G.bin        one 40-byte record per vector row (ROW_DTYPE)
    .lock             the writers' flock (readers take none)

``G`` is the generation named by the journal's first line: a rebuild or a
compaction writes new ``G`` files and then replaces the journal, so a reader
always opens the files its journal describes.

Writers append vectors and rows, fsync them, then append the journal records
of that change ending in one commit record (one ``write``, then fsync). A
reader takes what the last commit record covers and ignores anything after it:
a crash leaves only uncommitted bytes, which the next writer truncates.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mmap
import os
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sessionctl.errors import StoreError
from sessionctl.fsutil import FILE_MODE, atomic_write, ensure_private_dir, fsync_dir, is_temp_name

FORMAT = "sessionctl-store-index"
VERSION = 1
DIR_NAME = "index"
JOURNAL = "journal.jsonl"
LOCK = ".lock"
ROW_BYTES = 40
ROLES = {"system": 1, "user": 2, "assistant": 3, "tool": 4}
#: Compact when tombstoned rows pass this share of all rows (and MIN_DEAD rows).
DEAD_SHARE = 0.25
MIN_DEAD = 256
#: Rewrite the journal when it has this many lines per known session (plus a margin).
JOURNAL_LINES_PER_KEY = 4
JOURNAL_MARGIN = 1000
#: A reader checks the newest commit's vectors against their CRC-32 when they are
#: at most this big (a catch-up's few); a bulk build's are checked by compaction.
VERIFY_BYTES = 4 * 1024 * 1024


def row_dtype() -> Any:
    """The numpy dtype of one row record (little-endian, 40 bytes)."""
    import numpy as np

    return np.dtype(
        [
            ("key", "<u4"),  # the session's key in this index (journal "s" records)
            ("crc", "<u4"),  # CRC-32 of the message text
            ("seq", "<i8"),  # the message's seq
            ("h1", "<u8"),  # blake2b-128 of the text: vectors reused across sessions
            ("h2", "<u8"),
            ("role", "u1"),
            ("pad", "V7"),
        ]
    )


class IndexUnusable(Exception):
    """The saved index cannot be trusted; the message is the rebuild reason."""


@dataclass
class SessionState:
    """What the index knows about one session (a journal ``s`` record)."""

    key: int
    uid: str
    name: str | None  # None: not live under any name (deleted, purged, renamed away)
    activity: int  # the activity time (ns) the catch-up saw
    ino: int = 0  # transcript inode, size and last bytes covered (0: re-read in full)
    size: int = 0
    tail: str = ""

    def record(self) -> dict[str, Any]:
        return {
            "t": "s",
            "k": self.key,
            "uid": self.uid,
            "name": self.name,
            "act": self.activity,
            "ino": self.ino,
            "size": self.size,
            "tail": self.tail,
        }


@dataclass
class Loaded:
    """The committed index: header, sessions, dead rows and mapped files."""

    directory: Path
    model_id: str
    dimension: int
    generation: str
    rows_count: int
    journal_end: int  # byte offset just past the last commit record
    journal_lines: int
    sessions: dict[int, SessionState] = field(default_factory=dict)
    dead: list[tuple[int, int]] = field(default_factory=list)  # [start, end) row ranges
    rows: Any = None  # numpy structured array (ROW_DTYPE), rows_count long
    vectors: Any = None  # numpy float32 (rows_count, dimension), read-only mmap
    last_commit: dict[str, Any] = field(default_factory=dict)

    @property
    def by_name(self) -> dict[str, SessionState]:
        return {s.name: s for s in self.sessions.values() if s.name is not None}

    @property
    def by_uid(self) -> dict[str, SessionState]:
        return {s.uid: s for s in self.sessions.values()}

    def dead_mask(self) -> Any:
        import numpy as np

        mask = np.zeros(self.rows_count, dtype=bool)
        for start, end in self.dead:
            mask[start:end] = True
        return mask

    def dead_count(self) -> int:
        return sum(end - start for start, end in self.dead)


def files(directory: Path, generation: str) -> tuple[Path, Path]:
    return directory / f"vectors.{generation}.f32", directory / f"rows.{generation}.bin"


def _open_regular(path: Path, flags: int = os.O_RDONLY) -> int:
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise IndexUnusable(f"{path.name} unreadable ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IndexUnusable(f"{path.name} is not a regular file")
    return fd


def header_line(model_id: str, dimension: int, generation: str) -> bytes:
    doc = {
        "t": "index",
        "format": FORMAT,
        "version": VERSION,
        "model_id": model_id,
        "dimension": dimension,
        "metric": "cosine",
        "gen": generation,
    }
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode()


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def load(directory: Path) -> Loaded:
    """Read the committed index; IndexUnusable (with the reason) or FileNotFoundError."""
    for _ in range(3):
        try:
            return _load_once(directory)
        except FileNotFoundError:
            if not (directory / JOURNAL).exists():
                raise
            continue  # a compaction replaced the generation while we read: again
    raise IndexUnusable("index files missing")


def _load_once(directory: Path) -> Loaded:
    import numpy as np

    fd = _open_regular(directory / JOURNAL)
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    first = data.find(b"\n")
    try:
        head = json.loads(data[:first]) if first > 0 else None
    except ValueError:
        head = None
    if not isinstance(head, dict) or head.get("format") != FORMAT or head.get("t") != "index":
        raise IndexUnusable("index journal corrupt (not a sessionctl store index)")
    if head.get("version") != VERSION:
        raise IndexUnusable(f"index journal format version {head.get('version')!r} unknown")
    model_id, dimension, generation = head.get("model_id"), head.get("dimension"), head.get("gen")
    if not isinstance(model_id, str) or type(dimension) is not int or dimension < 1:
        raise IndexUnusable("index journal corrupt (header)")
    if not isinstance(generation, str) or not generation.isalnum():
        raise IndexUnusable("index journal corrupt (generation)")
    # Everything up to the last commit record counts; what follows is uncommitted.
    end = len(data)
    while True:  # the last complete commit line (a writer may be appending one now)
        end = data.rfind(b'\n{"t":"c",', 0, end) + 1
        if end <= first or data.find(b"\n", end) >= 0:
            break
        end -= 1
    if end <= first:
        end = first + 1  # no commit yet: an empty index
        body: list[Any] = []
    else:
        end = data.index(b"\n", end) + 1
        chunk = data[first + 1 : end - 1]
        try:
            body = json.loads(b"[" + chunk.replace(b"\n", b",") + b"]")
        except ValueError:
            raise IndexUnusable("index journal corrupt (a committed line is unreadable)") from None
    loaded = Loaded(directory, model_id, dimension, generation, 0, end, len(body) + 1)
    rows = 0
    commits: list[dict[str, Any]] = []
    names: dict[str, int] = {}  # live name -> key, as the records so far say
    try:
        for record in body:
            kind = record["t"]
            if kind == "s":
                state = SessionState(
                    int(record["k"]),
                    str(record["uid"]),
                    record["name"] if isinstance(record["name"], str) else None,
                    int(record["act"]),
                    int(record["ino"]),
                    int(record["size"]),
                    str(record["tail"]),
                )
                old = loaded.sessions.get(state.key)
                if old is not None and old.name is not None and names.get(old.name) == old.key:
                    del names[old.name]
                if state.name is not None:
                    holder = names.get(state.name)
                    if holder is not None and holder != state.key:
                        loaded.sessions[holder].name = None  # the name moved on
                    names[state.name] = state.key
                loaded.sessions[state.key] = state
            elif kind == "x":
                loaded.dead.extend((int(a), int(b)) for a, b in record["r"])
            elif kind == "c":
                if int(record["from"]) != rows or int(record["rows"]) < rows:
                    raise IndexUnusable("index journal corrupt (commits out of order)")
                rows = int(record["rows"])
                commits.append(record)
            else:
                raise IndexUnusable(f"index journal corrupt (record type {kind!r})")
    except (KeyError, TypeError, ValueError, AttributeError):
        raise IndexUnusable("index journal corrupt (a malformed record)") from None
    if any(not 0 <= a < b <= rows for a, b in loaded.dead):
        raise IndexUnusable("index journal corrupt (tombstones)")
    loaded.rows_count = rows
    loaded.last_commit = commits[-1] if commits else {}
    vec_path, row_path = files(directory, generation)
    row_bytes = rows * ROW_BYTES
    vec_bytes = rows * dimension * 4
    fd = _open_regular(row_path)
    try:
        if os.fstat(fd).st_size < row_bytes:
            raise IndexUnusable("index rows file truncated")
        raw = os.pread(fd, row_bytes, 0) if rows else b""
    finally:
        os.close(fd)
    for commit in commits:  # the rows are small: check them all
        start, stop = int(commit["from"]) * ROW_BYTES, int(commit["rows"]) * ROW_BYTES
        if zlib.crc32(raw[start:stop]) != int(commit["crc_r"]):
            raise IndexUnusable("index rows file corrupt (checksum mismatch)")
    loaded.rows = np.frombuffer(raw, dtype=row_dtype()) if rows else np.zeros(0, row_dtype())
    if rows and (int(loaded.rows["key"].max()) not in loaded.sessions or not _keys_known(loaded)):
        raise IndexUnusable("index rows name sessions the journal does not know")
    fd = _open_regular(vec_path)
    try:
        if os.fstat(fd).st_size < vec_bytes:
            raise IndexUnusable("index vectors file truncated")
        if rows:
            view = mmap.mmap(fd, vec_bytes, access=mmap.ACCESS_READ)
            loaded.vectors = np.frombuffer(view, dtype=np.float32).reshape(rows, dimension)
            last = commits[-1]
            size = (int(last["rows"]) - int(last["from"])) * dimension * 4
            if "crc_v" in last and size <= VERIFY_BYTES:  # the newest commit's vectors
                a, b = int(last["from"]) * dimension * 4, int(last["rows"]) * dimension * 4
                if zlib.crc32(view[a:b]) != int(last["crc_v"]):
                    raise IndexUnusable("index vectors file corrupt (checksum mismatch)")
        else:
            loaded.vectors = np.zeros((0, dimension), dtype=np.float32)
    finally:
        os.close(fd)
    return loaded


def _keys_known(loaded: Loaded) -> bool:
    """True when every row's key is a session the journal knows.

    Marks the keys seen in a boolean table indexed by key instead of
    ``np.unique``: that sorts every row and, on its first call, imports
    ``numpy.ma`` (~25 ms of a fresh ``relevant``). Keys are small (one per
    session the journal ever named); sparse ones fall back to the sort.
    """
    import numpy as np

    keys = loaded.rows["key"]
    top = int(keys.max())
    if top > 4 * (len(keys) + len(loaded.sessions)) + 1024:
        return all(int(k) in loaded.sessions for k in np.unique(keys))
    seen = np.zeros(top + 1, dtype=bool)
    seen[keys] = True
    known = np.zeros(top + 1, dtype=bool)
    known[[k for k in loaded.sessions if 0 <= k <= top]] = True
    return not bool((seen & ~known).any())


@contextlib.contextmanager
def writer_lock(directory: Path) -> Iterator[None]:
    """The store-wide writers' lock (``HOME/index/.lock``); StoreError if it cannot be had."""
    ensure_private_dir(directory, follow_symlinks=False, own=True)
    try:
        fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
    except OSError as exc:
        raise StoreError(f"cannot open {directory / LOCK}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _remove_temps(directory)
        yield
    finally:
        os.close(fd)


def _remove_temps(directory: Path) -> None:
    """Temp files here are written only under the writers' lock: any found now is a
    crashed writer's (``.NAME~.tmp``, see fsutil.temp_path_for)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if is_temp_name(name):
            with contextlib.suppress(OSError):
                (directory / name).unlink()


def create(directory: Path, model_id: str, dimension: int) -> None:
    """Start an empty index of a new generation (under the writers' lock)."""
    generation = os.urandom(6).hex()
    for path in files(directory, generation):
        atomic_write(path, b"")
    old = _generation_of(directory)
    atomic_write(directory / JOURNAL, header_line(model_id, dimension, generation))
    if old is not None and old != generation:
        remove_generation(directory, old)


def _generation_of(directory: Path) -> str | None:
    try:
        with open(directory / JOURNAL, "rb") as f:
            head = json.loads(f.readline())
        generation = head.get("gen") if isinstance(head, dict) else None
    except (OSError, ValueError):
        return None
    return generation if isinstance(generation, str) and generation.isalnum() else None


def remove_generation(directory: Path, generation: str) -> None:
    for path in files(directory, generation):
        with contextlib.suppress(OSError):
            path.unlink()


def remove_strays(directory: Path, keep: str) -> None:
    """Remove vector/row files of other generations (a crashed rebuild's)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        stray = name.startswith(("vectors.", "rows.")) and name.count(".") == 2
        if stray and name.split(".")[1] != keep:
            with contextlib.suppress(OSError):
                (directory / name).unlink()


class Change:
    """What one writer appends: new rows and vectors, tombstones, session states."""

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self.rows: list[Any] = []  # numpy structured arrays
        self.vectors: list[Any] = []  # numpy float32 arrays
        self.dead: list[int] = []
        self.states: list[SessionState] = []

    @property
    def added(self) -> int:
        return sum(len(r) for r in self.rows)

    def empty(self) -> bool:
        return not (self.rows or self.dead or self.states)


def _ranges(rows: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for row in sorted(set(rows)):
        if out and out[-1][1] == row:
            out[-1][1] = row + 1
        else:
            out.append([row, row + 1])
    return out


def commit(loaded: Loaded, change: Change) -> int:
    """Append ``change`` durably (under the writers' lock); return bytes written."""
    import numpy as np

    directory = loaded.directory
    vec_path, row_path = files(directory, loaded.generation)
    start = loaded.rows_count
    written = 0
    rows = np.concatenate(change.rows) if change.rows else np.zeros(0, row_dtype())
    vectors = (
        np.ascontiguousarray(np.concatenate(change.vectors), dtype=np.float32)
        if change.vectors
        else np.zeros((0, change.dimension), np.float32)
    )
    rows_raw, vec_raw = rows.tobytes(), vectors.tobytes()
    for path, keep, payload in (
        (vec_path, start * loaded.dimension * 4, vec_raw),
        (row_path, start * ROW_BYTES, rows_raw),
    ):
        fd = _open_regular(path, os.O_RDWR)
        try:
            if os.fstat(fd).st_size != keep:
                os.ftruncate(fd, keep)  # a crashed writer's uncommitted bytes
            if payload:
                _pwrite_all(fd, payload, keep)
                os.fsync(fd)
                written += len(payload)
        finally:
            os.close(fd)
    lines = [_line(s.record()) for s in change.states]
    if change.dead:
        lines.append(_line({"t": "x", "r": _ranges(change.dead)}))
    lines.append(
        _line(
            {
                "t": "c",
                "from": start,
                "rows": start + len(rows),
                "crc_r": zlib.crc32(rows_raw),
                "crc_v": zlib.crc32(vec_raw),
            }
        )
    )
    payload = b"".join(lines)
    fd = _open_regular(directory / JOURNAL, os.O_RDWR)
    try:
        if os.fstat(fd).st_size != loaded.journal_end:
            os.ftruncate(fd, loaded.journal_end)
        _pwrite_all(fd, payload, loaded.journal_end)
        os.fsync(fd)
    finally:
        os.close(fd)
    return written + len(payload)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def needs_compaction(loaded: Loaded) -> str | None:
    dead = loaded.dead_count()
    if dead >= MIN_DEAD and dead > DEAD_SHARE * loaded.rows_count:
        return "rows"
    if loaded.journal_lines > JOURNAL_LINES_PER_KEY * len(loaded.sessions) + JOURNAL_MARGIN:
        return "journal"
    return None


def compact(loaded: Loaded, keep_uids: set[str] | None) -> None:
    """Rewrite without dead rows (and without sessions whose uid is not in ``keep_uids``).

    ``keep_uids`` None keeps every session (journal-only compaction: the vector
    and row files stay; only the journal is rewritten as one snapshot).
    """
    import numpy as np

    directory = loaded.directory
    sessions = dict(loaded.sessions)
    if keep_uids is not None:
        sessions = {k: s for k, s in sessions.items() if s.name is not None or s.uid in keep_uids}
    alive = ~loaded.dead_mask()
    if len(sessions) != len(loaded.sessions):
        lookup = np.zeros(max(loaded.sessions, default=0) + 1, dtype=bool)
        for key in sessions:
            lookup[key] = True
        alive &= lookup[loaded.rows["key"]] if loaded.rows_count else alive
    states = [_line(s.record()) for s in sessions.values()]
    if keep_uids is None:  # same files, only the journal
        generation = loaded.generation
        dead = loaded.dead
        raw = loaded.rows.tobytes()
        count = loaded.rows_count
        lines = list(states)
        if dead:
            lines.append(_line({"t": "x", "r": [list(r) for r in _merge(dead)]}))
        lines.append(_line({"t": "c", "from": 0, "rows": count, "crc_r": zlib.crc32(raw)}))
        body = header_line(loaded.model_id, loaded.dimension, generation) + b"".join(lines)
        atomic_write(directory / JOURNAL, body)
        return
    generation = os.urandom(6).hex()
    vec_path, row_path = files(directory, generation)
    rows = np.ascontiguousarray(loaded.rows[alive])
    vectors = np.ascontiguousarray(loaded.vectors[alive])
    atomic_write(vec_path, vectors.tobytes())
    raw = rows.tobytes()
    atomic_write(row_path, raw)
    commit_line = _line(
        {
            "t": "c",
            "from": 0,
            "rows": len(rows),
            "crc_r": zlib.crc32(raw),
            "crc_v": zlib.crc32(vectors.tobytes()),
        }
    )
    body = header_line(loaded.model_id, loaded.dimension, generation) + b"".join(states)
    atomic_write(directory / JOURNAL, body + commit_line)
    fsync_dir(directory)
    remove_generation(directory, loaded.generation)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
