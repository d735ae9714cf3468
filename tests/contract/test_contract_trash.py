"""Contract: soft delete, restore, purge and prune (DESIGN §5, §8; backend/base.py trash).

- A deleted session is never listed (live), read or searched; ``list --deleted``
  shows it with an opaque trash id. Several deleted sessions may share a name.
- ``restore`` brings back the newest deletion of a name (or the given trash id),
  whole, with the activity it had; it refuses (SessionExists, nothing moved)
  when a live session or a case twin holds the name.
- ``purge`` removes for good: not restorable, and nothing of it is ever found again.
- ``prune`` is by last activity: a dry run lists exactly what the real run
  removes; a session written after the cutoff is kept; rename and restore are
  not activity. Time is moved with ``prune(now=...)``, never slept away.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from sessionctl import SessionExists, SessionNotFound, Store, UsageError

Tick = Callable[[], float]
HOUR = 3600.0


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _live(store: Store) -> list[str]:
    return [i.name for i in store.list_sessions().sessions]


def _trash(store: Store) -> list[tuple[str, str | None]]:
    return [(i.name, i.trash_id) for i in store.list_sessions(deleted=True).sessions]


def _found(store: Store, query: str) -> list[tuple[str, str]]:
    hits = store.get_relevant(query, top_k=50, distance_threshold=2.0)
    return [(h["session"], h["content"]) for h in hits if isinstance(h, dict)]


# -- soft delete ------------------------------------------------------------------
def test_a_deleted_session_is_never_listed_read_or_searched(store: Store) -> None:
    store.session("keep").store("the lighthouse keeper", "lives on the rock")
    gone = store.session("gone")
    gone.store("the secret lighthouse code", "is 4711")
    assert ("gone", "the secret lighthouse code") in _found(store, "lighthouse")  # indexed
    trash_id = store.delete("gone")
    assert isinstance(trash_id, str) and trash_id
    assert not gone.exists and _live(store) == ["keep"]
    assert _trash(store) == [("gone", trash_id)]
    assert all(session == "keep" for session, _ in _found(store, "lighthouse code"))
    with pytest.raises(SessionNotFound):
        store.get_relevant("lighthouse", sessions=["gone"])
    for read in (
        lambda: gone.messages,
        lambda: gone.get_recent(),
        lambda: gone.info(),
        lambda: gone.to_dict(),
        lambda: store.existing("gone"),
    ):
        with pytest.raises(SessionNotFound):
            read()
    most_recent = store.most_recent()
    assert most_recent is not None and most_recent.name == "keep"


def test_delete_leaves_every_other_session_alone(store: Store) -> None:
    names = ["work", "work2", "Work.x", "other"]
    for name in names:
        store.session(name).store(f"{name} q", f"{name} a")
    before = {n: store.session(n).to_dict() for n in names[1:]}
    store.delete("work")
    assert {n: store.session(n).to_dict() for n in names[1:]} == before


def test_delete_or_purge_a_missing_session_is_session_not_found(store: Store) -> None:
    for purge in (False, True):
        with pytest.raises(SessionNotFound):
            store.delete("ghost", purge=purge)
    assert _trash(store) == [] and _live(store) == []


def test_restore_brings_the_session_back_whole(store: Store) -> None:
    work = store.session("work")
    work.update(model="m", system="S", metadata={"k": [1]})
    work.store("where is the spare key?", "under the blue flowerpot")
    before = work.to_dict()
    store.delete("work")
    restored = store.restore("work")
    assert restored.to_dict() == before
    assert _trash(store) == []
    assert ("work", "under the blue flowerpot") in _found(store, "spare key location")
    assert restored.add_message(_user("next")).seq == 3


def test_several_deleted_sessions_share_a_name_restore_takes_the_newest(store: Store) -> None:
    trash_ids = []
    for version in ("v1", "v2", "v3"):
        store.session("x").add_message(_user(version))
        trash_ids.append(store.delete("x"))
    assert len(set(trash_ids)) == 3
    assert [name for name, _ in _trash(store)] == ["x", "x", "x"]
    assert store.restore("x").get_recent(as_text=True) == ["v3"]
    # With the name live again, neither the newest left nor a given id may replace it.
    for trash_id in (None, trash_ids[0]):
        with pytest.raises(SessionExists):
            store.restore("x", trash_id)
    assert store.session("x").get_recent(as_text=True) == ["v3"]
    store.rename("x", "x3")
    assert store.restore("x", trash_ids[0]).get_recent(as_text=True) == ["v1"]
    assert _trash(store) == [("x", trash_ids[1])]


def test_restore_refuses_when_a_case_twin_holds_the_name(store: Store) -> None:
    store.session("Notes").add_message(_user("old"))
    store.delete("Notes")
    store.session("notes").add_message(_user("new"))
    before = store.session("notes").to_dict()
    with pytest.raises(SessionExists):
        store.restore("Notes")
    assert store.session("notes").to_dict() == before
    assert [name for name, _ in _trash(store)] == ["Notes"]
    assert not store.session("Notes").exists


def test_restore_of_nothing_is_session_not_found(store: Store) -> None:
    store.session("a").add_message(_user("a"))
    a_id = store.delete("a")
    store.session("b").add_message(_user("b"))
    with pytest.raises(SessionNotFound):
        store.restore("never-existed")
    with pytest.raises(SessionNotFound):
        store.restore("b")  # live, not deleted
    with pytest.raises(SessionNotFound):
        store.restore("b", a_id)  # a trash id of another name
    with pytest.raises(SessionNotFound):
        store.restore("a", "01ZZZZZZZZZZZZZZZZZZZZZZZZ")
    assert _trash(store) == [("a", a_id)]


def test_purge_removes_for_good_and_nothing_of_it_is_found_again(store: Store) -> None:
    old = store.session("x")
    old.store("the vault combination", "is 31-7-42")
    assert _found(store, "vault combination")  # its vectors exist
    assert store.delete("x", purge=True) is None
    assert not old.exists and _trash(store) == []
    with pytest.raises(SessionNotFound):
        store.restore("x")
    # A new session under the same name starts empty and never meets the old vectors.
    new = store.session("x")
    new.add_message(_user("groceries: milk and eggs"))
    assert new.get_messages()[0].seq == 1
    assert _found(store, "vault combination") == [("x", "groceries: milk and eggs")]


def test_a_new_session_under_a_deleted_name_never_returns_the_deleted_messages(
    store: Store,
) -> None:
    store.session("x").store("the vault combination", "is 31-7-42")
    assert _found(store, "vault")
    store.delete("x")
    store.session("x").add_message(_user("groceries: milk and eggs"))
    assert _found(store, "vault combination") == [("x", "groceries: milk and eggs")]
    assert store.session("x").info().messages == 1


# -- prune ------------------------------------------------------------------------
def _names(report_rows: list[Any]) -> list[str]:
    return sorted(i.name for i in report_rows)


def test_prune_dry_run_lists_exactly_what_the_real_run_removes(store: Store, tick: Tick) -> None:
    for name in ("old-a", "old-b", "old-c", "old-but-written"):
        store.session(name).store("q", "a")
    cutoff = tick()
    store.session("new").add_message(_user("after the cutoff"))
    store.session("old-but-written").add_message(_user("after the cutoff too"))
    dry = store.prune("1h", dry_run=True, now=cutoff + HOUR)
    assert _names(dry.sessions) == ["old-a", "old-b", "old-c"]
    assert len(_live(store)) == 5 and _trash(store) == []  # a dry run changes nothing
    real = store.prune("1h", now=cutoff + HOUR)
    assert _names(real.sessions) == _names(dry.sessions) and real.skipped == []
    assert sorted(_live(store)) == ["new", "old-but-written"]
    assert sorted(name for name, _ in _trash(store)) == _names(dry.sessions)  # restorable
    assert store.prune("1h", now=cutoff + HOUR).sessions == []  # nothing left to prune


def test_prune_keeps_what_was_written_after_the_cutoff(store: Store, tick: Tick) -> None:
    store.session("a").add_message(_user("a"))
    after_a = tick()
    # Just before the write: the session is newer than the cutoff, so kept.
    assert store.prune(timedelta(hours=1), now=after_a - 0.03 + HOUR).sessions == []
    assert _names(store.prune(timedelta(hours=1), now=after_a + HOUR).sessions) == ["a"]


_WRITES: dict[str, Callable[[Any], object]] = {
    "add_message": lambda s: s.add_message(_user("late")),
    "store": lambda s: s.store("late q", "late a"),
    "drop last": lambda s: s.drop(),
    "drop by id": lambda s: s.drop(s.messages[0]["id"]),
    "clear": lambda s: s.clear(),
    "update metadata": lambda s: s.update(metadata={"late": True}),
    "update system": lambda s: s.update(system="late"),
}


@pytest.mark.parametrize("write", sorted(_WRITES))
def test_last_activity_is_never_older_than_the_newest_write(
    store: Store, tick: Tick, write: str
) -> None:
    store.session("old").store("q", "a")
    store.session("older-still").add_message(_user("x"))
    store.session("old").store("q2", "a2")
    cutoff = tick()
    _WRITES[write](store.session("old"))
    assert _live(store)[0] == "old"
    report = store.prune("1h", now=cutoff + HOUR)
    assert _names(report.sessions) == ["older-still"]
    assert _live(store) == ["old"]


def test_rename_is_not_activity(store: Store, tick: Tick) -> None:
    store.session("before").store("q", "a")
    cutoff = tick()
    store.rename("before", "after")
    store.session("control").add_message(_user("written after the cutoff"))
    report = store.prune("1h", now=cutoff + HOUR)
    assert _names(report.sessions) == ["after"]
    assert _live(store) == ["control"]


def test_restore_is_not_activity(store: Store, tick: Tick) -> None:
    store.session("r").store("q", "a")
    store.session("s").store("q", "a")
    store.delete("r")
    cutoff = tick()
    store.restore("r")
    assert _live(store) == ["s", "r"]  # r keeps its older activity in the listing order
    assert _names(store.prune("1h", now=cutoff + HOUR).sessions) == ["r", "s"]


def test_prune_purge_removes_for_good_and_empties_old_trash(store: Store, tick: Tick) -> None:
    store.session("stale").add_message(_user("stale"))
    store.session("binned-early").add_message(_user("early"))
    early_id = store.delete("binned-early")
    cutoff = tick()
    store.session("binned-late").add_message(_user("late"))
    late_id = store.delete("binned-late")
    dry = store.prune("1h", purge=True, dry_run=True, now=cutoff + HOUR)
    real = store.prune("1h", purge=True, now=cutoff + HOUR)
    assert _names(dry.sessions) == _names(real.sessions) == ["stale"]
    assert [i.trash_id for i in dry.trash] == [i.trash_id for i in real.trash] == [early_id]
    assert _live(store) == [] and _trash(store) == [("binned-late", late_id)]
    with pytest.raises(SessionNotFound):
        store.restore("stale")


@pytest.mark.parametrize("age", ["0s", "0d", "-1d", "abc", "", "1 fortnight", timedelta(0)])
def test_prune_refuses_a_bad_age_and_removes_nothing(store: Store, age: str | timedelta) -> None:
    store.session("a").add_message(_user("a"))
    with pytest.raises(UsageError):
        store.prune(age, now=1e12)
    assert _live(store) == ["a"]


def test_prune_of_an_empty_store(store: Store) -> None:
    report = store.prune("30d", purge=True)
    assert (report.sessions, report.trash, report.skipped) == ([], [], [])


def test_scrub_with_trash_reaches_deleted_sessions_and_keeps_their_activity(
    store: Store,
) -> None:
    store.session("gone").add_messages([_user("the code is hunter2-zz"), _user("other")])
    store.session("live").add_messages([_user("hunter2-zz here too")])
    store.delete("gone")
    (entry,) = store.list_sessions(deleted=True).sessions
    assert entry.trash_id is not None
    before = store.backend.snapshot("gone", trash_id=entry.trash_id).last_active_ns

    report = store.scrub(literal="hunter2-zz")  # the trash only when asked
    assert [(s.session, s.matches) for s in report.sessions] == [("live", 1)]
    report = store.scrub(["gone"], literal="hunter2-zz", trash=True)
    assert report.verified
    assert [(s.session, s.trash_id, s.matches) for s in report.sessions] == [
        ("gone", entry.trash_id, 1)
    ]
    after = store.backend.snapshot("gone", trash_id=entry.trash_id)
    assert after.last_active_ns == before
    assert [m.content for m in after.messages] == ["the code is [REDACTED:scrubbed]", "other"]
    store.restore("gone")
    restored = store.session("gone").messages
    assert restored[0]["content"] == "the code is [REDACTED:scrubbed]"
    with pytest.raises(SessionNotFound):
        store.scrub(["never"], literal="x", trash=True)
