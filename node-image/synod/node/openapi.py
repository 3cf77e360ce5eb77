"""The OpenAPI 3.1 document of the client API, generated from the route table.

Request schemas are the very dicts the server validates with (Principle 3: one source
of truth), so the document cannot promise a check the server skips or miss one it
makes. Every operation lists its problem codes grouped by HTTP status.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from synod.codes import CODES
from synod.node.problems import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_PREFIX
from synod.node.routes import RouteSpec
from synod.node.schema import Schema, integer, string

__all__ = ["OPENAPI_VERSION", "PROBLEM_SCHEMA", "SESSION_HEADER_PARAMETERS", "openapi_document"]

OPENAPI_VERSION = "3.1.0"

PROBLEM_SCHEMA: Schema = {
    "type": "object",
    "description": "RFC 9457 problem document; extension members carry details such as "
    "limit, max, compact_revision, leader_id, leader_client_url",
    "properties": {
        "type": string(f"{PROBLEM_TYPE_PREFIX}<code>"),
        "title": string(),
        "status": integer(minimum=400, maximum=599),
        "detail": string(),
        "code": string("the stable machine code", enum=tuple(CODES)),
    },
    "required": ["type", "title", "status", "detail", "code"],
}

SESSION_HEADER_PARAMETERS: list[dict[str, Any]] = [
    {"name": "Synod-Client-Id", "in": "header", "required": False,
     "description": "session id from POST /v1/session/open", "schema": integer(minimum=1)},
    {"name": "Synod-Seq", "in": "header", "required": False,
     "description": "request number of the session (1, 2, 3...)", "schema": integer(minimum=1)},
    {"name": "Synod-Ack-Seq", "in": "header", "required": False,
     "description": "every answer below this seq was received", "schema": integer()},
]  # fmt: skip


def _parameters(spec: RouteSpec) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": schema}
        for name, schema in spec.path_params.items()
    ]
    if spec.query is not None:
        required = set(spec.query.get("required", []))
        for name, schema in spec.query["properties"].items():
            param: dict[str, Any] = {"name": name, "in": "query", "required": name in required,
                                     "schema": schema}  # fmt: skip
            if spec.example is not None and name in spec.example:
                param["example"] = spec.example[name]
            params.append(param)
    if spec.session:
        params.extend(SESSION_HEADER_PARAMETERS)
    return params


def _responses(spec: RouteSpec) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": spec.summary,
                "content": {spec.content_type: {"schema": spec.response}}},
    }  # fmt: skip
    by_status: dict[int, list[str]] = {}
    for code in spec.all_errors:
        by_status.setdefault(CODES[code].status, []).append(code)
    for status, codes in sorted(by_status.items()):
        responses[str(status)] = {
            "description": "problem: " + ", ".join(codes),
            "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return responses


def _operation(spec: RouteSpec) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": spec.operation_id,
        "summary": spec.summary,
        "responses": _responses(spec),
    }
    parameters = _parameters(spec)
    if parameters:
        operation["parameters"] = parameters
    if spec.body is not None:
        media: dict[str, Any] = {"schema": spec.body}
        if spec.example is not None:
            media["example"] = spec.example
        # An empty body is the empty object, so only bodies with required members are
        # required.
        operation["requestBody"] = {"required": bool(spec.body.get("required")),
                                    "content": {"application/json": media}}  # fmt: skip
    return operation


def openapi_document(specs: Sequence[RouteSpec]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``specs``. Raises nothing."""
    paths: dict[str, dict[str, Any]] = {}
    for spec in specs:
        methods = paths.setdefault(spec.path, {})
        assert spec.method.lower() not in methods, f"{spec.route_id} is listed twice"
        methods[spec.method.lower()] = _operation(spec)
    document = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Synod client API", "version": "1",
                 "description": "Consensus-backed KV with leases and watches (docs/api.md)"},
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {"schemas": {"Problem": PROBLEM_SCHEMA}},
        # Every problem code with its status and whether a write that failed with it
        # was surely not applied ("definite") or may have been ("indeterminate").
        "x-synod-problem-codes": {
            entry.code: {"status": entry.status, "title": entry.title,
                         "outcome": entry.outcome.value, "description": entry.description}
            for entry in CODES.values()
        },
    }  # fmt: skip
    assert sum(len(methods) for methods in paths.values()) == len(specs)
    return document
