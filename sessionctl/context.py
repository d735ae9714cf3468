"""Context assembly (DESIGN §6): exactly which messages one chat turn sends. Pure; no I/O.

Each turn sends, in order:

1. the system prompt (always, when there is one);
2. when the recent window below does not hold the whole history: the most relevant
   older messages the caller found (typically the semantic index's ``get_relevant`` on
   the new prompt), at most ``context_relevant`` of them, in the caller's relevance
   order while they fit half of the history budget, skipping any already in the window
   (and tool messages, which make no sense without their call), then sent ordered by
   ``seq``;
3. the most recent messages that fit the rest of the budget — a contiguous tail of the
   history, at most ``context_recent`` messages, never starting with an orphaned tool
   result;
4. the new prompt (always).

Budget: the context window minus a reserve for the answer (``max_tokens``, else a
quarter of the window capped at 4096). An unknown window (``None``) means
:data:`DEFAULT_CONTEXT_WINDOW`. Tokens are measured with ``estimate`` (cheap); when the
estimate of everything is above 60 % of the budget and an exact ``count`` is given, the
exact counter decides instead (the margin covers text the byte estimate undercounts,
such as CJK). Both take a list of messages and return a token count.

If the system prompt and the new prompt alone exceed the budget (of the known window,
or of :data:`DEFAULT_CONTEXT_WINDOW` when it is unknown), :class:`PromptTooLarge` is
raised (a usage error, exit 2): such a prompt would be cut or refused by the server,
and would fall out of the next turn's context anyway. With ``force=True`` it is sent
without any history (the server decides) and ``oversized`` is set on the result, so
that the caller can warn.

Messages are mappings (or objects) with ``seq``, ``role``, ``content`` and optionally
``name``, ``tool_calls``, ``tool_call_id``; only those wire fields are sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sessionctl.errors import PromptTooLarge, UsageError
from sessionctl.llm.models import DEFAULT_CONTEXT_WINDOW
from sessionctl.llm.tokens import estimate_tokens

__all__ = [
    "AssembledContext",
    "PromptTooLarge",
    "TokenCounter",
    "answer_reserve",
    "assemble",
]

TokenCounter = Callable[[Sequence[Mapping[str, Any]]], int]
WIRE_FIELDS = ("role", "content", "name", "tool_calls", "tool_call_id")
EXACT_ABOVE = 0.6  # share of the budget above which the exact counter is used
RELEVANT_SHARE = 0.5  # relevant messages may take at most this share of the history budget
ANSWER_RESERVE_CAP = 4096


@dataclass
class AssembledContext:
    """What one turn sends, and how it was chosen."""

    messages: list[dict[str, Any]]  # exactly what is sent, in order
    token_estimate: int  # tokens of ``messages`` as measured (see module doc)
    included_recent: list[int]  # seqs of the recent window
    included_relevant: list[int]  # seqs of relevant older messages, ascending
    dropped: int  # history messages not sent
    budget: int  # input tokens available (window minus answer reserve)
    context_window: int  # the window used (the default when the model's is unknown)
    exact: bool  # whether the exact counter measured it
    oversized: bool = False  # the prompt alone exceeds the budget (sent only with force)


def answer_reserve(context_window: int, max_tokens: int | None) -> int:
    """Tokens kept free for the answer."""
    if max_tokens is not None:
        return max_tokens
    return min(context_window // 4, ANSWER_RESERVE_CAP)


def _field(message: Any, key: str) -> Any:
    if isinstance(message, Mapping):
        return message.get(key)
    return getattr(message, key, None)


def _wire(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": _field(message, "role"), "content": _field(message, "content")}
    for key in WIRE_FIELDS[2:]:
        value = _field(message, key)
        if value is not None:
            out[key] = value
    return out


def _seq(message: Any) -> int:
    seq = _field(message, "seq")
    if not isinstance(seq, int):
        raise UsageError(f"a context message has no integer 'seq' (got {seq!r})")
    return seq


def assemble(
    prompt: str | Mapping[str, Any],
    history: Iterable[Any],
    *,
    system: str | None = None,
    relevant: Iterable[Any] | Callable[[], Iterable[Any]] = (),
    context_window: int | None = None,
    max_tokens: int | None = None,
    context_recent: int | None = None,
    context_relevant: int | None = None,
    no_context: bool = False,
    estimate: TokenCounter = estimate_tokens,
    count: TokenCounter | None = None,
    model: str = "the model",
    force: bool = False,
) -> AssembledContext:
    """Choose the messages for one turn; see the module docstring for the rules.

    ``history`` is the session's transcript before the new prompt (any order; sorted by
    ``seq`` here). ``relevant`` is best first; pass a callable to look them up only when
    the history does not fit (a semantic search can then be skipped).
    ``context_recent``/``context_relevant``: ``None`` means no limit, ``0`` none.
    ``model`` only names the model in errors. ``force`` sends a prompt that alone
    exceeds the budget instead of raising :class:`PromptTooLarge`.
    """
    for name, value in (("context_recent", context_recent), ("context_relevant", context_relevant)):
        if value is not None and value < 0:
            raise UsageError(f"{name} must be 0 or more, not {value}")
    window = context_window if context_window is not None else DEFAULT_CONTEXT_WINDOW
    reserve = answer_reserve(window, max_tokens)
    budget = window - reserve
    if budget <= 0 and context_window is not None:
        raise UsageError(
            f"max tokens {reserve} leaves no room for the prompt in {model}'s "
            f"{window}-token context window: lower --max-tokens"
        )

    head = [{"role": "system", "content": system}] if system else []
    tail = [_wire(prompt) if isinstance(prompt, Mapping) else {"role": "user", "content": prompt}]
    everything = sorted(history, key=_seq)
    past = [] if no_context else everything
    wire = {id(m): _wire(m) for m in past}

    def measure(counter: TokenCounter, msgs: Iterable[Mapping[str, Any]]) -> int:
        return sum(counter([m]) for m in msgs)

    estimated = {key: estimate([m]) for key, m in wire.items()}
    rough = measure(estimate, [*head, *tail]) + sum(estimated.values())
    use_exact = count is not None and rough > budget * EXACT_ABOVE
    counter: TokenCounter = count if use_exact and count is not None else estimate
    # Estimated once: the rough pass's figures are the costs unless counted exactly.
    cache: dict[int, int] = {} if counter is not estimate else estimated

    def cost(message: Any) -> int:
        key = id(message)
        if key not in cache:
            cache[key] = counter([wire[key]])
        return cache[key]

    fixed = measure(counter, [*head, *tail])
    oversized = fixed > budget
    if oversized:
        if not force:
            known = "" if context_window is not None else ", assumed: the model's is unknown"
            raise PromptTooLarge(
                f"the prompt is about {fixed} tokens but {model} takes {budget} "
                f"({window}-token context window{known}, {reserve} kept for the answer); "
                "nothing was sent: shorten it, pass --force to send it anyway, or "
                "--context-window N if the model's window is larger"
            )
        past = []  # forced: send just the prompt and let the server judge
    room = max(0, budget - fixed)
    candidates = past if context_recent is None else past[max(0, len(past) - context_recent) :]
    if context_recent == 0:
        candidates = []

    def take_recent(limit: int) -> tuple[list[Any], int]:
        chosen: list[Any] = []
        used = 0
        for message in reversed(candidates):
            c = cost(message)
            if used + c > limit:
                break
            chosen.append(message)
            used += c
        chosen.reverse()
        while chosen and _field(chosen[0], "role") == "tool":  # its call was cut off
            used -= cost(chosen.pop(0))
        return chosen, used

    recent, used = take_recent(room)
    picked: list[Any] = []
    if len(recent) < len(past) and context_relevant != 0 and not no_context:
        # A list keeps them alive while costs are cached by id().
        candidates_relevant = list(relevant() if callable(relevant) else relevant)
        in_window = {_seq(m) for m in recent}
        seen: set[int] = set()
        limit = int(room * RELEVANT_SHARE)
        spent = 0
        for message in candidates_relevant:
            if context_relevant is not None and len(picked) >= context_relevant:
                break
            seq = _seq(message)
            if seq in in_window or seq in seen:
                continue
            if _field(message, "role") == "tool" or _field(message, "tool_calls"):
                continue  # a call or result alone would confuse the model (and the API)
            seen.add(seq)
            key = id(message)
            if key not in wire:
                wire[key] = _wire(message)
            c = cost(message)
            if spent + c > limit:
                continue
            picked.append(message)
            spent += c
        if picked:
            recent, used = take_recent(room - spent)
            used += spent
    picked.sort(key=_seq)

    messages = [*head, *(wire[id(m)] for m in picked), *(wire[id(m)] for m in recent), *tail]
    history_seqs = {_seq(m) for m in everything}
    sent = {_seq(m) for m in [*recent, *picked]} & history_seqs
    return AssembledContext(
        messages=messages,
        token_estimate=fixed + used,
        included_recent=[_seq(m) for m in recent],
        included_relevant=[_seq(m) for m in picked],
        dropped=len(history_seqs) - len(sent),
        budget=budget,
        context_window=window,
        exact=use_exact,
        oversized=oversized,
    )
