"""The PostgreSQL backend next to the file backend, in the same run, in-process.

Builds the same store twice (N sessions of 2 messages each, through each backend's
``create``), then times on both, taking turns: ``add`` (one message appended to an
existing session), ``recent -k 5``, ``list --limit 20`` and a cross-session exact
``relevant`` over every message (the first, which embeds everything, is not timed).
The server is a local PostgreSQL 18 + pgvector from tests/local_postgres.py (fsync off,
like the file store's tmp dir here: both measure the code, not the disk).

    python bench/bench_postgres.py [--sessions 10000] [--runs 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()

    import local_postgres

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
                row = {name: timed(lambda st=store, f=fn: f(st), args.runs)
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
