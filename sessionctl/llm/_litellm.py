"""The litellm path: every provider litellm supports (Anthropic, Ollama, Azure, …).

litellm is imported here only, inside functions, after
``LITELLM_LOCAL_MODEL_COST_MAP=True`` is set so the import never reaches the network.
Importing it costs ~3.5 s, so :func:`preload` can start that in a background thread.
litellm's exceptions (and the httpx/openai causes they wrap) are translated into
:mod:`sessionctl.llm.errors` here, once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from typing import Any

from sessionctl.llm.errors import (
    OVERFLOW_KINDS,
    AuthenticationFailed,
    BadModel,
    BadRequest,
    BadResponse,
    ConnectionFailed,
    ProviderError,
    ProviderTimeout,
    context_too_long,
    error_for_status,
    looks_like_context_overflow,
    scrub,
)
from sessionctl.llm.types import ChatRequest, ChatStream, StreamState, clean_usage

_import_lock = threading.Lock()


def import_litellm() -> Any:
    """Import and configure litellm (once); never reaches the network."""
    with _import_lock:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        with warnings.catch_warnings():  # its dependencies' deprecation noise is not ours
            warnings.simplefilter("ignore")
            import litellm

        if not getattr(litellm, "_sessionctl_configured", False):
            litellm.suppress_debug_info = True  # no "Give Feedback" banners on stdout
            for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
            litellm._sessionctl_configured = True
        return litellm


def _uncaptured(completion: Any) -> Any:
    """litellm's own ``completion``, under any ``sessionctl.capture(litellm)`` patches:
    sessionctl's calls are not the app's, and are never recorded by a capture."""
    while hasattr(completion, "_sessionctl_original"):
        completion = completion._sessionctl_original
    return completion


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """litellm's dependencies warn at call time (pydantic schema notes): not ours to show."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def preload() -> threading.Thread:
    """Import litellm in a daemon thread (for a REPL: the prompt shows meanwhile)."""

    def run() -> None:
        try:
            import_litellm()
        except Exception:  # the real call reports it
            pass

    thread = threading.Thread(target=run, name="sessionctl-litellm-import", daemon=True)
    thread.start()
    return thread


def open_stream(req: ChatRequest) -> ChatStream:
    """Send ``req`` through litellm and return its answer stream."""
    litellm = import_litellm()
    kwargs: dict[str, Any] = {
        "model": req.model,
        "messages": req.messages,
        "stream": req.stream,
        "timeout": req.timeout,
        "max_retries": req.retries,
    }
    if req.stream:
        kwargs["stream_options"] = {"include_usage": True}
    if req.api_base:
        kwargs["api_base"] = req.api_base
    key = req.api_key
    if (
        key is None
        and req.api_base
        and req.model.startswith("openai/")
        and not os.environ.get("OPENAI_API_KEY")
    ):
        key = "sk-no-key"  # local OpenAI-compatible servers need none; the SDK insists
    if key is not None:
        kwargs["api_key"] = key
    if req.tools:
        kwargs["tools"] = req.tools
    if req.temperature is not None:
        kwargs["temperature"] = req.temperature
    if req.max_tokens is not None:
        kwargs["max_tokens"] = req.max_tokens
    secrets = [req.api_key, key, *_env_keys()]
    try:
        with _quiet():
            response = _uncaptured(litellm.completion)(**kwargs)
    except Exception as exc:
        raise translate(exc, req, secrets) from None
    state = StreamState()
    if not req.stream:
        return ChatStream(_whole(response, state), state, _noop, model=req.model)
    return ChatStream(
        _deltas(response, state, req, secrets), state, lambda: _close(response), model=req.model
    )


def _deltas(
    response: Any, state: StreamState, req: ChatRequest, secrets: list[str | None]
) -> Iterator[str]:
    chunks = iter(response)
    try:
        while True:
            with _quiet():
                chunk = next(chunks, None)
            if chunk is None:
                break
            _note(chunk, state)
            for choice in getattr(chunk, "choices", None) or ():
                if getattr(choice, "index", 0) != 0:
                    continue
                delta = getattr(choice, "delta", None)
                content = getattr(delta, "content", None)
                _note_calls(getattr(delta, "tool_calls", None), state)
                if isinstance(content, str) and content:
                    yield content
                reason = getattr(choice, "finish_reason", None)
                if isinstance(reason, str):
                    state.finish_reason = reason
    except Exception as exc:
        raise translate(exc, req, secrets, mid_stream=True) from None


def _whole(response: Any, state: StreamState) -> Iterator[str]:
    _note(response, state)
    choices = getattr(response, "choices", None) or ()
    if not choices:
        return
    first = choices[0]
    message = getattr(first, "message", None)
    content = getattr(message, "content", None)
    _note_calls(getattr(message, "tool_calls", None), state)
    reason = getattr(first, "finish_reason", None)
    if isinstance(reason, str):
        state.finish_reason = reason
    if isinstance(content, str) and content:
        yield content


def _note_calls(calls: Any, state: StreamState) -> None:
    """litellm's tool call objects (whole, or streamed pieces with ``index``) into ``state``."""
    for n, call in enumerate(calls or ()):
        fn = getattr(call, "function", None)
        index = getattr(call, "index", None)
        state.add_call(
            index if isinstance(index, int) else n,
            getattr(call, "id", None),
            getattr(fn, "name", None),
            getattr(fn, "arguments", None),
        )


def _note(obj: Any, state: StreamState) -> None:
    model = getattr(obj, "model", None)
    if isinstance(model, str) and model:
        state.model = model
    usage = getattr(obj, "usage", None)
    if usage is not None:
        dumped = usage.model_dump() if hasattr(usage, "model_dump") else usage
        state.usage = clean_usage(dumped) or state.usage


def _close(response: Any) -> None:
    close = getattr(getattr(response, "completion_stream", None), "close", None)
    if callable(close):
        close()


def _noop() -> None:
    return None


def _env_keys() -> list[str | None]:
    return [v for k, v in os.environ.items() if k.endswith(("_API_KEY", "_TOKEN", "_SECRET"))]


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out and len(out) < 12:
        out.append(cur)
        nxt = getattr(cur, "original_exception", None)
        cur = nxt if isinstance(nxt, BaseException) else (cur.__cause__ or cur.__context__)
    return out


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _where(req: ChatRequest) -> str:
    if req.api_base:
        from urllib.parse import urlsplit

        url = urlsplit(req.api_base)
        host = url.hostname or req.api_base
        return f"{host}:{url.port}" if url.port else host
    provider = req.model.partition("/")[0] if "/" in req.model else "the provider"
    return provider


def _key_hint(model: str) -> str:
    from sessionctl.llm.models import model_info

    provider = model.partition("/")[0] if "/" in model else None
    if provider is None:
        info = model_info(model)
        provider = str(info.get("litellm_provider", "")) if info else ""
    if not provider or not provider.replace("_", "").isalnum():
        return "the provider's API key environment variable"
    return f"the provider's API key variable (usually {provider.upper()}_API_KEY)"


def _overflow_kind(chain: list[BaseException]) -> bool:
    """Whether a wrapped error's machine-readable type says context overflow.

    llama.cpp puts it only in ``error.type`` (``exceed_context_size_error``), which
    litellm keeps on the OpenAI SDK error it wraps (``.type``, ``.code``, ``.body``).
    """
    for err in chain:
        body = getattr(err, "body", None)
        kinds = [getattr(err, "type", None), getattr(err, "code", None)]
        if isinstance(body, dict):
            kinds += [body.get("type"), body.get("code")]
        if any(isinstance(k, str) and k in OVERFLOW_KINDS for k in kinds):
            return True
    return False


def translate(
    exc: BaseException,
    req: ChatRequest,
    secrets: list[str | None],
    *,
    mid_stream: bool = False,
) -> ProviderError:
    """One sessionctl error for a litellm failure (looks through wrapped causes)."""
    if isinstance(exc, ProviderError):
        return exc
    where, model = _where(req), req.model
    chain = _chain(exc)
    names = set().union(*(_names(e) for e in chain))
    top = chain[0]
    raw = getattr(top, "message", None) or str(top)
    detail = scrub(str(raw).replace("litellm.", ""), secrets)
    status = getattr(top, "status_code", None)
    during = "mid-answer" if mid_stream else "before an answer"

    if "ConnectionRefusedError" in names:
        err = ConnectionFailed(
            f"cannot connect to {where} (connection refused): is the server running "
            "and the API base right?"
        )
        err.refused = True
        return err
    if names & {"TimeoutError", "Timeout", "APITimeoutError", "TimeoutException", "ReadTimeout"}:
        return ProviderTimeout(
            f"no data from {where} for {req.timeout:g} s {during}: the server is busy or "
            "stalled; try again later or raise the timeout"
        )
    if "ContextWindowExceededError" in names or _overflow_kind(chain):
        return context_too_long(model, detail)
    if "JSONDecodeError" in names:
        return BadResponse(f"{where} sent malformed data {during}: is it the right API base?")
    transport = {"APIConnectionError", "RemoteProtocolError", "ConnectError", "ReadError"}
    status_like = {"AuthenticationError", "RateLimitError", "NotFoundError"}
    if (mid_stream or names & (transport | {"ConnectionError"})) and not names & status_like:
        return ConnectionFailed(
            f"the connection to {where} failed {during}: try again; check the server "
            "and network if it keeps happening"
        )
    if "missing credentials" in detail.lower() or "api_key client option" in detail.lower():
        return AuthenticationFailed(
            f"no API key for model '{model}': set the provider's API key environment "
            "variable (e.g. OPENAI_API_KEY, ANTHROPIC_API_KEY)"
        )
    if names & {"AuthenticationError", "PermissionDeniedError"}:
        return error_for_status(
            401 if "AuthenticationError" in names else 403,
            model=model,
            where=where,
            detail=detail,
            key_hint=_key_hint(model),
        )
    if "RateLimitError" in names:
        return error_for_status(429, model=model, where=where, detail=detail)
    if "NotFoundError" in names:
        return error_for_status(404, model=model, where=where, detail=detail)
    if "LLM Provider NOT provided" in detail or "LiteLLMUnknownProvider" in names:
        return BadModel(
            f"unknown model '{model}': prefix it with its provider (e.g. openai/NAME for an "
            "OpenAI-compatible --api-base, ollama/NAME, anthropic/NAME)"
        )
    if names & {"BadRequestError", "UnprocessableEntityError", "UnsupportedParamsError"}:
        if looks_like_context_overflow(detail):
            return context_too_long(model, detail)
        return BadRequest(
            f"{where} rejected the request for model '{model}': check the model and "
            f"options (provider said: {detail})"
        )
    if isinstance(status, int) and 400 <= status < 600:
        return error_for_status(status, model=model, where=where, detail=detail)
    return BadResponse(f"the call to model '{model}' failed ({type(top).__name__}): {detail}")
