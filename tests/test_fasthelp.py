"""`sessionctl --help` served pre-rendered: the same bytes typer and rich print.

The stored renderings are checked against the real program (a fresh process,
which goes through typer when the fast path is unsure) in a pipe and on a
pseudo-terminal, and the fast path must step aside whenever it cannot be sure.
"""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from sessionctl._build.helptext import render_with_typer
from sessionctl.cli import fasthelp

PY = [sys.executable, "-m", "sessionctl"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NO_COLOR", "TERM")}
    for name in fasthelp._UNSURE_ENV:
        env.pop(name, None)
    env.update(extra)
    return env


def _stored(width: int, variant: str) -> str:
    loaded = fasthelp.load()
    assert loaded is not None, "sessionctl/share/help/top.txt is missing or damaged"
    index, body = loaded
    start, end = index["texts"][f"{width}:{variant}"]
    return body[start:end].decode()


class _Stream(io.StringIO):
    def __init__(self, tty: bool, encoding: str = "utf-8") -> None:
        super().__init__()
        self._tty, self._encoding = tty, encoding

    def isatty(self) -> bool:
        return self._tty

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding


@pytest.mark.parametrize("width", [50, 80, 123, 200])
def test_stored_text_is_what_typer_prints_now(width: int) -> None:
    for variant in fasthelp.VARIANTS:
        assert _stored(width, variant) == render_with_typer(width, variant)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_a_pipe_gets_the_plain_rendering_and_typer_agrees(flag: str) -> None:
    fast = subprocess.run([*PY, flag], env=_env(COLUMNS="97"), capture_output=True, text=True)
    assert fast.returncode == 0 and fast.stderr == ""
    # TERMINAL_WIDTH makes the fast path unsure: this run goes through typer itself.
    slow = subprocess.run(
        [*PY, flag], env=_env(COLUMNS="97", TERMINAL_WIDTH="97"), capture_output=True, text=True
    )
    assert slow.returncode == 0
    assert fast.stdout == slow.stdout == _stored(97, "plain")
    assert "\x1b[" not in fast.stdout and "Commands" in fast.stdout


def _on_pty(env: dict[str, str]) -> bytes:
    leader, follower = pty.openpty()
    proc = subprocess.Popen([*PY, "--help"], stdin=follower, stdout=follower, stderr=follower,
                            env=env, close_fds=True)  # fmt: skip
    os.close(follower)
    out = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.wait(timeout=30) == 0
    return out


def test_a_terminal_gets_the_coloured_rendering_and_typer_agrees() -> None:
    env = _env(COLUMNS="88", TERM="xterm-256color")
    fast = _on_pty(env)
    slow = _on_pty({**env, "TERMINAL_WIDTH": "88"})
    assert b"\x1b[" in fast
    assert fast == slow
    assert fast == _stored(88, "ansi").replace("\n", "\r\n").encode()


@pytest.mark.parametrize(
    ("environ", "tty", "encoding"),
    [
        ({"FORCE_COLOR": "1"}, False, "utf-8"),
        ({"NO_COLOR": "1"}, True, "utf-8"),
        ({"TERM": "dumb"}, True, "utf-8"),
        ({"COLUMNS": "20"}, False, "utf-8"),  # a width not stored
        ({"COLUMNS": "90"}, False, "ascii"),  # rich would draw ASCII boxes
    ],
)
def test_unsure_cases_fall_back_to_typer(environ: dict[str, str], tty: bool, encoding: str) -> None:
    out = _Stream(tty, encoding)
    assert fasthelp.print_top_help(["--help"], environ=environ, stream=out) is False
    assert out.getvalue() == ""


def test_only_a_bare_help_is_served() -> None:
    out = _Stream(False)
    for args in (["list", "--help"], ["--help", "list"], ["--version"], []):
        assert fasthelp.print_top_help(args, environ={"COLUMNS": "80"}, stream=out) is False
    assert out.getvalue() == ""
    assert fasthelp.print_top_help(["--help"], environ={"COLUMNS": "80"}, stream=out) is True
    assert out.getvalue() == _stored(80, "plain")


def test_a_damaged_or_stale_file_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64
    import json
    import zlib

    damaged = tmp_path / "damaged.txt"
    damaged.write_text("not base64 zlib at all")
    text = b"stale help\n"
    head = json.dumps({"version": "0.0.0-older", "texts": {"80:plain": [0, len(text)]}})
    stale = tmp_path / "stale.txt"
    stale.write_bytes(base64.encodebytes(zlib.compress(head.encode() + b"\n" + text)))
    assert fasthelp.load(damaged) is None
    assert fasthelp.load(stale) is not None
    for path in (damaged, stale, tmp_path / "missing.txt"):
        monkeypatch.setattr(fasthelp.load, "__defaults__", (path,))
        out = _Stream(False)
        assert fasthelp.print_top_help(["--help"], environ={"COLUMNS": "80"}, stream=out) is False
        assert out.getvalue() == ""


def test_help_piped_into_head_is_not_an_error() -> None:
    proc = subprocess.run(
        f"{sys.executable} -m sessionctl --help | head -1", shell=True, env=_env(COLUMNS="80"),
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0
    assert proc.stderr == ""
