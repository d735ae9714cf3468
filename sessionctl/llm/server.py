"""What a model server says about itself: its context window, and exact token counts.

Asked only of a server the user named (an explicit API base), with a short timeout;
any failure (no such endpoint, refused, odd JSON) is "unknown" (``None``), never an
error: the chat call that follows reports a dead server properly.

* :func:`probe_window` — llama.cpp ``GET /v1/models`` → ``data[0].meta.n_ctx``;
  vLLM ``GET /v1/models`` → ``max_model_len``; Ollama ``POST /api/show`` →
  ``model_info["<arch>.context_length"]`` (for ``ollama/…`` and ``ollama_chat/…``).
* :class:`Tokenizer` — ``POST /tokenize`` (llama.cpp: ``{"content"}`` → ``tokens``;
  vLLM: ``{"model", "prompt"}`` → ``count``), counts cached per text, one kept-alive
  connection for a whole turn.

stdlib only (``http.client``), like the direct path.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import SplitResult, urlsplit

__all__ = ["Tokenizer", "probe_window", "server_root"]

PROBE_TIMEOUT = 3.0
# Longer texts are not sent to be counted (the caller's estimate decides): such a text
# alone is far beyond any local window, and a megabyte prompt is not uploaded to learn it.
MAX_TOKENIZE_CHARS = 256 * 1024


def server_root(api_base: str) -> SplitResult:
    """``api_base`` without a trailing ``/v1`` (where ``/tokenize`` and ``/api`` live)."""
    url = urlsplit(api_base.strip())
    path = url.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return url._replace(path=path)


def _connection(url: SplitResult, timeout: float) -> Any:
    import http.client

    if url.scheme == "https":
        return http.client.HTTPSConnection(url.hostname or "", url.port, timeout=timeout)
    return http.client.HTTPConnection(url.hostname or "", url.port, timeout=timeout)


def _request(
    conn: Any,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    api_key: str | None,
) -> Any:
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    raw = resp.read(4 * 1024 * 1024)
    if resp.status != 200:
        return None
    return json.loads(raw)


def _positive(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _window_from_models(data: Any, model: str) -> int | None:
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        return None
    entries = [e for e in data["data"] if isinstance(e, dict)]
    name = model.split("/", 1)[1] if model.startswith(("openai/", "hosted_vllm/")) else model
    chosen = [e for e in entries if e.get("id") == name] or entries[:1]
    for entry in chosen:
        meta = entry.get("meta")
        if isinstance(meta, dict) and _positive(meta.get("n_ctx")):
            return _positive(meta.get("n_ctx"))  # llama.cpp
        if _positive(entry.get("max_model_len")):
            return _positive(entry.get("max_model_len"))  # vLLM
    return None


def _window_from_ollama(data: Any) -> int | None:
    if not isinstance(data, dict):
        return None
    info = data.get("model_info")
    if isinstance(info, dict):
        for key, value in info.items():
            if isinstance(key, str) and key.endswith(".context_length") and _positive(value):
                return _positive(value)
    return None


def probe_window(
    api_base: str, model: str, api_key: str | None = None, timeout: float = PROBE_TIMEOUT
) -> int | None:
    """The context window the server at ``api_base`` reports for ``model``, or None."""
    try:
        root = server_root(api_base)
        if root.scheme not in ("http", "https") or not root.hostname:
            return None
        conn = _connection(root, timeout)
        try:
            if model.startswith(("ollama/", "ollama_chat/")):
                name = model.split("/", 1)[1]
                return _window_from_ollama(
                    _request(conn, "POST", f"{root.path}/api/show", {"model": name}, api_key)
                )
            base = urlsplit(api_base.strip()).path.rstrip("/")
            return _window_from_models(
                _request(conn, "GET", f"{base}/models", None, api_key), model
            )
        finally:
            conn.close()
    except (OSError, ValueError):
        return None


class Tokenizer:
    """Exact token counts from the server's ``/tokenize``; ``None`` once it has none.

    Counts are cached per text (by hash) for the life of the object; the first failure
    disables it (the caller falls back to its estimate).
    """

    def __init__(
        self, api_base: str, model: str, api_key: str | None = None, timeout: float = 10.0
    ) -> None:
        self.root = server_root(api_base)
        self.model = model.split("/", 1)[1] if "/" in model else model
        self.api_key = api_key
        self.timeout = timeout
        self.available: bool | None = None  # unknown until first asked
        self.requests = 0
        self._cache: dict[str, int] = {}
        self._conn: Any = None

    def _ask(self, text: str) -> int | None:
        if self._conn is None:
            self._conn = _connection(self.root, self.timeout)
        self.requests += 1
        path = f"{self.root.path}/tokenize"
        data = _request(
            self._conn, "POST", path, {"content": text, "model": self.model, "prompt": text},
            self.api_key,
        )  # fmt: skip
        if isinstance(data, dict):
            if isinstance(data.get("tokens"), list):
                return len(data["tokens"])
            if _positive(data.get("count")) is not None or data.get("count") == 0:
                return int(data["count"])
        return None

    def count(self, text: str) -> int | None:
        """Tokens of ``text`` by the server's tokenizer, or None when it cannot say."""
        if self.available is False or len(text) > MAX_TOKENIZE_CHARS:
            return None
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        if key in self._cache:
            return self._cache[key]
        try:
            n = self._ask(text)
        except (OSError, ValueError):
            n = None
            self.close()
        if n is None:
            self.available = False
            return None
        self.available = True
        self._cache[key] = n
        return n

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass
