"""Tool schemas from plain callables (issue 16, first piece)."""

from __future__ import annotations

from typing import Literal

import pytest

from sessionctl.errors import UsageError
from sessionctl.service.tools import tool_schema


def add(
    a: int, b: float = 1.0, tags: list[str] | None = None, mode: Literal["x", "y"] = "x"
) -> float:
    """Add two numbers."""
    return a + b


def test_schema_from_hints_and_docstring() -> None:
    s = tool_schema(add)
    assert s["function"]["name"] == "add"
    assert s["function"]["description"] == "Add two numbers."
    params = s["function"]["parameters"]
    assert params["required"] == ["a"]
    assert params["properties"] == {
        "a": {"type": "integer"},
        "b": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "mode": {"enum": ["x", "y"]},
    }


def test_unsupported_annotation_is_usage_error() -> None:
    def bad(x: set[int]) -> None:
        pass

    def untyped(x) -> None:  # type: ignore[no-untyped-def]
        pass

    with pytest.raises(UsageError, match="unsupported"):
        tool_schema(bad)
    with pytest.raises(UsageError, match="missing type annotation"):
        tool_schema(untyped)
