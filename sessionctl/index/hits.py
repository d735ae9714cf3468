"""Pure helpers for search hits: the inclusive threshold and the store-wide merge."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

#: Distances come from float32 inner products (about 7 significant digits), so
#: "inclusive" allows this much slack: 0.3 keeps a hit computed as 0.3000004.
DISTANCE_EPSILON = 1e-6


def within_threshold(distance: float, threshold: float) -> bool:
    """True when ``distance <= threshold`` (inclusive, to float32 precision)."""
    return distance <= threshold + DISTANCE_EPSILON


def similarity_to_distance(similarity: float) -> float:
    """Cosine similarity (-1..1) to cosine distance (0..2)."""
    return min(2.0, max(0.0, 1.0 - similarity))


def merge_hits(
    per_session: Mapping[str, Sequence[tuple[int, float]]], k: int
) -> list[tuple[str, int, float]]:
    """Merge per-session ``(seq, distance)`` hits into the best ``k`` overall.

    Sorted by distance, ties by session name then seq; ``k <= 0`` gives ``[]``.
    """
    if k <= 0:
        return []
    merged = [
        (session, seq, distance) for session, hits in per_session.items() for seq, distance in hits
    ]
    merged.sort(key=lambda hit: (hit[2], hit[0], hit[1]))
    return merged[:k]
