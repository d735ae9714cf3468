"""The fast path of semantic search: a stamp proves the index current, so the
transcript is not parsed; anything but plain appends falls back to a full sync."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import files_backend

from sessionctl import Store
from sessionctl.backend.files.lookup import messages_by_seq
from sessionctl.service import memory


@pytest.fixture
def store(home: Path) -> Store:
    return Store(home)


def _no_full_scan(monkeypatch: pytest.MonkeyPatch, store: Store) -> None:
    def refuse(name: str) -> None:
        raise AssertionError(f"full transcript scan of {name!r}")

    monkeypatch.setattr(store.backend, "messages", refuse)


def test_appends_are_indexed_without_a_full_scan(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = store.session("work")
    work.store("my favourite colour is blue", "noted")
    assert work.get_relevant("what colour do I like?", top_k=1, as_text=True) == [
        "my favourite colour is blue"
    ]
    assert files_backend(store).path("work", ".index.stamp").exists()
    work.add_message({"role": "user", "content": "my dog is called Rex"})
    _no_full_scan(monkeypatch, store)
    hits = work.get_relevant("what is my pet's name?", top_k=1)
    assert [h["content"] for h in hits] == ["my dog is called Rex"]  # type: ignore[index]
    assert hits[0]["seq"] == 3  # type: ignore[index]
    # Nothing changed since: still no scan, same answer.
    assert work.get_relevant("what is my pet's name?", top_k=1, as_text=True) == [
        "my dog is called Rex"
    ]


@pytest.mark.parametrize(
    "change",
    ["drop_last", "drop_id", "meta", "clear", "corrupt_index", "delete_stamp"],
)
def test_anything_but_appends_takes_the_full_sync(store: Store, change: str) -> None:
    work = store.session("work")
    work.add_messages(
        [
            {"role": "user", "content": "my favourite colour is blue"},
            {"role": "user", "content": "my dog is called Rex"},
        ]
    )
    assert work.get_relevant("what is my pet's name?", top_k=1, as_text=True)
    if change == "drop_last":
        work.drop()
    elif change == "drop_id":
        work.drop(work.messages[1]["id"])
    elif change == "meta":
        work.update(metadata={"k": 1})
    elif change == "clear":
        work.clear()
    elif change == "corrupt_index":
        files_backend(store).path("work", ".faiss").write_bytes(b"garbage")
    else:
        files_backend(store).path("work", ".index.stamp").unlink()
    got = work.get_relevant("what is my pet's name?", top_k=1, as_text=True)
    expected = [] if change in ("drop_last", "drop_id", "clear") else ["my dog is called Rex"]
    assert got == expected


def test_lookup_by_seq_skips_tombstones_and_corrupt_lines(store: Store) -> None:
    work = store.session("work")
    work.add_messages([{"role": "user", "content": f"m{i}"} for i in range(300)])
    for _ in range(5):
        work.drop()
    work.drop(work.messages[10]["id"])
    work.add_messages([{"role": "user", "content": f"n{i}"} for i in range(5)])
    path = files_backend(store).path("work")
    with open(path, "ab") as f:
        f.write(b'{"not json\n')
    expected = {m["seq"]: m["content"] for m in work.messages}
    found = messages_by_seq(path, range(0, 320))  # many: one pass over the file
    assert {seq: m.content for seq, m in found.items()} == expected
    for few in ([5], [1, 150, 299], [11, 303], list(range(0, 320, 40))):  # a search per seq
        found = messages_by_seq(path, few)
        assert {seq: m.content for seq, m in found.items()} == {
            seq: text for seq, text in expected.items() if seq in few
        }, few


def test_search_api_reports_the_same_hits_on_both_paths(store: Store) -> None:
    work = store.session("work")
    work.add_messages(
        [{"role": "user", "content": f"note {i} about the deploy"} for i in range(20)]
    )
    slow = memory.search(store, "deploy", sessions=["work"], top_k=5)
    fast = memory.search(store, "deploy", sessions=["work"], top_k=5)
    assert [(h.message.seq, round(h.distance or 0, 5)) for h in slow] == [
        (h.message.seq, round(h.distance or 0, 5)) for h in fast
    ]


def test_an_unfinished_write_at_the_end_is_not_indexed_by_the_fast_path(store: Store) -> None:
    work = store.session("work")
    work.add_message({"role": "user", "content": "my favourite colour is blue"})
    assert work.get_relevant("colour", top_k=1, as_text=True)
    # Half of a two-message write, as a crash leaves it: a record that says one follows.
    with open(files_backend(store).path("work"), "ab") as f:
        f.write(
            b'{"type":"message","id":"01JBZZZZZZZZZZZZZZZZZZZZZZ","seq":2,"role":"user",'
            b'"content":"my dog is called Rex","created_at":"2026-01-01T00:00:00.000000Z",'
            b'"pos":2,"more":1}\n'
        )
    assert work.get_relevant("what is my pet's name?", top_k=1, as_text=True) == []
    assert [m["content"] for m in work.messages] == ["my favourite colour is blue"]


def test_the_fast_path_does_not_rehash_an_unchanged_index_file(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    work = store.session("work")
    work.add_message({"role": "user", "content": "my favourite colour is blue"})
    assert work.get_relevant("colour", top_k=1, as_text=True)
    hashed: list[int] = []
    real = hashlib.sha256

    def counting(*args: object) -> object:
        hashed.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(hashlib, "sha256", counting)  # the module storage.py hashes with
    assert work.get_relevant("colour", top_k=1, as_text=True)  # a fresh Store object below too
    assert Store(store.home).session("work").get_relevant("colour", top_k=1, as_text=True)
    assert hashed == []
    path = files_backend(store).path("work", ".faiss")
    os_data = path.read_bytes()
    path.write_bytes(os_data)  # same bytes, new mtime: the full check comes back
    assert Store(store.home).session("work").get_relevant("colour", top_k=1, as_text=True)
    assert hashed
