"""The PostgreSQL session store: a :class:`~sessionctl.backend.base.SessionStore` on tables.

Every query is scoped to one namespace. Writes are single transactions; a session's
writers serialise on its row (``SELECT … FOR UPDATE``), so seqs come from
``high_seq`` contiguously and are never reused. Last activity is the **server's**
clock (several hosts write), in ns, kept monotonic per session.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sessionctl.backend.base import (
    Capabilities,
    HeaderPatch,
    MakeMessages,
    NewSession,
    SessionHeader,
    SessionStream,
    Snapshot,
    TextFix,
)
from sessionctl.backend.postgres.connection import Connection
from sessionctl.backend.postgres.rows import MSG_COLS as _MSG_COLS
from sessionctl.backend.postgres.rows import message as _message
from sessionctl.errors import MessageNotFound, SessionExists, SessionNotFound, StoreError
from sessionctl.ids import new_ulid, ulid_time_ms
from sessionctl.models import MAX_SEQ, Message, SessionInfo
from sessionctl.timeutil import from_epoch_ns, now_iso

if TYPE_CHECKING:
    from sessionctl.backend.postgres.vectors import PgVectors

Warn = Callable[[str], None]

#: The server's clock in ns since the epoch (µs resolution).
NOW_NS = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000"
_HEAD_COLS = (
    "uid, created_at, updated_at, model, system, metadata, parent, parent_message, header_extra"
)
_BATCH = 2000  # messages per round trip when streaming
CREATE_GROUP = 256  # sessions per transaction in create_many


def _not_found(name: str) -> SessionNotFound:
    return SessionNotFound(f"no session named {name!r} (see `sessionctl list`)")


def _jsonb(value: Any) -> Any:
    from psycopg.types.json import Jsonb

    return None if value is None else Jsonb(value)


def _header(row: tuple[Any, ...]) -> SessionHeader:
    return SessionHeader(
        uid=row[0], created_at=row[1], updated_at=row[2], model=row[3], system=row[4],
        metadata=dict(row[5] or {}), parent=row[6], parent_message=row[7],
        extra=dict(row[8] or {}),
    )  # fmt: skip


def _message_params(sid: int, m: Message) -> tuple[Any, ...]:
    return (
        sid, m.seq, m.id, m.role, *_content(m.content), m.created_at, m.model, _jsonb(m.usage),
        m.tool_call_id, _jsonb(m.tool_calls), m.name, _jsonb(m.metadata), m.interrupted,
        _jsonb(m.extra or None),
    )  # fmt: skip


def _check(record: dict[str, Any]) -> None:
    """UsageError for what the file backend could not write either (lone surrogates)."""
    from sessionctl.jsonlines import encode

    encode(record)


def _content(text: str) -> tuple[str, bytes | None]:
    """(content column, content_raw column): U+0000 cannot be stored in text."""
    if "\x00" not in text:
        return text, None
    return text.replace("\x00", "\ufffd"), text.encode("utf-8")


_INSERT_MESSAGE = (
    "INSERT INTO sc_message (session_id, seq, id, role, content, content_raw, created_at,"
    " model, usage, tool_call_id, tool_calls, name, metadata, interrupted, extra) VALUES"
    " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


class PostgresBackend:
    """Sessions of one namespace in a PostgreSQL database."""

    def __init__(
        self,
        url: str,
        warn: Warn | None = None,
        *,
        namespace: str | None = None,
        hnsw: bool | None = None,
    ) -> None:
        import getpass

        self.url = url
        self.warn = warn
        self.namespace = namespace or getpass.getuser()
        self.hnsw = hnsw  # the pg_hnsw setting (see vectors.py)
        self.db = Connection(url)
        self._vectors: PgVectors | None = None
        import weakref

        # A Store dropped without close() still closes its connection (no ResourceWarning).
        weakref.finalize(self, self.db.close)

    def __repr__(self) -> str:
        return f"PostgresBackend({self.db.where!r}, namespace={self.namespace!r})"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(cross_session_search=True, keyword_search=True, shared=True)

    @property
    def vectors(self) -> PgVectors:
        if self._vectors is None:
            from sessionctl.backend.postgres.vectors import PgVectors

            self._vectors = PgVectors(self)
        return self._vectors

    def close(self) -> None:
        self.db.close()

    # -- helpers ------------------------------------------------------------------
    def _sid(self, conn: Any, name: str, *, lock: str = "") -> int:
        row = conn.execute(
            "SELECT id FROM sc_session WHERE namespace = %s AND name = %s"
            " AND trash_id IS NULL " + lock,
            (self.namespace, name),
        ).fetchone()
        if row is None:
            raise _not_found(name)
        return int(row[0])

    def _twin_error(self, conn: Any, name: str) -> SessionExists:
        row = conn.execute(
            "SELECT name FROM sc_session WHERE namespace = %s AND lower(name) = lower(%s)"
            " AND trash_id IS NULL",
            (self.namespace, name),
        ).fetchone()
        if row is None or row[0] == name:
            return SessionExists(f"session {name!r} already exists; choose another name")
        return SessionExists(
            f"session {row[0]!r} already exists and differs from {name!r} only in case;"
            " choose another name"
        )

    def _touch(self, conn: Any, sid: int, *, updated: bool = False) -> None:
        conn.execute(
            "UPDATE sc_session SET last_active_ns = GREATEST(last_active_ns, " + NOW_NS + ")"
            + (", updated_at = %s" if updated else "") + " WHERE id = %s",
            (now_iso(), sid) if updated else (sid,),
        )  # fmt: skip

    def _info(self, row: tuple[Any, ...]) -> SessionInfo:
        # name, live_count, created_at, last_active_ns, metadata, model, system,
        # parent, parent_message, deleted_at, trash_id
        return SessionInfo(
            name=row[0], messages=int(row[1]), created_at=row[2],
            updated_at=from_epoch_ns(int(row[3])), metadata=dict(row[4] or {}),
            model=row[5], system=row[6], parent=row[7], parent_message=row[8],
            deleted_at=row[9], trash_id=row[10],
        )  # fmt: skip

    _INFO_COLS = (
        "name, live_count, created_at, last_active_ns, metadata, model, system, parent,"
        " parent_message, deleted_at, trash_id"
    )

    # -- a small cache of server facts ----------------------------------------------
    def read_facts(self) -> dict[str, object]:
        try:
            with self.db.transaction() as conn:
                row = conn.execute(
                    "SELECT facts FROM sc_facts WHERE namespace = %s", (self.namespace,)
                ).fetchone()
        except StoreError:
            return {}
        return dict(row[0]) if row is not None and isinstance(row[0], dict) else {}

    def write_facts(self, facts: Mapping[str, object]) -> None:
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO sc_facts (namespace, facts) VALUES (%s, %s)"
                    " ON CONFLICT (namespace) DO UPDATE SET facts = EXCLUDED.facts",
                    (self.namespace, _jsonb(dict(facts))),
                )
        except StoreError:
            pass  # only a cache

    # -- discovery -----------------------------------------------------------------
    def has_data(self) -> bool:
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM sc_session WHERE namespace = %s)",
                (self.namespace,),
            ).fetchone()
        return bool(row and row[0])

    def exists(self, name: str) -> bool:
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT 1 FROM sc_session WHERE namespace = %s AND name = %s AND trash_id IS NULL",
                (self.namespace, name),
            ).fetchone()
        return row is not None

    def case_twin(self, name: str) -> str | None:
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT name FROM sc_session WHERE namespace = %s AND lower(name) = lower(%s)"
                " AND name <> %s AND trash_id IS NULL",
                (self.namespace, name, name),
            ).fetchone()
        return None if row is None else str(row[0])

    def names(self) -> list[tuple[str, int]]:
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT name, last_active_ns FROM sc_session WHERE namespace = %s"
                " AND trash_id IS NULL",
                (self.namespace,),
            ).fetchall()
        return [(str(r[0]), int(r[1])) for r in rows]

    def names_with_prefix(self, prefix: str) -> list[str]:
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT name FROM sc_session WHERE namespace = %s AND trash_id IS NULL"
                " AND starts_with(name, %s)",
                (self.namespace, prefix),
            ).fetchall()
        return sorted(str(r[0]) for r in rows)

    def list_live(
        self, limit: int | None, after: tuple[int, str] | None = None
    ) -> list[tuple[SessionInfo, int]]:
        sql = (
            "SELECT " + self._INFO_COLS + " FROM sc_session WHERE namespace = %s"
            " AND trash_id IS NULL"
        )
        params: list[Any] = [self.namespace]
        if after is not None:
            sql += (
                " AND (last_active_ns < %s OR (last_active_ns = %s"
                ' AND name COLLATE "C" > %s COLLATE "C"))'
            )
            params += [after[0], after[0], after[1]]
        sql += ' ORDER BY last_active_ns DESC, name COLLATE "C"'
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        with self.db.transaction() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [(self._info(r), int(r[3])) for r in rows]

    def list_deleted(
        self, limit: int | None, after: tuple[str, str] | None = None
    ) -> list[SessionInfo]:
        sql = (
            "SELECT " + self._INFO_COLS + " FROM sc_session WHERE namespace = %s"
            " AND trash_id IS NOT NULL"
        )
        params: list[Any] = [self.namespace]
        if after is not None:
            sql += ' AND (trash_id COLLATE "C", name COLLATE "C") < (%s, %s)'
            params += list(after)
        sql += ' ORDER BY trash_id COLLATE "C" DESC, name COLLATE "C" DESC'
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        with self.db.transaction() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [self._info(r) for r in rows]

    def stale(self, cutoff_ns: int) -> list[tuple[str, int]]:
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT name, last_active_ns FROM sc_session WHERE namespace = %s"
                " AND trash_id IS NULL AND last_active_ns <= %s"
                ' ORDER BY last_active_ns, name COLLATE "C"',
                (self.namespace, cutoff_ns),
            ).fetchall()
        return [(str(r[0]), int(r[1])) for r in rows]

    def last_activity(self, name: str) -> int:
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT last_active_ns FROM sc_session WHERE namespace = %s AND name = %s"
                " AND trash_id IS NULL",
                (self.namespace, name),
            ).fetchone()
        if row is None:
            raise _not_found(name)
        return int(row[0])

    # -- reading -------------------------------------------------------------------
    def header(self, name: str) -> SessionHeader:
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT " + _HEAD_COLS + " FROM sc_session WHERE namespace = %s AND name = %s"
                " AND trash_id IS NULL",
                (self.namespace, name),
            ).fetchone()
        if row is None:
            raise _not_found(name)
        return _header(row)

    def info(self, name: str) -> SessionInfo:
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT " + self._INFO_COLS + " FROM sc_session WHERE namespace = %s"
                " AND name = %s AND trash_id IS NULL",
                (self.namespace, name),
            ).fetchone()
        if row is None:
            raise _not_found(name)
        return self._info(row)

    def messages(self, name: str) -> list[Message]:
        with self.db.transaction() as conn:
            sid = self._sid(conn, name)
            rows = conn.execute(
                "SELECT " + _MSG_COLS + " FROM sc_message WHERE session_id = %s ORDER BY seq",
                (sid,),
            ).fetchall()
        return [_message(r) for r in rows]

    def stream(self, name: str) -> SessionStream:
        """The header now; the messages up to the high-water seq now, read in batches."""
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT id, high_seq, " + _HEAD_COLS + " FROM sc_session"
                " WHERE namespace = %s AND name = %s AND trash_id IS NULL",
                (self.namespace, name),
            ).fetchone()
        if row is None:
            raise _not_found(name)
        return SessionStream(_header(row[2:]), self._batches(int(row[0]), int(row[1])))

    def _batches(self, sid: int, high: int) -> Iterator[Message]:
        last = 0
        while True:
            with self.db.transaction() as conn:
                rows = conn.execute(
                    "SELECT " + _MSG_COLS + " FROM sc_message WHERE session_id = %s"
                    " AND seq > %s AND seq <= %s ORDER BY seq LIMIT %s",
                    (sid, last, high, _BATCH),
                ).fetchall()
            yield from (_message(r) for r in rows)
            if len(rows) < _BATCH:
                return
            last = int(rows[-1][0])

    def iter_messages(self, name: str) -> Iterator[Message]:
        return self.stream(name).messages

    def tail(self, name: str, k: int, roles: frozenset[str] | None = None) -> list[Message]:
        if k <= 0:
            with self.db.transaction() as conn:
                self._sid(conn, name)
            return []
        with self.db.transaction() as conn:
            sid = self._sid(conn, name)
            sql = "SELECT " + _MSG_COLS + " FROM sc_message WHERE session_id = %s"
            params: list[Any] = [sid]
            if roles is not None:
                sql += " AND role = ANY(%s)"
                params.append(sorted(roles))
            rows = conn.execute(sql + " ORDER BY seq DESC LIMIT %s", [*params, k]).fetchall()
        return [_message(r) for r in reversed(rows)]

    def get(self, name: str, seqs: Iterable[int]) -> dict[int, Message]:
        wanted = sorted({int(s) for s in seqs})
        with self.db.transaction() as conn:
            sid = self._sid(conn, name)
            if not wanted:
                return {}
            rows = conn.execute(
                "SELECT " + _MSG_COLS + " FROM sc_message WHERE session_id = %s AND seq = ANY(%s)",
                (sid, wanted),
            ).fetchall()
        return {int(r[0]): _message(r) for r in rows}

    def snapshot(self, name: str, *, trash_id: str | None = None) -> Snapshot:
        with self.db.transaction() as conn:
            if trash_id is None:
                row = conn.execute(
                    "SELECT id, high_seq, last_active_ns, " + _HEAD_COLS + " FROM sc_session"
                    " WHERE namespace = %s AND name = %s AND trash_id IS NULL FOR SHARE",
                    (self.namespace, name),
                ).fetchone()
            else:
                row = conn.execute(
                    "SELECT id, high_seq, last_active_ns, " + _HEAD_COLS + " FROM sc_session"
                    " WHERE namespace = %s AND name = %s AND trash_id = %s FOR SHARE",
                    (self.namespace, name, trash_id),
                ).fetchone()
            if row is None:
                raise _not_found(name)
            rows = conn.execute(
                "SELECT " + _MSG_COLS + " FROM sc_message WHERE session_id = %s ORDER BY seq",
                (row[0],),
            ).fetchall()
        messages = [_message(r) for r in rows]
        high = max(int(row[1]), messages[-1].seq if messages else 0)
        return Snapshot(name, _header(row[3:]), messages, high, int(row[2]), trash_id)

    # -- writing -------------------------------------------------------------------
    def _insert_session(
        self,
        conn: Any,
        name: str,
        header: SessionHeader,
        *,
        high_seq: int,
        count: int,
        last_active_ns: int | None,
        trash_id: str | None = None,
    ) -> int:
        import psycopg

        deleted_at = None
        if trash_id is not None:
            try:
                deleted_at = from_epoch_ns(ulid_time_ms(trash_id) * 1_000_000)
            except ValueError:
                deleted_at = now_iso()
        try:
            with conn.transaction():  # a savepoint: the caller turns a conflict into ours
                row = conn.execute(
                    "INSERT INTO sc_session (namespace, name, uid, created_at, updated_at,"
                    " last_active_ns, high_seq, live_count, model, system, metadata, parent,"
                    " parent_message, header_extra, trash_id, deleted_at) VALUES"
                    " (%s, %s, %s, %s, %s, COALESCE(%s, " + NOW_NS + "), %s, %s, %s, %s, %s,"
                    " %s, %s, %s, %s, %s) RETURNING id",
                    (
                        self.namespace, name, header.uid, header.created_at, header.updated_at,
                        last_active_ns, high_seq, count, header.model, header.system,
                        _jsonb(dict(header.metadata)), header.parent, header.parent_message,
                        _jsonb(dict(header.extra)), trash_id, deleted_at,
                    ),
                ).fetchone()  # fmt: skip
        except psycopg.errors.UniqueViolation as exc:
            constraint = getattr(exc.diag, "constraint_name", "") or ""
            if constraint == "sc_session_uid":
                raise SessionExists(
                    f"a session with uid {header.uid!r} already exists in this store"
                    f" (namespace {self.namespace!r})"
                ) from None
            if trash_id is not None:
                raise SessionExists(
                    f"trash entry {trash_id!r} of {name!r} already exists"
                ) from None
            raise self._twin_error(conn, name) from None
        assert row is not None
        return int(row[0])

    def _insert_messages(self, conn: Any, sid: int, messages: list[Message]) -> None:
        if not messages:
            return
        if len(messages) < 8:
            with conn.cursor() as cur:
                cur.executemany(_INSERT_MESSAGE, [_message_params(sid, m) for m in messages])
            return
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY sc_message (session_id, seq, id, role, content, content_raw, created_at,"
                " model, usage, tool_call_id, tool_calls, name, metadata, interrupted, extra)"
                " FROM STDIN"
            ) as copy,
        ):
            for m in messages:
                copy.write_row(
                    (
                        sid, m.seq, m.id, m.role, *_content(m.content), m.created_at,
                        m.model,
                        _dumps(m.usage), m.tool_call_id, _dumps(m.tool_calls), m.name,
                        _dumps(m.metadata), m.interrupted, _dumps(m.extra or None),
                    )
                )  # fmt: skip

    def create(
        self,
        name: str,
        header: SessionHeader,
        messages: Iterable[Message] = (),
        *,
        high_seq: int | None = None,
        last_active_ns: int | None = None,
        trash_id: str | None = None,
    ) -> None:
        """Create ``name`` whole in one transaction; SessionExists if it is taken."""
        listed = [m._replace(pos=0) for m in messages]
        _check(header._asdict())
        for m in listed:
            _check(m.to_record())
        high = max(max((m.seq for m in listed), default=0), high_seq or 0)
        with self.db.transaction() as conn:
            sid = self._insert_session(
                conn, name, header, high_seq=high, count=len(listed),
                last_active_ns=last_active_ns, trash_id=trash_id,
            )  # fmt: skip
            self._insert_messages(conn, sid, listed)

    def create_many(self, sessions: Sequence[NewSession]) -> None:
        """Create the sessions in one transaction per group of them: all of a group or none."""
        for start in range(0, len(sessions), CREATE_GROUP):
            group = sessions[start : start + CREATE_GROUP]
            listed = [[m._replace(pos=0) for m in messages] for _n, _h, messages in group]
            for (_name, header, _messages), rows in zip(group, listed, strict=True):
                _check(header._asdict())
                for m in rows:
                    _check(m.to_record())
            with self.db.transaction() as conn:
                for (name, header, _messages), rows in zip(group, listed, strict=True):
                    high = max((m.seq for m in rows), default=0)
                    sid = self._insert_session(
                        conn, name, header, high_seq=high, count=len(rows), last_active_ns=None
                    )
                    self._insert_messages(conn, sid, rows)

    def append(
        self, name: str, make: MakeMessages, *, create: SessionHeader | None
    ) -> list[Message]:
        """Append ``make(next_seq)`` under the session row's lock (created first if asked)."""
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT id, high_seq FROM sc_session WHERE namespace = %s AND name = %s"
                " AND trash_id IS NULL FOR UPDATE",
                (self.namespace, name),
            ).fetchone()
            if row is None:
                if create is None:
                    raise _not_found(name)
                sid, high = self._create_for_append(conn, name, create)
            else:
                sid, high = int(row[0]), int(row[1])
            messages = [m._replace(pos=0) for m in make(high + 1)]
            if not messages:
                return []
            for m in messages:
                _check(m.to_record())
            if messages[-1].seq > MAX_SEQ:
                raise StoreError(
                    f"session {name!r} has used every message number (seq {MAX_SEQ}); "
                    "nothing written; continue in a new session"
                )
            self._insert_messages(conn, sid, messages)
            conn.execute(
                "UPDATE sc_session SET high_seq = GREATEST(high_seq, %s),"
                " live_count = live_count + %s,"
                " last_active_ns = GREATEST(last_active_ns, " + NOW_NS + ") WHERE id = %s",
                (max(m.seq for m in messages), len(messages), sid),
            )
        return messages

    def _create_for_append(self, conn: Any, name: str, header: SessionHeader) -> tuple[int, int]:
        import psycopg

        try:
            sid = self._insert_session(conn, name, header, high_seq=0, count=0, last_active_ns=None)
        except SessionExists:
            # Created by another writer since we looked (same name): append to it.
            row = conn.execute(
                "SELECT id, high_seq FROM sc_session WHERE namespace = %s AND name = %s"
                " AND trash_id IS NULL FOR UPDATE",
                (self.namespace, name),
            ).fetchone()
            if row is None:
                raise
            return int(row[0]), int(row[1])
        except psycopg.Error:
            raise
        conn.execute("SELECT id FROM sc_session WHERE id = %s FOR UPDATE", (sid,))
        return sid, 0

    def drop(self, name: str, message_id: str | None = None) -> Message:
        with self.db.transaction() as conn:
            sid = self._sid(conn, name, lock="FOR UPDATE")
            if message_id is None:
                row = conn.execute(
                    "DELETE FROM sc_message WHERE session_id = %s AND seq = (SELECT max(seq)"
                    " FROM sc_message WHERE session_id = %s) RETURNING " + _MSG_COLS,
                    (sid, sid),
                ).fetchone()
                if row is None:
                    raise MessageNotFound(f"session {name!r} has no messages to drop")
            else:
                row = conn.execute(
                    "DELETE FROM sc_message WHERE session_id = %s AND seq = (SELECT min(seq)"
                    " FROM sc_message WHERE session_id = %s AND id = %s) RETURNING " + _MSG_COLS,
                    (sid, sid, message_id),
                ).fetchone()
                if row is None:
                    any_left = conn.execute(
                        "SELECT 1 FROM sc_message WHERE session_id = %s LIMIT 1", (sid,)
                    ).fetchone()
                    if any_left is None:
                        raise MessageNotFound(f"session {name!r} has no messages to drop")
                    raise MessageNotFound(f"no message with id {message_id!r} in session {name!r}")
            conn.execute("UPDATE sc_session SET live_count = live_count - 1 WHERE id = %s", (sid,))
            self._touch(conn, sid, updated=message_id is not None)
        return _message(row)

    def clear(self, name: str) -> list[int]:
        with self.db.transaction() as conn:
            sid = self._sid(conn, name, lock="FOR UPDATE")
            rows = conn.execute(
                "DELETE FROM sc_message WHERE session_id = %s RETURNING seq", (sid,)
            ).fetchall()
            conn.execute("UPDATE sc_session SET live_count = 0 WHERE id = %s", (sid,))
            self._touch(conn, sid, updated=True)
        return sorted(int(r[0]) for r in rows)

    def update_header(
        self, name: str, patch: HeaderPatch, *, create: bool = False
    ) -> SessionHeader:
        for key in patch.fields:
            if key not in ("model", "system"):
                raise ValueError(f"unknown header field {key!r}")
        _check({"fields": dict(patch.fields), "metadata": dict(patch.metadata or {})})
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT id, " + _HEAD_COLS + " FROM sc_session WHERE namespace = %s"
                " AND name = %s AND trash_id IS NULL FOR UPDATE",
                (self.namespace, name),
            ).fetchone()
            if row is None:
                if not create:
                    raise _not_found(name)
                now = now_iso()
                sid, _ = self._create_for_append(conn, name, SessionHeader(new_ulid(), now, now))
                row = conn.execute(
                    "SELECT id, " + _HEAD_COLS + " FROM sc_session WHERE id = %s", (sid,)
                ).fetchone()
                assert row is not None
            sid, before = int(row[0]), _header(row[1:])
            metadata = dict(before.metadata)
            if patch.metadata:
                metadata.update(patch.metadata)
            for key in patch.unset:
                metadata.pop(key, None)
            fields = {"model": before.model, "system": before.system, **patch.fields}
            after = before._replace(
                model=fields["model"], system=fields["system"], metadata=metadata
            )
            if (after.model, after.system, after.metadata) == (
                before.model, before.system, before.metadata,
            ):  # fmt: skip
                return before
            after = after._replace(updated_at=now_iso())
            conn.execute(
                "UPDATE sc_session SET model = %s, system = %s, metadata = %s,"
                " updated_at = %s WHERE id = %s",
                (after.model, after.system, _jsonb(metadata), after.updated_at, sid),
            )
            self._touch(conn, sid)
        return after

    def fork(self, source: str, new: str, *, at: str | None, header: SessionHeader) -> None:
        """One transaction: the new session, its messages (fresh ids) and their vectors."""
        with self.db.transaction() as conn:
            src = self._sid(conn, source, lock="FOR SHARE")
            if at is None:
                cut_row = conn.execute(
                    "SELECT max(seq) FROM sc_message WHERE session_id = %s", (src,)
                ).fetchone()
            else:
                cut_row = conn.execute(
                    "SELECT min(seq) FROM sc_message WHERE session_id = %s AND id = %s",
                    (src, at),
                ).fetchone()
                if cut_row is None or cut_row[0] is None:
                    raise MessageNotFound(f"no message with id {at!r} in session {source!r}")
            cut = int(cut_row[0]) if cut_row and cut_row[0] is not None else 0
            seqs_rows = conn.execute(
                "SELECT seq, id FROM sc_message WHERE session_id = %s AND seq <= %s ORDER BY seq",
                (src, cut),
            ).fetchall()
            seqs = [int(r[0]) for r in seqs_rows]
            header = header._replace(parent_message=seqs_rows[-1][1] if seqs_rows else None)
            sid = self._insert_session(
                conn, new, header, high_seq=cut, count=len(seqs), last_active_ns=None
            )
            if seqs:
                conn.execute(
                    "INSERT INTO sc_message (session_id, " + _MSG_COLS + ")"
                    " SELECT %s, m.seq, n.id, m.role, m.content, m.created_at, m.model,"
                    " m.usage, m.tool_call_id, m.tool_calls, m.name, m.metadata,"
                    " m.interrupted, m.extra, m.content_raw FROM sc_message m"
                    " JOIN unnest(%s::bigint[], %s::text[]) AS n(seq, id) ON n.seq = m.seq"
                    " WHERE m.session_id = %s",
                    (sid, seqs, [new_ulid() for _ in seqs], src),
                )
                conn.execute(
                    "INSERT INTO sc_embedding (session_id, seq, model_id, vec)"
                    " SELECT %s, seq, model_id, vec FROM sc_embedding"
                    " WHERE session_id = %s AND seq <= %s",
                    (sid, src, cut),
                )

    def rename(self, old: str, new: str) -> None:
        import psycopg

        with self.db.transaction() as conn:
            sid = self._sid(conn, old, lock="FOR UPDATE")
            if old != new and self._exact(conn, new):
                raise SessionExists(f"session {new!r} already exists; choose another name")
            try:
                with conn.transaction():
                    conn.execute("UPDATE sc_session SET name = %s WHERE id = %s", (new, sid))
            except psycopg.errors.UniqueViolation:
                twin = self._twin_error(conn, new)
                row = conn.execute(
                    "SELECT name FROM sc_session WHERE namespace = %s AND trash_id IS NULL"
                    " AND lower(name) = lower(%s) AND id <> %s",
                    (self.namespace, new, sid),
                ).fetchone()
                if row is not None and row[0] != new:
                    raise SessionExists(
                        f"session {row[0]!r} differs from {new!r} only in case"
                    ) from None
                raise twin from None

    def _exact(self, conn: Any, name: str) -> bool:
        return (
            conn.execute(
                "SELECT 1 FROM sc_session WHERE namespace = %s AND name = %s AND trash_id IS NULL",
                (self.namespace, name),
            ).fetchone()
            is not None
        )

    def edit_messages(
        self,
        name: str,
        message: Callable[[Message], Message],
        header: Callable[[SessionHeader], SessionHeader],
        *,
        trash_id: str | None = None,
    ) -> bool:
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT id, " + _HEAD_COLS + " FROM sc_session WHERE namespace = %s"
                " AND name = %s AND trash_id IS NOT DISTINCT FROM %s FOR UPDATE",
                (self.namespace, name, trash_id),
            ).fetchone()
            if row is None:
                raise _not_found(name)
            sid, before = int(row[0]), _header(row[1:])
            rows = conn.execute(
                "SELECT " + _MSG_COLS + " FROM sc_message WHERE session_id = %s ORDER BY seq",
                (sid,),
            ).fetchall()
            changed = []
            for r in rows:
                old = _message(r)
                out = message(old)._replace(id=old.id, seq=old.seq, pos=0)
                if out != old:
                    changed.append((old, out))
            after = header(before)
            if not changed and after == before:
                return False
            _check(after._asdict())
            for _, out in changed:
                _check(out.to_record())
            for old, out in changed:
                conn.execute(
                    "UPDATE sc_message SET role = %s, content = %s, content_raw = %s,"
                    " created_at = %s, model = %s, usage = %s, tool_call_id = %s,"
                    " tool_calls = %s, name = %s, metadata = %s, interrupted = %s, extra = %s"
                    " WHERE session_id = %s AND seq = %s",
                    (
                        out.role, *_content(out.content), out.created_at, out.model,
                        _jsonb(out.usage), out.tool_call_id, _jsonb(out.tool_calls), out.name,
                        _jsonb(out.metadata), out.interrupted, _jsonb(out.extra or None),
                        sid, old.seq,
                    ),
                )  # fmt: skip
                if (out.content, out.role) != (old.content, old.role):
                    conn.execute(
                        "DELETE FROM sc_embedding WHERE session_id = %s AND seq = %s",
                        (sid, old.seq),
                    )
            conn.execute(
                "UPDATE sc_session SET model = %s, system = %s, metadata = %s,"
                " parent = %s, parent_message = %s, header_extra = %s, updated_at = %s"
                " WHERE id = %s",
                (
                    after.model, after.system, _jsonb(dict(after.metadata)), after.parent,
                    after.parent_message, _jsonb(dict(after.extra)), now_iso(), sid,
                ),
            )  # fmt: skip
            if trash_id is None:
                self._touch(conn, sid)  # a deleted session keeps its last activity
        return True

    def _require_entry(self, name: str, trash_id: str | None) -> None:
        if trash_id is None:
            self.last_activity(name)  # SessionNotFound for a name that is gone
        else:
            self.snapshot(name, trash_id=trash_id)

    def scrub_residue(
        self, name: str, fix: TextFix, *, dry_run: bool, trash_id: str | None = None
    ) -> int:
        """Nothing is kept beside the messages and the header (vectors hold no text)."""
        self._require_entry(name, trash_id)
        return 0

    def count_residue(
        self, name: str, count: Callable[[str], int], *, trash_id: str | None = None
    ) -> int:
        self._require_entry(name, trash_id)
        return 0

    # -- trash ---------------------------------------------------------------------
    def delete(self, name: str, *, unless_active_since: int | None = None) -> str | None:
        trash_id = new_ulid()
        with self.db.transaction() as conn:
            sid = self._sid(conn, name, lock="FOR UPDATE")
            row = conn.execute(
                "UPDATE sc_session SET trash_id = %s, deleted_at = %s WHERE id = %s"
                " AND (%s::bigint IS NULL OR last_active_ns <= %s::bigint) RETURNING id",
                (trash_id, _server_iso(conn), sid, unless_active_since, unless_active_since),
            ).fetchone()
        return None if row is None else trash_id

    def purge(self, name: str, *, unless_active_since: int | None = None) -> bool:
        with self.db.transaction() as conn:
            sid = self._sid(conn, name, lock="FOR UPDATE")
            row = conn.execute(
                "DELETE FROM sc_session WHERE id = %s"
                " AND (%s::bigint IS NULL OR last_active_ns <= %s::bigint) RETURNING id",
                (sid, unless_active_since, unless_active_since),
            ).fetchone()
        return row is not None

    def restore(self, name: str, trash_id: str | None = None) -> None:
        import psycopg

        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT id FROM sc_session WHERE namespace = %s AND name = %s"
                " AND trash_id IS NOT NULL AND (%s::text IS NULL OR trash_id = %s::text)"
                ' ORDER BY trash_id COLLATE "C" DESC LIMIT 1 FOR UPDATE',
                (self.namespace, name, trash_id, trash_id),
            ).fetchone()
            if row is None:
                raise SessionNotFound(f"no deleted session named {name!r} (see `list --deleted`)")
            try:
                with conn.transaction():
                    conn.execute(
                        "UPDATE sc_session SET trash_id = NULL, deleted_at = NULL WHERE id = %s",
                        (row[0],),
                    )
            except psycopg.errors.UniqueViolation:
                raise SessionExists(
                    f"a live session named {name!r} exists; rename it before restoring"
                ) from None

    def purge_deleted(self, trash_id: str) -> None:
        with self.db.transaction() as conn:
            row = conn.execute(
                "DELETE FROM sc_session WHERE namespace = %s AND trash_id = %s RETURNING id",
                (self.namespace, trash_id),
            ).fetchone()
        if row is None:
            raise SessionNotFound(f"no trash entry {trash_id!r}")


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _server_iso(conn: Any) -> str:
    row = conn.execute("SELECT " + NOW_NS).fetchone()
    return from_epoch_ns(int(row[0]))


if TYPE_CHECKING:
    from sessionctl.backend.base import SessionStore

    def _conforms(backend: PostgresBackend) -> SessionStore:
        return backend  # mypy checks that PostgresBackend is a SessionStore
