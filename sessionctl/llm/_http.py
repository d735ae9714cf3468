"""The direct path: OpenAI chat completions over ``http.client`` (stdlib only).

Costs ~30 ms of imports instead of litellm's ~3.5 s. Streams Server-Sent Events,
asks for usage with ``stream_options.include_usage`` (and drops that option once if a
server rejects it), and reports the model the server names.

Timeouts: connecting (TCP + TLS) may take ``min(timeout, 15 s)``; after that every read
may wait at most ``timeout`` seconds for data, so a stalled stream fails with
:class:`ProviderTimeout` within ``timeout`` seconds of silence.

Retries (``ChatRequest.retries``, default 2) happen only before any answer byte: on a
refused connection (backoff 0.25 s, 0.5 s, …) and on HTTP 429/500/502/503/504 (backoff
0.5 s, 1 s, … or the server's ``Retry-After`` when it is at most 8 s; a longer
``Retry-After`` is reported at once instead of waited for). A started stream is never
re-sent.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

from sessionctl.llm.errors import (
    AuthenticationFailed,
    BadResponse,
    ConnectionFailed,
    ProviderError,
    ProviderTimeout,
    error_for_status,
    error_text,
    scrub,
)
from sessionctl.llm.models import DirectTarget
from sessionctl.llm.types import ChatRequest, ChatStream, StreamState, clean_usage

CONNECT_TIMEOUT_CAP = 15.0
MAX_RETRY_WAIT = 8.0
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_MAX_LINE = 16 * 1024 * 1024  # one SSE line (a single chunk); more is not a chat answer
_MAX_BODY = 64 * 1024 * 1024
_MAX_ERROR_BODY = 64 * 1024
_KEY_HINT = "OPENAI_API_KEY (or the API key passed in)"


class _Ctx:
    """What error messages need: where we talked to, for which model, which secret."""

    def __init__(self, req: ChatRequest, target: DirectTarget, key: str | None) -> None:
        host = target.url.hostname or "?"
        self.where = f"{host}:{target.url.port}" if target.url.port else host
        self.model = req.model
        self.key = key
        self.timeout = req.timeout

    def detail(self, text: str) -> str:
        return scrub(text, [self.key])


def open_stream(req: ChatRequest, target: DirectTarget) -> ChatStream:
    """Send ``req`` to ``target`` and return its answer stream (errors raise here first)."""
    key = req.api_key or os.environ.get("OPENAI_API_KEY") or None
    ctx = _Ctx(req, target, key)
    if target.official and not key:
        raise AuthenticationFailed(
            f"no API key for {ctx.where}: set OPENAI_API_KEY (or pass --api-base "
            "for a local OpenAI-compatible server)"
        )
    body: dict[str, Any] = {"model": target.model, "messages": req.messages, "stream": req.stream}
    if req.stream:
        body["stream_options"] = {"include_usage": True}
    if req.tools:
        body["tools"] = req.tools
    if req.response_format:
        body["response_format"] = req.response_format
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.max_tokens is not None:
        # OpenAI itself wants max_completion_tokens (reasoning models reject max_tokens);
        # compatible servers (vLLM, llama.cpp, Ollama, …) know max_tokens.
        body["max_completion_tokens" if target.official else "max_tokens"] = req.max_tokens
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if req.stream else "application/json",
        "User-Agent": "sessionctl",
    }
    if key:
        headers["Authorization"] = f"Bearer {key}"
    path = target.url.path.rstrip("/") + "/chat/completions"
    if target.url.query:
        path += "?" + target.url.query

    conn, resp = _send_with_retries(req, target, ctx, path, body, headers)
    state = StreamState()
    deltas = _sse_deltas(resp, state, ctx) if req.stream else _json_deltas(resp, state, ctx)
    # The socket, kept to wake a read blocked in another thread (ChatStream.abort): a
    # shutdown does, a close does not. A response that will close owns it (conn.sock
    # is then None), through its file's raw SocketIO.
    sock = conn.sock or getattr(getattr(resp.fp, "raw", None), "_sock", None)

    def abort() -> None:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)

    return ChatStream(deltas, state, conn.close, model=req.model, aborter=abort)


def _send_with_retries(
    req: ChatRequest,
    target: DirectTarget,
    ctx: _Ctx,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    attempt = 0
    while True:
        payload = json.dumps(body).encode("utf-8")
        try:
            conn, resp = _send_once(req, target, ctx, path, payload, headers)
        except ConnectionFailed as err:
            if not err.refused or attempt >= req.retries:
                raise
            time.sleep(0.25 * 2**attempt)
            attempt += 1
            continue
        if resp.status == 200:
            return conn, resp
        try:
            raw = resp.read(_MAX_ERROR_BODY)
        except (OSError, http.client.HTTPException):
            raw = b""
        finally:
            conn.close()
        detail = ctx.detail(error_text(raw))
        if resp.status == 400 and "stream_options" in body and "stream_options" in detail:
            del body["stream_options"]  # a server that does not know the option
            continue
        retry_after = _retry_after(resp.getheader("Retry-After"))
        if resp.status in _RETRY_STATUSES and attempt < req.retries:
            wait = retry_after if retry_after is not None else 0.5 * 2**attempt
            if wait <= MAX_RETRY_WAIT:
                time.sleep(wait)
                attempt += 1
                continue
        raise error_for_status(
            resp.status,
            model=ctx.model,
            where=ctx.where,
            detail=detail,
            retry_after=retry_after,
            key_hint=_KEY_HINT,
        )


def _send_once(
    req: ChatRequest,
    target: DirectTarget,
    ctx: _Ctx,
    path: str,
    payload: bytes,
    headers: dict[str, str],
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    url = target.url
    connect_timeout = min(req.timeout, CONNECT_TIMEOUT_CAP)
    conn: http.client.HTTPConnection
    if url.scheme == "https":
        conn = http.client.HTTPSConnection(
            url.hostname or "", url.port, timeout=connect_timeout, context=_ssl_context()
        )
    else:
        conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=connect_timeout)
    stage = "connect"
    try:
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(req.timeout)
        stage = "send"
        conn.request("POST", path, body=payload, headers=headers)
        stage = "wait"
        return conn, conn.getresponse()
    except ProviderError:
        conn.close()
        raise
    except BaseException as exc:
        conn.close()
        if isinstance(exc, Exception):
            raise _send_error(exc, stage, ctx) from None
        raise


def _send_error(exc: Exception, stage: str, ctx: _Ctx) -> ProviderError:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        if stage == "connect":
            return ProviderTimeout(
                f"could not connect to {ctx.where} within "
                f"{min(ctx.timeout, CONNECT_TIMEOUT_CAP):g} s: check the API base and "
                "your network"
            )
        return ProviderTimeout(
            f"no answer from {ctx.where} within {ctx.timeout:g} s: the server is busy or "
            "stalled; try again later or raise the timeout"
        )
    if isinstance(exc, ConnectionRefusedError):
        err = ConnectionFailed(
            f"cannot connect to {ctx.where} (connection refused): is the server running "
            "and the API base right?"
        )
        err.refused = True
        return err
    if isinstance(exc, ssl.SSLError):
        return ConnectionFailed(
            f"TLS with {ctx.where} failed ({ctx.detail(str(exc))}): check the API base URL "
            "and your certificates"
        )
    if isinstance(exc, socket.gaierror):
        return ConnectionFailed(
            f"cannot resolve {ctx.where} ({ctx.detail(str(exc))}): check the API base and "
            "your network"
        )
    if isinstance(exc, (ConnectionError, http.client.HTTPException, OSError)):
        what = type(exc).__name__
        return ConnectionFailed(
            f"the connection to {ctx.where} failed before an answer ({what}): try again; "
            "check the server if it keeps happening"
        )
    return BadResponse(f"unexpected failure talking to {ctx.where}: {ctx.detail(repr(exc))}")


def _sse_deltas(resp: http.client.HTTPResponse, state: StreamState, ctx: _Ctx) -> Iterator[str]:
    data: list[bytes] = []
    event = b""
    done = False
    with _mid_answer(ctx):
        while True:
            raw = resp.readline(_MAX_LINE)
            if len(raw) >= _MAX_LINE and not raw.endswith(b"\n"):
                raise BadResponse(f"{ctx.where} sent an oversized stream line: not a chat stream")
            line = raw.rstrip(b"\r\n")
            if line:
                if not line.startswith(b":"):  # ":" starts a comment (keep-alive)
                    name, _, value = line.partition(b":")
                    value = value.removeprefix(b" ")
                    if name == b"data":
                        data.append(value)
                    elif name == b"event":
                        event = value
                if raw.endswith(b"\n"):
                    continue
            # A blank line (or the end of the body) dispatches the event.
            if data:
                payload = b"\n".join(data)
                data = []
                if payload.strip() == b"[DONE]":
                    done = True
                    break
                yield from _chunk_deltas(payload, event, state, ctx)
                event = b""
            if not raw:
                break
    if not done and state.finish_reason is None:
        raise ConnectionFailed(
            f"{ctx.where} closed the stream before the answer was complete: try again"
        )


@contextlib.contextmanager
def _mid_answer(ctx: _Ctx) -> Iterator[None]:
    """Turn a read failure after the answer started into a one-line provider error."""
    try:
        yield
    except TimeoutError:
        raise ProviderTimeout(
            f"{ctx.where} stopped sending for {ctx.timeout:g} s mid-answer: try again later "
            "or raise the timeout"
        ) from None
    except (http.client.HTTPException, ConnectionError, OSError) as exc:
        raise ConnectionFailed(
            f"the connection to {ctx.where} was lost mid-answer ({type(exc).__name__}): try again"
        ) from None


def _chunk_deltas(payload: bytes, event: bytes, state: StreamState, ctx: _Ctx) -> Iterator[str]:
    try:
        chunk = json.loads(payload)
    except ValueError:
        sample = ctx.detail(payload[:80].decode("utf-8", "replace"))
        raise BadResponse(
            f"{ctx.where} sent malformed stream data ({sample}): "
            "is the API base an OpenAI-compatible endpoint?"
        ) from None
    if not isinstance(chunk, dict):
        raise BadResponse(f"{ctx.where} sent unexpected stream data: not a chat completion chunk")
    if "error" in chunk or event == b"error":
        raise _body_error(chunk, ctx)
    _note_meta(chunk, state)
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta") or {}
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(delta, dict):
            _note_calls(delta.get("tool_calls"), state)
        if isinstance(content, str) and content:
            yield content
        if isinstance(choice.get("finish_reason"), str):
            state.finish_reason = choice["finish_reason"]


def _json_deltas(resp: http.client.HTTPResponse, state: StreamState, ctx: _Ctx) -> Iterator[str]:
    with _mid_answer(ctx):
        raw = resp.read(_MAX_BODY + 1)
    if len(raw) > _MAX_BODY:
        raise BadResponse(f"{ctx.where} sent an oversized answer: not a chat completion")
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadResponse(
            f"{ctx.where} sent a malformed answer: is the API base an OpenAI-compatible endpoint?"
        ) from None
    if not isinstance(body, dict):
        raise BadResponse(f"{ctx.where} sent an unexpected answer: not a chat completion")
    if "error" in body:
        raise _body_error(body, ctx)
    _note_meta(body, state)
    choices = body.get("choices") or [{}]
    first = choices[0] if isinstance(choices[0], dict) else {}
    message = first.get("message") or {}
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(message, dict):
        _note_calls(message.get("tool_calls"), state)
    if isinstance(first.get("finish_reason"), str):
        state.finish_reason = first["finish_reason"]
    if isinstance(content, str) and content:
        yield content


def _note_calls(calls: Any, state: StreamState) -> None:
    """Tool calls (whole, or streamed pieces keyed by ``index``) into ``state``."""
    if not isinstance(calls, list):
        return
    for n, call in enumerate(calls):
        if not isinstance(call, dict):
            continue
        fn = call.get("function")
        fn = fn if isinstance(fn, dict) else {}
        state.add_call(call.get("index", n), call.get("id"), fn.get("name"), fn.get("arguments"))


def _note_meta(obj: dict[str, Any], state: StreamState) -> None:
    model = obj.get("model")
    if isinstance(model, str) and model:
        state.model = model
    usage = clean_usage(obj.get("usage"))
    if usage:
        state.usage = usage


def _body_error(obj: dict[str, Any], ctx: _Ctx) -> ProviderError:
    err = obj.get("error")
    status = 500
    if isinstance(err, dict):
        code = err.get("code")
        status_guess = {
            "invalid_api_key": 401,
            "rate_limit_exceeded": 429,
            "context_length_exceeded": 400,
            "model_not_found": 404,
        }
        if isinstance(code, int) and 400 <= code < 600:
            status = code
        elif isinstance(code, str) and code in status_guess:
            status = status_guess[code]
    detail = ctx.detail(error_text(json.dumps(obj).encode()))
    return error_for_status(
        status, model=ctx.model, where=ctx.where, detail=detail, key_hint=_KEY_HINT
    )


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    try:  # like httpx/litellm, also trust certifi's bundle when it is installed
        import certifi

        context.load_verify_locations(certifi.where())
    except (ImportError, OSError, ssl.SSLError):
        pass
    return context
