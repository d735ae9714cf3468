"""The FAISS sidecar of one session: ``NAME.faiss`` plus its ``NAME.index.json`` manifest.

The index is derived from the transcript and never trusted blindly: every load
checks the manifest (format, model, dimension, transcript uid), the ``.faiss``
file's size and sha256, and that the ids in it are the seqs the manifest lists.
Anything wrong makes :meth:`SidecarIndex.sync` rebuild from the messages it is
given and say why in :attr:`SyncReport.rebuilt_reason`; garbage never raises.

Callers hold the session's exclusive lock around :meth:`~SidecarIndex.sync`,
:meth:`~SidecarIndex.remove`, :meth:`~SidecarIndex.copy_to` and
:meth:`~SidecarIndex.delete`. Writes go ``.faiss`` first, then the manifest,
each through a temp file + fsync + rename; a crash between the two leaves a
checksum mismatch, which the next sync repairs by rebuilding.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sessionctl.backend.files.manifest import Manifest, ManifestError, text_digest
from sessionctl.backend.files.storage import (
    State,
    add_vectors,
    clear_way,
    load_faiss,
    new_index,
    open_index,
    read_private,
    remove_seqs,
    verify_file,
    write_index_file,
)
from sessionctl.errors import EmbeddingError, StoreError
from sessionctl.fsutil import atomic_write, temp_path_for
from sessionctl.index.hits import similarity_to_distance, within_threshold
from sessionctl.index.report import SyncReport

if TYPE_CHECKING:
    import numpy.typing as npt

    from sessionctl.embed import Embedder


class _DimensionChanged(Exception):
    """The model id matched but its vectors have another dimension: rebuild."""


class SidecarIndex:
    """Exact cosine search over one session's message vectors, ids = seq."""

    def __init__(
        self, faiss_path: Path, manifest_path: Path, transcript: Path | None = None
    ) -> None:
        self.faiss_path = faiss_path
        self.manifest_path = manifest_path
        self.transcript = transcript  # a session's sidecar: its transcript (for the stamp)
        self._state: State | None = None
        self._stamp: tuple[int, int, int] | None = None  # manifest (ino, size, mtime_ns)
        self._dirty = False  # the loaded index has changes a failed save did not write
        self.trusted_stat: list[int] | None = None

    @classmethod
    def for_session(cls, directory: Path, name: str) -> SidecarIndex:
        """The sidecar of session ``name``: ``NAME.faiss`` and ``NAME.index.json``."""
        return cls(
            directory / f"{name}.faiss",
            directory / f"{name}.index.json",
            directory / f"{name}.jsonl",
        )

    # -- the freshness stamp (see freshness.py): a session's sidecar only ----------
    def _stamp_files(self) -> tuple[Path, Path]:
        from sessionctl.backend.files.freshness import STAMP_SUFFIX

        if self.transcript is None:
            raise ValueError("only a session's sidecar (SidecarIndex.for_session) has a stamp")
        return self.transcript, self.transcript.with_name(
            self.transcript.name[: -len(".jsonl")] + STAMP_SUFFIX
        )

    def write_stamp(self, uid: str, size: int | None = None) -> None:
        """Record that this index covers its transcript (up to ``size``); under the lock."""
        from sessionctl.backend.files.freshness import write_stamp

        write_stamp(*self._stamp_files(), self, uid, size)

    def fast_catch_up(self, embedder: Embedder) -> bool:
        """Bring this index current from its stamp; False when a full sync is needed."""
        from sessionctl.backend.files.freshness import fast_catch_up

        return fast_catch_up(*self._stamp_files(), embedder, self)

    def trust(self, faiss_stat: Sequence[int] | None) -> None:
        """Skip re-hashing the ``.faiss`` file while it keeps this (inode, size, mtime_ns).

        For a caller that recorded the stats right after a verified sync (the
        search fast path's stamp); any change to the file brings the full check back.
        """
        self.trusted_stat = list(faiss_stat) if faiss_stat else None

    def files(self) -> tuple[Path, Path]:
        return self.faiss_path, self.manifest_path

    @property
    def count(self) -> int:
        """Vectors in the loaded index (0 when nothing is loaded)."""
        return 0 if self._state is None else int(self._state.index.ntotal)

    # -- loading ---------------------------------------------------------------

    def _manifest_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.manifest_path, follow_symlinks=False)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _load(self) -> tuple[State | None, str | None]:
        """The on-disk index if sound, else ``(None, reason)``."""
        if self._state is not None and (self._dirty or self._stamp == self._manifest_stamp()):
            return self._state, None
        self._state, self._stamp = None, None
        try:
            stamp = self._manifest_stamp()
            raw_manifest = read_private(self.manifest_path)
            present = self.faiss_path.exists() or self.faiss_path.is_symlink()
            if raw_manifest is None:
                return None, "index manifest missing" if present else "index missing"
            if not present:
                return None, "index file missing"
            manifest = Manifest.from_json(raw_manifest)
            verify_file(self.faiss_path, manifest, self.trusted_stat)
            state = open_index(self.faiss_path, manifest)
        except ManifestError as exc:
            return None, str(exc)
        self._state, self._stamp = state, stamp
        return state, None

    @staticmethod
    def _empty(model_id: str, dimension: int, transcript_uid: str) -> State:
        return State(new_index(dimension), model_id, dimension, transcript_uid, writable=True)

    def _save(self, state: State) -> None:
        """Write ``.faiss`` then the manifest, atomically; raises StoreError."""
        seqs = tuple(sorted(state.digests))
        try:
            clear_way(self.faiss_path)
            clear_way(self.manifest_path)
            size, sha256 = write_index_file(self.faiss_path, state.index)
            manifest = Manifest(
                model_id=state.model_id,
                dimension=state.dimension,
                transcript_uid=state.transcript_uid,
                seqs=seqs,
                digests=tuple(state.digests[s] for s in seqs),
                faiss_bytes=size,
                faiss_sha256=sha256,
            )
            with contextlib.suppress(FileNotFoundError):
                temp_path_for(self.manifest_path).unlink()  # a crashed writer's leftover
            atomic_write(self.manifest_path, manifest.to_json())
        except OSError as exc:  # StoreError is an OSError too
            # Keep serving the in-memory index; the next sync tries to save again.
            self._state, self._dirty = state, True
            if isinstance(exc, StoreError):
                raise
            raise StoreError(
                f"cannot write the index {self.faiss_path.name} in {self.faiss_path.parent}: "
                f"{exc.strerror or exc}"
            ) from None
        self._state, self._stamp, self._dirty = state, self._manifest_stamp(), False

    # -- public operations -----------------------------------------------------

    def sync(
        self,
        messages: Sequence[tuple[int, str]],
        embedder: Embedder,
        *,
        transcript_uid: str,
        batch_size: int = 64,
        progress: Callable[[int, int], None] | None = None,
    ) -> SyncReport:
        """Make the index cover exactly ``messages`` (every ``(seq, text)`` in the transcript).

        Loads the saved index; rebuilds it from scratch when it is missing,
        corrupt, or made by another model, dimension or transcript; otherwise
        removes seqs that are gone (or now name another text) and embeds only
        the new ones, ``batch_size`` texts per ``embedder.embed`` call, calling
        ``progress(done, total)`` after each. Saves only if something changed;
        an interrupted catch-up (Ctrl-C) saves what it embedded, then re-raises.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        wanted: dict[int, str] = {}
        for seq, text in messages:
            if seq in wanted:
                raise ValueError(f"duplicate seq {seq} in messages")
            wanted[int(seq)] = text
        state, reason = self._load()
        if state is not None:
            reason = self._mismatch(state, embedder, transcript_uid)
            if reason is not None:
                state = None
        args = (wanted, embedder, transcript_uid, batch_size, progress)
        try:
            return self._catch_up(state, reason, *args)
        except _DimensionChanged as exc:
            return self._catch_up(None, str(exc), *args)

    def add(
        self,
        messages: Sequence[tuple[int, str]],
        embedder: Embedder,
        *,
        transcript_uid: str,
        batch_size: int = 64,
    ) -> SyncReport | None:
        """Embed and add only ``messages`` (appended since the last sync), then save.

        For the caller that knows nothing else changed (the transcript only
        grew), so it need not read the whole transcript. Returns None, having
        changed nothing, when the saved index is unusable or made for another
        model or transcript: the caller then runs a full :meth:`sync`.
        """
        state, reason = self._load()
        if state is None or reason is not None:
            return None
        if self._mismatch(state, embedder, transcript_uid) is not None:
            return None
        todo = [(int(seq), text) for seq, text in messages if int(seq) not in state.digests]
        if not todo:
            return SyncReport(added=0, removed=0, total=int(state.index.ntotal))
        texts = dict(todo)
        seqs = [seq for seq, _ in todo]
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start : start + batch_size]
            vectors = embedder.embed([texts[s] for s in chunk])
            if getattr(vectors, "shape", (0, 0))[1:] != (state.dimension,):
                self._state, self._stamp = None, None  # drop what was added in memory
                return None  # another dimension: the full sync rebuilds
            add_vectors(state, chunk, vectors, texts)
        save_error = None
        try:
            self._save(state)
        except StoreError as exc:
            save_error = str(exc)
        return SyncReport(
            added=len(seqs), removed=0, total=int(state.index.ntotal), save_error=save_error
        )

    def _catch_up(
        self,
        state: State | None,
        reason: str | None,
        wanted: dict[int, str],
        embedder: Embedder,
        transcript_uid: str,
        batch_size: int,
        progress: Callable[[int, int], None] | None,
    ) -> SyncReport:
        """Bring ``state`` (None: build anew, for ``reason``) up to ``wanted``, then save."""
        import numpy as np

        changed = self._dirty or state is None
        removed = 0
        if state is not None:
            digests = state.digests
            stale = [
                s for s, d in digests.items() if s not in wanted or text_digest(wanted[s]) != d
            ]
            if stale:
                removed, changed = remove_seqs(state, stale), True
        have = {} if state is None else state.digests
        # Similar lengths per batch keep padding (and embedding time) low.
        todo = sorted((s for s in wanted if s not in have), key=lambda s: (len(wanted[s]), s))
        done = 0
        try:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                vectors = np.asarray(embedder.embed([wanted[s] for s in chunk]))
                if vectors.ndim != 2 or vectors.shape[0] != len(chunk):
                    raise EmbeddingError(
                        f"embedding model returned shape {vectors.shape} for {len(chunk)} texts"
                    )
                if state is None:
                    state = self._empty(embedder.model_id, vectors.shape[1], transcript_uid)
                elif vectors.shape[1] != state.dimension:
                    problem = (
                        f"index has dimension {state.dimension}, the model gives {vectors.shape[1]}"
                    )
                    if reason is None:
                        raise _DimensionChanged(problem)
                    raise EmbeddingError(f"embedding model changed dimension: {problem}")
                add_vectors(state, chunk, vectors, wanted)
                done += len(chunk)
                changed = True
                if progress is not None:
                    progress(done, len(todo))
        except BaseException as exc:
            if changed and state is not None and not isinstance(exc, _DimensionChanged):
                with contextlib.suppress(Exception):
                    self._save(state)
            raise
        if state is None:  # nothing to embed: an empty index
            state = self._empty(embedder.model_id, embedder.dimension, transcript_uid)
        save_error = None
        if changed:
            try:
                self._save(state)
            except StoreError as exc:
                save_error = str(exc)
        return SyncReport(
            added=done,
            removed=removed,
            total=int(state.index.ntotal),
            rebuilt_reason=reason,
            save_error=save_error,
        )

    @staticmethod
    def _mismatch(state: State, embedder: Embedder, transcript_uid: str) -> str | None:
        if state.model_id != embedder.model_id:
            return f"index built with model {state.model_id}, now using {embedder.model_id}"
        if state.transcript_uid != transcript_uid:
            return "index belongs to another transcript of that name"
        # A remote model learns its dimension from its first call: don't pay a
        # probe just to check; a change shows up when vectors come back.
        known = (
            getattr(embedder, "known_dimension", None)
            if hasattr(embedder, "known_dimension")
            else embedder.dimension
        )
        if known is not None and state.dimension != known:
            return f"index has dimension {state.dimension}, the model gives {known}"
        return None

    def search(
        self, query_vec: npt.ArrayLike, k: int, *, max_distance: float | None = None
    ) -> list[tuple[int, float]]:
        """The ``k`` nearest ``(seq, cosine distance)``, sorted by distance then seq.

        ``max_distance`` keeps only hits with distance <= it (inclusive). Uses
        the index loaded by :meth:`sync` (or loads a sound one from disk; a
        missing or unusable index raises :class:`StoreError`: sync first).
        Exact: ties at the k-th place are resolved by seq, not by chance.
        """
        import numpy as np

        if k <= 0:
            return []
        state, reason = self._load()
        if state is None:
            raise StoreError(
                f"semantic index {self.faiss_path.name} unusable ({reason}); sync it first"
            )
        query = np.ascontiguousarray(query_vec, dtype=np.float32).reshape(1, -1)
        if query.shape[1] != state.dimension:
            raise EmbeddingError(
                f"query vector has dimension {query.shape[1]}, the index {state.dimension}"
            )
        total = int(state.index.ntotal)
        if total == 0:
            return []
        faiss = load_faiss()
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            fetch = min(total, k + 1)
            while True:
                scores, ids = state.index.search(query, fetch)
                if fetch >= total or fetch <= k or scores[0][fetch - 1] < scores[0][k - 1]:
                    break
                fetch = min(total, fetch * 2)  # a tie straddles the k-th place
        finally:
            faiss.omp_set_num_threads(threads)
        hits = [
            (int(i), similarity_to_distance(float(s)))
            for s, i in zip(scores[0], ids[0], strict=True)
            if i >= 0
        ]
        hits.sort(key=lambda hit: (hit[1], hit[0]))
        hits = hits[:k]
        if max_distance is not None:
            hits = [h for h in hits if within_threshold(h[1], max_distance)]
        return hits

    def remove(self, seqs: Iterable[int]) -> int:
        """Remove these seqs (drop, clear) and save; returns how many were indexed.

        An unusable index is left alone (the next sync rebuilds it). Raises
        :class:`StoreError` if the save fails; the next sync heals that too.
        """
        state, _reason = self._load()
        if state is None:
            return 0
        removed = remove_seqs(state, seqs)
        if removed:
            self._save(state)
        return removed

    def copy_to(
        self,
        target: SidecarIndex,
        seq_map: Mapping[int, int] | Iterable[int],
        *,
        transcript_uid: str,
    ) -> int:
        """Write ``target`` with the vectors of these seqs (for fork); returns how many.

        ``seq_map`` maps source seq -> target seq (an iterable of seqs keeps them).
        Seqs this index lacks are skipped; the target's first sync embeds them.
        Nothing is written when this index is unusable (returns 0).
        """
        import numpy as np

        mapping = dict(seq_map) if isinstance(seq_map, Mapping) else {s: s for s in seq_map}
        if len(set(mapping.values())) != len(mapping):
            raise ValueError("seq_map maps two seqs to one")
        state, _reason = self._load()
        if state is None:
            return 0
        new = self._empty(state.model_id, state.dimension, transcript_uid)
        keep = sorted(s for s in mapping if s in state.digests)
        if keep:
            ids = load_faiss().vector_to_array(state.index.id_map)
            rows = np.isin(ids, np.asarray(keep, dtype=np.int64))
            vectors = state.index.index.reconstruct_n(0, int(state.index.ntotal))[rows]
            new_ids = np.asarray([mapping[int(s)] for s in ids[rows]], dtype=np.int64)
            new.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), new_ids)
            new.digests = {mapping[s]: state.digests[s] for s in keep}
        target._save(new)
        return len(keep)

    def delete(self) -> None:
        """Remove both files (a missing one is fine) and forget the loaded index."""
        self._state, self._stamp, self._dirty = None, None, False
        for path in (self.faiss_path, self.manifest_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
