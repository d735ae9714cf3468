"""Contract: listing order and stable paging; session names (DESIGN §3, §5 `list`, §8).

- Live sessions are listed by (last activity desc, name asc); a cursor is stable:
  paging through with any limit yields every session exactly once, also when
  sessions are added, written to or deleted between pages.
- The trash lists by newest deletion first and pages the same way.
- Names are case-preserving; a name differing only in case from a live one is
  refused (SessionExists); a name breaking the rule is a UsageError everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sessionctl import SessionExists, Store, UsageError

SetActivity = Callable[[Store, str, int], None]


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _names(store: Store, **kwargs: Any) -> list[str]:
    return [i.name for i in store.list_sessions(**kwargs).sessions]


def _quiet(_page: int) -> None:
    pass


def _pages(
    store: Store, limit: int, *, deleted: bool = False, between: Callable[[int], None] = _quiet
) -> list[list[str]]:
    """Every page's names, calling ``between(page_number)`` before asking for the next."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        page = store.list_sessions(limit=limit, cursor=cursor, deleted=deleted)
        assert len(page.sessions) <= limit
        pages.append([i.name for i in page.sessions])
        cursor = page.next_cursor
        if cursor is None:
            return pages
        assert isinstance(cursor, str) and len(pages) < 100
        between(len(pages))


def _flat(pages: list[list[str]]) -> list[str]:
    return [name for page in pages for name in page]


# -- order --------------------------------------------------------------------------
def test_sessions_are_listed_by_last_activity_newest_first(store: Store) -> None:
    for name in ("s1", "s2", "s3", "s4", "s5"):
        store.session(name).add_message(_user(name))
    store.session("s2").add_message(_user("s2 again"))
    assert _names(store) == ["s2", "s5", "s4", "s3", "s1"]
    listed = {i.name: i.messages for i in store.list_sessions().sessions}
    assert listed == {"s1": 1, "s2": 2, "s3": 1, "s4": 1, "s5": 1}


def test_equal_activity_is_ordered_by_name(store: Store, set_activity: SetActivity) -> None:
    tied = ("b", "a", "Z", "c", "_u", "a.b", "a-b", "9")
    for name in (*tied, "newer", "older"):
        store.session(name).add_message(_user(name))
    base = 1_700_000_000 * 10**9
    for name in tied:
        set_activity(store, name, base)
    set_activity(store, "newer", base + 1)
    set_activity(store, "older", base - 1)
    # Ties: name ascending by code point (C collation, not a locale's; one byte per char).
    assert _names(store) == ["newer", "9", "Z", "_u", "a", "a-b", "a.b", "b", "c", "older"]


# -- paging -------------------------------------------------------------------------
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_paging_yields_every_session_exactly_once_in_order(store: Store, limit: int) -> None:
    for i in range(7):
        store.session(f"s{i}").add_message(_user(str(i)))
    everything = _names(store)
    pages = _pages(store, limit)
    assert _flat(pages) == everything
    assert all(len(page) == limit for page in pages[:-1])


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_paging_through_ties_straddling_pages(
    store: Store, set_activity: SetActivity, limit: int
) -> None:
    names = ["e", "a", "d", "b", "c", "f", "g"]
    for name in names:
        store.session(name).add_message(_user(name))
    for name in names[:5]:
        set_activity(store, name, 1_700_000_000 * 10**9)
    everything = _names(store)
    assert everything[-5:] == ["a", "b", "c", "d", "e"]
    assert _flat(_pages(store, limit)) == everything


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_sessions_added_between_pages_never_duplicate_old_ones(store: Store, limit: int) -> None:
    for i in range(6):
        store.session(f"old{i}").add_message(_user(str(i)))
    everything = _names(store)

    def add(page: int) -> None:
        store.session(f"new{page}").add_message(_user("new"))

    seen = _flat(_pages(store, limit, between=add))
    assert len(seen) == len(set(seen))
    assert [n for n in seen if n.startswith("old")] == everything  # each old one, in order


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_writes_and_deletes_between_pages_never_repeat_a_session(store: Store, limit: int) -> None:
    """After each page, its last session is written to (it moves to the top) and the one
    before it deleted: no session comes twice, and none not yet reached is missed."""
    for i in range(8):
        store.session(f"s{i}").add_message(_user(str(i)))
    everything = _names(store)
    listed: list[str] = []

    def churn(_page: int) -> None:
        store.session(listed[-1]).add_message(_user("touched"))
        if len(listed) >= 2:
            store.delete(listed[-2])

    cursor = None
    while True:
        page = store.list_sessions(limit=limit, cursor=cursor)
        listed.extend(i.name for i in page.sessions)
        cursor = page.next_cursor
        if cursor is None:
            break
        churn(len(listed))
    assert listed == everything


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_the_trash_pages_newest_deletion_first(store: Store, limit: int) -> None:
    deleted = []
    for name in ("a", "b", "a", "c", "b", "d"):
        store.session(name).add_message(_user(name))
        deleted.append((name, store.delete(name)))
    store.session("live").add_message(_user("not in the trash"))
    rows = store.list_sessions(deleted=True).sessions
    assert [(i.name, i.trash_id) for i in rows] == deleted[::-1]
    assert all(i.deleted_at for i in rows)
    assert _flat(_pages(store, limit, deleted=True)) == [n for n, _ in deleted[::-1]]
    assert _names(store) == ["live"]


def test_limit_zero_negative_and_bad_cursors(store: Store) -> None:
    for name in ("a", "b"):
        store.session(name).add_message(_user(name))
        store.delete(name) if name == "a" else None
    page = store.list_sessions(limit=0)
    assert (page.sessions, page.next_cursor) == ([], None)
    for limit in (-1, True):
        with pytest.raises(UsageError):
            store.list_sessions(limit=limit)
    store.session("c").add_message(_user("c"))
    live_cursor = store.list_sessions(limit=1).next_cursor
    store.session("a").add_message(_user("a"))
    store.delete("a")
    trash_cursor = store.list_sessions(limit=1, deleted=True).next_cursor
    assert live_cursor is not None and trash_cursor is not None
    for bad in ("", "garbage", "!!", "bnVsbA", trash_cursor):
        with pytest.raises(UsageError):
            store.list_sessions(cursor=bad)
    with pytest.raises(UsageError):
        store.list_sessions(cursor=live_cursor, deleted=True)


def test_an_empty_store_lists_nothing(store: Store) -> None:
    for deleted in (False, True):
        page = store.list_sessions(limit=3, deleted=deleted)
        assert (page.sessions, page.next_cursor) == ([], None)
    assert store.most_recent() is None


# -- names --------------------------------------------------------------------------
def test_names_are_case_preserving_and_exact(store: Store) -> None:
    mixed = store.session("MixedCase.v2")
    mixed.add_message(_user("hi"))
    assert _names(store) == ["MixedCase.v2"]
    assert mixed.to_dict()["name"] == "MixedCase.v2"
    assert not store.session("mixedcase.v2").exists  # lookup is exact


_TWIN_WRITES: dict[str, Callable[[Store], object]] = {
    "add": lambda s: s.session("work").add_message(_user("x")),
    "update": lambda s: s.session("WORK").update(metadata={"k": 1}),
    "fork": lambda s: s.fork("other", "wOrK"),
    "rename": lambda s: s.rename("other", "WorK"),
    "from_dict": lambda s: s.from_dict({"messages": [_user("x")]}, name="work"),
}


@pytest.mark.parametrize("how", sorted(_TWIN_WRITES))
def test_a_case_twin_of_a_live_session_is_refused(store: Store, how: str) -> None:
    store.session("Work").add_message(_user("mine"))
    store.session("other").add_message(_user("other"))
    before = {n: store.session(n).to_dict() for n in ("Work", "other")}
    with pytest.raises(SessionExists):
        _TWIN_WRITES[how](store)
    assert sorted(_names(store)) == ["Work", "other"]
    assert {n: store.session(n).to_dict() for n in ("Work", "other")} == before


def test_a_deleted_sessions_name_is_free_in_any_case(store: Store) -> None:
    store.session("Work").add_message(_user("old"))
    store.delete("Work")
    store.session("work").add_message(_user("new"))
    assert _names(store) == ["work"]


_INVALID = [
    "",
    ".hidden",
    "-flag",
    "a/b",
    "../up",
    "a b",
    "tab\t",
    "new\nline",
    "nul\x00",
    "ümlaut",
    "a" * 129,
    "semi;colon",
    "star*",
]


@pytest.mark.parametrize("name", _INVALID, ids=repr)
def test_invalid_names_are_usage_errors_everywhere(store: Store, name: str) -> None:
    store.session("ok").add_message(_user("x"))
    calls: list[Callable[[], object]] = [
        lambda: store.session(name),
        lambda: store[name],
        lambda: store.existing(name),
        lambda: store.fork("ok", name),
        lambda: store.fork(name, "copy"),
        lambda: store.rename("ok", name),
        lambda: store.rename(name, "copy"),
        lambda: store.delete(name),
        lambda: store.delete(name, purge=True),
        lambda: store.restore(name),
        lambda: store.from_dict({"messages": [_user("x")]}, name=name),
        lambda: store.get_relevant("x", sessions=[name]),
    ]
    for call in calls:
        with pytest.raises(UsageError):
            call()
    assert _names(store) == ["ok"] and _names(store, deleted=True) == []


@pytest.mark.parametrize("name", ["a" * 128, "_x", "0", "a.b-c_d", "A..B", "x-", "x."])
def test_edge_valid_names_round_trip(store: Store, name: str) -> None:
    store.session(name).add_message(_user("x"))
    assert _names(store) == [name]
    store.fork(name, "copy")
    assert store.session("copy").info().parent == name
    store.delete(name)
    assert store.restore(name).get_recent(as_text=True) == ["x"]
