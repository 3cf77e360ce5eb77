"""Peer transport: one persistent TCP connection per pair of members.

The member with the lower id dials; both directions share the connection.
Each frame is a 4-byte big-endian length followed by `codec.encode_messages`,
so one frame carries every message queued for that peer since the last write.
A connection starts with a hello frame naming the dialer. Send queues are
bounded: when a peer is slow or away, the oldest messages are dropped (Raft
retransmits what matters) and the core is told the peer is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from synod.raft.codec import FRAME_BYTES_MAX, CodecError, decode_messages, encode_messages
from synod.raft.types import Message, MessageType, NodeId

log = logging.getLogger("synod.transport")

HELLO_MAGIC = b"SYNODP1\n"
_LENGTH = struct.Struct(">I")
_HELLO = struct.Struct(">8sQ")


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """Every bound of the transport, by name."""

    send_queue_messages_max: int = 10_000
    frame_messages_max: int = 4096
    frame_bytes_max: int = FRAME_BYTES_MAX
    dial_backoff_ms_min: int = 50
    dial_backoff_ms_max: int = 2000
    dial_timeout_ms: int = 2000


@dataclass(slots=True)
class _Peer:
    node_id: NodeId
    queue: deque[Message] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    writer: asyncio.StreamWriter | None = None
    last_contact_monotonic_s: float = 0.0
    dropped_messages: int = 0


class PeerTransport:
    """Carries Raft messages between members."""

    def __init__(
        self,
        node_id: NodeId,
        listen_address: str,
        resolve: Callable[[NodeId], str | None],
        on_messages: Callable[[list[Message]], None],
        on_unreachable: Callable[[NodeId], None],
        on_snapshot_sent: Callable[[NodeId, bool], None],
        limits: TransportLimits | None = None,
    ) -> None:
        assert node_id >= 1
        self.node_id = node_id
        self.listen_address = listen_address
        self.resolve = resolve
        self.on_messages = on_messages
        self.on_unreachable = on_unreachable
        self.on_snapshot_sent = on_snapshot_sent
        self.limits = limits or TransportLimits()
        self.peers: dict[NodeId, _Peer] = {}
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.frames_sent = 0
        self.frames_received = 0

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Listen for peers. Raises OSError if the address is taken."""
        host, port = split_host_port(self.listen_address)
        self._server = await asyncio.start_server(self._accept, host, port)
        assert self._server is not None

    async def stop(self) -> None:
        """Close the listener and every connection."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for peer in self.peers.values():
            if peer.writer is not None:
                peer.writer.close()
            peer.wakeup.set()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        assert self._closing

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _peer(self, node_id: NodeId) -> _Peer:
        peer = self.peers.get(node_id)
        if peer is None:
            assert node_id != self.node_id, "never send to ourselves"
            peer = _Peer(node_id)
            self.peers[node_id] = peer
            self._spawn(self._write_loop(peer))
            if self.node_id < node_id:
                self._spawn(self._dial_loop(peer))
        return peer

    # -- sending -----------------------------------------------------------------
    def send(self, messages: list[Message]) -> None:
        """Queue messages; never blocks. Overflow drops the oldest of that peer."""
        limit = self.limits.send_queue_messages_max
        touched: set[NodeId] = set()
        for message in messages:
            peer = self._peer(message.to)
            peer.queue.append(message)
            touched.add(message.to)
            if len(peer.queue) > limit:
                peer.queue.popleft()
                peer.dropped_messages += 1
        for node_id in touched:
            self.peers[node_id].wakeup.set()

    async def _write_loop(self, peer: _Peer) -> None:
        while not self._closing:
            await peer.wakeup.wait()
            peer.wakeup.clear()
            while peer.queue and peer.writer is not None and not self._closing:
                batch = self._take_batch(peer)
                if not await self._write_frame(peer, batch):
                    break

    def _take_batch(self, peer: _Peer) -> list[Message]:
        count = min(len(peer.queue), self.limits.frame_messages_max)
        batch = [peer.queue.popleft() for _ in range(count)]
        assert batch
        return batch

    async def _write_frame(self, peer: _Peer, batch: list[Message]) -> bool:
        writer = peer.writer
        assert writer is not None
        payload = encode_messages(batch)
        snapshots = [m for m in batch if m.type == MessageType.SNAPSHOT]
        try:
            writer.write(_LENGTH.pack(len(payload)) + payload)
            await writer.drain()
        except (OSError, ConnectionError, RuntimeError) as error:
            log.info("peer %d: write failed: %s", peer.node_id, error)
            self._drop_connection(peer, writer)
            self.on_unreachable(peer.node_id)
            for _ in snapshots:
                self.on_snapshot_sent(peer.node_id, False)
            return False
        self.frames_sent += 1
        for _ in snapshots:
            self.on_snapshot_sent(peer.node_id, True)
        return True

    # -- connecting --------------------------------------------------------------
    async def _dial_loop(self, peer: _Peer) -> None:
        backoff_ms = self.limits.dial_backoff_ms_min
        while not self._closing:
            if peer.writer is not None:
                await asyncio.sleep(self.limits.dial_backoff_ms_min / 1000)
                continue
            address = self.resolve(peer.node_id)
            connected = address is not None and await self._dial(peer, address)
            if connected:
                backoff_ms = self.limits.dial_backoff_ms_min
                continue
            if peer.queue:
                self.on_unreachable(peer.node_id)
            await asyncio.sleep(backoff_ms / 1000)
            backoff_ms = min(backoff_ms * 2, self.limits.dial_backoff_ms_max)

    async def _dial(self, peer: _Peer, address: str) -> bool:
        host, port = split_host_port(address)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self.limits.dial_timeout_ms / 1000
            )
            writer.write(_HELLO.pack(HELLO_MAGIC, self.node_id))
            await writer.drain()
        except (OSError, TimeoutError) as error:
            log.debug("peer %d at %s: dial failed: %s", peer.node_id, address, error)
            return False
        self._attach(peer, reader, writer)
        return True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hello = await asyncio.wait_for(reader.readexactly(_HELLO.size), 5.0)
            magic, node_id = _HELLO.unpack(hello)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            writer.close()
            return
        if magic != HELLO_MAGIC or node_id == self.node_id or node_id > self.node_id:
            # Only a lower id dials us; anything else is a stranger or a misconfiguration.
            log.warning("rejected peer connection claiming id %d", node_id)
            writer.close()
            return
        self._attach(self._peer(node_id), reader, writer)

    def _attach(
        self, peer: _Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if peer.writer is not None and peer.writer is not writer:
            peer.writer.close()  # A newer connection replaces a stale one.
        peer.writer = writer
        peer.wakeup.set()
        self._spawn(self._read_loop(peer, reader, writer))
        log.info("peer %d connected", peer.node_id)

    def _drop_connection(self, peer: _Peer, writer: asyncio.StreamWriter) -> None:
        if peer.writer is writer:
            peer.writer = None
        writer.close()

    async def _read_loop(
        self, peer: _Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while not self._closing:
                header = await reader.readexactly(_LENGTH.size)
                (length,) = _LENGTH.unpack(header)
                if length > self.limits.frame_bytes_max:
                    log.warning("peer %d: frame of %d bytes over the limit", peer.node_id, length)
                    break
                payload = await reader.readexactly(length)
                messages = decode_messages(payload)
                peer.last_contact_monotonic_s = time.monotonic()
                self.frames_received += 1
                self.on_messages([m for m in messages if m.to == self.node_id])
        except (OSError, asyncio.IncompleteReadError, CodecError) as error:
            log.info("peer %d: connection lost: %s", peer.node_id, error)
        finally:
            self._drop_connection(peer, writer)

    def last_contact_ms(self, node_id: NodeId) -> int | None:
        """Milliseconds since a frame last arrived from `node_id` (None: never)."""
        peer = self.peers.get(node_id)
        if peer is None or peer.last_contact_monotonic_s == 0.0:
            return None
        return int((time.monotonic() - peer.last_contact_monotonic_s) * 1000)


def split_host_port(address: str) -> tuple[str, int]:
    """`host:port` (IPv6 in brackets) → (host, port). Raises ValueError."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {address!r} must be HOST:PORT")
    return host.strip("[]"), int(port)
