"""The mcp command: sessions as memory for agents (Model Context Protocol)."""

import os
import sys
from typing import Annotated

import typer

from sessionctl.cli.registry import commands
from sessionctl.cli.state import State
from sessionctl.errors import UsageError

TOKEN_ENV = "SESSIONCTL_MCP_TOKEN"


@commands.command()
def mcp(
    ctx: typer.Context,
    http: Annotated[
        str | None,
        typer.Option(
            "--http",
            metavar="[HOST:]PORT",
            help="Serve Streamable HTTP at http://HOST:PORT/mcp (HOST default 127.0.0.1)"
            " instead of stdio.",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help=f"The bearer token HTTP clients must send (default: ${TOKEN_ENV};"
            " else one is made and printed on stderr).",
            show_default=False,
        ),
    ] = None,
    allow_write: Annotated[
        bool,
        typer.Option("--allow-write", help="Offer add_messages and fork (default: read only)."),
    ] = False,
    session_prefix: Annotated[
        str,
        typer.Option(
            "--session-prefix",
            metavar="PREFIX",
            help="See and write only sessions whose names start with PREFIX.",
            show_default=False,
        ),
    ] = "",
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            metavar="USER",
            help="See only USER's sessions; sessions written are USER's.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the sessions as memory to MCP clients (agents, editors, chat apps).

    Over stdio by default (the client starts `sessionctl mcp`); with --http,
    over Streamable HTTP, on loopback unless HOST says otherwise, behind a
    bearer token. Tools: search_history, recent, list_sessions, read_session;
    with --allow-write also add_messages and fork. The scope flags
    (--session-prefix, --user) limit every tool; no tool argument widens
    them. Only protocol messages go to stdout.

    Example:

        sessionctl mcp --session-prefix work-
        SESSIONCTL_MCP_TOKEN=... sessionctl mcp --http 8765 --allow-write
    """
    import logging

    state: State = ctx.obj
    address = _address(http) if http is not None else None
    if token is not None and address is None:
        raise UsageError("--token is for --http; a stdio server is reached only by its client")
    if token is None and address is not None:
        token = os.environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < 16:
        raise UsageError("the token must be at least 16 characters (or leave it out: one is made)")
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="sessionctl mcp: %(message)s"
    )
    from sessionctl.mcp.server import main_http, main_stdio, new_token
    from sessionctl.mcp.tools import Memory, Scope

    if user is not None:
        from sessionctl.service.users import check_user

        user = check_user(user)
    scope = Scope(prefix=session_prefix, user=user)
    memory = Memory(state.settings(), scope=scope, allow_write=allow_write)
    try:
        if address is None:
            main_stdio(memory)
            return
        if token is None:
            token = new_token()
            print(f"sessionctl mcp: token {token}", file=sys.stderr, flush=True)
        host, port = address
        main_http(memory, host, port, token)
    finally:
        memory.close()


def _address(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"--http takes [HOST:]PORT with a port from 1 to 65535, got {value!r}")
    return host or "127.0.0.1", int(port_text)
