"""The REPL's slash commands."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING

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
            f"(window {ctx.context_window}) · {len(ctx.included_recent)} recent, "
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
