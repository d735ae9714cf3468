"""The result of a sync, returned to the caller (which prints any warnings)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SyncReport:
    """What :meth:`SidecarIndex.sync` did.

    ``rebuilt_reason`` is set when the old index was unusable and everything
    was embedded again (the CLI prints it as a warning); ``save_error`` when
    the index could not be written (search still works from memory; the next
    sync tries again).
    """

    added: int
    removed: int
    total: int
    rebuilt_reason: str | None = None
    save_error: str | None = None

    @property
    def warnings(self) -> list[str]:
        out = []
        if self.rebuilt_reason:
            out.append(f"semantic index rebuilt: {self.rebuilt_reason}")
        if self.save_error:
            out.append(f"semantic index not saved: {self.save_error}")
        return out
