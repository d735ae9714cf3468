"""Session.chat and Session.stream: conversation from Python, against a real
OpenAI-compatible server on 127.0.0.1 (the same turn as `sessionctl chat`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from llm_server import FakeLLMServer, Reply, llm_server

from sessionctl import Finished, ProviderError, Store, TextDelta, UsageError

__all__ = ["llm_server"]  # the fixture, re-exported for pytest

ANSWER = "Hello from the fake model."


def opts(server: FakeLLMServer) -> dict[str, Any]:
    return {"api_base": server.base_url, "model": "test-model"}


def raw(store: Store, name: str) -> bytes:
    return (store.home / "sessions" / f"{name}.jsonl").read_bytes()


def test_chat_records_the_turn_and_sends_the_history(home: Path, llm_server: FakeLLMServer) -> None:
    store = Store(home)
    work = store.session("work")
    llm_server.push(Reply(text="Paris."), Reply(text="About 2.1 million."))
    first = work.chat("Capital of France?", system="be terse", **opts(llm_server))
    assert first.text == "Paris." and first.session == "work" and not first.interrupted
    assert first.model == "test-model-0613"  # the model the server says answered
    assert first.usage is not None and first.usage["output_tokens"] > 0
    assert [m.role for m in first.messages] == ["user", "assistant"]
    assert [m["content"] for m in work.messages] == ["Capital of France?", "Paris."]
    second = work.chat("Its population?", **opts(llm_server))
    assert second.text == "About 2.1 million."
    sent = llm_server.requests[-1].body["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("system", "be terse"),  # remembered by the session, as the CLI's chat does
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
        ("user", "Its population?"),
    ]
    assert work.header.system == "be terse" and work.header.model == "test-model"


def test_chat_passes_temperature_and_max_tokens(home: Path, llm_server: FakeLLMServer) -> None:
    Store(home).session("t").chat("hi", temperature=0.25, max_tokens=7, **opts(llm_server))
    body = llm_server.requests[-1].body
    assert body["temperature"] == 0.25 and body["max_tokens"] == 7


def test_stream_yields_deltas_then_the_recorded_reply(
    home: Path, llm_server: FakeLLMServer
) -> None:
    store = Store(home)
    events = list(store.session("s").stream("hello", **opts(llm_server)))
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1 and "".join(deltas) == ANSWER
    assert isinstance(events[-1], Finished) and events[-1].reply.text == ANSWER
    assert sum(isinstance(e, Finished) for e in events) == 1
    assert [m["content"] for m in store.session("s").messages] == ["hello", ANSWER]


def test_a_stream_abandoned_part_way_keeps_what_was_produced_marked_interrupted(
    home: Path, llm_server: FakeLLMServer
) -> None:
    store = Store(home)
    llm_server.push(Reply(text="one two three four five six", chunk_size=4))
    events = store.session("s").stream("count", **opts(llm_server))
    assert next(events) == TextDelta("one ")
    events.close()  # the caller stops reading (break out of a loop does the same)
    recorded = store.session("s").get_messages()
    assert [(m.role, m.content, m.interrupted) for m in recorded] == [
        ("user", "count", False),
        ("assistant", "one ", True),
    ]
    assert len(llm_server.requests) == 1


def test_nothing_is_sent_or_written_until_a_stream_is_read(
    home: Path, llm_server: FakeLLMServer
) -> None:
    store = Store(home)
    events = store.session("lazy").stream("hello", **opts(llm_server))
    del events
    assert llm_server.requests == [] and not store.session("lazy").exists


@pytest.mark.parametrize(
    "failure",
    [
        Reply(status=401),
        Reply(status=429, headers={"Retry-After": "0"}),
        Reply(status=500, headers={"Retry-After": "0"}),
        Reply(first_byte_delay=5),
    ],
    ids=["401", "429", "500", "timeout"],
)
def test_a_failed_call_appends_nothing(
    home: Path, llm_server: FakeLLMServer, failure: Reply
) -> None:
    store = Store(home)
    store.session("f").chat("earlier", **opts(llm_server))
    before = raw(store, "f")
    llm_server.default = failure
    with pytest.raises(ProviderError):
        store.session("f").chat("question", timeout=1, **opts(llm_server))
    with pytest.raises(ProviderError):
        list(store.session("f").stream("question", timeout=1, **opts(llm_server)))
    assert raw(store, "f") == before


def test_a_connection_dropped_mid_answer_keeps_the_partial_answer(
    home: Path, llm_server: FakeLLMServer
) -> None:
    store = Store(home)
    llm_server.default = Reply(text="partial answer that is cut off", chunk_size=4, drop_after=2)
    with pytest.raises(ProviderError, match="partial answer was saved"):
        store.session("d").chat("question", timeout=2, **opts(llm_server))
    recorded = store.session("d").get_messages()
    assert [(m.role, m.content, m.interrupted) for m in recorded] == [
        ("user", "question", False),
        ("assistant", "partial ", True),
    ]


def test_bad_arguments_are_usage_errors_and_write_nothing(
    home: Path, llm_server: FakeLLMServer
) -> None:
    store = Store(home)
    s = store.session("u")
    with pytest.raises(UsageError, match="unknown chat option"):
        s.chat("hi", tempreature=1, **opts(llm_server))
    with pytest.raises(UsageError, match="temperature"):
        s.chat("hi", temperature="hot", **opts(llm_server))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="max_tokens"):
        s.chat("hi", max_tokens=0, **opts(llm_server))
    with pytest.raises(UsageError, match="prompt"):
        s.chat(42, **opts(llm_server))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="empty prompt"):
        s.chat("  ", **opts(llm_server))
    assert llm_server.requests == [] and not s.exists
