"""Fuzzing the readers of what is on disk (issue 15): the WAL replay, the snapshot file
and the services' snapshot payload. Whatever the bytes, each either reads them or
refuses them with its own error (WalError, SnapshotCorruption, InvalidArgument) —
never another exception, never a hang. A short run here; raise max_examples (or
HYPOTHESIS_PROFILE) for a long one."""

from __future__ import annotations

import contextlib
import os
import tempfile

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synod.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from synod.services.commands import encode_command, lease_grant_op, put_op
from synod.services.errors import InvalidArgument
from synod.services.state import ServiceStateMachine
from synod.storage.fs import OsFileSystem
from synod.storage.snapfile import (
    SnapshotCorruption,
    decode_snapshot_file,
    encode_snapshot_file,
    snapshot_name,
)
from synod.storage.wal import RecordType, Wal, WalError, encode_record

EXAMPLES = 150
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

# -- mutations --------------------------------------------------------------------------

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
)


def mutate(data: bytes, changes: list[tuple[str, int, int]]) -> bytes:
    """``data`` with byte flips, a truncation or inserted bytes (positions wrap)."""
    out = bytearray(data)
    for kind, position, value in changes:
        if not out:
            break
        at = position % len(out)
        if kind == "flip":
            out[at] ^= value
        elif kind == "cut":
            del out[at:]
        else:
            out.insert(at, value)
    return bytes(out)


# -- snapshot files -----------------------------------------------------------------------


def _snapshot() -> Snapshot:
    sm = ServiceStateMachine()
    sm.apply(1, encode_command(put_op(b"k", b"v")))
    sm.apply(2, encode_command(lease_grant_op(5_000, pick=12345)))
    meta = SnapshotMeta(index=2, term=1, conf=ConfState(voters=frozenset({1, 2, 3})))
    return Snapshot(meta, sm.snapshot())


SNAPSHOT = _snapshot()
SNAPSHOT_PATH = "/snap/" + snapshot_name(SNAPSHOT.meta.term, SNAPSHOT.meta.index)
SNAPSHOT_FILE = encode_snapshot_file(SNAPSHOT)


@FUZZ
@given(st.lists(mutation, min_size=1, max_size=4))
def test_snapshot_file_reader_reads_or_refuses_any_damage(
    changes: list[tuple[str, int, int]],
) -> None:
    content = mutate(SNAPSHOT_FILE, changes)
    try:
        decoded = decode_snapshot_file(SNAPSHOT_PATH, content)
    except SnapshotCorruption:
        return
    assert decoded.meta.index == SNAPSHOT.meta.index  # only a harmless change reads


@FUZZ
@given(st.binary(max_size=512))
def test_snapshot_file_reader_refuses_arbitrary_bytes(content: bytes) -> None:
    with contextlib.suppress(SnapshotCorruption):
        decode_snapshot_file(SNAPSHOT_PATH, content)


# -- the services' snapshot payload ------------------------------------------------------

json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=20,
)  # fmt: skip


@FUZZ
@given(st.lists(mutation, min_size=1, max_size=3), json_like, st.sampled_from(
    ["kv", "leases", "sessions", "locks", "ids", "limits", "format"]))  # fmt: skip
def test_state_payload_reader_refuses_without_changing_anything(
    changes: list[tuple[str, int, int]], junk: object, section: str
) -> None:
    sm = ServiceStateMachine()
    sm.apply(1, encode_command(put_op(b"keep", b"me")))
    before = sm.snapshot()
    document = msgpack.unpackb(SNAPSHOT.data, raw=False, strict_map_key=False)
    document[section] = junk
    for data in (mutate(SNAPSHOT.data, changes), msgpack.packb(document, use_bin_type=True)):
        try:
            sm.restore(data)
        except InvalidArgument:
            assert sm.snapshot() == before, "a refused payload changed the state"
            continue
        sm = ServiceStateMachine()  # it read: start again from the known state
        sm.apply(1, encode_command(put_op(b"keep", b"me")))


# -- the WAL --------------------------------------------------------------------------------


def _wal_segments(directory: str) -> list[str]:
    return sorted(os.path.join(directory, name) for name in os.listdir(directory))


def _written_wal(directory: str) -> None:
    wal, _ = Wal.open(OsFileSystem(), directory)
    entries = [Entry(1, index, data=bytes([index]) * 30) for index in range(1, 9)]
    wal.write(HardState(term=1, vote=1, commit=4), entries)
    wal.sync()
    wal.close()


@FUZZ
@given(st.lists(mutation, min_size=1, max_size=4))
def test_wal_replay_reads_repairs_or_refuses_any_damage(
    changes: list[tuple[str, int, int]],
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        _written_wal(directory)
        (segment,) = _wal_segments(directory)
        with open(segment, "rb") as handle:
            data = handle.read()
        with open(segment, "wb") as handle:
            handle.write(mutate(data, changes))
        try:
            _wal, state = Wal.open(OsFileSystem(), directory)
        except WalError:
            return
        indexes = [entry.index for entry in state.entries]
        assert indexes == list(range(1, len(indexes) + 1)), "replayed entries are contiguous"
        _wal.close()


@FUZZ
@given(st.sampled_from(list(RecordType)), st.binary(max_size=200))
def test_wal_replay_of_a_well_checksummed_record_with_any_payload(
    kind: RecordType, payload: bytes
) -> None:
    # The checksum holds, so only the payload decoding stands between it and the state.
    with tempfile.TemporaryDirectory() as directory:
        _written_wal(directory)
        (segment,) = _wal_segments(directory)
        with open(segment, "ab") as handle:
            handle.write(encode_record(kind, payload))
        try:
            wal, _state = Wal.open(OsFileSystem(), directory)
        except WalError:
            return
        wal.close()


def test_regressions_found_by_the_payload_fuzzer() -> None:
    # Each raised AttributeError / OverflowError out of restore (a node receiving such a
    # snapshot from a peer would have crashed its loop) before they were refused.
    document = msgpack.unpackb(SNAPSHOT.data, raw=False, strict_map_key=False)
    cases = [("limits", True), ("kv", True), ("leases", {"next_id": 1, "leases": [[2**64 - 1, 5]]}),
             ("sessions", True), ("locks", True), ("ids", True)]  # fmt: skip
    for section, junk in cases:
        sm = ServiceStateMachine()
        before = sm.snapshot()
        data = msgpack.packb({**document, section: junk}, use_bin_type=True)
        try:
            sm.restore(data)
        except InvalidArgument:
            assert sm.snapshot() == before, section
            continue
        raise AssertionError(f"{section}={junk!r} was accepted")
