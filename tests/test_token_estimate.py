"""The token estimate is an upper bound for every tokenizer here (tiktoken's families)."""

from __future__ import annotations

import pytest
from token_samples import samples

from sessionctl.llm.tokens import _load_encoding, estimate_text


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base", "p50k_base"])
def test_estimate_bounds_tiktoken(encoding: str) -> None:
    enc = _load_encoding(encoding)
    if enc is None:
        pytest.skip(f"tiktoken's {encoding} is not installed with litellm")
    for name, text in samples().items():
        assert estimate_text(text) >= len(enc.encode(text, disallowed_special=())), name


def test_numbers_cost_a_token_per_digit() -> None:
    # Gemma (and Llama 3) split numbers into digits: 300 integers are not 1 token each.
    assert estimate_text("123456 7") == 8
