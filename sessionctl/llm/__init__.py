"""The model provider layer: one chat call, streamed, over the fastest path that serves it.

Public API::

    req = ChatRequest(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    with chat(req) as stream:          # errors before the answer raise here
        for delta in stream:           # str deltas, as they arrive
            print(delta, end="")
    stream.result                      # ChatResult(content, model, usage, finish_reason)

    context_window(model) -> int | None          # max input tokens (litellm's model map)
    estimate_tokens(messages) -> int             # cheap, conservative
    count_tokens(model, messages) -> int         # exact (tiktoken) where it matters
    uses_direct_path(req) -> bool                # which path chat() will take
    preload(req) -> None                         # start importing litellm if req needs it
    import_litellm() -> module                   # litellm, configured (for other layers)

Two paths, one behaviour (same request fields, same results, same errors):

* **direct** — stdlib ``http.client`` to an OpenAI-compatible ``/chat/completions``
  endpoint (~0.03 s of imports). Taken for ``openai/<name>`` models, bare model names
  with an explicit ``api_base``, and OpenAI's own chat models; the exact rule is in
  :mod:`sessionctl.llm.models`. API key: ``ChatRequest.api_key`` or ``OPENAI_API_KEY``
  (the variable litellm would read); none is sent when neither is set.
* **litellm** — everything else (Anthropic, Ollama, Azure, Bedrock, …), and anything
  with ``ChatRequest.via_litellm=True``. litellm is imported lazily (~3.5 s) with
  ``LITELLM_LOCAL_MODEL_COST_MAP=True`` so that it never fetches its price list.

Errors are :class:`sessionctl.errors.ProviderError` subclasses from
:mod:`sessionctl.llm.errors` (exit code 4): ``AuthenticationFailed``, ``RateLimited``,
``ContextTooLong``, ``ProviderTimeout``, ``ConnectionFailed``, ``BadModel`` /
``BadRequest``, ``ServerError``, ``BadResponse``. Messages are one line, say what to
do, and never contain an API key. A ``KeyboardInterrupt`` while iterating closes the
connection, sets ``stream.interrupted`` and keeps ``stream.partial_text``.

Importing this package is cheap: no litellm, httpx, openai or even http.client.
"""

from __future__ import annotations

from typing import Any

from sessionctl.errors import UsageError
from sessionctl.llm.errors import (
    AuthenticationFailed,
    BadModel,
    BadRequest,
    BadResponse,
    ConnectionFailed,
    ContextTooLong,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    ServerError,
)
from sessionctl.llm.models import DEFAULT_CONTEXT_WINDOW, context_window, direct_target
from sessionctl.llm.tokens import count_tokens, estimate_tokens
from sessionctl.llm.types import ChatRequest, ChatResult, ChatStream

__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
    "AuthenticationFailed",
    "BadModel",
    "BadRequest",
    "BadResponse",
    "ChatRequest",
    "ChatResult",
    "ChatStream",
    "ConnectionFailed",
    "ContextTooLong",
    "ProviderError",
    "ProviderTimeout",
    "RateLimited",
    "ServerError",
    "chat",
    "context_window",
    "count_tokens",
    "estimate_tokens",
    "import_litellm",
    "preload",
    "uses_direct_path",
]


def uses_direct_path(req: ChatRequest) -> bool:
    """Whether :func:`chat` sends ``req`` over the direct (stdlib) path."""
    return (
        direct_target(
            req.model, req.api_base, via_litellm=req.via_litellm, via_direct=req.via_direct
        )
        is not None
    )


def chat(req: ChatRequest) -> ChatStream:
    """Start one chat completion and return its answer stream.

    Raises a :class:`ProviderError` subclass when the call fails before any answer
    text (auth, rate limit, bad model, refused, timeout, …); failures mid-answer are
    raised while iterating. With ``req.stream=False`` the whole answer arrives as one
    delta. An ``api_base`` that is not an http(s) URL is a :class:`UsageError`. A
    ``KeyboardInterrupt`` before the first byte propagates from here (nothing to keep).
    """
    if req.api_base is not None:
        from urllib.parse import urlsplit

        url = urlsplit(req.api_base.strip())
        if url.scheme not in ("http", "https") or not url.hostname:
            raise UsageError(
                f"invalid API base {req.api_base!r}: use a URL such as http://localhost:8000/v1"
            )
    target = direct_target(
        req.model, req.api_base, via_litellm=req.via_litellm, via_direct=req.via_direct
    )
    if target is not None:
        from sessionctl.llm import _http

        return _http.open_stream(req, target)
    from sessionctl.llm import _litellm

    return _litellm.open_stream(req)


def import_litellm() -> Any:
    """litellm, imported once and configured: offline model map, no stdout banners, no
    warnings or log noise. Other layers that need litellm (e.g. litellm embeddings) use
    this instead of ``import litellm``."""
    from sessionctl.llm import _litellm

    return _litellm.import_litellm()


def preload(req: ChatRequest) -> None:
    """Start importing litellm in the background when ``req`` will need it."""
    if not uses_direct_path(req):
        from sessionctl.llm import _litellm

        _litellm.preload()
