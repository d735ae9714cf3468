"""Semantic memory: search the sessions by meaning and by their words, and reindex them.

The transcript is the source of truth. Appends never wait for embedding; the
backend's vector store catches up (only what changed) when something needs it:
``relevant``, chat context, ``reindex``. A missing, stale, corrupt or
other-model index is rebuilt with one warning; the command still succeeds.
Everything here goes through the two interfaces of ``backend/base.py``: one
session is searched by ``search_session`` (its own index where the backend
keeps one), several by the store-wide ``search``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from sessionctl.errors import SessionctlError, SessionNotFound, StoreError, UsageError
from sessionctl.models import Message

if TYPE_CHECKING:
    from sessionctl.backend.base import SessionHeader
    from sessionctl.embed import Embedder
    from sessionctl.index import SyncReport
    from sessionctl.service.store import Store
    from sessionctl.service.timefilter import Criteria

Progress = Callable[[str, int, int], None]


class Hit(NamedTuple):
    """A message found by meaning and/or by its words.

    ``distance`` is the cosine distance when the vector side found it (None for
    keyword-only hits and fall-back results); ``sources`` says which lists found
    it: ``{"vector": {"rank", "distance"}, "text": {"rank", "score"}}`` (ranks
    1-based; in hybrid mode also ``"fused"``: the reciprocal-rank-fusion score).
    """

    session: str
    message: Message
    distance: float | None
    sources: dict[str, Any] = {}  # noqa: RUF012 - NamedTuple default, never mutated

    def to_dict(self, *, raw: bool = False) -> dict[str, Any]:
        """The message's JSON shape plus ``session``, ``distance`` and ``sources``."""
        return {
            **self.message.to_dict(raw=raw),
            "session": self.session,
            "distance": self.distance,
            "sources": self.sources,
        }


MODES = ("hybrid", "vector", "text")
RRF_K = 60  # reciprocal rank fusion: 1 / (RRF_K + rank) per list (Cormack et al., 2009)
CANDIDATES = 50  # at least this many candidates per list before fusing


def check_mode(mode: str) -> str:
    """Return a valid search mode or raise UsageError."""
    if mode not in MODES:
        raise UsageError(f"search mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def check_threshold(value: float | None) -> float | None:
    """Return a valid cosine-distance threshold (0..2) or raise UsageError."""
    if value is None:
        return None
    if not isinstance(value, (int, float)) or value != value or not 0 <= value <= 2:
        raise UsageError(
            f"distance threshold must be a number from 0 to 2 (cosine distance), got {value!r}"
        )
    return float(value)


def embedder_for(store: Store, *, model: str | None = None, threads: int = 1) -> Embedder:
    """Return the configured embedding model (the default ships with sessionctl)."""
    from sessionctl.embed import get_embedder

    name = model or store.settings.embedding_model
    return get_embedder(name, threads=threads, api_base=store.settings.api_base)


def search(
    store: Store,
    prompt: str,
    *,
    sessions: Sequence[str] | None = None,
    top_k: int = 5,
    distance_threshold: float | None = None,
    fall_back: bool = False,
    role: str | Iterable[str] | None = None,
    mode: str = "hybrid",
    where: Criteria | None = None,
    user: str | None = None,
) -> list[Hit]:
    """Messages matching ``prompt``, across ``sessions`` (default: all live).

    ``sessions=[]`` searches no session at all (and falls back to none).
    ``where``: only messages it keeps (time window, metadata, model; see
    :func:`_search_within`). ``user``: only sessions of that user (see
    :func:`_search_of_user`).

    ``mode`` "vector": nearest in meaning (below); "text": keyword matches by
    BM25, best first; "hybrid" (default): the union of both candidate lists,
    fused by reciprocal rank fusion, a message holding the query verbatim first
    (see :func:`_fuse`). The distance threshold filters the vector side only:
    a keyword match is kept in hybrid mode however far it is in meaning.
    """
    check_mode(mode)
    if user is not None:
        return _search_of_user(store, prompt, user, sessions=sessions, top_k=top_k,
                               distance_threshold=distance_threshold, fall_back=fall_back,
                               role=role, mode=mode, where=where)  # fmt: skip
    if where is not None and not where.open:
        return _search_within(store, prompt, where, sessions=sessions, top_k=top_k,
                              distance_threshold=distance_threshold, fall_back=fall_back,
                              role=role, mode=mode)  # fmt: skip
    if mode == "vector":
        return _vector_search(store, prompt, sessions=sessions, top_k=top_k,
                              distance_threshold=distance_threshold, fall_back=fall_back,
                              role=role)  # fmt: skip
    roles, names = _checked(store, sessions, top_k, distance_threshold, role)
    if top_k == 0:
        return []
    depth = max(CANDIDATES, 4 * top_k)
    text = _text_search(store, prompt, names, roles, depth, required=mode == "text")
    if mode == "text":
        found = text[:top_k]
    else:
        vector = _vector_search(store, prompt, sessions=sessions, top_k=depth,
                                distance_threshold=distance_threshold, role=role)  # fmt: skip
        found = _fuse(prompt, vector, text)[:top_k]
    if found or not fall_back:
        return found
    # Nothing by either list: the vector search's fall-back (it knows what it skipped).
    return _vector_search(store, prompt, sessions=sessions, top_k=top_k,
                          distance_threshold=distance_threshold, fall_back=True,
                          role=role)  # fmt: skip


def _search_of_user(
    store: Store,
    prompt: str,
    user: str,
    *,
    sessions: Sequence[str] | None,
    top_k: int,
    distance_threshold: float | None,
    fall_back: bool,
    role: str | Iterable[str] | None,
    mode: str,
    where: Criteria | None,
) -> list[Hit]:
    """:func:`search` over ``user``'s sessions only (of ``sessions``, when given).

    A session-level restriction: the search runs over those sessions' names, so
    nothing of another user's session can come back, whatever a message's own
    metadata says. Named sessions must exist (as without ``user``); those of other
    users are left out. The fall-back is that of the sessions searched; without
    ``sessions`` it is the user's most recently active session, as without ``user``
    it is the store's.
    """
    from sessionctl.service.users import check_user

    check_user(user)
    named = None if sessions is None else list(dict.fromkeys(sessions))
    for name in named or ():
        store.existing(name)

    def run(targets: list[str], fall: bool) -> list[Hit]:
        return search(store, prompt, sessions=targets, top_k=top_k,
                      distance_threshold=distance_threshold, fall_back=fall, role=role,
                      mode=mode, where=where)  # fmt: skip

    for attempt in range(5):
        mine = store.user_sessions(user)  # most recently active first
        names = mine if named is None else [n for n in named if n in set(mine)]
        try:
            if named is not None or len(names) <= 1:
                return run(names, fall_back)
            found = run(names, False)
            if found or not fall_back:
                return found
            return run(names[:1], True)  # nothing anywhere: the user's latest session's
        except SessionNotFound:
            # One of them was deleted or renamed since the listing: list them again
            # (a session named by the caller that is gone fails, as without a user).
            if attempt == 4 or any(not store.backend.exists(n) for n in named or ()):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _search_within(
    store: Store,
    prompt: str,
    where: Criteria,
    *,
    sessions: Sequence[str] | None,
    top_k: int,
    distance_threshold: float | None,
    fall_back: bool,
    role: str | Iterable[str] | None,
    mode: str,
) -> list[Hit]:
    """:func:`search` restricted to the messages ``where`` keeps.

    The criteria apply to each list before the cut to k (and before fusing, so
    ranks count only messages kept): each list is fetched deeper and deeper (x4)
    until k of its messages are kept or it has nothing more, so k results come
    back whenever k qualify. The fall-back is the recent messages kept.
    """
    roles, names = _checked(store, sessions, top_k, distance_threshold, role)
    if top_k == 0:
        return []
    keep = where.bind(lambda name: _header_or_none(store, name))

    def vector(depth: int) -> list[Hit]:
        return _vector_search(store, prompt, sessions=sessions, top_k=depth,
                              distance_threshold=distance_threshold, role=role)  # fmt: skip

    def text(depth: int) -> list[Hit]:
        return _text_search(store, prompt, names, roles, depth, required=mode == "text")

    if mode == "vector":
        found = _ranked(_within(vector, keep, top_k))
    elif mode == "text":
        found = [
            h._replace(sources={"text": {**h.sources["text"], "rank": i}})
            for i, h in enumerate(_within(text, keep, top_k), 1)
        ]
    else:
        depth = max(CANDIDATES, 4 * top_k)
        found = _fuse(prompt, _within(vector, keep, depth), _within(text, keep, depth))
        found = found[:top_k]
    if found or not fall_back:
        return found
    if sessions is None:
        latest = store.most_recent()
        targets = [] if latest is None else [latest.name]
    else:
        targets = list(dict.fromkeys(sessions))
    hits: list[Hit] = []
    for name in targets:
        kept: collections.deque[Message] = collections.deque(maxlen=top_k)
        for m in store.session(name).iter_messages():
            if (roles is None or m.role in roles) and keep(name, m):
                kept.append(m)
        hits += [Hit(name, m, None) for m in kept]
    return hits


def _header_or_none(store: Store, name: str) -> SessionHeader | None:
    try:
        return store.backend.header(name)
    except SessionNotFound:
        return None


def _checked(
    store: Store,
    sessions: Sequence[str] | None,
    top_k: int,
    distance_threshold: float | None,
    role: str | Iterable[str] | None,
) -> tuple[frozenset[str] | None, list[str] | None]:
    """The roles and the (deduplicated, existing) session names of a search, checked
    before any work: a bad argument or an unknown session fails first."""
    from sessionctl.service.checks import check_top_k, roles_filter

    check_top_k(top_k)
    check_threshold(distance_threshold)
    roles = roles_filter(role)
    names: list[str] | None = None
    if sessions is not None:
        names = list(dict.fromkeys(sessions))
        for name in names:
            store.existing(name)
    return roles, names


def _within(
    fetch: Callable[[int], list[Hit]], keep: Callable[[str, Message], bool], k: int
) -> list[Hit]:
    """The first ``k`` hits of ``fetch(depth)`` that ``keep`` keeps, fetching deeper as needed.

    Each deeper fetch goes as deep as the share kept so far says k needs (with a
    quarter more), at least twice as deep; x8 while nothing was kept. Every fetch
    starts from the top, so few of them matter more than a tight depth.
    """
    depth = max(k, 1)
    while True:
        hits = fetch(depth)
        kept = [h for h in hits if keep(h.session, h.message)]
        if len(kept) >= k or len(hits) < depth:
            return kept[:k]
        if kept:
            depth = max(2 * depth, depth * k * 5 // (4 * len(kept)) + 1)
        else:
            depth *= 8


def _text_search(
    store: Store,
    prompt: str,
    names: list[str] | None,
    roles: frozenset[str] | None,
    depth: int,
    *,
    required: bool,
) -> list[Hit]:
    """The keyword list (empty, with a warning, when the backend has none or it failed)."""
    from sessionctl.backend.base import SearchFilter

    if not store.backend.capabilities.keyword_search:
        if required:
            raise UsageError("this store has no keyword index: use --mode vector")
        return []
    try:
        hits = store.backend.vectors.text_search(
            prompt, k=depth, where=SearchFilter(names=names, roles=roles)
        )
    except StoreError as exc:
        if required:
            raise
        store.warn(f"keyword index: {exc}; searching by meaning only")
        return []
    return [Hit(h.session, h.message, None, {"text": dict(h.sources["text"])}) for h in hits]


def _fuse(prompt: str, vector: list[Hit], text: list[Hit]) -> list[Hit]:
    """Reciprocal rank fusion of the two lists (each already best first).

    score = sum over the lists that found a message of 1 / (RRF_K + rank). A
    message containing the whole query verbatim (case and spacing aside) ranks
    before every other, then messages by how many of the query's identifiers
    (``ERR_E4471``, ``user-123``, ``QZ-9981``: what vectors cannot see) they hold;
    ties by session, then seq.
    """
    merged: dict[tuple[str, int], tuple[Message, float | None, dict[str, Any]]] = {}
    for kind, hits in (("vector", vector), ("text", text)):
        for rank, hit in enumerate(hits, 1):
            key = (hit.session, hit.message.seq)
            message, distance, sources = merged.get(key, (hit.message, None, {}))
            if kind == "vector":
                distance = hit.distance
                sources["vector"] = {"rank": rank, "distance": hit.distance}
            else:
                sources["text"] = {**hit.sources["text"], "rank": rank}
            merged[key] = (message, distance, sources)
    phrase = " ".join(prompt.casefold().split())
    scored: list[tuple[bool, int, float, str, int, Hit]] = []
    for (session, seq), (message, distance, sources) in merged.items():
        fused = sum(1.0 / (RRF_K + s["rank"]) for s in sources.values())
        sources["fused"] = round(fused, 6)
        exact = bool(phrase) and phrase in " ".join(message.content.casefold().split())
        sources["exact"] = exact
        ids = int(sources.get("text", {}).get("identifiers", 0))
        hit = Hit(session, message, distance, sources)
        scored.append((not exact, -ids, -fused, session, seq, hit))
    scored.sort(key=lambda t: t[:5])
    return [t[5] for t in scored]


def _vector_search(
    store: Store,
    prompt: str,
    *,
    sessions: Sequence[str] | None = None,
    top_k: int = 5,
    distance_threshold: float | None = None,
    fall_back: bool = False,
    role: str | Iterable[str] | None = None,
) -> list[Hit]:
    """Messages nearest in meaning to ``prompt``, across ``sessions`` (default: all live).

    Kept when cosine distance ≤ the threshold (inclusive); sorted by distance,
    ties by session then seq. With ``fall_back``, when nothing is close
    enough: the recent messages of the sessions asked about (without
    ``sessions``: of the most recently active session) — never another's.
    """
    from sessionctl.index import merge_hits

    roles, asked = _checked(store, sessions, top_k, distance_threshold, role)
    threshold = check_threshold(distance_threshold)
    names = asked if asked is not None else [n for n, _ in store.backend.names()]
    if top_k == 0 or not names:
        return []
    embedder = embedder_for(store)
    if threshold is None:
        threshold = embedder.default_distance_threshold
    query = embedder.embed([prompt])[0]
    if sessions is None or len(names) > 1 or not store.backend.capabilities.session_indexes:
        wide = _store_wide(store, None if sessions is None else names, embedder, query,
                           top_k, threshold, roles)  # fmt: skip
        if wide is not None:
            if wide or not fall_back:
                return wide
            return _fall_back(store, sessions, top_k, roles, set(store.backend.vectors.skipped))
    per_session: dict[str, list[tuple[int, float]]] = {}
    by_seq: dict[str, dict[int, Message]] = {}
    skipped: set[str] = set()
    for name in sorted(names):
        try:
            found_here = store.backend.vectors.search_session(
                name, query, embedder, k=top_k, max_distance=threshold, roles=roles
            )
        except SessionNotFound:
            continue  # deleted or renamed while we searched
        except Exception as exc:
            if sessions is not None or not _isolable(exc):
                raise
            # One session that cannot be read must not fail a search over the others.
            store.warn(skip_warning(name, exc, "searched"))
            skipped.add(name)
            continue
        per_session[name] = [(h.seq, h.distance) for h in found_here if h.distance is not None]
        by_seq[name] = {h.seq: h.message for h in found_here}
    found = _ranked(
        [
            Hit(name, by_seq[name][seq], distance)
            for name, seq, distance in merge_hits(per_session, top_k)
        ]
    )
    if found or not fall_back:
        return found
    return _fall_back(store, sessions, top_k, roles, skipped)


def _ranked(hits: list[Hit]) -> list[Hit]:
    """The vector list with each hit's rank and distance in ``sources``."""
    return [
        h._replace(sources={"vector": {"rank": i, "distance": h.distance}})
        for i, h in enumerate(hits, 1)
    ]


def _isolable(exc: Exception) -> bool:
    """True for a failure of one session's data, not of the whole command.

    The embedding model, the provider, a bad argument or Ctrl-C concern every
    session alike: those still fail the command. Anything else (an unreadable
    transcript, an I/O error, a bug tripped by one file's contents) is that
    session's alone.
    """
    return isinstance(exc, StoreError) or not isinstance(exc, (SessionctlError, MemoryError))


def skip_warning(name: str, exc: Exception, others: str) -> str:
    """One line: which session was skipped, why, and what to do about it."""
    if isinstance(exc, SessionctlError):
        why = str(exc)
    else:  # not ours: say what it was, so that it can be reported
        why = f"internal error {type(exc).__name__}: {exc}"
    return (
        f"session {name!r} skipped: {why}; the others were {others} "
        f"(once that is fixed, run: sessionctl reindex {name})"
    )


def _store_wide(
    store: Store,
    names: list[str] | None,
    embedder: Embedder,
    query: Any,
    top_k: int,
    threshold: float,
    roles: frozenset[str] | None,
) -> list[Hit] | None:
    """Search the backend's store-wide index; None when it cannot be used here (read-only
    home): the caller then searches session by session."""
    from sessionctl.backend.base import SearchFilter
    from sessionctl.errors import IndexNotWritable

    try:
        hits = store.backend.vectors.search(
            query,
            embedder,
            k=top_k,
            max_distance=threshold,
            where=SearchFilter(names=names, roles=roles),
        )
    except IndexNotWritable as exc:
        store.warn(f"{exc}; searching session by session")
        return None
    except StoreError as exc:
        if names is not None or not store.backend.capabilities.session_indexes:
            raise
        store.warn(f"semantic index: {exc}; searching session by session")
        return None
    return _ranked([Hit(h.session, h.message, h.distance) for h in hits])


def _fall_back(
    store: Store,
    sessions: Sequence[str] | None,
    top_k: int,
    roles: frozenset[str] | None,
    skipped: set[str],
) -> list[Hit]:
    if sessions is None:
        latest = store.most_recent()
        targets = [latest.name] if latest is not None and latest.name not in skipped else []
    else:
        targets = list(dict.fromkeys(sessions))
    hits: list[Hit] = []
    for name in targets:
        hits += [Hit(name, m, None) for m in store.backend.tail(name, top_k, roles)]
    return hits


def reindex(
    store: Store,
    names: Sequence[str] | None,
    *,
    model: str | None = None,
    progress: Progress | None = None,
    sessions_done: Callable[[int, int], None] | None = None,
) -> list[tuple[str, SyncReport]]:
    """Rebuild the indexes of ``names`` (default: every live session) from their transcripts.

    Every live session (``names`` None) is a best effort. A session deleted or
    renamed meanwhile is skipped with a warning; after the pass, sessions that
    appeared meanwhile (a renamed one's new name) are reindexed too, once. One
    that cannot be read is skipped with a warning and, once all the others are
    done, StoreError names it.

    ``progress(name, done, total)`` follows the messages of the session being
    embedded; ``sessions_done(done, total)`` is called with 0 before the first
    session and after each one (for one overall progress bar).
    """
    every = names is None
    targets = sorted(n for n, _ in store.backend.names()) if every else list(names or ())
    if not every:
        for name in targets:
            store.existing(name)
    from sessionctl.embed import all_cores

    embedder = embedder_for(store, model=model, threads=all_cores())
    if not store.backend.capabilities.session_indexes:  # one index for the store: rebuild it
        if sessions_done is not None:
            sessions_done(0, len(targets))
        rebuilt = store.backend.vectors.rebuild(None if every else targets, embedder,
                                             progress=progress)  # fmt: skip
        if sessions_done is not None:
            sessions_done(len(targets), len(targets))
        return rebuilt
    reports: list[tuple[str, SyncReport]] = []
    failed: list[str] = []
    seen = set(targets)
    total, finished = len(targets), 0
    if sessions_done is not None:
        sessions_done(0, total)
    for pass_ in range(2):
        vanished = False
        for name in targets:
            try:
                reports.append((name, _reindex_one(store, name, embedder, progress)))
            except SessionNotFound:
                if not every:
                    raise
                store.warn(f"session {name!r} was deleted or renamed during reindex; skipped")
                vanished = True
            except Exception as exc:
                if not every or not _isolable(exc):
                    raise
                store.warn(skip_warning(name, exc, "reindexed"))
                failed.append(name)
            finished += 1
            if sessions_done is not None:
                sessions_done(finished, total)
        if not vanished or pass_:
            break
        # What vanished may live on under a new name: one more pass, over the newcomers.
        targets = sorted(n for n, _ in store.backend.names() if n not in seen)
        seen.update(targets)
        total += len(targets)
    done = [name for name, _ in reports]
    if done:
        # The store-wide index takes the vectors just rebuilt (nothing embedded twice).
        try:
            store.backend.vectors.rebuild(done, embedder)
        except StoreError as exc:
            store.warn(f"store-wide semantic index not rebuilt: {exc}")
    if failed:
        raise StoreError(
            f"reindexed {len(reports)} session(s); could not reindex {len(failed)}: "
            f"{', '.join(failed)} (see the warnings above)"
        )
    return reports


def _reindex_one(
    store: Store, name: str, embedder: Embedder, progress: Progress | None
) -> SyncReport:
    store.existing(name)
    return store.backend.vectors.rebuild_session(name, embedder, progress=progress)
