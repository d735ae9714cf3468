"""Users (issue 16): a session belongs to a user (header metadata ``user``); --user on
add/store/chat claims or refuses, list/relevant --user and the Python API restrict by
session, and nothing of another user's session leaks (message metadata, fall-back)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from conftest import Cli, Result, set_activity
from llm_server import FakeLLMServer, Reply, llm_server
from local_postgres import postgres, postgres_server

from sessionctl import Store, UsageError
from sessionctl.config import load_settings
from sessionctl.errors import SessionNotFound

__all__ = ["llm_server", "postgres", "postgres_server"]  # fixtures, re-exported

ERROR = "sessionctl: error: "
MODES = ("hybrid", "vector", "text")


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result
    assert ERROR not in result.stderr and "Traceback" not in result.stderr
    return result


def fails(result: Result, code: int, *needles: str) -> str:
    """Exit ``code`` with exactly one stderr line, the error (no traceback)."""
    assert result.exit_code == code, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def transcript(home: Path, name: str) -> Path:
    return home / "sessions" / f"{name}.jsonl"


def header(home: Path, name: str) -> dict[str, Any]:
    first = transcript(home, name).read_text(encoding="utf-8").splitlines()[0]
    data: dict[str, Any] = json.loads(first)
    return data


def listed(cli: Cli, *args: str) -> list[str]:
    return [s["name"] for s in json.loads(ok(cli("list", "--json", *args)).stdout)["sessions"]]


def found(cli: Cli, *args: str) -> list[tuple[str, str]]:
    """(session, content) of each hit of ``relevant --json ARGS``."""
    hits = json.loads(ok(cli("relevant", "--json", *args)).stdout)
    return [(h["session"], h["content"]) for h in hits]


def dicts(found: list[dict[str, Any]] | list[str]) -> list[dict[str, Any]]:
    """A get_relevant/get_recent result asked as dicts (not ``as_text``)."""
    assert all(isinstance(item, dict) for item in found)
    return cast("list[dict[str, Any]]", found)


def age(home: Path, name: str, seconds_ago: float) -> None:
    set_activity(transcript(home, name), time.time() - seconds_ago)


# -- claiming: add, store, meta --------------------------------------------------------


def test_add_and_store_give_a_new_or_unowned_session_its_user(cli: Cli, home: Path) -> None:
    ok(cli("add", "-s", "a", "--user", "alice", "--role", "user", "hi"))
    assert header(home, "a")["metadata"] == {"user": "alice"}
    ok(cli("store", "b", "q", "r", "--user", "bob"))
    assert header(home, "b")["metadata"] == {"user": "bob"}
    # a session with no user gets one; its other metadata stays
    ok(cli("add", "-s", "c", "--role", "user", "--metadata", '{"user": "x"}', "m"))
    assert "metadata" not in header(home, "c") or "user" not in header(home, "c")["metadata"]
    ok(cli("meta", "c", "project=apollo"))
    ok(cli("store", "c", "q", "r", "--user", "carol"))
    assert header(home, "c")["metadata"] == {"project": "apollo", "user": "carol"}
    # the owner writes again: fine, nothing changes hands
    ok(cli("add", "-s", "a", "--user", "alice", "--role", "user", "again"))
    assert header(home, "a")["metadata"] == {"user": "alice"}
    # without --user anyone may still add (the user is a label, not a permission)
    ok(cli("add", "-s", "a", "--role", "user", "anonymous"))
    assert header(home, "a")["metadata"] == {"user": "alice"}


def test_another_users_session_is_refused_and_nothing_is_written(cli: Cli, home: Path) -> None:
    ok(cli("add", "-s", "b", "--user", "bob", "--role", "user", "bob's note"))
    before = transcript(home, "b").read_bytes()
    fails(cli("add", "-s", "b", "--user", "alice", "--role", "user", "x"), 2, "'bob'", "alice")
    # refused before stdin is read (nothing piped would be consumed)
    fails(cli("add", "-s", "b", "--user", "alice", "--role", "user", input="piped"), 2, "bob")
    fails(cli("store", "b", "q", "r", "--user", "alice"), 2, "another user")
    assert transcript(home, "b").read_bytes() == before


@pytest.mark.parametrize("bad", ["", "   ", "al\nice", "a\x00b"])
def test_an_invalid_user_is_a_usage_error_and_creates_nothing(
    cli: Cli, home: Path, bad: str
) -> None:
    fails(cli("add", "-s", "new", "--user", bad, "--role", "user", "hi"), 2, "user")
    fails(cli("store", "new", "q", "r", "--user", bad), 2, "user")
    fails(cli("list", "--user", bad), 2, "user")
    fails(cli("relevant", "q", "--user", bad), 2, "user")
    assert not transcript(home, "new").exists()


def test_meta_sets_shows_and_unsets_the_user_as_text(cli: Cli, home: Path) -> None:
    # meta NEW KEY=VALUE creates the session (seed fix), here with its user
    assert json.loads(ok(cli("meta", "fresh", "user=carol", "--json")).stdout) == {"user": "carol"}
    assert listed(cli, "--user", "carol") == ["fresh"]
    # a user that looks like JSON stays text (other keys are still parsed)
    ok(cli("meta", "fresh", "user=42", "n=42"))
    assert json.loads(ok(cli("meta", "fresh", "--json")).stdout) == {"user": "42", "n": 42}
    assert listed(cli, "--user", "42") == ["fresh"]
    assert ok(cli("meta", "fresh")).stdout.splitlines() == ["user=42", "n=42"]
    fails(cli("meta", "fresh", "user="), 2, "user")
    ok(cli("meta", "fresh", "--unset", "user"))
    assert listed(cli, "--user", "42") == []
    ok(cli("add", "-s", "fresh", "--user", "dan", "--role", "user", "now dan's"))
    assert listed(cli, "--user", "dan") == ["fresh"]


# -- list --user -----------------------------------------------------------------------


def test_list_user_keeps_only_that_users_sessions_page_by_page(cli: Cli, home: Path) -> None:
    for i in range(7):
        owner = "alice" if i % 2 == 0 else "bob"
        ok(cli("add", "-s", f"s{i}", "--user", owner, "--role", "user", f"m{i}"))
        age(home, f"s{i}", 1000 - i)  # s6 newest
    ok(cli("add", "-s", "nobody", "--role", "user", "x"))
    ok(cli("add", "-s", "tagged", "--role", "user", "--metadata", '{"user": "alice"}', "x"))
    assert listed(cli, "--user", "alice") == ["s6", "s4", "s2", "s0"]
    assert listed(cli, "--user", "bob") == ["s5", "s3", "s1"]
    assert listed(cli, "--user", "carol") == []
    # pages of 1 walk alice's sessions only, each exactly once
    seen: list[str] = []
    args = ["--user", "alice", "--limit", "1"]
    while True:
        page = json.loads(ok(cli("list", "--json", *args)).stdout)
        seen += [s["name"] for s in page["sessions"]]
        if page["next_cursor"] is None:
            break
        args = ["--user", "alice", "--limit", "1", "--cursor", page["next_cursor"]]
    assert seen == ["s6", "s4", "s2", "s0"]
    # with a time window too: both apply
    recent = listed(cli, "--since", "7d")
    assert listed(cli, "--user", "alice", "--since", "7d") == [
        n for n in recent if n in ("s6", "s4", "s2", "s0")
    ]
    assert listed(cli, "--user", "alice", "--since", "2999-01-01") == []
    fails(cli("list", "--user", "alice", "--deleted"), 2, "--deleted")


# -- relevant --user: the leak cases ---------------------------------------------------


@pytest.fixture
def two_users(cli: Cli, home: Path) -> None:
    """alice: a1 (older), a2; bob: b1, the store's most recently active session, whose
    messages say exactly what alice will look for, one tagged user=alice itself."""
    ok(cli("add", "-s", "a1", "--user", "alice", "--role", "user", "alice waters the garden"))
    ok(cli("add", "-s", "a2", "--user", "alice", "--role", "user", "alice bakes sourdough"))
    ok(cli("add", "-s", "b1", "--user", "bob", "--role", "user", "the deploy pipeline ERR_E4471"))
    meta = '{"user": "alice"}'
    ok(cli("add", "-s", "b1", "--role", "user", "--metadata", meta, "deploy pipeline notes"))
    ok(cli("add", "-s", "loose", "--role", "user", "deploy pipeline, nobody's session"))
    age(home, "a1", 300)
    age(home, "a2", 200)
    age(home, "loose", 100)
    age(home, "b1", 10)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.usefixtures("two_users")
def test_relevant_user_never_returns_another_users_session(cli: Cli, mode: str) -> None:
    query = ["deploy pipeline ERR_E4471", "--mode", mode]
    everyone = found(cli, *query, "-k", "10")
    assert {s for s, _ in everyone} >= {"b1", "loose"}  # the messages are findable
    assert found(cli, *query, "--user", "bob", "-k", "10")
    assert {s for s, _ in found(cli, *query, "--user", "bob", "-k", "10")} == {"b1"}
    # b1's message tagged user=alice is still bob's session: never alice's result
    mine = found(cli, *query, "--user", "alice", "-k", "10")
    assert all(s in ("a1", "a2") for s, _ in mine), mine
    # a metadata filter (the deeper-fetching path) is restricted the same way
    tagged = found(cli, *query, "--user", "alice", "--meta", "user=alice", "-k", "10")
    assert all(s in ("a1", "a2") for s, _ in tagged), tagged
    assert found(cli, *query, "--meta", "user=alice", "-k", "10") == [
        ("b1", "deploy pipeline notes")
    ]  # without --user the message-level tag does match (a different filter)


@pytest.mark.usefixtures("two_users")
def test_relevant_user_falls_back_to_the_users_own_latest_session(cli: Cli) -> None:
    nothing = ["qqzx vvkw", "--mode", "vector", "-d", "0.01", "--fall-back"]
    # without --user the fall-back is the store's most recent session: bob's
    assert {s for s, _ in found(cli, *nothing)} == {"b1"}
    assert found(cli, *nothing, "--user", "alice") == [("a2", "alice bakes sourdough")]
    for mode in MODES:
        hits = found(cli, "qqzx vvkw", "-m", mode, "-d", "0.01", "--fall-back", "--user", "alice")
        assert hits == [("a2", "alice bakes sourdough")], (mode, hits)
    # with criteria, the fall-back keeps only what they keep (a2's session is user=alice)
    assert found(cli, *nothing, "--meta", "user=alice", "--user", "alice") == [
        ("a2", "alice bakes sourdough")
    ]
    assert found(cli, *nothing, "--meta", "k=1", "--user", "alice") == []
    # a user with no sessions gets nothing at all, fall-back included
    assert found(cli, *nothing, "--user", "carol") == []
    assert found(cli, "deploy pipeline", "--fall-back", "--user", "carol") == []
    # named sessions: another user's is left out, a missing one is still an error
    assert found(cli, *nothing, "-s", "b1", "--user", "alice") == []
    assert found(cli, *nothing, "-s", "b1", "-s", "a1", "--user", "alice") == [
        ("a1", "alice waters the garden")
    ]
    fails(cli("relevant", "x", "-s", "ghost", "--user", "alice"), 3, "ghost")


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    with Store(home) as opened:
        yield opened


def test_empty_session_list_means_no_session_in_every_mode(store: Store) -> None:
    store.session("w").add_message({"role": "user", "content": "deploy pipeline"})
    for mode in MODES:
        for fall_back in (False, True):
            got = store.get_relevant("deploy pipeline", sessions=[], mode=mode, fall_back=fall_back)
            assert got == [], (mode, fall_back)
            got = store.get_relevant(
                "deploy pipeline", sessions=[], mode=mode, fall_back=fall_back, since="1d"
            )
            assert got == [], (mode, fall_back)
        assert store.get_relevant("deploy pipeline", mode=mode)  # None: every session


# -- chat --user -----------------------------------------------------------------------


def test_chat_user_claims_refuses_and_continues_the_users_session(
    cli: Cli, home: Path, llm_server: FakeLLMServer
) -> None:
    direct = ["--api-base", llm_server.base_url, "-m", "test-model"]
    llm_server.push(Reply(text="hi alice"), Reply(text="again"))
    ok(cli("chat", "-s", "ac", "--user", "alice", *direct, "hello"))
    assert header(home, "ac")["metadata"] == {"user": "alice"}
    ok(cli("add", "-s", "bc", "--user", "bob", "--role", "user", "bob's"))
    before = transcript(home, "bc").read_bytes()
    asked = len(llm_server.requests)
    fails(cli("chat", "-s", "bc", "--user", "alice", *direct, "hello"), 2, "bob")
    assert len(llm_server.requests) == asked  # nothing was sent
    assert transcript(home, "bc").read_bytes() == before
    # -c --user continues that user's latest session, not the store's (bob's)
    age(home, "ac", 100)
    r = ok(cli("chat", "-c", "--user", "alice", *direct, "more"))
    assert "session: ac" in r.stderr
    assert header(home, "ac")["metadata"] == {"user": "alice"}
    fails(cli("chat", "-c", "--user", "carol", *direct, "x"), 3, "carol")
    # a generated session (no -s) is created as that user's
    llm_server.push(Reply(text="new one"))
    r = ok(cli("chat", "--user", "erin", *direct, "start"))
    assert listed(cli, "--user", "erin") == [r.stderr.split("new session: ")[1].strip()]
    # a failed call creates nothing, user or not
    llm_server.default = Reply(status=401)  # retried requests get it too
    assert cli("chat", "-s", "failed", "--user", "dan", *direct, "x").exit_code == 4
    assert not transcript(home, "failed").exists()


# -- Python API ------------------------------------------------------------------------


def _seed(store: Store) -> None:
    store.session("a1").add_message(
        {"role": "user", "content": "alice waters the garden"}, user="alice"
    )
    store.session("b1").store("the deploy pipeline", "ERR_E4471 again", user="bob")
    store.session("b1").add_message(
        {"role": "user", "content": "deploy pipeline notes", "metadata": {"user": "alice"}}
    )
    store.session("a2").add_message(
        {"role": "user", "content": "alice bakes sourdough"}, user="alice"
    )


def _check_api(store: Store) -> None:
    assert store.user_sessions("alice") == ["a2", "a1"]  # most recently active first
    assert store.user_sessions("bob") == ["b1"] and store.user_sessions("carol") == []
    assert [i.name for i in store.list_sessions(user="alice").sessions] == ["a2", "a1"]
    assert store.session("a1").user == "alice" and store.session("b1").user == "bob"
    for mode in MODES:
        hits = dicts(store.get_relevant("deploy pipeline", user="alice", mode=mode, top_k=10))
        assert all(h["session"] in ("a1", "a2") for h in hits), (mode, hits)
        assert store.get_relevant("deploy pipeline", user="carol", mode=mode, fall_back=True) == []
        mine = store.session("b1").get_relevant("deploy", user="alice", mode=mode, fall_back=True)
        assert mine == [], mode
        assert store.session("b1").get_relevant("deploy", user="bob", mode=mode)
    back = store.get_relevant("qqzx", user="alice", mode="vector", distance_threshold=0.01,
                              fall_back=True, as_text=True)  # fmt: skip
    assert back == ["alice bakes sourdough"]
    with pytest.raises(UsageError, match="another user"):
        store.session("b1").add_message({"role": "user", "content": "x"}, user="alice")
    with pytest.raises(UsageError):
        store.session("b1").update(metadata={"user": ""})
    with pytest.raises(UsageError):
        store.user_sessions("")
    # a deleted session is no longer the user's: user_sessions lists live ones only
    store.delete("a2")
    assert store.user_sessions("alice") == ["a1"]
    with pytest.raises(SessionNotFound):
        store.get_relevant("x", sessions=["a2"], user="alice")


def test_python_api_files(home: Path) -> None:
    with Store(home) as store:
        _seed(store)
        _check_api(store)


@pytest.mark.postgres
def test_python_api_postgres(postgres: str) -> None:
    with Store(settings=load_settings(store=postgres, namespace="u")) as store:
        _seed(store)
        _check_api(store)


def test_messages_and_get_recent_show_message_metadata(store: Store) -> None:
    """Seed fix: the plain dicts carry per-message metadata (and model/usage) when set."""
    work = store.session("w")
    work.add_message({"role": "tool", "content": "r", "tool_call_id": "c", "metadata": {"k": 1}})
    work.store("q", "a", model="m", usage={"total_tokens": 3}, user="alice")
    for plain in (work.messages, dicts(work.get_recent())):
        assert plain[0]["metadata"] == {"k": 1} and plain[0]["tool_call_id"] == "c"
        assert plain[2]["model"] == "m" and plain[2]["usage"] == {"total_tokens": 3}
        assert "metadata" not in plain[1]  # the session's user is on the session


def test_python_chat_and_capture_respect_the_owner(store: Store, llm_server: FakeLLMServer) -> None:
    import openai

    from sessionctl import StoreError, capture

    base = llm_server.base_url
    llm_server.push(Reply(text="hi ann"))
    store.session("ann-chat").chat("hello", model="test-model", api_base=base, user="ann")
    assert store.session("ann-chat").user == "ann"
    store.session("bob-chat").add_message({"role": "user", "content": "bob's"}, user="bob")
    before = store.session("bob-chat").messages
    asked = len(llm_server.requests)
    with pytest.raises(UsageError, match="another user"):
        store.session("bob-chat").chat("hello", model="test-model", api_base=base, user="ann")
    assert len(llm_server.requests) == asked and store.session("bob-chat").messages == before
    # capture(user=ann) into bob's session: the call still works, nothing is recorded
    # there and bob keeps his session (it warns once); a new session becomes ann's
    client = openai.OpenAI(base_url=llm_server.base_url, api_key="k", max_retries=0)
    try:
        handle = capture(client, store=store, session="bob-chat", user="ann")
        llm_server.push(Reply(text="answered"), Reply(text="recorded"))
        with pytest.warns(RuntimeWarning, match="another user"):
            answer = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "q"}]
            )
            # the writer thread's refusal: warned (once), and flush() raises it
            with pytest.raises(StoreError, match="another user"):
                handle.flush()
        assert answer.choices[0].message.content == "answered"
        handle.set_session("ann-captured")
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q2"}])
        handle.flush()
    finally:
        client.close()
    assert store.session("bob-chat").messages == before
    assert store.session("bob-chat").info().metadata == {"user": "bob"}
    assert store.user_sessions("ann") == ["ann-captured", "ann-chat"]


def test_user_search_survives_sessions_renamed_meanwhile(home: Path) -> None:
    """A user's session renamed between the listing and the search: listed again, never
    an error for a session the caller did not name (a real race, in two threads)."""
    import threading

    with Store(home) as store:
        store.session("mine").add_message({"role": "user", "content": "deploy notes"}, user="u")
        for i in range(5):
            store.session(f"c{i}").add_message({"role": "user", "content": f"deploy {i}"}, user="u")
        stop = threading.Event()
        errors: list[BaseException] = []

        def churn() -> None:
            with Store(home) as other:
                while not stop.is_set():
                    try:
                        other.rename("c0", "c0x")
                        other.rename("c0x", "c0")
                    except BaseException as exc:
                        errors.append(exc)
                        return

        thread = threading.Thread(target=churn)
        thread.start()
        try:
            for _ in range(40):
                hits = dicts(store.get_relevant("deploy", user="u", top_k=3, mode="vector"))
                assert all(
                    h["session"] in {"mine", "c0", "c0x", "c1", "c2", "c3", "c4"} for h in hits
                )
        finally:
            stop.set()
            thread.join()
        assert errors == []
