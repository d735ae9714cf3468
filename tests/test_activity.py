"""Last activity comes from HOME/activity.log, so `list` need not stat every transcript."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from conftest import set_activity

from sessionctl import Store
from sessionctl.store import activity
from sessionctl.store.activity import LOG_NAME, ActivityLog


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
