"""Test isolation: every test gets its own home, config and clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

# click 8.5 deprecates names that typer 0.25 imports (typer < 0.26 is pinned on
# purpose, see pyproject.toml); the warning is typer's, not ours.
warnings.filterwarnings("ignore", category=DeprecationWarning, module="typer")
from typer.testing import CliRunner  # noqa: E402

from sessionctl.cli.app import run  # noqa: E402

if TYPE_CHECKING:
    from sessionctl import Store
    from sessionctl.backend.files.local import LocalBackend

REPO = Path(__file__).resolve().parent.parent

_SCRUB = (
    "SESSIONCTL_HOME", "SESSIONCTL_MODEL", "SESSIONCTL_API_BASE", "SESSIONCTL_EMBEDDING_MODEL",
    "SESSIONCTL_SYSTEM", "SESSIONCTL_CONTEXT_RECENT", "SESSIONCTL_CONTEXT_RELEVANT",
    "SESSIONCTL_CONTEXT_WINDOW",
    "SESSIONCTL_TIMEOUT", "SESSIONCTL_COLOR", "SESSIONCTL_DEBUG", "SESSIONCTL_SESSION",
    "SESSIONCTL_REDACT",
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY",
)  # fmt: skip


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private data dir per test; the real home and config are never touched."""
    for var in _SCRUB:
        monkeypatch.delenv(var, raising=False)
    data = tmp_path / "home"
    monkeypatch.setenv("SESSIONCTL_HOME", str(data))
    monkeypatch.setenv("SESSIONCTL_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "user" / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "user" / "config"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "100")
    yield data


def set_activity(transcript: Path, when: float) -> None:
    """Make a session look last active at ``when``: its mtime and the activity log.

    "Last activity" is the last write through sessionctl, recorded in
    HOME/activity.log (sessionctl/backend/files/activity.py); the mtime is the fallback.
    """
    from sessionctl.backend.files.activity import LOG_NAME, ActivityLog

    os.utime(transcript, (when, when))
    name = transcript.name[: -len(".jsonl")]
    ActivityLog(transcript.parent.parent / LOG_NAME).touch(name, int(when * 1e9), reset=True)


def settle(sessions_dir: Path) -> None:
    """Make sessions/ look unchanged for a minute, as between two commands of a user."""
    then = time.time() - 60
    os.utime(sessions_dir, (then, then))


def files_backend(store: Store) -> LocalBackend:
    """``store.backend`` as the file backend, for tests of its files and private methods.

    ``Store.backend`` is typed as the ``SessionStore`` Protocol; the isinstance check
    narrows it (and fails loudly if a test of the files ever runs on another backend).
    """
    from sessionctl.backend.files.local import LocalBackend

    backend = store.backend
    assert isinstance(backend, LocalBackend)
    return backend


def as_dicts(found: list[dict[str, Any]] | list[str]) -> list[dict[str, Any]]:
    """A ``get_recent``/``get_relevant`` result asked for without ``as_text``: its dicts.

    Both are typed ``list[dict] | list[str]`` (the ``as_text`` flag picks one); this
    checks which one at run time, so that a test may index the messages by key.
    """
    assert all(isinstance(m, dict) for m in found), found
    return cast("list[dict[str, Any]]", found)


def count_listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every os.listdir from now on (the directories listed, in order)."""
    listed: list[str] = []
    real = os.listdir

    def counting(path: str = ".") -> list[str]:
        listed.append(str(path))
        return real(path)

    monkeypatch.setattr(os, "listdir", counting)
    return listed


@dataclass
class Result:
    """What one CLI invocation did."""

    exit_code: int
    stdout: str
    stderr: str


Cli = Callable[..., Result]


@pytest.fixture
def cli() -> Cli:
    """Run the CLI in-process (through the real error boundary) and capture its streams."""

    def invoke(*args: str, input: str | bytes | None = None) -> Result:
        runner = CliRunner()
        with runner.isolation(input=input) as (out, err, _):
            code = run(list(args))
            sys.stdout.flush()
            sys.stderr.flush()
            return Result(code, out.getvalue().decode(), err.getvalue().decode())

    return invoke


@pytest.fixture
def sh(home: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python -m sessionctl` in a real subprocess (for what only a process shows)."""

    def invoke(
        *args: str,
        input: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
        cwd: Path = REPO,
    ) -> subprocess.CompletedProcess[str]:
        # PYTHONPATH absolute: a relative one would not find this checkout from another cwd
        full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "sessionctl", *args],
            input=input,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            cwd=cwd,
        )

    return invoke
