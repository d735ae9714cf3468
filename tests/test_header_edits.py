"""Header edits in place (meta, model, system), streamed show/export, filtered recent,
drop by id in one pass: what hardening item 15 asks of big sessions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Cli

from sessionctl import Store
from sessionctl.backend.files import transcript
from sessionctl.backend.files.transcript import Header, encode
from sessionctl.models import Message


def _path(home: Path, name: str) -> Path:
    return home / "sessions" / f"{name}.jsonl"


def _seed(home: Path, name: str = "work", n: int = 6) -> Store:
    store = Store(home)
    store.session(name).add_messages(
        [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(n)]
    )
    return store


def _body(path: Path) -> bytes:
    """Everything after line 1: the message records."""
    raw = path.read_bytes()
    return raw[raw.index(b"\n") + 1 :]


def test_line_1_is_padded_to_a_reserved_width_that_jq_still_parses(home: Path) -> None:
    _seed(home)
    raw = _path(home, "work").read_bytes()
    line = raw[: raw.index(b"\n") + 1]
    assert len(line) >= 1024 and len(line) & (len(line) - 1) == 0  # a power of two
    assert line.rstrip(b" \n").endswith(b"}")
    assert json.loads(line)["type"] == "header"  # trailing whitespace is valid JSON


@pytest.mark.parametrize(
    "edit",
    [
        ["meta", "work", "project=apollo", "n=2"],
        ["meta", "work", "--unset", "k"],
    ],
)
def test_meta_edits_in_place_same_inode_messages_untouched(
    home: Path, cli: Cli, edit: list[str]
) -> None:
    store = _seed(home)
    store.session("work").update(metadata={"k": "v"})
    path = _path(home, "work")
    before, body = path.stat(), _body(path)
    result = cli(*edit)
    assert result.exit_code == 0, result.stderr
    after = path.stat()
    assert after.st_ino == before.st_ino and after.st_size == before.st_size
    assert _body(path) == body  # not one message byte rewritten
    header = store.session("work").header
    if "--unset" in edit:
        assert "k" not in header.metadata
    else:
        assert header.metadata == {"k": "v", "project": "apollo", "n": 2}


def test_model_and_system_edits_are_in_place(home: Path) -> None:
    store = _seed(home)
    path = _path(home, "work")
    ino, body = path.stat().st_ino, _body(path)
    store.session("work").update(model="m2", system="be brief")
    assert path.stat().st_ino == ino and _body(path) == body
    header = store.session("work").header
    assert (header.model, header.system) == ("m2", "be brief")
    store.session("work").update(system="")  # clearing it too
    assert store.session("work").header.system is None and path.stat().st_ino == ino


def test_a_header_that_outgrows_its_reserve_is_rewritten_once_with_a_bigger_one(
    home: Path,
) -> None:
    store = _seed(home)
    path = _path(home, "work")
    contents = [m.content for m in store.session("work").get_messages()]
    store.session("work").update(system="x" * 5000)
    line = path.read_bytes().split(b"\n", 1)[0]
    assert len(line) + 1 >= 8192 and len(line) + 1 & len(line) == 0
    assert store.session("work").header.system == "x" * 5000
    assert [m.content for m in store.session("work").get_messages()] == contents
    ino = path.stat().st_ino
    store.session("work").update(system="y" * 5000)  # fits now: in place
    assert path.stat().st_ino == ino


def _write_old_style(home: Path, name: str, n: int) -> Path:
    """A transcript as sessionctl 0.1 wrote it: line 1 unpadded."""
    (home / "sessions").mkdir(parents=True, exist_ok=True)
    now = "2026-01-01T00:00:00.000000Z"
    lines = [encode(Header(uid="01OLD", created_at=now, updated_at=now).to_record())]
    for i in range(1, n + 1):
        lines.append(encode(Message(f"id{i}", i, "user", f"old {i}", now, pos=i).to_record()))
    path = _path(home, name)
    path.write_bytes(b"".join(lines))
    os.chmod(path, 0o600)
    return path


def test_an_unpadded_transcript_is_padded_by_its_first_edit(home: Path, cli: Cli) -> None:
    path = _write_old_style(home, "old", 3)
    assert cli("meta", "old", "project=apollo").exit_code == 0
    line = path.read_bytes().split(b"\n", 1)[0]
    assert len(line) + 1 >= 1024
    assert [m.content for m in Store(home).session("old").get_messages()] == [
        "old 1",
        "old 2",
        "old 3",
    ]
    ino = path.stat().st_ino
    assert cli("meta", "old", "more=1").exit_code == 0
    assert path.stat().st_ino == ino  # the next edit is in place


# -- crashes in the middle of an edit --------------------------------------------------------

_KILL_AT_PWRITE = """
import os, signal, sys
from sessionctl import Store
real = os.pwrite
def pwrite(fd, data, offset):
    if offset == 0 and b'"type":"header"' in data:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(fd, data, offset)
os.pwrite = pwrite
Store(sys.argv[1]).session("work").update(metadata={"k": "new"}, model="m2")
"""

_TEAR_LINE_1 = """
import os, signal, sys
from sessionctl import Store
real = os.pwrite
def pwrite(fd, data, offset):
    if offset == 0 and b'"type":"header"' in data:
        real(fd, data[: len(data) // 3], 0)  # a torn overwrite: part new, part old
        os.kill(os.getpid(), signal.SIGKILL)
    return real(fd, data, offset)
os.pwrite = pwrite
Store(sys.argv[1]).session("work").update(metadata={"k": "new"}, model="m2")
"""


def _crash(home: Path, script: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", script, str(home)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr.decode()


@pytest.mark.parametrize("script", [_KILL_AT_PWRITE, _TEAR_LINE_1], ids=["before", "torn"])
def test_kill_9_between_journal_and_overwrite_readers_recover(
    home: Path, cli: Cli, script: str
) -> None:
    store = _seed(home)
    store.session("work").update(metadata={"k": "old"})
    path = _path(home, "work")
    ino, body = path.stat().st_ino, _body(path)
    _crash(home, script)
    raw = path.read_bytes()
    assert raw.endswith(b',"type":"header-edit"}\n')  # the committed journal record
    # Readers see the committed edit and never take the journal record for a message.
    for reader in (Store(home).session("work").header, transcript.read_header(path)):
        assert reader.metadata["k"] == "new" and reader.model == "m2"
    messages = [m.content for m in store.session("work").get_messages()]
    assert messages == [f"m{i}" for i in range(6)]
    assert store.session("work").info().messages == 6
    assert [m.content for m in store.session("work").iter_messages()] == messages
    recent = json.loads(cli("recent", "-s", "work", "-k", "2", "--json").stdout)
    assert [m["content"] for m in recent] == ["m4", "m5"]
    shown = json.loads(cli("show", "work", "--json").stdout)
    assert shown["metadata"]["k"] == "new" and len(shown["messages"]) == 6
    assert json.loads(cli("meta", "work", "--json").stdout)["k"] == "new"
    # The next writer finishes the edit: line 1 written, the journal record gone.
    store.session("work").add_message({"role": "user", "content": "after"})
    raw = path.read_bytes()
    assert b"header-edit" not in raw and path.stat().st_ino == ino
    assert json.loads(raw.split(b"\n", 1)[0])["metadata"]["k"] == "new"
    assert _body(path).startswith(body)
    assert not (home / "sessions" / "work.rejects").exists()


def test_torn_line_1_without_a_journal_at_the_end_recovers_from_an_earlier_one(
    home: Path,
) -> None:
    """An old sessionctl appended after an interrupted edit: the journal record is no
    longer last, but a torn line 1 is still rebuilt from it."""
    store = _seed(home)
    path = _path(home, "work")
    _crash(home, _TEAR_LINE_1)
    with open(path, "ab") as f:  # what a 0.1 writer would append
        f.write(encode(Message("late", 99, "user", "late", "2026-01-01T00:00:00Z").to_record()))
    assert store.session("work").header.metadata["k"] == "new"
    store.session("work").update(metadata={"j": 1})
    header = json.loads(path.read_bytes().split(b"\n", 1)[0])
    assert header["metadata"] == {"k": "new", "j": 1}


def test_a_torn_journal_record_is_not_committed(home: Path) -> None:
    store = _seed(home)
    store.session("work").update(metadata={"k": "old"})
    path = _path(home, "work")
    with open(path, "ab") as f:  # a crash in the middle of the journal append
        f.write(b'{"header":{"type":"header","format":"sessionctl-transcript","meta')
    assert store.session("work").header.metadata["k"] == "old"
    store.session("work").update(metadata={"k": "newer"})  # the next writer sets it aside
    assert store.session("work").header.metadata["k"] == "newer"
    rejects = (home / "sessions" / "work.rejects").read_text()
    assert "header-edit" not in path.read_text() and "sessionctl-transcript" in rejects


# -- show / export streamed, recent filtered, drop by id -------------------------------------


def test_show_json_and_export_streamed_are_the_same_text_as_before(home: Path, cli: Cli) -> None:
    store = _seed(home, n=5)
    session = store.session("work")
    session.update(metadata={"k": "ünï"}, system="sys")
    whole = session.to_dict()
    shown = cli("show", "work", "--json").stdout
    assert shown == json.dumps(whole, ensure_ascii=False, indent=2) + "\n"
    exported = cli("export", "work", "--format", "json").stdout
    assert exported == json.dumps(whole, ensure_ascii=False, indent=2) + "\n"
    empty = Store(home).session("empty")
    empty.update(metadata={})
    Store(home).session("empty").update(model="x")
    data = Store(home).session("empty").to_dict()
    assert cli("show", "empty", "--json").stdout == json.dumps(data, indent=2) + "\n"
    lines = cli("export", "work").stdout.splitlines()
    assert json.loads(lines[0])["type"] == "header" and len(lines) == 6
    markdown = cli("export", "work", "--format", "markdown").stdout
    assert markdown.startswith("# work\n\n**system prompt:** sys\n") and "## user" in markdown


def test_recent_with_a_role_filter_skips_other_roles_and_stops_at_k(home: Path, cli: Cli) -> None:
    store = _seed(home, n=8)
    store.session("work").add_message({"role": "llm", "content": "alias"})
    out = json.loads(cli("recent", "-s", "work", "--role", "assistant", "-k", "2", "--json").stdout)
    assert [m["content"] for m in out] == ["m7", "alias"]
    out = json.loads(cli("recent", "-s", "work", "--role", "system", "-k", "1", "--json").stdout)
    assert out == []


def test_drop_by_id_is_one_streamed_pass_that_keeps_counts_and_seqs(home: Path, cli: Cli) -> None:
    store = _seed(home, n=6)
    session = store.session("work")
    messages = session.get_messages()
    assert cli("drop", "-s", "work", messages[2].id).stdout.strip() == messages[2].id
    after = session.get_messages()
    assert [m.content for m in after] == ["m0", "m1", "m3", "m4", "m5"]
    assert [m.pos for m in after] == [1, 2, 3, 4, 5] and session.info().messages == 5
    assert session.drop().id == messages[5].id  # drop_last after a rewrite: counts stay right
    assert session.info().messages == 4
    new = session.add_message({"role": "user", "content": "next"})
    assert new.seq == 7  # seqs are never reused
    missing = cli("drop", "-s", "work", "NOPE")
    assert missing.exit_code != 0 and "no message with id 'NOPE'" in missing.stderr


def test_drop_by_id_renumbers_positions_keeps_unknown_keys_and_finishes_batches(
    home: Path,
) -> None:
    store = _seed(home, n=3)
    session = store.session("work")
    path = _path(home, "work")
    with open(path, "ab") as f:  # a newer sessionctl's record: a key after "pos"
        record = Message("X4", 4, "user", "m3", "2026-01-01T00:00:00Z", pos=4).to_record()
        f.write(encode({**record, "future": {"pos": 9}}))
    _, answer = session.store("prompt", "answer")  # a batch: the first says "more"
    first = session.get_messages()[0]
    session.drop(answer.id)  # the batch's last: the record left must not look unfinished
    records = [json.loads(line) for line in path.read_bytes().splitlines()[1:]]
    assert [r["pos"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["content"] for r in records] == ["m0", "m1", "m2", "m3", "prompt"]
    assert "more" not in records[-1] and records[3]["future"] == {"pos": 9}
    assert [m.content for m in session.get_messages()][-1] == "prompt"
    session.drop(first.id)
    records = [json.loads(line) for line in path.read_bytes().splitlines()[1:]]
    assert [r["pos"] for r in records] == [1, 2, 3, 4]
    assert records[2]["future"] == {"pos": 9} and session.info().messages == 4
    assert (
        transcript.read_header(path).base_seq == 6  # the file's high-water mark
        and session.add_message({"role": "user", "content": "n"}).seq == 7
    )


def test_a_failed_overwrite_of_line_1_leaves_the_old_header(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error (it cannot be produced for real here) after the journal append:
    the edit is rolled back, the command fails, nothing is left behind."""
    store = _seed(home)
    store.session("work").update(metadata={"k": "old"})
    path = _path(home, "work")
    before = path.read_bytes()
    real = os.pwrite
    failed: list[int] = []

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if offset == 0 and b'"new"' in data and not failed:
            failed.append(1)
            raise OSError(5, "Input/output error")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    with pytest.raises(OSError):
        store.session("work").update(metadata={"k": "new"})
    assert path.read_bytes() == before
    assert store.session("work").header.metadata["k"] == "old"


def test_recent_with_a_role_filter_over_many_blocks_matches_a_full_read(home: Path) -> None:
    """Blocks of other roles are passed over unparsed; what they cannot rule out (a
    hand-written record, a role in metadata) is parsed: the result is a full read's."""
    store = Store(home)
    session = store.session("big")
    batch: list[dict[str, Any]] = [
        {"role": ("user", "assistant")[i % 2], "content": f"c{i} " + "w" * 60} for i in range(3000)
    ]
    batch[10] = {"role": "system", "content": "early system"}
    batch[1500] = {"role": "user", "content": "nested", "metadata": {"role": "system"}}
    batch[2000] = {"role": "tool", "content": "a tool"}
    batch[2500] = {"role": "system", "content": "escaped \x1b here"}  # written as \u001b
    session.add_messages(batch)
    path = _path(home, "big")
    with open(path, "ab") as f:  # hand-written, not compact: must still be found
        f.write(
            b'{"type": "message", "id": "H1", "seq": 5000, "role": "system", "content": "hand"}\n'
        )
    session.add_messages([{"role": "user", "content": f"late {i}"} for i in range(2000)])
    everything = session.get_messages()
    for roles, k in (
        (["system"], 1),
        (["system"], 5),
        (["tool"], 3),
        (["llm"], 4),
        (["tool", "system"], 9),
    ):
        expected = [
            m.content
            for m in everything
            if m.role in {("assistant" if r == "llm" else r) for r in roles}
        ][-k:]
        got = session.get_recent(top_k=k, role=roles, as_text=True)
        assert got == expected, (roles, k)
