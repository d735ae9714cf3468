"""The file backend's store-wide keyword index: SQLite FTS5, derived from the transcripts.

One database, ``HOME/keywords.db`` (0600), beside the store-wide vector index
and held to the same rules: it is never the source of anything. Each live
session's last activity time (the activity log's, listing.py) is recorded with
its rows; a query first compares those with the live ones and re-reads, under
one ``BEGIN IMMEDIATE`` transaction, every session whose time differs (an
append, a drop, a clear, a scrub, a fork or rename target), and removes the
rows of every name that is no longer live (a delete, a purge, the old name of
a rename). A soft-deleted session is not live, so it never matches. A missing,
unreadable or corrupt database is rebuilt from the transcripts with one
warning; a home where it cannot be written gets an in-memory one for the
command. No keyword failure fails a command that can do without it.

Tokenisation (what a query can find), done the same way for texts and queries:

- FTS5 ``unicode61`` with ``remove_diacritics 2``: case and accents are folded
  (``café`` finds ``Cafe``); any character that is not a letter or a digit
  separates tokens.
- Identifiers: ``ERR_E4471``, ``user-123``, ``foo.bar()`` are split into their
  parts (``err e4471``, ``user 123``, ``foo bar``) and a query's identifier
  becomes a *phrase* of those parts, so it matches only where the parts are
  adjacent and in order; a part alone (``e4471``) still finds it.
- CJK (Han, kana, Hangul) characters are indexed one per token, and a run of
  them in a query is a phrase: ``数据库`` finds ``数据库锁定了`` (substring match),
  which unicode61 alone cannot do for text written without spaces.

A query is the OR of its words and phrases, less common function words
("the", "is", "my", ... and one-letter words; ``STOPWORDS``) unless it has
nothing else, ranked by BM25 (FTS5's ``bm25()``;
lower is better, reported as a positive score, higher is better).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from sessionctl.backend.files.phrasescores import PhraseScores
from sessionctl.errors import SessionctlError, StoreError
from sessionctl.models import Message

if TYPE_CHECKING:
    import sqlite3

    from sessionctl.backend.files.local import LocalBackend

DB_NAME = "keywords.db"
SCHEMA = 2  # 2: the meta table (its generation token); 1 is upgraded in place
TOKENIZER = "unicode61 remove_diacritics 2"

_META_SQL = "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)"
_SCHEMA_SQL = (
    "CREATE TABLE sessions(name TEXT PRIMARY KEY, activity INTEGER NOT NULL)",
    "CREATE TABLE docs(id INTEGER PRIMARY KEY, session TEXT NOT NULL, seq INTEGER NOT NULL,"
    " role TEXT NOT NULL, at TEXT NOT NULL, record TEXT NOT NULL)",
    "CREATE INDEX docs_session ON docs(session, seq)",
    f"CREATE VIRTUAL TABLE fts USING fts5(body, tokenize='{TOKENIZER}', detail=full)",
    _META_SQL,
)
_CJK = re.compile(
    "([\u1100-\u11ff\u2e80-\u2fdf\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f])"
)
_CJK_RUN = re.compile(_CJK.pattern[:-2] + "]+)")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_TERM = re.compile(r"[^\W_]+(?:[_.\-:/@#]+[^\W_]+)*", re.UNICODE)


# Query words that say nothing about what to find (they are still indexed): a
# query made of nothing else searches for them after all.
STOPWORDS = frozenset(
    "a an and are as at be but by can could did do does for from had has have how i if in"
    " is it its me my of on or our so that the their them then there these they this to"
    " was we were what when where which who why will with would you your"
    " de la le les des un une et est du en el los las y es".split()
)


class TextHit(NamedTuple):
    """One keyword match: where, its BM25 score (higher is better) and the message."""

    session: str
    seq: int
    score: float
    message: Message


def index_text(text: str) -> str:
    """What is indexed for ``text``: CJK characters spaced apart (one token each)."""
    return _CJK.sub(r" \1 ", text)


def match_expression(query: str) -> str | None:
    """The FTS5 MATCH expression for a user's query (None: no searchable word in it).

    Every word or identifier becomes a quoted phrase of its parts (FTS5 syntax
    in the query is never interpreted); the phrases are OR-ed.
    """
    phrases = match_phrases(query)
    return " OR ".join(phrases) if phrases else None


def match_phrases(query: str) -> list[str]:
    """The quoted phrases of ``match_expression(query)``, in its order."""
    phrases: list[str] = []
    for i, segment in enumerate(_CJK_RUN.split(query)):
        if i % 2:  # a run of CJK characters: one phrase of them
            groups = [list(segment)]
        else:
            groups = [_WORD.findall(term) for term in _TERM.findall(segment)]
        for parts in groups:
            phrase = '"' + " ".join(parts) + '"'
            if parts and phrase not in phrases:
                phrases.append(phrase)
    telling = [p for p in phrases if not _stopword(p)]
    return telling or phrases


def identifiers(query: str) -> list[tuple[str, ...]]:
    """The query's identifier-like terms, as casefolded parts: joined parts
    (``ERR_E4471``, ``user-123``, ``foo.bar``) or a word mixing letters and digits."""
    found: list[tuple[str, ...]] = []
    for term in _TERM.findall(query):
        parts = tuple(p.casefold() for p in _WORD.findall(term))
        mixed = any(c.isdigit() for c in term) and any(c.isalpha() for c in term)
        if (len(parts) > 1 or mixed) and parts not in found:
            found.append(parts)
    return found


def count_identifiers(wanted: Sequence[tuple[str, ...]], text: str) -> int:
    """How many of ``wanted`` occur in ``text`` as adjacent parts in order."""
    if not wanted:
        return 0
    words = [w.casefold() for w in _WORD.findall(text)]
    joined = " " + " ".join(words) + " "
    return sum((" " + " ".join(parts) + " ") in joined for parts in wanted)


def _stopword(phrase: str) -> bool:
    word = phrase.strip('"')
    if " " in word or _CJK.search(word):
        return False
    return len(word) < 2 or word.casefold() in STOPWORDS


class KeywordIndex:
    """The store-wide FTS5 index of one file backend (used through ``StoreIndex``)."""

    def __init__(self, backend: LocalBackend, warn_skip: Callable[[str, Exception], None]) -> None:
        self.backend = backend
        self.warn_skip = warn_skip
        self.path = backend.home / DB_NAME
        self.rows_written = 0  # by the last catch-up (the bench reads it)
        self._memory: sqlite3.Connection | None = None  # a home where nothing can be written
        self.phrases = PhraseScores()

    def _warn(self, message: str) -> None:
        if self.backend.warn is not None:
            self.backend.warn(message)

    # -- opening -------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        import sqlite3

        if self._memory is not None:
            return self._memory
        if not os.path.lexists(self.path):
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.fchmod(fd, 0o600)  # whatever the umask (0o277 would make it 0400)
            finally:
                os.close(fd)
        elif os.path.islink(self.path):
            raise StoreError(f"{self.path} is a symbolic link; not opened")
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA secure_delete=ON")  # a scrubbed or purged text is zeroed
            self._schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _schema(conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA:
            conn.execute("SELECT count(*) FROM sessions").fetchone()
            return
        if version not in (0, 1):
            raise _Corrupt(f"keyword index has schema {version}, expected {SCHEMA}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version in (0, 1):
                for statement in _SCHEMA_SQL if version == 0 else (_META_SQL,):
                    conn.execute(statement)
                _new_generation(conn)
                conn.execute(f"PRAGMA user_version={SCHEMA}")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _open(self) -> Iterator[sqlite3.Connection]:
        """A usable connection: the file's, rebuilt when corrupt, or one in memory."""
        import sqlite3

        conn: sqlite3.Connection | None = None
        if self._memory is not None:  # the file proved unusable earlier in this command
            yield self._memory
            return
        try:
            try:
                conn = self._connect()
            except sqlite3.OperationalError:
                raise
            except (sqlite3.DatabaseError, _Corrupt) as exc:  # not a database, or not ours
                self._warn(f"keyword index rebuilt: {exc}")
                self._remove()
                conn = self._connect()
        except (OSError, sqlite3.OperationalError) as exc:
            # Read-only home, no permission, a full disk, locked past the timeout, a
            # directory in its place: the command still runs, with an index in memory.
            why = getattr(exc, "strerror", None) or exc
            self._warn(f"keyword index {self.path} not usable ({why}); in memory for this command")
            conn = self._in_memory()
        try:
            yield conn
        finally:
            if conn is not self._memory:
                conn.close()

    def _reader(self) -> sqlite3.Connection:
        """A connection of its own for the background fetch of phrase scores."""
        import sqlite3

        if os.path.islink(self.path):
            raise StoreError(f"{self.path} is a symbolic link; not opened")
        uri = Path(os.path.abspath(self.path)).as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=1.0, check_same_thread=False)
        conn.execute("PRAGMA query_only=ON")
        return conn

    def _in_memory(self) -> sqlite3.Connection:
        import sqlite3

        if self._memory is None:
            self._memory = sqlite3.connect(":memory:", isolation_level=None)
            self._schema(self._memory)
        return self._memory

    def _remove(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(self.path) + suffix)

    def close(self) -> None:
        self.phrases.close()
        if self._memory is not None:
            self._memory.close()
            self._memory = None

    # -- catching up -----------------------------------------------------------------
    def catch_up(self, conn: sqlite3.Connection, live: Mapping[str, int]) -> int:
        """Make the rows match the live sessions' transcripts; return the sessions re-read."""
        known = dict(conn.execute("SELECT name, activity FROM sessions").fetchall())
        if not _differs(known, live):
            return 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            known = dict(conn.execute("SELECT name, activity FROM sessions").fetchall())
            redo = 0
            for name in sorted(set(known) - set(live)):
                self._forget(conn, name)
            self.rows_written = 0
            for name, when in sorted(live.items()):
                if known.get(name) == when and when >= 0:
                    continue
                self._forget(conn, name)
                try:
                    messages = self.backend.messages(name)
                except FileNotFoundError:
                    continue
                except Exception as exc:
                    if not _isolable(exc):
                        raise
                    self.warn_skip(name, exc)  # an unreadable transcript: the others count
                    continue
                self._add(conn, name, messages)
                conn.execute("INSERT INTO sessions(name, activity) VALUES (?, ?)", (name, when))
                redo += 1
            _new_generation(conn)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise
        return redo

    @staticmethod
    def _forget(conn: sqlite3.Connection, name: str) -> None:
        conn.execute(
            "DELETE FROM fts WHERE rowid IN (SELECT id FROM docs WHERE session = ?)", (name,)
        )
        conn.execute("DELETE FROM docs WHERE session = ?", (name,))
        conn.execute("DELETE FROM sessions WHERE name = ?", (name,))

    def _add(self, conn: sqlite3.Connection, name: str, messages: Sequence[Message]) -> None:
        for m in messages:
            record = json.dumps(m.to_record(), ensure_ascii=False, separators=(",", ":"))
            cur = conn.execute(
                "INSERT INTO docs(session, seq, role, at, record) VALUES (?, ?, ?, ?, ?)",
                (name, m.seq, m.role, m.created_at, record),
            )
            conn.execute(
                "INSERT INTO fts(rowid, body) VALUES (?, ?)", (cur.lastrowid, index_text(m.content))
            )
        self.rows_written += len(messages)

    def forget(self, name: str) -> None:
        """Remove ``name``'s rows now (scrub, delete, purge): best effort, never an error.

        The next query re-reads the session if it is still live.
        """
        import sqlite3

        if self._memory is None and not os.path.exists(self.path):
            return
        try:
            with self._open() as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    self._forget(conn, name)
                    _new_generation(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(Exception):
                        conn.execute("ROLLBACK")
                    raise
        except (sqlite3.Error, OSError, StoreError) as exc:
            self._warn(f"keyword index: could not forget {name!r} ({exc}); removing the index")
            self.rebuild()

    def count(self, name: str, count: Callable[[str], int]) -> int:
        """Matches ``count`` finds in the texts kept for ``name`` (scrub's final check)."""
        import sqlite3

        if not os.path.exists(self.path):
            return 0
        try:
            with self._open() as conn:
                rows = conn.execute(
                    "SELECT f.body FROM fts f JOIN docs d ON d.id = f.rowid WHERE d.session = ?",
                    (name,),
                ).fetchall()
        except (sqlite3.Error, StoreError):
            return 0
        return sum(count(body) for (body,) in rows)

    def rebuild(self) -> None:
        """Drop everything; the next query rebuilds it from the transcripts."""
        self.close()
        self._remove()

    # -- searching -------------------------------------------------------------------
    def search(
        self,
        query: str,
        *,
        k: int,
        names: Sequence[str] | None,
        roles: frozenset[str] | None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[tuple[str, int, float, Message]]:
        """(session, seq, score, message) of the best ``k`` matches, caught up first.

        The message comes from the copy of its record kept beside its tokens
        (written in the same transaction as the activity stamp that proves it
        current): no transcript is read to answer.

        Sorted by score (higher first), then session, then seq.
        """
        import sqlite3

        phrases = match_phrases(query)
        if not phrases or k <= 0:
            return []
        live = self.backend.activity_times()
        unfiltered = names is None and roles is None and since is None and until is None
        for attempt in range(2):
            try:
                with self._open() as conn:
                    self.catch_up(conn, live)
                    generation = _generation(conn)
                    if unfiltered and generation is not None and self._memory is None:
                        if self.phrases.usable(generation, phrases):
                            return _records(conn, self.phrases.top(conn, generation, phrases, k))
                        self.phrases.fetch_later(self._reader)
                    expression = " OR ".join(phrases)
                    return _query(conn, expression, k, names, roles, since, until)
            except sqlite3.DatabaseError as exc:
                if attempt or (isinstance(exc, sqlite3.OperationalError) and _busy(exc)):
                    raise StoreError(f"keyword index unusable: {exc}") from exc
                if isinstance(exc, sqlite3.OperationalError):
                    # Readable but not writable (a read-only home or mount): not corrupt,
                    # so not rebuilt; this command catches up a copy in memory.
                    self._warn(
                        f"keyword index {self.path} not usable ({exc}); in memory for this command"
                    )
                    self._in_memory()
                    continue
                self._warn(f"keyword index rebuilt: {exc}")
                try:
                    self.rebuild()
                except OSError as os_exc:
                    why = os_exc.strerror or os_exc
                    self._warn(
                        f"keyword index {self.path} not usable ({why}); in memory for this command"
                    )
                    self._in_memory()
        return []


def _isolable(exc: Exception) -> bool:
    """A failure of one session's data (not a bad argument, not memory, not Ctrl-C)."""
    return isinstance(exc, StoreError) or not isinstance(exc, (SessionctlError, MemoryError))


def _differs(known: Mapping[str, int], live: Mapping[str, int]) -> bool:
    if len(known) != len(live):
        return True
    return any(known.get(name) != when or when < 0 for name, when in live.items())


def _busy(exc: Exception) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _query(
    conn: sqlite3.Connection,
    expression: str,
    k: int,
    names: Sequence[str] | None,
    roles: frozenset[str] | None,
    since: str | None,
    until: str | None,
) -> list[tuple[str, int, float, Message]]:
    if names is None and roles is None and since is None and until is None:
        # Unfiltered: rank in FTS alone and join only the best few (joining and
        # sorting 20k matches costs as much again as scoring them). The few are
        # k and some more: the cut is exact when the k-th score differs from the
        # last one fetched (every tie of the k-th is then among them); otherwise the
        # full query below decides.
        depth = 4 * k + 16
        rows = conn.execute(
            "WITH top AS (SELECT rowid AS id, bm25(fts) AS rank FROM fts"
            " WHERE fts MATCH ? ORDER BY rank LIMIT ?)"
            " SELECT top.id, d.session, d.seq, top.rank FROM top JOIN docs d"
            " ON d.id = top.id ORDER BY top.rank, d.session, d.seq",
            (expression, depth),
        ).fetchall()
        if len(rows) < depth or rows[min(k, len(rows)) - 1][3] != rows[-1][3]:
            return _records(conn, rows[:k])
    where = ["fts MATCH ?"]
    args: list[Any] = [expression]
    if names is not None:
        if not names:
            return []
        where.append(f"d.session IN ({','.join('?' * len(names))})")
        args += list(names)
    if roles is not None:
        if not roles:
            return []
        where.append(f"d.role IN ({','.join('?' * len(roles))})")
        args += sorted(roles)
    if since is not None:
        where.append("d.at >= ?")
        args.append(since)
    if until is not None:
        where.append("d.at <= ?")
        args.append(until)
    sql = (
        "SELECT d.session, d.seq, bm25(fts) AS rank, d.record FROM fts"
        f" JOIN docs d ON d.id = fts.rowid WHERE {' AND '.join(where)}"
        " ORDER BY rank, d.session, d.seq LIMIT ?"
    )
    args.append(k)
    rows = conn.execute(sql, args).fetchall()
    return [(s, int(q), -float(r), Message.from_record(json.loads(rec))) for s, q, r, rec in rows]


def _records(
    conn: sqlite3.Connection, best: Sequence[tuple[int, str, int, float]]
) -> list[tuple[str, int, float, Message]]:
    """(session, seq, score, message) of ranked (id, session, seq, bm25) rows."""
    if not best:
        return []
    ids = [row[0] for row in best]
    records = dict(
        conn.execute(
            f"SELECT id, record FROM docs WHERE id IN ({','.join('?' * len(ids))})", ids
        ).fetchall()
    )
    return [
        (s, int(q), -float(r), Message.from_record(json.loads(records[i]))) for i, s, q, r in best
    ]


def _new_generation(conn: sqlite3.Connection) -> None:
    """Mark the index changed (inside the changing transaction): kept phrase scores go."""
    conn.execute(
        "INSERT OR REPLACE INTO meta(key, value) VALUES ('generation', ?)", (os.urandom(12).hex(),)
    )


def _generation(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
    return None if row is None else str(row[0])


class _Corrupt(Exception):
    """The database is not one this version can use."""


def db_path(home: Path) -> Path:
    return home / DB_NAME
