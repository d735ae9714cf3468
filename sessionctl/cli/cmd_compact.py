"""The compact command: a summary of older turns, appended (nothing is rewritten)."""

from typing import Annotated

import typer

from sessionctl.cli.options import ExplicitSessionOpt, JsonOpt, SessionArg, Via
from sessionctl.cli.registry import commands
from sessionctl.cli.state import State


@commands.command()
def compact(
    ctx: typer.Context,
    name: SessionArg = None,
    session: ExplicitSessionOpt = None,
    keep_last: Annotated[
        int, typer.Option("--keep-last", min=0, help="Messages left out of the summary.")
    ] = 10,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Model that writes it (default: the session's)."),
    ] = None,
    api_base: Annotated[
        str | None,
        typer.Option(envvar="SESSIONCTL_API_BASE", help="OpenAI-compatible server URL."),
    ] = None,
    via: Annotated[
        Via | None,
        typer.Option("--via", envvar="SESSIONCTL_VIA", help="Provider route.", show_default=False),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Ask the model for a summary of older turns and append it as one record.

    Nothing is rewritten: show, export, recent and relevant still see every message.
    When a later chat's history does not fit the window, the summary stands in for
    the messages it covers. A failed or interrupted compaction writes nothing.

    Example:

        sessionctl compact work --keep-last 20
    """
    from sessionctl.cli.options import pick_session
    from sessionctl.service.chat import ChatOptions
    from sessionctl.service.compact import compact as run_compact
    from sessionctl.service.compact import summary_range

    state: State = ctx.obj
    chosen = pick_session(ctx, name, session)
    store = state.store()
    target = store.existing(chosen)
    opts = ChatOptions(model=model, api_base=api_base, via=via.value if via else None)
    written = run_compact(store, target, opts, keep_last=keep_last)
    span = summary_range(written)
    assert span is not None
    if json_:
        state.out.json({**written.to_dict(), "covers": {"from": span[0], "to": span[1]}})
        return
    state.out.info(f"summarised messages {span[0]}-{span[1]} of {chosen!r} as seq {written.seq}")
