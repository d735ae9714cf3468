"""The elements of one big JSON array, read one at a time (ChatGPT's ``conversations.json``).

:func:`iter_array` reads a binary stream in chunks, decodes it incrementally as
UTF-8 (a character split across two chunks is joined) and hands each element
of the top-level array to :meth:`json.JSONDecoder.raw_decode` once the text read
holds all of it. Memory stays at about one element and one chunk, whatever the
size of the file. An element cut by a chunk edge is parsed again when more text
has come; the text read for one element at least doubles each time, so an
element of any size costs a small multiple of its own parse.

Errors are :class:`UsageError` with one line naming the place: ``line L column C``
of the file (the columns count characters), and for a file that ends early, which
element was left open.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from typing import Any, Protocol

from sessionctl.errors import UsageError

CHUNK = 2**20
_SPACE = " \t\n\r"
_NUMBER = "0123456789.eE+-"


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


class _Text:
    """The decoded text not consumed yet, ``buf[pos:]``, and where it is in the file."""

    def __init__(self, stream: Readable, where: str, chunk: int) -> None:
        self.stream, self.where, self.chunk = stream, where, chunk
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
        self.buf = ""
        self.pos = 0
        self.line = 1  # the line buf[0] is on
        self.line_start = 0  # where that line starts, relative to buf[0] (<= 0)
        self.bytes_read = 0
        self.eof = False

    def more(self, at_least: int = 0) -> bool:
        """Drop the consumed text and read at least one more chunk; False at the end."""
        if self.eof:
            return False
        consumed = self.buf[: self.pos]
        newlines = consumed.count("\n")
        if newlines:
            self.line += newlines
            self.line_start = consumed.rfind("\n") + 1 - self.pos
        else:
            self.line_start -= self.pos
        self.buf, self.pos = self.buf[self.pos :], 0
        data = self.stream.read(max(self.chunk, at_least))
        pending = len(self.decoder.getstate()[0])  # bytes of a character cut by the last edge
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            byte = self.bytes_read - pending + exc.start + 1
            raise self.fail_at(None, f"not UTF-8 text (byte {byte})") from None
        self.bytes_read += len(data)
        self.eof = not data
        self.buf += text
        return bool(data)

    def place(self, index: int) -> str:
        """``line L column C`` of ``buf[index]``."""
        line = self.line + self.buf.count("\n", 0, index)
        start = self.buf.rfind("\n", 0, index)
        column = index - (start + 1) + 1 if start >= 0 else index - self.line_start + 1
        return f"line {line} column {column}"

    def fail_at(self, index: int | None, problem: str) -> UsageError:
        where = self.where if index is None else f"{self.where}: {self.place(index)}"
        return UsageError(f"{where}: {problem}; nothing imported")

    def skip_space(self) -> bool:
        """Move past whitespace, reading as needed; False at the end of the file."""
        while True:
            buf, pos, end = self.buf, self.pos, len(self.buf)
            while pos < end and buf[pos] in _SPACE:
                pos += 1
            self.pos = pos
            if pos < end:
                return True
            if not self.more():
                return False


def iter_array(
    stream: Readable,
    where: str,
    *,
    what: str = "element",
    not_a_list: str = "expected a JSON list",
    chunk: int = CHUNK,
    max_element: int | None = None,
) -> Iterator[Any]:
    """Yield each element of the JSON array that ``stream`` holds, parsed, in order.

    ``where`` names the file in errors, ``what`` an element (``conversation``).
    Refused with a one-line UsageError, when it is reached: text that is not
    UTF-8, invalid JSON (NaN and Infinity too), JSON nested too deeply, anything
    but an array at the top, anything after it, a file that ends inside it, and an
    element longer than ``max_element`` characters. An element is yielded before
    what follows it is read: a caller that must not act on a bad file reads it all
    first (``import --from`` checks the whole source before it writes).
    """
    text = _Text(stream, where, chunk)
    if not text.skip_space():
        raise text.fail_at(None, "the file is empty")
    if text.buf[text.pos] != "[":
        raise text.fail_at(None, not_a_list)
    text.pos += 1
    number = 0
    while True:
        if not text.skip_space():
            raise text.fail_at(None, _cut(number, what))
        if text.buf[text.pos] == "]":
            if number:  # "[1, ]": the comma promised one more
                raise text.fail_at(text.pos, f"not valid JSON ({what} expected after ',')")
            text.pos += 1
            break
        number += 1
        value, text.pos = _element(text, number, what, max_element)
        yield value
        if not text.skip_space():
            raise text.fail_at(None, _cut(number, what))
        mark = text.buf[text.pos]
        if mark == "]":
            text.pos += 1
            break
        if mark != ",":
            problem = f"not valid JSON (',' or ']' expected after {what} {number})"
            raise text.fail_at(text.pos, problem)
        text.pos += 1
    if text.skip_space():
        raise text.fail_at(text.pos, "not valid JSON (more data after the end of the list)")


def _cut(number: int, what: str, inside: str = "") -> str:
    if inside:
        place = f"inside {what} {number}, which starts at {inside}"
    elif number:
        place = f"after {what} {number}, before the list is closed"
    else:
        place = f"before its first {what}"
    return f"not valid JSON: the file ends {place} (truncated?)"


def _element(text: _Text, number: int, what: str, max_element: int | None) -> tuple[Any, int]:
    """Parse the element at ``text.pos``; return it and where it ends in ``text.buf``."""
    while True:
        start = text.pos
        try:
            value, end = _DECODER.raw_decode(text.buf, start)
        except RecursionError:
            raise text.fail_at(start, "not valid JSON (nested too deeply)") from None
        except json.JSONDecodeError as exc:
            unterminated = exc.msg.startswith("Unterminated string")
            if text.eof:
                if unterminated or exc.pos >= len(text.buf):
                    problem = _cut(number, what, inside=text.place(start))
                    raise text.fail_at(None, problem) from None
                raise text.fail_at(exc.pos, f"not valid JSON ({exc.msg})") from None
            if not unterminated and exc.pos < len(text.buf) - 16:
                raise text.fail_at(exc.pos, f"not valid JSON ({exc.msg})") from None
            _grow(text, number, what, max_element)  # cut by the chunk's edge, perhaps
            continue
        except ValueError as exc:  # NaN, Infinity
            raise text.fail_at(start, f"not valid JSON ({exc})") from None
        scalar = not isinstance(value, dict | list | str)
        if scalar and not text.eof and not text.buf[end:].lstrip(_NUMBER):
            _grow(text, number, what, max_element)  # "2." at the edge: 2.5 perhaps
            continue
        return value, end


def _grow(text: _Text, number: int, what: str, max_element: int | None) -> None:
    """Read more for the element at ``text.pos``: at least as much as it holds so far."""
    held = len(text.buf) - text.pos
    if max_element is not None and held > max_element:
        raise text.fail_at(text.pos, f"{what} {number} is longer than {max_element} characters")
    text.more(at_least=held)
