"""The scrub command: remove secrets or a pattern from stored sessions, verified."""

from typing import Annotated

import typer

from sessionctl.cli.options import JsonOpt, complete_session
from sessionctl.cli.registry import commands
from sessionctl.cli.state import State
from sessionctl.errors import UsageError


@commands.command()
def scrub(
    ctx: typer.Context,
    pattern: Annotated[
        str | None,
        typer.Option("--pattern", metavar="RE", help="Remove matches of this regular expression."),
    ] = None,
    literal: Annotated[
        str | None,
        typer.Option("--literal", metavar="TEXT", help="Remove this exact text."),
    ] = None,
    secrets: Annotated[
        bool,
        typer.Option(
            "--secrets", help="Remove every secret shape that redaction knows (and config adds)."
        ),
    ] = False,
    session: Annotated[
        list[str] | None,
        typer.Option(
            "--session",
            "-s",
            help="Session to scrub (repeatable).",
            autocompletion=complete_session,
            show_default=False,
        ),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Scrub every live session.")] = False,
    trash: Annotated[
        bool,
        typer.Option(
            "--trash",
            help="Also scrub deleted sessions in the trash (of the -s names, or all with --all).",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count the matches, change nothing.")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Remove a literal, a pattern or every known secret from stored sessions.

    Each session is rewritten atomically under its lock (matches become
    [REDACTED:scrubbed], or [REDACTED:<kind>] with --secrets), its index is
    rebuilt from the scrubbed text, and a fresh read of the session and a grep
    of its files must find no match left: the exit code is 0 only then.

    Example:

        sessionctl scrub --literal 'hunter2' --all
        sessionctl scrub --secrets -s work --dry-run --json
        sessionctl scrub --literal 'hunter2' --all --trash
    """
    from sessionctl.service.scrub import check, label
    from sessionctl.service.scrub import scrub as run_scrub

    state: State = ctx.obj
    if bool(session) == all_:
        raise UsageError("give -s NAME (repeatable) or --all (not both)")
    report = run_scrub(
        state.store(),
        None if all_ else session,
        pattern=pattern,
        literal=literal,
        secrets=secrets,
        dry_run=dry_run,
        trash=trash,
    )
    if json_:
        state.out.json(report.to_dict())
    else:
        verb = "would remove" if dry_run else "removed"
        for s in report.sessions:
            if s.matches or s.remaining:
                left = f", {s.remaining} left" if s.remaining else ""
                state.out.line(f"{label(s)}\t{verb} {s.matches} in {s.messages} message(s){left}")
        total = sum(s.matches for s in report.sessions)
        touched = sum(1 for s in report.sessions if s.matches)
        state.out.info(f"{verb} {total} match(es) in {touched} session(s)")
    check(report)
