"""What ``scrub`` needs of the file backend beyond ``rewrite``: the rejects file and
a grep of a session's files (its derived files included)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from sessionctl.backend.files.layout import SESSION_SUFFIXES, SIDECAR_SUFFIXES, TRANSCRIPT
from sessionctl.errors import SessionNotFound
from sessionctl.fsutil import atomic_write

if TYPE_CHECKING:
    from sessionctl.backend.files.local import LocalBackend

TextFix = Callable[[str], tuple[str, int]]
# The derived files of a session: removed from a scrubbed trash entry (a restore rebuilds them).
DERIVED_SUFFIXES = tuple(s for s in SIDECAR_SUFFIXES if s != ".rejects")


def _trash_path(backend: LocalBackend, name: str, trash_id: str, suffix: str) -> Path:
    """``name``'s file with ``suffix`` in the trash entry ``trash_id`` (which must exist)."""
    folder = backend.trash_dir / trash_id
    if os.sep in trash_id or trash_id in ("", ".", "..") or folder.is_symlink():
        raise SessionNotFound(f"no trash entry {trash_id!r}")
    if not (folder / f"{name}{TRANSCRIPT}").is_file():
        raise SessionNotFound(f"no deleted session {name!r} in trash entry {trash_id!r}")
    return folder / f"{name}{suffix}"


def _guard(backend: LocalBackend, name: str, trash_id: str | None) -> AbstractContextManager[None]:
    """The lock that keeps the file still: the session's own, or for a trash entry the
    namespace lock (restore and purge move or remove trash entries under it)."""
    return backend.lock(name) if trash_id is None else backend._namespace_lock()


def edit_deleted(
    backend: LocalBackend,
    name: str,
    trash_id: str,
    rewrite: Callable[[Path, Path], object],
) -> None:
    """Rewrite a session in the trash (``rewrite(transcript, rejects)``), keeping its last
    write time (what a restore takes as its activity); its derived index files are
    removed first, so no vector of the old text survives (a restore rebuilds them)."""
    with backend._namespace_lock():
        path = _trash_path(backend, name, trash_id, TRANSCRIPT)
        for suffix in DERIVED_SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                path.with_name(f"{name}{suffix}").unlink()
        before = os.stat(path, follow_symlinks=False)
        rewrite(path, path.with_name(f"{name}.rejects"))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns), follow_symlinks=False)


def scrub_rejects(
    backend: LocalBackend, name: str, fix: TextFix, *, dry_run: bool, trash_id: str | None = None
) -> int:
    """Apply ``fix`` to the set-aside lines of ``name`` (an atomic rewrite under the
    session's lock); return how many matches were (or would be) removed."""
    with _guard(backend, name, trash_id):
        if trash_id is None:
            path = backend.path(name, ".rejects")
        else:
            path = _trash_path(backend, name, trash_id, ".rejects")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return 0
        total = 0
        out: list[str] = []
        for line in data.decode("utf-8", "backslashreplace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict) and isinstance(record.get("data"), str):
                fixed, n = fix(record["data"])
                if n:
                    record["data"] = fixed
                    line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
            else:
                line, n = fix(line)
            total += n
            out.append(line + "\n")
        if total and not dry_run:
            atomic_write(path, "".join(out).encode("utf-8"))
        return total


def grep_session_files(
    backend: LocalBackend, name: str, count: Callable[[str], int], *, trash_id: str | None = None
) -> int:
    """How many matches ``count`` finds in every file of ``name`` (transcript, index,
    stamps, rejects; live, or in the trash entry ``trash_id``), read as text."""
    found = 0
    for suffix in SESSION_SUFFIXES:
        try:
            if trash_id is None:
                path = backend.path(name, suffix)
            else:
                path = _trash_path(backend, name, trash_id, suffix)
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        found += count(data.decode("utf-8", "replace"))
    return found
