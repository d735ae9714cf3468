"""/retry, /edit and /clear, run through SlashCommands against the test server (no terminal)."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from llm_server import FakeLLMServer, Reply, llm_server
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from sessionctl import Store
from sessionctl.cli.render import Output
from sessionctl.cli.repl import Repl
from sessionctl.cli.slash import HELP, compose_in_editor
from sessionctl.cli.state import State
from sessionctl.errors import UsageError
from sessionctl.service.chat import ChatOptions

__all__ = ["llm_server"]  # the fixture, re-exported for pytest


class Harness:
    def __init__(self, repl: Repl, out: io.StringIO) -> None:
        self.repl, self.out = repl, out

    def __call__(self, line: str) -> str:
        """Run one slash command; return what it printed."""
        start = len(self.out.getvalue())
        assert self.repl.slash.dispatch(line) is True
        return self.out.getvalue()[start:]


@pytest.fixture
def slash(llm_server: FakeLLMServer) -> Iterator[Harness]:
    out = io.StringIO()
    state = State(out=Output(out, io.StringIO(), no_color=True))
    opts = ChatOptions(model="test-model", api_base=llm_server.base_url)
    with create_pipe_input() as pipe:
        repl = Repl(state, state.store().session("t"), opts, pt_input=pipe, pt_output=DummyOutput())
        yield Harness(repl, out)


def contents(home: Path, name: str) -> list[str]:
    return [m["content"] for m in Store(home=home).session(name).messages]


def test_retry_asks_again_and_keeps_the_old_answer_in_a_fork(
    slash: Harness, llm_server: FakeLLMServer, home: Path
) -> None:
    session = slash.repl.session
    session.store("first prompt", "first answer")
    session.store("second prompt", "old answer")
    llm_server.push(Reply(text="new answer"))
    printed = slash("/retry")
    assert "new answer" in printed
    assert contents(home, "t") == ["first prompt", "first answer", "second prompt", "new answer"]
    forks = [s for s in Store(home=home).list_sessions().sessions if s.name.startswith("t-retry-")]
    assert len(forks) == 1 and f"kept in session {forks[0].name}" in printed
    assert contents(home, forks[0].name) == [
        "first prompt",
        "first answer",
        "second prompt",
        "old answer",
    ]
    # The model saw the history and the prompt once, not the old answer.
    sent = llm_server.requests[-1].body["messages"]
    assert [m["content"] for m in sent] == ["first prompt", "first answer", "second prompt"]


def test_retry_without_an_answer_is_an_error(slash: Harness, llm_server: FakeLLMServer) -> None:
    with pytest.raises(UsageError, match="/retry needs a last answer"):
        slash("/retry")
    slash.repl.session.add_message({"role": "user", "content": "no answer yet"})
    with pytest.raises(UsageError):
        slash("/retry")
    assert llm_server.requests == []


@pytest.fixture
def editor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """EDITOR is a small script: it records where and how it was asked to edit, then
    appends a prompt to the file."""
    log = tmp_path / "editor.log"
    script = tmp_path / "fake-editor"
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, stat, sys\n"
        "path = sys.argv[-1]\n"
        "d = os.path.dirname(path)\n"
        f"with open({str(log)!r}, 'w') as log:\n"
        "    log.write(f'{path}\\n{oct(stat.S_IMODE(os.stat(d).st_mode))}\\n'\n"
        "              f'{oct(stat.S_IMODE(os.stat(path).st_mode))}\\n{open(path).read()}')\n"
        "with open(path, 'a') as fh:\n"
        "    fh.write('\\nwritten in the editor\\n')\n"
    )
    script.chmod(0o700)
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", str(script))
    return log


def test_edit_sends_what_the_editor_wrote(
    slash: Harness, llm_server: FakeLLMServer, home: Path, editor: Path
) -> None:
    printed = slash("/edit draft:")
    assert llm_server.requests[-1].body["messages"][-1]["content"] == (
        "draft:\nwritten in the editor"
    )
    assert "Hello from the fake model." in printed
    path, dir_mode, file_mode, initial = editor.read_text().split("\n", 3)
    assert (dir_mode, file_mode, initial) == ("0o700", "0o600", "draft:")
    assert not os.path.exists(os.path.dirname(path))  # removed afterwards
    assert contents(home, "t") == ["draft:\nwritten in the editor", "Hello from the fake model."]


def test_edit_prefers_visual_and_reports_a_failing_editor(
    slash: Harness, llm_server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VISUAL", "false")
    monkeypatch.setenv("EDITOR", "true")
    with pytest.raises(UsageError, match="exited with status 1; nothing sent"):
        slash("/edit")
    monkeypatch.setenv("VISUAL", "true")  # leaves the file empty
    assert "(empty; nothing sent)" in slash("/edit")
    monkeypatch.delenv("VISUAL")
    monkeypatch.delenv("EDITOR")
    with pytest.raises(UsageError, match="set VISUAL or EDITOR"):
        compose_in_editor()
    assert llm_server.requests == []


def test_clear_clears_the_screen_not_the_session(slash: Harness, home: Path) -> None:
    slash.repl.session.store("kept prompt", "kept answer")
    assert slash("/clear") == ""  # not a terminal: nothing to clear
    assert contents(home, "t") == ["kept prompt", "kept answer"]
    assert "/clear" in HELP and "the session is kept" in HELP


def test_clear_writes_the_clear_sequence_on_a_terminal(slash: Harness) -> None:
    from rich.console import Console

    screen = io.StringIO()
    slash.repl.console = Console(file=screen, force_terminal=True, width=80)
    slash("/clear")
    assert "\x1b[2J" in screen.getvalue()
