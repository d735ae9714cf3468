"""How big a turn may be: the context window of a model, and how much history is read.

A leaf of the service layer (``chat`` and ``compact`` both use it, neither is imported).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sessionctl.service.store import Store

# How many recent messages are read to build the window (--context-recent then picks
# among them): older ones are reached through the semantic index.
HISTORY_WINDOW = 1000

# How long a window a server reported is trusted (a server restarted with another -c
# is seen within this time).
WINDOW_TTL_S = 600.0


def context_window_for(
    store: Store, model: str, api_base: str | None, override: int | None = None
) -> tuple[int | None, str]:
    """The context window for ``model`` and where it came from.

    Precedence: ``override`` (--context-window) > the ``context_window`` setting
    (SESSIONCTL_CONTEXT_WINDOW or config) > what the server at an explicit ``api_base``
    reports (cached per api-base and model for :data:`WINDOW_TTL_S`) > litellm's model
    table > unknown (``None``: the default is used).
    """
    from sessionctl import llm
    from sessionctl.config import from_environment

    if override:
        return override, "--context-window"
    settings = store.settings
    if settings.context_window:
        where = (
            "SESSIONCTL_CONTEXT_WINDOW"
            if from_environment("context_window")
            else ("config context_window")
        )
        return settings.context_window, where
    if api_base:
        found = _server_window(store, model, api_base)
        if found is not None:
            return found, f"server {api_base}"
    table = llm.context_window(model)
    if table is not None:
        return table, "litellm model table"
    return None, f"default {llm.DEFAULT_CONTEXT_WINDOW} (unknown model)"


def _window_key(api_base: str, model: str) -> str:
    return f"window {api_base.strip().rstrip('/')} {model}"


def _server_window(store: Store, model: str, api_base: str) -> int | None:
    from sessionctl.llm.server import probe_window

    entry = store.backend.read_facts().get(_window_key(api_base, model))
    if isinstance(entry, dict):
        at, value = entry.get("at"), entry.get("value")
        if isinstance(at, (int, float)) and 0 <= time.time() - at < WINDOW_TTL_S:
            return value if isinstance(value, int) and value > 0 else None
    value = probe_window(api_base, model)
    remember_window(store, model, api_base, value)
    return value


def remember_window(store: Store, model: str, api_base: str, value: int | None) -> None:
    """Cache the window the server at ``api_base`` has for ``model`` (None: unknown)."""
    key = _window_key(api_base, model)
    facts = store.backend.read_facts()
    now = time.time()
    fresh = {
        k: v
        for k, v in facts.items()
        if isinstance(v, dict) and isinstance(v.get("at"), (int, float))
        and 0 <= now - v["at"] < WINDOW_TTL_S
    }  # fmt: skip
    fresh[key] = {"at": now, "value": value}
    store.backend.write_facts(fresh)
