"""The two interfaces the service layer talks to: a session store and a vector store.

Every backend (``files``: JSON lines + derived indexes under a home;
``postgres``: tables + pgvector) implements both with the same semantics,
which ``tests/contract/`` states once and runs against each backend.

Rules for implementers:
- Names are already validated by the caller (``sessionctl.names.check_name``).
- Every write is atomic: a failure leaves the old state, never half a write.
- seq is per session, strictly increasing and never reused (a dropped
  message's seq stays burnt; the file backend's one exception is a drop of the
  last message cut by a crash before its tombstone, docs/format.md); a
  multi-message append is all or nothing and contiguous.
- Nothing here exposes paths, file descriptors, locks, FAISS or SQL.
- Errors are the exceptions of :mod:`sessionctl.errors` (SessionNotFound,
  MessageNotFound, SessionExists, StoreError, ...), never OSError or a driver's.

This module is the agreed shape of the seam. Changes to it are additive and
are described in ``docs/architecture.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from sessionctl.models import Message, SessionInfo

if TYPE_CHECKING:
    from sessionctl.embed import Embedder
    from sessionctl.index.report import SyncReport

# Given the next free seq, build the messages to append (called under the
# session's lock or row lock, so seqs are allocated atomically).
MakeMessages = Callable[[int], list[Message]]
# (session name, done, total) while catching up or rebuilding an index.
IndexProgress = Callable[[str, int, int], None]
# A text in, the text with every match replaced and how many there were out (scrub).
TextFix = Callable[[str], tuple[str, int]]


class SessionHeader(NamedTuple):
    """Session-level state, independent of how a backend keeps it."""

    uid: str
    created_at: str
    updated_at: str
    model: str | None = None
    system: str | None = None
    metadata: dict[str, Any] = {}  # noqa: RUF012 - NamedTuple default, never mutated
    parent: str | None = None
    parent_message: str | None = None
    extra: dict[str, Any] = {}  # noqa: RUF012 - unknown header keys, kept for round trips


class NewSession(NamedTuple):
    """One session for :meth:`SessionStore.create_many`."""

    name: str
    header: SessionHeader
    messages: Sequence[Message]


class Snapshot(NamedTuple):
    """One session as a consistent whole: what fork, to_dict, export and migrate read."""

    name: str
    header: SessionHeader
    messages: list[Message]
    high_seq: int  # the highest seq ever handed out (>= the last message's seq)
    last_active_ns: int  # last activity, ns since the epoch
    trash_id: str | None = None  # set when read from the trash


class SessionStream(NamedTuple):
    """A session read once: its header, then its messages as they are consumed."""

    header: SessionHeader
    messages: Iterator[Message]


class HeaderPatch(NamedTuple):
    """A change to a header."""

    fields: Mapping[str, Any] = {}  # "model"/"system": new value, None clears
    metadata: Mapping[str, Any] | None = None  # merged shallowly (dict.update)
    unset: tuple[str, ...] = ()  # metadata keys to remove after the merge


class Capabilities(NamedTuple):
    """What a backend can do, so the service asks instead of testing its type."""

    cross_session_search: bool = True  # one call searches many sessions
    keyword_search: bool = False  # search(mode="text"/"hybrid") is supported
    shared: bool = False  # other hosts may write concurrently (clock = server's)
    session_indexes: bool = False  # one session is searched (and reindexed) by its own index


class SessionStore(Protocol):
    """Transcripts, headers, trash and activity."""

    @property
    def capabilities(self) -> Capabilities: ...
    @property
    def vectors(self) -> VectorStore: ...

    # discovery
    def has_data(self) -> bool:
        """False when nothing was ever written to this store (a mistyped home, a new URL)."""
        ...

    def exists(self, name: str) -> bool: ...
    def case_twin(self, name: str) -> str | None: ...
    def names(self) -> list[tuple[str, int]]:
        """(name, last activity ns) of every live session, unordered."""
        ...

    def names_with_prefix(self, prefix: str) -> list[str]:
        """Live session names starting with ``prefix``, sorted (shell completion: cheap)."""
        ...

    def list_live(
        self, limit: int | None, after: tuple[int, str] | None = None
    ) -> list[tuple[SessionInfo, int]]:
        """Live sessions ordered by (last activity desc, name asc), with their activity ns.

        ``after`` is the (activity_ns, name) of the last row of the previous page.
        """
        ...

    def list_deleted(
        self, limit: int | None, after: tuple[str, str] | None = None
    ) -> list[SessionInfo]:
        """Trash entries ordered by (trash_id desc, name desc)."""
        ...

    def stale(self, cutoff_ns: int) -> list[tuple[str, int]]:
        """Live sessions whose last activity is <= cutoff, oldest first (prune candidates)."""
        ...

    def last_activity(self, name: str) -> int: ...

    # reading
    def header(self, name: str) -> SessionHeader: ...
    def info(self, name: str) -> SessionInfo: ...
    def messages(self, name: str) -> list[Message]: ...
    def iter_messages(self, name: str) -> Iterable[Message]:
        """All messages in order, in constant memory (show/export of huge sessions)."""
        ...

    def tail(self, name: str, k: int, roles: frozenset[str] | None = None) -> list[Message]: ...
    def get(self, name: str, seqs: Iterable[int]) -> dict[int, Message]: ...
    def snapshot(self, name: str, *, trash_id: str | None = None) -> Snapshot: ...
    def stream(self, name: str) -> SessionStream:
        """The header and, read as consumed, the messages of one consistent state (export)."""
        ...

    # writing (each one atomic)
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
        """Create ``name`` whole; the last three keep a migrated session's state exactly."""
        ...

    def create_many(self, sessions: Sequence[NewSession]) -> None:
        """Create each (name, header, messages) whole, as :meth:`create` would, at bulk cost.

        For ``import --from``: the backend shares what it can between them (one
        durability barrier and one lock of the namespace per group of sessions,
        one transaction). Each session is created whole or not at all, also when
        the process is killed; SessionExists (a name taken, or given twice) is
        raised before anything of its group is written. After another failure
        some of the sessions may exist, each one whole.
        """
        ...

    def append(
        self, name: str, make: MakeMessages, *, create: SessionHeader | None
    ) -> list[Message]: ...
    def drop(self, name: str, message_id: str | None = None) -> Message:
        """Remove one message (the last when no id); MessageNotFound when none matches."""
        ...

    def clear(self, name: str) -> list[int]:
        """Remove every message of ``name`` (never another's); return their seqs."""
        ...

    def update_header(
        self, name: str, patch: HeaderPatch, *, create: bool = False
    ) -> SessionHeader:
        """Apply ``patch`` without rewriting the messages; return the new header."""
        ...

    def fork(self, source: str, new: str, *, at: str | None, header: SessionHeader) -> None:
        """Copy ``source`` up to message ``at`` into ``new`` (fresh ids, same seqs, vectors too).

        ``header`` is the new session's; its ``parent_message`` is set to the id of the
        last message copied. MessageNotFound when ``at`` is not in ``source``.
        """
        ...

    def rename(self, old: str, new: str) -> None: ...

    def edit_messages(
        self,
        name: str,
        message: Callable[[Message], Message],
        header: Callable[[SessionHeader], SessionHeader],
        *,
        trash_id: str | None = None,
    ) -> bool:
        """Replace messages and header by what the two functions return, atomically.

        Called under the session's lock (row locks) for every message and once for
        the header; only what they change is written (ids and seqs are kept), and
        nothing at all when nothing changed (returns False). For ``scrub``.
        With ``trash_id`` the deleted session in that trash entry is edited (its
        deletion time and last activity kept, its derived index data dropped).
        """
        ...

    def scrub_residue(
        self, name: str, fix: TextFix, *, dry_run: bool, trash_id: str | None = None
    ) -> int:
        """Apply ``fix`` to what the store keeps of ``name`` beside its messages and
        header (the file backend: lines set aside as unreadable); return the matches."""
        ...

    def count_residue(
        self, name: str, count: Callable[[str], int], *, trash_id: str | None = None
    ) -> int:
        """Matches ``count`` finds anywhere ``name``'s data is kept, derived data too
        (the check after a scrub that nothing is left)."""
        ...

    # a small cache (what model servers reported), never the source of anything
    def read_facts(self) -> dict[str, object]: ...
    def write_facts(self, facts: Mapping[str, object]) -> None: ...

    # trash
    def delete(self, name: str, *, unless_active_since: int | None = None) -> str | None: ...
    def restore(self, name: str, trash_id: str | None = None) -> None: ...
    def purge(self, name: str, *, unless_active_since: int | None = None) -> bool: ...
    def purge_deleted(self, trash_id: str) -> None: ...

    def close(self) -> None: ...


class IndexHit(NamedTuple):
    """A message found by a vector store (``message`` filled in by the store)."""

    session: str
    seq: int
    distance: float | None  # cosine distance, None when found by keyword only
    message: Message
    sources: Mapping[str, Any] = {}  # per list: rank and score (hybrid)


class SearchFilter(NamedTuple):
    """Filters applied before the cut to k."""

    names: Sequence[str] | None = None  # None: every live session
    roles: frozenset[str] | None = None
    since: str | None = None  # ISO UTC, inclusive
    until: str | None = None  # ISO UTC, inclusive
    metadata: Mapping[str, Any] | None = None  # exact match, AND


class VectorStore(Protocol):
    """Message vectors (and, where supported, a keyword index), derived from the transcripts."""

    def catch_up(
        self,
        names: Sequence[str] | None,
        embedder: Embedder,
        *,
        progress: IndexProgress | None = None,
    ) -> list[tuple[str, SyncReport]]:
        """Embed what changed since the last catch-up (None: every live session)."""
        ...

    def search(
        self,
        query_vec: Any,
        embedder: Embedder,
        *,
        k: int,
        max_distance: float,
        where: SearchFilter | None = None,
        query_text: str | None = None,
        mode: str = "vector",
    ) -> list[IndexHit]:
        """Nearest messages, caught up first; sorted by distance, then session, then seq."""
        ...

    def rebuild(
        self,
        names: Sequence[str] | None,
        embedder: Embedder,
        *,
        progress: IndexProgress | None = None,
    ) -> list[tuple[str, SyncReport]]: ...

    def search_session(
        self,
        name: str,
        query_vec: Any,
        embedder: Embedder,
        *,
        k: int,
        max_distance: float,
        roles: frozenset[str] | None = None,
    ) -> list[IndexHit]:
        """The nearest messages of one session, caught up first; sorted by distance, then seq.

        With ``capabilities.session_indexes`` by that session's own index (the file
        backend's sidecar: a search of one session costs nothing per other session);
        otherwise the same as :meth:`search` with ``where.names=[name]``.
        SessionNotFound when ``name`` is gone; any other error concerns that session.
        """
        ...

    def rebuild_session(
        self, name: str, embedder: Embedder, *, progress: IndexProgress | None = None
    ) -> SyncReport:
        """Embed one session's vectors again from its transcript (``reindex NAME``).

        With ``capabilities.session_indexes`` this rebuilds that session's own index
        only; a :meth:`rebuild` of the names done afterwards carries its vectors into
        the store-wide index without embedding them again.
        """
        ...

    @property
    def skipped(self) -> AbstractSet[str]:
        """Sessions the last :meth:`search` could not read (each skipped with a warning)."""
        ...

    def text_search(
        self, query: str, *, k: int, where: SearchFilter | None = None
    ) -> list[IndexHit]:
        """Keyword (BM25) matches of ``query``, caught up first (``capabilities.keyword_search``).

        Sorted by score (best first), then session, then seq; ``distance`` is None
        and ``sources["text"]`` holds ``{"rank": 1-based, "score": BM25, higher better,
        "identifiers": how many of the query's identifier-like terms the text holds}``.
        Filters ``where.since``/``until``/``roles``/``names`` apply before the cut to k.
        """
        ...
