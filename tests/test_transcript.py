"""The transcript file: format, torn and corrupt lines, permissions, hostile paths."""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, Result

from sessionctl import Store
from sessionctl.errors import CorruptData, StoreError
from sessionctl.models import FORMAT_NAME, FORMAT_VERSION

ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
ERROR = "sessionctl: error: "


@pytest.fixture
def store(home: Path) -> Store:
    return Store(home)


def _path(home: Path, name: str, suffix: str = ".jsonl") -> Path:
    return home / "sessions" / f"{name}{suffix}"


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _one_error(result: Result) -> str:
    err = result.stderr
    lines = [line for line in err.splitlines() if line.startswith(ERROR)]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# -- format --------------------------------------------------------------------------


def test_header_first_then_message_records(store: Store, home: Path) -> None:
    work = store.session("work")
    work.add_messages([{"role": "user", "content": f"m{i}"} for i in range(20)])
    records = _lines(_path(home, "work"))
    header = records[0]
    assert header["type"] == "header"
    assert (header["format"], header["version"]) == (FORMAT_NAME, FORMAT_VERSION)
    messages = records[1:]
    assert len(messages) == 20
    assert [m["seq"] for m in messages] == list(range(1, 21))
    assert len({m["id"] for m in messages}) == 20
    for m in messages:
        assert m["type"] == "message"
        assert ULID.fullmatch(m["id"]), m["id"]
        assert m["role"] == "user" and m["content"].startswith("m")
        assert ISO_Z.fullmatch(m["created_at"]), m["created_at"]
    raw = _path(home, "work").read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 21
    raw.decode("utf-8")


def test_optional_fields_and_unknown_fields_survive_a_rewrite(store: Store, home: Path) -> None:
    work = store.session("work")
    work.add_message(
        {
            "role": "assistant",
            "content": "c",
            "model": "m",
            "usage": {"prompt_tokens": 1},
            "tool_calls": [{"id": "t"}],
            "name": "n",
            "metadata": {"k": "v"},
        }
    )
    path = _path(home, "work")
    # a record written by a newer sessionctl, with a field this one does not know
    with path.open("ab") as f:
        f.write(b'{"type":"message","id":"01X","seq":2,"role":"user","content":"z",')
        f.write(b'"created_at":"2024-01-01T00:00:00Z","future_field":[1]}\n')
    work.add_message({"role": "user", "content": "last"})
    work.drop()  # rewrite
    records = _lines(path)[1:]
    assert records[0]["usage"] == {"prompt_tokens": 1} and records[0]["name"] == "n"
    assert records[0]["tool_calls"] == [{"id": "t"}] and records[0]["metadata"] == {"k": "v"}
    assert records[1]["future_field"] == [1]


def test_older_header_without_bookkeeping_is_readable(home: Path, cli: Cli) -> None:
    sessions = home / "sessions"
    sessions.mkdir(parents=True)
    header = {"type": "header", "format": FORMAT_NAME, "version": 1}
    msg = {"type": "message", "id": "A", "seq": 1, "role": "user", "content": "hi"}
    _path(home, "old").write_text(json.dumps(header) + "\n" + json.dumps(msg) + "\n")
    result = cli("recent", "-s", "old", "--text")
    assert (result.exit_code, result.stdout) == (0, "hi\n")
    assert cli("add", "-s", "old", "--role", "user", "more").exit_code == 0
    assert [m["seq"] for m in _lines(_path(home, "old"))[1:]] == [1, 2]


# -- torn last line -------------------------------------------------------------------


def _torn(path: Path) -> bytes:
    tail = b'{"type":"message","id":"01TORN","seq":99,"role":"us'
    with path.open("ab") as f:
        f.write(tail)
    return tail


def test_torn_last_line_is_ignored_by_readers(store: Store, home: Path, cli: Cli) -> None:
    store.session("work").add_messages([{"role": "user", "content": c} for c in "abc"])
    path = _path(home, "work")
    _torn(path)
    result = cli("recent", "-s", "work", "--text")
    assert (result.exit_code, result.stdout) == (0, "a\nb\nc\n")
    assert "Traceback" not in result.stderr
    listed = json.loads(cli("list", "--json").stdout)
    assert listed["sessions"][0]["messages"] == 3
    shown = cli("show", "work")
    assert shown.exit_code == 0 and shown.stdout.count("user: ") == 3
    assert store.session("work").get_recent(top_k=1, as_text=True) == ["c"]


def test_torn_last_line_is_repaired_by_next_writer(store: Store, home: Path, cli: Cli) -> None:
    store.session("work").add_messages([{"role": "user", "content": c} for c in "abc"])
    path = _path(home, "work")
    tail = _torn(path)
    result = cli("add", "-s", "work", "--role", "user", "d")
    assert result.exit_code == 0
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and tail not in raw
    records = _lines(path)[1:]
    assert [(r["seq"], r["content"]) for r in records] == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]
    rejects = _lines(_path(home, "work", ".rejects"))
    assert len(rejects) == 1 and rejects[0]["data"] == tail.decode()


def test_valid_last_record_missing_only_its_newline_is_kept(store: Store, home: Path) -> None:
    work = store.session("work")
    work.add_messages([{"role": "user", "content": c} for c in "ab"])
    path = _path(home, "work")
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    assert work.get_recent(as_text=True) == ["a", "b"]
    assert [m["content"] for m in work.messages] == ["a", "b"]
    assert work.info().messages == 2
    work.add_message({"role": "user", "content": "c"})
    assert [(r["seq"], r["content"]) for r in _lines(path)[1:]] == [(1, "a"), (2, "b"), (3, "c")]
    assert not _path(home, "work", ".rejects").exists()


def test_only_a_header_without_newline_still_works(store: Store, home: Path) -> None:
    work = store.session("work")
    work.update(model="m")
    path = _path(home, "work")
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    assert work.get_recent() == []
    assert work.add_message({"role": "user", "content": "x"}).seq == 1
    assert [r["content"] for r in _lines(path)[1:]] == ["x"]


# -- corrupt middle line -----------------------------------------------------------------


def _corrupt_line(path: Path, number: int, junk: bytes = b"{not json at all") -> None:
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = junk
    path.write_bytes(b"\n".join(lines))


def test_corrupt_middle_line_is_reported_and_skipped(store: Store, home: Path, cli: Cli) -> None:
    store.session("work").add_messages([{"role": "user", "content": c} for c in "abcd"])
    path = _path(home, "work")
    _corrupt_line(path, 3)  # line 3 = message "b"
    result = cli("show", "work")
    assert result.exit_code == 0
    assert [ln for ln in result.stdout.splitlines() if ln.startswith("user:")] == [
        "user: a",
        "user: c",
        "user: d",
    ]
    assert "line 3" in result.stderr and "Traceback" not in result.stderr
    exported = cli("export", "work")
    assert exported.exit_code == 0 and "line 3" in exported.stderr
    recent = cli("recent", "-s", "work", "-k", "10", "--text")
    assert (recent.exit_code, recent.stdout) == (0, "a\nc\nd\n")
    notes: list[str] = []
    Store(home, warn=notes.append).session("work").messages  # noqa: B018
    assert any("line 3" in n for n in notes)


@pytest.mark.parametrize(
    "rewrite",
    [
        ["drop", "-s", "work", "{first}"],
        ["clear", "-s", "work"],
    ],
)
def test_rewrite_sets_corrupt_line_aside(
    store: Store, home: Path, cli: Cli, rewrite: list[str]
) -> None:
    added = store.session("work").add_messages([{"role": "user", "content": c} for c in "abcd"])
    path = _path(home, "work")
    junk = b'{"type":"message","seq":"oops" \xff broken'
    _corrupt_line(path, 3, junk)
    result = cli(*(arg.replace("{first}", added[0].id) for arg in rewrite))
    assert result.exit_code == 0, result.stderr
    assert "line 3" in result.stderr
    raw = path.read_bytes()
    assert junk not in raw
    _lines(path)  # every remaining line parses
    rejects = _lines(_path(home, "work", ".rejects"))
    assert len(rejects) == 1 and rejects[0]["line"] == 3
    assert rejects[0]["data"].startswith('{"type":"message","seq":"oops"')
    # a second rewrite does not set it aside again
    cli("meta", "work", "again=1")
    assert len(_lines(_path(home, "work", ".rejects"))) == 1


def test_corrupt_header_is_a_one_line_error(home: Path, cli: Cli) -> None:
    (home / "sessions").mkdir(parents=True)
    _path(home, "bad").write_text("this is not json\n")
    for args in (["recent", "-s", "bad"], ["add", "-s", "bad", "--role", "user", "x"]):
        result = cli(*args)
        assert result.exit_code == 1
        assert "not a sessionctl header" in _one_error(result)
    assert _path(home, "bad").read_text() == "this is not json\n"


def test_header_from_newer_version_is_refused(store: Store, home: Path, cli: Cli) -> None:
    store.session("work").add_message({"role": "user", "content": "x"})
    path = _path(home, "work")
    records = _lines(path)
    records[0]["version"] = FORMAT_VERSION + 1
    content = "\n".join(json.dumps(r) for r in records) + "\n" + '{"future": "torn'
    path.write_text(content)
    for args in (
        ["recent", "-s", "work"],
        ["add", "-s", "work", "--role", "user", "y"],
        ["drop", "-s", "work"],
        ["meta", "work", "a=1"],
        ["show", "work"],
    ):
        result = cli(*args)
        assert result.exit_code == 1, args
        assert "newer" in _one_error(result)
    assert path.read_text() == content  # nothing repaired, rewritten or set aside
    assert not _path(home, "work", ".rejects").exists()


# -- permissions -------------------------------------------------------------------------


@pytest.fixture(params=[0o000, 0o022, 0o077, 0o277])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_permissions_are_private_whatever_the_umask(
    home: Path, cli: Cli, umask: int, store: Store
) -> None:
    assert cli("add", "-s", "work", "--role", "user", "x").exit_code == 0
    assert cli("store", "-s", "work", "q", "a").exit_code == 0
    path = _path(home, "work")
    with path.open("ab") as out:
        out.write(b"torn")
    assert cli("add", "-s", "work", "--role", "user", "y").exit_code == 0  # creates .rejects
    assert cli("fork", "work", "copy").exit_code == 0
    assert cli("drop", "-s", "copy").exit_code == 0
    assert cli("delete", "copy").exit_code == 0
    checked = 0
    for root, dirs, files in os.walk(home):
        for d in dirs:
            assert stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode) == 0o700, (d, umask)
        for f in files:
            mode = stat.S_IMODE(os.stat(os.path.join(root, f)).st_mode)
            assert mode == 0o600, (f, oct(mode), oct(umask))
            checked += 1
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert _path(home, "work", ".rejects").exists()
    assert checked >= 5


# -- hostile paths -------------------------------------------------------------------------


def test_transcript_that_is_a_symlink_is_refused(home: Path, cli: Cli, tmp_path: Path) -> None:
    (home / "sessions").mkdir(parents=True)
    target = tmp_path / "victim.txt"
    target.write_text("precious\n")
    _path(home, "evil").symlink_to(target)
    for args in (
        ["recent", "-s", "evil"],
        ["show", "evil"],
        ["export", "evil"],
        ["add", "-s", "evil", "--role", "user", "x"],
        ["drop", "-s", "evil"],
        ["clear", "-s", "evil"],
        ["meta", "evil", "a=1"],
    ):
        result = cli(*args)
        assert result.exit_code == 1, (args, result)
        _one_error(result)
        assert result.stdout == ""
    assert target.read_text() == "precious\n"
    # list skips it with a warning instead of failing for every session
    cli("add", "-s", "good", "--role", "user", "x")
    listed = cli("list", "--json")
    assert listed.exit_code == 0
    assert [s["name"] for s in json.loads(listed.stdout)["sessions"]] == ["good"]
    assert "evil" in listed.stderr


def test_transcript_that_is_a_directory_is_refused(home: Path, cli: Cli) -> None:
    _path(home, "dir").mkdir(parents=True)
    for args in (
        ["recent", "-s", "dir"],
        ["show", "dir"],
        ["add", "-s", "dir", "--role", "user", "x"],
        ["drop", "-s", "dir"],
    ):
        result = cli(*args)
        assert result.exit_code == 1, (args, result)
        _one_error(result)
    assert _path(home, "dir").is_dir() and not any(_path(home, "dir").iterdir())


def test_empty_transcript_file_does_not_break_list(home: Path, cli: Cli) -> None:
    cli("add", "-s", "good", "--role", "user", "x")
    _path(home, "empty").touch()
    listed = cli("list")
    assert listed.exit_code == 0 and "good" in listed.stdout
    result = cli("recent", "-s", "empty")
    assert result.exit_code == 1
    _one_error(result)


def test_symlinked_lock_or_rejects_is_not_followed(
    store: Store, home: Path, tmp_path: Path
) -> None:
    store.session("work").add_message({"role": "user", "content": "x"})
    victim = tmp_path / "victim"
    victim.write_text("keep")
    lock = _path(home, "work", ".lock")
    lock.unlink()
    lock.symlink_to(victim)
    with pytest.raises(StoreError):
        store.session("work").add_message({"role": "user", "content": "y"})
    lock.unlink()
    _path(home, "work", ".rejects").symlink_to(victim)
    with _path(home, "work").open("ab") as f:
        f.write(b"torn")
    with pytest.raises(OSError):
        store.session("work").add_message({"role": "user", "content": "y"})
    assert victim.read_text() == "keep"


def test_stale_temp_files_are_removed_by_the_next_writer(store: Store, home: Path) -> None:
    work = store.session("work")
    work.add_message({"role": "user", "content": "x"})
    sessions = home / "sessions"
    stale = sessions / ".work.jsonl~.tmp"
    stale.write_text("half a rewrite")
    other = sessions / ".other.jsonl~.tmp"
    other.write_text("another session's temp")
    unrelated = sessions / "notes.txt"
    unrelated.write_text("mine")
    assert work.get_recent(as_text=True) == ["x"]  # readers leave temps alone
    assert stale.exists()
    work.add_message({"role": "user", "content": "y"})
    assert not stale.exists()
    assert other.exists() and unrelated.exists()
    assert [i.name for i in store.list_sessions().sessions] == ["work"]


def test_corrupt_data_is_a_store_error() -> None:
    assert issubclass(CorruptData, StoreError)


def test_drop_last_keeps_a_corrupt_line_after_the_last_message(
    store: Store, home: Path, cli: Cli
) -> None:
    store.session("work").add_messages([{"role": "user", "content": c} for c in "abc"])
    path = _path(home, "work")
    with path.open("ab") as f:
        f.write(b"{corrupt line after the last message}\n")
    result = cli("drop", "-s", "work")
    assert result.exit_code == 0, result
    assert [m["content"] for m in store.session("work").messages] == ["a", "b"]
    kept = path.read_bytes() + _path(home, "work", ".rejects").read_bytes()
    assert b"corrupt line after the last message" in kept
    assert store.session("work").add_message({"role": "user", "content": "d"}).seq == 4


@pytest.mark.parametrize(
    ("field", "value"),
    [("base_seq", "abc"), ("base_count", [1]), ("model", 5), ("parent", {"a": 1})],
)
def test_malformed_header_field_is_corrupt_data_not_a_crash(
    store: Store, home: Path, cli: Cli, field: str, value: object
) -> None:
    store.session("bad").add_message({"role": "user", "content": "x"})
    store.session("good").add_message({"role": "user", "content": "y"})
    path = _path(home, "bad")
    records = _lines(path)
    records[0][field] = value
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = cli("recent", "-s", "bad")
    assert result.exit_code == 1
    assert "malformed header" in _one_error(result)
    listed = cli("list")
    assert listed.exit_code == 0 and "good" in listed.stdout and "bad" in listed.stderr
    assert "internal error" not in listed.stderr


def test_huge_multibyte_message_across_read_blocks(store: Store, home: Path, cli: Cli) -> None:
    big = "✓é" * 100_000  # ~500 KB of UTF-8, split across many 64 KB blocks
    work = store.session("work")
    work.add_messages([{"role": "user", "content": "before"}, {"role": "user", "content": big}])
    assert work.get_recent(top_k=1, as_text=True) == [big]
    assert work.get_recent(top_k=2, as_text=True) == ["before", big]
    assert work.info().messages == 2
    assert work.drop().content == big
    assert work.get_recent(as_text=True) == ["before"]
    result = cli("recent", "-s", "work", "--json")
    assert [m["content"] for m in json.loads(result.stdout)] == ["before"]


def test_loose_own_dirs_are_tightened_and_the_users_home_is_left_alone(
    home: Path, cli: Cli
) -> None:
    (home / "sessions").mkdir(parents=True)
    os.chmod(home, 0o755)
    os.chmod(home / "sessions", 0o777)
    result = cli("add", "-s", "w", "--role", "user", "x")
    assert result.exit_code == 0 and "open to other users (mode 755)" in result.stderr
    assert stat.S_IMODE(home.stat().st_mode) == 0o755  # the user made it: not ours to change
    assert stat.S_IMODE((home / "sessions").stat().st_mode) == 0o700


def test_home_that_is_a_file_is_a_one_line_error(tmp_path: Path, cli: Cli) -> None:
    bogus = tmp_path / "not-a-dir"
    bogus.write_text("x")
    result = cli("--home", str(bogus), "add", "-s", "w", "--role", "user", "x")
    assert result.exit_code == 1
    _one_error(result)
    assert bogus.read_text() == "x"
    listed = cli("--home", str(tmp_path / "missing"), "list")
    assert (listed.exit_code, listed.stdout) == (0, "")
    assert not (tmp_path / "missing").exists()  # reading creates nothing
