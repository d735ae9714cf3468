"""What servers report about themselves: window shapes of vLLM and Ollama (which a
real llama-server cannot show), /tokenize, and failures being "unknown"."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from sessionctl.llm.server import Tokenizer, probe_window, server_root


class _Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, Any]]] = {}
    seen: ClassVar[list[str]] = []

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append(f"{self.command} {self.path} {body.decode()}")
        status, data = self.routes.get(f"{self.command} {self.path}", (404, {"error": "no"}))
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = _reply

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def facts_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"routes": {}, "seen": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_vllm_max_model_len_of_the_named_model(facts_server: Any) -> None:
    base, handler = facts_server
    handler.routes["GET /v1/models"] = (
        200,
        {"data": [{"id": "other", "max_model_len": 4096}, {"id": "qwen", "max_model_len": 32768}]},
    )
    assert probe_window(f"{base}/v1", "qwen") == 32768
    assert probe_window(f"{base}/v1", "hosted_vllm/qwen") == 32768


def test_ollama_context_length_from_api_show(facts_server: Any) -> None:
    base, handler = facts_server
    handler.routes["POST /api/show"] = (200, {"model_info": {"llama.context_length": 131072}})
    assert probe_window(base, "ollama/llama3.2") == 131072
    assert '"model": "llama3.2"' in handler.seen[-1]


@pytest.mark.parametrize(
    "reply",
    [(404, {}), (200, {"data": []}), (200, {"data": [{"id": "m", "meta": {"n_ctx": "big"}}]})],
)
def test_nothing_usable_is_unknown(facts_server: Any, reply: tuple[int, Any]) -> None:
    base, handler = facts_server
    handler.routes["GET /v1/models"] = reply
    assert probe_window(f"{base}/v1", "m") is None


def test_tokenizer_counts_once_per_text_and_gives_up_on_a_404(facts_server: Any) -> None:
    base, handler = facts_server
    handler.routes["POST /tokenize"] = (200, {"tokens": [1, 2, 3]})
    tok = Tokenizer(f"{base}/v1", "m")
    assert tok.count("abc") == 3 and tok.count("abc") == 3
    assert tok.requests == 1  # cached per text
    handler.routes["POST /tokenize"] = (404, {})
    assert tok.count("new text") is None and tok.available is False
    assert tok.count("other") is None and tok.requests == 2  # not asked again
    tok.close()


def test_vllm_tokenize_count(facts_server: Any) -> None:
    base, handler = facts_server
    handler.routes["POST /tokenize"] = (200, {"count": 7, "max_model_len": 4096})
    assert Tokenizer(f"{base}/v1", "hosted_vllm/q").count("x") == 7


def test_server_root_drops_v1() -> None:
    assert server_root("http://h:1/v1/").path == ""
    assert server_root("http://h:1/proxy/v1").path == "/proxy"
