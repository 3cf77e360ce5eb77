"""GET /v1/watch as Server-Sent Events: events, progress, cancel and resume, refusals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import ClientResponse, web

from synod.node.http import HttpLimits, build_app
from synod.services.commands import compact_op, delete_op, put_op
from synod.services.errors import Compacted
from synod.services.limits import ServiceLimits
from tests.unit.http_helpers import WAIT_TIMEOUT_S, async_test, problem, serve
from tests.unit.memory_node import MemoryNode
from tests.waiting import async_wait_until

TINY = ServiceLimits(ops_per_txn_max=2, keys_per_lease_max=2, events_per_revision_max=2,
                     watch_events_buffered_max=2, watchers_max=1)  # fmt: skip


async def next_message(response: ClientResponse, timeout_s: float = 5.0) -> tuple[str, Any]:
    """The next SSE message (event name, parsed data)."""
    event, data = "message", []
    async with asyncio.timeout(timeout_s):
        while True:
            line = (await response.content.readline()).decode()
            assert line, "stream ended"
            line = line.rstrip("\n")
            if not line:
                return event, json.loads("\n".join(data))
            name, _, value = line.partition(": ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


async def next_non_progress(response: ClientResponse) -> tuple[str, Any]:
    while True:
        event, data = await next_message(response)
        if event != "progress":
            return event, data


@async_test
async def test_live_events_and_progress() -> None:
    node = MemoryNode(progress_interval_ms=50)
    async with serve(node) as client:
        stream = await client.get("/v1/watch?key=a/&prefix=true")
        assert stream.status == 200
        assert stream.headers["Content-Type"] == "text/event-stream"
        event, data = await next_message(stream)
        assert event == "progress" and data["revision"] == 1 == data["header"]["revision"]
        await client.post("/v1/kv/put", json={"key": "a/1", "value": "x"})
        await client.post("/v1/kv/put", json={"key": "b", "value": "x"})
        await client.post("/v1/kv/delete", json={"key": "a/1"})
        event, data = await next_non_progress(stream)
        # The header has the revision the node is at when it sends (as etcd), >= the event.
        assert event == "events" and 2 <= data["header"]["revision"] <= node.revision
        (put,) = data["events"]
        assert put == {"type": "put", "prev_kv": None, "kv": {
            "key": "a/1", "value": "x", "create_revision": 2, "mod_revision": 2,
            "version": 1, "lease": 0}}  # fmt: skip
        event, data = await next_non_progress(stream)
        (deleted,) = data["events"]
        assert deleted["type"] == "delete" and deleted["kv"]["mod_revision"] == 4
        assert deleted["prev_kv"]["value"] == "x"
        stream.close()
        # The next progress write notices the client left and frees the watcher.
        await async_wait_until(lambda: len(node.machine.watches) == 0, WAIT_TIMEOUT_S,
                               "the watcher to be freed")  # fmt: skip


@async_test
async def test_replay_from_past_revision() -> None:
    node = MemoryNode()
    node.apply(put_op(b"k", b"1"))
    node.apply(put_op(b"k", b"2"))
    node.apply(delete_op(b"k"))
    async with serve(node) as client:
        stream = await client.get("/v1/watch?key=k&start_revision=3")
        event, data = await next_message(stream)
        assert event == "events"
        assert [(e["type"], e["kv"]["mod_revision"]) for e in data["events"]] == [
            ("put", 3), ("delete", 4)]  # fmt: skip
        stream.close()


@async_test
async def test_too_slow_cancel_then_resume() -> None:
    node = MemoryNode(limits=TINY, progress_interval_ms=1000)
    async with serve(node) as client:
        stream = await client.get("/v1/watch?key=k&range_end=l")
        # A burst applied before the stream can drain: the third revision overflows.
        for value in (b"1", b"2", b"3", b"4"):
            node.apply(put_op(b"k", value))
        event, data = await next_message(stream)
        assert event == "events" and [e["kv"]["value"] for e in data["events"]] == ["1", "2"]
        event, data = await next_message(stream)
        assert event == "cancel" and data["reason"] == "too-slow"
        assert data["resume_revision"] == 4 and "resume" in data["message"]
        assert await stream.content.read() == b""  # the stream ended
        resumed = await client.get(f"/v1/watch?key=k&range_end=l&start_revision={4}")
        event, data = await next_message(resumed)
        assert [e["kv"]["value"] for e in data["events"]] == ["3", "4"]
        resumed.close()


@async_test
async def test_compacted_start_is_410_before_the_stream() -> None:
    node = MemoryNode()
    for value in (b"1", b"2", b"3"):
        node.apply(put_op(b"k", value))
    node.apply(compact_op(3))
    async with serve(node) as client:
        answer = await problem(await client.get("/v1/watch?key=k&start_revision=2"), 410,
                               "compacted")  # fmt: skip
        assert answer["compact_revision"] == 3
        assert len(node.machine.watches) == 0


@async_test
async def test_watcher_bounds_are_429() -> None:
    node = MemoryNode(limits=TINY)
    async with serve(node) as client:
        first = await client.get("/v1/watch?key=k")
        assert first.status == 200
        hub_full = await problem(await client.get("/v1/watch?key=j"), 429, "limit-exceeded")
        assert hub_full["limit"] == "watchers_max"
        first.close()
    node = MemoryNode()
    async with serve(node, limits=HttpLimits(watch_streams_max=1)) as client:
        first = await client.get("/v1/watch?key=k")
        streams_full = await problem(await client.get("/v1/watch?key=j"), 429, "limit-exceeded")
        assert streams_full["limit"] == "watch_streams_max"
        first.close()


class GeneratorWatchNode(MemoryNode):
    """A node whose watch is an async generator: refusals come on the first step, once
    ``refuse`` is set (late when the test sets it only after the stream started)."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse = asyncio.Event()

    def watch(self, key: bytes, range_end: bytes, start_revision: int) -> AsyncIterator[Any]:
        return self._late(key, range_end, start_revision)

    async def _late(self, key: bytes, range_end: bytes, start: int) -> AsyncIterator[Any]:
        await self.refuse.wait()
        raise Compacted("revision 1 is compacted", compact_revision=5)
        yield {}  # an async generator


@async_test
async def test_refusal_on_first_step_is_a_problem_or_a_final_cancel() -> None:
    node = GeneratorWatchNode()
    async with serve(node) as client:
        node.refuse.set()  # at once: within watch_start_wait_ms
        await problem(await client.get("/v1/watch?key=k&start_revision=1"), 410, "compacted")
        node.refuse.clear()
        # No item within watch_start_wait_ms: the stream starts (200) ...
        stream = await client.get("/v1/watch?key=k&start_revision=1")
        assert stream.status == 200
        node.refuse.set()  # ... and the refusal that comes after it ends it with a cancel
        event, data = await next_message(stream)
        assert event == "cancel" and data["reason"] == "compacted"


class EndingWatchNode(MemoryNode):
    """A node whose watch ends after ``items`` without a cancel item."""

    items: list[dict[str, Any]] = []

    def watch(self, key: bytes, range_end: bytes, start_revision: int) -> AsyncIterator[Any]:
        return self._items()

    async def _items(self) -> AsyncIterator[Any]:
        for item in self.items:
            yield item


@async_test
async def test_a_watch_the_node_ends_ends_the_stream() -> None:
    node = EndingWatchNode()
    async with serve(node) as client:
        empty = await client.get("/v1/watch?key=k")
        assert empty.status == 200 and await empty.content.read() == b""
        node.items = [{"progress": 1}]
        one = await client.get("/v1/watch?key=k")
        assert (await next_message(one))[0] == "progress"
        assert await one.content.read() == b""


async def open_raw_watch(host: str, port: int, key: str) -> tuple[asyncio.StreamReader, Any]:
    """A watch over a raw TCP connection (so the test decides how it closes), read up to
    the end of the response headers."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /v1/watch?key={key} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return reader, writer


async def watchers_drop_to(node: MemoryNode, count: int) -> None:
    """Poll the live watcher count with a bounded deadline."""
    async with asyncio.timeout(5):
        while len(node.machine.watches) != count:
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def serve_as_main(node: MemoryNode, limits: HttpLimits) -> AsyncIterator[tuple[str, int]]:
    """Serve ``build_app(node)`` on loopback the way synod.node.main does: unlike
    aiohttp's TestServer, without cancelling a handler whose client left."""
    runner = web.AppRunner(build_app(node, registry=node.registry, limits=limits),
                           access_log=None, handle_signals=False)  # fmt: skip
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield str(host), int(port)
    finally:
        await runner.cleanup()


@async_test
async def test_a_client_that_leaves_an_idle_stream_frees_its_watcher() -> None:
    # Progress never comes, so only the disconnect check can notice (before, the watcher
    # stayed until a matching key was written).
    node = MemoryNode(progress_interval_ms=3_600_000)
    limits = HttpLimits(watch_disconnect_check_interval_ms=20)
    async with serve_as_main(node, limits) as (host, port):
        _reader, fin = await open_raw_watch(host, port, "a")
        _reader, rst = await open_raw_watch(host, port, "b")
        _reader, stays = await open_raw_watch(host, port, "c")
        await watchers_drop_to(node, 3)
        fin.close()  # an orderly close: FIN
        await watchers_drop_to(node, 2)
        sock = rst.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rst.close()  # linger 0: the close sends RST
        await watchers_drop_to(node, 1)
        assert [w.key for w in node.machine.watches._watchers.values()] == [b"c"]
        stays.close()
        await watchers_drop_to(node, 0)
