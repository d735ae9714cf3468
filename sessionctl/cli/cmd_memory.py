"""Semantic memory commands: relevant, reindex."""

import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

from sessionctl.cli.cmd_messages import TextOpt, pick_output
from sessionctl.cli.options import (
    JsonOpt,
    NullOpt,
    RoleFilterOpt,
    SearchMode,
    SinceOpt,
    UntilOpt,
    UserFilterOpt,
    complete_session,
    optional_session,
    role_values,
    session_argument,
    session_option,
)
from sessionctl.cli.registry import commands
from sessionctl.cli.state import State
from sessionctl.errors import Interrupted, UsageError

# Below this many columns for the content, `relevant` shows its hits stacked, not as a table.
MIN_CONTENT = 20

SessionsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--session",
        "-s",
        help="Search only this session (repeatable; default: all live sessions).",
        autocompletion=complete_session,
        show_default=False,
    ),
]


@commands.command()
def relevant(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="What to look for, in your own words.")],
    session: SessionsOpt = None,
    k: Annotated[int, typer.Option("-k", "--top-k", min=0, help="At most K messages.")] = 5,
    distance_threshold: Annotated[
        float | None,
        typer.Option(
            "--distance-threshold",
            "-d",
            help="Keep hits with cosine distance <= D (0-2; 0.3 = similarity >= 0.7). "
            "Default: the model's (0.70 for MiniLM).",
            show_default=False,
        ),
    ] = None,
    fall_back: Annotated[
        bool,
        typer.Option(
            "--fall-back", help="Nothing close enough: show the same session's recent messages."
        ),
    ] = False,
    role: RoleFilterOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    meta: Annotated[
        list[str] | None,
        typer.Option(
            "--meta",
            metavar="KEY=VALUE",
            help="Only messages whose metadata, or their session's, has KEY=VALUE"
            " (repeatable: all of them; VALUE as `meta` reads it: JSON or text).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Only messages of this model (answers it gave; prompts of sessions using it).",
            show_default=False,
        ),
    ] = None,
    user: UserFilterOpt = None,
    search_mode: Annotated[
        SearchMode,
        typer.Option(
            "--mode",
            "-m",
            help="hybrid: by meaning and by words, fused; vector: by meaning only "
            "(the distance threshold applies to this side only); text: by words only (BM25).",
        ),
    ] = SearchMode.hybrid,
    text: TextOpt = False,
    null: NullOpt = False,
    json_: JsonOpt = False,
    raw: Annotated[bool, typer.Option("--raw", help="JSON with every stored field.")] = False,
) -> None:
    """Find past messages by meaning and by their words, across all sessions unless -s is given.

    --mode hybrid (default) fuses the nearest messages in meaning with the best
    keyword matches (reciprocal rank fusion; a message holding the query
    verbatim first): error codes, ids and names are found as typed. --mode
    vector sorts by cosine distance, --mode text by BM25 (ties by session, then
    order); distance is "-" for a keyword-only hit. --json says, per hit, which
    lists found it ("sources": rank, distance or score). --since/--until keep
    messages created in that window, --meta and --model those with that
    metadata or model, before the cut to K. --user searches only the sessions
    belonging to USER (--fall-back too: their most recently active one). On a
    terminal too narrow for a readable table they are shown one under another.
    -0 prints the contents (as --text), each ended by a NUL byte.

    Example:

        sessionctl relevant "what did we decide about the deploy?" -k 3
        sessionctl relevant "database locking" --since 7d
    """
    from sessionctl.service.memory import search
    from sessionctl.service.timefilter import criteria

    state: State = ctx.obj
    mode = pick_output(text=text, json_=json_, raw=raw, null=null)
    if distance_threshold is not None and not 0 <= distance_threshold <= 2:
        raise UsageError(f"--distance-threshold must be from 0 to 2, got {distance_threshold}")
    hits = search(
        state.store(),
        query,
        sessions=session,
        top_k=k,
        distance_threshold=distance_threshold,
        fall_back=fall_back,
        role=role_values(role),
        mode=search_mode.value,
        where=criteria(since, until, meta=meta, model=model),
        user=user,
    )
    state.note_if_no_data()
    out = state.out
    if mode == "text" or (null and mode == "human"):
        for hit in hits:
            out.text(hit.message.content, end="\0" if null else "\n")
    elif mode in ("json", "raw"):
        out.json([hit.to_dict(raw=mode == "raw") for hit in hits])
    else:
        headers = ["distance", "session", "seq", "role", "content"]
        rows = [
            [
                "-" if h.distance is None else f"{h.distance:.3f}",
                h.session,
                str(h.message.seq),
                h.message.role,
                " ".join(h.message.content.split())[:100],
            ]
            for h in hits
        ]
        if rows and out.is_terminal() and out.room(headers, rows, "content") < MIN_CONTENT:
            # too narrow for a readable content column: one record after another
            out.stacked([(f"{d}  {s}  #{seq} {r}", c) for d, s, seq, r, c in rows])
        elif rows:
            out.table(headers, rows, keep=["session"])
        elif user is not None and not state.store().user_sessions(user):
            out.info(f"user {user!r} has no sessions")
        elif not hits:
            out.info("nothing close enough (raise --distance-threshold, or use --fall-back)")


@commands.command()
def reindex(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        session_argument("Session to rebuild (or -s NAME)."),
    ] = None,
    session: Annotated[
        str | None, session_option("Session to rebuild (instead of SESSION).", env=False)
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Rebuild every live session.")] = False,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            envvar="SESSIONCTL_EMBEDDING_MODEL",
            help="Embedding model (default: the built-in all-MiniLM-L6-v2).",
        ),
    ] = None,
) -> None:
    """Rebuild semantic indexes from the transcripts (with a progress bar on a TTY).

    Example:

        sessionctl reindex --all
    """
    state: State = ctx.obj
    name = optional_session(ctx, name, session)
    if name is None and not all_:
        raise UsageError(
            "no session given: `sessionctl reindex NAME`, `sessionctl reindex -s NAME`"
            " or `sessionctl reindex --all`"
        )
    if name is not None and all_:
        raise UsageError("give a session or --all, not both")
    store = state.store()
    names = None if name is None else [name]
    finished = [0, 0]  # sessions done, of

    def sessions_done(done: int, total: int) -> None:
        finished[:] = [done, total]

    started = time.perf_counter()
    try:
        if state.out.is_tty(state.out.stderr):
            reports = _with_progress(state, store, names, model, sessions_done)
        else:
            reports = store.reindex(names, model=model, sessions_done=sessions_done)
    except KeyboardInterrupt:
        done, total = finished
        raise Interrupted(
            f"interrupted after {done} of {total} session(s); the others are brought up to"
            " date when next searched, or run reindex again"
            if total
            else "interrupted before any session was reindexed"
        ) from None
    elapsed = time.perf_counter() - started
    state.note_if_no_data()
    total = sum(r.added for _, r in reports)
    rate = total / elapsed if elapsed > 0 else 0.0
    state.out.info(
        f"reindexed {len(reports)} session(s), {total} messages "
        f"in {elapsed:.1f}s ({rate:.0f} messages/s)"
    )


def _with_progress(
    state: State,
    store: Any,
    names: list[str] | None,
    model: str | None,
    sessions_done: Callable[[int, int], None],
) -> Any:
    """Reindex under one overall bar (sessions done of all), naming the current session."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (
        TextColumn("reindexing", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("sessions {task.fields[current]}", markup=False),
    )
    with Progress(*columns, console=state.out.console(stderr=True), transient=True) as bar:
        task = bar.add_task("reindex", total=None, current="")

        def on_sessions(done: int, total: int) -> None:
            sessions_done(done, total)
            bar.update(task, completed=done, total=total)

        def progress(session: str, done: int, total: int) -> None:
            bar.update(task, current=f"· {session} {done}/{total}")

        return store.reindex(names, model=model, progress=progress, sessions_done=on_sessions)
