"""The node side of watch streams (WatchStreams, shared by RaftServer and MemoryNode):
idle streams are woken only by their own events or their progress timer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from synod.services.commands import put_op
from synod.services.limits import ServiceLimits
from tests.unit.http_helpers import async_test
from tests.unit.memory_node import MemoryNode

NEVER_MS = 3_600_000  # a progress interval no test reaches
LOOP_TURNS_MAX = 100_000  # bound on polling a condition


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (bounded in turns, not time)."""
    for _ in range(LOOP_TURNS_MAX):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def next_item(stream: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    async with asyncio.timeout(10):
        return await anext(stream)


@async_test
async def test_thousands_of_idle_watchers_are_not_woken_by_other_writes() -> None:
    node = MemoryNode(limits=ServiceLimits(watchers_max=10_000), progress_interval_ms=NEVER_MS)
    streams = [node.watch(b"idle/%d" % i, b"", 0) for i in range(2_500)]
    streams += [node.watch(b"p/%d/" % i, b"p/%d0" % i, 0) for i in range(2_500)]  # prefixes
    tasks = [asyncio.ensure_future(anext(stream)) for stream in streams]
    await until(lambda: node.streams.parked == 5_000)
    for i in range(300):
        node.apply(put_op(b"other/%d" % i, b"v"))
    await until(lambda: True)  # one loop turn for anything woken to run
    # Before, every apply woke every stream: 300 x 5,000 wake-ups.
    assert node.streams.wakeups == 0 and node.streams.parked == 5_000
    node.apply(put_op(b"idle/42", b"v"))
    node.apply(put_op(b"p/7/x", b"v"))
    woken = await tasks[42]
    assert [e["kv"]["key"] for e in woken["events"]] == [b"idle/42"]
    assert (await tasks[2_507])["events"][0]["kv"]["key"] == b"p/7/x"
    assert node.streams.wakeups == 2
    assert sum(task.done() for task in tasks) == 2
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for stream in streams:
        await stream.aclose()  # type: ignore[attr-defined]
    assert len(node.machine.watches) == 0 and node.streams.parked == 0


@async_test
async def test_an_idle_stream_gets_progress_despite_writes_elsewhere() -> None:
    node = MemoryNode(progress_interval_ms=100)
    stream = node.watch(b"quiet", b"", 0)
    first = asyncio.ensure_future(next_item(stream))
    for i in range(10_000):  # before, each write restarted the progress timer
        if first.done():
            break
        node.apply(put_op(b"busy", b"%d" % i))
        await asyncio.sleep(0.005)  # pacing of the writes, not a wait for the result
    assert await first == {"progress": node.revision}
    node.apply(put_op(b"quiet", b"v"))
    events = await next_item(stream)
    assert events["events"][0]["kv"]["mod_revision"] == node.revision
    progress = await next_item(stream)
    assert progress == {"progress": node.revision}
    await stream.aclose()  # type: ignore[attr-defined]
    assert len(node.machine.watches) == 0


@async_test
async def test_progress_due_with_events_buffered_sends_the_events_first() -> None:
    node = MemoryNode(progress_interval_ms=NEVER_MS)
    stream = node.watch(b"k", b"", 0)
    item = asyncio.ensure_future(next_item(stream))
    await until(lambda: node.streams.parked == 1)
    # The timer fires for the parked stream, then an event lands before it runs: a
    # progress at the current revision would tell the client to skip that event.
    node.streams._progress_due = dict.fromkeys(node.streams._progress_due, 0.0)
    node.streams._on_timer()
    node.apply(put_op(b"k", b"v"))
    first = await item
    assert first["events"][0]["kv"]["mod_revision"] == node.revision
    await stream.aclose()  # type: ignore[attr-defined]


@async_test
async def test_closing_a_parked_stream_frees_its_watcher() -> None:
    node = MemoryNode(progress_interval_ms=NEVER_MS)
    stream = node.watch(b"k", b"", 0)
    item = asyncio.ensure_future(anext(stream))
    await until(lambda: node.streams.parked == 1)
    item.cancel()  # what the HTTP layer does when the client leaves
    await asyncio.gather(item, return_exceptions=True)
    assert len(node.machine.watches) == 0 and node.streams.parked == 0
    assert not node.streams._progress_due


@async_test
async def test_a_snapshot_install_wakes_parked_streams_with_restored() -> None:
    node = MemoryNode(progress_interval_ms=NEVER_MS)
    node.apply(put_op(b"k", b"v"))
    snapshot = node.machine.snapshot()
    streams = [node.watch(b"a", b"", 0), node.watch(b"b", b"c", 0)]
    items = [asyncio.ensure_future(next_item(s)) for s in streams]
    await until(lambda: node.streams.parked == 2)
    node.machine.restore(snapshot)
    for item in items:
        cancel = await item
        assert cancel["cancel"] == "restored" and cancel["resume_revision"] == 3
    assert node.streams.wakeups == 2 and len(node.machine.watches) == 0
