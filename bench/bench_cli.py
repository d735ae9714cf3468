"""Start-up cost of the transcript commands against a bare Typer app.

Builds a 100,000-message session and 10,000 small sessions, then times
`recent -k 5`, `list --limit 20`, `add` and `drop` as fresh processes, each
as a ratio to a bare two-command Typer app measured in the same run (all of
them taking turns, so the machine's drift lands on each alike).

    python bench/bench_cli.py [--runs 20] [--messages 100000] [--sessions 10000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    TempHome,
    bare_app,
    bench_env,
    files_backend,
    interleaved_medians,
    precompile,
    sessionctl_argv,
    table,
)

from sessionctl import Store
from sessionctl.backend.files.transcript import Header, encode
from sessionctl.ids import new_ulid
from sessionctl.models import Message
from sessionctl.timeutil import now_iso

WORDS = "the quick brown fox jumps over the lazy dog while we talk about deploys".split()


def build(home: Path, messages: int, sessions: int) -> None:
    store = Store(home)
    backend = files_backend(store)
    big = store.session("big")
    text = " ".join(WORDS * 3)
    start = time.perf_counter()
    big.add_messages(
        [
            {"role": "user" if i % 2 == 0 else "assistant", "content": f"{i} {text}"}
            for i in range(messages)
        ]
    )
    size = backend.path("big").stat().st_size
    print(
        f"built 'big': {messages} messages, {size / 1e6:.1f} MB "
        f"in {time.perf_counter() - start:.1f}s"
    )
    # Small sessions are written directly (same format, no fsync) to keep set-up quick.
    start = time.perf_counter()
    directory = backend.sessions_dir
    for n in range(sessions):
        now = now_iso()
        records = [Header(uid=new_ulid(), created_at=now, updated_at=now).to_record()]
        for seq, role in ((1, "user"), (2, "assistant")):
            records.append(Message(new_ulid(), seq, role, f"small {n}", now, pos=seq).to_record())
        path = directory / f"s{n:05d}.jsonl"
        path.write_bytes(b"".join(encode(r) for r in records))
        os.chmod(path, 0o600)
        # ... and logged as sessionctl's own writes log them (store/activity.py).
        backend.activity.touch(f"s{n:05d}")
    print(f"built {sessions} small sessions in {time.perf_counter() - start:.1f}s")
    big.add_message({"role": "user", "content": "the big one is the most recently active"})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=10_000)
    args = parser.parse_args()
    precompile()
    cli = sessionctl_argv()
    with TempHome() as home:
        build(home, args.messages, args.sessions)
        env = bench_env(home)
        commands = {
            "bare Typer app (baseline)": bare_app(home),
            "sessionctl recent -k 5 (100k session)": [*cli, "recent", "-s", "big", "-k", "5"],
            "sessionctl list --limit 20 (10k sessions)": [*cli, "list", "--limit", "20"],
            "sessionctl add (100k session)": [*cli, "add", "-s", "big", "--role", "user", "hi"],
            "sessionctl drop (100k session)": [*cli, "drop", "-s", "big"],
            "sessionctl --version": [*cli, "--version"],
            "bare Typer app --help": [*bare_app(home)[:2], "--help"],
            "sessionctl --help": [*cli, "--help"],
            "sessionctl --help, rendered by typer (TERMINAL_WIDTH set)": [*cli, "--help"],
            "sessionctl list --limit 20, config found by platformdirs": [
                *cli,
                "list",
                "--limit",
                "20",
            ],
        }
        # The rows above name their config file, as scripts and tests do; a user
        # who does not has platformdirs imported to find it: the last row.
        default_config = {k: v for k, v in env.items() if k != "SESSIONCTL_CONFIG"}
        default_config["XDG_CONFIG_HOME"] = str(home / "xdg-config")  # empty: no config
        typer_help = {**env, "TERMINAL_WIDTH": "80"}  # the pre-rendered help steps aside
        envs: list[dict[str, str] | None] = [None] * (len(commands) - 2)
        envs += [typer_help, default_config]
        # Round-robin, so drift hits the baseline and every command alike.
        medians = interleaved_medians(list(commands.values()), runs=args.runs, env=env, envs=envs)
        base = medians[0]
        print(table([(label, ms, ms / base) for label, ms in zip(commands, medians, strict=True)]))


if __name__ == "__main__":
    main()
