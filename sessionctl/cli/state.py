"""Per-invocation state: settings resolved once, the store, the output."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sessionctl.cli.render import Output
from sessionctl.config import Settings, load_settings

if TYPE_CHECKING:
    from sessionctl.service import Store


class State:
    """What every command needs: flags from the root callback, then lazily the store."""

    def __init__(self, home: Path | None = None, out: Output | None = None) -> None:
        self.home = home
        self.out = out or Output()
        self._settings: Settings | None = None
        self._store: Store | None = None

    def settings(self) -> Settings:
        """Return the settings (flag > env > config file > default), resolved once."""
        if self._settings is None:
            self._settings = load_settings(home=self.home)
            self.out.color = self._settings.color
            self.out.no_color = self._settings.no_color
        return self._settings

    def store(self) -> Store:
        """Return the store for this invocation."""
        if self._store is None:
            from sessionctl.service import Store

            self._store = Store(settings=self.settings(), warn=self.out.warn)
        return self._store


def debug_enabled() -> bool:
    """True when SESSIONCTL_DEBUG asks for tracebacks."""
    return os.environ.get("SESSIONCTL_DEBUG", "") not in ("", "0")
