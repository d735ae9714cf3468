"""The one place that writes to the terminal.

Data goes to stdout, everything else (errors, warnings, notes) to stderr.
Colour and rich rendering only when the stream is a TTY and NO_COLOR is
unset; piped output is plain text that never imports rich. User and model
text is never interpreted as rich markup.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from sessionctl.models import Message, SessionInfo

PROG = "sessionctl"


class Output:
    """stdout/stderr with the colour decision made once."""

    def __init__(
        self,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        *,
        color: str = "auto",
        no_color: bool = False,
    ) -> None:
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.color = color
        self.no_color = no_color

    def is_tty(self, stream: TextIO | None = None) -> bool:
        """Return True when ``stream`` (stdout by default) is a terminal."""
        stream = stream or self.stdout
        try:
            return stream.isatty()
        except (AttributeError, ValueError):
            return False

    def use_color(self, stream: TextIO | None = None) -> bool:
        """Colour only when forced, or on a TTY without NO_COLOR."""
        if self.color == "never" or (self.no_color and self.color != "always"):
            return False
        return self.color == "always" or self.is_tty(stream)

    def console(self, *, stderr: bool = False) -> Any:
        """Return a rich Console for the stream (imports rich on demand)."""
        from rich.console import Console

        stream = self.stderr if stderr else self.stdout
        color = self.use_color(stream)
        return Console(
            file=stream,
            force_terminal=color if self.color == "always" else None,
            no_color=not color,
            highlight=False,
            markup=False,
            emoji=False,
            soft_wrap=not self.is_tty(stream),
        )

    # -- plain data ------------------------------------------------------------
    def line(self, text: str = "") -> None:
        """Write one line of data to stdout."""
        self.stdout.write(text + "\n")

    def json(self, value: Any) -> None:
        """Write ``value`` as pretty JSON (stable key order as given) to stdout."""
        self.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")

    # -- messages for the user -----------------------------------------------
    def error(self, message: str) -> None:
        """Write ``sessionctl: error: message`` as one line to stderr."""
        self._note("error", " ".join(message.split("\n")))

    def warn(self, message: str) -> None:
        """Write a warning line to stderr."""
        self._note("warning", message)

    def info(self, message: str) -> None:
        """Write an informational line to stderr."""
        self.stderr.write(f"{PROG}: {message}\n")
        self.stderr.flush()

    def _note(self, kind: str, message: str) -> None:
        prefix = f"{PROG}: {kind}: "
        if self.use_color(self.stderr):
            colour = "31" if kind == "error" else "33"
            prefix = f"\x1b[{colour}m{prefix}\x1b[0m"
        self.stderr.write(prefix + message + "\n")
        self.stderr.flush()

    # -- tables and transcripts ------------------------------------------------
    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """A rich table on a TTY, plain aligned columns otherwise."""
        if self.is_tty():
            from rich.table import Table

            table = Table(*headers, box=None, header_style="bold" if self.use_color() else "")
            for row in rows:
                table.add_row(*row)
            self.console().print(table)
            return
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        for row in [list(headers), *rows]:
            self.line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())

    def messages(self, messages: Sequence[Message], *, session: str | None = None) -> None:
        """Render messages for a person: role headers on a TTY, ``role: text`` when piped."""
        if not self.is_tty():
            for m in messages:
                self.line(f"{m.role}: {m.content}")
            return
        from rich.text import Text

        console = self.console()
        styles = {"user": "bold cyan", "assistant": "bold green", "system": "bold magenta"}
        for m in messages:
            head = Text(f"{m.role}", style=styles.get(m.role, "bold"))
            head.append(f"  #{m.seq} {m.created_at[:19].replace('T', ' ')}", style="dim")
            if m.interrupted:
                head.append("  (interrupted)", style="yellow")
            console.print(head)
            console.print(Text(m.content))
            console.print()


def session_rows(infos: Sequence[SessionInfo], *, deleted: bool = False) -> list[list[str]]:
    """Return table rows for ``list``."""
    rows = []
    for i in infos:
        when = (i.deleted_at if deleted else i.updated_at) or ""
        rows.append(
            [
                i.name,
                str(i.messages),
                when[:19].replace("T", " "),
                i.model or "-",
                i.parent or "-",
            ]
        )
    return rows


def environ_flag(name: str) -> bool:
    """Return True when environment variable ``name`` is set to a non-empty value."""
    return bool(os.environ.get(name))
