"""Options shared by several commands, and session-name completion."""

import enum
from typing import Annotated, Any

import typer


def complete_session(ctx: typer.Context, incomplete: str) -> list[str]:
    """Complete live session names (one listing in the file backend; nothing heavy)."""
    from sessionctl.config import load_settings
    from sessionctl.service.store import Store

    params = ctx.find_root().params
    flags = {k: params.get(k) for k in ("home", "store", "namespace")}
    try:
        with Store(settings=load_settings(**flags), warn=lambda _m: None) as store:
            return store.names(incomplete)
    except Exception:  # a TAB must never print a traceback into the prompt
        return []


SESSION_ENV = "SESSIONCTL_SESSION"


def session_option(help_text: str, *, env: bool, completer: Any = complete_session) -> Any:
    """``-s/--session NAME``; with ``env`` its default comes from SESSIONCTL_SESSION.

    Commands that only read a session or add to it take the variable; commands
    that remove or move something (clear, delete, drop, rename, restore, reindex)
    never do: a variable exported for another purpose must not pick their target.
    """
    return typer.Option(
        "--session",
        "-s",
        help=help_text,
        envvar=SESSION_ENV if env else None,
        autocompletion=completer,
        show_default=False,
    )


# -s of a command that reads or adds to one session
SessionOpt = Annotated[str | None, session_option("Session name (instead of SESSION).", env=True)]
# -s of a command that removes or moves something: never from the environment
ExplicitSessionOpt = Annotated[
    str | None, session_option("Session name (instead of SESSION).", env=False)
]


def session_argument(
    help_text: str, *, metavar: str = "[SESSION]", completer: Any = complete_session
) -> Any:
    """The optional SESSION argument that stands for ``-s NAME`` (see :func:`pick_session`)."""
    return typer.Argument(
        metavar=metavar, help=help_text, autocompletion=completer, show_default=False
    )


SessionArg = Annotated[str | None, session_argument("Session name (or -s NAME).")]
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
UserOpt = Annotated[
    str | None,
    typer.Option(
        "--user",
        metavar="USER",
        help="The session belongs to USER (set if it is new or has no user; "
        "another user's session is refused).",
        show_default=False,
    ),
]
UserFilterOpt = Annotated[
    str | None,
    typer.Option(
        "--user",
        metavar="USER",
        help="Only sessions belonging to USER (metadata key user).",
        show_default=False,
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


class Role(str, enum.Enum):
    """What --role takes: models.ROLES and their aliases (llm is assistant)."""

    system = "system"
    user = "user"
    assistant = "assistant"
    tool = "tool"
    llm = "llm"


class Via(str, enum.Enum):
    """What ``chat --via`` takes (config.VIA_CHOICES)."""

    auto = "auto"
    litellm = "litellm"
    direct = "direct"


class SearchMode(str, enum.Enum):
    """What ``relevant --mode`` takes (service.memory.MODES)."""

    hybrid = "hybrid"
    vector = "vector"
    text = "text"


class StatsBy(str, enum.Enum):
    """What ``stats --by`` takes."""

    session = "session"
    model = "model"
    day = "day"


class ExportFormat(str, enum.Enum):
    """What ``export --format`` takes: transfer.EXPORT_FORMATS and md (markdown)."""

    jsonl = "jsonl"
    json = "json"
    markdown = "markdown"
    openai = "openai"
    openai_ft = "openai-ft"
    sharegpt = "sharegpt"
    md = "md"


RoleFilterOpt = Annotated[
    list[Role] | None,
    typer.Option(
        "--role", "-r", help="Only messages of this role (repeatable).", show_default=False
    ),
]


SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="WHEN",
        help="Only from WHEN on (inclusive): 30m, 24h, 7d ago, a date or an ISO timestamp.",
        show_default=False,
    ),
]
UntilOpt = Annotated[
    str | None,
    typer.Option(
        "--until",
        metavar="WHEN",
        help="Only up to WHEN (inclusive; a date means the end of that day).",
        show_default=False,
    ),
]


def role_values(roles: list[Role] | None) -> list[str] | None:
    """Return the --role choices as plain strings (None: every role)."""
    return None if roles is None else [r.value for r in roles]


def optional_session(ctx: typer.Context, positional: str | None, option: str | None) -> str | None:
    """Return the session named as an argument or with -s (or by SESSIONCTL_SESSION), or None.

    The two ways name it once: two different names are a usage error. The
    environment variable is only a default, so an argument beats it.
    """
    from sessionctl.errors import UsageError

    source = ctx.get_parameter_source("session")
    from_env = source is not None and source.name == "ENVIRONMENT"
    if positional is not None and option is not None and not from_env and positional != option:
        raise UsageError(
            f"two sessions given, {positional!r} and -s {option!r}: name the session once"
        )
    return positional if positional is not None else option


def pick_session(
    ctx: typer.Context,
    positional: str | None,
    option: str | None,
    *,
    label: str = "NAME",
    rest: str = "",
) -> str:
    """Return the session as :func:`optional_session` does; none at all is a usage error.

    The error shows both ways to give it: ``CMD LABEL REST`` and ``CMD -s LABEL REST``.
    """
    from sessionctl.errors import UsageError

    name = optional_session(ctx, positional, option)
    if name is None:
        takes_env = any(p.name == "session" and p.envvar == SESSION_ENV for p in ctx.command.params)
        tail = f" {rest}" if rest else ""
        raise UsageError(
            f"no session given: `{ctx.command_path} {label}{tail}`"
            f" or `{ctx.command_path} -s {label}{tail}`"
            + (f" (or set {SESSION_ENV})" if takes_env else "")
        )
    return name
