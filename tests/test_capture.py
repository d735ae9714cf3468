"""capture(): an app's own openai calls recorded, against the real SDK and local server."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import re
import signal
import string
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from llm_server import FakeLLMServer, Reply, llm_server
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam

from sessionctl import Store, StoreError, UsageError, capture

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
    handle.flush()  # the writer thread's appends are done
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
    handle.flush()
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
    again.flush()
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
        handle = capture(client, store=store, session="s")
        with pytest.raises(error) as caught:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    handle.flush()
    assert type(caught.value) is error and caught.value.status_code == status  # type: ignore[attr-defined]
    assert _files_text(tmp_path / "home") == before


def test_planted_secret_never_reaches_the_files(tmp_path: Path, llm_server: FakeLLMServer) -> None:
    rng = random.Random(16)
    secret = "sk-proj-" + "".join(
        rng.choice(string.ascii_letters + string.digits) for _ in range(40)
    )
    home = tmp_path / "home"
    with _client(llm_server) as client:
        handle = capture(client, store=Store(home), session="sec")
        prompt = f"my key is {secret}, keep it"
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}])
        assert llm_server.requests[-1].body["messages"][0]["content"] == prompt  # sent unchanged
        # the app resends its history, secret included: stored once, not again each call
        history: list[ChatCompletionMessageParam] = [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": "Hello from the fake model."},
            {"role": "user", "content": "next"},
        ]
        client.chat.completions.create(model="m", messages=history)
    handle.flush()
    text = _files_text(home)
    assert "my key is [REDACTED:" in text and secret not in text and secret[8:30] not in text
    assert [m["role"] for m in Store(home).session("sec").messages] == [
        "user",
        "assistant",
        "user",
        "assistant",
    ]


def test_response_is_the_clients_own_and_tool_calls_recorded(
    tmp_path: Path, llm_server: FakeLLMServer
) -> None:
    store = Store(tmp_path / "home")
    calls = [{"name": "f", "arguments": "{}"}, {"name": "g", "arguments": '{"x": 1}', "id": "c9"}]
    llm_server.push(Reply(text="", tool_calls=calls))
    with _client(llm_server) as client:
        handle = capture(client, store=store, session="tools")
        resp = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "call f and g"}]
        )
    handle.flush()
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


FAULT_SCRIPT = """
import json, resource, signal, sys, warnings
import openai
from sessionctl import Store, StoreError, UsageError, capture

base_url, home = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0)
handle = capture(client, store=Store(home), session="full")
msgs = [{"role": "user", "content": "hi"}]
client.chat.completions.create(model="m", messages=msgs)  # recorded: the disk has room
handle.flush()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (64, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    texts = [client.chat.completions.create(model="m", messages=msgs).choices[0].message.content
             for _ in range(2)]
    handle.close()  # the writer's failures are reported here at the latest
try:
    handle.flush()
    flushed = None
except StoreError as exc:  # ...and flush() raises them
    flushed = str(exc)
client.close()
seen_out = [(w.category.__name__, str(w.message)) for w in seen]
print(json.dumps({"texts": texts, "warnings": seen_out, "flushed": flushed,
                  "unrecorded": handle.unrecorded}))
"""


def test_recording_fault_warns_once_and_returns_the_result(
    tmp_path: Path, llm_server: FakeLLMServer
) -> None:
    """A real fault: a read-only sessions dir (non-root), or a file-size limit (root,
    who ignores permissions) in a child process, as a full disk refuses the write."""
    home = tmp_path / "home"
    llm_server.default = Reply(text="still answered")
    if os.geteuid() != 0:
        store = Store(home)
        with _client(llm_server) as client:
            handle = capture(client, store=store, session="ro")
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}])
            handle.flush()
            before = _files_text(home)
            sessions = home / "sessions"
            sessions.chmod(0o500)
            try:
                with pytest.warns(RuntimeWarning, match="not recorded") as seen:
                    texts = [
                        client.chat.completions.create(
                            model="m", messages=[{"role": "user", "content": f"b{i}"}]
                        )
                        .choices[0]
                        .message.content
                        for i in range(2)
                    ]
                    handle.close()  # the writer's failures are reported here at the latest
                with pytest.raises(StoreError, match="2 exchange"):
                    handle.flush()
            finally:
                sessions.chmod(0o700)
        assert texts == ["still answered"] * 2
        assert len(seen) == 1 and handle.unrecorded == 2
        assert _files_text(home) == before
        return
    done = subprocess.run(
        [sys.executable, "-c", FAULT_SCRIPT, llm_server.base_url, str(home)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["texts"] == ["still answered"] * 2
    assert len(out["warnings"]) == 1, out["warnings"]
    kind, message = out["warnings"][0]
    assert kind == "RuntimeWarning" and "not recorded" in message
    assert out["unrecorded"] == 2 and "2 exchange(s) not recorded" in out["flushed"]
    assert [m["content"] for m in Store(home).session("full").messages] == ["hi", "still answered"]


ASYNC_FAULT_SCRIPT = """
import asyncio, json, resource, signal, sys, warnings
import openai
from sessionctl import Store, capture

base_url, home = sys.argv[1], sys.argv[2]
msgs = [{"role": "user", "content": "hi"}]

async def main():
    client = openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0)
    handle = capture(client, store=Store(home), session="full")
    await client.chat.completions.create(model="m", messages=msgs)  # recorded
    await asyncio.to_thread(handle.flush)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, limit))
    texts = []
    for _ in range(2):
        stream = await client.chat.completions.create(model="m", messages=msgs, stream=True)
        texts.append("".join([c.choices[0].delta.content or "" async for c in stream]))
    await client.close()
    await asyncio.to_thread(handle.close)  # waits for the writer; its failure warns once
    return texts

with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    texts = asyncio.run(main())
seen_out = [(w.category.__name__, str(w.message)) for w in seen]
print(json.dumps({"texts": texts, "warnings": seen_out}))
"""


def test_async_stream_recording_fault_warns_once_and_yields_everything(
    tmp_path: Path, llm_server: FakeLLMServer
) -> None:
    """A real fault (a file-size limit, as a full disk refuses the write) in a child
    process, while an async client streams."""
    home = tmp_path / "home"
    llm_server.default = Reply(text="still streamed")
    done = subprocess.run(
        [sys.executable, "-c", ASYNC_FAULT_SCRIPT, llm_server.base_url, str(home)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["texts"] == ["still streamed"] * 2
    assert len(out["warnings"]) == 1, out["warnings"]
    kind, message = out["warnings"][0]
    assert kind == "RuntimeWarning" and "not recorded" in message
    assert [m["content"] for m in Store(home).session("full").messages] == ["hi", "still streamed"]


def test_close_puts_the_clients_own_create_back(tmp_path: Path, llm_server: FakeLLMServer) -> None:
    store = Store(tmp_path / "home")
    with _client(llm_server) as client:
        with capture(client, store=store, session="undo") as handle:
            assert "create" in vars(client.chat.completions)
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}])
        assert "create" not in vars(client.chat.completions)  # the class's method again
        handle.close()  # idempotent
        resp = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "b"}]
        )
    assert type(resp) is ChatCompletion
    assert [m["content"] for m in store.session("undo").messages] == ["a", Reply().text]


def _ask(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def test_stream_yields_the_clients_chunks_and_records_when_exhausted(
    tmp_path: Path, llm_server: FakeLLMServer
) -> None:
    store = Store(tmp_path / "home")
    llm_server.push(Reply(text="Streamed answer, in pieces.", chunk_size=4, model="sm-1"))
    with _client(llm_server) as client:
        handle = capture(client, store=store, session="st")
        stream = client.chat.completions.create(
            model="m",
            messages=_ask("stream it"),
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        assert stream.response.status_code == 200  # the client's stream's own attributes
    assert chunks and all(type(c) is ChatCompletionChunk for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Streamed answer, in pieces."
    assert llm_server.requests[-1].body["stream_options"] == {"include_usage": True}
    handle.flush()
    user, answer = store.session("st").get_messages()
    assert (user.content, answer.content, answer.model) == ("stream it", text, "sm-1")
    assert not answer.interrupted
    assert answer.usage is not None and answer.usage["output_tokens"] > 0
    assert answer.usage["ttft_s"] is not None


def test_stream_tool_calls_assembled_by_index(tmp_path: Path, llm_server: FakeLLMServer) -> None:
    store = Store(tmp_path / "home")
    calls = [
        {"name": "lookup", "arguments": '{"city": "Lisbon", "days": 3}', "id": "a1"},
        {"name": "f", "arguments": "{}"},
    ]
    llm_server.push(Reply(text="", tool_calls=calls, chunk_size=3))
    with _client(llm_server) as client:
        handle = capture(client, store=store, session="stt")
        with client.chat.completions.create(model="m", messages=_ask("t"), stream=True) as s:
            pieces = sum(len(c.choices[0].delta.tool_calls or []) for c in s if c.choices)
    assert pieces > 2  # the arguments really came in several deltas
    handle.flush()
    answer = store.session("stt").get_messages()[-1]
    assert answer.tool_calls == [
        {
            "id": "a1",
            "type": "function",
            "function": {"name": "lookup", "arguments": calls[0]["arguments"]},
        },
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
    ]
    assert not answer.interrupted


@pytest.mark.parametrize("how", ["close", "garbage", "with"])
def test_stream_closed_early_records_the_partial_answer_interrupted(
    tmp_path: Path, llm_server: FakeLLMServer, how: str
) -> None:
    store = Store(tmp_path / "home")
    llm_server.push(Reply(text="x" * 2000, chunk_size=10))
    seen: list[str] = []
    with _client(llm_server) as client:
        handle = capture(client, store=store, session="cut")
        stream = client.chat.completions.create(model="m", messages=_ask("long"), stream=True)
        if how == "with":
            with stream:
                for chunk in stream:
                    seen.append(chunk.choices[0].delta.content or "")
                    if len(seen) == 3:
                        break
        else:
            for chunk in stream:
                seen.append(chunk.choices[0].delta.content or "")
                if len(seen) == 3:
                    break
            if how == "close":
                stream.close()
            else:
                del stream, chunk
                gc.collect()
    handle.flush()
    user, answer = store.session("cut").get_messages()
    assert user.content == "long"
    assert answer.content == "".join(seen) and 0 < len(answer.content) < 2000
    assert answer.interrupted is True


def test_stream_failing_before_any_chunk_records_nothing(
    tmp_path: Path, llm_server: FakeLLMServer
) -> None:
    store = Store(tmp_path / "home")
    llm_server.push(Reply(status=500))
    with _client(llm_server) as client:
        handle = capture(client, store=store, session="sf")
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m", messages=_ask("x"), stream=True)
    handle.flush()
    assert not store.session("sf").exists


def test_default_session_is_generated_as_chat_names_it(
    tmp_path: Path, llm_server: FakeLLMServer
) -> None:
    store = Store(tmp_path / "home")
    with _client(llm_server) as client:
        handle = capture(client, store=store)
        first = handle.session
        assert re.fullmatch(r"chat-\d{8}-\d{6}-[a-z2-9]{4}", first)
        client.chat.completions.create(model="m", messages=_ask("one"))
        second = handle.reset_session()
        assert second != first and handle.session == second
        client.chat.completions.create(model="m", messages=_ask("two"))
        handle.set_session("named")
        client.chat.completions.create(model="m", messages=_ask("three"))
    handle.flush()
    got = {
        i.name: store.session(i.name).get_recent(role="user", as_text=True)
        for i in store.list_sessions().sessions
    }
    assert got == {first: ["one"], second: ["two"], "named": ["three"]}


def test_async_client_calls_recorded(tmp_path: Path, llm_server: FakeLLMServer) -> None:
    store = Store(tmp_path / "home")
    llm_server.push(Reply(text="async hi", model="am-1"), Reply(status=500))

    async def main() -> tuple[ChatCompletion, type[Exception] | None]:
        client = openai.AsyncOpenAI(base_url=llm_server.base_url, api_key="k", max_retries=0)
        try:
            handle = capture(client, store=store, session="aio", user="ann")
            resp = await client.chat.completions.create(model="m", messages=_ask("hello?"))
            failed: type[Exception] | None = None
            try:
                await client.chat.completions.create(model="m", messages=_ask("fails"))
            except openai.InternalServerError as exc:
                failed = type(exc)
            return resp, failed
        finally:
            await asyncio.to_thread(handle.flush)  # the writer thread's appends are done
            await client.close()

    resp, failed = asyncio.run(main())
    assert type(resp) is ChatCompletion and resp.choices[0].message.content == "async hi"
    assert failed is openai.InternalServerError
    user, answer = store.session("aio").get_messages()  # the failed call added nothing
    assert (user.content, answer.content, answer.model) == ("hello?", "async hi", "am-1")
    assert answer.usage is not None and answer.usage["output_tokens"] > 0
    assert store.session("aio").info().metadata == {"user": "ann"}


def _aclient(server: FakeLLMServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)


@pytest.mark.parametrize("how", ["for", "with"])
def test_async_stream_yields_the_clients_chunks_and_records_when_exhausted(
    tmp_path: Path, llm_server: FakeLLMServer, how: str
) -> None:
    store = Store(tmp_path / "home")
    calls = [{"name": "lookup", "arguments": '{"city": "Oslo"}', "id": "t1"}]
    llm_server.push(
        Reply(text="Async streamed, in pieces.", chunk_size=4, model="asm-1", tool_calls=calls)
    )

    async def main() -> tuple[list[ChatCompletionChunk], int]:
        client = _aclient(llm_server)
        try:
            handle = capture(client, store=store, session="aios", user="ann")
            stream = await client.chat.completions.create(
                model="m",
                messages=_ask("s"),
                stream=True,
                stream_options={"include_usage": True},
            )
            if how == "with":
                async with stream:
                    chunks = [c async for c in stream]
            else:
                chunks = [c async for c in stream]
            return chunks, stream.response.status_code  # the client's stream's attributes
        finally:
            await asyncio.to_thread(handle.flush)  # the writer thread's appends are done
            await client.close()

    chunks, status = asyncio.run(main())
    assert status == 200 and chunks and all(type(c) is ChatCompletionChunk for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Async streamed, in pieces."
    assert llm_server.requests[-1].body["stream_options"] == {"include_usage": True}
    user, answer = store.session("aios").get_messages()
    assert (user.content, answer.content, answer.model) == ("s", text, "asm-1")
    assert answer.tool_calls == [
        {
            "id": "t1",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"city": "Oslo"}'},
        }
    ]
    assert not answer.interrupted and answer.metadata == {"user": "ann"}
    assert answer.usage is not None and answer.usage["output_tokens"] > 0
    assert answer.usage["ttft_s"] is not None


@pytest.mark.parametrize("how", ["close", "with", "garbage", "cancel"])
def test_async_stream_abandoned_records_the_partial_answer_interrupted(
    tmp_path: Path, llm_server: FakeLLMServer, how: str
) -> None:
    store = Store(tmp_path / "home")
    # "cancel": the server stalls after a few chunks and the task reading it is cancelled
    stall = 3 if how == "cancel" else None
    llm_server.push(Reply(text="y" * 2000, chunk_size=10, stall_after=stall))
    seen: list[str] = []

    async def read(stream: Any) -> None:
        async for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
            if len(seen) == 3 and how != "cancel":
                break

    async def main() -> None:
        client = _aclient(llm_server)
        try:
            handle = capture(client, store=store, session="acut")
            stream = await client.chat.completions.create(
                model="m", messages=_ask("long"), stream=True
            )
            if how == "with":
                async with stream:
                    await read(stream)
            elif how == "cancel":
                task = asyncio.create_task(read(stream))
                while len(seen) < 3:
                    await asyncio.sleep(0.01)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await stream.close()
            else:
                await read(stream)
                if how == "close":
                    await stream.close()
                else:
                    await stream.response.aclose()  # the app's own clean-up; then dropped
                    del stream
                    gc.collect()
        finally:
            await asyncio.to_thread(handle.flush)  # the writer thread's appends are done
            await client.close()

    asyncio.run(main())
    user, answer = store.session("acut").get_messages()
    assert user.content == "long"
    assert answer.content == "".join(seen) and 0 < len(answer.content) < 2000
    assert answer.interrupted is True


def test_async_stream_failures_record_nothing_or_the_partial_answer(
    tmp_path: Path, llm_server: FakeLLMServer
) -> None:
    store = Store(tmp_path / "home")
    llm_server.push(
        Reply(status=500),
        Reply(text="abcdefghij" * 20, chunk_size=10, drop_after=3, send_done=False),
    )
    seen: list[str] = []

    async def main() -> None:
        client = _aclient(llm_server)
        try:
            handle = capture(client, store=store, session="adrop")
            with pytest.raises(openai.InternalServerError):
                await client.chat.completions.create(model="m", messages=_ask("x"), stream=True)
            assert not store.session("adrop").exists
            stream = await client.chat.completions.create(
                model="m", messages=_ask("p"), stream=True
            )
            with pytest.raises(httpx.RemoteProtocolError):  # what the SDK itself raises
                async for chunk in stream:
                    seen.append(chunk.choices[0].delta.content or "")
        finally:
            await asyncio.to_thread(handle.flush)  # the writer thread's appends are done
            await client.close()

    asyncio.run(main())
    user, answer = store.session("adrop").get_messages()
    assert user.content == "p" and answer.interrupted is True
    assert answer.content == "".join(seen) and 0 < len(answer.content) < 200


def test_stream_cut_by_the_server_keeps_the_partial_answer(
    tmp_path: Path, llm_server: FakeLLMServer
) -> None:
    store = Store(tmp_path / "home")
    llm_server.push(Reply(text="abcdefghij" * 20, chunk_size=10, drop_after=3, send_done=False))
    seen: list[str] = []
    with _client(llm_server) as client:
        handle = capture(client, store=store, session="drop")
        stream = client.chat.completions.create(model="m", messages=_ask("p"), stream=True)
        with pytest.raises(httpx.RemoteProtocolError):  # what the SDK itself raises here
            for chunk in stream:
                seen.append(chunk.choices[0].delta.content or "")
    handle.flush()
    user, answer = store.session("drop").get_messages()
    assert user.content == "p" and answer.interrupted is True
    assert answer.content == "".join(seen) and 0 < len(answer.content) < 200


def test_tool_round_trip_resent_is_not_duplicated(
    tmp_path: Path, llm_server: FakeLLMServer
) -> None:
    store = Store(tmp_path / "home")
    llm_server.push(Reply(text="", tool_calls=[{"name": "f", "arguments": "{}"}]), Reply(text="42"))
    with _client(llm_server) as client:
        handle = capture(client, store=store, session="loop")
        history: list[Any] = [{"role": "user", "content": "use f"}]
        first = client.chat.completions.create(model="m", messages=history)
        call = first.choices[0].message
        assert call.tool_calls is not None
        history += [
            call.model_dump(exclude_none=True),  # content None: only the tool call
            {"role": "tool", "tool_call_id": call.tool_calls[0].id, "content": "42"},
        ]
        client.chat.completions.create(model="m", messages=history)
    handle.flush()
    msgs = store.session("loop").get_messages()
    assert [(m.role, m.content) for m in msgs] == [
        ("user", "use f"),
        ("assistant", ""),
        ("tool", "42"),
        ("assistant", "42"),
    ]
    assert msgs[1].tool_calls and msgs[2].tool_call_id == "call_0"


@pytest.mark.parametrize("resent", ["object", "model_dump"])
def test_request_in_sdk_shapes_recorded_with_its_tool_calls(
    tmp_path: Path, llm_server: FakeLLMServer, resent: str
) -> None:
    """History as apps really send it: the SDK's own message object (or its full
    model_dump, None fields included) with parallel tool calls, content parts, the
    ``developer`` role. Sent unchanged; recorded as transcript messages."""
    store = Store(tmp_path / "home")
    calls = [{"name": "a", "arguments": '{"x": 1}'}, {"name": "b", "arguments": "{}"}]
    llm_server.push(Reply(text="", tool_calls=calls), Reply(text="Both done."))
    user_parts = [
        {"type": "text", "text": "Look at this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    history: list[Any] = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": user_parts},
    ]
    with _client(llm_server) as bare:  # an earlier, uncaptured step of the app
        step = bare.chat.completions.create(model="m", messages=history).choices[0].message
    assert step.tool_calls is not None and len(step.tool_calls) == 2
    history.append(step if resent == "object" else step.model_dump())
    history += [
        {"role": "tool", "tool_call_id": tc.id, "content": [{"type": "text", "text": f"r{i}"}]}
        for i, tc in enumerate(step.tool_calls)
    ]
    with _client(llm_server) as client:
        handle = capture(client, store=store, session="shapes")
        resp = client.chat.completions.create(model="m", messages=history)
    handle.flush()
    assert resp.choices[0].message.content == "Both done."
    sent = llm_server.requests[-1].body["messages"]
    assert sent[0]["role"] == "developer" and sent[1]["content"] == user_parts  # unchanged
    msgs = store.session("shapes").get_messages()
    assert [(m.role, m.content) for m in msgs] == [
        ("system", "Be brief."),
        ("user", "Look at this\n[image_url]"),
        ("assistant", ""),
        ("tool", "r0"),
        ("tool", "r1"),
        ("assistant", "Both done."),
    ]
    assert msgs[2].tool_calls == [
        {"id": "call_0", "type": "function", "function": {"name": "a", "arguments": '{"x": 1}'}},
        {"id": "call_1", "type": "function", "function": {"name": "b", "arguments": "{}"}},
    ]
    assert (msgs[3].tool_call_id, msgs[4].tool_call_id) == ("call_0", "call_1")


# litellm: capture(litellm) patches litellm.completion / acompletion on the module.
def litellm_quiet(test: Any) -> Any:
    """litellm's own call-time pydantic warnings (schema notes, deprecations) are not ours."""
    test = pytest.mark.filterwarnings("ignore:.*ReadOnly.*:UserWarning")(test)
    return pytest.mark.filterwarnings("ignore::DeprecationWarning")(test)


@pytest.fixture
def litellm() -> Iterator[Any]:
    from sessionctl.llm import import_litellm  # imported once, offline model map

    yield import_litellm()
    # litellm's sync calls make the main thread's current event loop for their own
    # logging (asyncio.get_event_loop()) and never close it; a later asyncio.run would
    # drop it unclosed (a ResourceWarning). Close it here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:  # none left (Python versions that make none)
            return
    if not loop.is_running():
        loop.close()
        asyncio.set_event_loop(None)


def _lkw(server: FakeLLMServer) -> dict[str, Any]:
    return {"model": "openai/m", "api_base": server.base_url, "api_key": "k", "max_retries": 0}


@litellm_quiet
def test_litellm_calls_recorded_and_close_restores(
    tmp_path: Path, llm_server: FakeLLMServer, litellm: Any
) -> None:
    store = Store(tmp_path / "home")
    original = litellm.completion, litellm.acompletion
    calls = [{"name": "f", "arguments": '{"a": 1}', "id": "lc1"}]
    llm_server.push(
        Reply(text="", tool_calls=calls, model="lm-1"),
        Reply(text="Streamed by litellm.", chunk_size=4),
        Reply(status=500),
        Reply(text="not recorded"),
    )
    with capture(litellm, store=store, session="lit", agent="bot") as handle:
        assert litellm.completion is not original[0]
        history: list[Any] = [{"role": "user", "content": "call f"}]
        resp = litellm.completion(messages=history, **_lkw(llm_server))
        assert type(resp) is litellm.ModelResponse
        call = resp.choices[0].message
        history += [
            call,  # litellm's own Message object, resent as apps do
            {"role": "tool", "tool_call_id": "lc1", "content": "2"},
        ]
        stream = litellm.completion(
            messages=history,
            stream=True,
            stream_options={"include_usage": True},
            **_lkw(llm_server),
        )
        chunks = list(stream)
        assert chunks and all(type(c).__name__ == "ModelResponseStream" for c in chunks)
        with pytest.raises(litellm.InternalServerError):
            litellm.completion(messages=[{"role": "user", "content": "fails"}], **_lkw(llm_server))
    assert (litellm.completion, litellm.acompletion) == original
    litellm.completion(messages=[{"role": "user", "content": "after"}], **_lkw(llm_server))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Streamed by litellm."
    msgs = store.session(handle.session).get_messages()
    assert [(m.role, m.content) for m in msgs] == [
        ("user", "call f"),
        ("assistant", ""),
        ("tool", "2"),
        ("assistant", "Streamed by litellm."),
    ]
    assert msgs[1].model == "lm-1" and msgs[1].tool_calls == [
        {"id": "lc1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]
    assert msgs[2].tool_call_id == "lc1"
    assert msgs[3].usage is not None and msgs[3].usage["output_tokens"] > 0
    assert not msgs[3].interrupted
    assert all(m.metadata == {"agent": "bot"} for m in msgs)
    # what went out is what the app sent
    sent = llm_server.requests[1].body
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
    assert sent["stream"] is True


@litellm_quiet
def test_litellm_async_calls_recorded(
    tmp_path: Path, llm_server: FakeLLMServer, litellm: Any
) -> None:
    store = Store(tmp_path / "home")
    llm_server.push(
        Reply(text="async litellm", model="alm-1"),
        Reply(text="streamed async litellm", chunk_size=4),
        Reply(text="z" * 2000, chunk_size=10),
    )
    seen: list[str] = []

    async def main() -> tuple[Any, list[Any]]:
        with capture(litellm, store=store, session="alit") as handle:
            resp = await litellm.acompletion(messages=_ask("one"), **_lkw(llm_server))
            stream = await litellm.acompletion(
                messages=_ask("two"), stream=True, **_lkw(llm_server)
            )
            chunks = [c async for c in stream]
            handle.set_session("alit-cut")
            cut = await litellm.acompletion(messages=_ask("three"), stream=True, **_lkw(llm_server))
            async with cut:
                async for chunk in cut:
                    seen.append(chunk.choices[0].delta.content or "")
                    if len(seen) == 4:
                        break
        return resp, chunks

    resp, chunks = asyncio.run(main())
    assert type(resp) is litellm.ModelResponse
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed async litellm"
    msgs = store.session("alit").get_messages()
    assert [(m.role, m.content) for m in msgs] == [
        ("user", "one"),
        ("assistant", "async litellm"),
        ("user", "two"),
        ("assistant", text),
    ]
    assert msgs[1].model == "alm-1" and not msgs[3].interrupted
    user, answer = store.session("alit-cut").get_messages()
    assert user.content == "three" and answer.interrupted is True
    assert answer.content == "".join(seen) and 0 < len(answer.content) < 2000


@litellm_quiet
def test_sessionctls_own_litellm_calls_are_not_captured(
    tmp_path: Path, llm_server: FakeLLMServer, litellm: Any
) -> None:
    store = Store(tmp_path / "home")
    with capture(litellm, store=store, session="app"):
        reply = store.session("mine").chat(
            "hi", model="openai/m", api_base=llm_server.base_url, via="litellm"
        )
    assert reply.text == "Hello from the fake model."
    assert len(store.session("mine").messages) == 2
    assert not store.session("app").exists


def test_capture_refuses_what_it_cannot_patch(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"takes an openai\.OpenAI"):
        capture(object(), store=Store(tmp_path / "home"))


@litellm_quiet
@pytest.mark.parametrize("how", ["close", "garbage"])
def test_litellm_stream_closed_early_records_the_partial_answer(
    tmp_path: Path, llm_server: FakeLLMServer, litellm: Any, how: str
) -> None:
    store = Store(tmp_path / "home")
    llm_server.push(Reply(text="w" * 2000, chunk_size=10))
    seen: list[str] = []
    with capture(litellm, store=store, session="lcut"):
        stream = litellm.completion(messages=_ask("long"), stream=True, **_lkw(llm_server))
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
            if len(seen) == 4:
                break
        if how == "close":
            stream.close()
        else:
            del stream, chunk
            gc.collect()
    user, answer = store.session("lcut").get_messages()
    assert user.content == "long" and answer.interrupted is True
    assert answer.content == "".join(seen) and 0 < len(answer.content) < 2000


def test_the_sdks_stream_helper_is_recorded_sync_and_async(
    tmp_path: Path, llm_server: FakeLLMServer
) -> None:
    """``client.chat.completions.stream(...)`` (the SDK's event helper) goes through
    ``create``: recorded too, its events and final completion the SDK's own."""
    store = Store(tmp_path / "home")
    llm_server.push(Reply(text="sync helper"), Reply(text="async helper"))
    with _client(llm_server) as client:
        handle = capture(client, store=store, session="helper")
        with client.chat.completions.stream(model="m", messages=_ask("one")) as stream:
            kinds = {type(event).__name__ for event in stream}
            final = stream.get_final_completion()
    handle.flush()
    assert "ContentDeltaEvent" in kinds and final.choices[0].message.content == "sync helper"

    async def main() -> str:
        aclient = _aclient(llm_server)
        try:
            ahandle = capture(aclient, store=store, session="ahelper")
            async with aclient.chat.completions.stream(model="m", messages=_ask("two")) as st:
                async for _event in st:
                    pass
                done = await st.get_final_completion()
            return str(done.choices[0].message.content)
        finally:
            await asyncio.to_thread(ahandle.flush)
            await aclient.close()

    assert asyncio.run(main()) == "async helper"
    for name, prompt, text in (
        ("helper", "one", "sync helper"),
        ("ahelper", "two", "async helper"),
    ):
        msgs = store.session(name).get_messages()
        assert [(m.role, m.content, m.interrupted) for m in msgs] == [
            ("user", prompt, False),
            ("assistant", text, False),
        ]


def test_structured_output_parse_is_recorded_sync_and_async(
    tmp_path: Path, llm_server: FakeLLMServer
) -> None:
    """``chat.completions.parse`` posts itself (not through ``create``): captured too; the
    app gets the SDK's ``ParsedChatCompletion``, the transcript keeps the raw JSON text."""
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        people: int

    class Lookup(BaseModel):
        city: str

    store = Store(tmp_path / "home")
    tool_call = [{"name": "Lookup", "arguments": '{"city": "Oslo"}', "id": "p1"}]
    llm_server.push(
        Reply(text='{"name": "Oslo", "people": 700000}'),
        Reply(text="", tool_calls=tool_call),
        Reply(text='{"name": "Rome", "people": 2800000}'),
    )
    with _client(llm_server) as client:
        handle = capture(client, store=store, session="parsed")
        got = client.chat.completions.parse(model="m", messages=_ask("Oslo?"), response_format=City)
        assert got.choices[0].message.parsed == City(name="Oslo", people=700000)
        called = client.chat.completions.parse(
            model="m", messages=_ask("look"), tools=[openai.pydantic_function_tool(Lookup)]
        )
        calls = called.choices[0].message.tool_calls
        assert calls and calls[0].function.parsed_arguments == Lookup(city="Oslo")
    handle.flush()
    assert llm_server.requests[0].body["response_format"]["type"] == "json_schema"  # sent as made

    async def main() -> Any:
        aclient = _aclient(llm_server)
        try:
            ahandle = capture(aclient, store=store, session="aparsed")
            done = await aclient.chat.completions.parse(
                model="m", messages=_ask("Rome?"), response_format=City
            )
            return done.choices[0].message.parsed
        finally:
            await asyncio.to_thread(ahandle.flush)
            await aclient.close()

    assert asyncio.run(main()) == City(name="Rome", people=2800000)
    msgs = store.session("parsed").get_messages()
    assert [(m.role, m.content) for m in msgs] == [
        ("user", "Oslo?"),
        ("assistant", '{"name": "Oslo", "people": 700000}'),
        ("user", "look"),
        ("assistant", ""),
    ]
    assert msgs[3].tool_calls == [
        {
            "id": "p1",
            "type": "function",
            "function": {"name": "Lookup", "arguments": '{"city": "Oslo"}'},
        }
    ]
    amsgs = store.session("aparsed").get_messages()
    assert [m.content for m in amsgs] == ["Rome?", '{"name": "Rome", "people": 2800000}']


# -- kill -9: what a crash can lose (the writer thread's queue), never half an exchange ------

CRASH_SCRIPT = """
import json, os, random, sys
import openai
from sessionctl import Store, capture

base_url, home, log_path, durable, seed = sys.argv[1:6]
rng = random.Random(int(seed))
log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

def note(**record):  # after the event, fsynced: what the parent may rely on
    os.write(log, (json.dumps(record) + "\\n").encode())
    os.fsync(log)

client = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0)
handle = capture(client, store=Store(home), session="crash", durable=durable == "1")
history = []
print("ready", flush=True)
for i in range(100000):
    # now and then a large prompt, so that a kill can land inside its write()
    pad = "x" * (rng.choice((0, 0, 0, 64 * 1024)))
    history.append({"role": "user", "content": f"q{i} {pad}"})
    resp = client.chat.completions.create(model="m", messages=history)
    history.append({"role": "assistant", "content": resp.choices[0].message.content})
    note(t="returned", i=i)
    if i % 4 == 3:
        handle.flush()
        note(t="flushed", i=i)
"""
CRASH_KILLS = int(os.environ.get("SESSIONCTL_STRESS_KILLS") or 6)  # per mode


def _check_whole_exchanges(store: Store, where: str) -> int:
    """The session holds q0, answer, q1, answer, ... in call order, each prompt with its
    answer (never half an exchange); return how many exchanges."""
    sess = store.session("crash")
    if not sess.exists:
        return 0
    msgs = sess.get_messages()
    assert len(msgs) % 2 == 0, f"{where}: a prompt without its answer: {msgs[-1].content[:20]}"
    for n in range(len(msgs) // 2):
        user, answer = msgs[2 * n], msgs[2 * n + 1]
        assert user.role == "user" and user.content.split(" ")[0] == f"q{n}", where
        assert answer.role == "assistant" and answer.content == Reply().text, where
    return len(msgs) // 2


@pytest.mark.parametrize("durable", [False, True], ids=["writer-thread", "durable"])
def test_kill_9_never_leaves_half_an_exchange_and_keeps_what_was_flushed(
    tmp_path: Path, llm_server: FakeLLMServer, durable: bool
) -> None:
    """A capturing app killed with SIGKILL at random moments (mid-call, mid-write, mid-
    flush): every exchange is whole; all exchanges a finished ``flush()`` covered are
    there, and with ``durable=True`` all whose call had returned; what is there is the
    calls' prefix, in order; the next write after the crash works."""
    rng = random.Random(1616)
    lost, kills = [0], [0]
    for cycle in range(CRASH_KILLS):
        home = tmp_path / f"home-{cycle}"
        log_path = tmp_path / f"cycle-{cycle}.log"
        args = [llm_server.base_url, str(home), str(log_path), "1" if durable else "0", str(cycle)]
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASH_SCRIPT, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line == b"ready\n", proc.communicate()[1].decode()[-3000:]
            time.sleep(rng.uniform(0.05, 0.6))
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err.decode()[-3000:]
        log = (
            [json.loads(x) for x in log_path.read_text().splitlines()] if log_path.exists() else []
        )
        returned = max((r["i"] + 1 for r in log if r["t"] == "returned"), default=0)
        flushed = max((r["i"] + 1 for r in log if r["t"] == "flushed"), default=0)
        where = f"cycle {cycle}: {returned} returned, {flushed} flushed"
        store = Store(home)
        held = _check_whole_exchanges(store, where)
        assert held >= (returned if durable else flushed), f"{where}: only {held} recorded"
        assert held <= returned + 1, where  # at most the call in flight (not yet noted)
        lost[0] += returned - min(held, returned)
        kills[0] += 1
        # the next writer repairs whatever the kill left and appends after it
        store.session("crash").add_messages(
            [
                {"role": "user", "content": f"q{held} after"},
                {"role": "assistant", "content": Reply().text},
            ]
        )
        assert _check_whole_exchanges(Store(home), where) == held + 1
    # (-s shows it) returned but not recorded: the writer's queue at the kill
    print(f"\n{kills[0]} kills, durable={durable}: {lost[0]} returned calls not recorded")


# -- asyncio: the event loop never waits on the disk -------------------------------------------


@pytest.mark.parametrize("durable", [False, True], ids=["writer-thread", "durable"])
def test_async_capture_never_blocks_the_event_loop_on_the_disk(
    tmp_path: Path, llm_server: FakeLLMServer, durable: bool
) -> None:
    """The session's write lock is held by another thread, so no exchange can be written:
    the loop still runs (an uncaptured call completes meanwhile; without ``durable`` the
    captured calls return too), and once the lock is let go everything is recorded."""
    import threading

    from sessionctl.backend.files.local import LocalBackend

    store = Store(tmp_path / "home")
    backend = store.backend
    assert isinstance(backend, LocalBackend)
    store.session("held").add_message({"role": "system", "content": "be brief"})
    held, release = threading.Event(), threading.Event()
    released: list[bool] = []

    def hold() -> None:
        with backend.lock("held"):
            held.set()
            release.wait(60)  # (a bound only: if the loop were blocked, the test fails late)
            released.append(release.is_set())

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()

    async def main() -> tuple[list[str], bool]:
        client, bare = _aclient(llm_server), _aclient(llm_server)
        handle = capture(client, store=store, session="held", durable=durable)
        try:
            texts: list[str] = []
            first = asyncio.ensure_future(
                client.chat.completions.create(model="m", messages=_ask("a"))
            )
            if not durable:  # returns although its exchange cannot be written yet
                texts.append(str((await first).choices[0].message.content))
                stream = await client.chat.completions.create(
                    model="m", messages=_ask("b"), stream=True
                )
                texts.append("".join([c.choices[0].delta.content or "" async for c in stream]))
            # the loop runs meanwhile: another client's call goes out and comes back
            other = await bare.chat.completions.create(model="m", messages=_ask("c"))
            texts.append(str(other.choices[0].message.content))
            waiting = not first.done()  # durable: still waiting for its write
            nothing_yet = len(store.session("held").get_messages()) == 1
            release.set()
            if durable:
                texts.insert(0, str((await first).choices[0].message.content))
            await asyncio.to_thread(handle.flush)
            return texts, (waiting if durable else True) and nothing_yet
        finally:
            release.set()
            await client.close()
            await bare.close()

    texts, blocked_write_only = asyncio.run(main())
    holder.join()
    assert released == [True]  # let go by the test, not by the bound
    assert blocked_write_only
    assert texts == [Reply().text] * len(texts)
    asked = ["a", "b"] if not durable else ["a"]
    got = [(m.role, m.content) for m in store.session("held").get_messages()[1:]]
    assert got == [r for q in asked for r in (("user", q), ("assistant", Reply().text))]


EXIT_SCRIPT = """
import sys
import openai
from sessionctl import Store, capture

client = openai.OpenAI(base_url=sys.argv[1], api_key="k", max_retries=0)
handle = capture(client, store=Store(sys.argv[2]), session="bye")
for q in ("one", "two", "three"):
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": q}])
# no flush(), no close(): the interpreter's exit writes what is still queued
"""


def test_exit_without_flush_still_writes_every_exchange(
    tmp_path: Path, llm_server: FakeLLMServer
) -> None:
    home = tmp_path / "home"
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, llm_server.base_url, str(home)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    msgs = Store(home).session("bye").get_messages()
    assert [m.content for m in msgs if m.role == "user"] == ["one", "two", "three"]
    assert [m.role for m in msgs] == ["user", "assistant"] * 3
