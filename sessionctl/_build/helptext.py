"""Build half of :mod:`sessionctl.cli.fasthelp`: render the top-level ``--help``
exactly as typer and rich print it, for every width and variant, and pack it."""

from __future__ import annotations

import base64
import json
import os
import zlib

from sessionctl.cli.fasthelp import _UNSURE_ENV, VARIANTS, WIDTHS, _key


def render_with_typer(width: int, variant: str) -> str:
    """The top-level help exactly as typer and rich print it at ``width``."""
    import contextlib
    import io

    import typer.rich_utils as rich_utils

    from sessionctl.cli.app import run

    saved = (rich_utils.MAX_WIDTH, rich_utils.FORCE_TERMINAL)
    names = ("NO_COLOR", "COLORTERM", "TERM", "COLUMNS", *_UNSURE_ENV)
    env_saved = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ.pop(name, None)
    os.environ["TERM"] = "xterm-256color"  # named colours: the same codes on any terminal
    rich_utils.MAX_WIDTH = width
    rich_utils.FORCE_TERMINAL = variant == "ansi"
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            code = run(["--help"])
    finally:
        rich_utils.MAX_WIDTH, rich_utils.FORCE_TERMINAL = saved
        for name, value in env_saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    if code != 0:
        raise RuntimeError(f"sessionctl --help exited {code} while rendering it")
    return buffer.getvalue()


def build() -> str:
    """The content of :data:`HELP_FILE`: every width and variant, packed."""
    from sessionctl import __version__

    texts: dict[str, list[int]] = {}
    body = bytearray()
    for variant in VARIANTS:
        for width in WIDTHS:
            data = render_with_typer(width, variant).encode("utf-8")
            texts[_key(width, variant)] = [len(body), len(body) + len(data)]
            body += data
    head = json.dumps({"version": __version__, "texts": texts}, separators=(",", ":"))
    packed = zlib.compress(head.encode("utf-8") + b"\n" + bytes(body), 9)
    encoded = base64.encodebytes(packed).decode("ascii")
    return encoded
