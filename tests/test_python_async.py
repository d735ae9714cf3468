"""Session.achat and Session.astream: chat and stream for asyncio, against a real
OpenAI-compatible server on 127.0.0.1, over the direct path and litellm (issue 16).
Every test runs its coroutine with asyncio.run (the suite turns warnings into errors:
an event loop, a thread or a generator left behind fails it)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llm_server import FakeLLMServer, Reply, llm_server

from sessionctl import Finished, Message, ProviderError, Store, TextDelta, ToolCall, UsageError

__all__ = ["llm_server"]  # the fixture, re-exported for pytest

PATHS = ["direct", "litellm"]
ANSWER = "one two three four five six"


def opts(server: FakeLLMServer, path: str = "direct") -> dict[str, Any]:
    return {"api_base": server.base_url, "model": "openai/test-model", "via": path, "timeout": 5}


def raw(store: Store, name: str) -> bytes:
    path = store.home / "sessions" / f"{name}.jsonl"
    return path.read_bytes() if path.exists() else b""


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sessionctl-astream"]


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    yield
    assert workers() == []


def kept(messages: list[Message]) -> list[tuple[str, str, bool]]:
    return [(m.role, m.content, m.interrupted) for m in messages]


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@pytest.mark.parametrize("path", PATHS)
def test_achat_gives_what_chat_gives(home: Path, llm_server: FakeLLMServer, path: str) -> None:
    store = Store(home)
    sync, conc = store.session("sync"), store.session("async")
    call = {"name": "get_weather", "arguments": '{"city": "Oslo"}', "id": "w1"}
    for _ in range(2):
        llm_server.push(Reply(text="", tool_calls=[call]), Reply(text=ANSWER))
    want = sync.chat("Weather?", system="terse", tools=[get_weather], **opts(llm_server, path))
    got = asyncio.run(
        conc.achat("Weather?", system="terse", tools=[get_weather], **opts(llm_server, path))
    )
    assert (got.text, got.model, got.interrupted, got.tool_calls) == (
        want.text,
        want.model,
        want.interrupted,
        want.tool_calls,
    )
    assert got.session == "async" and got.messages == conc.get_messages()
    strip = [(m.role, m.content, m.tool_call_id, m.tool_calls, m.model) for m in want.messages]
    assert [(m.role, m.content, m.tool_call_id, m.tool_calls, m.model) for m in got.messages] == (
        strip
    )
    assert got.usage is not None and set(got.usage) == set(want.usage or {})
    # What was sent is the same too.
    sent = [r.body for r in llm_server.requests]
    assert sent[2:] == sent[:2]


@pytest.mark.parametrize("path", PATHS)
def test_astream_yields_the_events_of_stream(
    home: Path, llm_server: FakeLLMServer, path: str
) -> None:
    store = Store(home)
    llm_server.push(Reply(text=ANSWER, chunk_size=4))

    async def main() -> list[Any]:
        return [e async for e in store.session("s").astream("count", **opts(llm_server, path))]

    events = asyncio.run(main())
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 3 and "".join(deltas) == ANSWER
    assert isinstance(events[-1], Finished) and sum(isinstance(e, Finished) for e in events) == 1
    assert events[-1].reply.text == ANSWER and not events[-1].reply.interrupted
    assert kept(store.session("s").get_messages()) == [
        ("user", "count", False),
        ("assistant", ANSWER, False),
    ]


def test_astream_tool_events_come_after_their_step_is_recorded(
    home: Path, llm_server: FakeLLMServer
) -> None:
    store = Store(home)
    call = {"name": "get_weather", "arguments": '{"city": "Oslo"}', "id": "t1"}
    llm_server.push(Reply(text="", tool_calls=[call]), Reply(text="Sunny."))
    seen: list[int] = []

    async def main() -> list[Any]:
        out = []
        async for event in store.session("t").astream("?", tools=[get_weather], **opts(llm_server)):
            if isinstance(event, ToolCall):
                seen.append(len(store.session("t").get_messages()))
            out.append(event)
        return out

    events = asyncio.run(main())
    assert [type(e).__name__ for e in events] == ["ToolCall", "TextDelta", "TextDelta", "Finished"]
    assert seen == [3]  # prompt, assistant tool_calls, tool result: already written
    assert events[0].result == "sunny in Oslo"


@pytest.mark.parametrize("path", PATHS)
def test_astream_cancelled_part_way_keeps_what_arrived_marked_interrupted(
    home: Path, llm_server: FakeLLMServer, path: str
) -> None:
    store = Store(home)
    llm_server.push(Reply(text=ANSWER, chunk_size=4, chunk_delay=0.2))
    got: list[str] = []

    async def consume() -> None:
        async for event in store.session("c").astream("count", **opts(llm_server, path)):
            if isinstance(event, TextDelta):
                got.append(event.text)

    async def main() -> None:
        task = asyncio.create_task(consume())
        while not got:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Recorded by the time the cancellation completed.
        assert len(store.session("c").get_messages()) == 2

    asyncio.run(main())
    user, answer = store.session("c").get_messages()
    assert (user.role, user.content, user.interrupted) == ("user", "count", False)
    assert answer.role == "assistant" and answer.interrupted
    seen = "".join(got)
    # What the consumer saw, and at most the one piece that was in flight.
    assert answer.content.startswith(seen) and ANSWER.startswith(answer.content)
    assert len(answer.content) - len(seen) <= 4 and answer.content != ANSWER
    assert len(llm_server.requests) == 1


def test_breaking_out_of_astream_and_aclose_record_the_partial_answer(
    home: Path, llm_server: FakeLLMServer
) -> None:
    store = Store(home)
    llm_server.push(Reply(text=ANSWER, chunk_size=4), Reply(text=ANSWER, chunk_size=4))

    async def main() -> None:
        stream = store.session("b").astream("count", **opts(llm_server))
        async for event in stream:
            assert event == TextDelta("one ")
            break
        await stream.aclose()
        # Dropped without aclose: asyncio.run closes it (asyncgen finalizer) before the end.
        async for _ in store.session("d").astream("count", **opts(llm_server)):
            break

    asyncio.run(main())
    assert kept(store.session("b").get_messages()) == [
        ("user", "count", False),
        ("assistant", "one ", True),
    ]
    (_, answer) = store.session("d").get_messages()
    assert answer.interrupted and answer.content.startswith("one ")


def test_achat_cancelled_part_way_keeps_the_partial_answer(
    home: Path, llm_server: FakeLLMServer
) -> None:
    store = Store(home)
    llm_server.push(Reply(text=ANSWER, chunk_size=4, chunk_delay=0.2))

    async def main() -> None:
        task = asyncio.create_task(store.session("a").achat("count", **opts(llm_server)))
        while not llm_server.requests:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # a piece or two arrived
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    user, answer = store.session("a").get_messages()
    assert user.content == "count" and answer.interrupted
    assert answer.content and ANSWER.startswith(answer.content) and answer.content != ANSWER


@pytest.mark.parametrize("path", PATHS)
def test_a_failed_call_raises_and_appends_nothing(
    home: Path, llm_server: FakeLLMServer, path: str
) -> None:
    store = Store(home)
    s = store.session("f")
    s.store("earlier", "answer")
    before = raw(store, "f")
    llm_server.default = Reply(status=500, headers={"Retry-After": "0"})

    async def streamed() -> None:
        async for _ in s.astream("hi", **opts(llm_server, path)):
            pass

    with pytest.raises(ProviderError):
        asyncio.run(s.achat("hi", **opts(llm_server, path)))
    with pytest.raises(ProviderError):
        asyncio.run(streamed())
    assert raw(store, "f") == before


def test_bad_arguments_are_usage_errors_and_send_nothing(
    home: Path, llm_server: FakeLLMServer
) -> None:
    s = Store(home).session("u")
    with pytest.raises(UsageError, match="unknown chat option"):
        s.astream("hi", bogus=1, **opts(llm_server))  # at the call, as stream()

    async def main() -> None:
        with pytest.raises(UsageError, match="unknown chat option"):
            await s.achat("hi", bogus=1, **opts(llm_server))
        with pytest.raises(UsageError, match="empty prompt"):
            await s.achat("  ", **opts(llm_server))

    asyncio.run(main())
    assert llm_server.requests == [] and not s.exists


def test_concurrent_astreams_share_one_loop(home: Path, llm_server: FakeLLMServer) -> None:
    store = Store(home)
    llm_server.default = Reply(text=ANSWER, chunk_size=4, chunk_delay=0.02)

    async def one(name: str) -> str:
        reply = await store.session(name).achat("count", **opts(llm_server))
        return reply.text

    async def main() -> list[str]:
        return await asyncio.gather(*(one(f"p{i}") for i in range(4)))

    assert asyncio.run(main()) == [ANSWER] * 4
    for i in range(4):
        assert kept(store.session(f"p{i}").get_messages())[-1] == ("assistant", ANSWER, False)


def test_a_cancellation_during_a_stall_aborts_the_read_at_once(
    home: Path, llm_server: FakeLLMServer
) -> None:
    # Direct path: the read in flight is cut short (a socket shutdown), so cancelling does
    # not wait for the server (up to the timeout) and keeps exactly what had arrived.
    store = Store(home)
    llm_server.push(Reply(text=ANSWER, chunk_size=4, stall_after=2))
    got: list[str] = []

    async def consume() -> None:
        async for event in store.session("st").astream("count", **opts(llm_server)):
            if isinstance(event, TextDelta):
                got.append(event.text)

    async def main() -> float:
        task = asyncio.create_task(consume())
        while len(got) < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the worker is now blocked reading the stalled stream
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    took = asyncio.run(main())
    assert took < 2.5  # the timeout is 5 s
    assert kept(store.session("st").get_messages()) == [
        ("user", "count", False),
        ("assistant", "one two ", True),
    ]


def test_a_cancellation_before_any_text_records_nothing(
    home: Path, llm_server: FakeLLMServer
) -> None:
    store = Store(home)
    llm_server.push(Reply(text=ANSWER, first_byte_delay=0.5))

    async def main() -> None:
        task = asyncio.create_task(store.session("n").achat("count", **opts(llm_server)))
        while not llm_server.requests:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert not store.session("n").exists  # nothing was produced: nothing kept (as Ctrl-C)


def test_a_sync_litellm_call_leaves_no_event_loop_for_asyncio_run_to_drop(
    home: Path, llm_server: FakeLLMServer
) -> None:
    # litellm's service logger calls asyncio.get_event_loop() from sync code, which in
    # the main thread creates a loop nobody closes; asyncio.run then drops it unclosed
    # (a ResourceWarning, an error in this suite). The llm layer closes it.
    import gc
    import warnings

    s = Store(home).session("l")
    s.chat("hi", **opts(llm_server, "litellm"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(s.achat("again", **opts(llm_server, "litellm")))
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
