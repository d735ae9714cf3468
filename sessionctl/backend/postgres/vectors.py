"""pgvector message vectors: a :class:`~sessionctl.backend.base.VectorStore` on ``sc_embedding``.

A message's vector exists exactly while the message has the text it was embedded
from: a drop or a purge cascades, an edit (scrub) deletes it in the same
transaction, and a catch-up inserts a vector only if the message still has the text
it embedded (``md5`` checked in the INSERT). So catching up is "embed what has no
vector for this model", and a search is one exact SQL query over every session.

The ``pg_hnsw`` setting opts into approximate search: with it on, a search makes
sure ``sc_embedding`` has an HNSW index for its model (``halfvec_cosine_ops`` on
the vectors cast to the model's dimension, partial on the model: pgvector indexes
only fixed-dimension vectors), runs ``ANALYZE`` so the planner uses it, and asks
for the nearest vectors through it (iterative scan, so the namespace and the
filters still get ``k`` rows). Off (``false``) drops sessionctl's HNSW indexes;
unset leaves the database alone and searches exactly. Building or dropping an
index needs the tables' owner.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sessionctl.backend.base import IndexHit, IndexProgress, SearchFilter
from sessionctl.backend.postgres.rows import MSG_COLS as _MSG_COLS
from sessionctl.backend.postgres.rows import message as _message
from sessionctl.errors import EmbeddingError, SessionNotFound, StoreError
from sessionctl.index.hits import similarity_to_distance, within_threshold
from sessionctl.index.report import SyncReport

if TYPE_CHECKING:
    from sessionctl.backend.postgres.store import PostgresBackend
    from sessionctl.embed import Embedder

BATCH = 64
#: Name prefix of the HNSW indexes sessionctl makes (one per model and dimension).
HNSW_PREFIX = "sc_embedding_hnsw_"
#: Advisory lock held while building or dropping them (processes racing do it once).
HNSW_LOCK = 0x5E55_C7_0002
#: Candidates the HNSW scan keeps (pgvector's ``hnsw.ef_search``); at least 2·k.
EF_SEARCH = 100


def hnsw_index_name(model_id: str, dim: int) -> str:
    """The HNSW index of one embedding model's vectors (its dimension in the name)."""
    return f"{HNSW_PREFIX}{dim}_{_md5(model_id)[:12]}"


def hnsw_indexes(conn: Any) -> list[str]:
    """The HNSW indexes sessionctl made on ``sc_embedding``."""
    rows = conn.execute(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'sc_embedding'"
        " AND starts_with(indexname, %s) ORDER BY indexname",
        (HNSW_PREFIX,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def _check_iterative_scan(conn: Any) -> None:
    """pgvector 0.8 added the iterative index scans a filtered search needs."""
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    version = str(row[0]) if row else "none"
    parts = tuple(int(p) if p.isdigit() else 0 for p in version.split(".")[:2])
    if parts < (0, 8):
        raise StoreError(
            f"pg_hnsw needs pgvector 0.8 or later (this database has {version}):"
            " `ALTER EXTENSION vector UPDATE;` after upgrading it, or leave pg_hnsw unset"
        )


def _owner_only(exc: Exception) -> StoreError:
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return StoreError(
        "only the owner of sessionctl's tables may build or drop the HNSW index"
        f" (pg_hnsw): run one search as that role, or leave pg_hnsw unset ({detail})"
    )


def _vec_text(vec: Any) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in vec) + "]"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()


class PgVectors:
    """The PostgreSQL backend's vector store."""

    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend
        self.skipped: set[str] = set()  # the service reads it (nothing is ever skipped here)
        self.embedded = 0
        self._hnsw_done: set[tuple[str, int] | None] = set()  # checked on this connection

    def _use_hnsw(self, model: str, dim: int) -> bool:
        """Apply the ``pg_hnsw`` setting (once per model per store); True: search through
        the index."""
        import psycopg
        from psycopg import sql

        setting = self.backend.hnsw
        key = None if setting is False else (model, dim)
        if setting is None:
            return False
        if key in self._hnsw_done:
            return bool(setting)
        with self.backend.db.transaction() as conn:
            try:
                if setting is False:
                    for name in hnsw_indexes(conn):
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (HNSW_LOCK,))
                        drop = sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(name))
                        conn.execute(drop)
                else:
                    _check_iterative_scan(conn)
                    name = hnsw_index_name(model, dim)
                    if name not in hnsw_indexes(conn):
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (HNSW_LOCK,))
                        # The graph is built much faster when it fits in memory.
                        conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
                        conn.execute(
                            sql.SQL(
                                "CREATE INDEX IF NOT EXISTS {} ON sc_embedding USING hnsw"
                                " ((vec::halfvec({})) halfvec_cosine_ops) WHERE model_id = {}"
                            ).format(sql.Identifier(name), sql.Literal(dim), sql.Literal(model))
                        )
                        conn.execute("ANALYZE sc_embedding")  # else the planner may ignore it
            except psycopg.errors.InsufficientPrivilege as exc:
                raise _owner_only(exc) from None
        self._hnsw_done.add(key)
        return bool(setting)

    def _targets(self, conn: Any, names: Sequence[str] | None) -> list[tuple[int, str]]:
        ns = self.backend.namespace
        if names is None:
            rows = conn.execute(
                "SELECT id, name FROM sc_session WHERE namespace = %s AND trash_id IS NULL"
                ' ORDER BY name COLLATE "C"',
                (ns,),
            ).fetchall()
        else:
            rows = conn.execute(
                "SELECT id, name FROM sc_session WHERE namespace = %s AND trash_id IS NULL"
                ' AND name = ANY(%s) ORDER BY name COLLATE "C"',
                (ns, list(names)),
            ).fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]

    def catch_up(
        self,
        names: Sequence[str] | None,
        embedder: Embedder,
        *,
        progress: IndexProgress | None = None,
        report: bool = True,
    ) -> list[tuple[str, SyncReport]]:
        """Embed the messages that have no vector for this model yet (``report=False``:
        skip the per-session reports when nothing was missing, for a search)."""
        import numpy as np

        db = self.backend.db
        model = embedder.model_id
        self.embedded = 0
        with db.transaction() as conn:
            # One anti-join: the messages of the wanted live sessions without a vector.
            sql = (
                "SELECT m.session_id, m.seq, m.content, m.content_raw FROM sc_session s"
                " JOIN sc_message m ON m.session_id = s.id"
                " LEFT JOIN sc_embedding e ON e.session_id = m.session_id AND e.seq = m.seq"
                " AND e.model_id = %s WHERE s.namespace = %s AND s.trash_id IS NULL"
                " AND e.seq IS NULL"
            )
            params: list[Any] = [model, self.backend.namespace]
            if names is not None:
                sql += " AND s.name = ANY(%s)"
                params.append(list(names))
            todo_rows = conn.execute(sql + " ORDER BY m.session_id, m.seq", params).fetchall()
            if not report and not todo_rows:
                return []
            targets = self._targets(conn, names)
            totals = dict(
                conn.execute(
                    "SELECT session_id, count(*) FROM sc_message WHERE session_id = ANY(%s)"
                    " GROUP BY session_id",
                    ([sid for sid, _ in targets],),
                ).fetchall()
            )
        by_session: dict[int, list[tuple[int, str]]] = {}
        for sid, seq, content, raw in todo_rows:
            text = content if raw is None else bytes(raw).decode()
            by_session.setdefault(int(sid), []).append((int(seq), text))
        reports: list[tuple[str, SyncReport]] = []
        for sid, name in targets:
            todo = by_session.get(sid, [])
            for start in range(0, len(todo), BATCH):
                chunk = todo[start : start + BATCH]
                out = np.asarray(embedder.embed([t for _, t in chunk]), dtype=np.float32)
                if out.ndim != 2 or out.shape[0] != len(chunk):
                    raise EmbeddingError(
                        f"embedding model returned shape {out.shape} for {len(chunk)} texts"
                    )
                with db.transaction() as conn:
                    conn.execute(
                        "INSERT INTO sc_embedding (session_id, seq, model_id, vec)"
                        " SELECT m.session_id, m.seq, %s, u.vec::halfvec FROM sc_message m"
                        " JOIN unnest(%s::bigint[], %s::text[], %s::text[]) AS u(seq, md5, vec)"
                        " ON u.seq = m.seq WHERE m.session_id = %s AND md5(convert_to("
                        "COALESCE(convert_from(m.content_raw, 'UTF8'), m.content), 'UTF8'))"
                        " = u.md5 ON CONFLICT DO NOTHING",
                        (
                            model,
                            [s for s, _ in chunk],
                            [_md5(t) for _, t in chunk],
                            [_vec_text(v) for v in out],
                            sid,
                        ),
                    )
                self.embedded += len(chunk)
                if progress is not None:
                    progress(name, min(start + BATCH, len(todo)), len(todo))
            reports.append((name, SyncReport(added=len(todo), removed=0,
                                             total=int(totals.get(sid, 0)))))  # fmt: skip
        return reports

    def rebuild(
        self,
        names: Sequence[str] | None,
        embedder: Embedder,
        *,
        progress: IndexProgress | None = None,
    ) -> list[tuple[str, SyncReport]]:
        """Drop the vectors of ``names`` (every model) and embed them again."""
        with self.backend.db.transaction() as conn:
            targets = self._targets(conn, names)
            conn.execute(
                "DELETE FROM sc_embedding WHERE session_id = ANY(%s)",
                ([sid for sid, _ in targets],),
            )
        return self.catch_up(names, embedder, progress=progress)

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
        """One exact query: cosine distance, filters in SQL, sorted (distance, session, seq)."""
        import numpy as np

        if mode != "vector":
            raise StoreError(f"search mode {mode!r} is not supported by the PostgreSQL backend yet")
        where = where or SearchFilter()
        if k <= 0:
            return []
        query = np.asarray(query_vec, dtype=np.float32).reshape(-1)
        self.catch_up(where.names, embedder, report=False)
        approximate = self._use_hnsw(embedder.model_id, int(query.shape[0]))
        cols = ", ".join(f"m.{c.strip()}" for c in _MSG_COLS.split(","))
        if approximate:
            # The index's expression and predicate, literally (a partial index is used
            # only when the planner can prove its predicate from the query's).
            dim, model = int(query.shape[0]), embedder.model_id.replace("'", "''")
            dist = f"(e.vec::halfvec({dim}) <=> %s::halfvec({dim}))"
            model_term = f"e.model_id = '{model}'"
        else:
            dist, model_term = "(e.vec <=> %s::halfvec)", "e.model_id = %s"
        sql = (
            "SELECT s.name AS session_name, " + dist + " AS d, " + cols + " FROM sc_embedding e"
            " JOIN sc_message m ON m.session_id = e.session_id AND m.seq = e.seq"
            " JOIN sc_session s ON s.id = e.session_id"
            " WHERE s.namespace = %s AND s.trash_id IS NULL AND " + model_term
        )
        vec = _vec_text(query)
        params: list[Any] = [vec, self.backend.namespace]
        if not approximate:
            params.append(embedder.model_id)
        by_message = where.roles is not None or where.since or where.until or where.metadata
        if not approximate and not by_message:
            # Rank the embeddings alone and read only the k messages found: joining every
            # message before the sort cost most of the query. Exact all the same: every
            # embedding has its message (a foreign key, on delete cascade).
            sql = (
                "SELECT hit.session_name, hit.d, " + cols + " FROM ("
                "SELECT s.name AS session_name, e.session_id, e.seq, " + dist + " AS d"
                " FROM sc_embedding e JOIN sc_session s ON s.id = e.session_id"
                " WHERE s.namespace = %s AND s.trash_id IS NULL AND "
                + model_term
                + _filters(where, params)
                + ' ORDER BY d, s.name COLLATE "C", e.seq LIMIT %s) hit'
                " JOIN sc_message m ON m.session_id = hit.session_id AND m.seq = hit.seq"
                ' ORDER BY hit.d, hit.session_name COLLATE "C", hit.seq'
            )
            params.append(k)
        elif approximate:
            sql += _filters(where, params)
            # The k nearest through the index, then ties ordered as the exact search does.
            sql = (
                "SELECT * FROM (" + sql + " ORDER BY " + dist + " LIMIT %s) hit"
                ' ORDER BY d, session_name COLLATE "C", seq'
            )
            params += [vec, k]
        else:
            sql += _filters(where, params)
            sql += ' ORDER BY d, s.name COLLATE "C", m.seq LIMIT %s'
            params.append(k)
        with self.backend.db.transaction() as conn:
            if approximate:
                conn.execute("SELECT set_config('hnsw.ef_search', %s, true)",
                             (str(max(EF_SEARCH, 2 * k)),))  # fmt: skip
                conn.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
            rows = conn.execute(sql, params).fetchall()
        hits = []
        for row in rows:
            if row[1] is None or row[1] != row[1]:  # NaN: a zero vector
                continue
            distance = similarity_to_distance(1.0 - float(row[1]))
            if within_threshold(distance, max_distance):
                hits.append(IndexHit(str(row[0]), int(row[2]), distance, _message(row[2:])))
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
        """``name``'s nearest messages: no index per session here, the one query scoped to it."""
        where = SearchFilter(names=[name], roles=roles)
        hits = self.search(query_vec, embedder, k=k, max_distance=max_distance, where=where)
        if not hits and not self.backend.exists(name):
            raise SessionNotFound(f"no session named {name!r} (see `sessionctl list`)")
        return hits

    def rebuild_session(
        self, name: str, embedder: Embedder, *, progress: IndexProgress | None = None
    ) -> SyncReport:
        """Drop ``name``'s vectors and embed them again."""
        reports = dict(self.rebuild([name], embedder, progress=progress))
        if name not in reports and not self.backend.exists(name):
            raise SessionNotFound(f"no session named {name!r} (see `sessionctl list`)")
        return reports.get(name, SyncReport(added=0, removed=0, total=0))

    def text_search(
        self, query: str, *, k: int, where: SearchFilter | None = None
    ) -> list[IndexHit]:
        """Keyword matches by PostgreSQL full-text search (the ``simple`` configuration:
        words lower-cased, no stemming, no stop words), any query word matching,
        ranked by ``ts_rank_cd``; computed per query (no stored index yet), so its cost
        grows with the messages searched. Ties by session, then seq."""
        import re

        from sessionctl.backend.files.keywords import STOPWORDS, count_identifiers, identifiers

        where = where or SearchFilter()
        words = re.findall(r"\w+", query)
        # Common words alone would match nearly everything: dropped, as the file
        # backend's keyword index drops them (unless the query has nothing else).
        telling = [w for w in words if len(w) > 1 and w.casefold() not in STOPWORDS]
        terms = " ".join(telling or words)
        if k <= 0 or not terms:
            return []
        cols = ", ".join(f"m.{c.strip()}" for c in _MSG_COLS.split(","))
        sql = (
            "WITH q AS (SELECT NULLIF(replace(plainto_tsquery('simple', %s)::text, '&', '|'),"
            " '')::tsquery AS q)"
            " SELECT s.name, ts_rank_cd(to_tsvector('simple', m.content), q.q) AS score, "
            + cols
            + " FROM q, sc_message m JOIN sc_session s ON s.id = m.session_id"
            " WHERE q.q IS NOT NULL AND s.namespace = %s AND s.trash_id IS NULL"
            " AND to_tsvector('simple', m.content) @@ q.q"
        )
        params: list[Any] = [terms, self.backend.namespace]
        sql += _filters(where, params)
        sql += ' ORDER BY score DESC, s.name COLLATE "C", m.seq LIMIT %s'
        params.append(k)
        with self.backend.db.transaction() as conn:
            rows = conn.execute(sql, params).fetchall()
        wanted = identifiers(query)
        hits = []
        for rank, row in enumerate(rows, start=1):
            message = _message(row[2:])
            sources = {
                "text": {
                    "rank": rank,
                    "score": float(row[1]),
                    "identifiers": count_identifiers(wanted, message.content),
                }
            }
            hits.append(IndexHit(str(row[0]), message.seq, None, message, sources))
        return hits


def _filters(where: SearchFilter, params: list[Any]) -> str:
    """The WHERE terms of a search's filters (``s``: sessions, ``m``: messages); their
    values are appended to ``params`` in order."""
    sql = ""
    if where.names is not None:
        sql += " AND s.name = ANY(%s)"
        params.append(list(where.names))
    if where.roles is not None:
        sql += " AND m.role = ANY(%s)"
        params.append(sorted(where.roles))
    if where.since:
        sql += " AND m.created_at >= %s"
        params.append(where.since)
    if where.until:
        sql += " AND m.created_at <= %s"
        params.append(where.until)
    for key, value in (where.metadata or {}).items():
        from psycopg.types.json import Jsonb

        sql += " AND m.metadata -> %s = %s"
        params += [key, Jsonb(value)]
    return sql


if TYPE_CHECKING:
    from sessionctl.backend.base import VectorStore

    def _conforms(index: PgVectors) -> VectorStore:
        return index
