"""The chat turn: choose what to send, call the model, record the exchange.

A turn appends nothing unless it produced an answer: the prompt and the
answer are written together, after the model replied. An answer cut short
by Ctrl-C is kept as the user saw it, marked ``interrupted``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, NamedTuple

from sessionctl.errors import (
    Interrupted,
    InvalidOutput,
    PromptTooLarge,
    ProviderError,
    ToolRoundsExceeded,
    UsageError,
)
from sessionctl.models import Message
from sessionctl.service.window import HISTORY_WINDOW, context_window_for, remember_window

if TYPE_CHECKING:
    from sessionctl.context import AssembledContext
    from sessionctl.llm import ChatRequest, ChatStream
    from sessionctl.service.session import Session
    from sessionctl.service.store import Store
    from sessionctl.service.tools import Toolbox, ToolCall

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
    via: str | None = None  # auto, litellm or direct (None: the setting's)
    context_window: int | None = None  # overrides the model's (and the setting's)
    force: bool = False  # send a prompt that alone exceeds the window
    user: str | None = None  # the session belongs to this user (another's is refused)


class PreparedTurn(NamedTuple):
    """Exactly what a turn will send, before it is sent."""

    session: Session
    prompt: str
    model: str
    system: str | None
    context: AssembledContext
    request: ChatRequest
    window_source: str = "default"  # where context.context_window came from
    store: Store | None = None  # to re-assemble it (trim and retry on an overflow)
    opts: ChatOptions | None = None


# Template tokens around one message's content (Gemma: "<start_of_turn>user\n" …
# "<end_of_turn>\n" is 5; ChatML-style templates are 4-5) and around a request
# (BOS + the generation prompt), kept slightly above what the templates measured.
EXACT_PER_MESSAGE = 6
EXACT_PER_REQUEST = 4


def _tokenizer(api_base: str | None, model: str) -> Any:
    """A /tokenize client for an explicit server (one per turn, counts cached)."""
    if not api_base:
        return None
    from sessionctl.llm.server import Tokenizer

    key = (api_base.strip(), model)
    found = _TOKENIZERS.get(key)
    if found is None:
        found = _TOKENIZERS[key] = Tokenizer(api_base, model)
    return found


_TOKENIZERS: dict[tuple[str, str], Any] = {}  # per process: the REPL reuses the counts


def _server_count(tokenizer: Any, messages: Any) -> int | None:
    from sessionctl.llm.tokens import message_text

    total = EXACT_PER_REQUEST
    for message in messages:
        n = tokenizer.count(message_text(message))
        if n is None:
            return None
        total += n + EXACT_PER_MESSAGE
    return total


class TurnResult(NamedTuple):
    """A finished (or interrupted) turn as recorded in the transcript."""

    session: str
    user: Message
    assistant: Message
    usage: dict[str, Any] | None
    interrupted: bool
    messages: tuple[Message, ...] = ()  # everything the turn recorded, in order
    tool_calls: tuple[ToolCall, ...] = ()  # the tools it ran, in order


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
    if opts.user is not None:  # another user's session: refused before anything is sent
        session.check_user(opts.user)
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
    from sessionctl.service.compact import split_summaries, summary_range

    history, summary = split_summaries(history)
    sent_system = system
    api_base = opts.api_base or settings.api_base
    window, window_source = context_window_for(store, model, api_base, opts.context_window)

    tokenizer = _tokenizer(api_base, model)

    def count(messages: Any) -> int:
        if tokenizer is not None:
            exact = _server_count(tokenizer, messages)
            if exact is not None:
                return exact
        return llm.count_tokens(model, messages)

    def build(relevant: list[Message]) -> AssembledContext:
        return assemble(
            prompt,
            history,
            system=sent_system,
            relevant=relevant,
            context_window=window,
            max_tokens=opts.max_tokens,
            context_recent=recent_limit,
            context_relevant=relevant_limit,
            no_context=opts.no_context,
            count=count,
            model=model,
            force=opts.force,
        )

    context = build([])
    total = session.info().messages if session.exists else 0
    limit = HISTORY_WINDOW
    while (
        summary is None
        and limit < total
        and len(history) >= limit
        and len(context.included_recent) == len(history)
    ):
        # All of the last HISTORY_WINDOW messages fit: the window may hold more
        # of the history, and only what it cannot hold calls for a search.
        limit = min(total, limit * 4)
        history, summary = split_summaries(session.recent_messages(limit))
        context = build([])
    full = history
    if summary is not None and len(context.included_recent) < len(history):
        # The history does not fit: the latest summary stands in for what it covers.
        span = summary_range(summary)
        assert span is not None
        note = f"Summary of the earlier conversation (messages {span[0]}-{span[1]}):\n"
        sent_system = f"{system}\n\n{note}{summary.content}" if system else note + summary.content
        history = [m for m in full if m.seq > span[1]]
        try:
            context = build([])
        except PromptTooLarge:  # the summary itself does not fit: go without it
            sent_system, history = system, full
            context = build([])
    if summary is not None:
        total = len(history)
    if not opts.no_context and relevant_limit and len(context.included_recent) < total:
        # The window does not hold the whole history: bring back older messages
        # close in meaning to the prompt (the index catches up first if needed).
        recent_seqs = set(context.included_recent)
        found = [
            m
            for m in session.relevant_messages(prompt, top_k=relevant_limit + len(recent_seqs))
            if m.seq not in recent_seqs and summary_range(m) is None
        ][:relevant_limit]
        if found:
            context = build(found)
    via = opts.via or settings.via
    request = llm.ChatRequest(
        model=model,
        messages=context.messages,
        api_base=api_base,
        temperature=opts.temperature,
        max_tokens=opts.max_tokens,
        timeout=opts.timeout or settings.timeout,
        stream=opts.stream,
        via_litellm=opts.via_litellm or via == "litellm",
        via_direct=via == "direct",
    )
    return PreparedTurn(
        session, prompt, model, system, context, request, window_source, store, opts
    )


def trimmed_turn(turn: PreparedTurn, exc: ProviderError) -> PreparedTurn | None:
    """``turn`` re-assembled to fit the window an overflow error reported, or None.

    The new window is the one the server reported (else ours); when the server also
    said how many tokens it counted and that is more than we measured, the window is
    scaled down by that ratio, so that our count of the trimmed turn fits its count.
    """
    window = getattr(exc, "window", None)
    requested = getattr(exc, "requested", None)
    if turn.store is None or turn.opts is None or (window is None and requested is None):
        return None
    ours = turn.context.token_estimate
    target = window or turn.context.context_window
    if isinstance(requested, int) and requested > ours > 0:
        target = int(target * ours / requested)
    elif window is None or window >= turn.context.context_window:
        target = int(turn.context.context_window * 0.8)  # we were off; by an unknown amount
    target = max(1, target - 16)  # a little slack for the template's tokens
    api_base = turn.request.api_base
    if isinstance(window, int) and window > 0 and api_base:
        remember_window(turn.store, turn.model, api_base, window)  # the next turns fit too
    opts = turn.opts._replace(context_window=target)
    try:
        retry = prepare_turn(turn.store, turn.session, turn.prompt, opts)
    except PromptTooLarge:
        return None  # the prompt alone does not fit: the server's refusal stands
    if len(retry.context.messages) >= len(turn.context.messages) and (
        retry.context.token_estimate >= ours
    ):
        return None  # nothing left to trim: a retry would fail the same way
    return retry._replace(window_source=f"reported by the server on overflow ({window})")


def run_turn(
    turn: PreparedTurn,
    on_delta: Callable[[str], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
    toolbox: Toolbox | None = None,
    max_tool_rounds: int | None = None,  # None: DEFAULT_MAX_TOOL_ROUNDS
    check: Callable[[str], str | None] | None = None,
) -> TurnResult:
    """Send ``turn``, stream deltas to ``on_delta``, then record prompt and answer.

    Provider errors propagate and append nothing. When the server refuses the turn as
    too long for its window, the turn is trimmed to the size it reported and sent once
    more (``on_notice`` is told); a second refusal propagates. On Ctrl-C the prompt and
    the partial answer are saved (marked interrupted) and :class:`Interrupted` is raised.
    With a ``toolbox``, tool calls are run as :func:`turn_events` says, and so is ``check``.
    """
    events = turn_events(turn, on_notice, toolbox, max_tool_rounds, check)
    while True:
        try:
            event = next(events)
        except StopIteration as done:
            result: TurnResult = done.value
            return result
        if on_delta is not None and isinstance(event, str):
            try:
                on_delta(event)
            except KeyboardInterrupt:
                events.throw(KeyboardInterrupt())  # saved as Ctrl-C inside the stream


def turn_events(
    turn: PreparedTurn,
    on_notice: Callable[[str], None] | None = None,
    toolbox: Toolbox | None = None,
    max_tool_rounds: int | None = None,  # None: DEFAULT_MAX_TOOL_ROUNDS
    check: Callable[[str], str | None] | None = None,
    on_stream: Callable[[ChatStream], None] | None = None,
) -> Generator[str | ToolCall, None, TurnResult]:
    """The turn as text deltas and, with a ``toolbox``, a :class:`ToolCall` per tool run;
    returns the recorded turn. Closing it before the end (an abandoned or cancelled
    stream) records the prompt and what was produced, marked interrupted, as Ctrl-C does.

    While the model answers with tool calls (at most ``max_tool_rounds`` times), the
    calls are run and one step is recorded in one write: the prompt (first step only),
    the assistant message with ``tool_calls`` and a ``tool`` message per call; then the
    step's ToolCall events are yielded and the results sent back. A model call that
    fails appends nothing for its step (earlier steps stay: each is whole). One more
    request for tools past the limit raises :class:`ToolRoundsExceeded`, unrun and
    unrecorded. The final answer is recorded with the prompt when no step was.

    ``check`` (structured output) judges the final answer's text: None accepts it, a
    text is what is wrong with it. A rejected answer is sent back once, unrecorded,
    followed by a user message saying what was wrong (:data:`RETRY_PROMPT`); a second
    rejection raises :class:`InvalidOutput` and appends nothing. With ``check``, an
    answer cut short (Ctrl-C, connection lost, closed) is not recorded either: only a
    valid structured answer ever is.

    ``on_stream`` is given each answer stream before it is read, so that another thread
    can :meth:`~sessionctl.llm.ChatStream.abort` a read blocked in it (asyncio
    cancellation); a stream aborted that way is recorded as a closed one is.
    """
    import dataclasses

    from sessionctl import llm

    def armed(t: PreparedTurn) -> PreparedTurn:
        if toolbox is None:
            return t
        return t._replace(request=dataclasses.replace(t.request, tools=toolbox.schemas))

    turn = armed(turn)
    if max_tool_rounds is None:
        from sessionctl.service.tools import DEFAULT_MAX_TOOL_ROUNDS

        max_tool_rounds = DEFAULT_MAX_TOOL_ROUNDS
    started = time.monotonic()
    try:
        stream = llm.chat(turn.request)
    except llm.ContextTooLong as exc:
        retry = trimmed_turn(turn, exc)
        if retry is None:
            raise
        if on_notice is not None:
            ctx = retry.context
            on_notice(
                f"the server refused {turn.context.token_estimate} tokens as too long "
                f"({exc}); retrying once with {len(ctx.messages)} messages, about "
                f"{ctx.token_estimate} tokens for a {ctx.context_window}-token window"
            )
        turn = armed(retry)
        stream = llm.chat(turn.request)
    request = turn.request
    recorded: list[Message] = []
    ran: list[ToolCall] = []
    rounds = 0
    rejected = 0  # answers ``check`` refused (at most CHECK_RETRIES are sent back)
    while True:
        first: list[float] = []
        if on_stream is not None:
            on_stream(stream)
        with stream:
            try:
                for delta in stream:
                    if not first and delta:
                        first.append(time.monotonic())
                    yield delta
            except KeyboardInterrupt:
                if check is not None:  # no one saw a partial structured answer: keep none
                    raise Interrupted(
                        f"interrupted; nothing was recorded in session {turn.session.name!r}"
                    ) from None
                _record(turn, stream.partial_text, turn.model, None, True, recorded, ran)
                raise Interrupted(
                    f"interrupted; the partial answer was saved in session {turn.session.name!r}"
                ) from None
            except GeneratorExit:
                if check is None:
                    _record(turn, stream.partial_text, turn.model, None, True, recorded, ran)
                raise
            except llm.ProviderError as exc:
                if stream.aborted:  # the consumer stopped (cancelled): as a closed stream,
                    if check is None and stream.partial_text:  # and nothing if no text came
                        _record(turn, stream.partial_text, turn.model, None, True, recorded, ran)
                    raise
                # The server died or stalled mid-answer: keep what the user saw, as Ctrl-C
                # does. A call that failed before any text still appends nothing, and so
                # does a structured answer (``check``: only a valid one is recorded).
                lost = isinstance(exc, (llm.ConnectionFailed, llm.ProviderTimeout))
                if not lost or not stream.partial_text or check is not None:
                    raise
                _record(turn, stream.partial_text, turn.model, None, True, recorded, ran)
                raise _saved(exc, turn.session.name) from None
            answer = stream.result
        model = answer.model or turn.model
        usage = measured_usage(turn.model, answer.usage, started, first[0] if first else None)
        if toolbox is None or not answer.tool_calls:
            problem = check(answer.content) if check is not None else None
            if problem is None:
                return _record(turn, answer.content, model, usage, False, recorded, ran)
            if rejected >= CHECK_RETRIES:
                kept = "earlier steps stay recorded" if recorded else "nothing was recorded"
                raise InvalidOutput(
                    f"the model's answer is still not valid after {rejected} retry: "
                    f"{_one_line(problem)}; {kept} in session {turn.session.name!r}",
                    text=answer.content,
                    problem=problem,
                )
            rejected += 1
            again = [
                {"role": "assistant", "content": answer.content},
                {"role": "user", "content": RETRY_PROMPT.format(problem=problem)},
            ]
            request = dataclasses.replace(request, messages=[*request.messages, *again])
            started = time.monotonic()
            stream = llm.chat(request)
            continue
        if rounds >= max_tool_rounds:
            names = ", ".join(str((c.get("function") or {}).get("name")) for c in answer.tool_calls)
            kept = f"the {rounds} round(s) run were recorded" if rounds else "nothing was recorded"
            raise ToolRoundsExceeded(
                f"the model asked for tools ({names}) again after max_tool_rounds={rounds} "
                f"rounds; {kept} in session {turn.session.name!r}, that last request was not "
                "run; raise max_tool_rounds or continue the chat"
            )
        rounds += 1
        try:
            runs = [toolbox.run(call) for call in answer.tool_calls]
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted while running tools; step {rounds} was not recorded "
                f"in session {turn.session.name!r}"
            ) from None
        step: list[dict[str, Any]] = [
            {
                "role": "assistant",
                "content": answer.content,
                "tool_calls": answer.tool_calls,
                "model": model,
                "usage": usage,
            }
        ]
        step += [
            {"role": "tool", "content": r.result, "tool_call_id": r.id, "name": r.name}
            for r in runs
        ]
        recorded += _write(turn, step, recorded)
        ran += runs
        yield from runs
        sent = [{k: v for k, v in m.items() if k in _WIRE} for m in step]
        request = dataclasses.replace(request, messages=[*request.messages, *sent])
        started = time.monotonic()
        stream = llm.chat(request)


CHECK_RETRIES = 1  # a rejected structured answer is sent back this many times
RETRY_PROMPT = (
    "Your answer is not valid: {problem}\nAnswer again with only the corrected JSON, nothing else."
)


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def measured_usage(
    model: str, usage: dict[str, Any] | None, started: float, first: float | None
) -> dict[str, Any]:
    """What an answer's ``usage`` records: the provider's counters (``input_tokens``,
    ``output_tokens``, ``cached_tokens`` where given, and the raw ones), ``latency_s``
    (request to last byte), ``ttft_s`` (to the first text) and ``cost_usd`` (litellm's
    price table; None when it does not know the model, never 0 for unknown)."""
    from sessionctl.llm.models import cost_usd

    out: dict[str, Any] = dict(usage or {})
    if "prompt_tokens" in out:
        out.setdefault("input_tokens", out["prompt_tokens"])
    if "completion_tokens" in out:
        out.setdefault("output_tokens", out["completion_tokens"])
    now = time.monotonic()
    out["latency_s"] = round(now - started, 3)
    out["ttft_s"] = round(first - started, 3) if first is not None else None
    out["cost_usd"] = cost_usd(model, usage)
    return out


def _saved(exc: ProviderError, name: str) -> ProviderError:
    """``exc`` (same class, same exit code) saying that the partial answer was kept."""
    message = f"{exc}; the partial answer was saved in session {name!r} (marked interrupted)"
    try:
        saved = type(exc)(message)
    except TypeError:  # a subclass with another signature
        saved = ProviderError(message)
    return saved


_WIRE = ("role", "content", "tool_calls", "tool_call_id", "name")  # what a step sends back


def _write(
    turn: PreparedTurn, messages: list[dict[str, Any]], recorded: list[Message]
) -> list[Message]:
    """Append ``messages`` in one write, after the prompt when this turn wrote nothing yet."""
    session = turn.session
    owner = turn.opts.user if turn.opts is not None else None
    if recorded:
        return session.add_messages(messages, user=owner)
    written = session.add_messages(
        [{"role": "user", "content": turn.prompt}, *messages], user=owner
    )
    header = session.header
    if header.model != turn.model or header.system != turn.system:
        # The session remembers the model and system prompt it was last used with.
        session.update(model=turn.model, system=turn.system or "")
    return written


def _record(
    turn: PreparedTurn,
    content: str,
    model: str,
    usage: dict[str, Any] | None,
    interrupted: bool,
    recorded: list[Message] | None = None,
    ran: list[ToolCall] | None = None,
) -> TurnResult:
    answer: dict[str, Any] = {"role": "assistant", "content": content, "model": model}
    if usage:
        answer["usage"] = usage
    if interrupted:
        answer["interrupted"] = True
    done = [*(recorded or ()), *_write(turn, [answer], recorded or [])]
    return TurnResult(
        turn.session.name, done[0], done[-1], usage, interrupted, tuple(done), tuple(ran or ())
    )
