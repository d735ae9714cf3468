"""compact without a real model: where the cut falls, and when the summary is sent."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Cli
from llm_server import FakeLLMServer, Reply, llm_server

from sessionctl.service.compact import _cut, summary_range
from sessionctl.service.store import Store

__all__ = ["llm_server"]


def test_the_cut_never_splits_a_tool_call_exchange(home: Path) -> None:
    session = Store(home).session("t")
    call = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    session.add_messages(
        [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "", "tool_calls": call},
            {"role": "tool", "content": "42", "tool_call_id": "c1"},
            {"role": "assistant", "content": "it is 42"},
        ]
    )
    messages = session.get_messages()
    assert _cut(messages, keep_last=2) == 1  # not between the call and its result
    assert _cut(messages, keep_last=1) == 3
    assert _cut(messages, keep_last=3) == 1


def test_the_summary_is_sent_only_when_the_history_does_not_fit(
    cli: Cli, llm_server: FakeLLMServer, home: Path
) -> None:
    session = Store(home).session("s")
    session.add_messages([{"role": "user", "content": f"message {i}"} for i in range(8)])
    llm_server.push(Reply(text="They counted messages."))
    base = ("-m", "local-thing", "--api-base", llm_server.base_url)
    r = cli("compact", "s", *base, "--keep-last", "2")
    assert r.exit_code == 0, r.stderr
    assert summary_range(session.get_messages()[-1]) == (1, 6)
    sent = llm_server.requests[-1].body["messages"][-1]["content"]
    assert "message 0" in sent and "message 7" not in sent
    shown = json.loads(cli("chat", "-s", "s", *base, "--show-context", "x").stdout)
    assert [m["content"] for m in shown["messages"][:-1]] == [f"message {i}" for i in range(8)]
    small = json.loads(
        cli("chat", "-s", "s", *base, "--context-window", "100", "--show-context", "x").stdout
    )
    assert "They counted messages." in small["messages"][0]["content"]


def test_auto_compact_after_an_answer(cli: Cli, llm_server: FakeLLMServer, home: Path) -> None:
    session = Store(home).session("a")
    session.add_messages([{"role": "user", "content": f"note {i} " * 5} for i in range(30)])
    base = ("-m", "local-thing", "--api-base", llm_server.base_url, "--context-window", "400")
    r = cli("chat", "-s", "a", *base, "--auto-compact", "hi")
    assert r.exit_code == 0, r.stderr
    assert "auto-compact: summarised messages 1-" in r.stderr
    last = session.get_messages()[-1]
    assert summary_range(last) is not None
    # under the share: nothing more
    count = len(session.get_messages())
    r = cli("chat", "-s", "a", *base[:-2], "--context-window", "100000", "--auto-compact", "hi")
    assert r.exit_code == 0 and len(session.get_messages()) == count + 2
