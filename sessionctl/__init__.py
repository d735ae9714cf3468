"""sessionctl: chat with LLMs from the terminal, every conversation a local session.

The Python API mirrors the CLI::

    from sessionctl import Store
    store = Store()                      # or Store("/path/to/home")
    work = store.session("work")
    work.store("what is 2+2?", "4")
    work.get_recent(top_k=2)
"""

from __future__ import annotations

from sessionctl.errors import (
    ExitCode,
    MessageNotFound,
    ProviderError,
    SessionctlError,
    SessionExists,
    SessionNotFound,
    UsageError,
)
from sessionctl.models import Message, SessionInfo
from sessionctl.service import PruneReport, Session, Store

__version__ = "0.1.0"


def open_store(home: str | None = None) -> Store:
    """Return the store at ``home`` (default: settings from env/config, then platformdirs)."""
    return Store(home)


__all__ = [
    "ExitCode",
    "Message",
    "MessageNotFound",
    "ProviderError",
    "PruneReport",
    "Session",
    "SessionExists",
    "SessionInfo",
    "SessionNotFound",
    "SessionctlError",
    "Store",
    "UsageError",
    "__version__",
    "open_store",
]
