"""The file backend's store-wide keyword index (HOME/keywords.db, SQLite FTS5).

Real files and real sessions through the public API; the index is reached
through the VectorStore protocol's ``text_search`` only.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sessionctl import Store
from sessionctl.backend.base import SearchFilter
from sessionctl.backend.files.keywords import DB_NAME, match_expression

REPO = Path(__file__).resolve().parent.parent


def found(store: Store, query: str, k: int = 10, **where: object) -> list[tuple[str, int]]:
    hits = store.backend.vectors.text_search(query, k=k, where=SearchFilter(**where))  # type: ignore[arg-type]
    return [(h.session, h.seq) for h in hits]


@pytest.fixture
def store(home: Path) -> Store:
    s = Store(home)
    work = s.session("work")
    work.add_message({"role": "user", "content": "The deploy failed with ERR_E4471 on db-7."})
    work.add_message({"role": "assistant", "content": "Call foo.bar() as user-123 first."})
    work.add_message({"role": "user", "content": "Le café était fermé; 数据库锁定了 again."})
    other = s.session("other")
    other.add_message({"role": "user", "content": "A note about the error budget E4470."})
    return s


def test_identifiers_are_found_whole_and_by_part(store: Store) -> None:
    assert found(store, "ERR_E4471") == [("work", 1)]
    assert found(store, "e4471") == [("work", 1)]
    assert found(store, "foo.bar()") == [("work", 2)]
    assert found(store, "user-123") == [("work", 2)]
    assert found(store, "E4470") == [("other", 1)]
    assert found(store, "no-such-token") == []


def test_accents_case_and_cjk(store: Store) -> None:
    assert found(store, "CAFE etait") == [("work", 3)]
    assert found(store, "数据库") == [("work", 3)]  # a substring of a run written without spaces
    assert found(store, "锁定") == [("work", 3)]
    assert found(store, "库数") == []  # a phrase: order counts


def test_query_syntax_is_never_interpreted() -> None:
    assert match_expression('xy" NOT NEAR(ab cd) *') == '"xy" OR "NOT" OR "NEAR" OR "ab" OR "cd"'
    assert match_expression("what is my pet's name") == '"pet" OR "name"'  # function words out
    assert match_expression("what is it") == '"what" OR "is" OR "it"'  # nothing else: kept
    assert match_expression("  ... ()") is None


def test_bm25_ranks_the_rarer_match_first(store: Store) -> None:
    store.session("other").add_message({"role": "user", "content": "deploy deploy again"})
    hits = store.backend.vectors.text_search("deploy ERR_E4471", k=5)
    assert (hits[0].session, hits[0].seq) == ("work", 1)
    scores = [h.sources["text"]["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert [h.sources["text"]["rank"] for h in hits] == list(range(1, len(hits) + 1))
    assert all(h.distance is None for h in hits)


def test_filters_apply_before_the_cut(store: Store) -> None:
    assert found(store, "ERR_E4471 E4470", k=1, names=["other"]) == [("other", 1)]
    assert found(store, "foo ERR_E4471", k=1, roles=frozenset({"assistant"})) == [("work", 2)]
    assert found(store, "ERR_E4471", names=[]) == []
    assert found(store, "ERR_E4471", since="2999-01-01T00:00:00Z") == []
    assert found(store, "ERR_E4471", until="2000-01-01T00:00:00Z") == []


def test_every_change_is_reflected(store: Store) -> None:
    work = store.session("work")
    work.add_message({"role": "user", "content": "fresh token QX_991"})
    assert found(store, "QX_991") == [("work", 4)]
    work.drop()
    assert found(store, "QX_991") == []
    store.fork("work", "copy")
    assert found(store, "ERR_E4471") == [("copy", 1), ("work", 1)]
    store.rename("copy", "renamed")
    assert found(store, "ERR_E4471") == [("renamed", 1), ("work", 1)]
    store.session("renamed").clear()
    assert found(store, "ERR_E4471") == [("work", 1)]
    store.delete("work")  # soft delete: never matches
    assert found(store, "ERR_E4471") == []
    store.restore("work")
    assert found(store, "ERR_E4471") == [("work", 1)]
    store.delete("work", purge=True)
    assert found(store, "ERR_E4471") == []


def test_scrub_leaves_nothing_in_the_index(store: Store, home: Path) -> None:
    from sessionctl.service.scrub import scrub

    assert found(store, "ERR_E4471") == [("work", 1)]
    scrub(store, None, literal="ERR_E4471")
    assert found(store, "ERR_E4471") == []
    assert b"E4471" not in (home / DB_NAME).read_bytes()
    assert found(store, "deploy") == [("work", 1)]


def test_file_is_private_and_rebuilt_when_corrupt_or_missing(store: Store, home: Path) -> None:
    warnings: list[str] = []
    s = Store(home, warn=warnings.append)
    assert found(s, "ERR_E4471") == [("work", 1)]
    db = home / DB_NAME
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    db.write_bytes(b"not a database at all" * 100)
    s = Store(home, warn=warnings.append)
    assert found(s, "ERR_E4471") == [("work", 1)]
    assert any("keyword index rebuilt" in w for w in warnings)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    db.unlink()
    assert found(Store(home), "ERR_E4471") == [("work", 1)]


def test_stale_rows_are_never_trusted(store: Store, home: Path) -> None:
    assert found(store, "ERR_E4471") == [("work", 1)]
    conn = sqlite3.connect(home / DB_NAME)
    try:
        conn.execute("UPDATE sessions SET activity = activity - 1")
        conn.execute("DELETE FROM docs")  # rows lost, stamps still there (but wrong)
        conn.commit()
    finally:
        conn.close()
    assert found(Store(home), "ERR_E4471") == [("work", 1)]


def test_read_only_home_searches_in_memory(store: Store, home: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores permissions")
    warnings: list[str] = []
    home.chmod(0o500)
    try:
        s = Store(home, warn=warnings.append)
        assert found(s, "ERR_E4471") == [("work", 1)]
        s.backend.close()
    finally:
        home.chmod(0o700)
    assert any("in memory" in w for w in warnings)


def test_an_unopenable_index_is_replaced_by_one_in_memory(store: Store, home: Path) -> None:
    (home / DB_NAME).mkdir()
    warnings: list[str] = []
    s = Store(home, warn=warnings.append)
    assert found(s, "ERR_E4471") == [("work", 1)]
    s.backend.close()
    assert any("in memory" in w for w in warnings)


_WRITER = textwrap.dedent(
    """
    import sys
    from sessionctl import Store
    from sessionctl.backend.base import SearchFilter

    store = Store(sys.argv[1])
    me = sys.argv[2]
    session = store.session(me)
    for i in range(15):
        session.add_message({"role": "user", "content": f"token {me}_{i} shared"})
        hits = store.backend.vectors.text_search(f"{me}_{i}", k=3, where=SearchFilter())
        assert [(h.session, h.seq) for h in hits] == [(me, i + 1)], hits
    """
)


def test_concurrent_writers_and_searchers(home: Path) -> None:
    Store(home).session("seed").add_message({"role": "user", "content": "seed"})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(home), f"w{n}"], env=env)
        for n in range(3)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    s = Store(home)
    for n in range(3):
        assert len(found(s, "shared", k=100, names=[f"w{n}"])) == 15


_KILLED = textwrap.dedent(
    """
    import os, signal, sys
    import sqlite3
    from sessionctl import Store

    real = sqlite3.Connection.execute
    count = [0]
    def execute(self, sql, *args):
        count[0] += 1
        if count[0] == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, sql, *args)
    class Conn(sqlite3.Connection):
        execute = execute
    orig = sqlite3.connect
    sqlite3.connect = lambda *a, **k: orig(*a, factory=Conn, **k)
    Store(sys.argv[1]).backend.vectors.text_search("anything", k=1)
    """
)


@pytest.mark.parametrize("at", [3, 9, 14, 40, 120])
def test_killed_during_catch_up_leaves_a_usable_index(home: Path, at: int) -> None:
    s = Store(home)
    for name in ("a", "b", "c"):
        s.session(name).add_messages(
            [{"role": "user", "content": f"{name} message {i} ID_{name}{i}"} for i in range(20)]
        )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", _KILLED, str(home), str(at)], env=env, check=False)
    assert run.returncode in (0, -9)
    s = Store(home)
    for name in ("a", "b", "c"):
        assert found(s, f"ID_{name}7") == [(name, 8)]
    assert len(found(s, "message", k=100)) == 60


def test_the_unfiltered_ranking_is_the_filtered_one_ties_across_the_cut_included(
    home: Path,
) -> None:
    """The fast unfiltered query and the full one agree, also when scores tie at k."""
    from sessionctl import Store

    store = Store(home)
    for i in range(6):  # identical texts: identical scores, ties broken by session, seq
        store.session(f"s{i}").add_messages(
            [
                {"role": "user", "content": "deploy notes"},
                {"role": "user", "content": f"deploy {i}"},
            ]
        )
    store.session("z").add_messages(  # and distinct scores: longer, lower
        [{"role": "user", "content": "deploy " + "filler " * j} for j in range(1, 8)]
    )
    store.session("y").add_messages(  # a tie larger than the few fetched first (k=1: 20)
        [{"role": "user", "content": "deploy notes"} for _ in range(30)]
    )
    keywords = store.backend.vectors.keywords  # type: ignore[attr-defined]
    everyone = sorted(store.names())
    for k in [*range(1, 22), 40, 60]:
        fast = keywords.search("deploy notes", k=k, names=None, roles=None)
        full = keywords.search("deploy notes", k=k, names=everyone, roles=None)
        assert [(s, q) for s, q, _, _ in fast] == [(s, q) for s, q, _, _ in full], k
    store.close()


def _ranked(store: Store, query: str, k: int, **where: object) -> list[tuple[str, int, float]]:
    keywords = store.backend.vectors.keywords  # type: ignore[attr-defined]
    found = keywords.search(query, k=k, roles=None, **where)
    return [(s, q, score) for s, q, score, _ in found]


@pytest.fixture
def varied(home: Path) -> Store:
    """Texts whose scores tie and differ: repeated words, lengths, identifiers, CJK."""
    store = Store(home)
    words = "deploy database error budget cache latency retry queue notes timeout".split()
    for i in range(12):
        store.session(f"s{i:02d}").add_messages(
            [
                {
                    "role": "user" if j % 2 else "assistant",
                    "content": " ".join(words[(i * 3 + j * w) % 10] for w in range(2 + j % 7))
                    + (" ERR_E4471" if (i + j) % 9 == 0 else "")
                    + (" 数据库锁定" if (i * j) % 11 == 3 else ""),
                }
                for j in range(15)
            ]
        )
    return store


QUERIES = [
    "deploy",
    "deploy database",
    "database error retry",
    "cache latency queue notes timeout",
    "ERR_E4471 deploy",
    "数据库 error",
    "the budget",  # a stopword dropped
    "budget budget deploy",
    "nothing-matches-this",
]


def test_kept_phrase_scores_rank_as_sqlite_does(varied: Store, home: Path) -> None:
    """A long-lived process's kept phrase scores give the one-shot query's list, exactly."""
    everyone = sorted(varied.names())
    for query in QUERIES:
        for k in (1, 3, 10, 50, 500):
            once = Store(home)  # a first search: SQLite ranks
            first = _ranked(once, query, k, names=None)
            once.close()
            second = _ranked(varied, query, k, names=None)  # SQLite; a fetch starts
            varied.backend.vectors.keywords.phrases.wait()  # type: ignore[attr-defined]
            kept = _ranked(varied, query, k, names=None)  # summed from what is kept
            full = _ranked(varied, query, k, names=everyone)  # filtered: the full query
            assert first == second == kept == full, (query, k)
    keywords = varied.backend.vectors.keywords  # type: ignore[attr-defined]
    assert len(keywords.phrases) > 0
    varied.close()


def test_a_one_shot_search_keeps_nothing(varied: Store, home: Path) -> None:
    store = Store(home)
    keywords = store.backend.vectors.keywords  # type: ignore[attr-defined]
    _ranked(store, "deploy database", 5, names=None)
    keywords.phrases.wait()
    assert keywords.phrases.fetched == 0 and len(keywords.phrases) == 0
    _ranked(store, "deploy database", 5, names=None)  # a second time: fetched meanwhile
    keywords.phrases.wait()
    assert keywords.phrases.fetched == 2 and len(keywords.phrases) == 2
    _ranked(store, "database deploy", 5, names=None)  # both phrases kept: none fetched
    keywords.phrases.wait()
    assert keywords.phrases.fetched == 2
    store.close()  # forgets them
    assert len(keywords.phrases) == 0
    store.close()


def test_kept_scores_never_outlive_a_change_by_any_process(varied: Store, home: Path) -> None:
    def top(store: Store) -> list[tuple[str, int, float]]:
        return _ranked(store, "zebra deploy", 3, names=None)

    top(varied)
    top(varied)
    varied.backend.vectors.keywords.phrases.wait()  # type: ignore[attr-defined]
    top(varied)  # summed from what is kept
    varied.session("s00").add_message({"role": "user", "content": "zebra deploy"})
    assert top(varied)[0][:2] == ("s00", 16)  # this process's own append
    other = Store(home)  # another process (its own index object) appends and catches up
    other.session("s01").add_message({"role": "user", "content": "zebra zebra deploy"})
    top(other)
    assert top(varied)[0][:2] == ("s01", 16)
    other.session("s01").drop()
    top(other)
    assert top(varied)[0][:2] == ("s00", 16)
    # Another process rebuilds the index from nothing: every row id changes.
    other.close()
    os.unlink(home / DB_NAME)
    other = Store(home)
    rebuilt = top(other)
    assert top(varied) == rebuilt and rebuilt[0][:2] == ("s00", 16)
    other.close()
    varied.close()


def test_a_schema_1_index_is_upgraded_in_place(varied: Store, home: Path) -> None:
    before = _ranked(varied, "deploy error", 5, names=None)
    varied.close()
    with sqlite3.connect(home / DB_NAME) as conn:  # what sessionctl 0.2 wrote
        conn.execute("DROP TABLE meta")
        conn.execute("PRAGMA user_version=1")
    warnings: list[str] = []
    store = Store(home, warn=warnings.append)
    assert _ranked(store, "deploy error", 5, names=None) == before
    assert warnings == []  # upgraded, not rebuilt
    with sqlite3.connect(home / DB_NAME) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM meta").fetchone()[0] == 1
    store.close()


def test_kept_scores_cut_ties_across_statement_chunks(
    varied: Store, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids bound in several statements (SQLite's limit is 32,766 a statement): same list."""
    from sessionctl.backend.files import phrasescores

    everyone = sorted(varied.names())
    expected = {q: _ranked(varied, q, 7, names=everyone) for q in QUERIES}
    monkeypatch.setattr(phrasescores, "_CHUNK", 5)
    for query in QUERIES:
        for _ in range(3):  # SQLite twice (a fetch starts), then kept
            assert _ranked(varied, query, 7, names=None) == expected[query], query
            varied.backend.vectors.keywords.phrases.wait()  # type: ignore[attr-defined]
    varied.close()


def test_exit_or_close_during_a_background_fetch_is_clean(home: Path) -> None:
    """A process that exits (or closes its store) while phrase scores are fetched."""
    store = Store(home)
    store.session("big").add_messages(
        [{"role": "user", "content": f"deploy database note {i}"} for i in range(5000)]
    )
    _ranked(store, "deploy database", 5, names=None)
    store.close()
    script = textwrap.dedent(
        f"""
        from sessionctl import Store
        store = Store({str(home)!r})
        for _ in range(2):  # the second starts a fetch; exit at once
            store.backend.vectors.text_search("deploy database", k=5)
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert (run.returncode, run.stderr) == (0, "")
    store = Store(home)
    keywords = store.backend.vectors.keywords  # type: ignore[attr-defined]
    for _ in range(2):
        _ranked(store, "deploy database", 5, names=None)
    store.close()  # at once: the fetch is interrupted or done, never left running
    assert not (keywords.phrases._fetcher and keywords.phrases._fetcher.is_alive())
    assert len(keywords.phrases) == 0
    assert [q for _, q, _ in _ranked(store, "deploy database", 3, names=None)] == [1, 2, 3]
