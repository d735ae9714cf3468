"""The MCP wire: the tools of :mod:`sessionctl.mcp.tools` over stdio or Streamable HTTP.

Built on the official SDK's low-level ``Server``: the tools' names and JSON
Schemas are ours, written once in ``tools.py`` and pinned by a contract test,
instead of being derived from Python signatures as FastMCP does; and it imports
less. Tool calls run one at a time in a worker thread (the store's locks are
per process, the embedding model is loaded once), so the event loop keeps
answering ``list_tools`` and pings while a search runs.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import secrets
import sys
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import TYPE_CHECKING, Any

from sessionctl import __version__
from sessionctl.mcp.tools import INSTRUCTIONS, Memory, ToolError

if TYPE_CHECKING:
    import mcp_types as types
    from mcp.server.context import ServerRequestContext
    from mcp.server.lowlevel import Server

log = logging.getLogger("sessionctl.mcp")
WARM_AFTER = 3.0  # seconds: load the embedding model by then even if nobody listed the tools

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def build_server(memory: Memory) -> tuple[Server[Any], Callable[[], Coroutine[Any, Any, None]]]:
    """The low-level MCP server offering ``memory``'s tools, and its warm-up task.

    The warm-up loads the embedding model once the client has listed the tools
    (or after a few seconds): loading it at once would slow the handshake, which
    a client waits for, to speed up a first search, which it may never make.
    """
    import anyio
    import anyio.to_thread
    import mcp_types as types
    from mcp.server.lowlevel import Server

    one_at_a_time = anyio.CapacityLimiter(1)
    answered = anyio.Event()
    listed = [
        types.Tool(
            name=tool.name,
            description=tool.description,
            input_schema=tool.schema,
            annotations=types.ToolAnnotations(
                read_only_hint=not tool.writes,
                destructive_hint=False,
                idempotent_hint=not tool.writes,
                open_world_hint=False,
            ),
        )
        for tool in memory.tools()
    ]

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        answered.set()
        return types.ListToolsResult(tools=listed)

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        name, arguments = params.name, params.arguments
        try:
            result = await anyio.to_thread.run_sync(
                memory.call, name, arguments, limiter=one_at_a_time
            )
        except ToolError as exc:
            return types.CallToolResult(content=[types.TextContent(text=str(exc))], is_error=True)
        text = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
        return types.CallToolResult(
            content=[types.TextContent(text=text)], structured_content=result
        )

    async def warm() -> None:
        with anyio.move_on_after(WARM_AFTER):
            await answered.wait()
        await anyio.sleep(0.05)  # the tools/list answer goes out first
        try:
            await anyio.to_thread.run_sync(memory.warm, limiter=one_at_a_time)
        except Exception as exc:  # searches will say what is wrong; the server serves on
            log.warning("could not load the embedding model: %s", exc)

    server = Server(
        "sessionctl",
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
    return server, warm


async def serve_stdio(memory: Memory) -> None:
    """Serve over stdin/stdout until the client closes stdin.

    The SDK claims the real stdout for the protocol and points file descriptor 1
    at stderr meanwhile: a stray print of any library cannot corrupt the stream.
    """
    import anyio
    from mcp.server.stdio import stdio_server

    server, warm = build_server(memory)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(warm)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
        tasks.cancel_scope.cancel()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def guarded(app: ASGIApp, *, token: str, port: int, loopback: bool) -> ASGIApp:
    """``app`` behind the bearer token and the Host/Origin checks (DNS rebinding).

    Bound to loopback, a request must name a loopback Host with this port, and
    an Origin, when a browser sends one, must be a loopback origin too. Every
    HTTP request needs ``Authorization: Bearer <token>``.
    """
    expected = f"Bearer {token}".encode()
    hosts = {f"{h}:{port}".encode() for h in ("127.0.0.1", "localhost", "[::1]")}
    origins = {f"http://{h.decode()}".encode() for h in hosts}

    async def refuse(send: Send, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="sessionctl"'))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def checked(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)  # lifespan
            return
        headers: dict[bytes, bytes] = {}
        for key, value in scope.get("headers", ()):
            headers.setdefault(key.lower(), value)
        host = headers.get(b"host", b"")
        origin = headers.get(b"origin")
        if loopback and host not in hosts:
            await refuse(send, 421, "this server answers only on its loopback address")
            return
        if origin is not None and origin not in (origins if loopback else {b"http://" + host}):
            await refuse(send, 403, "requests from this Origin are refused")
            return
        given = headers.get(b"authorization", b"")
        if not hmac.compare_digest(given, expected):
            await refuse(send, 401, "missing or wrong bearer token (see `sessionctl mcp --help`)")
            return
        await app(scope, receive, send)

    return checked


async def serve_http(memory: Memory, host: str, port: int, token: str) -> None:
    """Serve Streamable HTTP at ``http://HOST:PORT/mcp`` until interrupted."""
    import anyio
    import uvicorn

    server, warm = build_server(memory)
    app = server.streamable_http_app(host=host)
    loopback = is_loopback(host)
    config = uvicorn.Config(
        guarded(app, token=token, port=port, loopback=loopback),
        host=host.strip("[]"),
        port=port,
        log_level="warning",
        access_log=False,  # never a request line (or its headers) in a log
        lifespan="on",
    )
    web = uvicorn.Server(config)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(warm)
        await web.serve()
        tasks.cancel_scope.cancel()


def main_stdio(memory: Memory) -> None:
    import anyio

    anyio.run(serve_stdio, memory)


def main_http(memory: Memory, host: str, port: int, token: str) -> None:
    import anyio

    print(f"sessionctl mcp: serving http://{host}:{port}/mcp", file=sys.stderr, flush=True)
    anyio.run(serve_http, memory, host, port, token)
