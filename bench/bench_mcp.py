"""`sessionctl mcp`: cold start, and warm search_history / recent at N messages.

- cold start: from spawning ``sessionctl mcp`` (stdio) to the answer to the first
  ``list_tools``, through the real SDK client, against the baseline of loading
  the embedding model alone (a fresh ``python`` that loads it and embeds one
  text), alternated in the same run; target: at most 1.0 s.
- warm calls at N messages (1000 sessions; the vector index filled with random
  unit vectors under the default model's id, as bench_storeindex.py; queries
  are embedded by the real model): ``search_history`` (hybrid, k 5) and
  ``recent`` (k 10), timed server-side (``Memory.call``: what the server runs
  for a tools/call, without the JSON-RPC framing) and as a round trip through
  the SDK client over stdio; targets: search at most 20 ms, recent 5 ms
  server-side. The common-words queries (3 words of a ~100-word vocabulary and
  a rare id) are each timed at their first, second and third search (a
  phrase's BM25 contributions are fetched and kept at its second search in one
  state of the index, docs/index.md); "after a
  write" is a search right after one appended message, which every index
  catches up first (the new message embedded by the real model) and which
  drops the kept scores.

    python bench/bench_mcp.py [--messages 100000] [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_storeindex import RandomVectors
from common import REPO, WORDS, TempHome, precompile

from sessionctl import Store

LOAD_MODEL = (
    "from sessionctl import Store\n"
    "from sessionctl.service.memory import embedder_for\n"
    "embedder_for(Store()).embed(['warm up'])\n"
)


def env(home: Path) -> dict[str, str]:
    return {**os.environ, "SESSIONCTL_HOME": str(home), "PYTHONPATH": str(REPO)}


def cold_start(home: Path) -> float:
    import anyio
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable, args=["-m", "sessionctl", "mcp"], env=env(home), cwd=str(REPO)
    )

    async def main() -> float:
        start = time.perf_counter()
        async with Client(params) as client:
            await client.list_tools()
            return time.perf_counter() - start

    return anyio.run(main)


def model_alone(home: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", LOAD_MODEL], env=env(home), check=True)
    return time.perf_counter() - start


def fill(home: Path, messages: int, sessions: int = 1000) -> None:
    store = Store(home)
    per = max(1, messages // sessions)
    for i in range(sessions):
        store.session(f"s{i:05d}").add_messages(
            [
                {
                    "role": "user" if j % 2 == 0 else "assistant",
                    "content": " ".join(
                        WORDS[(i * 7 + j * 13 + w * w) % len(WORDS)]
                        for w in range(6 + (i * 7 + j * 3) % 25)  # 6-30 words, as chat varies
                    )
                    + f" E{i * per + j}",
                }
                for j in range(per)
            ]
        )
    store.backend.vectors.catch_up(None, RandomVectors())
    store.close()


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    precompile()
    with TempHome() as home:
        Store(home).session("seed").add_message({"role": "user", "content": "hello"})
        cold, base = [], []
        cold_start(home)  # the first spawn compiles and fills the page cache
        for _ in range(args.runs):
            base.append(model_alone(home))
            cold.append(cold_start(home))
        c, b = median_ms(cold), median_ms(base)
        print(f"cold start to list_tools {c:7.0f} ms   model alone {b:7.0f} ms   {c / b:.2f}x")

    with TempHome() as home:
        t = time.perf_counter()
        fill(home, args.messages)
        print(f"filled {args.messages} messages in {time.perf_counter() - t:.0f} s")
        from sessionctl.config import load_settings
        from sessionctl.mcp.tools import Memory

        memory = Memory(load_settings(home=home))
        memory.warm()
        # Common words: each in many of the messages (a vocabulary of ~100 words); each
        # query searched once, then a second and a third time.
        vocabulary = [w for w in WORDS if len(w) > 3]
        common = [
            " ".join(vocabulary[(r * 7 + i * 11) % len(vocabulary)] for i in range(3)) + " E4242"
            for r in range(args.runs * 3)
        ]
        calls: dict[str, tuple[str, dict[str, Any]]] = {
            "search, rare words": ("search_history", {"query": "kubernetes upgrade E4242"}),
            "search, vector mode": (
                "search_history",
                {"query": "deploy database error E4242", "mode": "vector"},
            ),
            "recent": ("recent", {"session": "s00500"}),
        }
        for name, arguments in calls.values():
            memory.call(name, arguments)  # warm: indexes caught up and open
        times: dict[str, list[float]] = {
            "search, common words, new query": [],
            "search, common words, 2nd time": [],
            "search, common words, 3rd time": [],
            **{label: [] for label in calls},
            "search, common, after a write": [],
        }

        def timed(label: str, name: str, arguments: dict[str, Any]) -> None:
            t = time.perf_counter()
            result = memory.call(name, arguments)
            times[label].append(time.perf_counter() - t)
            assert "results" in result or result["messages"], result

        for query in common:  # each query's first search (its words may have been seen)
            timed("search, common words, new query", "search_history", {"query": query})
            for label, (name, arguments) in calls.items():
                timed(label, name, arguments)
        for query in common:  # again: each phrase's contributions fetched in the background
            timed("search, common words, 2nd time", "search_history", {"query": query})
        # An agent thinks between calls; here, wait for the background fetch to end.
        memory.store.backend.vectors.keywords.phrases.wait()  # type: ignore[attr-defined]
        for query in common:  # and once more: summed from what is kept
            timed("search, common words, 3rd time", "search_history", {"query": query})
        for i, query in enumerate(common):
            # An append (by any process) changes the indexes: what the next search costs.
            memory.store.session("s00001").add_message({"role": "user", "content": query})
            timed("search, common, after a write", "search_history", {"query": common[i - 1]})
        memory.close()
        for label, samples in times.items():
            print(f"server-side {label:32} {median_ms(samples):7.2f} ms")
        trip = median_ms(round_trips(home, args.runs))
        print(f"round trip  {'search, common words':22} {trip:7.2f} ms")


def round_trips(home: Path, runs: int) -> list[float]:
    import anyio
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable, args=["-m", "sessionctl", "mcp"], env=env(home), cwd=str(REPO)
    )

    async def main() -> list[float]:
        async with Client(params, read_timeout_seconds=120) as client:
            query = {"query": "deploy database error E4242"}
            await client.call_tool("search_history", query)
            samples = []
            for _ in range(runs * 3):
                t = time.perf_counter()
                await client.call_tool("search_history", query)
                samples.append(time.perf_counter() - t)
            return samples

    return anyio.run(main)


if __name__ == "__main__":
    main()
