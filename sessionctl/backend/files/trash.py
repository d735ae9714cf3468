"""The trash of the local backend: delete, list, restore and purge sessions.

A deleted session's files move to ``HOME/trash/ULID/`` (the ULID says when).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from sessionctl.backend.files import transcript
from sessionctl.backend.files.activity import ActivityLog
from sessionctl.backend.files.header import message_count, session_info
from sessionctl.backend.files.layout import SIDECAR_SUFFIXES, TRANSCRIPT
from sessionctl.errors import SessionExists, SessionNotFound, StoreError
from sessionctl.fsutil import ensure_private_dir, fsync_dir
from sessionctl.ids import new_ulid, ulid_time_ms
from sessionctl.models import SessionInfo
from sessionctl.timeutil import from_epoch_ns


class TrashMixin:
    """Trash operations; mixed into :class:`~sessionctl.backend.files.local.LocalBackend`."""

    trash_dir: Path
    sessions_dir: Path
    activity: ActivityLog

    # Provided by LocalBackend.
    _check_dirs: Callable[[], None]
    _namespace_lock: Callable[[], AbstractContextManager[None]]
    lock: Callable[[str], AbstractContextManager[None]]
    path: Callable[..., Path]
    exists: Callable[[str], bool]
    case_twin: Callable[[str], str | None]
    last_activity: Callable[[str], int]
    _require: Callable[[str], Path]
    _move_files: Callable[[Callable[[str], Path], Callable[[str], Path]], None]
    forget_keywords: Callable[[str], None]

    def _active_since(self, name: str, cutoff_ns: int | None) -> bool:
        if cutoff_ns is None:
            return False
        return self.last_activity(name) > cutoff_ns

    def delete(self, name: str, *, unless_active_since: int | None = None) -> str | None:
        """Move ``name`` to the trash and return the trash id.

        With ``unless_active_since`` (epoch ns) the session is left alone, and
        None returned, if it was written after that instant: checked under the
        lock, so ``prune`` never removes a session that a chat just used.
        """
        with self._namespace_lock(), self.lock(name):
            self._require(name)
            if self._active_since(name, unless_active_since):
                return None
            trash_id = new_ulid()
            folder = ensure_private_dir(self.trash_dir / trash_id)
            # Transcript first: once it is gone the session is gone.
            os.rename(self.path(name), folder / f"{name}{TRANSCRIPT}")
            self._move_files(lambda s: self.path(name, s), lambda s: folder / f"{name}{s}")
            self.path(name, ".lock").unlink()
            fsync_dir(self.sessions_dir)
        self.forget_keywords(name)
        return trash_id

    def purge(self, name: str, *, unless_active_since: int | None = None) -> bool:
        """Remove ``name`` and its files for good; False if it was active (see delete)."""
        with self._namespace_lock(), self.lock(name):
            self._require(name)
            if self._active_since(name, unless_active_since):
                return False
            self.path(name).unlink()
            for suffix in SIDECAR_SUFFIXES:
                with contextlib.suppress(FileNotFoundError):
                    self.path(name, suffix).unlink()
            self.path(name, ".lock").unlink()
            fsync_dir(self.sessions_dir)
        self.forget_keywords(name)
        return True

    def deleted(self) -> list[SessionInfo]:
        """Return the sessions in the trash, newest deletion first."""
        found: list[SessionInfo] = []
        self._check_dirs()
        try:
            folders = sorted(os.listdir(self.trash_dir), reverse=True)
        except FileNotFoundError:
            return found
        for trash_id in folders:
            folder = self.trash_dir / trash_id
            if folder.is_symlink():
                continue  # never followed out of the data dir
            for entry in _transcripts_in(folder):
                name = entry[: -len(TRANSCRIPT)]
                try:
                    path = folder / entry
                    header = transcript.read_header(path)
                    count = message_count(header, transcript.tail_state(path).last)
                    mtime = os.stat(path, follow_symlinks=False).st_mtime_ns
                    deleted_ns = _deleted_ns(folder, trash_id, mtime)
                except (OSError, StoreError):
                    continue
                info = session_info(name, header, count, from_epoch_ns(mtime))
                found.append(info._replace(deleted_at=_iso_or_empty(deleted_ns), trash_id=trash_id))
        return found

    def restore(self, name: str, trash_id: str | None = None) -> None:
        """Bring ``name`` back from the trash (the newest deletion unless ``trash_id``)."""
        with self._namespace_lock():
            candidates = [i for i in self.deleted() if i.name == name]
            if trash_id is not None:
                candidates = [i for i in candidates if i.trash_id == trash_id]
            if not candidates:
                raise SessionNotFound(f"no deleted session named {name!r} (see `list --deleted`)")
            chosen = candidates[0].trash_id
            assert chosen is not None
            if self.exists(name) or self.case_twin(name):
                raise SessionExists(
                    f"a live session named {name!r} exists; rename it before restoring"
                )
            folder = self.trash_dir / chosen
            with self.lock(name):
                self._move_files(lambda s: folder / f"{name}{s}", lambda s: self.path(name, s))
            shutil.rmtree(folder, ignore_errors=True)
            fsync_dir(self.sessions_dir)
            # Its activity is what it was when deleted (the transcript's mtime).
            when = os.stat(self.path(name), follow_symlinks=False).st_mtime_ns
            self.activity.touch(name, when, reset=True)

    def purge_deleted(self, trash_id: str) -> None:
        """Remove one trash entry for good."""
        with self._namespace_lock():
            folder = self.trash_dir / trash_id
            if not folder.is_dir() or folder.is_symlink():
                raise SessionNotFound(f"no trash entry {trash_id!r}")
            shutil.rmtree(folder)


def _transcripts_in(folder: Path) -> list[str]:
    try:
        return [n for n in os.listdir(folder) if n.endswith(TRANSCRIPT) and not n.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _deleted_ns(folder: Path, trash_id: str, last_write_ns: int) -> int:
    """When a session was deleted: never earlier than any witness of it.

    The ULID carries the deleting process's clock; the folder's ctime the
    kernel's (a process with a skewed clock cannot set it, and nothing changes
    the folder after the delete); the transcript's mtime is its last write,
    which came before the delete. Taking the latest means a clock that was
    behind when the session was deleted cannot make it look old enough to purge.
    """
    st = os.stat(folder, follow_symlinks=False)
    try:
        ulid_ns = ulid_time_ms(trash_id) * 1_000_000
    except ValueError:
        ulid_ns = 0
    return max(ulid_ns, st.st_ctime_ns, st.st_mtime_ns, last_write_ns)


def _iso_or_empty(ns: int) -> str:
    try:
        return from_epoch_ns(ns)
    except (ValueError, OverflowError, OSError):
        return ""
