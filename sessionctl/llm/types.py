"""Request, result and stream types shared by both provider paths."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sessionctl.llm.errors import ConnectionFailed, ProviderError

__all__ = ["ChatRequest", "ChatResult", "ChatStream", "StreamState", "clean_usage"]


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion call. Settings come from the caller, never from sessionctl's env.

    ``api_key`` is never shown in ``repr``. ``via_litellm`` forces the litellm path even
    when the direct path would qualify; ``via_direct`` forces the direct path (the
    name's provider prefix, if any, is dropped). ``retries`` bounds re-sends before the first byte
    of an answer (connection refused, 429, 5xx); a stream is never retried once it started.
    """

    model: str
    messages: list[dict[str, Any]]
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float = 600.0
    stream: bool = True
    retries: int = 2
    via_litellm: bool = False
    via_direct: bool = False  # the direct path even for a provider-prefixed name
    # OpenAI ``tools`` entries (``{"type": "function", "function": {...}}``); None: none sent
    tools: list[dict[str, Any]] | None = None
    # OpenAI ``response_format`` (structured output, e.g. ``{"type": "json_schema",
    # "json_schema": {"name": ..., "schema": ..., "strict": ...}}``); None: none sent
    response_format: dict[str, Any] | None = None


@dataclass
class ChatResult:
    """A finished answer: its text, the model that answered, token usage, finish reason."""

    content: str
    model: str | None
    usage: dict[str, int] | None
    finish_reason: str | None
    # The tool calls the model asked for, in OpenAI's shape
    # (``{"id", "type": "function", "function": {"name", "arguments"}}``), or None.
    tool_calls: list[dict[str, Any]] | None = None


@dataclass
class StreamState:
    """What a provider path learned while streaming (filled in as chunks arrive)."""

    model: str | None = None
    usage: dict[str, int] | None = None
    finish_reason: str | None = None
    calls: dict[int, dict[str, str]] = field(default_factory=dict)  # tool calls by index

    def add_call(self, index: Any, id: Any = None, name: Any = None, arguments: Any = None) -> None:
        """Merge one (streamed piece of a) tool call: id and name set, arguments appended."""
        key = index if isinstance(index, int) and not isinstance(index, bool) else len(self.calls)
        call = self.calls.setdefault(key, {"id": "", "name": "", "arguments": ""})
        if isinstance(id, str) and id:
            call["id"] = id
        if isinstance(name, str) and name:
            call["name"] = name
        if isinstance(arguments, str):
            call["arguments"] += arguments

    def tool_calls(self) -> list[dict[str, Any]] | None:
        """The tool calls so far, ordered by index, in OpenAI's message shape."""
        if not self.calls:
            return None
        return [
            {
                "id": c["id"] or f"call_{i}",
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for i, c in (sorted(self.calls.items()))
        ]


class ChatStream:
    """An answer arriving as text deltas.

    Iterate to get ``str`` deltas as they arrive. After exhaustion :attr:`result` holds
    the :class:`ChatResult`. :attr:`partial_text` is always the text handed out so far —
    after a ``KeyboardInterrupt`` (or any error) mid-stream it is what the user saw, the
    connection is closed and :attr:`interrupted` is true. :meth:`close` aborts the call.
    Also a context manager that closes on exit.
    """

    def __init__(
        self,
        deltas: Iterator[str],
        state: StreamState,
        closer: Callable[[], None],
        *,
        model: str,
        aborter: Callable[[], None] | None = None,
    ) -> None:
        self._deltas = deltas
        self._state = state
        self._closer = closer
        self._aborter = aborter
        self.aborted = False  # abort() was called (the read it cut short fails as lost)
        self._parts: list[str] = []
        self._requested_model = model
        self._result: ChatResult | None = None
        self._closed = False
        self.interrupted = False

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> str:
        if self._result is not None or self._closed:
            raise StopIteration
        if self.aborted:
            self._stop_aborted()
        try:
            delta = next(self._deltas)
        except StopIteration:
            self._finish()
            raise
        except ProviderError:
            self._closed = True
            self._close_connection()
            raise
        except BaseException:
            # KeyboardInterrupt (or anything unexpected) mid-stream: keep what was
            # handed out, drop the connection, let the caller decide.
            self.interrupted = True
            self.close()
            raise
        if self.aborted:  # arrived after abort(): not handed out, not kept
            self._stop_aborted()
        self._parts.append(delta)
        return delta

    def _stop_aborted(self) -> None:
        self.interrupted = True
        self._closed = True
        self._close_connection()
        raise ConnectionFailed("the answer was aborted before it was complete")

    def _finish(self) -> None:
        self._result = ChatResult(
            content="".join(self._parts),
            model=self._state.model or self._requested_model,
            usage=self._state.usage,
            finish_reason=self._state.finish_reason,
            tool_calls=self._state.tool_calls(),
        )
        self._close_connection()

    @property
    def partial_text(self) -> str:
        """The text handed out so far (the whole answer once finished)."""
        return "".join(self._parts)

    @property
    def model(self) -> str:
        """The model the provider reports (so far), else the one requested."""
        return self._state.model or self._requested_model

    @property
    def usage(self) -> dict[str, int] | None:
        """Token usage as reported by the provider, if any (usually with the last chunk)."""
        return self._state.usage

    @property
    def done(self) -> bool:
        """Whether the answer arrived completely."""
        return self._result is not None

    @property
    def result(self) -> ChatResult:
        """The finished answer; raises ``RuntimeError`` before the stream is exhausted."""
        if self._result is None:
            raise RuntimeError("the answer is not complete yet; iterate the stream first")
        return self._result

    def read(self) -> ChatResult:
        """Consume the remaining deltas and return the result."""
        for _ in self:
            pass
        return self.result

    def close(self) -> None:
        """Abort the answer (if still running) and release the connection. Idempotent."""
        if self._result is None and not self._closed:
            self.interrupted = True
        self._closed = True
        self._close_connection()

    def abort(self) -> bool:
        """From another thread: stop the answer here. A read blocked in this stream
        returns now, and iterating raises ``ConnectionFailed`` (:attr:`aborted` tells it
        was this) instead of handing out anything more; :attr:`partial_text` stays what
        was handed out. Returns False when the path cannot wake a blocked read (it is
        then waited for, bounded by the timeout)."""
        self.aborted = True
        if self._aborter is None:
            return False
        try:
            self._aborter()
        except Exception:  # already closed: nothing left to wake
            pass
        return True

    def _close_connection(self) -> None:
        closer, self._closer = self._closer, _noop
        try:
            closer()
        except Exception:  # closing a broken connection must not mask the real outcome
            pass

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "done" if self.done else ("interrupted" if self.interrupted else "open")
        return f"<ChatStream model={self.model!r} {state} chars={len(self.partial_text)}>"


def clean_usage(usage: Any) -> dict[str, int] | None:
    """The integer counters of a usage object; of the nested details only the cached
    prompt tokens are kept, as ``cached_tokens`` (OpenAI, llama.cpp, vLLM)."""
    if not isinstance(usage, dict):
        return None
    out = {
        k: v
        for k, v in usage.items()
        if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
    }
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        cached = details.get("cached_tokens")
        if isinstance(cached, int) and not isinstance(cached, bool):
            out["cached_tokens"] = cached
    return out or None


def _noop() -> None:
    return None
