"""`sessionctl mcp`, driven by the real MCP client of the `mcp` SDK over stdio and HTTP."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import REPO
from mcp import Client, StdioServerParameters
from test_reliability_hostile import full_disk

from sessionctl import Store

PINNED = Path(__file__).parent / "data" / "mcp_tools.json"
READ_TOOLS = ["search_history", "recent", "list_sessions", "read_session"]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "SESSIONCTL_HOME": str(home)}


def stdio(home: Path, *flags: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "sessionctl", "mcp", *flags],
        env=_env(home),
        cwd=str(REPO),
    )


def with_client(server: Any, body: Callable[[Client], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with Client(server, read_timeout_seconds=60) as client:
            return await body(client)

    return anyio.run(main)


def ok(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    data = json.loads(result.content[0].text)
    assert result.structured_content == data
    return data  # type: ignore[no-any-return]


def refused(result: Any) -> str:
    assert result.is_error, result.content[0].text
    return str(result.content[0].text)


@pytest.fixture
def history(home: Path) -> Path:
    return seed(home)


def seed(home: Path) -> Path:
    """Three sessions: work-deploy (3 messages), work-notes (a long one), private-diary."""
    store = Store(home)
    store.session("work-deploy").add_messages(
        [
            {"role": "user", "content": "Which database should the deploy use? We chose postgres."},
            {
                "role": "assistant",
                "content": "Noted. Error E1234 means the advisory lock timed out.",
            },
            {"role": "user", "content": "Thanks, and the release is on Friday."},
        ]
    )
    store.session("work-notes").add_message({"role": "user", "content": "buy oat milk " * 60})
    store.session("private-diary").add_message(
        {"role": "user", "content": "the pin of the bluebird safe is 4321"}
    )
    store.close()
    return home


# -- the contract ------------------------------------------------------------------


def test_tool_names_and_schemas_are_pinned(history: Path) -> None:
    async def listing(client: Client) -> list[Any]:
        return list((await client.list_tools()).tools)

    read_only = with_client(stdio(history), listing)
    writing = with_client(stdio(history, "--allow-write"), listing)
    assert [t.name for t in read_only] == READ_TOOLS
    assert [t.name for t in writing] == [*READ_TOOLS, "add_messages", "fork"]
    pinned = json.loads(PINNED.read_text(encoding="utf-8"))
    assert {t.name: t.input_schema for t in writing} == pinned
    for tool in writing:
        assert 80 <= len(tool.description or "") <= 600, tool.name  # written for a model
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is (tool.name in READ_TOOLS)


def test_the_pinned_schemas_are_the_code_s(history: Path) -> None:
    """The file is the contract; a change to a schema must change it deliberately."""
    from sessionctl.mcp.tools import TOOLS

    pinned = json.loads(PINNED.read_text(encoding="utf-8"))
    assert {t.name: t.schema for t in TOOLS} == pinned


# -- every tool --------------------------------------------------------------------


def test_every_read_tool_answers_over_stdio(history: Path) -> None:
    async def body(client: Client) -> dict[str, Any]:
        calls: dict[str, tuple[str, dict[str, Any]]] = {
            "words": ("search_history", {"query": "E1234"}),
            "meaning": ("search_history", {"query": "what database did we pick", "k": 1}),
            "text_mode": ("search_history", {"query": "oat milk", "mode": "text"}),
            "role": ("search_history", {"query": "lock timed out", "role": "assistant", "k": 3}),
            "future": ("search_history", {"query": "E1234", "since": "2999-01-01"}),
            "recent": ("recent", {"session": "work-deploy", "k": 2}),
            "latest": ("recent", {"k": 1}),
            "list": ("list_sessions", {"limit": 2}),
            "page1": ("read_session", {"session": "work-deploy", "limit": 2}),
            "page2": ("read_session", {"session": "work-deploy", "start": 3}),
        }
        out = {key: ok(await client.call_tool(name, args)) for key, (name, args) in calls.items()}
        out["list2"] = ok(
            await client.call_tool("list_sessions", {"cursor": out["list"]["next_cursor"]})
        )
        return out

    got = with_client(stdio(history), body)
    first = got["words"]["results"][0]
    assert (first["session"], first["seq"], first["role"]) == ("work-deploy", 2, "assistant")
    assert "words" in first["found_by"]
    assert [(h["session"], h["seq"]) for h in got["meaning"]["results"]] == [("work-deploy", 1)]
    notes = got["text_mode"]["results"][0]
    assert notes["session"] == "work-notes" and notes["chars"] == len("buy oat milk " * 60)
    assert len(notes["snippet"]) <= 302  # a snippet, not the message
    assert [h["role"] for h in got["role"]["results"]] == ["assistant"]
    assert got["future"]["results"] == [] and "note" in got["future"]
    assert [m["seq"] for m in got["recent"]["messages"]] == [2, 3]
    assert got["latest"]["session"] == "private-diary"  # the most recently active
    listed = [s["name"] for s in got["list"]["sessions"] + got["list2"]["sessions"]]
    assert listed == ["private-diary", "work-notes", "work-deploy"]
    assert got["list2"]["next_cursor"] is None
    page1, page2 = got["page1"], got["page2"]
    assert [m["seq"] for m in page1["messages"]] == [1, 2] and page1["next_start"] == 3
    assert page1["messages"][1]["content"].startswith("Noted. Error E1234")  # full text
    assert page1["session"]["messages"] == 3
    assert [m["seq"] for m in page2["messages"]] == [3] and page2["next_start"] is None


def test_bad_calls_are_tool_errors_and_the_server_lives_on(history: Path) -> None:
    bad: list[tuple[str, dict[str, Any], str]] = [
        ("search_history", {}, "query is required"),
        ("search_history", {"query": ""}, "query must not be empty"),
        ("search_history", {"query": "x", "k": 0}, "k must be from 1 to 50"),
        ("search_history", {"query": "x", "k": "five"}, "k must be a whole number"),
        ("search_history", {"query": "x", "mode": "fuzzy"}, "mode must be one of"),
        ("search_history", {"query": "x", "since": "last tuesday"}, "last tuesday"),
        ("search_history", {"query": "x", "since": "1d", "until": "2d"}, "since"),
        ("search_history", {"query": "x", "top_k": 3}, "unknown argument 'top_k'"),
        ("search_history", {"query": "x", "session": "nope"}, "no session named 'nope'"),
        ("search_history", {"query": "x", "session": "../etc"}, "no session named"),
        ("recent", {"session": "nope"}, "no session named 'nope'"),
        ("recent", {"role": "robot"}, "role must be one of"),
        ("read_session", {"session": "work-deploy", "start": 0}, "start must be from 1"),
        ("list_sessions", {"cursor": "garbage"}, "cursor"),
        ("no_such_tool", {}, "unknown tool 'no_such_tool'"),
    ]

    async def body(client: Client) -> tuple[list[str], dict[str, Any]]:
        errors = [refused(await client.call_tool(name, args)) for name, args, _ in bad]
        return errors, ok(await client.call_tool("search_history", {"query": "E1234"}))

    errors, after = with_client(stdio(history), body)
    for (name, args, expected), error in zip(bad, errors, strict=True):
        assert expected in error, (name, args, error)
        assert "\n" not in error and "Traceback" not in error
    assert after["results"][0]["seq"] == 2


# -- scope and writes ----------------------------------------------------------------


def test_the_session_prefix_scopes_every_tool(history: Path) -> None:
    async def body(client: Client) -> dict[str, Any]:
        return {
            "search": ok(await client.call_tool("search_history", {"query": "bluebird pin 4321"})),
            "text": ok(
                await client.call_tool("search_history", {"query": "bluebird", "mode": "text"})
            ),
            "list": ok(await client.call_tool("list_sessions", {})),
            "latest": ok(await client.call_tool("recent", {})),
            "read": refused(await client.call_tool("read_session", {"session": "private-diary"})),
            "nothing": refused(await client.call_tool("read_session", {"session": "work-nope"})),
            "one": refused(
                await client.call_tool(
                    "search_history", {"query": "pin", "session": "private-diary"}
                )
            ),
            "recent": refused(await client.call_tool("recent", {"session": "private-diary"})),
        }

    got = with_client(stdio(history, "--session-prefix", "work-"), body)
    assert all(h["session"].startswith("work-") for h in got["search"]["results"])
    assert got["text"]["results"] == []
    assert [s["name"] for s in got["list"]["sessions"]] == ["work-notes", "work-deploy"]
    assert got["latest"]["session"] == "work-notes"
    # outside the scope reads exactly as a session that does not exist: no leak
    assert got["read"] == got["nothing"].replace("work-nope", "private-diary")
    assert "bluebird" not in json.dumps(got)


def test_writes_are_offered_only_with_allow_write(history: Path) -> None:
    note = {"role": "user", "content": "remember: the staging password rotates monthly"}

    async def read_only(client: Client) -> str:
        return refused(
            await client.call_tool("add_messages", {"session": "work-x", "messages": [note]})
        )

    assert "--allow-write" in with_client(stdio(history), read_only)

    async def writing(client: Client) -> dict[str, Any]:
        call = client.call_tool
        return {
            "added": ok(await call("add_messages", {"session": "work-memo", "messages": [note]})),
            "found": ok(await call("search_history", {"query": "staging password", "k": 1})),
            "fork": ok(await call("fork", {"session": "work-deploy", "new": "work-b", "at": 2})),
            "outside": refused(
                await call("add_messages", {"session": "other-memo", "messages": [note]})
            ),
            "fork_out": refused(await call("fork", {"session": "work-deploy", "new": "x-y"})),
            "exists": refused(await call("fork", {"session": "work-deploy", "new": "work-notes"})),
            "no_seq": refused(
                await call("fork", {"session": "work-deploy", "new": "work-c", "at": 9})
            ),
            "bad_role": refused(
                await call(
                    "add_messages",
                    {"session": "work-memo", "messages": [note, {"role": "robot", "content": "x"}]},
                )
            ),
            "bad_name": refused(
                await call("add_messages", {"session": "work-../x", "messages": [note]})
            ),
        }

    got = with_client(stdio(history, "--allow-write", "--session-prefix", "work-"), writing)
    assert got["added"] == {
        "session": "work-memo",
        "added": [{"seq": 1, "id": got["added"]["added"][0]["id"]}],
    }
    assert got["found"]["results"][0]["session"] == "work-memo"
    assert got["fork"]["session"]["name"] == "work-b" and got["fork"]["session"]["messages"] == 2
    assert "outside this server's scope" in got["outside"] and "'work-'" in got["outside"]
    assert "outside this server's scope" in got["fork_out"]
    assert "already exists" in got["exists"]
    assert "no message with seq 9" in got["no_seq"]
    assert "role" in got["bad_role"]
    assert "invalid session name" in got["bad_name"]
    store = Store(history)
    memo = store.session("work-memo").get_messages()
    assert [m.content for m in memo] == [note["content"]]  # the bad batch wrote nothing
    assert not store.session("other-memo").exists and not store.session("x-y").exists
    store.close()


def test_the_user_scopes_every_tool_and_writes_claim_nothing(home: Path) -> None:
    store = Store(home)
    store.session("alice-a").add_message(
        {"role": "user", "content": "alice plans the cache with redis"}, user="alice"
    )
    store.session("bob-b").add_message(
        {
            "role": "user",
            "content": "bob plans the queue with kafka",
            "metadata": {"user": "alice"},
        },
        user="bob",
    )
    store.session("nobody").add_message({"role": "user", "content": "the plan uses rabbitmq"})
    store.close()

    async def body(client: Client) -> dict[str, Any]:
        call = client.call_tool
        note = [{"role": "user", "content": "alice: remember the TTL"}]
        return {
            "search": ok(await call("search_history", {"query": "plans with", "k": 10})),
            "words": ok(await call("search_history", {"query": "kafka rabbitmq", "mode": "text"})),
            "list": ok(await call("list_sessions", {})),
            "latest": ok(await call("recent", {})),
            "read_bob": refused(await call("read_session", {"session": "bob-b"})),
            "read_none": refused(await call("read_session", {"session": "nobody"})),
            "read_ghost": refused(await call("read_session", {"session": "ghost"})),
            "add_bob": refused(await call("add_messages", {"session": "bob-b", "messages": note})),
            "add_none": refused(
                await call("add_messages", {"session": "nobody", "messages": note})
            ),
            "add_new": ok(await call("add_messages", {"session": "alice-new", "messages": note})),
            "fork": ok(await call("fork", {"session": "alice-a", "new": "alice-copy"})),
            "fork_bob": refused(await call("fork", {"session": "bob-b", "new": "alice-b"})),
        }

    got = with_client(stdio(home, "--user", "alice", "--allow-write"), body)
    assert [h["session"] for h in got["search"]["results"]] == ["alice-a"]
    assert got["words"]["results"] == []
    assert [s["name"] for s in got["list"]["sessions"]] == ["alice-a"]
    assert got["latest"]["session"] == "alice-a"
    ghost = got["read_ghost"]
    assert got["read_bob"] == ghost.replace("ghost", "bob-b")
    assert got["read_none"] == ghost.replace("ghost", "nobody")
    assert "cannot be written" in got["add_bob"] and "cannot be written" in got["add_none"]
    assert "kafka" not in json.dumps(got) and "'bob'" not in json.dumps(got)
    store = Store(home)
    assert store.session("alice-new").user == "alice"
    assert store.session("alice-copy").user == "alice"
    assert store.session("nobody").user is None  # not claimed
    assert len(store.session("bob-b").get_messages()) == 1
    assert not store.session("alice-b").exists
    store.close()


# -- robustness ----------------------------------------------------------------------


def test_a_lost_index_is_rebuilt_and_searches_still_answer(history: Path) -> None:
    store = Store(history)
    assert store.get_relevant("E1234")  # both indexes built
    store.close()
    assert (history / "keywords.db").is_file() and any((history / "index").iterdir())
    for derived in [history / "index", history / "keywords.db"]:
        if derived.is_dir():
            for f in derived.iterdir():
                f.unlink()
        elif derived.exists():
            derived.write_bytes(b"this is not a database")

    async def body(client: Client) -> dict[str, Any]:
        return ok(await client.call_tool("search_history", {"query": "E1234"}))

    got = with_client(stdio(history), body)
    assert got["results"][0]["seq"] == 2
    assert any("keyword index rebuilt" in w for w in got["warnings"]), got


# -- HTTP ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_server(history: Path) -> Iterator[Callable[..., tuple[int, str, subprocess.Popen[str]]]]:
    started: list[subprocess.Popen[str]] = []

    def start(
        *flags: str, env: dict[str, str] | None = None
    ) -> tuple[int, str, subprocess.Popen[str]]:
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "sessionctl", "mcp", "--http", f"127.0.0.1:{port}", *flags],
            env={**_env(history), **(env or {})},
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        said = ""
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        while "serving http://" not in said and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            said += line
        assert "serving http://" in said, said
        for _ in range(200):  # the line is printed before uvicorn listens
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        return port, said, proc

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _post(port: int, headers: dict[str, str]) -> int:
    import httpx2

    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    base = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    with httpx2.Client() as http:
        response = http.post(f"http://127.0.0.1:{port}/mcp", json=body, headers={**base, **headers})
        return int(response.status_code)


def _http_client(port: int, token: str) -> Any:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    return http, streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)


def test_http_refuses_requests_without_the_token_or_from_another_origin(
    http_server: Callable[..., tuple[int, str, subprocess.Popen[str]]],
) -> None:
    token = "t" * 20 + "-secret"
    port, said, proc = http_server(env={"SESSIONCTL_MCP_TOKEN": token})
    assert token not in said
    good = {"authorization": f"Bearer {token}"}
    assert _post(port, {}) == 401
    assert _post(port, {"authorization": "Bearer wrong-token-of-some-length"}) == 401
    assert _post(port, {"authorization": token}) == 401  # the scheme is part of it
    assert _post(port, {**good, "origin": "http://evil.example"}) == 403
    assert _post(port, {**good, "origin": f"http://localhost.evil.example:{port}"}) == 403
    assert _post(port, {**good, "host": f"evil.example:{port}"}) == 421
    assert _post(port, {**good, "origin": f"http://localhost:{port}"}) != 403

    async def main() -> tuple[list[str], dict[str, Any]]:
        http, transport = _http_client(port, token)
        async with http, Client(transport, read_timeout_seconds=60) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            return names, ok(await client.call_tool("search_history", {"query": "E1234"}))

    names, found = anyio.run(main)
    assert names == READ_TOOLS
    assert found["results"][0]["session"] == "work-deploy"
    proc.terminate()
    _, rest = proc.communicate(timeout=20)
    assert token not in said + rest  # never logged


def test_http_without_a_token_makes_one_and_says_it_once(
    http_server: Callable[..., tuple[int, str, subprocess.Popen[str]]], history: Path
) -> None:
    port, said, _ = http_server("--allow-write")
    match = re.search(r"token (\S+)", said)
    assert match is not None, said
    token = match.group(1)
    assert len(token) >= 32 and said.count(token) == 1
    assert _post(port, {}) == 401

    async def main() -> list[str]:
        http, transport = _http_client(port, token)
        async with http, Client(transport, read_timeout_seconds=60) as client:
            ok(
                await client.call_tool(
                    "add_messages",
                    {"session": "h", "messages": [{"role": "user", "content": "via http"}]},
                )
            )
            return [t.name for t in (await client.list_tools()).tools]

    assert "add_messages" in anyio.run(main)
    files = [p for p in history.rglob("*") if p.is_file()]
    assert files and not any(token.encode() in p.read_bytes() for p in files)


# -- the command line ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["mcp", "--http", "127.0.0.1:notaport"], "--http takes [HOST:]PORT"),
        (["mcp", "--http", "70000"], "--http takes [HOST:]PORT"),
        (["mcp", "--token", "x" * 20], "--token is for --http"),
        (["mcp", "--http", "8000", "--token", "short"], "at least 16 characters"),
        (["mcp", "--user", ""], "user must not be empty"),
    ],
)
def test_bad_flags_are_one_line_usage_errors(
    sh: Callable[..., subprocess.CompletedProcess[str]], args: list[str], expected: str
) -> None:
    result = sh(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_other_commands_never_import_the_sdk(home: Path) -> None:
    code = (
        "import sys\nfrom sessionctl.cli.app import run\n"
        "assert run(['list']) == 0\n"
        "print([m for m in ('mcp', 'uvicorn', 'starlette', 'pydantic') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(home), cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_snippets_center_on_the_words_asked_for() -> None:
    from sessionctl.mcp.tools import snippet

    text = "filler " * 100 + "the KEYWORD is here " + "tail " * 100
    cut = snippet(text, "keyword")
    assert "KEYWORD" in cut and cut.startswith("…") and cut.endswith("…")
    assert snippet("short\n\ntext", "x") == "short text"
    assert snippet("a" * 400, "zzz").startswith("a" * 300)


def test_a_full_disk_is_a_tool_error_and_reads_go_on(home: Path) -> None:
    from sessionctl.config import load_settings
    from sessionctl.mcp.tools import Memory, ToolError

    big = {"role": "user", "content": "x" * 20000}
    kept = {"role": "user", "content": "kept"}
    with full_disk(home) as disk:
        memory = Memory(load_settings(home=home), allow_write=True)
        try:
            memory.call("add_messages", {"session": "d", "messages": [kept]})
            memory.call("search_history", {"query": "kept"})  # the indexes exist
            before = (home / "sessions" / "d.jsonl").read_bytes()
            disk.fill()
            for session in ("d", "new"):
                with pytest.raises(ToolError, match=r"(?i)no space left"):
                    memory.call("add_messages", {"session": session, "messages": [big]})
            assert (home / "sessions" / "d.jsonl").read_bytes() == before
            assert not (home / "sessions" / "new.jsonl").exists()
            found = memory.call("read_session", {"session": "d"})
            assert [m["content"] for m in found["messages"]] == ["kept"]
            disk.free()
            memory.call("add_messages", {"session": "d", "messages": [big]})
        finally:
            memory.close()  # nothing left open: the tmpfs unmounts
