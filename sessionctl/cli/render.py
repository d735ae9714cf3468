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
import textwrap
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from sessionctl.models import Message, SessionInfo

PROG = "sessionctl"

Rows = list[list[str]]
# One way to make a table narrower: (headers, rows) -> (headers, rows).
Narrowing = Callable[[list[str], Rows], tuple[list[str], Rows]]

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
        width: int | None = None,
    ) -> None:
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.color = color
        self.no_color = no_color
        self._width = width  # the terminal's columns, fixed (tests); else asked each time

    def width(self) -> int:
        """The terminal's width in columns, as rich finds it: COLUMNS, else the size of
        the first standard stream that is a terminal, else 80."""
        if self._width is not None:
            return self._width
        columns = os.environ.get("COLUMNS", "")
        if columns.isdigit() and int(columns) > 0:
            return int(columns)
        for fd in (0, 1, 2):
            try:
                size = os.get_terminal_size(fd).columns
            except (OSError, ValueError):
                continue
            if size > 0:
                return size
        return 80

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
            width=self._width,
        )

    # -- plain data ------------------------------------------------------------
    def line(self, text: str = "") -> None:
        """Write one line of data to stdout (escaped only where its encoding fails)."""
        self.stdout.write(encodable(text, self.stdout) + "\n")

    def text(self, text: str, end: str = "\n") -> None:
        """Write one record of session or model text to stdout, safe for a terminal.

        ``end`` ends it: a newline, or NUL for ``-0`` (a message's own newlines then
        stay inside its record).
        """
        self.stdout.write(self.display(text) + end)

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

    def more(self, command: str, token: str) -> None:
        """Tell the user how to get the next page: ``command token`` on stderr.

        One line when it fits (always on a pipe); on a narrower terminal the command
        and the token go on lines of their own, joined by a shell line continuation, so
        the terminal never breaks the token and both lines paste as one command.
        """
        line = f"{PROG}: more: {command} {token}"
        if not self.is_terminal(self.stderr) or len(line) <= self.width():
            self.info(f"more: {command} {token}")
            return
        width = max(self.width(), 20)
        lead = textwrap.wrap(f"{PROG}: more: the next page:", width, break_on_hyphens=False)
        lines = [*lead, f"{command} \\", token]
        self.stderr.write(encodable("\n".join(lines) + "\n", self.stderr))
        self.stderr.flush()

    def _note(self, kind: str, message: str) -> None:
        prefix = f"{PROG}: {kind}: "
        if self.use_color(self.stderr):
            colour = "31" if kind == "error" else "33"
            prefix = f"\x1b[{colour}m{prefix}\x1b[0m"
        self.stderr.write(prefix + encodable(message, self.stderr) + "\n")
        self.stderr.flush()

    # -- tables and transcripts ------------------------------------------------
    def table(
        self,
        headers: Sequence[str],
        rows: Sequence[Sequence[str]],
        *,
        keep: Sequence[str] = (),
        narrower: Sequence[Narrowing] = (),
    ) -> None:
        """A rich table on a terminal, plain aligned columns otherwise.

        On a terminal the ``narrower`` steps are applied in turn until the table fits
        its width (shorter values, shorter headers, dropped columns); the columns named
        in ``keep`` are never cut or wrapped (they are what people copy). Piped, every
        column is whole.
        """
        if self.is_terminal():
            from rich.table import Column, Table

            heads = list(headers)
            cells = [[self.display(cell) for cell in row] for row in rows]
            width = self.width()
            for step in narrower:
                if table_width(heads, cells) <= width:
                    break
                heads, cells = step(heads, cells)
            columns = []
            least = 0  # what the kept columns need whole, the others at 1 character
            for i, head in enumerate(heads):
                whole = _column_width(heads, cells, i)
                kept = head in keep
                least += (whole if kept else 1) + 2
                columns.append(Column(head, no_wrap=kept, min_width=whole if kept else None))
            table = Table(*columns, box=None, header_style="bold" if self.use_color() else "")
            for row in cells:
                table.add_row(*row)
            self.console().print(table, width=max(width, least), crop=False)
            return
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        for row in [list(headers), *map(list, rows)]:
            self.line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())

    def room(self, headers: Sequence[str], rows: Sequence[Sequence[str]], column: str) -> int:
        """Columns left for ``column`` on this terminal when the others are whole."""
        others = [i for i, h in enumerate(headers) if h != column]
        heads = [headers[i] for i in others]
        cells = [[self.display(row[i]) for i in others] for row in rows]
        return self.width() - table_width(heads, cells) - 2

    def stacked(self, items: Sequence[tuple[str, str]]) -> None:
        """Records too wide for a table: a bold head line, then the text wrapped below it."""
        from rich.padding import Padding
        from rich.text import Text

        console = self.console()
        for n, (head, body) in enumerate(items):
            if n:
                console.print()
            console.print(Text(self.display(head), style="bold" if self.use_color() else ""))
            console.print(Padding(Text(self.display(body)), (0, 0, 0, 2)))

    def messages(
        self, messages: Iterable[Message], *, session: str | None = None, null: bool = False
    ) -> None:
        """Render messages for a person: role headers on a terminal, ``role: text`` when
        piped; with ``null`` always ``role: text`` records, each ended by NUL."""
        if null or not self.is_terminal():  # exact text (see display), written in big pieces
            stream, unicode = self.stdout, _is_unicode(self.stdout)
            end = "\0" if null else "\n"
            self.write_chunks(
                (text if unicode else encodable(text, stream)) + end
                for text in (f"{m.role}: {m.content}" for m in messages)
            )
            return
        from rich.text import Text

        from sessionctl.models import tool_call_parts

        console = self.console()
        styles = {"user": "bold cyan", "assistant": "bold green", "system": "bold magenta"}
        for m in messages:
            head = Text(f"{m.role}", style=styles.get(m.role, "bold"))
            if m.role == "tool" and (m.name or m.tool_call_id):  # the call it answers
                head.append(
                    f"  {m.name or '?'}" + (f" ({m.tool_call_id})" if m.tool_call_id else "")
                )
            head.append(f"  #{m.seq} {m.created_at[:19].replace('T', ' ')}", style="dim")
            if m.interrupted:
                head.append("  (interrupted)", style="yellow")
            console.print(head)
            if m.content or not m.tool_calls:
                console.print(Text(self.display(m.content)))
            for call in m.tool_calls or ():
                name, ident, arguments = tool_call_parts(call)
                line = Text("→ ", style="dim")
                line.append(self.display(name), style="bold")
                line.append(self.display(f"({arguments})"))
                if ident:
                    line.append(f"  {ident}", style="dim")
                console.print(line)
            console.print()

    def markdown(self, text: str) -> Any:
        """Return a rich Markdown of model text, its control characters made visible."""
        from rich.markdown import Markdown

        return Markdown(self.display(text))


def _cell_len(text: str) -> int:
    from rich.cells import cell_len

    return cell_len(text)


def _column_width(headers: Sequence[str], rows: Sequence[Sequence[str]], i: int) -> int:
    return max(_cell_len(headers[i]), *(_cell_len(row[i]) for row in rows))


def table_width(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> int:
    """The width rich's box-less table needs for every cell whole (1 space each side)."""
    return sum(_column_width(headers, rows, i) + 2 for i in range(len(headers)))


def drop_column(header: str) -> Narrowing:
    """A narrowing step: leave out the column ``header`` (if it is there)."""

    def step(headers: list[str], rows: Rows) -> tuple[list[str], Rows]:
        if header not in headers:
            return headers, rows
        i = headers.index(header)
        return headers[:i] + headers[i + 1 :], [row[:i] + row[i + 1 :] for row in rows]

    return step


def shorten_column(
    header: str, new_header: str, cell: Callable[[str], str] | None = None
) -> Narrowing:
    """A narrowing step: rename the column ``header`` and shorten its values with ``cell``."""

    def step(headers: list[str], rows: Rows) -> tuple[list[str], Rows]:
        if header not in headers:
            return headers, rows
        i = headers.index(header)
        heads = [*headers[:i], new_header, *headers[i + 1 :]]
        if cell is None:
            return heads, rows
        return heads, [[*row[:i], cell(row[i]), *row[i + 1 :]] for row in rows]

    return step


def session_table(
    infos: Sequence[SessionInfo], *, deleted: bool = False
) -> tuple[list[str], Rows, list[Narrowing]]:
    """Return the headers, rows and narrowing steps of ``list``'s table.

    On a narrow terminal the name (the column people copy) stays whole; first the
    other headers get shorter, then the time goes (the date stays), then parent,
    model, the date and the message count, in that order.
    """
    when = "deleted" if deleted else "last active"
    headers = ["name", "messages", f"{when} (UTC)", "model", "parent"]
    steps = [
        shorten_column("messages", "msgs"),
        shorten_column(f"{when} (UTC)", "deleted" if deleted else "active", lambda t: t[:10]),
        drop_column("parent"),
        drop_column("model"),
        drop_column("deleted" if deleted else "active"),
        drop_column("msgs"),
    ]
    return headers, session_rows(infos, deleted=deleted), steps


def session_rows(infos: Sequence[SessionInfo], *, deleted: bool = False) -> Rows:
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


def oversized_warning(turn: Any) -> str:
    """What --force says when it sends a prompt bigger than the window."""
    ctx = turn.context
    return (
        f"sending a prompt of about {ctx.token_estimate} tokens to {turn.model} "
        f"({ctx.context_window}-token window) because of --force: the server may cut or "
        "refuse it, and later turns will not carry it"
    )
