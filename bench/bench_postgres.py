"""The PostgreSQL backend next to the file backend, in the same run, in-process.

Builds the same store twice (N sessions of 2 messages each, through each backend's
``create``), then times on both, taking turns: ``add`` (one message appended to an
existing session), ``recent -k 5``, ``list --limit 20`` and a cross-session exact
``relevant`` over every message (the first, which embeds everything, is not timed).
The server is a local PostgreSQL 18 + pgvector from tests/local_postgres.py (fsync off,
like the file store's tmp dir here: both measure the code, not the disk).

    python bench/bench_postgres.py [--sessions 10000] [--runs 50]

``--vectors N`` times cross-session vector search instead, exact against the
opt-in HNSW index (``pg_hnsw``), in the same run: N stored vectors (in sessions of
100 messages) drawn around 1,000 random centres (clusters, so "nearest" means
something), written straight into the tables, and queries that are perturbed copies
of stored vectors. It reports the median latency of the store's vector search (its
catch-up check included, the query's embedding excluded: it is the same for both),
the catch-up check alone, the index build, and recall@10 of HNSW against exact.

    python bench/bench_postgres.py --vectors 100000 --runs 100
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from sessionctl import Store  # noqa: E402
from sessionctl.backend.base import SessionHeader  # noqa: E402
from sessionctl.config import load_settings  # noqa: E402
from sessionctl.ids import new_ulid  # noqa: E402
from sessionctl.models import Message  # noqa: E402
from sessionctl.timeutil import now_iso  # noqa: E402

TOPICS = "deploy cats ferry sourdough taxes garden chess rust jazz cycling".split()


def fill(store: Store, sessions: int) -> None:
    now = now_iso()
    for i in range(sessions):
        topic = TOPICS[i % len(TOPICS)]
        messages = [
            Message(new_ulid(), 1, "user", f"question {i} about {topic}", now),
            Message(new_ulid(), 2, "assistant", f"answer {i}: {topic} is fine", now),
        ]
        store.backend.create(f"s{i:05d}", SessionHeader(new_ulid(), now, now), messages)


def timed(fn: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def fill_vectors(
    url: str | None, n: int, model_id: str, dim: int = 384, *, seed: int = 14, offset: int = 0
) -> Any:
    """``n`` messages with clustered unit vectors in namespace ``b``; returns the vectors
    (``url`` None: only returns them; ``offset``: skip that many draws first)."""
    import io

    import numpy as np
    import psycopg

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    which = rng.integers(0, len(centres), offset + n)[offset:]
    noise = np.random.default_rng((seed, offset, 1)).standard_normal((n, dim)).astype(np.float32)
    vecs = centres[which] + 0.7 * noise
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    if url is None:
        return vecs
    per = 100
    sessions = (n + per - 1) // per
    now = now_iso()
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO sc_session (namespace, name, uid, created_at, updated_at,"
            " last_active_ns, high_seq, live_count) SELECT 'b', 's' || lpad(i::text, 6, '0'),"
            " 'u' || i, %s, %s, i, %s, %s FROM generate_series(1, %s) i",
            (now, now, per, per, sessions),
        )
        conn.execute(
            "INSERT INTO sc_message (session_id, seq, id, role, content, created_at)"
            " SELECT s.id, g, s.id || '-' || g, 'user', 'message ' || s.id || '-' || g, %s"
            " FROM sc_session s, generate_series(1, %s) g WHERE s.namespace = 'b'",
            (now, per),
        )
        ids = [r[0] for r in conn.execute(
            "SELECT id FROM sc_session WHERE namespace = 'b' ORDER BY id").fetchall()]  # fmt: skip
        text = io.StringIO()
        np.savetxt(text, vecs, fmt="%.4f", delimiter=",")
        lines = text.getvalue().splitlines()
        with conn.cursor().copy(
            "COPY sc_embedding (session_id, seq, model_id, vec) FROM STDIN"
        ) as copy:
            for i, line in enumerate(lines):
                copy.write_row((ids[i // per], i % per + 1, model_id, f"[{line}]"))
        conn.execute(
            "DELETE FROM sc_message m WHERE NOT EXISTS (SELECT 1 FROM sc_embedding e"
            " WHERE e.session_id = m.session_id AND e.seq = m.seq)"
        )  # a last, partly filled session
        conn.execute("ANALYZE")
    return vecs


def vector_bench(url: str, home: Path, n: int, runs: int) -> None:
    import numpy as np
    import psycopg

    from sessionctl.embed import get_embedder

    embedder = get_embedder()
    stores = {
        mode: Store(settings=load_settings(home=home, store=url, namespace="b", pg_hnsw=on))
        for mode, on in (("exact", None), ("hnsw", True))
    }
    stores["exact"].list_sessions()  # creates the tables
    start = time.perf_counter()
    vecs = fill_vectors(url, n, embedder.model_id)
    print(f"stored {n} vectors in {time.perf_counter() - start:.1f} s", flush=True)
    rng = np.random.default_rng(15)
    queries = vecs[rng.integers(0, len(vecs), runs)]
    queries = queries + 0.05 * rng.standard_normal(queries.shape).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    # Harder: fresh points around the centres (their 10 nearest are near-ties).
    fresh = fill_vectors(None, runs, embedder.model_id, seed=14, offset=n)

    def search(mode: str, q: Any) -> list[tuple[str, int]]:
        hits = stores[mode].backend.vectors.search(q, embedder, k=10, max_distance=2.0)
        return [(h.session, h.seq) for h in hits]

    start = time.perf_counter()
    search("hnsw", queries[0])  # builds the index and ANALYZEs
    print(f"HNSW index built (first search) in {time.perf_counter() - start:.1f} s", flush=True)
    found: dict[str, list[list[tuple[str, int]]]] = {"exact": [], "hnsw": []}
    times: dict[str, list[float]] = {"exact": [], "hnsw": []}
    for q in queries:  # taking turns, so both see the same load
        for mode in ("exact", "hnsw"):
            t0 = time.perf_counter()
            found[mode].append(search(mode, q))
            times[mode].append((time.perf_counter() - t0) * 1000)
    from sessionctl.backend.postgres.vectors import PgVectors

    pg_vectors = stores["exact"].backend.vectors
    assert isinstance(pg_vectors, PgVectors), "this part measures the PostgreSQL backend"
    catch_up = timed(lambda: pg_vectors.catch_up(None, embedder, report=False), runs)

    def recall(hnsw: list[list[tuple[str, int]]], exact: list[list[tuple[str, int]]]) -> float:
        pairs = zip(hnsw, exact, strict=True)
        return statistics.mean(len(set(a) & set(e)) / len(e) for a, e in pairs)

    # The ranking query alone (nothing to catch up: the check is skipped), and the
    # harder queries' recall.
    alone: dict[str, list[float]] = {"exact": [], "hnsw": []}
    hard: dict[str, list[list[tuple[str, int]]]] = {"exact": [], "hnsw": []}
    for store in stores.values():
        store.backend.vectors.catch_up = lambda *a, **kw: []  # type: ignore[method-assign]
    for q, f in zip(queries, fresh, strict=True):
        for mode in ("exact", "hnsw"):
            t0 = time.perf_counter()
            search(mode, q)
            alone[mode].append((time.perf_counter() - t0) * 1000)
            hard[mode].append(search(mode, f))
    with psycopg.connect(url) as conn:
        scans = conn.execute(
            "SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_indexes"
            " WHERE indexrelname LIKE 'sc_embedding_hnsw_%'"
        ).fetchone()
    print(f"\n{n} vectors, k=10, {runs} queries (median ms):")
    print(f"  exact search            {statistics.median(times['exact']):8.2f}")
    print(f"  HNSW search             {statistics.median(times['hnsw']):8.2f}"
          f"   (index scans: {scans[0] if scans else 0})")  # fmt: skip
    print(f"  catch-up check alone    {catch_up:8.2f}   (in both figures above)")
    print(f"  exact ranking query     {statistics.median(alone['exact']):8.2f}   (no catch-up)")
    print(f"  HNSW ranking query      {statistics.median(alone['hnsw']):8.2f}   (no catch-up)")
    print(f"  HNSW recall@10          {recall(found['hnsw'], found['exact']):8.3f}"
          "   (queries: stored vectors, slightly perturbed)")  # fmt: skip
    print(f"  HNSW recall@10          {recall(hard['hnsw'], hard['exact']):8.3f}"
          "   (queries: new points around the centres)")  # fmt: skip
    for store in stores.values():
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--vectors", type=int, default=0, help="time vector search instead")
    args = parser.parse_args()

    import local_postgres

    if args.vectors:
        pg_root = Path(tempfile.mkdtemp(prefix="sessionctl-pg-bench-"))
        server = local_postgres.start(pg_root)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                vector_bench(server.database(), Path(tmp), args.vectors, args.runs)
        finally:
            local_postgres.stop(server)
            import shutil

            shutil.rmtree(pg_root, ignore_errors=True)
        return

    with tempfile.TemporaryDirectory() as tmp:
        pg_root = Path(tempfile.mkdtemp(prefix="sessionctl-pg-bench-"))
        server = local_postgres.start(pg_root)
        try:
            url = server.database()
            stores = {
                "files": Store(settings=load_settings(home=Path(tmp) / "home")),
                "postgres": Store(
                    settings=load_settings(home=Path(tmp) / "pg", store=url, namespace="b")
                ),
            }
            for name, store in stores.items():
                start = time.perf_counter()
                fill(store, args.sessions)
                print(f"{name}: built {args.sessions} sessions in "
                      f"{time.perf_counter() - start:.1f} s", flush=True)  # fmt: skip
            for store in stores.values():
                start = time.perf_counter()
                store.get_relevant("how do I deploy", top_k=5)  # embeds everything once
                print(f"first relevant (embeds {2 * args.sessions}): "
                      f"{time.perf_counter() - start:.1f} s", flush=True)  # fmt: skip
            ops: dict[str, Callable[[Store], object]] = {
                "add": lambda s: s.session("s00042").add_message(
                    {"role": "user", "content": "one more"}
                ),
                "recent -k 5": lambda s: s.session("s00042").get_recent(top_k=5),
                "list --limit 20": lambda s: s.list_sessions(limit=20),
                "relevant (all sessions)": lambda s: s.get_relevant("when is the ferry", top_k=5),
            }
            print(f"\n{'op':26} {'files ms':>10} {'postgres ms':>12}   (median of {args.runs})")
            for op, fn in ops.items():
                row = {name: timed(functools.partial(fn, store), args.runs)
                       for name, store in stores.items()}  # fmt: skip
                print(f"{op:26} {row['files']:10.2f} {row['postgres']:12.2f}", flush=True)
            for store in stores.values():
                store.close()
        finally:
            local_postgres.stop(server)
            import shutil

            shutil.rmtree(pg_root, ignore_errors=True)


if __name__ == "__main__":
    main()
