"""JSON Schema for a tool from a plain Python callable's type hints and docstring.

First piece of issue 16's tools: the schema sent to the model as an OpenAI
``tools`` entry.  Supported annotations: str, int, float, bool, list, dict,
``list[X]``, ``dict[str, X]``, ``Optional[X]`` / ``X | None`` and ``Literal``.
A parameter with a default is not required.  Anything else is a UsageError,
raised before any model call.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from sessionctl.errors import UsageError

_SIMPLE: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
}


def _schema(tp: Any, where: str) -> dict[str, Any]:
    if tp in _SIMPLE:
        return {"type": _SIMPLE[tp]}
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return _schema(rest[0], where)
    if origin is list and len(args) == 1:
        return {"type": "array", "items": _schema(args[0], where)}
    if origin is dict and len(args) == 2 and args[0] is str:
        return {"type": "object", "additionalProperties": _schema(args[1], where)}
    raise UsageError(f"tool {where}: unsupported type annotation {tp!r}")


def tool_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """The OpenAI ``tools`` entry for ``fn`` (type hints and docstring)."""
    name = getattr(fn, "__name__", "")
    if not name or not callable(fn):
        raise UsageError(f"tool {fn!r} is not a named callable")
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise UsageError(f"tool {name}: cannot read type hints: {exc}") from None
    props: dict[str, Any] = {}
    required: list[str] = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise UsageError(f"tool {name}: *args/**kwargs are not supported")
        if p.name not in hints:
            raise UsageError(f"tool {name}.{p.name}: missing type annotation")
        props[p.name] = _schema(hints[p.name], f"{name}.{p.name}")
        if p.default is p.empty:
            required.append(p.name)
    doc = inspect.getdoc(fn) or ""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": doc.strip(),
            "parameters": {"type": "object", "properties": props, "required": required},
        },
    }
