"""Storage backends: where sessions and their indexes live.

``base`` holds the two interfaces the service layer talks to; ``files`` is the
embedded default (JSON-lines transcripts and derived indexes under the home).
Nothing above this package knows about files, FAISS or SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sessionctl.backend.base import SessionStore


def open_backend(home: Path, warn: Callable[[str], None] | None = None) -> SessionStore:
    """The session store for ``home`` (today always the file backend under that path).

    The one place that names a concrete backend: a ``postgresql://`` store plugs in here.
    """
    from sessionctl.backend.files.local import LocalBackend

    return LocalBackend(home, warn)
