"""The PostgreSQL schema on a real server: migrations, versions and the invariants the
database itself enforces (case-insensitive live names, seqs under a row lock)."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import pytest
from local_postgres import postgres, postgres_server

from sessionctl.errors import StoreError

__all__ = ["postgres", "postgres_server"]  # the fixtures, re-exported for pytest
pytestmark = pytest.mark.postgres


def _connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url)


def test_a_fresh_database_gets_every_migration_once(postgres: str) -> None:
    from sessionctl.backend.postgres.schema import LATEST, migrate, schema_version

    with _connect(postgres) as conn:
        assert schema_version(conn) == 0
        assert migrate(conn) == 0
        assert schema_version(conn) == LATEST
        assert migrate(conn) == LATEST  # nothing left to do
        rows = conn.execute("SELECT version FROM sc_schema ORDER BY version").fetchall()
        assert [r[0] for r in rows] == list(range(1, LATEST + 1))
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()}  # fmt: skip
        assert {"sc_schema", "sc_session", "sc_message", "sc_embedding"} <= tables
        assert conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()


def _migrate_in_process(url: str) -> int:
    from sessionctl.backend.postgres.schema import migrate

    with _connect(url) as conn:
        return migrate(conn)


def test_processes_connecting_at_once_apply_it_once(postgres: str) -> None:
    from sessionctl.backend.postgres.schema import LATEST

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        befores = pool.map(_migrate_in_process, [postgres] * 4)
    assert sorted(befores)[0] == 0 and befores.count(0) == 1
    with _connect(postgres) as conn:
        assert conn.execute("SELECT count(*) FROM sc_schema").fetchone()[0] == LATEST


def test_a_newer_schema_is_refused_and_left_alone(postgres: str) -> None:
    from sessionctl.backend.postgres.schema import LATEST, migrate

    with _connect(postgres) as conn:
        migrate(conn)
        conn.execute("INSERT INTO sc_schema (version) VALUES (%s)", (LATEST + 1,))
        conn.commit()
        with pytest.raises(StoreError, match=r"newer than this sessionctl knows.*upgrade"):
            migrate(conn)
        assert conn.execute("SELECT max(version) FROM sc_schema").fetchone()[0] == LATEST + 1


def _session(conn: Any, name: str, *, ns: str = "alice", uid: str | None = None) -> int:
    row = conn.execute(
        "INSERT INTO sc_session (namespace, name, uid, created_at, updated_at, last_active_ns)"
        " VALUES (%s, %s, %s, 'now', 'now', 0) RETURNING id",
        (ns, name, uid or f"{ns}-{name}"),
    ).fetchone()
    return int(row[0])


def test_live_names_are_unique_per_namespace_whatever_the_case(postgres: str) -> None:
    import psycopg

    from sessionctl.backend.postgres.schema import migrate

    with _connect(postgres) as conn:
        migrate(conn)
        first = _session(conn, "Work")
        with pytest.raises(psycopg.errors.UniqueViolation):
            _session(conn, "work", uid="twin")
        conn.rollback()
        first = _session(conn, "Work")
        _session(conn, "work", ns="bob")  # another namespace may hold it
        # In the trash the name is free again, and several deleted ones may share it.
        conn.execute("UPDATE sc_session SET trash_id = 'T1', deleted_at = 'now' WHERE id = %s",
                     (first,))  # fmt: skip
        second = _session(conn, "work", uid="again")
        conn.execute("UPDATE sc_session SET trash_id = 'T2', deleted_at = 'now' WHERE id = %s",
                     (second,))  # fmt: skip
        _session(conn, "WORK", uid="third")
        conn.commit()


def test_bad_rows_are_refused_by_the_database(postgres: str) -> None:
    import psycopg

    from sessionctl.backend.postgres.schema import migrate

    with _connect(postgres) as conn:
        migrate(conn)
        sid = _session(conn, "s")
        conn.commit()
        for sql, params in (
            ("INSERT INTO sc_message (session_id, seq, id, role, content, created_at)"
             " VALUES (%s, 1, 'm', 'llm', 'x', 'now')", (sid,)),
            ("INSERT INTO sc_message (session_id, seq, id, role, content, created_at)"
             " VALUES (%s, 0, 'm', 'user', 'x', 'now')", (sid,)),
            ("UPDATE sc_session SET metadata = '[1]' WHERE id = %s", (sid,)),
            ("UPDATE sc_session SET trash_id = 'T' WHERE id = %s", (sid,)),
        ):  # fmt: skip
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(sql, params)
            conn.rollback()


def test_seqs_allocated_under_the_row_lock_are_contiguous_and_never_reused(postgres: str) -> None:
    from sessionctl.backend.postgres.schema import migrate

    with _connect(postgres) as conn:
        migrate(conn)
        sid = _session(conn, "busy")
        conn.commit()

    def writer(w: int) -> None:
        with _connect(postgres) as conn:
            for i in range(25):
                with conn.transaction():
                    high = conn.execute(
                        "SELECT high_seq FROM sc_session WHERE id = %s FOR UPDATE", (sid,)
                    ).fetchone()[0]
                    for k in (1, 2):  # a two-message append
                        conn.execute(
                            "INSERT INTO sc_message (session_id, seq, id, role, content,"
                            " created_at) VALUES (%s, %s, %s, 'user', %s, 'now')",
                            (sid, high + k, f"{w}-{i}-{k}", f"{w}-{i}"),
                        )
                    conn.execute("UPDATE sc_session SET high_seq = %s, live_count ="
                                 " live_count + 2 WHERE id = %s", (high + 2, sid))  # fmt: skip

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with _connect(postgres) as conn:
        rows = conn.execute(
            "SELECT seq, content FROM sc_message WHERE session_id = %s ORDER BY seq", (sid,)
        ).fetchall()
        assert [r[0] for r in rows] == list(range(1, 201))
        assert all(rows[i][1] == rows[i + 1][1] for i in range(0, 200, 2))  # pairs adjacent
        # A drop never frees a seq: the next one comes from high_seq.
        conn.execute("DELETE FROM sc_message WHERE session_id = %s AND seq = 200", (sid,))
        assert conn.execute("SELECT high_seq FROM sc_session WHERE id = %s",
                            (sid,)).fetchone()[0] == 200  # fmt: skip


def test_embeddings_go_with_their_message_and_session(postgres: str) -> None:
    from sessionctl.backend.postgres.schema import migrate

    with _connect(postgres) as conn:
        migrate(conn)
        sid = _session(conn, "v")
        for seq in (1, 2):
            conn.execute(
                "INSERT INTO sc_message (session_id, seq, id, role, content, created_at)"
                " VALUES (%s, %s, %s, 'user', 'x', 'now')",
                (sid, seq, f"m{seq}"),
            )
            conn.execute("INSERT INTO sc_embedding VALUES (%s, %s, 'm', %s::halfvec)",
                         (sid, seq, "[1, 0, 0.5]"))  # fmt: skip
        nearest = conn.execute(
            "SELECT seq, vec <=> '[1, 0, 0.5]'::halfvec FROM sc_embedding ORDER BY 2, 1"
        ).fetchall()
        assert [r[0] for r in nearest] == [1, 2] and nearest[0][1] == pytest.approx(0, abs=1e-3)
        conn.execute("DELETE FROM sc_message WHERE session_id = %s AND seq = 1", (sid,))
        assert conn.execute("SELECT count(*) FROM sc_embedding").fetchone()[0] == 1
        conn.execute("DELETE FROM sc_session WHERE id = %s", (sid,))
        assert conn.execute("SELECT count(*) FROM sc_message").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM sc_embedding").fetchone()[0] == 0
