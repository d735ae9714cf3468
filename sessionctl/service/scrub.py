"""``scrub``: remove a literal, a pattern or every known secret shape from stored
sessions, rebuild their index from the scrubbed text, then prove none remains.

Each session is one atomic edit (``SessionStore.edit_messages``: in the file
backend the rewrite ``drop ID`` and ``clear`` take), so a kill leaves every
session either scrubbed or untouched.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from sessionctl.errors import StoreError, UsageError
from sessionctl.models import Message
from sessionctl.redact import COUNT_KEY, MARK, merge_counts, redactor

if TYPE_CHECKING:
    from sessionctl.backend.base import SessionHeader
    from sessionctl.service.store import Store

SCRUB_KIND = "scrubbed"


class SessionScrub(NamedTuple):
    """One session's figures: matches removed (or found, in a dry run) and left after."""

    session: str
    messages: int  # messages changed
    matches: int  # matches removed from messages, the system prompt and set-aside lines
    remaining: int  # matches a fresh read (and a grep of the session's files) still finds
    trash_id: str | None = None  # set for a deleted session (scrub --trash)


class ScrubReport(NamedTuple):
    sessions: list[SessionScrub]
    dry_run: bool

    @property
    def verified(self) -> bool:
        """True when no scrubbed session holds a match any more."""
        return self.dry_run or all(s.remaining == 0 for s in self.sessions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "verified": self.verified,
            "sessions": [s._asdict() for s in self.sessions],
            "matches": sum(s.matches for s in self.sessions),
        }


class Matcher(NamedTuple):
    """Replace matches in a text: returns the new text and how many were replaced."""

    fix: Callable[[str], tuple[str, int]]
    kind: Callable[[str], dict[str, int]]


def matcher(*, pattern: str | None, literal: str | None, secrets: bool, store: Store) -> Matcher:
    """Build the one matcher chosen (exactly one of pattern, literal, secrets)."""
    chosen = [
        n
        for n, on in (
            ("--pattern", pattern is not None),
            ("--literal", literal is not None),
            ("--secrets", secrets),
        )
        if on
    ]
    if len(chosen) != 1:
        raise UsageError(
            "choose exactly one of --pattern RE, --literal TEXT, --secrets"
            + (f" (got {', '.join(chosen)})" if chosen else "")
        )
    if secrets:
        settings = store.settings
        found = redactor(settings.redact_patterns, settings.redact_allow)

        def fix_secrets(text: str) -> tuple[str, int]:
            result = found.text(text)
            return result.text, sum(result.counts.values())

        return Matcher(fix_secrets, lambda text: found.text(text).counts)
    if literal is not None:
        if not literal:
            raise UsageError("--literal needs a non-empty text")
        regex = re.compile(re.escape(literal))
    else:
        assert pattern is not None
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise UsageError(f"invalid --pattern {pattern!r}: {exc}") from None
        if regex.search(""):
            raise UsageError(f"--pattern {pattern!r} matches the empty text: make it specific")
    mark = MARK.format(kind=SCRUB_KIND)
    replacement = "" if regex.search(mark) else mark  # the mark must not match again

    def fix(text: str) -> tuple[str, int]:
        return regex.subn(lambda _m: replacement, text)

    def kinds(text: str) -> dict[str, int]:
        n = len(regex.findall(text))
        return {SCRUB_KIND: n} if n else {}

    return Matcher(fix, kinds)


def _value(m: Matcher, value: Any, counts: dict[str, int]) -> Any:
    if isinstance(value, str):
        found = m.kind(value)
        if not found:
            return value
        for kind, n in found.items():
            counts[kind] = counts.get(kind, 0) + n
        return m.fix(value)[0]
    if isinstance(value, dict):
        return {k: (v if k == COUNT_KEY else _value(m, v, counts)) for k, v in value.items()}
    if isinstance(value, list):
        return [_value(m, v, counts) for v in value]
    return value


def scrub_message(m: Matcher, message: Message) -> tuple[Message, int]:
    """Return ``message`` with every match replaced (counted in its metadata) and how many."""
    counts: dict[str, int] = {}
    content = _value(m, message.content, counts)
    tool_calls = _value(m, message.tool_calls, counts)
    metadata = _value(m, message.metadata, counts)
    if not counts:
        return message, 0
    changed = message._replace(
        content=content, tool_calls=tool_calls, metadata=merge_counts(metadata, counts)
    )
    return changed, sum(counts.values())


def _count(m: Matcher, text: str) -> int:
    return sum(m.kind(text).values())


def _remaining(store: Store, m: Matcher, name: str, trash_id: str | None) -> int:
    snap = store.backend.snapshot(name, trash_id=trash_id)
    left = sum(_count(m, text) for text in _texts(snap.header, snap.messages))
    return left + store.backend.count_residue(name, lambda text: _count(m, text), trash_id=trash_id)


def _texts(header: SessionHeader, messages: Sequence[Message]) -> list[str]:
    import json

    out = [header.system or "", json.dumps(header.metadata, ensure_ascii=False)]
    for msg in messages:
        out.append(msg.content)
        for extra in (msg.tool_calls, msg.metadata):
            if extra is not None:
                out.append(json.dumps(extra, ensure_ascii=False))
    return out


def _targets(
    store: Store, names: Sequence[str] | None, trash: bool
) -> list[tuple[str, str | None]]:
    """(name, trash id or None) for each session to scrub: the live ones, then, with
    ``trash``, the deleted ones of the same names (every one when ``names`` is None)."""
    deleted = (
        [(i.name, i.trash_id) for i in store.backend.list_deleted(None) if i.trash_id]
        if trash
        else []
    )
    if names is None:
        live = sorted(n for n, _ in store.backend.names())
    else:
        wanted = list(dict.fromkeys(names))
        in_trash = {n for n, _ in deleted}
        for name in wanted:
            if name not in in_trash:
                store.existing(name)  # SessionNotFound, with a suggestion
        live = [n for n in wanted if store.backend.exists(n)]
        deleted = [d for d in deleted if d[0] in wanted]
    return [(n, None) for n in live] + [(n, t) for n, t in deleted]


def scrub(
    store: Store,
    names: Sequence[str] | None,
    *,
    pattern: str | None = None,
    literal: str | None = None,
    secrets: bool = False,
    dry_run: bool = False,
    trash: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ScrubReport:
    """Scrub ``names`` (None: every live session; with ``trash`` the deleted sessions of
    those names too, or every one); return per-session figures.

    Sessions without a match are not rewritten. Live ones that had one are
    reindexed from their scrubbed transcripts (deleted ones lose their derived
    index data, which a restore rebuilds); all are then verified by a fresh read.
    """
    m = matcher(pattern=pattern, literal=literal, secrets=secrets, store=store)
    targets = _targets(store, names, trash)
    results: list[SessionScrub] = []
    touched: list[tuple[str, str | None]] = []
    for name, trash_id in targets:
        if progress is not None:
            progress(name)
        changed = 0
        found = 0

        def fix_message(msg: Message) -> Message:
            nonlocal changed, found
            fixed, n = scrub_message(m, msg)
            if n:
                changed += 1
                found += n
            return fixed

        def fix_header(header: SessionHeader) -> SessionHeader:
            nonlocal found
            system = header.system
            if system:
                system, n = m.fix(system)
                found += n
            metadata_counts: dict[str, int] = {}
            metadata = _value(m, header.metadata, metadata_counts)
            found += sum(metadata_counts.values())
            return header._replace(system=system, metadata=metadata)

        snap = store.backend.snapshot(name, trash_id=trash_id)
        if dry_run:
            for msg in snap.messages:
                fix_message(msg)
            fix_header(snap.header)
        elif any(_count(m, text) for text in _texts(snap.header, snap.messages)):
            # Counted again as it is edited (under the lock): the figures are those of
            # what is written, even when a writer came in between.
            changed = found = 0
            store.backend.edit_messages(name, fix_message, fix_header, trash_id=trash_id)
        found += store.backend.scrub_residue(name, m.fix, dry_run=dry_run, trash_id=trash_id)
        if found and not dry_run:
            touched.append((name, trash_id))
        results.append(SessionScrub(name, changed, found, 0, trash_id))
    if dry_run:
        return ScrubReport(results, dry_run)
    live_touched = [n for n, t in touched if t is None]
    if live_touched:
        store.reindex(live_touched)
    verified = []
    for result in results:
        if (result.session, result.trash_id) in touched or names is not None:
            left = _remaining(store, m, result.session, result.trash_id)
            result = result._replace(remaining=left)
        verified.append(result)
    return ScrubReport(verified, dry_run)


def check(report: ScrubReport) -> None:
    """Raise StoreError when the verification found matches left."""
    left = [s for s in report.sessions if s.remaining]
    if left:
        raise StoreError(
            "scrub could not remove every match: "
            + ", ".join(f"{label(s)} ({s.remaining} left)" for s in left)
        )


def label(s: SessionScrub) -> str:
    """How a report names a session: a deleted one with its trash id."""
    return s.session if s.trash_id is None else f"{s.session} (deleted, {s.trash_id})"
