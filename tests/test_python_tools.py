"""Python callables as tools: their schemas, and Session.chat/stream running the
calls a model makes, against a real OpenAI-compatible server on 127.0.0.1, over the
direct path and litellm (issue 16)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest
from llm_server import FakeLLMServer, Reply, llm_server

from sessionctl import (
    Finished,
    Message,
    ProviderError,
    Store,
    ToolCall,
    ToolRoundsExceeded,
    UsageError,
)
from sessionctl.service.tools import tool_schema

__all__ = ["llm_server"]  # the fixture, re-exported for pytest


def add(
    a: int, b: float = 1.0, tags: list[str] | None = None, mode: Literal["x", "y"] = "x"
) -> float:
    """Add two numbers."""
    return a + b


def test_schema_from_hints_and_docstring() -> None:
    s = tool_schema(add)
    assert s["function"]["name"] == "add"
    assert s["function"]["description"] == "Add two numbers."
    params = s["function"]["parameters"]
    assert params["required"] == ["a"]
    assert params["properties"] == {
        "a": {"type": "integer"},
        "b": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "mode": {"enum": ["x", "y"]},
    }


def test_unsupported_annotation_is_usage_error() -> None:
    def bad(x: set[int]) -> None:
        pass

    def untyped(x) -> None:  # type: ignore[no-untyped-def]
        pass

    with pytest.raises(UsageError, match="unsupported"):
        tool_schema(bad)
    with pytest.raises(UsageError, match="missing type annotation"):
        tool_schema(untyped)


# -- the tool loop, against the OpenAI-compatible server on 127.0.0.1 -------------------

PATHS = ["direct", "litellm"]


def opts(server: FakeLLMServer, path: str = "direct") -> dict[str, Any]:
    return {"api_base": server.base_url, "model": "openai/test-model", "via": path, "timeout": 5}


def raw(store: Store, name: str) -> bytes:
    return (store.home / "sessions" / f"{name}.jsonl").read_bytes()


class Weather:
    """A tool with a side effect the tests can see (the calls it got)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def get_weather(self, city: str, unit: Literal["C", "F"] = "C") -> dict[str, Any]:
        """The current weather in a city."""
        self.calls.append((city, unit))
        if city == "Atlantis":
            raise ValueError(f"no such city: {city}")
        return {"city": city, "temp": 21 if unit == "C" else 70, "unit": unit}


def call(name: str, arguments: str, id: str) -> dict[str, str]:
    return {"name": name, "arguments": arguments, "id": id}


def shape(messages: list[Message]) -> list[tuple[str, Any]]:
    """What matters of a recorded message for the loop: role and its tool fields."""
    return [
        (m.role, m.tool_call_id or [c["id"] for c in m.tool_calls or []] or m.content)
        for m in messages
    ]


@pytest.mark.parametrize("path", PATHS)
def test_one_tool_round_then_the_answer(home: Path, llm_server: FakeLLMServer, path: str) -> None:
    store = Store(home)
    s = store.session("w")
    w = Weather()
    llm_server.push(
        Reply(text="", tool_calls=[call("get_weather", '{"city": "Paris"}', "c1")], chunk_size=4),
        Reply(text="21 degrees in Paris."),
    )
    reply = s.chat("Weather in Paris?", tools=[w.get_weather], **opts(llm_server, path))
    assert reply.text == "21 degrees in Paris."
    assert w.calls == [("Paris", "C")]
    assert reply.tool_calls == (
        ToolCall(
            "c1", "get_weather", '{"city": "Paris"}', '{"city": "Paris", "temp": 21, "unit": "C"}'
        ),
    )
    recorded = s.get_messages()
    assert reply.messages == recorded
    assert shape(recorded) == [
        ("user", "Weather in Paris?"),
        ("assistant", ["c1"]),
        ("tool", "c1"),
        ("assistant", "21 degrees in Paris."),
    ]
    assert recorded[1].tool_calls == [
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    assert recorded[2].name == "get_weather" and recorded[2].content == reply.tool_calls[0].result
    assert recorded[1].usage is not None and recorded[1].model and recorded[3].model
    if path == "direct":  # (litellm reports the model asked for)
        assert recorded[1].model == recorded[3].model == "test-model-0613"
    first, second = (r.body for r in llm_server.requests)
    assert first["tools"] == [tool_schema(w.get_weather)]
    assert second["tools"] == first["tools"]
    assert second["messages"][:-2] == first["messages"]
    assert second["messages"][-2]["tool_calls"][0]["id"] == "c1"
    assert second["messages"][-1] == {
        "role": "tool",
        "content": reply.tool_calls[0].result,
        "tool_call_id": "c1",
        "name": "get_weather",
    }
    # The next turn (without tools) replays the recorded steps as the model expects them.
    s.chat("And tomorrow?", **opts(llm_server, path))
    replay = llm_server.requests[-1].body
    assert "tools" not in replay
    assert [m["role"] for m in replay["messages"]] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert replay["messages"][2]["tool_call_id"] == "c1"


@pytest.mark.parametrize("path", PATHS)
def test_two_parallel_calls_in_one_message_streamed(
    home: Path, llm_server: FakeLLMServer, path: str
) -> None:
    store = Store(home)
    w = Weather()
    calls = [
        call("get_weather", '{"city": "Oslo", "unit": "F"}', "a"),
        call("get_weather", '{"city": "Rome"}', "b"),
    ]
    llm_server.push(
        Reply(text="Checking both.", tool_calls=calls, chunk_size=3),
        Reply(text="Oslo 70F, Rome 21C.", chunk_size=4),
    )
    events = list(
        store.session("p").stream("Oslo and Rome?", tools=[w.get_weather], **opts(llm_server, path))
    )
    kinds = [type(e).__name__ for e in events]
    first_tool = kinds.index("ToolCall")
    assert set(kinds[:first_tool]) == {"TextDelta"}  # the first step's text, as it came
    assert kinds[first_tool : first_tool + 2] == ["ToolCall", "ToolCall"]
    assert set(kinds[first_tool + 2 : -1]) == {"TextDelta"} and kinds[-1] == "Finished"
    assert [(e.id, e.name) for e in events if isinstance(e, ToolCall)] == [
        ("a", "get_weather"),
        ("b", "get_weather"),
    ]
    assert w.calls == [("Oslo", "F"), ("Rome", "C")]
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.reply.text == "Oslo 70F, Rome 21C."
    recorded = store.session("p").get_messages()
    assert shape(recorded) == [
        ("user", "Oslo and Rome?"),
        ("assistant", ["a", "b"]),
        ("tool", "a"),
        ("tool", "b"),
        ("assistant", "Oslo 70F, Rome 21C."),
    ]
    assert recorded[1].content == "Checking both."
    assert '"temp": 70' in recorded[2].content and '"city": "Rome"' in recorded[3].content
    sent = llm_server.requests[1].body["messages"]
    assert [(m["role"], m.get("tool_call_id")) for m in sent[-3:]] == [
        ("assistant", None),
        ("tool", "a"),
        ("tool", "b"),
    ]


def test_a_raising_tool_bad_arguments_and_unknown_tools_are_error_results(
    home: Path, llm_server: FakeLLMServer
) -> None:
    store = Store(home)
    w = Weather()
    calls = [
        call("get_weather", '{"city": "Atlantis"}', "x1"),
        call("get_weather", '{"city": "Par', "x2"),  # cut-off JSON
        call("get_weather", '["Paris"]', "x3"),  # JSON, not an object
        call("get_weather", '{"town": "Paris"}', "x4"),  # wrong parameter
        call("launch_rocket", "{}", "x5"),
    ]
    llm_server.push(Reply(text="", tool_calls=calls), Reply(text="Sorry, no luck."))
    reply = store.session("e").chat("Weather?", tools=[w.get_weather], **opts(llm_server))
    assert reply.text == "Sorry, no luck."
    results = {t.id: t.result for t in reply.tool_calls}
    assert all(t.error for t in reply.tool_calls)
    assert results["x1"] == "error: ValueError: no such city: Atlantis"
    assert results["x2"].startswith("error: BadArguments: arguments are not valid JSON")
    assert results["x3"].startswith("error: BadArguments: arguments must be a JSON object")
    assert results["x4"].startswith("error: TypeError: ") and "town" in results["x4"]
    assert results["x5"].startswith("error: UnknownTool: no tool named 'launch_rocket'")
    assert w.calls == [("Atlantis", "C")]  # only the call with usable arguments ran
    sent = llm_server.requests[1].body["messages"]
    assert [m["content"] for m in sent if m["role"] == "tool"] == [
        results[f"x{i}"] for i in range(1, 6)
    ]
    assert [m.role for m in store.session("e").get_messages()] == [
        "user",
        "assistant",
        *["tool"] * 5,
        "assistant",
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
def test_max_tool_rounds_exceeded_keeps_whole_rounds_only(
    home: Path, llm_server: FakeLLMServer, stream: bool
) -> None:
    store = Store(home)
    s = store.session("loop")
    w = Weather()
    llm_server.default = Reply(text="", tool_calls=[call("get_weather", '{"city": "Paris"}', "r")])
    with pytest.raises(ToolRoundsExceeded, match="max_tool_rounds=2") as info:
        if stream:
            list(s.stream("Loop!", tools=[w.get_weather], max_tool_rounds=2, **opts(llm_server)))
        else:
            s.chat("Loop!", tools=[w.get_weather], max_tool_rounds=2, **opts(llm_server))
    assert info.value.exit_code == 1 and "\n" not in str(info.value)
    assert len(llm_server.requests) == 3 and len(w.calls) == 2  # the third request: not run
    assert shape(s.get_messages()) == [
        ("user", "Loop!"),
        ("assistant", ["r"]),
        ("tool", "r"),
        ("assistant", ["r"]),
        ("tool", "r"),
    ]
    # The transcript is a valid conversation to go on from.
    llm_server.default = Reply(text="Done.")
    assert s.chat("Stop calling tools.", **opts(llm_server)).text == "Done."


@pytest.mark.parametrize("path", PATHS)
def test_a_provider_error_on_the_second_step_leaves_the_first_step_whole(
    home: Path, llm_server: FakeLLMServer, path: str
) -> None:
    store = Store(home)
    s = store.session("f")
    s.chat("earlier", **opts(llm_server, path))
    before = raw(store, "f")
    w = Weather()
    llm_server.push(Reply(text="", tool_calls=[call("get_weather", '{"city": "Paris"}', "k")]))
    llm_server.default = Reply(status=500, headers={"Retry-After": "0"})
    with pytest.raises(ProviderError):
        s.chat("Weather?", tools=[w.get_weather], **opts(llm_server, path))
    assert w.calls == [("Paris", "C")]
    after = s.get_messages()
    assert shape(after[2:]) == [("user", "Weather?"), ("assistant", ["k"]), ("tool", "k")]
    assert raw(store, "f").startswith(before)
    # A failure on the first step appends nothing at all, streamed or not.
    step_one = raw(store, "f")
    with pytest.raises(ProviderError):
        s.chat("Again?", tools=[w.get_weather], **opts(llm_server, path))
    with pytest.raises(ProviderError):
        list(s.stream("Again?", tools=[w.get_weather], **opts(llm_server, path)))
    assert raw(store, "f") == step_one and len(w.calls) == 1


def test_a_stream_closed_at_a_tool_event_keeps_the_recorded_step_only(
    home: Path, llm_server: FakeLLMServer
) -> None:
    store = Store(home)
    w = Weather()
    llm_server.push(
        Reply(text="", tool_calls=[call("get_weather", '{"city": "Paris"}', "s1")]),
        Reply(text="never asked for"),
    )
    events = store.session("c").stream("Weather?", tools=[w.get_weather], **opts(llm_server))
    first = next(events)
    assert isinstance(first, ToolCall) and first.id == "s1"
    events.close()
    assert shape(store.session("c").get_messages()) == [
        ("user", "Weather?"),
        ("assistant", ["s1"]),
        ("tool", "s1"),
    ]
    assert len(llm_server.requests) == 1


def test_bad_tools_arguments_are_usage_errors_before_any_call(
    home: Path, llm_server: FakeLLMServer
) -> None:
    s = Store(home).session("u")
    w = Weather()
    with pytest.raises(UsageError, match="list of functions"):
        s.chat("hi", tools=w.get_weather, **opts(llm_server))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="lambda"):
        s.chat("hi", tools=[lambda: 1], **opts(llm_server))
    with pytest.raises(UsageError, match="unique"):
        s.chat("hi", tools=[w.get_weather, Weather().get_weather], **opts(llm_server))
    with pytest.raises(UsageError, match="max_tool_rounds"):
        s.chat("hi", tools=[w.get_weather], max_tool_rounds=0, **opts(llm_server))
    with pytest.raises(UsageError, match="unsupported"):
        list(s.stream("hi", tools=[set_tool], **opts(llm_server)))
    assert llm_server.requests == [] and not s.exists


def set_tool(x: set[int]) -> None:
    """Not expressible as JSON Schema here."""


def test_the_default_bound_is_eight_rounds(home: Path, llm_server: FakeLLMServer) -> None:
    w = Weather()
    llm_server.default = Reply(text="", tool_calls=[call("get_weather", '{"city": "Oslo"}', "d")])
    with pytest.raises(ToolRoundsExceeded, match="max_tool_rounds=8"):
        Store(home).session("d").chat("Loop", tools=[w.get_weather], **opts(llm_server))
    assert len(w.calls) == 8 and len(llm_server.requests) == 9


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
@pytest.mark.parametrize("path", PATHS)
def test_the_provider_layer_sends_tools_and_reads_tool_calls(
    llm_server: FakeLLMServer, path: str, stream: bool
) -> None:
    from sessionctl.llm import ChatRequest, chat

    calls = [call("f", '{"x": [1, 2]}', "id-f"), call("g", "{}", "id-g")]
    llm_server.push(Reply(text="", tool_calls=calls, chunk_size=2))
    schemas = [tool_schema(add)]
    req = ChatRequest(
        "openai/test-model",
        [{"role": "user", "content": "hi"}],
        api_base=llm_server.base_url,
        stream=stream,
        tools=schemas,
        via_litellm=path == "litellm",
        timeout=5,
    )
    result = chat(req).read()
    assert llm_server.requests[-1].body["tools"] == schemas
    assert result.finish_reason == "tool_calls" and result.content == ""
    assert result.tool_calls == [
        {"id": "id-f", "type": "function", "function": {"name": "f", "arguments": '{"x": [1, 2]}'}},
        {"id": "id-g", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
