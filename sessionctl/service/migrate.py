"""``migrate``: copy every session of one store into another, exactly, and check it.

Backend to backend through the SessionStore interface: each session's snapshot (header
with its uid, every message field, the high-water seq, last activity) is created whole
at the destination, then read back and compared. A session the destination already
holds identically is left alone, so a migration cut short is resumed by running it
again; one it holds differently is a mismatch (nothing overwritten). The source is
never changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from sessionctl.errors import SessionctlError, StoreError

if TYPE_CHECKING:
    from sessionctl.backend.base import SessionStore, Snapshot
    from sessionctl.service.store import Store


class MigrateReport(NamedTuple):
    copied: list[str]
    same: list[str]  # already there, identical (a resumed run)
    mismatched: list[str]
    messages: int  # messages copied
    dry_run: bool


def _key(snap: Snapshot) -> tuple[object, ...]:
    return (
        snap.header,
        [m._replace(pos=0) for m in snap.messages],
        snap.high_seq,
        snap.last_active_ns,
    )


def _existing(dst: SessionStore, name: str, trash_id: str | None) -> Snapshot | None:
    try:
        return dst.snapshot(name, trash_id=trash_id)
    except SessionctlError:
        return None


def migrate(
    src: Store,
    dst: Store,
    *,
    include_trash: bool = False,
    dry_run: bool = False,
    progress: Callable[[str, str], None] | None = None,
) -> MigrateReport:
    """Copy ``src``'s sessions (and, if asked, its trash) into ``dst``; verify each one."""
    copied: list[str] = []
    same: list[str] = []
    bad: list[str] = []
    count = 0
    entries: list[tuple[str, str | None]] = [(n, None) for n, _ in sorted(src.backend.names())]
    if include_trash:
        entries += [(i.name, i.trash_id) for i in src.backend.list_deleted(None)]
    for name, trash_id in entries:
        label = name if trash_id is None else f"{name} (trash {trash_id})"
        snap = src.backend.snapshot(name, trash_id=trash_id)
        there = _existing(dst.backend, name, trash_id)
        if there is not None:
            (same if _key(there) == _key(snap) else bad).append(label)
            if progress is not None:
                progress(label, "same" if _key(there) == _key(snap) else "MISMATCH")
            continue
        if dry_run:
            copied.append(label)
            count += len(snap.messages)
            continue
        dst.backend.create(
            name, snap.header, snap.messages, high_seq=snap.high_seq,
            last_active_ns=snap.last_active_ns, trash_id=trash_id,
        )  # fmt: skip
        back = _existing(dst.backend, name, trash_id)
        ok = back is not None and _key(back) == _key(snap)
        (copied if ok else bad).append(label)
        count += len(snap.messages)
        if progress is not None:
            progress(label, f"copied {len(snap.messages)} messages" if ok else "MISMATCH")
    report = MigrateReport(copied, same, bad, count, dry_run)
    if bad:
        raise StoreError(
            f"migrate: {len(bad)} session(s) differ at the destination: {', '.join(bad)}"
            " (nothing was overwritten; the source is unchanged)"
        )
    return report
