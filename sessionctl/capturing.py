"""Record an app's own OpenAI-client calls in a session (Memori-style).

``capture(client)`` patches ``client.chat.completions.create`` of an
``openai.OpenAI`` client: each call goes out unchanged and returns the
client's own response (for ``stream=True``, an iterator yielding the client's
own chunks); the request messages the session does not already hold, then the
answer with its model and usage, are appended through
:meth:`Session.add_messages` (so redaction applies). A failed call records
nothing; a recording failure warns once and never breaks the call. An
``openai.AsyncOpenAI`` client is captured for non-streamed calls; its streams
and litellm are not handled yet.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import Any

from sessionctl.errors import SessionNotFound
from sessionctl.service.chat import measured_usage, new_session_name
from sessionctl.service.session import Session
from sessionctl.service.store import Store


class Capture:
    """Handle returned by :func:`capture`."""

    def __init__(
        self, store: Store, session: str | None, user: str | None, agent: str | None
    ) -> None:
        self._store = store
        self._user = user
        self._agent = agent
        self._warned = False
        self._annotated: set[str] = set()  # sessions whose header got user/agent
        self._name = session or new_session_name(store)

    @property
    def session(self) -> str:
        return self._name

    def reset_session(self) -> str:
        """Switch to a new generated session name (as ``chat`` without ``-s``)."""
        self._name = new_session_name(self._store)
        return self._name

    def set_session(self, name: str) -> None:
        self._name = name

    def _meta(self) -> dict[str, Any]:
        return {k: v for k, v in (("user", self._user), ("agent", self._agent)) if v is not None}

    def record(self, request: list[dict[str, Any]], answer: dict[str, Any]) -> None:
        """Append the new part of ``request`` and ``answer``; never raises."""
        try:
            sess: Session = self._store.session(self._name)
            new = [dict(m) for m in request]
            try:  # only the last len(request) messages can be a resent prefix: read the tail
                held = [(m.role, m.content) for m in sess.recent_messages(len(new))]
            except SessionNotFound:
                held = []
            redactor = self._store.redactor()

            def same(m: dict[str, Any], h: tuple[str, str]) -> bool:
                content = m.get("content")
                if content is None:  # an assistant message with only tool calls
                    content = ""
                if m.get("role") != h[0] or not isinstance(content, str):
                    return False
                if content == h[1]:
                    return True
                # a secret in a resent message: the session holds it redacted
                return redactor is not None and redactor.text(content).text == h[1]

            # drop the prefix the session already holds (apps resend history)
            n = min(len(held), len(new))
            while n and not all(map(same, new[:n], held[-n:])):
                n -= 1
            items = [*new[n:], answer]
            meta = self._meta()
            if meta:
                for m in items:
                    m["metadata"] = {**(m.get("metadata") or {}), **meta}
            # With a user: another user's session is refused (not recorded, one
            # warning), a new or unowned one becomes this user's.
            sess.add_messages(items, user=self._user)
            if meta and self._name not in self._annotated:
                sess.update(metadata=meta)
                self._annotated.add(self._name)
        except Exception as exc:  # recording must never break the app's call
            self.warn(exc)

    def warn(self, exc: Exception) -> None:
        """Say once (``RuntimeWarning``) that an exchange could not be recorded."""
        if not self._warned:
            self._warned = True
            warnings.warn(f"sessionctl capture: not recorded: {exc}", RuntimeWarning, stacklevel=4)


def _usage(model: str, usage: Any, started: float, first: float | None) -> dict[str, Any]:
    raw = usage.model_dump(exclude_none=True) if usage is not None else None
    return measured_usage(model, raw, started, first)


def _answer(
    text: str,
    tool_calls: list[dict[str, Any]],
    model: str | None,
    usage: dict[str, Any] | None,
    interrupted: bool = False,
) -> dict[str, Any]:
    answer: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        answer["tool_calls"] = tool_calls
    if model:
        answer["model"] = model
    if usage:
        answer["usage"] = usage
    if interrupted:
        answer["interrupted"] = True
    return answer


class CapturedStream:
    """What a captured ``create(..., stream=True)`` returns.

    Yields the client's own chunks unchanged. Exhausted: the exchange is
    recorded. Closed early (``close()``, leaving a ``with`` block, or dropped):
    the prompt and the partial answer are recorded, marked ``interrupted``.
    Other attributes are the client's stream's (``response``, ...).
    """

    def __init__(
        self, stream: Any, handle: Capture, request: list[dict[str, Any]], started: float
    ) -> None:
        self._stream = stream
        self._iter: Iterator[Any] = iter(stream)
        self._handle = handle
        self._request = request
        self._started = started
        self._first: float | None = None
        self._texts: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self._model: str | None = None
        self._usage: Any = None
        self._done = False

    def __iter__(self) -> CapturedStream:
        return self

    def __next__(self) -> Any:
        try:
            chunk = next(self._iter)
        except StopIteration:
            self._finish(interrupted=False)
            raise
        except BaseException:
            self._finish(interrupted=True)  # a connection lost mid-answer keeps what came
            raise
        self._take(chunk)
        return chunk

    def _take(self, chunk: Any) -> None:
        self._model = getattr(chunk, "model", None) or self._model
        if getattr(chunk, "usage", None) is not None:
            self._usage = chunk.usage
        for choice in getattr(chunk, "choices", None) or []:
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta.content:
                if self._first is None:
                    self._first = time.monotonic()
                self._texts.append(delta.content)
            for tc in delta.tool_calls or []:
                call = self._calls.setdefault(
                    tc.index,
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                )
                if tc.id:
                    call["id"] = tc.id
                if tc.type:
                    call["type"] = tc.type
                fn = tc.function
                if fn is not None:
                    call["function"]["name"] += fn.name or ""
                    call["function"]["arguments"] += fn.arguments or ""

    def _finish(self, *, interrupted: bool) -> None:
        if self._done:
            return
        self._done = True
        if interrupted and not self._texts and not self._calls:
            return  # nothing was produced: a failed call records nothing
        model = self._model or ""
        usage = _usage(model, self._usage, self._started, self._first)
        calls = [self._calls[i] for i in sorted(self._calls)]
        text = "".join(self._texts)
        self._handle.record(self._request, _answer(text, calls, self._model, usage, interrupted))

    def close(self) -> None:
        """Stop reading; what was produced so far is recorded as interrupted."""
        self._finish(interrupted=True)
        self._stream.close()

    def __enter__(self) -> CapturedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self._finish(interrupted=True)
            try:
                self._stream.close()  # give the connection back
            except Exception:
                pass

    def __getattr__(self, name: str) -> Any:
        stream = self.__dict__.get("_stream")
        if stream is None:  # not set up (a copy, or __init__ failed)
            raise AttributeError(name)
        return getattr(stream, name)


def _is_async(completions: Any) -> bool:
    """Whether ``completions`` is an ``openai.AsyncOpenAI`` client's (its ``create`` is async)."""
    try:
        from openai.resources.chat.completions import AsyncCompletions
    except ImportError:  # pragma: no cover - a client without openai installed
        return False
    return isinstance(completions, AsyncCompletions)


def _record_completion(
    handle: Capture, request: list[dict[str, Any]], response: Any, started: float
) -> None:
    """Record a non-streamed ``ChatCompletion`` (warns once if its shape is unknown)."""
    try:
        msg = response.choices[0].message
        calls = [tc.model_dump(exclude_none=True) for tc in msg.tool_calls or []]
        usage = _usage(response.model or "", response.usage, started, None)
        answer = _answer(msg.content or "", calls, response.model, usage)
    except Exception as exc:  # an answer shape we do not know: still the app's result
        handle.warn(exc)
        return
    handle.record(request, answer)


def capture(
    client: Any,
    *,
    session: str | None = None,
    store: Store | None = None,
    user: str | None = None,
    agent: str | None = None,
) -> Capture:
    """Patch ``client.chat.completions.create`` to record each exchange.

    ``client`` is an ``openai.OpenAI`` or (non-streaming calls only) ``openai.AsyncOpenAI``.
    """
    the_store = store or Store()
    handle = Capture(the_store, session, user, agent)
    completions = client.chat.completions
    original = completions.create

    if _is_async(completions):

        async def acreate(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            response = await original(*args, **kwargs)
            request = list(kwargs.get("messages") or [])
            if kwargs.get("stream"):
                handle.warn(NotImplementedError("streams of an async client are not captured yet"))
                return response
            _record_completion(handle, request, response, started)
            return response

        completions.create = acreate
        return handle

    def create(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        response = original(*args, **kwargs)
        request = list(kwargs.get("messages") or [])
        if kwargs.get("stream"):
            return CapturedStream(response, handle, request, started)
        _record_completion(handle, request, response, started)
        return response

    completions.create = create
    return handle
