"""Hybrid retrieval: vector and keyword lists fused (real MiniLM, real files, real CLI)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sessionctl import Session, Store

SUBJECTS = [
    "the garden", "our kitchen", "the quarterly budget", "my bicycle", "the team offsite",
    "the new laptop", "grandma's birthday", "the hiking trip", "the piano lessons",
    "the office plants", "the marketing plan", "the cat's vet visit",
]  # fmt: skip
VERBS = [
    "needs more attention", "went really well", "was postponed again", "is over budget",
    "made everyone happy", "should be reviewed on Friday", "took the whole afternoon",
    "reminded me of last summer", "is finally sorted out", "needs a second opinion",
]  # fmt: skip

ERR = "The nightly deploy failed with ERR_E4471 while migrating the billing schema."
LOCKED = "SQLite returned SQLITE_BUSY on every write during the import, nothing got committed."
TICKET = "Volunteers repainted hydrant QZ-9981 near the lighthouse a bright crimson."


def corpus(store: Store) -> None:
    filler = [f"{s.capitalize()} {v}." for s in SUBJECTS for v in VERBS]  # 120 messages
    for i in range(0, len(filler), 20):
        store.session(f"s{i // 20}").add_messages(
            [{"role": "user", "content": text} for text in filler[i : i + 20]]
        )
    store.session("ops").add_messages(
        [
            {"role": "user", "content": ERR},
            {"role": "assistant", "content": LOCKED},
            {"role": "user", "content": TICKET},
            {"role": "user", "content": "The deploy of the web frontend went fine today."},
        ]
    )
    store.session("near").add_messages(  # closer in meaning to the QZ-9981 query than it
        [
            {"role": "user", "content": f"Budget line {i} for the offsite: catering and buses."}
            for i in range(60)
        ]
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("hybrid") / "home"
    corpus(Store(home))
    return home


def rel(target: Store | Session, prompt: str, **kwargs: Any) -> list[dict[str, Any]]:
    hits = target.get_relevant(prompt, **kwargs)
    return [h for h in hits if isinstance(h, dict)]


def contents(hits: Any) -> list[str]:
    return [h["content"] for h in hits]


def test_an_error_code_is_the_first_hit(built: Path) -> None:
    store = Store(built)
    assert contents(rel(store, "ERR_E4471", top_k=1)) == [ERR]
    [hit] = rel(store, "ERR_E4471", top_k=1)
    assert set(hit["sources"]) >= {"text"} and hit["sources"]["exact"] is True
    assert hit["sources"]["text"]["rank"] == 1


def test_a_paraphrase_without_shared_words_is_still_found(built: Path) -> None:
    store = Store(built)
    assert LOCKED in contents(rel(store, "the database kept locking up", top_k=5))
    assert LOCKED not in contents(rel(store, "the database kept locking up", top_k=5, mode="text"))


def test_a_keyword_only_hit_appears(built: Path) -> None:
    store = Store(built)
    query = "QZ-9981 offsite budget"
    vector = rel(store, query, top_k=50, mode="vector", distance_threshold=2.0)
    assert len(vector) == 50 and TICKET not in contents(vector)
    hybrid = rel(store, query, top_k=5)
    [hit] = [h for h in hybrid if h["content"] == TICKET]
    assert hybrid[0] == hit  # the identifier typed is what the user is after
    assert hit["distance"] is None and set(hit["sources"]) == {"text", "fused", "exact"}


def test_text_mode_is_bm25_only(built: Path) -> None:
    store = Store(built)
    hits = rel(store, "ERR_E4471", top_k=5, mode="text")
    assert contents(hits) == [ERR]
    assert hits[0]["distance"] is None and hits[0]["sources"]["text"]["score"] > 0
    assert rel(store, "the database kept locking up", mode="text") == []


def test_vector_mode_keeps_the_threshold(built: Path) -> None:
    store = Store(built)
    hits = rel(store, "ERR_E4471", top_k=5, mode="vector", distance_threshold=0.0)
    assert hits == []
    # In hybrid the threshold filters the vector side only: the keyword match stays.
    hybrid = rel(store, "ERR_E4471", top_k=5, distance_threshold=0.0)
    assert contents(hybrid) == [ERR] and hybrid[0]["distance"] is None


def test_deterministic_and_sorted(built: Path) -> None:
    store = Store(built)
    first = rel(store, "deploy budget", top_k=20)
    assert first == rel(store, "deploy budget", top_k=20)
    keys = [
        (not h["sources"]["exact"], -h["sources"]["fused"], h["session"], h["seq"]) for h in first
    ]
    assert keys == sorted(keys)


def test_session_api_and_bad_mode(built: Path) -> None:
    from sessionctl.errors import UsageError

    store = Store(built)
    assert contents(rel(store.session("ops"), "QZ-9981", top_k=1)) == [TICKET]
    assert rel(store.session("s0"), "QZ-9981", top_k=3, mode="text") == []
    with pytest.raises(UsageError, match="search mode"):
        rel(store, "x", mode="fuzzy")


def test_cli_modes_and_json(
    built: Path,
    sh: Callable[..., subprocess.CompletedProcess[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SESSIONCTL_HOME", str(built))
    out = sh("relevant", "ERR_E4471", "-k", "1", "--json")
    assert out.returncode == 0, out.stderr
    [hit] = json.loads(out.stdout)
    assert hit["content"] == ERR and hit["sources"]["text"]["rank"] == 1
    text = sh("relevant", "QZ-9981", "--mode", "text")
    assert text.returncode == 0 and "QZ-9981" in text.stdout and text.stdout.split()[5] == "-"
    bad = sh("relevant", "x", "--mode", "fuzzy")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_hybrid_recall_is_at_least_the_better_list_on_every_category(tmp_path: Path) -> None:
    """The labelled pairs of tests/data/hybrid_pairs.json (bench/eval_hybrid.py prints them)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "eval_hybrid", Path(__file__).resolve().parent.parent / "bench" / "eval_hybrid.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data = json.loads(module.PAIRS.read_text(encoding="utf-8"))
    assert len(data["pairs"]) >= 50
    table = module.recall(module.build(tmp_path / "home"))
    for category, by in table.items():
        assert by["hybrid"] >= max(by["vector"], by["text"]), (category, by)
    assert table["identifier"]["hybrid"] == 1.0
