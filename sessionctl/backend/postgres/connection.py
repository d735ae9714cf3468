"""One connection to the server: opened lazily, re-opened after a loss, errors made ours.

Every operation runs inside :meth:`Connection.transaction`, which holds a thread lock
(a Store may be shared by threads), opens the connection when there is none (and
applies the schema migrations on the first one), and turns every psycopg exception
into a one-line :class:`~sessionctl.errors.StoreError` that names the server
(``host:port/database``), never the password. A connection lost mid-transaction is
rolled back by the server: nothing half-written, and the next call reconnects.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sessionctl.config import redact_url
from sessionctl.errors import SessionctlError, StoreError

__all__ = ["Connection", "redact_url", "where"]

if TYPE_CHECKING:
    import psycopg

#: Seconds to wait for the server to accept a connection.
CONNECT_TIMEOUT = 10


def where(url: str) -> str:
    """``host:port/database`` of a connection string (never its password)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except Exception:
        return "the PostgreSQL server (unparsable connection string)"
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or "5432")
    db = str(params.get("dbname") or params.get("user") or "")
    return f"{host}:{port}/{db}"


class Connection:
    """The backend's connection (psycopg 3, autocommit; explicit transactions)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = where(url)
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._lock = threading.RLock()
        self._depth = 0

    def _secret_free(self, text: str) -> str:
        from psycopg.conninfo import conninfo_to_dict

        with contextlib.suppress(Exception):
            password = conninfo_to_dict(self.url).get("password")
            if password:
                text = text.replace(str(password), "***")
        return redact_url(text)

    def _open(self) -> psycopg.Connection[tuple[Any, ...]]:
        import psycopg

        from sessionctl.backend.postgres.schema import migrate

        try:
            conn = psycopg.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                application_name="sessionctl",
            )  # fmt: skip
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to the PostgreSQL server at {self.where}: {self._why(exc)}"
            ) from None
        try:
            migrate(conn)
        except psycopg.errors.InsufficientPrivilege as exc:
            conn.close()
            raise StoreError(
                f"this role may not bring sessionctl's schema at {self.where} up to date"
                f" ({self._why(exc)}): run any sessionctl command once as the role that owns"
                " its tables (see docs/postgres.md, Isolating users)"
            ) from None
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(
                f"cannot apply sessionctl's schema at {self.where}: {self._why(exc)}"
            ) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _why(self, exc: BaseException) -> str:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        text = lines[-1] if lines else type(exc).__name__
        return self._secret_free(text.removeprefix("FATAL:").strip())

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A transaction on the connection (nested calls share the outer one)."""
        import psycopg

        with self._lock:
            if self._depth:
                assert self._conn is not None
                yield self._conn
                return
            if self._conn is None or self._conn.closed:
                self._conn = self._open()
            conn = self._conn
            self._depth += 1
            try:
                with conn.transaction():
                    yield conn
            except SessionctlError:
                raise
            except psycopg.errors.QueryCanceled as exc:
                raise StoreError(
                    f"the PostgreSQL server at {self.where} cancelled the statement"
                    f" ({self._why(exc)}); nothing was written"
                ) from None
            except psycopg.errors.DiskFull as exc:
                raise StoreError(
                    f"the PostgreSQL server at {self.where} is out of disk space"
                    f" ({self._why(exc)}); nothing was written"
                ) from None
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._drop()
                raise StoreError(
                    f"lost the connection to the PostgreSQL server at {self.where}"
                    f" ({self._why(exc)}); nothing was written, the next command reconnects"
                ) from None
            except psycopg.errors.ReadOnlySqlTransaction as exc:
                self._drop()
                raise StoreError(
                    f"the PostgreSQL server at {self.where} is a read-only standby"
                    f" ({self._why(exc)}); point the store at the primary"
                ) from None
            except psycopg.Error as exc:
                raise StoreError(f"PostgreSQL error at {self.where}: {self._why(exc)}") from None
            finally:
                self._depth -= 1

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._drop()
