"""`export --format openai|openai-ft|sharegpt`, its filters, and round trips back in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli

CALL = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}
MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "add one", "created_at": "2025-01-01T00:00:00Z"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [CALL],
        "created_at": "2025-01-02T00:00:00Z",
    },
    {
        "role": "tool",
        "content": "2",
        "tool_call_id": "call_1",
        "created_at": "2025-01-03T00:00:00Z",
    },
    {"role": "assistant", "content": "It is 2.", "created_at": "2025-01-04T00:00:00Z"},
]


@pytest.fixture
def work(cli: Cli, tmp_path: Path) -> str:
    path = tmp_path / "work.json"
    path.write_text(json.dumps({"name": "work", "system": "Be exact.", "messages": MESSAGES}))
    assert cli("import", str(path)).exit_code == 0
    return "work"


def out(cli: Cli, *args: str) -> str:
    result = cli("export", *args)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def chat(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("role", "content", "tool_calls", "tool_call_id")
    return [{k: m[k] for k in keys if m.get(k) is not None} for m in messages]


def test_openai_export_round_trips(cli: Cli, work: str, tmp_path: Path) -> None:
    text = out(cli, work, "--format", "openai")
    value = json.loads(text)
    assert value["messages"][0] == {"role": "system", "content": "Be exact."}
    assert chat(value["messages"][1:]) == chat(MESSAGES)
    path = tmp_path / "back.json"
    path.write_text(json.dumps(value["messages"]))
    result = cli("import", "--from", "openai", "--as", "back", str(path))
    assert result.exit_code == 0, result.stderr
    back = json.loads(out(cli, "back", "--format", "openai"))
    assert back == value


def test_openai_ft_is_one_line_with_string_arguments(cli: Cli, work: str, tmp_path: Path) -> None:
    text = out(cli, work, "--format", "openai-ft")
    assert text.count("\n") == 1
    line = json.loads(text)
    call = line["messages"][2]["tool_calls"][0]
    assert isinstance(call["function"]["arguments"], str)
    path = tmp_path / "ft.jsonl"
    path.write_text(text)
    result = cli("import", "--from", "openai", "--json", "--prefix", "ft", str(path))
    assert json.loads(result.stdout)["messages_added"] == 5


def test_sharegpt_round_trip(cli: Cli, work: str, tmp_path: Path) -> None:
    text = out(cli, work, "--format", "sharegpt")
    item = json.loads(text)
    assert item["system"] == "Be exact."
    assert [t["from"] for t in item["conversations"]] == ["human", "gpt", "tool", "gpt"]
    path = tmp_path / "sg.jsonl"
    path.write_text(text)
    assert cli("import", "--from", "sharegpt", str(path)).exit_code == 0
    again = json.loads(out(cli, "sharegpt-work", "--format", "sharegpt"))
    assert again["conversations"] == item["conversations"]


def test_filters(cli: Cli, work: str) -> None:
    last = json.loads(out(cli, work, "--format", "openai", "--last", "1"))["messages"]
    assert [m["content"] for m in last] == ["Be exact.", "It is 2."]
    roles = json.loads(out(cli, work, "--format", "openai", "--role", "user"))["messages"]
    assert [m["role"] for m in roles] == ["system", "user"]
    ranged = out(cli, work, "--format", "jsonl", "--since", "2025-01-02", "--until", "2025-01-03")
    kept = [json.loads(line) for line in ranged.splitlines()[1:]]
    assert [m["role"] for m in kept] == ["assistant", "tool"]


def test_all(cli: Cli, work: str, tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"role": "user", "content": "hi"}]))
    assert cli("import", str(other), "--as", "other").exit_code == 0
    lines = out(cli, "--all", "--format", "openai-ft").splitlines()
    assert len(lines) == 2
    assert cli("export", "--all", "--format", "json").exit_code == 2
