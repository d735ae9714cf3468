"""Model facts without importing litellm: context windows and which path a request takes.

litellm ships its model map (``model_prices_and_context_window_backup.json``) inside
its package directory. We locate that directory with ``importlib.util.find_spec`` —
which does not execute litellm — read the JSON once per process (~20 ms) and cache it.

Routing (see :func:`direct_target`): a request takes the **direct path** (stdlib
``http.client`` speaking the OpenAI chat-completions protocol) when

* ``via_litellm`` is false, no HTTP(S) proxy environment variable applies to the
  target host (litellm/httpx honour those; the direct path does not), and
* the model is ``openai/<name>`` — sent as ``<name>`` — or a bare name without ``/``
  that is either served at an explicit ``api_base`` (and is not known to the model map
  as another provider's model) or is an OpenAI chat model in the model map;
* and, when the target is OpenAI itself (``api.openai.com``), the model map does not
  say the model is only served by another API (e.g. ``mode: responses``).

The base URL is resolved as litellm resolves it for OpenAI: ``api_base`` >
``OPENAI_BASE_URL`` > ``OPENAI_API_BASE`` > ``https://api.openai.com/v1``.
Everything else (``anthropic/…``, ``ollama/…``, ``azure/…``, ``claude-…``, …) goes
through litellm.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
    "OPENAI_DEFAULT_BASE",
    "DirectTarget",
    "context_window",
    "cost_usd",
    "direct_target",
    "missing_api_key",
    "model_info",
    "model_table",
]

DEFAULT_CONTEXT_WINDOW = 8192
OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"
_MODEL_MAP_FILE = "model_prices_and_context_window_backup.json"


def litellm_dir() -> Path | None:
    """The installed litellm package directory, found without importing litellm."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=1)
def _model_map() -> dict[str, dict[str, Any]]:
    base = litellm_dir()
    if base is None:
        return {}
    try:
        with open(base / _MODEL_MAP_FILE, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict) and k != "sample_spec"}


def model_table() -> dict[str, dict[str, Any]]:
    """litellm's whole model map (name -> entry), read from its package, never the network.

    The same file litellm itself loads with ``LITELLM_LOCAL_MODEL_COST_MAP=True``;
    empty when litellm is not installed.
    """
    return dict(_model_map())


def model_info(model: str) -> dict[str, Any] | None:
    """The model map entry for ``model`` (also tried without a provider prefix)."""
    table = _model_map()
    entry = table.get(model)
    if entry is None and "/" in model:
        provider, _, name = model.partition("/")
        candidate = table.get(name)
        if candidate is not None and candidate.get("litellm_provider") == provider:
            entry = candidate
    return entry


def context_window(model: str) -> int | None:
    """Max input tokens for ``model`` per litellm's model map, or None when unknown."""
    entry = model_info(model)
    if entry is None:
        return None
    for key in ("max_input_tokens", "max_tokens"):
        value = entry.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def cost_usd(model: str, usage: dict[str, Any] | None) -> float | None:
    """The price of one call in USD per litellm's price table, or None when unknown.

    None (never 0) when the model is not in the table, has no prices, or the usage
    lacks token counts. Cached prompt tokens are priced at the cache-read price when
    the table has one.
    """
    entry = model_info(model)
    if entry is None or not usage:
        return None

    def number(value: Any) -> float | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else None

    prompt = number(usage.get("prompt_tokens", usage.get("input_tokens")))
    completion = number(usage.get("completion_tokens", usage.get("output_tokens")))
    price_in = number(entry.get("input_cost_per_token"))
    price_out = number(entry.get("output_cost_per_token"))
    if prompt is None or completion is None or price_in is None or price_out is None:
        return None
    cached = min(number(usage.get("cached_tokens")) or 0.0, prompt)
    price_cached = number(entry.get("cache_read_input_token_cost"))
    if price_cached is None:
        price_cached = price_in
    return (prompt - cached) * price_in + cached * price_cached + completion * price_out


@dataclass(frozen=True)
class DirectTarget:
    """Where and as what a direct-path request goes."""

    url: SplitResult  # the base URL, e.g. http://127.0.0.1:8000/v1
    model: str  # the model name sent in the request body
    official: bool  # api.openai.com itself (not an OpenAI-compatible server)


def _is_official(url: SplitResult) -> bool:
    host = (url.hostname or "").lower()
    return host == "api.openai.com" or host.endswith(".api.openai.com")


def _proxy_applies(url: SplitResult) -> bool:
    if not any(k.lower().endswith("_proxy") and v for k, v in os.environ.items()):
        return False  # the common case, without importing urllib.request
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(url.scheme) or proxies.get("all")):
        return False
    host = url.hostname or ""
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    return not bypass(host, proxies)


def direct_target(
    model: str, api_base: str | None, *, via_litellm: bool = False, via_direct: bool = False
) -> DirectTarget | None:
    """The direct-path target for a request, or None when it must go through litellm.

    ``via_direct`` (``--via direct``) takes the direct path whatever the name says: a
    provider prefix (``hosted_vllm/``, ``openai/``, …) is dropped and proxies are not
    consulted; the URL must still be http(s)."""
    if via_litellm or not model:
        return None
    base = (
        api_base
        or os.environ.get("OPENAI_BASE_URL")
        or os.environ.get("OPENAI_API_BASE")
        or OPENAI_DEFAULT_BASE
    )
    url = urlsplit(base.strip())
    if url.scheme not in ("http", "https") or not url.hostname:
        return None  # litellm reports what is wrong with it
    official = _is_official(url)
    if via_direct:
        name = model.split("/", 1)[1] if "/" in model else model
        return DirectTarget(url=url, model=name, official=official) if name else None
    if model.startswith("openai/"):
        name = model.removeprefix("openai/")
        if not name:
            return None
        info = model_info(name) if official else None
    elif "/" in model:
        return None
    else:
        name = model
        info = model_info(name)
        provider = info.get("litellm_provider") if info else None
        if api_base is None and provider != "openai":
            return None  # litellm infers the provider from the name
        if provider not in (None, "openai"):
            return None
    if official and info is not None and info.get("mode", "chat") != "chat":
        return None
    if _proxy_applies(url):
        return None
    return DirectTarget(url=url, model=name, official=official)


# Providers whose models always need a key, and the variables litellm reads it from.
KEY_ENV_VARS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "mistral": ("MISTRAL_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "xai": ("XAI_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY",),
    "cohere": ("COHERE_API_KEY",),
    "cohere_chat": ("COHERE_API_KEY",),
}


def missing_api_key(model: str, api_base: str | None) -> str | None:
    """The environment variable ``model`` needs for its API key when none is set, else None.

    None too when an ``api_base`` is given (a local server needs no key) or when the
    provider is one sessionctl cannot judge (Ollama, Bedrock, Vertex, …: litellm's
    own checks apply when the first message is sent).
    """
    if api_base:
        return None
    target = direct_target(model, None)
    if target is not None:
        if not target.official or os.environ.get("OPENAI_API_KEY"):
            return None
        return "OPENAI_API_KEY"
    if "/" in model:
        provider = model.partition("/")[0]
    else:
        info = model_info(model)
        provider = str(info.get("litellm_provider", "")) if info else ""
    if provider == "openai" and (
        os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE")
    ):
        return None
    names = KEY_ENV_VARS.get(provider)
    if not names or any(os.environ.get(n) for n in names):
        return None
    return names[0]
