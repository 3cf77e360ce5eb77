"""Peer transport: one persistent TCP connection per pair of members.

The member with the lower id dials; both directions share the connection.

Wire format (all integers big-endian):

* Hello, each way once: `SYNODP2\\n`, the 16-byte cluster id, the sender's id,
  the id the sender expects at the other end (`_HELLO`). The dialer speaks
  first; the acceptor answers only if the hello names our cluster, us, and a
  lower id than ours (the lower id dials). The dialer then checks the answer
  the same way. Nothing else is read before both hellos match, so a stranger
  (or a member of another cluster) never gets a message stepped and never
  replaces a live link.
* Then frames: a 4-byte body length, a 1-byte kind (`FrameKind`), the body.
  MESSAGES carries `codec.encode_messages` (messages queued for that peer since
  the last write, batched up to `frame_messages_max` and `send_frame_bytes_max`;
  a larger single message goes alone up to `frame_bytes_max`);
  PING/PONG keep an idle link provably alive; the SNAPSHOT_* kinds stream an
  InstallSnapshot in `snapshot_chunk_bytes` chunks (below). A SNAPSHOT message
  is never sent inline.

Every frame is checked before anything is stepped: its length against
`frame_bytes_max`, every field against the codec's bounds, each message's `to`
against our id and its `source` against the connection's peer. A bad frame is
refused with one log line and the connection is closed.

Liveness: each side pings when it has written nothing for
`keepalive_interval_ms`; a connection that has delivered nothing for
`peer_dead_ms` is declared dead and aborted (TCP_USER_TIMEOUT and TCP
keepalive back this up in the kernel), and the dialer re-dials with
exponential backoff and jitter. `TransportLimits.for_election_timeout` ties the
bounds to the Raft election timeout.

Snapshots: SNAPSHOT_BEGIN names the transfer (snapshot term, index, size,
CRC32) and carries the message without its data; the receiver answers
SNAPSHOT_ACK with the offset it already holds (a partial transfer survives a
reconnect), the sender streams SNAPSHOT_CHUNKs from there, and the receiver
answers SNAPSHOT_DONE (ok or refused) once it has handed the whole, checked
message to `on_messages`. `on_snapshot_sent(peer, ok)` reports exactly that
answer; a lost connection or a missing answer within `snapshot_ack_timeout_ms`
reports failure. The receiver keeps one partial transfer per peer, keyed by
(snapshot term, index, size, CRC32), all peers' together within
`snapshot_bytes_max`; a BEGIN for another snapshot or `snapshot_partial_ttl_ms`
without a chunk drops it.

Send queues are bounded in messages and bytes: when a peer is slow or away,
the oldest messages are dropped (Raft retransmits what matters) and the core is
told the peer is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import ipaddress
import logging
import os
import random
import socket
import ssl
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from synod.node.config import CLUSTER_ID_BYTES, ConfigError
from synod.raft.codec import (
    FRAME_BYTES_MAX,
    FRAME_OVERHEAD_BYTES_MAX,
    NODE_ID_MAX,
    SNAPSHOT_BYTES_MAX,
    CodecError,
    decode_messages,
    encode_messages,
    message_bytes_bound,
)
from synod.raft.types import Message, MessageType, NodeId, Snapshot
from synod.tls import ReloadingServerContext, TlsFiles, client_context

log = logging.getLogger("synod.transport")

HELLO_MAGIC = b"SYNODP2\n"
CLUSTER_ID_FILE = "cluster-id"  # In the data dir: the cluster id pinned at first start.
_HELLO = struct.Struct(f">8s{CLUSTER_ID_BYTES}sQQ")  # magic, cluster id, sender, receiver
_FRAME_HEADER = struct.Struct(">IB")  # body length, kind
_SNAPSHOT_BEGIN = struct.Struct(">QQQI")  # snapshot term, index, total bytes, CRC32
_SNAPSHOT_AT = struct.Struct(">QQQ")  # snapshot term, index, offset (ACK and CHUNK)
_SNAPSHOT_DONE = struct.Struct(">QQB")  # snapshot term, index, ok
_CHECKSUM_IN_THREAD_BYTES_MIN = 1 << 20  # Larger buffers are checksummed off the loop.
_READ_PIECE_BYTES = 1 << 20  # Larger frame bodies are read in pieces of this size.


class FrameKind(enum.IntEnum):
    """The kind byte of a frame."""

    MESSAGES = 1
    PING = 2
    PONG = 3
    SNAPSHOT_BEGIN = 4
    SNAPSHOT_ACK = 5
    SNAPSHOT_CHUNK = 6
    SNAPSHOT_DONE = 7


class ClusterIdMismatch(ConfigError):
    """The configured cluster id differs from the one pinned in the data dir."""


class _Refused(Exception):
    """A frame or hello that breaks the protocol; the message says how."""


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """Every bound of the transport, by name. `validate` says which one is wrong."""

    send_queue_messages_max: int = 10_000  # Per peer.
    send_queue_bytes_max: int = 16 * 1024 * 1024  # Per peer, by `message_bytes_bound`.
    frame_messages_max: int = 4096
    frame_bytes_max: int = FRAME_BYTES_MAX  # A frame's body: refused above, never sent above.
    # Frames we build batch messages up to this (a single larger message still goes
    # alone, up to frame_bytes_max): bigger batches buy no throughput, only memory.
    send_frame_bytes_max: int = 4 * 1024 * 1024
    snapshot_chunk_bytes: int = 1024 * 1024
    snapshot_bytes_max: int = SNAPSHOT_BYTES_MAX  # Partial inbound snapshots, all peers.
    snapshot_ack_timeout_ms: int = 30_000  # BEGIN -> ACK, last CHUNK -> DONE.
    snapshot_partial_ttl_ms: int = 120_000  # An untouched partial inbound snapshot is dropped.
    dial_backoff_ms_min: int = 50
    dial_backoff_ms_max: int = 1000
    dial_timeout_ms: int = 2000
    hello_timeout_ms: int = 2000
    hellos_pending_max: int = 64  # Accepted connections still waiting for their hello.
    keepalive_interval_ms: int = 200  # Ping a link we have not written to for this long.
    peer_dead_ms: int = 2000  # A link silent for this long is declared dead.

    @classmethod
    def for_election_timeout(cls, election_timeout_ms: int) -> TransportLimits:
        """Bounds tied to the election timeout: a dead link is found within two
        election timeouts (so a healed partition costs about one election, not
        the kernel's retransmit backoff), and re-dialled within one more."""
        assert election_timeout_ms > 0
        limits = cls(
            keepalive_interval_ms=max(10, election_timeout_ms // 5),
            peer_dead_ms=2 * election_timeout_ms,
            dial_backoff_ms_max=election_timeout_ms,
            dial_timeout_ms=election_timeout_ms,
            hello_timeout_ms=election_timeout_ms,
        )
        limits.validate()
        return limits

    def validate(self) -> None:
        """Raises ValueError naming the first inconsistent bound."""
        for name in (f.name for f in dataclasses.fields(self)):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.keepalive_interval_ms >= self.peer_dead_ms:
            raise ValueError("keepalive_interval_ms must be below peer_dead_ms")
        if self.dial_backoff_ms_min > self.dial_backoff_ms_max:
            raise ValueError("dial_backoff_ms_min must not exceed dial_backoff_ms_max")
        if self.send_frame_bytes_max > self.frame_bytes_max:
            raise ValueError("send_frame_bytes_max must not exceed frame_bytes_max")
        if self.snapshot_chunk_bytes + _SNAPSHOT_AT.size > self.send_frame_bytes_max:
            raise ValueError("snapshot_chunk_bytes must fit in send_frame_bytes_max")
        if self.frame_bytes_max >= 2**32:
            raise ValueError("frame_bytes_max must fit the 4-byte length")


class _Stage(enum.Enum):
    NEW = "new"  # Not begun on the current connection.
    AWAIT_ACK = "await-ack"
    SENDING = "sending"
    AWAIT_DONE = "await-done"


@dataclass(slots=True)
class _Outbound:
    """An InstallSnapshot on its way to one peer."""

    message: Message
    data: bytes
    stage: _Stage = _Stage.NEW
    offset: int = 0
    crc: int | None = None
    deadline_monotonic_s: float = 0.0

    @property
    def key(self) -> tuple[int, int]:
        assert self.message.snapshot is not None
        return (self.message.snapshot.meta.term, self.message.snapshot.meta.index)


@dataclass(slots=True)
class _Inbound:
    """A partially received InstallSnapshot from one peer."""

    key: tuple[int, int]
    total_bytes: int
    crc: int
    header: Message  # The message with empty snapshot data.
    buffer: bytearray
    touched_monotonic_s: float


@dataclass(slots=True)
class _Peer:
    node_id: NodeId
    queue: deque[Message] = field(default_factory=deque)
    queued_bytes: int = 0
    control: deque[tuple[FrameKind, bytes]] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)  # Set while not connected.
    writer: asyncio.StreamWriter | None = None
    last_received_monotonic_s: float = 0.0
    last_sent_monotonic_s: float = 0.0
    last_contact_monotonic_s: float = 0.0  # 0.0: never heard from.
    dropped_messages: int = 0
    outbound: _Outbound | None = None
    inbound: _Inbound | None = None


@dataclass(slots=True)
class TransportStats:
    """Counters, for metrics and tests."""

    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0  # Frame headers and bodies.
    bytes_received: int = 0
    frames_refused: int = 0  # Closed the connection: malformed or forged frame.
    hellos_refused: int = 0  # Accepted or dialled connections refused at the hello.
    connections: int = 0  # Links established (both hellos matched).
    links_declared_dead: int = 0  # Silent for peer_dead_ms and aborted.
    dials: int = 0
    messages_dropped: int = 0  # Send-queue overflow or over frame_bytes_max.
    snapshots_sent: int = 0  # Acknowledged whole by the receiver.
    snapshots_failed: int = 0
    snapshots_received: int = 0
    snapshot_resumes: int = 0  # BEGINs answered with a non-zero offset.


@dataclass(frozen=True)
class PeerTls:
    """Mutual TLS of the peer links (docs/security.md): every member has a certificate
    for the host of its peer address, signed by the peer CA. The acceptor requires a
    client certificate and checks, after the hello, that it names the host of the
    member the hello claims; the dialer checks the acceptor's names the host it
    dialled. Messages must then carry the link's member as source (as without TLS)."""

    cert: str
    key: str
    ca: str

    @functools.cached_property
    def server(self) -> ReloadingServerContext:
        """The listener's context (reloaded when the files change)."""
        return ReloadingServerContext(TlsFiles(self.cert, self.key, client_ca=self.ca))

    def dial_context(self) -> ssl.SSLContext:
        """A fresh dialling context from the files. Raises OSError, ssl.SSLError."""
        return client_context(self.ca, self.cert, self.key)


def certificate_names(peercert: Mapping[str, Any]) -> set[str]:
    """DNS names and IP addresses a verified certificate names (SANs, else its CN),
    lower-cased. Raises nothing."""
    names = {
        str(value).lower()
        for kind, value in peercert.get("subjectAltName", ())
        if kind in ("DNS", "IP Address")
    }
    if not names:
        for rdn in peercert.get("subject", ()):
            names |= {str(value).lower() for key, value in rdn if key == "commonName"}
    assert all(isinstance(name, str) for name in names)
    return names


def names_host(names: set[str], host: str) -> bool:
    """Whether one of `names` is `host` (an IP compared as an address; `*.domain`
    matching one label). Raises nothing."""
    host = host.strip("[]").lower().rstrip(".")
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(host)
        return any(_same_ip(name, address) for name in names)
    for name in names:
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def _same_ip(name: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(name) == address
    except ValueError:
        return False


class PeerTransport:
    """Carries Raft messages between members.

    Public API: `start`, `stop`, `send`, `introduce`, `forget`, `readmit`,
    `last_contact_ms`, and the `stats`. Callbacks run on the event loop and must not block:
    `on_messages(batch)` receives checked messages addressed to us (returning
    False says they were dropped: a snapshot is then reported refused),
    `on_unreachable(peer)` and `on_snapshot_sent(peer, ok)` report failures.
    """

    def __init__(
        self,
        node_id: NodeId,
        listen_address: str,
        resolve: Callable[[NodeId], str | None],
        on_messages: Callable[[list[Message]], bool | None],
        on_unreachable: Callable[[NodeId], None],
        on_snapshot_sent: Callable[[NodeId, bool], None],
        limits: TransportLimits | None = None,
        *,
        cluster_id: bytes,
        cluster_id_file: str | None = None,
        adopt_pinned_cluster_id: bool = False,
        tls: PeerTls | None = None,
    ) -> None:
        """`cluster_id` names the cluster in every hello; with `cluster_id_file`,
        `start` pins it there at first start. `adopt_pinned_cluster_id` says
        `cluster_id` was derived from the initial membership, which a restarted
        member ignores: the id pinned at its first start is used instead of
        refusing to start. With `tls`, links are mutual TLS: see `PeerTls`.
        Raises ValueError on inconsistent `limits`."""
        assert 1 <= node_id <= NODE_ID_MAX, node_id
        assert len(cluster_id) == CLUSTER_ID_BYTES, "cluster ids are CLUSTER_ID_BYTES long"
        self.node_id = node_id
        self.listen_address = listen_address
        self.resolve = resolve
        self.on_messages = on_messages
        self.on_unreachable = on_unreachable
        self.on_snapshot_sent = on_snapshot_sent
        self.limits = limits or TransportLimits()
        self.limits.validate()
        self.cluster_id = cluster_id
        self.cluster_id_file = cluster_id_file
        self.adopt_pinned_cluster_id = adopt_pinned_cluster_id
        self.tls = tls
        self.peers: dict[NodeId, _Peer] = {}
        self.stats = TransportStats()
        self._forgotten: set[NodeId] = set()
        self._hellos_pending = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Pin the cluster id, then listen for peers.

        Raises ClusterIdMismatch if the data dir belongs to another cluster id,
        OSError if the address is taken or the id cannot be written."""
        if self.cluster_id_file is not None:
            self.cluster_id = await asyncio.to_thread(
                pin_cluster_id,
                self.cluster_id_file,
                self.cluster_id,
                adopt_pinned=self.adopt_pinned_cluster_id,
            )
        host, port = split_host_port(self.listen_address)
        handshake_s = self.limits.hello_timeout_ms / 1000
        if self.tls is None:
            self._server = await asyncio.start_server(self._accept, host, port)
        else:
            self._server = await asyncio.start_server(
                self._accept, host, port, ssl=self.tls.server.context,
                ssl_handshake_timeout=handshake_s,
            )  # fmt: skip
            self._spawn(self.tls.server.watch())
        self._spawn(self._housekeeping_loop())
        assert self._server is not None

    async def stop(self) -> None:
        """Close the listener and every connection. Raises nothing."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for peer in self.peers.values():
            if peer.writer is not None:
                peer.writer.transport.abort()
            peer.wakeup.set()
            peer.lost.set()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        assert self._closing

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # A bug (or a callback's): say so loudly rather than go quiet on a peer.
            log.error("transport task %s failed", task.get_coro(), exc_info=error)

    def _peer(self, node_id: NodeId) -> _Peer:
        peer = self.peers.get(node_id)
        if peer is None:
            assert node_id != self.node_id, "never send to ourselves"
            assert 1 <= node_id <= NODE_ID_MAX, node_id
            peer = _Peer(node_id)
            peer.lost.set()
            self.peers[node_id] = peer
            self._spawn(self._write_loop(peer))
            if self.node_id < node_id:
                self._spawn(self._dial_loop(peer))
        return peer

    def _current(self, peer: _Peer) -> bool:
        """True while `peer` is still in the table (not forgotten, not stopping)."""
        return not self._closing and self.peers.get(peer.node_id) is peer

    def forget(self, node_id: NodeId) -> None:
        """Drop a removed member: close its link, discard its queues and partial
        snapshots, and refuse its hellos until `readmit` (or a `send` to it).
        Call when a REMOVE of `node_id` is applied. Raises nothing; forgetting an
        unknown id only records it."""
        self._forgotten.add(node_id)
        peer = self.peers.pop(node_id, None)
        if peer is None:
            return
        if peer.writer is not None:
            peer.writer.transport.abort()
        peer.writer = None
        peer.queue.clear()
        peer.control.clear()
        peer.outbound = peer.inbound = None
        peer.wakeup.set()  # Its loops see they are no longer current and end.
        peer.lost.set()
        log.info("peer %d forgotten (removed from the membership)", node_id)

    def introduce(self, node_ids: Iterable[NodeId]) -> None:
        """Dial the members in ``node_ids`` (all above our id) before we have anything
        to send them: an empty member waiting to be added must reach a leader with a
        higher id, which waits for the lower id to dial. Their links are dropped like any
        other when the membership we learn does not include them. Raises nothing."""
        for node_id in node_ids:
            assert node_id > self.node_id, "the lower id dials"
            self._peer(node_id)

    def readmit(self, node_id: NodeId) -> None:
        """Accept `node_id` again after `forget`: ids are reused (a StatefulSet
        scaled down and up adds the same id back). Call when an ADD_LEARNER or
        ADD_VOTER of `node_id` is applied. Raises nothing."""
        self._forgotten.discard(node_id)

    # -- sending -----------------------------------------------------------------
    def send(self, messages: list[Message]) -> None:
        """Queue messages; never blocks, raises nothing.

        Overflow (send_queue_messages_max or send_queue_bytes_max) drops the
        oldest messages of that peer and reports it unreachable. A SNAPSHOT is
        streamed on its own and reported through `on_snapshot_sent`."""
        limits = self.limits
        touched: set[NodeId] = set()
        overflowed: set[NodeId] = set()
        for message in messages:
            self._forgotten.discard(message.to)  # Sending to it again: a member again.
            peer = self._peer(message.to)
            touched.add(message.to)
            if message.type == MessageType.SNAPSHOT:
                self._start_snapshot(peer, message)
                continue
            peer.queue.append(message)
            peer.queued_bytes += message_bytes_bound(message)
            while len(peer.queue) > 1 and (
                len(peer.queue) > limits.send_queue_messages_max
                or peer.queued_bytes > limits.send_queue_bytes_max
            ):
                dropped = peer.queue.popleft()
                peer.queued_bytes -= message_bytes_bound(dropped)
                peer.dropped_messages += 1
                self.stats.messages_dropped += 1
                overflowed.add(peer.node_id)
        for node_id in touched:
            self.peers[node_id].wakeup.set()
        for node_id in overflowed:
            # Deferred: the caller may be between a core's ready() and advance().
            asyncio.get_running_loop().call_soon(self._report_unreachable, node_id)

    def _report_unreachable(self, node_id: NodeId) -> None:
        if not self._closing and node_id in self.peers:
            self.on_unreachable(node_id)

    def _report_snapshot(self, peer: _Peer, ok: bool) -> None:
        if ok:
            self.stats.snapshots_sent += 1
        else:
            self.stats.snapshots_failed += 1
        if not self._closing and self._current(peer):
            self.on_snapshot_sent(peer.node_id, ok)

    def _start_snapshot(self, peer: _Peer, message: Message) -> None:
        snapshot = message.snapshot
        assert snapshot is not None, "a SNAPSHOT message carries a snapshot"
        if len(snapshot.data) > self.limits.snapshot_bytes_max:
            log.warning(
                "peer %d: snapshot of %d bytes exceeds snapshot_bytes_max %d; not sent",
                peer.node_id, len(snapshot.data), self.limits.snapshot_bytes_max,
            )  # fmt: skip
            asyncio.get_running_loop().call_soon(self._report_snapshot, peer, False)
            return
        if peer.outbound is not None:
            # The core sends a new snapshot only after the old one was reported or
            # superseded; the old transfer is abandoned without a second report.
            log.info("peer %d: snapshot %s supersedes %s", peer.node_id,
                     (snapshot.meta.term, snapshot.meta.index), peer.outbound.key)  # fmt: skip
        header = dataclasses.replace(message, snapshot=Snapshot(snapshot.meta, b""))
        peer.outbound = _Outbound(header, snapshot.data)

    async def _write_loop(self, peer: _Peer) -> None:
        while self._current(peer):
            await peer.wakeup.wait()
            peer.wakeup.clear()
            while self._current(peer) and (writer := peer.writer) is not None:
                frame = await self._next_frame(peer, writer)
                if frame is None:
                    break
                if not await self._write_frame(peer, writer, *frame):
                    break

    async def _next_frame(
        self, peer: _Peer, writer: asyncio.StreamWriter
    ) -> tuple[FrameKind, list[bytes]] | None:
        """The next frame for `peer`: control answers first, then Raft messages,
        then one snapshot chunk (so heartbeats flow during a long transfer)."""
        if peer.control:
            kind, body = peer.control.popleft()
            return kind, [body]
        if peer.queue:
            return FrameKind.MESSAGES, [self._take_batch(peer)]
        outbound = peer.outbound
        if outbound is None:
            return None
        if outbound.stage == _Stage.NEW:
            if outbound.crc is None:
                outbound.crc = await _crc32(outbound.data)
                if peer.outbound is not outbound or peer.writer is not writer:
                    return None  # Superseded or reconnected meanwhile: look again.
            outbound.stage = _Stage.AWAIT_ACK
            outbound.deadline_monotonic_s = self._snapshot_deadline()
            term, index = outbound.key
            begin = _SNAPSHOT_BEGIN.pack(term, index, len(outbound.data), outbound.crc)
            return FrameKind.SNAPSHOT_BEGIN, [begin, encode_messages([outbound.message])]
        if outbound.stage == _Stage.SENDING:
            start = outbound.offset
            end = min(len(outbound.data), start + self.limits.snapshot_chunk_bytes)
            outbound.offset = end
            if end == len(outbound.data):
                outbound.stage = _Stage.AWAIT_DONE
                outbound.deadline_monotonic_s = self._snapshot_deadline()
            term, index = outbound.key
            prefix = _SNAPSHOT_AT.pack(term, index, start)
            return FrameKind.SNAPSHOT_CHUNK, [prefix, outbound.data[start:end]]
        return None  # Waiting for the receiver's answer.

    def _snapshot_deadline(self) -> float:
        return time.monotonic() + self.limits.snapshot_ack_timeout_ms / 1000

    def _take_batch(self, peer: _Peer) -> bytes:
        """Encode queued messages into one frame body: a batch of at most
        send_frame_bytes_max, or one message of at most frame_bytes_max."""
        budget = self.limits.send_frame_bytes_max - FRAME_OVERHEAD_BYTES_MAX
        alone_max = self.limits.frame_bytes_max - FRAME_OVERHEAD_BYTES_MAX
        batch: list[Message] = []
        batch_bytes = 0
        while peer.queue and len(batch) < self.limits.frame_messages_max:
            size = message_bytes_bound(peer.queue[0])
            if batch and batch_bytes + size > budget:
                break
            message = peer.queue.popleft()
            peer.queued_bytes -= size
            if size > alone_max:
                # The core bounds appends far below this; refuse rather than build
                # a frame the receiver must refuse.
                log.warning("peer %d: %s message of %d bytes exceeds frame_bytes_max; dropped",
                            peer.node_id, message.type.name, size)  # fmt: skip
                self.stats.messages_dropped += 1
                asyncio.get_running_loop().call_soon(self._report_unreachable, peer.node_id)
                continue
            batch.append(message)
            batch_bytes += size
            if batch_bytes > budget:
                break  # A large message goes alone.
        payload = encode_messages(batch) if batch else b""
        assert len(payload) <= self.limits.frame_bytes_max, "message_bytes_bound is an upper bound"
        return payload

    async def _write_frame(
        self, peer: _Peer, writer: asyncio.StreamWriter, kind: FrameKind, parts: list[bytes]
    ) -> bool:
        body_bytes = sum(len(part) for part in parts)
        if kind == FrameKind.MESSAGES and body_bytes == 0:
            return True  # Every queued message was dropped as oversized.
        assert body_bytes <= self.limits.frame_bytes_max, (kind, body_bytes)
        try:
            writer.write(_FRAME_HEADER.pack(body_bytes, kind))
            for part in parts:
                writer.write(part)
            await writer.drain()
        except (OSError, ConnectionError, RuntimeError) as error:
            log.info("peer %d: write failed: %s", peer.node_id, error)
            self._drop_connection(peer, writer)
            self._report_unreachable(peer.node_id)
            return False
        peer.last_sent_monotonic_s = time.monotonic()
        self.stats.frames_sent += 1
        self.stats.bytes_sent += _FRAME_HEADER.size + body_bytes
        return True

    # -- connecting --------------------------------------------------------------
    async def _dial_loop(self, peer: _Peer) -> None:
        backoff_ms = self.limits.dial_backoff_ms_min
        while self._current(peer):
            if peer.writer is not None:
                await peer.lost.wait()
                continue
            address = self.resolve(peer.node_id)
            connected = address is not None and await self._dial(peer, address)
            if connected:
                backoff_ms = self.limits.dial_backoff_ms_min
                continue
            if peer.queue or peer.outbound is not None:
                self._report_unreachable(peer.node_id)
            # Full jitter in the upper half: members that lost each other at the same
            # moment do not re-dial in lockstep.
            await asyncio.sleep(random.uniform(backoff_ms / 2, backoff_ms) / 1000)
            backoff_ms = min(backoff_ms * 2, self.limits.dial_backoff_ms_max)

    async def _dial(self, peer: _Peer, address: str) -> bool:
        self.stats.dials += 1
        try:
            host, port = split_host_port(address)
        except ValueError as error:
            log.warning("peer %d: bad address: %s", peer.node_id, error)
            return False
        writer: asyncio.StreamWriter | None = None  # Aborted on any failure.
        try:
            if self.tls is None:
                connecting = asyncio.open_connection(host, port)
            else:
                # Built per dial, so rotated files are used; the acceptor's certificate
                # must name the host of the member's address (check_hostname).
                context = await asyncio.to_thread(self.tls.dial_context)
                connecting = asyncio.open_connection(
                    host, port, ssl=context, server_hostname=host,
                    ssl_handshake_timeout=self.limits.hello_timeout_ms / 1000,
                )  # fmt: skip
            reader, dialled = await asyncio.wait_for(connecting, self.limits.dial_timeout_ms / 1000)
            writer = dialled
            self._tune_socket(dialled)
            dialled.write(_HELLO.pack(HELLO_MAGIC, self.cluster_id, self.node_id, peer.node_id))
            answer = await asyncio.wait_for(
                reader.readexactly(_HELLO.size), self.limits.hello_timeout_ms / 1000
            )
            self._check_hello(answer, expected_sender=peer.node_id)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as error:
            log.debug("peer %d at %s: dial failed: %r", peer.node_id, address, error)
            if writer is not None:
                writer.transport.abort()
            return False
        except _Refused as error:
            self.stats.hellos_refused += 1
            log.warning("peer %d at %s: refused its hello: %s", peer.node_id, address, error)
            dialled.transport.abort()
            return False
        if not self._current(peer):
            dialled.transport.abort()
            return False
        self._attach(peer, reader, dialled)
        return True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        remote = writer.get_extra_info("peername")
        if self._hellos_pending >= self.limits.hellos_pending_max:
            # Connections that never say hello must not pile up (each waits up to
            # hello_timeout_ms); members retry with backoff.
            self.stats.hellos_refused += 1
            log.warning("refused peer connection from %s: %d hellos pending (hellos_pending_max)",
                        remote, self._hellos_pending)  # fmt: skip
            writer.transport.abort()
            return
        self._hellos_pending += 1
        try:
            hello = await asyncio.wait_for(
                reader.readexactly(_HELLO.size), self.limits.hello_timeout_ms / 1000
            )
            sender = self._check_hello(hello, expected_sender=None)
            if self.tls is not None:
                self._check_certificate(writer, sender)
            self._tune_socket(writer)
            writer.write(_HELLO.pack(HELLO_MAGIC, self.cluster_id, self.node_id, sender))
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
            log.debug("connection from %s lost before its hello: %r", remote, error)
            writer.transport.abort()
            return
        except _Refused as error:
            self.stats.hellos_refused += 1
            log.warning("refused peer connection from %s: %s", remote, error)
            writer.transport.abort()
            return
        finally:
            self._hellos_pending -= 1
        if self._closing:
            writer.transport.abort()
            return
        self._attach(self._peer(sender), reader, writer)

    def _check_hello(self, hello: bytes, expected_sender: NodeId | None) -> NodeId:
        """The sender of a valid hello. Raises _Refused naming what is wrong."""
        magic, cluster_id, sender, receiver = _HELLO.unpack(hello)
        if magic != HELLO_MAGIC:
            raise _Refused(f"not a Synod peer hello (magic {magic!r})")
        if cluster_id != self.cluster_id:
            raise _Refused(f"cluster id {cluster_id.hex()} is not ours ({self.cluster_id.hex()})")
        if receiver != self.node_id:
            raise _Refused(f"it expects member {receiver}, we are {self.node_id}")
        if not 1 <= sender <= NODE_ID_MAX or sender == self.node_id:
            raise _Refused(f"sender id {sender} is invalid")
        if expected_sender is not None and sender != expected_sender:
            raise _Refused(f"it is member {sender}, we dialled {expected_sender}")
        if expected_sender is None and sender > self.node_id:
            raise _Refused(f"member {sender} must wait for us to dial (the lower id dials)")
        if expected_sender is None and sender in self._forgotten:
            raise _Refused(f"member {sender} was removed from the membership")
        return int(sender)

    def _check_certificate(self, writer: asyncio.StreamWriter, sender: NodeId) -> None:
        """The client certificate (verified against the peer CA in the handshake) must
        name the host of `sender`'s address: a certificate of another host cannot speak
        for a member. Raises _Refused."""
        address = self.resolve(sender)
        if address is None:
            raise _Refused(f"member {sender} is not a current member (no address known)")
        host = split_host_port(address)[0]
        names = certificate_names(writer.get_extra_info("peercert") or {})
        if not names_host(names, host):
            raise _Refused(
                f"its certificate names {sorted(names)}, not {host} (member {sender}'s host)"
            )

    def _tune_socket(self, writer: asyncio.StreamWriter) -> None:
        """Kernel-side liveness: unacknowledged data fails the socket after
        peer_dead_ms (TCP_USER_TIMEOUT), idle links are probed (keepalive)."""
        sock = writer.get_extra_info("socket")
        if sock is None:
            return
        dead_s = max(1, self.limits.peer_dead_ms // 1000)
        options = [
            (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
            (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        ]
        for name, value in (
            ("TCP_USER_TIMEOUT", self.limits.peer_dead_ms),
            ("TCP_KEEPIDLE", dead_s),
            ("TCP_KEEPINTVL", 1),
            ("TCP_KEEPCNT", 3),
        ):
            if hasattr(socket, name):
                options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
        for level, option, value in options:
            with contextlib.suppress(OSError):
                sock.setsockopt(level, option, value)

    def _attach(
        self, peer: _Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if peer.writer is not None and peer.writer is not writer:
            # A newer connection (which passed the hello) replaces a stale one.
            self._drop_connection(peer, peer.writer)
        now = time.monotonic()
        peer.writer = writer
        peer.last_received_monotonic_s = now
        peer.last_sent_monotonic_s = now
        peer.lost.clear()
        peer.control.clear()  # Answers meant for the old connection.
        if peer.outbound is not None:
            peer.outbound.stage = _Stage.NEW  # Restart with a BEGIN: the receiver says where.
        peer.wakeup.set()
        self.stats.connections += 1
        self._spawn(self._read_loop(peer, reader, writer))
        log.info("peer %d connected", peer.node_id)

    def _drop_connection(self, peer: _Peer, writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()  # Never wait to flush to a peer that may be gone.
        if peer.writer is not writer:
            return
        peer.writer = None
        peer.lost.set()
        outbound = peer.outbound
        if outbound is not None and outbound.stage != _Stage.NEW:
            # The receiver keeps what it has; the core re-sends and we resume.
            peer.outbound = None
            self._report_snapshot(peer, False)

    # -- receiving ---------------------------------------------------------------
    async def _read_loop(
        self, peer: _Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while self._current(peer) and peer.writer is writer:
                header = await reader.readexactly(_FRAME_HEADER.size)
                length, kind = _FRAME_HEADER.unpack(header)
                if length > self.limits.frame_bytes_max:
                    raise _Refused(f"frame of {length} bytes exceeds frame_bytes_max")
                body = await self._read_body(peer, reader, length)
                now = time.monotonic()
                peer.last_received_monotonic_s = peer.last_contact_monotonic_s = now
                self.stats.frames_received += 1
                self.stats.bytes_received += _FRAME_HEADER.size + length
                await self._on_frame(peer, kind, body)
        except (OSError, asyncio.IncompleteReadError) as error:
            log.info("peer %d: connection lost: %r", peer.node_id, error)
        except (_Refused, CodecError) as error:
            self.stats.frames_refused += 1
            log.warning("peer %d: refused a frame, closing the connection: %s",
                        peer.node_id, error)  # fmt: skip
        finally:
            self._drop_connection(peer, writer)

    async def _read_body(
        self, peer: _Peer, reader: asyncio.StreamReader, length: int
    ) -> bytes | bytearray:
        """Read a frame body; a large one in pieces, each counting as a sign of
        life, so a big frame on a slow link is not mistaken for a dead link."""
        if length <= _READ_PIECE_BYTES:
            return await reader.readexactly(length)
        body = bytearray()
        while len(body) < length:
            body += await reader.readexactly(min(_READ_PIECE_BYTES, length - len(body)))
            peer.last_received_monotonic_s = time.monotonic()
        return body

    async def _on_frame(self, peer: _Peer, kind: int, body: bytes | bytearray) -> None:
        """Handle one frame. Raises _Refused or CodecError for a bad one."""
        if kind == FrameKind.MESSAGES:
            messages = decode_messages(body)
            for message in messages:
                self._check_message(peer, message)
                if message.type == MessageType.SNAPSHOT:
                    raise _Refused("a snapshot must be streamed, not sent inline")
            self.on_messages(messages)
        elif kind == FrameKind.PING:
            self._control(peer, FrameKind.PONG, b"")
        elif kind == FrameKind.PONG:
            pass  # Its arrival is the point.
        elif kind == FrameKind.SNAPSHOT_BEGIN:
            self._on_snapshot_begin(peer, body)
        elif kind == FrameKind.SNAPSHOT_CHUNK:
            await self._on_snapshot_chunk(peer, body)
        elif kind == FrameKind.SNAPSHOT_ACK:
            self._on_snapshot_ack(peer, body)
        elif kind == FrameKind.SNAPSHOT_DONE:
            self._on_snapshot_done(peer, body)
        else:
            raise _Refused(f"unknown frame kind {kind}")

    def _check_message(self, peer: _Peer, message: Message) -> None:
        """Raise _Refused unless `message` may be stepped as coming from `peer`."""
        if message.to != self.node_id:
            raise _Refused(f"{message.type.name} addressed to {message.to}, we are {self.node_id}")
        # TRANSFER_LEADER is the one message whose source names someone else: the
        # transferee, forwarded by a follower (see `Message`).
        if message.source != peer.node_id and message.type != MessageType.TRANSFER_LEADER:
            raise _Refused(
                f"{message.type.name} claims source {message.source} on the link of {peer.node_id}"
            )

    def _control(self, peer: _Peer, kind: FrameKind, body: bytes) -> None:
        peer.control.append((kind, body))
        peer.wakeup.set()

    def _on_snapshot_begin(self, peer: _Peer, body: bytes | bytearray) -> None:
        if len(body) < _SNAPSHOT_BEGIN.size:
            raise _Refused("short SNAPSHOT_BEGIN")
        term, index, total_bytes, crc = _SNAPSHOT_BEGIN.unpack_from(body)
        messages = decode_messages(body[_SNAPSHOT_BEGIN.size :])
        if len(messages) != 1 or messages[0].type != MessageType.SNAPSHOT:
            raise _Refused("SNAPSHOT_BEGIN must carry exactly one SNAPSHOT message")
        header = messages[0]
        self._check_message(peer, header)
        snapshot = header.snapshot
        if (
            snapshot is None
            or snapshot.data
            or (snapshot.meta.term, snapshot.meta.index)
            != (
                term,
                index,
            )
        ):
            raise _Refused("SNAPSHOT_BEGIN's message does not match its transfer")
        key = (term, index)
        inbound = peer.inbound
        if inbound is not None and (inbound.key, inbound.total_bytes, inbound.crc) == (
            key,
            total_bytes,
            crc,
        ):
            inbound.header = header  # The same snapshot, perhaps re-sent in a newer term.
            inbound.touched_monotonic_s = time.monotonic()
            if inbound.buffer:
                self.stats.snapshot_resumes += 1
            log.info("peer %d: snapshot %s resumes at %d of %d bytes",
                     peer.node_id, key, len(inbound.buffer), total_bytes)  # fmt: skip
            self._control(
                peer, FrameKind.SNAPSHOT_ACK, _SNAPSHOT_AT.pack(*key, len(inbound.buffer))
            )
            return
        peer.inbound = None  # A different snapshot: the old partial is stale.
        others = sum(p.inbound.total_bytes for p in self.peers.values() if p.inbound is not None)
        if others + total_bytes > self.limits.snapshot_bytes_max:
            log.warning("peer %d: refused snapshot %s of %d bytes (snapshot_bytes_max %d)",
                        peer.node_id, key, total_bytes, self.limits.snapshot_bytes_max)  # fmt: skip
            self._control(peer, FrameKind.SNAPSHOT_DONE, _SNAPSHOT_DONE.pack(*key, 0))
            return
        peer.inbound = _Inbound(key, total_bytes, crc, header, bytearray(), time.monotonic())
        log.info("peer %d: receiving snapshot %s of %d bytes", peer.node_id, key, total_bytes)
        self._control(peer, FrameKind.SNAPSHOT_ACK, _SNAPSHOT_AT.pack(*key, 0))

    async def _on_snapshot_chunk(self, peer: _Peer, body: bytes | bytearray) -> None:
        if len(body) < _SNAPSHOT_AT.size:
            raise _Refused("short SNAPSHOT_CHUNK")
        term, index, offset = _SNAPSHOT_AT.unpack_from(body)
        key = (term, index)
        inbound = peer.inbound
        if inbound is None or inbound.key != key:
            raise _Refused(f"SNAPSHOT_CHUNK for {key} without its BEGIN")
        data = memoryview(body)[_SNAPSHOT_AT.size :]
        if offset != len(inbound.buffer) or offset + len(data) > inbound.total_bytes:
            raise _Refused(f"SNAPSHOT_CHUNK at {offset} does not continue {len(inbound.buffer)}")
        inbound.buffer += data
        inbound.touched_monotonic_s = time.monotonic()
        if len(inbound.buffer) < inbound.total_bytes:
            return
        peer.inbound = None
        snapshot_data = bytes(inbound.buffer)
        ok = await _crc32(snapshot_data) == inbound.crc
        if ok:
            header = inbound.header
            assert header.snapshot is not None
            snapshot = Snapshot(header.snapshot.meta, snapshot_data)
            message = dataclasses.replace(header, snapshot=snapshot)
            ok = self.on_messages([message]) is not False
            log.info("peer %d: received snapshot %s (%d bytes)%s", peer.node_id, key,
                     len(snapshot_data), "" if ok else ", but the node dropped it")  # fmt: skip
            self.stats.snapshots_received += int(ok)
        else:
            log.warning("peer %d: snapshot %s fails its checksum; refused", peer.node_id, key)
        self._control(peer, FrameKind.SNAPSHOT_DONE, _SNAPSHOT_DONE.pack(*key, int(ok)))

    def _on_snapshot_ack(self, peer: _Peer, body: bytes | bytearray) -> None:
        if len(body) != _SNAPSHOT_AT.size:
            raise _Refused("malformed SNAPSHOT_ACK")
        term, index, offset = _SNAPSHOT_AT.unpack(body)
        outbound = peer.outbound
        if outbound is None or outbound.key != (term, index) or outbound.stage != _Stage.AWAIT_ACK:
            return  # The answer to a transfer we have abandoned.
        if offset >= len(outbound.data):
            raise _Refused(f"SNAPSHOT_ACK offset {offset} beyond {len(outbound.data)} bytes")
        outbound.offset = offset
        outbound.stage = _Stage.SENDING
        peer.wakeup.set()

    def _on_snapshot_done(self, peer: _Peer, body: bytes | bytearray) -> None:
        if len(body) != _SNAPSHOT_DONE.size:
            raise _Refused("malformed SNAPSHOT_DONE")
        term, index, ok = _SNAPSHOT_DONE.unpack(body)
        outbound = peer.outbound
        if outbound is None or outbound.key != (term, index) or outbound.stage == _Stage.NEW:
            return
        peer.outbound = None
        log.info("peer %d: snapshot %s %s", peer.node_id, (term, index),
                 "installed" if ok else "refused")  # fmt: skip
        self._report_snapshot(peer, bool(ok))

    # -- housekeeping ------------------------------------------------------------
    async def _housekeeping_loop(self) -> None:
        interval_s = self.limits.keepalive_interval_ms / 1000
        while not self._closing:
            await asyncio.sleep(interval_s / 2)
            self._housekeeping(time.monotonic())

    def _housekeeping(self, now: float) -> None:
        """Ping idle links, abort silent ones, time out snapshot answers, drop
        stale partial snapshots."""
        limits = self.limits
        for peer in list(self.peers.values()):
            writer = peer.writer
            if writer is not None:
                silent_ms = (now - peer.last_received_monotonic_s) * 1000
                if silent_ms > limits.peer_dead_ms:
                    self.stats.links_declared_dead += 1
                    log.warning("peer %d: nothing received for %d ms (peer_dead_ms %d); "
                                "declaring the link dead", peer.node_id, silent_ms,
                                limits.peer_dead_ms)  # fmt: skip
                    self._drop_connection(peer, writer)
                    self._report_unreachable(peer.node_id)
                elif (
                    now - peer.last_sent_monotonic_s
                ) * 1000 >= limits.keepalive_interval_ms and not peer.control:
                    self._control(peer, FrameKind.PING, b"")
            outbound = peer.outbound
            if (
                outbound is not None
                and outbound.stage in (_Stage.AWAIT_ACK, _Stage.AWAIT_DONE)
                and now > outbound.deadline_monotonic_s
            ):
                log.warning("peer %d: no answer to snapshot %s within %d ms", peer.node_id,
                            outbound.key, limits.snapshot_ack_timeout_ms)  # fmt: skip
                peer.outbound = None
                self._report_snapshot(peer, False)
            inbound = peer.inbound
            if inbound is not None and (
                (now - inbound.touched_monotonic_s) * 1000 > limits.snapshot_partial_ttl_ms
            ):
                log.info("peer %d: dropped stale partial snapshot %s", peer.node_id, inbound.key)
                peer.inbound = None

    def last_contact_ms(self, node_id: NodeId) -> int | None:
        """Milliseconds since a frame last arrived from `node_id` (None: never)."""
        peer = self.peers.get(node_id)
        if peer is None or peer.last_contact_monotonic_s == 0.0:
            return None
        return int((time.monotonic() - peer.last_contact_monotonic_s) * 1000)


async def _crc32(data: bytes) -> int:
    """CRC32 of `data`; large buffers off the event loop (zlib releases the GIL)."""
    if len(data) < _CHECKSUM_IN_THREAD_BYTES_MIN:
        return zlib.crc32(data)
    return await asyncio.to_thread(zlib.crc32, data)


def pin_cluster_id(path: str, cluster_id: bytes, *, adopt_pinned: bool = False) -> bytes:
    """Record `cluster_id` at `path` on first start; afterwards insist on it, or
    with `adopt_pinned` use the pinned one. Returns the cluster id to use.

    Raises ClusterIdMismatch when `path` holds another id (the data dir belongs
    to another cluster, or the token changed) or an unreadable one, OSError if
    it cannot be read or written.
    """
    assert len(cluster_id) == CLUSTER_ID_BYTES
    try:
        with open(path, encoding="ascii") as handle:
            pinned = handle.read().strip()
    except FileNotFoundError:
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, exist_ok=True)
        temporary = path + ".tmp"
        with open(temporary, "w", encoding="ascii") as handle:
            handle.write(cluster_id.hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return cluster_id
    except UnicodeDecodeError:
        pinned = "(unreadable)"
    try:
        pinned_id = bytes.fromhex(pinned)
    except ValueError:
        pinned_id = b""
    if len(pinned_id) != CLUSTER_ID_BYTES:
        raise ClusterIdMismatch(f"{path} does not hold a cluster id ({pinned!r:.60}); "
                                "restore it or remove it to pin the configured one")  # fmt: skip
    if pinned_id == cluster_id or adopt_pinned:
        return pinned_id
    raise ClusterIdMismatch(
        f"this data dir belongs to cluster id {pinned} ({path}), but --cluster-token "
        f"gives {cluster_id.hex()}: start with the token it was created with, or use "
        "another --data-dir"
    )


def split_host_port(address: str) -> tuple[str, int]:
    """`host:port` (IPv6 in brackets) → (host, port). Raises ValueError."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {address!r} must be HOST:PORT")
    return host.strip("[]"), int(port)
