"""Recall@5 of vector, text and hybrid search on the labelled pairs of tests/data/hybrid_pairs.json.

The 55 labelled messages live among 180 distractors (everyday notes and 60
near-duplicates about budgets) in a temporary store; the real MiniLM model.

    PYTHONPATH=. python bench/eval_hybrid.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from sessionctl import Store

PAIRS = Path(__file__).resolve().parent.parent / "tests" / "data" / "hybrid_pairs.json"
SUBJECTS = ["the garden", "our kitchen", "the quarterly budget", "my bicycle", "the team offsite",
            "the new laptop", "grandma's birthday", "the hiking trip", "the piano lessons",
            "the office plants", "the marketing plan", "the cat's vet visit"]  # fmt: skip
VERBS = ["needs more attention", "went really well", "was postponed again", "is over budget",
         "made everyone happy", "should be reviewed on Friday", "took the whole afternoon",
         "reminded me of last summer", "is finally sorted out",
         "needs a second opinion"]  # fmt: skip
MODES = ("vector", "text", "hybrid")


def build(home: Path) -> Store:
    data = json.loads(PAIRS.read_text(encoding="utf-8"))
    store = Store(home)
    filler = [f"{s.capitalize()} {v}." for s in SUBJECTS for v in VERBS]
    filler += [f"Budget line {i} for the offsite: catering and buses." for i in range(60)]
    for i in range(0, len(filler), 30):
        store.session(f"misc{i // 30}").add_messages(
            [{"role": "user", "content": t} for t in filler[i : i + 30]]
        )
    store.session("lab").add_messages(
        [{"role": "user", "content": text} for text in data["corpus"].values()]
    )
    return store


def recall(store: Store, k: int = 5) -> dict[str, dict[str, float]]:
    """category -> mode -> recall@k."""
    data = json.loads(PAIRS.read_text(encoding="utf-8"))
    corpus = data["corpus"]
    hits: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for pair in data["pairs"]:
        target = corpus[pair["target"]]
        for mode in MODES:
            found = store.get_relevant(pair["query"], top_k=k, mode=mode, as_text=True)
            hits[pair["category"]][mode].append(target in found)
            hits["all"][mode].append(target in found)
    return {cat: {mode: sum(v) / len(v) for mode, v in by.items()} for cat, by in hits.items()}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        store = build(Path(tmp) / "home")
        table = recall(store)
    data = json.loads(PAIRS.read_text(encoding="utf-8"))
    counts: dict[str, int] = defaultdict(int)
    for pair in data["pairs"]:
        counts[pair["category"]] += 1
    counts["all"] = len(data["pairs"])
    print("| category | pairs | vector | text | hybrid |")
    print("|---|---|---|---|---|")
    for cat, by in table.items():
        print(f"| {cat} | {counts[cat]} | " + " | ".join(f"{by[m]:.2f}" for m in MODES) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
