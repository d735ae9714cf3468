"""The migrate command: copy a store into another (files <-> PostgreSQL), exactly."""

from typing import Annotated

import typer

from sessionctl.cli.registry import commands
from sessionctl.cli.state import State


@commands.command()
def migrate(
    ctx: typer.Context,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="Destination: a postgresql:// URL or a home directory.",
            show_default=False,
        ),
    ],
    include_trash: Annotated[
        bool,
        typer.Option("--include-trash", help="Copy the trash too (into PostgreSQL only)."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be copied; write nothing.")
    ] = False,
) -> None:
    """Copy every session of this store (--home or --store) into another, losslessly.

    Keeps uids, every message field, the high-water seq, created/updated times and
    last activity; each session is read back and compared (exit 1 on any mismatch).
    The source is never changed; sessions already there, identical, are skipped, so
    running it again resumes or confirms a migration.

    Example:

        sessionctl migrate --to postgresql://alice@db/sessions
    """
    from sessionctl.config import absolute_path, redact_url
    from sessionctl.service import Store
    from sessionctl.service.migrate import migrate as run_migrate

    state: State = ctx.obj
    source = state.store()
    settings = state.settings()
    if to.lower().startswith(("postgresql://", "postgres://")):
        dst_settings = settings._replace(store=to)
        shown = redact_url(to)
    else:
        dst_settings = settings._replace(store=None, home=absolute_path(to))
        shown = str(dst_settings.home)
    with Store(settings=dst_settings, warn=state.out.warn) as dest:
        report = run_migrate(
            source, dest, include_trash=include_trash, dry_run=dry_run,
            progress=lambda label, what: state.out.line(f"{label}: {what}"),
        )  # fmt: skip
    verb = "would copy" if dry_run else "copied"
    state.out.info(
        f"{verb} {len(report.copied)} session(s), {report.messages} message(s) to {shown};"
        f" {len(report.same)} already there"
    )
