"""Connection bounds: a partial request head is not held forever, and stalled request
bodies do not starve requests that are ready for the node."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from synod.node.http import HttpLimits, build_app, server_options
from synod.node.http_state import STATE, AppState
from tests.unit.http_helpers import async_test
from tests.unit.memory_node import MemoryNode

DEADLINE_S = 20.0  # generous: only a hang reaches it
STALLED_HEAD = b"POST /v1/kv/put HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"


@contextlib.asynccontextmanager
async def served(limits: HttpLimits) -> AsyncIterator[tuple[str, int, AppState]]:
    """(host, port, app state) of a node served with the runner options of ``limits``."""
    node = MemoryNode()
    app = build_app(node, limits=limits, registry=node.registry)
    server = TestServer(app)
    await server.start_server(**server_options(limits))
    try:
        assert server.port is not None
        yield server.host, server.port, app[STATE]
    finally:
        await server.close()


async def _eof_within(reader: asyncio.StreamReader, deadline_s: float) -> bool:
    """Read until EOF or the deadline; True on EOF. Raises nothing."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            chunk = await asyncio.wait_for(reader.read(1024), 0.5)
        except TimeoutError:
            continue
        except ConnectionError:
            return True
        if not chunk:
            return True
    return False


async def _until(predicate: Any, deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@async_test
async def test_partial_request_head_is_closed_after_the_header_read_bound() -> None:
    async with served(HttpLimits(header_read_timeout_ms=200)) as (host, port, _state):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(STALLED_HEAD)  # no blank line: the head never completes
        await writer.drain()
        try:
            assert await _eof_within(reader, DEADLINE_S), "a partial head was held"
        finally:
            writer.close()


async def _stall_bodies(host: str, port: int, count: int) -> list[asyncio.StreamWriter]:
    writers = []
    for _ in range(count):
        _reader, writer = await asyncio.open_connection(host, port)
        writer.write(STALLED_HEAD + b"Content-Length: 100\r\n\r\n{")
        await writer.drain()
        writers.append(writer)
    return writers


@async_test
async def test_stalled_bodies_do_not_take_pending_request_slots() -> None:
    limits = HttpLimits(pending_requests_max=2, request_body_read_timeout_ms=60_000)
    async with served(limits) as (host, port, state):
        writers = await _stall_bodies(host, port, 4)
        try:
            await _until(lambda: state.body_reads == 4)
            assert state.pending_requests == 0
            async with aiohttp.ClientSession() as http:
                url = f"http://{host}:{port}/v1/kv/put"
                async with http.post(url, json={"key": "k", "value": "v"}) as response:
                    assert response.status == 200, await response.text()
        finally:
            for writer in writers:
                writer.close()


@async_test
async def test_body_reads_have_their_own_bound() -> None:
    limits = HttpLimits(body_reads_max=1, request_body_read_timeout_ms=60_000)
    async with served(limits) as (host, port, state):
        (writer,) = await _stall_bodies(host, port, 1)
        try:
            await _until(lambda: state.body_reads == 1)
            async with aiohttp.ClientSession() as http:
                url = f"http://{host}:{port}/v1/kv/put"
                async with http.post(url, json={"key": "k", "value": "v"}) as response:
                    body = await response.json(content_type=None)
                    assert response.status == 429 and body["limit"] == "body_reads_max"
                async with http.get(f"http://{host}:{port}/v1/cluster/status") as response:
                    assert response.status == 200  # no body: not held up
        finally:
            writer.close()
