"""The listing snapshot (HOME/activity.stamp): pages from it must equal pages from scratch."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest
from conftest import count_listings, files_backend, settle

from sessionctl import Store
from sessionctl.backend.files import activity, listing
from sessionctl.backend.files.activity import LOG_NAME, ActivityLog


@pytest.fixture
def store(home: Path) -> Store:
    return Store(home)


def _settle(store: Store) -> None:
    settle(files_backend(store).sessions_dir)


def _oracle(store: Store) -> list[tuple[str, int]]:
    """Every live session newest first, from first principles: log time, else mtime."""
    logged = ActivityLog(store.home / LOG_NAME).read()
    entries = []
    for path in files_backend(store).sessions_dir.glob("*.jsonl"):
        name = path.name[: -len(".jsonl")]
        entries.append((name, logged.get(name) or path.stat().st_mtime_ns))
    return sorted(entries, key=lambda e: (-e[1], e[0]))


def _pages(store: Store, limit: int | None) -> list[tuple[str, int]]:
    """Walk the backend's pages of ``limit`` as `list --cursor` does."""
    if limit is None:
        return files_backend(store).newest(None)
    seen: list[tuple[str, int]] = []
    after = None
    for _ in range(100):
        page = files_backend(store).newest(limit, after)
        seen += page
        if len(page) < limit:
            return seen
        after = (-page[-1][1], page[-1][0])
    raise AssertionError(f"pages of {limit} never end: {seen}")


def _stamp(store: Store) -> listing.Snapshot:
    snapshot = listing.read_snapshot(store.home / listing.STAMP_NAME)
    assert snapshot is not None
    return snapshot


def test_pages_from_the_snapshot_equal_pages_from_scratch(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small thresholds, so the run folds the tail into new stamps and compacts the log.
    monkeypatch.setattr(listing, "FOLD_BYTES", 300)
    monkeypatch.setattr(activity, "COMPACT_BYTES", 600)
    monkeypatch.setattr(activity, "COMPACT_RATIO", 1)
    rng = random.Random(7)
    names = [f"s{i:02d}" for i in range(12)]
    for name in names:
        store.session(name).add_message({"role": "user", "content": name})
    for name in ("hand-a", "hand-b"):  # copied in by hand: never logged
        files_backend(store).path(name).write_bytes(files_backend(store).path("s00").read_bytes())
    _settle(store)
    assert _pages(store, None) == _oracle(store)  # lists the directory, writes the stamp
    first = _stamp(store)
    assert first.unlogged == ("hand-a", "hand-b")
    log = ActivityLog(store.home / LOG_NAME)
    listed = count_listings(monkeypatch)
    for step in range(150):
        op = rng.randrange(5)
        if op == 0:
            store.session(rng.choice(names)).add_message({"role": "user", "content": "more"})
        elif op == 1:  # ties, older times (as a restore writes) and the hand copies
            log.touch(rng.choice([*names, "hand-a"]), rng.choice([1_000, 2_000, 3_000]), reset=True)
        elif op == 2:
            when = time.time() + rng.randrange(-3600, 3600)
            os.utime(files_backend(store).path("hand-b"), (when, when))  # edited by hand
        expected = _oracle(store)
        for limit in (1, 2, 5, None):
            assert _pages(store, limit) == expected, (step, limit)
        cut = rng.randrange(len(expected))  # the rest after any session, unpaged
        after = (-expected[cut][1], expected[cut][0])
        assert files_backend(store).newest(None, after) == expected[cut + 1 :], step
    assert listed == []  # every page came from the snapshot and the log's tail
    last = _stamp(store)
    assert last.offset != first.offset  # the tail was folded into a new stamp ...
    assert last.log[2] != first.log[2]  # ... and the log compacted under it
    assert log.path.stat().st_size < 4096


def test_a_first_page_reads_only_the_top_of_the_snapshot(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(30):
        store.session(f"s{i:02d}").add_message({"role": "user", "content": "x"})
    _settle(store)
    expected = _oracle(store)
    assert _pages(store, None) == expected
    path = store.home / listing.STAMP_NAME
    data = path.read_bytes()
    # Garble the oldest line of the body, keeping its length: only a reader
    # that goes that far down can notice.
    cut = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[:cut] + b"x" * (len(data) - cut - 1) + b"\n")
    listed = count_listings(monkeypatch)
    assert files_backend(store).newest(3) == expected[:3] and listed == []
    assert files_backend(store).newest(None) == expected and len(listed) == 1  # noticed: listed
    path.write_bytes(data[:cut] + b"x" * (len(data) - cut - 1) + b"\n")
    assert files_backend(store).activity_times() == dict(expected) and len(listed) == 2


@pytest.mark.parametrize(
    "change",
    [
        "log compacted elsewhere",
        "log cut by hand",
        "log removed",
        "another log in the same inode",
        "stamp torn",
        "stamp mixed",
    ],
)
def test_a_stale_or_damaged_snapshot_means_listing_again(
    store: Store, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    for name in ("a", "b", "c"):
        store.session(name).add_message({"role": "user", "content": name})
    _settle(store)
    assert [n for n, _ in _pages(store, None)] == ["c", "b", "a"]
    log_path = store.home / LOG_NAME
    stamp_path = store.home / listing.STAMP_NAME
    if change == "log compacted elsewhere":
        ActivityLog(log_path).touch("a")  # newer than the stamp, then the file replaced
        assert ActivityLog(log_path).compact(["a", "b", "c"]) is not None
    elif change == "log cut by hand":
        os.truncate(log_path, 5)
    elif change == "log removed":
        log_path.unlink()
    elif change == "another log in the same inode":  # as a recycled inode number would be
        old = log_path.read_bytes()
        other = ActivityLog(store.home / "other.log")
        for name in ("a", "b", "c") * 3:
            other.touch(name)
        with open(log_path, "r+b") as f:  # same file, new content, at least as long
            f.write(other.path.read_bytes().ljust(len(old), b"\n"))
    elif change == "stamp torn":
        os.truncate(stamp_path, stamp_path.stat().st_size - 3)
    else:  # two writers' bytes: a longer stamp's end left behind a shorter one
        stamp_path.write_bytes(stamp_path.read_bytes() + b"9 zz\n")
    listed = count_listings(monkeypatch)
    assert _pages(store, 2) == _oracle(store)
    assert listed  # listed the directory instead of trusting the stamp
    if change == "log compacted elsewhere":
        assert _pages(store, None)[0][0] == "a"


def test_a_snapshot_body_parses_by_its_bytes_and_refuses_a_repeated_name() -> None:
    key = (1, 2, "0123456789abcdef")
    newest_first = listing.Snapshot((1, 2, 3), key, 10, (), b"30 c\n20 b\n10 a\n")
    first = newest_first.times()
    assert first == {"c": 30, "b": 20, "a": 10}
    first["a"] = 99  # the caller's to change: the next parse is not affected
    assert newest_first.times() == {"c": 30, "b": 20, "a": 10}
    # Same length, other bytes: parsed anew, never served the last parse.
    other = listing.Snapshot((1, 2, 3), key, 10, (), b"30 c\n20 b\n10 d\n")
    assert other.times() == {"c": 30, "b": 20, "d": 10}
    for body in (b"30 c\n20 b\n10 c\n", b"10 c\n20 c\n", b"30 c\n20 b\n1x a\n"):
        with pytest.raises(ValueError):
            listing.Snapshot((1, 2, 3), key, 10, (), body).times()


def test_every_log_starts_with_its_own_identity(tmp_path: Path) -> None:
    log = ActivityLog(tmp_path / LOG_NAME)
    log.touch("a", 10)
    first = log.path.read_bytes().split(b"\n")[0]
    assert first.startswith(b"#activity-log ") and log.read() == {"a": 10}
    compacted = log.compact(["a"])
    assert compacted is not None
    assert log.path.read_bytes().split(b"\n")[0] not in (first, b"10 a")
    assert log.read() == {"a": 10}


def test_a_log_written_by_0_1_0_without_identity_still_serves_pages(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b"):
        store.session(name).add_message({"role": "user", "content": name})
    log_path = store.home / LOG_NAME
    log_path.write_bytes(b"".join(b"%d %s\n" % (t, n) for t, n in ((5, b"a"), (6, b"b"))))
    _settle(store)
    assert _pages(store, 1) == [("b", 6), ("a", 5)]
    listed = count_listings(monkeypatch)
    ActivityLog(log_path).touch("a", 7)
    assert _pages(store, 1) == [("a", 7), ("b", 6)] and listed == []


def test_folds_and_compactions_under_concurrent_appends_lose_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    monkeypatch.setattr(listing, "FOLD_BYTES", 512)
    monkeypatch.setattr(activity, "COMPACT_BYTES", 1024)
    monkeypatch.setattr(activity, "COMPACT_RATIO", 1)
    writers = 3
    owned = [[f"w{w}-{i}" for i in range(4)] for w in range(writers)]
    for names in owned:
        for name in names:
            store.session(name).add_message({"role": "user", "content": name})
    _settle(store)
    assert len(_pages(store, None)) == writers * 4  # lists once and writes the stamp
    log = ActivityLog(store.home / LOG_NAME)
    last: dict[str, int] = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    def write(w: int) -> None:
        for n in range(1, 400):
            name = owned[w][n % 4]
            ns = 10**18 + n * 10 + w  # distinct and rising: each name's last line is known
            log.touch(name, ns, reset=True)
            last[name] = ns

    def read() -> None:
        try:
            while not stop.is_set():
                page = files_backend(store).newest(5)
                assert page == sorted(page, key=listing.newest_first)
                assert len({n for n, _ in page}) == len(page) == 5
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    readers = [threading.Thread(target=read) for _ in range(2)]
    for thread in readers + threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()
    assert errors == []
    assert files_backend(store).activity_times() == last  # no append lost to a fold or compaction
    assert _pages(store, 3) == _oracle(store)
    assert _stamp(store).offset > 0 and log.path.stat().st_size < 8192
