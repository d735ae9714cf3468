"""Hostile input: bad names, odd messages, damaged files, bad numbers, a read-only or full disk.

Each case must give one clear error line with the documented exit code (or succeed),
never a traceback, never lose data, and never write outside the data dir. Property
tests (hypothesis) cover names, contents, tail reads, and a state machine that compares
the Store with a simple in-memory model of it.

CI size by default; more examples by hand::

    SESSIONCTL_STRESS=1 pytest tests/test_reliability_hostile.py          # 20x the examples
    SESSIONCTL_STRESS_EXAMPLES=2000 pytest tests/test_reliability_hostile.py
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import string
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from conftest import REPO, Cli, Result
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from sessionctl import Store
from sessionctl.backend.files import transcript
from sessionctl.errors import (
    InvalidName,
    MessageNotFound,
    SessionExists,
    SessionNotFound,
    UsageError,
)
from sessionctl.names import is_valid_name

STRESS = os.environ.get("SESSIONCTL_STRESS", "") not in ("", "0")
# Set to exercise the fallbacks used where mounting is not allowed (simulated EROFS/ENOSPC).
NO_MOUNT = os.environ.get("SESSIONCTL_TEST_NO_MOUNT", "") not in ("", "0")
EXAMPLES = int(os.environ.get("SESSIONCTL_STRESS_EXAMPLES") or (0 if not STRESS else 1000))


def examples(ci: int) -> int:
    return EXAMPLES or ci


PROFILE: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    "derandomize": not STRESS,  # CI runs are reproducible; by hand they explore
}


# -- helpers ---------------------------------------------------------------------------------


def fails(result: Result, code: int, *words: str) -> None:
    """One ``sessionctl: error:`` line on stderr, exit ``code``, no traceback, no stdout."""
    assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("sessionctl: error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    for word in words:
        assert word.lower() in errors[0].lower(), (word, errors[0])


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def tree(root: Path, *, skip: Path | None = None) -> dict[str, tuple[int, int, str]]:
    """Mode, size and content hash of everything under ``root`` (not following links)."""
    out: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if skip is not None and (here == skip or skip in here.parents):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = here / name
            if skip is not None and path == skip:
                continue
            st_ = path.lstat()
            digest = ""
            if path.is_file() and not path.is_symlink():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            elif path.is_symlink():
                digest = os.readlink(path)
            out[str(path.relative_to(root))] = (st_.st_mode, st_.st_size, digest)
    return out


class Outside:
    """Nothing outside the data dir changes (the test's tmp tree, the user's home)."""

    def __init__(self, root: Path, home: Path) -> None:
        self.root, self.home = root, home
        self.mark()

    def mark(self) -> None:
        """Take the snapshot now (after the test set up its own files out there)."""
        self.before = tree(self.root, skip=self.home)

    def check(self) -> None:
        assert tree(self.root, skip=self.home) == self.before


@pytest.fixture
def outside(tmp_path: Path, home: Path) -> Iterator[Outside]:
    watch = Outside(tmp_path, home)
    yield watch
    watch.check()


def messages(home: Path, name: str) -> list[tuple[int, str, str]]:
    return [(m.seq, m.role, m.content) for m in Store(home).session(name).get_messages()]


def temps(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.name.endswith(".tmp")]


def env_for(home: Path) -> dict[str, str]:
    return {**os.environ, "SESSIONCTL_HOME": str(home), "PYTHONPATH": str(REPO)}


def sh_bytes(home: Path, *args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sessionctl", *args],
        input=data,
        capture_output=True,
        env=env_for(home),
        cwd=REPO,
        timeout=120,
    )


# -- names -------------------------------------------------------------------------------------

BAD_NAMES = ["..", "../x", "a/b", ".hidden", "-rf", "a" * 129, "nul\x00x", "new\nline", "é",
             "名前", "", " ", "a b", "x~y", "a\\b", "./a", "a.jsonl/..", "~"]  # fmt: skip


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_names_are_usage_errors_everywhere(
    cli: Cli, home: Path, name: str, outside: Outside
) -> None:
    ok(cli("add", "-s", "good", "--role", "user", "keep me"))
    before = tree(home)
    commands = [
        ("add", "-s", name, "--role", "user", "x"),
        ("store", "-s", name, "p", "r"),
        ("recent", "-s", name),
        ("drop", "-s", name),
        ("clear", "-s", name),
        ("show", name),
        ("export", name),
        ("meta", name, "k=v"),
        ("fork", "good", name),
        ("fork", name, "other"),
        ("rename", "good", name),
        ("rename", name, "other"),
        ("delete", name),
        ("restore", name),
        ("reindex", name),
        ("relevant", "q", "-s", name),
        ("import", "-", "--as", name),
    ]
    for args in commands:
        result = cli(*args, input='[{"role": "user", "content": "x"}]')
        fails(result, 2)
        if name.startswith("-") and args[0] in ("show", "export", "delete", "restore", "reindex"):
            continue  # click reads it as an unknown option: still a usage error
        if name and not name.startswith("-"):
            assert "invalid session name" in result.stderr or "no such option" in result.stderr
    assert tree(home) == before
    assert messages(home, "good") == [(1, "user", "keep me")]


def test_bad_names_from_a_real_shell(home: Path) -> None:
    for name in ("..", "../x", "a/b", ".hidden", "-rf", "a" * 129, "new\nline", "é"):
        result = sh_bytes(home, "add", "-s", name, "--role", "user", "x")
        assert result.returncode == 2, (name, result.stderr)
        assert result.stderr.count(b"\n") == 1 and b"Traceback" not in result.stderr
    assert not (home / "sessions").exists() or not list((home / "sessions").glob("*.jsonl"))


def test_128_characters_is_fine_and_case_twins_are_refused(cli: Cli, home: Path) -> None:
    longest = "a" * 128
    ok(cli("add", "-s", longest, "--role", "user", "x"))
    assert (home / "sessions" / f"{longest}.jsonl").is_file()
    ok(cli("add", "-s", "Work", "--role", "user", "x"))
    for args in (
        ("add", "-s", "work", "--role", "user", "y"),
        ("store", "-s", "WORK", "p", "r"),
        ("fork", "Work", "wOrK"),
        ("rename", longest, "work"),
        ("meta", "Work", "k=v"),  # the right case: works
    ):
        result = cli(*args)
        if args[0] == "meta":
            ok(result)
        else:
            fails(result, 1, "case")
    assert sorted(p.name for p in (home / "sessions").glob("*.jsonl")) == [
        "Work.jsonl",
        f"{longest}.jsonl",
    ]


NAME_ALPHABET = string.ascii_letters + string.digits + "._-/\\ ~\x00\n:é*?"


@settings(max_examples=examples(150), **PROFILE)
@given(name=st.text(alphabet=NAME_ALPHABET, max_size=130) | st.text(max_size=20))
def test_any_name_is_either_valid_and_stays_inside_or_refused(name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        store = Store(home)
        if not is_valid_name(name):
            with pytest.raises(InvalidName, match="invalid session name"):
                store.session(name)
            assert not home.exists()
            return
        store.session(name).add_message({"role": "user", "content": "x"})
        path = home / "sessions" / f"{name}.jsonl"
        assert path.is_file() and path.resolve().parent == (home / "sessions").resolve()
        assert [i.name for i in store.list_sessions().sessions] == [name]
        assert set(os.listdir(home)) == {".store.lock", "activity.log", "sessions", "trash"}


# -- message contents --------------------------------------------------------------------------


def test_empty_binary_and_invalid_utf8_messages(home: Path, outside: Outside) -> None:
    assert sh_bytes(home, "add", "-s", "m", "--role", "user", "").returncode == 0
    assert sh_bytes(home, "add", "-s", "m", "--role", "user", data=b"").returncode == 0
    binary = bytes(range(1, 128)).decode() + "\x00 end"
    result = sh_bytes(home, "add", "-s", "m", "--role", "user", data=binary.encode())
    assert result.returncode == 0, result.stderr
    for data in (b"\xff\xfe\x00junk", b"ok then \xc3\x28", b"\xed\xa0\x80 surrogate"):
        bad = sh_bytes(home, "add", "-s", "m", "--role", "user", data=data)
        assert bad.returncode == 2 and b"not valid UTF-8" in bad.stderr, bad.stderr
        assert bad.stderr.count(b"\n") == 1 and b"Traceback" not in bad.stderr
        new = sh_bytes(home, "add", "-s", "fresh", "--role", "user", data=data)
        assert new.returncode == 2
    assert not (home / "sessions" / "fresh.jsonl").exists()
    assert [c for _, _, c in messages(home, "m")] == ["", "", binary]
    shown = sh_bytes(home, "recent", "-s", "m", "--json")
    assert [m["content"] for m in json.loads(shown.stdout)] == ["", "", binary]


def test_lone_surrogates_from_the_api_and_argv(cli: Cli, home: Path) -> None:
    store = Store(home)
    store.session("s").add_message({"role": "user", "content": "fine"})
    with pytest.raises(UsageError, match="UTF-8"):
        store.session("s").add_messages([{"role": "user", "content": "ok"}, {"role": "user",
                                         "content": "bad \udcff"}])  # fmt: skip
    fails(cli("add", "-s", "s", "--role", "user", "argv \udcff bytes"), 2, "UTF-8")
    assert messages(home, "s") == [(1, "user", "fine")]


def test_ten_megabyte_message(home: Path, tmp_path: Path) -> None:
    big = ("0123456789abcdef" * 65536 * 10)[: 10 * 1024 * 1024]
    result = sh_bytes(home, "add", "-s", "big", "--role", "user", data=big.encode())
    assert result.returncode == 0, result.stderr
    assert sh_bytes(home, "add", "-s", "big", "--role", "user", "after").returncode == 0
    got = sh_bytes(home, "recent", "-s", "big", "-k", "2", "--json")
    assert [m["content"] for m in json.loads(got.stdout)] == [big, "after"]
    listed = sh_bytes(home, "list", "--json")
    assert json.loads(listed.stdout)["sessions"][0]["messages"] == 2
    assert sh_bytes(home, "drop", "-s", "big").returncode == 0  # reads back over 10 MB
    got = sh_bytes(home, "recent", "-s", "big", "-k", "1", "--text")
    assert got.stdout == big.encode() + b"\n"
    exported = sh_bytes(home, "export", "big")
    assert sh_bytes(home, "import", "-", "--as", "copy", data=exported.stdout).returncode == 0
    assert messages(home, "copy") == messages(home, "big")


@settings(max_examples=examples(60), **PROFILE)
@given(contents=st.lists(st.text(max_size=200), min_size=1, max_size=6))
def test_any_text_round_trips_through_add_recent_export_import(contents: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "home")
        session = store.session("t")
        session.add_messages([{"role": "user", "content": c} for c in contents])
        assert session.get_recent(top_k=len(contents), as_text=True) == contents
        from sessionctl.service.transfer import export_session, import_session

        data = export_session(session, "jsonl").encode()
        copy = import_session(store, data, where="-", name="copy")
        assert [m.content for m in copy.get_messages()] == contents
        assert copy.to_dict()["messages"] == session.to_dict()["messages"]


# -- hostile imports --------------------------------------------------------------------------

IMP_HEADER = '{"type":"header","format":"sessionctl-transcript","version":1,"name":"imp"}'
IMP_GOOD = '{"type":"message","id":"01A","seq":1,"role":"user","content":"hi"}'


def _line(**fields: Any) -> str:
    record = {"type": "message", "id": "01B", "seq": 2, "role": "assistant", "content": "ok"}
    record.update(fields)
    return json.dumps(record)


# (the third line of a JSON-lines import, words the error must have)
BAD_LINES = {
    "deep-nesting": ('{"role":"user","metadata":' + "[" * 50_000 + "]" * 50_000 + "}", "nested"),
    "nested-101": (_line(metadata={"a": json.loads("[" * 100 + "]" * 100)}), "nested"),
    "part-text-int": (_line(content=[{"type": "text", "text": 5}]), "content part 1 text"),
    "part-text-null": (_line(content=[{"text": None}]), "content part 1 text"),
    "part-not-object": (_line(content=["hi"]), "content part 1"),
    "content-int": (_line(content=5), "content"),
    "name-int": (_line(name=5), "name must be text"),
    "name-list": (_line(name=["a"]), "name must be text"),
    "model-int": (_line(model=5), "model must be text"),
    "tool-call-id-list": (_line(tool_call_id=[1]), "tool_call_id"),
    "tool-calls-text": (_line(tool_calls="f()"), "tool_calls"),
    "tool-calls-ints": (_line(tool_calls=[1]), "tool_calls"),
    "usage-list": (_line(usage=[1]), "usage"),
    "metadata-list": (_line(metadata=[1]), "metadata"),
    "metadata-nan": ('{"role":"user","seq":2,"metadata":{"x":NaN}}', "not valid JSON"),
    "lone-surrogate": (_line(content="ok \udcff"), "content|surrogate"),
    "surrogate-key": (_line(metadata={"\ud800": 1}), "metadata|surrogate"),
    "interrupted-text": (_line(interrupted="false"), "interrupted"),
    "interrupted-int": (_line(interrupted=0), "interrupted"),
    "created-at-int": (_line(created_at=5), "created_at"),
    "created-at-text": (_line(created_at="yesterday"), "created_at"),
    "role-int": (_line(role=5), "role"),
    "no-role": ('{"seq":2,"content":"x"}', "role"),
    "type-bogus": (_line(type="note"), "type"),
    "id-int": (_line(id=7), "id"),
    "id-space": (_line(id="a b"), "id"),
    "id-duplicate": (_line(id="01A"), "used twice"),
    "seq-bool": (_line(seq=True), "seq"),
    "seq-zero": (_line(seq=0), "seq"),
    "seq-float": (_line(seq=2.0), "seq"),
    "seq-text": (_line(seq="2"), "seq"),
    "seq-2**63": (_line(seq=2**63), "seq"),
    "seq-10**400": (_line(seq=10**400), "seq"),
    "seq-not-rising": (_line(seq=1), "seq"),
    "seq-missing": ('{"role":"user","content":"x"}', "seq"),
    "second-header": (IMP_HEADER, "second header"),
    "not-an-object": ("[1]", "object"),
    "not-json": ('{"role": "user", broken', "not valid JSON"),
    "not-utf8": ('{"role":"user","content":"\xff"}', "UTF-8"),
}


def _no_sessions(home: Path) -> bool:
    return not list((home / "sessions").glob("*.jsonl")) if (home / "sessions").exists() else True


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_hostile_import_lines_are_refused_by_line(home: Path, case: str) -> None:
    bad, words = BAD_LINES[case]
    data = "\n".join([IMP_HEADER, IMP_GOOD, bad, _line(id="01C", seq=3)]).encode()
    if case == "not-utf8":
        data = data.replace("\xff".encode(), b"\xff")
    result = sh_bytes(home, "import", "-", data=data)
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert err.startswith("sessionctl: error: stdin: line 3: ") and err.count("\n") == 1, err
    assert "nothing imported" in err and "internal error" not in err
    for word in words.split("|"):
        assert word.lower() in err.lower(), (word, err)
    assert _no_sessions(home)


def _header(old: str, new: str) -> str:
    return IMP_HEADER.replace(old, new) + "\n" + IMP_GOOD


BAD_DOCUMENTS = {
    "deep-array": ("[" * 100_000 + "]" * 100_000, "nested"),
    "header-version-true": (_header('"version":1', '"version":true'), "version"),
    "header-version-0": (_header('"version":1', '"version":0'), "version"),
    "header-format": (_header("sessionctl-transcript", "other"), "format"),
    "header-created-at": (IMP_HEADER[:-1] + ',"created_at":5}\n' + IMP_GOOD, "session created_at"),
    "header-name-list": (_header('"imp"', '["a"]'), "name"),
    "header-metadata": (IMP_HEADER[:-1] + ',"metadata":[1]}\n' + IMP_GOOD, "session metadata"),
    "document-name-int": ('{"name": 5, "messages": []}', "name"),
    "document-created-at": ('{"created_at": "soon", "messages": []}', "created_at"),
    "document-version-true": ('{"version": true, "messages": []}', "version"),
    "document-message": ('{"messages": [{"role": "user"}, {"role": "user", "name": 5}]}',
                         "message 2: name"),
    "array-message": ('[{"role": "user", "content": [{"text": null}]}]', "message 1: content"),
    "array-seq-2**63": (f'[{{"role": "user", "seq": {2**63}}}]', "message 1: seq"),
    "document-extra-data": ('[{"role": "user"}]\n[{"role": "user"}]', "line 2"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_DOCUMENTS))
def test_hostile_import_documents_and_headers_are_refused(home: Path, case: str) -> None:
    data, words = BAD_DOCUMENTS[case]
    result = sh_bytes(home, "import", "-", "--as", "imp", data=data.encode())
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert err.startswith("sessionctl: error: stdin: ") and err.count("\n") == 1, err
    assert "nothing imported" in err and "internal error" not in err
    assert words.lower() in err.lower(), (words, err)
    assert _no_sessions(home)


def test_import_strips_a_bom_and_keeps_ids_seqs_and_big_seqs(home: Path) -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}},
             {"type": "text", "text": "b"}]  # fmt: skip
    top = _line(id="01C", seq=2**63 - 1, interrupted=True, content=parts)
    data = b"\xef\xbb\xbf" + "\n".join([IMP_HEADER, IMP_GOOD, top, ""]).encode()
    result = sh_bytes(home, "import", "-", data=data)
    assert result.returncode == 0 and result.stdout == b"imp\n", result.stderr
    got = Store(home).session("imp").get_messages()
    assert [(m.id, m.seq, m.content, m.interrupted) for m in got] == [
        ("01A", 1, "hi", False), ("01C", 2**63 - 1, "ab", True)]  # fmt: skip
    doc = b"\xef\xbb\xbf" + json.dumps([{"role": "user", "content": None}]).encode()
    assert sh_bytes(home, "import", "-", "--as", "doc", data=doc).returncode == 0
    assert messages(home, "doc") == [(1, "user", "")]


class _Weird:
    pass


def _cyclic() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


BAD_DICTS: dict[str, tuple[Any, str]] = {
    "cyclic-metadata": ({"messages": [{"role": "user", "metadata": _cyclic()}]}, "nested"),
    "set-metadata": ({"messages": [{"role": "user", "metadata": {"s": {1}}}]}, "not JSON"),
    "object-extra": ({"messages": [{"role": "user", "x": _Weird()}]}, "not JSON"),
    "nan-usage": ({"messages": [{"role": "user", "usage": {"t": float("nan")}}]}, "not JSON"),
    "int-key": ({"messages": [{"role": "user", "metadata": {1: 2}}]}, "key"),
    "name-int": ({"messages": [{"role": "user", "name": 5}]}, "message 1: name"),
    "seq-bool": ({"messages": [{"role": "user", "seq": True}]}, "message 1: seq"),
    "interrupted-text": ({"messages": [{"role": "user", "interrupted": "no"}]}, "interrupted"),
    "surrogate": ({"messages": [{"role": "user", "content": "\udcff"}]}, "surrogate"),
    "mappingproxy": ({"messages": [{"role": "user", "x": {"y": MappingProxyType({})}}]}, "JSON"),
    "session-model": ({"model": 5, "messages": []}, "model"),
    "session-version": ({"version": 2, "messages": []}, "newer"),
}


@pytest.mark.parametrize("case", list(BAD_DICTS))
def test_hostile_from_dict_is_a_usage_error(home: Path, case: str) -> None:
    data, words = BAD_DICTS[case]
    store = Store(home)
    with pytest.raises(UsageError) as caught:
        store.from_dict(data, name="imp")
    assert words.lower() in str(caught.value).lower() and "\n" not in str(caught.value)
    assert caught.value.exit_code == 2
    assert not store.session("imp").exists


def _import_measured(home: Path, *args: str, data: bytes = b"") -> tuple[Result, float, int]:
    """Run `sessionctl import ARGS` in a real process; return it, seconds and peak RSS (KiB)."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "t = time.monotonic()\n"
        "p = subprocess.run([sys.executable, '-m', 'sessionctl', 'import', *sys.argv[1:]],"
        " input=sys.stdin.buffer.read(), capture_output=True, timeout=60)\n"
        "sys.stderr.buffer.write(p.stderr)\n"
        "print(p.returncode, time.monotonic() - t,"
        " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, *args], input=data, capture_output=True,
                          env=env_for(home), cwd=REPO, timeout=120)  # fmt: skip
    code, seconds, rss = done.stdout.split()
    return Result(int(code), "", done.stderr.decode()), float(seconds), int(rss)


LIMITS = {
    # (input file or "-", stdin bytes, options, words of the error)
    "dev-zero-default": ("/dev/zero", b"", (), "line 1|longer than 16 MiB|--max-line-bytes"),
    "dev-zero-small": ("/dev/zero", b"", ("--max-line-bytes", "4K"), "line 1|longer than 4 KiB"),
    "dev-zero-file-cap": ("/dev/zero", b"", ("--max-bytes", "1M"), "larger than 1 MiB"),
    "blank-lines": ("-", b"\n" * (9 << 20), ("--max-bytes", "8M"), "larger than 8 MiB"),
    "open-array": ("-", b"[" + b" " * (3 << 20), ("--max-bytes", "2M"), "larger than 2 MiB"),
    "long-line": ("-", (IMP_HEADER + "\n" + _line(content="x" * 70_000)).encode(),
                  ("--max-line-bytes", "64K"), "line 2|longer than 64 KiB"),
    "long-header": ("-", (IMP_HEADER[:-1] + ',"system":"' + "x" * 5000 + '"}\n').encode(),
                    ("--max-line-bytes", "4K"), "line 1|longer than 4 KiB"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(LIMITS))
def test_import_input_limits_fail_fast_in_bounded_memory(home: Path, case: str) -> None:
    source, data, options, words = LIMITS[case]
    result, seconds, rss = _import_measured(home, source, "--as", "imp", *options, data=data)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("sessionctl: error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr and "nothing imported" in result.stderr
    for word in words.split("|"):
        assert word in result.stderr, (word, result.stderr)
    # measured here: /dev/zero with the default 16 MiB line limit, 0.4 s and ~35 MB
    assert seconds < 20 and rss < 200_000, (seconds, rss)
    assert _no_sessions(home)


def test_import_limits_can_be_raised_and_documents_are_bounded_by_the_file_cap(
    home: Path, tmp_path: Path
) -> None:
    big = "y" * 70_000
    line = (IMP_HEADER + "\n" + _line(content=big) + "\n").encode()
    refused = sh_bytes(home, "import", "-", "--max-line-bytes", "64K", data=line)
    assert refused.returncode == 2 and b"line 2" in refused.stderr
    assert sh_bytes(home, "import", "-", "--max-line-bytes", "69K", data=line).returncode == 0
    assert messages(home, "imp") == [(2, "assistant", big)]
    # the other formats import does: a JSON document (pretty or on one line) and an
    # OpenAI messages list, from a file; the line limit does not apply to them
    pretty = sh_bytes(home, "export", "imp", "--format", "json").stdout
    compact = json.dumps(json.loads(pretty)).encode()
    openai = json.dumps([{"role": "user", "content": [{"type": "text", "text": big}]}]).encode()
    for name, data in (("pretty", pretty), ("compact", compact), ("openai", openai)):
        path = tmp_path / f"{name}.json"
        path.write_bytes(data)
        args = ("import", str(path), "--as", name, "--max-line-bytes", "1K")
        assert sh_bytes(home, *args).returncode == 0, name
        assert [c for _, _, c in messages(home, name)] == [big], name
        over = sh_bytes(home, *args[:4], "--as", name + "2", "--max-bytes", "32K")
        assert over.returncode == 2 and b"larger than 32 KiB" in over.stderr, name
    for bad in ("0", "-1", "5X", "1.5M", "", "99999999999999999999"):
        result = sh_bytes(home, "import", "-", "--as", "z", "--max-bytes", bad, data=line)
        assert result.returncode == 2 and b"invalid size" in result.stderr, bad
    assert not Store(home).session("z").exists


# -- damaged transcripts ---------------------------------------------------------------------

GOOD = ["first message", "second message", "third message"]


def _seed(home: Path, name: str = "d") -> Path:
    store = Store(home)
    for text in GOOD:
        store.session(name).add_message({"role": "user", "content": text})
    return home / "sessions" / f"{name}.jsonl"


DAMAGE: dict[str, Callable[[list[bytes]], list[bytes]]] = {
    "garbage in the middle": lambda ls: [*ls[:2], b'{"garbage": ', *ls[2:]],
    "invalid utf-8 in the middle": lambda ls: [*ls[:2], b"\xff\xfe\xfd", *ls[2:]],
    "a JSON array in the middle": lambda ls: [*ls[:2], b"[1, 2, 3]", *ls[2:]],
    "a message without seq": lambda ls: [*ls[:2], b'{"type":"message","id":"X"}', *ls[2:]],
    "garbage at the end": lambda ls: [*ls, b"}}not json{{"],
    "NUL bytes at the end": lambda ls: [*ls, b"\x00" * 50],
}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("torn", [False, True], ids=["whole-lines", "torn-tail"])
def test_corrupt_lines_are_reported_kept_and_never_lose_data(
    cli: Cli, home: Path, damage: str, torn: bool, outside: Outside
) -> None:
    path = _seed(home)
    lines = path.read_bytes().split(b"\n")[:-1]
    damaged = DAMAGE[damage](lines)
    bad = [line for line in damaged if line not in lines]
    data = b"\n".join(damaged) + b"\n"
    if torn:
        data += b'{"type":"message","id":"T","seq":9,"role":"us'
    path.write_bytes(data)
    for args in (("recent", "-s", "d", "--json"), ("show", "d", "--json"), ("list", "--json"),
                 ("export", "d"), ("relevant", "second", "-s", "d", "--json")):  # fmt: skip
        ok(cli(*args))
    shown = json.loads(ok(cli("show", "d", "--json")).stdout)
    assert [m["content"] for m in shown["messages"]] == GOOD
    warning = ok(cli("show", "d")).stderr
    if not damage.endswith("the end"):
        assert "line 3" in warning  # reported by its line number
    fourth = ok(cli("add", "-s", "d", "--role", "user", "fourth message")).stdout.strip()
    ok(cli("meta", "d", "k=v"))  # in place: not a rewrite, the bad lines stay
    assert [c for _, _, c in messages(home, "d")] == [*GOOD, "fourth message"]
    ok(cli("drop", "-s", "d", fourth))  # a rewrite (by id): moves the bad lines aside
    assert [c for _, _, c in messages(home, "d")] == GOOD
    raw = path.read_bytes()
    for line in raw.split(b"\n")[:-1]:
        json.loads(line)  # only good lines remain
    rejects = [
        json.loads(line) for line in (home / "sessions" / "d.rejects").read_text().splitlines()
    ]
    kept = {r["data"] for r in rejects}
    for line in bad:
        assert line.decode("utf-8", "backslashreplace") in kept, (line, kept)
    if torn:
        assert '{"type":"message","id":"T","seq":9,"role":"us' in kept
    assert not temps(home)


def test_a_batch_cut_short_is_never_half_kept(home: Path) -> None:
    """store() writes prompt and answer together: a write cut short keeps neither."""
    store = Store(home)
    session = store.session("b")
    session.add_message({"role": "user", "content": "before"})
    path = home / "sessions" / "b.jsonl"
    intact = path.read_bytes()
    session.store("the prompt", "the answer " * 100)
    full = path.read_bytes()
    rejects = home / "sessions" / "b.rejects"
    for cut in (len(intact) + 50, full.index(b"\n", len(intact)) + 1, len(full) - 10):
        path.write_bytes(full[:cut])  # what a crash (or a reader mid-write) sees
        assert [m.content for m in session.get_messages()] == ["before"]
        assert session.get_recent(top_k=5, as_text=True) == ["before"]
        assert session.info().messages == 1
        seen = len(rejects.read_text().splitlines()) if rejects.exists() else 0
        session.add_message({"role": "user", "content": "after"})  # the next writer repairs
        assert [m.content for m in session.get_messages()] == ["before", "after"]
        new = [json.loads(line)["data"] for line in rejects.read_text().splitlines()[seen:]]
        cut_off = full[len(intact) : cut].decode().split("\n")
        assert sorted(new) == sorted(line for line in cut_off if line)  # set aside, not lost
        session.drop()
    session.store("p2", "a2")
    session.drop()  # drop the answer: the prompt stays, whole
    assert [m.content for m in session.get_messages()] == ["before", "p2"]
    assert session.get_recent(top_k=5, as_text=True) == ["before", "p2"]


def test_set_aside_lines_survive_a_crashed_rename_and_a_new_session(home: Path) -> None:
    """A rename killed after moving the sidecars leaves NEW.rejects without NEW.jsonl;
    creating NEW later must not discard those set-aside lines."""
    store = Store(home)
    store.session("old").add_message({"role": "user", "content": "x"})
    with open(home / "sessions" / "old.jsonl", "ab") as f:
        f.write(b'{"torn line kept aside')
    store.session("old").add_message({"role": "user", "content": "y"})
    kept = (home / "sessions" / "old.rejects").read_bytes()
    os.rename(home / "sessions" / "old.rejects", home / "sessions" / "new.rejects")
    store.session("new").add_message({"role": "user", "content": "z"})
    assert (home / "sessions" / "new.rejects").read_bytes() == kept


def test_a_corrupt_header_fails_that_session_only(cli: Cli, home: Path) -> None:
    _seed(home, "ok")
    path = _seed(home, "broken")
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b'{"type":"header","format":"sessionctl-trans' + b"\n".join(lines[1:]))
    for args in (("recent", "-s", "broken"), ("show", "broken"), ("add", "-s", "broken",
                 "--role", "user", "x"), ("drop", "-s", "broken"), ("clear", "-s", "broken"),
                 ("fork", "broken", "copy"), ("export", "broken")):  # fmt: skip
        fails(cli(*args), 1, "broken.jsonl")
    listed = ok(cli("list", "--json"))
    assert [s["name"] for s in json.loads(listed.stdout)["sessions"]] == ["ok"]
    assert "broken.jsonl" in listed.stderr
    result = ok(cli("relevant", "first", "--json"))  # all sessions: the broken one is skipped
    assert {h["session"] for h in json.loads(result.stdout)} <= {"ok"}
    assert path.read_bytes().startswith(b'{"type":"header","format":"sessionctl-trans')


def test_a_newer_format_is_refused_not_rewritten(cli: Cli, home: Path) -> None:
    path = _seed(home)
    lines = path.read_bytes().split(b"\n")
    header = json.loads(lines[0])
    header["version"] = 99
    data = json.dumps(header).encode() + b"\n" + b"\n".join(lines[1:])
    path.write_bytes(data)
    for args in (("recent", "-s", "d"), ("add", "-s", "d", "--role", "user", "x"),
                 ("drop", "-s", "d"), ("meta", "d", "k=v")):  # fmt: skip
        fails(cli(*args), 1, "newer")
    assert path.read_bytes() == data


@pytest.mark.parametrize("kind", ["directory", "symlink-out", "symlink-in", "fifo"])
def test_transcript_that_is_no_regular_file(
    cli: Cli, home: Path, tmp_path: Path, kind: str, outside: Outside
) -> None:
    _seed(home, "fine")
    victim = tmp_path / "victim.jsonl"
    path = home / "sessions" / "odd.jsonl"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        target = victim if kind == "symlink-out" else home / "sessions" / "fine.jsonl"
        if kind == "symlink-out":
            shutil.copy(home / "sessions" / "fine.jsonl", victim)
            victim.chmod(0o644)
        path.symlink_to(target)
    outside.mark()
    fine = (home / "sessions" / "fine.jsonl").read_bytes()
    for args in (("recent", "-s", "odd"), ("show", "odd"), ("export", "odd"),
                 ("add", "-s", "odd", "--role", "user", "x"), ("store", "-s", "odd", "p", "r"),
                 ("drop", "-s", "odd"), ("clear", "-s", "odd"), ("meta", "odd", "k=v"),
                 ("fork", "odd", "copy"), ("relevant", "x", "-s", "odd"),
                 ("reindex", "odd")):  # fmt: skip
        fails(cli(*args), 1, "odd.jsonl")
    listed = ok(cli("list", "--json"))
    assert [s["name"] for s in json.loads(listed.stdout)["sessions"]] == ["fine"]
    assert "odd.jsonl" in listed.stderr
    ok(cli("relevant", "first", "--json"))  # across all sessions: odd is skipped
    assert (home / "sessions" / "fine.jsonl").read_bytes() == fine
    assert not (home / "sessions" / "copy.jsonl").exists()
    # It can be moved out of the way without following it.
    ok(cli("delete", "odd"))
    assert not os.path.lexists(path)


def test_sessions_or_trash_dir_as_a_symlink_is_refused(
    cli: Cli, home: Path, tmp_path: Path, outside: Outside
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (elsewhere / "x.jsonl").write_bytes(b"not a session\n")
    home.mkdir(mode=0o700)
    (home / "sessions").symlink_to(elsewhere)
    outside.mark()
    for args in (("add", "-s", "a", "--role", "user", "x"), ("list",), ("recent", "-s", "x"),
                 ("show", "x"), ("relevant", "q")):  # fmt: skip
        fails(cli(*args), 1, "symbolic link")
    assert os.listdir(elsewhere) == ["x.jsonl"] and (elsewhere.stat().st_mode & 0o777) == 0o755
    (home / "sessions").unlink()
    ok(cli("add", "-s", "a", "--role", "user", "x"))
    shutil.rmtree(home / "trash")
    (home / "trash").symlink_to(elsewhere)
    fails(cli("delete", "a"), 1, "symbolic link")
    fails(cli("list", "--deleted"), 1, "symbolic link")
    assert os.listdir(elsewhere) == ["x.jsonl"]
    (home / "trash").unlink()
    assert messages(home, "a") == [(1, "user", "x")]


# -- the semantic index ---------------------------------------------------------------------


def _index_damage(home: Path, tmp_path: Path, how: str) -> None:
    faiss, manifest = home / "sessions" / "d.faiss", home / "sessions" / "d.index.json"
    if how == "truncated faiss":
        faiss.write_bytes(faiss.read_bytes()[:100])
    elif how == "garbage faiss":
        faiss.write_bytes(os.urandom(4000))
    elif how == "empty faiss":
        faiss.write_bytes(b"")
    elif how == "faiss is a directory":
        faiss.unlink()
        faiss.mkdir()
    elif how == "faiss links outside":
        target = tmp_path / "outside.faiss"
        target.write_bytes(faiss.read_bytes())
        faiss.unlink()
        faiss.symlink_to(target)
    elif how == "manifest of another model":
        doc = json.loads(manifest.read_text())
        doc["model_id"] = "someone/else-768"
        manifest.write_text(json.dumps(doc))
    elif how == "garbage manifest":
        manifest.write_bytes(b"\x00\xff{{{")
    elif how == "manifest missing":
        manifest.unlink()
    elif how == "manifest lists other seqs":
        doc = json.loads(manifest.read_text())
        doc["seqs"] = [[1, 2]]
        doc["count"] = 2
        doc["digests"] = doc["digests"][:12]
        manifest.write_text(json.dumps(doc))


INDEX_DAMAGE = ["truncated faiss", "garbage faiss", "empty faiss", "faiss is a directory",
                "faiss links outside", "manifest of another model", "garbage manifest",
                "manifest missing", "manifest lists other seqs"]  # fmt: skip


@pytest.mark.parametrize("how", INDEX_DAMAGE)
def test_a_damaged_index_is_rebuilt_with_a_warning(
    cli: Cli, home: Path, tmp_path: Path, how: str, outside: Outside
) -> None:
    _seed(home)
    first = json.loads(ok(cli("relevant", "second message", "-s", "d", "--json")).stdout)
    _index_damage(home, tmp_path, how)
    outside.mark()
    result = ok(cli("relevant", "second message", "-s", "d", "--json"))
    assert json.loads(result.stdout) == first
    assert "warning" in result.stderr and "index" in result.stderr
    again = ok(cli("relevant", "second message", "-s", "d", "--json"))
    assert json.loads(again.stdout) == first and again.stderr == ""  # repaired for good
    if how == "faiss links outside":
        assert not (home / "sessions" / "d.faiss").is_symlink()


# -- numbers and durations ---------------------------------------------------------------------

BAD_NUMBERS = [
    ("relevant", "q", "-d", "nan"),
    ("relevant", "q", "-d", "inf"),
    ("relevant", "q", "-d", "-inf"),
    ("relevant", "q", "-d", "-0.01"),
    ("relevant", "q", "-d", "2.0001"),
    ("relevant", "q", "-d", "1e999"),
    ("relevant", "q", "-d", "zero"),
    ("relevant", "q", "-k", "-1"),
    ("relevant", "q", "-k", "1.5"),
    ("recent", "-s", "d", "-k", "-1"),
    ("recent", "-s", "d", "-k", "nan"),
    ("recent", "-s", "d", "-k", ""),
    ("list", "--limit", "-1"),
    ("list", "--limit", "x"),
    ("list", "--cursor", "garbage"),
    ("list", "--cursor", "WzEsIDJd"),  # valid base64 JSON, wrong shape
    ("prune", "--older-than", "0d"),
    ("prune", "--older-than", "-5d"),
    ("prune", "--older-than", "30"),
    ("prune", "--older-than", "1y"),
    ("prune", "--older-than", ""),
    ("prune", "--older-than", "nan"),
    ("prune", "--older-than", "1.5d"),
    ("prune", "--older-than", "99999999999999999999d"),
    ("prune", "--older-than", "9999999999d", "--purge"),
    ("meta", "d", "=value"),
    ("meta", "d", "novalue"),
    ("export", "d", "--format", "xml"),
    ("add", "-s", "d", "--role", "robot", "x"),
    ("add", "-s", "d", "--role", "user", "--metadata", "[1]", "x"),
    ("add", "-s", "d", "--role", "user", "--metadata", "{bad", "x"),
]


@pytest.mark.parametrize("args", BAD_NUMBERS, ids=" ".join)
def test_bad_numbers_and_durations_are_usage_errors(
    cli: Cli, home: Path, args: tuple[str, ...]
) -> None:
    _seed(home)
    before = tree(home)
    fails(cli(*args), 2)
    assert tree(home) == before


@pytest.mark.parametrize("duration", ["800000d", "99999999w", "2000000d"])
def test_huge_but_valid_durations_prune_nothing(cli: Cli, home: Path, duration: str) -> None:
    _seed(home)
    for extra in ((), ("--purge",), ("--dry-run",)):
        result = ok(cli("prune", "--older-than", duration, *extra))
        assert result.stdout == ""
    assert [c for _, _, c in messages(home, "d")] == GOOD


# -- a read-only data dir -------------------------------------------------------------------


@contextlib.contextmanager
def read_only(home: Path) -> Iterator[str]:
    """Make ``home`` read-only: a read-only bind mount when allowed (root can write through
    chmod 500), else a simulated one (os calls that would write there raise EROFS)."""
    if os.geteuid() == 0 and shutil.which("mount") and not NO_MOUNT:
        bind = subprocess.run(["mount", "--bind", str(home), str(home)], capture_output=True)
        if bind.returncode == 0:
            try:
                ro = subprocess.run(
                    ["mount", "-o", "remount,bind,ro", str(home)], capture_output=True
                )
                if ro.returncode == 0:
                    yield "mount"
                    return
            finally:
                subprocess.run(["umount", str(home)], capture_output=True)
    if os.geteuid() != 0:
        home.chmod(0o500)
        for d in (home / "sessions", home / "trash"):
            d.chmod(0o500)
        try:
            yield "chmod"
        finally:
            for d in (home, home / "sessions", home / "trash"):
                d.chmod(0o700)
        return
    with pytest.MonkeyPatch.context() as patch:  # its own: undo must not touch the env
        _simulate_errno(patch, home, errno.EROFS)
        yield "simulated"


def _simulate_errno(monkeypatch: pytest.MonkeyPatch, home: Path, code: int) -> None:
    root = str(home)

    def inside(path: Any) -> bool:
        return isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path).startswith(root)

    def guard(name: str, real: Callable[..., Any], check: Callable[..., bool]) -> None:
        def call(*args: Any, **kwargs: Any) -> Any:
            if check(*args, **kwargs):
                raise OSError(code, os.strerror(code), os.fsdecode(args[0]))
            return real(*args, **kwargs)

        monkeypatch.setattr(os, name, call)

    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    guard("open", os.open, lambda p, flags, *a, **k: inside(p) and bool(flags & writes))
    for name in ("mkdir", "rename", "replace", "link", "unlink", "rmdir", "chmod", "truncate"):
        guard(name, getattr(os, name), lambda p, *a, **k: inside(p))


def test_read_only_data_dir(cli: Cli, home: Path, outside: Outside) -> None:
    _seed(home)
    Store(home).session("other").add_message({"role": "user", "content": "x"})
    ok(cli("relevant", "second", "-s", "d"))  # an index exists; the next add makes it stale
    ok(cli("add", "-s", "d", "--role", "user", "fourth: not yet indexed"))
    before = tree(home)
    with read_only(home) as how:
        print(f"read-only data dir: {how}")
        args: tuple[str, ...]  # the loops below try commands of any length
        for args in (
            ("recent", "-s", "d", "--json"),
            ("list", "--json"),
            ("show", "d", "--json"),
            ("export", "d"),
            ("list", "--deleted"),
            ("prune", "--older-than", "30d"),
        ):
            ok(cli(*args))
        result = ok(cli("relevant", "fourth", "-s", "d", "--json"))  # caught up in memory
        assert "fourth" in json.loads(result.stdout)[0]["content"]
        assert "not saved" in result.stderr
        for args in (("add", "-s", "d", "--role", "user", "x"), ("store", "-s", "d", "p", "r"),
                     ("add", "-s", "new", "--role", "user", "x"), ("drop", "-s", "d"),
                     ("clear", "-s", "d"), ("meta", "d", "k=v"), ("fork", "d", "copy"),
                     ("rename", "d", "renamed"), ("delete", "d"), ("delete", "d", "--purge"),
                     ("reindex", "d"), ("import", "-", "--as", "imp")):  # fmt: skip
            result = cli(*args, input="[]")
            fails(result, 1)
            assert how == "chmod" or "read-only file system" in result.stderr.lower(), args
        if how == "mount":
            proc = sh_bytes(home, "add", "-s", "d", "--role", "user", "x")
            assert proc.returncode == 1 and proc.stderr.count(b"\n") == 1
            assert b"Traceback" not in proc.stderr
    assert tree(home) == before


# -- a full disk --------------------------------------------------------------------------------


class Disk:
    """``fill()`` makes the disk full, ``free()`` makes room again."""

    def __init__(self, home: Path, mounted: bool) -> None:
        self.home, self.mounted = home, mounted
        self.patch = pytest.MonkeyPatch()  # its own: undo must not touch the test's env

    def fill(self) -> None:
        if self.mounted:  # a ballast file takes every free block
            fd = os.open(self.home / "ballast", os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                for size in (65536, 4096, 1):
                    with contextlib.suppress(OSError):
                        while True:
                            os.write(fd, b"\0" * size)
            finally:
                os.close(fd)
            return
        real_write, root = os.write, str(self.home)

        def write(fd: int, data: Any) -> int:  # every write under home: ENOSPC
            try:
                where = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                where = ""
            if where.startswith(root):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, data)

        self.patch.setattr(os, "write", write)

    def free(self) -> None:
        if self.mounted:
            (self.home / "ballast").unlink()
        self.patch.undo()


@contextlib.contextmanager
def full_disk(home: Path) -> Iterator[Disk]:
    """A 1 MiB tmpfs at ``home`` when mounting is allowed, else a simulated ENOSPC."""
    home.mkdir(parents=True, exist_ok=True)
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount") and not NO_MOUNT:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m,mode=700", "tmpfs", str(home)],
            capture_output=True,
        ).returncode == 0  # fmt: skip
    disk = Disk(home, mounted)
    try:
        yield disk
    finally:
        disk.patch.undo()
        if mounted:
            subprocess.run(["umount", str(home)], capture_output=True)


def test_full_disk(cli: Cli, home: Path, outside: Outside) -> None:
    big = "x" * 20000  # more than any partly used block can take
    with full_disk(home) as disk:
        print(f"full disk: {'tmpfs' if os.path.ismount(home) else 'simulated'}")
        _seed(home)
        ok(cli("add", "-s", "other", "--role", "user", "other session"))
        ok(cli("relevant", "second", "-s", "d"))
        ok(cli("add", "-s", "d", "--role", "user", "fourth message"))
        path = home / "sessions" / "d.jsonl"
        disk.fill()
        intact = path.read_bytes()
        args: tuple[str, ...]  # the loops below try commands of any length
        for args in (("add", "-s", "d", "--role", "user", big), ("store", "-s", "d", "p", big),
                     ("add", "-s", "new", "--role", "user", big), ("fork", "d", "copy"),
                     ("clear", "-s", "d"), ("meta", "d", f"k={big}"),
                     ("import", "-", "--as", "imp")):  # fmt: skip
            data = json.dumps([{"role": "user", "content": big}])
            fails(cli(*args, input=data), 1, "no space left")
            assert path.read_bytes() == intact, args
            assert not temps(home), (args, temps(home))
        for name in ("new", "copy", "imp"):
            assert not (home / "sessions" / f"{name}.jsonl").exists()
        for args in (("recent", "-s", "d"), ("list",), ("show", "d"), ("export", "d")):
            ok(cli(*args))
        result = ok(cli("relevant", "fourth", "-s", "d", "--json"))  # not saved: a warning
        assert "fourth" in json.loads(result.stdout)[0]["content"]
        ok(cli("drop", "-s", "d"))  # frees space; the message is gone either way
        assert [c for _, _, c in messages(home, "d")] == GOOD
        for line in path.read_bytes().split(b"\n")[:-1]:
            json.loads(line)
        disk.free()
        ok(cli("add", "-s", "d", "--role", "user", big))
        ok(cli("fork", "d", "copy"))
        assert [c for _, _, c in messages(home, "copy")] == [*GOOD, big]
        assert not temps(home)


# -- property: tail reads agree with full reads ---------------------------------------------------


@settings(max_examples=examples(120), **PROFILE)
@given(
    sizes=st.lists(st.integers(0, 300), min_size=0, max_size=12),
    junk=st.lists(st.tuples(st.integers(0, 12), st.binary(max_size=20)), max_size=3),
    torn=st.binary(max_size=40),
    k=st.integers(0, 15),
    block=st.integers(1, 64),
)
def test_tail_agrees_with_a_full_read(
    sizes: list[int], junk: list[tuple[int, bytes]], torn: bytes, k: int, block: int
) -> None:
    assume(b"\n" not in torn)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp))
        session = store.session("t")
        session.update(metadata={"m": 1})
        for i, size in enumerate(sizes):
            session.add_message({"role": "user", "content": f"{i}:" + "y" * size})
        path = Path(tmp) / "sessions" / "t.jsonl"
        lines = path.read_bytes().split(b"\n")[:-1]
        for where, data in junk:
            lines.insert(1 + min(where, len(lines) - 1), data.replace(b"\n", b" "))
        path.write_bytes(b"\n".join(lines) + b"\n" + torn)
        saved = transcript.BLOCK
        transcript.BLOCK = block
        try:
            full = transcript.scan(path).messages
            assert transcript.tail(path, k) == (full[-k:] if k else [])
            state = transcript.tail_state(path)
            assert state.last == (full[-1] if full else None)
        finally:
            transcript.BLOCK = saved


# -- the stateful model -----------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c", "A"])  # "A" is a case twin of "a"
TEXT = st.text(max_size=12)
ROLES = st.sampled_from(["user", "assistant", "system", "tool"])


class Model:
    def __init__(self) -> None:
        self.live: dict[str, dict[str, Any]] = {}
        self.trash: dict[str, list[dict[str, Any]]] = {}

    def twin(self, name: str) -> str | None:
        return next((n for n in self.live if n != name and n.lower() == name.lower()), None)

    def creatable(self, name: str) -> bool:
        return name in self.live or self.twin(name) is None

    def ensure(self, name: str) -> dict[str, Any]:
        if name not in self.live:
            self.live[name] = {"messages": [], "next": 1, "meta": {}}
        return self.live[name]

    def append(self, name: str, items: list[tuple[str, str]]) -> None:
        s = self.ensure(name)
        for role, content in items:
            s["messages"].append((s["next"], role, content))
            s["next"] += 1


class StoreMachine(RuleBasedStateMachine):
    """The Store against a model: every operation, including the failing ones."""

    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp()
        self.store = Store(Path(self.tmp) / "home")
        self.model = Model()

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize()
    def start(self) -> None:
        pass

    def _expect(self, error: type[Exception] | None, action: Callable[[], Any]) -> Any:
        if error is None:
            return action()
        with pytest.raises(error):
            action()
        return None

    @rule(target=ids, name=NAMES, role=ROLES, content=TEXT)
    def add(self, name: str, role: str, content: str) -> Any:
        if not self.model.creatable(name):
            self._expect(SessionExists, lambda: self.store.session(name).add_message(
                {"role": role, "content": content}))  # fmt: skip
            return "no-such-id"
        message = self.store.session(name).add_message({"role": role, "content": content})
        self.model.append(name, [(role, content)])
        assert message.seq == self.model.live[name]["messages"][-1][0]
        return message.id

    @rule(name=NAMES, contents=st.lists(TEXT, max_size=4))
    def add_messages(self, name: str, contents: list[str]) -> None:
        items = [{"role": "user", "content": c} for c in contents]
        if not self.model.creatable(name):
            self._expect(SessionExists, lambda: self.store.session(name).add_messages(items))
            return
        self.store.session(name).add_messages(items)
        self.model.append(name, [("user", c) for c in contents])

    @rule(name=NAMES, prompt=TEXT, response=TEXT)
    def store_pair(self, name: str, prompt: str, response: str) -> None:
        if not self.model.creatable(name):
            self._expect(SessionExists, lambda: self.store.session(name).store(prompt, response))
            return
        self.store.session(name).store(prompt, response)
        self.model.append(name, [("user", prompt), ("assistant", response)])

    @rule(name=NAMES)
    def drop_last(self, name: str) -> None:
        s = self.model.live.get(name)
        if s is None:
            self._expect(SessionNotFound, lambda: self.store.session(name).drop())
        elif not s["messages"]:
            self._expect(MessageNotFound, lambda: self.store.session(name).drop())
        else:
            dropped = self.store.session(name).drop()
            assert (dropped.seq, dropped.role, dropped.content) == s["messages"].pop()

    @rule(name=NAMES, message_id=ids)
    def drop_by_id(self, name: str, message_id: str) -> None:
        s = self.model.live.get(name)
        found = [m for m in self.store.session(name).get_messages()] if s is not None else []
        match = [m for m in found if m.id == message_id]
        if s is None:
            self._expect(SessionNotFound, lambda: self.store.session(name).drop(message_id))
        elif not match:
            self._expect(MessageNotFound, lambda: self.store.session(name).drop(message_id))
        else:
            self.store.session(name).drop(message_id)
            s["messages"].remove((match[0].seq, match[0].role, match[0].content))

    @rule(name=NAMES)
    def clear(self, name: str) -> None:
        s = self.model.live.get(name)
        if s is None:
            self._expect(SessionNotFound, lambda: self.store.session(name).clear())
            return
        assert self.store.session(name).clear() == len(s["messages"])
        s["messages"] = []

    @rule(source=NAMES, new=NAMES, at=st.one_of(st.none(), ids))
    def fork(self, source: str, new: str, at: str | None) -> None:
        s = self.model.live.get(source)
        if s is None:
            self._expect(SessionNotFound, lambda: self.store.fork(source, new, at=at))
            return
        copied = list(s["messages"])
        if at is not None:
            real = [m.seq for m in self.store.session(source).get_messages() if m.id == at]
            if not real:
                self._expect(MessageNotFound, lambda: self.store.fork(source, new, at=at))
                return
            copied = [m for m in copied if m[0] <= real[0]]
        if new in self.model.live or self.model.twin(new) is not None:
            self._expect(SessionExists, lambda: self.store.fork(source, new, at=at))
            return
        self.store.fork(source, new, at=at)
        self.model.live[new] = {
            "messages": copied,
            "next": max((m[0] for m in copied), default=0) + 1,
            "meta": dict(s["meta"]),
        }

    @rule(old=NAMES, new=NAMES)
    def rename(self, old: str, new: str) -> None:
        s = self.model.live.get(old)
        twin = self.model.twin(new)
        if s is None:
            error: type[Exception] | None = SessionNotFound
        elif new in self.model.live or (twin is not None and twin != old):
            error = SessionExists
        else:
            error = None
        if error is not None:
            self._expect(error, lambda: self.store.rename(old, new))
            return
        self.store.rename(old, new)
        self.model.live[new] = self.model.live.pop(old)

    @rule(name=NAMES)
    def delete(self, name: str) -> None:
        if name not in self.model.live:
            self._expect(SessionNotFound, lambda: self.store.delete(name))
            return
        self.store.delete(name)
        self.model.trash.setdefault(name, []).append(self.model.live.pop(name))

    @rule(name=NAMES)
    def restore(self, name: str) -> None:
        if not self.model.trash.get(name):
            self._expect(SessionNotFound, lambda: self.store.restore(name))
        elif name in self.model.live or self.model.twin(name) is not None:
            self._expect(SessionExists, lambda: self.store.restore(name))
        else:
            self.store.restore(name)
            self.model.live[name] = self.model.trash[name].pop()

    @rule(
        name=NAMES, key=st.sampled_from(["k", "j"]), value=st.integers() | TEXT, unset=st.booleans()
    )
    def meta(self, name: str, key: str, value: Any, unset: bool) -> None:
        if not self.model.creatable(name):
            self._expect(
                SessionExists, lambda: self.store.session(name).update(metadata={key: value})
            )
            return
        if unset:
            self.store.session(name).update(unset=[key])
            self.model.ensure(name)["meta"].pop(key, None)
        else:
            self.store.session(name).update(metadata={key: value})
            self.model.ensure(name)["meta"][key] = value

    @invariant()
    def same_as_the_model(self) -> None:
        live = {i.name: i for i in self.store.list_sessions().sessions}
        assert set(live) == set(self.model.live)
        for name, s in self.model.live.items():
            got = [(m.seq, m.role, m.content) for m in self.store.session(name).get_messages()]
            assert got == s["messages"], name
            assert live[name].messages == len(s["messages"])
            assert live[name].metadata == s["meta"]
            recent = self.store.session(name).recent_messages(3)
            assert [(m.seq, m.role, m.content) for m in recent] == s["messages"][-3:]
        trashed = sorted(i.name for i in self.store.list_sessions(deleted=True).sessions)
        assert trashed == sorted(n for n, entries in self.model.trash.items() for _ in entries)


StoreMachine.TestCase.settings = settings(
    max_examples=examples(30), stateful_step_count=25, **PROFILE
)
test_store_against_a_model = StoreMachine.TestCase
