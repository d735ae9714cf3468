"""Each query phrase's BM25 contributions, kept between the searches of one process.

FTS5's ``bm25()`` of an OR query is, for each row, the sum over the query's
phrases, in their order, of one term per phrase: ``idf * tf * (k1 + 1) / (tf +
k1 * (1 - b + b * D / avgdl))``, where the phrase's idf, the row count and the
average length are the same whichever other phrases the query has. A query of
that phrase alone returns exactly that term (negated, as bm25() does). So the
contributions of a phrase can be fetched once and added up in numpy: a common
word matching 10,000 messages is scored once per state of the index instead of
once per query, which is most of the cost of an unfiltered search for common
words.

The sums use the same floats in the same order as SQLite does, and ties are cut
by session then seq as the SQL query cuts them, so the result is the same list
(``tests/test_keywords.py`` compares the two on many queries). The arrays belong
to one *generation* of the index (a random token rewritten in every transaction
that changes it, by any process, and new with every rebuild): another
generation drops them all. They hold row ids and floats, no text.

Fetching a phrase's contributions costs more than ranking the OR query once
(about 1.6x: every match comes out of SQLite instead of the best few), so a
phrase's array is built on its second search in one generation: a query with a
phrase not searched before in this generation is ranked by SQLite as before
(a one-shot command keeps nothing), and a process that writes between every two
searches never pays for arrays it cannot reuse.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

#: Most (row id, contribution) pairs kept in all (16 bytes each: 32 MB).
LIMIT = 2_000_000
#: Most ids bound to one SQL statement (SQLite allows 32,766).
_CHUNK = 30_000


class PhraseScores:
    """The contribution arrays of the phrases searched lately, for one generation."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self.generation: str | None = None
        self._arrays: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self._size = 0
        self._seen: set[str] = set()  # phrases searched in this generation
        self.fetched = 0  # phrases scored by SQLite (not found here) since the start

    def __len__(self) -> int:
        return len(self._arrays)

    def clear(self) -> None:
        self._arrays.clear()
        self._seen.clear()
        self._size = 0

    def usable(self, generation: str, phrases: Sequence[str]) -> bool:
        """Whether ``top`` should rank this query: each phrase kept or searched before.

        Notes the phrases as searched; a new generation forgets everything first.
        """
        if generation != self.generation:
            self.clear()
            self.generation = generation
        known = all(p in self._arrays or p in self._seen for p in phrases)
        if len(self._seen) > 10 * len(self._arrays) + 10_000:
            self._seen.clear()  # bounded (a long-lived process sees many phrases)
        self._seen.update(phrases)
        return known

    def top(
        self, conn: sqlite3.Connection, generation: str, phrases: Sequence[str], k: int
    ) -> list[tuple[int, str, int, float]]:
        """The best ``k`` rows for the OR of ``phrases``: (id, session, seq, bm25).

        Ordered as ``ORDER BY bm25(fts), session, seq`` orders them.
        """
        import numpy as np

        if generation != self.generation:
            self.clear()
            self.generation = generation
        arrays = [self._scores(conn, phrase) for phrase in phrases]
        highest = max((int(ids[-1]) for ids, _ in arrays if len(ids)), default=-1)
        if highest < 0 or k <= 0:
            return []
        total = np.zeros(highest + 1)
        for ids, scores in arrays:  # the query's order: the same sums as SQLite's
            total[ids] += scores
        matched = np.flatnonzero(total)  # every contribution is below zero
        ranks = total[matched]
        rows = []
        if len(matched) > k:
            kth = np.partition(ranks, k - 1)[k - 1]
            better = matched[ranks < kth]
            rows = _where(conn, better.tolist())
            matched = matched[ranks == kth]  # the k-th and its ties: the first by session, seq
        rows += _where(conn, matched.tolist(), limit=k - len(rows))
        found = [(i, s, q, float(total[i])) for i, s, q in rows]
        found.sort(key=lambda row: (row[3], row[1], row[2]))
        return found[:k]

    def _scores(self, conn: sqlite3.Connection, phrase: str) -> tuple[Any, Any]:
        import numpy as np

        cached = self._arrays.get(phrase)
        if cached is not None:
            self._arrays.move_to_end(phrase)
            return cached
        rows = conn.execute(
            "SELECT rowid, bm25(fts) FROM fts WHERE fts MATCH ? ORDER BY rowid", (phrase,)
        ).fetchall()
        self.fetched += 1
        ids = np.array([row[0] for row in rows], dtype=np.int64)
        scores = np.array([row[1] for row in rows], dtype=np.float64)
        if len(ids) <= self.limit:
            while self._arrays and self._size + len(ids) > self.limit:
                _, (old, _) = self._arrays.popitem(last=False)
                self._size -= len(old)
            self._arrays[phrase] = (ids, scores)
            self._size += len(ids)
        return ids, scores


def _where(
    conn: sqlite3.Connection, ids: list[int], limit: int | None = None
) -> list[tuple[int, str, int]]:
    """(id, session, seq) of ``ids``: the first ``limit`` by session then seq, or all."""
    rows: list[tuple[int, str, int]] = []
    order = "" if limit is None or len(ids) <= limit else f" ORDER BY session, seq LIMIT {limit}"
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        rows += conn.execute(
            f"SELECT id, session, seq FROM docs WHERE id IN ({','.join('?' * len(chunk))}){order}",
            chunk,
        ).fetchall()
    if order and len(ids) > _CHUNK:  # each chunk's first few: the first of all among them
        rows = sorted(rows, key=lambda row: (row[1], row[2]))[:limit]
    return rows
