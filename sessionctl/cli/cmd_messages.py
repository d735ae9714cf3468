"""Commands on a session's messages: recent, add, store, drop."""

import json
import sys
from typing import Annotated, Any

import typer

from sessionctl.cli.completers import complete_message_id, complete_session_or_id
from sessionctl.cli.options import (
    ExplicitSessionOpt,
    JsonOpt,
    NoRedactOpt,
    NullOpt,
    Role,
    RoleFilterOpt,
    SessionOpt,
    SinceOpt,
    UntilOpt,
    UserOpt,
    optional_session,
    pick_session,
    role_values,
    session_argument,
)
from sessionctl.cli.registry import commands
from sessionctl.cli.state import State, read_stdin_text
from sessionctl.errors import SessionNotFound, UsageError


def pick_output(*, text: bool, json_: bool, raw: bool, null: bool = False) -> str:
    """Return the one output mode chosen, or raise UsageError when several are
    (or when ``-0`` comes with JSON, which has its own boundaries)."""
    chosen = [name for name, on in (("text", text), ("json", json_), ("raw", raw)) if on]
    if len(chosen) > 1:
        raise UsageError(f"choose one of --{', --'.join(chosen)}")
    mode = chosen[0] if chosen else "human"
    if null and mode in ("json", "raw"):
        raise UsageError(f"-0 separates text records; --{mode} is one JSON array, drop -0")
    return mode


TextOpt = Annotated[
    bool,
    typer.Option(
        "--text",
        help="Print only the contents, one message per line (a message's own newlines "
        "are kept: use -0 or --json when messages may span lines).",
    ),
]


def resolve_session(state: State, name: str | None) -> Any:
    """Return the named session, or the most recently active one."""
    store = state.store()
    if name is not None:
        return store.existing(name)
    latest = store.most_recent()
    if latest is None:
        raise SessionNotFound(
            "there are no sessions yet; create one with `sessionctl chat` or `add`"
        )
    return latest


def print_messages(state: State, messages: list[Any], mode: str, *, null: bool = False) -> None:
    """Render messages as text, JSON, raw JSON or for a person; ``null``: NUL-ended."""
    out = state.out
    if mode == "text":
        for m in messages:
            out.text(m.content, end="\0" if null else "\n")
    elif mode in ("json", "raw"):
        out.json([m.to_dict(raw=mode == "raw") for m in messages])
    else:
        out.messages(messages, null=null)


@commands.command()
def recent(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        session_argument(
            "Session name (or -s NAME; default: SESSIONCTL_SESSION, else the most"
            " recently active session, named on stderr)."
        ),
    ] = None,
    session: SessionOpt = None,
    k: Annotated[int, typer.Option("-k", "--top-k", min=0, help="How many messages.")] = 5,
    role: RoleFilterOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    text: TextOpt = False,
    null: NullOpt = False,
    json_: JsonOpt = False,
    raw: Annotated[bool, typer.Option("--raw", help="Print JSON with every stored field.")] = False,
) -> None:
    """Show the last K messages of a session, oldest first.

    Piped, each message is one `role: text` line (--text: the text only); a
    message that spans lines spans lines there too. For scripts use --json (one
    JSON array; every field) or -0 (each message ends with a NUL byte).

    Example:

        sessionctl recent work -k 10 --json | jq -r '.[].content'
        sessionctl recent work --text -0 | xargs -0 -n1 printf '[%s]\\n'
        sessionctl recent work --since 24h
    """
    state: State = ctx.obj
    mode = pick_output(text=text, json_=json_, raw=raw, null=null)
    named = optional_session(ctx, name, session)
    target = resolve_session(state, named)
    if named is None:  # the most recently active one: say which (stderr, so --json stays data)
        state.out.info(f"session: {target.name}")
    messages = target.recent_messages(k, role=role_values(role), since=since, until=until)
    print_messages(state, messages, mode, null=null)


def _text_or_stdin(text: str | None) -> str:
    if text is not None:
        return text
    if sys.stdin.isatty():
        raise UsageError("give the message TEXT or pipe it on stdin")
    return read_stdin_text()


def _parse_metadata(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise UsageError('--metadata must be a JSON object, like \'{"source": "cron"}\'') from None
    if not isinstance(value, dict):
        raise UsageError('--metadata must be a JSON object, like \'{"source": "cron"}\'')
    return value


@commands.command()
def add(
    ctx: typer.Context,
    role: Annotated[Role, typer.Option("--role", "-r", help="Who wrote it (llm means assistant).")],
    name_: Annotated[
        str | None,
        session_argument("Session name, before TEXT (or -s NAME); a lone argument is the TEXT."),
    ] = None,
    text: Annotated[
        str | None, typer.Argument(metavar="[TEXT]", help="Message text (default: stdin).")
    ] = None,
    session: SessionOpt = None,
    model: Annotated[str | None, typer.Option(help="Model that wrote it.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Author/tool name.")] = None,
    tool_call_id: Annotated[str | None, typer.Option(help="For role tool.")] = None,
    metadata: Annotated[str | None, typer.Option(help="JSON object stored with it.")] = None,
    user: UserOpt = None,
    no_redact: NoRedactOpt = False,
) -> None:
    """Append one message without calling a model; print its id.

    The session is created if it does not exist. One argument is always the
    TEXT: give the session first (`add notes TEXT`) or with -s.

    Example:

        git log -1 --format=%B | sessionctl add -s notes --role user
    """
    state: State = ctx.obj
    state.no_redact(no_redact)
    if text is None and name_ is not None:  # `add -s notes TEXT`: one argument is the text
        name_, text = None, name_
    session_name = pick_session(ctx, name_, session, rest="[TEXT]")
    message: dict[str, Any] = {"role": role.value, "content": None}
    for key, value in (("model", model), ("name", name), ("tool_call_id", tool_call_id)):
        if value is not None:
            message[key] = value
    meta = _parse_metadata(metadata)
    if meta is not None:
        message["metadata"] = meta
    target = state.store().session(session_name)  # a bad name fails before stdin is read
    if user is not None:
        target.check_user(user)  # another user's session fails before stdin is read
    message["content"] = _text_or_stdin(text)
    state.out.line(target.add_message(message, user=user).id)


@commands.command(name="store")
def store_pair(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        session_argument("Session name, before PROMPT (or -s NAME)."),
    ] = None,
    prompt: Annotated[
        str | None, typer.Argument(metavar="PROMPT", help="The user's prompt.")
    ] = None,
    response: Annotated[
        str | None, typer.Argument(metavar="RESPONSE", help="The model's response.")
    ] = None,
    session: SessionOpt = None,
    model: Annotated[str | None, typer.Option(help="Model that answered.")] = None,
    user: UserOpt = None,
    no_redact: NoRedactOpt = False,
) -> None:
    """Append a prompt and its response (user, then assistant); print both ids.

    Two arguments are PROMPT RESPONSE (the session from -s or SESSIONCTL_SESSION);
    three are SESSION PROMPT RESPONSE.

    Example:

        sessionctl store work "What is 2+2?" "4"
    """
    state: State = ctx.obj
    state.no_redact(no_redact)
    if response is None:  # two arguments: PROMPT RESPONSE
        name, prompt, response = None, name, prompt
    if prompt is None or response is None:
        raise UsageError(
            "give the PROMPT and the RESPONSE: `sessionctl store NAME PROMPT RESPONSE`"
        )
    target = state.store().session(pick_session(ctx, name, session, rest="PROMPT RESPONSE"))
    asked, assistant = target.store(prompt, response, model=model, user=user)
    state.out.line(asked.id)
    state.out.line(assistant.id)


@commands.command()
def drop(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        session_argument(
            "Session name (or -s NAME; then a lone argument is the ID).",
            completer=complete_session_or_id,
        ),
    ] = None,
    message_id: Annotated[
        str | None,
        typer.Argument(
            metavar="[ID]",
            help="Message id (default: the last message).",
            autocompletion=complete_message_id,
        ),
    ] = None,
    session: ExplicitSessionOpt = None,
) -> None:
    """Remove one message (the last one unless ID is given); print its id.

    Without -s the first argument is the session; with -s a lone argument is the ID.

    Example:

        sessionctl drop work    # undo the last message
    """
    state: State = ctx.obj
    if session is not None and message_id is None and name is not None:
        name, message_id = None, name  # `drop -s work ID`
    target = state.store().existing(pick_session(ctx, name, session, rest="[ID]"))
    dropped = target.drop(message_id)
    state.out.line(dropped.id)
