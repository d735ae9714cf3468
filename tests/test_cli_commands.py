"""Every transcript command through the real CLI error boundary: happy paths, errors, exit codes."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, Result, set_activity

ERROR = "sessionctl: error: "
ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
COMMANDS = [
    "list", "recent", "add", "store", "show", "export", "import", "fork", "drop",
    "clear", "delete", "restore", "prune", "meta", "rename",
]  # fmt: skip


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result
    assert "Traceback" not in result.stderr
    assert ERROR not in result.stderr
    return result


def fails(result: Result, code: int, *needles: str) -> str:
    """Assert exit ``code`` and exactly one stderr line, the error; return it."""
    assert result.exit_code == code, result
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith(ERROR)]
    assert len(errors) == 1, result.stderr
    assert lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def transcript(home: Path, name: str) -> Path:
    return home / "sessions" / f"{name}.jsonl"


def records(home: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in transcript(home, name).read_bytes().splitlines()][1:]


def age(home: Path, name: str, seconds_ago: float) -> None:
    set_activity(transcript(home, name), time.time() - seconds_ago)


def listed(cli: Cli, *args: str) -> list[str]:
    return [s["name"] for s in json.loads(ok(cli("list", "--json", *args)).stdout)["sessions"]]


def seed(cli: Cli, name: str = "work", *contents: str) -> list[str]:
    return [ok(cli("add", "-s", name, "--role", "user", c)).stdout.strip() for c in contents]


# -- help ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(cli: Cli, command: str) -> None:
    result = ok(cli(command, "--help"))
    assert "Example" in result.stdout
    assert result.stderr == ""


def test_unknown_command_and_option_are_usage_errors(cli: Cli) -> None:
    fails(cli("frobnicate"), 2)
    fails(cli("list", "--frob"), 2)
    fails(cli("recent", "-s"), 2)


# -- list ------------------------------------------------------------------------------


def test_list_empty_and_json_shape(cli: Cli, home: Path) -> None:
    empty = ok(cli("list"))
    assert empty.stdout == ""
    assert json.loads(ok(cli("list", "--json")).stdout) == {"sessions": [], "next_cursor": None}
    seed(cli, "work", "a", "b")
    ok(cli("meta", "work", "project=x"))
    ok(cli("fork", "work", "child"))
    data = json.loads(ok(cli("list", "--json")).stdout)
    assert set(data) == {"sessions", "next_cursor"} and data["next_cursor"] is None
    by_name = {s["name"]: s for s in data["sessions"]}
    assert set(by_name) == {"work", "child"}
    for s in by_name.values():
        assert {
            "name",
            "messages",
            "created_at",
            "updated_at",
            "model",
            "parent",
            "metadata",
        } <= set(s)
        assert s["created_at"].endswith("Z") and s["updated_at"].endswith("Z")
    assert by_name["work"]["messages"] == 2 and by_name["work"]["parent"] is None
    assert by_name["work"]["metadata"] == {"project": "x"} and by_name["work"]["model"] is None
    assert by_name["child"]["parent"] == "work" and by_name["child"]["messages"] == 2
    table = ok(cli("list")).stdout
    assert table.splitlines()[0].split()[:2] == ["name", "messages"]


def test_list_newest_first_and_paging(cli: Cli, home: Path) -> None:
    names = ["a", "b", "c", "d", "e"]
    for i, name in enumerate(names):
        seed(cli, name, "x")
        age(home, name, 100 - i * 10)  # e is newest
    assert listed(cli) == ["e", "d", "c", "b", "a"]
    page = json.loads(ok(cli("list", "--json", "--limit", "2")).stdout)
    assert [s["name"] for s in page["sessions"]] == ["e", "d"]
    seen = [s["name"] for s in page["sessions"]]
    cursor = page["next_cursor"]
    while cursor:
        page = json.loads(ok(cli("list", "--json", "--limit", "2", "--cursor", cursor)).stdout)
        seen += [s["name"] for s in page["sessions"]]
        cursor = page["next_cursor"]
    assert seen == ["e", "d", "c", "b", "a"]
    text = ok(cli("list", "--limit", "2"))
    assert "--cursor" in text.stderr and "e" in text.stdout
    fails(cli("list", "--cursor", "bogus"), 2, "cursor")
    fails(cli("list", "--limit", "-1"), 2)
    fails(cli("list", "--limit", "many"), 2)


def test_list_deleted(cli: Cli) -> None:
    seed(cli, "keep", "x")
    seed(cli, "gone", "x")
    ok(cli("delete", "gone"))
    assert listed(cli) == ["keep"]
    trash = json.loads(ok(cli("list", "--deleted", "--json")).stdout)
    assert [s["name"] for s in trash["sessions"]] == ["gone"]
    assert trash["sessions"][0]["deleted_at"].endswith("Z")
    assert "gone" in ok(cli("list", "--deleted")).stdout


# -- recent ----------------------------------------------------------------------------


def test_recent_modes(cli: Cli) -> None:
    ok(cli("add", "-s", "work", "--role", "system", "sys"))
    ok(cli("store", "-s", "work", "q1", "a1"))
    ok(cli("store", "-s", "work", "q2", "a2"))
    assert ok(cli("recent", "-s", "work", "-k", "2", "--text")).stdout == "q2\na2\n"
    human = ok(cli("recent", "-s", "work", "-k", "2")).stdout
    assert human == "user: q2\nassistant: a2\n"
    as_json = json.loads(ok(cli("recent", "-s", "work", "--json")).stdout)
    assert [m["content"] for m in as_json] == ["sys", "q1", "a1", "q2", "a2"]
    for m in as_json:
        assert {"id", "seq", "role", "content", "created_at"} <= set(m)
    assert [m["seq"] for m in as_json] == [1, 2, 3, 4, 5]
    raw = json.loads(ok(cli("recent", "-s", "work", "-k", "1", "--raw")).stdout)
    assert raw[0]["content"] == "a2" and raw[0]["role"] == "assistant"
    assert ok(cli("recent", "-s", "work", "--role", "user", "--text")).stdout == "q1\nq2\n"
    llm = ok(cli("recent", "-s", "work", "--role", "llm", "--role", "system", "--text"))
    assert llm.stdout == "sys\na1\na2\n"
    fails(cli("recent", "-s", "work", "--role", "wizard"), 2, "role")


def test_recent_k_edges(cli: Cli) -> None:
    seed(cli, "work", "a", "b")
    zero = ok(cli("recent", "-s", "work", "-k", "0"))
    assert zero.stdout == "" and zero.stderr == ""
    assert json.loads(ok(cli("recent", "-s", "work", "-k", "0", "--json")).stdout) == []
    assert ok(cli("recent", "-s", "work", "-k", "100000", "--text")).stdout == "a\nb\n"
    for bad in ("-1", "abc", "1.5", ""):
        fails(cli("recent", "-s", "work", "-k", bad), 2)
    fails(cli("recent", "-s", "work", "--json", "--text"), 2, "--text", "--json")
    fails(cli("recent", "-s", "work", "--raw", "--json"), 2)


def test_recent_without_session_uses_most_recent(cli: Cli, home: Path) -> None:
    fails(cli("recent"), 3)
    seed(cli, "older", "from older")
    seed(cli, "newer", "from newer")
    age(home, "older", 500)
    age(home, "newer", 100)
    assert ok(cli("recent", "--text")).stdout == "from newer\n"
    seed(cli, "older", "again")  # now the most recently active
    assert ok(cli("recent", "--text", "-k", "1")).stdout == "again\n"
    fails(cli("recent", "-s", "ghost"), 3, "ghost")


# -- add / store -------------------------------------------------------------------------


def test_add_text_stdin_and_auto_create(cli: Cli, home: Path) -> None:
    first = ok(cli("add", "-s", "new", "--role", "user", "hello world"))
    assert ULID.match(first.stdout.strip()) and first.stdout.count("\n") == 1
    piped = ok(cli("add", "-s", "new", "--role", "assistant", input="line one\nline two\n"))
    assert ULID.match(piped.stdout.strip())
    ok(cli("add", "-s", "new", "-r", "llm", input=b"bytes \xe2\x9c\x93\r\n"))
    got = records(home, "new")
    assert [(r["role"], r["content"]) for r in got] == [
        ("user", "hello world"),
        ("assistant", "line one\nline two"),
        ("assistant", "bytes ✓"),
    ]
    assert got[0]["id"] == first.stdout.strip()
    ok(cli("add", "-s", "new", "--role", "tool", "--tool-call-id", "c1", "--name", "fn", "42"))
    ok(cli("add", "-s", "new", "--role", "user", "--metadata", '{"src": "cron"}', "m"))
    ok(cli("add", "-s", "new", "--role", "assistant", "--model", "gpt-x", "m"))
    tail = records(home, "new")[-3:]
    assert tail[0]["tool_call_id"] == "c1" and tail[0]["name"] == "fn"
    assert tail[1]["metadata"] == {"src": "cron"} and tail[2]["model"] == "gpt-x"


def test_add_errors_write_nothing(cli: Cli, home: Path) -> None:
    fails(cli("add", "-s", "x", "--role", "user", input=b"ok \xff\xfe bad"), 2, "UTF-8")
    fails(cli("add", "-s", "x", "--role", "wizard", "hi"), 2, "role")
    fails(cli("add", "-s", "x", "hi"), 2, "--role")
    fails(cli("add", "--role", "user", "hi"), 2, "no session given", "-s NAME")
    fails(cli("add", "-s", "x", "--role", "user", "--metadata", "[1]", "hi"), 2, "metadata")
    fails(cli("add", "-s", "x", "--role", "user", "--metadata", "{bad", "hi"), 2, "metadata")
    # undecodable command-line bytes arrive as lone surrogates
    fails(cli("add", "-s", "x", "--role", "user", "bad \udcff"), 2, "UTF-8")
    assert not transcript(home, "x").exists()
    seed(cli, "x", "first")
    fails(cli("add", "-s", "x", "--role", "user", input=b"\xff"), 2)
    assert [r["content"] for r in records(home, "x")] == ["first"]


def test_store_prints_two_ids(cli: Cli, home: Path) -> None:
    result = ok(cli("store", "-s", "pair", "What is 2+2?", "4", "--model", "m"))
    ids = result.stdout.split()
    assert len(ids) == 2 and all(ULID.match(i) for i in ids) and ids[0] != ids[1]
    got = records(home, "pair")
    assert [(r["id"], r["role"], r["content"]) for r in got] == [
        (ids[0], "user", "What is 2+2?"),
        (ids[1], "assistant", "4"),
    ]
    assert got[1]["model"] == "m"
    fails(cli("store", "-s", "pair", "only prompt"), 2)
    fails(cli("store", "pair", "a", "b", "c", "d"), 2)
    assert len(ok(cli("store", "pair", "a", "b")).stdout.split()) == 2  # SESSION PROMPT RESPONSE


# -- show / export / import ----------------------------------------------------------------


def test_show(cli: Cli) -> None:
    seed(cli, "work", "a")
    ok(cli("store", "-s", "work", "q", "ans"))
    result = ok(cli("show", "work"))
    assert result.stdout == "user: a\nuser: q\nassistant: ans\n"
    assert "3 messages" in result.stderr
    data = json.loads(ok(cli("show", "work", "--json")).stdout)
    assert data["name"] == "work" and len(data["messages"]) == 3
    fails(cli("show", "ghost"), 3, "ghost")
    fails(cli("show"), 2)


def test_export_formats(cli: Cli) -> None:
    seed(cli, "work", "hello")
    ok(cli("store", "-s", "work", "q", "**bold** answer"))
    jsonl = ok(cli("export", "work")).stdout
    lines = [json.loads(line) for line in jsonl.splitlines()]
    assert lines[0]["type"] == "header" and lines[0]["name"] == "work"
    assert [r["content"] for r in lines[1:]] == ["hello", "q", "**bold** answer"]
    assert ok(cli("export", "work", "--format", "jsonl")).stdout == jsonl
    whole = json.loads(ok(cli("export", "work", "--format", "json")).stdout)
    assert whole["name"] == "work" and [m["seq"] for m in whole["messages"]] == [1, 2, 3]
    md = ok(cli("export", "work", "-f", "markdown")).stdout
    assert md.startswith("# work") and "**bold** answer" in md and "## assistant" in md
    fails(cli("export", "work", "--format", "xml"), 2, "xml")
    fails(cli("export", "ghost"), 3)


def test_export_import_round_trip_is_exact(cli: Cli, home: Path, tmp_path: Path) -> None:
    ok(cli("add", "-s", "src", "--role", "system", "be brief"))
    ok(cli("add", "-s", "src", "--role", "user", "--metadata", '{"n": [1, {"x": null}]}', "hi ✓"))
    ok(cli("add", "-s", "src", "--role", "tool", "--tool-call-id", "c9", "--name", "f", "out"))
    ok(cli("store", "-s", "src", "multi\nline", "answer", "--model", "m1"))
    ok(cli("drop", "-s", "src", records(home, "src")[0]["id"]))  # a gap in seqs
    ok(cli("meta", "src", "owner=me", "n=3"))
    exported = ok(cli("export", "src")).stdout
    dump = tmp_path / "src.jsonl"
    dump.write_text(exported)
    assert ok(cli("import", str(dump), "--as", "copy")).stdout == "copy\n"
    assert ok(cli("import", "-", "--as", "piped", input=exported)).stdout == "piped\n"
    original = records(home, "src")
    for name in ("copy", "piped"):
        again = records(home, name)
        assert again == original
        reexport = json.loads(ok(cli("export", name, "-f", "json")).stdout)
        assert reexport["metadata"] == {"owner": "me", "n": 3}
    # without --as, the name comes from the export itself
    ok(cli("delete", "src", "--purge"))
    assert ok(cli("import", str(dump))).stdout == "src\n"
    assert records(home, "src") == original
    # json export round-trips too
    as_json = ok(cli("export", "src", "-f", "json")).stdout
    ok(cli("import", "-", "--as", "fromjson", input=as_json))
    assert records(home, "fromjson") == original


def test_import_openai_messages_shape(cli: Cli, home: Path, tmp_path: Path) -> None:
    msgs = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "part one"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "t1", "type": "function"}]},
        {"role": "tool", "content": "r", "tool_call_id": "t1"},
    ]
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(msgs))
    assert ok(cli("import", str(path))).stdout == "chat\n"  # name from the file
    got = records(home, "chat")
    assert [(r["seq"], r["role"], r["content"]) for r in got] == [
        (1, "system", "sys"),
        (2, "user", "part one"),
        (3, "assistant", ""),
        (4, "tool", "r"),
    ]
    assert got[2]["tool_calls"] == [{"id": "t1", "type": "function"}]
    ok(cli("import", "-", "--as", "wrapped", input=json.dumps({"messages": msgs})))
    assert len(records(home, "wrapped")) == 4
    # a created_at with an offset is stored in UTC, not relabelled
    one = [{"role": "user", "content": "x", "created_at": "2024-01-01T12:00:00+02:00"}]
    ok(cli("import", "-", "--as", "tz", input=json.dumps(one)))
    assert records(home, "tz")[0]["created_at"] == "2024-01-01T10:00:00.000000Z"


@pytest.mark.parametrize(
    "payload",
    [
        "{not json",
        '{"type":"header","format":"sessionctl-transcript","version":1}\n{"role": "user", broken\n',
        '[{"role": "wizard", "content": "x"}]',
        '[{"content": "no role"}]',
        '[{"role": "user", "content": 5}]',
        "[1, 2]",
        '{"no_messages": true}',
        '{"type":"header","version":99}\n',
        '{"type":"header","version":"2"}\n',
        '{"model": 5, "messages": []}',
        '{"parent": {"a": 1}, "messages": []}',
        '{"metadata": [1], "messages": []}',
        "",
        "null",
    ],
)
def test_import_bad_input_is_a_usage_error_and_creates_nothing(
    cli: Cli, home: Path, payload: str
) -> None:
    result = cli("import", "-", "--as", "target", input=payload)
    fails(result, 2, "nothing imported")
    assert not transcript(home, "target").exists()
    assert listed(cli) == []


def test_import_errors(cli: Cli, home: Path, tmp_path: Path) -> None:
    seed(cli, "taken", "mine")
    before = transcript(home, "taken").read_bytes()
    fails(cli("import", "-", "--as", "taken", input='[{"role":"user","content":"x"}]'), 1, "taken")
    fails(cli("import", "-", "--as", "TAKEN", input='[{"role":"user","content":"x"}]'), 1)
    assert transcript(home, "taken").read_bytes() == before
    fails(cli("import", "-", input='[{"role":"user","content":"x"}]'), 2, "--as")
    fails(cli("import", "-", "--as", "../evil", input="[]"), 2, "names are")
    fails(cli("import", str(tmp_path / "missing.jsonl")), 3)
    fails(cli("import", str(tmp_path)), 2)
    fails(cli("import", "-", "--as", "bad", input=b"\xff\xfe"), 2)
    assert not (tmp_path / "evil.jsonl").exists() and not (home / "evil.jsonl").exists()


# -- fork ------------------------------------------------------------------------------------


def test_fork(cli: Cli, home: Path) -> None:
    ids = seed(cli, "src", "a", "b", "c")
    before = transcript(home, "src").read_bytes()
    assert ok(cli("fork", "src", "all")).stdout == "all\n"
    assert ok(cli("fork", "src", "upto", "--at", ids[1])).stdout == "upto\n"
    assert [r["content"] for r in records(home, "all")] == ["a", "b", "c"]
    part = records(home, "upto")
    assert [r["content"] for r in part] == ["a", "b"]
    assert not {r["id"] for r in part} & set(ids)
    info = {s["name"]: s for s in json.loads(ok(cli("list", "--json")).stdout)["sessions"]}
    assert info["upto"]["parent"] == "src" and info["upto"]["parent_message"] == ids[1]
    assert transcript(home, "src").read_bytes() == before


def test_fork_errors(cli: Cli, home: Path) -> None:
    seed(cli, "src", "a")
    seed(cli, "taken", "mine")
    before = transcript(home, "taken").read_bytes()
    fails(cli("fork", "src", "taken"), 1, "taken")
    fails(cli("fork", "src", "Taken"), 1)
    assert transcript(home, "taken").read_bytes() == before
    fails(cli("fork", "ghost", "new"), 3, "ghost")
    fails(cli("fork", "src", "new", "--at", "01NOPE"), 3, "01NOPE")
    assert not transcript(home, "new").exists()
    fails(cli("fork", "src", "../x"), 2, "names are")
    fails(cli("fork", "src"), 2)


# -- drop / clear ----------------------------------------------------------------------------


def test_drop(cli: Cli, home: Path) -> None:
    ids = seed(cli, "work", "a", "b", "c")
    assert ok(cli("drop", "-s", "work")).stdout.strip() == ids[2]
    assert ok(cli("drop", "-s", "work", ids[0])).stdout.strip() == ids[0]
    assert [r["content"] for r in records(home, "work")] == ["b"]
    fails(cli("drop", "-s", "work", ids[0]), 3, ids[0])
    fails(cli("drop", "-s", "work", "nonsense"), 3)
    ok(cli("drop", "-s", "work"))
    fails(cli("drop", "-s", "work"), 3, "no messages")
    fails(cli("drop"), 2, "no session given", "-s NAME")
    fails(cli("drop", ids[0]), 3, ids[0])  # without -s the argument is the session
    fails(cli("drop", "-s", "ghost"), 3, "ghost")
    assert ok(cli("add", "-s", "work", "--role", "user", "d")).exit_code == 0
    assert records(home, "work")[-1]["seq"] == 4  # never reuses a dropped seq


def test_clear_only_that_session(cli: Cli, home: Path) -> None:
    seed(cli, "a", "1", "2")
    seed(cli, "b", "3")
    ok(cli("meta", "a", "keep=yes"))
    result = ok(cli("clear", "-s", "a"))
    assert "2" in result.stderr and result.stdout == ""
    assert records(home, "a") == []
    assert [r["content"] for r in records(home, "b")] == ["3"]
    assert json.loads(ok(cli("meta", "a", "--json")).stdout) == {"keep": "yes"}
    assert listed(cli).count("a") == 1
    fails(cli("clear"), 2)
    fails(cli("clear", "-s", "ghost"), 3)
    ok(cli("clear", "-s", "a"))  # clearing an empty session is fine


# -- delete / restore -------------------------------------------------------------------------


def test_delete_restore_purge(cli: Cli, home: Path) -> None:
    seed(cli, "work", "old")
    seed(cli, "other", "x")
    ok(cli("delete", "work"))
    assert listed(cli) == ["other"]
    assert ok(cli("recent", "--text")).stdout == "x\n"  # the deleted one is never picked
    fails(cli("recent", "-s", "work"), 3)
    fails(cli("delete", "work"), 3)
    ok(cli("restore", "work"))
    assert ok(cli("recent", "-s", "work", "--text")).stdout == "old\n"
    fails(cli("restore", "work"), 3)
    ok(cli("delete", "work", "--purge"))
    assert json.loads(ok(cli("list", "--deleted", "--json")).stdout)["sessions"] == []
    fails(cli("restore", "work"), 3)
    fails(cli("delete", "ghost"), 3)
    fails(cli("delete", "ghost", "--purge"), 3)


def test_write_to_deleted_name_starts_fresh_with_a_note(cli: Cli, home: Path) -> None:
    seed(cli, "work", "old")
    ok(cli("delete", "work"))
    fresh = ok(cli("add", "-s", "work", "--role", "user", "new"))
    assert "trash" in fresh.stderr
    assert [r["content"] for r in records(home, "work")] == ["new"]
    again = ok(cli("add", "-s", "work", "--role", "user", "newer"))
    assert again.stderr == ""  # appending to the new live session says nothing
    fails(cli("restore", "work"), 1, "work")
    assert [r["content"] for r in records(home, "work")] == ["new", "newer"]
    ok(cli("rename", "work", "work-new"))
    ok(cli("restore", "work"))
    assert [r["content"] for r in records(home, "work")] == ["old"]


# -- prune -------------------------------------------------------------------------------------


def test_prune(cli: Cli, home: Path) -> None:
    for name in ("stale", "ancient", "fresh"):
        seed(cli, name, name)
    age(home, "stale", 40 * 86400)
    age(home, "ancient", 400 * 86400)
    dry = ok(cli("prune", "--older-than", "30d", "--dry-run"))
    assert dry.stdout.split() == ["ancient", "stale"] and "would" in dry.stderr
    assert sorted(listed(cli)) == ["ancient", "fresh", "stale"]
    report = json.loads(ok(cli("prune", "--older-than", "30d", "--dry-run", "--json")).stdout)
    assert report["dry_run"] is True and [s["name"] for s in report["sessions"]] == [
        "ancient",
        "stale",
    ]
    done = ok(cli("prune", "--older-than", "4w"))
    assert sorted(done.stdout.split()) == ["ancient", "stale"]
    assert listed(cli) == ["fresh"]
    assert sorted(listed(cli, "--deleted")) == ["ancient", "stale"]
    nothing = ok(cli("prune", "--older-than", "30d", "--json"))
    assert json.loads(nothing.stdout)["sessions"] == []
    seed(cli, "old2", "x")
    age(home, "old2", 3 * 3600)
    purged = json.loads(ok(cli("prune", "--older-than", "90m", "--purge", "--json")).stdout)
    assert [s["name"] for s in purged["sessions"]] == ["old2"] and purged["purge"] is True
    assert listed(cli) == ["fresh"]
    assert "old2" not in listed(cli, "--deleted")


@pytest.mark.parametrize("bad", ["30x", "-5d", "0d", "abc", "", "5", "d", "1.5d", "30 days"])
def test_prune_bad_durations(cli: Cli, bad: str) -> None:
    seed(cli, "work", "x")
    fails(cli("prune", "--older-than", bad), 2)
    assert listed(cli) == ["work"]


def test_prune_needs_older_than(cli: Cli) -> None:
    fails(cli("prune"), 2, "--older-than")


# -- meta / rename ------------------------------------------------------------------------------


def test_meta_merge_json_values_and_unset(cli: Cli) -> None:
    seed(cli, "work", "x")
    assert ok(cli("meta", "work")).stdout == ""
    out = ok(cli("meta", "work", "project=apollo", "n=3", "flag=true", "list=[1,2]", 'obj={"a":1}'))
    assert "project=apollo" in out.stdout.splitlines()
    data = json.loads(ok(cli("meta", "work", "--json")).stdout)
    assert data == {"project": "apollo", "n": 3, "flag": True, "list": [1, 2], "obj": {"a": 1}}
    ok(cli("meta", "work", "n=4", "eq=a=b", "empty="))
    data = json.loads(ok(cli("meta", "work", "--json")).stdout)
    assert data["n"] == 4 and data["project"] == "apollo" and data["eq"] == "a=b"
    assert data["empty"] == ""
    data = json.loads(ok(cli("meta", "work", "--unset", "n", "--unset", "nope", "--json")).stdout)
    assert "n" not in data and data["project"] == "apollo"
    fails(cli("meta", "work", "novalue"), 2, "KEY=VALUE")
    fails(cli("meta", "work", "=x"), 2)
    # setting keys creates a session (as `add` does); showing or unsetting does not
    fails(cli("meta", "ghost"), 3)
    fails(cli("meta", "ghost", "--unset", "a"), 3)
    fails(cli("meta", "ghost", "k=bad \udcff"), 2, "UTF-8")
    fails(cli("meta", "bad/name", "a=1"), 2)
    assert "ghost" not in listed(cli)
    assert json.loads(ok(cli("meta", "ghost", "a=1", "--json")).stdout) == {"a": 1}
    assert "ghost" in listed(cli)
    assert json.loads(ok(cli("show", "ghost", "--json")).stdout)["messages"] == []
    fails(cli("meta", "work", "k=bad \udcff"), 2, "UTF-8")
    assert "k" not in json.loads(ok(cli("meta", "work", "--json")).stdout)


def test_rename(cli: Cli, home: Path) -> None:
    seed(cli, "old", "a")
    seed(cli, "other", "b")
    ok(cli("rename", "old", "new"))
    assert sorted(listed(cli)) == ["new", "other"]
    assert [r["content"] for r in records(home, "new")] == ["a"]
    assert not transcript(home, "old").exists()
    before = transcript(home, "other").read_bytes()
    fails(cli("rename", "new", "other"), 1, "other")
    fails(cli("rename", "new", "OTHER"), 1, "case")
    assert transcript(home, "other").read_bytes() == before
    fails(cli("rename", "ghost", "x"), 3)
    fails(cli("rename", "new", "../x"), 2, "names are")
    ok(cli("rename", "new", "NEW"))  # a case-only rename of itself
    assert sorted(listed(cli)) == ["NEW", "other"]


# -- names ----------------------------------------------------------------------------------------

BAD_NAMES = ["..", "../x", "a/b", ".hidden", "-rf", "x" * 129, "a\x00b", "a\nb", "café", "a b", ""]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_names_are_usage_errors_everywhere(
    cli: Cli, home: Path, tmp_path: Path, name: str
) -> None:
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    for args in (
        ["add", "-s", name, "--role", "user", "x"],
        ["store", "-s", name, "q", "a"],
        ["recent", "-s", name],
        ["drop", "-s", name],
        ["clear", "-s", name],
        ["show", "--", name],
        ["export", "--", name],
        ["delete", "--", name],
        ["restore", "--", name],
        ["meta", "--", name, "a=1"],
        ["import", "-", "--as", name],
    ):
        result = cli(*args, input='[{"role": "user", "content": "x"}]')
        fails(result, 2, "names are 1-128")
    seed(cli, "ok", "x")
    for args in (["fork", "ok", "--", name], ["rename", "ok", "--", name]):
        fails(cli(*args), 2, "names are 1-128")
    after = sorted(str(p) for p in tmp_path.rglob("*") if "ok." not in p.name)
    assert [p for p in after if p not in before and not p.startswith(str(home))] == []
    assert listed(cli) == ["ok"]


def test_longest_name_is_fine(cli: Cli) -> None:
    name = "a" * 128
    seed(cli, name, "x")
    assert listed(cli) == [name]


def test_case_twins_are_refused(cli: Cli, home: Path) -> None:
    seed(cli, "Work", "x")
    for args in (
        ["add", "-s", "work", "--role", "user", "y"],
        ["store", "-s", "WORK", "q", "a"],
        ["fork", "Work", "work"],
        ["import", "-", "--as", "wORK"],
    ):
        fails(cli(*args, input='[{"role":"user","content":"x"}]'), 1, "Work", "case")
    assert listed(cli) == ["Work"]
    assert [r["content"] for r in records(home, "Work")] == ["x"]
    fails(cli("recent", "-s", "work"), 3)  # lookups are exact


def test_errors_are_one_line_even_with_newlines_in_input(cli: Cli) -> None:
    seed(cli, "work", "x")
    fails(cli("drop", "-s", "work", "id\nwith\nnewlines"), 3)
    fails(cli("fork", "work", "new", "--at", "a\nb"), 3)


def test_round_trip_of_awkward_text(cli: Cli, home: Path) -> None:
    awkward = [
        "line\u2028separator\u2029para\x85nel",
        "tab\tcr\r\nlf\n",
        "nul\x00byte and \x1b[31mansi\x1b[0m",
        "  leading and trailing spaces  ",
        "emoji 👩‍💻 rtl שלום",
        "",
        '{"looks": "like json"}',
    ]
    for text in awkward:
        ok(cli("add", "-s", "src", "--role", "user", text))
    exported = ok(cli("export", "src")).stdout
    ok(cli("import", "-", "--as", "copy", input=exported))
    assert [r["content"] for r in records(home, "copy")] == awkward
    assert records(home, "copy") == records(home, "src")
    as_json = json.loads(ok(cli("recent", "-s", "src", "-k", "100", "--json")).stdout)
    assert [m["content"] for m in as_json] == awkward


def test_names_that_look_like_sidecars_do_not_collide(cli: Cli, home: Path) -> None:
    names = ["a", "a.index", "a.jsonl", "a.rejects", "a.faiss", "a.lock"]
    for name in names:
        seed(cli, name, f"I am {name}")
    assert sorted(listed(cli)) == sorted(names)
    ok(cli("delete", "a"))
    ok(cli("fork", "a.index", "b"))
    ok(cli("rename", "a.jsonl", "c"))
    assert sorted(listed(cli)) == sorted(["a.index", "a.rejects", "a.faiss", "a.lock", "b", "c"])
    for name in ("a.index", "a.rejects", "a.faiss", "a.lock"):
        assert ok(cli("recent", "-s", name, "--text")).stdout == f"I am {name}\n"
    assert ok(cli("recent", "-s", "c", "--text")).stdout == "I am a.jsonl\n"
    ok(cli("restore", "a"))
    assert ok(cli("recent", "-s", "a", "--text")).stdout == "I am a\n"


SGR_CODE = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.parametrize("no_color", ["1", ""], ids=["NO_COLOR", "no NO_COLOR"])
def test_color_always_colours_a_pipe_and_auto_never_does(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, no_color: str
) -> None:
    monkeypatch.setenv("NO_COLOR", no_color)
    ok(cli("store", "-s", "work", "hello", "hi there"))
    monkeypatch.setenv("SESSIONCTL_COLOR", "always")  # beats NO_COLOR, as documented
    listed, shown = ok(cli("list")).stdout, ok(cli("recent", "-s", "work")).stdout
    assert SGR_CODE.search(listed), listed
    assert "\x1b[1;36m" in shown and "\x1b[1;32m" in shown, shown  # user cyan, assistant green
    assert "hi there" in SGR_CODE.sub("", shown)
    for setting in ("auto", "never"):
        monkeypatch.setenv("SESSIONCTL_COLOR", setting)
        assert "\x1b" not in ok(cli("list")).stdout
        assert ok(cli("recent", "-s", "work")).stdout == "user: hello\nassistant: hi there\n"


def test_color_always_reaches_a_real_pipe(sh: Callable[..., Any]) -> None:
    assert sh("add", "-s", "work", "--role", "user", "hello").returncode == 0
    forced = sh("recent", "-s", "work", env={"SESSIONCTL_COLOR": "always", "NO_COLOR": "1"})
    assert forced.returncode == 0 and "\x1b[1;36m" in forced.stdout, forced
    plain = sh("list", env={"SESSIONCTL_COLOR": "auto"})
    assert plain.returncode == 0 and "\x1b" not in plain.stdout


TOOL_EXCHANGE: list[dict[str, Any]] = [
    {"role": "user", "content": "weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
            {"id": "c2", "type": "function",
             "function": {"name": "weather", "arguments": '{"city": "Rome"}'}},
        ],
    },
    {"role": "tool", "content": "18C sunny", "tool_call_id": "c1", "name": "weather"},
    {"role": "tool", "content": "error: ValueError: no station", "tool_call_id": "c2",
     "name": "weather"},
    {"role": "assistant", "content": "Paris is 18C and sunny."},
]  # fmt: skip


def test_show_and_markdown_export_say_which_tools_were_called(
    cli: Cli, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sessionctl import Store

    Store(home).session("t").add_messages(TOOL_EXCHANGE)
    monkeypatch.setenv("SESSIONCTL_COLOR", "always")  # the terminal rendering
    shown = SGR_CODE.sub("", ok(cli("show", "t")).stdout)
    assert '→ weather({"city": "Paris"})  c1' in shown
    assert '→ weather({"city": "Rome"})  c2' in shown
    assert "tool  weather (c1)  #3" in shown and "18C sunny" in shown
    markdown = ok(cli("export", "t", "-f", "markdown")).stdout
    assert '- `weather` (`c1`): `{"city": "Paris"}`' in markdown
    assert "## tool `weather` (`c2`) · " in markdown
    monkeypatch.setenv("SESSIONCTL_COLOR", "never")  # piped text stays the exact content
    assert ok(cli("show", "t")).stdout.splitlines()[1] == "assistant: "
