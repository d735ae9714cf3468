"""Record an app's own OpenAI-client calls in a session (Memori-style).

``capture(client)`` patches ``client.chat.completions.create`` of an
``openai.OpenAI`` client: each call goes out unchanged and returns the
client's own response (for ``stream=True``, an iterator yielding the client's
own chunks); the request messages the session does not already hold, then the
answer with its model and usage, are appended through
:meth:`Session.add_messages` (so redaction applies). A failed call records
nothing; a recording failure warns once and never breaks the call. The writes
are made in call order by a writer thread per handle (see :func:`capture`). An
``openai.AsyncOpenAI`` client is captured the same way (its streams as
:class:`CapturedAsyncStream`), and so is the ``litellm`` module
(``litellm.completion`` / ``acompletion``). ``Capture.close()`` undoes the patch.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import dataclasses
import functools
import inspect
import threading
import time
import types
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from sessionctl.errors import SessionNotFound, StoreError, UsageError
from sessionctl.service.chat import measured_usage, new_session_name
from sessionctl.service.session import Session
from sessionctl.service.store import Store

_IDLE_S = 1.0  # an idle writer thread ends after this long; the next exchange starts one
_live: weakref.WeakSet[Capture] = weakref.WeakSet()  # handles flushed at interpreter exit


@dataclasses.dataclass
class _Job:
    """One exchange handed to the writer: what to append, and where."""

    session: str
    request: list[Any]
    answer: dict[str, Any]
    done: concurrent.futures.Future[None] | None  # set when written (``durable`` waits on it)


class Capture:
    """Handle returned by :func:`capture`.

    Exchanges are written in order by one background writer thread per handle
    (``durable=False``, the default): a call returns without waiting for the disk.
    :meth:`flush` waits until everything handed over is written; :meth:`close`,
    leaving ``with``, and interpreter exit flush too.
    """

    def __init__(
        self,
        store: Store,
        session: str | None,
        user: str | None,
        agent: str | None,
        durable: bool = False,
    ) -> None:
        self._store = store
        self._user = user
        self._agent = agent
        self.durable = durable
        self._warned = False
        self._annotated: set[str] = set()  # sessions whose header got user/agent
        self._name = session or new_session_name(store)
        self._restores: list[Callable[[], None]] = []
        # the writer: jobs in call order, one thread draining them
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._jobs: collections.deque[_Job] = collections.deque()
        self._pending = 0  # jobs queued or being written
        self._thread: threading.Thread | None = None
        self._failures: list[Exception] = []  # not recorded, not yet reported by flush()
        self._unreported = False  # a failure the next call/flush/close has to warn about
        self.unrecorded = 0  # exchanges that could not be recorded, over the handle's life
        _live.add(self)

    def close(self) -> None:
        """Stop capturing: put back what :func:`capture` patched (idempotent), then
        wait until every exchange handed over is written (a failure warns once).

        Streams already handed out still record when they end.
        """
        while self._restores:
            self._restores.pop()()
        self._wait()
        self._report()

    def flush(self) -> None:
        """Wait until every exchange captured so far is written and fsynced.

        Raises :class:`~sessionctl.errors.StoreError` when some could not be recorded
        since the previous flush (each is counted in :attr:`unrecorded`); the calls
        themselves were never affected. Blocks: from asyncio, ``await
        asyncio.to_thread(handle.flush)``.
        """
        self._wait()
        self._report()
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            raise StoreError(
                f"sessionctl capture: {len(failures)} exchange(s) not recorded: {failures[0]}"
                " (the calls themselves went through)"
            )

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _patch(self, owner: Any, name: str, new: Callable[..., Any]) -> None:
        """Set ``owner.name = new``; :meth:`close` restores what was there."""
        missing = object()
        before = vars(owner).get(name, missing)

        def restore() -> None:
            if before is missing:
                delattr(owner, name)  # the class's own method shows through again
            else:
                setattr(owner, name, before)

        setattr(owner, name, new)
        self._restores.append(restore)

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

    # -- handing exchanges to the writer (the app's thread) ------------------------
    def submit(self, request: list[Any], answer: dict[str, Any]) -> _Job:
        """Queue one exchange for the writer (no disk I/O here); never raises."""
        # The request is copied now: the app may change its history after the call.
        snapshot = [dict(m) if isinstance(m, Mapping) else m for m in request]
        job = _Job(self._name, snapshot, answer, None)
        if self.durable:
            job.done = concurrent.futures.Future()
        with self._lock:
            self._jobs.append(job)
            self._pending += 1
            if self._thread is not None:
                self._work.notify()
                return job
            self._thread = threading.Thread(
                target=self._run, name="sessionctl-capture", daemon=True
            )
            try:
                self._thread.start()
                return job
            except RuntimeError:  # no new threads (interpreter shutdown): write it here
                self._thread = None
                batch = list(self._jobs)
                self._jobs.clear()
        try:
            self._write(batch)
        finally:
            with self._lock:
                self._pending -= len(batch)
                self._idle.notify_all()
        return job

    def record(self, request: list[Any], answer: dict[str, Any]) -> None:
        """Hand one exchange over; with ``durable``, return once it is written."""
        job = self.submit(request, answer)
        if job.done is not None:
            job.done.result()
        self._report()

    async def arecord(self, request: list[Any], answer: dict[str, Any]) -> None:
        """:meth:`record` for asyncio: the event loop never waits on the disk."""
        job = self.submit(request, answer)
        if job.done is not None:
            await asyncio.wrap_future(job.done)
        self._report()

    def _report(self) -> None:
        """Warn (once per handle) about exchanges the writer could not record."""
        if self._unreported:
            self._unreported = False
            with self._lock:
                first = self._failures[0] if self._failures else None
            if first is not None:
                self.warn(first)

    def warn(self, exc: Exception) -> None:
        """Say once (``RuntimeWarning``) that an exchange could not be recorded."""
        if not self._warned:
            self._warned = True
            warnings.warn(f"sessionctl capture: not recorded: {exc}", RuntimeWarning, stacklevel=4)

    def _wait(self) -> None:
        with self._lock:
            while self._pending:
                self._idle.wait()

    # -- the writer thread ------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._work.wait(_IDLE_S)
                if not self._jobs:
                    self._thread = None  # the next submit starts a new one
                    return
                batch = list(self._jobs)
                self._jobs.clear()
            try:
                self._write(batch)
            finally:
                with self._lock:
                    self._pending -= len(batch)
                    self._idle.notify_all()

    def _write(self, batch: list[_Job]) -> None:
        """Write ``batch``: consecutive jobs of one session as one append (one fsync,
        all or nothing); a group that fails is retried job by job, so one bad exchange
        costs only itself."""
        groups: list[list[_Job]] = []
        for job in batch:
            if groups and groups[-1][0].session == job.session:
                groups[-1].append(job)
            else:
                groups.append([job])
        for group in groups:
            try:
                self._append(group)
            except Exception as exc:
                if len(group) == 1:
                    self._failed(group[0], exc)
                    continue
                for job in group:
                    try:
                        self._append([job])
                    except Exception as exc:
                        self._failed(job, exc)
                    else:
                        _resolve(job)
            else:
                for job in group:
                    _resolve(job)

    def _failed(self, job: _Job, exc: Exception) -> None:
        with self._lock:
            self._failures.append(exc)
            self.unrecorded += 1
            self._unreported = True
        _resolve(job)

    def _append(self, jobs: list[_Job]) -> None:
        """Append the new part of each job's request and its answer, as one write."""
        name = jobs[0].session
        sess: Session = self._store.session(name)
        requests = [[_plain(m) for m in job.request] for job in jobs]
        try:  # only the last len(request) messages can be a resent prefix: read the tail
            held = [(m.role, m.content) for m in sess.recent_messages(max(map(len, requests)))]
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

        items: list[dict[str, Any]] = []
        for job, new in zip(jobs, requests, strict=True):
            # drop the prefix the session already holds (apps resend history)
            n = min(len(held), len(new))
            while n and not all(map(same, new[:n], held[-n:])):
                n -= 1
            added = [*new[n:], job.answer]
            items += added
            held += [(m.get("role", ""), m.get("content") or "") for m in added]
        meta = self._meta()
        if meta:
            for m in items:
                m["metadata"] = {**(m.get("metadata") or {}), **meta}
        # With a user: another user's session is refused (not recorded, one
        # warning), a new or unowned one becomes this user's.
        sess.add_messages(items, user=self._user)
        if meta and name not in self._annotated:
            sess.update(metadata=meta)
            self._annotated.add(name)


def _resolve(job: _Job) -> None:
    if job.done is not None:
        job.done.set_result(None)


@atexit.register
def _flush_at_exit() -> None:
    """Write what is still queued before the interpreter goes (warns about failures)."""
    for handle in list(_live):
        handle._wait()
        handle._report()


_KEPT = ("role", "content", "tool_calls", "tool_call_id", "name")  # what a transcript holds
_ROLES = {"developer": "system"}  # OpenAI's newer name for the system prompt


def _dump(obj: Any) -> dict[str, Any]:
    """A request item as a dict: a Mapping, or an SDK object (``model_dump``)."""
    if isinstance(obj, Mapping):
        return dict(obj)
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dict(dump(exclude_none=True))
    return dict(obj)


def _text(content: Any) -> Any:
    """Content parts (``[{"type": "text", "text": ...}, ...]``) as one text; other parts
    (images, audio, files) as ``[type]``."""
    if not isinstance(content, list | tuple):
        return content
    parts = []
    for part in content:
        part = _dump(part)
        kind = part.get("type")
        parts.append(part.get("text", "") if kind == "text" else f"[{kind}]")
    return "\n".join(parts)


def _plain(message: Any) -> dict[str, Any]:
    """One request message as a transcript message: the app's dict or SDK object (an
    ``openai`` ``ChatCompletionMessage``, a litellm ``Message`` resent as history), with
    its tool calls as dicts, content parts as text and fields a transcript does not hold
    (``refusal``, ``annotations``, ``audio``, ...) left out."""
    raw = _dump(message)
    out = {k: raw[k] for k in _KEPT if raw.get(k) is not None}
    if "role" in out:
        out["role"] = _ROLES.get(out["role"], out["role"])
    if "content" in out:
        out["content"] = _text(out["content"])
    calls = out.pop("tool_calls", None)
    if calls:
        out["tool_calls"] = [_dump(c) for c in calls]
    return out


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


class _Recorder:
    """Assembles a streamed answer from the client's chunks and records it once."""

    def __init__(self, handle: Capture, request: list[dict[str, Any]], started: float) -> None:
        self._handle = handle
        self._request = request
        self._started = started
        self._first: float | None = None
        self._texts: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self._model: str | None = None
        self._usage: Any = None
        self._done = False

    def _take(self, chunk: Any) -> None:
        try:
            self._model = getattr(chunk, "model", None) or self._model
            if getattr(chunk, "usage", None) is not None:
                self._usage = chunk.usage
            for choice in getattr(chunk, "choices", None) or []:
                if getattr(choice, "index", 0) != 0:
                    continue
                delta = choice.delta
                if delta.content:
                    if self._first is None:
                        self._first = time.monotonic()
                    self._texts.append(delta.content)
                for tc in getattr(delta, "tool_calls", None) or []:
                    call = self._calls.setdefault(
                        tc.index or 0,
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
        except Exception as exc:  # a chunk shape we do not know: still the app's chunk
            self._handle.warn(exc)

    def _ended(self, *, interrupted: bool) -> dict[str, Any] | None:
        """The answer to record, the first time the stream ends (None: nothing to)."""
        if self._done:
            return None
        self._done = True
        if interrupted and not self._texts and not self._calls:
            return None  # nothing was produced: a failed call records nothing
        try:
            model = self._model or ""
            usage = _usage(model, self._usage, self._started, self._first)
            calls = [self._calls[i] for i in sorted(self._calls)]
            return _answer("".join(self._texts), calls, self._model, usage, interrupted)
        except Exception as exc:
            self._handle.warn(exc)
            return None

    def _finish(self, *, interrupted: bool) -> None:
        answer = self._ended(interrupted=interrupted)
        if answer is not None:
            self._handle.record(self._request, answer)

    def _hand_over(self, *, interrupted: bool) -> None:
        """Queue the exchange and never wait (from a finaliser, or inside the event loop)."""
        answer = self._ended(interrupted=interrupted)
        if answer is not None:
            self._handle.submit(self._request, answer)

    async def _afinish(self, *, interrupted: bool) -> None:
        answer = self._ended(interrupted=interrupted)
        if answer is not None:
            await self._handle.arecord(self._request, answer)

    def __getattr__(self, name: str) -> Any:
        stream = self.__dict__.get("_stream")
        if stream is None:  # not set up (a copy, or __init__ failed)
            raise AttributeError(name)
        return getattr(stream, name)


class CapturedStream(_Recorder):
    """What a captured ``create(..., stream=True)`` returns.

    Yields the client's own chunks unchanged. Exhausted: the exchange is
    recorded. Closed early (``close()``, leaving a ``with`` block, or dropped):
    the prompt and the partial answer are recorded, marked ``interrupted``.
    Other attributes are the client's stream's (``response``, ...).
    """

    def __init__(
        self, stream: Any, handle: Capture, request: list[dict[str, Any]], started: float
    ) -> None:
        super().__init__(handle, request, started)
        self._stream = stream
        self._iter: Iterator[Any] = iter(stream)

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

    def close(self) -> None:
        """Stop reading; what was produced so far is recorded as interrupted."""
        self._finish(interrupted=True)
        closing = getattr(self._stream, "close", None)  # litellm's stream has none
        if closing is not None:
            closing()

    def __enter__(self) -> CapturedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self._hand_over(interrupted=True)
            try:
                self._stream.close()  # give the connection back
            except Exception:  # (litellm's stream has no close)
                pass


class CapturedAsyncStream(_Recorder):
    """What a captured async ``await create(..., stream=True)`` returns.

    ``async for`` yields the client's own chunks unchanged. Exhausted: the
    exchange is recorded. Closed early (``await close()``, leaving an ``async
    with`` block, the task cancelled, or dropped): the prompt and the partial
    answer are recorded, marked ``interrupted``. Other attributes are the
    client's stream's (``response``, ...).
    """

    def __init__(
        self, stream: Any, handle: Capture, request: list[dict[str, Any]], started: float
    ) -> None:
        super().__init__(handle, request, started)
        self._stream = stream
        self._aiter: AsyncIterator[Any] = stream.__aiter__()

    def __aiter__(self) -> CapturedAsyncStream:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self._aiter.__anext__()
        except StopAsyncIteration:
            await self._afinish(interrupted=False)
            raise
        except BaseException:  # cancelled, or the connection lost: keep what came
            self._hand_over(interrupted=True)  # (a cancelled task must not await again)
            raise
        self._take(chunk)
        return chunk

    async def close(self) -> None:
        """Stop reading; what was produced so far is recorded as interrupted."""
        await self._afinish(interrupted=True)
        closing = getattr(self._stream, "close", None) or getattr(self._stream, "aclose", None)
        if closing is not None:
            result = closing()
            if inspect.isawaitable(result):
                await result

    async def __aenter__(self) -> CapturedAsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __del__(self) -> None:
        # Dropped unclosed: record what came (closing the connection needs the loop,
        # which the client's own stream leaves to its response's finaliser too).
        if not getattr(self, "_done", True):
            self._hand_over(interrupted=True)


def _is_async(completions: Any) -> bool:
    """Whether ``completions`` is an ``openai.AsyncOpenAI`` client's (its ``create`` is async)."""
    try:
        from openai.resources.chat.completions import AsyncCompletions
    except ImportError:  # pragma: no cover - a client without openai installed
        return False
    return isinstance(completions, AsyncCompletions)


def _tool_call(call: Any) -> dict[str, Any]:
    """An answer's tool call as the wire dict (``parse()``'s ``parsed_arguments`` left out:
    the transcript keeps the arguments' text)."""
    out = _dump(call)
    function = out.get("function")
    if isinstance(function, dict):
        out["function"] = {k: v for k, v in function.items() if k != "parsed_arguments"}
    return out


def _completion_answer(handle: Capture, response: Any, started: float) -> dict[str, Any] | None:
    """A non-streamed ``ChatCompletion`` as the answer to record (None, after one
    warning, if its shape is unknown)."""
    try:
        msg = response.choices[0].message
        calls = [_tool_call(tc) for tc in msg.tool_calls or []]
        usage = _usage(response.model or "", response.usage, started, None)
        return _answer(msg.content or "", calls, response.model, usage)
    except Exception as exc:  # an answer shape we do not know: still the app's result
        handle.warn(exc)
        return None


def _is_litellm(client: Any) -> bool:
    return (
        isinstance(client, types.ModuleType)
        and client.__name__ == "litellm"
        and callable(getattr(client, "completion", None))
        and callable(getattr(client, "acompletion", None))
    )


def _request(args: tuple[Any, ...], kwargs: dict[str, Any], at: int | None) -> list[Any]:
    """The request's messages: ``messages=``, or positional argument ``at`` (litellm's)."""
    messages = kwargs.get("messages")
    if messages is None and at is not None and len(args) > at:
        messages = args[at]
    return list(messages or [])


def _wrap(original: Callable[..., Any], handle: Capture, at: int | None) -> Callable[..., Any]:
    """A sync ``create``/``completion`` that records each exchange."""

    @functools.wraps(original)
    def call(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        response = original(*args, **kwargs)
        request = _request(args, kwargs, at)
        if kwargs.get("stream"):
            return CapturedStream(response, handle, request, started)
        answer = _completion_answer(handle, response, started)
        if answer is not None:
            handle.record(request, answer)
        return response

    call._sessionctl_original = original  # type: ignore[attr-defined]  # (see llm/_litellm.py)
    return call


def _awrap(original: Callable[..., Any], handle: Capture, at: int | None) -> Callable[..., Any]:
    """An async ``create``/``acompletion`` that records each exchange."""

    @functools.wraps(original)
    async def call(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        response = await original(*args, **kwargs)
        request = _request(args, kwargs, at)
        if kwargs.get("stream"):
            return CapturedAsyncStream(response, handle, request, started)
        answer = _completion_answer(handle, response, started)
        if answer is not None:
            await handle.arecord(request, answer)
        return response

    call._sessionctl_original = original  # type: ignore[attr-defined]
    return call


def capture(
    client: Any,
    *,
    session: str | None = None,
    store: Store | None = None,
    user: str | None = None,
    agent: str | None = None,
    durable: bool = False,
) -> Capture:
    """Record each exchange of ``client`` in a session; return the handle.

    ``client`` is an ``openai.OpenAI`` or ``openai.AsyncOpenAI`` (its
    ``chat.completions.create`` and ``parse`` are patched on that client object), or the
    ``litellm`` module (``litellm.completion`` and ``litellm.acompletion`` are
    patched on the module). ``handle.close()`` (or leaving ``with handle:``)
    puts the originals back and waits for the writes.

    ``durable=False`` (default): each exchange is handed to the handle's writer thread
    and the call returns at once; a ``kill -9`` or power loss can lose the exchanges not
    yet written (never part of one). ``handle.flush()``, ``close()`` and interpreter exit
    write them. ``durable=True``: each call returns only once its exchange is written
    and fsynced (an async call awaits that without blocking the event loop).
    """
    if _is_litellm(client):
        the_store = store or Store()
        handle = Capture(the_store, session, user, agent, durable)
        # litellm.acompletion runs litellm.main.completion, not the module attribute
        # patched here: each async call is recorded once. sessionctl's own calls skip
        # the patch (llm/_litellm.py unwraps ``_sessionctl_original``).
        handle._patch(client, "completion", _wrap(client.completion, handle, 1))
        handle._patch(client, "acompletion", _awrap(client.acompletion, handle, 1))
        return handle
    completions = getattr(getattr(client, "chat", None), "completions", None)
    create = getattr(completions, "create", None)
    if not callable(create):
        raise UsageError(
            f"capture() takes an openai.OpenAI or AsyncOpenAI client or the litellm module,"
            f" not {type(client).__name__}"
        )
    the_store = store or Store()
    handle = Capture(the_store, session, user, agent, durable)
    wrap = _awrap if _is_async(completions) else _wrap
    handle._patch(completions, "create", wrap(create, handle, None))
    parse = getattr(completions, "parse", None)
    if callable(parse):  # structured output: posts itself, not through create
        handle._patch(completions, "parse", wrap(parse, handle, None))
    return handle
