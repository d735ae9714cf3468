"""One JSON line: the encoding shared by transcripts and ``export --format jsonl``."""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any

from sessionctl.errors import UsageError

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# The C encoder json.dumps builds on every call with these options, built once: half
# the cost of a line. None on a Python without the C accelerator.
_MAKE = getattr(json.encoder, "c_make_encoder", None)
_ITER: Callable[[Any, int], list[str]] | None = _MAKE and _MAKE(
    {}, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, True
)


def encode(record: dict[str, Any]) -> bytes:
    """Return one JSON line (UTF-8, compact, newline-terminated): what
    ``json.dumps(record, ensure_ascii=False, separators=(",", ":"))`` gives, and a newline."""
    line = "".join(_ITER(record, 0)) if _ITER is not None else _ENCODER.encode(record)
    text = line + "\n"
    try:
        return text.encode()
    except UnicodeEncodeError:
        # Lone surrogates, e.g. command-line bytes that were not UTF-8.
        raise UsageError("text is not valid UTF-8 (undecodable bytes); nothing written") from None
