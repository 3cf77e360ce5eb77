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

entries = st.builds(Entry, uint64, uint64, st.sampled_from(EntryKind), small_bytes)
hard_states = st.builds(HardState, uint64, uint64, uint64)


@st.composite
def conf_states(draw: st.DrawFn) -> ConfState:
    voters = draw(st.frozensets(node_ids, max_size=5))
    learners = draw(st.frozensets(node_ids, max_size=3)) - voters
    return ConfState(voters, learners)


metas = st.builds(SnapshotMeta, uint64, uint64, conf_states())
snapshots = st.builds(Snapshot, metas, small_bytes)
messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=uint64,
    source=uint64,
    term=uint64,
    log_term=uint64,
    index=uint64,
    entries=st.lists(entries, max_size=5),
    commit=uint64,
    reject=st.booleans(),
    reject_hint=uint64,
    snapshot=st.none() | snapshots,
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
        (_frame([[3, -1, 0, 0, 0, 0, [], 0, False, 0, None, b""]]), "to: expected an unsigned"),
        (_frame([[3, 0, 0, 0, 0, 0, [1, 2, 0], 0, False, 0, None, b""]]), "multiple of 4"),
        (_frame([[3, 0, 0, 0, 0, 0, [1, 2, 7, b""], 0, False, 0, None, b""]]), "unknown kind"),
        (_frame([[3, 0, 0, 0, 0, 0, [], 0, 1, 0, None, b""]]), "reject must be a bool"),
        (_frame([[3, 0, 0, 0, 0, 0, [], 0, False, 0, None, "text"]]), "context: expected bytes"),
        (_frame([[3, 0, 0, 0, 0, 0, [], 0, False, 0]]), "expected 12 fields"),
        (_frame([[9, 0, 0, 0, 0, 0, [], 0, False, 0, [[1, 1, [2], [2]], b""], b""]]), "both"),
        (_frame([[9, 0, 0, 0, 0, 0, [], 0, False, 0, [[1, 1, [0], []], b""], b""]]), "reserved"),
        (_frame([]) + b"\x00", "malformed"),
    ],
)
def test_bad_frames_are_named(frame: bytes, complaint: str) -> None:
    with pytest.raises(CodecError, match=complaint):
        codec.decode_messages(frame)
