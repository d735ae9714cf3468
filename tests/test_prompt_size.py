"""A prompt bigger than the model's window is refused before anything is sent or written.

The real CLI (a subprocess) against the OpenAI-compatible test server on 127.0.0.1:
`test-model` is not in litellm's model map, so its window is the assumed 8,192 tokens.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Cli
from llm_server import FakeLLMServer, llm_server

__all__ = ["llm_server"]  # the fixture, re-exported for pytest

Sh = Callable[..., subprocess.CompletedProcess[str]]
MEGABYTE = ("lorem ipsum dolor sit amet " * 40 + "\n") * 960  # ~1 MB of text


def direct(server: FakeLLMServer) -> list[str]:
    return ["--api-base", server.base_url, "-m", "test-model"]


def chats(server: FakeLLMServer) -> list[Any]:
    """The chat calls the server got (counting tokens with /tokenize sends no chat)."""
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


def test_megabyte_prompt_is_refused_with_exit_2(
    sh: Sh, llm_server: FakeLLMServer, home: Path
) -> None:
    assert len(MEGABYTE) > 1_000_000
    r = sh("chat", "-s", "big", *direct(llm_server), input=MEGABYTE)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    error = lines[0]
    assert error.startswith("sessionctl: error: the prompt is about ")
    tokens = int(error.split("about ", 1)[1].split(" ", 1)[0])
    assert tokens > 200_000
    assert "8192-token context window" in error and "test-model" in error
    assert "--force" in error and "--context-window" in error
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert chats(llm_server) == []  # nothing was sent
    assert not (home / "sessions" / "big.jsonl").exists()  # nothing was written


def test_force_sends_it_with_a_warning(sh: Sh, llm_server: FakeLLMServer, home: Path) -> None:
    r = sh("chat", "-s", "big", *direct(llm_server), "--force", input=MEGABYTE)
    assert r.returncode == 0, r.stderr
    assert "warning: sending a prompt of about" in r.stderr and "--force" in r.stderr
    assert len(chats(llm_server)) == 1
    assert chats(llm_server)[0].body["messages"][-1]["content"] == MEGABYTE.rstrip("\n")


def test_a_larger_context_window_lets_it_through_without_warning(
    cli: Cli, llm_server: FakeLLMServer
) -> None:
    prompt = "word " * 20_000  # ~33k estimated tokens: over 8,192, under 1,000,000
    refused = cli("chat", "-s", "w", *direct(llm_server), prompt)
    assert refused.exit_code == 2 and not chats(llm_server)
    r = cli("chat", "-s", "w", *direct(llm_server), "--context-window", "1000000", prompt)
    assert r.exit_code == 0, r.stderr
    assert "warning" not in r.stderr and len(chats(llm_server)) == 1


def test_context_window_setting_in_config(cli: Cli, llm_server: FakeLLMServer) -> None:
    prompt = "word " * 20_000
    assert cli("config", "set", "context_window", "0").exit_code == 2
    assert cli("config", "set", "context_window", "1000000").exit_code == 0
    r = cli("chat", "-s", "w", *direct(llm_server), prompt)
    assert r.exit_code == 0, r.stderr
    r = cli("chat", "-s", "w2", *direct(llm_server), "--show-context", "hi")
    assert '"context_window": 1000000' in r.stdout


def test_repl_turn_is_refused_too(cli: Cli, llm_server: FakeLLMServer, home: Path) -> None:
    """The REPL uses the same turn preparation: its error is the same one line."""
    from sessionctl.cli.state import State
    from sessionctl.errors import PromptTooLarge
    from sessionctl.service.chat import ChatOptions, prepare_turn

    state = State(home=home)
    session = state.store().session("r")
    opts = ChatOptions(model="test-model", api_base=llm_server.base_url)
    try:
        prepare_turn(state.store(), session, "word " * 20_000, opts)
    except PromptTooLarge as exc:
        assert "--force" in exc.message
    else:
        raise AssertionError("not refused")
    assert not session.exists and not chats(llm_server)
