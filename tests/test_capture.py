"""capture(): an app's own openai calls recorded, against the real SDK and local server."""

from __future__ import annotations

from pathlib import Path

import openai
from llm_server import FakeLLMServer, Reply, llm_server

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
        history = [{"role": "user", "content": "Capital of France?"}]
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
