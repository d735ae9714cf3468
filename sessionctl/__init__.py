"""sessionctl: chat with LLMs from the terminal, every conversation a local session.

The Python API mirrors the CLI::

    from sessionctl import Store
    store = Store()                      # or Store("/path/to/home")
    work = store.session("work")
    work.store("what is 2+2?", "4")
    work.get_recent(top_k=2)

Names are imported on first use, so ``import sessionctl`` stays cheap for the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ExitCode": "sessionctl.errors",
    "MessageNotFound": "sessionctl.errors",
    "ProviderError": "sessionctl.errors",
    "SessionctlError": "sessionctl.errors",
    "SessionExists": "sessionctl.errors",
    "SessionNotFound": "sessionctl.errors",
    "UsageError": "sessionctl.errors",
    "StoreError": "sessionctl.errors",
    "ToolRoundsExceeded": "sessionctl.errors",
    "InvalidOutput": "sessionctl.errors",
    "Message": "sessionctl.models",
    "SessionInfo": "sessionctl.models",
    "PruneReport": "sessionctl.service.store",
    "Session": "sessionctl.service.session",
    "Reply": "sessionctl.service.conversation",
    "TextDelta": "sessionctl.service.conversation",
    "Finished": "sessionctl.service.conversation",
    "ToolCall": "sessionctl.service.tools",
    "Store": "sessionctl.service.store",
    "capture": "sessionctl.capturing",
    "Capture": "sessionctl.capturing",
}

if TYPE_CHECKING:
    from sessionctl.capturing import Capture, capture
    from sessionctl.errors import (
        ExitCode,
        InvalidOutput,
        MessageNotFound,
        ProviderError,
        SessionctlError,
        SessionExists,
        SessionNotFound,
        StoreError,
        ToolRoundsExceeded,
        UsageError,
    )
    from sessionctl.models import Message, SessionInfo
    from sessionctl.service.conversation import Finished, Reply, TextDelta
    from sessionctl.service.session import Session
    from sessionctl.service.store import PruneReport, Store
    from sessionctl.service.tools import ToolCall


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sessionctl' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def open_store(home: str | None = None) -> Store:
    """Return the store at ``home`` (default: settings from env/config, then platformdirs)."""
    from sessionctl.service.store import Store

    return Store(home)


__all__ = [
    "Capture",
    "ExitCode",
    "Finished",
    "InvalidOutput",
    "Message",
    "MessageNotFound",
    "ProviderError",
    "PruneReport",
    "Reply",
    "Session",
    "SessionExists",
    "SessionInfo",
    "SessionNotFound",
    "SessionctlError",
    "Store",
    "StoreError",
    "TextDelta",
    "ToolCall",
    "ToolRoundsExceeded",
    "UsageError",
    "__version__",
    "capture",
    "open_store",
]
