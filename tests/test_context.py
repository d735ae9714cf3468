"""Context assembly (DESIGN §6) with a fake token counter: 1 token per character."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from sessionctl.context import AssembledContext, answer_reserve, assemble
from sessionctl.errors import PromptTooLarge, UsageError
from sessionctl.llm import estimate_tokens


def chars(messages: Sequence[Mapping[str, Any]]) -> int:
    """Fake counter: one token per content character, nothing else."""
    return sum(len(m.get("content") or "") for m in messages)


def hist(*contents: str, start: int = 1) -> list[dict[str, Any]]:
    """History messages alternating user/assistant, seq from ``start``."""
    return [
        {"seq": start + i, "role": "user" if i % 2 == 0 else "assistant", "content": c, "id": i}
        for i, c in enumerate(contents)
    ]


def run(
    prompt: str | Mapping[str, Any] = "p", history: Iterable[Any] = (), **kw: Any
) -> AssembledContext:
    kw.setdefault("estimate", chars)
    kw.setdefault("context_window", 100)
    kw.setdefault("max_tokens", 0)
    return assemble(prompt, list(history), **kw)


def contents(ctx: AssembledContext) -> list[Any]:
    return [m["content"] for m in ctx.messages]


def test_everything_fits_in_order_with_system_and_prompt() -> None:
    h = hist("a", "b", "c")
    ctx = run("new", h, system="sys", relevant=[h[0]])
    assert contents(ctx) == ["sys", "a", "b", "c", "new"]
    assert ctx.messages[0]["role"] == "system" and ctx.messages[-1]["role"] == "user"
    assert ctx.included_recent == [1, 2, 3]
    assert ctx.included_relevant == []  # the whole history fits: no relevant needed
    assert ctx.dropped == 0
    assert ctx.token_estimate == 3 + 1 + 1 + 1 + 3


def test_history_sorted_by_seq_even_if_given_out_of_order() -> None:
    h = hist("a", "b", "c")
    ctx = run("p", list(reversed(h)))
    assert contents(ctx) == ["a", "b", "c", "p"]


def test_only_wire_fields_are_sent() -> None:
    h = [
        {"seq": 1, "role": "user", "content": "q", "id": "x", "timestamp": "t", "metadata": {}},
        {
            "seq": 2,
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function"}],
            "usage": {"total_tokens": 3},
        },
        {"seq": 3, "role": "tool", "content": "r", "tool_call_id": "c1", "name": "f"},
    ]
    ctx = run("p", h)
    assert ctx.messages[:3] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
        {"role": "tool", "content": "r", "tool_call_id": "c1", "name": "f"},
    ]


def test_recent_window_fills_budget_from_the_end() -> None:
    h = hist("aaaa", "bbbb", "cccc", "dddd")  # 4 tokens each
    # budget 20 - prompt 2 = 18 -> 4 messages would be 16... make it tight: window 14
    ctx = run("pp", h, context_window=14)  # room 12 -> 3 messages
    assert ctx.included_recent == [2, 3, 4]
    assert ctx.dropped == 1
    assert ctx.token_estimate == 14


def test_budget_edge_exact_fit_and_one_over() -> None:
    h = hist("aaaa", "bbbb")
    assert run("pp", h, context_window=10).included_recent == [1, 2]  # 2+8 == 10
    assert run("pp", h, context_window=9).included_recent == [2]


def test_recent_window_is_contiguous_even_if_an_older_small_message_would_fit() -> None:
    h = hist("a", "b" * 50, "c")
    ctx = run("p", h, context_window=10)
    assert ctx.included_recent == [3]  # never skips the big one to include "a"


def test_answer_reserve_default_and_explicit() -> None:
    assert answer_reserve(100_000, None) == 4096
    assert answer_reserve(1000, None) == 250
    assert answer_reserve(1000, 10) == 10
    h = hist("x" * 10, "y" * 10)
    # window 40, default reserve 10 -> budget 30: prompt 1 + 20 fits
    ctx = run("p", h, context_window=40, max_tokens=None)
    assert ctx.budget == 30 and ctx.included_recent == [1, 2]
    ctx = run("p", h, context_window=40, max_tokens=25)  # budget 15
    assert ctx.included_recent == [2]


def test_relevant_older_messages_are_added_when_history_does_not_fit() -> None:
    h = hist(*(f"m{i:02d}" for i in range(1, 21)))  # 20 messages, 3 tokens each
    rel = [h[4], h[1]]  # seq 5 then seq 2 (best first)
    ctx = run("p", h, relevant=rel, context_window=31)  # room 30
    assert ctx.included_relevant == [2, 5]  # sent ordered by seq
    # relevant take 6 tokens, leaving 24 -> 8 recent messages
    assert ctx.included_recent == list(range(13, 21))
    assert contents(ctx)[:3] == ["m02", "m05", "m13"]
    assert contents(ctx)[-1] == "p"
    assert ctx.dropped == 20 - 10
    assert ctx.token_estimate == 31


def test_relevant_lookup_is_lazy() -> None:
    calls: list[int] = []

    def lookup() -> list[dict[str, Any]]:
        calls.append(1)
        return [h[0]]

    h = hist("a", "b", "c")
    assert run("p", h, relevant=lookup).included_relevant == []
    assert calls == []  # everything fit: no search needed
    ctx = run("p", h, relevant=lookup, context_recent=1)
    assert ctx.included_relevant == [1] and calls == [1]


def test_relevant_already_in_recent_window_is_not_duplicated() -> None:
    h = hist(*(f"m{i:02d}" for i in range(1, 21)))
    rel = [h[19], h[18], h[2], h[2]]  # two in the window, one duplicated
    ctx = run("p", h, relevant=rel, context_window=31)
    assert ctx.included_relevant == [3]
    sent = contents(ctx)
    assert len(sent) == len(set(sent))
    assert not set(ctx.included_relevant) & set(ctx.included_recent)


def test_relevant_limited_by_context_relevant_and_by_half_the_budget() -> None:
    h = hist(*(f"m{i:02d}" for i in range(1, 21)))
    rel = [h[0], h[1], h[2], h[3]]
    assert run("p", h, relevant=rel, context_window=31, context_relevant=2).included_relevant == [
        1,
        2,
    ]
    assert run("p", h, relevant=rel, context_window=31, context_relevant=0).included_relevant == []
    # room 30 -> at most 15 tokens of relevant: 5 messages of 3, but a 20-token one is skipped
    big = {"seq": 4, "role": "user", "content": "z" * 20}
    ctx = run("p", h, relevant=[big, h[0]], context_window=31)
    assert ctx.included_relevant == [1]


def test_relevant_skips_tool_messages_and_tool_calls() -> None:
    h = hist(*(f"m{i:02d}" for i in range(1, 21)))
    tool = {"seq": 1, "role": "tool", "content": "res", "tool_call_id": "c"}
    call = {"seq": 2, "role": "assistant", "content": "", "tool_calls": [{"id": "c"}]}
    ctx = run("p", h, relevant=[tool, call, h[2]], context_window=31)
    assert ctx.included_relevant == [3]


def test_recent_window_never_starts_with_orphaned_tool_result() -> None:
    h = [
        {"seq": 1, "role": "user", "content": "q" * 50},
        {"seq": 2, "role": "assistant", "content": "c", "tool_calls": [{"id": "c"}]},
        {"seq": 3, "role": "tool", "content": "rrrr", "tool_call_id": "c"},
        {"seq": 4, "role": "assistant", "content": "aaaa"},
    ]
    ctx = run("p", h, context_window=9)  # room 8: tool + assistant fit, call does not
    assert ctx.included_recent == [4]


def test_context_recent_limits_the_window_and_enables_relevant() -> None:
    h = hist("a", "b", "c", "d", "e")
    ctx = run("p", h, context_recent=2, relevant=[h[0]])
    assert ctx.included_recent == [4, 5]
    assert ctx.included_relevant == [1]
    assert contents(ctx) == ["a", "d", "e", "p"]
    assert run("p", h, context_recent=0).included_recent == []
    assert run("p", h, context_recent=50).included_recent == [1, 2, 3, 4, 5]


def test_no_context_sends_only_system_and_prompt() -> None:
    h = hist("a", "b")
    ctx = run("p", h, system="s", no_context=True, relevant=[h[0]])
    assert contents(ctx) == ["s", "p"]
    assert ctx.included_recent == [] and ctx.included_relevant == []
    assert ctx.dropped == 2


def test_system_prompt_is_kept_even_when_nothing_else_fits() -> None:
    h = hist("aaaa", "bbbb")
    ctx = run("pp", h, system="ssss", context_window=7)
    assert contents(ctx) == ["ssss", "pp"]
    assert ctx.dropped == 2


def test_prompt_alone_too_long_for_known_window_is_refused() -> None:
    with pytest.raises(PromptTooLarge) as info:
        run("x" * 50, hist("a"), system="s", context_window=40, model="tiny")
    err = info.value
    assert isinstance(err, UsageError) and err.exit_code == 2
    message = str(err)
    assert "\n" not in message and "tiny" in message and "--force" in message
    assert "51 tokens" in message and "40-token context window" in message


def test_prompt_too_long_for_unknown_window_is_refused_unless_forced() -> None:
    with pytest.raises(PromptTooLarge) as info:
        run("x" * 10_000, hist("a", "b"), context_window=None, max_tokens=None)
    assert "8192-token context window, assumed" in str(info.value)
    ctx = run("x" * 10_000, hist("a", "b"), context_window=None, max_tokens=None, force=True)
    assert contents(ctx) == ["x" * 10_000]
    assert ctx.context_window == 8192 and ctx.dropped == 2 and ctx.oversized


def test_force_changes_nothing_when_the_prompt_fits() -> None:
    ctx = run("p", hist("a", "b"), force=True)
    assert contents(ctx) == ["a", "b", "p"] and not ctx.oversized


def test_max_tokens_leaving_no_room_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        run("p", [], context_window=100, max_tokens=100)
    with pytest.raises(UsageError):
        run("p", [], context_recent=-1)


def test_exact_counter_used_only_near_the_budget() -> None:
    calls: list[Sequence[Mapping[str, Any]]] = []

    def exact(messages: Sequence[Mapping[str, Any]]) -> int:
        calls.append(messages)
        return chars(messages)

    # far from the budget: estimate only
    ctx = run("p", hist("a", "b"), count=exact, context_window=1000)
    assert not ctx.exact and calls == []
    # near it: the exact counter measures
    ctx = run("p", hist("a" * 40, "b" * 40), count=exact, context_window=100)
    assert ctx.exact and calls
    assert ctx.included_recent == [1, 2]


def test_exact_counter_can_fit_more_than_the_estimate() -> None:
    h = hist(*(["x" * 10] * 10))

    def generous_estimate(messages: Sequence[Mapping[str, Any]]) -> int:
        return 2 * chars(messages)

    ctx = run("p", h, estimate=generous_estimate, count=chars, context_window=61)
    assert ctx.exact and len(ctx.included_recent) == 6


def test_objects_with_attributes_and_string_prompt_mapping() -> None:
    @dataclass
    class Msg:
        seq: int
        role: str
        content: Any
        tool_call_id: str | None = None

    h = [Msg(1, "user", "hi"), Msg(2, "assistant", "yo")]
    ctx = run({"role": "user", "content": "next", "seq": 99}, h)
    assert ctx.messages == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "next"},
    ]


def test_default_estimate_is_conservative_for_prose() -> None:
    messages = [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 40}]
    # ~10 tokens per sentence with real tokenizers; the estimate must be above that
    assert estimate_tokens(messages) > 400
    # window 3000 - 750 reserved: 2 x 800 words of 4 letters (~1600 tokens each by the
    # estimate: 1 per 3 letters) cannot both fit
    ctx = assemble("hello", hist("abcd " * 800, "efgh " * 800), context_window=3000)
    assert ctx.included_recent == [2]
