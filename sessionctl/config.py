"""Settings: flags > environment > config.toml > built-in defaults, resolved once.

This is the only module that reads ``os.environ`` for settings; everything
below the CLI receives a frozen :class:`Settings`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from sessionctl.errors import UsageError

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
COLOR_CHOICES = ("auto", "always", "never")
VIA_CHOICES = ("auto", "litellm", "direct")

# setting name -> environment variable
ENV_VARS: dict[str, str] = {
    "home": "SESSIONCTL_HOME",
    "model": "SESSIONCTL_MODEL",
    "api_base": "SESSIONCTL_API_BASE",
    "embedding_model": "SESSIONCTL_EMBEDDING_MODEL",
    "system": "SESSIONCTL_SYSTEM",
    "context_recent": "SESSIONCTL_CONTEXT_RECENT",
    "context_relevant": "SESSIONCTL_CONTEXT_RELEVANT",
    "context_window": "SESSIONCTL_CONTEXT_WINDOW",
    "timeout": "SESSIONCTL_TIMEOUT",
    "via": "SESSIONCTL_VIA",
    "color": "SESSIONCTL_COLOR",
    "redact": "SESSIONCTL_REDACT",
    "store": "SESSIONCTL_STORE",
    "namespace": "SESSIONCTL_NAMESPACE",
    "pg_hnsw": "SESSIONCTL_PG_HNSW",
}
CONFIG_ENV = "SESSIONCTL_CONFIG"
DEBUG_ENV = "SESSIONCTL_DEBUG"


class Settings(NamedTuple):
    """Every setting sessionctl reads, after precedence is applied."""

    home: Path
    model: str = DEFAULT_MODEL
    api_base: str | None = None
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    system: str | None = None
    context_recent: int | None = None
    context_relevant: int = 3
    context_window: int | None = None  # None: the model's, from litellm's model map
    timeout: float = 120.0
    via: str = "auto"  # auto, litellm or direct: the provider route
    color: str = "auto"
    redact: bool = True
    redact_patterns: tuple[str, ...] = ()
    redact_allow: tuple[str, ...] = ()
    debug: bool = False
    no_color: bool = False
    config_path: Path | None = None
    store: str | None = None  # None: files under home; else a postgresql:// URL
    namespace: str | None = None  # the PostgreSQL store's namespace (None: the OS user)
    # The PostgreSQL store's HNSW index: True builds it and searches through it, False
    # drops it, None (unset) leaves the database as it is and searches exactly.
    pg_hnsw: bool | None = None

    def with_overrides(self, **values: Any) -> Settings:
        """Return a copy with the non-None ``values`` applied (flags win)."""
        return self._replace(**{k: v for k, v in values.items() if v is not None})


def _non_negative_int(key: str, value: Any) -> int:
    try:
        number = int(value)
        if isinstance(value, bool) or (isinstance(value, float) and value != number):
            raise ValueError
    except (TypeError, ValueError):
        raise UsageError(f"setting {key!r} must be a whole number, got {value!r}") from None
    if number < 0:
        raise UsageError(f"setting {key!r} must be 0 or more, got {number}")
    return number


def _positive_int(key: str, value: Any) -> int:
    number = _non_negative_int(key, value)
    if number == 0:
        raise UsageError(f"setting {key!r} must be 1 or more, got 0")
    return number


def _positive_float(key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"setting {key!r} must be a number of seconds, got {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise UsageError(f"setting {key!r} must be a positive number of seconds, got {value!r}")
    return number


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise UsageError(f"setting {key!r} must be a non-empty string, got {value!r}")
    return value


def _color(key: str, value: Any) -> str:
    if value not in COLOR_CHOICES:
        raise UsageError(f"setting {key!r} must be one of {', '.join(COLOR_CHOICES)}")
    return str(value)


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"setting {key!r} must be true or false, got {value!r}")


def _patterns(key: str, value: Any) -> tuple[str, ...]:
    """A list of regular expressions (one string is a list of one), each compiled to check it."""
    import re

    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(v, str) and v for v in items):
        raise UsageError(f"setting {key!r} must be a list of regular expressions, got {value!r}")
    for item in items:
        try:
            re.compile(item)
        except re.error as exc:
            raise UsageError(
                f"setting {key!r}: invalid regular expression {item!r}: {exc}"
            ) from None
    return tuple(items)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (config show, errors, repr)."""
    import re

    out = re.sub(r"(://[^:/@?#]*:)[^@/?#]*@", r"\1***@", url)
    return re.sub(r"(?i)(password\s*=\s*)[^&\s]*", r"\1***", out)


def _store(key: str, value: Any) -> str:
    text = _text(key, value)
    if not text.lower().startswith(("postgresql://", "postgres://")):
        raise UsageError(
            f"setting {key!r} must be a postgresql:// URL (unset: the files under the home)"
        )
    return text


def _namespace(key: str, value: Any) -> str:
    import re

    text = _text(key, value)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,127}", text):
        raise UsageError(
            f"setting {key!r} must be 1-128 letters, digits, '.', '_', '@' or '-', got {value!r}"
        )
    return text


def _via(key: str, value: Any) -> str:
    if value not in VIA_CHOICES:
        raise UsageError(f"setting {key!r} must be one of {', '.join(VIA_CHOICES)}")
    return str(value)


# settings that config.toml may hold, with their validators
CONFIG_KEYS: dict[str, Callable[[str, Any], Any]] = {
    "model": _text,
    "api_base": _text,
    "embedding_model": _text,
    "system": _text,
    "context_recent": _non_negative_int,
    "context_relevant": _non_negative_int,
    "context_window": _positive_int,
    "timeout": _positive_float,
    "via": _via,
    "color": _color,
    "redact": _bool,
    "redact_patterns": _patterns,
    "redact_allow": _patterns,
    "store": _store,
    "namespace": _namespace,
    "pg_hnsw": _bool,
}


def validate_setting(key: str, value: Any) -> Any:
    """Return ``value`` converted for setting ``key``; raise UsageError naming the key."""
    if key not in CONFIG_KEYS:
        raise UsageError(f"unknown setting {key!r}: known settings are {', '.join(CONFIG_KEYS)}")
    return CONFIG_KEYS[key](key, value)


def default_home() -> Path:
    """Return the platform's per-user data directory for sessionctl."""
    import platformdirs

    return platformdirs.user_data_path("sessionctl")


def absolute_path(value: str | os.PathLike[str]) -> Path:
    """Return ``value`` with ``~`` expanded, made absolute against the current directory.

    Done once, when settings are read: a relative ``SESSIONCTL_HOME`` must not
    follow later changes of directory (a cron job would quietly start a new store).
    """
    return Path(os.path.abspath(Path(value).expanduser()))


def default_config_path(environ: Mapping[str, str]) -> Path:
    """Return config.toml's absolute path: ``$SESSIONCTL_CONFIG`` or the platform config dir."""
    if environ.get(CONFIG_ENV):
        return absolute_path(environ[CONFIG_ENV])
    import platformdirs

    return platformdirs.user_config_path("sessionctl") / "config.toml"


def read_config_file(path: Path) -> dict[str, Any]:
    """Return the validated settings in config.toml (empty when the file is absent)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from exc
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from exc
    return {key: validate_setting(key, value) for key, value in raw.items()}


def load_settings(environ: Mapping[str, str] | None = None, **flags: Any) -> Settings:
    """Resolve settings with precedence flag > environment > config file > default.

    The home and the config path come back absolute (see :func:`absolute_path`).
    """
    env = os.environ if environ is None else environ
    config_path = default_config_path(env)
    values: dict[str, Any] = dict(read_config_file(config_path))
    for key, var in ENV_VARS.items():
        raw = env.get(var)
        if raw:
            values[key] = absolute_path(raw) if key == "home" else validate_setting(key, raw)
    for key, value in flags.items():
        if value is not None:
            values[key] = absolute_path(value) if key == "home" else value
    known = set(Settings._fields)
    unknown = set(values) - known
    if unknown:
        raise UsageError(f"unknown setting {sorted(unknown)[0]!r}")
    home = values.pop("home", None) or default_home()
    return Settings(
        home=Path(home),
        debug=bool(env.get(DEBUG_ENV)),
        no_color=bool(env.get("NO_COLOR")),
        config_path=config_path,
        **values,
    )


def from_environment(key: str) -> bool:
    """True when setting ``key``'s environment variable is set (where a value came from)."""
    var = ENV_VARS.get(key)
    return bool(var and os.environ.get(var))
