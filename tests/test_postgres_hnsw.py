"""The opt-in HNSW index (``pg_hnsw``): on, a search builds it and searches through it,
and the contract suite's search expectations still hold; off drops it; unset leaves
the database alone. The contract's ``relevant`` tests are re-run here on an
HNSW store (pytest collects the imported test functions)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from contract import conftest as contract_conftest
from contract import test_contract_relevant
from local_postgres import LocalPostgres, postgres, postgres_server

from sessionctl import Store
from sessionctl.config import load_settings
from sessionctl.errors import StoreError

__all__ = ["postgres", "postgres_server"]  # the fixtures, re-exported for pytest
pytestmark = pytest.mark.postgres

# The contract's search expectations, on a store with pg_hnsw = true.
globals().update({n: f for n, f in vars(test_contract_relevant).items() if n.startswith("test_")})


@pytest.fixture
def store(postgres: str, tmp_path: Path) -> Iterator[Store]:
    with _store(postgres, tmp_path, hnsw=True) as made:
        yield made
    assert _indexes(postgres) or not _embedded(postgres), "a search ran without the index"


@pytest.fixture
def tick() -> Callable[[], float]:
    return contract_conftest._tick


def _store(url: str, home: Path, *, hnsw: bool | None, namespace: str = "contract") -> Store:
    return Store(settings=load_settings(home=home, store=url, namespace=namespace, pg_hnsw=hnsw))


def _indexes(url: str) -> list[tuple[str, str]]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'sc_embedding'"
            " AND indexdef LIKE '%USING hnsw%'"
        ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def _embedded(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM sc_embedding").fetchone()
    return int(row[0]) if row else 0


TEXTS = {
    "travel": ["The ferry to the island leaves at noon.", "Book the sleeper train to Vienna."],
    "baking": ["Sourdough needs a long autolyse.", "Preheat the oven to 250 degrees."],
    "garden": ["Water the tomatoes every morning.", "Prune the roses in late winter."],
}


def _fill(store: Store) -> None:
    for name, texts in TEXTS.items():
        store.session(name).add_messages([{"role": "user", "content": t} for t in texts])


def _hits(store: Store, query: str) -> list[tuple[str, int, float]]:
    found: Any = store.get_relevant(query, top_k=4, mode="vector", distance_threshold=2.0)
    return [(h["session"], h["seq"], round(h["distance"], 4)) for h in found]


def test_on_builds_the_index_and_finds_what_exact_search_finds(
    postgres: str, tmp_path: Path
) -> None:
    with _store(postgres, tmp_path, hnsw=None) as exact:
        _fill(exact)
        wanted = {q: _hits(exact, q) for q in ("when does the boat sail", "bread dough")}
        assert wanted["when does the boat sail"][0][:2] == ("travel", 1)
        assert _indexes(postgres) == []  # unset: exact, and the database is left alone
    with _store(postgres, tmp_path, hnsw=True) as approximate:
        assert {q: _hits(approximate, q) for q in wanted} == wanted
        approximate.session("garden").add_message({"role": "user", "content": "Ferry times."})
        assert _hits(approximate, "ferry times")[0][:2] == ("garden", 3)  # new rows indexed
    (name, definition), *more = _indexes(postgres)
    assert more == [] and name.startswith("sc_embedding_hnsw_384_")
    assert "halfvec_cosine_ops" in definition and "(vec)::halfvec(384)" in definition
    import psycopg

    with psycopg.connect(postgres) as conn:
        analyzed = conn.execute(
            "SELECT last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL"
            " FROM pg_stat_user_tables WHERE relname = 'sc_embedding'"
        ).fetchone()
    assert analyzed == (True,)
    with _store(postgres, tmp_path, hnsw=False) as off:
        assert _hits(off, "bread dough") == wanted["bread dough"]
    assert _indexes(postgres) == []


def test_the_environment_variable_turns_it_on_for_the_cli(
    cli: Cli, postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    added = cli("--store", postgres, "add", "-s", "work", "-r", "user", "deploy on friday")
    assert added.exit_code == 0, added.stderr
    monkeypatch.setenv("SESSIONCTL_PG_HNSW", "1")
    found = cli("--store", postgres, "relevant", "deploy", "--mode", "vector", "--json")
    assert found.exit_code == 0, found.stderr
    assert "deploy on friday" in found.stdout
    assert len(_indexes(postgres)) == 1
    monkeypatch.setenv("SESSIONCTL_PG_HNSW", "off")
    found = cli("--store", postgres, "relevant", "deploy", "--mode", "vector", "--json")
    assert found.exit_code == 0 and "deploy on friday" in found.stdout
    assert _indexes(postgres) == []


def test_a_role_that_does_not_own_the_tables_is_told_who_may_build_it(
    postgres: str, postgres_server: LocalPostgres, tmp_path: Path
) -> None:
    import psycopg

    role = "u_" + uuid.uuid4().hex[:8]
    with _store(postgres, tmp_path, hnsw=None) as owner:
        _fill(owner)  # the owner creates the tables
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        conn.execute(f"GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
    url = postgres.replace("//postgres@", f"//{role}@")
    try:
        with (
            _store(url, tmp_path, hnsw=True) as user,
            pytest.raises(StoreError, match=r"only the owner .* may build or drop") as err,
        ):
            user.get_relevant("bread", top_k=2, mode="vector")
        assert "\n" not in str(err.value)
        with _store(url, tmp_path, hnsw=None) as user:  # exact search still works for it
            assert user.get_relevant("bread", top_k=1, mode="vector")
    finally:
        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
        with psycopg.connect(postgres_server.admin_dsn, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")
