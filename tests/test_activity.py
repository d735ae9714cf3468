"""Last activity comes from HOME/activity.log, so `list` need not stat every transcript."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from conftest import count_listings, set_activity, settle

from sessionctl import Store
from sessionctl.backend.files import activity, listing
from sessionctl.backend.files.activity import LOG_NAME, ActivityLog


@pytest.fixture
def store(home: Path) -> Store:
    return Store(home)


def _names(store: Store) -> list[str]:
    return [i.name for i in store.list_sessions().sessions]


def test_list_orders_by_logged_writes_without_statting(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b", "c"):
        store.session(name).add_message({"role": "user", "content": name})
    store.session("a").add_message({"role": "user", "content": "again"})
    stats: list[str] = []
    real_stat = os.stat

    def counting_stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        stats.append(str(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", counting_stat)
    assert [n for n, _ in sorted(store.backend.names(), key=lambda e: -e[1])] == ["a", "c", "b"]
    assert not [p for p in stats if p.endswith(".jsonl")]


def test_a_session_the_log_does_not_know_falls_back_to_its_mtime(store: Store) -> None:
    store.session("logged").add_message({"role": "user", "content": "x"})
    copied = store.backend.path("copied")
    copied.write_bytes(store.backend.path("logged").read_bytes())
    os.utime(copied, (time.time() + 60, time.time() + 60))
    assert _names(store) == ["copied", "logged"]


def test_rename_and_restore_keep_the_activity_they_had(store: Store) -> None:
    for name in ("old", "new"):
        store.session(name).add_message({"role": "user", "content": name})
    set_activity(store.backend.path("old"), time.time() - 40 * 86400)
    store.rename("old", "older")
    assert _names(store) == ["new", "older"]
    store.delete("older")
    store.restore("older")
    assert _names(store) == ["new", "older"]
    assert store.prune("30d", dry_run=True).sessions[0].name == "older"


def test_compaction_keeps_every_session_and_loses_no_concurrent_append(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(activity, "COMPACT_BYTES", 1024)
    names = [f"s{i}" for i in range(5)]
    for name in names:
        store.session(name).add_message({"role": "user", "content": name})
    log = ActivityLog(store.home / LOG_NAME)
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            log.touch("s0", 10**18 + n)  # far in the future: always the newest
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(20):
            store.backend.names()  # compacts whenever the log outgrew its sessions
    finally:
        stop.set()
        thread.join()
    log.touch("s0", 2 * 10**18)
    store.backend.names()
    seen = log.read()
    assert set(names) <= set(seen) and seen["s0"] == 2 * 10**18
    assert (store.home / LOG_NAME).stat().st_size < 64 * 1024
    assert _names(store)[0] == "s0"


LOGS = {
    "well formed": b"10 a\n20 b\n30 a\n",
    "torn last line": b"10 a\n20 b\n3",
    "no newline at all": b"10 a",
    "empty": b"",
    "garbled middle line": b"10 a\n\x00\xff junk\n20 b\n",
    "not a number": b"10 a\n1x b\n",
    "signed number": b"+10 a\n-20 b\n30 c\n",
    "name with a space": b"10 a b\n20 c\n",
    "line with no name": b"10 \n20 c\n",
    "blank line": b"10 a\n\n20 c\n",
    "non-ASCII name": "10 caf\u00e9\n20 c\n".encode(),
    "restore wrote an older time last": b"50 a\n60 b\n10 a\n",
}


@pytest.mark.parametrize("case", sorted(LOGS))
def test_fast_log_parse_agrees_with_the_line_by_line_one(tmp_path: Path, case: str) -> None:
    data = LOGS[case]
    (tmp_path / LOG_NAME).write_bytes(data)
    strict = activity._parse_strict(data)
    assert ActivityLog(tmp_path / LOG_NAME).read() == strict
    fast = activity._parse_fast(data)
    assert fast is None or fast == strict
    if case in ("well formed", "torn last line", "restore wrote an older time last"):
        assert fast is not None  # the common shapes never take the slow path
    if case == "well formed":
        assert strict == {"a": 30, "b": 20}  # the last line wins
    if case == "restore wrote an older time last":
        assert strict == {"a": 10, "b": 60}


def test_pages_are_deterministic_when_times_tie_across_the_cut(store: Store) -> None:
    names = [f"s{i}" for i in range(7)]
    for name in reversed(names):  # created (first logged) in reverse name order
        store.session(name).add_message({"role": "user", "content": name})
    log = ActivityLog(store.backend.home / LOG_NAME)
    # s0..s2 newest; s3..s6 share one time that a page of 4 must cut (logged in
    # reverse, so log order cannot pass for name order)
    for name in reversed(names):
        log.touch(name, 2_000 if name in ("s0", "s1", "s2") else 1_000)
    log.touch("s1", 3_000)
    log.touch("gone", 9_000)  # a logged session that no longer exists
    expected = ["s1", "s0", "s2", "s3", "s4", "s5", "s6"]
    assert _names(store) == expected
    seen: list[str] = []
    cursor = None
    while True:
        page = store.list_sessions(limit=4, cursor=cursor)
        seen += [i.name for i in page.sessions]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == expected
    first = store.list_sessions(limit=4)
    assert [i.name for i in first.sessions] == expected[:4]


def _settle(store: Store) -> None:
    settle(store.backend.sessions_dir)


def test_an_unchanged_directory_is_not_listed_again(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b", "c"):
        store.session(name).add_message({"role": "user", "content": name})
    store.delete("c")  # its log lines stay: the stamp must keep it out
    _settle(store)
    assert _names(store) == ["b", "a"]  # lists sessions/ and stamps what it found
    assert (store.backend.home / listing.STAMP_NAME).stat().st_mode & 0o777 == 0o600
    listed = count_listings(monkeypatch)
    assert _names(store) == ["b", "a"] and listed == []
    store.session("a").add_message({"role": "user", "content": "appending changes no entry"})
    assert _names(store) == ["a", "b"] and listed == []
    assert [n for n, _ in store.backend.names()] and listed == []
    store.session("d").add_message({"role": "user", "content": "a new file changes the dir"})
    listed.clear()
    assert _names(store) == ["d", "a", "b"] and listed == [str(store.backend.sessions_dir)]


def test_files_changed_by_hand_are_seen_through_the_stamp(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.session("logged").add_message({"role": "user", "content": "x"})
    copied = store.backend.path("copied")
    copied.write_bytes(store.backend.path("logged").read_bytes())
    os.utime(copied, (time.time() - 3600, time.time() - 3600))
    _settle(store)
    assert _names(store) == ["logged", "copied"]
    listed = count_listings(monkeypatch)
    os.utime(copied, (time.time() + 60, time.time() + 60))  # edited by hand: mtime counts
    assert _names(store) == ["copied", "logged"] and listed == []
    # Now sessionctl writes it (its lock file already exists: no new entry).
    ActivityLog(store.backend.home / LOG_NAME).touch("copied", 1_000)
    assert _names(store) == ["logged", "copied"] and listed == []  # the log wins
    copied.unlink()  # removed by hand: the directory changed
    assert _names(store) == ["logged"] and len(listed) == 1


def test_a_lost_log_or_a_bad_stamp_means_listing_again(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b"):
        store.session(name).add_message({"role": "user", "content": name})
    _settle(store)
    assert _names(store) == ["b", "a"]
    listed = count_listings(monkeypatch)
    (store.backend.home / LOG_NAME).unlink()  # times fall back to mtimes; nobody is lost
    assert sorted(_names(store)) == ["a", "b"] and len(listed) == 1
    for junk in (b"", b"{", b'{"directory": [1, 2]}', b"[]", b'{"directory":"x"}'):
        (store.backend.home / listing.STAMP_NAME).write_bytes(junk)
        assert sorted(_names(store)) == ["a", "b"]
    assert len(listed) == 6


def test_a_directory_changed_just_now_is_not_stamped(store: Store) -> None:
    store.session("a").add_message({"role": "user", "content": "a"})
    assert _names(store) == ["a"]
    # The change and the listing may share one timestamp tick: no stamp yet.
    assert not (store.backend.home / listing.STAMP_NAME).exists()
    _settle(store)
    assert _names(store) == ["a"]
    assert (store.backend.home / listing.STAMP_NAME).exists()
