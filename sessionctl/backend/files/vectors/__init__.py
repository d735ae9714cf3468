"""One store-wide, incremental vector index for the file backend (a VectorStore).

A query over every session costs one read of the activity times (the
activity log's stamp, listing.py), one read of the index's journal, and an
exact FAISS scan of the vectors searched: no lock, stat or open per session.
Sessions whose activity time differs from the one the index recorded are
caught up first, under the store-wide writers' lock, reading only the bytes
appended since where they were only appended to. See journal.py for the
files and docs/index.md for the rules.

Rows are keyed by the session's header ``uid``, which rename, delete and
restore keep, so none of those re-embeds anything; a deleted session's rows
stay (unsearched) until a compaction finds its uid neither live nor in the
trash. A new message whose text some row already has (a fork, an import, a
message said twice) reuses that row's vector.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sessionctl.backend.base import IndexHit, IndexProgress, SearchFilter
from sessionctl.backend.files.keywords import KeywordIndex, count_identifiers, identifiers
from sessionctl.backend.files.layout import TRANSCRIPT
from sessionctl.backend.files.vectors import follow
from sessionctl.backend.files.vectors.journal import (
    DIR_NAME,
    JOURNAL,
    ROLES,
    Change,
    IndexUnusable,
    Loaded,
    SessionState,
    commit,
    compact,
    create,
    files,
    load,
    needs_compaction,
    remove_strays,
    row_dtype,
    writer_lock,
)
from sessionctl.errors import EmbeddingError, IndexNotWritable, SessionctlError, StoreError
from sessionctl.index.hits import similarity_to_distance, within_threshold
from sessionctl.index.report import SyncReport
from sessionctl.models import Message

if TYPE_CHECKING:
    from sessionctl.backend.files.local import LocalBackend
    from sessionctl.backend.files.sessionindex import SessionIndexes
    from sessionctl.embed import Embedder

BATCH = 64
_SMALL_LOOKUP = 32  # up to this many new texts: look their hashes up without a dict


def text_hash(text: str) -> tuple[int, int]:
    """blake2b-128 of a text as two uint64 (a vector is reused only for the same text)."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")


def text_crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


class StoreIndex:
    """The file backend's :class:`~sessionctl.backend.base.VectorStore`."""

    def __init__(self, backend: LocalBackend) -> None:
        self.backend = backend
        self.directory = backend.home / DIR_NAME
        self.bytes_written = 0  # by this object's last catch-up (tests and the bench read it)
        self.embedded = 0  # texts embedded by this object's last catch-up
        self.skipped: set[str] = set()  # sessions the last catch-up could not read
        # The last index loaded, by the journal's (dev, ino, size, mtime): a commit,
        # a compaction or a rebuild changes it.
        self._cache: tuple[tuple[int, ...], Loaded] | None = None
        self._keywords: KeywordIndex | None = None
        self._sessions: SessionIndexes | None = None
        self._skip_warned: set[str] = set()

    def _warn(self, message: str) -> None:
        if self.backend.warn is not None:
            self.backend.warn(message)

    def warn_skip(self, name: str, exc: Exception) -> None:
        """Warn that ``name`` was skipped; once per reason (both indexes share it)."""
        message = _skip_warning(name, exc)
        if message not in self._skip_warned:
            self._skip_warned.add(message)
            self._warn(message)

    # -- the VectorStore interface ---------------------------------------------------
    def forget_loaded(self) -> None:
        """Drop the index kept mapped between searches (its file is closed once unused)."""
        self._cache = None

    def catch_up(
        self,
        names: Sequence[str] | None,
        embedder: Embedder,
        *,
        progress: IndexProgress | None = None,
    ) -> list[tuple[str, SyncReport]]:
        """Embed what changed since the last catch-up (None: every live session)."""
        _, reports = self._ensure(self._wanted(names), embedder, progress=progress)
        return reports

    def rebuild(
        self,
        names: Sequence[str] | None,
        embedder: Embedder,
        *,
        progress: IndexProgress | None = None,
    ) -> list[tuple[str, SyncReport]]:
        """Embed ``names`` (None: every live session) again from their transcripts."""
        wanted = self._wanted(names)
        _, reports = self._ensure(
            wanted, embedder, progress=progress, anew=set(wanted), fresh_start=names is None
        )
        return reports

    def search(
        self,
        query_vec: Any,
        embedder: Embedder,
        *,
        k: int,
        max_distance: float,
        where: SearchFilter | None = None,
        query_text: str | None = None,
        mode: str = "vector",
    ) -> list[IndexHit]:
        """Nearest messages, caught up first; sorted by distance, then session, then seq."""
        import numpy as np

        if mode != "vector":
            raise StoreError(f"search mode {mode!r} is not supported by the file backend yet")
        where = where or SearchFilter()
        if where.since or where.until or where.metadata:
            raise StoreError("time and metadata filters are not supported by the file backend")
        if k <= 0:
            return []
        query = np.ascontiguousarray(query_vec, dtype=np.float32).reshape(1, -1)
        explicit = where.names is not None
        wanted = self._wanted(where.names)
        self.skipped = set()
        force: set[str] = set()
        rebuild = False
        hits: list[IndexHit] = []
        for _attempt in range(3):
            loaded, _ = self._ensure(
                wanted, embedder, force_full=force, rebuild=rebuild, strict=explicit
            )
            if query.shape[1] != loaded.dimension:
                raise EmbeddingError(
                    f"query vector has dimension {query.shape[1]}, the index {loaded.dimension}"
                )
            names = [n for n in wanted if n not in self.skipped]
            try:
                found = _search(loaded, query, names, where.roles, k, max_distance)
            except IndexUnusable as exc:
                self._warn(f"semantic index: {exc}; rebuilding it")
                self._cache = None
                rebuild = True
                continue
            hits, stale = self._resolve(loaded, found)
            if not stale:
                hits.sort(key=lambda h: (h.distance, h.session, h.seq))
                return hits[:k]
            force = stale
        hits.sort(key=lambda h: (h.distance, h.session, h.seq))
        return hits[:k]

    def text_search(
        self, query: str, *, k: int, where: SearchFilter | None = None
    ) -> list[IndexHit]:
        """Keyword (BM25) matches from the store-wide keyword index (keywords.py)."""
        where = where or SearchFilter()
        if k <= 0:
            return []
        names = None if where.names is None else list(dict.fromkeys(where.names))
        found = self.keywords.search(
            query, k=k, names=names, roles=where.roles, since=where.since, until=where.until
        )
        wanted = identifiers(query)
        hits: list[IndexHit] = []
        for name, seq, score, message in found:
            source = {
                "rank": len(hits) + 1,
                "score": score,
                "identifiers": count_identifiers(wanted, message.content),
            }
            hits.append(IndexHit(name, seq, None, message, {"text": source}))
        return hits

    def search_session(
        self,
        name: str,
        query_vec: Any,
        embedder: Embedder,
        *,
        k: int,
        max_distance: float,
        roles: frozenset[str] | None = None,
    ) -> list[IndexHit]:
        """``name``'s nearest messages by its own sidecar index (sessionindex.py)."""
        return self.sessions.search(
            name, query_vec, embedder, k=k, max_distance=max_distance, roles=roles
        )

    def rebuild_session(
        self, name: str, embedder: Embedder, *, progress: IndexProgress | None = None
    ) -> SyncReport:
        """Embed ``name``'s own sidecar index again from its transcript."""
        return self.sessions.rebuild(name, embedder, progress=progress)

    @property
    def sessions(self) -> SessionIndexes:
        """The per-session sidecar indexes (what one session's search and reindex use)."""
        if self._sessions is None:
            from sessionctl.backend.files.sessionindex import SessionIndexes

            self._sessions = SessionIndexes(self.backend)
        return self._sessions

    @property
    def keywords(self) -> KeywordIndex:
        if self._keywords is None:
            self._keywords = KeywordIndex(self.backend, self.warn_skip)
        return self._keywords

    # -- internals -----------------------------------------------------------------
    def _wanted(self, names: Sequence[str] | None) -> dict[str, int]:
        times = self.backend.activity_times()
        if names is None:
            return times
        return {n: times.get(n, -1) for n in dict.fromkeys(names)}

    def _reload(self) -> Loaded:
        """Load what this writer just committed (and remember it)."""
        before = self._key(None)
        loaded = load(self.directory)
        key = self._key(loaded.generation)
        self._cache = (key, loaded) if key[:4] == before else None
        return loaded

    def _key(self, generation: str | None) -> tuple[int, ...]:
        """(dev, ino, size, mtime) of the journal and of both files of its generation.

        A mapped file that shrank under this process would kill it (SIGBUS) when
        searched: any change to any of the three means loading (and checking) again.
        """
        key: list[int] = []
        st = os.stat(self.directory / JOURNAL, follow_symlinks=False)
        key += [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
        if generation is not None:
            for path in files(self.directory, generation):
                try:
                    st = os.stat(path, follow_symlinks=False)
                except FileNotFoundError:
                    key += [-1]
                    continue
                key += [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
        return tuple(key)

    def _open(self, embedder: Embedder) -> tuple[Loaded | None, str | None]:
        try:
            cached = self._cache
            key = self._key(cached[1].generation if cached is not None else None)
            if cached is not None and cached[0] == key:
                loaded = cached[1]  # this process loaded (or wrote) exactly this
            else:
                self._cache = None
                loaded = self._reload()
        except FileNotFoundError:
            return None, "store-wide index missing"
        except IndexUnusable as exc:
            self._cache = None
            return None, str(exc)
        except OSError as exc:  # index/ is not a directory, unreadable, ...
            self._cache = None
            return None, f"store-wide index unreadable ({exc.strerror or exc})"
        if loaded.model_id != embedder.model_id:
            return None, f"index built with model {loaded.model_id}, now using {embedder.model_id}"
        known = (
            getattr(embedder, "known_dimension", None)
            if hasattr(embedder, "known_dimension")
            else embedder.dimension
        )
        if known is not None and known != loaded.dimension:
            return None, f"index has dimension {loaded.dimension}, the model gives {known}"
        return loaded, None

    @staticmethod
    def _stale(loaded: Loaded, wanted: Mapping[str, int], force: set[str]) -> list[str]:
        by_name = loaded.by_name
        out = []
        for name, when in wanted.items():
            state = by_name.get(name)
            if state is None or state.activity != when or when < 0 or name in force:
                out.append(name)
        return sorted(out)

    def _ensure(
        self,
        wanted: Mapping[str, int],
        embedder: Embedder,
        *,
        progress: IndexProgress | None = None,
        force_full: set[str] | frozenset[str] = frozenset(),
        anew: set[str] | frozenset[str] = frozenset(),
        rebuild: bool = False,
        fresh_start: bool = False,
        strict: bool = True,
    ) -> tuple[Loaded, list[tuple[str, SyncReport]]]:
        """The committed index with every wanted session current (catching up what is not)."""
        force = set(force_full) | set(anew)
        first = not os.path.lexists(self.directory)  # never built here: nothing to warn about
        loaded, _ = (None, None) if rebuild or fresh_start else self._open(embedder)
        if loaded is not None and not self._stale(loaded, wanted, force):
            return loaded, []
        self.bytes_written = self.embedded = 0
        try:
            with writer_lock(self.directory):
                return self._catch_up_locked(
                    wanted,
                    embedder,
                    progress,
                    force,
                    set(anew),
                    rebuild,
                    fresh_start or first,
                    strict,
                    quiet=first,
                )
        except OSError as exc:
            cause = exc.__cause__ if isinstance(exc, StoreError) else exc
            code = getattr(cause, "errno", None)
            if code in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT):
                raise IndexNotWritable(
                    f"cannot write the store-wide index in {self.directory}: "
                    f"{getattr(cause, 'strerror', None) or cause}"
                ) from exc
            raise

    def _catch_up_locked(
        self,
        wanted: Mapping[str, int],
        embedder: Embedder,
        progress: IndexProgress | None,
        force: set[str],
        anew: set[str],
        rebuild: bool,
        fresh_start: bool,
        strict: bool,
        *,
        quiet: bool = False,
    ) -> tuple[Loaded, list[tuple[str, SyncReport]]]:
        loaded, reason = (None, "rebuilt on request") if fresh_start else self._open(embedder)
        if rebuild and not fresh_start:
            loaded, reason = None, reason or "index vectors corrupt"
        legacy: set[str] = set()
        if loaded is None:
            if not fresh_start and not quiet:
                self._warn(f"semantic index rebuilt: {reason}")
            create(self.directory, embedder.model_id, embedder.dimension)
            loaded = load(self.directory)
            remove_strays(self.directory, loaded.generation)
            legacy = self._legacy_sidecars()
            if legacy and not anew:  # reindex has just written those sidecars itself
                self._warn(
                    f"semantic index: building the store-wide index from {len(legacy)}"
                    " per-session index(es) of sessionctl 0.1 (vectors reused, not re-embedded)"
                )
        legacy |= anew  # a reindexed session's fresh sidecar, when it has one
        stale = self._stale(loaded, wanted, force)
        change = Change(loaded.dimension)
        builder = _Builder(self, loaded, change, embedder, progress)
        reports: list[tuple[str, SyncReport]] = []
        try:
            for name in stale:
                try:
                    report = builder.session(
                        name,
                        wanted[name],
                        full=name in force,
                        anew=name in anew,
                        legacy=name in legacy,
                    )
                except FileNotFoundError:
                    continue  # deleted while we looked
                except Exception as exc:
                    if strict or not _isolable(exc):
                        raise
                    # One session that cannot be read must not fail a search over the others.
                    self.warn_skip(name, exc)
                    self.skipped.add(name)
                    continue
                reports.append((name, report))
        except BaseException:
            builder.keep_partial()
            if not change.empty():
                with contextlib.suppress(Exception):
                    commit(loaded, change)
            raise
        if not change.empty():
            self.bytes_written += commit(loaded, change)
            loaded = self._reload()
            kind = needs_compaction(loaded)
            if kind is not None:
                compact(loaded, self._trash_uids() if kind == "rows" else None)
                loaded = self._reload()
        return loaded, reports

    def _legacy_sidecars(self) -> set[str]:
        """Sessions with a 0.1 per-session index beside their transcript (one listing)."""
        try:
            files = os.listdir(self.backend.sessions_dir)
        except OSError:
            return set()
        return {f[: -len(".faiss")] for f in files if f.endswith(".faiss") and f[0] != "."}

    def _trash_uids(self) -> set[str]:
        """The uids of the sessions in the trash (their rows survive a compaction)."""
        from sessionctl.backend.files.transcript import read_header

        uids: set[str] = set()
        trash = self.backend.trash_dir
        try:
            folders = os.listdir(trash)
        except OSError:
            return uids
        for folder in folders:
            with contextlib.suppress(OSError):
                for entry in os.listdir(trash / folder):
                    if entry.endswith(TRANSCRIPT) and entry[0] != ".":
                        with contextlib.suppress(OSError, StoreError):
                            uids.add(read_header(trash / folder / entry).uid)
        return uids

    def _resolve(
        self, loaded: Loaded, found: list[tuple[str, int, float]]
    ) -> tuple[list[IndexHit], set[str]]:
        """Read the hits' messages back; a row whose text is not the transcript's is stale."""
        from sessionctl.backend.files.lookup import messages_by_seq

        by_session: dict[str, list[tuple[int, float]]] = {}
        for name, row, distance in found:
            by_session.setdefault(name, []).append((row, distance))
        hits: list[IndexHit] = []
        stale: set[str] = set()
        rows = loaded.rows
        for name, items in by_session.items():
            seqs = [int(rows["seq"][r]) for r, _ in items]
            try:
                messages = messages_by_seq(self.backend.path(name), seqs)
            except (FileNotFoundError, StoreError):
                continue  # deleted (or made unreadable) since the catch-up
            for (row, distance), seq in zip(items, seqs, strict=True):
                message = messages.get(seq)
                if (
                    message is None
                    or text_crc(message.content) != int(rows["crc"][row])
                    or ROLES.get(message.role, 0) != int(rows["role"][row])
                ):
                    stale.add(name)
                    continue
                hits.append(IndexHit(name, seq, distance, message))
        return hits, stale


def _isolable(exc: Exception) -> bool:
    """A failure of one session's data (not the model's, not a bad argument, not memory)."""
    return isinstance(exc, StoreError) or not isinstance(exc, (SessionctlError, MemoryError))


def _skip_warning(name: str, exc: Exception) -> str:
    why = (
        str(exc)
        if isinstance(exc, SessionctlError)
        else (f"internal error {type(exc).__name__}: {exc}")
    )
    return (
        f"session {name!r} skipped: {why}; the others were searched "
        f"(once that is fixed, run: sessionctl reindex {name})"
    )


class _Builder:
    """Turns stale sessions into one :class:`Change` (rows, vectors, tombstones, states)."""

    def __init__(
        self,
        owner: StoreIndex,
        loaded: Loaded,
        change: Change,
        embedder: Embedder,
        progress: IndexProgress | None,
    ) -> None:
        self.owner = owner
        self.loaded = loaded
        self.change = change
        self.embedder = embedder
        self.progress = progress
        self.dead = loaded.dead_mask()
        self.states = dict(loaded.sessions)  # key -> state, with this change's updates
        self.by_uid = {st.uid: st for st in self.states.values()}
        self.by_name = loaded.by_name
        self.next_key = max(self.states, default=0) + 1
        self._groups: dict[int, Any] | None = None
        self.new_vectors: dict[tuple[int, int], Any] = {}  # text hash -> vector (this change)
        self._hash_dict: dict[tuple[int, int], int] | None = None
        self.partial: tuple[SessionState, list[Any], list[Any]] | None = None

    def _state_of(self, uid: str) -> SessionState | None:
        return self.by_uid.get(uid)

    def _live_rows(self, key: int) -> dict[int, int]:
        """seq -> row of the session's rows that are not tombstoned."""
        import numpy as np

        rows = self.loaded.rows
        if not len(rows):
            return {}
        if self._groups is None:  # once per writer: rows grouped by key
            order = np.argsort(rows["key"], kind="stable")
            keys, starts = np.unique(rows["key"][order], return_index=True)
            bounds = [*starts.tolist(), len(order)]
            self._groups = {
                int(k): order[bounds[i] : bounds[i + 1]] for i, k in enumerate(keys.tolist())
            }
        idx = self._groups.get(key)
        if idx is None:
            return {}
        idx = idx[~self.dead[idx]]
        return {int(s): int(r) for s, r in zip(rows["seq"][idx], idx, strict=True)}

    def _lookup(self, hashes: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
        """Rows (any, tombstoned too: a vector depends only on its text) with these texts."""
        import numpy as np

        rows = self.loaded.rows
        if not len(rows) or not hashes:
            return {}
        if len(hashes) <= _SMALL_LOOKUP and self._hash_dict is None:
            out = {}
            h1, h2 = rows["h1"], rows["h2"]
            for h in hashes:
                hit = np.flatnonzero((h1 == h[0]) & (h2 == h[1]))
                if len(hit):
                    out[h] = int(hit[0])
            return out
        if self._hash_dict is None:
            self._hash_dict = {}
            for r, pair in enumerate(zip(rows["h1"].tolist(), rows["h2"].tolist(), strict=True)):
                self._hash_dict.setdefault(pair, r)
        return {h: self._hash_dict[h] for h in hashes if h in self._hash_dict}

    def keep_partial(self) -> None:
        """Interrupted: keep what the session in progress had embedded (its state is stale)."""
        if self.partial is None:
            return
        state, rows, vectors = self.partial
        if rows:
            self.change.rows.extend(rows)
            self.change.vectors.extend(vectors)
            self.change.states.append(
                SessionState(state.key, state.uid, state.name, -1)
            )  # activity -1: caught up again (in full) next time

    def session(
        self, name: str, activity: int, *, full: bool, anew: bool, legacy: bool
    ) -> SyncReport:
        reading = follow.read(
            self.owner.backend.path(name),
            self._state_of,
            force_full=full or activity < 0,
            warn=self.owner.backend.warn,
        )
        previous = self._state_of(reading.uid)
        key = previous.key if previous is not None else self.next_key
        if previous is None:
            self.next_key += 1
        live = self._live_rows(key)
        rows_np = self.loaded.rows
        dead: list[int] = []
        if anew:
            dead = sorted(live.values())
            live = {}
        if reading.full:
            wanted = {m.seq: m for m in reading.messages}
            for seq, row in list(live.items()):
                m = wanted.get(seq)
                if (
                    m is None
                    or text_crc(m.content) != int(rows_np["crc"][row])
                    or ROLES.get(m.role, 0) != int(rows_np["role"][row])
                ):
                    dead.append(row)
                    del live[seq]
        todo = [m for m in reading.messages if m.seq not in live and m.seq > 0]
        todo = list({m.seq: m for m in todo}.values())
        state = SessionState(
            key, reading.uid, name, activity, reading.ino, reading.size, reading.tail
        )
        other = self.by_name.get(name)  # the name now belongs to this session only
        if other is not None and other.key != key:
            other.name = None
            self.change.states.append(other)
        if previous is not None and previous.name is not None and previous.name != name:
            self.by_name.pop(previous.name, None)
        rows_out: list[Any] = []
        vecs_out: list[Any] = []
        self.partial = (state, rows_out, vecs_out)
        self._place(todo, key, legacy or anew, not anew, name, reading.uid, rows_out, vecs_out)
        self.partial = None
        self.change.rows.extend(rows_out)
        self.change.vectors.extend(vecs_out)
        self.change.dead.extend(dead)
        for row in dead:
            self.dead[row] = True
        self.change.states.append(state)
        self.states[key] = state
        self.by_uid[state.uid] = state
        self.by_name[name] = state
        total = len(live) + len(todo)
        return SyncReport(added=len(todo), removed=len(dead), total=total)

    def _place(
        self,
        todo: list[Message],
        key: int,
        legacy: bool,
        by_text: bool,
        name: str,
        uid: str,
        rows_out: list[Any],
        vecs_out: list[Any],
    ) -> int:
        """Add rows for ``todo``: reuse vectors by text, else from a 0.1 sidecar, else embed."""
        import numpy as np

        if not todo:
            return 0
        dim = self.loaded.dimension
        hashes = [text_hash(m.content) for m in todo]
        vectors: dict[int, Any] = {}
        found = self._lookup([h for h in hashes if h not in self.new_vectors]) if by_text else {}
        for i, h in enumerate(hashes):
            if not by_text:
                break
            if h in self.new_vectors:
                vectors[i] = self.new_vectors[h]
            elif h in found:
                vectors[i] = self.loaded.vectors[found[h]]
        if legacy:
            sidecar = _sidecar_vectors(self.owner.backend, name, uid, self.embedder.model_id)
            for i, m in enumerate(todo):
                if i not in vectors and m.seq in sidecar:
                    crc, vec = sidecar[m.seq]
                    if crc == text_crc(m.content) and vec.shape == (dim,):
                        vectors[i] = vec / max(float(np.linalg.norm(vec)), 1e-12)
        reused = len(vectors)
        missing = sorted((i for i in range(len(todo)) if i not in vectors),
                         key=lambda i: (len(todo[i].content), i))  # fmt: skip

        def emit(indices: list[int]) -> None:
            block = np.zeros(len(indices), dtype=row_dtype())
            block["key"] = key
            block["seq"] = [todo[i].seq for i in indices]
            block["crc"] = [text_crc(todo[i].content) for i in indices]
            block["h1"] = [hashes[i][0] for i in indices]
            block["h2"] = [hashes[i][1] for i in indices]
            block["role"] = [ROLES.get(todo[i].role, 0) for i in indices]
            rows_out.append(block)
            vecs_out.append(np.asarray([vectors[i] for i in indices], dtype=np.float32))

        if reused:
            emit(sorted(vectors))
        done = 0
        for start in range(0, len(missing), BATCH):
            chunk = missing[start : start + BATCH]
            out = np.asarray(self.embedder.embed([todo[i].content for i in chunk]))
            if out.ndim != 2 or out.shape[0] != len(chunk):
                raise EmbeddingError(
                    f"embedding model returned shape {out.shape} for {len(chunk)} texts"
                )
            if out.shape[1] != dim:
                raise EmbeddingError(
                    f"embedding model changed dimension: index {dim}, model {out.shape[1]}"
                )
            self.owner.embedded += len(chunk)
            for i, vec in zip(chunk, out, strict=True):
                vectors[i] = vec
                self.new_vectors[hashes[i]] = vec
            emit(chunk)
            done += len(chunk)
            if self.progress is not None:
                self.progress(name, done, len(missing))
        return reused


def _sidecar_vectors(
    backend: LocalBackend, name: str, uid: str, model_id: str
) -> dict[int, tuple[int, Any]]:
    """seq -> (text CRC-32, vector) from a sound per-session sidecar of this transcript."""
    from sessionctl.backend.files.sidecar import SidecarIndex
    from sessionctl.backend.files.storage import load_faiss

    index = SidecarIndex.for_session(backend.sessions_dir, name)
    try:
        state, _reason = index._load()
    except Exception:
        return {}
    if state is None or state.model_id != model_id or state.transcript_uid != uid:
        return {}
    try:
        faiss = load_faiss()
        inner = faiss.downcast_index(state.index.index)
        vectors = inner.reconstruct_n(0, int(state.index.ntotal))
        ids = faiss.vector_to_array(state.index.id_map)
    except Exception:
        return {}
    return {
        int(seq): (state.digests[int(seq)], vectors[i])
        for i, seq in enumerate(ids)
        if int(seq) in state.digests
    }


def _search(
    loaded: Loaded,
    query: Any,
    names: list[str],
    roles: frozenset[str] | None,
    k: int,
    max_distance: float,
) -> list[tuple[str, int, float]]:
    """(session, row, distance) of the best rows of ``names`` (ties at the k-th kept)."""
    import numpy as np

    n = loaded.rows_count
    if n == 0:
        return []
    rows = loaded.rows
    by_name = loaded.by_name
    keys = {by_name[name].key: name for name in names if name in by_name}
    if not keys:
        return []
    lookup = np.zeros(max(loaded.sessions) + 1, dtype=bool)
    lookup[list(keys)] = True
    mask = lookup[rows["key"]] & ~loaded.dead_mask()
    if roles is not None:
        codes = np.asarray([ROLES.get(r, 0) for r in roles], dtype=np.uint8)
        mask &= np.isin(rows["role"], codes)
    live = int(mask.sum())
    if live == 0:
        return []
    vectors = loaded.vectors
    if live == n:
        scores, idx = _knn(vectors, query, k, max_distance, None)
    elif live * 2 >= n:
        scores, idx = _knn(vectors, query, k, max_distance, mask)
    else:  # a few sessions of many: copy just their vectors (work ~ the vectors searched)
        chosen = np.flatnonzero(mask)
        scores, local = _knn(np.ascontiguousarray(vectors[chosen]), query, k, max_distance, None)
        idx = chosen[local]
    if len(idx):
        norms = np.linalg.norm(vectors[idx], axis=1)
        if not np.all(np.abs(norms - 1.0) < 1e-2):
            raise IndexUnusable("index vectors corrupt (not unit length)")
    out = []
    for score, row in zip(scores.tolist(), idx.tolist(), strict=True):
        distance = similarity_to_distance(score)
        if within_threshold(distance, max_distance):
            out.append((keys[int(rows["key"][row])], row, distance))
    return out


def _knn(vectors: Any, query: Any, k: int, max_distance: float, mask: Any) -> tuple[Any, Any]:
    """Exact top-k inner products (all rows tied with the k-th too), skipping masked-out rows."""
    import numpy as np

    from sessionctl.backend.files.storage import load_faiss

    faiss = load_faiss()
    n = len(vectors)
    excluded = 0 if mask is None else n - int(mask.sum())
    fetch = min(n, k + 1 + excluded)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        while True:
            scores, ids = faiss.knn(query, vectors, fetch, metric=faiss.METRIC_INNER_PRODUCT)
            scores, ids = scores[0], ids[0]
            valid = ids >= 0
            if mask is not None:
                valid &= mask[np.where(valid, ids, 0)]
            s, i = scores[valid], ids[valid]
            if fetch >= n or similarity_to_distance(float(scores[-1])) > max_distance + 1e-6:
                break
            if len(s) > k and s[k] < s[k - 1]:
                break
            fetch = min(n, fetch * 2)
    finally:
        faiss.omp_set_num_threads(threads)
    if len(s) > k:
        keep = s >= s[k - 1]
        s, i = s[keep], i[keep]
    return s, i


if TYPE_CHECKING:
    from sessionctl.backend.base import VectorStore

    def _conforms(index: StoreIndex) -> VectorStore:
        return index  # mypy checks that StoreIndex is a VectorStore
