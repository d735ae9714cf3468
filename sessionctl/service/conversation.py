"""Conversation from Python: ``Session.chat`` and ``Session.stream``.

The same turn as the CLI's ``chat`` (:func:`sessionctl.service.chat.prepare_turn`
and :func:`~sessionctl.service.chat.turn_events`): the context is assembled the
same way, a failed call appends nothing, and a stream abandoned part-way keeps
the prompt and what was produced, marked interrupted, as Ctrl-C in the REPL does.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from sessionctl.errors import UsageError
from sessionctl.models import Message
from sessionctl.service.tools import DEFAULT_MAX_TOOL_ROUNDS, Toolbox, ToolCall

if TYPE_CHECKING:
    from concurrent.futures import Future

    from sessionctl.llm import ChatStream
    from sessionctl.service.chat import ChatOptions, TurnResult
    from sessionctl.service.session import Session


class Reply(NamedTuple):
    """A finished turn: the answer and what was recorded."""

    text: str
    model: str  # the model that answered (as the server named it)
    usage: dict[str, Any] | None  # tokens, latency_s, ttft_s, cost_usd
    messages: list[Message]  # everything recorded: prompt, tool steps, answer, in order
    session: str
    interrupted: bool = False
    tool_calls: tuple[ToolCall, ...] = ()  # the tools run for this answer, in order


class TextDelta(NamedTuple):
    """A piece of the answer as it streams in."""

    text: str


class Finished(NamedTuple):
    """The last event of a stream: the whole reply, recorded."""

    reply: Reply


StreamEvent = TextDelta | ToolCall | Finished

# What **options may set besides the named arguments (ChatOptions' other fields).
_OPTIONS = (
    "api_base",
    "context_recent",
    "context_relevant",
    "no_context",
    "timeout",
    "via",
    "context_window",
    "force",
    "user",
)


def options(
    *,
    model: str | None,
    system: str | None,
    temperature: float | None,
    max_tokens: int | None,
    extra: Mapping[str, Any],
) -> ChatOptions:
    """The turn's options from the Python arguments; an unknown option is a UsageError."""
    from sessionctl.service.chat import ChatOptions

    unknown = sorted(set(extra) - set(_OPTIONS))
    if unknown:
        raise UsageError(
            f"unknown chat option(s) {', '.join(unknown)}; known: {', '.join(_OPTIONS)}"
        )
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, int | float)
    ):
        raise UsageError(f"temperature must be a number, got {type(temperature).__name__}")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise UsageError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    return ChatOptions(
        model=model,
        system=system,
        temperature=temperature,
        max_tokens=max_tokens,
        stream=True,
        **dict(extra),
    )


def toolbox(tools: Any, max_tool_rounds: Any) -> tuple[Toolbox | None, int]:
    """The checked ``tools=`` and ``max_tool_rounds=`` (None: the default), or UsageError
    before any call."""
    if max_tool_rounds is None:
        max_tool_rounds = DEFAULT_MAX_TOOL_ROUNDS
    if isinstance(max_tool_rounds, bool) or not isinstance(max_tool_rounds, int):
        raise UsageError(f"max_tool_rounds must be an integer, got {max_tool_rounds!r}")
    if max_tool_rounds < 1:
        raise UsageError(f"max_tool_rounds must be at least 1, got {max_tool_rounds}")
    if tools is None:
        return None, max_tool_rounds
    box = Toolbox(tools)
    return (box if box.functions else None), max_tool_rounds


def _reply(result: TurnResult) -> Reply:
    return Reply(
        text=result.assistant.content,
        model=result.assistant.model or "",
        usage=result.usage,
        messages=list(result.messages) or [result.user, result.assistant],
        session=result.session,
        interrupted=result.interrupted,
        tool_calls=result.tool_calls,
    )


def chat(
    session: Session,
    prompt: str,
    opts: ChatOptions,
    tools: Any = None,
    max_tool_rounds: Any = None,
) -> Reply:
    """One turn, waited for (tool calls run and answered, as many rounds as allowed)."""
    from sessionctl.service.chat import prepare_turn, run_turn

    if not isinstance(prompt, str):
        raise UsageError(f"prompt must be text, got {type(prompt).__name__}")
    box, rounds = toolbox(tools, max_tool_rounds)
    turn = prepare_turn(session._store, session, prompt, opts)
    return _reply(run_turn(turn, toolbox=box, max_tool_rounds=rounds))


def ask_json(session: Session, prompt: str, schema: Any, opts: ChatOptions) -> Any:
    """One turn asking for structured output (``schema``: a pydantic model class or a
    JSON Schema dict); returns the validated value and records the raw JSON answer.

    The provider gets the schema as ``response_format``. An answer that does not
    validate is sent back once with what was wrong; a second one raises
    :class:`~sessionctl.errors.InvalidOutput` and appends nothing.
    """
    import dataclasses

    from sessionctl.service.chat import prepare_turn, run_turn
    from sessionctl.service.structured import Schema

    if not isinstance(prompt, str):
        raise UsageError(f"prompt must be text, got {type(prompt).__name__}")
    wanted = Schema(schema)
    turn = prepare_turn(session._store, session, prompt, opts)
    request = dataclasses.replace(turn.request, response_format=wanted.response_format())
    accepted: list[Any] = []

    def check(text: str) -> str | None:
        value, problem = wanted.validate(text)
        if problem is None:
            accepted.append(value)
        return problem

    run_turn(turn._replace(request=request), check=check)
    return accepted[-1]


def stream(
    session: Session,
    prompt: str,
    opts: ChatOptions,
    tools: Any = None,
    max_tool_rounds: Any = None,
    on_stream: Callable[[ChatStream], None] | None = None,
) -> Generator[StreamEvent, None, None]:
    """One turn as events: :class:`TextDelta` pieces, a :class:`ToolCall` per tool run
    (after its step was recorded), then one :class:`Finished`.

    Nothing is sent before the first ``next()``. Closing the iterator early (``break``
    out of a for loop and drop it, or ``close()``) records the prompt and the partial
    answer, marked interrupted; steps already recorded stay.
    """
    from sessionctl.service.chat import prepare_turn, turn_events

    if not isinstance(prompt, str):
        raise UsageError(f"prompt must be text, got {type(prompt).__name__}")
    box, rounds = toolbox(tools, max_tool_rounds)
    turn = prepare_turn(session._store, session, prompt, opts)
    events = turn_events(turn, toolbox=box, max_tool_rounds=rounds, on_stream=on_stream)
    try:
        while True:
            try:
                event = next(events)
            except StopIteration as done:
                yield Finished(_reply(done.value))
                return
            yield TextDelta(event) if isinstance(event, str) else event
    finally:
        events.close()  # abandoned: the turn records what it produced, interrupted


_END = object()  # the sync stream is exhausted


Start = Callable[[Callable[["ChatStream"], None]], Generator[StreamEvent, None, None]]


class _Live:
    """The answer stream a worker is reading, for the event loop's side to abort."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._stream: ChatStream | None = None
        self._stopping = False

    def started(self, stream: ChatStream) -> None:
        with self._lock:
            self._stream = stream
            stopping = self._stopping
        if stopping:  # stopped while the request was being sent: cut it short at once
            stream.abort()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            stream = self._stream
        if stream is not None and not stream.done:
            stream.abort()


async def astream(start: Start) -> AsyncGenerator[StreamEvent, None]:
    """:func:`stream`'s events for asyncio: the same events, the same recording.

    ``start(on_stream)`` makes the sync stream (:func:`stream` with that ``on_stream``).
    It runs in a worker thread of its own (started at the first event, gone when the
    stream ends), one event at a time: it reads the next event only when asked for it,
    so it never runs ahead of the consumer. When the consumer stops (``aclose()``,
    ``break`` and drop, or its task cancelled), a read in flight is aborted (direct
    path; over litellm it is waited for, bounded by the timeout) and the sync stream
    closed, which records the prompt and what had arrived, marked interrupted; this
    waits for that, so the transcript is written when the cancellation or ``aclose()``
    completes.
    """
    import asyncio
    import queue
    import threading
    from concurrent.futures import Future

    live = _Live()
    events = start(live.started)
    asks: queue.SimpleQueue[Future[Any] | None] = queue.SimpleQueue()
    closed: Future[None] = Future()

    def pump() -> None:
        try:
            while True:
                step = asks.get()
                if step is None or not step.set_running_or_notify_cancel():
                    return
                try:
                    event = next(events)
                except StopIteration:
                    step.set_result(_END)
                    return
                except BaseException as exc:
                    step.set_exception(exc)
                    return
                step.set_result(event)
        finally:
            try:
                events.close()  # abandoned part-way: records what arrived, interrupted
            except BaseException as exc:
                closed.set_exception(exc)
            else:
                closed.set_result(None)

    worker = threading.Thread(target=pump, name="sessionctl-astream", daemon=True)
    worker.start()
    try:
        while True:
            step: Future[Any] = Future()
            asks.put(step)
            event = await asyncio.wrap_future(step)
            if event is _END:
                return
            yield event
    finally:
        asks.put(None)
        live.stop()
        await _settled(closed)
        worker.join()  # its last act was settling ``closed``


async def _settled(done: Future[None]) -> None:
    """Wait for ``done`` even through further cancellations (re-raised after it), then
    raise what it failed with, if anything."""
    import asyncio

    waiting = asyncio.wrap_future(done)
    cancelled = False
    while not waiting.done():
        try:
            await asyncio.shield(waiting)
        except asyncio.CancelledError:
            if not waiting.done():
                cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    waiting.result()


async def achat(start: Start) -> Reply:
    """The :class:`Reply` of :func:`astream`'s events (cancelled: recorded as it does)."""
    stream = astream(start)
    try:
        async for event in stream:
            if isinstance(event, Finished):
                return event.reply
    finally:
        await stream.aclose()
    raise RuntimeError("the stream ended without a reply")  # pragma: no cover
