"""`sessionctl chat` end to end: the CLI against a real OpenAI-compatible server on 127.0.0.1.

Most tests take the direct (stdlib) path (`--api-base URL -m test-model`). A few take
the litellm path with a model name litellm routes itself (`hosted_vllm/test-model`:
an OpenAI-compatible server at SESSIONCTL_API_BASE); those import litellm in-process
once (~4 s). Subprocess tests cover what only a process shows: SIGINT, no TTY, xargs -P.
"""

from __future__ import annotations

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
from llm_server import FakeLLMServer, Reply, llm_server, refused_port

from sessionctl import llm
from sessionctl.llm import ChatRequest

__all__ = ["llm_server"]  # the fixture, re-exported for pytest

SENTINEL = "sk-SENTINEL-4c1e9b7a2d8f6e30"
ANSWER = "Hello from the fake model."
JSON_KEYS = ["session", "model", "content", "usage", "user_message_id", "assistant_message_id"]
LITELLM_MODEL = "hosted_vllm/test-model"


def direct(server: FakeLLMServer) -> list[str]:
    """Options for the direct path to ``server``."""
    return ["--api-base", server.base_url, "-m", "test-model"]


def transcript(home: Path, name: str) -> Path:
    return home / "sessions" / f"{name}.jsonl"


def records(home: Path, name: str) -> list[dict[str, Any]]:
    """The message records of the transcript file, as written."""
    lines = transcript(home, name).read_text(encoding="utf-8").splitlines()
    parsed = [json.loads(line) for line in lines if line.strip()]
    return [r for r in parsed if r.get("type") == "message"]


def sent(server: FakeLLMServer, i: int = -1) -> list[dict[str, Any]]:
    """The messages the server received in request ``i``."""
    messages: list[dict[str, Any]] = server.requests[i].body["messages"]
    return messages


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.stderr
    return result


def test_routing_assumptions(llm_server: FakeLLMServer) -> None:
    """The option sets used below really take the paths their tests claim."""
    base = llm_server.base_url
    assert llm.uses_direct_path(ChatRequest("test-model", [], api_base=base))
    assert llm.uses_direct_path(ChatRequest("openai/test-model", [], api_base=base))
    assert not llm.uses_direct_path(ChatRequest(LITELLM_MODEL, [], api_base=base))


# -- one-shot ----------------------------------------------------------------------------


def test_one_shot_prompt_prints_exactly_the_answer(
    cli: Cli, llm_server: FakeLLMServer, home: Path
) -> None:
    llm_server.push(Reply(text=ANSWER, chunk_size=3))  # streamed in 9 chunks
    r = ok(cli("chat", "-s", "one", *direct(llm_server), "Say hello"))
    assert r.stdout == ANSWER + "\n"
    assert r.stderr == ""
    body = llm_server.requests[-1].body
    assert body["model"] == "test-model" and body["stream"] is True
    assert sent(llm_server) == [{"role": "user", "content": "Say hello"}]
    assert [(m["role"], m["content"]) for m in records(home, "one")] == [
        ("user", "Say hello"),
        ("assistant", ANSWER),
    ]


def test_piped_stdin_only_and_prompt_plus_stdin(cli: Cli, llm_server: FakeLLMServer) -> None:
    r = ok(cli("chat", "-s", "p", *direct(llm_server), input="from stdin\n"))
    assert r.stdout == ANSWER + "\n"
    assert sent(llm_server)[-1] == {"role": "user", "content": "from stdin"}
    ok(cli("chat", "-s", "p2", *direct(llm_server), "PROMPT", input="STDIN\n"))
    assert sent(llm_server)[-1] == {"role": "user", "content": "PROMPT\n\nSTDIN"}


def test_empty_prompt_is_usage_error(cli: Cli, llm_server: FakeLLMServer, home: Path) -> None:
    r = cli("chat", "-s", "e", *direct(llm_server), input="")
    assert r.exit_code == 2 and "empty prompt" in r.stderr and r.stdout == ""
    assert not llm_server.requests and not transcript(home, "e").exists()


def test_json_output_keys_are_pinned(cli: Cli, llm_server: FakeLLMServer, home: Path) -> None:
    r = ok(cli("chat", "-s", "j", *direct(llm_server), "--json", "hi"))
    data = json.loads(r.stdout)
    assert list(data) == JSON_KEYS
    assert data["session"] == "j" and data["content"] == ANSWER
    assert data["model"] == "test-model-0613"  # the model that answered, as the server says
    assert set(data["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    user, assistant = records(home, "j")
    assert (data["user_message_id"], data["assistant_message_id"]) == (user["id"], assistant["id"])


def test_no_stream(cli: Cli, llm_server: FakeLLMServer, home: Path) -> None:
    llm_server.push(
        Reply(
            text="whole answer",
            usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        )
    )
    r = ok(
        cli(
            "chat",
            "-s",
            "ns",
            *direct(llm_server),
            "--no-stream",
            "--temperature",
            "0.5",
            "--max-tokens",
            "99",
            "hi",
        )
    )
    assert r.stdout == "whole answer\n"
    body = llm_server.requests[-1].body
    assert (body["stream"], body["temperature"], body["max_tokens"]) == (False, 0.5, 99)
    assert (
        records(home, "ns")[-1]["usage"].items()
        >= {
            "prompt_tokens": 3,
            "completion_tokens": 2,
            "total_tokens": 5,
        }.items()
    )


def test_stream_chunks_assembled(cli: Cli, llm_server: FakeLLMServer, home: Path) -> None:
    chunks = ["Fir", "st ", "li", "ne\n", "sec", "ond **bold** ", "ünï", "cödé"]
    llm_server.push(Reply(chunks=chunks))
    r = ok(cli("chat", "-s", "s", *direct(llm_server), "hi"))
    assert r.stdout == "".join(chunks) + "\n"
    assert records(home, "s")[-1]["content"] == "".join(chunks)


def test_generated_session_name_announced(cli: Cli, llm_server: FakeLLMServer, home: Path) -> None:
    r = ok(cli("chat", *direct(llm_server), "hi"))
    assert r.stdout == ANSWER + "\n"
    line = r.stderr.strip()
    assert line.startswith("sessionctl: new session: chat-") and "\n" not in line
    name = line.rsplit(" ", 1)[1]
    assert [m["role"] for m in records(home, name)] == ["user", "assistant"]


def test_continue_most_recent(cli: Cli, llm_server: FakeLLMServer, home: Path) -> None:
    ok(cli("chat", "-s", "older", *direct(llm_server), "first"))
    time.sleep(0.02)
    ok(cli("chat", "-s", "newer", *direct(llm_server), "second"))
    r = ok(cli("chat", "-c", *direct(llm_server), "third"))
    assert r.stderr == "sessionctl: session: newer\n"  # -c says which one it took
    assert [m["content"] for m in sent(llm_server)] == ["second", ANSWER, "third"]
    assert len(records(home, "newer")) == 4 and len(records(home, "older")) == 2
    as_json = ok(cli("chat", "-c", "--json", *direct(llm_server), "fourth"))
    assert json.loads(as_json.stdout)["session"] == "newer"  # stdout: the object alone
    assert as_json.stderr == "sessionctl: session: newer\n"
    named = ok(cli("chat", "-s", "newer", *direct(llm_server), "fifth"))
    assert named.stderr == ""  # named by the user: nothing to say


def test_env_defaults_yield_to_session_memory_and_continue(
    cli: Cli, llm_server: FakeLLMServer, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SESSIONCTL_MODEL is a default: a session's remembered model wins over it, -m over
    both; SESSIONCTL_SESSION is a default for -s, so -c still works with it set."""
    monkeypatch.setenv("SESSIONCTL_MODEL", "env-model")
    base = ["--api-base", llm_server.base_url]
    ok(cli("chat", "-s", "new", *base, "one"))
    assert llm_server.requests[-1].body["model"] == "env-model"  # a new session: the env
    ok(cli("chat", "-s", "w", *base, "-m", "model-x", "two"))
    ok(cli("chat", "-s", "w", *base, "three"))
    assert llm_server.requests[-1].body["model"] == "model-x"
    monkeypatch.setenv("SESSIONCTL_SESSION", "new")
    ok(cli("chat", *base, "four"))
    assert [m["content"] for m in records(home, "new")][-2:] == ["four", ANSWER]
    time.sleep(0.02)
    ok(cli("chat", "-s", "w", *base, "five"))
    ok(cli("chat", "-c", *base, "six"))  # the most recent (w), not the env's session
    assert [m["content"] for m in records(home, "w")][-2:] == ["six", ANSWER]
    assert llm_server.requests[-1].body["model"] == "model-x"


def test_system_env_is_a_default_not_an_override(
    cli: Cli, llm_server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["--api-base", llm_server.base_url, "-m", "test-model"]
    monkeypatch.setenv("SESSIONCTL_SYSTEM", "env system")
    ok(cli("chat", "-s", "fresh", *base, "one"))
    assert llm_server.requests[-1].body["messages"][0] == {
        "role": "system",
        "content": "env system",
    }
    ok(cli("chat", "-s", "kept", *base, "--system", "be terse", "two"))
    ok(cli("chat", "-s", "kept", *base, "three"))
    assert llm_server.requests[-1].body["messages"][0] == {"role": "system", "content": "be terse"}


def test_continue_with_nothing_to_continue(cli: Cli, llm_server: FakeLLMServer) -> None:
    r = cli("chat", "-c", *direct(llm_server), "hi")
    assert r.exit_code == 3 and "no session to continue" in r.stderr
    assert not llm_server.requests


def test_session_and_continue_conflict(cli: Cli, llm_server: FakeLLMServer) -> None:
    r = cli("chat", "-s", "x", "-c", *direct(llm_server), "hi")
    assert r.exit_code == 2 and r.stderr.startswith("sessionctl: error: ") and r.stdout == ""
    assert not llm_server.requests


# -- persistence -------------------------------------------------------------------------


def test_model_and_system_remembered(cli: Cli, llm_server: FakeLLMServer, home: Path) -> None:
    base = ["--api-base", llm_server.base_url]
    ok(cli("chat", "-s", "m", *base, "-m", "model-a", "--system", "Be terse.", "one"))
    ok(cli("chat", "-s", "m", *base, "two"))  # no -m, no --system: the session's
    body = llm_server.requests[-1].body
    assert body["model"] == "model-a"
    assert body["messages"][0] == {"role": "system", "content": "Be terse."}
    assert [m["content"] for m in body["messages"][1:]] == ["one", ANSWER, "two"]
    ok(cli("chat", "-s", "m", *base, "-m", "model-b", "--system", "Be kind.", "three"))
    ok(cli("chat", "-s", "m", *base, "four"))
    body = llm_server.requests[-1].body
    assert body["model"] == "model-b"
    assert body["messages"][0] == {"role": "system", "content": "Be kind."}
    assert [m["content"] for m in body["messages"]].count("Be terse.") == 0
    header = json.loads(transcript(home, "m").read_text().splitlines()[0])
    assert (header.get("model"), header.get("system")) == ("model-b", "Be kind.")


def test_usage_and_answering_model_recorded(cli: Cli, llm_server: FakeLLMServer) -> None:
    usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    llm_server.push(Reply(text="ok", model="served-model-x", usage=usage))
    ok(cli("chat", "-s", "u", *direct(llm_server), "hi"))
    raw = json.loads(ok(cli("recent", "-s", "u", "--raw")).stdout)
    assert raw[-1]["role"] == "assistant" and raw[-1]["content"] == "ok"
    assert raw[-1]["model"] == "served-model-x"
    assert usage.items() <= raw[-1]["usage"].items()  # the provider's, plus what was measured
    assert raw[-1]["usage"]["cost_usd"] is None and raw[-1]["usage"]["latency_s"] >= 0
    assert "interrupted" not in raw[-1] or raw[-1]["interrupted"] is False


def test_litellm_path_end_to_end(
    cli: Cli, llm_server: FakeLLMServer, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The litellm path: streaming, --json, --no-stream, history and system prompt."""
    monkeypatch.setenv("SESSIONCTL_API_BASE", llm_server.base_url)
    llm_server.push(Reply(text="via litellm, streamed", chunk_size=4))
    r = ok(cli("chat", "-s", "lt", "-m", LITELLM_MODEL, "--system", "Sys.", "first"))
    assert r.stdout == "via litellm, streamed\n"
    assert llm_server.requests[-1].headers.get("User-Agent", "").startswith(("litellm", "OpenAI"))
    assert llm_server.requests[-1].body["model"] == "test-model"
    llm_server.push(Reply(text="second answer"))
    r = ok(cli("chat", "-s", "lt", "--no-stream", "--json", "second"))
    data = json.loads(r.stdout)
    assert list(data) == JSON_KEYS and data["content"] == "second answer"
    body = llm_server.requests[-1].body
    assert body["stream"] is False and body["model"] == "test-model"  # remembered model
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("system", "Sys."),
        ("user", "first"),
        ("assistant", "via litellm, streamed"),
        ("user", "second"),
    ]
    rec = records(home, "lt")
    assert [m["content"] for m in rec] == [
        "first",
        "via litellm, streamed",
        "second",
        "second answer",
    ]
    assert rec[-1]["usage"]["total_tokens"] > 0


# -- context assembly ----------------------------------------------------------------------


def seed(home: Path, name: str, contents: list[str]) -> None:
    """Write alternating user/assistant messages without a model."""
    from sessionctl import Store

    session = Store(home=home).session(name)
    session.add_messages(
        [{"role": ("user", "assistant")[i % 2], "content": c} for i, c in enumerate(contents)]
    )


def test_history_sent_in_order(cli: Cli, llm_server: FakeLLMServer, home: Path) -> None:
    seed(home, "h", ["u1", "a1", "u2", "a2"])
    ok(cli("chat", "-s", "h", *direct(llm_server), "--system", "S", "u3"))
    assert [(m["role"], m["content"]) for m in sent(llm_server)] == [
        ("system", "S"),
        ("user", "u1"),
        ("assistant", "a1"),
        ("user", "u2"),
        ("assistant", "a2"),
        ("user", "u3"),
    ]


def test_no_context_and_context_recent(cli: Cli, llm_server: FakeLLMServer, home: Path) -> None:
    seed(home, "c", ["u1", "a1", "u2", "a2"])
    ok(cli("chat", "-s", "c", *direct(llm_server), "--system", "S", "--no-context", "q1"))
    assert sent(llm_server) == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "q1"},
    ]
    ok(
        cli(
            "chat",
            "-s",
            "c",
            *direct(llm_server),
            "--context-recent",
            "2",
            "--context-relevant",
            "0",
            "q2",
        )
    )
    assert [m["content"] for m in sent(llm_server)] == ["S", "q1", ANSWER, "q2"]


def test_show_context_sends_nothing(cli: Cli, llm_server: FakeLLMServer, home: Path) -> None:
    seed(home, "sc", ["u1", "a1"])
    before = transcript(home, "sc").read_bytes()
    r = ok(cli("chat", "-s", "sc", *direct(llm_server), "--system", "S", "--show-context", "q"))
    data = json.loads(r.stdout)
    assert data["messages"] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q"},
    ]
    assert data["model"] == "test-model" and data["tokens"] > 0 and data["recent_seqs"] == [1, 2]
    assert not llm_server.requests
    assert transcript(home, "sc").read_bytes() == before


def test_long_session_sends_relevant_early_message(
    cli: Cli, llm_server: FakeLLMServer, home: Path
) -> None:
    """History longer than the window: the early fact comes back through the index."""
    filler = [
        "What is the capital of France?",
        "Paris is the capital of France.",
        "How do I sort a list in Python?",
        "Use sorted(items) or items.sort().",
        "Recommend a hiking trail near Denver.",
        "Try the Mount Falcon loop.",
        "What's a good sourdough hydration?",
        "Around 75 percent works well.",
        "Explain TCP slow start briefly.",
        "The congestion window doubles each round trip.",
    ]
    seed(home, "long", ["My cat is called Miso.", "Noted.", *filler])
    ok(
        cli(
            "chat",
            "-s",
            "long",
            *direct(llm_server),
            "--context-recent",
            "2",
            "--context-relevant",
            "1",
            "What is my cat called?",
        )
    )
    contents = [m["content"] for m in sent(llm_server)]
    assert contents[0] == "My cat is called Miso."  # the relevant older message, first
    assert contents[-3:] == [*filler[-2:], "What is my cat called?"]  # then the recent window
    assert len(contents) == 4


# -- failures ------------------------------------------------------------------------------

FAILURES = {
    "401": Reply(status=401, echo_auth=True),
    "429": Reply(status=429, headers={"Retry-After": "0"}),
    "500": Reply(status=500, headers={"Retry-After": "0"}),
    "dropped": Reply(text="partial answer that is cut off", chunk_size=4, drop_after=2),
    "reset": Reply(text="partial answer that is cut off", chunk_size=4, drop_after=2, reset=True),
    "stall": Reply(text="partial answer that stalls", chunk_size=4, stall_after=2),
    "no-first-byte": Reply(first_byte_delay=5),
}


@pytest.mark.parametrize("kind", [*FAILURES, "refused"])
def test_failure_exit_4_and_keeps_only_what_was_streamed(
    cli: Cli, llm_server: FakeLLMServer, home: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    monkeypatch.setenv("SESSIONCTL_TIMEOUT", "1")
    ok(cli("chat", "-s", "f", *direct(llm_server), "earlier"))
    before = transcript(home, "f").read_bytes()
    if kind == "refused":
        base = f"http://127.0.0.1:{refused_port()}/v1"
    else:
        base = llm_server.base_url
        llm_server.default = FAILURES[kind]  # retried requests get it too
    started = time.monotonic()
    r = cli("chat", "-s", "f", "--api-base", base, "-m", "test-model", "question")
    assert r.exit_code == 4, (r.stdout, r.stderr)
    assert time.monotonic() - started < 8
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sessionctl: error: "), r.stderr
    after = transcript(home, "f").read_bytes()
    if kind in ("dropped", "reset", "stall"):
        # The server died or stalled mid-answer: the prompt and what was streamed are
        # kept, marked interrupted, as after Ctrl-C (issue: a dead server lost the turn).
        assert after.startswith(before) and "partial answer was saved" in r.stderr
        added = [json.loads(line) for line in after[len(before) :].splitlines()]
        assert [(m["role"], m["content"]) for m in added] == [
            ("user", "question"),
            ("assistant", "partial "),
        ]
        assert added[1]["interrupted"] is True
        before = after
    assert after == before
    for secret in (SENTINEL, SENTINEL[-12:]):
        assert secret not in r.stderr and secret not in r.stdout
        assert secret.encode() not in before
    if kind in ("dropped", "reset", "stall"):
        # what was streamed stays on the terminal, ended by a newline; nothing else
        assert r.stdout == "partial \n"
    else:
        assert r.stdout == ""
    if kind != "refused":
        auth = llm_server.requests[-1].headers.get("Authorization")
        assert auth == f"Bearer {SENTINEL}"  # the key was sent, and only there


def test_failure_on_litellm_path(
    cli: Cli, llm_server: FakeLLMServer, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    monkeypatch.setenv("HOSTED_VLLM_API_KEY", SENTINEL)
    monkeypatch.setenv("SESSIONCTL_API_BASE", llm_server.base_url)
    ok(cli("chat", "-s", "lf", "-m", LITELLM_MODEL, "earlier"))
    before = transcript(home, "lf").read_bytes()
    llm_server.default = Reply(status=401, echo_auth=True)
    r = cli("chat", "-s", "lf", "question")
    assert r.exit_code == 4 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and SENTINEL not in r.stderr
    assert transcript(home, "lf").read_bytes() == before


# -- processes -----------------------------------------------------------------------------


def popen(*args: str, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        [sys.executable, "-m", "sessionctl", *args], cwd=REPO, env=dict(os.environ), **kw
    )


def read_until(proc: subprocess.Popen[bytes], needle: bytes, deadline: float) -> bytes:
    assert proc.stdout is not None
    fd, got = proc.stdout.fileno(), b""
    while needle not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {needle!r}; got {got!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"EOF before {needle!r}; got {got!r}"
            got += chunk
    return got


def test_sigint_keeps_partial_answer(llm_server: FakeLLMServer, home: Path) -> None:
    llm_server.push(Reply(chunks=["First part. ", *["more "] * 50], chunk_delay=0.2))
    proc = popen(
        "chat",
        "-s",
        "int",
        *direct(llm_server),
        "tell me a long story",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        shown = read_until(proc, b"First part.", time.monotonic() + 20)
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert b"interrupted" in err and len(err.splitlines()) == 1
    out = (shown + rest).decode()
    rec = records(home, "int")
    assert [m["role"] for m in rec] == ["user", "assistant"]
    assert rec[0]["content"] == "tell me a long story"
    assert rec[1]["interrupted"] is True
    assert rec[1]["content"].startswith("First part.")
    assert out == rec[1]["content"] + "\n"  # exactly what the user saw was kept
    assert llm_server.disconnected.wait(5)  # and the connection was dropped


def test_no_tty_at_all(llm_server: FakeLLMServer, home: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sessionctl", "chat", "-s", "cron", *direct(llm_server), "hi"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ),
        start_new_session=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, ANSWER + "\n", "")
    # stdin closed altogether (`<&-`): still a one-shot, not a crash
    cmd = (
        f'"{sys.executable}" -m sessionctl chat -s cron --api-base {llm_server.base_url} again <&-'
    )
    proc = subprocess.run(
        ["sh", "-c", cmd],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ),
        start_new_session=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, ANSWER + "\n", "")
    assert [m["content"] for m in records(home, "cron")] == ["hi", ANSWER, "again", ANSWER]


def test_xargs_parallel_one_shots(llm_server: FakeLLMServer, home: Path) -> None:
    llm_server.default = Reply(text=ANSWER, chunk_size=3, chunk_delay=0.01)
    cmd = (
        f'printf "q1\\nq2\\nq3\\nq4\\n" | xargs -P 4 -I{{}} "{sys.executable}" -m sessionctl '
        f"chat -s par --api-base {llm_server.base_url} -m test-model {{}}"
    )
    proc = subprocess.run(
        ["sh", "-c", cmd],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout) == sorted((ANSWER + "\n") * 4)  # the processes share stdout
    rec = records(home, "par")
    assert [m["seq"] for m in rec] == list(range(1, 9))
    assert len({m["id"] for m in rec}) == 8
    assert sorted(m["content"] for m in rec[0::2]) == ["q1", "q2", "q3", "q4"]
    assert all(m["role"] == "user" for m in rec[0::2])
    assert all(m["role"] == "assistant" and m["content"] == ANSWER for m in rec[1::2])
    header = json.loads(transcript(home, "par").read_text().splitlines()[0])
    assert header.get("model") == "test-model"
    # without -s, parallel starts in the same second get a new session each
    proc = subprocess.run(
        ["sh", "-c", cmd.replace("-s par ", "")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    names = sorted(line.rsplit(" ", 1)[1] for line in proc.stderr.splitlines())
    assert len(set(names)) == 4, proc.stderr
    assert all(len(records(home, n)) == 2 for n in names)


def test_a_history_longer_than_the_read_window_but_fitting_is_sent_whole_without_a_search(
    cli: Cli, llm_server: FakeLLMServer, home: Path
) -> None:
    from sessionctl import Store
    from sessionctl.service.window import HISTORY_WINDOW

    count = HISTORY_WINDOW + 7
    Store(home).session("long").add_messages(
        [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"}
         for i in range(count)]
    )  # fmt: skip
    ok(cli("chat", "-s", "long", *direct(llm_server), "--context-window", "1000000", "next"))
    assert [m["content"] for m in sent(llm_server)] == [
        *(f"turn {i}" for i in range(count)),
        "next",
    ]
    # Everything fitted: no semantic search, so no index was built (no model loaded).
    assert not list((home / "sessions").glob("long.*faiss*"))
    assert not (home / "index").exists()
    # A window that cannot hold it still brings the newest turns, and searches.
    ok(cli("chat", "-s", "long", *direct(llm_server), "--context-window", "2000", "again"))
    assert sent(llm_server)[-1]["content"] == "again"
    assert len(sent(llm_server)) < count
