"""Shared helpers for the benchmarks: timing subprocesses against a baseline."""

from __future__ import annotations

import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sessionctl.backend.files.local import LocalBackend
    from sessionctl.backend.files.vectors import StoreIndex
    from sessionctl.service.store import Store

REPO = Path(__file__).resolve().parent.parent

#: Words the benches draw their chat messages from (bench_index, bench_embed).
WORDS = (
    "the a my our your this that project meeting deadline report budget team client server "
    "database deploy release bug fix test review code python function error log memory disk "
    "tomorrow today yesterday week month morning evening please could would should need want "
    "think know remember forgot send email call schedule update document plan idea question "
    "answer because while after before about with without from into over under again still "
    "really quite very just also only even maybe probably definitely colour garden dinner "
    "holiday flight hotel train ticket price cost pay invoice order delivery weather rain sun"
).split()

BARE_TYPER_APP = """
import typer
app = typer.Typer()

@app.command()
def hello(name: str = "world") -> None:
    print(f"hello {name}")

@app.command()
def bye() -> None:
    print("bye")

if __name__ == "__main__":
    app()
"""


def sessionctl_argv() -> list[str]:
    """The installed console script if there is one, else ``python -m sessionctl``."""
    script = Path(sys.executable).with_name("sessionctl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sessionctl"]


def files_backend(store: Store) -> LocalBackend:
    """The store's file backend (the benches that write files directly measure that one)."""
    from sessionctl.backend.files.local import LocalBackend

    backend = store.backend
    assert isinstance(backend, LocalBackend), "this bench measures the file backend"
    return backend


def files_vectors(store: Store) -> StoreIndex:
    """The file backend's store-wide index (the benches that reach into it measure that one)."""
    from sessionctl.backend.files.vectors import StoreIndex

    vectors = store.backend.vectors
    assert isinstance(vectors, StoreIndex), "this bench measures the file backend"
    return vectors


def precompile() -> None:
    """Write bytecode, as a normal install does (PYTHONDONTWRITEBYTECODE may be set)."""
    compileall.compile_dir(str(REPO / "sessionctl"), quiet=1)


def bare_app(directory: Path) -> list[str]:
    """Write the baseline Typer app and return its argv."""
    path = directory / "bare_typer_app.py"
    path.write_text(BARE_TYPER_APP)
    compileall.compile_file(str(path), quiet=1)
    return [sys.executable, str(path), "hello"]


def interleaved_medians(
    commands: Sequence[Sequence[str]],
    *,
    runs: int,
    env: dict[str, str],
    warmup: int = 2,
    envs: Sequence[dict[str, str] | None] = (),
) -> list[float]:
    """Median wall ms of each argv, run round-robin (each must exit 0).

    ``envs`` may give a command its own environment (None: ``env``).

    Timing one command's runs in a block and then the next one's lets the
    machine's drift (other jobs, CPU frequency) land on one command only; taking
    turns spreads it over all, so the ratios hold even when the absolute
    figures wander.
    """
    times: list[list[float]] = [[] for _ in commands]
    own = [*envs, *[None] * (len(commands) - len(envs))]
    for i in range(warmup + runs):
        for argv, bucket, mine in zip(commands, times, own, strict=True):
            start = time.perf_counter()
            proc = subprocess.run(argv, env=mine or env, capture_output=True, check=False)
            elapsed = (time.perf_counter() - start) * 1000
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.decode()[-500:]}")
            if i >= warmup:
                bucket.append(elapsed)
    return [statistics.median(bucket) for bucket in times]


def table(rows: list[tuple[str, float, float]]) -> str:
    """Format (label, median ms, ratio) rows."""
    width = max(len(r[0]) for r in rows)
    lines = [f"{'command':<{width}}  {'median':>9}  {'ratio':>6}"]
    lines += [f"{label:<{width}}  {ms:>7.1f}ms  {ratio:>5.2f}x" for label, ms, ratio in rows]
    return "\n".join(lines)


class TempHome:
    """A throwaway data dir."""

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="sessionctl-bench-"))
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def bench_env(home: Path) -> dict[str, str]:
    """Environment for a run: the temp home, no config file, no colour."""
    env = dict(os.environ)
    env.update(SESSIONCTL_HOME=str(home), SESSIONCTL_CONFIG=str(home / "none.toml"), NO_COLOR="1")
    return env
