"""PeerTransport on loopback: hellos, forged and malformed frames, frame and queue
bounds, streamed snapshots with resume, forgetting removed members (issue 8)."""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgpack
import pytest

from synod.node.config import CLUSTER_ID_BYTES
from synod.node.transport import (
    HELLO_MAGIC,
    ClusterIdMismatch,
    FrameKind,
    PeerTransport,
    TransportLimits,
    pin_cluster_id,
    split_host_port,
)
from synod.raft import codec
from synod.raft.types import (
    ConfState,
    Entry,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from tests.unit.transport_helpers import CLUSTER_ID, Member, addresses_for, wait_until

HELLO = struct.Struct(f">8s{CLUSTER_ID_BYTES}sQQ")
FRAME_HEADER = struct.Struct(">IB")
TERM_2_64 = 2**64 - 1


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


async def started(*members: Member) -> None:
    for member in members:
        await member.transport.start()


async def stopped(*members: Member) -> None:
    for member in members:
        await member.transport.stop()


def heartbeat(source: int, to: int, term: int = 5) -> Message:
    return Message(MessageType.HEARTBEAT, to=to, source=source, term=term, commit=1)


def raw_frame(messages: list[list[object]]) -> bytes:
    """A MESSAGES frame built with msgpack directly: it can carry any value."""
    body = bytes([codec.FRAME_VERSION]) + msgpack.packb(messages, use_bin_type=True)
    return FRAME_HEADER.pack(len(body), FrameKind.MESSAGES) + body


def raw_heartbeat(source: int, to: int, term: int) -> list[object]:
    return [int(MessageType.HEARTBEAT), to, source, term, 0, 0, [], 0, False, 0, None, b""]


async def forge(address: str, hello: bytes, after_hello: bytes) -> bytes:
    """Connect, send `hello`, read the answer if any, send `after_hello`, and return
    everything the member wrote before closing (bounded)."""
    host, port = split_host_port(address)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(hello)
    answer = b""
    try:
        answer = await asyncio.wait_for(reader.read(HELLO.size), 10.0)
        if answer:
            writer.write(after_hello)
            await writer.drain()
            while chunk := await asyncio.wait_for(reader.read(65536), 10.0):
                answer += chunk
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
    return answer


# -- hellos and forged frames ----------------------------------------------------
def test_messages_flow_both_ways_on_one_connection() -> None:
    async def test() -> None:
        addresses = addresses_for(1, 2)
        one, two = Member(1, addresses), Member(2, addresses)
        await started(one, two)
        try:
            one.transport.send([heartbeat(1, 2)])
            await wait_until(lambda: len(two.received) == 1, "1 -> 2")
            two.transport.send([heartbeat(2, 1)])
            await wait_until(lambda: len(one.received) == 1, "2 -> 1")
            assert two.received == [heartbeat(1, 2)]
            assert one.transport.stats.connections == two.transport.stats.connections == 1
        finally:
            await stopped(one, two)

    run(test)


@pytest.mark.parametrize(
    ("hello", "why"),
    [
        # The old hello: a magic string and a claimed id, nothing else.
        (struct.pack(">8sQ", b"SYNODP1\n", 1) + bytes(HELLO.size - 16), "magic"),
        (HELLO.pack(HELLO_MAGIC, bytes(CLUSTER_ID_BYTES), 1, 2), "cluster id"),
        (HELLO.pack(HELLO_MAGIC, CLUSTER_ID, 1, 7), "expects member 7"),
        (HELLO.pack(HELLO_MAGIC, CLUSTER_ID, 3, 2), "lower id dials"),
        (HELLO.pack(HELLO_MAGIC, CLUSTER_ID, 0, 2), "sender id 0"),
        (HELLO.pack(HELLO_MAGIC, CLUSTER_ID, 2, 2), "sender id 2"),
    ],
)
def test_forged_hello_is_refused_and_its_frames_never_stepped(
    hello: bytes, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def test() -> None:
        addresses = addresses_for(1, 2)
        one, two = Member(1, addresses), Member(2, addresses)
        await started(one, two)
        try:
            one.transport.send([heartbeat(1, 2)])  # A live link that must survive.
            await wait_until(lambda: len(two.received) == 1, "the real link")
            answer = await forge(addresses[2], hello, raw_frame([raw_heartbeat(1, 2, TERM_2_64)]))
            assert answer == b"", "a refused hello gets no answer"
            assert two.transport.stats.hellos_refused == 1
            assert two.transport.stats.connections == 1, "the real link was not replaced"
            one.transport.send([heartbeat(1, 2, term=6)])
            await wait_until(lambda: len(two.received) == 2, "the real link still works")
            assert [m.term for m in two.received] == [5, 6]
        finally:
            await stopped(one, two)

    with caplog.at_level("WARNING", logger="synod.transport"):
        run(test)
    assert why in caplog.text


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (raw_heartbeat(1, 2, TERM_2_64), "exceeds the bound"),
        (raw_heartbeat(1, 2, codec.TERM_MAX + 1), "exceeds the bound"),
        (raw_heartbeat(3, 2, 5), "claims source 3"),
        (raw_heartbeat(1, 3, 5), "addressed to 3"),
        ([int(MessageType.LOCAL_HUP), 2, 1, 5, 0, 0, [], 0, False, 0, None, b""], "never leaves"),
        (
            [int(MessageType.APPEND), 2, 1, 5, 0, 0, [5, 2**63, 0, b""], 0, False, 0, None, b""],
            "out of bounds",
        ),
    ],
)
def test_bad_frame_on_a_valid_link_is_refused(
    message: list[object], why: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def test() -> None:
        addresses = addresses_for(1, 2)
        two = Member(2, addresses)
        await started(two)
        try:
            hello = HELLO.pack(HELLO_MAGIC, CLUSTER_ID, 1, 2)
            good = raw_frame([raw_heartbeat(1, 2, 5)])
            answer = await forge(addresses[2], hello, good + raw_frame([message]) + good)
            assert answer[: HELLO.size] == HELLO.pack(HELLO_MAGIC, CLUSTER_ID, 2, 1)
            # The good frame before is stepped; the bad one and everything after are not.
            await wait_until(lambda: two.transport.stats.frames_refused == 1, "the refusal")
            assert [m.term for m in two.received] == [5]
        finally:
            await stopped(two)

    with caplog.at_level("WARNING", logger="synod.transport"):
        run(test)
    assert why in caplog.text


def test_connections_that_never_say_hello_are_bounded() -> None:
    async def test() -> None:
        addresses = addresses_for(1, 2)
        two = Member(2, addresses, TransportLimits(hellos_pending_max=2))
        await started(two)
        host, port = split_host_port(addresses[2])
        silent = [await asyncio.open_connection(host, port) for _ in range(3)]
        try:
            await wait_until(lambda: two.transport.stats.hellos_refused == 1, "the third refused")
            try:
                answer = await asyncio.wait_for(silent[2][0].read(), 10.0)
            except ConnectionError:
                answer = b""  # Reset rather than closed: refused all the same.
            assert answer == b""
        finally:
            for _, writer in silent:
                writer.close()
            await stopped(two)

    run(test)


def test_transfer_leader_names_the_transferee_as_source() -> None:
    async def test() -> None:
        addresses = addresses_for(1, 2)
        two = Member(2, addresses)
        await started(two)
        try:
            transfer = [int(MessageType.TRANSFER_LEADER), 2, 3, 0, 0, 0, [], 0, False, 0, None, b""]
            await forge(
                addresses[2], HELLO.pack(HELLO_MAGIC, CLUSTER_ID, 1, 2), raw_frame([transfer])
            )
            await wait_until(lambda: len(two.received) == 1, "the forwarded transfer")
            assert two.received[0].source == 3
        finally:
            await stopped(two)

    run(test)


def test_oversized_frame_header_is_refused_before_reading_it() -> None:
    async def test() -> None:
        addresses = addresses_for(1, 2)
        limits = TransportLimits(frame_bytes_max=4 << 20)
        two = Member(2, addresses, limits)
        await started(two)
        try:
            header = FRAME_HEADER.pack(2**32 - 1, FrameKind.MESSAGES)
            await forge(addresses[2], HELLO.pack(HELLO_MAGIC, CLUSTER_ID, 1, 2), header)
            await wait_until(lambda: two.transport.stats.frames_refused == 1, "the refusal")
        finally:
            await stopped(two)

    run(test)


# -- bounds on frames and queues ---------------------------------------------------
def append(source: int, to: int, index: int, payload_bytes: int) -> Message:
    entry = Entry(term=5, index=index + 1, data=os.urandom(payload_bytes))
    return Message(MessageType.APPEND, to=to, source=source, term=5, index=index, entries=[entry])


def test_frames_respect_frame_bytes_max_on_the_sending_side() -> None:
    """Before: up to 4,096 messages per frame with no byte bound, so the receiver
    refused the frame (and the catch-up) over and over."""

    async def test() -> None:
        addresses = addresses_for(1, 2)
        limits = TransportLimits(
            frame_bytes_max=256 * 1024,
            send_frame_bytes_max=256 * 1024,
            snapshot_chunk_bytes=64 * 1024,
        )
        one, two = Member(1, addresses, limits), Member(2, addresses, limits)
        await started(one)
        try:
            # Queued while 2 is down: one frame of all of them would be ~2 MiB.
            batch = [append(1, 2, index, 16 * 1024) for index in range(128)]
            one.transport.send(batch)
            await started(two)
            await wait_until(lambda: len(two.received) == len(batch), "every append")
            assert two.received == batch
            assert two.transport.stats.frames_refused == 0
            assert two.transport.stats.frames_received >= 8  # At least 2 MiB / 256 KiB.
        finally:
            await stopped(one, two)

    run(test)


def test_a_message_over_the_batch_bound_goes_alone_and_one_over_a_frame_is_dropped() -> None:
    async def test() -> None:
        addresses = addresses_for(1, 2)
        limits = TransportLimits(
            frame_bytes_max=512 * 1024, send_frame_bytes_max=64 * 1024, snapshot_chunk_bytes=1024
        )
        one, two = Member(1, addresses, limits), Member(2, addresses, limits)
        await started(one, two)
        try:
            big = append(1, 2, 1, 256 * 1024)  # Over the batch bound, under the frame bound.
            huge = append(1, 2, 2, 1024 * 1024)  # Over the frame bound: the peer would refuse it.
            small = heartbeat(1, 2)
            one.transport.send([small, big, huge, small])
            await wait_until(lambda: len(two.received) == 3, "all but the huge one")
            assert two.received == [small, big, small]
            assert one.transport.stats.messages_dropped == 1
            await wait_until(lambda: 2 in one.unreachable, "the drop reported")
            assert two.transport.stats.frames_refused == 0
        finally:
            await stopped(one, two)

    run(test)


def test_send_queue_bytes_are_bounded_dropping_the_oldest() -> None:
    async def test() -> None:
        addresses = addresses_for(1, 2)
        limits = TransportLimits(send_queue_bytes_max=256 * 1024)
        one = Member(1, {1: addresses[1]}, limits)  # 2 has no address: never connects.
        await started(one)
        try:
            batch = [append(1, 2, index, 16 * 1024) for index in range(64)]
            one.transport.send(batch)
            peer = one.transport.peers[2]
            assert peer.queued_bytes <= limits.send_queue_bytes_max
            assert list(peer.queue) == batch[-len(peer.queue) :], "the oldest were dropped"
            assert one.transport.stats.messages_dropped == len(batch) - len(peer.queue)
            await wait_until(lambda: 2 in one.unreachable, "an unreachable report")
        finally:
            await stopped(one)

    run(test)


# -- snapshots -----------------------------------------------------------------
SMALL_FRAMES = TransportLimits(
    frame_bytes_max=64 * 1024, send_frame_bytes_max=64 * 1024, snapshot_chunk_bytes=16 * 1024
)


def snapshot_message(source: int, to: int, data: bytes, index: int = 100) -> Message:
    meta = SnapshotMeta(index=index, term=4, conf=ConfState(frozenset({1, 2, 3})))
    return Message(
        MessageType.SNAPSHOT, to=to, source=source, term=5, snapshot=Snapshot(meta, data)
    )


def test_snapshot_larger_than_a_frame_is_streamed_and_acknowledged() -> None:
    async def test() -> None:
        addresses = addresses_for(1, 2)
        one, two = Member(1, addresses, SMALL_FRAMES), Member(2, addresses, SMALL_FRAMES)
        await started(one, two)
        try:
            message = snapshot_message(1, 2, os.urandom(1 << 20))  # 64 chunks, 16 frames' worth
            one.transport.send([message, heartbeat(1, 2)])
            await wait_until(lambda: one.snapshots_sent == [(2, True)], "the acknowledgement")
            snapshots = [m for m in two.received if m.type == MessageType.SNAPSHOT]
            assert snapshots == [message]
            assert two.transport.stats.frames_refused == 0
        finally:
            await stopped(one, two)

    run(test)


class CutAfterChunks(PeerTransport):
    """Aborts its connection once, after receiving `cut_after` snapshot chunks."""

    cut_after = 20
    chunks = 0

    async def _on_snapshot_chunk(self, peer: object, body: bytes | bytearray) -> None:
        await super()._on_snapshot_chunk(peer, body)  # type: ignore[arg-type]
        self.chunks += 1
        if self.chunks == self.cut_after:
            writer = self.peers[1].writer
            assert writer is not None
            writer.transport.abort()


def test_snapshot_transfer_cut_midway_resumes_from_the_receivers_offset() -> None:
    async def test() -> None:
        addresses = addresses_for(1, 2)
        one = Member(1, addresses, SMALL_FRAMES)
        two = Member(2, addresses, SMALL_FRAMES, transport_class=CutAfterChunks)
        await started(one, two)
        try:
            message = snapshot_message(1, 2, os.urandom(1 << 20))
            one.transport.send([message])
            await wait_until(lambda: one.snapshots_sent == [(2, False)], "the failure report")
            assert not [m for m in two.received if m.type == MessageType.SNAPSHOT]
            one.transport.send([message])  # The core re-sends after the failure.
            await wait_until(lambda: len(one.snapshots_sent) == 2, "the second report")
            assert one.snapshots_sent[1] == (2, True)
            assert two.transport.stats.snapshot_resumes == 1
            assert [m for m in two.received if m.type == MessageType.SNAPSHOT] == [message]
            chunk_count = (1 << 20) // SMALL_FRAMES.snapshot_chunk_bytes
            assert isinstance(two.transport, CutAfterChunks)
            assert two.transport.chunks == chunk_count, "no chunk was sent twice"
        finally:
            await stopped(one, two)

    run(test)


def test_snapshot_over_the_receivers_bound_is_reported_failed() -> None:
    async def test() -> None:
        addresses = addresses_for(1, 2)
        small = TransportLimits(snapshot_bytes_max=64 * 1024)
        one, two = Member(1, addresses), Member(2, addresses, small)
        await started(one, two)
        try:
            one.transport.send([snapshot_message(1, 2, os.urandom(128 * 1024))])
            await wait_until(lambda: one.snapshots_sent == [(2, False)], "the refusal")
            assert not two.received
        finally:
            await stopped(one, two)

    run(test)


def test_snapshot_over_64_mib_with_a_cut_midway_arrives_whole() -> None:
    """Before: a snapshot over FRAME_BYTES_MAX (64 MiB) went as one frame, which
    every receiver refused, and the leader re-sent it forever."""

    async def test() -> None:
        addresses = addresses_for(1, 2)
        one = Member(1, addresses)  # Default limits: 64 MiB frames, 1 MiB chunks.
        two = Member(2, addresses, transport_class=CutAfterChunks)
        await started(one, two)
        try:
            data = os.urandom(80 << 20)
            assert len(data) > codec.FRAME_BYTES_MAX
            message = snapshot_message(1, 2, data)
            one.transport.send([message])
            await wait_until(lambda: one.snapshots_sent == [(2, False)], "the cut")
            one.transport.send([message])
            await wait_until(lambda: len(one.snapshots_sent) == 2, "the second report")
            assert one.snapshots_sent[1] == (2, True)
            assert two.transport.stats.snapshot_resumes == 1
            received = [m for m in two.received if m.type == MessageType.SNAPSHOT]
            assert len(received) == 1 and received[0].snapshot is not None
            assert received[0].snapshot.data == data
        finally:
            await stopped(one, two)

    run(test)


def test_snapshot_the_node_drops_is_reported_failed() -> None:
    async def test() -> None:
        addresses = addresses_for(1, 2)
        one, two = Member(1, addresses), Member(2, addresses)
        two.transport.on_messages = lambda messages: False  # An overloaded node.
        await started(one, two)
        try:
            one.transport.send([snapshot_message(1, 2, os.urandom(4096))])
            await wait_until(lambda: one.snapshots_sent == [(2, False)], "the refusal")
        finally:
            await stopped(one, two)

    run(test)


def test_a_new_snapshot_replaces_a_stale_partial() -> None:
    async def test() -> None:
        addresses = addresses_for(1, 2)
        one = Member(1, addresses, SMALL_FRAMES)
        two = Member(2, addresses, SMALL_FRAMES, transport_class=CutAfterChunks)
        await started(one, two)
        try:
            one.transport.send([snapshot_message(1, 2, os.urandom(1 << 20), index=100)])
            await wait_until(lambda: one.snapshots_sent == [(2, False)], "the cut")
            newer = snapshot_message(1, 2, os.urandom(1 << 19), index=200)
            one.transport.send([newer])
            await wait_until(lambda: len(one.snapshots_sent) == 2, "the second report")
            assert one.snapshots_sent[1] == (2, True)
            assert two.transport.stats.snapshot_resumes == 0
            assert [m for m in two.received if m.type == MessageType.SNAPSHOT] == [newer]
        finally:
            await stopped(one, two)

    run(test)


# -- membership ----------------------------------------------------------------
def test_forgotten_member_is_dropped_and_its_hellos_refused() -> None:
    async def test() -> None:
        addresses = addresses_for(1, 2)
        one, two = Member(1, addresses), Member(2, addresses)
        await started(one, two)
        try:
            one.transport.send([heartbeat(1, 2)])
            await wait_until(lambda: len(two.received) == 1, "the link")
            two.transport.forget(1)
            assert 1 not in two.transport.peers
            one.transport.send([heartbeat(1, 2)])  # 1 re-dials and is refused.
            await wait_until(lambda: two.transport.stats.hellos_refused >= 1, "the refusal")
            assert len(two.received) == 1
            two.transport.readmit(1)  # Added back to the membership (ids are reused).
            one.transport.send([heartbeat(1, 2)])
            await wait_until(lambda: len(two.received) == 2, "1 re-dials and is accepted")
            two.transport.forget(1)
            two.transport.send([heartbeat(2, 1)])  # Sending to it again readmits it too.
            await wait_until(lambda: len(one.received) == 1, "the link again")
            one.transport.send([heartbeat(1, 2)])
            await wait_until(lambda: len(two.received) == 3, "both ways")
        finally:
            await stopped(one, two)

    run(test)


# -- cluster id ------------------------------------------------------------------
def test_cluster_id_is_pinned_at_first_start(tmp_path: Path) -> None:
    path = str(tmp_path / "data" / "cluster-id")
    assert pin_cluster_id(path, CLUSTER_ID) == CLUSTER_ID
    assert pin_cluster_id(path, CLUSTER_ID) == CLUSTER_ID  # Same id: fine.
    with pytest.raises(ClusterIdMismatch, match="belongs to cluster id"):
        pin_cluster_id(path, bytes(CLUSTER_ID_BYTES))
    # An id derived from the initial membership (no token): a restarted member
    # ignores the initial membership, so the pinned id wins.
    assert pin_cluster_id(path, bytes(CLUSTER_ID_BYTES), adopt_pinned=True) == CLUSTER_ID
    assert Path(path).read_text().strip() == CLUSTER_ID.hex()
    Path(path).write_text("garbage")
    with pytest.raises(ClusterIdMismatch, match="does not hold a cluster id"):
        pin_cluster_id(path, CLUSTER_ID, adopt_pinned=True)


def test_transport_refuses_to_start_on_another_clusters_data(tmp_path: Path) -> None:
    async def test() -> None:
        addresses = addresses_for(1)
        path = str(tmp_path / "cluster-id")
        pin_cluster_id(path, bytes(CLUSTER_ID_BYTES))
        transport = PeerTransport(
            1, addresses[1], addresses.get, print, print, print,
            cluster_id=CLUSTER_ID, cluster_id_file=path,
        )  # fmt: skip
        with pytest.raises(ClusterIdMismatch):
            await transport.start()
        await transport.stop()

    run(test)


def test_limits_tie_dead_link_detection_to_the_election_timeout() -> None:
    limits = TransportLimits.for_election_timeout(1000)
    assert limits.keepalive_interval_ms < limits.peer_dead_ms <= 2 * 1000
    with pytest.raises(ValueError, match="keepalive_interval_ms"):
        TransportLimits(keepalive_interval_ms=5000, peer_dead_ms=1000).validate()
    with pytest.raises(ValueError, match="snapshot_chunk_bytes"):
        TransportLimits(
            frame_bytes_max=1024, send_frame_bytes_max=1024, snapshot_chunk_bytes=1024
        ).validate()
    with pytest.raises(ValueError, match="send_frame_bytes_max"):
        TransportLimits(frame_bytes_max=1 << 20, send_frame_bytes_max=2 << 20).validate()
