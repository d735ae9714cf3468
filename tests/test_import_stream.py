"""`import --from chatgpt`: conversations.json streamed element by element; the quick
message check; re-imports that read headers only (docs/import-export.md)."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli

from sessionctl.errors import UsageError
from sessionctl.service.importing import Invalid, _plain_message, full_message_from, message_from
from sessionctl.sources.stream import iter_array

TRICKY: list[Any] = [
    {"s": 'a]b["c', "t": '\\]\\"[', "u": "é€😀\u2028", "n": [1, -2.5e-3, 10**30]},
    12345678901234567890,
    -0.5,
    "x" * 300,
    [],
    {},
    None,
    True,
    {"deep": [[[["]"]]]], "esc": "\u0000\t\n"},
]


def _parse(data: bytes, chunk: int) -> list[Any]:
    return list(iter_array(io.BytesIO(data), "f.json", chunk=chunk, what="conversation"))


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64, 4096])
def test_elements_split_across_chunk_edges(chunk: int) -> None:
    for ascii_only in (False, True):
        data = json.dumps(TRICKY, ensure_ascii=ascii_only, indent=1).encode()
        assert _parse(data, chunk) == TRICKY
    assert _parse(b"\xef\xbb\xbf [ ] \n", chunk) == []


def test_every_split_point_of_a_small_export() -> None:
    data = json.dumps(TRICKY, ensure_ascii=False).encode()
    for cut in range(1, len(data)):
        stream = _TwoReads(data, cut)
        assert list(iter_array(stream, "f", chunk=cut)) == TRICKY


class _TwoReads:
    """A stream whose first read stops at ``cut``: every element boundary gets split."""

    def __init__(self, data: bytes, cut: int) -> None:
        self.data, self.cut, self.at = data, cut, 0

    def read(self, size: int = -1, /) -> bytes:
        end = self.cut if self.at == 0 else len(self.data)
        piece = self.data[self.at : end]
        self.at = end
        return piece


@pytest.mark.parametrize(
    ("data", "expect"),
    [
        (b"", "the file is empty"),
        (b'{"a": 1}', "expected a JSON list"),
        (b"[1,]", "line 1 column 4"),
        (b"[1 2]", "',' or ']' expected after conversation 1"),
        (b"[1] x", "more data after the end of the list"),
        (b'[{"a": 1}, {"b": "cut', "the file ends inside conversation 2"),
        (b'[{"a": 1},\n', "the file ends after conversation 1"),
        (b"[NaN]", "NaN is not valid JSON"),
        (b'[\n{"a":\n 1,,}]', "line 3 column 4"),
        (b'["ok", "\xc3"]', "not UTF-8 text (byte 9)"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_bad_arrays_one_line_errors(data: bytes, expect: str) -> None:
    for chunk in (1, 3, 2**20):
        with pytest.raises(UsageError) as caught:
            _parse(data, chunk)
        message = str(caught.value)
        assert expect in message and message.startswith("f.json")
        assert "\n" not in message and message.endswith("nothing imported")


def test_an_element_over_the_limit_is_refused() -> None:
    data = json.dumps([{"a": "x" * 5000}]).encode()
    with pytest.raises(UsageError, match="conversation 1 is longer than 1000 characters"):
        list(iter_array(io.BytesIO(data), "f", chunk=64, max_element=1000, what="conversation"))


def _export(count: int) -> list[dict[str, Any]]:
    out = []
    for c in range(count):
        mapping: dict[str, Any] = {"r": {"id": "r", "message": None, "children": ["m0"]}}
        for t in range(3):
            mapping[f"m{t}"] = {
                "id": f"m{t}", "parent": "r" if t == 0 else f"m{t - 1}",
                "children": [f"m{t + 1}"] if t < 2 else [],
                "message": {
                    "id": f"m{t}", "author": {"role": "user" if t % 2 == 0 else "assistant"},
                    "create_time": 1.7e9 + c * 60 + t,
                    "content": {"content_type": "text", "parts": [f"conv {c} ]}}[{{ é 😀 {t}"]},
                },
            }  # fmt: skip
        out.append({"conversation_id": f"c{c}", "title": "t", "mapping": mapping,
                    "current_node": "m2", "create_time": 1.7e9 + c * 60})  # fmt: skip
    return out


def test_truncated_export_imports_nothing(cli: Cli, tmp_path: Path) -> None:
    whole = json.dumps(_export(40), ensure_ascii=False, indent=1).encode()
    cut = tmp_path / "conversations.json"
    cut.write_bytes(whole[: len(whole) * 3 // 4])
    result = cli("import", "--from", "chatgpt", str(cut))
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "the file ends inside conversation" in lines[0]
    assert str(cut) in lines[0] and "Traceback" not in result.stderr
    listed = cli("list", "--json")
    assert json.loads(listed.stdout)["sessions"] == []  # nothing half-imported


def test_streamed_export_imports_and_reimports_by_headers(
    cli: Cli, home: Path, tmp_path: Path
) -> None:
    path = tmp_path / "conversations.json"
    export = _export(30)
    path.write_text(json.dumps(export, ensure_ascii=False))
    first = cli("import", "--from", "chatgpt", "--json", str(path))
    assert first.exit_code == 0, first.stderr
    got = json.loads(first.stdout)
    assert (got["sessions_created"], got["messages_added"]) == (30, 90)
    shown = cli("export", "chatgpt-c7", "--format", "json")
    session = json.loads(shown.stdout)
    assert session["messages"][0]["content"] == "conv 7 ]}[{ é 😀 0"
    assert len(session["metadata"]["imported_from"]["ids"]) == 32
    # unchanged: the same summary, nothing written (transcripts keep their mtimes)
    times = {p.name: p.stat().st_mtime_ns for p in (home / "sessions").iterdir()}
    again = json.loads(cli("import", "--from", "chatgpt", "--json", str(path)).stdout)
    assert (again["sessions_unchanged"], again["messages_added"], again["sessions"]) == (30, 0, [])
    assert {p.name: p.stat().st_mtime_ns for p in (home / "sessions").iterdir()} == times
    # grown: one more message in one conversation, one more conversation
    grown = export[7]["mapping"]
    grown["m2"]["children"] = ["m3"]
    grown["m3"] = {"id": "m3", "parent": "m2", "children": [], "message": {
        "id": "m3", "author": {"role": "user"}, "content": {"parts": ["more"]}}}  # fmt: skip
    export[7]["current_node"] = "m3"
    export.append(_export(31)[30])
    path.write_text(json.dumps(export, ensure_ascii=False))
    third = json.loads(cli("import", "--from", "chatgpt", "--json", str(path)).stdout)
    assert (third["sessions_created"], third["sessions_updated"]) == (1, 1)
    assert (third["sessions_unchanged"], third["messages_added"]) == (29, 4)
    session = json.loads(cli("export", "chatgpt-c7", "--format", "json").stdout)
    assert [m["content"] for m in session["messages"]][-1] == "more"
    fourth = json.loads(cli("import", "--from", "chatgpt", "--json", str(path)).stdout)
    assert (fourth["sessions_unchanged"], fourth["messages_added"]) == (31, 0)


def test_reimport_still_checks_the_whole_source(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "conversations.json"
    export = _export(5)
    path.write_text(json.dumps(export))
    assert cli("import", "--from", "chatgpt", str(path)).exit_code == 0
    path.write_text(json.dumps(export)[:-30])  # the same conversations, cut short
    result = cli("import", "--from", "chatgpt", str(path))
    assert result.exit_code == 2 and "the file ends inside conversation 5" in result.stderr


def _records(rng: random.Random) -> list[Any]:
    texts = ["plain", "é😀", "\udcff", "", "a\u2028b"]
    times = [None, "2025-01-01T10:00:00Z", "2025-01-01T10:00:00.123Z", "2025-02-30T10:00:00Z",
             "2025-01-01T10:00:00+02:00", "yesterday", 5]  # fmt: skip
    values: list[Any] = [None, "x", 3, True, 2.5, {"a": 1}, {"a": [1]}, {"a": "\udcff"}, "s"]
    out: list[Any] = [[], "text", None]
    for _ in range(3000):
        record: dict[str, Any] = {
            "id": rng.choice(["llm-0123abc"] * 6 + [None, "has space", 7, "x" * 129]),
            "role": rng.choice(["user", "assistant", "system", "tool"] * 2 + ["llm", "bot", None]),
            "content": rng.choice([*texts, *texts, None, 5, [{"type": "text", "text": "p"}]]),
        }
        for key in ("created_at", "model", "name", "tool_call_id", "usage", "metadata"):
            if rng.random() < 0.3:
                record[key] = rng.choice(times if key == "created_at" else [*values, *texts])
        if rng.random() < 0.1:
            record[rng.choice(["interrupted", "extra", "tool_calls"])] = rng.choice(values)
        out.append({k: v for k, v in record.items() if v is not None or rng.random() < 0.3})
    return out


def test_quick_message_check_gives_what_the_full_one_gives() -> None:
    now = "2025-06-01T00:00:00.000000Z"
    taken = 0
    for record in _records(random.Random(5)):
        try:
            full: Any = full_message_from(record, 3, now)
        except Invalid as exc:
            full = str(exc)
        quick = _plain_message(record, 3, now)
        if quick is not None:
            taken += 1
            assert quick == full, record  # the full check takes it, and gives the same
        try:
            public: Any = message_from(record, 3, now)
        except Invalid as exc:
            public = str(exc)
        if isinstance(full, str) or record.get("id") is not None:
            assert public == full, record
    assert taken > 200  # many plain records took the quick path


def test_a_session_without_a_digest_is_compared_and_gets_one(cli: Cli, home: Path) -> None:
    """Sessions imported before digests were recorded: read once, then given the digest."""
    from sessionctl import Store
    from sessionctl.backend.base import HeaderPatch

    path = home.parent / "conversations.json"
    path.write_text(json.dumps(_export(3)))
    assert cli("import", "--from", "chatgpt", str(path)).exit_code == 0
    store = Store(home)
    tag = store.backend.header("chatgpt-c1").metadata["imported_from"]
    old = {"source": tag["source"], "key": tag["key"]}
    store.backend.update_header("chatgpt-c1", HeaderPatch(metadata={"imported_from": old}))
    assert "ids" not in store.backend.header("chatgpt-c1").metadata["imported_from"]
    again = json.loads(cli("import", "--from", "chatgpt", "--json", str(path)).stdout)
    assert (again["sessions_unchanged"], again["messages_added"]) == (3, 0)
    assert store.backend.header("chatgpt-c1").metadata["imported_from"] == tag
    assert len(store.backend.messages("chatgpt-c1")) == 3
    store.backend.close()
