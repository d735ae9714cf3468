"""Hybrid search: its cost against the vector-only query measured in the same run.

- in-process, 100k messages: service search(mode="hybrid") vs mode="vector",
  the same query again and again, then a new query each time
  (both embed the query with the real model; the vector index is filled with
  random unit vectors under the default model's id, as bench_storeindex.py);
- in-process, keyword only, 1M messages: the text_search of the file backend
  (a rare identifier, and a word in 1 message of 100), each the same query
  searched again (a phrase's BM25 scores are kept from its second search on,
  docs/index.md) and, for the word, a new word each time;
- fresh process: `relevant --mode hybrid` vs `relevant --mode vector`;
- the keyword index's build cost per message (catch-up from the transcripts).

    python bench/bench_hybrid.py [--big 100000] [--text 1000000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_storeindex import RandomVectors
from common import TempHome, bench_env, interleaved_medians, precompile, sessionctl_argv

from sessionctl import Store
from sessionctl.service.memory import search


def fill(home: Path, messages: int, sessions: int) -> Store:
    store = Store(home)
    per = messages // sessions
    for i in range(sessions):
        store.session(f"s{i:05d}").add_messages(
            [
                {
                    "role": "user",
                    "content": f"session {i} note {j} about topic{(i * per + j) % 100}"
                    f" ref ID{i * per + j:07d}",
                }
                for j in range(per)
            ]
        )
    return store


def timed(fn: object, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--text", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    precompile()
    query = "what happened with ID0004242 and topic7?"
    with TempHome() as home:
        store = fill(home, args.big, 100)
        store.backend.vectors.catch_up(None, RandomVectors())
        t = time.perf_counter()
        store.backend.vectors.text_search("warm", k=1)
        built = time.perf_counter() - t
        print(f"keyword index build: {args.big} messages in {built:.1f} s,"
              f" {built / args.big * 1e6:.0f} us per message")  # fmt: skip
        for mode in ("vector", "hybrid"):
            search(store, query, top_k=5, mode=mode)  # warm: model, mmap, sqlite pages
        vec, hyb = [], []
        for _ in range(args.runs * 4):  # in turns
            vec.append(timed(lambda: search(store, query, top_k=5, mode="vector"), 1))
            hyb.append(timed(lambda: search(store, query, top_k=5, mode="hybrid"), 1))
        v, h = statistics.median(vec), statistics.median(hyb)
        print(f"in-process, {args.big} messages, the same query: vector {v:.1f} ms,"
              f" hybrid {h:.1f} ms, ratio {h / v:.2f}x")  # fmt: skip
        # A new query each time (another id, another topic word): nothing kept for it.
        queries = [
            f"what happened with ID{n * 977:07d} and topic{n}?" for n in range(args.runs * 4)
        ]
        vec, hyb = [], []
        for q in queries:  # in turns, each query's first search in each mode
            vec.append(timed(lambda q=q: search(store, q, top_k=5, mode="vector"), 1))
            hyb.append(timed(lambda q=q: search(store, q, top_k=5, mode="hybrid"), 1))
        v, h = statistics.median(vec), statistics.median(hyb)
        print(f"in-process, {args.big} messages, new queries: vector {v:.1f} ms,"
              f" hybrid {h:.1f} ms, ratio {h / v:.2f}x")  # fmt: skip
        cli = sessionctl_argv()
        env = bench_env(home)
        argv = [*cli, "relevant", query, "-k", "5", "--json"]
        fresh_v, fresh_h = interleaved_medians(
            [[*argv, "--mode", "vector"], [*argv, "--mode", "hybrid"]], runs=args.runs, env=env
        )
        print(f"fresh process, {args.big} messages: vector {fresh_v:.0f} ms,"
              f" hybrid {fresh_h:.0f} ms, ratio {fresh_h / fresh_v:.2f}x")  # fmt: skip
    with TempHome() as home:
        t = time.perf_counter()
        store = fill(home, args.text, 1000)
        wrote = time.perf_counter() - t
        t = time.perf_counter()
        store.backend.vectors.text_search("warm", k=1)
        built = time.perf_counter() - t
        print(f"{args.text} messages: transcripts {wrote:.0f} s, keyword index {built:.0f} s"
              f" ({built / args.text * 1e6:.0f} us per message)")  # fmt: skip
        index = store.backend.vectors
        for label, q in (("rare identifier", "ID0424242"), ("word in 1% of messages", "topic7")):
            index.text_search(q, k=5)
            ms = timed(lambda q=q: index.text_search(q, k=5), args.runs * 4)
            print(f"  text-only over {args.text}, {label}, searched before: p50 {ms:.1f} ms")
        fresh = [f"topic{n}" for n in range(20, 20 + args.runs * 4)]  # each searched once
        ms = statistics.median(timed(lambda q=q: index.text_search(q, k=5), 1) for q in fresh)
        print(f"  text-only over {args.text}, word in 1% of messages, new: p50 {ms:.1f} ms")


if __name__ == "__main__":
    main()
