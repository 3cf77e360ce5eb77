"""Shared helpers of the HTTP-tier tests: run a coroutine test, serve an app."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from synod.node.http import build_app
from synod.node.problems import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_PREFIX
from tests.unit.memory_node import MemoryNode

JSON_HEADERS = {"Content-Type": "application/json"}
# Bounds a test's wait for a condition (the memory node acts within milliseconds).
WAIT_TIMEOUT_S = 10.0


def async_test(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test function in a fresh event loop (no pytest plugin needed)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


@contextlib.asynccontextmanager
async def serve(node: MemoryNode, **kwargs: Any) -> AsyncIterator[TestClient[Any, Any]]:
    """A test client of ``build_app(node)``, HTTP metrics in the node's registry. Its
    requests are declared JSON (the API refuses other bodies) unless a test says not."""
    app = build_app(node, registry=node.registry, **kwargs)
    async with TestClient(TestServer(app), headers=JSON_HEADERS) as client:
        yield client


@contextlib.asynccontextmanager
async def served_url(node: MemoryNode) -> AsyncIterator[str]:
    """Serve ``node`` through the real HTTP app on a loopback port; yields its URL."""
    server = TestServer(build_app(node, registry=node.registry))
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def problem(response: ClientResponse, status: int, code: str) -> dict[str, Any]:
    """Assert ``response`` is the problem document ``code`` with ``status``; return it."""
    body = await response.json(content_type=None)
    assert response.status == status, body
    assert response.headers["Content-Type"].startswith(PROBLEM_CONTENT_TYPE)
    assert body["type"] == PROBLEM_TYPE_PREFIX + code, body
    assert body["status"] == status and body["code"] == code
    assert body["title"] and body["detail"]
    return body


async def ok(response: ClientResponse) -> dict[str, Any]:
    """Assert a 200 JSON answer with a header; return it."""
    body = await response.json()
    assert response.status == 200, body
    assert set(body["header"]) == {"revision", "raft_term", "member_id", "leader_id"}
    return body
