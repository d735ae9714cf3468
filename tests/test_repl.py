"""The interactive chat: `Repl` driven through prompt-toolkit's pipe input, and once in tmux.

Keys are typed into a pipe (Enter is "\\r", Ctrl-D "\\x04"); the REPL's notes and answers
go to a StringIO through the real Output/rich Console. Answers come from the fake
OpenAI-compatible server over real HTTP (the direct path).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from llm_server import FakeLLMServer, Reply, llm_server
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from sessionctl.cli.render import Output
from sessionctl.cli.repl import Repl
from sessionctl.cli.slash import HELP
from sessionctl.cli.state import State
from sessionctl.service.chat import ChatOptions

__all__ = ["llm_server"]  # the fixture, re-exported for pytest

ANSWER = "Hello from the fake model."


@pytest.fixture(autouse=True)
def close_stray_event_loop() -> None:
    """litellm, used by earlier tests in this process, leaves an event loop set on the
    main thread; prompt-toolkit's prompt() unsets it and the garbage collector then
    reports it unclosed (a ResourceWarning, an error here) in whichever test it runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:  # none set (newer Pythons do not create one)
            return
    if not loop.is_running():
        loop.close()
        asyncio.set_event_loop(None)


class Driven:
    """One REPL run: what it printed, the Repl object, its state."""

    def __init__(self, out: str, err: str, repl: Repl) -> None:
        self.out, self.err, self.repl = out, err, repl


def drive(
    server: FakeLLMServer,
    keys: str,
    *,
    session: str = "t",
    before: Callable[[Repl], Any] | None = None,
    **opts: Any,
) -> Driven:
    """Run a Repl on ``session`` with ``keys`` typed; ``keys`` must end the REPL."""
    assert keys.endswith(("\x04", "/exit\r")), "the REPL would wait for more input"
    opts.setdefault("api_base", server.base_url)
    opts.setdefault("model", "test-model")
    out, err = io.StringIO(), io.StringIO()
    state = State(out=Output(out, err, no_color=True))
    with create_pipe_input() as pipe:
        repl = Repl(
            state,
            state.store().session(session),
            ChatOptions(**opts),
            pt_input=pipe,
            pt_output=DummyOutput(),
        )
        if before is not None:
            before(repl)
        pipe.send_text(keys)
        repl.run()
    return Driven(out.getvalue(), err.getvalue(), repl)


def records(home: Path, name: str) -> list[dict[str, Any]]:
    from sessionctl import Store

    return Store(home=home).session(name).messages


def header(home: Path, name: str) -> dict[str, Any]:
    first = (home / "sessions" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()[0]
    return json.loads(first)  # type: ignore[no-any-return]


def contents(home: Path, name: str) -> list[str]:
    return [m["content"] for m in records(home, name)]


def test_turn_and_ctrl_d(llm_server: FakeLLMServer, home: Path) -> None:
    llm_server.push(Reply(text="A **bold** answer", chunk_size=3))
    run = drive(llm_server, "hello there\r\x04")
    assert llm_server.requests[-1].body["messages"] == [{"role": "user", "content": "hello there"}]
    assert contents(home, "t") == ["hello there", "A **bold** answer"]
    lines = run.out.splitlines()
    assert lines[0].startswith("session t · /help")
    assert "A bold answer" in lines  # rendered as Markdown, on its own line
    assert lines[lines.index("A bold answer") + 1].startswith("test-model-0613 · ")
    assert run.err == ""


def test_history_file_private(llm_server: FakeLLMServer, home: Path) -> None:
    drive(llm_server, "remember this line\r\x04")
    path = home / "history"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "remember this line" in path.read_text()


def test_help_recent_and_unknown_command(llm_server: FakeLLMServer, home: Path) -> None:
    run = drive(llm_server, "q1\r/help\r/recent 1\r/foo bar\r/recent 2\r\x04")
    assert HELP in run.out
    assert f"assistant: {ANSWER}\n" in run.out
    assert "error: unknown command /foo: /help lists them" in run.out
    # the loop went on after the error: /recent 2 ran
    tail = run.out.split("unknown command /foo")[1]
    assert f"user: q1\nassistant: {ANSWER}\n" in tail
    assert len(llm_server.requests) == 1


def test_model_and_system_persisted(llm_server: FakeLLMServer, home: Path) -> None:
    run = drive(llm_server, "one\r/model model-b\r/system Be terse.\rtwo\r/model\r/system\r\x04")
    assert "model: model-b" in run.out and "system: Be terse." in run.out
    assert (header(home, "t")["model"], header(home, "t")["system"]) == ("model-b", "Be terse.")
    body = llm_server.requests[-1].body
    assert body["model"] == "model-b"
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("system", "Be terse."),
        ("user", "one"),
        ("assistant", ANSWER),
        ("user", "two"),
    ]
    # a later REPL without -m uses what the session remembers
    drive(llm_server, "three\r\x04", model=None)
    assert llm_server.requests[-1].body["model"] == "model-b"
    assert llm_server.requests[-1].body["messages"][0]["content"] == "Be terse."


def test_context_shows_and_sends_nothing(llm_server: FakeLLMServer, home: Path) -> None:
    drive(llm_server, "first question\r\x04")
    before = (home / "sessions" / "t.jsonl").read_bytes()
    run = drive(llm_server, "/system Sys.\r/context\r\x04")
    assert len(llm_server.requests) == 1
    summary = next(line for line in run.out.splitlines() if line.startswith("model test-model"))
    assert " tokens of " in summary and "2 recent" in summary
    shown = json.loads(run.out[run.out.index("[\n") : run.out.rindex("]") + 1])
    assert [m["content"] for m in shown] == [
        "Sys.",
        "first question",
        ANSWER,
        "(your next message)",
    ]
    # only the header (the new system prompt) changed, not the messages
    after = (home / "sessions" / "t.jsonl").read_bytes()
    assert after.splitlines()[1:] == before.splitlines()[1:]


def test_fork_drop_and_session_switch(llm_server: FakeLLMServer, home: Path) -> None:
    run = drive(llm_server, "q1\r/fork f2\rq2\r/drop\r/session other\rq3\r/session\r\x04")
    assert "forked; now in f2" in run.out
    assert "dropped assistant message #4" in run.out
    assert "session: other (new)" in run.out and "session: other\n" in run.out
    assert contents(home, "t") == ["q1", ANSWER]  # the source is unchanged
    assert contents(home, "f2") == ["q1", ANSWER, "q2"]
    assert contents(home, "other") == ["q3", ANSWER]
    assert header(home, "f2")["parent"] == "t"
    assert llm_server.requests[-1].body["messages"] == [{"role": "user", "content": "q3"}]
    assert run.repl.session.name == "other"


def test_session_switch_uses_that_sessions_model(llm_server: FakeLLMServer, home: Path) -> None:
    drive(llm_server, "b1\r\x04", session="b", model="model-of-b")
    drive(llm_server, "/model model-of-a\ra1\r/session b\rb2\r\x04", session="a", model=None)
    assert llm_server.requests[-2].body["model"] == "model-of-a"
    assert llm_server.requests[-1].body["model"] == "model-of-b"
    assert header(home, "b")["model"] == "model-of-b"


def test_drop_on_new_session_says_nothing_to_drop_and_loop_goes_on(
    llm_server: FakeLLMServer, home: Path
) -> None:
    run = drive(llm_server, "/drop\r/fork x\rq\r/drop\r/drop\r/drop\r\x04", session="fresh")
    assert run.out.count("(nothing to drop yet)") == 2  # before q, and after both went
    errors = [line for line in run.out.splitlines() if "error: " in line]
    assert errors == ["error: no session named 'fresh' (see `sessionctl list`)"]  # the /fork
    assert contents(home, "fresh") == []


def test_multiline_input(llm_server: FakeLLMServer, home: Path) -> None:
    drive(llm_server, '"""\rline one\r\rline three\r"""\rsecond\x1b\rline\r\x04')
    sent = [r.body["messages"][-1]["content"] for r in llm_server.requests]
    assert sent == ["line one\n\nline three", "second\nline"]


def test_exit_command(llm_server: FakeLLMServer, home: Path) -> None:
    run = drive(llm_server, "/exit\r")
    assert not llm_server.requests and run.err == ""


@pytest.fixture
def markdown_seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Set once the REPL has rendered answer text (i.e. the user saw it)."""
    import rich.markdown

    seen = threading.Event()
    original = rich.markdown.Markdown

    class Watched(original):  # type: ignore[misc,valid-type]
        def __init__(self, markup: str, *args: Any, **kw: Any) -> None:
            super().__init__(markup, *args, **kw)
            if markup:
                seen.set()

    monkeypatch.setattr(rich.markdown, "Markdown", Watched)
    yield seen


def ctrl_c_when(ready: Callable[[], bool]) -> threading.Thread:
    """SIGINT to the main thread (as a terminal's Ctrl-C) once ``ready()``."""
    main = threading.main_thread().ident
    assert main is not None

    def run() -> None:
        deadline = time.monotonic() + 10
        while not ready():
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        time.sleep(0.05)
        signal.pthread_kill(main, signal.SIGINT)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_ctrl_c_cancels_answer_keeps_partial_and_continues(
    llm_server: FakeLLMServer, home: Path, markdown_seen: threading.Event
) -> None:
    llm_server.push(Reply(chunks=["Partial ", "answer ", "never sent"], stall_after=2))
    killer = ctrl_c_when(markdown_seen.is_set)
    started = time.monotonic()
    run = drive(llm_server, "long question\rnext question\r\x04")
    killer.join()
    assert time.monotonic() - started < 8  # not the server's stall
    assert "answer interrupted; what you saw was saved" in run.out
    rec = records(home, "t")
    assert [m["content"] for m in rec[:2]] == ["long question", "Partial answer "]
    assert rec[1]["interrupted"] is True
    assert [m["content"] for m in rec[2:]] == ["next question", ANSWER]  # the REPL went on
    assert llm_server.requests[-1].body["messages"][1]["content"] == "Partial answer "


def test_ctrl_c_before_first_byte_cancels_without_saving(
    llm_server: FakeLLMServer, home: Path
) -> None:
    llm_server.push(Reply(first_byte_delay=8))
    killer = ctrl_c_when(lambda: len(llm_server.requests) >= 1)
    run = drive(llm_server, "slow question\rnext question\r\x04")
    killer.join()
    assert "(cancelled)" in run.out
    assert contents(home, "t") == ["next question", ANSWER]


def test_provider_errors_shown_and_loop_goes_on(llm_server: FakeLLMServer, home: Path) -> None:
    llm_server.push(Reply(status=401), Reply(text="cut off answer", chunk_size=4, drop_after=1))
    run = drive(llm_server, "q1\rq2\rq3\r\x04")
    errors = [line for line in run.out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, run.out
    assert "cut\nerror: " in run.out, run.out  # what was shown, then the error on its own line
    # the 401 kept nothing; the answer cut off mid-stream kept its prompt and what was shown
    assert contents(home, "t") == ["q2", "cut ", "q3", ANSWER]


def test_answer_cannot_drive_the_terminal(
    llm_server: FakeLLMServer, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile = "Title \x1b]0;pwned\x07 then \x1b[2J and \x9b31m done"
    llm_server.push(Reply(text=hostile, chunk_size=4))
    monkeypatch.setenv("SESSIONCTL_COLOR", "always")  # rendered as for a terminal
    run = drive(llm_server, "hi\r\x04")
    assert "\x1b[?25l" in run.out  # it was: rich Live hid the cursor
    for raw in ("\x1b]", "\x1b[2J", "\x9b", "\x07"):
        assert raw not in run.out, (raw, run.out)
    assert "\\x1b]0;pwned\\x07" in run.out and "\\x9b31m" in run.out
    assert contents(home, "t") == ["hi", hostile]  # the transcript keeps it exact


# -- a real terminal ---------------------------------------------------------------------


class Tmux:
    """A private tmux server (own socket) with one session."""

    def __init__(self) -> None:
        self.socket = f"sessionctl-test-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "t")

    def wait_for(self, text: str, seconds: float = 15) -> str:
        deadline = time.monotonic() + seconds
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.05)
        raise AssertionError(f"{text!r} did not appear; screen:\n{screen}")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


def chat_in_tmux(tmux: Tmux, server: FakeLLMServer) -> None:
    """Start ``sessionctl chat -s t`` in ``tmux`` (100x30) and wait for its prompt."""
    keep = (
        "PATH",
        "HOME",
        "SESSIONCTL_HOME",
        "SESSIONCTL_CONFIG",
        "XDG_DATA_HOME",
        "XDG_CONFIG_HOME",
        "NO_COLOR",
        "LANG",
        "LC_ALL",
        "PYTHONPATH",
    )
    env = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in keep if k in os.environ)
    chat = (
        f"{shlex.quote(sys.executable)} -m sessionctl chat -s t "
        f"--api-base {server.base_url} -m test-model"
    )
    # The shell must outlive a Ctrl-C (a trap, not an ignore: the child resets it).
    script = (
        f'trap : INT; cd {shlex.quote(str(REPO))} && env {env} {chat}; echo "EXIT=$?"; sleep 60'
    )
    tmux("new-session", "-d", "-s", "t", "-x", "100", "-y", "30", "sh", "-c", script)
    tmux.wait_for("\nt>")  # capture-pane drops the trailing space


needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


@needs_tmux
def test_real_terminal_in_tmux(llm_server: FakeLLMServer, home: Path) -> None:
    llm_server.push(Reply(text="The answer is **forty-two**.", chunk_size=4, chunk_delay=0.02))
    tmux = Tmux()
    try:
        chat_in_tmux(tmux, llm_server)
        tmux("send-keys", "-t", "t", "What is the answer?", "Enter")
        screen = tmux.wait_for("The answer is forty-two.")
        tmux.wait_for("test-model-0613")
        # Ctrl-C while an answer streams: it stops, the REPL stays
        llm_server.push(Reply(chunks=["Slow start ", *["tick "] * 100], chunk_delay=0.1))
        tmux("send-keys", "-t", "t", "Tell me more", "Enter")
        tmux.wait_for("Slow start")
        tmux("send-keys", "-t", "t", "C-c")
        tmux.wait_for("answer interrupted")
        tmux.wait_for("answer interrupted; what you saw was saved)\nt>")  # a fresh prompt
        tmux("send-keys", "-t", "t", "C-d")
        screen = tmux.wait_for("EXIT=")
        assert "EXIT=0" in screen, screen
    finally:
        tmux.kill()
    rec = records(home, "t")
    assert [m["content"] for m in rec[:3]] == [
        "What is the answer?",
        "The answer is **forty-two**.",
        "Tell me more",
    ]
    assert rec[3]["interrupted"] is True and rec[3]["content"].startswith("Slow start")


@needs_tmux
def test_ctrl_c_in_tmux_shows_the_partial_answer_once(
    llm_server: FakeLLMServer, home: Path
) -> None:
    """rich pads the live answer's lines to the full width; the terminal's echoed ``^C``
    used to wrap the cursor onto the next line, and the final redraw then printed the
    answer's first line twice (4 of 4 tries)."""
    chunks = ["First line of it.\n\n", "Second line here.\n\n", *["tick "] * 100]
    llm_server.push(Reply(chunks=chunks, chunk_delay=0.1))
    tmux = Tmux()
    try:
        chat_in_tmux(tmux, llm_server)
        tmux("send-keys", "-t", "t", "Tell me", "Enter")
        tmux.wait_for("tick tick")
        tmux("send-keys", "-t", "t", "C-c")
        screen = tmux.wait_for("answer interrupted; what you saw was saved)\nt>")
        assert screen.count("First line of it.") == 1, screen
        assert screen.count("Second line here.") == 1, screen
        assert "^C" not in screen, screen
        # the terminal echoes again at the prompt
        tmux("send-keys", "-t", "t", "typed after")
        tmux.wait_for("t> typed after")
        tmux("send-keys", "-t", "t", "C-u", "C-d")
        assert "EXIT=0" in tmux.wait_for("EXIT="), tmux.screen()
    finally:
        tmux.kill()
    rec = records(home, "t")
    assert rec[1]["interrupted"] is True
    assert rec[1]["content"].startswith("First line of it.\n\nSecond line here.\n\ntick")
