"""The store-wide index: `relevant` across 1,000 and 10,000 sessions in a fresh process,
an in-process query at 100k messages, and one `relevant` after one append at 100k.

Baseline, measured in the same run and taken in turns with what it is compared
to: loading the embedding model alone in a fresh process (the least any
`relevant` must pay). The index is filled with random unit vectors under the
default model's id (embedding 100k real texts would take ten minutes here);
transcripts, journal, rows and vectors are real files, and the query and the
appended message are embedded by the real model.

    python bench/bench_storeindex.py [--sessions 1000,10000] [--per 5] [--runs 5]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from common import (
    TempHome,
    bench_env,
    files_vectors,
    interleaved_medians,
    precompile,
    sessionctl_argv,
)

from sessionctl import Store
from sessionctl.backend.base import SearchFilter
from sessionctl.embed import DEFAULT_MODEL_ID
from sessionctl.service.memory import embedder_for

MODEL_LOAD = """
from sessionctl.embed import get_embedder
get_embedder(None).embed(["warm up"])
"""


class RandomVectors:
    """Random unit vectors under the default model's id (fills the index fast)."""

    model_id = DEFAULT_MODEL_ID
    dimension = 384
    default_distance_threshold = 0.7

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256("".join(texts).encode()).digest()[:8], "little")
        vecs = np.random.default_rng(seed).standard_normal((len(texts), self.dimension))
        unit: np.ndarray = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
        return unit


def fill(home: Path, sessions: int, per: int) -> Store:
    store = Store(home)
    for i in range(sessions):
        store.session(f"s{i:05d}").add_messages(
            [
                {"role": "user", "content": f"session {i} note {j} about topic {i * j % 97}"}
                for j in range(per)
            ]
        )
    store.backend.vectors.catch_up(None, RandomVectors())
    return store


def index_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in (home / "index").iterdir())


def wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", default="1000,10000")
    parser.add_argument("--per", type=int, default=5, help="messages per session")
    parser.add_argument("--big", type=int, default=100_000, help="messages for the 100k rows")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    precompile()
    cli = sessionctl_argv()
    load_argv = [sys.executable, "-c", MODEL_LOAD]
    print("relevant across all sessions, fresh process (index current):")
    for count in [int(s) for s in args.sessions.split(",")]:
        with TempHome() as home:
            start = time.perf_counter()
            fill(home, count, args.per)
            built = time.perf_counter() - start
            env = bench_env(home)
            argv = [*cli, "relevant", "what colour do I like?", "-k", "5", "--json"]
            fresh, load = interleaved_medians([argv, load_argv], runs=args.runs, env=env)
            print(
                f"  {count:>6} sessions ({count * args.per} messages, index"
                f" {index_bytes(home) / 1e6:.1f} MB, filled in {built:.1f} s):"
                f" relevant {fresh:.0f} ms, model load alone {load:.0f} ms,"
                f" ratio {fresh / load:.2f}x (+{fresh - load:.0f} ms)"
            )
    with TempHome() as home:
        sessions = 100
        store = fill(home, sessions, args.big // sessions)
        real = embedder_for(store)
        index = files_vectors(store)
        query = real.embed(["what colour do I like?"])[0]
        everything = SearchFilter()
        index.search(query, real, k=5, max_distance=2.0, where=everything)  # map once
        times = []
        for _ in range(50):
            t = time.perf_counter()
            index.search(query, real, k=5, max_distance=2.0, where=everything)
            times.append((time.perf_counter() - t) * 1000)
        size = index_bytes(home)
        print(
            f"in-process query, {args.big} messages in {sessions} sessions:"
            f" p50 {statistics.median(times):.2f} ms (index {size / 1e6:.1f} MB)"
        )
        store.session("s00042").add_message({"role": "user", "content": "I like teal best."})
        before = wchar()
        t = time.perf_counter()
        hits = index.search(
            real.embed(["which colour do I like best?"])[0],
            real,
            k=1,
            max_distance=2.0,
            where=everything,
        )
        took = (time.perf_counter() - t) * 1000
        written = wchar() - before
        assert hits and hits[0].message.content == "I like teal best.", hits
        print(
            f"one relevant after one append at {args.big}: {took:.0f} ms in process"
            f" (embedding the message included), {written} bytes written"
            f" ({index.bytes_written} by the index) = {written / size:.2e} of the index"
        )


if __name__ == "__main__":
    main()
