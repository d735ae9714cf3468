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
