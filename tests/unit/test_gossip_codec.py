"""The gossip wire codec: round trips, and malformed input refused with CodecError."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.gossip.messages import (
    DATAGRAM_BYTES_MAX,
    Ack,
    Alive,
    CodecError,
    Dead,
    MemberRecord,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Suspect,
    decode_datagram,
    decode_message,
    encode_datagram,
    encode_message,
)
from synod.gossip.state import MemberState, Meta

META = Meta("http://10.0.0.1:2379", "zone-a", ("kv", "locks"))
MESSAGES: list[Message] = [
    Ping(7, "b", "a", "10.0.0.1:7946"),
    PingReq(8, "c", "10.0.0.3:7946", "a", "10.0.0.1:7946", True),
    Ack(9, "b"),
    Nack(10, "b"),
    Alive(3, "a", "10.0.0.1:7946", META),
    Suspect(3, "b", "a"),
    Dead(4, "c", "a"),
    PushPull(True, False, (MemberRecord("a", "10.0.0.1:7946", 1, MemberState.SUSPECT, META),)),
]


def test_every_message_round_trips_in_one_datagram() -> None:
    datagram = encode_datagram("a", [encode_message(m) for m in MESSAGES])
    assert decode_datagram(datagram) == ("a", MESSAGES)


def _raw(*values: object) -> bytes:
    return b"".join(msgpack.packb(v) for v in values)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "1.."),
        (b"\xc1", "not msgpack"),
        (_raw(2, "a", 1, [3, 1, "b"]), "wire version"),
        (_raw(1, "a", 2, [3, 1, "b"]), "count"),
        (_raw(1, "", 1, [3, 1, "b"]), "sender"),
        (_raw(1, "a", 1, [99, 1]), "unknown message type"),
        (_raw(1, "a", 1, [3, -1, "b"]), "seq"),
        (_raw(1, "a", 1, [3, 1]), "fields"),
        (_raw(1, "a", 1, [5, 2**60, "b", "x:1", "", "", []]), "incarnation"),
        (_raw(1, "a", 1, [5, 1, "b", "x:1", "", "", ["s"] * 17]), "services"),
        (_raw(1, "a", 1, [5, 1, "b" * 200, "x:1", "", "", []]), "name"),
        (_raw(1, "a", 1, [8, True, False, [["a", "x:1", 1, 9, "", "", []]]]), "state"),
        (_raw(1, "a", 1, [2, 1, "c", "x:1", "a", "y:1", 1]), "nack"),
        (b"\x00" * (DATAGRAM_BYTES_MAX + 1), "1.."),
    ],
)
def test_malformed_datagrams_are_refused(data: bytes, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        decode_datagram(data)


def test_an_empty_or_oversized_datagram_cannot_be_encoded() -> None:
    with pytest.raises(CodecError):
        encode_datagram("a", [])
    with pytest.raises(CodecError):
        encode_datagram("a", [b"\xc4" * (DATAGRAM_BYTES_MAX + 1)])


def test_decode_message_refuses_non_arrays() -> None:
    for value in (None, 3, [], ["x"], {"a": 1}):
        with pytest.raises(CodecError):
            decode_message(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_decode_or_raise_codec_error(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        decode_datagram(data)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(-(2**64), 2**64), st.text(max_size=20), st.booleans(), st.none(),
            st.lists(st.integers(0, 10), max_size=8),
        ),
        max_size=8,
    )
)  # fmt: skip
def test_random_message_arrays_decode_or_raise_codec_error(fields: list[object]) -> None:
    for kind in range(1, 9):
        with contextlib.suppress(CodecError):
            decode_message([kind, *fields])
