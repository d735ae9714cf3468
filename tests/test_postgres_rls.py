"""Row-level security: the recipe in docs/postgres.md ("Isolating users"), applied as
written, keeps one user's database role out of another namespace's rows, through
sessionctl and with hand-written SQL."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import REPO, Cli
from local_postgres import LocalPostgres, postgres, postgres_server

from sessionctl import Store
from sessionctl.config import load_settings
from sessionctl.errors import StoreError

__all__ = ["postgres", "postgres_server"]  # the fixtures, re-exported for pytest
pytestmark = pytest.mark.postgres

TABLES = ("sc_session", "sc_message", "sc_embedding", "sc_facts")


def recipe_blocks() -> list[str]:
    """The ```sql blocks of docs/postgres.md's "Isolating users" section, in order."""
    text = (REPO / "docs" / "postgres.md").read_text(encoding="utf-8")
    section = text.split("\n## Isolating users\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sql\n(.*?)^```$", section, flags=re.M | re.S)


@dataclass
class Roles:
    """The recipe applied to a fresh database, with its roles renamed to be unique on
    the shared test server (roles are cluster-wide)."""

    owner_url: str
    names: dict[str, str]  # the docs' name -> this test's

    def url(self, who: str) -> str:
        return re.sub(r"//postgres@", f"//{self.names[who]}@", self.owner_url)

    def store(self, who: str, namespace: str | None = None) -> Store:
        ns = self.names[namespace or who]
        return Store(settings=load_settings(store=self.url(who), namespace=ns))


def _rename(sql: str, names: dict[str, str]) -> str:
    for doc_name, name in names.items():
        sql = re.sub(rf"\b{doc_name}\b", name, sql)
    return sql


@pytest.fixture
def roles(postgres: str, postgres_server: LocalPostgres) -> Iterator[Roles]:
    import psycopg

    suffix = uuid.uuid4().hex[:8]
    names = {n: f"{n}_{suffix}" for n in ("sessionctl_user", "alice", "bob", "team")}
    with Store(settings=load_settings(store=postgres, namespace="owner")) as owner:
        owner.list_sessions()  # step 1: the owner's first command creates the tables
    blocks = recipe_blocks()
    assert len(blocks) == 2, "the docs' recipe: the database's block, then the roles' block"
    with psycopg.connect(postgres, autocommit=True) as conn:
        for block in blocks:
            conn.execute(_rename(block, names).encode())
    try:
        yield Roles(postgres, names)
    finally:
        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute("DROP OWNED BY " + ", ".join(names.values()))
        # The roles own nothing any more; drop them from the shared server.
        with psycopg.connect(postgres_server.admin_dsn, autocommit=True) as conn:
            for name in ("alice", "bob", "team", "sessionctl_user"):
                conn.execute(f"DROP ROLE {names[name]}")


def _write(roles: Roles, who: str, namespace: str | None = None) -> None:
    with roles.store(who, namespace) as store:
        owner = roles.names[namespace or who]
        session = store.session(f"notes-{owner}")
        session.add_messages(
            [
                {"role": "user", "content": f"where does {owner} keep the ferry timetable?"},
                {"role": "assistant", "content": f"{owner}'s timetable is in the blue folder"},
            ]
        )
        store.backend.write_facts({"probe": owner})
        hits = store.get_relevant("ferry timetable", top_k=10)  # embeds, searches
        assert hits and {h["session"] for h in hits} <= {f"notes-{owner}"}  # type: ignore[index]


def _rows(conn: Any, table: str) -> list[tuple[Any, ...]]:
    return list(conn.execute(f"SELECT * FROM {table}").fetchall())


def test_a_role_reads_only_its_namespaces_even_with_hand_written_sql(roles: Roles) -> None:
    import psycopg

    _write(roles, "alice")
    _write(roles, "bob")
    _write(roles, "alice", "team")
    alice, bob, team = (roles.names[n] for n in ("alice", "bob", "team"))
    with psycopg.connect(roles.owner_url) as owner:
        every = {t: _rows(owner, t) for t in TABLES}
        sessions = {r[0]: r[1] for r in owner.execute("SELECT id, namespace FROM sc_session")}
    assert set(sessions.values()) >= {alice, bob, team}  # the owner sees everything
    assert every["sc_embedding"] and every["sc_message"]
    with psycopg.connect(roles.url("alice")) as conn:
        seen = {t: _rows(conn, t) for t in TABLES}
        assert {r[1] for r in seen["sc_session"]} == {alice, team}
        mine = {sid for sid, ns in sessions.items() if ns in (alice, team)}
        for table in ("sc_message", "sc_embedding"):
            assert seen[table], table
            assert {r[0] for r in seen[table]} == mine, table
            # Not only filtered: exactly the rows of her sessions, none missing.
            assert sorted(seen[table]) == sorted(r for r in every[table] if r[0] in mine)
        assert {r[0] for r in seen["sc_facts"]} == {alice, team}
        # Nor can she change or remove bob's rows, or move her own into his namespace.
        assert conn.execute("UPDATE sc_message SET content = 'x'").rowcount == 4
        conn.rollback()
        assert conn.execute(
            "DELETE FROM sc_session WHERE namespace = %s", (bob,)
        ).rowcount == 0  # fmt: skip
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute("UPDATE sc_session SET namespace = %s", (bob,))
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO sc_session (namespace, name, uid, created_at, updated_at,"
                " last_active_ns) VALUES (%s, 'planted', 'u-planted', 'now', 'now', 0)",
                (bob,),
            )
        conn.rollback()
        bobs = next(sid for sid, ns in sessions.items() if ns == bob)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO sc_message (session_id, seq, id, role, content, created_at)"
                " VALUES (%s, 99, 'planted', 'user', 'planted', 'now')",
                (bobs,),
            )
    with psycopg.connect(roles.owner_url) as owner:
        assert {t: _rows(owner, t) for t in TABLES} == every  # nothing of bob's changed


def test_sessionctl_as_one_role_cannot_reach_another_namespace(roles: Roles, cli: Cli) -> None:
    _write(roles, "bob")
    alice, bob = roles.names["alice"], roles.names["bob"]
    as_alice = ("--store", roles.url("alice"), "--namespace", bob)
    listed = cli(*as_alice, "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    assert json.loads(listed.stdout)["sessions"] == []
    shown = cli(*as_alice, "show", f"notes-{bob}")
    assert shown.exit_code != 0 and "no session named" in shown.stderr
    found = cli(*as_alice, "relevant", "ferry timetable", "--json")
    assert found.exit_code == 0, found.stderr
    assert f"notes-{bob}" not in found.stdout and "blue folder" not in found.stdout
    planted = cli(*as_alice, "add", "-s", "planted", "-r", "user", "hello")
    assert planted.exit_code == 1
    assert len(planted.stderr.strip().splitlines()) == 1, planted.stderr
    assert "row-level security" in planted.stderr and "Traceback" not in planted.stderr
    # Bob's own view is whole; alice's own namespace works as usual.
    with roles.store("bob") as store:
        assert [s.name for s in store.list_sessions().sessions] == [f"notes-{bob}"]
        assert len(store.session(f"notes-{bob}").get_messages()) == 2
    mine = cli("--store", roles.url("alice"), "--namespace", alice, "list", "--json")
    assert mine.exit_code == 0 and json.loads(mine.stdout)["sessions"] == []


def test_a_user_role_cannot_create_the_schema_and_is_told_who_can(
    roles: Roles, postgres_server: LocalPostgres
) -> None:
    import psycopg

    fresh = postgres_server.database()  # no sessionctl tables yet (pgvector there)
    with psycopg.connect(fresh, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    url = re.sub(r"//postgres@", f"//{roles.names['alice']}@", fresh)
    with (
        Store(settings=load_settings(store=url, namespace=roles.names["alice"])) as store,
        pytest.raises(StoreError, match=r"may not bring sessionctl's schema .* up to date") as err,
    ):
        store.list_sessions()
    assert "owns its tables" in str(err.value) and "\n" not in str(err.value)


def test_searching_through_the_hnsw_index_keeps_to_the_role_s_rows(roles: Roles) -> None:
    import psycopg

    from sessionctl.backend.postgres.vectors import hnsw_indexes

    _write(roles, "alice")
    _write(roles, "bob")
    alice = roles.names["alice"]

    def hits(hnsw: bool | None) -> list[tuple[str, int]]:
        settings = load_settings(store=roles.url("alice"), namespace=alice, pg_hnsw=hnsw)
        with Store(settings=settings) as store:
            found: Any = store.get_relevant("blue folder", top_k=10, mode="vector")
        return [(h["session"], h["seq"]) for h in found]

    exact = hits(None)
    assert exact and {s for s, _ in exact} == {f"notes-{alice}"}
    with pytest.raises(StoreError, match="only the owner"):
        hits(True)  # a user role may not build it
    # The owner builds it with a search of a namespace that has vectors (row-level
    # security does not apply to the owner; an empty namespace never reaches the index).
    owner_settings = load_settings(store=roles.owner_url, namespace=alice, pg_hnsw=True)
    with Store(settings=owner_settings) as owner:
        owner.get_relevant("anything", mode="vector")
    with psycopg.connect(roles.owner_url) as conn:
        assert len(hnsw_indexes(conn)) == 1
    assert hits(True) == exact  # through the index, still only her rows
