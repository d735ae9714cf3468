"""capture(): an app's own openai calls recorded, against the real SDK and local server."""

from __future__ import annotations

import random
import string
from pathlib import Path

import openai
import pytest
from llm_server import FakeLLMServer, Reply, llm_server
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from sessionctl import Store, capture

__all__ = ["llm_server"]


def test_openai_calls_recorded_without_duplicating_history(
    tmp_path: Path, llm_server: FakeLLMServer
) -> None:
    store = Store(tmp_path / "home")
    client = openai.OpenAI(base_url=llm_server.base_url, api_key="k")
    try:
        handle = capture(client, store=store, session="app", user="ann", agent="bot")
        llm_server.push(Reply(text="Paris."), Reply(text="2 million."))
        history: list[ChatCompletionMessageParam] = [
            {"role": "user", "content": "Capital of France?"}
        ]
        first = client.chat.completions.create(model="m", messages=history)
        assert first.choices[0].message.content == "Paris."
        history += [
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "Population?"},
        ]
        client.chat.completions.create(model="m", messages=history)
    finally:
        client.close()
    msgs = store.session(handle.session).messages
    assert [(m["role"], m["content"]) for m in msgs] == [
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
        ("user", "Population?"),
        ("assistant", "2 million."),
    ]


def _client(server: FakeLLMServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)


def _files_text(home: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(home.rglob("*")) if p.is_file())


def test_model_usage_and_attribution_recorded(tmp_path: Path, llm_server: FakeLLMServer) -> None:
    store = Store(tmp_path / "home")
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    llm_server.push(Reply(text="Hi.", model="served-model-1", usage=usage), Reply(text="Again."))
    with _client(llm_server) as client:
        handle = capture(client, store=store, session="attr", user="ann", agent="bot")
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}])
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "b"}])
    sess = store.session(handle.session)
    answer = sess.get_messages()[1]
    assert answer.model == "served-model-1"
    assert answer.usage is not None
    assert (answer.usage["input_tokens"], answer.usage["output_tokens"]) == (7, 3)
    assert answer.usage["total_tokens"] == 10 and answer.usage["latency_s"] >= 0
    assert all(m.metadata and m.metadata["user"] == "ann" for m in sess.get_messages())
    assert sess.info().metadata == {"user": "ann", "agent": "bot"}
    # the header is written once per session, not once per call
    sess.update(unset=["agent"])
    with _client(llm_server) as client:
        again = capture(client, store=store, session="attr", user="ann")
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "c"}])
    assert again.session == "attr"
    assert sess.info().metadata == {"user": "ann"}
    assert len(sess.messages) == 6


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, openai.InternalServerError), (401, openai.AuthenticationError)],
)
def test_failed_call_records_nothing_and_raises_unchanged(
    tmp_path: Path, llm_server: FakeLLMServer, status: int, error: type[Exception]
) -> None:
    store = Store(tmp_path / "home")
    store.session("s").add_message({"role": "user", "content": "before"})
    before = _files_text(tmp_path / "home")
    llm_server.push(Reply(status=status))
    with _client(llm_server) as client:
        capture(client, store=store, session="s")
        with pytest.raises(error) as caught:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert type(caught.value) is error and caught.value.status_code == status  # type: ignore[attr-defined]
    assert _files_text(tmp_path / "home") == before


def test_planted_secret_never_reaches_the_files(tmp_path: Path, llm_server: FakeLLMServer) -> None:
    rng = random.Random(16)
    secret = "sk-proj-" + "".join(
        rng.choice(string.ascii_letters + string.digits) for _ in range(40)
    )
    home = tmp_path / "home"
    with _client(llm_server) as client:
        capture(client, store=Store(home), session="sec")
        prompt = f"my key is {secret}, keep it"
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}])
    assert llm_server.requests[-1].body["messages"][0]["content"] == prompt  # sent unchanged
    text = _files_text(home)
    assert "my key is [REDACTED:" in text and secret not in text and secret[8:30] not in text


def test_response_is_the_clients_own_and_tool_calls_recorded(
    tmp_path: Path, llm_server: FakeLLMServer
) -> None:
    store = Store(tmp_path / "home")
    calls = [{"name": "f", "arguments": "{}"}, {"name": "g", "arguments": '{"x": 1}', "id": "c9"}]
    llm_server.push(Reply(text="", tool_calls=calls))
    with _client(llm_server) as client:
        capture(client, store=store, session="tools")
        resp = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "call f and g"}]
        )
    assert type(resp) is ChatCompletion
    answer = store.session("tools").get_messages()[-1]
    assert resp.choices[0].message.tool_calls is not None
    assert answer.tool_calls == [
        tc.model_dump(exclude_none=True) for tc in resp.choices[0].message.tool_calls
    ]
    assert [c["function"]["name"] for c in answer.tool_calls] == ["f", "g"]
    assert (
        answer.tool_calls[1]["id"] == "c9"
        and answer.tool_calls[1]["function"]["arguments"] == '{"x": 1}'
    )
    assert resp.id == "chatcmpl-fake" and resp.choices[0].finish_reason == "tool_calls"
