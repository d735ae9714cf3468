"""Search and reindex survive one bad session: out-of-range numbers, unreadable files, races.

One hand-edited number (a seq of 2**63, or 10**400, which JSON allows) used to make
`relevant` over all sessions and `reindex --all` fail for every session with an
internal OverflowError. Readers now treat such a line like any malformed line, and a
session that cannot be read at all is skipped with one warning by searches over all
sessions (docs/index.md, "When a session cannot be read").
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Cli, as_dicts

from sessionctl import Store
from sessionctl.backend.files.manifest import ManifestError, from_ranges
from sessionctl.backend.files.sidecar import SidecarIndex
from sessionctl.backend.files.vectors import follow
from sessionctl.errors import StoreError
from sessionctl.models import MAX_SEQ

WARNING = "sessionctl: warning: "
ERROR = "sessionctl: error: "


@pytest.fixture
def store(home: Path) -> Store:
    return Store(home)


def _path(home: Path, name: str, suffix: str = ".jsonl") -> Path:
    return home / "sessions" / f"{name}{suffix}"


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _write(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _three(store: Store) -> None:
    for name in ("a", "b", "c"):
        store.session(name).store(f"note {name}: the deploy is on friday", f"noted {name}")


def _message(seq: Any, **fields: Any) -> dict[str, Any]:
    record = {
        "type": "message",
        "id": "01JB0000000000000000000000",
        "seq": seq,
        "role": "user",
        "content": "a hand-written line about the deploy",
        "created_at": "2026-11-21T10:57:00.000000Z",
    }
    record.update(fields)
    return record


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text and "internal error" not in text, text


def _sessions_of(result: Any) -> set[str]:
    return {hit["session"] for hit in json.loads(result.stdout)}


# -- item 3: numbers out of range are malformed lines ---------------------------------

BAD_SEQS = [2**63, 10**400, 0, -1, True, "5", 1.5, None]


@pytest.mark.parametrize("seq", BAD_SEQS, ids=lambda v: repr(v)[:24])
@pytest.mark.parametrize("where", ["end", "middle"])
def test_out_of_range_seq_is_a_malformed_line(
    store: Store, home: Path, cli: Cli, seq: Any, where: str
) -> None:
    _three(store)
    path = _path(home, "b")
    records = _records(path)
    bad = _message(seq)
    records.insert(len(records) if where == "end" else 2, bad)
    _write(path, records)
    number = records.index(bad) + 1

    for _ in range(2):  # the full catch-up, then the fast path from the stamp
        found = cli("relevant", "deploy", "--json", "-k", "10")
        assert found.exit_code == 0, found
        _no_traceback(found.stderr)
        assert _sessions_of(found) == {"a", "b", "c"}
        assert all(hit["id"] != bad["id"] for hit in json.loads(found.stdout))
    first = cli("reindex", "--all")
    assert first.exit_code == 0, first
    _no_traceback(first.stderr)
    assert f"b.jsonl: line {number} is not a valid message record (" in first.stderr
    assert "reindexed 3 session(s), 6 messages" in first.stderr

    recent = cli("recent", "-s", "b", "--json")
    assert recent.exit_code == 0 and [m["seq"] for m in json.loads(recent.stdout)] == [1, 2]
    # The next write goes on from the highest valid seq, and a rewrite sets the line aside.
    more = store.session("b").add_message({"role": "user", "content": "more"})
    assert more.seq == 3
    assert cli("drop", "b", more.id).exit_code == 0  # a rewrite (a header edit is not one)
    assert bad["id"] not in path.read_text()
    assert bad["id"] in _path(home, "b", ".rejects").read_text()


@pytest.mark.parametrize(
    "fields",
    [
        {"id": 10**400},
        {"id": 7},
        {"id": ""},
        {"id": None},
        {"role": "wizard"},
        {"role": None},
        {"content": {"text": "x"}},
        {"created_at": 5},
        {"metadata": [1]},
        {"usage": "many"},
        {"tool_calls": {}},
        {"interrupted": "yes"},
    ],
    ids=lambda v: repr(v)[:24],
)
def test_other_malformed_fields_are_malformed_lines(
    store: Store, home: Path, cli: Cli, fields: dict[str, Any]
) -> None:
    _three(store)
    path = _path(home, "b")
    records = _records(path)
    records.insert(2, _message(2, **fields))  # between seq 1 and seq 2... a duplicate seq
    records[3]["seq"] = 3
    _write(path, records)
    found = cli("relevant", "deploy", "--json", "-k", "10")
    assert found.exit_code == 0, found
    _no_traceback(found.stderr)
    assert "b.jsonl: line 3 is not a valid message record (" in found.stderr
    assert _sessions_of(found) == {"a", "b", "c"}
    assert [m["seq"] for m in store.session("b").messages] == [1, 3]


def test_a_huge_pos_is_ignored(store: Store, home: Path, cli: Cli) -> None:
    _three(store)
    path = _path(home, "b")
    records = _records(path)
    records[-1]["pos"] = 10**400
    _write(path, records)
    listed = cli("list", "--json")
    assert listed.exit_code == 0, listed
    assert {s["name"]: s["messages"] for s in json.loads(listed.stdout)["sessions"]}["b"] == 2


@pytest.mark.parametrize(
    "tombstone",
    [{"seq": 2**63, "high": 2}, {"seq": 2, "high": 10**400}, {"seq": True, "high": 2}],
    ids=lambda v: repr(v)[:24],
)
def test_tombstone_out_of_range_is_a_malformed_line(
    store: Store, home: Path, cli: Cli, tombstone: dict[str, Any]
) -> None:
    _three(store)
    path = _path(home, "b")
    records = _records(path)
    records.append({"type": "dropped", "id": "01JB", "dropped_at": "x", **tombstone})
    _write(path, records)
    found = cli("relevant", "deploy", "--json", "-k", "10")
    assert found.exit_code == 0, found
    _no_traceback(found.stderr)
    assert "b.jsonl: line 4 is not a valid message record (a drop tombstone" in found.stderr
    assert _sessions_of(found) == {"a", "b", "c"}
    # The next seq is not 2**63 + 1 (which no reader would take).
    assert store.session("b").add_message({"role": "user", "content": "more"}).seq == 3


def test_the_last_seq_is_usable_and_then_writes_refuse(store: Store, home: Path, cli: Cli) -> None:
    _three(store)
    path = _path(home, "b")
    records = _records(path)
    records.append(_message(MAX_SEQ, content="the very last number"))
    _write(path, records)
    found = cli("relevant", "the very last number", "-s", "b", "--json", "-k", "1")
    assert found.exit_code == 0, found
    assert json.loads(found.stdout)[0]["seq"] == MAX_SEQ
    before = path.read_bytes()
    added = cli("add", "-s", "b", "-r", "user", "one too many")
    assert added.exit_code == 1
    assert added.stderr.startswith(ERROR) and "used every message number" in added.stderr
    assert len(added.stderr.splitlines()) == 1
    assert path.read_bytes() == before


# -- item 3: a session that cannot be read is skipped, the others searched --------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("base_seq", 2**63), ("base_seq", 10**400), ("base_count", -1), ("base_seq", True)],
    ids=lambda v: repr(v)[:24],
)
def test_header_number_out_of_range_fails_that_session_only(
    store: Store, home: Path, cli: Cli, field: str, value: Any
) -> None:
    _three(store)
    path = _path(home, "b")
    records = _records(path)
    records[0][field] = value
    _write(path, records)

    found = cli("relevant", "deploy", "--json", "-k", "10")
    assert found.exit_code == 0, found
    _no_traceback(found.stderr)
    assert _sessions_of(found) == {"a", "c"}
    warnings = [line for line in found.stderr.splitlines() if "'b'" in line]
    assert len(warnings) == 1, found.stderr
    assert warnings[0].startswith(WARNING + "session 'b' skipped: ")
    assert f"({field} is not a whole number" in warnings[0]
    assert "sessionctl reindex b" in warnings[0]

    for a in ("a", "c"):
        for suffix in (".faiss", ".index.json"):
            _path(home, a, suffix).unlink(missing_ok=True)  # none: searched store-wide
    reindexed = cli("reindex", "--all")
    assert reindexed.exit_code == 1, reindexed
    _no_traceback(reindexed.stderr)
    errors = [line for line in reindexed.stderr.splitlines() if line.startswith(ERROR)]
    assert errors == [
        ERROR + "reindexed 2 session(s); could not reindex 1: b (see the warnings above)"
    ]
    assert all(_path(home, n, ".faiss").exists() for n in ("a", "c"))  # the others were done

    alone = cli("relevant", "deploy", "-s", "b")  # asked for by name: its error, exit 1
    assert alone.exit_code == 1 and "malformed header field" in alone.stderr
    _no_traceback(alone.stderr)
    assert cli("reindex", "b").exit_code == 1


def test_unreadable_session_with_fall_back_is_not_shown(store: Store, home: Path) -> None:
    _three(store)
    path = _path(home, "c")  # the most recent
    records = _records(path)
    records[0]["base_seq"] = 2**63
    _write(path, records)
    warned: list[str] = []
    quiet = Store(home, warn=warned.append)
    hits = quiet.get_relevant("zebra migration patterns", distance_threshold=0.0, fall_back=True)
    assert hits == []
    assert len(warned) == 1 and warned[0].startswith("session 'c' skipped: ")


def test_an_unexpected_failure_in_one_session_is_isolated(
    store: Store, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No data known today trips an internal error (that is the point of validating on
    read), so the fault is injected: whatever one session's file trips, the others answer."""
    _three(store)
    real_sync = SidecarIndex.sync

    def sync(self: SidecarIndex, *args: Any, **kwargs: Any) -> Any:
        if Path(self.files()[0]).name.startswith("b."):
            raise OverflowError("Python int too large to convert to C long")
        return real_sync(self, *args, **kwargs)

    monkeypatch.setattr(SidecarIndex, "sync", sync)
    real_read = follow.read  # the store-wide index's reading of one transcript

    def read(path: Path, *args: Any, **kwargs: Any) -> Any:
        if path.name.startswith("b."):
            raise OverflowError("Python int too large to convert to C long")
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(follow, "read", read)
    warned: list[str] = []
    quiet = Store(home, warn=warned.append)
    # The faults are the vector side's (the keyword index reads b fine): search by meaning.
    hits = as_dicts(quiet.get_relevant("deploy", top_k=10, mode="vector"))
    assert {h["session"] for h in hits} == {"a", "c"}
    assert warned == [
        "session 'b' skipped: internal error OverflowError: Python int too large to convert "
        "to C long; the others were searched (once that is fixed, run: sessionctl reindex b)"
    ]
    with pytest.raises(OverflowError):  # asked for by name: not hidden
        quiet.get_relevant("deploy", sessions=["b"], mode="vector")
    warned.clear()
    with pytest.raises(StoreError, match="could not reindex 1: b"):
        quiet.reindex()
    assert len(warned) == 1 and "the others were reindexed" in warned[0]


# -- the index manifest: its seqs are numbers from a file too -------------------------


@pytest.mark.parametrize(
    "ranges",
    [[[1, 2**63]], [[0, 1]], [[1, 2**40]], [[True, 2]], [[1, 1], [3, 10**400]]],
    ids=lambda v: repr(v)[:24],
)
def test_manifest_seqs_out_of_range_are_corrupt(ranges: list[list[Any]]) -> None:
    with pytest.raises(ManifestError, match="seqs"):
        from_ranges(ranges, limit=2)


def test_manifest_with_huge_range_is_rebuilt(store: Store, home: Path, cli: Cli) -> None:
    _three(store)
    assert cli("relevant", "deploy", "-s", "b").exit_code == 0
    manifest = _path(home, "b", ".index.json")
    doc = json.loads(manifest.read_text())
    doc["seqs"] = [[1, 2**40]]  # expanding it would need terabytes
    manifest.write_text(json.dumps(doc))
    started = time.monotonic()
    found = cli("relevant", "deploy", "-s", "b", "--json")
    assert found.exit_code == 0, found
    assert time.monotonic() - started < 30
    assert "index manifest corrupt (seqs)" in found.stderr
    assert {h["seq"] for h in json.loads(found.stdout)} <= {1, 2}


# -- item 4: reindex --all while sessions are deleted or renamed ------------------------


def _many(store: Store, names: list[str], per: int = 3) -> None:
    for name in names:
        store.session(name).add_messages(
            [{"role": "user", "content": f"{name} message {i}"} for i in range(per)]
        )


def test_reindex_all_skips_what_vanished_mid_run(store: Store, home: Path) -> None:
    """Deterministic: the progress callback of the first session deletes one later
    session and renames another; the rest is reindexed, the renamed one under its new name."""
    names = [f"s{i}" for i in range(5)]
    _many(store, names)
    warned: list[str] = []
    quiet = Store(home, warn=warned.append)
    done: list[str] = []

    def progress(name: str, finished: int, total: int) -> None:
        if not done:
            quiet.delete("s3")
            quiet.rename("s4", "zz")
        done.append(name)

    reports = quiet.reindex(progress=progress)
    assert [name for name, _ in reports] == ["s0", "s1", "s2", "zz"]
    assert all(report.added == 3 for _, report in reports)
    assert warned == [
        "session 's3' was deleted or renamed during reindex; skipped",
        "session 's4' was deleted or renamed during reindex; skipped",
    ]
    for name in ("s0", "s1", "s2", "zz"):
        assert _path(home, name, ".faiss").exists() and _path(home, name, ".index.json").exists()
    assert not any(_path(home, n, s).exists() for n in ("s3", "s4") for s in (".faiss", ".lock"))
    hits = as_dicts(quiet.get_relevant("zz message 1", sessions=["zz"], top_k=1))
    assert hits[0]["content"] == "s4 message 1"
    assert len(warned) == 2  # the renamed session's index was current: no rebuild warning


def test_reindex_all_when_a_session_vanishes_before_its_turn(store: Store, home: Path) -> None:
    _many(store, ["a", "b", "c"])
    warned: list[str] = []
    quiet = Store(home, warn=warned.append)

    def progress(name: str, finished: int, total: int) -> None:
        if name == "a" and quiet.session("c").exists:
            quiet.delete("c")

    assert [n for n, _ in quiet.reindex(progress=progress)] == ["a", "b"]
    assert warned == ["session 'c' was deleted or renamed during reindex; skipped"]


def test_reindex_by_name_still_fails_when_the_session_is_gone(store: Store, home: Path) -> None:
    from sessionctl.errors import SessionNotFound

    _many(store, ["a", "b"])
    with pytest.raises(SessionNotFound):  # checked before any work
        store.reindex(["a", "nosuch"])

    def progress(name: str, finished: int, total: int) -> None:
        if store.session("b").exists:
            store.delete("b")

    with pytest.raises(SessionNotFound):  # named, so its absence is the answer
        store.reindex(["a", "b"], progress=progress)


def test_reindex_all_cli_races_a_delete_and_a_rename(store: Store, home: Path) -> None:
    """A real `reindex --all` process; while it embeds the first (large) session, this
    process deletes one later session and renames another. Without the fix: exit 3."""
    _many(store, ["s0"], per=100)
    _many(store, ["s1", "s2", "s3", "s4"])
    store.reindex(["s0"])
    faiss = _path(home, "s0", ".faiss")
    assert faiss.exists()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sessionctl", "reindex", "--all"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 60
        while faiss.exists():  # reindex deletes s0's index first, then embeds 100 messages
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "reindex never started"
            time.sleep(0.002)
        store.delete("s3")
        store.rename("s4", "t4")
        renamed_at = time.time()
        assert not faiss.exists(), "s0 was reindexed before the race could happen"
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    lines = err.splitlines()
    assert lines[:2] == [
        WARNING + "session 's3' was deleted or renamed during reindex; skipped",
        WARNING + "session 's4' was deleted or renamed during reindex; skipped",
    ]
    assert len(lines) == 3 and "reindexed 4 session(s), 109 messages" in lines[2]
    for name in ("s0", "s1", "s2", "t4"):
        assert _path(home, name, ".faiss").stat().st_mtime >= renamed_at - 1
