"""Provider errors: one class per failure a user can act on, each with a one-line message.

Both provider paths (the direct HTTP path and litellm) translate their failures into
these classes exactly once, inside :mod:`sessionctl.llm`. Every message is a single
line that says what happened and what to do, and is scrubbed of API keys and
``Authorization`` headers: callers may print ``str(error)`` as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from sessionctl.errors import ProviderError

__all__ = [
    "AuthenticationFailed",
    "BadModel",
    "BadRequest",
    "BadResponse",
    "ConnectionFailed",
    "ContextTooLong",
    "ProviderError",
    "ProviderTimeout",
    "RateLimited",
    "ServerError",
    "error_for_status",
    "scrub",
]

_MAX_DETAIL = 240


class AuthenticationFailed(ProviderError):
    """HTTP 401/403: the API key is missing, wrong, or lacks access to the model."""


class RateLimited(ProviderError):
    """HTTP 429: too many requests or quota exhausted."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ContextTooLong(ProviderError):
    """The messages (plus room for the answer) exceed the model's context window.

    ``window`` and ``requested`` are the sizes in tokens the provider reported,
    when it did (llama.cpp, vLLM and OpenAI say both): enough to trim and retry.
    """

    def __init__(
        self, message: str, *, window: int | None = None, requested: int | None = None
    ) -> None:
        super().__init__(message)
        self.window = window
        self.requested = requested


class ProviderTimeout(ProviderError):
    """No data arrived within the timeout (on connect, before the answer, or mid-stream)."""


class ConnectionFailed(ProviderError):
    """Connection refused, reset, or dropped before the answer was complete."""

    refused = False  # true when nothing was sent (safe to retry)


class BadRequest(ProviderError):
    """HTTP 400/422 and similar: the provider rejected the request as invalid."""


class BadModel(BadRequest):
    """HTTP 404 or an unknown provider/model name."""


class ServerError(ProviderError):
    """HTTP 5xx: the provider failed; usually transient."""


class BadResponse(ProviderError):
    """The provider answered with something that is not a valid chat completion."""


# Things that look like secrets in provider error texts: bearer tokens, OpenAI/Anthropic
# style keys (also partially masked ones such as "sk-proj-****abcd"), key=value pairs.
_SECRET_PATTERNS = [
    re.compile(r"(?i)(authorization|x-api-key|api[-_]?key)(\"?\s*[:=]\s*\"?)[^\s\"',}]+"),
    re.compile(r"(?i)bearer\s+[^\s\"',}]+"),
    re.compile(r"\b(?:sk|pk|rk|key)-[A-Za-z0-9_\-\*\.]{6,}"),
]


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return ``text`` as one line, without the given secrets or anything key-like, capped."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
            # Also partial echoes such as "sk-abc...xyz" or a masked key's visible tail.
            if len(secret) >= 12:
                text = text.replace(secret[:8], "[redacted]").replace(secret[-6:], "[redacted]")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(_redact_match, text)
    text = " ".join(text.split())
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 1].rstrip() + "…"
    return text


def _redact_match(match: re.Match[str]) -> str:
    if match.re is _SECRET_PATTERNS[0]:
        return f"{match.group(1)}{match.group(2)}[redacted]"
    if match.re is _SECRET_PATTERNS[1]:
        return "Bearer [redacted]"
    return "[redacted]"


# Every overflow shape seen from servers, on both provider paths: OpenAI's code,
# llama.cpp's error type and its two messages ("request (6794 tokens) exceeds the
# available context size (2048 tokens)", "input (N tokens) is larger than the max
# context size (M tokens)"), vLLM's ("This model's maximum context length is 2048
# tokens. However, you requested 6794 tokens ..."), Ollama's ("input length exceeds
# the context length"), Anthropic's ("prompt is too long").
_CONTEXT_HINTS = (
    "context_length_exceeded",
    "exceed_context_size_error",
    "context size",
    "exceeds the context length",
    "exceeds maximum context",
    "context length",
    "context window",
    "maximum context",
    "too many tokens",
    "prompt is too long",
    "reduce the length",
    "input is too long",
)


def looks_like_context_overflow(detail: str) -> bool:
    """Whether a provider's 400 message means the prompt exceeds the context window."""
    low = detail.lower()
    return any(hint in low for hint in _CONTEXT_HINTS)


_WINDOW_PATTERNS = (
    re.compile(r"context size \((\d+) tokens\)"),  # llama.cpp
    re.compile(r"maximum context length is (\d+)"),  # vLLM, OpenAI
    re.compile(r"context (?:length|window) (?:of|is) (\d+)"),
)
_REQUESTED_PATTERNS = (
    re.compile(r"(?:request|input) \((\d+) tokens\)"),  # llama.cpp
    re.compile(r"you requested (\d+) tokens"),  # vLLM, OpenAI
    re.compile(r"resulted in (\d+) tokens"),  # OpenAI
)


def _first_number(patterns: tuple[re.Pattern[str], ...], text: str) -> int | None:
    for pattern in patterns:
        found = pattern.search(text)
        if found:
            return int(found.group(1))
    return None


def _suffix(detail: str) -> str:
    return f" (provider said: {detail})" if detail else ""


def error_for_status(
    status: int,
    *,
    model: str,
    where: str,
    detail: str = "",
    retry_after: float | None = None,
    key_hint: str = "the provider's API key environment variable",
) -> ProviderError:
    """Map an HTTP status (plus the provider's already scrubbed message) to an error."""
    if status in (401, 403):
        what = "authentication failed" if status == 401 else "access denied"
        return AuthenticationFailed(
            f"{what} at {where} (HTTP {status}): check {key_hint}{_suffix(detail)}"
        )
    if status == 429:
        wait = f", retry after {retry_after:g} s" if retry_after is not None else ""
        return RateLimited(
            f"rate limited by {where} (HTTP 429{wait}): wait and try again, "
            f"or check your plan's quota{_suffix(detail)}",
            retry_after=retry_after,
        )
    if status == 404:
        return BadModel(
            f"model '{model}' not found at {where} (HTTP 404): check the model name "
            f"(--model) and the API base{_suffix(detail)}"
        )
    if status == 408:
        return ProviderTimeout(f"{where} timed out the request (HTTP 408): try again")
    if status in (400, 413, 422) and looks_like_context_overflow(detail):
        return context_too_long(model, detail)
    if 400 <= status < 500:
        return BadRequest(
            f"{where} rejected the request for model '{model}' (HTTP {status}): "
            f"check the model and options{_suffix(detail)}"
        )
    if status >= 500:
        return ServerError(
            f"{where} failed with a server error (HTTP {status}): try again later{_suffix(detail)}"
        )
    return BadResponse(f"unexpected HTTP {status} from {where}{_suffix(detail)}")


def context_too_long(model: str, detail: str = "") -> ContextTooLong:
    """The standard 'context too long' error (also raised by context assembly)."""
    low = detail.lower()
    return ContextTooLong(
        f"the conversation is too long for model '{model}': send less history "
        f"(--context-recent), shorten the prompt, or use a model with a larger "
        f"context window{_suffix(detail)}",
        window=_first_number(_WINDOW_PATTERNS, low),
        requested=_first_number(_REQUESTED_PATTERNS, low),
    )


def error_text(raw: bytes) -> str:
    """The human message inside a provider's error body (JSON or text)."""
    text = raw.decode("utf-8", "replace")
    try:
        obj = json.loads(text)
    except ValueError:
        return text
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            for key in ("message", "detail", "error"):
                if isinstance(err.get(key), str):
                    return str(err[key]) + _kind(err, str(err[key]))
        elif isinstance(err, str):
            return err
        if isinstance(obj.get("detail"), str):
            return str(obj["detail"])
    return text


#: Machine-readable error types/codes that mean "the prompt exceeds the window".
OVERFLOW_KINDS = frozenset({"context_length_exceeded", "exceed_context_size_error"})


def _kind(err: dict[str, object], message: str) -> str:
    """`` [type]`` when the error's machine-readable type names an overflow the message may not.

    llama.cpp says ``"type": "exceed_context_size_error"``; OpenAI says
    ``"code": "context_length_exceeded"``. Generic types (``invalid_request_error``) add nothing.
    """
    for key in ("type", "code"):
        kind = err.get(key)
        if isinstance(kind, str) and kind in OVERFLOW_KINDS and kind not in message:
            return f" [{kind}]"
    return ""
