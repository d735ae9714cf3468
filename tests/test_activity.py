"""Last activity comes from HOME/activity.log, so `list` need not stat every transcript."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import count_listings, files_backend, set_activity, settle

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
    copied = files_backend(store).path("copied")
    copied.write_bytes(files_backend(store).path("logged").read_bytes())
    os.utime(copied, (time.time() + 60, time.time() + 60))
    assert _names(store) == ["copied", "logged"]


def test_rename_and_restore_keep_the_activity_they_had(store: Store) -> None:
    for name in ("old", "new"):
        store.session(name).add_message({"role": "user", "content": name})
    set_activity(files_backend(store).path("old"), time.time() - 40 * 86400)
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
    "a clock went back": b"50 a\n60 b\n10 a\n",
    "restore reset to an older time": b"50 a\n60 b\n=10 a\n",
    "write after a reset": b"50 a\n=10 a\n5 a\n20 b\n",
    "zero time": b"0 a\n20 b\n",
}


@pytest.mark.parametrize("case", sorted(LOGS))
def test_fast_log_parse_agrees_with_the_line_by_line_one(tmp_path: Path, case: str) -> None:
    data = LOGS[case]
    (tmp_path / LOG_NAME).write_bytes(data)
    strict = activity._parse_strict(data)
    assert ActivityLog(tmp_path / LOG_NAME).read() == strict
    fast = activity._parse_fast(data)
    assert fast is None or fast == strict
    if case in ("well formed", "torn last line", "a clock went back"):
        assert fast is not None  # the common shapes never take the slow path
    expected = {
        "well formed": {"a": 30, "b": 20},
        # A line written with a clock gone back never makes a session older ...
        "a clock went back": {"a": 50, "b": 60},
        # ... but a reset (rename, restore) gives it its older time on purpose,
        "restore reset to an older time": {"a": 10, "b": 60},
        # and later writes count from the reset on.
        "write after a reset": {"a": 10, "b": 20},
        # A 0 is no time at all: the transcript's mtime counts instead.
        "zero time": {"b": 20},
    }
    if case in expected:
        assert strict == expected[case]


def test_pages_are_deterministic_when_times_tie_across_the_cut(store: Store) -> None:
    names = [f"s{i}" for i in range(7)]
    for name in reversed(names):  # created (first logged) in reverse name order
        store.session(name).add_message({"role": "user", "content": name})
    log = ActivityLog(files_backend(store).home / LOG_NAME)
    # s0..s2 newest; s3..s6 share one time that a page of 4 must cut (logged in
    # reverse, so log order cannot pass for name order)
    for name in reversed(names):
        log.touch(name, 2_000 if name in ("s0", "s1", "s2") else 1_000, reset=True)
    log.touch("s1", 3_000, reset=True)
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
    settle(files_backend(store).sessions_dir)


def test_an_unchanged_directory_is_not_listed_again(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b", "c"):
        store.session(name).add_message({"role": "user", "content": name})
    store.delete("c")  # its log lines stay: the stamp must keep it out
    _settle(store)
    assert _names(store) == ["b", "a"]  # lists sessions/ and stamps what it found
    assert (files_backend(store).home / listing.STAMP_NAME).stat().st_mode & 0o777 == 0o600
    listed = count_listings(monkeypatch)
    assert _names(store) == ["b", "a"] and listed == []
    store.session("a").add_message({"role": "user", "content": "appending changes no entry"})
    assert _names(store) == ["a", "b"] and listed == []
    assert [n for n, _ in store.backend.names()] and listed == []
    store.session("d").add_message({"role": "user", "content": "a new file changes the dir"})
    listed.clear()
    assert _names(store) == ["d", "a", "b"] and listed == [str(files_backend(store).sessions_dir)]


def test_files_changed_by_hand_are_seen_through_the_stamp(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.session("logged").add_message({"role": "user", "content": "x"})
    copied = files_backend(store).path("copied")
    copied.write_bytes(files_backend(store).path("logged").read_bytes())
    os.utime(copied, (time.time() - 3600, time.time() - 3600))
    _settle(store)
    assert _names(store) == ["logged", "copied"]
    listed = count_listings(monkeypatch)
    os.utime(copied, (time.time() + 60, time.time() + 60))  # edited by hand: mtime counts
    assert _names(store) == ["copied", "logged"] and listed == []
    # Now sessionctl writes it (its lock file already exists: no new entry).
    ActivityLog(files_backend(store).home / LOG_NAME).touch("copied", 1_000)
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
    (files_backend(store).home / LOG_NAME).unlink()  # times fall back to mtimes; nobody is lost
    assert sorted(_names(store)) == ["a", "b"] and len(listed) == 1
    for junk in (b"", b"{", b'{"directory": [1, 2]}', b"[]", b'{"directory":"x"}'):
        (files_backend(store).home / listing.STAMP_NAME).write_bytes(junk)
        assert sorted(_names(store)) == ["a", "b"]
    assert len(listed) == 6


def test_a_directory_changed_just_now_is_not_stamped(store: Store) -> None:
    store.session("a").add_message({"role": "user", "content": "a"})
    assert _names(store) == ["a"]
    # The change and the listing may share one timestamp tick: no stamp yet.
    assert not (files_backend(store).home / listing.STAMP_NAME).exists()
    _settle(store)
    assert _names(store) == ["a"]
    assert (files_backend(store).home / listing.STAMP_NAME).exists()


# -- acknowledged writes are never purged (hardening items 1, 2, 5) -------------------------

DAY = 86400


def _sessionctl(*args: str, preexec: Callable[[], None] | None = None, code: str = "") -> str:
    """Run the real CLI in a child process (``code`` runs first, in that process)."""
    prog = f"{code}\nfrom sessionctl.cli.app import main\nmain()"
    done = subprocess.run(
        [sys.executable, "-c", prog, *args],
        capture_output=True,
        text=True,
        preexec_fn=preexec,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_append_the_log_failed_to_record_is_never_purged(store: Store) -> None:
    """The transcript append succeeds while the activity log's fails (a full disk).

    The fault is real: RLIMIT_FSIZE below the log's size and above the
    transcript's makes the kernel refuse the log append (EFBIG) and allow the
    transcript's, as a nearly full disk with slack in the transcript's last block does.
    """
    work = store.session("work")
    work.add_message({"role": "user", "content": "old"})
    path = files_backend(store).path("work")
    set_activity(path, time.time() - 40 * DAY)
    log = ActivityLog(store.home / LOG_NAME)
    for i in range(300):  # make the log bigger than the transcript will be
        log.touch(f"other-{i}", int((time.time() - 40 * DAY) * 1e9))
    size = log.path.stat().st_size
    assert path.stat().st_size + 4096 < size

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size - 1, size - 1))

    _sessionctl("add", "-s", "work", "--role", "user", "written seconds ago", preexec=limit)
    assert log.path.stat().st_size == size  # the log did not record it ...
    assert log.read()["work"] < (time.time() - 39 * DAY) * 1e9  # ... and still says 40 days
    dry = json.loads(_sessionctl("prune", "--older-than", "30d", "--dry-run", "--json"))
    assert "work" not in [s["name"] for s in dry["sessions"]]
    real = json.loads(_sessionctl("prune", "--older-than", "30d", "--purge", "--json"))
    assert "work" not in [s["name"] for s in real["sessions"]]
    assert [m["content"] for m in work.messages] == ["old", "written seconds ago"]
    # and the API says the same: last activity is the transcript's, not the log's
    assert store.backend.last_activity("work") > (time.time() - 60) * 1e9


SKEW = f"""
import time
_real = time.time_ns
time.time_ns = lambda: _real() - {400 * DAY} * 10**9
time.time = lambda: time.time_ns() / 1e9
"""


def test_a_clock_gone_back_never_makes_fresh_data_look_old(store: Store) -> None:
    """A process whose clock is 400 days behind writes one session and deletes another.

    (The skew is patched into that process's time module: the machine's clock
    cannot be set back here, and the kernel's file times stay right, as they
    do under libfaketime.)
    """
    for name in ("used", "deleted", "stale"):
        store.session(name).add_message({"role": "user", "content": name})
    set_activity(files_backend(store).path("stale"), time.time() - 40 * DAY)
    _sessionctl("add", "-s", "used", "--role", "user", "a moment ago", code=SKEW)
    _sessionctl("delete", "deleted", code=SKEW)
    # The skewed process wrote no older time than the one the log had ...
    assert files_backend(store).activity_times()["used"] > (time.time() - 60) * 1e9
    # ... and even a plain line from a writer that did (0.1.0, a hand edit) loses to the newest.
    ActivityLog(store.home / LOG_NAME).touch("used", int((time.time() - 400 * DAY) * 1e9))
    assert files_backend(store).activity_times()["used"] > (time.time() - 60) * 1e9
    (deleted,) = store.list_sessions(deleted=True).sessions
    assert deleted.deleted_at is not None
    assert deleted.deleted_at > _iso(time.time() - 60)  # not the ULID's 400-days-old time
    dry = store.prune("30d", purge=True, dry_run=True)
    real = store.prune("30d", purge=True)
    assert [i.name for i in real.sessions] == [i.name for i in dry.sessions] == ["stale"]
    assert real.trash == dry.trash == []
    assert sorted(i.name for i in store.list_sessions().sessions) == ["used"]
    assert [i.name for i in store.list_sessions(deleted=True).sessions] == ["deleted"]


def test_a_restore_keeps_its_older_time_even_after_newer_lines(store: Store) -> None:
    """The reset record: restore gives back the time a session had, not the newest line."""
    store.session("s").add_message({"role": "user", "content": "x"})
    set_activity(files_backend(store).path("s"), time.time() - 40 * DAY)
    store.delete("s")
    store.session("s").add_message({"role": "user", "content": "a new s, used now"})
    store.delete("s")  # the log's newest line for "s" is now
    store.restore("s", store.list_sessions(deleted=True).sessions[-1].trash_id)
    assert [m["content"] for m in store.session("s").messages] == ["x"]
    assert [i.name for i in store.prune("30d", dry_run=True).sessions] == ["s"]


def test_prune_dry_run_lists_exactly_what_prune_removes(store: Store) -> None:
    """Over a mix of ages and log shapes, the dry run and the real run agree (item 5)."""
    now = time.time()
    ages = {"fresh": 0, "day": 1, "month": 31, "year": 365, "zero": 50, "behind": 45}
    ages |= {"copied": 90, "skewed": 0, "renamed": 60, "restored": 70}
    for name in ages:
        if name != "copied":
            store.session(name).add_message({"role": "user", "content": name})
    for name, days in ages.items():
        if name != "copied" and days:
            set_activity(files_backend(store).path(name), now - days * DAY)
    log = ActivityLog(store.home / LOG_NAME)
    log.touch("zero", 0)  # a 0 line: no time at all, the mtime (50 days) counts
    os.utime(files_backend(store).path("behind"), None)  # the log is 45 days behind the transcript
    copied = files_backend(store).path("copied")  # copied in by hand: only its mtime tells
    copied.write_bytes(files_backend(store).path("day").read_bytes())
    os.utime(copied, (now - 90 * DAY, now - 90 * DAY))
    log.touch("skewed", int((now - 400 * DAY) * 1e9))  # a writer with a clock far behind
    store.rename("renamed", "renamed2")
    store.delete("restored")
    store.restore("restored")
    dry = [i.name for i in store.prune("30d", dry_run=True).sessions]
    real = store.prune("30d")
    assert [i.name for i in real.sessions] == dry
    assert real.skipped == []
    assert sorted(dry) == ["copied", "month", "renamed2", "restored", "year", "zero"]
    left = sorted(i.name for i in store.list_sessions().sessions)
    assert left == ["behind", "day", "fresh", "skewed"]


def _iso(when: float) -> str:
    from sessionctl.timeutil import from_epoch_ns

    return from_epoch_ns(int(when * 1e9))
