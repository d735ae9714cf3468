"""The one place that writes to the terminal.

Data goes to stdout, everything else (errors, warnings, notes) to stderr.
Rich rendering on a TTY (or when ``color = always`` forces it, for ``| less -R``),
colour there unless NO_COLOR or ``never``; piped output is plain text that never
imports rich. User and model text is never interpreted as rich markup, and on a
terminal its control characters are shown, not obeyed (:func:`visible_controls`).
Text a stream's encoding cannot hold is written with backslash escapes, never a
crash; JSON then escapes it the JSON way.
"""

from __future__ import annotations

import codecs
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from sessionctl.models import Message, SessionInfo

PROG = "sessionctl"

# C0 controls except tab and newline, DEL, and the C1 controls (U+0080-U+009F, which
# include U+009B CSI and U+009D OSC): what a terminal would act on rather than show.
_CONTROL_CODES = [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]
_VISIBLE = {code: f"\\x{code:02x}" for code in _CONTROL_CODES}
# Inside a JSON string a raw DEL or C1 control may be written as a \u escape instead:
# the same JSON value (json.dumps already escapes C0 this way).
_JSON_ESCAPED = {code: f"\\u{code:04x}" for code in range(0x7F, 0xA0)}


def visible_controls(text: str) -> str:
    """Return ``text`` with every control character except tab and newline as ``\\xNN``.

    ESC becomes the four characters ``\\x1b``, so no escape sequence (a window title,
    a screen clear, an OSC 8 link) survives; CR is ``\\x0d``, CSI U+009B ``\\x9b``.
    The one sanitiser for text from sessions and models shown on a terminal.
    """
    return text.translate(_VISIBLE)


def _is_unicode(stream: TextIO) -> bool:
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        return codecs.lookup(encoding).name.startswith("utf")
    except LookupError:
        return False


def encodable(text: str, stream: TextIO) -> str:
    """Return ``text`` with what ``stream``'s encoding cannot hold as backslash escapes."""
    if _is_unicode(stream):
        return text
    encoding = stream.encoding or "ascii"
    return text.encode(encoding, "backslashreplace").decode(encoding)


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

    def is_terminal(self, stream: TextIO | None = None) -> bool:
        """True when output to ``stream`` is for a terminal: a TTY, or ``color = always``
        (a pipe into ``less -R`` ends on one too)."""
        return self.color == "always" or self.is_tty(stream)

    def display(self, text: str, stream: TextIO | None = None) -> str:
        """Return session or model text ready for ``stream``: control characters made
        visible when it goes to a terminal, exact otherwise; always encodable."""
        stream = stream or self.stdout
        shown = visible_controls(text) if self.is_terminal(stream) else text
        return encodable(shown, stream)

    def console(self, *, stderr: bool = False) -> Any:
        """Return a rich Console for the stream (imports rich on demand)."""
        from rich.console import Console

        stream = self.stderr if stderr else self.stdout
        color = self.use_color(stream)
        forced = self.color == "always"
        return Console(
            file=stream,
            force_terminal=True if forced else None,
            # forced onto a pipe, TERM says nothing about the terminal at the end of it
            color_system="standard" if forced else "auto",
            no_color=not color,
            highlight=False,
            markup=False,
            emoji=False,
            soft_wrap=not self.is_tty(stream),
        )

    # -- plain data ------------------------------------------------------------
    def line(self, text: str = "") -> None:
        """Write one line of data to stdout (escaped only where its encoding fails)."""
        self.stdout.write(encodable(text, self.stdout) + "\n")

    def text(self, text: str) -> None:
        """Write one line of session or model text to stdout, safe for a terminal."""
        self.stdout.write(self.display(text) + "\n")

    def json(self, value: Any) -> None:
        """Write ``value`` as pretty JSON (stable key order as given) to stdout.

        UTF-8 as is on a pipe; on a terminal DEL and C1 controls are \\u escapes; on a
        stream that is not UTF-8 every non-ASCII character is (``ensure_ascii``).
        """
        unicode = _is_unicode(self.stdout)
        data = json.dumps(value, ensure_ascii=not unicode, indent=2)
        if unicode and self.is_terminal():
            data = data.translate(_JSON_ESCAPED)
        self.stdout.write(data + "\n")

    def json_streamed(self, head: dict[str, Any], key: str, items: Iterable[Any]) -> None:
        """Write ``{**head, key: [...items]}`` as :meth:`json` would, one item at a time."""
        from sessionctl.service.transfer import json_chunks

        unicode = _is_unicode(self.stdout)
        chunks = json_chunks(head, key, items, ensure_ascii=not unicode)
        if unicode and self.is_terminal():
            chunks = (chunk.translate(_JSON_ESCAPED) for chunk in chunks)
        self.write_chunks(chunks)
        self.stdout.write("\n")

    def write_chunks(self, chunks: Iterable[str]) -> None:
        """Write many small pieces of data to stdout, joined into writes of ~256 KB."""
        batch: list[str] = []
        size = 0
        for chunk in chunks:
            batch.append(chunk)
            size += len(chunk)
            if size >= 256 * 1024:
                self.stdout.write("".join(batch))
                batch, size = [], 0
        self.stdout.write("".join(batch))

    # -- messages for the user -----------------------------------------------
    def error(self, message: str) -> None:
        """Write ``sessionctl: error: message`` as one line to stderr."""
        self._note("error", " ".join(message.split("\n")))

    def warn(self, message: str) -> None:
        """Write a warning line to stderr."""
        self._note("warning", message)

    def info(self, message: str) -> None:
        """Write an informational line to stderr."""
        self.stderr.write(encodable(f"{PROG}: {message}\n", self.stderr))
        self.stderr.flush()

    def _note(self, kind: str, message: str) -> None:
        prefix = f"{PROG}: {kind}: "
        if self.use_color(self.stderr):
            colour = "31" if kind == "error" else "33"
            prefix = f"\x1b[{colour}m{prefix}\x1b[0m"
        self.stderr.write(prefix + encodable(message, self.stderr) + "\n")
        self.stderr.flush()

    # -- tables and transcripts ------------------------------------------------
    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """A rich table on a terminal, plain aligned columns otherwise."""
        if self.is_terminal():
            from rich.table import Table

            table = Table(*headers, box=None, header_style="bold" if self.use_color() else "")
            for row in rows:
                table.add_row(*(self.display(cell) for cell in row))
            self.console().print(table)
            return
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        for row in [list(headers), *rows]:
            self.line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())

    def messages(self, messages: Iterable[Message], *, session: str | None = None) -> None:
        """Render messages for a person: role headers on a terminal, ``role: text`` when piped."""
        if not self.is_terminal():  # exact text (see display), written in big pieces
            stream, unicode = self.stdout, _is_unicode(self.stdout)
            self.write_chunks(
                (text if unicode else encodable(text, stream)) + "\n"
                for text in (f"{m.role}: {m.content}" for m in messages)
            )
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
            console.print(Text(self.display(m.content)))
            console.print()

    def markdown(self, text: str) -> Any:
        """Return a rich Markdown of model text, its control characters made visible."""
        from rich.markdown import Markdown

        return Markdown(self.display(text))


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
