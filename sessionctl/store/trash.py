"""The trash of the local backend: list, restore and empty soft-deleted sessions.

A deleted session's files move to ``HOME/trash/ULID/`` (the ULID says when);
``LocalBackend.delete`` puts them there, this mixin does the rest.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from sessionctl.errors import SessionExists, SessionNotFound, StoreError
from sessionctl.fsutil import fsync_dir
from sessionctl.ids import ulid_time_ms
from sessionctl.models import SessionInfo
from sessionctl.store import transcript
from sessionctl.store.activity import ActivityLog
from sessionctl.store.header import message_count, session_info
from sessionctl.timeutil import from_epoch_ns

TRANSCRIPT = ".jsonl"  # the suffix that marks a transcript (layout: local.py)


class TrashMixin:
    """Trash operations; mixed into :class:`~sessionctl.store.local.LocalBackend`."""

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
    _move_files: Callable[[Callable[[str], Path], Callable[[str], Path]], None]

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
                except (OSError, StoreError):
                    continue
                info = session_info(name, header, count, from_epoch_ns(mtime))
                found.append(info._replace(deleted_at=_ulid_iso(trash_id), trash_id=trash_id))
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
            self.activity.touch(name, os.stat(self.path(name), follow_symlinks=False).st_mtime_ns)

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


def _ulid_iso(trash_id: str) -> str:
    try:
        return from_epoch_ns(ulid_time_ms(trash_id) * 1_000_000)
    except ValueError:
        return ""
