"""The REPL's slash commands."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sessionctl.errors import UsageError

if TYPE_CHECKING:
    from sessionctl.cli.repl import Repl

HELP = """\
/help                 this help
/exit                 leave (also Ctrl-D)
/recent [K]           the last K messages (default 5)
/relevant QUERY       past messages nearest in meaning to QUERY
/fork NEW             copy this session to NEW and continue there
/drop                 remove the last message
/model [M]            show or set the model (remembered by the session)
/system [TEXT]        show or set the system prompt (remembered by the session)
/context              exactly what the next turn would send, and its token count
/session [NAME]       show or switch session (a new name starts a new session)
/retry                ask the last prompt again (the old answer stays in a fork)
/edit [TEXT]          write the next prompt in $VISUAL/$EDITOR, then send it
/clear                clear the screen (the session is kept: `sessionctl clear` empties it)
Keys: Enter sends · Esc Enter adds a newline · a \"\"\" line starts/ends a block ·
Ctrl-C cancels an answer (keeps what you saw) · Ctrl-D exits"""


class SlashCommands:
    """Parses ``/name args`` lines and runs them against a :class:`Repl`."""

    def __init__(self, repl: Repl) -> None:
        self.repl = repl
        self.table: dict[str, Callable[[str], bool]] = {
            "help": self.help,
            "exit": self.exit,
            "quit": self.exit,
            "recent": self.recent,
            "relevant": self.relevant,
            "fork": self.fork,
            "drop": self.drop,
            "model": self.model,
            "system": self.system,
            "context": self.context,
            "session": self.session,
            "retry": self.retry,
            "edit": self.edit,
            "clear": self.clear,
        }

    def dispatch(self, line: str) -> bool:
        """Run one slash command; return False when the REPL should end."""
        name, _, rest = line[1:].partition(" ")
        handler = self.table.get(name.strip().lower())
        if handler is None:
            raise UsageError(f"unknown command /{name}: /help lists them")
        return handler(rest.strip())

    def help(self, _: str) -> bool:
        self.repl.say(HELP, style="")
        return True

    def exit(self, _: str) -> bool:
        return False

    def recent(self, arg: str) -> bool:
        try:
            k = int(arg) if arg else 5
        except ValueError:
            raise UsageError(f"/recent takes a number, got {arg!r}") from None
        if not self.repl.session.exists:
            self.repl.say("(no messages yet)")
            return True
        self.repl.state.out.messages(self.repl.session.recent_messages(k))
        return True

    def relevant(self, arg: str) -> bool:
        if not arg:
            raise UsageError("/relevant needs a query")
        if not self.repl.session.exists:
            self.repl.say("(no messages yet)")
            return True
        hits = self.repl.session.get_relevant(arg, top_k=5, raw=True)
        if not hits:
            self.repl.say("(nothing close enough)")
        for hit in hits:
            assert isinstance(hit, dict)
            self.repl.say(f"{hit['distance']:.2f}  #{hit['seq']} {hit['role']}: ", style="bold")
            self.repl.say(str(hit["content"]), style="")
        return True

    def fork(self, arg: str) -> bool:
        names = shlex.split(arg)
        if len(names) != 1:
            raise UsageError("/fork takes one new session name")
        self.repl.session = self.repl.session.fork(names[0])
        self.repl.say(f"forked; now in {self.repl.session.name}")
        return True

    def drop(self, _: str) -> bool:
        from sessionctl.errors import MessageNotFound

        if not self.repl.session.exists:  # a new session: not an error, nothing yet
            self.repl.say("(nothing to drop yet)")
            return True
        try:
            dropped = self.repl.session.drop()
        except MessageNotFound:  # every message dropped already
            self.repl.say("(nothing to drop yet)")
            return True
        self.repl.say(f"dropped {dropped.role} message #{dropped.seq}")
        return True

    def model(self, arg: str) -> bool:
        if arg:
            self.repl.opts = self.repl.opts._replace(model=arg)
            if self.repl.session.exists:
                self.repl.session.update(model=arg)
        self.repl.say(f"model: {self.repl.current_model()}")
        return True

    def system(self, arg: str) -> bool:
        if arg:
            self.repl.opts = self.repl.opts._replace(system=arg)
            if self.repl.session.exists:
                self.repl.session.update(system=arg)
        current = self.repl.opts.system
        if current is None and self.repl.session.exists:
            current = self.repl.session.header.system
        self.repl.say(f"system: {current or '(none)'}")
        return True

    def context(self, _: str) -> bool:
        from sessionctl.service.chat import prepare_turn

        placeholder = "(your next message)"
        turn = prepare_turn(self.repl.state.store(), self.repl.session, placeholder, self.repl.opts)
        ctx = turn.context
        self.repl.say(
            f"model {turn.model} · {ctx.token_estimate} tokens of {ctx.budget} "
            f"(window {ctx.context_window}, from {turn.window_source}) · "
            f"{len(ctx.included_recent)} recent, "
            f"{len(ctx.included_relevant)} relevant, {ctx.dropped} left out",
            style="bold",
        )
        self.repl.say(json.dumps(ctx.messages, ensure_ascii=False, indent=2), style="")
        return True

    def session(self, arg: str) -> bool:
        if arg:
            self.repl.session = self.repl.state.store().session(arg)
            # /model and /system set the previous session's; this one has its own.
            self.repl.opts = self.repl.start_opts
        state = "" if self.repl.session.exists else " (new)"
        self.repl.say(f"session: {self.repl.session.name}{state}")
        return True

    def retry(self, _: str) -> bool:
        """Regenerate the last answer; the session as it was is kept as a fork."""
        from sessionctl.service.chat import prepare_turn

        repl = self.repl
        session = repl.session
        last = session.recent_messages(2) if session.exists else []
        if len(last) < 2 or last[-1].role != "assistant" or last[-2].role != "user":
            raise UsageError("/retry needs a last answer to a prompt; there is none")
        prompt, answer = last
        kept = session.fork(retry_fork_name(repl.state.store(), session.name), at=answer.id)
        repl.say(f"the previous answer is kept in session {kept.name}")
        session.drop()  # the answer ...
        session.drop()  # ... and its prompt: the turn records both again
        repl.ask(prepare_turn(repl.state.store(), session, prompt.content, repl.opts))
        return True

    def edit(self, arg: str) -> bool:
        """Compose the next prompt in the user's editor, then send it."""
        from sessionctl.service.chat import prepare_turn

        text = compose_in_editor(arg)
        if not text.strip():
            self.repl.say("(empty; nothing sent)")
            return True
        repl = self.repl
        repl.ask(prepare_turn(repl.state.store(), repl.session, text, repl.opts))
        return True

    def clear(self, _: str) -> bool:
        """Clear the screen; the session is untouched."""
        self.repl.console.clear()
        return True


def retry_fork_name(store: Any, name: str) -> str:
    """An unused name for the fork /retry keeps: NAME-retry-XXXX (within 128 characters)."""
    import secrets

    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    stem = name[: 128 - len("-retry-xxxx")]
    while True:
        candidate = f"{stem}-retry-{''.join(secrets.choice(alphabet) for _ in range(4))}"
        if not (store.backend.exists(candidate) or store.backend.case_twin(candidate)):
            return candidate


def compose_in_editor(initial: str = "") -> str:
    """Open $VISUAL (else $EDITOR) on a file in a fresh private directory; return its text.

    The directory is 0700 and the file 0600 (the prompt may be private); both are
    removed afterwards. An editor that is missing or exits non-zero is a usage
    error, and nothing is sent.
    """
    import os
    import shutil
    import subprocess
    import tempfile

    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor:
        raise UsageError("/edit needs an editor: set VISUAL or EDITOR (e.g. export EDITOR=nano)")
    try:
        argv = shlex.split(editor)
    except ValueError as exc:
        raise UsageError(f"cannot parse the editor command {editor!r}: {exc}") from None
    if not argv:
        raise UsageError("/edit needs an editor: set VISUAL or EDITOR (e.g. export EDITOR=nano)")
    directory = tempfile.mkdtemp(prefix="sessionctl-edit-")  # 0700
    try:
        path = os.path.join(directory, "prompt.md")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(initial)
        try:
            code = subprocess.run([*argv, path], check=False).returncode
        except OSError as exc:
            raise UsageError(f"cannot run editor {argv[0]!r}: {exc.strerror}") from None
        if code != 0:
            raise UsageError(f"editor {argv[0]!r} exited with status {code}; nothing sent")
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return text[:-1] if text.endswith("\n") else text
