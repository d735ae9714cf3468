"""Contract: session settings, whole-session round trips and uncapped reads.

- ``update``: metadata is merged shallowly like Zep (``dict.update``, then the
  ``unset`` keys removed); a ``None`` value is stored as JSON null, not removed;
  model and system prompt are remembered; messages are never touched.
- ``to_dict`` / ``from_dict`` round-trip a session exactly (only ``name`` and
  ``updated_at`` may differ), also into another store of the same backend.
- ``.messages`` is never silently capped (RedisVL caps at 10 or 1000).
- ``rename`` moves the whole session (messages, settings, search) or nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from sessionctl import SessionExists, SessionNotFound, Store, UsageError

if TYPE_CHECKING:
    from contract.conftest import Backend

Reopen = Callable[[Store], Store]


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


# -- metadata -------------------------------------------------------------------------
def test_metadata_merges_shallowly_none_is_null_unset_removes(store: Store, reopen: Reopen) -> None:
    work = store.session("work")
    work.store("q", "a")
    messages = work.messages
    assert work.update(metadata={"a": 1, "b": {"x": 1}, "keep": [1, 2]}).metadata == {
        "a": 1,
        "b": {"x": 1},
        "keep": [1, 2],
    }
    got = work.update(metadata={"b": {"y": 2}, "c": None}, unset=["a"]).metadata
    expected = {"b": {"y": 2}, "keep": [1, 2], "c": None}  # "b" replaced whole, not merged
    assert got == expected and "c" in got
    again = reopen(store).session("work")
    assert again.info().metadata == expected and again.to_dict()["metadata"] == expected
    assert again.messages == messages  # settings never touch the messages


def test_setting_an_existing_key_to_none_keeps_the_key(store: Store, reopen: Reopen) -> None:
    work = store.session("work")
    work.update(metadata={"c": 5, "d": 6})
    assert work.update(metadata={"c": None}).metadata == {"c": None, "d": 6}
    assert reopen(store).session("work").info().metadata == {"c": None, "d": 6}


def test_unset_runs_after_the_merge_and_ignores_missing_keys(store: Store) -> None:
    work = store.session("work")
    work.update(metadata={"a": 1, "b": 2})
    assert work.update(metadata={"a": 9, "z": 0}, unset=["a", "never-set"]).metadata == {
        "b": 2,
        "z": 0,
    }
    assert work.update(unset=["b", "z"]).metadata == {}


def test_keys_are_opaque_strings_and_values_round_trip(store: Store, reopen: Reopen) -> None:
    odd = {
        "a.b": 1,  # not a path
        "a": {"b": 2},
        "": "empty key",
        "ключ 🙂": "юникод\u2028",
        "big": 2**62,
        "float": 0.1,
        "bool": False,
        "list": [None, {"x": []}],
        "$where": "not a query",
    }
    store.session("work").update(metadata=odd)
    assert reopen(store).session("work").info().metadata == odd


def test_update_with_nothing_changes_nothing(store: Store) -> None:
    work = store.session("work")
    work.update(model="m", system="S", metadata={"k": 1})
    work.store("q", "a")
    before = work.to_dict()
    work.update()
    work.update(metadata={})
    work.update(metadata={"k": 1})  # the same value again
    assert work.to_dict() == before


def test_model_and_system_are_remembered(store: Store, reopen: Reopen) -> None:
    work = store.session("work")
    info = work.update(model="m1", system="be brief")
    assert (info.model, info.system, info.messages) == ("m1", "be brief", 0)  # created empty
    work.store("q", "a")
    work.update(model="m2")  # system untouched
    work.update(metadata={"k": 1})  # model and system untouched
    info = reopen(store).session("work").info()
    assert (info.model, info.system, info.metadata, info.messages) == (
        "m2",
        "be brief",
        {"k": 1},
        2,
    )
    assert work.update(system="").system is None  # an empty system prompt clears it
    assert work.info().model == "m2"


_BAD_UPDATES = [
    pytest.param({"metadata": {"k": object()}}, id="metadata not JSON"),
    pytest.param({"metadata": [("k", 1)]}, id="metadata pairs"),
    pytest.param({"metadata": "k=1"}, id="metadata str"),
    pytest.param({"system": "\ud800"}, id="system lone surrogate"),
    pytest.param({"metadata": {"k": "\ud800"}}, id="metadata lone surrogate"),
    pytest.param({"model": 3}, id="model int"),
    pytest.param({"system": ["S"]}, id="system list"),
]


@pytest.mark.parametrize("bad", _BAD_UPDATES)
def test_a_bad_update_is_a_usage_error_and_changes_nothing(
    store: Store, reopen: Reopen, bad: dict[str, Any]
) -> None:
    work = store.session("work")
    work.update(model="m", metadata={"k": 0})
    work.store("q", "a")
    before = work.to_dict()
    with pytest.raises(UsageError):
        work.update(**bad)
    assert reopen(store).session("work").to_dict() == before


def test_unset_given_one_string_is_that_key_or_refused(store: Store) -> None:
    work = store.session("work")
    work.update(metadata={"a": 1, "b": 2, "abc": 3})
    try:
        got = work.update(unset="abc").metadata
    except UsageError:
        assert work.info().metadata == {"a": 1, "b": 2, "abc": 3}
        return
    assert got == {"a": 1, "b": 2}


# -- to_dict / from_dict --------------------------------------------------------------
def _rich(store: Store) -> dict[str, Any]:
    work = store.session("work")
    work.update(model="m1", system="You are terse.", metadata={"team": "a", "gone": None})
    work.store("first 🙂", 'answer\u2028line two\n"quoted"', model="m1", usage={"total": 3})
    work.add_messages(
        [
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function"}]},
            {"role": "tool", "content": "42", "tool_call_id": "c1", "name": "f", "metadata": {}},
            {"role": "assistant", "content": "half an answ", "interrupted": True},
            {"role": "system", "content": "a note", "metadata": {"x": [1, None]}},
        ]
    )
    work.drop(work.messages[1]["id"])  # a gap in the seqs
    return work.to_dict()


def _same_but_name(a: dict[str, Any], b: dict[str, Any]) -> None:
    ignore = {"name", "updated_at"}
    assert {k: v for k, v in a.items() if k not in ignore} == {
        k: v for k, v in b.items() if k not in ignore
    }


def test_to_dict_from_dict_round_trips_exactly(store: Store, reopen: Reopen) -> None:
    data = _rich(store)
    assert [m["seq"] for m in data["messages"]] == [1, 3, 4, 5, 6]
    assert json.loads(json.dumps(data)) == data  # JSON-ready
    copy = store.from_dict(json.loads(json.dumps(data)), name="copy")
    got = reopen(store).session("copy").to_dict()
    assert got["name"] == "copy"
    _same_but_name(got, data)
    assert copy.add_message(_user("next")).seq == 7


def test_from_dict_into_another_store_of_the_backend(
    store: Store, backend: Backend, tmp_path: Path
) -> None:
    data = _rich(store)
    other = backend.make(tmp_path / "other")
    _same_but_name(other.from_dict(data).to_dict(), data)
    assert other.session("work").to_dict()["name"] == "work"


def test_a_fork_round_trips_its_lineage(store: Store) -> None:
    _rich(store)
    fork = store.fork("work", "alt", at=store.session("work").messages[1]["id"])
    data = fork.to_dict()
    assert (data["parent"], data["parent_message"]) == ("work", fork.info().parent_message)
    _same_but_name(store.from_dict(data, name="alt-copy").to_dict(), data)


def test_from_dict_onto_a_taken_name_or_twin_changes_nothing(store: Store) -> None:
    data = _rich(store)
    for name in (None, "work", "WORK"):
        with pytest.raises(SessionExists):
            store.from_dict(data, name=name)
    assert store.session("work").to_dict() == data
    assert [i.name for i in store.list_sessions().sessions] == ["work"]


@pytest.mark.parametrize(
    "messages",
    [
        [_user("ok"), {"role": "robot", "content": "x"}],
        [{**_user("a"), "seq": 2}, {**_user("b"), "seq": 1}],
        [{**_user("a"), "seq": 1}, {**_user("b"), "seq": 1}],
        [{**_user("a"), "id": "X"}, {**_user("b"), "id": "X"}],
        [{**_user("a"), "seq": 0}],
        [{**_user("a"), "seq": True}],
        "not a list",
    ],
    ids=["bad role", "seq decreasing", "seq repeated", "id repeated", "seq 0", "seq bool", "str"],
)
def test_from_dict_with_bad_data_creates_nothing(store: Store, messages: Any) -> None:
    with pytest.raises(UsageError):
        store.from_dict({"messages": messages}, name="new")
    assert not store.session("new").exists
    assert store.list_sessions().sessions == []


# -- never capped -----------------------------------------------------------------------
def test_messages_are_never_silently_capped(store: Store, reopen: Reopen) -> None:
    work = store.session("work")
    for start in range(0, 1500, 250):
        work.add_messages([_user(f"m{i}") for i in range(start, start + 250)])
    again = reopen(store).session("work")
    messages = again.messages
    assert len(messages) == 1500 and again.info().messages == 1500
    assert [m["seq"] for m in messages] == list(range(1, 1501))
    assert [m["content"] for m in messages] == [f"m{i}" for i in range(1500)]
    assert len(again.get_recent(top_k=1500)) == 1500
    assert again.get_recent(top_k=5000, as_text=True) == [f"m{i}" for i in range(1500)]
    assert len(again.to_dict()["messages"]) == 1500
    assert len(store.fork("work", "alt").messages) == 1500


# -- rename -----------------------------------------------------------------------------
def test_rename_moves_the_whole_session(store: Store, reopen: Reopen) -> None:
    data = _rich(store)
    assert store.get_relevant("first", sessions=["work"], top_k=1)  # indexed under the old name
    renamed = store.rename("work", "renamed")
    got = reopen(store).session("renamed").to_dict()
    assert got["name"] == "renamed"
    _same_but_name(got, data)
    assert not store.session("work").exists
    hits = store.get_relevant("first 🙂", top_k=10, distance_threshold=2.0)
    assert {h["session"] for h in hits if isinstance(h, dict)} == {"renamed"}
    assert renamed.add_message(_user("next")).seq == 7


def test_rename_onto_a_taken_name_or_from_nothing_changes_nothing(store: Store) -> None:
    store.session("a").add_message(_user("a"))
    store.session("b").add_message(_user("b"))
    before = {n: store.session(n).to_dict() for n in ("a", "b")}
    for target in ("b", "B"):
        with pytest.raises(SessionExists):
            store.rename("a", target)
    with pytest.raises(SessionNotFound):
        store.rename("ghost", "c")
    assert {n: store.session(n).to_dict() for n in ("a", "b")} == before
    assert sorted(i.name for i in store.list_sessions().sessions) == ["a", "b"]
