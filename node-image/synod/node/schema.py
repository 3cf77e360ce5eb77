"""Strict JSON parsing and a small JSON Schema validator (the subset the API uses).

The request schemas in :mod:`synod.node.routes` are plain JSON Schema 2020-12 dicts:
the validator here checks requests against them and :mod:`synod.node.openapi` publishes
the very same dicts, so the document cannot drift from what is enforced. The validator
refuses (asserts) any keyword it does not implement, so a schema can never promise a
check that is silently skipped.

Failures are :class:`~synod.node.problems.Problem` s: ``invalid-argument`` (400) for
malformed JSON, wrong types, unknown or missing fields and out-of-range values;
``too-large`` (413) when a bound marked ``x-synod-limit`` is exceeded (the problem
names the limit and its ``max``).
"""

from __future__ import annotations

import json
from typing import Any

from synod.node.problems import Problem

__all__ = [
    "INT64_MAX",
    "Schema",
    "boolean",
    "integer",
    "obj",
    "parse_json",
    "string",
    "validate",
]

Schema = dict[str, Any]
INT64_MAX = 2**63 - 1

_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "minProperties",
        "maxProperties", "items", "minItems", "maxItems", "minLength", "maxLength",
        "x-maxBytes", "minimum", "maximum", "enum", "description", "examples", "default",
        "x-synod-limit", "format",
    }
)  # fmt: skip
_TYPE_CHECKS = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


# -- schema builders (short, so the route table reads like the API doc) -----------------


def string(
    description: str = "",
    *,
    min_length: int = 0,
    bytes_max: int | None = None,
    limit: str | None = None,
    enum: tuple[str, ...] = (),
) -> Schema:
    """A string schema; ``bytes_max`` bounds its UTF-8 size (413 when ``limit`` names the
    bound, else 400). Raises nothing."""
    schema: Schema = {"type": "string"}
    if description:
        schema["description"] = description
    if min_length:
        schema["minLength"] = min_length
    if bytes_max is not None:
        # maxLength counts characters: one is at least one byte, so it is a true bound
        # that generic tools understand; x-maxBytes is the exact one.
        schema["maxLength"] = bytes_max
        schema["x-maxBytes"] = bytes_max
    if limit is not None:
        assert bytes_max is not None
        schema["x-synod-limit"] = limit
    if enum:
        schema["enum"] = list(enum)
    return schema


def integer(
    description: str = "",
    *,
    minimum: int = 0,
    maximum: int = INT64_MAX,
    limit: str | None = None,
) -> Schema:
    """A signed 64-bit integer schema in ``[minimum, maximum]``. Raises nothing."""
    assert minimum <= maximum
    schema: Schema = {"type": "integer", "minimum": minimum, "maximum": maximum}
    if description:
        schema["description"] = description
    if limit is not None:
        schema["x-synod-limit"] = limit
    return schema


def boolean(description: str = "") -> Schema:
    """A boolean schema. Raises nothing."""
    schema: Schema = {"type": "boolean"}
    if description:
        schema["description"] = description
    return schema


def obj(
    properties: dict[str, Schema],
    required: tuple[str, ...] = (),
    description: str = "",
    *,
    exactly_one: bool = False,
) -> Schema:
    """A closed object (``additionalProperties: false``); ``exactly_one`` requires
    exactly one of the properties (a tagged union such as a txn op). Raises nothing."""
    assert set(required) <= set(properties)
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    if exactly_one:
        schema["minProperties"] = 1
        schema["maxProperties"] = 1
    if description:
        schema["description"] = description
    return schema


# -- strict JSON -------------------------------------------------------------------------


def _no_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON allows duplicate members; which one wins differs between parsers, so a
    request with one is ambiguous. Raises ValueError."""
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise ValueError(f"duplicate member {name!r}")
        out[name] = value
    return out


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON. Raises ValueError."""
    raise ValueError(f"{name} is not valid JSON")


def parse_json(data: bytes) -> Any:
    """Parse a request body as strict JSON (UTF-8, no duplicate members, no NaN).

    Raises Problem invalid-argument.
    """
    assert isinstance(data, bytes)
    try:
        text = data.decode("utf-8")
        return json.loads(
            text, object_pairs_hook=_no_duplicate_members, parse_constant=_no_constant
        )
    except UnicodeDecodeError:
        raise Problem("invalid-argument", "request body is not valid UTF-8") from None
    except RecursionError:
        raise Problem("invalid-argument", "request body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise Problem("invalid-argument", f"request body is not valid JSON: {exc}") from None


# -- validation --------------------------------------------------------------------------


def _where(path: str) -> str:
    return f"field {path!r}" if path else "request body"


def _too_large(schema: Schema, path: str, what: str, bound: int) -> Problem:
    """413 if the bound is a named limit, else 400."""
    limit = schema.get("x-synod-limit")
    if limit is None:
        return Problem("invalid-argument", f"{_where(path)} {what} {bound}")
    return Problem("too-large", f"{_where(path)} {what} {limit}={bound}", limit=limit, max=bound)


def validate(value: Any, schema: Schema, path: str = "") -> None:
    """Check ``value`` against ``schema``.

    Raises Problem invalid-argument (400) or too-large (413, for ``x-synod-limit``
    bounds); AssertionError if the schema uses a keyword this validator lacks.
    """
    assert set(schema) <= _KEYWORDS, f"unsupported schema keywords {set(schema) - _KEYWORDS}"
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if types and not any(_TYPE_CHECKS[name](value) for name in types):
        raise Problem("invalid-argument", f"{_where(path)} must be {' or '.join(types)}")
    if "enum" in schema and value not in schema["enum"]:
        raise Problem("invalid-argument", f"{_where(path)} must be one of {schema['enum']}")
    if isinstance(value, dict):
        _validate_object(value, schema, path)
    elif isinstance(value, list):
        _validate_array(value, schema, path)
    elif isinstance(value, str):
        _validate_string(value, schema, path)
    elif isinstance(value, int) and not isinstance(value, bool):
        _validate_integer(value, schema, path)


def _validate_object(value: dict[str, Any], schema: Schema, path: str) -> None:
    properties: dict[str, Schema] = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in value:
            raise Problem("invalid-argument", f"{_where(path)} is missing field {name!r}")
    if schema.get("additionalProperties", True) is False:
        for name in value:
            if name not in properties:
                raise Problem("invalid-argument", f"{_where(path)} has unknown field {name!r}")
    count, least = len(value), schema.get("minProperties", 0)
    most = schema.get("maxProperties", count)
    if not least <= count <= most:
        names = sorted(properties)
        wanted = "exactly one" if least == most == 1 else f"at least {least}"
        raise Problem("invalid-argument", f"{_where(path)} must have {wanted} of {names}")
    for name, item in value.items():
        if name in properties:
            validate(item, properties[name], f"{path}.{name}" if path else name)


def _validate_array(value: list[Any], schema: Schema, path: str) -> None:
    if len(value) < schema.get("minItems", 0):
        raise Problem("invalid-argument", f"{_where(path)} needs {schema['minItems']} items")
    items_max = schema.get("maxItems")
    if items_max is not None and len(value) > items_max:
        raise _too_large(schema, path, f"has {len(value)} items, more than", items_max)
    item_schema = schema.get("items")
    if item_schema is not None:
        for index, item in enumerate(value):
            validate(item, item_schema, f"{path}[{index}]")


def _validate_string(value: str, schema: Schema, path: str) -> None:
    try:
        size_bytes = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate such as "\ud800"
        raise Problem("invalid-argument", f"{_where(path)} is not valid UTF-8") from None
    if len(value) < schema.get("minLength", 0):
        raise Problem("invalid-argument", f"{_where(path)} must not be empty")
    bytes_max = schema.get("x-maxBytes", schema.get("maxLength"))
    if bytes_max is not None and size_bytes > bytes_max:
        raise _too_large(schema, path, f"has {size_bytes} bytes, more than", bytes_max)


def _validate_integer(value: int, schema: Schema, path: str) -> None:
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    if minimum is not None and value < minimum:
        raise Problem("invalid-argument", f"{_where(path)} must be >= {minimum}")
    if maximum is not None and value > maximum:
        if "x-synod-limit" in schema:
            raise _too_large(schema, path, "exceeds", maximum)
        raise Problem("invalid-argument", f"{_where(path)} must be <= {maximum}")
