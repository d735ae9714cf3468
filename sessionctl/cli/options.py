"""Options shared by several commands, and session-name completion."""

import os
from typing import Annotated

import typer


def complete_session(ctx: typer.Context, incomplete: str) -> list[str]:
    """Complete live session names (reads one directory; imports nothing heavy)."""
    from pathlib import Path

    from sessionctl.config import load_settings

    home = ctx.find_root().params.get("home")
    try:
        settings = load_settings(home=home)
    except Exception:
        return []
    try:
        names = os.listdir(Path(settings.home) / "sessions")
    except OSError:
        return []
    return sorted(
        n[:-6]
        for n in names
        if n.endswith(".jsonl") and not n.startswith(".") and n.startswith(incomplete)
    )


SessionOpt = Annotated[
    str | None,
    typer.Option(
        "--session",
        "-s",
        help="Session name (default: the most recently active session).",
        envvar="SESSIONCTL_SESSION",
        autocompletion=complete_session,
        show_default=False,
    ),
]
RequiredSessionOpt = Annotated[
    str,
    typer.Option(
        "--session",
        "-s",
        help="Session name (required: this command never guesses its target).",
        autocompletion=complete_session,
        show_default=False,
    ),
]
SessionArg = Annotated[
    str, typer.Argument(help="Session name.", autocompletion=complete_session, show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
NullOpt = Annotated[
    bool,
    typer.Option(
        "-0",
        "--null",
        help="End each message with a NUL byte instead of a newline, so messages that "
        "span lines stay apart (for xargs -0).",
    ),
]
NoRedactOpt = Annotated[
    bool,
    typer.Option(
        "--no-redact",
        help="Write secrets (keys, tokens, passwords) as they are, for this command only "
        "(default: replaced by [REDACTED:kind]; see docs/security.md).",
    ),
]
