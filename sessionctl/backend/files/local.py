"""Sessions as local files under the data dir (the default backend).

    HOME/sessions/NAME.jsonl        transcript (source of truth)
    HOME/sessions/NAME.lock         per-session write lock
    HOME/sessions/NAME.faiss        semantic index (derived) + NAME.index.json manifest
    HOME/sessions/NAME.rejects      lines set aside because they could not be parsed
                                    (created the first time one is)
    HOME/trash/ULID/NAME.*          a soft-deleted session
    HOME/.store.lock                namespace lock: create, delete, restore, rename
    HOME/server-facts.json          what model servers said (windows), a cache with a TTL
    HOME/index/                     the store-wide vector index (derived; vectors/)

Lock order is always namespace, then session. Readers take no lock.
"""

from __future__ import annotations

import contextlib
import os
import resource
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sessionctl.backend.base import (
    Capabilities,
    HeaderPatch,
    MakeMessages,
    NewSession,
    SessionHeader,
    SessionStream,
    Snapshot,
    TextFix,
)
from sessionctl.backend.files import listing, repair, streaming, transcript
from sessionctl.backend.files.activity import LOG_NAME, ActivityLog
from sessionctl.backend.files.base import Transform
from sessionctl.backend.files.header import (
    apply_patch,
    file_header,
    message_count,
    public_header,
    session_info,
)
from sessionctl.backend.files.layout import SESSION_SUFFIXES, SIDECAR_SUFFIXES, TRANSCRIPT
from sessionctl.backend.files.transcript import Header, Warn, encode
from sessionctl.backend.files.trash import TrashMixin
from sessionctl.errors import MessageNotFound, SessionExists, SessionNotFound, StoreError
from sessionctl.fsutil import (
    TEMP_SUFFIX,
    append_private,
    atomic_write,
    check_own_file,
    create_private_unsynced,
    ensure_private_dir,
    exclusive_lock,
    fsync_dir,
    is_temp_name,
    remove_stale_temps,
    remove_unheld_temp,
    sync_files,
    temp_path_for,
    temp_target,
    try_exclusive_lock,
    write_new_private,
)
from sessionctl.ids import new_ulid
from sessionctl.models import MAX_SEQ, Message, SessionInfo
from sessionctl.timeutil import from_epoch_ns, now_iso

if TYPE_CHECKING:
    from sessionctl.backend.files.vectors import StoreIndex

FACTS = "server-facts.json"


def _group_size() -> int:
    """Sessions per durability barrier in create_many: 256, with an open file each, or a
    quarter of the open-file limit where that is lower (macOS: 256 in all)."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        return 64
    if soft == resource.RLIM_INFINITY:
        return 256
    return max(16, min(256, soft // 4))


CREATE_GROUP = _group_size()


class LocalBackend(TrashMixin):
    """The file backend: a :class:`~sessionctl.backend.base.SessionStore` over a home."""

    def __init__(self, home: Path, warn: Warn | None = None) -> None:
        self.home = home
        self.sessions_dir = home / "sessions"
        self.trash_dir = home / "trash"
        self._sessions_str = str(self.sessions_dir)
        self._trash_str = str(self.trash_dir)
        self.warn = warn
        self.activity = ActivityLog(home / LOG_NAME)
        self._warned_home = False
        self._swept = False
        self._vectors: StoreIndex | None = None

    @property
    def vectors(self) -> StoreIndex:
        """The store-wide vector index (``HOME/index/``; faiss is imported only to search)."""
        if self._vectors is None:
            from sessionctl.backend.files.vectors import StoreIndex

            self._vectors = StoreIndex(self)
        return self._vectors

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            cross_session_search=True, keyword_search=True, shared=False, session_indexes=True
        )

    def close(self) -> None:
        """Every call opens and closes its own files; only an in-memory keyword index
        (a home where it cannot be written) and the mapped store-wide vectors a
        long-lived process keeps between searches are held, and released here."""
        if self._vectors is not None:
            self._vectors.forget_loaded()
            if self._vectors._keywords is not None:
                self._vectors._keywords.close()

    def forget_keywords(self, name: str) -> None:
        """Drop ``name``'s rows from the keyword index now (scrub, delete, purge)."""
        self.vectors.keywords.forget(name)

    # -- a small cache of server facts -----------------------------------
    def read_facts(self) -> dict[str, object]:
        """The server-facts cache (``{}`` when absent or unreadable: it is only a cache)."""
        import json

        try:
            data = json.loads((self.home / FACTS).read_bytes())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_facts(self, facts: Mapping[str, object]) -> None:
        """Replace the server-facts cache (0600); a failure to write is ignored."""
        import json

        try:
            self._ensure_dirs()
            atomic_write(self.home / FACTS, json.dumps(facts).encode(), unique=True)
        except OSError:
            pass

    # -- paths and locks -------------------------------------------------
    def path(self, name: str, suffix: str = TRANSCRIPT) -> Path:
        """Return the path of one of ``name``'s files."""
        return self.sessions_dir / f"{name}{suffix}"

    def _ensure_dirs(self) -> None:
        """Make the home and its directories exist; checked again by every write.

        The home itself may be a link, and keeps its mode: the user chose it
        (a 1777 /tmp stays 1777). When others may enter it, that is said once;
        ``sessions/`` and ``trash/`` are sessionctl's own and kept 0700.
        """
        ensure_private_dir(self.home)
        if not self._warned_home:
            self._warned_home = True
            mode = stat.S_IMODE(self.home.stat().st_mode)
            if mode & 0o077 and self.warn is not None:
                self.warn(
                    f"{self.home} is open to other users (mode {mode:o}); sessionctl leaves"
                    " it as it is and keeps sessions/ and trash/ private (0700)"
                )
        for directory in (self.sessions_dir, self.trash_dir):
            ensure_private_dir(directory, follow_symlinks=False, own=True)

    def _check_dirs(self) -> None:
        """Refuse ``sessions/`` or ``trash/`` as symlinks: nothing is reached out of the home.

        One lstat each, on every operation: a long-lived Store must not follow a
        link put there after its first write.
        """
        if not (os.path.islink(self._sessions_str) or os.path.islink(self._trash_str)):
            return  # the usual case, two lstat and no Path objects (import: once a session)
        for directory in (self.sessions_dir, self.trash_dir):
            if directory.is_symlink():
                raise StoreError(
                    f"{directory} is a symbolic link; sessionctl does not follow links:"
                    " move it away"
                )

    @contextlib.contextmanager
    def _namespace_lock(self) -> Iterator[None]:
        self._ensure_dirs()
        with exclusive_lock(self.home / ".store.lock"):
            yield

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold ``name``'s exclusive write lock (stale temp files are cleaned on entry).

        A lock file is left only for a session that exists when the lock is
        released: ``delete nosuch`` or a failed fork leave nothing behind.
        """
        self._ensure_dirs()
        with exclusive_lock(self.path(name, ".lock")) as held:
            try:
                self._check_dirs()  # swapped for a link while we waited
                remove_stale_temps(self.sessions_dir, [f"{name}{s}" for s in SESSION_SUFFIXES])
                if not self._swept:
                    self._swept = True
                    self._sweep_temps(name)
                yield
            finally:
                if not os.path.lexists(self.path(name)):
                    held.discard()

    def _sweep_temps(self, own: str) -> None:
        """Remove the temp files of any name that crashed writers left (once per instance).

        A session file's temp has a fixed name and is only written under that
        session's lock: it is removed only when that lock can be taken at once.
        A unique temp (the activity log's) is flocked by its writer: it is
        removed only when that flock can be taken. Costs one listing of
        ``sessions/`` and of the home per process (~10 ms at 10,000 sessions).
        """
        for directory in (self.sessions_dir, self.home):
            try:
                temps = [n for n in os.listdir(directory) if is_temp_name(n)]
            except OSError:
                continue
            for temp in temps:
                target, unique = temp_target(temp)
                owner = _session_of(target)
                if unique or directory != self.sessions_dir or owner is None:
                    remove_unheld_temp(directory / temp)
                elif owner != own:
                    with try_exclusive_lock(self.path(owner, ".lock")) as held:
                        if held is not None:
                            remove_stale_temps(self.sessions_dir, [target])
                            if not os.path.lexists(self.path(owner)):
                                held.discard()

    # -- reading ---------------------------------------------------------
    def has_home(self) -> bool:
        """Return True when the home exists (sessionctl creates it on the first write)."""
        return os.path.lexists(self.home)

    def has_data(self) -> bool:
        return self.has_home()

    def exists(self, name: str) -> bool:
        """Return True when a live session ``name`` exists."""
        self._check_dirs()
        return os.path.lexists(f"{self._sessions_str}/{name}{TRANSCRIPT}")

    def _require(self, name: str) -> Path:
        self._check_dirs()
        path = self.path(name)
        if not os.path.lexists(path):
            raise SessionNotFound(f"no session named {name!r} (see `sessionctl list`)")
        return path

    def case_twin(self, name: str) -> str | None:
        """Return an existing live session whose name differs from ``name`` only in case."""
        # One listing, folded at C speed: no activity log, no stamp (creating a
        # session changes sessions/ anyway). 10,000 sessions: ~4 ms, not ~12.
        try:
            files = os.listdir(self.sessions_dir)
        except FileNotFoundError:
            return None
        target = f"{name}{TRANSCRIPT}".casefold()
        if target not in set(map(str.casefold, files)):
            return None
        own = f"{name}{TRANSCRIPT}"
        for file in files:
            if file != own and file.casefold() == target and file[0] != ".":
                return file[: -len(TRANSCRIPT)]
        return None

    def names_with_prefix(self, prefix: str) -> list[str]:
        """One listing of ``sessions/``: no activity log, no transcript opened."""
        try:
            files = os.listdir(self.sessions_dir)
        except OSError:
            return []
        return sorted(
            n[: -len(TRANSCRIPT)]
            for n in files
            if n.endswith(TRANSCRIPT) and not n.startswith(".") and n.startswith(prefix)
        )

    def names(self) -> list[tuple[str, int]]:
        """Return (name, last activity in ns) of every live session, unordered."""
        return list(self.activity_times().items())

    def activity_times(self) -> dict[str, int]:
        """Return name → last activity (ns) of every live session (see listing.py)."""
        self._check_dirs()
        return listing.activity_times(self.sessions_dir, self.activity)

    def newest(
        self, limit: int | None, after: tuple[int, str] | None = None
    ) -> list[tuple[str, int]]:
        """Return the first ``limit`` live sessions as (name, ns), newest first, ties by name.

        ``after`` is the ``(-ns, name)`` of the previous page's last session.
        """
        self._check_dirs()
        return listing.newest(self.sessions_dir, self.activity, limit, after)

    def last_activity(self, name: str) -> int:
        """Return ``name``'s last activity in ns: the later of the log and the transcript's mtime.

        The log alone could be behind: a write it failed to record (full disk)
        still moved the mtime, and what prune removes must not be newer than this.
        """
        try:
            mtime = os.stat(self.path(name), follow_symlinks=False).st_mtime_ns
        except FileNotFoundError:
            raise SessionNotFound(f"no session named {name!r} (see `sessionctl list`)") from None
        return max(self.activity.read().get(name, 0), mtime)

    def _mtime(self, path: Path) -> int:
        """The transcript's mtime before a write: the floor of the time the write records."""
        try:
            return os.stat(path, follow_symlinks=False).st_mtime_ns
        except OSError:
            return 0

    def header(self, name: str) -> SessionHeader:
        """Return ``name``'s header (line 1 only)."""
        return public_header(self._file_header(name))

    def _file_header(self, name: str) -> Header:
        try:
            return transcript.read_header(self._require(name))
        except FileNotFoundError:
            raise SessionNotFound(f"no session named {name!r} (see `sessionctl list`)") from None

    def list_live(
        self, limit: int | None, after: tuple[int, str] | None = None
    ) -> list[tuple[SessionInfo, int]]:
        """Live sessions by (last activity desc, name); one that vanished or cannot be
        read is left out (the latter with a warning: it must not hide every session)."""
        entries = self.newest(limit, None if after is None else (-after[0], after[1]))
        rows = []
        for name, when in entries:
            try:
                rows.append((self.info(name, when), when))
            except SessionNotFound:
                continue  # removed while we listed
            except StoreError as exc:
                if self.warn is not None:
                    self.warn(f"skipped: {exc}")
        return rows

    def list_deleted(
        self, limit: int | None, after: tuple[str, str] | None = None
    ) -> list[SessionInfo]:
        entries = self.deleted()
        if after is not None:
            entries = [e for e in entries if ((e.trash_id or ""), e.name) < after]
        return entries if limit is None else entries[:limit]

    def stale(self, cutoff_ns: int) -> list[tuple[str, int]]:
        return sorted((e for e in self.names() if e[1] <= cutoff_ns), key=lambda e: (e[1], e[0]))

    def info(self, name: str, activity_ns: int | None = None) -> SessionInfo:
        """Return ``name``'s summary from its header, its last record and its last activity.

        ``activity_ns`` is the time :meth:`names` gave (saves reading the log again).
        """
        path = self._require(name)
        try:
            header = transcript.read_header(path)
            state = transcript.tail_state(path)
            mtime = os.stat(path, follow_symlinks=False).st_mtime_ns
            when = max(activity_ns, mtime) if activity_ns else self.last_activity(name)
        except FileNotFoundError:
            raise SessionNotFound(f"no session named {name!r} (see `sessionctl list`)") from None
        return session_info(name, header, message_count(header, state.last), from_epoch_ns(when))

    def messages(self, name: str) -> list[Message]:
        """Return every message of ``name`` in seq order (no cap)."""
        return self.scan(name).messages

    def scan(self, name: str) -> transcript.Scan:
        """Return the parsed transcript of ``name``."""
        try:
            return transcript.scan(self._require(name), self.warn)
        except FileNotFoundError:
            raise SessionNotFound(f"no session named {name!r} (see `sessionctl list`)") from None

    def get(self, name: str, seqs: Iterable[int]) -> dict[int, Message]:
        """The messages with these seqs (missing ones are absent): a binary search by offset."""
        from sessionctl.backend.files.lookup import messages_by_seq

        try:
            return messages_by_seq(self._require(name), seqs)
        except FileNotFoundError:
            raise SessionNotFound(f"no session named {name!r} (see `sessionctl list`)") from None

    def snapshot(self, name: str, *, trash_id: str | None = None) -> Snapshot:
        """``name`` as one parsed whole (live, or the trash entry ``trash_id``)."""
        if trash_id is None:
            path = self._require(name)
        else:
            path = self.trash_dir / trash_id / f"{name}{TRANSCRIPT}"
        try:
            scanned = transcript.scan(path, self.warn)
            when = self.last_activity(name) if trash_id is None else self._mtime(path)
        except FileNotFoundError:
            raise SessionNotFound(f"no session named {name!r} (see `sessionctl list`)") from None
        high = max(scanned.header.base_seq, scanned.high_seq)
        return Snapshot(name, public_header(scanned.header), scanned.messages, high, when, trash_id)

    def tail(self, name: str, k: int, roles: frozenset[str] | None = None) -> list[Message]:
        """Return ``name``'s last ``k`` messages (of ``roles``), oldest first."""
        try:
            path = self._require(name)
            transcript.read_header(path)  # refuse a newer format or a file that is no session
            return transcript.tail(path, k, roles, self.warn)
        except FileNotFoundError:
            raise SessionNotFound(f"no session named {name!r} (see `sessionctl list`)") from None

    # -- writing ---------------------------------------------------------
    def create(
        self,
        name: str,
        header: SessionHeader,
        messages: Iterable[Message] = (),
        *,
        high_seq: int | None = None,
        last_active_ns: int | None = None,
        trash_id: str | None = None,
    ) -> None:
        """Create ``name`` with ``header`` and ``messages``; SessionExists if it is taken."""
        if trash_id is not None:
            raise StoreError("the file backend cannot create a session in the trash yet")
        with self._namespace_lock(), self.lock(name):
            self._create_locked(name, file_header(header), messages, high_seq)
            if last_active_ns is not None:
                # last_activity() is the later of the log and the mtime: both, exactly.
                os.utime(self.path(name), ns=(last_active_ns, last_active_ns))
                self.activity.touch(name, last_active_ns, reset=True)

    def _create_locked(
        self, name: str, header: Header, messages: Iterable[Message], high_seq: int | None = None
    ) -> None:
        if self.exists(name):
            raise SessionExists(f"session {name!r} already exists; choose another name")
        twin = self.case_twin(name)
        if twin is not None:
            raise SessionExists(
                f"session {twin!r} already exists and differs from {name!r} only in case;"
                " choose another name"
            )
        for suffix in SIDECAR_SUFFIXES:  # left by a crash in delete or rename
            if suffix == ".rejects":
                continue  # set-aside lines are kept, never discarded (append-only)
            with contextlib.suppress(FileNotFoundError):
                self.path(name, suffix).unlink()
        messages = _numbered(messages)
        header.base_seq = max(max((m.seq for m in messages), default=0), high_seq or 0)
        header.base_count = len(messages)
        data = transcript.encode_header(header) + b"".join(encode(m.to_record()) for m in messages)
        target = self.path(name)
        tmp = temp_path_for(target)
        try:
            write_new_private(tmp, data)
            os.link(tmp, target)  # atomic and exclusive: never replaces a session
        except FileExistsError:
            raise SessionExists(f"session {name!r} already exists; choose another name") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()  # also after a failed write (disk full): no temp left behind
        fsync_dir(self.sessions_dir)
        self.activity.touch(name)

    def create_many(self, sessions: Sequence[NewSession]) -> None:
        """Create every session of ``sessions`` whole, sharing the costs between them.

        One namespace lock and one listing of ``sessions/`` (the exists and case
        checks) for the call; then, per group of sessions, each transcript goes
        to a temp file, one :func:`sync_files` makes them all durable, each is
        linked into place (atomic and exclusive, as :meth:`create`), the directory
        is fsynced once and the activity recorded in one append. A kill leaves
        each session whole or absent (a temp file left behind is swept by the next
        writer); a taken name raises SessionExists before anything is written.
        """
        if not sessions:
            return
        # The namespace lock alone: every creation, rename, restore and delete of a
        # session holds it, so under it no other writer touches a name that has no
        # transcript, and the listing stays true. No per-session lock file is made
        # (one more file creation each); the temp files are unique and flocked by
        # us until linked, so no sweep takes them for a crashed writer's.
        with self._namespace_lock():
            self._check_dirs()
            files = os.listdir(self.sessions_dir)
            present = set(files)
            folded: dict[str, str] = {}
            for file in files:
                if file[0] != "." and file.endswith(TRANSCRIPT):
                    folded.setdefault(file.casefold(), file[: -len(TRANSCRIPT)])
            for name, _header, _messages in sessions:
                own = f"{name}{TRANSCRIPT}"
                if own in present:
                    raise SessionExists(f"session {name!r} already exists; choose another name")
                twin = folded.get(own.casefold())
                if twin == name:
                    raise SessionExists(f"session {name!r} given twice; nothing created")
                if twin is not None:
                    raise SessionExists(
                        f"session {twin!r} already exists and differs from {name!r} only in"
                        " case; choose another name"
                    )
                folded[own.casefold()] = name
            for start in range(0, len(sessions), CREATE_GROUP):
                self._create_group(sessions[start : start + CREATE_GROUP], present)

    def _create_group(self, group: Sequence[NewSession], present: set[str]) -> None:
        temps: list[tuple[str, str]] = []  # (temp, transcript) names in sessions/
        fds: list[int] = []
        # Names relative to one descriptor of sessions/: no path walk, no Path objects,
        # and the directory checked before cannot be swapped for a link meanwhile.
        where = os.open(self.sessions_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            try:
                for name, header, messages in group:
                    for suffix in SIDECAR_SUFFIXES:  # left by a crash in delete or rename
                        if suffix != ".rejects" and f"{name}{suffix}" in present:
                            with contextlib.suppress(FileNotFoundError):
                                os.unlink(f"{name}{suffix}", dir_fd=where)
                    target = f"{name}{TRANSCRIPT}"
                    # unique and flocked by us until linked: no sweep takes it for a
                    # crashed writer's (temp_path_for's form, see fsutil)
                    tmp = f".{target}~{os.urandom(6).hex()}{TEMP_SUFFIX}"
                    temps.append((tmp, target))
                    data = self._encoded(header, messages)
                    fds.append(create_private_unsynced(tmp, data, where))
                sync_files(fds)
                for tmp, target in temps:
                    try:
                        os.link(tmp, target, src_dir_fd=where, dst_dir_fd=where)
                    except FileExistsError:
                        raise SessionExists(
                            f"session {target[: -len(TRANSCRIPT)]!r} already exists;"
                            " choose another name"
                        ) from None
            finally:
                for fd in fds:
                    os.close(fd)
                for tmp, _target in temps:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp, dir_fd=where)  # also after a failed write
            os.fsync(where)
        finally:
            os.close(where)
        self.activity.touch_many(name for name, _h, _m in group)

    @staticmethod
    def _encoded(header: SessionHeader, messages: Sequence[Message]) -> bytes:
        head = file_header(header)
        head.base_seq = max((m.seq for m in messages), default=0)
        head.base_count = len(messages)
        lines = [transcript.encode_header(head)]
        for pos, message in enumerate(messages, start=1):
            if message.extra is None:  # "pos" is then the record's last key: set it last
                record = message.to_record()
                record["pos"] = pos
            else:
                record = message._replace(pos=pos).to_record()
            lines.append(encode(record))
        return b"".join(lines)

    def append(
        self, name: str, make: MakeMessages, *, create: SessionHeader | None
    ) -> list[Message]:
        """Append the messages ``make(next_seq)`` builds; create the session first if asked."""
        self._ensure_dirs()
        while True:
            if self.exists(name):
                with self.lock(name):
                    if self.exists(name):
                        return self._append_locked(name, make)
            elif create is None:
                self._require(name)
            else:
                with self._namespace_lock(), self.lock(name):
                    if not self.exists(name):
                        self._create_locked(name, file_header(create), ())
                    return self._append_locked(name, make)

    def _append_locked(self, name: str, make: MakeMessages) -> list[Message]:
        path = self.path(name)
        header = transcript.read_header(path)  # a newer format is refused before any repair
        repair.repair_tail(path, self.path(name, ".rejects"), self.warn)
        state = transcript.tail_state(path)
        messages = make(header.next_seq(state.high_seq))
        messages = _numbered(messages, message_count(header, state.last))
        if messages and messages[-1].seq > MAX_SEQ:
            # No reader would take the record (docs/format.md): refuse to write it.
            raise StoreError(
                f"session {name!r} has used every message number (seq {MAX_SEQ}); "
                "nothing written; continue in a new session"
            )
        if messages:
            before = self._mtime(path)
            # Every record but the last says how many follow: a write cut short is
            # recognised and set aside whole, never half of it kept (transcript.py).
            last = len(messages) - 1
            append_private(
                path,
                b"".join(
                    encode({**m.to_record(), "more": last - i} if i < last else m.to_record())
                    for i, m in enumerate(messages)
                ),
            )
            self.activity.touch(name, floor=before)
        return messages

    def drop_last(self, name: str) -> Message:
        """Remove the last message: ``drop(name)``."""
        return self._drop_last(name)

    def _drop_last(self, name: str) -> Message:
        """Remove the last message without rewriting the file: truncate, then a tombstone.

        O(1) in the transcript's size. A crash between the two steps leaves the
        message removed and its seq free for reuse; the index checks ids, so a
        reused seq is re-embedded rather than trusted.
        """
        self._require(name)
        with self.lock(name):
            path = self._require(name)
            transcript.read_header(path)
            repair.repair_tail(path, self.path(name, ".rejects"), self.warn)
            state = transcript.tail_state(path)
            if state.last is None:
                raise MessageNotFound(f"session {name!r} has no messages to drop")
            before = self._mtime(path)
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
            try:
                check_own_file(fd, path)
                # After the last message come only tombstones, blanks or corrupt
                # lines: set the corrupt ones aside rather than truncate them away.
                size = os.fstat(fd).st_size
                after = os.pread(fd, size - state.last_offset, state.last_offset)
                junk = [
                    (None, line)
                    for line in after.split(b"\n")[1:]
                    if line.strip()
                    and (transcript.decode_record(line) or {}).get("type")
                    not in ("dropped", transcript.JOURNAL)
                ]
                repair.set_aside(self.path(name, ".rejects"), junk, "corrupt line (drop)")
                transcript.finish_previous(fd, state.last_offset)
                os.ftruncate(fd, state.last_offset)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                append_private(path, encode(transcript.tombstone(state.last, state.high_seq)))
            except OSError as exc:  # disk full: the message is gone, only its seq may return
                if self.warn is not None:
                    self.warn(f"{path}: dropped, but could not record it ({exc.strerror})")
            self.activity.touch(name, floor=before)
            return state.last

    def update_header(
        self, name: str, patch: HeaderPatch, *, create: bool = False
    ) -> SessionHeader:
        """Apply ``patch`` to ``name``'s header in place: O(1) in the number of messages
        (one streamed rewrite when the header outgrows line 1's reserve). A patch that
        changes nothing takes no lock and writes nothing."""
        if create and not self.exists(name):
            now = now_iso()
            self.append(name, lambda _seq: [], create=SessionHeader(new_ulid(), now, now))
        if not apply_patch(self._file_header(name), patch):  # checked before the lock
            return self.header(name)
        return public_header(self._edit_header(name, lambda h: apply_patch(h, patch)))

    def _edit_header(self, name: str, change: transcript.HeaderChange) -> Header:
        self._require(name)
        with self.lock(name):
            path = self._require(name)
            transcript.read_header(path)  # a newer format is refused before any repair
            before = self._mtime(path)
            header = streaming.edit_header(path, self.path(name, ".rejects"), self.warn, change)
            if os.stat(path, follow_symlinks=False).st_mtime_ns != before:
                self.activity.touch(name, floor=before)
            return header

    def drop(self, name: str, message_id: str | None = None) -> Message:
        """Remove message ``message_id``: one streamed pass into a temp file, constant memory.

        Without an id, the last message: :meth:`drop_last`, O(1).
        """
        if message_id is None:
            return self._drop_last(name)
        self._require(name)
        with self.lock(name):
            path = self._require(name)
            transcript.read_header(path)
            before = self._mtime(path)
            result = streaming.rewrite(
                path, self.path(name, ".rejects"), self.warn, lambda h: h, drop_id=message_id
            )
            self.activity.touch(name, floor=before)
            assert result.dropped is not None
            return result.dropped

    def stream(self, name: str) -> SessionStream:
        """Open ``name`` for one pass: its header, then its messages in constant memory."""
        try:
            opened = streaming.stream(self._require(name), self.warn)
        except FileNotFoundError:
            raise SessionNotFound(f"no session named {name!r} (see `sessionctl list`)") from None
        return SessionStream(public_header(opened.header), opened.messages)

    def iter_messages(self, name: str) -> Iterator[Message]:
        """Every message of ``name`` in order, in constant memory."""
        return self.stream(name).messages

    def clear(self, name: str) -> list[int]:
        """Remove every message of ``name`` (one atomic rewrite); return their seqs."""
        removed: list[int] = []

        def transform(header: Header, messages: list[Message]) -> tuple[Header, list[Message]]:
            removed[:] = [m.seq for m in messages]
            return header, []

        self.rewrite(name, transform)
        return removed

    def edit_messages(
        self,
        name: str,
        message: Callable[[Message], Message],
        header: Callable[[SessionHeader], SessionHeader],
        *,
        trash_id: str | None = None,
    ) -> bool:
        """Apply the edits under the lock; one atomic rewrite when anything changed.

        With ``trash_id`` the trash entry is edited instead (see
        :func:`~sessionctl.backend.files.scrubbing.edit_deleted`).
        """

        def transform(head: Header, messages: list[Message]) -> tuple[Header, list[Message]]:
            out = [message(m) for m in messages]
            before = public_header(head)
            after = header(before)
            if after == before and out == messages:
                raise _Unchanged
            head.model, head.system = after.model, after.system
            head.metadata, head.extra = dict(after.metadata), dict(after.extra)
            head.parent, head.parent_message = after.parent, after.parent_message
            return head, out

        try:
            if trash_id is None:
                self.rewrite(name, transform)
            else:
                from sessionctl.backend.files.scrubbing import edit_deleted

                edit_deleted(self, name, trash_id, lambda p, r: self._rewrite_file(p, r, transform))
        except _Unchanged:
            return False
        if trash_id is None:  # a deleted session has no rows in the keyword index
            self.forget_keywords(name)  # no old text left in the keyword index
        return True

    def scrub_residue(
        self, name: str, fix: TextFix, *, dry_run: bool, trash_id: str | None = None
    ) -> int:
        from sessionctl.backend.files.scrubbing import scrub_rejects

        return scrub_rejects(self, name, fix, dry_run=dry_run, trash_id=trash_id)

    def count_residue(
        self, name: str, count: Callable[[str], int], *, trash_id: str | None = None
    ) -> int:
        from sessionctl.backend.files.scrubbing import grep_session_files

        found = grep_session_files(self, name, count, trash_id=trash_id)
        if trash_id is None:  # a deleted session has no rows in the keyword index
            found += self.vectors.keywords.count(name, count)
        return found

    def fork(self, source: str, new: str, *, at: str | None, header: SessionHeader) -> None:
        """Copy ``source`` (up to and including ``at``) into ``new``, with its sidecar vectors."""
        messages = self.scan(source).messages
        if at is not None:
            index = next((i for i, m in enumerate(messages) if m.id == at), -1)
            if index < 0:
                raise MessageNotFound(f"no message with id {at!r} in session {source!r}")
            messages = messages[: index + 1]
        header = header._replace(parent_message=messages[-1].id if messages else None)
        copies = [m._replace(id=new_ulid()) for m in messages]
        self.create(new, header, copies)
        self._copy_vectors(source, new, [m.seq for m in messages])

    def _copy_vectors(self, source: str, new: str, seqs: list[int]) -> None:
        """Give a fork the sidecar vectors its source already has (if it is indexed)."""
        from sessionctl.backend.files.sidecar import SidecarIndex

        source_index = SidecarIndex.for_session(self.sessions_dir, source)
        if not source_index.files()[0].exists() or not seqs:
            return
        uid = self._file_header(new).uid
        with self.lock(new):
            try:
                target = SidecarIndex.for_session(self.sessions_dir, new)
                source_index.copy_to(target, {s: s for s in seqs}, transcript_uid=uid)
            except Exception as exc:  # derived data: the next query rebuilds it
                if self.warn is not None:
                    self.warn(
                        f"could not copy the index of {source!r} to {new!r} ({exc});"
                        " it will be rebuilt"
                    )

    def rewrite(self, name: str, transform: Transform) -> tuple[Header, list[Message]]:
        """Replace ``name``'s transcript with ``transform(header, messages)`` atomically."""
        self._require(name)
        with self.lock(name):
            path = self._require(name)
            before = self._mtime(path)
            result = self._rewrite_file(path, self.path(name, ".rejects"), transform)
            self.activity.touch(name, floor=before)
            return result

    def _rewrite_file(
        self, path: Path, rejects: Path, transform: Transform
    ) -> tuple[Header, list[Message]]:
        """Replace the transcript at ``path`` (its lock held) by ``transform``'s result;
        unreadable lines go to ``rejects`` first, so nothing is lost."""
        scanned = transcript.scan(path, self.warn)
        repair.set_aside(rejects, list(scanned.bad_lines), "corrupt line (before rewrite)")
        if scanned.torn is not None:
            repair.set_aside(rejects, [(None, scanned.torn)], "torn last line")
        repair.set_aside(
            rejects, list(scanned.unfinished), "unfinished multi-message write (interrupted)"
        )
        header, messages = transform(scanned.header, scanned.messages)
        messages = _numbered(messages)
        header.base_seq = max(header.base_seq, scanned.high_seq)
        header.base_count = len(messages)
        header.updated_at = now_iso()
        data = transcript.encode_header(header)
        data += b"".join(encode(m.to_record()) for m in messages)
        atomic_write(path, data)
        return header, messages

    # -- namespace operations -------------------------------------------
    def _move_files(self, src: Callable[[str], Path], dst: Callable[[str], Path]) -> None:
        for suffix in SESSION_SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                os.rename(src(suffix), dst(suffix))

    def rename(self, old: str, new: str) -> None:
        """Rename ``old`` to ``new`` with all its files, under both locks."""
        with self._namespace_lock(), self.lock(old):
            self._require(old)
            if self.exists(new):
                raise SessionExists(f"session {new!r} already exists; choose another name")
            twin = self.case_twin(new)
            if twin is not None and twin != old:
                raise SessionExists(f"session {twin!r} differs from {new!r} only in case")
            when = self.last_activity(old)
            with self.lock(new):
                self._move_files(lambda s: self.path(old, s), lambda s: self.path(new, s))
            self.path(old, ".lock").unlink()
            fsync_dir(self.sessions_dir)
            self.activity.touch(new, when, reset=True)  # a rename is not activity


class _Unchanged(Exception):
    """Raised inside a rewrite's transform to leave the transcript as it is."""


def _session_of(file: str) -> str | None:
    """Return the session a file name in ``sessions/`` belongs to (None: not a session file)."""
    for suffix in (".lock", *SESSION_SUFFIXES):
        if file.endswith(suffix) and len(file) > len(suffix):
            return file[: -len(suffix)]
    return None


def _numbered(messages: Iterable[Message], start: int = 0) -> list[Message]:
    """Return ``messages`` with positions start+1, start+2, ..."""
    return [m._replace(pos=start + i) for i, m in enumerate(messages, start=1)]
