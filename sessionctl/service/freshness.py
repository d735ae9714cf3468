"""Kept only for ``service/memory.py`` until the hybrid branch moves its sidecar work
below the seam: the stamp logic itself is the file backend's
(:mod:`sessionctl.backend.files.freshness`). Delete this module with that change.

Nothing here touches a file: each call is forwarded to the store's backend.
"""

from __future__ import annotations

from typing import Any


def write_stamp(store: Any, name: str, index: Any, uid: str, size: int | None = None) -> None:
    """See :func:`sessionctl.backend.files.freshness.write_stamp`."""
    store.backend.write_stamp(name, index, uid, size)


def fast_catch_up(store: Any, name: str, embedder: Any, index: Any) -> bool:
    """See :func:`sessionctl.backend.files.freshness.fast_catch_up`."""
    return bool(store.backend.fast_catch_up(name, embedder, index))
