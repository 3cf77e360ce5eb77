"""AsyncClient.watch over SSE: history, live events, transparent resume, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from synod.client import AsyncClient, Compacted, InvalidArgument, Unavailable, WatchEvent
from synod.client.aio import _WatchCursor
from synod.client.sse import iter_sse
from tests.unit.memory_cluster import Fault, MemoryCluster
from tests.waiting import async_wait_until

# Bounds every wait on the cluster (it answers in milliseconds).
WAIT_TIMEOUT_S = 10.0


def run_with(body: Callable[[MemoryCluster, AsyncClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with MemoryCluster() as cluster:
            client = AsyncClient(
                cluster.urls, timeout_s=2, backoff_ms_base=1, backoff_ms_max=5, attempts_max=4
            )
            async with client:
                return await asyncio.wait_for(body(cluster, client), 20)

    return asyncio.run(main())


async def collect(stream: Any, count: int) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    async for event in stream:
        events.append(event)
        if len(events) == count:
            break
    await stream.aclose()
    return events


async def put_later(
    cluster: MemoryCluster, client: AsyncClient, items: list[tuple[str, str]]
) -> None:
    """Write ``items`` once the node has accepted a watch (before it, a write would be
    older than the watch's start revision, which is pinned when it starts)."""
    await async_wait_until(lambda: cluster.watch_connects, WAIT_TIMEOUT_S, "a watch")
    for key, value in items:
        await client.put(key, value)


def test_sse_decoder_handles_comments_multiline_and_crlf() -> None:
    async def lines() -> Any:
        for line in [b": hi\r\n", b"event: a\r\n", b"data: 1\n", b"data: 2\n", b"\n", b"data: x\n"]:
            yield line
        yield b"\n"

    async def main() -> list[tuple[str, str]]:
        return [(m.event, m.data) async for m in iter_sse(lines())]

    assert asyncio.run(main()) == [("a", "1\n2"), ("message", "x")]


def test_watch_from_now_sees_later_changes_only() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        await client.put("w/old", "0")
        stream = client.watch("w/", prefix=True)
        writer = asyncio.create_task(
            put_later(cluster, client, [("w/a", "1"), ("x", "no"), ("w/b", "2")])
        )
        events = await collect(stream, 2)
        await writer
        assert [(e.type, e.kv.key, e.kv.value) for e in events] == [
            ("put", "w/a", "1"),
            ("put", "w/b", "2"),
        ]

    run_with(body)


def test_watch_replays_history_from_a_past_revision_with_deletes() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        first = await client.put("k", "1")
        await client.put("k", "2")
        await client.delete("k")
        events = await collect(client.watch("k", start_revision=first.revision), 3)
        assert [e.type for e in events] == ["put", "put", "delete"]
        assert events[2].prev_kv is not None and events[2].prev_kv.value == "2"
        assert [e.revision for e in events] == [2, 3, 4]

    run_with(body)


def test_watch_resumes_after_a_disconnect_without_gap_or_duplicate() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        cluster.watch_cut_after_events = 2
        stream = client.watch("k")
        writer = asyncio.create_task(put_later(cluster, client, [("k", str(i)) for i in range(5)]))
        events = await collect(stream, 5)
        await writer
        assert [e.kv.value for e in events] == ["0", "1", "2", "3", "4"]
        assert cluster.watch_connects == 2
        resumed = cluster.requests_to("/v1/watch")[-1].query
        # Resumes at the last delivered revision, skipping what was delivered of it
        # (a node may split one revision's events over several messages).
        assert resumed["start_revision"] == str(events[1].revision)

    run_with(body)


def test_watch_resumes_after_a_too_slow_cancel() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        base = await client.put("k", "start")
        for i in range(4):
            await client.put("k", str(i))
        cluster.watch_too_slow_after_events = 1
        events = await collect(client.watch("k", start_revision=base.revision + 1), 4)
        assert [e.kv.value for e in events] == ["0", "1", "2", "3"]
        assert cluster.watch_connects == 2

    run_with(body)


def test_watch_skips_events_already_delivered_in_a_split_revision() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        await client.put("p/a", "1")
        await client.put("p/b", "1")
        deleted = await client.delete("p/", prefix=True)  # one revision, two events
        assert deleted.deleted == 2
        revision = deleted.header.revision
        # Resume at that revision having seen one of its two events: only the second comes.
        cursor = _WatchCursor(revision, skip_count=1)
        stream = client._watch_once(cluster.urls[0], "p/", "", True, cursor)
        first = await stream.__anext__()
        await stream.aclose()
        assert (first.type, first.kv.key) == ("delete", "p/b")

    run_with(body)


def test_watch_fails_over_when_a_node_is_down() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        cluster.fault("/v1/watch", Fault(drop="before"))
        stream = client.watch("k")
        writer = asyncio.create_task(put_later(cluster, client, [("k", "1")]))
        events = await collect(stream, 1)
        await writer
        assert events[0].kv.value == "1"

    run_with(body)


def test_compacted_start_revision_raises() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        for i in range(3):
            await client.put("k", str(i))
        await client.compact(3)
        with pytest.raises(Compacted) as info:
            await collect(client.watch("k", start_revision=2), 1)
        assert info.value.compact_revision == 3

    run_with(body)


def test_progress_moves_the_resume_point() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        stream = client.watch("quiet")
        first = asyncio.create_task(stream.__anext__())
        # Idle: the node sends progress every progress_interval_ms.
        await async_wait_until(lambda: cluster.watch_progress, WAIT_TIMEOUT_S, "a progress")
        for i in range(3):
            last = await client.put("other", str(i))
        await async_wait_until(
            lambda: cluster.watch_progress[-1] >= last.revision,
            WAIT_TIMEOUT_S,
            f"a progress at revision {last.revision}",
        )
        cluster.fault("/v1/watch", Fault(drop="before"))
        # Cut the stream: the resume must start after the progress revision.
        cluster.watch_cut_after_events = 0
        quiet = await client.put("quiet", "x")
        event = await first
        await stream.aclose()
        assert event.kv.value == "x"
        starts = [r.query["start_revision"] for r in cluster.requests_to("/v1/watch")]
        assert starts[0] == "2" and starts[-1] == str(quiet.revision)
        assert len(starts) == 3  # the cut stream, the dropped reconnect, the resumed one

    run_with(body)


def test_a_node_that_gives_up_mid_stream_is_left_for_another() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        cluster.fault("/v1/watch", Fault(watch_cancel="no-leader"))
        stream = client.watch("k")
        writer = asyncio.create_task(put_later(cluster, client, [("k", "1")]))
        events = await collect(stream, 1)
        await writer
        assert events[0].kv.value == "1" and cluster.watch_connects == 1

    run_with(body)


def test_a_cancel_that_cannot_resume_raises_its_typed_error() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        cluster.fault("/v1/watch", Fault(watch_cancel="invalid-argument"))
        with pytest.raises(InvalidArgument, match="injected"):
            await collect(client.watch("k", start_revision=1), 1)

    run_with(body)


def test_streams_that_end_without_progress_back_off_and_give_up() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        cluster.fault("/v1/watch", Fault(watch_end=True), times=10)
        with pytest.raises(Unavailable, match="watch stream ended"):
            await collect(client.watch("k", start_revision=1), 1)
        assert len(cluster.requests_to("/v1/watch")) == client.attempts_max

    run_with(body)
