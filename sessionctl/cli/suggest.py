"""One "Did you mean …?" for a mistyped command or option.

click and typer each append their own suggestion to an unknown subcommand (so
``config sho`` said it twice); the lazy root group knows only the commands it
has built (so ``lsit`` got none); and click compares option names with their
dashes, so every ``--x`` looks alike (``--sesion`` suggested ``--json``). The
error boundary rebuilds the message here instead, from the real candidates.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

# difflib's default is 0.6, at which "sesion" still matches "json"
_CUTOFF = 0.7
_UNKNOWN_COMMAND = re.compile(r"No such command '(.*?)'\.")


def closest(word: str, candidates: list[str]) -> str | None:
    """Return the candidate closest to ``word`` (dashes ignored), or None if none is close."""
    bare = {c.lstrip("-"): c for c in candidates}
    matches = difflib.get_close_matches(word.lstrip("-"), list(bare), n=1, cutoff=_CUTOFF)
    return bare[matches[0]] if matches else None


def rewrite_unknown(exc: Any) -> str | None:
    """Return the message for an unknown command or option with one suggestion, else None."""
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return None
    command = ctx.command
    if hasattr(exc, "option_name") and type(exc).__name__ == "NoSuchOption":
        name = str(exc.option_name)
        options = [
            opt
            for param in command.get_params(ctx)
            if getattr(param, "param_type_name", "") == "option"
            for opt in (*param.opts, *param.secondary_opts)
        ]
        message = f"No such option {name!r}."
        match = closest(name, [o for o in options if o.startswith("--")])
    elif unknown := _UNKNOWN_COMMAND.match(str(exc.message)):
        # click < 8.4 has no NoSuchCommand: its message is all there is
        name = str(getattr(exc, "command_name", unknown.group(1)))
        message = f"No such command {name!r}."
        match = closest(name, list(command.list_commands(ctx)))
    else:
        return None
    return f"{message} Did you mean {match!r}?" if match else message
