"""Semantic memory at 1k / 10k / 100k messages: catch-up, fresh-process `relevant`,
and in-process query latency, beside baselines measured in the same run.

"query" is the bare search of the session's FAISS index; "seam call" is what the
service pays per `relevant -s` on top of embedding the query: the backend's
``VectorStore.search_session`` (lock, freshness stamp, search, messages by seq).

Baselines: a bare Typer app (process start-up) and loading the embedding
model alone in a fresh process.

    python bench/bench_relevant.py [--sizes 1000,10000,100000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    TempHome,
    bare_app,
    bench_env,
    files_vectors,
    interleaved_medians,
    precompile,
    sessionctl_argv,
)

from sessionctl import Store
from sessionctl.service.memory import embedder_for

TOPICS = [
    "the deploy moved to {d} because the database migration is not ready",
    "my favourite colour is {c} and I like it for the kitchen",
    "can you summarise the meeting notes from {d} about the budget",
    "the flight to {c} leaves early, remember to pack the charger",
    "we decided to rewrite the parser in rust after the {d} review",
    "please remind me to call the dentist on {d} afternoon",
]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday"]
COLOURS = ["blue", "green", "red", "teal", "amber", "violet"]


def chat_text(i: int) -> str:
    topic = TOPICS[i % len(TOPICS)]
    return f"{topic.format(d=DAYS[i % 5], c=COLOURS[i % 6])} (note {i})"


MODEL_LOAD = """
import time
from sessionctl.embed import get_embedder
get_embedder(None).embed(["warm up"])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    precompile()
    cli = sessionctl_argv()
    with TempHome() as home:
        env = bench_env(home)
        load_argv = [sys.executable, "-c", MODEL_LOAD]
        bare, load = interleaved_medians([bare_app(home), load_argv], runs=args.runs, env=env)
        print(f"baseline: bare Typer app {bare:.0f} ms; model load alone {load:.0f} ms")
        store = Store(home)
        embedder = embedder_for(store)
        vectors = files_vectors(store)
        header = (
            f"{'messages':>9} {'catch-up':>12} {'relevant (fresh)':>17} {'- load':>8} {'query':>9}"
            f" {'seam call':>10}"
        )
        print(header)
        for size in sizes:
            name = f"s{size}"
            session = store.session(name)
            session.add_messages([{"role": "user", "content": chat_text(i)} for i in range(size)])
            start = time.perf_counter()
            vectors.sessions.catch_up(name, embedder)
            rate = size / (time.perf_counter() - start)
            argv = [*cli, "relevant", "what colour do I like?", "-s", name, "-k", "5", "--json"]
            # Paired with the model load, taking turns: the ratio is of the same moments.
            fresh, load = interleaved_medians([argv, load_argv], runs=args.runs, env=env)
            index = vectors.sessions.index(name)
            query = embedder.embed(["what colour do I like?"])[0]
            index.search(query, 5)  # load once
            times = []
            for _ in range(50):
                t = time.perf_counter()
                index.search(query, 5)
                times.append((time.perf_counter() - t) * 1000)
            calls = []
            for _ in range(50):
                t = time.perf_counter()
                store.backend.vectors.search_session(name, query, embedder, k=5, max_distance=2.0)
                calls.append((time.perf_counter() - t) * 1000)
            print(
                f"{size:>9} {rate:>8.0f} m/s {fresh:>14.0f} ms {fresh - load:>5.0f} ms"
                f" {statistics.median(times):>6.2f} ms {statistics.median(calls):>7.2f} ms"
                f"   (fresh = {fresh / bare:.1f}x bare, {fresh / load:.2f}x model load)"
            )


if __name__ == "__main__":
    main()
