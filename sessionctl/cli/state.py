"""Per-invocation state: settings resolved once, the store, the output, stdin."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sessionctl.cli.render import Output
from sessionctl.config import Settings, load_settings
from sessionctl.errors import UsageError

if TYPE_CHECKING:
    from sessionctl.service import Store


class State:
    """What every command needs: flags from the root callback, then lazily the store."""

    def __init__(
        self,
        home: Path | None = None,
        out: Output | None = None,
        *,
        store: str | None = None,
        namespace: str | None = None,
    ) -> None:
        self.home = home
        self.store_flag = store
        self.namespace_flag = namespace
        self.out = out or Output()
        self._settings: Settings | None = None
        self._store: Store | None = None
        self._no_redact = False

    def no_redact(self, off: bool) -> None:
        """``--no-redact`` of a writing command: turn redaction off (before the store is made)."""
        if off:
            self._no_redact = True
            if self._settings is not None:
                self._settings = self._settings._replace(redact=False)
            if self._store is not None:
                self._store.settings = self._store.settings._replace(redact=False)

    def settings(self) -> Settings:
        """Return the settings (flag > env > config file > default), resolved once."""
        if self._settings is None:
            from sessionctl.config import validate_setting

            flags = {
                key: validate_setting(key, value)
                for key, value in (("store", self.store_flag), ("namespace", self.namespace_flag))
                if value is not None
            }
            self._settings = load_settings(home=self.home, **flags)
            if self._no_redact:
                self._settings = self._settings._replace(redact=False)
            self.out.color = self._settings.color
            self.out.no_color = self._settings.no_color
        return self._settings

    def store(self) -> Store:
        """Return the store for this invocation."""
        if self._store is None:
            from sessionctl.service import Store

            self._store = Store(settings=self.settings(), warn=self.out.warn)
        return self._store

    def note_if_no_data(self) -> None:
        """For a read command: say on stderr when the home does not exist (exit stays 0)."""
        store = self.store()
        if not store.has_data():
            where = store.home
            if store.settings.store:
                from sessionctl.config import redact_url

                where = redact_url(store.settings.store)  # type: ignore[assignment]
            self.out.info(f"no data at {where} yet")


def debug_enabled() -> bool:
    """True when SESSIONCTL_DEBUG asks for tracebacks."""
    return os.environ.get("SESSIONCTL_DEBUG", "") not in ("", "0")


def read_stdin_text() -> str:
    """Return stdin as UTF-8 text, or raise UsageError naming the problem."""
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"stdin is not valid UTF-8 text (byte {exc.start}); nothing written"
        ) from None
    # `echo text |` adds one newline that is not part of the message.
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text
