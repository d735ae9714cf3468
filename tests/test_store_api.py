"""The public Python API: Store / Session operations, without the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import as_dicts, files_backend, set_activity

from sessionctl import MessageNotFound, SessionExists, SessionNotFound, Store, UsageError
from sessionctl.models import SessionInfo
from sessionctl.service.session import Session


@pytest.fixture
def store(home: Path) -> Store:
    return Store(home)


def _transcript(store: Store, name: str) -> Path:
    return store.home / "sessions" / f"{name}.jsonl"


def _set_mtime(path: Path, when: float) -> None:
    set_activity(path, when)


# -- writing ---------------------------------------------------------------------


def test_add_message_creates_session_and_returns_stamped_message(store: Store) -> None:
    work = store.session("work")
    assert not work.exists
    m = work.add_message({"role": "user", "content": "hello"})
    assert work.exists
    assert (m.seq, m.role, m.content) == (1, "user", "hello")
    assert len(m.id) == 26 and m.created_at.endswith("Z")
    assert work.messages == [m.to_dict()]


def test_add_messages_is_ordered_with_consecutive_seqs(store: Store) -> None:
    work = store.session("work")
    added = work.add_messages([{"role": "user", "content": str(i)} for i in range(5)])
    assert [m.seq for m in added] == [1, 2, 3, 4, 5]
    more = work.add_messages([{"role": "assistant", "content": "x"}])
    assert more[0].seq == 6
    assert len({m.id for m in [*added, *more]}) == 6


def test_add_messages_validates_everything_before_writing(store: Store) -> None:
    work = store.session("work")
    work.add_message({"role": "user", "content": "keep"})
    with pytest.raises(UsageError, match="role"):
        work.add_messages([{"role": "user", "content": "a"}, {"role": "wizard", "content": "b"}])
    with pytest.raises(UsageError, match="unknown message field"):
        work.add_messages([{"role": "user", "content": "a", "colour": "red"}])
    with pytest.raises(UsageError, match="text"):
        work.add_messages([{"role": "user", "content": 42}])
    with pytest.raises(UsageError, match="metadata"):
        work.add_messages([{"role": "user", "content": "a", "metadata": [1]}])
    with pytest.raises(UsageError, match="role"):
        work.add_messages([{"content": "no role"}])
    assert [m["content"] for m in work.messages] == ["keep"]


def test_llm_role_is_an_alias_of_assistant(store: Store) -> None:
    work = store.session("work")
    assert work.add_message({"role": "llm", "content": "hi"}).role == "assistant"
    assert work.get_recent(role="llm", as_text=True) == ["hi"]


def test_store_writes_user_then_assistant(store: Store) -> None:
    work = store.session("work")
    user, answer = work.store("2+2?", "4", model="m1", usage={"total_tokens": 3})
    assert (user.role, user.content, answer.role, answer.content) == (
        "user",
        "2+2?",
        "assistant",
        "4",
    )
    assert answer.seq == user.seq + 1
    raw = as_dicts(work.get_recent(raw=True))
    assert raw[1]["model"] == "m1" and raw[1]["usage"] == {"total_tokens": 3}


def test_optional_fields_round_trip(store: Store) -> None:
    work = store.session("work")
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    work.add_messages(
        [
            {"role": "assistant", "content": "", "tool_calls": calls, "model": "gpt"},
            {"role": "tool", "content": "42", "tool_call_id": "c1", "name": "f"},
            {"role": "user", "content": "x", "metadata": {"a": [1, {"b": None}]}},
        ]
    )
    raw = as_dicts(work.get_recent(raw=True))
    assert raw[0]["tool_calls"] == calls and raw[0]["model"] == "gpt"
    assert raw[1]["tool_call_id"] == "c1" and raw[1]["name"] == "f"
    assert raw[2]["metadata"] == {"a": [1, {"b": None}]}
    # The plain shape (get_recent, Session.messages) carries every stored optional
    # field that is set, metadata included, as the seed APIs return it; never the
    # storage bookkeeping.
    for plain in (as_dicts(work.get_recent()), work.messages):
        assert plain[0]["tool_calls"] == calls and plain[0]["model"] == "gpt"
        assert plain[1]["tool_call_id"] == "c1" and plain[1]["name"] == "f"
        assert plain[2]["metadata"] == {"a": [1, {"b": None}]}
        assert "metadata" not in plain[0] and "usage" not in plain[0]
        assert all("pos" not in m and "type" not in m for m in plain)


# -- reading ---------------------------------------------------------------------


def test_get_recent_modes_and_roles(store: Store) -> None:
    work = store.session("work")
    work.add_messages(
        [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "u2"},
            {"role": "assistant", "content": "a2"},
        ]
    )
    assert work.get_recent(top_k=2, as_text=True) == ["u2", "a2"]
    assert work.get_recent(top_k=2, role="user", as_text=True) == ["u1", "u2"]
    assert work.get_recent(top_k=9, role=["system", "llm"], as_text=True) == ["s", "a1", "a2"]
    assert work.get_recent(top_k=0) == []
    dicts = work.get_recent(top_k=1)
    assert set(dicts[0]) == {"id", "seq", "role", "content", "created_at"}
    raw = work.get_recent(top_k=1, raw=True)
    assert set(raw[0]) >= {"id", "seq", "role", "content", "created_at"}
    with pytest.raises(UsageError):
        work.get_recent(role="wizard")


@pytest.mark.parametrize("bad", [-1, -100, True, 1.5, "3"])
def test_get_recent_rejects_bad_top_k(store: Store, bad: object) -> None:
    work = store.session("work")
    work.add_message({"role": "user", "content": "x"})
    with pytest.raises(UsageError):
        work.get_recent(top_k=bad)  # type: ignore[arg-type]


def test_reading_a_missing_session_is_not_found(store: Store) -> None:
    ghost = store.session("ghost")
    for call in (
        lambda: ghost.get_recent(),
        lambda: ghost.get_recent(top_k=0),
        lambda: ghost.messages,
        lambda: ghost.drop(),
        lambda: ghost.clear(),
        lambda: ghost.info(),
        lambda: store.existing("ghost"),
    ):
        with pytest.raises(SessionNotFound):
            call()
    assert not (store.home / "sessions" / "ghost.jsonl").exists()


def test_messages_are_not_capped(store: Store) -> None:
    work = store.session("big")
    work.add_messages([{"role": "user", "content": f"m{i}"} for i in range(5000)])
    messages = work.messages
    assert len(messages) == 5000
    assert [m["seq"] for m in messages] == list(range(1, 5001))
    recent = as_dicts(work.get_recent(top_k=100000))
    assert len(recent) == 5000 and recent[0]["content"] == "m0"
    assert work.info().messages == 5000


def test_order_is_by_seq_never_by_timestamp(store: Store) -> None:
    work = store.session("work")
    work.add_messages([{"role": "user", "content": c} for c in "abcd"])
    path = _transcript(store, "work")
    lines = path.read_bytes().splitlines()
    header, records = lines[0], [json.loads(line) for line in lines[1:]]
    stamps = ["2030-01-01T00:00:00.000000Z", "2020-01-01T00:00:00.000000Z"]
    records[0]["created_at"] = stamps[0]  # newest stamp first
    records[1]["created_at"] = stamps[1]
    records[2]["created_at"] = records[3]["created_at"] = stamps[1]  # ties
    path.write_bytes(b"\n".join([header, *(json.dumps(r).encode() for r in records)]) + b"\n")
    assert [m["content"] for m in work.messages] == list("abcd")
    assert work.get_recent(top_k=3, as_text=True) == list("bcd")
    work.add_message({"role": "user", "content": "e"})
    assert [m["seq"] for m in work.messages] == [1, 2, 3, 4, 5]


# -- drop / clear / delete ------------------------------------------------------------


def test_drop_last_and_by_id(store: Store) -> None:
    work = store.session("work")
    a, b, c = work.add_messages([{"role": "user", "content": x} for x in "abc"])
    assert work.drop().id == c.id
    assert work.drop(a.id).id == a.id
    assert [m["id"] for m in work.messages] == [b.id]
    # seqs are never reused after a drop
    assert work.add_message({"role": "user", "content": "d"}).seq == 4
    assert work.info().messages == 2


def test_drop_on_empty_session_is_message_not_found_not_index_error(store: Store) -> None:
    work = store.session("work")
    work.update(model="m")  # exists, no messages
    with pytest.raises(MessageNotFound):
        work.drop()
    work.add_message({"role": "user", "content": "x"})
    with pytest.raises(MessageNotFound):
        work.drop("01NOTANID")
    work.drop()
    with pytest.raises(MessageNotFound):
        work.drop()


def test_clear_empties_only_that_session(store: Store) -> None:
    work, other = store.session("work"), store.session("other")
    work.update(model="m1", system="be brief", metadata={"k": 1})
    work.store("q", "a")
    other.store("q2", "a2")
    assert work.clear() == 2
    assert work.messages == []
    assert work.exists
    info = work.info()
    assert (info.model, info.system, info.metadata, info.messages) == (
        "m1",
        "be brief",
        {"k": 1},
        0,
    )
    assert [m["content"] for m in other.messages] == ["q2", "a2"]
    assert work.add_message({"role": "user", "content": "again"}).seq == 3


def test_delete_restore_and_purge(store: Store) -> None:
    work = store.session("work")
    work.store("q", "a")
    work.delete()
    assert not work.exists
    assert [i.name for i in store.list_sessions().sessions] == []
    assert [i.name for i in store.list_sessions(deleted=True).sessions] == ["work"]
    store.restore("work")
    assert [m["content"] for m in work.messages] == ["q", "a"]
    work.delete(purge=True)
    assert not work.exists
    assert store.list_sessions(deleted=True).sessions == []
    with pytest.raises(SessionNotFound):
        store.restore("work")
    with pytest.raises(SessionNotFound):
        work.delete()


def test_write_to_deleted_name_starts_fresh_and_warns_once(home: Path) -> None:
    notes: list[str] = []
    store = Store(home, warn=notes.append)
    work = store.session("work")
    work.store("old", "old")
    work.delete()
    work.add_message({"role": "user", "content": "new"})
    assert len(notes) == 1 and "trash" in notes[0]
    work.add_message({"role": "user", "content": "newer"})
    assert len(notes) == 1, notes  # appending to the live one is not "starting fresh"
    assert [m["content"] for m in work.messages] == ["new", "newer"]
    with pytest.raises(SessionExists):
        store.restore("work")
    store.rename("work", "work2")
    store.restore("work")
    assert [m["content"] for m in work.messages] == ["old", "old"]


# -- fork / to_dict / from_dict ----------------------------------------------------------


def test_fork_copies_with_fresh_ids_and_records_parent(store: Store) -> None:
    src = store.session("src")
    src.update(model="m", system="sys", metadata={"p": 1})
    a, b, c = src.add_messages([{"role": "user", "content": x} for x in "abc"])
    before = _transcript(store, "src").read_bytes()
    whole = src.fork("all")
    part = src.fork("part", at=b.id)
    assert [m["content"] for m in whole.messages] == ["a", "b", "c"]
    assert [m["content"] for m in part.messages] == ["a", "b"]
    assert not {m["id"] for m in part.messages} & {a.id, b.id, c.id}
    header = part.header
    assert (header.parent, header.parent_message) == ("src", b.id)
    assert (header.model, header.system, header.metadata) == ("m", "sys", {"p": 1})
    assert _transcript(store, "src").read_bytes() == before
    assert part.add_message({"role": "user", "content": "d"}).seq == 3


def test_fork_errors_leave_everything_untouched(store: Store) -> None:
    src = store.session("src")
    src.store("q", "a")
    taken = store.session("taken")
    taken.add_message({"role": "user", "content": "mine"})
    before = _transcript(store, "taken").read_bytes()
    with pytest.raises(SessionExists):
        src.fork("taken")
    with pytest.raises(SessionExists):
        src.fork("TAKEN")
    assert _transcript(store, "taken").read_bytes() == before
    with pytest.raises(MessageNotFound):
        src.fork("new", at="nope")
    with pytest.raises(SessionNotFound):
        store.fork("ghost", "new")
    assert not store.session("new").exists


def test_to_dict_from_dict_round_trip(store: Store) -> None:
    src = store.session("src")
    src.update(model="m", system="sys", metadata={"k": [1, 2]})
    src.add_messages(
        [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "ünïcode ✓", "metadata": {"x": 1}},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "1"}], "model": "m"},
            {"role": "tool", "content": "r", "tool_call_id": "1", "name": "fn"},
        ]
    )
    data = src.to_dict()
    json.dumps(data)  # JSON-ready
    copy = Session.from_dict(data, store, name="copy")
    again = copy.to_dict()
    assert again["messages"] == data["messages"]
    for key in ("model", "system", "metadata"):
        assert again[key] == data[key]
    with pytest.raises(SessionExists):
        store.from_dict(data, name="copy")
    with pytest.raises(SessionExists):
        store.from_dict(data)  # its own name, "src", is taken
    with pytest.raises(UsageError):
        store.from_dict({"messages": "nope"}, name="x")


# -- update / rename --------------------------------------------------------------------


def test_update_merges_metadata_and_unsets(store: Store) -> None:
    work = store.session("work")
    info = work.update(model="m1", metadata={"a": 1, "b": {"c": 2}})
    assert (info.model, info.metadata) == ("m1", {"a": 1, "b": {"c": 2}})
    info = work.update(metadata={"b": 3, "d": None})
    assert info.metadata == {"a": 1, "b": 3, "d": None} and info.model == "m1"
    info = work.update(system="be terse", unset=["a", "missing"])
    assert info.metadata == {"b": 3, "d": None} and info.system == "be terse"
    assert work.update(system="").system is None
    # no-op update does not rewrite the file
    path = _transcript(store, "work")
    _set_mtime(path, 1_000_000)
    work.update(metadata={"b": 3})
    assert path.stat().st_mtime == 1_000_000


def test_update_creates_a_session_in_one_write_or_not_at_all(store: Store) -> None:
    from sessionctl.errors import UsageError as Usage

    with pytest.raises(Usage):
        store.session("new").update(metadata={"k": "bad \udcff"})
    with pytest.raises(Usage):
        store.session("new").update(system="bad \udcff")
    assert not store.session("new").exists and store.names() == []
    info = store.session("new").update(
        model="m", system="s", metadata={"a": 1, "b": 2}, unset=["b"]
    )
    assert (info.model, info.system, info.metadata, info.messages) == ("m", "s", {"a": 1}, 0)


def test_rename_moves_everything(store: Store) -> None:
    work = store.session("work")
    work.store("q", "a")
    rejects = store.home / "sessions" / "work.rejects"
    rejects.write_text("x\n")
    store.rename("work", "job")
    assert not work.exists and not rejects.exists()
    assert (store.home / "sessions" / "job.rejects").exists()
    assert [m["content"] for m in store.session("job").messages] == ["q", "a"]
    store.session("other").add_message({"role": "user", "content": "x"})
    with pytest.raises(SessionExists):
        store.rename("job", "other")
    with pytest.raises(SessionExists):
        store.rename("job", "OTHER")
    with pytest.raises(SessionNotFound):
        store.rename("ghost", "new")
    store.rename("job", "JOB")  # a case-only rename of itself is fine
    assert store.session("JOB").exists


def test_invalid_names_are_usage_errors(store: Store) -> None:
    for bad in ("", "..", "../x", "a/b", ".hidden", "-rf", "x" * 129, "a\x00b", "a\nb", "é"):
        with pytest.raises(UsageError, match="names are 1-128"):
            store.session(bad)
    store.session("x" * 128).add_message({"role": "user", "content": "ok"})
    store.session("work").add_message({"role": "user", "content": "x"})
    with pytest.raises(SessionExists, match="only in case"):
        store.session("Work").add_message({"role": "user", "content": "x"})
    assert not (store.home / "sessions" / "Work.jsonl").exists()


# -- prune -----------------------------------------------------------------------------


def test_prune_by_last_activity(store: Store) -> None:
    now = time.time()
    for name in ("old", "older", "fresh"):
        store.session(name).add_message({"role": "user", "content": name})
    _set_mtime(_transcript(store, "old"), now - 40 * 86400)
    _set_mtime(_transcript(store, "older"), now - 400 * 86400)
    dry = store.prune("30d", dry_run=True, now=now)
    assert [i.name for i in dry.sessions] == ["older", "old"] and dry.dry_run
    assert store.session("old").exists
    report = store.prune("30d", now=now)
    assert sorted(i.name for i in report.sessions) == ["old", "older"]
    assert [i.name for i in store.list_sessions().sessions] == ["fresh"]
    assert sorted(i.name for i in store.list_sessions(deleted=True).sessions) == ["old", "older"]
    # --purge also empties trash entries deleted longer ago than the cutoff
    later = now + 31 * 86400
    _set_mtime(_transcript(store, "fresh"), later)
    purged = store.prune("30d", purge=True, now=later)
    assert purged.sessions == [] and sorted(i.name for i in purged.trash) == ["old", "older"]
    assert store.list_sessions(deleted=True).sessions == []
    with pytest.raises(UsageError):
        store.prune("0d")
    with pytest.raises(UsageError):
        store.prune("-5d")


# -- listing -----------------------------------------------------------------------------


def test_list_pages_are_stable_with_ties_broken_by_name(store: Store) -> None:
    names = [f"s{i:02d}" for i in range(7)]
    for name in names:
        store.session(name).add_message({"role": "user", "content": name})
    base = time.time() - 1000
    for i, name in enumerate(names):
        _set_mtime(_transcript(store, name), base + (10 if i >= 3 else 0))  # two tied groups
    expected = ["s03", "s04", "s05", "s06", "s00", "s01", "s02"]
    assert [i.name for i in store.list_sessions().sessions] == expected
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = store.list_sessions(limit=3, cursor=cursor)
        seen += [i.name for i in page.sessions]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected
    # A session written between pages moves to the front: not repeated, nothing skipped.
    first = store.list_sessions(limit=3)
    store.session("s00").add_message({"role": "user", "content": "bump"})
    rest = store.list_sessions(cursor=first.next_cursor)
    assert [i.name for i in rest.sessions] == ["s06", "s01", "s02"]
    assert store.list_sessions(limit=0).sessions == []


@pytest.mark.parametrize("cursor", ["garbage", "", "!!!", "WzEsMl0", "bnVsbA"])
def test_invalid_cursor_is_usage_error(store: Store, cursor: str) -> None:
    store.session("a").add_message({"role": "user", "content": "x"})
    with pytest.raises(UsageError, match="cursor"):
        store.list_sessions(cursor=cursor)


def test_deleted_cursor_is_not_a_live_cursor(store: Store) -> None:
    for name in "abc":
        store.session(name).add_message({"role": "user", "content": name})
        store.delete(name)
    page = store.list_sessions(deleted=True, limit=2)
    assert len(page.sessions) == 2 and page.next_cursor
    rest = store.list_sessions(deleted=True, cursor=page.next_cursor)
    assert len(rest.sessions) == 1
    with pytest.raises(UsageError):
        store.list_sessions(cursor=page.next_cursor)


def test_info_counts_and_fields(store: Store) -> None:
    work = store.session("work")
    work.update(model="m", metadata={"a": 1})
    work.store("q", "a")
    info = work.info()
    d = info.to_dict()
    assert {"name", "messages", "created_at", "updated_at", "model", "parent", "metadata"} <= set(d)
    assert (d["name"], d["messages"], d["model"], d["parent"]) == ("work", 2, "m", None)


def test_random_operations_keep_counts_and_seqs_consistent(store: Store, home: Path) -> None:
    import random

    rng = random.Random(20240601)
    work = store.session("work")
    work.add_message({"role": "user", "content": "seed"})
    used: set[int] = {1}
    forks = 0
    for step in range(150):
        op = rng.choice(["add", "add", "store", "drop", "drop_id", "meta", "torn", "clear", "fork"])
        current = work.get_messages()
        if op == "add":
            used.add(work.add_message({"role": "user", "content": f"s{step}"}).seq)
        elif op == "store":
            used.update(m.seq for m in work.store(f"q{step}", f"a{step}"))
        elif op == "drop" and current:
            assert work.drop().id == current[-1].id
        elif op == "drop_id" and current:
            victim = rng.choice(current)
            assert work.drop(victim.id).id == victim.id
        elif op == "meta":
            work.update(metadata={"step": step})
        elif op == "torn":
            with _transcript(store, "work").open("ab") as f:
                f.write(b'{"type":"message","id":"x","seq":')
        elif op == "clear" and rng.random() < 0.2:
            work.clear()
        elif op == "fork" and forks < 5:
            forks += 1
            child = work.fork(f"f{forks}")
            assert [m["id"] for m in child.messages] != [] or current == []
            assert [m["seq"] for m in child.messages] == [m.seq for m in work.get_messages()]
        messages = work.get_messages()
        seqs = [m.seq for m in messages]
        assert seqs == sorted(set(seqs)), (step, op, seqs)
        assert work.info().messages == len(messages), (step, op)
        assert set(seqs) <= used
        recent = as_dicts(work.get_recent(top_k=3))
        assert [m["id"] for m in recent] == [m.id for m in messages[-3:]], (step, op)
    # a seq, once used, is never handed out again
    assert work.add_message({"role": "user", "content": "last"}).seq == max(used) + 1


def test_prune_skips_a_session_written_while_it_runs(
    store: Store, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.session("busy").add_message({"role": "user", "content": "old"})
    store.session("idle").add_message({"role": "user", "content": "old"})
    for name in ("busy", "idle"):
        _set_mtime(_transcript(store, name), time.time() - 40 * 86400)
    original = store.backend.info

    def info_then_someone_writes(name: str) -> SessionInfo:  # another process chats meanwhile
        result = original(name)
        if name == "busy":
            Store(home).session("busy").add_message({"role": "user", "content": "late"})
        return result

    monkeypatch.setattr(store.backend, "info", info_then_someone_writes)
    report = store.prune("30d")
    assert [i.name for i in report.sessions] == ["idle"]
    assert report.skipped == ["busy"]
    assert [m["content"] for m in store.session("busy").messages] == ["old", "late"]


def test_list_tolerates_a_session_vanishing_mid_listing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b", "c"):
        store.session(name).add_message({"role": "user", "content": name})
    original = files_backend(store).newest

    def newest_then_delete(
        limit: int | None, after: tuple[int, str] | None = None
    ) -> list[tuple[str, int]]:
        found = original(limit, after)
        store.delete("b")
        return found

    monkeypatch.setattr(store.backend, "newest", newest_then_delete)
    assert sorted(i.name for i in store.list_sessions().sessions) == ["a", "c"]


def test_threads_in_one_process_do_not_interleave(store: Store) -> None:
    import threading

    work = store.session("work")
    work.add_message({"role": "system", "content": "start"})
    errors: list[BaseException] = []

    def writer(tag: int) -> None:
        try:
            session = Store(store.home).session("work")  # its own store, like another caller
            for i in range(25):
                session.store(f"t{tag}-{i}?", f"t{tag}-{i}!")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    messages = work.get_messages()
    assert [m.seq for m in messages] == list(range(1, 302))
    assert len({m.id for m in messages}) == 301
    for prompt, answer in zip(messages[1::2], messages[2::2], strict=True):
        assert (prompt.role, answer.role) == ("user", "assistant")
        assert answer.content == prompt.content[:-1] + "!"  # a pair is never split
