"""End to end against a real llama-server (see tests/local_llama.py): both routes."""

from __future__ import annotations

import io
import json
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from llm_server import refused_port
from local_llama import LlamaServer, llama, llama_session
from token_samples import samples

from sessionctl.llm.tokens import estimate_text

__all__ = ["llama", "llama_session"]

pytestmark = pytest.mark.local_llama

Sh = Callable[..., subprocess.CompletedProcess[str]]


def test_one_shot_answer_streams_from_the_real_server(llama: LlamaServer, sh: Sh) -> None:
    done = sh(
        "chat", "-s", "t", "-m", llama.alias, "--api-base", llama.api_base,
        "--max-tokens", "8", "--json", "Say hi",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["session"] == "t"
    assert out["usage"]["prompt_tokens"] > 0


def _show(sh: Sh, llama: LlamaServer, *extra: str, env: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    done = sh(
        "chat", "-s", "w", "-m", llama.alias, "--api-base", llama.api_base, "--show-context",
        *extra, "hello", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _show_model(sh: Sh, llama: LlamaServer, *args: str, env: dict[str, str] | None = None) -> Any:
    done = sh(
        "chat", "-s", "w", "--api-base", llama.api_base, "--show-context", *args, "hello",
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_window_is_learned_from_the_server_and_cached(
    llama: LlamaServer, sh: Sh, home: Path
) -> None:
    shown = _show(sh, llama)
    assert shown["context_window"] == llama.window == 2048
    assert shown["context_window_source"] == f"server {llama.api_base}"
    facts = home / "server-facts.json"
    assert stat.S_IMODE(facts.stat().st_mode) == 0o600
    cached = json.loads(facts.read_text())
    (key,) = cached
    assert cached[key]["value"] == 2048
    # Within the TTL the cache answers (the server is not asked again).
    cached[key]["value"] = 3000
    facts.write_text(json.dumps(cached))
    assert _show(sh, llama)["context_window"] == 3000
    # Expired: asked again.
    cached[key]["at"] -= 3600
    facts.write_text(json.dumps(cached))
    assert _show(sh, llama)["context_window"] == 2048


def test_explicit_window_beats_the_server(llama: LlamaServer, sh: Sh) -> None:
    shown = _show(sh, llama, "--context-window", "1024")
    assert (shown["context_window"], shown["context_window_source"]) == (1024, "--context-window")
    shown = _show(sh, llama, env={"SESSIONCTL_CONTEXT_WINDOW": "1500"})
    assert (shown["context_window"], shown["context_window_source"]) == (
        1500,
        "SESSIONCTL_CONTEXT_WINDOW",
    )


def test_a_server_that_says_nothing_leaves_the_default(sh: Sh) -> None:
    done = sh(
        "chat", "-s", "w", "-m", "local-thing", "--api-base", f"http://127.0.0.1:{refused_port()}/v1",
        "--show-context", "hello",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["context_window"] == 8192
    assert shown["context_window_source"].startswith("default 8192")


def test_estimate_is_an_upper_bound_of_gemmas_tokenizer(llama: LlamaServer) -> None:
    for name, text in samples().items():
        assert estimate_text(text) >= llama.tokenize(text), name


def test_near_the_window_the_server_counts_exactly(llama: LlamaServer, sh: Sh, home: Path) -> None:
    from sessionctl.service.store import Store

    numbers = " ".join(str(i * 7919 % 100000) for i in range(120))  # ~700 Gemma tokens
    session = Store(home).session("big")
    session.add_messages(
        [{"role": "user", "content": numbers}, {"role": "assistant", "content": numbers}]
    )
    shown = _show(sh, llama, env={})
    assert shown["exact"] is False  # nothing near the window: the estimate suffices
    done = sh(
        "chat", "-s", "big", "-m", llama.alias, "--api-base", llama.api_base, "--show-context",
        "hello",
    )  # fmt: skip
    shown = json.loads(done.stdout)
    assert shown["exact"] is True
    exact = sum(llama.tokenize(m["content"]) for m in shown["messages"])
    # the server's count of the contents, plus the template's few tokens per message
    assert exact < shown["tokens"] <= exact + 10 * len(shown["messages"]) + 4
    assert shown["tokens"] <= shown["budget"]


def _long_session(home: Path, name: str, turns: int = 30) -> None:
    from sessionctl.service.store import Store

    session = Store(home).session(name)
    batch: list[dict[str, str]] = []
    for i in range(turns):
        batch.append({"role": "user", "content": f"question {i}: " + "lorem ipsum dolor " * 20})
        batch.append({"role": "assistant", "content": f"answer {i}: " + "sit amet consec " * 20})
    session.add_messages(batch)


def test_a_session_far_larger_than_the_window_is_trimmed(
    llama: LlamaServer, sh: Sh, home: Path
) -> None:
    _long_session(home, "long")  # ~60 x 90 tokens: about 3 windows
    args = ("-s", "long", "-m", llama.alias, "--api-base", llama.api_base, "--max-tokens", "8")
    done = sh("chat", *args, "--json", "what was question 3?")
    assert done.returncode == 0, done.stderr
    assert "retrying" not in done.stderr
    out = json.loads(done.stdout)
    assert 0 < out["usage"]["prompt_tokens"] <= llama.window - 8


def test_a_wrong_larger_window_overflows_then_is_trimmed_and_retried(
    llama: LlamaServer, sh: Sh, home: Path
) -> None:
    _long_session(home, "over")
    args = ("-s", "over", "-m", llama.alias, "--api-base", llama.api_base, "--max-tokens", "8")
    done = sh("chat", *args, "--context-window", "16384", "--json", "and question 4?")
    assert done.returncode == 0, done.stderr
    notice = [line for line in done.stderr.splitlines() if "retrying once" in line]
    assert len(notice) == 1, done.stderr
    assert "2048" in notice[0]
    out = json.loads(done.stdout)
    assert out["usage"]["prompt_tokens"] <= llama.window
    shown = sh("show", "over", "--json")
    assert shown.returncode == 0, shown.stderr
    assert (
        shown.stdout.count('"role": "assistant"') + shown.stdout.count('"role":"assistant"') >= 31
    )


def test_an_overflow_that_trimming_cannot_fix_is_exit_4(
    llama: LlamaServer, sh: Sh, home: Path
) -> None:
    # The prompt alone is beyond the real window; --force sends it, the server refuses,
    # nothing is left to trim: exit 4, nothing written.
    prompt = " ".join(str(i) for i in range(2000))
    done = sh(
        "chat", "-s", "huge", "-m", llama.alias, "--api-base", llama.api_base,
        "--context-window", "100000", prompt,
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert "too long" in done.stderr or "context" in done.stderr
    assert not (home / "sessions" / "huge.jsonl").exists()


def test_via_forces_the_route(llama: LlamaServer, sh: Sh) -> None:
    def via(*args: str, env: dict[str, str] | None = None) -> str:
        return str(_show_model(sh, llama, *args, env=env)["via"])

    assert via("-m", "gemma3") == "direct"
    assert via("-m", "gemma3", "--via", "litellm") == "litellm"
    assert via("-m", "hosted_vllm/gemma3") == "litellm"
    assert via("-m", "hosted_vllm/gemma3", "--via", "direct") == "direct"
    assert via("-m", "hosted_vllm/gemma3", env={"SESSIONCTL_VIA": "direct"}) == "direct"
    done = sh(
        "chat", "-s", "v", "-m", "hosted_vllm/gemma3", "--api-base", llama.api_base,
        "--via", "direct", "--max-tokens", "4", "--json", "hi",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["usage"]["completion_tokens"] > 0


def test_litellm_route_exits_right_after_the_answer(llama: LlamaServer, home: Path) -> None:
    import os
    import sys
    import time

    from conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [
        sys.executable, "-m", "sessionctl", "chat", "-s", "l", "-m", "openai/gemma3",
        "--api-base", llama.api_base, "--via", "litellm", "--max-tokens", "4", "hi",
    ]  # fmt: skip
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        # a binary pipe is buffered: typeshed's IO[bytes] lacks the read1 it has
        assert isinstance(proc.stdout, io.BufferedReader) and proc.stderr is not None
        out = b""
        answered = time.monotonic()
        while chunk := proc.stdout.read1(65536):  # the last chunk ends the answer's line
            out += chunk
            answered = time.monotonic()
        proc.wait(timeout=60)
        after = time.monotonic() - answered
        err = proc.stderr.read().decode()
    assert proc.returncode == 0, err
    assert out.strip()
    assert after < 1.0, f"{after:.2f} s between the answer and the exit"
    assert (home / "sessions" / "l.jsonl").exists()


def test_usage_is_recorded_and_stats_sum_it(llama: LlamaServer, sh: Sh, home: Path) -> None:
    from sessionctl.service.store import Store

    args = ("-s", "u", "-m", llama.alias, "--api-base", llama.api_base, "--max-tokens", "4")
    for prompt in ("one", "two"):
        done = sh("chat", *args, prompt)
        assert done.returncode == 0, done.stderr
    answers = [m for m in Store(home).session("u").get_messages() if m.role == "assistant"]
    for m in answers:
        assert m.usage is not None
        assert m.usage["input_tokens"] > 0 and 0 < m.usage["output_tokens"] <= 4
        assert m.usage["latency_s"] >= m.usage["ttft_s"] > 0
        assert m.usage["cost_usd"] is None  # not in litellm's price table
    report = json.loads(sh("stats", "--json").stdout)
    assert report["total"]["answers"] == 2
    assert report["total"]["input_tokens"] == sum(m.usage["input_tokens"] for m in answers)  # type: ignore[index]
    assert report["total"]["cost_usd"] is None and report["total"]["cost_unknown"] == 2


def test_an_overflow_corrects_a_wrong_cached_window(llama: LlamaServer, sh: Sh, home: Path) -> None:
    # As if the server had been restarted with a smaller -c within the cache's TTL.
    assert _show(sh, llama)["context_window"] == 2048
    facts = home / "server-facts.json"
    cached = json.loads(facts.read_text())
    (key,) = cached
    cached[key]["value"] = 16384
    facts.write_text(json.dumps(cached))
    _long_session(home, "w")
    done = sh(
        "chat", "-s", "w", "-m", llama.alias, "--api-base", llama.api_base,
        "--max-tokens", "4", "--context-relevant", "0", "again",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "retrying once" in done.stderr
    assert json.loads(facts.read_text())[key]["value"] == 2048
    assert _show(sh, llama)["context_window_source"] == f"server {llama.api_base}"


def test_compact_appends_a_summary_and_chat_uses_it(llama: LlamaServer, sh: Sh, home: Path) -> None:
    from sessionctl.service.compact import summary_range
    from sessionctl.service.store import Store

    _long_session(home, "c", turns=20)  # 40 messages, about 1.5 windows
    before = Store(home).session("c").get_messages()
    base = ("-m", llama.alias, "--api-base", llama.api_base)
    done = sh("compact", "c", *base, "--keep-last", "6", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["covers"] == {"from": 1, "to": 34} and out["role"] == "system"
    after = Store(home).session("c").get_messages()
    assert after[: len(before)] == before  # nothing rewritten
    assert summary_range(after[-1]) == (1, 34)
    shown = json.loads(
        sh("chat", "-s", "c", *base, "--context-relevant", "0", "--show-context", "x").stdout
    )
    system = shown["messages"][0]
    assert system["role"] == "system" and "messages 1-34" in system["content"]
    assert shown["recent_seqs"] and min(shown["recent_seqs"]) > 34
    assert all("summary" not in str(m.get("metadata")) for m in shown["messages"])
    done = sh("chat", "-s", "c", *base, "--max-tokens", "4", "--context-relevant", "0", "next")
    assert done.returncode == 0, done.stderr
    # nothing more to summarise: a usage error, nothing written
    again = sh("compact", "c", *base, "--keep-last", "100")
    assert again.returncode == 2 and "nothing to compact" in again.stderr


def test_a_failed_compaction_writes_nothing(sh: Sh, home: Path) -> None:
    _long_session(home, "f", turns=10)
    size = (home / "sessions" / "f.jsonl").stat().st_size
    dead = f"http://127.0.0.1:{refused_port()}/v1"
    done = sh("compact", "f", "-m", "gemma3", "--api-base", dead, "--keep-last", "2")
    assert done.returncode == 4, done.stderr
    assert (home / "sessions" / "f.jsonl").stat().st_size == size


def test_killing_the_server_mid_answer_keeps_the_partial_answer(
    llama: LlamaServer, tmp_path: Path, home: Path
) -> None:
    import os
    import sys

    from conftest import REPO
    from local_llama import start_server, stop_server

    from sessionctl.service.store import Store

    (tmp_path / "own").mkdir()
    own = start_server(tmp_path / "own")  # not the shared one: this one is killed
    try:
        argv = [
            sys.executable, "-m", "sessionctl", "chat", "-s", "k", "-m", own.alias,
            "--api-base", own.api_base, "--max-tokens", "400", "Count from one to a hundred.",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        ) as proc:
            assert isinstance(proc.stdout, io.BufferedReader) and proc.stderr is not None
            first = proc.stdout.read1(1)  # the answer has started
            own.process.kill()
            proc.wait(timeout=60)
            err = proc.stderr.read().decode()
    finally:
        stop_server(own)
    assert first
    assert proc.returncode == 4, err
    assert "partial answer was saved" in err
    answer = Store(home).session("k").get_messages()[-1]
    assert answer.role == "assistant" and answer.interrupted and answer.content
