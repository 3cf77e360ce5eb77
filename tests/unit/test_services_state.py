"""ServiceStateMachine: dispatch, bad input, sessions through apply, snapshots, determinism."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.services.commands import (
    compact_op,
    compare,
    delete_op,
    encode_command,
    lease_expire_op,
    lease_grant_op,
    lease_revoke_op,
    put_op,
    range_op,
    session_close_op,
    session_open_op,
    txn_op,
)
from synod.services.errors import InvalidArgument
from synod.services.limits import ServiceLimits
from synod.services.state import ServiceStateMachine


def run(sm: ServiceStateMachine, op: dict[str, Any], **envelope: int) -> dict[str, Any]:
    return sm.apply(sm.applied_index + 1, encode_command(op, **envelope))


def test_results_have_the_documented_shapes() -> None:
    sm = ServiceStateMachine()
    assert run(sm, put_op(b"a", b"1")) == {"ok": True, "revision": 2, "prev_kv": None}
    second = run(sm, put_op(b"a", b"2", prev_kv=True))
    assert second["prev_kv"]["value"] == b"1" and second["revision"] == 3
    deleted = run(sm, delete_op(b"a", prefix=True, prev_kv=True))
    assert deleted["deleted"] == 1 and deleted["prev_kvs"][0]["value"] == b"2"
    txn = run(sm, txn_op([compare(b"a", "version", "=", 0)], [put_op(b"a", b"3")]))
    assert txn["succeeded"] and txn["responses"] == [{"kind": "put", "prev_kv": None}]
    ranged = run(sm, range_op(b"a"))
    assert ranged["count"] == 1 and ranged["kvs"][0]["version"] == 1
    assert run(sm, compact_op(3)) == {"ok": True, "revision": 5, "compact_revision": 3}


BAD_INPUTS: list[bytes] = [
    b"\xff\x00garbage",
    msgpack.packb({"op": {"kind": "teleport"}}),
    msgpack.packb({"op": {"kind": "put", "key": b"k"}}),
    msgpack.packb({"op": {"kind": "put", "key": "text", "value": b"v"}}),
    msgpack.packb({"op": {"kind": "put", "key": b"k", "value": b"v", "lease": -1}}),
    msgpack.packb({"op": {"kind": "txn", "success": [{"kind": "txn"}]}}),
    msgpack.packb({"op": {"kind": "txn", "compare": [{"key": b"k", "target": "color"}]}}),
    msgpack.packb({"op": {"kind": "compact", "revision": 99}}),
    msgpack.packb({"op": {"kind": "lease_grant", "ttl_ms": 1}}),
    msgpack.packb({"op": {"kind": "lease_revoke", "id": 77}}),
    msgpack.packb({"op": {"kind": "lease_expire", "ids": ["x"]}}),
    msgpack.packb({"c": 5, "s": 1, "op": {"kind": "put", "key": b"k", "value": b""}}),
    msgpack.packb({"c": 5, "op": {"kind": "session_open"}}),
    msgpack.packb({"op": {"kind": "session_close"}}),
    msgpack.packb({"op": {"kind": "range", "key": b"k", "revision": 50}}),
    msgpack.packb({"op": {"kind": "put", "key": b"k" * 5000, "value": b""}}),
    msgpack.packb({"op": [1, 2]}),
    msgpack.packb({"op": {"kind": "put", "key": msgpack.ExtType(1, b"x"), "value": b""}}),
]


@pytest.mark.parametrize("data", BAD_INPUTS)
def test_bad_input_is_a_typed_error_result_and_changes_nothing(data: bytes) -> None:
    sm = ServiceStateMachine()
    run(sm, put_op(b"k", b"v"))
    before = sm.snapshot()
    result = sm.apply(2, data)
    assert result["ok"] is False and result["revision"] == 2
    assert isinstance(result["error"]["code"], str) and result["error"]["message"]
    after = ServiceStateMachine()
    after.restore(sm.snapshot())
    assert after.applied_index == 2
    # Only applied_index moved: compare the rest of the snapshot.
    strip = lambda raw: {k: v for k, v in msgpack.unpackb(raw).items() if k != "applied_index"}  # noqa: E731
    assert strip(sm.snapshot()) == strip(before)


def test_sessions_through_apply_dedupe_retries() -> None:
    sm = ServiceStateMachine()
    client = run(sm, session_open_op())["client_id"]
    first = run(sm, put_op(b"k", b"1"), client_id=client, seq=1)
    retry = run(sm, put_op(b"k", b"1"), client_id=client, seq=1)
    assert first == retry and sm.kv.revision == 2
    failed = run(sm, lease_revoke_op(9), client_id=client, seq=2)
    assert run(sm, lease_revoke_op(9), client_id=client, seq=2) == failed  # errors cached too
    assert run(sm, range_op(b"k"), client_id=client, seq=3, ack_seq=2)["ok"]
    expired = run(sm, put_op(b"k", b"2"), client_id=client, seq=1)  # acked by ack_seq=2
    assert expired["error"]["code"] == "session-expired"
    assert run(sm, session_close_op(), client_id=client, seq=4)["ok"]
    gone = run(sm, put_op(b"k", b"3"), client_id=client, seq=5)
    assert gone["error"]["code"] == "session-expired" and sm.kv.revision == 2


def test_empty_entry_is_a_noop_and_index_must_grow() -> None:
    sm = ServiceStateMachine()
    assert sm.apply(3, b"")["ok"] and sm.applied_index == 3
    with pytest.raises(AssertionError):
        sm.apply(3, b"")


def test_restore_rejects_garbage_and_keeps_state() -> None:
    sm = ServiceStateMachine()
    run(sm, put_op(b"k", b"v"))
    before = sm.snapshot()
    for garbage in (b"", b"\x01", msgpack.packb({"format": 2}), msgpack.packb([1])):
        with pytest.raises(InvalidArgument):
            sm.restore(garbage)
    assert sm.snapshot() == before


def test_restore_cancels_watchers() -> None:
    sm = ServiceStateMachine()
    watcher = sm.watches.watch(b"k")
    sm.restore(ServiceStateMachine().snapshot())
    assert watcher.cancel_reason == "restored"


# -- property: determinism and snapshot round trip ------------------------------------

KEYS = st.sampled_from([b"a", b"b", b"p/1", b"p/2", b"z"])
VALUES = st.binary(max_size=4)
LIMITS = ServiceLimits(lease_ttl_ms_min=1, sessions_max=2, responses_per_session_max=2)


def cas_txn(key: bytes, value: bytes, other: bytes, new: bytes) -> dict[str, Any]:
    return txn_op([compare(key, "value", "=", value)], [put_op(other, new)], [delete_op(key)])


def op_strategy() -> st.SearchStrategy[dict[str, Any]]:
    lease = st.integers(min_value=0, max_value=3)
    return st.one_of(
        st.builds(put_op, KEYS, VALUES, lease=lease, prev_kv=st.booleans()),
        st.builds(delete_op, KEYS, prefix=st.booleans()),
        st.builds(cas_txn, KEYS, VALUES, KEYS, VALUES),
        st.builds(compact_op, st.integers(min_value=1, max_value=12)),
        st.builds(lease_grant_op, st.integers(min_value=1, max_value=9), lease_id=lease),
        st.builds(lease_revoke_op, st.integers(min_value=1, max_value=3)),
        st.builds(lease_expire_op, st.lists(st.integers(min_value=1, max_value=3), max_size=3)),
        st.builds(range_op, KEYS, revision=st.integers(min_value=0, max_value=6)),
        st.just(session_open_op()),
    )


COMMANDS = st.lists(
    st.tuples(
        op_strategy(),
        st.integers(min_value=0, max_value=4),  # client id (ids are log indexes)
        st.integers(min_value=1, max_value=4),  # seq
        st.integers(min_value=0, max_value=4),  # ack
    ),
    max_size=30,
)


def encode(op: dict[str, Any], client: int, seq: int, ack: int) -> bytes:
    if op["kind"] == "session_open" or client == 0:
        return encode_command(op)
    return encode_command(op, client_id=client, seq=seq, ack_seq=min(ack, seq))


@settings(max_examples=60, deadline=None)
@given(COMMANDS, st.integers(min_value=0, max_value=30))
def test_replicas_agree_byte_for_byte_and_snapshots_round_trip(
    commands: list[tuple[dict[str, Any], int, int, int]], cut: int
) -> None:
    entries = [encode(*command) for command in commands]
    first, second = ServiceStateMachine(LIMITS), ServiceStateMachine(LIMITS)
    results_first = [first.apply(i, data) for i, data in enumerate(entries, start=1)]
    results_second = [second.apply(i, data) for i, data in enumerate(entries, start=1)]
    assert msgpack.packb(results_first) == msgpack.packb(results_second)
    assert first.snapshot() == second.snapshot()
    # A replica restored mid-way then fed the rest ends in the same state.
    cut = min(cut, len(entries))
    prefix = ServiceStateMachine(LIMITS)
    for i, data in enumerate(entries[:cut], start=1):
        prefix.apply(i, data)
    restored = ServiceStateMachine(LIMITS)
    restored.restore(prefix.snapshot())
    assert restored.snapshot() == prefix.snapshot()
    tail = [restored.apply(i, data) for i, data in enumerate(entries[cut:], start=cut + 1)]
    assert msgpack.packb(tail) == msgpack.packb(results_first[cut:])
    assert restored.snapshot() == first.snapshot()


FIELD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.binary(max_size=3),
    st.text(max_size=3),
    st.lists(st.integers(min_value=-1, max_value=3), max_size=3),
    st.lists(
        st.dictionaries(
            st.sampled_from(["key", "kind", "target", "value"]), st.binary(max_size=2), max_size=3
        ),
        max_size=2,
    ),
)
FIELD_NAMES = st.sampled_from(
    [
        "key",
        "value",
        "range_end",
        "prefix",
        "limit",
        "revision",
        "lease",
        "prev_kv",
        "id",
        "ids",
        "ttl_ms",
        "compare",
        "success",
        "failure",
        "target",
        "result",
    ]
)
KINDS = st.sampled_from(
    [
        "put",
        "delete",
        "range",
        "txn",
        "compact",
        "lease_grant",
        "lease_revoke",
        "lease_expire",
        "session_open",
        "session_close",
        "other",
    ]
)


@settings(max_examples=200, deadline=None)
@given(KINDS, st.dictionaries(FIELD_NAMES, FIELD_VALUES, max_size=4),
       st.integers(min_value=0, max_value=3))  # fmt: skip
def test_arbitrary_ops_never_crash_the_replica(
    kind: str, fields: dict[str, Any], client: int
) -> None:
    sm = ServiceStateMachine(LIMITS)
    run(sm, session_open_op())
    run(sm, put_op(b"k", b"v"))
    data = msgpack.packb({"c": client, "s": 1, "a": 0, "op": {"kind": kind, **fields}})
    result = sm.apply(3, data)
    assert isinstance(result["ok"], bool) and result["revision"] >= 2
    again = ServiceStateMachine(LIMITS)
    again.restore(sm.snapshot())
    assert again.snapshot() == sm.snapshot()
