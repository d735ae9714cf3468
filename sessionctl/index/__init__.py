"""The semantic index: message vectors per session, searched by cosine distance.

Public API (nothing here imports faiss or numpy until it is used)::

    MessageIndex                  # Protocol the store's service talks to
    SidecarIndex(faiss_path, manifest_path)       # the local FAISS implementation
    SidecarIndex.for_session(sessions_dir, name)  # NAME.faiss + NAME.index.json
      .sync(messages, embedder, *, transcript_uid, batch_size=64, progress=None) -> SyncReport
      .add(messages, embedder, *, transcript_uid, batch_size=64) -> SyncReport | None
      .search(query_vec, k, *, max_distance=None) -> list[(seq, distance)]
      .remove(seqs) -> int
      .copy_to(target, seq_map, *, transcript_uid) -> int
      .delete() / .files() / .count
    SyncReport(added, removed, total, rebuilt_reason, save_error).warnings
    merge_hits(per_session, k) -> list[(session, seq, distance)]
    within_threshold(distance, threshold) -> bool     # inclusive
    similarity_to_distance(similarity) -> float

``messages`` passed to ``sync`` are ``(seq, text)`` for every message currently
in the transcript: the transcript is the source of truth and the index follows
it. Distances are cosine distances (``1 - cosine similarity``, 0..2); hits are
sorted by distance, ties by seq (and across sessions by session name, then seq).
The index is exact (FAISS ``IndexIDMap2`` over half-precision vectors, every
one scored; ids = seq); see ``docs/index.md`` for why and for the measurements.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from sessionctl.index.hits import (
    DISTANCE_EPSILON,
    merge_hits,
    similarity_to_distance,
    within_threshold,
)
from sessionctl.index.report import SyncReport

if TYPE_CHECKING:
    import numpy.typing as npt

    from sessionctl.embed import Embedder

__all__ = [
    "DISTANCE_EPSILON",
    "MessageIndex",
    "SyncReport",
    "merge_hits",
    "similarity_to_distance",
    "within_threshold",
]


class MessageIndex(Protocol):
    """What the service needs from a per-session vector index (FAISS files today)."""

    def sync(
        self,
        messages: Sequence[tuple[int, str]],
        embedder: Embedder,
        *,
        transcript_uid: str,
        batch_size: int = 64,
        progress: Callable[[int, int], None] | None = None,
    ) -> SyncReport: ...

    def search(
        self, query_vec: npt.ArrayLike, k: int, *, max_distance: float | None = None
    ) -> list[tuple[int, float]]: ...

    def remove(self, seqs: Iterable[int]) -> int: ...

    def delete(self) -> None: ...
