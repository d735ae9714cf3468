"""The store: every session under one home, and the operations across them."""

from __future__ import annotations

import binascii
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import sessionctl.service.session as session_module
from sessionctl.backend import open_backend
from sessionctl.backend.base import SessionHeader, SessionStore
from sessionctl.config import Settings, absolute_path, load_settings
from sessionctl.errors import SessionNotFound, UsageError
from sessionctl.ids import new_ulid
from sessionctl.models import Page, SessionInfo
from sessionctl.names import check_name
from sessionctl.service.session import Session
from sessionctl.timeutil import now_iso, parse_duration

if TYPE_CHECKING:
    from os import PathLike

    from sessionctl.redact import Redactor
    from sessionctl.service.timefilter import TimeWindow, When

Warn = Callable[[str], None]


class PruneReport(NamedTuple):
    """What ``prune`` removed (or would remove with ``dry_run``)."""

    sessions: list[SessionInfo]
    trash: list[SessionInfo]
    skipped: list[str]
    dry_run: bool
    purge: bool


class Store:
    """All sessions under one home directory.

    >>> store = Store("/tmp/example-home")            # doctest: +SKIP
    >>> store.session("work").store("hi", "hello!")   # doctest: +SKIP
    """

    def __init__(
        self,
        home: str | PathLike[str] | None = None,
        *,
        settings: Settings | None = None,
        warn: Warn | None = None,
    ) -> None:
        if settings is None:
            settings = load_settings(home=home) if home is not None else load_settings()
        elif home is not None:
            settings = settings.with_overrides(home=absolute_path(home))
        self.settings = settings
        self.home = settings.home
        self.warn: Warn = warn or _default_warn
        self.backend: SessionStore = open_backend(
            self.home, self.warn, store=settings.store, namespace=settings.namespace,
            hnsw=settings.pg_hnsw,
        )  # fmt: skip

    def __repr__(self) -> str:
        if self.settings.store:
            from sessionctl.config import redact_url

            return f"Store({redact_url(self.settings.store)!r})"
        return f"Store({str(self.home)!r})"

    def close(self) -> None:
        """Release what the backend holds (a database connection); the Store stays usable."""
        self.backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def redactor(self) -> Redactor | None:
        """The secret redaction applied to every write, or None when ``redact`` is off."""
        if not self.settings.redact:
            return None
        from sessionctl.redact import redactor  # only what writes needs it

        return redactor(self.settings.redact_patterns, self.settings.redact_allow)

    # -- sessions ------------------------------------------------------------
    def session(self, name: str) -> Session:
        """Return the session ``name`` (validated; created on first write)."""
        return Session(self, check_name(name))

    def __getitem__(self, name: str) -> Session:
        return self.session(name)

    def names(self, prefix: str = "") -> list[str]:
        """Live session names starting with ``prefix``, sorted (cheap: for completion)."""
        return self.backend.names_with_prefix(prefix)

    def user_sessions(self, user: str) -> list[str]:
        """Names of the live sessions belonging to ``user`` (header metadata ``user``),
        most recently active first; ``[]`` when there are none. One listing of the
        store (see :func:`sessionctl.service.users.user_sessions`)."""
        from sessionctl.service.users import user_sessions

        return user_sessions(self.backend, user)

    def existing(self, name: str) -> Session:
        """Return the live session ``name`` or raise SessionNotFound."""
        session = self.session(name)
        if not session.exists:
            raise SessionNotFound(f"no session named {name!r} (see `sessionctl list`)")
        return session

    def _new_header(self, name: str) -> SessionHeader:
        if not self.backend.exists(name) and any(
            i.name == name for i in self.backend.list_deleted(None)
        ):
            self.warn(
                f"session {name!r} is in the trash; starting a new session with that name"
                f" (the deleted one stays restorable under another name: `sessionctl restore`)"
            )
        now = now_iso()
        return SessionHeader(uid=new_ulid(), created_at=now, updated_at=now)

    def _create_empty(self, name: str) -> None:
        self.backend.append(name, lambda _seq: [], create=self._new_header(name))

    def has_data(self) -> bool:
        """Return False when nothing was ever written here (the home does not exist yet).

        An empty listing from a mistyped ``--home`` then differs from one of an
        empty store.
        """
        return self.backend.has_data()

    def most_recent(self) -> Session | None:
        """Return the most recently active live session, or None."""
        # By name and time only: the session itself is not read (it may be unreadable).
        names = self.backend.names()
        return Session(self, min(names, key=lambda e: (-e[1], e[0]))[0]) if names else None

    # -- listing -------------------------------------------------------------
    def list_sessions(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        deleted: bool = False,
        since: When | None = None,
        until: When | None = None,
        prefix: str = "",
        user: str | None = None,
    ) -> Page:
        """Return sessions newest activity first (ties by name), a page at a time.

        ``since``/``until`` (inclusive): only sessions whose activity, from creation
        to last activity, overlaps that window; ``prefix``: only names starting with it;
        ``user``: only that user's sessions (header metadata ``user``).
        """
        if limit is not None and (isinstance(limit, bool) or limit < 0):
            raise UsageError(f"limit must be 0 or more, got {limit}")
        window = None  # no time filter (what a plain `list` needs is imported alone)
        if since is not None or until is not None:
            from sessionctl.service.timefilter import time_window

            window = time_window(since, until)
        timed = window is not None and not window.open
        if user is not None:
            from sessionctl.service.users import check_user

            check_user(user)
        if deleted:
            if timed:
                raise UsageError("--since/--until list live sessions; not with --deleted")
            if prefix:
                raise UsageError("prefix= lists live sessions only, not with deleted=True")
            if user is not None:
                raise UsageError("--user lists live sessions; not with --deleted")
            return self._list_deleted(limit, cursor)
        after = None
        if cursor is not None:
            after = _decode_cursor(cursor, int)
        if timed or prefix or user is not None:
            from sessionctl.service.timefilter import time_window
            from sessionctl.service.users import owner

            span = window or time_window(None, None)

            def keep(info: SessionInfo) -> bool:
                return (
                    info.name.startswith(prefix)
                    and (user is None or owner(info.metadata) == user)
                    and span.overlaps(info.created_at, info.updated_at)
                )

            return self._list_where(keep, span, limit, after)
        # A page of 20 out of 10,000, and one more to know there is more.
        rows = self.backend.list_live(None if limit is None else limit + 1, after)
        page = rows if limit is None else rows[:limit]
        more = limit is not None and len(rows) > limit and limit > 0
        next_cursor = _encode_cursor(page[-1][1], page[-1][0].name) if more and page else None
        return Page([info for info, _ in page], next_cursor)

    def _list_where(
        self,
        keep: Callable[[SessionInfo], bool],
        window: TimeWindow,
        limit: int | None,
        after: tuple[int, str] | None,
    ) -> Page:
        """A page of the sessions ``keep`` keeps, read page by page from the backend's
        newest-first listing until it is full (or nothing is recent enough for
        ``window``)."""
        kept: list[tuple[SessionInfo, int]] = []
        want = None if limit is None else limit + 1
        batch = 100 if limit is None else max(limit + 1, 20)
        while want is None or len(kept) < want:
            rows = self.backend.list_live(batch, after)
            for info, when in rows:
                if keep(info):
                    kept.append((info, when))
            if len(rows) < batch:
                break
            last_info, last_when = rows[-1]
            after = (last_when, last_info.name)
            if window.since is not None and last_when < window.since.timestamp() * 1e9:
                break  # newest first: every session after this one was last active earlier
        page = kept if limit is None else kept[:limit]
        more = limit is not None and len(kept) > limit and limit > 0
        next_cursor = _encode_cursor(page[-1][1], page[-1][0].name) if more and page else None
        return Page([info for info, _ in page], next_cursor)

    def _list_deleted(self, limit: int | None, cursor: str | None) -> Page:
        after = _decode_cursor(cursor, str) if cursor is not None else None
        entries = self.backend.list_deleted(None if limit is None else limit + 1, after)
        page = entries if limit is None else entries[:limit]
        more = limit is not None and len(entries) > limit and limit > 0
        next_cursor = _encode_cursor(page[-1].trash_id, page[-1].name) if more and page else None
        return Page(page, next_cursor)

    # -- namespace operations --------------------------------------------------
    def delete(self, name: str, *, purge: bool = False) -> str | None:
        """Soft-delete ``name`` to the trash (return its trash id), or remove it for good."""
        check_name(name)
        if purge:
            self.backend.purge(name)
            return None
        return self.backend.delete(name)

    def restore(self, name: str, trash_id: str | None = None) -> Session:
        """Bring ``name`` back from the trash."""
        check_name(name)
        self.backend.restore(name, trash_id)
        return Session(self, name)

    def rename(self, old: str, new: str) -> Session:
        """Rename session ``old`` to ``new``."""
        check_name(old)
        check_name(new)
        self.backend.rename(old, new)
        return Session(self, new)

    def fork(self, source: str, new: str, *, at: str | None = None) -> Session:
        """Copy ``source`` (up to and including message ``at``) into the new session ``new``."""
        check_name(source)
        check_name(new)
        parent = self.backend.header(source)
        now = now_iso()
        header = SessionHeader(
            uid=new_ulid(),
            created_at=now,
            updated_at=now,
            model=parent.model,
            system=parent.system,
            metadata=dict(parent.metadata),
            parent=source,
        )
        self.backend.fork(source, new, at=at, header=header)  # vectors too
        return Session(self, new)

    # -- semantic memory -----------------------------------------------------------
    def get_relevant(
        self,
        prompt: str,
        *,
        sessions: Sequence[str] | None = None,
        top_k: int = 5,
        distance_threshold: float | None = None,
        fall_back: bool = False,
        as_text: bool = False,
        raw: bool = False,
        role: str | Iterable[str] | None = None,
        mode: str = "hybrid",
        since: When | None = None,
        until: When | None = None,
        meta: Mapping[str, Any] | None = None,
        model: str | None = None,
        user: str | None = None,
    ) -> list[dict[str, Any]] | list[str]:
        """Messages matching ``prompt`` across ``sessions`` (default: all live).

        ``user``: only sessions of that user (of ``sessions``, when given): a
        session-level restriction, fall-back included (it falls back to the user's
        most recently active session); a message's own metadata plays no part.

        ``mode``: "hybrid" (default: by meaning and by words, fused), "vector"
        (by meaning, cosine distance ≤ threshold) or "text" (keywords, BM25).
        ``since``/``until`` (inclusive): only messages created in that window (a
        duration ago such as ``"7d"``, an ISO timestamp or date, a datetime/date),
        applied before the cut to ``top_k``, as are ``meta`` (every key with its exact
        JSON value, on the message or else on its session) and ``model`` (the model
        that answered, or the session's for a message naming none).
        Each dict carries ``session``, ``distance`` (None when not found by
        meaning) and ``sources`` (per list: rank and distance or score).
        """
        from sessionctl.service.memory import search
        from sessionctl.service.timefilter import criteria

        hits = search(
            self,
            prompt,
            sessions=sessions,
            top_k=top_k,
            distance_threshold=distance_threshold,
            fall_back=fall_back,
            role=role,
            mode=mode,
            where=criteria(since, until, meta=meta, model=model),
            user=user,
        )
        if as_text:
            return [h.message.content for h in hits]
        return [h.to_dict(raw=raw) for h in hits]

    def reindex(
        self,
        names: Sequence[str] | None = None,
        *,
        model: str | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        sessions_done: Callable[[int, int], None] | None = None,
    ) -> list[tuple[str, Any]]:
        """Rebuild the semantic index of ``names`` (default: every live session).

        ``progress(name, done, total)`` reports messages embedded in the current
        session, ``sessions_done(done, total)`` sessions finished (0 first).
        """
        from sessionctl.service.memory import reindex

        return reindex(self, names, model=model, progress=progress, sessions_done=sessions_done)

    def scrub(
        self,
        names: Sequence[str] | None = None,
        *,
        pattern: str | None = None,
        literal: str | None = None,
        secrets: bool = False,
        dry_run: bool = False,
        trash: bool = False,
    ) -> Any:
        """Remove a regex ``pattern``, a ``literal`` or every known secret (``secrets``)
        from ``names`` (default: every live session; ``trash`` adds their deleted copies,
        or the whole trash), as ``sessionctl scrub``; returns a ``ScrubReport`` whose
        ``verified`` is False when a fresh read still finds a match."""
        from sessionctl.service.scrub import scrub

        return scrub(
            self,
            names,
            pattern=pattern,
            literal=literal,
            secrets=secrets,
            dry_run=dry_run,
            trash=trash,
        )

    def prune(
        self,
        older_than: str | timedelta,
        *,
        dry_run: bool = False,
        purge: bool = False,
        now: float | None = None,
    ) -> PruneReport:
        """Remove sessions with no activity for ``older_than`` (to the trash, or for good).

        With ``purge`` it also empties trash entries deleted longer ago than that.
        Activity is re-checked under each session's lock, so a session written to
        while prune runs is skipped, never removed.
        """
        try:
            age = parse_duration(older_than) if isinstance(older_than, str) else older_than
        except OverflowError:  # more days than a timedelta holds
            raise UsageError(f"invalid duration {older_than!r}: too long") from None
        if age.total_seconds() <= 0:
            raise UsageError("older_than must be greater than zero")
        cutoff_ns = int(((time.time() if now is None else now) - age.total_seconds()) * 1e9)
        stale = self.backend.stale(cutoff_ns)
        removed: list[SessionInfo] = []
        skipped: list[str] = []
        for name, _ in stale:
            try:
                # The listing's time is a hint; the backend's own check (the later
                # of the activity log and the transcript) decides, in a dry run too,
                # so that it lists exactly what the real run removes.
                if self.backend.last_activity(name) > cutoff_ns:
                    continue
                info = self.backend.info(name)
            except SessionNotFound:
                continue
            if dry_run:
                removed.append(info)
                continue
            try:
                done = (
                    self.backend.purge(name, unless_active_since=cutoff_ns)
                    if purge
                    else self.backend.delete(name, unless_active_since=cutoff_ns) is not None
                )
            except SessionNotFound:
                continue
            (removed.append(info) if done else skipped.append(name))
        trash: list[SessionInfo] = []
        if purge:
            try:
                cutoff_iso = _iso_from_ns(cutoff_ns)
            except (ValueError, OverflowError, OSError):  # before year 1: nothing is older
                cutoff_iso = ""
            for entry in self.backend.list_deleted(None):
                if entry.deleted_at and entry.deleted_at <= cutoff_iso and entry.trash_id:
                    if not dry_run:
                        try:
                            self.backend.purge_deleted(entry.trash_id)
                        except SessionNotFound:
                            continue
                    trash.append(entry)
        return PruneReport(removed, trash, skipped, dry_run, purge)

    # -- whole-session transfer ----------------------------------------------------
    def from_dict(self, data: Mapping[str, Any] | list[Any], *, name: str | None = None) -> Session:
        """Create a session from ``Session.to_dict()`` data (or an OpenAI messages list)."""
        from sessionctl.service.transfer import create_from_dict

        return create_from_dict(self, data, name=name)


def _default_warn(message: str) -> None:
    import logging

    logging.getLogger("sessionctl").warning(message)


def _iso_from_ns(ns: int) -> str:
    from sessionctl.timeutil import from_epoch_ns

    return from_epoch_ns(ns)


# URL-safe base64 through binascii: the base64 module costs 1 ms of start-up.
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _encode_cursor(position: Any, name: str) -> str:
    text = json.dumps([position, name], separators=(",", ":"))
    encoded = binascii.b2a_base64(text.encode(), newline=False).translate(_TO_URLSAFE)
    return encoded.decode().rstrip("=")


def _decode_cursor(cursor: str, kind: type) -> tuple[Any, str]:
    try:
        padded = (cursor + "=" * (-len(cursor) % 4)).encode().translate(_FROM_URLSAFE)
        text = binascii.a2b_base64(padded).decode()
        position, name = json.loads(text)
        if type(position) is kind and isinstance(name, str):
            return position, name
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        pass
    raise UsageError(f"invalid cursor {cursor!r}: pass a next_cursor value printed by `list`")


session_module.default_store = Store  # Session.from_dict() without a store: the default one
