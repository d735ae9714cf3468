"""The backend contract suite: one ``store`` fixture, parametrised over every storage backend.

Each test here states a semantic that every backend keeps (DESIGN.md §8,
``sessionctl/backend/base.py``), through the public Python API only
(``sessionctl.Store`` and ``Session``), so that the same test runs unchanged
against the file backend today and PostgreSQL next.

Adding a backend is one entry in :data:`BACKENDS`: a :class:`Backend` whose
``make(root)`` returns a new, empty ``Store`` that no other call shares, and
whose ``missing()`` returns why it cannot run here (the tests are then skipped
with that reason) or None. ``SESSIONCTL_CONTRACT_BACKENDS=files,postgres``
selects backends by name (default: all of them).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from sessionctl import Store


class Backend(NamedTuple):
    """How the contract suite gets a store of one backend."""

    name: str
    # A new, empty store; ``root`` is a private temp dir (the home, for local state).
    make: Callable[[Path], Store]
    # Why the backend cannot run on this machine (a missing driver or server), or None.
    missing: Callable[[], str | None] = lambda: None
    # Test hook: make session ``name`` look last active at ``ns`` (epoch ns). Only
    # for what the public API cannot produce (ties in activity); None: those skip.
    set_activity: Callable[[Store, str, int], None] | None = None


# -- files ------------------------------------------------------------------------
def _files_make(root: Path) -> Store:
    return Store(root)


def _files_set_activity(store: Store, name: str, ns: int) -> None:
    from sessionctl.backend.files.activity import LOG_NAME, ActivityLog

    transcript = Path(store.home) / "sessions" / f"{name}.jsonl"
    os.utime(transcript, ns=(ns, ns))
    ActivityLog(Path(store.home) / LOG_NAME).touch(name, ns, reset=True)


# -- postgres ---------------------------------------------------------------------
# One server per test session (tests/local_postgres.py), one migrated template
# database, and a fresh database cloned from it per test (CREATE DATABASE … TEMPLATE:
# ~30 ms, no migration per test).
_PG: dict[str, object] = {}
_OPEN: list[Store] = []


def _pg_missing() -> str | None:
    from local_postgres import missing_reason

    reason = missing_reason()
    if reason is not None and os.environ.get("CI"):
        pytest.fail(f"CI needs a real PostgreSQL: {reason}")
    return reason


def _pg_template() -> tuple[str, str]:
    """(admin URL, template database name) of the session's server, started on first use."""
    if "admin" not in _PG:
        import atexit
        import shutil
        import tempfile

        import local_postgres
        import psycopg

        from sessionctl.backend.postgres.schema import migrate

        root = Path(tempfile.mkdtemp(prefix="sessionctl-pg-"))
        server = local_postgres.start(root)

        def _stop() -> None:
            local_postgres.stop(server)
            shutil.rmtree(root, ignore_errors=True)

        atexit.register(_stop)
        _PG["stop"] = _stop
        url = server.database()
        with psycopg.connect(url) as conn:
            migrate(conn)
        _PG["admin"] = server.admin_dsn
        _PG["template"] = url.rsplit("/", 1)[1]
        _PG["base"] = url.rsplit("/", 1)[0]
    return str(_PG["admin"]), str(_PG["template"])


def _pg_make(root: Path) -> Store:
    import uuid

    import psycopg

    from sessionctl.config import load_settings

    admin, template = _pg_template()
    name = "c_" + uuid.uuid4().hex[:12]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    url = f"{_PG['base']}/{name}"
    store = Store(settings=load_settings(home=root, store=url, namespace="contract"))
    _OPEN.append(store)
    return store


def _pg_set_activity(store: Store, name: str, ns: int) -> None:
    assert store.settings.store is not None
    import psycopg

    with psycopg.connect(store.settings.store) as conn:
        conn.execute(
            "UPDATE sc_session SET last_active_ns = %s WHERE namespace = %s AND name = %s"
            " AND trash_id IS NULL",
            (ns, store.settings.namespace, name),
        )


BACKENDS: dict[str, Backend] = {
    "files": Backend("files", _files_make, set_activity=_files_set_activity),
    "postgres": Backend("postgres", _pg_make, missing=_pg_missing, set_activity=_pg_set_activity),
}


def _selected() -> list[str]:
    wanted = os.environ.get("SESSIONCTL_CONTRACT_BACKENDS")
    if not wanted:
        return sorted(BACKENDS)
    return [name.strip() for name in wanted.split(",") if name.strip()]


def _param(name: str) -> object:
    return pytest.param(name, marks=pytest.mark.postgres) if name == "postgres" else name


@pytest.fixture(scope="session", params=[_param(n) for n in _selected()])
def backend(request: pytest.FixtureRequest) -> Backend:
    """The backend under test (skipped, with the reason, when it cannot run here)."""
    name = request.param
    if name not in BACKENDS:
        pytest.fail(f"unknown backend {name!r} in SESSIONCTL_CONTRACT_BACKENDS: {sorted(BACKENDS)}")
    spec = BACKENDS[name]
    reason = spec.missing()
    if reason is not None:
        pytest.skip(f"backend {name!r} unavailable: {reason}")
    return spec


@pytest.fixture
def store(backend: Backend, home: Path) -> Iterator[Store]:
    """A new, empty store of the backend under test (``home`` is the test's private dir)."""
    made = backend.make(home)
    try:
        yield made
    finally:
        for opened in [made, *_OPEN]:
            opened.close()
        _OPEN.clear()


def _reopen(store: Store) -> Store:
    again = Store(settings=store.settings, warn=store.warn)
    _OPEN.append(again)
    return again


@pytest.fixture
def reopen() -> Callable[[Store], Store]:
    """``reopen(store)``: a second Store on the same storage, as another process sees it."""
    return _reopen


@pytest.fixture
def set_activity(backend: Backend) -> Callable[[Store, str, int], None]:
    """The backend's activity hook, or skip (for ties the public API cannot produce)."""
    if backend.set_activity is None:
        pytest.skip(f"backend {backend.name!r} has no set_activity test hook")
    return backend.set_activity


def _tick() -> float:
    time.sleep(0.02)
    now = time.time()
    time.sleep(0.02)
    return now


@pytest.fixture
def tick() -> Callable[[], float]:
    """``tick()`` returns an instant strictly after every write so far, before any later one.

    For ``Store.prune(now=...)``: time is moved through its argument, never slept away.
    """
    return _tick
