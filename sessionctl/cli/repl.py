"""The interactive chat: a prompt-toolkit line editor, answers streamed as Markdown.

Keys: Enter sends; Esc then Enter (or Alt-Enter) inserts a newline; a line
that is just ``\"\"\"`` starts a block that the next ``\"\"\"`` line ends; Ctrl-C
cancels the answer being streamed (what was shown is kept, marked
interrupted) or clears the line; Ctrl-D exits. Slash commands: see /help.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

from sessionctl.cli.slash import SlashCommands
from sessionctl.errors import Interrupted, SessionctlError, StoreError
from sessionctl.fsutil import FILE_MODE, ensure_private_dir

if TYPE_CHECKING:
    from sessionctl.cli.state import State
    from sessionctl.service.chat import ChatOptions
    from sessionctl.service.session import Session

BLOCK = '"""'


def _key_bindings() -> Any:
    from prompt_toolkit.key_binding import KeyBindings

    bindings = KeyBindings()

    @bindings.add("escape", "enter")
    def _newline(event: Any) -> None:
        event.current_buffer.insert_text("\n")

    return bindings


@contextlib.contextmanager
def _no_echo(stream: TextIO) -> Iterator[None]:
    """Turn the terminal's echo off while an answer streams, if ``stream`` is one.

    rich pads every line of the live answer to the full width, which leaves the cursor
    in the last column; the ``^C`` the terminal echoes for Ctrl-C (or any key typed
    meanwhile) then wraps it onto the next line, rich's cursor-up moves come one line
    short and the answer's first line is printed twice. Keys typed meanwhile still reach
    the next prompt; they are just not echoed into the answer.
    """
    try:
        import termios
    except ImportError:  # not a POSIX terminal API (Windows)
        yield
        return
    try:
        fd = stream.fileno()
        saved = termios.tcgetattr(fd)
    except (OSError, ValueError, AttributeError, termios.error):  # not a terminal
        saved = None
    if saved is None:
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


class Repl:
    """One interactive chat; ``pt_input``/``pt_output`` let tests drive it."""

    def __init__(
        self,
        state: State,
        session: Session,
        opts: ChatOptions,
        *,
        pt_input: Any = None,
        pt_output: Any = None,
    ) -> None:
        self.state = state
        self.session = session
        self.opts = opts
        self.start_opts = opts  # as given on the command line (/session goes back to them)
        self.console = state.out.console()
        self.slash = SlashCommands(self)
        self._prompt = self._make_prompt(pt_input, pt_output)

    def _make_prompt(self, pt_input: Any, pt_output: Any) -> Any:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory

        home = ensure_private_dir(self.state.store().home)
        path = home / "history"
        try:  # never through a symlink: the history holds every prompt typed
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, FILE_MODE)
        except OSError as exc:
            raise StoreError(
                f"cannot use the input history {path}: {exc.strerror}"
                + (" (it is a symbolic link; remove it)" if path.is_symlink() else "")
            ) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StoreError(f"the input history {path} is not a regular file; remove it")
            os.fchmod(fd, FILE_MODE)
        finally:
            os.close(fd)
        return PromptSession(
            history=FileHistory(str(path)),
            key_bindings=_key_bindings(),
            input=pt_input,
            output=pt_output,
        )

    def say(self, text: str, style: str = "dim") -> None:
        """Print a note for the user (never interpreted as markup)."""
        from rich.text import Text

        self.console.print(Text(self.state.out.display(text), style=style))

    def read(self) -> str | None:
        """Return the next input (a whole ``\"\"\"`` block if one starts), None at Ctrl-D."""
        try:
            line: str = self._prompt.prompt(f"{self.session.name}> ")
        except EOFError:
            return None
        except KeyboardInterrupt:
            return ""
        if line.strip() != BLOCK:
            return line
        lines: list[str] = []
        while True:
            try:
                more: str = self._prompt.prompt("... ")
            except EOFError:
                break
            except KeyboardInterrupt:
                return ""
            if more.strip() == BLOCK:
                break
            lines.append(more)
        return "\n".join(lines)

    def run(self) -> None:
        """Loop until /exit or Ctrl-D."""
        from sessionctl import llm
        from sessionctl.cli.banner import banner_lines
        from sessionctl.service.chat import prepare_turn

        for line, style in banner_lines(self.session.name, self.current_model(), self.api_base()):
            self.say(line, style=style)
        # Start importing litellm now if this model needs it: the prompt shows meanwhile.
        probe = llm.ChatRequest(model=self.current_model(), messages=[], api_base=self.api_base())
        llm.preload(probe)
        while True:
            text = self.read()
            if text is None:
                return
            if not text.strip():
                continue
            try:
                if text.startswith("/"):
                    if not self.slash.dispatch(text):
                        return
                    continue
                self.ask(prepare_turn(self.state.store(), self.session, text, self.opts))
            except SessionctlError as exc:
                self.say(f"error: {exc.message}", style="red")
            except KeyboardInterrupt:
                # Ctrl-C before the answer's first byte (connecting, a slow model, the
                # index catching up): nothing was shown, nothing is kept; the REPL goes on.
                self.say("(cancelled)", style="yellow")

    def current_model(self) -> str:
        """The model the next turn will use."""
        if self.opts.model:
            return self.opts.model
        if self.session.exists and self.session.header.model:
            return self.session.header.model
        return self.state.settings().model

    def api_base(self) -> str | None:
        """The API base the next turn will use."""
        return self.opts.api_base or self.state.settings().api_base

    def ask(self, turn: Any) -> None:
        """Stream one answer as Markdown; Ctrl-C keeps what was shown."""
        from rich.live import Live
        from rich.markdown import Markdown

        from sessionctl.cli.render import oversized_warning
        from sessionctl.service.chat import run_turn

        if turn.context.oversized:
            self.say(f"warning: {oversized_warning(turn)}", style="yellow")
        parts: list[str] = []
        with (
            _no_echo(sys.stdin),
            Live(Markdown(""), console=self.console, refresh_per_second=12) as live,
        ):

            def on_delta(delta: str) -> None:
                parts.append(delta)
                live.update(self.state.out.markdown("".join(parts)))

            try:
                result = run_turn(turn, on_delta, self.state.out.warn)
            except Interrupted:
                live.stop()
                self._end_line()
                self.say("(answer interrupted; what you saw was saved)", style="yellow")
                return
            except SessionctlError:  # e.g. the connection dropped mid-answer
                live.stop()
                if parts:
                    self._end_line()
                raise
        self._end_line()
        usage = result.usage or {}
        tokens = f" · {usage['total_tokens']} tokens" if usage.get("total_tokens") else ""
        self.say(f"{result.assistant.model}{tokens}")

    def _end_line(self) -> None:
        # On a terminal Live ends its output with a newline; written to a file or pipe
        # (`sessionctl chat | tee log`) it does not, and the next note would run on.
        if not self.console.is_terminal:
            self.console.line()


def run_repl(state: State, session: Session, opts: ChatOptions) -> None:
    """Run the interactive chat on the terminal."""
    Repl(state, session, opts).run()
