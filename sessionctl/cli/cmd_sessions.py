"""Commands on whole sessions: list, show, export, import, fork, delete, restore,
clear, prune, meta, rename."""

import io
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from sessionctl.cli.completers import complete_deleted_session
from sessionctl.cli.options import (
    ExplicitSessionOpt,
    ExportFormat,
    JsonOpt,
    NoRedactOpt,
    NullOpt,
    RoleFilterOpt,
    SessionArg,
    SessionOpt,
    SinceOpt,
    UntilOpt,
    UserFilterOpt,
    pick_session,
    role_values,
    session_argument,
    session_option,
)
from sessionctl.cli.registry import commands
from sessionctl.cli.render import session_table
from sessionctl.cli.state import State
from sessionctl.errors import UsageError


@commands.command(name="list")
def list_sessions(
    ctx: typer.Context,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=0, help="At most N sessions.")
    ] = None,
    cursor: Annotated[str | None, typer.Option(help="Continue after a previous page.")] = None,
    deleted: Annotated[bool, typer.Option("--deleted", help="List the trash instead.")] = False,
    since: SinceOpt = None,
    until: UntilOpt = None,
    user: UserFilterOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List sessions, most recently active first.

    --since/--until keep the sessions whose activity (creation to last
    activity) overlaps that window; --user those belonging to USER.

    When a page is cut by --limit, the cursor for the next page is printed on
    stderr (and as next_cursor with --json). On a narrow terminal the name is
    never cut: the time, then parent, model, date and count give way first.

    Example:

        sessionctl list --limit 20 --json | jq -r '.sessions[].name'
        sessionctl list --since 7d
        sessionctl list --user alice
    """
    state: State = ctx.obj
    page = state.store().list_sessions(
        limit=limit, cursor=cursor, deleted=deleted, since=since, until=until, user=user
    )
    state.note_if_no_data()
    if json_:
        state.out.json(
            {"sessions": [i.to_dict() for i in page.sessions], "next_cursor": page.next_cursor}
        )
        return
    if page.sessions:
        headers, rows, narrower = session_table(page.sessions, deleted=deleted)
        state.out.table(headers, rows, keep=["name"], narrower=narrower)
    if page.next_cursor:
        state.out.more("sessionctl list --cursor", page.next_cursor)


@commands.command()
def show(
    ctx: typer.Context,
    name: SessionArg = None,
    session: SessionOpt = None,
    null: NullOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Show a whole session: its settings and every message.

    Piped, each message is one `role: text` line, and a message that spans lines
    spans lines there too; -0 ends each message with a NUL byte instead, and
    --json (or `export`) keeps every field.

    Example:

        sessionctl show work | less
    """
    from sessionctl.cli.cmd_messages import pick_output

    state: State = ctx.obj
    pick_output(text=False, json_=json_, raw=False, null=null)
    session_ = state.store().existing(pick_session(ctx, name, session))
    if json_:  # streamed: one message in memory at a time, whatever the session's size
        from sessionctl.service.transfer import session_stream

        head, messages = session_stream(session_)
        state.out.json_streamed(head, "messages", messages)
        return
    info = session_.info()
    state.out.info(
        f"{info.name}: {info.messages} messages, model {info.model or '-'}"
        + (f", forked from {info.parent}" if info.parent else "")
    )
    state.out.messages(session_.iter_messages(), null=null)


@commands.command()
def export(
    ctx: typer.Context,
    name: SessionArg = None,
    session: SessionOpt = None,
    format_: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            "-f",
            help="jsonl (lossless), json, markdown (md), openai (messages JSON),"
            " openai-ft (fine-tuning JSONL) or sharegpt (JSONL).",
        ),
    ] = ExportFormat.jsonl,
    all_: Annotated[
        bool, typer.Option("--all", help="Every session, one after the other.")
    ] = False,
    last: Annotated[
        int | None, typer.Option("--last", metavar="N", min=1, help="Only the last N messages.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(metavar="WHEN", help="Only messages since: 30d, 12h, or a date."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(metavar="WHEN", help="Only messages until: 30d (ago), or a date."),
    ] = None,
    role: RoleFilterOpt = None,
) -> None:
    """Write a whole session to stdout.

    `export --format jsonl` then `import` round-trips exactly; `--format openai`
    then `import --from openai` keeps roles, contents and tool calls.

    Example:

        sessionctl export work > work.jsonl
    """
    from sessionctl.service.timefilter import time_window
    from sessionctl.service.transfer import Selection, export_chunks
    from sessionctl.timeutil import format_iso

    state: State = ctx.obj
    store = state.store()
    roles = role_values(role)
    window = time_window(since, until)  # as relevant/recent/list: a date --until is its end
    pick = Selection(
        last=last,
        since=format_iso(window.since) if window.since else None,
        until=format_iso(window.until) if window.until else None,
        roles=frozenset(roles) if roles else None,
    )
    if all_:
        if name is not None or session is not None:
            raise UsageError("--all exports every session: give no session name")
        if format_.value in ("json", "openai", "markdown", "md", "jsonl"):
            raise UsageError("--all needs a one-line-per-session format: openai-ft or sharegpt")
        for item in store.names():
            state.out.write_chunks(export_chunks(store.existing(item), format_.value, pick))
        return
    target = store.existing(pick_session(ctx, name, session))
    state.out.write_chunks(export_chunks(target, format_.value, pick))  # streamed


@commands.command(name="import")
def import_(
    ctx: typer.Context,
    file: Annotated[
        str,
        typer.Argument(
            metavar="FILE|-", help="jsonl/json export, or an OpenAI messages array; - reads stdin."
        ),
    ],
    as_: Annotated[str | None, typer.Option("--as", help="Name of the new session.")] = None,
    max_line_bytes: Annotated[
        str,
        typer.Option(
            "--max-line-bytes",
            metavar="SIZE",
            help="Refuse a JSON line (one message) longer than this: bytes, or K, M, G.",
        ),
    ] = "16M",
    max_bytes: Annotated[
        str,
        typer.Option(
            "--max-bytes",
            metavar="SIZE",
            help="Refuse input longer than this in all: bytes, or K, M, G.",
        ),
    ] = "1G",
    no_redact: NoRedactOpt = False,
    from_: Annotated[
        str,
        typer.Option(
            "--from",
            metavar="SOURCE",
            help="Format of FILE: sessionctl, openai, sharegpt, chatgpt, claude-code, llm,"
            " sgpt, gptme (a file or the tool's directory).",
        ),
    ] = "sessionctl",
    prefix: Annotated[
        str | None,
        typer.Option(
            "--prefix", metavar="P", help="Name imported sessions P-ID (default SOURCE-ID)."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read and check everything; write nothing.")
    ] = False,
    branches: Annotated[
        bool, typer.Option("--branches", help="chatgpt: import side branches as forks too.")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Create a session from an exported file (or stdin); print its name.

    JSON lines are read one at a time; every field is checked before anything
    is written, and bad input is refused naming the line (exit 2). With --from
    another tool's history is imported, one session per conversation; importing
    again adds only what is new (docs/import-export.md).

    Example:

        sessionctl export work | sessionctl import - --as work-copy
    """
    from sessionctl.service.importing import parse_size
    from sessionctl.service.transfer import import_session

    state: State = ctx.obj
    state.no_redact(no_redact)
    if from_ != "sessionctl":
        _import_from(state, from_, file, as_, prefix, dry_run, branches, json_)
        return
    if prefix is not None or dry_run or branches or json_:
        raise UsageError("--prefix, --dry-run, --branches and --json go with --from SOURCE")
    limits = {
        "max_line_bytes": parse_size(max_line_bytes, "--max-line-bytes"),
        "max_bytes": parse_size(max_bytes, "--max-bytes"),
    }
    if file == "-":
        stdin = getattr(sys.stdin, "buffer", None)
        source = stdin if stdin is not None else io.BytesIO(sys.stdin.read().encode())
        session = import_session(state.store(), source, where=file, name=as_, **limits)
    else:
        try:
            stream = open(file, "rb")  # noqa: SIM115 - closed below, after the import
        except FileNotFoundError:
            from sessionctl.errors import NotFound

            raise NotFound(f"no such file: {file}") from None
        except IsADirectoryError:
            raise UsageError(
                f"{file} is a directory; give a file exported by `sessionctl export`"
            ) from None
        with stream:
            session = import_session(state.store(), stream, where=file, name=as_, **limits)
    state.out.line(session.name)


def _import_from(
    state: State,
    source: str,
    path: str,
    as_: str | None,
    prefix: str | None,
    dry_run: bool,
    branches: bool,
    json_: bool,
) -> None:
    from sessionctl.service.bulk_import import import_checked
    from sessionctl.sources import read_source

    if path == "-":
        raise UsageError(f"--from {source} reads a file or directory, not stdin")

    def run(progress: Callable[[str, int, int | None], None] | None) -> dict[str, Any]:
        return import_checked(
            state.store(), source, lambda: read_source(source, path, branches=branches),
            as_=as_, prefix=prefix, dry_run=dry_run, progress=progress,
        )  # fmt: skip

    on_tty = state.out.is_tty(state.out.stderr)
    summary = _with_import_bar(state, run) if on_tty else run(None)
    if json_:
        state.out.json(summary)
        return
    for item in summary["sessions"]:
        state.out.line(item["name"])
    for item in summary["skipped"]:
        state.out.warn(f"skipped {item['where']}: {item['reason']}")
    for item in summary["renamed"]:
        state.out.info(f"conversation {item['key']!r} imported as {item['name']}")
    state.out.info(
        ("would import" if dry_run else "imported")
        + f" {summary['messages_added']} messages: {summary['sessions_created']} new sessions,"
        f" {summary['sessions_updated']} updated, {summary['sessions_unchanged']} unchanged,"
        f" {len(summary['skipped'])} messages skipped"
    )


def _with_import_bar(
    state: State, run: Callable[[Callable[[str, int, int | None], None]], dict[str, Any]]
) -> dict[str, Any]:
    """``run`` under one bar on stderr: conversations checked, then imported of all."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("conversations", markup=False),
    )
    with Progress(*columns, console=state.out.console(stderr=True), transient=True) as bar:
        task = bar.add_task("checking", total=None)
        shown = ["checking"]

        def progress(phase: str, done: int, total: int | None) -> None:
            # every 50 (a redraw per conversation would cost more than the import)
            if done % 50 == 0 or done == total or phase != shown[0]:
                shown[0] = phase
                bar.update(task, description=phase, completed=done, total=total)

        return run(progress)


@commands.command()
def fork(
    ctx: typer.Context,
    source: Annotated[
        str | None,
        session_argument(
            "Session to copy (or -s SOURCE; a lone argument is NEW).", metavar="[SOURCE]"
        ),
    ] = None,
    new: Annotated[
        str | None, typer.Argument(metavar="NEW", help="Name of the new session.")
    ] = None,
    session: Annotated[
        str | None, session_option("Session to copy (instead of SOURCE).", env=True)
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="Copy up to and including this message id.")
    ] = None,
) -> None:
    """Copy a session into a new one (the source is unchanged); print the new name.

    Example:

        sessionctl fork work work-alt --at 01J9Z3K8W6Q2V5R7T1X4Y8B0CD
    """
    state: State = ctx.obj
    if new is None:  # `fork -s work NEW`: the one argument is the new name
        source, new = None, source
    if new is None:
        raise UsageError("give the new session's name: `sessionctl fork SOURCE NEW`")
    name = pick_session(ctx, source, session, label="SOURCE", rest="NEW")
    state.out.line(state.store().fork(name, new, at=at).name)


@commands.command()
def delete(
    ctx: typer.Context,
    name: SessionArg = None,
    session: ExplicitSessionOpt = None,
    purge: Annotated[
        bool, typer.Option("--purge", help="Remove for good, skip the trash.")
    ] = False,
) -> None:
    """Move a session to the trash (or remove it for good with --purge).

    Example:

        sessionctl delete scratch && sessionctl restore scratch
    """
    state: State = ctx.obj
    name = pick_session(ctx, name, session)
    state.store().delete(name, purge=purge)
    if purge:
        state.out.info(f"removed {name!r} for good")
    else:
        state.out.info(f"moved {name!r} to the trash; `sessionctl restore {name}` brings it back")


@commands.command()
def restore(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        session_argument(
            "Name of a deleted session (see `list --deleted`), or -s NAME.",
            completer=complete_deleted_session,
        ),
    ] = None,
    session: Annotated[
        str | None,
        session_option(
            "Deleted session (instead of SESSION).",
            env=False,
            completer=complete_deleted_session,
        ),
    ] = None,
) -> None:
    """Bring a deleted session back from the trash.

    Example:

        sessionctl list --deleted && sessionctl restore scratch
    """
    state: State = ctx.obj
    name = pick_session(ctx, name, session)
    state.store().restore(name)
    state.out.info(f"restored {name!r}")


@commands.command()
def clear(ctx: typer.Context, name: SessionArg = None, session: ExplicitSessionOpt = None) -> None:
    """Remove every message of one session (its settings stay).

    Example:

        sessionctl clear scratch
    """
    state: State = ctx.obj
    name = pick_session(ctx, name, session)
    removed = state.store().existing(name).clear()
    state.out.info(f"cleared {removed} messages from {name!r}")


@commands.command()
def prune(
    ctx: typer.Context,
    older_than: Annotated[
        str, typer.Option("--older-than", help="Inactive for: 90m, 12h, 30d, 2w.")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print what would go.")] = False,
    purge: Annotated[
        bool, typer.Option("--purge", help="Remove for good, and empty trash older than that too.")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Remove sessions with no activity for a while (cron-safe, never prompts).

    Prints each removed session's name (with --dry-run: what would go). Cron's
    PATH is short: give sessionctl's full path (`command -v sessionctl`).

    Example (crontab):

        0 3 * * * $HOME/.local/bin/sessionctl prune --older-than 30d
    """
    state: State = ctx.obj
    report = state.store().prune(older_than, dry_run=dry_run, purge=purge)
    state.note_if_no_data()
    if json_:
        state.out.json(
            {
                "dry_run": report.dry_run,
                "purge": report.purge,
                "sessions": [i.to_dict() for i in report.sessions],
                "trash": [i.to_dict() for i in report.trash],
                "skipped": report.skipped,
            }
        )
        return
    for info in report.sessions:
        state.out.line(info.name)
    for info in report.trash:
        state.out.line(f"{info.name} (trash {info.trash_id})")
    verb = "would remove" if dry_run else ("purged" if purge else "moved to the trash")
    state.out.info(
        f"{verb}: {len(report.sessions)} sessions"
        + (f", {len(report.trash)} trash entries" if purge else "")
    )


def _parse_assignment(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise UsageError(f"expected KEY=VALUE, got {item!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


@commands.command()
def meta(
    ctx: typer.Context,
    name: SessionArg = None,
    assignments: Annotated[
        list[str] | None,
        typer.Argument(metavar="[KEY=VALUE]...", help="Set keys (JSON values or text)."),
    ] = None,
    session: SessionOpt = None,
    unset: Annotated[
        list[str] | None, typer.Option("--unset", help="Remove a key (repeatable).")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Show or merge a session's metadata (keys not named are kept).

    Setting a key on a session that does not exist creates it.
    VALUE is parsed as JSON when it is valid JSON (3, true, [1,2]), else kept as text;
    the key user (whom the session belongs to) is always text.
    A session name never contains "=", so `meta -s work KEY=VALUE` works too.

    Example:

        sessionctl meta work project=apollo priority=2 --unset draft
    """
    state: State = ctx.obj
    items = list(assignments or [])
    if name is not None and "=" in name:  # `meta -s work k=v`: a name has no "="
        items.insert(0, name)
        name = None
    values: dict[str, Any] = {}
    for item in items:
        key, value = _parse_assignment(item)
        # whom the session belongs to is text, whatever it looks like (user=42)
        values[key] = item.partition("=")[2] if key == "user" else value
    picked = pick_session(ctx, name, session)
    # Setting keys creates the session, as `add` and Session.update() do (Zep's "add a
    # session with metadata"); showing or only unsetting needs one that exists.
    store = state.store()
    target = store.session(picked) if values else store.existing(picked)
    changing = bool(values or unset)
    info = target.update(metadata=values, unset=unset or []) if changing else target.info()
    if json_:
        state.out.json(info.metadata)
        return
    for key, value in info.metadata.items():
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        state.out.text(f"{key}={shown}")


@commands.command()
def rename(
    ctx: typer.Context,
    old: Annotated[
        str | None,
        session_argument("Session to rename (or -s OLD; a lone argument is NEW).", metavar="[OLD]"),
    ] = None,
    new: Annotated[str | None, typer.Argument(metavar="NEW", help="New name.")] = None,
    session: Annotated[
        str | None, session_option("Session to rename (instead of OLD).", env=False)
    ] = None,
) -> None:
    """Rename a session and all its files.

    Example:

        sessionctl rename scratch project-x
    """
    state: State = ctx.obj
    if new is None:  # `rename -s old NEW`: the one argument is the new name
        old, new = None, old
    if new is None:
        raise UsageError("give the NEW name: `sessionctl rename OLD NEW`")
    old = pick_session(ctx, old, session, label="OLD", rest="NEW")
    state.store().rename(old, new)
    state.out.info(f"renamed {old!r} to {new!r}")
