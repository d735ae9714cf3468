"""A litellm embedding model (``text-embedding-3-small``, ``ollama/nomic-embed-text`` ...).

litellm is imported on first use through :func:`sessionctl.llm.import_litellm`
(offline model map, quiet), the one place that imports it. The dimension is learned
from the first response (asking for it before any call costs one probe call).
Failures of the call itself (auth, network, rate limit, timeout, unknown model)
are :class:`~sessionctl.errors.ProviderError` (exit 4); a response that is not
a consistent set of vectors is an :class:`~sessionctl.errors.EmbeddingError`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sessionctl.errors import EmbeddingError, ProviderError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

#: Texts per request (OpenAI accepts up to 2048; smaller keeps requests light).
REQUEST_BATCH = 128


def _import_litellm() -> Any:
    # The llm layer owns litellm: it imports it once, offline
    # (LITELLM_LOCAL_MODEL_COST_MAP=True) and quiet.
    from sessionctl.llm import import_litellm

    return import_litellm()


def _provider_error(exc: BaseException, model: str, api_base: str | None) -> ProviderError:
    """One line, no secrets; HTTP statuses map to the llm layer's error classes."""
    from sessionctl.llm.errors import error_for_status, scrub

    secrets = [v for k, v in os.environ.items() if k.endswith(("_API_KEY", "_TOKEN", "_SECRET"))]
    raw = getattr(exc, "message", None) or str(exc)
    detail = scrub(str(raw).replace("litellm.", ""), secrets)
    status = getattr(exc, "status_code", None)
    where = api_base or "the embedding provider"
    if isinstance(status, int) and status >= 400:
        error = error_for_status(status, model=model, where=where, detail=detail)
        error.message = f"embedding model {model}: {error.message}"
        error.args = (error.message,)
        return error
    return ProviderError(f"embedding model {model} failed: {type(exc).__name__}: {detail}")


def _field(item: Any, name: str) -> Any:
    if isinstance(item, dict):
        return item.get(name)
    return getattr(item, name, None)


class LiteLLMEmbedder:
    """An embedding model reached through ``litellm.embedding``."""

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        default_distance_threshold: float | None = None,
        timeout: float = 60.0,
    ) -> None:
        from sessionctl.embed.defaults import LITELLM_DISTANCE_THRESHOLD

        self.model = model
        self.api_base = api_base
        self.timeout = timeout
        self._threshold = (
            LITELLM_DISTANCE_THRESHOLD
            if default_distance_threshold is None
            else default_distance_threshold
        )
        self._dimension: int | None = None

    @property
    def model_id(self) -> str:
        return f"litellm:{self.model}"

    @property
    def default_distance_threshold(self) -> float:
        return self._threshold

    @property
    def known_dimension(self) -> int | None:
        """The dimension if a call has shown it, else None (no probe)."""
        return self._dimension

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self.embed(["dimension probe"])
        assert self._dimension is not None
        return self._dimension

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Unit vectors for ``texts`` in input order."""
        import numpy as np

        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one str")
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        parts = [
            self._request(list(texts[i : i + REQUEST_BATCH]))
            for i in range(0, len(texts), REQUEST_BATCH)
        ]
        vectors = np.vstack(parts)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.all(np.isfinite(vectors)) or np.any(norms == 0):
            raise EmbeddingError(f"embedding model {self.model} returned a zero or invalid vector")
        normalised: npt.NDArray[np.float32] = (vectors / norms).astype(np.float32)
        return normalised

    def _request(self, texts: list[str]) -> npt.NDArray[np.float32]:
        import numpy as np

        litellm = _import_litellm()
        # Providers reject empty input; a space embeds as "nothing".
        payload = [t if t.strip() else " " for t in texts]
        kwargs: dict[str, Any] = {"model": self.model, "input": payload, "timeout": self.timeout}
        if self.api_base is not None:
            kwargs["api_base"] = self.api_base
        try:
            response = litellm.embedding(**kwargs)
        except Exception as exc:
            raise _provider_error(exc, self.model, self.api_base) from None
        data = list(_field(response, "data") or [])
        if len(data) != len(texts):
            raise EmbeddingError(
                f"embedding model {self.model} returned {len(data)} vectors for {len(texts)} texts"
            )
        data.sort(key=lambda item: int(_field(item, "index") or 0))
        try:
            vectors = np.asarray([_field(item, "embedding") for item in data], dtype=np.float32)
        except (TypeError, ValueError):
            raise EmbeddingError(
                f"embedding model {self.model} returned vectors of unequal or invalid length"
            ) from None
        if vectors.ndim != 2 or vectors.shape[1] == 0:
            raise EmbeddingError(f"embedding model {self.model} returned no usable vectors")
        if self._dimension is None:
            self._dimension = int(vectors.shape[1])
        elif vectors.shape[1] != self._dimension:
            raise EmbeddingError(
                f"embedding model {self.model} changed dimension "
                f"from {self._dimension} to {vectors.shape[1]}"
            )
        return vectors
