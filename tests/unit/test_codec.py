"""Round trips and refusals of the msgpack codec (synod.raft.codec)."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.raft import codec
from synod.raft.codec import CodecError
from synod.raft.types import (
    LOCAL_MESSAGES,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

uint64 = st.integers(min_value=0, max_value=2**64 - 1)
small_bytes = st.binary(max_size=64)
node_ids = st.integers(min_value=1, max_value=2**64 - 1)
# What a peer may send: fields within the codec's bounds, no LOCAL_* type.
terms = st.integers(min_value=0, max_value=codec.TERM_MAX)
indexes = st.integers(min_value=0, max_value=codec.INDEX_MAX)
peer_ids = st.integers(min_value=1, max_value=codec.NODE_ID_MAX)
peer_entries = st.builds(Entry, terms, indexes, st.sampled_from(EntryKind), small_bytes)

entries = st.builds(Entry, uint64, uint64, st.sampled_from(EntryKind), small_bytes)
hard_states = st.builds(HardState, uint64, uint64, uint64)


@st.composite
def conf_states(draw: st.DrawFn) -> ConfState:
    voters = draw(st.frozensets(node_ids, max_size=5))
    learners = draw(st.frozensets(node_ids, max_size=3)) - voters
    return ConfState(voters, learners)


metas = st.builds(SnapshotMeta, uint64, uint64, conf_states())
snapshots = st.builds(Snapshot, metas, small_bytes)


@st.composite
def peer_conf_states(draw: st.DrawFn) -> ConfState:
    voters = draw(st.frozensets(peer_ids, max_size=5))
    learners = draw(st.frozensets(peer_ids, max_size=3)) - voters
    return ConfState(voters, learners)


peer_snapshots = st.builds(
    Snapshot, st.builds(SnapshotMeta, indexes, terms, peer_conf_states()), small_bytes
)
messages = st.builds(
    Message,
    type=st.sampled_from([kind for kind in MessageType if kind not in LOCAL_MESSAGES]),
    to=peer_ids,
    source=peer_ids,
    term=terms,
    log_term=terms,
    index=indexes,
    entries=st.lists(peer_entries, max_size=5),
    commit=indexes,
    reject=st.booleans(),
    reject_hint=indexes,
    snapshot=st.none() | peer_snapshots,
    context=small_bytes,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(messages, max_size=6))
def test_messages_round_trip(batch: list[Message]) -> None:
    frame = codec.encode_messages(batch)
    assert frame[0] == codec.FRAME_VERSION
    assert codec.decode_messages(frame) == batch


@settings(max_examples=100, deadline=None)
@given(entries, hard_states, snapshots)
def test_values_round_trip(entry: Entry, hard_state: HardState, snapshot: Snapshot) -> None:
    assert codec.decode_entry(codec.encode_entry(entry)) == entry
    assert codec.decode_hard_state(codec.encode_hard_state(hard_state)) == hard_state
    assert codec.decode_snapshot(codec.encode_snapshot(snapshot)) == snapshot
    assert codec.decode_snapshot_meta(codec.encode_snapshot_meta(snapshot.meta)) == snapshot.meta


def test_heartbeat_is_compact() -> None:
    heartbeat = Message(MessageType.HEARTBEAT, to=2, source=1, term=7, commit=1000)
    assert len(codec.encode_messages([heartbeat])) <= 20


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_garbage_raises_codec_error_only(garbage: bytes) -> None:
    with contextlib.suppress(CodecError):
        codec.decode_messages(bytes([codec.FRAME_VERSION]) + garbage)


@settings(max_examples=200, deadline=None)
@given(st.lists(messages, min_size=1, max_size=3), st.data())
def test_truncated_or_flipped_frames_never_escape(
    batch: list[Message], data: st.DataObject
) -> None:
    frame = bytearray(codec.encode_messages(batch))
    position = data.draw(st.integers(min_value=1, max_value=len(frame) - 1))
    frame[position] ^= data.draw(st.integers(min_value=1, max_value=255))
    for candidate in (bytes(frame), bytes(frame[:position])):
        with contextlib.suppress(CodecError):
            codec.decode_messages(candidate)


def _frame(value: object) -> bytes:
    return bytes([codec.FRAME_VERSION]) + msgpack.packb(value, use_bin_type=True)


@pytest.mark.parametrize(
    ("frame", "complaint"),
    [
        (b"", "empty"),
        (b"\x09\x90", "version 9"),
        (_frame({"a": 1}), "expected an array"),
        (_frame([[99, 0, 0, 0, 0, 0, [], 0, False, 0, None, b""]]), "unknown type"),
        (_frame([[3, -1, 1, 0, 0, 0, [], 0, False, 0, None, b""]]), "to: expected an unsigned"),
        (_frame([[3, 2, 1, 0, 0, 0, [1, 2, 0], 0, False, 0, None, b""]]), "multiple of 4"),
        (_frame([[3, 2, 1, 0, 0, 0, [1, 2, 7, b""], 0, False, 0, None, b""]]), "unknown kind"),
        (_frame([[3, 2, 1, 0, 0, 0, [], 0, 1, 0, None, b""]]), "reject must be a bool"),
        (_frame([[3, 2, 1, 0, 0, 0, [], 0, False, 0, None, "text"]]), "context: expected bytes"),
        (_frame([[3, 2, 1, 0, 0, 0, [], 0, False, 0]]), "expected 12 fields"),
        (_frame([[9, 2, 1, 0, 0, 0, [], 0, False, 0, [[1, 1, [2], [2]], b""], b""]]), "both"),
        (_frame([[9, 2, 1, 0, 0, 0, [], 0, False, 0, [[1, 1, [0], []], b""], b""]]), "reserved"),
        (_frame([]) + b"\x00", "malformed"),
    ],
)
def test_bad_frames_are_named(frame: bytes, complaint: str) -> None:
    with pytest.raises(CodecError, match=complaint):
        codec.decode_messages(frame)


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({3: 2**64 - 1}, "term: 18446744073709551615 exceeds"),  # The frame that bricked a cluster.
        ({3: codec.TERM_MAX + 1}, "term: .* exceeds"),
        ({4: codec.TERM_MAX + 1}, "log term: .* exceeds"),
        ({5: codec.INDEX_MAX + 1}, "index: .* exceeds"),
        ({7: codec.INDEX_MAX + 1}, "commit: .* exceeds"),
        ({9: codec.INDEX_MAX + 1}, "reject hint: .* exceeds"),
        ({1: codec.NODE_ID_MAX + 1}, "to: .* exceeds"),
        ({2: 0}, "source: node id 0 is reserved"),
        ({0: int(MessageType.LOCAL_HUP)}, "never leaves a node"),
        ({11: bytes(codec.CONTEXT_BYTES_MAX + 1)}, "context: .* exceeds"),
        ({6: [codec.TERM_MAX + 1, 1, 0, b""]}, "out of bounds"),
        ({0: 9, 10: [[1, 1, [2**63], []], b""]}, "snapshot member: .* exceeds"),
    ],
)
def test_out_of_bounds_fields_are_refused(fields: dict[int, object], complaint: str) -> None:
    message: list[object] = [int(MessageType.HEARTBEAT), 2, 1, 5, 0, 0, [], 0, False, 0, None, b""]
    for position, value in fields.items():
        message[position] = value
    with pytest.raises(CodecError, match=complaint):
        codec.decode_messages(_frame([message]))


@settings(max_examples=100, deadline=None)
@given(st.lists(messages, min_size=1, max_size=6))
def test_message_bytes_bound_is_an_upper_bound(batch: list[Message]) -> None:
    encoded = codec.encode_messages(batch)
    bound = codec.FRAME_OVERHEAD_BYTES_MAX + sum(codec.message_bytes_bound(m) for m in batch)
    assert len(encoded) <= bound
