"""`sessionctl --help` without rich: the top-level help, rendered at build time.

The top-level help is what a new user types most, and rendering it through
typer's rich help panels costs ~250 ms of imports and layout, more than the rest
of a command's start-up. ``python -m sessionctl._build.gen_docs`` therefore renders
it once per terminal width in :data:`WIDTHS`, plain and coloured, exactly as
typer and rich print it, into ``sessionctl/share/help/top.txt`` (zlib, base64;
the build half is :mod:`sessionctl._build.helptext`); ``tests/test_generated.py``
checks the stored file against a fresh rendering.

:func:`print_top_help` serves ``--help``/``-h`` from that file when it can tell
that rich would print one of the stored renderings: the same width (COLUMNS, else
the terminal's, else 80), colour exactly when stdout is a terminal, a UTF-8
stdout. Anything else it is not sure about (FORCE_COLOR, NO_COLOR on a
terminal, TERM=dumb, a width not stored, a stale file, …) falls back to typer.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

WIDTHS = range(50, 201)
VARIANTS = ("plain", "ansi")  # not a terminal / a terminal with colour
HELP_FILE = Path(__file__).resolve().parent.parent / "share" / "help" / "top.txt"
# Environment variables that change what rich or typer print: never guessed at.
_UNSURE_ENV = (
    "FORCE_COLOR",
    "PY_COLORS",
    "GITHUB_ACTIONS",
    "TERMINAL_WIDTH",
    "TTY_COMPATIBLE",
    "TTY_INTERACTIVE",
    "_TYPER_FORCE_DISABLE_TERMINAL",
    "JUPYTER_COLUMNS",
)


def _key(width: int, variant: str) -> str:
    return f"{width}:{variant}"


def choose(environ: Mapping[str, str], stream: TextIO) -> tuple[int, str] | None:
    """The (width, variant) rich would print the help with, or None when unsure."""
    if os.name != "posix" or any(name in environ for name in _UNSURE_ENV):
        return None
    if not (getattr(stream, "encoding", None) or "").lower().replace("-", "").startswith("utf"):
        return None  # rich would draw the boxes in ASCII
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError, OSError):
        return None
    if tty:
        if environ.get("NO_COLOR") or environ.get("TERM", "") in ("dumb", "unknown"):
            return None
        variant = "ansi"
    else:
        variant = "plain"
    # rich's Console.size: COLUMNS, else the first of stdin/stdout/stderr that is a
    # terminal, else 80.
    columns = environ.get("COLUMNS")
    width: int | None = None
    if columns is not None and columns.isdigit():
        width = int(columns)
    else:
        for fd in (0, 1, 2):
            try:
                width = os.get_terminal_size(fd).columns
            except (AttributeError, ValueError, OSError):
                continue
            break
        width = width or 80
    return width, variant


def load(path: Path = HELP_FILE) -> tuple[dict[str, Any], bytes] | None:
    """The stored index and texts, or None when the file is missing or damaged."""
    try:
        packed = zlib.decompress(base64.b64decode(path.read_bytes()))
        head, _, body = packed.partition(b"\n")
        index = json.loads(head)
    except (OSError, ValueError, zlib.error):
        return None
    return (index, body) if isinstance(index, dict) else None


def print_top_help(
    args: Sequence[str],
    *,
    environ: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> bool:
    """Print the stored top-level help when ``args`` asks for it and it is sure to match."""
    if list(args) not in (["--help"], ["-h"]):
        return False
    out = sys.stdout if stream is None else stream
    chosen = choose(os.environ if environ is None else environ, out)
    if chosen is None:
        return False
    stored = load()
    if stored is None:
        return False
    index, body = stored
    from sessionctl import __version__

    span = index.get("texts", {}).get(_key(*chosen))
    if index.get("version") != __version__ or not span:
        return False
    out.write(body[span[0] : span[1]].decode("utf-8"))
    out.flush()
    return True
