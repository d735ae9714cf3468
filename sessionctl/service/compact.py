"""Non-destructive compaction: a summary of older turns, appended; nothing rewritten.

A summary is an ordinary system message whose ``metadata.summary`` names the seq range
it covers: ``{"from": FIRST, "to": LAST}`` (docs/format.md, "Summaries"). ``show``,
``export``, ``recent`` and ``relevant`` still see every original message. When a chat
turn's history does not fit, the latest summary stands in for the messages it covers
(see :func:`split_summaries` and service/chat.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sessionctl.errors import Interrupted, UsageError

if TYPE_CHECKING:
    from sessionctl.models import Message
    from sessionctl.service.chat import ChatOptions
    from sessionctl.service.session import Session
    from sessionctl.service.store import Store

SUMMARY_KEY = "summary"
DEFAULT_KEEP_LAST = 10
INSTRUCTION = (
    "Summarise the conversation below for your own later reference: the facts, "
    "decisions, names, numbers and open questions, briefly, in the conversation's "
    "language. Answer with the summary only."
)


def summary_range(message: Message) -> tuple[int, int] | None:
    """The (from, to) seqs a summary message covers, or None for any other message."""
    meta = message.metadata
    if message.role != "system" or not isinstance(meta, dict):
        return None
    span = meta.get(SUMMARY_KEY)
    if not isinstance(span, dict):
        return None
    first, last = span.get("from"), span.get("to")
    if isinstance(first, int) and isinstance(last, int) and 0 < first <= last:
        return first, last
    return None


def split_summaries(history: Iterable[Message]) -> tuple[list[Message], Message | None]:
    """The history without summaries, and the latest summary (highest ``to``)."""
    plain: list[Message] = []
    latest: Message | None = None
    for m in history:
        span = summary_range(m)
        if span is None:
            plain.append(m)
        else:
            best = summary_range(latest) if latest is not None else None
            if best is None or span[1] >= best[1]:
                latest = m
    return plain, latest


def _cut(messages: list[Message], keep_last: int) -> int:
    """How many of the oldest messages to summarise: all but ``keep_last``, moved back so
    that no tool-call exchange is split (a call and its results stay on one side)."""
    cut = max(0, len(messages) - keep_last)
    while cut > 0:
        left = messages[:cut]
        called = {
            str(c.get("id"))
            for m in left
            if m.tool_calls
            for c in m.tool_calls
            if isinstance(c, dict)
        }
        answered = {m.tool_call_id for m in left if m.role == "tool"}
        if (called - answered) or (cut < len(messages) and messages[cut].role == "tool"):
            cut -= 1
            continue
        break
    return cut


AUTO_SHARE = 0.75  # chat --auto-compact: compact once the history passes this share


def auto_compact(store: Store, turn: Any, share: float = AUTO_SHARE) -> Message | None:
    """After a turn: compact when the history not yet summarised passes ``share`` of the
    window (estimated), keeping the last :data:`DEFAULT_KEEP_LAST`; else None."""
    from sessionctl.llm.tokens import estimate_tokens
    from sessionctl.service.window import HISTORY_WINDOW

    session = turn.session
    plain, latest = split_summaries(session.recent_messages(HISTORY_WINDOW))
    done_to = summary_range(latest)[1] if latest is not None else 0  # type: ignore[index]
    open_part = [m.to_chat() for m in plain if m.seq > done_to]
    if estimate_tokens(open_part) <= share * turn.context.context_window:
        return None
    if len(open_part) <= DEFAULT_KEEP_LAST:
        return None
    return compact(store, session, turn.opts, keep_last=DEFAULT_KEEP_LAST)


def compact(
    store: Store, session: Session, opts: ChatOptions, *, keep_last: int = DEFAULT_KEEP_LAST
) -> Message:
    """Ask the model for a summary of all but the last ``keep_last`` messages (not yet
    summarised) and append it. Raises before writing anything on any failure."""
    from sessionctl import llm
    from sessionctl.llm.tokens import estimate_tokens
    from sessionctl.service.window import context_window_for

    if keep_last < 0:
        raise UsageError(f"--keep-last must be 0 or more, not {keep_last}")
    plain, latest = split_summaries(session.get_messages())
    done_to = summary_range(latest)[1] if latest is not None else 0  # type: ignore[index]
    cut = _cut(plain, keep_last)
    older = [m for m in plain[:cut] if m.seq > done_to]
    if not older:
        raise UsageError(
            f"nothing to compact in {session.name!r}: {len(plain)} messages, the last "
            f"{keep_last} are kept and older ones are summarised already"
        )
    settings = store.settings
    header = session.header
    model = opts.model or header.model or settings.model
    api_base = opts.api_base or settings.api_base
    window, _ = context_window_for(store, model, api_base, opts.context_window)
    budget = int((window or llm.DEFAULT_CONTEXT_WINDOW) * 0.7)
    lines = [f"{m.role}: {m.content}" for m in older]
    if latest is not None:
        lines.insert(0, f"(summary of earlier messages) {latest.content}")
    instruction = {"role": "system", "content": INSTRUCTION}
    while len(lines) > 1:  # the newest that fit: the model could not read more
        messages = [instruction, {"role": "user", "content": "\n".join(lines)}]
        if estimate_tokens(messages) <= budget:
            break
        lines.pop(1 if latest is not None and len(lines) > 2 else 0)
    messages = [instruction, {"role": "user", "content": "\n".join(lines)}]
    via = opts.via or settings.via
    request = llm.ChatRequest(
        model=model,
        messages=messages,
        api_base=api_base,
        max_tokens=opts.max_tokens or 512,
        temperature=opts.temperature,
        timeout=opts.timeout or settings.timeout,
        via_litellm=via == "litellm",
        via_direct=via == "direct",
    )
    try:
        with llm.chat(request) as stream:
            result = stream.read()
    except KeyboardInterrupt:
        raise Interrupted("interrupted; no summary was written") from None
    text = result.content.strip()
    if not text:
        raise llm.BadResponse(f"{model} returned an empty summary; nothing was written")
    span = {"from": older[0].seq, "to": older[-1].seq}
    (written,) = session.add_messages(
        [
            {
                "role": "system",
                "content": text,
                "model": result.model or model,
                "metadata": {SUMMARY_KEY: span},
            }
        ]
    )
    return written
