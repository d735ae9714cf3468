"""Python callables as tools: their JSON Schema, and running the calls a model makes.

:func:`tool_schema` is the OpenAI ``tools`` entry sent to the model for a callable
(its type hints and docstring). :class:`Toolbox` runs the calls the model asks for:
the arguments are parsed from the model's JSON, the function is called, and its
result (or the error, as ``"error: ExcType: message"``) becomes the ``tool`` message
sent back. A tool's return value is sent as is when it is text, otherwise as JSON
(``default=str`` for what JSON cannot hold).

Supported annotations: str, int, float, bool, list, dict, ``list[X]``,
``dict[str, X]``, ``Optional[X]`` / ``X | None`` and ``Literal``. A parameter with
a default is not required. Anything else is a UsageError, raised before any model
call.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from typing import Any, NamedTuple

from sessionctl.errors import UsageError

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for function names
DEFAULT_MAX_TOOL_ROUNDS = 8  # model answers with tool calls run per turn, at most

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
    import inspect  # ~6 ms: only for a chat with tools, not for every command

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


class ToolCall(NamedTuple):
    """One tool call the model made and what it returned (as sent back to the model)."""

    id: str  # the model's tool_call_id
    name: str
    arguments: str  # the JSON text the model sent
    result: str  # the tool message's content
    error: bool = False  # the call failed: unknown tool, bad arguments, or it raised


class Toolbox:
    """The callables of one ``chat(tools=[...])``, by name, with their schemas."""

    def __init__(self, tools: Any) -> None:
        if callable(tools) or isinstance(tools, (str, bytes, dict)):
            raise UsageError("tools must be a list of functions, e.g. tools=[get_weather]")
        try:
            fns = list(tools)
        except TypeError:
            raise UsageError(
                f"tools must be a list of functions, got {type(tools).__name__}"
            ) from None
        self.schemas = [tool_schema(fn) for fn in fns]
        self.functions: dict[str, Callable[..., Any]] = {}
        for fn, schema in zip(fns, self.schemas, strict=True):
            name = schema["function"]["name"]
            if not _NAME.fullmatch(name):
                raise UsageError(
                    f"tool name {name!r} is not one a model accepts (letters, digits, _ and -, "
                    "at most 64): pass a named function, not a lambda"
                )
            if name in self.functions:
                raise UsageError(f"two tools are named {name!r}: tool names must be unique")
            self.functions[name] = fn

    def run(self, call: dict[str, Any]) -> ToolCall:
        """Run one tool call (OpenAI shape); a failure is an error result, never a raise."""
        import json

        fn_part = call.get("function") or {}
        name = str(fn_part.get("name") or "")
        arguments = fn_part.get("arguments")
        arguments = arguments if isinstance(arguments, str) else ""
        call_id = str(call.get("id") or "")

        def failed(text: str) -> ToolCall:
            return ToolCall(call_id, name, arguments, f"error: {text}", True)

        fn = self.functions.get(name)
        if fn is None:
            known = ", ".join(self.functions) or "none"
            return failed(f"UnknownTool: no tool named {name!r} (tools: {known})")
        try:
            args = json.loads(arguments) if arguments.strip() else {}
        except ValueError as exc:
            return failed(f"BadArguments: arguments are not valid JSON ({exc})")
        if not isinstance(args, dict):
            return failed(f"BadArguments: arguments must be a JSON object, got {arguments!r}")
        try:
            value = fn(**args)
        except Exception as exc:
            return failed(f"{type(exc).__name__}: {exc}")
        if isinstance(value, str):
            return ToolCall(call_id, name, arguments, value)
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError) as exc:  # circular, NaN...
            return failed(f"{type(exc).__name__}: the result is not JSON ({exc})")
        return ToolCall(call_id, name, arguments, text)
