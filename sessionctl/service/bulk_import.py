"""``import --from SOURCE``: conversations read from another tool -> sessions.

The face reads the source (:mod:`sessionctl.sources`) and hands the conversations
here. Each one becomes one session, written whole in one call to the store (a
failure leaves it absent, never half there). Idempotent: every message id is a
hash of the source and the source's own ids, and the session records its source
key, so a second import of the same source adds nothing and an import after the
source grew appends only the messages not there yet. Messages go through the
redaction every write gets. Field mapping: docs/import-export.md.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from sessionctl.backend.base import HeaderPatch, NewSession, SessionHeader
from sessionctl.errors import UsageError
from sessionctl.ids import new_ulid
from sessionctl.models import Message
from sessionctl.names import check_name, is_valid_name
from sessionctl.redact import redact_message
from sessionctl.service.importing import Invalid, message_from
from sessionctl.timeutil import now_iso

if TYPE_CHECKING:
    from sessionctl.service.store import Store
    from sessionctl.sources import SourceSession

_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def session_name(source: str, key: str, prefix: str | None) -> str:
    """A valid, stable session name for conversation ``key`` of ``source``."""
    base = _BAD.sub("-", key).strip("-.") or "session"
    name = f"{prefix if prefix is not None else source}-{base}"
    if len(name) > 128 or not is_valid_name(name):
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        name = f"{name[:100].rstrip('-.')}-{digest}"
    return (
        name if is_valid_name(name) else f"{source}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    )


# A group of new sessions is handed to the store in one call once it holds this
# many sessions or messages (memory stays bounded by a group, not the source).
GROUP_SESSIONS = 256
GROUP_MESSAGES = 20_000


def import_checked(
    store: Store,
    source: str,
    read: Callable[[], Iterable[SourceSession]],
    *,
    as_: str | None = None,
    prefix: str | None = None,
    dry_run: bool = False,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> dict[str, Any]:
    """What ``import --from`` runs: check the whole source, then import it.

    The first pass reads and checks every conversation and writes nothing, so a
    source malformed anywhere (truncated, a huge line at the end) imports nothing
    at all; the second one imports. ``read`` opens the source afresh for each pass.
    When the first pass finds every conversation imported before and unchanged
    (the digest of its message ids, recorded in the session, is the same), there
    is nothing to write and the second pass is not run.
    ``progress(phase, done, total)`` is told of each conversation done: phase
    "checking" (total None: not known yet), then "importing" (total: how many the
    check found).
    """
    seen = [0]

    def counted(phase: str, total: int | None) -> Iterable[SourceSession]:
        for n, conv in enumerate(read(), 1):
            yield conv
            seen[0] = n
            if progress is not None:
                progress(phase, n, total)

    if dry_run:
        return import_sources(
            store, source, counted("checking", None), as_=as_, prefix=prefix, dry_run=True
        )
    checked = import_sources(
        store, source, counted("checking", None), as_=as_, prefix=prefix, dry_run=True,
        check_only=True,
    )  # fmt: skip
    if checked["sessions_created"] == 0 and checked["sessions_updated"] == 0:
        return {**checked, "dry_run": False}  # all there already: the same summary
    return import_sources(store, source, counted("importing", seen[0]), as_=as_, prefix=prefix)


def ids_digest(conv: SourceSession) -> str | None:
    """A digest of the conversation's message ids, in order, each once (None when a
    message has no text id: such a conversation is always compared message by message)."""
    ids = [record.get("id") for record in conv.messages]
    if not all(type(ident) is str for ident in ids):
        return None
    joined = "\n".join(dict.fromkeys(ids))  # type: ignore[arg-type]
    return hashlib.sha256(joined.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def import_sources(
    store: Store,
    source: str,
    conversations: Iterable[SourceSession],
    *,
    as_: str | None = None,
    prefix: str | None = None,
    dry_run: bool = False,
    check_only: bool = False,
) -> dict[str, Any]:
    """Import every conversation; return the summary (sessions, messages, skipped).

    New sessions are created in groups (:meth:`SessionStore.create_many`: each
    one whole or absent); sessions imported before get only their new messages.
    Which sessions exist is listed once. A session imported before records the
    digest of its conversation's message ids (``imported_from.ids``): when the
    source gives the same digest, the session is not read (nothing is new);
    otherwise its messages are read and only those not there yet are appended.
    ``check_only`` (with ``dry_run``) checks every message and name but neither
    redacts nor reads the messages of existing sessions: an existing session counts
    as updated when its digest differs, and messages_added is not filled in for it.
    """
    if as_ is not None:
        check_name(as_)
    if prefix is not None and prefix and not is_valid_name(prefix):
        raise UsageError(f"invalid --prefix {prefix!r}: it must start a valid session name")
    summary: dict[str, Any] = {
        "source": source, "dry_run": dry_run, "sessions_created": 0, "sessions_updated": 0,
        "sessions_unchanged": 0, "messages_added": 0, "skipped": [], "renamed": [],
        "sessions": [],
    }  # fmt: skip
    redact = None if check_only else store.redactor()
    backend = store.backend
    live = {name for name, _when in backend.names()}  # one listing, not a lookup each
    names: dict[str, str] = {}
    pending: list[NewSession] = []
    pending_names: set[str] = set()
    pending_messages = 0

    def flush() -> None:
        nonlocal pending_messages
        if pending and not dry_run:
            backend.create_many(pending)
            live.update(pending_names)
        pending.clear()
        pending_names.clear()
        pending_messages = 0

    used_as = False
    for conv in conversations:
        if as_ is not None:
            if used_as:
                raise UsageError(
                    "--as names one session, but the source holds several; use --prefix"
                )
            used_as = True
            name = as_
        else:
            name = session_name(source, conv.key, prefix)
            if name != f"{prefix if prefix is not None else source}-{conv.key}":
                summary["renamed"].append({"key": conv.key, "name": name})
        names[conv.key] = name
        summary["skipped"].extend({"where": p.where, "reason": p.reason} for p in conv.problems)
        digest = ids_digest(conv)
        tag = {"source": source, "key": conv.key}
        if name in pending_names:
            flush()  # the same name again: it must exist before it is looked at
        if name in live and backend.exists(name):
            header = backend.header(name)
            recorded = (header.metadata or {}).get("imported_from")
            if not isinstance(recorded, dict) or {
                "source": recorded.get("source"), "key": recorded.get("key")
            } != tag:  # fmt: skip
                raise UsageError(
                    f"{conv.where}: session {name} exists and was not imported from this"
                    " conversation; pass --prefix P; nothing more imported"
                )
            if digest is not None and recorded.get("ids") == digest:
                if check_only:
                    _messages(conv)  # checked all the same: a bad source imports nothing
                summary["sessions_unchanged"] += 1
                continue
            messages = _messages(conv)
            if check_only:
                summary["sessions_updated"] += 1
                continue
            have = {m.id for m in backend.iter_messages(name)}
            new = [m for m in messages if m.id not in have]
            if redact is not None:
                new = [redact_message(redact, m) for m in new]
            if not dry_run and new:
                backend.append(name, _renumber(new), create=None)
            if not dry_run and digest is not None:  # the next import need not read it
                patch = HeaderPatch(metadata={"imported_from": {**recorded, "ids": digest}})
                backend.update_header(name, patch)
            if not new:
                summary["sessions_unchanged"] += 1
                continue
            summary["sessions_updated"] += 1
        else:
            messages = _messages(conv)
            if redact is not None:
                messages = [redact_message(redact, m) for m in messages]
            new = messages
            if not dry_run:
                system = conv.system
                if redact is not None and system:
                    system = redact.text(system).text
                stamp = {**tag, "ids": digest} if digest is not None else tag
                metadata: dict[str, Any] = {**conv.metadata, "imported_from": stamp}
                parent = names.get(conv.parent) if conv.parent else None
                header = SessionHeader(
                    uid=new_ulid(),
                    created_at=conv.created_at
                    or (messages[0].created_at if messages else now_iso()),
                    updated_at=messages[-1].created_at if messages else now_iso(),
                    model=conv.model,
                    system=system,
                    metadata=metadata,
                    parent=parent,
                    parent_message=conv.parent_message if parent else None,
                )
                pending.append(NewSession(name, header, messages))
                pending_names.add(name)
                pending_messages += len(messages)
                if len(pending) >= GROUP_SESSIONS or pending_messages >= GROUP_MESSAGES:
                    flush()
            summary["sessions_created"] += 1
        summary["messages_added"] += len(new)
        summary["sessions"].append({"name": name, "key": conv.key, "added": len(new)})
    flush()
    return summary


def _renumber(new: list[Message]) -> Any:
    def make(high: int) -> list[Message]:
        return [m._replace(seq=high + i) for i, m in enumerate(new, start=1)]

    return make


def _messages(conv: SourceSession) -> list[Message]:
    now = now_iso()
    out: list[Message] = []
    seen: set[str] = set()
    for seq, record in enumerate(conv.messages, start=1):
        try:
            message = message_from(record, seq, conv.created_at or now)
        except Invalid as exc:
            raise UsageError(f"{conv.where}: message {seq}: {exc}; nothing imported") from None
        if message.id in seen:
            continue  # the same source message twice (a repeated line): kept once
        seen.add(message.id)
        out.append(message)
    return out
