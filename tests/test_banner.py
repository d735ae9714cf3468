"""The REPL says up front when the chosen model has no API key (README step 1 without one)."""

from __future__ import annotations

import io

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from sessionctl.cli.banner import banner_lines
from sessionctl.cli.render import Output
from sessionctl.cli.repl import Repl
from sessionctl.cli.state import State
from sessionctl.llm.models import missing_api_key
from sessionctl.service.chat import ChatOptions


def test_default_model_without_key_names_the_variable_and_a_local_server() -> None:
    lines = banner_lines("work", "gpt-4o-mini", None)
    assert len(lines) == 2
    text, style = lines[1]
    assert style == "yellow"
    assert "no API key for gpt-4o-mini: set OPENAI_API_KEY" in text
    assert "--api-base http://127.0.0.1:8080/v1" in text


@pytest.mark.parametrize(
    ("model", "var"),
    [
        ("gpt-4o-mini", "OPENAI_API_KEY"),
        ("openai/gpt-4o", "OPENAI_API_KEY"),
        ("anthropic/claude-3-5-haiku-latest", "ANTHROPIC_API_KEY"),
        ("claude-haiku-4-5", "ANTHROPIC_API_KEY"),
        ("groq/llama-3.1-8b-instant", "GROQ_API_KEY"),
    ],
)
def test_models_that_need_a_key(model: str, var: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert missing_api_key(model, None) == var
    monkeypatch.setenv(var, "sk-test")
    assert missing_api_key(model, None) is None
    assert len(banner_lines("s", model, None)) == 1


def test_no_note_with_an_api_base_or_a_keyless_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    assert missing_api_key("gpt-4o-mini", "http://127.0.0.1:8080/v1") is None
    assert missing_api_key("ollama/llama3.1", None) is None
    assert missing_api_key("hosted_vllm/m", None) is None
    assert missing_api_key("some-unknown-model", None) is None
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # a compatible server
    assert missing_api_key("gpt-4o-mini", None) is None


def run_banner(opts: ChatOptions) -> str:
    out = io.StringIO()
    state = State(out=Output(out, io.StringIO(), no_color=True))
    with create_pipe_input() as pipe:
        repl = Repl(state, state.store().session("s"), opts, pt_input=pipe, pt_output=DummyOutput())
        pipe.send_text("\x04")  # Ctrl-D at once: only the banner is printed
        repl.run()
    return out.getvalue()


def test_repl_banner_before_the_first_message() -> None:
    shown = run_banner(ChatOptions())
    assert shown.splitlines()[0].startswith("session s · /help")
    assert "no API key for gpt-4o-mini: set OPENAI_API_KEY" in shown
    local = run_banner(ChatOptions(api_base="http://127.0.0.1:8080/v1", model="m"))
    assert "API key" not in local
