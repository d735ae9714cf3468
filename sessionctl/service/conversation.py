"""Conversation from Python: ``Session.chat`` and ``Session.stream``.

The same turn as the CLI's ``chat`` (:func:`sessionctl.service.chat.prepare_turn`
and :func:`~sessionctl.service.chat.turn_deltas`): the context is assembled the
same way, a failed call appends nothing, and a stream abandoned part-way keeps
the prompt and what was produced, marked interrupted, as Ctrl-C in the REPL does.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from sessionctl.errors import UsageError
from sessionctl.models import Message

if TYPE_CHECKING:
    from sessionctl.service.chat import ChatOptions, TurnResult
    from sessionctl.service.session import Session


class Reply(NamedTuple):
    """A finished turn: the answer and what was recorded."""

    text: str
    model: str  # the model that answered (as the server named it)
    usage: dict[str, Any] | None  # tokens, latency_s, ttft_s, cost_usd
    messages: list[Message]  # the recorded prompt and answer, in order
    session: str
    interrupted: bool = False


class TextDelta(NamedTuple):
    """A piece of the answer as it streams in."""

    text: str


class Finished(NamedTuple):
    """The last event of a stream: the whole reply, recorded."""

    reply: Reply


StreamEvent = TextDelta | Finished

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


def _reply(result: TurnResult) -> Reply:
    return Reply(
        text=result.assistant.content,
        model=result.assistant.model or "",
        usage=result.usage,
        messages=[result.user, result.assistant],
        session=result.session,
        interrupted=result.interrupted,
    )


def chat(session: Session, prompt: str, opts: ChatOptions) -> Reply:
    """One turn, waited for."""
    from sessionctl.service.chat import prepare_turn, run_turn

    if not isinstance(prompt, str):
        raise UsageError(f"prompt must be text, got {type(prompt).__name__}")
    turn = prepare_turn(session._store, session, prompt, opts)
    return _reply(run_turn(turn))


def stream(session: Session, prompt: str, opts: ChatOptions) -> Generator[StreamEvent, None, None]:
    """One turn as events: :class:`TextDelta` pieces, then one :class:`Finished`.

    Nothing is sent before the first ``next()``. Closing the iterator early (``break``
    out of a for loop and drop it, or ``close()``) records the prompt and the partial
    answer, marked interrupted.
    """
    from sessionctl.service.chat import prepare_turn, turn_deltas

    if not isinstance(prompt, str):
        raise UsageError(f"prompt must be text, got {type(prompt).__name__}")
    turn = prepare_turn(session._store, session, prompt, opts)
    deltas = turn_deltas(turn)
    try:
        while True:
            try:
                piece = next(deltas)
            except StopIteration as done:
                yield Finished(_reply(done.value))
                return
            yield TextDelta(piece)
    finally:
        deltas.close()  # abandoned: the turn records what it produced, interrupted
