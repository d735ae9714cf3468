"""The file backend's SessionStore methods that replaced the service's file work.

Each is called through ``Store.backend`` (typed as the Protocol), on real files.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sessionctl import Store
from sessionctl.backend.base import HeaderPatch, SessionHeader, SessionStore
from sessionctl.errors import MessageNotFound
from sessionctl.models import Message


def _store(home: Path) -> tuple[Store, SessionStore]:
    store = Store(home)
    return store, store.backend


def _transcript(home: Path, name: str) -> Path:
    return home / "sessions" / f"{name}.jsonl"


def test_the_backend_is_a_session_store_with_its_vectors(home: Path) -> None:
    from sessionctl.backend.files.local import LocalBackend

    store, backend = _store(home)
    assert isinstance(backend, LocalBackend) and backend.capabilities.cross_session_search
    assert not backend.has_data()
    store.session("a").add_message({"role": "user", "content": "x"})
    assert backend.has_data() and hasattr(backend.vectors, "search")


def test_clear_returns_the_seqs_and_burns_them(home: Path) -> None:
    store, backend = _store(home)
    store.session("a").add_messages([{"role": "user", "content": c} for c in "xyz"])
    assert backend.clear("a") == [1, 2, 3]
    assert backend.messages("a") == [] and backend.clear("a") == []
    assert store.session("a").add_message({"role": "user", "content": "n"}).seq == 4


def test_drop_without_an_id_is_the_last_and_with_an_unknown_one_fails(home: Path) -> None:
    store, backend = _store(home)
    first, second = store.session("a").add_messages(
        [{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"}]
    )
    assert backend.drop("a").id == second.id
    with pytest.raises(MessageNotFound):
        backend.drop("a", "01NOSUCHID")
    assert backend.drop("a", first.id).id == first.id
    with pytest.raises(MessageNotFound):
        backend.drop("a")


def test_an_update_that_changes_nothing_writes_nothing(home: Path) -> None:
    store, backend = _store(home)
    store.session("a").update(model="m", metadata={"k": 1})
    path = _transcript(home, "a")
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    header = backend.update_header("a", HeaderPatch({"model": "m"}, {"k": 1}, ("absent",)))
    assert (header.model, header.metadata) == ("m", {"k": 1})
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    header = backend.update_header("a", HeaderPatch({"system": "s"}, {"j": None}, ("k",)))
    assert (header.system, header.metadata) == ("s", {"j": None})
    assert backend.header("a") == header


def test_update_header_can_create_the_session(home: Path) -> None:
    _, backend = _store(home)
    header = backend.update_header("new", HeaderPatch({"model": "m"}), create=True)
    assert backend.exists("new") and header.model == "m" and backend.messages("new") == []


def test_edit_messages_rewrites_only_when_something_changed(home: Path) -> None:
    store, backend = _store(home)
    a, b = store.session("a").add_messages(
        [{"role": "user", "content": "keep"}, {"role": "user", "content": "secret"}]
    )
    store.session("a").update(system="a secret prompt")
    path = _transcript(home, "a")
    ino, data = path.stat().st_ino, path.read_bytes()
    assert not backend.edit_messages("a", lambda m: m, lambda h: h)
    assert (path.stat().st_ino, path.read_bytes()) == (ino, data)

    def fix(message: Message) -> Message:
        return message._replace(content=message.content.replace("secret", "***"))

    def fix_header(header: SessionHeader) -> SessionHeader:
        return header._replace(system=(header.system or "").replace("secret", "***"))

    assert backend.edit_messages("a", fix, fix_header)
    after = backend.messages("a")
    assert [(m.id, m.seq, m.content) for m in after] == [(a.id, 1, "keep"), (b.id, 2, "***")]
    assert backend.header("a").system == "a *** prompt"


def test_snapshot_keeps_the_high_water_mark_and_create_restores_it(home: Path) -> None:
    store, backend = _store(home)
    store.session("a").add_messages([{"role": "user", "content": c} for c in "xyz"])
    backend.drop("a")  # seq 3 is burnt
    snap = backend.snapshot("a")
    assert (snap.high_seq, [m.seq for m in snap.messages]) == (3, [1, 2])
    when = time.time_ns() - 10**12
    header = snap.header._replace(uid="01COPY")
    backend.create("copy", header, snap.messages, high_seq=snap.high_seq, last_active_ns=when)
    assert backend.last_activity("copy") >= when
    assert dict(backend.names())["copy"] == when
    assert store.session("copy").add_message({"role": "user", "content": "n"}).seq == 4


def test_get_stream_and_names_with_prefix(home: Path) -> None:
    store, backend = _store(home)
    msgs = store.session("work").add_messages([{"role": "user", "content": c} for c in "ab"])
    store.session("other").add_message({"role": "user", "content": "c"})
    assert backend.get("work", [2, 9]) == {2: msgs[1]}
    opened = backend.stream("work")
    assert opened.header == backend.header("work")
    assert [m.content for m in opened.messages] == ["a", "b"]
    assert backend.names_with_prefix("w") == ["work"] and store.names() == ["other", "work"]


def test_fork_sets_the_lineage_and_checks_the_message(home: Path) -> None:
    store, backend = _store(home)
    a, _ = store.session("src").add_messages([{"role": "user", "content": c} for c in "ab"])
    now = "2026-12-01T00:00:00.000000Z"
    head = SessionHeader("01FORK", now, now, parent="src")
    with pytest.raises(MessageNotFound):
        backend.fork("src", "f", at="01NOSUCH", header=head)
    assert not backend.exists("f")
    backend.fork("src", "f", at=a.id, header=head)
    assert backend.header("f").parent_message == a.id
    assert [m.seq for m in backend.messages("f")] == [1]


def test_list_live_pages_and_stale_by_activity(home: Path) -> None:
    store, backend = _store(home)
    for name in ("a", "b", "c"):
        store.session(name).add_message({"role": "user", "content": name})
    rows = backend.list_live(None)
    assert sorted(info.name for info, _ in rows) == ["a", "b", "c"]
    first = backend.list_live(1)
    rest = backend.list_live(None, (first[0][1], first[0][0].name))
    assert [i.name for i, _ in first + rest] == [i.name for i, _ in rows]
    assert [n for n, _ in backend.stale(time.time_ns())] == [i.name for i, _ in reversed(rows)]
    assert backend.stale(0) == []


def test_list_deleted_pages_after_a_cursor(home: Path) -> None:
    store, backend = _store(home)
    for name in ("a", "b"):
        store.session(name).add_message({"role": "user", "content": name})
        store.delete(name)
    every = backend.list_deleted(None)
    assert len(every) == 2 and backend.list_deleted(1) == every[:1]
    last = every[0]
    assert backend.list_deleted(None, (last.trash_id or "", last.name)) == every[1:]
