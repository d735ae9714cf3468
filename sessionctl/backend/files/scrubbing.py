"""What ``scrub`` needs of the file backend beyond ``rewrite``: the rejects file and
a grep of a session's files (its derived files included)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from sessionctl.backend.files.layout import SESSION_SUFFIXES
from sessionctl.fsutil import atomic_write

if TYPE_CHECKING:
    from sessionctl.backend.files.local import LocalBackend

TextFix = Callable[[str], tuple[str, int]]


def scrub_rejects(backend: LocalBackend, name: str, fix: TextFix, *, dry_run: bool) -> int:
    """Apply ``fix`` to the set-aside lines of ``name`` (an atomic rewrite under the
    session's lock); return how many matches were (or would be) removed."""
    path = backend.path(name, ".rejects")
    with backend.lock(name):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return 0
        total = 0
        out: list[str] = []
        for line in data.decode("utf-8", "backslashreplace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict) and isinstance(record.get("data"), str):
                fixed, n = fix(record["data"])
                if n:
                    record["data"] = fixed
                    line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
            else:
                line, n = fix(line)
            total += n
            out.append(line + "\n")
        if total and not dry_run:
            atomic_write(path, "".join(out).encode("utf-8"))
        return total


def grep_session_files(backend: LocalBackend, name: str, count: Callable[[str], int]) -> int:
    """How many matches ``count`` finds in every file of ``name`` (transcript, index,
    stamps, rejects), read as text."""
    found = 0
    for suffix in SESSION_SUFFIXES:
        try:
            data = backend.path(name, suffix).read_bytes()
        except FileNotFoundError:
            continue
        found += count(data.decode("utf-8", "replace"))
    return found
