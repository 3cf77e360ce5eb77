"""The OpenAPI document is generated from the route table the server validates with."""

from __future__ import annotations

from typing import Any

import pytest

from synod.node.http import HttpLimits, build_app
from synod.node.openapi import openapi_document
from synod.node.problems import PROBLEM_TITLES
from synod.node.routes import route_specs
from synod.node.schema import validate
from synod.services.limits import ServiceLimits
from tests.unit.http_helpers import async_test, serve
from tests.unit.memory_node import MemoryNode

SCHEMA_KEYWORDS = {
    "type", "properties", "required", "additionalProperties", "minProperties",
    "maxProperties", "items", "minItems", "maxItems", "minLength", "maxLength",
    "x-maxBytes", "minimum", "maximum", "enum", "description", "examples", "default",
    "x-synod-limit", "format", "$ref",
}  # fmt: skip


def _schemas(node: Any) -> list[dict[str, Any]]:
    """Every schema nested in a schema."""
    out = [node]
    for sub in node.get("properties", {}).values():
        out.extend(_schemas(sub))
    if isinstance(node.get("items"), dict):
        out.extend(_schemas(node["items"]))
    return out


@async_test
async def test_served_document_matches_router_both_ways() -> None:
    node = MemoryNode()
    async with serve(node) as client:
        response = await client.get("/v1/openapi.json")
        assert response.status == 200
        document = await response.json()
        assert client.app is not None
        routed = {
            (route.method.lower(), route.resource.canonical)
            for route in client.app.router.routes()
            if route.resource is not None
        }
    documented = {(m, path) for path, methods in document["paths"].items() for m in methods}
    assert routed == documented
    assert document["openapi"] == "3.1.0"
    assert document == openapi_document(route_specs())


def test_every_operation_is_complete_and_uses_known_keywords() -> None:
    document = openapi_document(route_specs())
    ids = set()
    for methods in document["paths"].values():
        for operation in methods.values():
            ids.add(operation["operationId"])
            assert "200" in operation["responses"]
            for status, response in operation["responses"].items():
                if status != "200":
                    assert int(status) in {s for s, _ in PROBLEM_TITLES.values()}
                    assert "application/problem+json" in response["content"]
            schemas = []
            if "requestBody" in operation:
                schema = operation["requestBody"]["content"]["application/json"]["schema"]
                assert schema["additionalProperties"] is False
                schemas.extend(_schemas(schema))
            for param in operation.get("parameters", []):
                schemas.extend(_schemas(param["schema"]))
            for schema in schemas:
                assert set(schema) <= SCHEMA_KEYWORDS, operation["operationId"]
                if schema.get("type") == "object":
                    assert schema.get("additionalProperties") is False
    assert len(ids) == len(route_specs())


def test_limits_appear_in_the_document() -> None:
    limits = ServiceLimits(key_bytes_max=77, ops_per_txn_max=9)
    document = openapi_document(route_specs(limits))
    put = document["paths"]["/v1/kv/put"]["post"]["requestBody"]["content"]["application/json"]
    key = put["schema"]["properties"]["key"]
    assert key["maxLength"] == key["x-maxBytes"] == 77 and key["x-synod-limit"] == "key_bytes_max"
    txn = document["paths"]["/v1/kv/txn"]["post"]["requestBody"]["content"]["application/json"]
    assert txn["schema"]["properties"]["success"]["maxItems"] == 9
    assert build_app(MemoryNode(limits=limits), limits=HttpLimits(service=limits)) is not None


@pytest.mark.parametrize("spec", [s for s in route_specs() if s.example is not None],
                         ids=lambda s: s.operation_id)  # fmt: skip
@async_test
async def test_examples_validate_and_are_accepted(spec: Any) -> None:
    schema = spec.body if spec.body is not None else spec.query
    validate(spec.example, schema)
    node = MemoryNode()
    node.apply({"kind": "lease_grant", "id": 1, "ttl_ms": 10_000})
    node.apply({"kind": "put", "key": b"k", "value": b"first", "lease": 0, "prev_kv": False})
    async with serve(node) as client:
        path = spec.path.replace("{key}", "k")
        if spec.method == "GET":
            query = {k: str(v).lower() for k, v in spec.example.items()}
            response = await client.get(path, params=query)
            if spec.operation_id == "watch":
                assert response.status == 200
                response.close()
                return
        else:
            response = await client.post(path, json=spec.example)
        assert response.status not in (400, 413), await response.text()
