"""One very big session: header edits, show, a filtered recent and drop by id.

Builds a session of 1,000,000 messages (written straight to its JSONL file,
same format, no fsync per message) next to an empty one, then times each
command as a fresh process on both, taking turns, and reports the median wall
time and the peak RSS (of the sessionctl process, from wait4) of each, and
the big session's figures as ratios to the empty one's in the same run.

    python bench/bench_big.py [--messages 1000000] [--runs 3]

Targets (hardening item 15): `meta` on the big session within 1.5x of the
empty one; `show big | tail -1` under 100 MB peak RSS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import TempHome, bench_env, files_backend, precompile, sessionctl_argv

from sessionctl import Store
from sessionctl.backend.files.transcript import Header, encode, encode_header
from sessionctl.ids import new_ulid
from sessionctl.models import Message
from sessionctl.timeutil import now_iso

WORDS = "the quick brown fox jumps over the lazy dog while we talk about deploys".split()


def build(home: Path, messages: int) -> list[str]:
    """Write the big session directly; return the ids of the messages drop will take."""
    store = Store(home)
    store.session("empty").update(metadata={"size": "empty"})  # created through sessionctl
    store.session("small").add_messages(
        [{"role": "user", "content": f"small {i}"} for i in range(20)]
    )
    start = time.perf_counter()
    now = now_iso()
    text = " ".join(WORDS[:6])  # ~165 bytes a record, as the 156 MB for 1M
    header = Header(uid=new_ulid(), created_at=now, updated_at=now)
    backend = files_backend(store)
    path = backend.path("big")
    ids: list[str] = []
    with open(path, "wb") as f:
        f.write(encode_header(header))
        batch: list[bytes] = []
        for seq in range(1, messages + 1):
            role = "user" if seq % 2 else "assistant"
            message = Message(new_ulid(), seq, role, f"{seq} {text}", now, pos=seq)
            if seq % (messages // 8 or 1) == messages // 16:
                ids.append(message.id)  # spread over the middle of the file
            batch.append(encode(message.to_record()))
            if len(batch) == 10_000:
                f.write(b"".join(batch))
                batch.clear()
        f.write(b"".join(batch))
    os.chmod(path, 0o600)
    backend.activity.touch("big")
    size = path.stat().st_size
    print(
        f"built 'big': {messages} messages, {size / 1e6:.0f} MB "
        f"in {time.perf_counter() - start:.1f}s"
    )
    return ids


def run(argv: Sequence[str], env: dict[str, str], *, tail: bool = False) -> tuple[float, float]:
    """Run ``argv`` (its stdout into ``tail -1`` if asked); wall ms and its peak RSS in MB."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sink = None
    if tail:
        sink = subprocess.Popen(["tail", "-1"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stderr is not None
    if tail:
        proc.stdout.close()
    else:
        proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = (time.perf_counter() - start) * 1000
    if sink is not None:
        sink.wait()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {err.decode()[-500:]}")
    return elapsed, usage.ru_maxrss / 1024  # KB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    precompile()
    cli = sessionctl_argv()
    with TempHome() as home:
        drop_ids = build(home, args.messages)
        small_ids = [m.id for m in Store(home).session("small").get_messages()]
        env = bench_env(home)
        rows = []
        cases: list[tuple[str, str, str, bool]] = [
            ("meta NAME k=<n>", "big", "empty", False),
            ("show NAME | tail -1", "big", "empty", True),
            ("recent -s NAME --role system -k 1 (no match)", "big", "empty", False),
            ("drop -s NAME ID (a middle message)", "big", "small", False),
        ]
        for label, big, base, tail in cases:
            results: dict[str, list[tuple[float, float]]] = {big: [], base: []}
            for i in range(args.runs + 1):  # the first round warms the page cache
                for name in (big, base):
                    if label.startswith("meta"):
                        argv = [*cli, "meta", name, f"k={i}"]
                    elif label.startswith("show"):
                        argv = [*cli, "show", name]
                    elif label.startswith("recent"):
                        argv = [*cli, "recent", "-s", name, "--role", "system", "-k", "1"]
                    else:
                        ids = drop_ids if name == big else small_ids
                        argv = [*cli, "drop", "-s", name, ids[i]]
                    result = run(argv, env, tail=tail)
                    if i:
                        results[name].append(result)
            (bms, brss), (ems, erss) = (
                (
                    statistics.median(r[0] for r in results[n]),
                    max(r[1] for r in results[n]),
                )
                for n in (big, base)
            )
            rows.append((label, bms, brss, ems, erss))
        width = max(len(r[0]) for r in rows)
        print(
            f"{'command':<{width}}  {'big':>9}  {'RSS':>7}  {'empty/small':>11}"
            f"  {'RSS':>7}  {'time':>6}  {'RSS':>5}"
        )
        for label, bms, brss, ems, erss in rows:
            print(
                f"{label:<{width}}  {bms:>7.0f}ms  {brss:>5.0f}MB  {ems:>9.0f}ms"
                f"  {erss:>5.0f}MB  {bms / ems:>5.2f}x  {brss / erss:>4.2f}x"
            )


if __name__ == "__main__":
    main()
