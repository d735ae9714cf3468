"""The chat command: one-shot for scripts, a REPL for people."""

import sys
from typing import Annotated, Any

import typer

from sessionctl.cli.options import NoRedactOpt, UserOpt, Via, complete_session
from sessionctl.cli.registry import commands
from sessionctl.cli.state import State, read_stdin_text
from sessionctl.errors import SessionNotFound, UsageError


@commands.command()
def chat(
    ctx: typer.Context,
    prompt: Annotated[
        str | None, typer.Argument(help="Ask once and exit (stdin, if piped, is appended).")
    ] = None,
    session: Annotated[
        str | None,
        typer.Option(
            "--session",
            "-s",
            help="Session to chat in (created if new; default: a new, generated name).",
            envvar="SESSIONCTL_SESSION",
            autocompletion=complete_session,
            show_default=False,
        ),
    ] = None,
    continue_: Annotated[
        bool, typer.Option("--continue", "-c", help="Continue the most recently active session.")
    ] = False,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", envvar="SESSIONCTL_MODEL", help="Model (litellm name)."),
    ] = None,
    system: Annotated[
        str | None,
        typer.Option(
            "--system",
            envvar="SESSIONCTL_SYSTEM",
            help="System prompt (remembered by the session).",
        ),
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(min=0.0, max=2.0, help="Sampling temperature (0-2).")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Cap the answer's length.")] = None,
    api_base: Annotated[
        str | None,
        typer.Option(envvar="SESSIONCTL_API_BASE", help="OpenAI-compatible server URL."),
    ] = None,
    no_stream: Annotated[
        bool, typer.Option("--no-stream", help="Wait for the whole answer.")
    ] = False,
    json_: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (one-shot).")
    ] = False,
    context_recent: Annotated[
        int | None,
        typer.Option(min=0, envvar="SESSIONCTL_CONTEXT_RECENT", help="At most N recent messages."),
    ] = None,
    context_relevant: Annotated[
        int | None,
        typer.Option(
            min=0, envvar="SESSIONCTL_CONTEXT_RELEVANT", help="At most K relevant older messages."
        ),
    ] = None,
    no_context: Annotated[
        bool, typer.Option("--no-context", help="Send only the system prompt and this prompt.")
    ] = False,
    context_window: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="The model's context window in tokens (default: what an --api-base server "
            "reports, else litellm's model map, else 8192).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Send a prompt even if it alone exceeds the window."),
    ] = False,
    via: Annotated[
        Via | None,
        typer.Option(
            "--via",
            envvar="SESSIONCTL_VIA",
            help="Provider route: auto (direct HTTP when it serves the model), litellm or direct.",
            show_default=False,
        ),
    ] = None,
    auto_compact: Annotated[
        bool,
        typer.Option(
            "--auto-compact",
            envvar="SESSIONCTL_AUTO_COMPACT",
            help="After an answer, compact when the history passes 3/4 of the window.",
        ),
    ] = False,
    show_context: Annotated[
        bool, typer.Option("--show-context", help="Print what would be sent, send nothing.")
    ] = False,
    user: UserOpt = None,
    no_redact: NoRedactOpt = False,
) -> None:
    """Chat with a model; one answer when PROMPT is given or stdin is piped, else a REPL.

    Without -s a new session with a generated name is started; -c continues the
    most recently active one. Either way a one-shot answer names the session on
    stderr (stdout stays the answer, or the --json object).

    Example:

        git diff | sessionctl chat -s review "review this diff"
    """
    from sessionctl.service.chat import ChatOptions

    state: State = ctx.obj
    state.no_redact(no_redact)
    # SESSIONCTL_SESSION / SESSIONCTL_MODEL / SESSIONCTL_SYSTEM are defaults: -c
    # beats the first, and a session's remembered model and system prompt beat
    # the others (settings still fall back to them for new sessions).
    if _from_env(ctx, "session") and continue_:
        session = None
    if _from_env(ctx, "model"):
        model = None
    if _from_env(ctx, "system"):
        system = None
    if temperature is not None and temperature != temperature:  # NaN passes range checks
        raise UsageError("--temperature must be a number from 0 to 2, not nan")
    if session is not None and continue_:
        raise UsageError("use either -s NAME or -c, not both")
    opts = ChatOptions(
        model=model,
        system=system,
        api_base=api_base,
        temperature=temperature,
        max_tokens=max_tokens,
        stream=not no_stream,
        context_recent=context_recent,
        context_relevant=context_relevant,
        no_context=no_context,
        context_window=context_window,
        force=force,
        via=via.value if via is not None else None,
        user=user,
    )
    interactive = prompt is None and _stdin_is_tty()
    if interactive and not (show_context or json_):
        from sessionctl.cli.repl import run_repl

        target = _target(state, session, continue_, announce=False, user=user)
        run_repl(state, target, opts)
        return
    text = _one_shot_prompt(prompt)
    target = _target(state, session, continue_, announce=True, user=user)
    _one_shot(
        state, target, text, opts, as_json=json_, show_context=show_context, compact=auto_compact
    )


def _from_env(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "ENVIRONMENT"


def _target(
    state: State, name: str | None, continue_: bool, *, announce: bool, user: str | None
) -> Any:
    """The session to chat in; with ``user``, -c continues that user's latest session,
    and another user's session is refused before anything is sent."""
    from sessionctl.service.chat import new_session_name

    store = state.store()
    if continue_:
        if user is not None:
            mine = store.user_sessions(user)
            latest = store.session(mine[0]) if mine else None
        else:
            latest = store.most_recent()
        if latest is None:
            raise SessionNotFound(
                "no session to continue; start one with `sessionctl chat`"
                + (f" (user {user!r} has none)" if user is not None else "")
            )
        if announce:  # the REPL's banner names it; a one-shot answer says it on stderr
            state.out.info(f"session: {latest.name}")
        return latest
    if name is not None:
        named = store.session(name)
        if user is not None:
            named.check_user(user)
        return named
    if user is not None:
        from sessionctl.service.users import check_user

        check_user(user)
    generated = store.session(new_session_name(store))
    if announce:
        state.out.info(f"new session: {generated.name}")
    return generated


def _stdin_is_tty() -> bool:
    # sys.stdin is None when the process starts with fd 0 closed (`<&-`, some daemons).
    return sys.stdin is not None and sys.stdin.isatty()


def _one_shot_prompt(prompt: str | None) -> str:
    piped = "" if sys.stdin is None or sys.stdin.isatty() else read_stdin_text()
    if prompt is not None and piped:
        return f"{prompt}\n\n{piped}"
    text = prompt if prompt is not None else piped
    if not text.strip():
        raise UsageError("empty prompt: give PROMPT or pipe text on stdin")
    return text


def print_context(state: State, turn: Any) -> None:
    """Print exactly what a turn would send, and its token count."""
    from sessionctl import llm

    ctx = turn.context
    state.out.json(
        {
            "session": turn.session.name,
            "model": turn.model,
            "api_base": turn.request.api_base,
            "via": "direct" if llm.uses_direct_path(turn.request) else "litellm",
            "tokens": ctx.token_estimate,
            "budget": ctx.budget,
            "exact": ctx.exact,
            "context_window": ctx.context_window,
            "context_window_source": turn.window_source,
            "recent_seqs": ctx.included_recent,
            "relevant_seqs": ctx.included_relevant,
            "messages": ctx.messages,
        }
    )


def after_turn(state: State, turn: Any) -> None:
    """--auto-compact: compact when the history passes its share (a failure only warns:
    the answer is saved)."""
    from sessionctl.errors import SessionctlError
    from sessionctl.service.compact import auto_compact, summary_range

    try:
        written = auto_compact(state.store(), turn)
    except SessionctlError as exc:
        state.out.warn(f"auto-compact failed, nothing was written: {exc}")
        return
    if written is not None:
        span = summary_range(written)
        state.out.info(f"auto-compact: summarised messages {span[0]}-{span[1]}" if span else "")


def _one_shot(
    state: State,
    target: Any,
    prompt: str,
    opts: Any,
    *,
    as_json: bool,
    show_context: bool,
    compact: bool = False,
) -> None:
    from sessionctl.service.chat import prepare_turn, run_turn

    turn = prepare_turn(state.store(), target, prompt, opts)
    if show_context:
        print_context(state, turn)
        return
    if turn.context.oversized:
        from sessionctl.cli.render import oversized_warning

        state.out.warn(oversized_warning(turn))
    out = state.out.stdout
    wrote: list[bool] = []

    def on_delta(delta: str) -> None:
        if not as_json and delta:
            wrote.append(True)  # first: a Ctrl-C inside write() still ends the line
            out.write(delta)
            out.flush()

    try:
        result = run_turn(turn, on_delta, state.out.warn)
    finally:
        if wrote:
            out.write("\n")
            out.flush()
    if compact:
        after_turn(state, turn)
    if as_json:
        state.out.json(
            {
                "session": result.session,
                "model": result.assistant.model,
                "content": result.assistant.content,
                "usage": result.usage,
                "user_message_id": result.user.id,
                "assistant_message_id": result.assistant.id,
            }
        )
