"""A scriptable OpenAI-compatible chat server on 127.0.0.1, for tests (real HTTP).

Usage::

    from llm_server import FakeLLMServer, Reply

    with FakeLLMServer() as server:              # or the ``llm_server`` fixture
        server.push(Reply(text="Hello"))         # next request gets this reply
        ...  api_base = server.base_url          # "http://127.0.0.1:PORT/v1"
        server.requests[-1].body["messages"]     # what the client sent

Only ``POST /v1/chat/completions`` is served: SSE when the request says
``"stream": true`` (HTTP/1.1 chunked, ``data: {...}`` events, ``data: [DONE]``),
JSON otherwise. Replies are consumed in order from a queue; when it is empty,
``server.default`` answers. A :class:`Reply` can script errors (any status, with
headers such as ``Retry-After``), a dropped or reset connection after N chunks, a
stall after N chunks, a slow first byte, malformed SSE, or a huge answer. Every
stall and delay is bounded by ``max_stall`` and ends at shutdown, so a broken client
never hangs the suite.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = ["FakeLLMServer", "Recorded", "Reply", "llm_server", "refused_port"]


@dataclass
class Reply:
    """How the server answers one request."""

    text: str = "Hello from the fake model."
    chunk_size: int = 5  # characters per SSE chunk
    chunks: list[str] | None = None  # explicit chunks (overrides text/chunk_size)
    model: str = "test-model-0613"  # the model the server says answered
    usage: dict[str, int] | None = None  # default: computed from the texts
    send_usage: bool = True  # include usage (streams: only if the client asked)
    finish_reason: str = "stop"
    status: int = 200
    error: dict[str, Any] | None = None  # error JSON body for status != 200
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers
    first_byte_delay: float = 0.0  # seconds before the status line
    chunk_delay: float = 0.0  # seconds between chunks
    drop_after: int | None = None  # close the connection after N chunks
    reset: bool = False  # with drop_after: send a TCP RST instead of a clean close
    stall_after: int | None = None  # stop sending after N chunks (until max_stall)
    malformed: bool = False  # send a broken ``data:`` line after the first chunk
    error_mid_stream: dict[str, Any] | None = None  # a ``data: {"error": …}`` after chunk 1
    send_done: bool = True  # end the stream with ``data: [DONE]``
    reject_stream_options: bool = False  # 400 if the request has stream_options
    echo_auth: bool = False  # put the Authorization header into the error message
    # Tool calls the model makes: ``{"name": ..., "arguments": "<json text>", "id": ...}``
    # (``id`` optional). Streamed as OpenAI does: one delta with id and name, then the
    # arguments in pieces of ``chunk_size``; ``finish_reason`` becomes "tool_calls".
    tool_calls: list[dict[str, Any]] | None = None

    def calls(self) -> list[dict[str, Any]]:
        return [
            {
                "id": c.get("id") or f"call_{i}",
                "type": "function",
                "function": {"name": c["name"], "arguments": c.get("arguments", "{}")},
            }
            for i, c in enumerate(self.tool_calls or [])
        ]

    def finish(self) -> str:
        if self.tool_calls and self.finish_reason == "stop":
            return "tool_calls"
        return self.finish_reason

    def pieces(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        n = max(1, self.chunk_size)
        return [self.text[i : i + n] for i in range(0, len(self.text), n)] or [""]


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeLLMServer:
    """A threaded OpenAI-compatible server; see the module docstring."""

    def __init__(self, *, max_stall: float = 10.0) -> None:
        self.default = Reply()
        self.requests: list[Recorded] = []
        self.max_stall = max_stall
        self.disconnected = threading.Event()  # set when a client goes away mid-stream
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order."""
        with self._lock:
            self._queue.extend(replies)

    def next_reply(self) -> Reply:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns True (early) when the server is shutting down."""
        return self._release.wait(min(seconds, self.max_stall))

    def close(self) -> None:
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLMServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: FakeLLMServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up (interrupts, timeouts, dropped streams) are expected here.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        owner.record(Recorded("POST", self.path, dict(self.headers.items()), body))
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        reply = owner.next_reply()
        if reply.first_byte_delay and owner.wait(reply.first_byte_delay):
            return
        if reply.reject_stream_options and isinstance(body, dict) and "stream_options" in body:
            self._json(400, {"error": {"message": "Unrecognized request argument: stream_options"}})
            return
        if reply.status != 200:
            error = reply.error or {"error": {"message": f"scripted HTTP {reply.status}"}}
            if reply.echo_auth:
                auth = self.headers.get("Authorization", "")
                error = {"error": {"message": f"Incorrect API key provided: {auth}"}}
            self._json(reply.status, error, reply.headers)
            return
        stream = isinstance(body, dict) and bool(body.get("stream"))
        if stream:
            want_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(reply, body, want_usage)
        else:
            self._complete(reply, body)

    # -- helpers ---------------------------------------------------------------

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _usage(self, reply: Reply, body: Any) -> dict[str, int]:
        if reply.usage is not None:
            return reply.usage
        prompt = len(json.dumps(body.get("messages", []))) // 4 if isinstance(body, dict) else 0
        completion = max(1, len(reply.text) // 4)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _complete(self, reply: Reply, body: Any) -> None:
        obj: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model,
            "choices": [
                {
                    "index": 0,
                    "message": self._message(reply),
                    "finish_reason": reply.finish(),
                }
            ],
        }
        if reply.send_usage:
            obj["usage"] = self._usage(reply, body)
        self._json(200, obj, reply.headers)

    @staticmethod
    def _message(reply: Reply) -> dict[str, Any]:
        text = "".join(reply.pieces())
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if reply.tool_calls:
            message["content"] = text or None
            message["tool_calls"] = reply.calls()
        return message

    def _send_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, obj: Any) -> None:
        self._send_chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")

    def _stream(self, reply: Reply, body: Any, want_usage: bool) -> None:
        owner = self.server.owner
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.flush()
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": reply.model,
        }
        try:
            self._event({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
            for i, piece in enumerate(reply.pieces()):
                if reply.drop_after is not None and i >= reply.drop_after:
                    self._drop(reply.reset)
                    return
                if reply.stall_after is not None and i >= reply.stall_after:
                    owner.wait(owner.max_stall)
                    self._drop(False)
                    return
                if i and reply.chunk_delay and owner.wait(reply.chunk_delay):
                    return
                delta = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                self._event({**base, "choices": [delta]})
                if reply.malformed and i == 0:
                    self._send_chunk(b'data: {"choices": [{"delta": {"content": "bro\n\n')
                if reply.error_mid_stream is not None and i == 0:
                    self._event({"error": reply.error_mid_stream})
            for n, call in enumerate(reply.calls()):
                fn = call["function"]
                head = {"index": n, "id": call["id"], "type": "function"}
                head["function"] = {"name": fn["name"], "arguments": ""}
                self._event({**base, "choices": [{"index": 0, "delta": {"tool_calls": [head]}}]})
                size = max(1, reply.chunk_size)
                args = fn["arguments"]
                for j in range(0, len(args), size):
                    part = {"index": n, "function": {"arguments": args[j : j + size]}}
                    self._event(
                        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [part]}}]}
                    )
            self._event(
                {
                    **base,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": reply.finish()}],
                }
            )
            if want_usage and reply.send_usage:
                self._event({**base, "choices": [], "usage": self._usage(reply, body)})
            if reply.send_done:
                self._send_chunk(b"data: [DONE]\n\n")
            self._send_chunk(b"")  # end of chunked body
        except (BrokenPipeError, ConnectionResetError):
            owner.disconnected.set()
            self.close_connection = True

    def _drop(self, reset: bool) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
            if reset:  # RST instead of FIN
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            else:
                self.connection.shutdown(socket.SHUT_RDWR)


def refused_port() -> int:
    """A local TCP port with nothing listening (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    """A fresh :class:`FakeLLMServer` per test, shut down at teardown."""
    server = FakeLLMServer()
    try:
        yield server
    finally:
        server.close()
