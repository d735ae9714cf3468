"""What only real processes show: concurrency, exit codes end to end, pipes, start-up imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO, set_activity

from sessionctl import Store

Sh = Callable[..., "subprocess.CompletedProcess[str]"]

WRITER = textwrap.dedent(
    """
    import sys
    from sessionctl.cli.app import run

    tag, count = sys.argv[1], int(sys.argv[2])
    failures = 0
    for i in range(count):
        code = run(["add", "-s", "shared", "--role", "user", f"{tag}-{i}"])
        failures += code != 0
    sys.exit(1 if failures else 0)
    """
)

READER = textwrap.dedent(
    """
    import io, json, os, sys
    from sessionctl.cli.app import run

    stop = sys.argv[1]
    rounds = failures = 0
    while not os.path.exists(stop) or rounds < 5:
        for args in (["recent", "-s", "shared", "-k", "3", "--json"], ["list", "--json"],
                     ["recent", "-k", "2", "--text"], ["show", "shared", "--json"]):
            out, real = io.StringIO(), sys.stdout
            sys.stdout = out
            try:
                code = run(args)
            finally:
                sys.stdout = real
            if code != 0:
                failures += 1
                print("FAIL", args, code, file=sys.stderr)
            elif "--json" in args:
                json.loads(out.getvalue())
        rounds += 1
    print(rounds)
    sys.exit(1 if failures else 0)
    """
)


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "SESSIONCTL_HOME": str(home), "PYTHONPATH": str(REPO)}


def _spawn(script: Path, *args: str, home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(home),
        cwd=REPO,
    )


def test_concurrent_writers_lose_nothing_and_readers_never_fail(home: Path, tmp_path: Path) -> None:
    writer, reader = tmp_path / "writer.py", tmp_path / "reader.py"
    writer.write_text(WRITER)
    reader.write_text(READER)
    Store(home).session("shared").add_message({"role": "system", "content": "start"})
    stop = tmp_path / "stop"
    readers = [_spawn(reader, str(stop), home=home) for _ in range(2)]
    procs = [_spawn(writer, f"p{n}", "100", home=home) for n in range(4)]
    cli_adds = [
        subprocess.Popen(
            [sys.executable, "-m", "sessionctl", "add", "-s", "shared", "--role", "llm"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(home),
            cwd=REPO,
        )
        for _ in range(3)
    ]
    for n, proc in enumerate(cli_adds):
        proc.communicate(f"real-{n}\n", timeout=60)
        assert proc.returncode == 0
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    stop.touch()
    for proc in readers:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Traceback" not in err and int(out) >= 5

    raw = (home / "sessions" / "shared.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    records = [json.loads(line) for line in lines]  # no torn or interleaved line
    messages = [r for r in records[1:] if r.get("type") == "message"]
    contents = [m["content"] for m in messages]
    expected = {"start"} | {f"p{n}-{i}" for n in range(4) for i in range(100)}
    expected |= {f"real-{n}" for n in range(3)}
    assert len(contents) == len(expected) == 404
    assert set(contents) == expected
    assert [m["seq"] for m in messages] == list(range(1, 405))
    assert len({m["id"] for m in messages}) == 404
    for n in range(4):  # each writer's messages keep its order
        mine = [c for c in contents if c.startswith(f"p{n}-")]
        assert mine == [f"p{n}-{i}" for i in range(100)]
    assert Store(home).session("shared").info().messages == 404
    assert not [p for p in (home / "sessions").iterdir() if p.name.endswith(".tmp")]


def test_version(sh: Sh) -> None:
    result = sh("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("sessionctl ") and result.stderr == ""


def test_exit_codes_end_to_end(sh: Sh) -> None:
    assert sh("add", "-s", "w", "--role", "user", "x").returncode == 0
    cases = [
        (("recent", "-s", "w", "-k", "-1"), 2),
        (("recent", "-s", "ghost"), 3),
        (("fork", "w", "w"), 1),
        (("drop", "-s", "ghost"), 3),
        (("nosuchcommand",), 2),
    ]
    for args, code in cases:
        result = sh(*args)
        assert result.returncode == code, (args, result.stderr)
        assert result.stderr.startswith("sessionctl: error: ")
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert result.stdout == ""


def test_piped_stdin_with_add(sh: Sh, home: Path) -> None:
    result = sh("add", "-s", "piped", "--role", "user", input="from a pipe\nsecond line\n")
    assert result.returncode == 0, result.stderr
    got = sh("recent", "-s", "piped", "--json")
    assert json.loads(got.stdout)[0]["content"] == "from a pipe\nsecond line"
    bad = subprocess.run(
        [sys.executable, "-m", "sessionctl", "add", "-s", "bin", "--role", "user"],
        input=b"\xff\xfe\x00junk",
        capture_output=True,
        env=_env(home),
        cwd=REPO,
    )
    assert bad.returncode == 2 and b"Traceback" not in bad.stderr
    assert not (home / "sessions" / "bin.jsonl").exists()


def test_recent_into_head_exits_cleanly(home: Path) -> None:
    Store(home).session("big").add_messages(
        [{"role": "user", "content": f"{i} " + "x" * 200} for i in range(3000)]
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "sessionctl", "recent", "-s", "big", "-k", "3000", "--text"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(home),
        cwd=REPO,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read()
    proc.stderr.close()
    proc.wait(timeout=60)
    assert first.startswith(b"0 x")
    assert b"Traceback" not in err and b"Exception" not in err, err
    assert proc.returncode == 0, err


def test_shell_pipeline_into_head(home: Path) -> None:
    Store(home).session("big").add_messages(
        [{"role": "user", "content": "y" * 300} for _ in range(1000)]
    )
    result = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m sessionctl list --json | head -c 10 >/dev/null; "
         f"{sys.executable} -m sessionctl recent -s big -k 1000 | head -1; "
         "echo status=${PIPESTATUS[0]}"],
        capture_output=True,
        text=True,
        env=_env(home),
        cwd=REPO,
        timeout=60,
    )  # fmt: skip
    assert "status=0" in result.stdout
    assert result.stderr == ""


def test_prune_never_needs_a_tty_or_stdin(home: Path) -> None:
    store = Store(home)
    store.session("old").add_message({"role": "user", "content": "x"})
    when = time.time() - 90 * 86400
    set_activity(home / "sessions" / "old.jsonl", when)
    result = subprocess.run(
        ["bash", "-c", f"exec {sys.executable} -m sessionctl prune --older-than 30d <&-"],
        capture_output=True,
        text=True,
        env=_env(home),
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "old\n"
    assert not store.session("old").exists


def test_reads_without_stdin_do_not_fail(sh: Sh, home: Path) -> None:
    Store(home).session("w").add_message({"role": "user", "content": "hi"})
    result = subprocess.run(
        ["bash", "-c", f"exec {sys.executable} -m sessionctl recent -s w --text <&-"],
        capture_output=True,
        text=True,
        env=_env(home),
        cwd=REPO,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, "hi\n"), result.stderr


HEAVY = (
    "litellm", "faiss", "onnxruntime", "numpy", "rich", "prompt_toolkit", "tokenizers",
    "mcp", "pydantic", "starlette", "uvicorn",
)  # fmt: skip


@pytest.mark.parametrize(
    "code",
    [
        "import sessionctl.cli.app",
        "import sessionctl.cli",
        "import sessionctl; sessionctl.Store",
        # the commands themselves, piped (not a TTY): still nothing heavy
        "from sessionctl.cli.app import run\n"
        "import io, contextlib\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for args in (['add','-s','w','--role','user','x'], ['recent','-s','w'], ['list'],\n"
        "                 ['show','w'], ['drop','-s','w'], ['recent','-k','1','--json'],\n"
        "                 ['prune','--older-than','30d'], ['export','w','-f','markdown']):\n"
        "        assert run(args) == 0, args",
    ],
)
def test_startup_imports_nothing_heavy(home: Path, code: str) -> None:
    probe = code + "\nimport sys\nprint(sorted(m for m in " + repr(HEAVY) + " if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=_env(home),
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    "env",
    [{"PYTHONIOENCODING": "ascii"}, {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}],
    ids=["PYTHONIOENCODING=ascii", "LC_ALL=C"],
)
def test_non_utf8_stdout_escapes_text_and_keeps_json_exact(home: Path, env: dict[str, str]) -> None:
    content = "café ☕ 日本 😀"
    Store(home).session("w").add_message({"role": "user", "content": content})

    def run(*args: str) -> bytes:
        proc = subprocess.run(
            [sys.executable, "-m", "sessionctl", *args],
            capture_output=True,
            env={**_env(home), **env},
            cwd=REPO,
            timeout=60,
        )
        assert proc.returncode == 0 and b"Error" not in proc.stderr, proc.stderr
        return proc.stdout

    shown = b"caf\\xe9 \\u2615 \\u65e5\\u672c \\U0001f600"
    assert run("recent", "-s", "w") == b"user: " + shown + b"\n"
    assert run("recent", "-s", "w", "--text") == shown + b"\n"
    assert run("show", "w") == b"user: " + shown + b"\n"
    for flag in ("--json", "--raw"):
        data = run("recent", "-s", "w", flag)
        assert data.isascii() and json.loads(data)[0]["content"] == content
    assert json.loads(run("show", "w", "--json"))["messages"][0]["content"] == content
