"""Fuzzing the peer wire: frames, messages and hellos (issue 8, defect 1).

Whatever bytes a stranger sends, decoding either refuses them with CodecError
(or the transport's refusal) or yields messages whose every field is within the
codec's bounds, addressed to us and sourced from the connection's peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synod.node import transport as transport_module
from synod.node.config import CLUSTER_ID_BYTES
from synod.node.transport import HELLO_MAGIC, FrameKind, PeerTransport
from synod.raft import codec
from synod.raft.codec import CodecError
from synod.raft.types import LOCAL_MESSAGES, Message, MessageType
from tests.unit.transport_helpers import CLUSTER_ID

HELLO = struct.Struct(f">8s{CLUSTER_ID_BYTES}sQQ")
US = 5

# Integers around every bound, and anything else msgpack can carry.
edge_ints = st.sampled_from(
    [0, 1, 2, US, codec.TERM_MAX, codec.TERM_MAX + 1, codec.NODE_ID_MAX, codec.NODE_ID_MAX + 1,
     2**64 - 1, -1, -(2**63)]
)  # fmt: skip
ints = edge_ints | st.integers(min_value=-(2**63), max_value=2**64 - 1)
scalars = ints | st.booleans() | st.none() | st.binary(max_size=16) | st.text(max_size=8)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6), max_leaves=30)
message_like = st.lists(values, min_size=12, max_size=12) | st.lists(
    st.one_of(st.sampled_from([int(k) for k in MessageType]), ints, values),
    min_size=12,
    max_size=12,
)


def check_bounds(message: Message) -> None:
    assert message.type not in LOCAL_MESSAGES
    assert 1 <= message.to <= codec.NODE_ID_MAX and 1 <= message.source <= codec.NODE_ID_MAX
    assert message.term <= codec.TERM_MAX and message.log_term <= codec.TERM_MAX
    for value in (message.index, message.commit, message.reject_hint):
        assert value <= codec.INDEX_MAX
    for entry in message.entries:
        assert entry.term <= codec.TERM_MAX and entry.index <= codec.INDEX_MAX
    assert len(message.context) <= codec.CONTEXT_BYTES_MAX


@settings(max_examples=500, deadline=None)
@given(st.lists(message_like, max_size=3))
def test_decoded_messages_are_within_bounds_or_refused(batch: list[list[Any]]) -> None:
    frame = bytes([codec.FRAME_VERSION]) + msgpack.packb(batch, use_bin_type=True)
    try:
        messages = codec.decode_messages(frame)
    except CodecError:
        return
    for message in messages:
        check_bounds(message)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_raw_bytes_only_raise_codec_error(garbage: bytes) -> None:
    try:
        messages = codec.decode_messages(garbage)
    except CodecError:
        return
    for message in messages:
        check_bounds(message)


def _transport() -> PeerTransport:
    return PeerTransport(
        US, "127.0.0.1:0", lambda _: None, lambda _: None, lambda _: None, lambda *_: None,
        cluster_id=CLUSTER_ID,
    )  # fmt: skip


hellos = st.builds(
    HELLO.pack,
    st.sampled_from([HELLO_MAGIC, b"SYNODP1\n"]) | st.binary(min_size=8, max_size=8),
    st.sampled_from([CLUSTER_ID]) | st.binary(min_size=16, max_size=16),
    st.sampled_from([0, 1, 4, US, 6]) | st.integers(min_value=0, max_value=2**64 - 1),
    st.sampled_from([US]) | st.integers(min_value=0, max_value=2**64 - 1),
) | st.binary(min_size=HELLO.size, max_size=HELLO.size)


@settings(max_examples=500, deadline=None)
@given(hellos)
def test_only_a_hello_naming_our_cluster_us_and_a_lower_id_is_accepted(hello: bytes) -> None:
    transport = _transport()
    try:
        sender = transport._check_hello(hello, expected_sender=None)
    except transport_module._Refused:
        return
    magic, cluster_id, claimed, receiver = HELLO.unpack(hello)
    assert (magic, cluster_id, receiver) == (HELLO_MAGIC, CLUSTER_ID, US)
    assert 1 <= sender == claimed < US


frame_kinds = st.sampled_from([int(kind) for kind in FrameKind]) | st.integers(0, 255)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame_kinds, st.binary(max_size=120) | st.lists(message_like, max_size=2).map(
    lambda batch: bytes([codec.FRAME_VERSION]) + msgpack.packb(batch, use_bin_type=True)
))  # fmt: skip
def test_any_frame_is_handled_or_refused_and_only_checked_messages_reach_the_core(
    kind: int, body: bytes
) -> None:
    delivered: list[Message] = []

    async def handle() -> None:
        transport = _transport()
        transport.on_messages = delivered.extend
        peer = transport_module._Peer(US - 1)
        with contextlib.suppress(transport_module._Refused, CodecError):
            await transport._on_frame(peer, kind, body)

    asyncio.run(handle())
    for message in delivered:
        check_bounds(message)
        assert message.to == US
        assert message.source == US - 1 or message.type == MessageType.TRANSFER_LEADER
