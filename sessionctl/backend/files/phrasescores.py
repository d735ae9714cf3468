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
(about 1.6x: every match comes out of SQLite instead of the best few), so no
search waits for it. A query is summed here only when every phrase of it is
kept; otherwise SQLite ranks it, as in a one-shot command. A phrase searched a
second time in one generation is then fetched by a background thread, on its
own connection, in one read transaction that also reads the generation (so the
arrays and the token agree), and kept if the generation is still the current
one. A one-shot command, or a process that writes between every two searches,
keeps nothing and pays nothing. close() (and the interpreter's exit) interrupts
a fetch in progress.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
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
        self._wanted: list[str] = []  # searched twice, not kept: for the next fetch
        self.fetched = 0  # phrases whose contributions were read from SQLite
        self._lock = threading.Lock()
        self._fetcher: threading.Thread | None = None
        self._fetching: sqlite3.Connection | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._arrays)

    def clear(self) -> None:
        self._arrays.clear()
        self._seen.clear()
        self._wanted.clear()
        self._size = 0

    def _generation_is(self, generation: str) -> None:
        if generation != self.generation:
            self.clear()
            self.generation = generation

    def usable(self, generation: str, phrases: Sequence[str]) -> bool:
        """Whether ``top`` can rank this query: every phrase of it kept.

        Notes the phrases as searched; one searched before and not kept is
        wanted by the next ``fetch_later``. A new generation forgets everything.
        """
        with self._lock:
            self._generation_is(generation)
            if all(p in self._arrays for p in phrases):
                for p in phrases:
                    self._arrays.move_to_end(p)
                return True
            for p in phrases:
                if p in self._seen and p not in self._arrays and p not in self._wanted:
                    self._wanted.append(p)
            if len(self._seen) > 10 * len(self._arrays) + 10_000:
                self._seen.clear()  # bounded (a long-lived process sees many phrases)
            self._seen.update(phrases)
            return False

    def fetch_later(self, connect: Callable[[], sqlite3.Connection]) -> None:
        """Fetch the wanted phrases' contributions in a background thread (one at a time)."""
        with self._lock:
            if self._closed or not self._wanted or self.generation is None:
                return
            if self._fetcher is not None and self._fetcher.is_alive():
                return
            wanted, self._wanted = self._wanted, []
            self._fetcher = threading.Thread(
                target=self._fetch, args=(connect, self.generation, wanted),
                name="sessionctl-phrase-scores", daemon=True,
            )  # fmt: skip
            _live.add(self)
            self._fetcher.start()

    def _fetch(
        self, connect: Callable[[], sqlite3.Connection], generation: str, wanted: list[str]
    ) -> None:
        import sqlite3

        try:
            conn = connect()
        except Exception:  # unreadable, a link, gone: the next search wants them again
            return
        try:
            with self._lock:
                if self._closed:
                    return
                self._fetching = conn
            while wanted:  # then what searches wanted meanwhile
                conn.execute("BEGIN")  # one snapshot: the token and the rows agree
                row = conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
                if row is None or row[0] != generation:
                    return
                for phrase in wanted:
                    ids, scores = _contributions(conn, phrase)
                    with self._lock:
                        if self._closed or self.generation != generation:
                            return
                        self._keep(phrase, ids, scores)
                conn.execute("COMMIT")  # a writer waits for a batch at most
                with self._lock:
                    wanted, self._wanted = self._wanted, []
        except sqlite3.Error:
            return  # interrupted by close(), or busy: nothing half kept
        finally:
            with self._lock:
                self._fetching = None
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def wait(self, timeout: float | None = None) -> None:
        """Until the background fetch (if any) is done."""
        fetcher = self._fetcher
        if fetcher is not None:
            fetcher.join(timeout)

    def close(self) -> None:
        """Stop a fetch in progress and forget everything (a later search starts over)."""
        with self._lock:
            self._closed = True
            if self._fetching is not None:
                self._fetching.interrupt()
        self.wait(5.0)
        with self._lock:
            self.clear()
            self.generation = None
            self._closed = False
        _live.discard(self)

    def top(
        self, conn: sqlite3.Connection, generation: str, phrases: Sequence[str], k: int
    ) -> list[tuple[int, str, int, float]]:
        """The best ``k`` rows for the OR of ``phrases``: (id, session, seq, bm25).

        Ordered as ``ORDER BY bm25(fts), session, seq`` orders them.
        """
        import numpy as np

        with self._lock:
            self._generation_is(generation)
            kept = [self._arrays.get(phrase) for phrase in phrases]
        arrays = [a or self._scores(conn, p) for a, p in zip(kept, phrases, strict=True)]
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
        """A phrase ``top`` found evicted meanwhile: read now, not kept."""
        return _contributions(conn, phrase)

    def _keep(self, phrase: str, ids: Any, scores: Any) -> None:
        self.fetched += 1
        if len(ids) > self.limit or phrase in self._arrays:
            return
        while self._arrays and self._size + len(ids) > self.limit:
            _, (old, _) = self._arrays.popitem(last=False)
            self._size -= len(old)
        self._arrays[phrase] = (ids, scores)
        self._size += len(ids)


def _contributions(conn: sqlite3.Connection, phrase: str) -> tuple[Any, Any]:
    """(row ids, bm25 values) of every row holding ``phrase``, by row id."""
    import numpy as np

    rows = conn.execute(
        "SELECT rowid, bm25(fts) FROM fts WHERE fts MATCH ? ORDER BY rowid", (phrase,)
    ).fetchall()
    ids = np.array([row[0] for row in rows], dtype=np.int64)
    scores = np.array([row[1] for row in rows], dtype=np.float64)
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


_live: weakref.WeakSet[PhraseScores] = weakref.WeakSet()  # with a fetch started


@atexit.register
def _stop_fetches() -> None:  # never leave a thread inside SQLite at exit
    for scores in list(_live):
        scores.close()
