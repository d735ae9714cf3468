"""The store-wide vector index (HOME/index/): incremental, crash-safe, derived, keyed by uid.

Real files, the real MiniLM model (wrapped to count what it embeds); a hash
embedder only where thousands of vectors are needed for a size check.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pytest

from sessionctl import Store, embed
from sessionctl.backend.base import SearchFilter
from sessionctl.backend.files.vectors import StoreIndex
from sessionctl.backend.files.vectors.journal import JOURNAL, load

if TYPE_CHECKING:
    from sessionctl.backend.files.local import LocalBackend

REPO = Path(__file__).resolve().parent.parent


def files_backend(store: Store) -> LocalBackend:
    """conftest.files_backend, imported when called: CRASH_WRITER imports this module
    as tests.test_storeindex, where there is no conftest to import."""
    from conftest import files_backend as narrow

    return narrow(store)


@pytest.fixture(scope="module")
def minilm() -> embed.Embedder:
    return embed.get_embedder()


class Counting:
    """The real model, counting the texts it embeds."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dimension = inner.dimension
        self.default_distance_threshold = inner.default_distance_threshold
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.texts.extend(texts)
        return np.asarray(self.inner.embed(list(texts)), dtype=np.float32)


class HashEmbedder:
    """Deterministic unit vectors from a hash (for sizes only, not meaning)."""

    model_id = "test/hash-384"
    dimension = 384
    default_distance_threshold = 0.5

    def __init__(self) -> None:
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.texts.extend(texts)
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            vec = np.random.default_rng(seed).standard_normal(self.dimension)
            rows.append(vec / np.linalg.norm(vec))
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dimension)


FACTS = {
    "work": ["The deploy moved to Friday.", "Use the blue theme for the dashboard."],
    "home": ["My cat is called Miso.", "The plumber comes on Tuesday."],
    "trip": ["The flight to Lisbon leaves at 7am.", "Pack the charger and the passport."],
}


def seeded(home: Path, warnings: list[str]) -> Store:
    store = Store(home, warn=warnings.append)
    for name, texts in FACTS.items():
        store.session(name).add_messages([{"role": "user", "content": t} for t in texts])
    return store


def search(store: Store, model: Any, text: str, k: int = 3, names: Any = None) -> list[Any]:
    query = model.embed([text])[0]
    hits = store.backend.vectors.search(
        query, model, k=k, max_distance=2.0, where=SearchFilter(names=names)
    )
    return [(h.session, h.message.content) for h in hits]


def test_cross_session_relevant_uses_one_index_and_finds_a_fresh_add(
    home: Path, minilm: Any
) -> None:
    warnings: list[str] = []
    store = seeded(home, warnings)
    model = Counting(minilm)
    assert search(store, model, "what is my cat's name?", k=1) == [
        ("home", "My cat is called Miso.")
    ]
    assert warnings == []  # the first build is no rebuild
    assert (home / "index" / JOURNAL).exists()
    assert not list((home / "sessions").glob("*.faiss"))  # no per-session sidecars
    model.texts.clear()
    store.session("trip").add_message({"role": "user", "content": "The hotel is near the river."})
    assert search(store, model, "where is the hotel?", k=1) == [
        ("trip", "The hotel is near the river.")
    ]
    # Only the new message (and the two queries) were embedded.
    assert model.texts == ["where is the hotel?", "The hotel is near the river."]


def test_cli_relevant_across_sessions_and_several_s(home: Path, minilm: Any, cli: Any) -> None:
    seeded(home, [])
    first = cli("relevant", "when does the plane leave?", "-k", "1", "--json")
    assert first.exit_code == 0, first.stderr
    assert [h["session"] for h in json.loads(first.stdout)] == ["trip"]
    result = cli("relevant", "pets", "-s", "work", "-s", "trip", "-k", "6", "-d", "2", "--json")
    assert result.exit_code == 0
    assert {h["session"] for h in json.loads(result.stdout)} == {"work", "trip"}
    again = cli("relevant", "when does the plane leave?", "-k", "1", "--json")
    assert again.stderr == "" and again.stdout == first.stdout


def test_a_fresh_query_opens_no_transcript_but_its_hits(
    home: Path, minilm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(home)
    for i in range(40):
        store.session(f"s{i}").add_message({"role": "user", "content": f"note number {i}"})
    model = Counting(minilm)
    search(store, model, "note", k=2)  # catches everything up
    opened: list[str] = []
    real = os.open

    def counting(path: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting)
    fresh = Store(home)  # as a new process would
    assert len(search(fresh, model, "note number 7", k=2)) == 2
    transcripts = {p for p in opened if "/sessions/" in p}
    assert len(transcripts) <= 2, transcripts  # only the hits' transcripts are read back
    assert not [p for p in opened if p.endswith(".lock") and "/sessions/" in p]


def test_rename_delete_restore_fork_import_reembed_nothing(home: Path, minilm: Any) -> None:
    store = seeded(home, [])
    model = Counting(minilm)
    search(store, model, "cat", k=1)
    model.texts.clear()
    store.rename("home", "house")
    assert search(store, model, "what is my cat's name?", k=1) == [
        ("house", "My cat is called Miso.")
    ]
    store.delete("house")
    assert all(s != "house" for s, _ in search(store, model, "what is my cat's name?", k=6))
    store.restore("house")
    assert search(store, model, "what is my cat's name?", k=1)[0][0] == "house"
    store.fork("house", "house2")
    found = search(store, model, "what is my cat's name?", k=2)
    assert {s for s, _ in found} == {"house", "house2"}
    data = store.session("work").to_dict()
    store.from_dict(data, name="work-copy")
    assert ("work-copy", "The deploy moved to Friday.") in search(store, model, "deploy day", k=6)
    assert model.texts == ["what is my cat's name?"] * 4 + ["deploy day"]  # queries only
    # drop and clear leave no stale hit
    store.session("house2").clear()
    store.session("work").drop()
    found = search(store, model, "cat theme", k=20)
    assert all(s != "house2" for s, _ in found)
    assert ("work", "Use the blue theme for the dashboard.") not in found


def test_deleted_index_is_rebuilt_with_one_warning(home: Path, minilm: Any) -> None:
    warnings: list[str] = []
    store = seeded(home, warnings)
    model = Counting(minilm)
    first = search(store, model, "passport", k=2)
    for path in (home / "index").iterdir():
        path.unlink()  # deleting the whole directory starts over silently, as on first use
    warnings.clear()
    assert search(store, model, "passport", k=2) == first
    assert len(warnings) == 1 and "index" in warnings[0]
    warnings.clear()
    assert search(store, model, "passport", k=2) == first and warnings == []


@pytest.mark.parametrize(
    "damage",
    ["garbage journal", "truncated vectors", "truncated rows", "other model", "flipped vectors"],
)
def test_damaged_pieces_are_rebuilt_never_trusted(home: Path, minilm: Any, damage: str) -> None:
    warnings: list[str] = []
    store = seeded(home, warnings)
    model = Counting(minilm)
    first = search(store, model, "when does the plumber come?", k=2)
    directory = home / "index"
    vectors = next(directory.glob("vectors.*.f32"))
    rows = next(directory.glob("rows.*.bin"))
    if damage == "garbage journal":
        (directory / JOURNAL).write_bytes(os.urandom(300))
    elif damage == "truncated vectors":
        vectors.write_bytes(vectors.read_bytes()[:100])
    elif damage == "truncated rows":
        rows.write_bytes(rows.read_bytes()[:50])
    elif damage == "other model":
        lines = (directory / JOURNAL).read_bytes().split(b"\n")
        head = json.loads(lines[0])
        head["model_id"] = "someone/else"
        (directory / JOURNAL).write_bytes(b"\n".join([json.dumps(head).encode(), *lines[1:]]))
    elif damage == "flipped vectors":
        data = bytearray(vectors.read_bytes())
        data[8:4000] = os.urandom(3992)
        vectors.write_bytes(bytes(data))
    warnings.clear()
    assert search(store, model, "when does the plumber come?", k=2) == first
    assert warnings and "index" in warnings[0]
    warnings.clear()
    assert search(store, model, "when does the plumber come?", k=2) == first and warnings == []


def test_a_0_1_home_with_sidecars_moves_without_reembedding(home: Path, minilm: Any) -> None:
    warnings: list[str] = []
    store = seeded(home, warnings)
    for name in FACTS:  # per-session search builds 0.1-style sidecars
        store.get_relevant("anything", sessions=[name])
    assert len(list((home / "sessions").glob("*.faiss"))) == 3
    assert not (home / "index").exists()
    model = Counting(minilm)
    warnings.clear()
    assert search(store, model, "what is my cat's name?", k=1)[0][0] == "home"
    assert model.texts == ["what is my cat's name?"]
    assert any("per-session" in w for w in warnings)


def test_one_appended_message_writes_little(home: Path) -> None:
    store = Store(home)
    model = HashEmbedder()
    for i in range(20):
        store.session(f"s{i}").add_messages(
            [{"role": "user", "content": f"session {i} message {j}"} for j in range(150)]
        )
    index = StoreIndex(files_backend(store))
    index.catch_up(None, model)
    size = sum(p.stat().st_size for p in (home / "index").iterdir())
    assert size > 3000 * 384 * 4
    store.session("s3").add_message({"role": "user", "content": "one more"})

    def wchar() -> int:
        text = Path("/proc/self/io").read_text()
        return int(next(line for line in text.splitlines() if line.startswith("wchar")).split()[1])

    before = wchar()
    hits = index.search(
        model.embed(["one more"])[0], model, k=1, max_distance=2.0, where=SearchFilter()
    )
    written = wchar() - before
    assert hits[0].session == "s3" and hits[0].message.content == "one more"
    assert index.embedded == 1
    assert written < 16_000, written  # one vector (1.5 kB), one row, journal lines
    assert written < size / 200


def test_compaction_drops_dead_rows_and_keeps_the_trash(home: Path) -> None:
    store = Store(home)
    model = HashEmbedder()
    store.session("keep").add_messages([{"role": "user", "content": f"k{j}"} for j in range(50)])
    store.session("gone").add_messages([{"role": "user", "content": f"g{j}"} for j in range(20)])
    churn = store.session("churn")
    churn.add_messages([{"role": "user", "content": f"c{j}"} for j in range(400)])
    index = StoreIndex(files_backend(store))
    index.catch_up(None, model)
    store.delete("gone")
    churn.clear()
    churn.add_message({"role": "user", "content": "after the clear"})
    index.catch_up(None, model)
    loaded = load(home / "index")
    assert loaded.dead == [] and loaded.rows_count == 50 + 20 + 1  # compacted, trash kept
    model.texts.clear()
    store.restore("gone")
    hits = index.search(model.embed(["g3"])[0], model, k=1, max_distance=2.0)
    assert (hits[0].session, hits[0].message.content) == ("gone", "g3")
    assert model.texts == ["g3"]


@pytest.mark.parametrize("keys", ["small", "sparse"])
def test_rows_of_a_session_the_journal_forgot_are_never_trusted(home: Path, keys: str) -> None:
    """Every row's key must be a session of the journal, not only the largest one,
    with small keys (a table by key) and sparse ones (sorted instead)."""
    import zlib

    from sessionctl.backend.files.vectors.journal import ROW_BYTES, IndexUnusable, row_dtype

    store = Store(home)
    for name in ("a", "b", "c"):
        texts = [{"role": "user", "content": f"{name}{j}"} for j in range(3)]
        store.session(name).add_messages(texts)
    StoreIndex(files_backend(store)).catch_up(None, HashEmbedder())
    directory = home / "index"
    assert load(directory).rows_count == 9
    journal = directory / JOURNAL
    head, *lines = journal.read_bytes().split(b"\n")
    records = [json.loads(line) for line in lines if line]
    known = sorted(r["k"] for r in records if r["t"] == "s")
    forgotten, last = known[1], known[-1]
    big = 10**9 if keys == "sparse" else last  # the largest key, known either way
    rows_path = next(directory.glob("rows.*.bin"))
    rows = np.frombuffer(rows_path.read_bytes(), dtype=row_dtype()).copy()
    rows["key"][rows["key"] == last] = big
    raw = rows.tobytes()
    rows_path.write_bytes(raw)
    for record in records:
        if record["t"] == "s" and record["k"] == last:
            record["k"] = big
        elif record["t"] == "s" and record["k"] == forgotten:
            record["k"] = big + 1  # the journal forgot the key its rows name
        elif record["t"] == "c":  # the rows' checksums stay right: only the keys lie
            chunk = raw[record["from"] * ROW_BYTES : record["rows"] * ROW_BYTES]
            record["crc_r"] = zlib.crc32(chunk)
    body = [json.dumps(r, separators=(",", ":")).encode() for r in records]
    journal.write_bytes(b"\n".join([head, *body, b""]))
    with pytest.raises(IndexUnusable, match="journal does not know"):
        load(directory)


def test_an_unwritable_index_falls_back_to_per_session_search(
    home: Path, minilm: Any, cli: Any
) -> None:
    seeded(home, [])
    (home / "index").write_bytes(b"not a directory")  # what a read-only home also gives
    result = cli("relevant", "what is my cat's name?", "-k", "1", "--json")
    assert result.exit_code == 0
    assert [h["session"] for h in json.loads(result.stdout)] == ["home"]
    assert "session by session" in result.stderr


CRASH_WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from tests.test_storeindex import HashEmbedder
    from sessionctl import Store

    class Slow(HashEmbedder):  # 1 ms a text: a round's 240 take longer than the kill's wait
        def embed(self, texts):
            time.sleep(0.001 * len(texts))
            return super().embed(texts)

    store = Store(sys.argv[1])
    model = Slow()
    index = store.backend.vectors
    print("ready", flush=True)
    index.catch_up(None, model)
    print("done", flush=True)
    """
)


def test_kill_9_during_catch_up_loses_nothing_and_is_not_rebuilt(
    home: Path, tmp_path: Path
) -> None:
    warnings: list[str] = []
    store = Store(home, warn=warnings.append)
    model = HashEmbedder()
    for i in range(6):
        store.session(f"s{i}").add_messages([{"role": "user", "content": f"s{i} m0"}])
    store.backend.vectors.catch_up(None, model)
    script = tmp_path / "writer.py"
    script.write_text(CRASH_WRITER)
    rng = random.Random(7)
    kills = 0
    for round_ in range(1, 9):
        for i in range(6):
            store.session(f"s{i}").add_messages(
                [{"role": "user", "content": f"s{i} r{round_} m{j}"} for j in range(40)]
            )
        proc = subprocess.Popen(
            [sys.executable, str(script), str(home), str(REPO)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        kills += proc.returncode == -signal.SIGKILL
    assert kills >= 4
    warnings.clear()
    index = StoreIndex(files_backend(store))
    index.catch_up(None, model)
    assert not [w for w in warnings if "rebuilt" in w], warnings
    loaded = load(home / "index")
    dead = loaded.dead_mask()
    live = [(int(r["key"]), int(r["seq"])) for r, d in zip(loaded.rows, dead, strict=True) if not d]
    assert len(live) == len(set(live)) == 6 * (1 + 8 * 40)  # every message once
    for i in (0, 5):
        text = f"s{i} r8 m39"
        hit = index.search(model.embed([text])[0], model, k=1, max_distance=2.0)[0]
        assert (hit.session, hit.message.content, hit.distance) == (f"s{i}", text, 0.0)


def test_a_commit_being_written_is_not_read_yet(home: Path) -> None:
    """A reader that meets half a commit line (a writer appending it now) takes the one before."""
    store = Store(home)
    model = HashEmbedder()
    store.session("a").add_message({"role": "user", "content": "first"})
    index = StoreIndex(files_backend(store))
    index.catch_up(None, model)
    before = load(home / "index").rows_count
    with open(home / "index" / JOURNAL, "ab") as f:
        f.write(b'{"t":"s","k":9,"uid":"X","name":"b","act":1,"ino":0,"size":0,"tail":""}\n')
        f.write(b'{"t":"c","from":1,"rows":')
    assert load(home / "index").rows_count == before
    store.session("a").add_message({"role": "user", "content": "second"})
    hits = index.search(model.embed(["second"])[0], model, k=1, max_distance=2.0)
    assert hits[0].message.content == "second"  # the next writer cut the torn tail
    assert b'"k":9' not in (home / "index" / JOURNAL).read_bytes()


def test_a_name_reused_after_a_rename_maps_to_the_new_session(home: Path) -> None:
    store = Store(home)
    model = HashEmbedder()
    store.session("a").add_message({"role": "user", "content": "old a"})
    index = StoreIndex(files_backend(store))
    index.catch_up(None, model)
    store.rename("a", "b")
    store.session("a").add_message({"role": "user", "content": "new a"})
    index.catch_up(None, model)
    assert model.texts == ["old a", "new a"]
    fresh = StoreIndex(files_backend(Store(home)))  # reads the journal again
    by_name = load(home / "index").by_name
    assert sorted(by_name) == ["a", "b"] and by_name["a"].key != by_name["b"].key
    for text, name in (("old a", "b"), ("new a", "a")):
        hit = fresh.search(model.embed([text])[0], model, k=1, max_distance=2.0)[0]
        assert (hit.session, hit.message.content) == (name, text)


def test_role_filter_applies_before_the_cut_to_k(home: Path) -> None:
    store = Store(home)
    model = HashEmbedder()
    for name in ("a", "b"):
        store.session(name).add_messages(
            [{"role": "user", "content": "same text"}] * 5
            + [{"role": "assistant", "content": f"answer {name}"}]
        )
    index = StoreIndex(files_backend(store))
    query = model.embed(["same text"])[0]
    hits = index.search(
        query, model, k=2, max_distance=2.0, where=SearchFilter(roles=frozenset({"assistant"}))
    )
    assert sorted((h.session, h.message.content) for h in hits) == [
        ("a", "answer a"),
        ("b", "answer b"),
    ]
    ties = index.search(query, model, k=3, max_distance=2.0)
    assert [(h.session, h.seq) for h in ties] == [("a", 1), ("a", 2), ("a", 3)]  # ties by seq
