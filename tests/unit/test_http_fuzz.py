"""Property: any JSON body on any POST route answers 2xx or a 4xx problem document, never
a 5xx, and a refused request changes nothing."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synod.node.http import HttpLimits, build_app
from synod.node.problems import PROBLEM_TYPE_PREFIX
from synod.node.routes import RouteSpec, route_specs
from synod.services.limits import ServiceLimits
from tests.unit.memory_node import MemoryNode

LIMITS = ServiceLimits(key_bytes_max=8, value_bytes_max=16, ops_per_txn_max=3,
                       compares_per_txn_max=3, range_limit_max=4, keys_per_lease_max=3,
                       events_per_revision_max=3, lease_ttl_ms_min=1000)  # fmt: skip
POST_SPECS = [spec for spec in route_specs(LIMITS) if spec.method == "POST"]

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.just("\ud800")
)
JUNK = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=8)  # fmt: skip


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Mostly well-formed values of ``schema``, sometimes junk anywhere."""
    kinds = schema.get("type")
    kind = kinds[0] if isinstance(kinds, list) else kinds
    if "enum" in schema:
        shaped: st.SearchStrategy[Any] = st.sampled_from(schema["enum"])
    elif kind == "object":
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        shaped = st.fixed_dictionaries(
            {name: from_schema(properties[name]) for name in required},
            optional={
                name: from_schema(s) for name, s in properties.items() if name not in required
            },
        )
        if schema.get("maxProperties") == 1:
            shaped = st.sampled_from(sorted(properties)).flatmap(
                lambda name: st.fixed_dictionaries({name: from_schema(properties[name])})
            )
    elif kind == "array":
        shaped = st.lists(from_schema(schema["items"]), max_size=4)
    elif kind == "string":
        shaped = st.text(max_size=10) | st.sampled_from(["k", "k/1", "\x00", "é" * 5])
    elif kind == "integer":
        shaped = st.integers(min_value=-1, max_value=2**63) | st.integers(0, 3)
    elif kind == "boolean":
        shaped = st.booleans()
    else:
        shaped = JUNK
    # One node in ten is junk, so most bodies are deep enough to reach the node.
    return st.integers(0, 9).flatmap(lambda n: JUNK if n == 0 else shaped)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, MemoryNode]]:
    """The app on a real port, served from a thread with its own event loop."""
    node = MemoryNode(limits=LIMITS)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(build_app(node, limits=HttpLimits(service=LIMITS)))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["runner"] = runner
        holder["port"] = runner.addresses[0][1]
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()),
                                              loop.run_forever()), daemon=True)  # fmt: skip
    thread.start()
    assert started.wait(10)
    yield f"http://127.0.0.1:{holder['port']}", node
    asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def post(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            if response.headers["Content-Type"] == "application/x-ndjson":  # /v1/batch
                return response.status, {"lines": [json.loads(x) for x in raw.splitlines()]}
            return response.status, json.loads(raw)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def check_answer(status: int, answer: dict[str, Any]) -> None:
    """A success has a header, a failure is a well-formed problem; never a 5xx."""
    assert status < 500, answer
    if status >= 400:
        assert answer["type"] == PROBLEM_TYPE_PREFIX + answer["code"], answer
        assert answer["status"] == status and answer["detail"]
    else:
        assert "header" in answer


@pytest.mark.parametrize("spec", POST_SPECS, ids=lambda spec: spec.operation_id)
def test_any_body_is_answered_or_refused_cleanly(
    server: tuple[str, MemoryNode], spec: RouteSpec
) -> None:
    base, node = server
    assert spec.body is not None

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=from_schema(spec.body))
    def check(body: Any) -> None:
        before = (node.revision, len(node.machine.leases), len(node.machine.sessions))
        status, answer = post(base + spec.path, body)
        if status == 200 and "lines" in answer:  # a batch: each operation answers alone
            assert sorted(line["i"] for line in answer["lines"]) == list(range(len(body["ops"])))
            for line in answer["lines"]:
                check_answer(line["status"], line["body"])
            return
        check_answer(status, answer)
        if status >= 400:
            after = (node.revision, len(node.machine.leases), len(node.machine.sessions))
            assert after == before, (body, answer)

    check()
