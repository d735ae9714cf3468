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


#: URL schemes of the PostgreSQL backend (libpq's).
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(store: str | None) -> bool:
    return bool(store) and str(store).lower().startswith(POSTGRES_SCHEMES)


def open_backend(
    home: Path,
    warn: Callable[[str], None] | None = None,
    *,
    store: str | None = None,
    namespace: str | None = None,
    hnsw: bool | None = None,
) -> SessionStore:
    """The session store: the file backend under ``home``, or the database ``store`` names.

    The one place that names a concrete backend. psycopg is imported only for a
    ``postgresql://`` store, so the file store's start-up is untouched.
    """
    if store:
        if not is_postgres_url(store):
            from sessionctl.errors import UsageError

            raise UsageError(
                "unsupported store: use a postgresql://user@host/dbname URL"
                " (or leave it unset for the files under the home)"
            )
        try:
            from sessionctl.backend.postgres.store import PostgresBackend
        except ImportError as exc:
            from sessionctl.errors import StoreError

            raise StoreError(
                f"a postgresql:// store needs psycopg: pip install 'sessionctl[postgres]' ({exc})"
            ) from None
        return PostgresBackend(store, warn, namespace=namespace, hnsw=hnsw)
    from sessionctl.backend.files.local import LocalBackend

    return LocalBackend(home, warn)
