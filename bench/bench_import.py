"""Import throughput: `import --from llm` of a 100k-response logs.db and `--from chatgpt`
of a 10k-conversation conversations.json (issue 17).

Reports messages/s of the import itself (reading, checking, redacting, writing the
transcripts: before any indexing), the index catch-up separately (embedding with the
real model, on a sample of sessions: the full catch-up of 200k+ messages takes hours on
2 cores), and the peak RSS of the import process.

The import figure is what `sessionctl import --from` does: the pass that checks the
whole source first, then the import pass (both timed, and shown apart). The CPU time
per message (user + system, of the two passes) is shown too: wall time on a shared
disk swings with others' I/O (a file creation takes 0.05 to 1 ms here), CPU less so.

    PYTHONPATH=$PWD python bench/bench_import.py [--responses 100000] [--conversations 10000]
        [--repeat 3] [--baseline DIR]   # DIR: e.g. `git archive main | tar -x -C DIR`
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import REPO, WORDS

RUN = """
import json, resource, sys, time
import sessionctl.service.bulk_import as bulk
from sessionctl.service.store import Store
from sessionctl.sources import read_source
store = Store()
source, path = sys.argv[1], sys.argv[2]
# What `sessionctl import --from` runs: a pass that checks the whole source, then the
# import (a revision without import_checked ran a dry run as its check, from the CLI).
def cpu():
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime
t, cpu0 = time.perf_counter(), cpu()
if hasattr(bulk, "import_checked"):
    bulk.import_sources(store, source, read_source(source, path), dry_run=True, check_only=True)
else:
    bulk.import_sources(store, source, read_source(source, path), dry_run=True)
checked = time.perf_counter()
summary = bulk.import_sources(store, source, read_source(source, path))
done = time.perf_counter()
store.backend.close()
spent = cpu() - cpu0
# VmHWM: this process's own high-water mark. ru_maxrss keeps the parent's across fork
# and exec on Linux: the bench's 170 MB of generated sources would show in every run.
try:
    with open("/proc/self/status") as status:
        peak = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": done - t, "check": checked - t, "write": done - checked,
                  "cpu": spent, "module": bulk.__file__,
                  "messages": summary["messages_added"],
                  "sessions": summary["sessions_created"], "peak_kib": peak}))
"""

INDEX = """
import json, sys, time
from sessionctl.service.store import Store
store = Store()
names = store.names()[: int(sys.argv[1])]
t = time.perf_counter()
store.reindex(names)
took = time.perf_counter() - t
count = sum(len(store.backend.messages(n)) for n in names)
store.backend.close()
print(json.dumps({"seconds": took, "messages": count, "sessions": len(names)}))
"""


def text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def make_llm(path: Path, responses: int, rng: random.Random) -> None:
    """The pre-0.36 llm schema (responses rows), as llm's migrations create it."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE conversations (id TEXT PRIMARY KEY, name TEXT, model TEXT)")
    db.execute(
        "CREATE TABLE responses (id TEXT PRIMARY KEY, model TEXT, prompt TEXT, system TEXT,"
        " prompt_json TEXT, options_json TEXT, response TEXT, response_json TEXT,"
        " conversation_id TEXT, duration_ms INTEGER, datetime_utc TEXT,"
        " input_tokens INTEGER, output_tokens INTEGER, token_details TEXT)"
    )
    per = 10
    convs = [(f"01conv{i:08d}", text(rng, 4), "gpt-4o-mini") for i in range(responses // per)]
    db.executemany("INSERT INTO conversations VALUES (?, ?, ?)", convs)
    rows = []
    for i in range(responses):
        conv = convs[i // per][0]
        stamp = f"2025-01-{1 + i % 28:02d}T{i % 24:02d}:00:{i % 60:02d}.000000"
        rows.append(
            (
                f"01resp{i:09d}",
                "gpt-4o-mini",
                text(rng, 12),
                "Be brief." if i % per == 0 else None,
                None,
                None,
                text(rng, 30),
                None,
                conv,
                100,
                stamp,
                20,
                40,
                None,
            )
        )
    db.executemany("INSERT INTO responses VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    db.commit()
    db.close()


def make_chatgpt(path: Path, conversations: int, rng: random.Random) -> int:
    out = []
    total = 0
    for c in range(conversations):
        mapping: dict[str, object] = {
            "root": {"id": "root", "message": None, "parent": None, "children": ["m0"]}
        }
        turns = 6
        for t in range(turns):
            role = "user" if t % 2 == 0 else "assistant"
            mapping[f"m{t}"] = {
                "id": f"m{t}",
                "parent": "root" if t == 0 else f"m{t - 1}",
                "children": [f"m{t + 1}"] if t + 1 < turns else [],
                "message": {
                    "id": f"m{t}",
                    "author": {"role": role},
                    "create_time": 1.7e9 + c * 60 + t,
                    "content": {"content_type": "text", "parts": [text(rng, 25)]},
                    "metadata": {"model_slug": "gpt-4o"} if role == "assistant" else {},
                },
            }
        total += turns
        out.append(
            {
                "title": text(rng, 3),
                "create_time": 1.7e9 + c * 60,
                "mapping": mapping,
                "conversation_id": f"conv-{c:06d}",
                "current_node": f"m{turns - 1}",
            }
        )
    path.write_text(json.dumps(out))
    return total


def run(code: str, env: dict[str, str], *args: str) -> dict[str, Any]:
    # cwd: the data dir's parent, never a checkout (`-c` puts the cwd first on sys.path,
    # before PYTHONPATH: run from a checkout, every tree would import that one).
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(env["SESSIONCTL_HOME"]).parent,
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    value: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return value


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median total time (its own figures, not a mix of several runs)."""
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--responses", type=int, default=100_000)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--index-sessions", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1, help="runs per tree, taking turns")
    parser.add_argument("--only", choices=("llm", "chatgpt"), help="import one source only")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="another checkout (e.g. `git archive main | tar -x -C DIR`): the same data is"
        " imported by both, taking turns, and the ratio printed",
    )
    args = parser.parse_args()
    rng = random.Random(17)
    trees = [("this tree", REPO)]
    if args.baseline:
        trees.insert(0, ("baseline", Path(args.baseline).resolve()))
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        db = base / "logs.db"
        make_llm(db, args.responses, rng)
        conv = base / "conversations.json"
        make_chatgpt(conv, args.conversations, rng)
        print(
            f"sources: logs.db {db.stat().st_size / 2**20:.0f} MiB, "
            f"conversations.json {conv.stat().st_size / 2**20:.0f} MiB"
        )
        for source, path in (("llm", db), ("chatgpt", conv)):
            if args.only not in (None, source):
                continue
            results: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in trees}
            homes: dict[str, Path] = {}
            for attempt in range(args.repeat):
                for label, tree in trees if attempt % 2 == 0 else trees[::-1]:
                    home = base / f"home-{source}-{label.replace(' ', '-')}-{attempt}"
                    homes[label] = home
                    env = {
                        **os.environ,
                        "PYTHONPATH": str(tree),
                        "SESSIONCTL_HOME": str(home),
                        "SESSIONCTL_CONFIG": str(base / "none.toml"),
                    }
                    got = run(RUN, env, source, str(path))
                    if not str(got["module"]).startswith(str(tree)):
                        raise SystemExit(f"{label}: imported {got['module']}, not from {tree}")
                    results[label].append(got)
                    if attempt + 1 < args.repeat:
                        shutil.rmtree(home)
            rates = {}
            for label, tree in trees:
                got = median_run(results[label])
                rate = rates[label] = got["messages"] / got["seconds"]
                print(
                    f"[{label}] import --from {source}: {got['messages']:.0f} messages in"
                    f" {got['sessions']:.0f} sessions, {got['seconds']:.2f} s"
                    f" (check pass {got['check']:.2f} s, import pass {got['write']:.2f} s)"
                    f" = {rate:,.0f} messages/s before indexing"
                    f" (import pass alone {got['messages'] / got['write']:,.0f}/s);"
                    f" peak RSS {got['peak_kib'] / 1024:.0f} MiB,"
                    f" CPU {got['cpu'] / got['messages'] * 1e6:.0f} us/message"
                )
                env = {
                    **os.environ,
                    "PYTHONPATH": str(tree),
                    "SESSIONCTL_HOME": str(homes[label]),
                    "SESSIONCTL_CONFIG": str(base / "none.toml"),
                }
                again = run(RUN, env, source, str(path))
                print(
                    f"  re-import (idempotent): {again['messages']:.0f} added,"
                    f" {again['seconds']:.2f} s, CPU {again['cpu']:.2f} s"
                )
                if args.index_sessions:
                    idx = run(INDEX, env, str(args.index_sessions))
                    print(
                        f"  index catch-up: {idx['messages']:.0f} messages of"
                        f" {idx['sessions']:.0f} sessions in {idx['seconds']:.1f} s"
                        f" = {idx['messages'] / idx['seconds']:,.0f} messages/s"
                    )
            if args.baseline:
                print(
                    f"  {source}: this tree imports {rates['this tree'] / rates['baseline']:.1f}x"
                    f" as many messages/s as the baseline (median of {args.repeat})"
                )


if __name__ == "__main__":
    main()
