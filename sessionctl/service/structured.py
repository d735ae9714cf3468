"""Structured output for ``Session.json``: the schema a model is asked to follow, and
checking its answer against it.

A schema is a pydantic model class (validated with ``model_validate_json``; the
answer becomes an instance) or a JSON Schema dict (validated with ``jsonschema``,
a dependency of the MCP SDK sessionctl already needs; the answer becomes the parsed
JSON value). Neither pydantic nor jsonschema is imported unless used.

The provider is asked for it with OpenAI's ``response_format`` (``json_schema``).
``strict`` is true only when the schema meets OpenAI's strict-mode rules (every
object lists all its properties as required and sets ``additionalProperties:
false``): OpenAI refuses a strict request for any other schema, and a pydantic model
with an optional field or without ``extra="forbid"`` is one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from sessionctl.errors import UsageError

_NAME = re.compile(r"[^A-Za-z0-9_-]+")  # response_format names: letters, digits, _ and -


class Schema:
    """A ``json()`` schema: what is sent as ``response_format`` and how answers are checked."""

    def __init__(self, schema: Any) -> None:
        self.model: Any = None  # the pydantic model class, if that is what was given
        if isinstance(schema, type) and callable(getattr(schema, "model_validate_json", None)):
            self.model = schema
            try:
                self.schema: dict[str, Any] = self.model.model_json_schema()
            except Exception as exc:  # pydantic's own error for a model it cannot describe
                raise UsageError(f"cannot make a JSON Schema of {schema.__name__}: {exc}") from None
            title = schema.__name__
        elif isinstance(schema, Mapping):
            try:  # a plain JSON copy: what is sent is what is validated
                self.schema = json.loads(json.dumps(dict(schema), allow_nan=False))
            except (TypeError, ValueError, RecursionError) as exc:
                raise UsageError(f"the JSON Schema is not JSON ({exc})") from None
            self._validator = _validator(self.schema)
            title = str(self.schema.get("title") or "response")
        else:
            raise UsageError(
                "schema must be a pydantic model class or a JSON Schema dict, "
                f"got {type(schema).__name__}"
            )
        self.name = (_NAME.sub("_", title).strip("_") or "response")[:64]
        self.strict = _strict_ok(self.schema)

    def response_format(self) -> dict[str, Any]:
        """The OpenAI ``response_format`` asking for this schema."""
        return {
            "type": "json_schema",
            "json_schema": {"name": self.name, "schema": self.schema, "strict": self.strict},
        }

    def validate(self, text: str) -> tuple[Any, str | None]:
        """``(value, None)`` for an answer that validates, else ``(None, what is wrong)``."""
        body = _unfenced(text)
        if self.model is not None:
            import pydantic

            try:
                return self.model.model_validate_json(body), None
            except pydantic.ValidationError as exc:
                return None, _pydantic_problem(exc)
        try:
            value = json.loads(body)
        except ValueError as exc:
            return None, f"not valid JSON ({exc})"
        errors = sorted(self._validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if not errors:
            return value, None
        return None, "; ".join(f"{_where(e.absolute_path)}: {e.message}" for e in errors[:5])


def _validator(schema: dict[str, Any]) -> Any:
    """A jsonschema validator for ``schema``, or UsageError if it is not a valid schema."""
    try:
        import jsonschema  # type: ignore[import-untyped]  # (no stubs installed)
    except ImportError:  # pragma: no cover - a dependency of mcp, always installed
        raise UsageError(
            "JSON Schema validation needs the jsonschema package: pip install jsonschema, "
            "or pass a pydantic model"
        ) from None
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise UsageError(f"invalid JSON Schema: {exc.message}") from None
    return cls(schema)


def _where(path: Any) -> str:
    parts = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return "$" + parts


def _pydantic_problem(exc: Any) -> str:
    found = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "$"
        found.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(found) or str(exc)


def _unfenced(text: str) -> str:
    """The answer without one surrounding Markdown code fence (```json ... ```), which
    models without a JSON mode like to add."""
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```") and "\n" in stripped:
        return stripped[stripped.index("\n") + 1 : -3]
    return text


def _strict_ok(node: Any) -> bool:
    """Whether OpenAI's strict mode accepts ``node``: every object schema lists all its
    properties in ``required`` and sets ``additionalProperties`` to false."""
    if isinstance(node, list):
        return all(_strict_ok(item) for item in node)
    if not isinstance(node, dict):
        return True
    if node.get("type") == "object" or "properties" in node:
        props = node.get("properties") or {}
        if node.get("additionalProperties") is not False:
            return False
        if set(node.get("required") or ()) != set(props):
            return False
    return all(_strict_ok(value) for value in node.values())
