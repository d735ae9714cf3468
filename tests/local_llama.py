"""A real local model server for tests: llama.cpp's llama-server serving Gemma 3 270M.

Built and cached by ``.ci/llama-server.sh`` (outside the clone); found through
``$SESSIONCTL_LLAMA_DIR`` (default ``/var/cache/sessionctl-ci/llama``), which holds
``bin/llama-server`` and ``models/gemma-3-270m-q4_k_m.gguf``.

Tests that use the ``llama`` fixture are marked ``local_llama``. When the server or
the model is absent they are skipped, with the reason, except in CI (``CI`` set), where
an absent server is a failure: CI builds it first.

The model is a base (pretrained) model: it echoes rather than answers. Tests check
protocol, windows, tokens, overflow and records, never answer quality.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DEFAULT_DIR = "/var/cache/sessionctl-ci/llama"
WINDOW = 2048  # -c: the window the tests expect the server to report
ALIAS = "gemma3"

# The GGUF has no chat template, and `--chat-template gemma` is taken literally by
# this llama.cpp build, so the Gemma turn template is given as a file.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = "
    "messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}{%- else -%}"
    '{%- set first_user_prefix = "" -%}{%- set loop_messages = messages -%}{%- endif -%}'
    "{%- for message in loop_messages -%}{%- set role = 'model' if message['role'] == "
    "'assistant' else message['role'] -%}{{ '<start_of_turn>' + role + '\n' + "
    "(first_user_prefix if loop.first else \"\") + message['content'] | trim + "
    "'<end_of_turn>\n' }}{%- endfor -%}{%- if add_generation_prompt -%}"
    "{{ '<start_of_turn>model\n' }}{%- endif -%}\n"
)


def llama_dir() -> Path:
    return Path(os.environ.get("SESSIONCTL_LLAMA_DIR") or DEFAULT_DIR)


def _paths() -> tuple[Path, Path]:
    base = llama_dir()
    return base / "bin" / "llama-server", base / "models" / "gemma-3-270m-q4_k_m.gguf"


def missing_reason() -> str | None:
    """Why the local server cannot run here, or None when it can."""
    binary, model = _paths()
    if not os.access(binary, os.X_OK):
        return f"no llama-server at {binary} (build it with: bash .ci/llama-server.sh)"
    if not model.is_file():
        return f"no model at {model} (install it with: bash .ci/llama-server.sh)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LlamaServer:
    """A running llama-server."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    window: int = WINDOW
    alias: str = ALIAS

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base}/v1"

    def post(self, path: str, body: dict[str, Any], timeout: float = 60) -> Any:
        req = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def tokenize(self, text: str) -> int:
        """Tokens of ``text`` by the model's own tokenizer (no BOS, no template)."""
        return len(self.post("/tokenize", {"content": text})["tokens"])

    def alive(self) -> bool:
        return self.process.poll() is None


def start_server(tmp: Path, *, window: int = WINDOW) -> LlamaServer:
    binary, model = _paths()
    template = tmp / "gemma.jinja"
    template.write_text(GEMMA_TEMPLATE, encoding="utf-8")
    log = tmp / "llama-server.log"
    for _attempt in range(3):  # a free port may be taken between bind and listen
        port = _free_port()
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [
                    str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                    "-c", str(window), "-t", "1", "-np", "1", "--alias", ALIAS,
                    "--chat-template-file", str(template),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        server = LlamaServer(process, port, log, window)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(server.base + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return server
            except OSError:
                pass
            time.sleep(0.1)
        stop_server(server)
        if "address already in use" not in log.read_text(errors="replace").lower():
            break
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"llama-server did not become healthy; its log ends:\n{tail}")


def stop_server(server: LlamaServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def require() -> None:
    """Skip (or, in CI, fail) when the local server is not available."""
    reason = missing_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but the local model server is missing: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def llama_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    require()
    server = start_server(tmp_path_factory.mktemp("llama"))
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def llama(llama_session: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> LlamaServer:
    """The shared llama-server (restarted if a test killed it)."""
    if not llama_session.alive():
        fresh = start_server(tmp_path_factory.mktemp("llama"))
        llama_session.process, llama_session.port, llama_session.log = (
            fresh.process,
            fresh.port,
            fresh.log,
        )
    return llama_session
