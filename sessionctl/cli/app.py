"""The typer app, the root options and the one error boundary."""

# First, before typer and click: the collector's threshold for a short-lived process.
import sessionctl.cli.startup  # noqa: F401

# isort: split
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import typer.main

from sessionctl import __version__
from sessionctl.cli.registry import LazyGroup
from sessionctl.cli.render import Output
from sessionctl.cli.state import State, debug_enabled
from sessionctl.errors import ExitCode, SessionctlError

HELP = """Chat with LLMs from the terminal; every conversation is a local session.

Sessions are JSON-lines transcripts (readable with jq) plus a semantic index,
under the user data dir (or --home / SESSIONCTL_HOME).

Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 not found, 4 model
provider error, 130 interrupted.
"""

# typer's own click (never imported directly: typer 0.26+ vendors its copy)
_click: Any = typer.main.click  # type: ignore[attr-defined]

app = typer.Typer(
    name="sessionctl",
    cls=LazyGroup,
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"sessionctl {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            envvar="SESSIONCTL_HOME",
            help="Data directory (default: the platform's user data dir).",
            show_default=False,
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="Keep sessions in this PostgreSQL database (postgresql://user@host/db;"
            " also SESSIONCTL_STORE or config `store`) instead of the files under the home."
            " The password is never printed; prefer PGPASSWORD or ~/.pgpass.",
            show_default=False,
        ),
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            help="The PostgreSQL store's namespace: every query stays inside it"
            " (default: the OS user name; also SESSIONCTL_NAMESPACE).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Chat with LLMs from the terminal; every conversation is a local session."""
    ctx.obj = State(
        home=home,
        out=Output(no_color=bool(os.environ.get("NO_COLOR"))),
        store=store,
        namespace=namespace,
    )


def run(argv: list[str] | None = None, out: Output | None = None) -> int:
    """Run the CLI and return the exit code; every error becomes one line on stderr."""
    out = out or Output(no_color=bool(os.environ.get("NO_COLOR")))
    try:
        result = app(args=argv, prog_name="sessionctl", standalone_mode=False)
        code = int(result) if isinstance(result, int) else 0
        if code == ExitCode.INTERRUPTED:
            # typer turns a KeyboardInterrupt into a silent exit code 130 (no command
            # returns 130 itself): say it (as a note: a Ctrl-C is not an error).
            out.info("interrupted")
        return code
    except SessionctlError as exc:
        _debug_traceback()
        if exc.exit_code == ExitCode.INTERRUPTED:
            out.info(exc.message)  # the user's Ctrl-C is not an error
        else:
            out.error(exc.message)
        return int(exc.exit_code)
    except _click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except _click.exceptions.ClickException as exc:
        # Usage errors: bad option, missing argument, bad number.
        _debug_traceback()
        if not exc.format_message().strip():
            # no_args_is_help: typer has printed the help itself; nothing to add.
            return int(exc.exit_code)
        hint = ""
        message = exc.format_message()
        ctx = getattr(exc, "ctx", None)
        if ctx is not None and isinstance(exc, _click.exceptions.UsageError):
            from sessionctl.cli.suggest import rewrite_unknown

            hint = f" (see `{ctx.command_path} --help`)"
            message = rewrite_unknown(exc) or message
        # One line: click lays some messages out over several (`Choose from:\n\t…`).
        out.error(" ".join(message.split()) + hint)
        return int(exc.exit_code)
    except (KeyboardInterrupt, _click.exceptions.Abort):
        out.info("interrupted")
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`| head`): not an error for a CLI.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except SystemExit:
        # click catches EPIPE itself, wraps stdout and calls sys.exit(1): same case.
        # (click < 8.2 names the wrapper _PacifyFlushWrapper, later ones PacifyFlushWrapper.)
        if type(sys.stdout).__name__ not in ("_PacifyFlushWrapper", "PacifyFlushWrapper"):
            raise
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno() if sys.__stdout__ else 1)
        return 0
    except OSError as exc:
        _debug_traceback()
        where = f": {exc.filename}" if exc.filename else ""
        out.error(f"{exc.strerror or exc}{where}")
        return int(ExitCode.RUNTIME)
    except Exception as exc:  # a bug: say so, without locals
        if debug_enabled():
            raise
        out.error(
            f"internal error: {type(exc).__name__}: {exc} "
            "(rerun with SESSIONCTL_DEBUG=1 for a traceback, and please report it)"
        )
        return int(ExitCode.RUNTIME)


def _debug_traceback() -> None:
    if debug_enabled():
        import traceback

        traceback.print_exc(file=sys.stderr)


def main(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point."""
    # Started with stdout or stderr closed (`>&-`): write into the void, not crash.
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115
    if argv is None and sys.argv[1:] in (["--help"], ["-h"]):
        from sessionctl.cli.fasthelp import print_top_help

        try:
            if print_top_help(sys.argv[1:]):  # `--help` as typer prints it, pre-rendered
                sys.exit(0)
        except BrokenPipeError:  # `sessionctl --help | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
    code = run(argv)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    if "litellm" in sys.modules:
        _exit_without_teardown(code)
    sys.exit(code)


def _exit_without_teardown(code: int) -> NoReturn:
    """Exit once everything is written, skipping the interpreter's teardown.

    After litellm was imported, tearing down its thousands of modules and objects
    takes 2-2.5 s after the answer was printed (measured; its idle "litellm-logging"
    worker threads are not the cause: their tasks finish within milliseconds). Nothing
    of ours is left to do: files are written and closed by the command, the exit
    handlers still run here, and the streams are flushed.
    """
    import atexit

    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
