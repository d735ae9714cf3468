"""`-0`/`--null`: each message ends with NUL, so multi-line messages survive a pipe
into `xargs -0` (real processes, a real shell pipeline)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, Cli

from sessionctl import Store

MESSAGES = [
    "first line\nsecond line",
    "  indented\n\n\nafter blank lines\n",
    "tab\there, 'quotes' \"and\" \\backslash",
    "one line",
]


@pytest.fixture
def work(home: Path) -> Path:
    session = Store(home=home).session("w")
    for i, text in enumerate(MESSAGES):
        session.add_message({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return home


def pipeline(home: Path, *args: str) -> list[str]:
    """`sessionctl ARGS | xargs -0 python -c 'print the args as JSON'`."""
    me = shlex.quote(sys.executable)
    dump = shlex.quote("import json, sys; print(json.dumps(sys.argv[1:]))")
    command = f"{me} -m sessionctl {shlex.join(args)} | xargs -0 {me} -c {dump}"
    env = {**os.environ, "SESSIONCTL_HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_recent_text_null_round_trips_through_xargs(work: Path) -> None:
    assert pipeline(work, "recent", "-s", "w", "-k", "10", "--text", "-0") == MESSAGES
    assert pipeline(work, "recent", "-s", "w", "-k", "2", "--text", "--null") == MESSAGES[2:]


def test_recent_and_show_null_keep_the_role(work: Path) -> None:
    roles = ["user", "assistant", "user", "assistant"]
    expected = [f"{r}: {m}" for r, m in zip(roles, MESSAGES, strict=True)]
    assert pipeline(work, "recent", "-s", "w", "-k", "10", "-0") == expected
    assert pipeline(work, "show", "w", "-0") == expected


def test_relevant_null(work: Path) -> None:
    got = pipeline(work, "relevant", "second line", "-s", "w", "-k", "1", "-0")
    assert got == [MESSAGES[0]]


def test_default_is_one_record_per_line(cli: Cli, work: Path) -> None:
    out = cli("recent", "-s", "w", "-k", "10", "--text").stdout
    assert out == "\n".join(MESSAGES) + "\n"  # newline-ended, a message's own newlines kept
    assert "\0" not in out


def test_null_with_json_is_a_usage_error(cli: Cli, work: Path) -> None:
    for args in (["recent", "-s", "w", "--json", "-0"], ["show", "w", "-0", "--json"]):
        result = cli(*args)
        assert result.exit_code == 2, (args, result)
        assert result.stderr.startswith("sessionctl: error: -0 separates text records")
        assert result.stdout == ""
    result = cli("relevant", "x", "--raw", "-0")
    assert result.exit_code == 2 and "--raw is one JSON array" in result.stderr
