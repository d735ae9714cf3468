"""Error types and the exit codes they map to.

Every error the user can cause or meet is a :class:`SessionctlError` subclass
that carries its exit code; the CLI catches them once and prints one line.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Documented process exit codes (DESIGN §5)."""

    OK = 0
    RUNTIME = 1
    USAGE = 2
    NOT_FOUND = 3
    PROVIDER = 4
    INTERRUPTED = 130


class SessionctlError(Exception):
    """Base class: a failure with a one-line, user-facing message."""

    exit_code: ExitCode = ExitCode.RUNTIME

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(SessionctlError, ValueError):
    """Bad input from the caller: an invalid name, number, duration or option."""

    exit_code = ExitCode.USAGE


class InvalidName(UsageError):
    """A session name that breaks the name rule or collides by case."""


class PromptTooLarge(UsageError):
    """A prompt that alone exceeds the model's context window; nothing was sent."""


class NotFound(SessionctlError, LookupError):
    """A session or message that does not exist."""

    exit_code = ExitCode.NOT_FOUND


class SessionNotFound(NotFound):
    """No live session has that name."""


class MessageNotFound(NotFound):
    """No message has that id in the session (or the session is empty)."""


class SessionExists(SessionctlError):
    """The target name is already taken; nothing was touched."""


class StoreError(SessionctlError, OSError):
    """An I/O failure or data that could not be read or written safely."""


class CorruptData(StoreError):
    """A file that cannot be parsed even after setting bad lines aside."""


class IndexNotWritable(StoreError):
    """A store-wide index cannot be written here (read-only home, no permission, full disk):
    the search can still go session by session."""


class ProviderError(SessionctlError):
    """The model provider failed: auth, network, rate limit, timeout, bad model."""

    exit_code = ExitCode.PROVIDER


class EmbeddingError(SessionctlError):
    """The embedding model could not be loaded or run."""


class Interrupted(SessionctlError):
    """The user pressed Ctrl-C; whatever was saved is said in the message."""

    exit_code = ExitCode.INTERRUPTED


class ToolRoundsExceeded(SessionctlError):
    """The model kept calling tools past ``max_tool_rounds``; the rounds run were recorded,
    the last request for tools was neither run nor recorded."""
