"""Contract: namespace operations racing each other have exactly one winner.

Creating a name, its case twin, a fork onto it or a restore of it at the same
time from several writers (each with its own Store, as separate processes
would): one succeeds, the others get SessionExists, nothing is half-made.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sessionctl import SessionExists, Store

Reopen = Callable[[Store], Store]


# Each attempt is called with a Store; `...` since they bind their loop value as a default
# argument (lambda s, n=n: ...), which mypy cannot infer against Callable[[Store], object].
def _race(store: Store, reopen: Reopen, attempts: list[Callable[..., object]]) -> list[str]:
    """Run every attempt at once; return "ok" or the error's class name for each."""
    start = threading.Barrier(len(attempts))
    outcome = [""] * len(attempts)

    def run(i: int) -> None:
        own = reopen(store)
        start.wait()
        try:
            attempts[i](own)
            outcome[i] = "ok"
        except SessionExists:
            outcome[i] = "SessionExists"
        except BaseException as exc:  # reported in the assertion
            outcome[i] = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(attempts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcome


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _names(store: Store) -> list[str]:
    return [i.name for i in store.list_sessions().sessions]


def test_case_twins_created_at_once_one_wins(store: Store, reopen: Reopen) -> None:
    spellings = ["race", "Race", "RACE", "rAce", "racE", "RaCe"]
    outcome = _race(
        store, reopen, [lambda s, n=n: s.session(n).add_message(_user(n)) for n in spellings]
    )
    assert sorted(outcome) == ["SessionExists"] * 5 + ["ok"], outcome
    winner = spellings[outcome.index("ok")]
    assert _names(store) == [winner]
    assert store.session(winner).get_recent(as_text=True) == [winner]


def test_forks_onto_one_name_at_once_one_wins(store: Store, reopen: Reopen) -> None:
    for name in ("s0", "s1", "s2", "s3"):
        store.session(name).add_messages([_user(f"{name} {i}") for i in range(3)])
    outcome = _race(
        store, reopen, [lambda s, n=n: s.fork(n, "target") for n in ("s0", "s1", "s2", "s3")]
    )
    assert sorted(outcome) == ["SessionExists"] * 3 + ["ok"], outcome
    source = f"s{outcome.index('ok')}"
    target = store.session("target")
    assert target.info().parent == source
    assert target.get_recent(as_text=True) == [f"{source} {i}" for i in range(3)]


def test_restores_of_one_name_at_once_one_wins(store: Store, reopen: Reopen) -> None:
    for version in ("v1", "v2", "v3"):
        store.session("x").add_message(_user(version))
        store.delete("x")
    ids = [i.trash_id for i in store.list_sessions(deleted=True).sessions]
    outcome = _race(store, reopen, [lambda s, t=t: s.restore("x", t) for t in ids])
    assert sorted(outcome) == ["SessionExists"] * 2 + ["ok"], outcome
    assert _names(store) == ["x"]
    assert len(store.list_sessions(deleted=True).sessions) == 2
    assert store.session("x").info().messages == 1
