"""The PostgreSQL store's schema: a version table and forward migrations, applied on connect.

Every row belongs to a namespace (default: the OS user name); every query of the
backend is scoped to one. The tables:

``sc_schema``     one row per applied migration (``version``, ``applied_at``)
``sc_session``    one row per session, live or in the trash (``trash_id`` set). Live
                  names are unique per namespace without regard to case, enforced by a
                  partial unique index on ``lower(name)``. ``high_seq`` is the highest
                  seq ever given out: seqs are allocated from it under the row's lock
                  (``SELECT … FOR UPDATE``), so they are never reused, even after a drop.
``sc_message``    the messages, keyed by (session, seq); removed with their session.
``sc_embedding``  one vector per (message, model) as ``halfvec`` (pgvector), removed
                  with its message. Search is exact by default.

:func:`migrate` applies what a database lacks, in order, in one transaction under
an advisory lock (two processes connecting at once apply each step once). A database
of a newer schema than this sessionctl knows is refused, never downgraded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sessionctl.errors import StoreError

if TYPE_CHECKING:
    import psycopg

#: Key of the advisory lock taken while migrating (any 64-bit value unique to us).
MIGRATION_LOCK = 0x5E55_C7_0001

_V1 = """
CREATE TABLE sc_session (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace       text        NOT NULL,
    name            text        NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    uid             text        NOT NULL UNIQUE,
    created_at      text        NOT NULL,
    updated_at      text        NOT NULL,
    last_active_ns  bigint      NOT NULL,
    high_seq        bigint      NOT NULL DEFAULT 0 CHECK (high_seq >= 0),
    live_count      bigint      NOT NULL DEFAULT 0 CHECK (live_count >= 0),
    model           text,
    system          text,
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb
                                CHECK (jsonb_typeof(metadata) = 'object'),
    parent          text,
    parent_message  text,
    trash_id        text,
    deleted_at      text,
    CHECK ((trash_id IS NULL) = (deleted_at IS NULL))
);
CREATE UNIQUE INDEX sc_session_live_name
    ON sc_session (namespace, lower(name)) WHERE trash_id IS NULL;
CREATE UNIQUE INDEX sc_session_trash
    ON sc_session (namespace, trash_id, name) WHERE trash_id IS NOT NULL;
CREATE INDEX sc_session_recent
    ON sc_session (namespace, last_active_ns DESC, name) WHERE trash_id IS NULL;

CREATE TABLE sc_message (
    session_id   bigint  NOT NULL REFERENCES sc_session (id) ON DELETE CASCADE,
    seq          bigint  NOT NULL CHECK (seq >= 1),
    id           text    NOT NULL,
    role         text    NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content      text    NOT NULL,
    created_at   text    NOT NULL,
    model        text,
    usage        jsonb,
    tool_call_id text,
    tool_calls   jsonb,
    name         text,
    metadata     jsonb,
    interrupted  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (session_id, seq)
);
CREATE INDEX sc_message_id ON sc_message (id);

CREATE TABLE sc_embedding (
    session_id  bigint  NOT NULL,
    seq         bigint  NOT NULL,
    model_id    text    NOT NULL,
    vec         halfvec NOT NULL,
    PRIMARY KEY (session_id, seq, model_id),
    FOREIGN KEY (session_id, seq) REFERENCES sc_message (session_id, seq) ON DELETE CASCADE
);
"""

# v2: what a lossless round trip needs (unknown header and message keys), uids
# unique per namespace (one home migrated into two namespaces), names ordered by
# code point (COLLATE "C", as Python sorts them), the server-facts cache.
_V2 = """
ALTER TABLE sc_session ADD COLUMN header_extra jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE sc_message ADD COLUMN extra jsonb;
-- text cannot hold U+0000: such a content is kept exactly here (``content`` has U+FFFD)
ALTER TABLE sc_message ADD COLUMN content_raw bytea;
ALTER TABLE sc_session DROP CONSTRAINT sc_session_uid_key;
CREATE UNIQUE INDEX sc_session_uid ON sc_session (namespace, uid);
DROP INDEX sc_session_recent;
CREATE INDEX sc_session_recent
    ON sc_session (namespace, last_active_ns DESC, name COLLATE "C") WHERE trash_id IS NULL;
DROP INDEX sc_message_id;
CREATE INDEX sc_message_id ON sc_message (session_id, id);
CREATE TABLE sc_facts (
    namespace text  PRIMARY KEY,
    facts     jsonb NOT NULL DEFAULT '{}'::jsonb
);
"""

#: (version, SQL) in order; a database at version N gets every step after N.
MIGRATIONS: tuple[tuple[int, str], ...] = ((1, _V1), (2, _V2))
LATEST = MIGRATIONS[-1][0]


def schema_version(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """The version a database is at (0: none of sessionctl's tables)."""
    row = conn.execute("SELECT to_regclass('sc_schema') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    found = conn.execute("SELECT max(version) FROM sc_schema").fetchone()
    value = found[0] if found is not None else None
    return value if isinstance(value, int) else 0


def _ensure_vector(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    import psycopg

    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
        return
    try:
        with conn.transaction():  # a savepoint: the failure must not end the migration's
            conn.execute("CREATE EXTENSION vector")
    except psycopg.errors.InsufficientPrivilege:
        raise StoreError(
            "the database lacks the pgvector extension and this role may not create it: "
            "ask its administrator to run `CREATE EXTENSION vector;` in it"
        ) from None
    except psycopg.errors.FeatureNotSupported as exc:
        raise StoreError(f"pgvector is not installed on the server: {exc}") from None
    except psycopg.errors.UndefinedFile:
        raise StoreError(
            'pgvector is not installed on the server (extension "vector" not found): '
            "install it (https://github.com/pgvector/pgvector) or use a server that has it"
        ) from None


def migrate(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """Bring the database to :data:`LATEST`; return the version it was at before.

    One transaction under an advisory lock: a failure leaves the database as it was,
    and a second process connecting at the same time waits, then finds nothing to do.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        before = schema_version(conn)
        if before > LATEST:
            raise StoreError(
                f"the database's sessionctl schema is version {before}, newer than this "
                f"sessionctl knows ({LATEST}): upgrade sessionctl (it never downgrades)"
            )
        if before == LATEST:
            return before
        _ensure_vector(conn)
        if before == 0:
            conn.execute(
                "CREATE TABLE sc_schema (version integer PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            )
        for version, sql in MIGRATIONS:
            if version > before:
                conn.execute(sql.encode())
                conn.execute("INSERT INTO sc_schema (version) VALUES (%s)", (version,))
    return before
