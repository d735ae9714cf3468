"""Inspecting and editing config.toml: where each setting comes from, set and unset.

Reading and precedence live in :mod:`sessionctl.config`; this module adds what
``sessionctl config`` needs. Edits keep the file's comments and layout: the
line that sets the key is replaced (or appended), the result is parsed back
and compared with what was meant, and only when that fails is the file
rewritten from its values. Writes are atomic and private (0600).
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from sessionctl.config import (
    CONFIG_KEYS,
    ENV_VARS,
    Settings,
    default_config_path,
    load_settings,
    read_config_file,
    redact_url,
    validate_setting,
)
from sessionctl.errors import SessionctlError, UsageError
from sessionctl.fsutil import DIR_MODE, atomic_write

SOURCES = ("flag", "env", "file", "default")
NEW_FILE_HEADER = "# sessionctl settings; `sessionctl config show` prints the effective ones.\n"
_TOP_LEVEL_KEY = r"^[ \t]*(?:{key}|\"{key}\"|'{key}')[ \t]*="


class SettingSource(NamedTuple):
    """One setting's effective value and where it came from."""

    key: str
    value: Any
    source: str  # one of SOURCES
    env_var: str | None


def effective_settings(
    environ: Mapping[str, str] | None = None, *, home_flag: Path | None = None
) -> tuple[Settings, list[SettingSource]]:
    """Return the resolved settings and, for home and every config key, its source.

    ``home_flag`` is ``--home`` when it was given on the command line (not
    through its environment variable).
    """
    env = os.environ if environ is None else environ
    settings = load_settings(env, home=home_flag)
    in_file = read_config_file(default_config_path(env))
    rows = []
    for key in ("home", *CONFIG_KEYS):
        var = ENV_VARS.get(key)
        if key == "home" and home_flag is not None:
            source = "flag"
        elif var and env.get(var):
            source = "env"
        elif key in in_file:
            source = "file"
        else:
            source = "default"
        value = getattr(settings, key)
        if key == "store" and isinstance(value, str):
            value = redact_url(value)  # never print a password
        rows.append(SettingSource(key, value, source, var))
    return settings, rows


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Return the path of config.toml (``$SESSIONCTL_CONFIG`` or the platform config dir)."""
    return default_config_path(os.environ if environ is None else environ)


def set_setting(path: Path, key: str, raw: Any) -> Any:
    """Validate ``raw`` for ``key``, write it to config.toml at ``path``; return the value."""
    value = validate_setting(key, raw)
    _edit(path, key, value)
    return value


def unset_setting(path: Path, key: str) -> bool:
    """Remove ``key`` from config.toml at ``path``; return False when it was not set.

    Keys sessionctl does not know may be removed too (that is how a file with a
    typo is repaired); a key that is neither known nor in the file is an error.
    """
    current = _parse(path, _read(path))
    if key not in current:
        if key not in CONFIG_KEYS:
            validate_setting(key, None)  # raises: names the key and the known ones
        return False
    _edit(path, key, None)
    return True


def toml_value(value: Any) -> str:
    """Return ``value`` (str, int, float, bool or a list of them) as a TOML literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UsageError(f"cannot write {value!r} to config.toml")
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        escaped = []
        for ch in value:
            if ch in ('"', "\\"):
                escaped.append("\\" + ch)
            elif ch == "\n":
                escaped.append("\\n")
            elif ch == "\t":
                escaped.append("\\t")
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                escaped.append(f"\\u{ord(ch):04x}")
            else:
                escaped.append(ch)
        return '"' + "".join(escaped) + '"'
    raise UsageError(f"cannot write a {type(value).__name__} to config.toml")


# -- internals ---------------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except UnicodeDecodeError as exc:
        raise UsageError(f"config file {path} is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise SessionctlError(f"cannot read config file {path}: {exc.strerror}") from exc


def _parse(path: Path, text: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    try:
        return dict(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}; fix it by hand") from exc


def _edit(path: Path, key: str, value: Any) -> None:
    """Set (or with ``value`` None remove) top-level ``key``, keeping everything else."""
    if path.is_symlink():  # a dotfiles link: write the file it points to, keep the link
        path = path.resolve()
    old_text = _read(path)
    wanted = _parse(path, old_text)
    if value is None:
        wanted.pop(key, None)
    else:
        wanted[key] = value
    new_text = _replace_line(
        old_text, key, None if value is None else f"{key} = {toml_value(value)}"
    )
    try:
        ok = _parse(path, new_text) == wanted
    except UsageError:
        ok = False
    if not ok:  # an unusual layout (a multi-line string, say): rewrite from the values
        new_text = NEW_FILE_HEADER + "".join(f"{k} = {toml_value(v)}\n" for k, v in wanted.items())
    _ensure_parent(path)
    atomic_write(path, new_text.encode("utf-8"), unique=True)


def _replace_line(text: str, key: str, line: str | None) -> str:
    """Return ``text`` with top-level ``key`` set by ``line`` (or removed when None)."""
    pattern = re.compile(_TOP_LEVEL_KEY.format(key=re.escape(key)))
    out: list[str] = []
    first_table: int | None = None
    replaced = False
    for item in text.splitlines(keepends=True):
        if first_table is None and item.lstrip().startswith("["):
            first_table = len(out)
        if first_table is None and pattern.match(item):
            if line is not None and not replaced:
                out.append(line + "\n")
                replaced = True
            continue  # the old line (and any duplicate) goes
        out.append(item)
    if line is None or replaced:
        return "".join(out)
    if not text:
        out.append(NEW_FILE_HEADER)
    elif first_table is None and out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    out.insert(len(out) if first_table is None else first_table, line + "\n")
    return "".join(out)


def _ensure_parent(path: Path) -> None:
    """Create the config directory 0700 if missing; an existing one is left as it is."""
    parent = path.parent
    if parent.is_dir():
        return
    try:
        parent.mkdir(mode=DIR_MODE, parents=True)
        parent.chmod(DIR_MODE)
    except FileExistsError:
        if not parent.is_dir():
            raise UsageError(f"{parent} exists and is not a directory") from None
    except OSError as exc:
        raise SessionctlError(f"cannot create {parent}: {exc.strerror}") from exc
