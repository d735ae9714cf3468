"""The chat turn: choose what to send, call the model, record the exchange.

A turn appends nothing unless it produced an answer: the prompt and the
answer are written together, after the model replied. An answer cut short
by Ctrl-C is kept as the user saw it, marked ``interrupted``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from sessionctl.errors import Interrupted, ProviderError, UsageError
from sessionctl.models import Message

if TYPE_CHECKING:
    from sessionctl.context import AssembledContext
    from sessionctl.llm import ChatRequest
    from sessionctl.service.session import Session
    from sessionctl.service.store import Store

# How many recent messages are read to build the window (--context-recent then picks
# among them): older ones are reached through the semantic index.
HISTORY_WINDOW = 1000
_TAG_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # generated names: no l/1, o/0, i


class ChatOptions(NamedTuple):
    """Per-call choices; None means "the session's, else the settings'"."""

    model: str | None = None
    system: str | None = None
    api_base: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    stream: bool = True
    context_recent: int | None = None
    context_relevant: int | None = None
    no_context: bool = False
    timeout: float | None = None
    via_litellm: bool = False


class PreparedTurn(NamedTuple):
    """Exactly what a turn will send, before it is sent."""

    session: Session
    prompt: str
    model: str
    system: str | None
    context: AssembledContext
    request: ChatRequest


class TurnResult(NamedTuple):
    """A finished (or interrupted) turn as recorded in the transcript."""

    session: str
    user: Message
    assistant: Message
    usage: dict[str, Any] | None
    interrupted: bool


def new_session_name(store: Store) -> str:
    """Return a readable, unused name like ``chat-20261121-104233-k3fq``.

    The random tag keeps parallel starts (``xargs -P``) in the same second apart:
    the session is only created by its first write, so "unused" alone cannot.
    """
    import secrets

    stamp = time.strftime("chat-%Y%m%d-%H%M%S", time.gmtime())
    while True:
        name = f"{stamp}-{''.join(secrets.choice(_TAG_ALPHABET) for _ in range(4))}"
        if not (store.backend.exists(name) or store.backend.case_twin(name)):
            return name


def prepare_turn(store: Store, session: Session, prompt: str, opts: ChatOptions) -> PreparedTurn:
    """Resolve model/system and assemble the context for ``prompt`` (sends nothing)."""
    from sessionctl import llm
    from sessionctl.context import assemble

    if not prompt.strip():
        raise UsageError("empty prompt: type a message or pipe text on stdin")
    settings = store.settings
    header = session.header if session.exists else None
    model = opts.model or (header.model if header else None) or settings.model
    if opts.system is not None:
        system = opts.system or None
    elif header is not None and header.system is not None:
        system = header.system
    else:
        system = settings.system
    recent_limit = (
        opts.context_recent if opts.context_recent is not None else settings.context_recent
    )
    relevant_limit = (
        opts.context_relevant if opts.context_relevant is not None else settings.context_relevant
    )
    history: list[Message] = []
    if session.exists and not opts.no_context:
        # assemble() applies --context-recent itself: it must see the older history
        # too, or it cannot tell that the history does not fit (and adds no relevant).
        history = session.recent_messages(HISTORY_WINDOW)
    window = llm.context_window(model)

    def count(messages: Any) -> int:
        return llm.count_tokens(model, messages)

    def build(relevant: list[Message]) -> AssembledContext:
        return assemble(
            prompt,
            history,
            system=system,
            relevant=relevant,
            context_window=window,
            max_tokens=opts.max_tokens,
            context_recent=recent_limit,
            context_relevant=relevant_limit,
            no_context=opts.no_context,
            count=count,
            model=model,
        )

    context = build([])
    total = session.info().messages if session.exists else 0
    if not opts.no_context and relevant_limit and len(context.included_recent) < total:
        # The window does not hold the whole history: bring back older messages
        # close in meaning to the prompt (the index catches up first if needed).
        recent_seqs = set(context.included_recent)
        found = [
            m
            for m in session.relevant_messages(prompt, top_k=relevant_limit + len(recent_seqs))
            if m.seq not in recent_seqs
        ][:relevant_limit]
        if found:
            context = build(found)
    request = llm.ChatRequest(
        model=model,
        messages=context.messages,
        api_base=opts.api_base or settings.api_base,
        temperature=opts.temperature,
        max_tokens=opts.max_tokens,
        timeout=opts.timeout or settings.timeout,
        stream=opts.stream,
        via_litellm=opts.via_litellm,
    )
    return PreparedTurn(session, prompt, model, system, context, request)


def run_turn(turn: PreparedTurn, on_delta: Callable[[str], None] | None = None) -> TurnResult:
    """Send ``turn``, stream deltas to ``on_delta``, then record prompt and answer.

    Provider errors propagate and append nothing. On Ctrl-C the prompt and the
    partial answer are saved (marked interrupted) and :class:`Interrupted` is raised.
    """
    from sessionctl import llm

    stream = llm.chat(turn.request)
    with stream:
        try:
            for delta in stream:
                if on_delta is not None:
                    on_delta(delta)
        except KeyboardInterrupt:
            _record(turn, stream.partial_text, turn.model, None, interrupted=True)
            raise Interrupted(
                f"interrupted; the partial answer was saved in session {turn.session.name!r}"
            ) from None
        except (llm.ConnectionFailed, llm.ProviderTimeout) as exc:
            # The server died or stalled mid-answer: keep what the user saw, as Ctrl-C
            # does. A call that failed before any text still appends nothing.
            if not stream.partial_text:
                raise
            _record(turn, stream.partial_text, turn.model, None, interrupted=True)
            raise _saved(exc, turn.session.name) from None
        answer = stream.result
    return _record(
        turn, answer.content, answer.model or turn.model, answer.usage, interrupted=False
    )


def _saved(exc: ProviderError, name: str) -> ProviderError:
    """``exc`` (same class, same exit code) saying that the partial answer was kept."""
    message = f"{exc}; the partial answer was saved in session {name!r} (marked interrupted)"
    try:
        saved = type(exc)(message)
    except TypeError:  # a subclass with another signature
        saved = ProviderError(message)
    return saved


def _record(
    turn: PreparedTurn,
    content: str,
    model: str,
    usage: dict[str, Any] | None,
    *,
    interrupted: bool,
) -> TurnResult:
    session = turn.session
    answer: dict[str, Any] = {"role": "assistant", "content": content, "model": model}
    if usage:
        answer["usage"] = usage
    if interrupted:
        answer["interrupted"] = True
    user, assistant = session.add_messages([{"role": "user", "content": turn.prompt}, answer])
    header = session.header
    if header.model != turn.model or header.system != turn.system:
        # The session remembers the model and system prompt it was last used with.
        session.update(model=turn.model, system=turn.system or "")
    return TurnResult(session.name, user, assistant, usage, interrupted)
