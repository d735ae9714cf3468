"""Contract: fork (DESIGN §5 `fork`, §8; backend/base.py ``SessionStore.fork``).

A fork copies the source up to and including message ``at`` (default: all)
with the same seqs and fresh ids, records ``parent`` (the source's name) and
``parent_message`` (the source's id of the last message copied), copies
model/system/metadata, leaves the source unchanged, and is a snapshot: later
writes to either side stay there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sessionctl import MessageNotFound, SessionExists, SessionNotFound, Store

Reopen = Callable[[Store], Store]


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _without_id(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if k != "id"} for m in messages]


def _source(store: Store) -> list[dict[str, Any]]:
    work = store.session("work")
    work.update(model="m1", system="be brief", metadata={"team": "a", "n": None})
    work.store("what is a fork?", "a copy that remembers its parent", model="m1")
    work.add_messages(
        [
            {"role": "user", "content": "and a tool?", "metadata": {"k": 1}},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function"}]},
            {"role": "tool", "content": "42", "tool_call_id": "c1", "name": "f"},
            _user("last"),
        ]
    )
    messages: list[dict[str, Any]] = work.to_dict()["messages"]
    return messages


@pytest.mark.parametrize("cut", [None, 0, 2, 5], ids=["all", "first", "middle", "last"])
def test_fork_copies_up_to_at_with_same_seqs_and_fresh_ids(
    store: Store, reopen: Reopen, cut: int | None
) -> None:
    source = _source(store)
    before = store.session("work").to_dict()
    at = None if cut is None else source[cut]["id"]
    fork = store.fork("work", "alt", at=at)
    copied = source if cut is None else source[: cut + 1]
    got = reopen(store).session("alt").to_dict()
    assert _without_id(got["messages"]) == _without_id(copied)  # same seqs, contents, fields
    ids = {m["id"] for m in got["messages"]}
    assert len(ids) == len(copied) and not ids & {m["id"] for m in source}  # fresh, unique
    info = fork.info()
    # parent_message: the source's id of the last message copied (``at`` when given)
    assert (info.parent, info.parent_message) == ("work", copied[-1]["id"])
    assert at is None or info.parent_message == at
    assert (info.model, info.system, info.metadata) == ("m1", "be brief", {"team": "a", "n": None})
    assert info.messages == len(copied)
    assert store.session("work").to_dict() == before  # the source is unchanged


def test_fork_keeps_the_gaps_of_dropped_messages(store: Store) -> None:
    work = store.session("work")
    written = work.add_messages([_user(f"m{i}") for i in range(5)])
    work.drop(written[1].id)
    work.drop()
    assert [m["seq"] for m in work.fork("alt").messages] == [1, 3, 4]


def test_fork_is_a_snapshot_both_ways(store: Store) -> None:
    _source(store)
    alt = store.fork("work", "alt", at=store.session("work").messages[1]["id"])
    fork_before = alt.to_dict()
    store.session("work").add_message(_user("only in the source"))
    assert alt.to_dict() == fork_before
    source_before = store.session("work").to_dict()
    new = alt.add_message(_user("only in the fork"))
    assert new.seq == 3  # the fork's own counter continues after what it copied
    store.session("work").drop()
    alt.drop(alt.messages[0]["id"])
    assert store.session("work").to_dict()["messages"] == source_before["messages"][:-1]
    assert [m["content"] for m in alt.messages] == [
        fork_before["messages"][1]["content"],
        new.content,
    ]


def test_fork_of_an_empty_session(store: Store) -> None:
    store.session("empty").update(system="S")
    fork = store.fork("empty", "alt")
    info = fork.info()
    assert (info.messages, info.parent, info.parent_message, info.system) == (0, "empty", None, "S")
    assert fork.add_message(_user("x")).seq == 1


def test_fork_at_an_unknown_id_creates_nothing(store: Store) -> None:
    _source(store)
    other = store.session("other").add_message(_user("elsewhere")).id
    for at in ("01ZZZZZZZZZZZZZZZZZZZZZZZZ", other, ""):
        with pytest.raises(MessageNotFound):
            store.fork("work", "alt", at=at)
        assert not store.session("alt").exists
    assert [i.name for i in store.list_sessions().sessions] == ["other", "work"]


def test_fork_onto_a_taken_name_or_a_case_twin_touches_nothing(store: Store) -> None:
    _source(store)
    store.session("taken").store("mine", "keep")
    before = store.session("taken").to_dict()
    for target in ("taken", "TAKEN", "Work", "work"):
        with pytest.raises(SessionExists):
            store.fork("work", target)
    assert store.session("taken").to_dict() == before
    assert sorted(i.name for i in store.list_sessions().sessions) == ["taken", "work"]


def test_fork_of_a_missing_or_deleted_source(store: Store) -> None:
    with pytest.raises(SessionNotFound):
        store.fork("ghost", "alt")
    store.session("gone").store("q", "a")
    store.delete("gone")
    with pytest.raises(SessionNotFound):
        store.fork("gone", "alt")
    assert not store.session("alt").exists


def test_forks_relevant_search_finds_its_own_copies(store: Store) -> None:
    """The fork is searchable at once: its hits are its own messages (fresh ids), at the
    source's distances, and nothing after ``at``. (Whether vectors were copied or
    re-embedded is not observable through the API, so it is not asserted.)"""
    work = store.session("work")
    work.add_messages(
        [
            _user("The ferry to the island leaves at noon."),
            _user("My sister's cat is called Miso."),
            _user("The ferry ticket costs twelve euros."),
        ]
    )
    query = "when does the boat depart?"
    source_hits = work.get_relevant(query, top_k=3, distance_threshold=2.0)
    alt = store.fork("work", "alt", at=work.messages[1]["id"])
    hits = alt.get_relevant(query, top_k=3, distance_threshold=2.0)
    assert isinstance(hits[0], dict) and isinstance(source_hits[0], dict)
    alt_ids = {m["id"]: m["seq"] for m in alt.messages}
    assert [(h["session"], alt_ids[h["id"]]) for h in hits] == [("alt", 1), ("alt", 2)]
    expected = {h["seq"]: h["distance"] for h in source_hits}
    for hit in hits:
        assert hit["distance"] == pytest.approx(expected[hit["seq"]], abs=1e-3)
