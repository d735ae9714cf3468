"""What secret redaction costs: per message, at start-up, and scrub's throughput.

1. Redaction of a 1 KB message (ordinary text, text that trips the cheap
   triggers, text with secrets), in microseconds, and as a ratio to encoding
   that message as its transcript line (the work a write does anyway).
2. `add` as a fresh process with redaction on vs `--no-redact`, as a ratio,
   both against a bare Typer app, taking turns in the same run.
3. `scrub --literal` over a store of N messages (default 100,000 in 100
   sessions) where a few sessions hold the literal: a dry run (the scan),
   then the real run (rewrite + reindex of the touched sessions + verify).

    python bench/bench_redact.py [--runs 20] [--messages 100000] [--touched 5]
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    TempHome,
    bare_app,
    bench_env,
    interleaved_medians,
    precompile,
    sessionctl_argv,
    table,
)

from sessionctl import Store
from sessionctl.backend.base import SessionHeader
from sessionctl.backend.files.transcript import encode
from sessionctl.ids import new_ulid
from sessionctl.models import Message
from sessionctl.redact import redactor
from sessionctl.timeutil import now_iso

WORDS = (
    "the deploy went out on friday and the latency of the index search stayed under budget "
    "while we reviewed the migration plan the cache warmed and the model answered"
).split()


def kilobyte(rng: random.Random, extra: str = "") -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < 1024 - len(extra):
        words.append(rng.choice(WORDS))
    return (" ".join(words) + " " + extra)[:1024]


def per_message() -> list[tuple[str, float, float]]:
    rng = random.Random(1)
    secret = "ghp_" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(36))
    cases = {
        "ordinary prose": kilobyte(rng),
        "trips triggers (token, secret, password, sk-)": kilobyte(
            rng, "our token budget; the secret is tests; password: required; risk-free sk-1"
        ),
        "holds 2 secrets": kilobyte(rng, f"GITHUB_TOKEN={secret} DB_PASSWORD=hunter2hunter2"),
    }
    red = redactor()
    red.text("warm up")
    rows = []
    for label, text in cases.items():
        record = Message(new_ulid(), 1, "user", text, now_iso()).to_record()
        n = 5000
        start = time.perf_counter()
        for _ in range(n):
            encode(record)
        encode_us = (time.perf_counter() - start) / n * 1e6
        start = time.perf_counter()
        for _ in range(n):
            red.text(text)
        redact_us = (time.perf_counter() - start) / n * 1e6
        rows.append((label, redact_us, redact_us / encode_us))
    return rows


def startup(runs: int) -> None:
    cli = sessionctl_argv()
    text = kilobyte(random.Random(2))
    with TempHome() as home:
        env = bench_env(home)
        commands = {
            "bare Typer app (baseline)": bare_app(home),
            "sessionctl add (1 KB, redaction on)": [*cli, "add", "-s", "a", "--role", "user", text],
            "sessionctl add (1 KB, --no-redact)": [
                *cli,
                "add",
                "-s",
                "b",
                "--role",
                "user",
                "--no-redact",
                text,
            ],
        }
        medians = interleaved_medians(list(commands.values()), runs=runs, env=env)
        base = medians[0]
        print(table([(label, ms, ms / base) for label, ms in zip(commands, medians, strict=True)]))
        print(f"add with redaction / add without: {medians[1] / medians[2]:.3f}x")


def scrub_throughput(total: int, touched: int) -> None:
    from sessionctl.service.scrub import scrub

    sessions = 100
    per = total // sessions
    rng = random.Random(3)
    with TempHome() as home:
        store = Store(home)
        start = time.perf_counter()
        for s in range(sessions):
            now = now_iso()
            header = SessionHeader(uid=new_ulid(), created_at=now, updated_at=now)
            messages = []
            for i in range(per):
                text = " ".join(rng.choice(WORDS) for _ in range(20))
                if s < touched and i % 50 == 0:
                    text += " the old password hunter2-prod leaked here"
                role = "user" if i % 2 == 0 else "assistant"
                messages.append(Message(new_ulid(), i + 1, role, text, now))
            store.backend.create(f"s{s:03d}", header, messages)
        print(f"built {sessions} sessions x {per} messages in {time.perf_counter() - start:.1f}s")
        start = time.perf_counter()
        dry = scrub(store, None, literal="hunter2-prod", dry_run=True)
        scan = time.perf_counter() - start
        found = sum(s.matches for s in dry.sessions)
        print(f"dry run (scan): {found} matches, {scan:.2f}s, {sessions * per / scan:,.0f} msg/s")
        start = time.perf_counter()
        report = scrub(store, None, literal="hunter2-prod")
        real = time.perf_counter() - start
        assert report.verified and sum(s.matches for s in report.sessions) == found
        print(
            f"scrub: {found} matches in {touched} sessions ({touched * per} messages rewritten "
            f"and reindexed), {real:.2f}s, {sessions * per / real:,.0f} msg/s over the store"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--touched", type=int, default=5, help="sessions holding the literal")
    args = parser.parse_args()
    precompile()
    print("redaction of one 1 KB message (ratio: to encoding its transcript line)")
    rows = per_message()
    width = max(len(r[0]) for r in rows)
    for label, us, ratio in rows:
        print(f"  {label:<{width}}  {us:>8.1f} us  {ratio:>6.2f}x")
    startup(args.runs)
    scrub_throughput(args.messages, args.touched)


if __name__ == "__main__":
    main()
