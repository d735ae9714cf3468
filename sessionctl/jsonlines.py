"""One JSON line: the encoding shared by transcripts and ``export --format jsonl``."""

from __future__ import annotations

import json
from typing import Any

from sessionctl.errors import UsageError


def encode(record: dict[str, Any]) -> bytes:
    """Return one JSON line (UTF-8, compact, newline-terminated)."""
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
    try:
        return text.encode()
    except UnicodeEncodeError:
        # Lone surrogates, e.g. command-line bytes that were not UTF-8.
        raise UsageError("text is not valid UTF-8 (undecodable bytes); nothing written") from None
