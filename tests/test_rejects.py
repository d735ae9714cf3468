"""Garbage lines in a transcript: reported by `recent` too, and set aside into
NAME.rejects by the next write when they end the file (hardening item 27); the seq
a crashed `drop` leaves free (docs/format.md)."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from conftest import Cli

from sessionctl import Store

WARNING = "sessionctl: warning: "


def _path(home: Path, name: str, suffix: str = ".jsonl") -> Path:
    return home / "sessions" / f"{name}{suffix}"


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(WARNING)]


def test_garbage_at_the_end_is_set_aside_by_add(home: Path, cli: Cli) -> None:
    Store(home).session("w").add_messages([{"role": "user", "content": c} for c in "ab"])
    path = _path(home, "w")
    with path.open("ab") as f:
        f.write(b"this is garbage\n\n{not json either\n")  # lines 4, (blank), 6
    rejects = _path(home, "w", ".rejects")
    recent = cli("recent", "-s", "w", "--text")
    assert (recent.exit_code, recent.stdout) == (0, "a\nb\n")
    assert _warnings(recent.stderr) == [
        f"{WARNING}{path}: line {n} is not a valid message record; skipped (kept in the file"
        " until a write sets it aside in w.rejects)"
        for n in (4, 6)
    ]
    assert not rejects.exists()  # readers never write
    added = cli("add", "-s", "w", "--role", "user", "c")
    assert added.exit_code == 0, added.stderr
    assert _warnings(added.stderr) == [
        f"{WARNING}{path}: lines 4-6 are not valid message records; set aside in w.rejects"
    ]
    set_aside = _records(rejects)
    assert [(r["line"], r["data"]) for r in set_aside] == [
        (4, "this is garbage"),
        (6, "{not json either"),
    ]
    assert all(r["reason"].startswith("unreadable line") for r in set_aside)
    assert stat.S_IMODE(rejects.stat().st_mode) == 0o600
    assert b"garbage" not in path.read_bytes()
    assert [r.get("content") for r in _records(path)[1:]] == ["a", "b", "c"]
    again = cli("recent", "-s", "w", "--text")
    assert (again.stdout, again.stderr) == ("a\nb\nc\n", "")  # clean now


def test_garbage_in_the_middle_is_reported_by_recent_and_kept(home: Path, cli: Cli) -> None:
    Store(home).session("w").add_messages([{"role": "user", "content": c} for c in "abc"])
    path = _path(home, "w")
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([*lines[:2], b"\xff\xfe garbage\n", *lines[2:]]))  # line 3
    recent = cli("recent", "-s", "w", "-k", "10", "--text")
    assert recent.stdout == "a\nb\nc\n"
    assert len(_warnings(recent.stderr)) == 1 and ": line 3 is not" in recent.stderr
    # only what recent reads: the last message alone does not reach line 3
    assert cli("recent", "-s", "w", "-k", "1").stderr == ""
    added = cli("add", "-s", "w", "--role", "user", "d")
    assert added.exit_code == 0 and added.stderr == ""  # an append reads only the end
    assert b"\xff\xfe garbage" in path.read_bytes()
    assert not _path(home, "w", ".rejects").exists()
    # a rewrite (drop ID; a header edit no longer rewrites) sets it aside
    first = Store(home).session("w").get_messages()[0].id
    assert cli("drop", "w", first).exit_code == 0
    assert [r["line"] for r in _records(_path(home, "w", ".rejects"))] == [3]
    assert b"garbage" not in path.read_bytes()


def test_a_record_of_another_kind_at_the_end_is_not_set_aside(home: Path, cli: Cli) -> None:
    """Only lines that are no record (or a broken message) go; a well-formed record of a
    kind this version does not know stays in the transcript."""
    Store(home).session("w").add_message({"role": "user", "content": "a"})
    path = _path(home, "w")
    other = b'{"type":"summary","covers":[1,1],"content":"a"}\n'
    with path.open("ab") as f:
        f.write(other)
    assert cli("add", "-s", "w", "--role", "user", "b").exit_code == 0
    assert other in path.read_bytes()
    assert not _path(home, "w", ".rejects").exists()


def test_seq_is_not_reused_after_drop_but_is_after_a_drop_cut_short(home: Path) -> None:
    """docs/format.md: a completed drop burns its seq (the tombstone); a drop cut between
    its truncate and its tombstone (what a crash leaves) frees it."""
    session = Store(home).session("w")
    session.add_messages([{"role": "user", "content": c} for c in "abc"])
    session.drop()
    assert session.add_message({"role": "user", "content": "d"}).seq == 4
    # a crash after the truncate, before the tombstone: the file simply ends earlier
    path = _path(home, "w")
    lines = path.read_bytes().splitlines(keepends=True)
    assert json.loads(lines[-1])["seq"] == 4
    path.write_bytes(b"".join(lines[:-1]))
    assert json.loads(lines[-2]).get("type") == "dropped"  # the earlier tombstone (seq 3)
    assert Store(home).session("w").add_message({"role": "user", "content": "e"}).seq == 4
