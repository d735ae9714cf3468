"""Token counting: a cheap conservative estimate, and an exact count when it matters.

* :func:`estimate_tokens` — arithmetic over character classes (digits, letter runs,
  spaces, punctuation, other characters by UTF-8 bytes; :func:`estimate_text`), an
  upper bound for every tokenizer measured (Gemma 3, cl100k, o200k, p50k; margins in
  docs/providers.md), plus a per-message overhead. Use it first, always.
* :func:`count_tokens` — exact for models tiktoken knows (OpenAI's); any other model is
  counted with ``cl100k_base`` (litellm's default for unknown models) plus a 15 % margin,
  and never below the estimate, since its real tokenizer is unknown here. Uses the
  encoding files litellm bundles and never the network (loading an encoding costs
  ~0.1–0.3 s once per process) and never imports litellm (whose counter may download
  Hugging Face tokenizers). Without tiktoken or its files it falls back to the estimate.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["count_tokens", "estimate_text", "estimate_tokens", "message_text"]

PER_MESSAGE = 4  # role + separators, as in OpenAI's accounting (3) plus slack
PER_REQUEST = 3  # the reply priming
_TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"


def message_text(message: Mapping[str, Any]) -> str:
    parts: list[str] = []
    content = message.get("content")
    if isinstance(content, str):
        parts.append(content)
    elif content is not None:  # multi-part content: count its JSON, conservatively
        parts.append(json.dumps(content, ensure_ascii=False))
    for key in ("name", "tool_call_id"):
        value = message.get(key)
        if isinstance(value, str):
            parts.append(value)
    if message.get("tool_calls"):
        parts.append(json.dumps(message["tool_calls"], ensure_ascii=False))
    return "\n".join(parts)


# One match per run of a class; see estimate_text for what each costs.
_RUNS = re.compile(r" ?[A-Za-z]+|[0-9]| +|[^\x00-\x7f]|.", re.S)
LETTERS_PER_TOKEN = 3
SPACES_PER_TOKEN = 4
LONG_RUN = 16  # letters; longer runs are rarely words


_CACHED_CHARS = 2048  # texts this short keep their estimate (a chat re-estimates its context)


def estimate_text(text: str) -> int:
    """An upper bound on the tokens of ``text`` (see :func:`_estimate_text`), remembered
    for short texts: each turn estimates the same history again."""
    if len(text) <= _CACHED_CHARS:
        return _estimate_cached(text)
    return _estimate_text(text)


@functools.lru_cache(maxsize=4096)  # at most ~8 MB of text held
def _estimate_cached(text: str) -> int:
    return _estimate_text(text)


def _estimate_text(text: str) -> int:
    """An upper bound on the tokens of ``text`` for the tokenizers measured (no tokenizer).

    Costs, chosen to stay above Gemma 3's SentencePiece and tiktoken's cl100k, o200k and
    p50k on numbers, whitespace, code, JSON, CJK, emoji, hashes and prose (the margins
    are in docs/providers.md): a run of ASCII letters (with one space before it) 1 per
    3 letters, rounded up, but 1 per letter next to a digit (hex, ids) and 3 per 4
    letters beyond 16 letters (not words); every digit 1 (Gemma splits numbers into
    digits); a newline 1, a tab 1; a run of spaces 1, plus 1 per 4 more; ASCII
    punctuation 1; any other character (CJK, emoji, accents) 1 per UTF-8 byte
    (byte-level fallbacks).
    """
    total = 0
    for m in _RUNS.finditer(text):
        run = m.group()
        c = run[-1]
        if c.isascii() and c.isalpha():
            letters = len(run.lstrip(" "))
            start, end = m.span()
            if (start > 0 and text[start - 1].isdigit()) or text[end : end + 1].isdigit():
                total += letters  # hex, ids, base64: split into pieces of 1-2 letters
            elif letters > LONG_RUN:
                total += -(-letters * 3 // 4)  # not a word: random letters
            else:
                total += -(-letters // LETTERS_PER_TOKEN)
        elif c == " ":
            total += 1 + (len(run) - 1) // SPACES_PER_TOKEN
        elif c.isascii():
            total += 1
        else:
            total += len(c.encode("utf-8", "surrogatepass"))
    return total


def estimate_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """A cheap, deliberately high token estimate for ``messages`` (no tokenizer)."""
    total = PER_REQUEST
    for message in messages:
        total += PER_MESSAGE + estimate_text(message_text(message))
    return total


def count_tokens(model: str, messages: Sequence[Mapping[str, Any]]) -> int:
    """Tokens ``messages`` take as a prompt for ``model``, as exactly as available."""
    name, own = _encoding_name(model.removeprefix("openai/"))
    encoding = _load_encoding(name)
    if encoding is None:
        return estimate_tokens(messages)
    total = 0
    for message in messages:
        total += 3 + len(encoding.encode(message_text(message), disallowed_special=()))
        if message.get("name"):
            total += 1
    if not own:  # another tokenizer: never below the estimate, which bounds those measured
        total = max(-(-total * 115 // 100), estimate_tokens(messages) - PER_REQUEST)
    return PER_REQUEST + total


def _encoding_name(model: str) -> tuple[str, bool]:
    """The tiktoken encoding for ``model`` and whether it is the model's own."""
    try:
        import tiktoken
    except ImportError:
        return "cl100k_base", False
    try:
        return str(tiktoken.encoding_name_for_model(model)), True
    except KeyError:
        return "cl100k_base", False


@functools.lru_cache(maxsize=4)
def _load_encoding(name: str) -> Any:
    try:
        import tiktoken
    except ImportError:
        return None
    from sessionctl.llm.models import litellm_dir

    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR")
    if not cache_dir:
        base = litellm_dir()
        if base is None:
            return None
        cache_dir = str(base / "litellm_core_utils" / "tokenizers")
        # What litellm itself sets when imported; keeps tiktoken offline.
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", cache_dir)
    key = hashlib.sha1(_TIKTOKEN_URL.format(name).encode()).hexdigest()
    if not os.path.exists(os.path.join(cache_dir, key)):
        return None  # tiktoken would download it: never
    try:
        return tiktoken.get_encoding(name)
    except Exception:
        return None
