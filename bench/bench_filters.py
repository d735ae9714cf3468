"""Search filters (--since/--until, --meta, --model): their cost against the same
search unfiltered, measured in turns in the same run.

In-process ``search`` over N messages in 100 sessions (the vector index filled
with random unit vectors under the default model's id, as bench_storeindex.py;
the query is embedded by the real model; random vectors are far from it, so the
threshold is 2.0, every message), hybrid and vector:

- unfiltered (the baseline);
- a window holding the later half of the messages (``since``);
- ``meta`` matching 1 message in 100, and matching 1 message of all (the target
  deep in the ranking: the lists are fetched deeper until it is found).

    python bench/bench_filters.py [--messages 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_storeindex import RandomVectors
from common import TempHome, precompile

from sessionctl import Store
from sessionctl.service.memory import search
from sessionctl.service.timefilter import criteria


def fill(home: Path, messages: int, sessions: int) -> tuple[Store, datetime]:
    store = Store(home)
    per = messages // sessions
    middle = datetime.now(timezone.utc)
    for i in range(sessions):
        if i == sessions // 2:
            time.sleep(0.01)
            middle = datetime.now(timezone.utc)
        store.session(f"s{i:05d}").add_messages(
            [
                {
                    "role": "user",
                    "content": f"session {i} note {j} about topic{(i * per + j) % 100}",
                    "metadata": {"team": "core" if j % 100 == 0 else "other", "n": i * per + j},
                }
                for j in range(per)
            ]
        )
    return store, middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    precompile()
    query = "what was the note about topic7?"
    with TempHome() as home:
        store, middle = fill(home, args.messages, 100)
        store.backend.vectors.catch_up(None, RandomVectors())
        cases = {
            "unfiltered": None,
            "since (half inside)": criteria(since=middle),
            "meta, 1 in 100": criteria(meta={"team": "core"}),
            "meta, 1 of all": criteria(meta={"n": args.messages // 3}),
        }
        for mode in ("hybrid", "vector"):
            for where in cases.values():
                search(
                    store, query, top_k=5, mode=mode, where=where, distance_threshold=2.0
                )  # warm
            times: dict[str, list[float]] = {label: [] for label in cases}
            for _ in range(args.runs):
                for label, where in cases.items():
                    t = time.perf_counter()
                    found = search(
                        store, query, top_k=5, mode=mode, where=where, distance_threshold=2.0
                    )
                    times[label].append((time.perf_counter() - t) * 1000)
                    assert found, label
            base = statistics.median(times["unfiltered"])
            for label, samples in times.items():
                ms = statistics.median(samples)
                print(f"{mode:6} {label:20} {ms:8.1f} ms  {ms / base:5.2f}x")


if __name__ == "__main__":
    main()
