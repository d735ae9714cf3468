"""One session's own index: its sidecar (``NAME.faiss`` + ``NAME.index.json``) and stamp.

What the file backend answers a search of one session and ``reindex`` with
(``capabilities.session_indexes``); the store-wide index (``vectors/``) takes
these vectors over without embedding them again. The service reaches this
only through :meth:`StoreIndex.search_session` and :meth:`StoreIndex.rebuild_session`.

The transcript is the source of truth: the sidecar catches up (only what
changed) when it is searched. A missing, stale, corrupt or other-model sidecar
is rebuilt with one warning; the command still succeeds. On a read-only data
dir nothing can be saved: the index is caught up in memory for this search,
with a warning.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from sessionctl.backend.base import IndexHit, IndexProgress
from sessionctl.errors import StoreError

if TYPE_CHECKING:
    from sessionctl.backend.files.local import LocalBackend
    from sessionctl.backend.files.sidecar import SidecarIndex
    from sessionctl.embed import Embedder
    from sessionctl.index.report import SyncReport
    from sessionctl.models import Message


class SessionIndexes:
    """The per-session sidecar indexes of a :class:`LocalBackend`."""

    def __init__(self, backend: LocalBackend) -> None:
        self.backend = backend

    def _warn(self, message: str) -> None:
        if self.backend.warn is not None:
            self.backend.warn(message)

    def index(self, name: str) -> SidecarIndex:
        """The sidecar index object of session ``name`` (its files may not exist yet)."""
        from sessionctl.backend.files.sidecar import SidecarIndex

        return SidecarIndex.for_session(self.backend.sessions_dir, name)

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        """The session's write lock; on a read-only data dir, none (nothing can be saved
        there: the index is caught up in memory for this search, with a warning)."""
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self.backend.lock(name))
            except StoreError as exc:
                cause = exc.__cause__
                if not (isinstance(cause, OSError) and cause.errno in (errno.EROFS, errno.EACCES)):
                    raise
                self._warn(f"session {name!r}: {exc}; the index is not saved")
            yield

    def catch_up(
        self,
        name: str,
        embedder: Embedder,
        *,
        progress: Callable[[int, int], None] | None = None,
        index: SidecarIndex | None = None,
    ) -> tuple[list[Message], SyncReport]:
        """Bring ``name``'s sidecar up to date with its transcript; return its messages too.

        Pass ``index`` to search it afterwards: when the caught-up index could not be
        saved (disk full, read-only data dir) only that object holds it.
        """
        backend = self.backend
        with self._lock(name):
            messages = backend.messages(name)
            header = backend.header(name)
            index = index or self.index(name)
            report = index.sync(
                [(m.seq, m.content) for m in messages],
                embedder,
                transcript_uid=header.uid,
                progress=progress,
            )
            if not report.save_error:
                index.write_stamp(header.uid)
        if report.rebuilt_reason == "index missing" and not report.save_error:
            return messages, report  # first indexing (appends never index): nothing to warn
        for warning in report.warnings:
            self._warn(f"session {name!r}: {warning}")
        return messages, report

    def search(
        self,
        name: str,
        query: Any,
        embedder: Embedder,
        *,
        k: int,
        max_distance: float,
        roles: frozenset[str] | None = None,
    ) -> list[IndexHit]:
        """``name``'s nearest messages by its sidecar, caught up first (distance, then seq)."""
        index = self.index(name)
        found: tuple[list[tuple[int, float]], dict[int, Message]] | None = None
        if roles is None:
            found = self._fast_search(name, embedder, index, query, k, max_distance)
        if found is None:
            messages, _ = self.catch_up(name, embedder, index=index)
            by_seq = {m.seq: m for m in messages}
            wanted = {m.seq for m in messages if roles is None or m.role in roles}
            if not wanted:
                return []
            # Ask for enough neighbours that the role filter still leaves k.
            depth = len(messages) if roles is not None else min(k, len(messages))
            hits = index.search(query, depth, max_distance=max_distance)
            found = [(seq, d) for seq, d in hits if seq in wanted][:k], by_seq
        hits, by_seq = found
        return [IndexHit(name, seq, distance, by_seq[seq]) for seq, distance in hits]

    def _fast_search(
        self,
        name: str,
        embedder: Embedder,
        index: SidecarIndex,
        query: Any,
        k: int,
        max_distance: float,
    ) -> tuple[list[tuple[int, float]], dict[int, Message]] | None:
        """Search without parsing the transcript when the stamp proves the index current.

        None when a full catch-up is needed (no stamp, a rewrite, a drop, ...).
        """
        from sessionctl.backend.files.lookup import messages_by_seq

        try:
            with self.backend.lock(name):
                if not index.fast_catch_up(embedder):
                    return None
            hits = index.search(query, k, max_distance=max_distance)
            found = messages_by_seq(self.backend.path(name), [seq for seq, _ in hits])
        except OSError:  # StoreError included: the full path reports it properly
            return None
        return [(seq, d) for seq, d in hits if seq in found], found

    def rebuild(
        self, name: str, embedder: Embedder, *, progress: IndexProgress | None = None
    ) -> SyncReport:
        """Embed ``name``'s sidecar again from its transcript."""
        index = self.index(name)
        with self.backend.lock(name):
            index.delete()
        _, report = self.catch_up(name, embedder, progress=_per_session(progress, name))
        return report


def _per_session(progress: IndexProgress | None, name: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        progress(name, done, total)

    return report
