"""End to end against a real llama-server (see tests/local_llama.py): both routes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest
from local_llama import LlamaServer, llama, llama_session

__all__ = ["llama", "llama_session"]

pytestmark = pytest.mark.local_llama

Sh = Callable[..., subprocess.CompletedProcess[str]]


def test_one_shot_answer_streams_from_the_real_server(llama: LlamaServer, sh: Sh) -> None:
    done = sh(
        "chat", "-s", "t", "-m", llama.alias, "--api-base", llama.api_base,
        "--max-tokens", "8", "--json", "Say hi",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["session"] == "t"
    assert out["usage"]["prompt_tokens"] > 0
