"""Session.json: structured output validated against a pydantic model or a JSON Schema,
against a real OpenAI-compatible server on 127.0.0.1, over the direct path and litellm
(issue 16)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
from llm_server import FakeLLMServer, Reply, llm_server

from sessionctl import InvalidOutput, ProviderError, Store, UsageError
from sessionctl.service.chat import RETRY_PROMPT

__all__ = ["llm_server"]  # the fixture, re-exported for pytest

PATHS = ["direct", "litellm"]


class City(pydantic.BaseModel):
    name: str
    population: int


class Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    name: str


CITY_SCHEMA: dict[str, Any] = {
    "title": "City record",
    "type": "object",
    "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["name", "population"],
    "additionalProperties": False,
}
SCHEMAS = {"pydantic": City, "jsonschema": CITY_SCHEMA}
PARIS = '{"name": "Paris", "population": 2100000}'


def opts(server: FakeLLMServer, path: str = "direct") -> dict[str, Any]:
    return {"api_base": server.base_url, "model": "openai/test-model", "via": path, "timeout": 5}


def raw(store: Store, name: str) -> bytes:
    path = store.home / "sessions" / f"{name}.jsonl"
    return path.read_bytes() if path.exists() else b""


def paris(value: Any) -> None:
    if isinstance(value, City):
        assert value == City(name="Paris", population=2100000)
    else:
        assert value == {"name": "Paris", "population": 2100000}


@pytest.mark.parametrize("kind", SCHEMAS)
@pytest.mark.parametrize("path", PATHS)
def test_a_valid_answer_is_returned_validated_and_recorded_raw(
    home: Path, llm_server: FakeLLMServer, path: str, kind: str
) -> None:
    store = Store(home)
    s = store.session("j")
    llm_server.push(Reply(text=PARIS, chunk_size=7))
    value = s.json("The capital of France?", SCHEMAS[kind], **opts(llm_server, path))
    paris(value)
    assert type(value) is (City if kind == "pydantic" else dict)
    recorded = s.get_messages()
    assert [(m.role, m.content) for m in recorded] == [
        ("user", "The capital of France?"),
        ("assistant", PARIS),  # the raw JSON text, as the model sent it
    ]
    assert recorded[1].usage is not None and recorded[1].model
    assert len(llm_server.requests) == 1
    fmt = llm_server.requests[0].body["response_format"]
    assert fmt["type"] == "json_schema"
    sent = fmt["json_schema"]
    if kind == "pydantic":
        assert sent["name"] == "City" and sent["schema"] == City.model_json_schema()
        assert sent["strict"] is False  # pydantic allows extra fields: OpenAI refuses strict
    else:
        assert sent["name"] == "City_record" and sent["schema"] == CITY_SCHEMA
        assert sent["strict"] is True


def test_strict_is_sent_for_a_pydantic_model_that_qualifies(
    home: Path, llm_server: FakeLLMServer
) -> None:
    llm_server.push(Reply(text='{"name": "x"}'))
    assert Store(home).session("s").json("?", Strict, **opts(llm_server)) == Strict(name="x")
    assert llm_server.requests[0].body["response_format"]["json_schema"]["strict"] is True


@pytest.mark.parametrize("kind", SCHEMAS)
@pytest.mark.parametrize("path", PATHS)
def test_an_invalid_answer_is_retried_once_with_the_validation_error(
    home: Path, llm_server: FakeLLMServer, path: str, kind: str
) -> None:
    store = Store(home)
    s = store.session("r")
    bad = '{"name": "Paris", "population": "many"}'
    llm_server.push(Reply(text=bad), Reply(text=PARIS))
    paris(s.json("The capital of France?", SCHEMAS[kind], **opts(llm_server, path)))
    first, second = (r.body for r in llm_server.requests)
    assert second["response_format"] == first["response_format"]
    assert second["messages"][:-2] == first["messages"]
    answered, told = second["messages"][-2:]
    assert answered == {"role": "assistant", "content": bad}
    assert told["role"] == "user" and "population" in told["content"]
    assert told["content"].startswith(RETRY_PROMPT.split("{problem}")[0])
    # Only the prompt and the valid answer are recorded: not the refused attempt.
    assert [(m.role, m.content) for m in s.get_messages()] == [
        ("user", "The capital of France?"),
        ("assistant", PARIS),
    ]


@pytest.mark.parametrize("kind", SCHEMAS)
@pytest.mark.parametrize("path", PATHS)
def test_invalid_twice_raises_and_appends_nothing(
    home: Path, llm_server: FakeLLMServer, path: str, kind: str
) -> None:
    store = Store(home)
    s = store.session("t")
    s.store("earlier", "answer")
    before = raw(store, "t")
    llm_server.push(Reply(text="not json at all"), Reply(text='{"name": "Paris"}'))
    with pytest.raises(InvalidOutput) as caught:
        s.json("The capital?", SCHEMAS[kind], **opts(llm_server, path))
    err = caught.value
    assert isinstance(err, ProviderError) and err.exit_code == 4
    assert err.text == '{"name": "Paris"}' and "population" in err.problem
    assert "\n" not in str(err) and "nothing was recorded" in str(err)
    assert "not valid JSON" in llm_server.requests[1].body["messages"][-1]["content"] or (
        kind == "pydantic"  # pydantic says "Invalid JSON" its own way
    )
    assert len(llm_server.requests) == 2
    assert raw(store, "t") == before


FAILURES = {
    "401": Reply(status=401),
    "429": Reply(status=429, headers={"Retry-After": "0"}),
    "500": Reply(status=500, headers={"Retry-After": "0"}),
    "timeout": Reply(first_byte_delay=3),
}


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("path", PATHS)
def test_a_failed_call_appends_nothing(
    home: Path, llm_server: FakeLLMServer, path: str, failure: str
) -> None:
    store = Store(home)
    s = store.session("e")
    s.store("earlier", "answer")
    before = raw(store, "e")
    llm_server.default = FAILURES[failure]
    options = {**opts(llm_server, path), "timeout": 1}
    with pytest.raises(ProviderError) as caught:
        s.json("The capital?", City, **options)
    assert not isinstance(caught.value, InvalidOutput)
    assert raw(store, "e") == before
    if failure != "500":
        return
    # A new session is not even created by a failed call.
    with pytest.raises(ProviderError):
        store.session("new").json("The capital?", CITY_SCHEMA, **options)
    assert not store.session("new").exists


def test_a_server_error_on_the_retry_appends_nothing(home: Path, llm_server: FakeLLMServer) -> None:
    store = Store(home)
    s = store.session("e2")
    s.store("earlier", "answer")
    before = raw(store, "e2")
    llm_server.push(Reply(text="{}"))
    llm_server.default = Reply(status=500, headers={"Retry-After": "0"})
    with pytest.raises(ProviderError) as caught:
        s.json("The capital?", City, **opts(llm_server))
    assert not isinstance(caught.value, InvalidOutput)
    assert raw(store, "e2") == before


def test_a_fenced_answer_is_accepted_and_kept_as_sent(
    home: Path, llm_server: FakeLLMServer
) -> None:
    fenced = f"```json\n{PARIS}\n```"
    llm_server.push(Reply(text=fenced))
    s = Store(home).session("f")
    paris(s.json("?", CITY_SCHEMA, **opts(llm_server)))
    assert s.get_messages()[-1].content == fenced


def test_a_json_answer_is_context_for_the_next_turn(home: Path, llm_server: FakeLLMServer) -> None:
    s = Store(home).session("c")
    llm_server.push(Reply(text=PARIS), Reply(text="It is Paris."))
    s.json("The capital?", City, system="Answer in JSON.", **opts(llm_server))
    s.chat("Say it in words.", **opts(llm_server))
    sent = llm_server.requests[-1].body
    assert "response_format" not in sent  # chat asks for no structured output
    assert [(m["role"], m["content"]) for m in sent["messages"]] == [
        ("system", "Answer in JSON."),
        ("user", "The capital?"),
        ("assistant", PARIS),
        ("user", "Say it in words."),
    ]


@pytest.mark.parametrize(
    ("schema", "match"),
    [
        (int, "pydantic model class or a JSON Schema dict"),
        ("{}", "pydantic model class or a JSON Schema dict"),
        ({"type": "no-such-type"}, "invalid JSON Schema"),
        ({"type": "object", "default": {1, 2}}, "not JSON"),
    ],
)
def test_a_bad_schema_is_a_usage_error_before_any_call(
    home: Path, llm_server: FakeLLMServer, schema: Any, match: str
) -> None:
    s = Store(home).session("b")
    with pytest.raises(UsageError, match=match):
        s.json("?", schema, **opts(llm_server))
    with pytest.raises(UsageError, match="unknown chat option"):
        s.json("?", City, tools=[], **opts(llm_server))
    assert llm_server.requests == [] and not s.exists


def test_the_schema_validated_is_the_one_sent(home: Path, llm_server: FakeLLMServer) -> None:
    # A JSON value that is not an object, by a schema that says so.
    schema = {"type": "array", "items": {"type": "string"}, "minItems": 2}
    llm_server.push(Reply(text='["a"]'), Reply(text='["a", "b"]'))
    assert Store(home).session("a").json("?", schema, **opts(llm_server)) == ["a", "b"]
    told = llm_server.requests[1].body["messages"][-1]["content"]
    assert "$: ['a'] is too short" in told


@pytest.mark.parametrize("path", PATHS)
def test_a_connection_lost_mid_answer_records_no_partial_json(
    home: Path, llm_server: FakeLLMServer, path: str
) -> None:
    # chat keeps a partial answer the user saw; no one saw a partial structured answer,
    # and the transcript never holds one json() did not validate.
    store = Store(home)
    s = store.session("d")
    s.store("earlier", "answer")
    before = raw(store, "d")
    llm_server.push(Reply(text=PARIS, chunk_size=5, drop_after=2))
    with pytest.raises(ProviderError) as caught:
        s.json("The capital?", City, **opts(llm_server, path))
    assert "saved" not in str(caught.value)
    assert raw(store, "d") == before
