"""Provider faults through the CLI one-shot against the local OpenAI-compatible test server.

DESIGN §4: a failed LLM call appends nothing; an answer interrupted by Ctrl-C keeps what
the user saw, marked interrupted. Every fault: exit 4 (130 for SIGINT), one error line,
no traceback, and the data dir byte-for-byte as before (or, for SIGINT, plus exactly the
prompt and the interrupted answer). A huge answer is stored exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Cli, Result
from llm_server import FakeLLMServer, Reply, llm_server

__all__ = ["llm_server"]  # the fixture, re-exported for pytest

ANSWER = "Hello from the fake model."


def direct(server: FakeLLMServer) -> list[str]:
    return ["--api-base", server.base_url, "-m", "test-model"]


def snapshot(home: Path) -> dict[str, str]:
    """Every file under the data dir and its content hash (lock files are not data)."""
    out = {}
    for path in sorted(home.rglob("*")):
        if path.is_file() and not path.name.endswith(".lock"):
            out[str(path.relative_to(home))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def records(home: Path, name: str) -> list[dict[str, Any]]:
    # split on \n only: str.splitlines() also cuts at U+2028 inside a JSON string
    lines = (home / "sessions" / f"{name}.jsonl").read_bytes().decode().split("\n")
    return [json.loads(line) for line in lines[1:] if line]


def one_error(result: Result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sessionctl: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_slow_first_byte_within_the_timeout_succeeds(
    cli: Cli, llm_server: FakeLLMServer, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSIONCTL_TIMEOUT", "2")
    for extra in ([], ["--no-stream"]):
        llm_server.push(Reply(text=ANSWER, first_byte_delay=0.6, chunk_size=4, chunk_delay=0.05))
        result = cli("chat", "-s", "slow", *direct(llm_server), *extra, "hello?")
        assert result.exit_code == 0, result.stderr
        assert result.stdout == ANSWER + "\n" and result.stderr == ""
    contents = [r["content"] for r in records(home, "slow")]
    assert contents == ["hello?", ANSWER, "hello?", ANSWER]


FAULTS = {
    "first byte beyond the timeout": Reply(first_byte_delay=5),
    "stall mid-stream": Reply(text="partial answer that stalls", chunk_size=4, stall_after=2),
    "malformed SSE": Reply(text="an answer with a broken event", chunk_size=6, malformed=True),
    "error event mid-stream": Reply(
        text="an answer cut by an error", chunk_size=6, error_mid_stream={"message": "overloaded"}
    ),
    "stream ends without [DONE] or finish": Reply(
        text="partial answer that is cut off", chunk_size=4, drop_after=2
    ),
    "connection reset": Reply(
        text="partial answer, then RST", chunk_size=4, drop_after=2, reset=True
    ),
    "500 until retries run out": Reply(status=500, headers={"Retry-After": "0"}),
    "502 until retries run out": Reply(status=502, headers={"Retry-After": "0"}),
    "503 until retries run out": Reply(status=503, headers={"Retry-After": "0"}),
    "429 with a long Retry-After": Reply(status=429, headers={"Retry-After": "3600"}),
    "400 bad request": Reply(status=400, error={"error": {"message": "bad request"}}),
    "404 unknown model": Reply(status=404, error={"error": {"message": "model not found"}}),
    "500 with an HTML body": Reply(status=500, error={"html": "<h1>oops</h1>" * 1000}),
}


# The server died or stalled after some text: the prompt and that text are kept,
# marked interrupted (as Ctrl-C). Every other fault appends nothing.
KEEPS_PARTIAL = {"stall mid-stream", "stream ends without [DONE] or finish", "connection reset"}
STREAM_ONLY = {"stall mid-stream", "malformed SSE", "error event mid-stream",
               "stream ends without [DONE] or finish", "connection reset"}  # fmt: skip
CASES = [(f, s) for f in FAULTS for s in (True, False) if s or f not in STREAM_ONLY]


@pytest.mark.parametrize(
    ("fault", "stream"), CASES, ids=[f"{f}-{'stream' if s else 'no-stream'}" for f, s in CASES]
)
def test_faults_exit_4_and_change_nothing(
    cli: Cli,
    llm_server: FakeLLMServer,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
    stream: bool,
) -> None:
    monkeypatch.setenv("SESSIONCTL_TIMEOUT", "1")
    extra = [] if stream else ["--no-stream"]
    llm_server.push(Reply(text=ANSWER))
    assert cli("chat", "-s", "old", *direct(llm_server), "earlier").exit_code == 0
    before = snapshot(home)
    llm_server.default = FAULTS[fault]  # retries get the same fault
    asked = len(llm_server.requests)
    for name in ("old", "brand-new"):
        started = time.monotonic()
        result = cli("chat", "-s", name, *direct(llm_server), *extra, "the question")
        elapsed = time.monotonic() - started
        one_error(result, 4)
        assert elapsed < 8, f"{fault}: took {elapsed:.1f}s"
        if stream and fault in KEEPS_PARTIAL:
            kept = [(m["role"], m["content"], m.get("interrupted")) for m in records(home, name)]
            assert result.stdout.endswith("\n")  # what was shown, ended by a newline
            assert kept[-2:] == [
                ("user", "the question", None),
                ("assistant", result.stdout[:-1], True),
            ], kept
            continue
        assert snapshot(home) == before  # nothing appended, nothing created
        assert not (home / "sessions" / "brand-new.jsonl").exists()
        if stream and result.stdout:  # what was streamed stays on screen, ended by a newline
            assert result.stdout.endswith("\n") and result.stdout.strip() in FAULTS[fault].text
        elif not stream:
            assert result.stdout == ""
    if fault.endswith("retries run out"):
        assert len(llm_server.requests) - asked == 2 * 3  # 1 + 2 retries, per attempt
    elif "stream" not in fault and "Retry-After" not in fault:
        assert len(llm_server.requests) - asked <= 2 * 3
    # the provider comes back: the failed prompts were never recorded or sent again
    # (a kept partial answer is history like any other)
    llm_server.default = Reply(text=ANSWER)
    result = cli("chat", "-s", "old", *direct(llm_server), "again")
    assert result.exit_code == 0, result.stderr
    sent = [m["content"] for m in llm_server.requests[-1].body["messages"]]
    if stream and fault in KEEPS_PARTIAL:
        assert sent[:3] == ["earlier", ANSWER, "the question"] and sent[-1] == "again"
    else:
        assert sent == ["earlier", ANSWER, "again"]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_huge_answer_is_stored_exactly(
    cli: Cli, llm_server: FakeLLMServer, home: Path, stream: bool
) -> None:
    line = 'Zeile ü 東京 — "quoted" \\ back\tslash \u2028 sep\n'
    answer = (line * (2 * 1024 * 1024 // len(line.encode()) + 1))[: 2 * 1024 * 1024]
    llm_server.push(Reply(text=answer, chunk_size=64 * 1024))
    extra = [] if stream else ["--no-stream"]
    result = cli("chat", "-s", "huge", *direct(llm_server), *extra, "say a lot")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == answer + "\n"
    stored = records(home, "huge")
    assert [r["role"] for r in stored] == ["user", "assistant"]
    assert stored[1]["content"] == answer
    back = cli("recent", "-s", "huge", "-k", "1", "--json")
    assert json.loads(back.stdout)[0]["content"] == answer


def test_many_tiny_chunks(cli: Cli, llm_server: FakeLLMServer, home: Path) -> None:
    answer = "".join(chr(0x41 + i % 26) for i in range(20000))
    llm_server.push(Reply(text=answer, chunk_size=1))
    result = cli("chat", "-s", "tiny", *direct(llm_server), "spell it")
    assert result.exit_code == 0 and result.stdout == answer + "\n"
    assert records(home, "tiny")[1]["content"] == answer


# -- Ctrl-C: a real process ------------------------------------------------------------------


def _popen(home: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SESSIONCTL_HOME": str(home), "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "sessionctl", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )


def _read_until(proc: subprocess.Popen[bytes], needle: bytes, seconds: float) -> bytes:
    assert proc.stdout is not None
    deadline, got = time.monotonic() + seconds, b""
    while needle not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {needle!r}; got {got!r}"
        if select.select([proc.stdout], [], [], left)[0]:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"EOF before {needle!r}: {got!r}"
            got += chunk
    return got


def _interrupt(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    try:
        proc.send_signal(signal.SIGINT)
        return proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_sigint_mid_stream_keeps_exactly_what_was_shown(
    llm_server: FakeLLMServer, home: Path
) -> None:
    big = b"x" * 100_000
    llm_server.push(Reply(chunks=["Seen part. ", big.decode(), *["more "] * 100], chunk_delay=0.1))
    proc = _popen(home, "chat", "-s", "int", *direct(llm_server), "a long story")
    shown = _read_until(proc, b"Seen part. " + big, 20)
    rest, err = _interrupt(proc)
    assert proc.returncode == 130, err
    assert err.count(b"\n") == 1 and b"interrupted" in err and b"Traceback" not in err
    stored = records(home, "int")
    assert [r["role"] for r in stored] == ["user", "assistant"]
    assert stored[1]["interrupted"] is True
    assert (shown + rest).decode() == stored[1]["content"] + "\n"


def test_sigint_before_the_first_byte(llm_server: FakeLLMServer, home: Path) -> None:
    from sessionctl import Store

    Store(home).session("wait").add_message({"role": "user", "content": "earlier"})
    before = (home / "sessions" / "wait.jsonl").read_bytes()
    llm_server.push(Reply(text=ANSWER, first_byte_delay=5))
    proc = _popen(home, "chat", "-s", "wait", *direct(llm_server), "are you there?")
    deadline = time.monotonic() + 20
    while len(llm_server.requests) < 1:  # the request is out; no answer byte yet
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    out, err = _interrupt(proc)
    assert proc.returncode == 130, err
    assert err.count(b"\n") == 1 and b"Traceback" not in err and out == b""
    after = (home / "sessions" / "wait.jsonl").read_bytes()
    assert after.startswith(before)
    added = [json.loads(line) for line in after[len(before) :].splitlines()]
    # the prompt is kept with what the user saw of the answer: nothing, marked interrupted
    assert [(r["role"], r["content"], r.get("interrupted")) for r in added] in (
        [],
        [("user", "are you there?", None), ("assistant", "", True)],
    )
