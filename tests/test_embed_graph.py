"""The int8 rewrite of the MiniLM graph: same model, int8 weights kept int8, less memory."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from sessionctl import embed
from sessionctl.embed import graph, minilm
from sessionctl.errors import EmbeddingError


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return minilm.read_model_bytes()


def test_rewrite_keeps_weights_int8(model_bytes: bytes) -> None:
    out = graph.quantised_graph(model_bytes)
    assert out.count(b"MatMulNBits") >= 36
    # No weight is dequantised any more except by looked-up row: the 30522-row
    # table's Cast+Mul chain is gone, and the file is about the int8 size.
    assert b"inner.embeddings.word_embeddings.weight_cast" not in out
    assert len(out) < len(model_bytes) * 1.2
    # The exported erf GELU (Div, Erf, Add, Mul, Mul) is one com.microsoft Gelu.
    assert out.count(b"Gelu") >= 6
    assert b"".join(graph.quantised_graph_pieces(model_bytes)) == out


def test_rewrite_refuses_a_graph_it_does_not_know(model_bytes: bytes) -> None:
    rewritten = graph.quantised_graph(model_bytes)
    with pytest.raises(EmbeddingError, match="expected form"):
        graph.quantised_graph(rewritten)  # nothing left to rewrite
    with pytest.raises(EmbeddingError):
        graph.quantised_graph(b"\x0b")  # not protobuf


def test_sealed_memory_file_and_bytes_give_the_same_vectors(model_bytes: bytes) -> None:
    texts = ["My favourite colour is blue.", "", "the deploy moved to friday " * 20]
    loaded = minilm.load_minilm()  # through a sealed memfd where there is one
    from_bytes = minilm.MiniLMEmbedder(model_bytes, minilm.read_tokenizer_json())
    assert np.abs(loaded.embed(texts) - from_bytes.embed(texts)).max() < 1e-6


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="no memfd on this system")
def test_sealed_graph_cannot_be_written() -> None:
    fd = minilm._sealed_graph([b"abc", memoryview(b"def")])
    assert isinstance(fd, int)
    try:
        assert os.pread(fd, 10, 0) == b"abcdef"
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"x", 0)
    finally:
        os.close(fd)


def test_fidelity_on_chat_text_against_float32_weights(model_bytes: bytes) -> None:
    """int8 activations (blocks of 16) against the 0.1 float32 run of the same weights."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    reference = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    model = embed.get_embedder()
    assert isinstance(model, minilm.MiniLMEmbedder)
    texts = [
        f"please remind me about the {w} meeting on monday, and send the budget report to {w}"
        for w in ("team", "client", "server", "garden", "holiday", "invoice")
    ]
    ours = model.embed(texts)
    for text, vec in zip(texts, ours, strict=True):
        ids = np.asarray([model._encode([text])[0].ids], dtype=np.int64)
        (hidden,) = reference.run(
            None,
            {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids},
        )
        ref = hidden[0].mean(axis=0)
        assert float(vec @ ref / np.linalg.norm(ref)) >= 0.999


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc (VmHWM)")
def test_peak_memory_of_load_and_catch_up() -> None:
    """0.1 peaked at ~300 MiB here (float32 weights folded at load); now ~130.

    VmHWM, not ru_maxrss: Linux carries a parent's peak into ru_maxrss across
    exec, and this pytest process is far bigger than the child.
    """
    code = (
        "import re\n"
        "from sessionctl.embed import get_embedder\n"
        "m = get_embedder()\n"
        "texts = [' '.join(['budget meeting deploy garden'] * 13) + str(i) for i in range(256)]\n"
        "for s in range(0, 256, 64): m.embed(texts[s:s + 64])\n"
        "status = open('/proc/self/status').read()\n"
        "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1)) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) < 200, out.stdout
