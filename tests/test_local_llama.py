"""End to end against a real llama-server (see tests/local_llama.py): both routes."""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

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
