"""Kept only for ``service/memory.py`` until the hybrid branch moves its sidecar work
below the seam: the stamp is the file backend's (:mod:`sessionctl.backend.files.freshness`,
reached through the sidecar index object memory.py passes). Delete it with that change.

Nothing here touches a file or the store: each call goes to the index object given.
"""

from __future__ import annotations

from typing import Any


def write_stamp(store: Any, name: str, index: Any, uid: str, size: int | None = None) -> None:
    """``index.write_stamp``: the index covers ``name``'s transcript (up to ``size``)."""
    index.write_stamp(uid, size)


def fast_catch_up(store: Any, name: str, embedder: Any, index: Any) -> bool:
    """``index.fast_catch_up``: current from the stamp, or False (a full sync is needed)."""
    return bool(index.fast_catch_up(embedder))
