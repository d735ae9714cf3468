"""Contract: seq, append atomicity, drop and clear (DESIGN §4, §8; backend/base.py).

- seq is per session, strictly increasing, never reused: not after a drop of
  the last message or of one by id, not after clear, not from another Store.
- a multi-message append is all or nothing (a bad message: nothing written)
  and contiguous, also under concurrent writers.
- drop removes exactly one message; an unknown id or an empty session is
  MessageNotFound (never RedisVL's IndexError); a missing session SessionNotFound.
- clear empties one session only, never another's, and keeps its settings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from sessionctl import Message, MessageNotFound, SessionNotFound, Store, UsageError

Reopen = Callable[[Store], Store]


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _public(messages: list[Message]) -> list[dict[str, Any]]:
    """Every stored field of each message (``pos`` is a backend's bookkeeping, not compared)."""
    return [m.to_dict(raw=True) for m in messages]


def _seqs(store: Store, name: str) -> list[int]:
    return [m["seq"] for m in store.session(name).messages]


# -- seq --------------------------------------------------------------------------
def test_seq_starts_at_one_and_is_per_session(store: Store) -> None:
    a, b = store.session("a"), store.session("b")
    assert [m.seq for m in a.add_messages([_user("1"), _user("2")])] == [1, 2]
    assert b.add_message(_user("x")).seq == 1  # b has its own counter
    assert a.add_message(_user("3")).seq == 3
    assert _seqs(store, "a") == [1, 2, 3] and _seqs(store, "b") == [1]


def test_ids_are_unique_and_seq_orders_messages(store: Store) -> None:
    work = store.session("work")
    for i in range(5):
        work.store(f"q{i}", f"a{i}")
    messages = work.messages
    assert len({m["id"] for m in messages}) == 10
    assert [m["seq"] for m in messages] == list(range(1, 11))
    assert [m["content"] for m in messages] == [x for i in range(5) for x in (f"q{i}", f"a{i}")]


Operation = Callable[[Any], object]
_OPS: dict[str, Operation] = {
    "drop last": lambda s: s.drop(),
    "drop last by id": lambda s: s.drop(s.messages[-1]["id"]),
    "drop middle by id": lambda s: s.drop(s.messages[1]["id"]),
    "drop first by id": lambda s: s.drop(s.messages[0]["id"]),
    "clear": lambda s: s.clear(),
    "drop every message": lambda s: [s.drop() for _ in range(len(s.messages))],
}


@pytest.mark.parametrize("fresh_store", [False, True], ids=["same-store", "reopened"])
@pytest.mark.parametrize("op", sorted(_OPS))
def test_seq_never_reused_after_removal(
    store: Store, reopen: Reopen, op: str, fresh_store: bool
) -> None:
    work = store.session("work")
    handed_out = [m.seq for m in work.add_messages([_user(str(i)) for i in range(4)])]
    _OPS[op](work)
    if fresh_store:  # another process: nothing held in memory may be what keeps the seq
        work = reopen(store).session("work")
    after = work.add_messages([_user("next"), _user("and next")])
    assert [m.seq for m in after] == [max(handed_out) + 1, max(handed_out) + 2], op
    assert _seqs(store, "work") == sorted(set(_seqs(store, "work")))


def test_seq_never_reused_after_repeated_drop_and_append(store: Store) -> None:
    """Undo-then-retry cycles: every seq is new, the counter never goes back."""
    work = store.session("work")
    seen = [work.add_message(_user("first")).seq]
    for round_ in range(6):
        work.drop() if round_ % 2 else work.drop(work.messages[-1]["id"])
        seen.append(work.add_message(_user(f"retry {round_}")).seq)
        seen.append(work.add_message(_user(f"more {round_}")).seq)
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    work.clear()
    assert work.add_message(_user("after clear")).seq == max(seen) + 1


# -- all or nothing ---------------------------------------------------------------
_BAD_MESSAGES = [
    pytest.param({"role": "robot", "content": "x"}, id="unknown role"),
    pytest.param({"content": "x"}, id="no role"),
    pytest.param({"role": None, "content": "x"}, id="role None"),
    pytest.param({"role": "user", "content": b"bytes"}, id="content bytes"),
    pytest.param({"role": "user", "content": 3}, id="content int"),
    pytest.param({"role": "user", "content": "x", "colour": "red"}, id="unknown field"),
    pytest.param({"role": "user", "content": "x", "metadata": [1, 2]}, id="metadata list"),
    pytest.param({"role": "user", "content": "\ud800"}, id="lone surrogate"),
    pytest.param(
        {"role": "user", "content": "x", "metadata": {"k": object()}}, id="metadata not JSON"
    ),
    pytest.param({"role": "user", "content": "x", "usage": "lots"}, id="usage str"),
    pytest.param(
        {"role": "assistant", "content": "x", "tool_calls": {"id": 1}}, id="tool_calls dict"
    ),
    pytest.param({"role": "tool", "content": "x", "name": 3}, id="name int"),
    pytest.param({"role": "assistant", "content": "x", "model": ["m"]}, id="model list"),
]


@pytest.mark.parametrize("bad", _BAD_MESSAGES)
def test_batch_with_a_bad_message_writes_nothing(
    store: Store, reopen: Reopen, bad: dict[str, Any]
) -> None:
    work = store.session("work")
    work.store("before", "kept")
    before = work.to_dict()
    with pytest.raises(UsageError):
        work.add_messages([_user("good one"), bad, _user("good two")])
    assert work.to_dict() == before  # nothing written, header untouched
    assert reopen(store).session("work").to_dict() == before
    assert work.add_message(_user("next")).seq == 3


_WRONG_TYPES = [
    pytest.param(p.values[0], id=p.id)
    for p in _BAD_MESSAGES
    if p.id in ("usage str", "tool_calls dict", "name int", "model list")
]


@pytest.mark.parametrize("odd", _WRONG_TYPES)
def test_an_acknowledged_batch_is_never_lost_nor_its_seqs_reused(
    store: Store, reopen: Reopen, odd: dict[str, Any]
) -> None:
    """Refused (UsageError, nothing written) or kept: never acknowledged, then lost."""
    work = store.session("work")
    work.store("before", "kept")
    before = work.to_dict()
    try:
        acked = work.add_messages([_user("good one"), odd])
    except UsageError:
        assert work.to_dict() == before
        return
    assert work.add_message(_user("next")).seq == acked[-1].seq + 1  # no seq handed out twice
    assert _public(reopen(store).session("work").get_messages()[-3:-1]) == _public(acked)


@pytest.mark.parametrize("bad", _BAD_MESSAGES[:3])
def test_bad_first_batch_creates_no_session(store: Store, bad: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        store.session("new").add_messages([_user("fine"), bad])
    assert not store.session("new").exists
    assert [i.name for i in store.list_sessions().sessions] == []


def test_acknowledged_append_is_readable_and_keeps_every_field(
    store: Store, reopen: Reopen
) -> None:
    work = store.session("work")
    sent: list[dict[str, Any]] = [
        {"role": "user", "content": 'a\u2028b\x00c 🙂\n"q"', "metadata": {"k": [1, {"x": None}]}},
        {
            "role": "assistant",
            "content": "",
            "model": "m",
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f"}}],
        },
        {"role": "tool", "content": "42", "tool_call_id": "c1", "name": "f"},
        {"role": "llm", "content": "alias of assistant"},
    ]
    written = work.add_messages(sent)
    read = reopen(store).session("work").get_messages()
    assert _public(read) == _public(written)
    assert [m.role for m in read] == ["user", "assistant", "tool", "assistant"]
    assert read[0].content == sent[0]["content"] and read[0].metadata == sent[0]["metadata"]
    assert read[1].usage == sent[1]["usage"] and read[1].tool_calls == sent[1]["tool_calls"]


def test_empty_batch_writes_no_message(store: Store) -> None:
    work = store.session("work")
    work.store("q", "a")
    assert work.add_messages([]) == []
    assert _seqs(store, "work") == [1, 2]
    assert work.add_message(_user("next")).seq == 3


@pytest.mark.parametrize("shared", [True, False], ids=["one-store", "store-per-thread"])
def test_concurrent_batches_are_contiguous_and_none_lost(
    store: Store, reopen: Reopen, shared: bool
) -> None:
    writers, batches, size = 4, 8, 5
    store.session("work").add_message(_user("seed"))
    results: dict[tuple[int, int], list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def write(w: int) -> None:
        own = store if shared else reopen(store)
        try:
            start.wait()
            for b in range(batches):
                batch = [_user(f"w{w} b{b} m{i}") for i in range(size)]
                results[(w, b)] = [m.seq for m in own.session("work").add_messages(batch)]
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    total = 1 + writers * batches * size
    messages = store.session("work").messages
    assert [m["seq"] for m in messages] == list(range(1, total + 1))  # none lost or duplicated
    by_seq = {m["seq"]: m["content"] for m in messages}
    for (w, b), seqs in results.items():
        assert seqs == list(range(seqs[0], seqs[0] + size)), (w, b, seqs)  # contiguous
        assert [by_seq[s] for s in seqs] == [f"w{w} b{b} m{i}" for i in range(size)]


# -- drop -------------------------------------------------------------------------
def test_drop_by_id_removes_exactly_that_message(store: Store) -> None:
    work = store.session("work")
    written = work.add_messages([_user(f"m{i}") for i in range(5)])
    dropped = work.drop(written[2].id)
    assert _public([dropped]) == _public([written[2]])
    kept = [written[i] for i in (0, 1, 3, 4)]
    assert _public(work.get_messages()) == _public(kept)  # ids, seqs, contents as they were
    assert work.info().messages == 4


def test_drop_without_id_removes_the_last_and_returns_it(store: Store) -> None:
    work = store.session("work")
    user, answer = work.store("q", "a")
    assert _public([work.drop()]) == _public([answer])
    assert _public(work.get_messages()) == _public([user])
    assert _public([work.drop()]) == _public([user])
    assert work.messages == []


_MISSING_ID = "01ZZZZZZZZZZZZZZZZZZZZZZZZ"


def test_drop_unknown_id_is_message_not_found_and_changes_nothing(store: Store) -> None:
    work, other = store.session("work"), store.session("other")
    work.store("q", "a")
    foreign = other.add_message(_user("not yours")).id
    before = work.to_dict()
    for bad in (_MISSING_ID, foreign, "", "not an id"):
        with pytest.raises(MessageNotFound):
            work.drop(bad)
    assert work.to_dict() == before
    assert other.messages[0]["id"] == foreign


def test_drop_twice_the_same_id(store: Store) -> None:
    work = store.session("work")
    first = work.store("q", "a")[0]
    work.drop(first.id)
    with pytest.raises(MessageNotFound):
        work.drop(first.id)
    assert work.get_recent(as_text=True) == ["a"]


@pytest.mark.parametrize("with_id", [False, True], ids=["last", "by-id"])
def test_drop_on_an_empty_session_is_message_not_found_not_index_error(
    store: Store, with_id: bool
) -> None:
    """RedisVL's drop() on an empty session raises IndexError; the contract is MessageNotFound."""
    empty = store.session("empty")
    empty.update(system="exists, but no messages")
    for _ in range(2):  # emptied by drops and by clear too
        with pytest.raises(MessageNotFound) as caught:
            empty.drop(_MISSING_ID) if with_id else empty.drop()
        assert not isinstance(caught.value, IndexError)
        assert caught.value.exit_code == 3
        empty.store("q", "a")
        empty.clear()
    assert empty.info().system == "exists, but no messages"


@pytest.mark.parametrize("with_id", [False, True], ids=["last", "by-id"])
def test_drop_on_a_missing_session_is_session_not_found_and_creates_nothing(
    store: Store, with_id: bool
) -> None:
    ghost = store.session("ghost")
    with pytest.raises(SessionNotFound):
        ghost.drop(_MISSING_ID) if with_id else ghost.drop()
    assert not ghost.exists


# -- clear ------------------------------------------------------------------------
def test_clear_empties_one_session_only(store: Store) -> None:
    names = ["work", "work2", "work.old", "Work-x", "other"]
    for name in names:
        store.session(name).store(f"{name} q", f"{name} a")
    before = {n: store.session(n).to_dict() for n in names}
    assert store.session("work").clear() == 2
    assert store.session("work").messages == []
    for name in names[1:]:
        assert store.session(name).to_dict() == before[name], name
    listed = {i.name: i.messages for i in store.list_sessions().sessions}
    assert listed == {"work": 0, **{n: 2 for n in names[1:]}}


def test_clear_keeps_the_session_and_its_settings(store: Store) -> None:
    work = store.session("work")
    work.update(model="m", system="S", metadata={"k": 1})
    work.store("q", "a")
    assert work.clear() == 2
    assert work.clear() == 0  # already empty: nothing to remove, no error
    info = work.info()
    assert (work.exists, info.messages, info.model, info.system, info.metadata) == (
        True,
        0,
        "m",
        "S",
        {"k": 1},
    )


def test_clear_a_missing_session_is_session_not_found(store: Store) -> None:
    with pytest.raises(SessionNotFound):
        store.session("ghost").clear()
    assert not store.session("ghost").exists


@pytest.mark.parametrize("move", ["rename", "delete and restore"])
def test_seq_never_reused_after_the_session_moves(store: Store, move: str) -> None:
    work = store.session("work")
    work.add_messages([_user("1"), _user("2"), _user("3")])
    work.drop()
    if move == "rename":
        store.rename("work", "moved")
        work = store.session("moved")
    else:
        store.delete("work")
        work = store.restore("work")
    assert work.add_message(_user("next")).seq == 4


def test_concurrent_appends_and_drops_never_hand_out_a_seq_twice(store: Store) -> None:
    store.session("work").add_message(_user("seed"))
    handed: list[list[int]] = [[], []]
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def append(w: int) -> None:
        try:
            start.wait()
            for i in range(25):
                handed[w] += [
                    m.seq for m in store.session("work").add_messages([_user(f"{w}{i}")] * 2)
                ]
        except BaseException as exc:
            errors.append(exc)

    def drop() -> None:
        try:
            start.wait()
            for _ in range(25):
                try:
                    store.session("work").drop()
                except MessageNotFound:
                    pass  # emptied by the drops: allowed, and the contract's error
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(w,)) for w in (0, 1)]
    threads.append(threading.Thread(target=drop))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    every = handed[0] + handed[1]
    assert len(every) == 100 and len(set(every)) == 100  # no seq handed out twice
    left = _seqs(store, "work")
    assert left == sorted(set(left)) and set(left) <= {1, *every}
    assert store.session("work").add_message(_user("last")).seq == max(every) + 1


def test_racing_first_writes_create_one_session_with_every_message(
    store: Store, reopen: Reopen
) -> None:
    writers = 6
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(w: int) -> None:
        try:
            own = reopen(store)
            start.wait()
            own.session("fresh").add_messages([_user(f"w{w} a"), _user(f"w{w} b")])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert [i.name for i in store.list_sessions().sessions] == ["fresh"]
    assert _seqs(store, "fresh") == list(range(1, 2 * writers + 1))
