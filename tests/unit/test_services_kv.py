"""MVCC kv: revisions against etcd semantics, txn compares, ranges, compaction."""

from __future__ import annotations

import pytest

from synod.services.errors import (
    Compacted,
    FutureRevision,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    TooLarge,
)
from synod.services.kv import (
    Compare,
    DeleteRequest,
    KVStore,
    PutRequest,
    RangeRequest,
    parse_request,
    parse_txn,
    prefix_end,
)
from synod.services.limits import ServiceLimits, history_event_bytes


def put(store: KVStore, key: bytes, value: bytes = b"v", lease: int = 0) -> int:
    return store.put(PutRequest(key, value, lease))[1]


def meta(store: KVStore, key: bytes, revision: int = 0) -> tuple[int, int, int] | None:
    kv = store.get(key, revision)
    return None if kv is None else (kv.create_revision, kv.mod_revision, kv.version)


def test_revisions_follow_etcd_through_put_delete_reput() -> None:
    store = KVStore()
    assert store.revision == 1  # etcd's empty store is at revision 1
    steps: list[tuple[str, bytes, tuple[int, int, int] | None, int]] = [
        ("put", b"a", (2, 2, 1), 2),
        ("put", b"a", (2, 3, 2), 3),
        ("put", b"b", (4, 4, 1), 4),
        ("delete", b"a", None, 5),
        ("delete", b"a", None, 5),  # deleting nothing does not bump the revision
        ("put", b"a", (6, 6, 1), 6),  # re-created: new create_revision, version 1
    ]
    for action, key, expected, revision in steps:
        if action == "put":
            put(store, key)
        else:
            store.delete_range(DeleteRequest(key))
        assert meta(store, key) == expected
        assert store.revision == revision


def test_reads_at_past_revisions_see_the_old_state() -> None:
    store = KVStore()
    put(store, b"a", b"1")  # 2
    put(store, b"a", b"2")  # 3
    store.delete_range(DeleteRequest(b"a"))  # 4
    assert store.get(b"a", 2) is not None and store.get(b"a", 2).value == b"1"  # type: ignore[union-attr]
    assert store.get(b"a", 3).value == b"2"  # type: ignore[union-attr]
    assert store.get(b"a", 4) is None
    assert store.get(b"a", 1) is None
    with pytest.raises(FutureRevision):
        store.get(b"a", 5)


def test_range_prefix_limit_count_and_more() -> None:
    store = KVStore()
    for key in (b"a", b"p/1", b"p/2", b"p/3", b"q"):
        put(store, key)
    result = store.range(RangeRequest(b"p/", prefix_end(b"p/"), limit=2))
    assert [kv.key for kv in result.kvs] == [b"p/1", b"p/2"]
    assert (result.more, result.count, result.revision) == (True, 3, 6)
    everything = store.range(RangeRequest(b"\0", b"\0"))
    assert everything.count == 5 and not everything.more
    counted = store.range(RangeRequest(b"a", b"q", count_only=True))
    assert counted.kvs == [] and counted.count == 4
    past = store.range(RangeRequest(b"p/", prefix_end(b"p/"), revision=3))
    assert [kv.key for kv in past.kvs] == [b"p/1"]


@pytest.mark.parametrize(
    ("prefix", "end"),
    [(b"a", b"b"), (b"a\xff", b"b"), (b"\xff\xff", b"\0"), (b"", b"\0"), (b"ab", b"ac")],
)
def test_prefix_end(prefix: bytes, end: bytes) -> None:
    assert prefix_end(prefix) == end


def test_range_limit_above_max_is_too_large() -> None:
    store = KVStore(ServiceLimits(range_limit_max=10))
    with pytest.raises(TooLarge):
        store.range(RangeRequest(b"a", limit=11))


def cmp(key: bytes, target: str, result: str, value: bytes | int) -> Compare:
    return Compare(key, target, result, value)


@pytest.mark.parametrize(
    ("compare", "holds"),
    [
        (cmp(b"k", "value", "=", b"v2"), True),
        (cmp(b"k", "value", "!=", b"v2"), False),
        (cmp(b"k", "value", "<", b"v3"), True),
        (cmp(b"k", "value", ">", b"v3"), False),
        (cmp(b"k", "version", "=", 2), True),
        (cmp(b"k", "version", ">", 1), True),
        (cmp(b"k", "create_revision", "=", 2), True),
        (cmp(b"k", "mod_revision", "=", 3), True),
        (cmp(b"k", "mod_revision", "<", 3), False),
        (cmp(b"k", "lease", "=", 0), True),
        (cmp(b"missing", "version", "=", 0), True),  # absent key compares as zero
        (cmp(b"missing", "create_revision", "<", 1), True),
        (cmp(b"missing", "value", "!=", b"x"), False),  # value compare on absent fails
    ],
)
def test_txn_compare_table(compare: Compare, holds: bool) -> None:
    store = KVStore()
    put(store, b"k", b"v1")
    put(store, b"k", b"v2")
    succeeded, results, revision = store.txn(
        [compare], [PutRequest(b"ok", b"1")], [RangeRequest(b"k")]
    )
    assert succeeded is holds
    assert store.get(b"ok") is not None if holds else store.get(b"ok") is None
    assert revision == (4 if holds else 3)
    assert len(results) == 1


def test_txn_writes_share_one_revision_and_reads_see_earlier_writes() -> None:
    store = KVStore()
    put(store, b"x")
    succeeded, results, revision = store.txn(
        [], [PutRequest(b"a", b"1"), DeleteRequest(b"x"), RangeRequest(b"a")], []
    )
    assert succeeded and revision == 3
    assert results[0] is None and [kv.key for kv in results[1]] == [b"x"]
    assert results[2].kvs[0].value == b"1"
    assert [(e.type, e.kv.key) for _, evs in store.history(3) for e in evs] == [
        ("PUT", b"a"),
        ("DELETE", b"x"),
    ]


def test_failed_txn_op_undoes_everything() -> None:
    store = KVStore(ServiceLimits(keys_max=2))
    put(store, b"a", b"old")
    before = store.to_snapshot()
    with pytest.raises(LimitExceeded):
        store.txn(
            [], [PutRequest(b"a", b"new"), PutRequest(b"b", b"1"), PutRequest(b"c", b"1")], []
        )
    assert store.to_snapshot() == before


def test_put_with_unknown_lease_is_not_found_and_changes_nothing() -> None:
    store = KVStore(lease_exists=lambda lease: lease == 7)
    with pytest.raises(NotFound):
        put(store, b"a", lease=8)
    assert store.revision == 1 and len(store) == 0
    put(store, b"a", lease=7)
    assert store.keys_of_lease(7) == [b"a"]
    put(store, b"a", lease=0)  # re-put without lease detaches
    assert store.keys_of_lease(7) == []


@pytest.mark.parametrize(
    "op",
    [
        {"kind": "put", "key": b"", "value": b"v"},
        {"kind": "put", "key": "str", "value": b"v"},
        {"kind": "put", "key": b"k"},
        {"kind": "put", "key": b"k", "value": b"v", "ttl": 3},
        {"kind": "delete", "key": b"k", "prefix": True, "range_end": b"z"},
        {"kind": "range", "key": b"k", "limit": -1},
        {"kind": "nope", "key": b"k"},
    ],
)
def test_bad_requests_are_invalid_argument(op: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        parse_request(op, ServiceLimits())


def test_size_bounds_are_too_large() -> None:
    limits = ServiceLimits(key_bytes_max=4, value_bytes_max=4)
    with pytest.raises(TooLarge):
        parse_request({"kind": "put", "key": b"12345", "value": b""}, limits)
    with pytest.raises(TooLarge):
        parse_request({"kind": "put", "key": b"k", "value": b"12345"}, limits)
    many = [{"kind": "put", "key": b"k%d" % i, "value": b""} for i in range(129)]
    with pytest.raises(TooLarge):
        parse_txn({"kind": "txn", "success": many}, ServiceLimits())


def test_txn_overlapping_keys_are_refused() -> None:
    dup = [{"kind": "put", "key": b"a", "value": b""}] * 2
    with pytest.raises(InvalidArgument):
        parse_txn({"kind": "txn", "success": dup}, ServiceLimits())
    overlap = [
        {"kind": "put", "key": b"a1", "value": b""},
        {"kind": "delete", "key": b"a", "prefix": True},
    ]
    with pytest.raises(InvalidArgument):
        parse_txn({"kind": "txn", "failure": overlap}, ServiceLimits())


def test_compaction_errors_and_reads_at_the_compaction_point() -> None:
    store = KVStore()
    for value in (b"1", b"2", b"3"):
        put(store, b"k", value)  # revisions 2, 3, 4
    store.compact(3)
    assert store.get(b"k", 3).value == b"2"  # type: ignore[union-attr]
    with pytest.raises(Compacted) as info:
        store.get(b"k", 2)
    assert info.value.details["compact_revision"] == 3
    with pytest.raises(Compacted):
        store.compact(3)
    with pytest.raises(FutureRevision):
        store.compact(9)
    with pytest.raises(Compacted):
        store.history(2)
    assert [rev for rev, _ in store.history(3)] == [3, 4]


# One put of a 1-byte key with a 10-byte value over a previous 10-byte value.
PUT_BYTES = history_event_bytes(b"k", b"0123456789", b"k", b"0123456789")
SMALL_HISTORY = ServiceLimits(key_bytes_max=8, value_bytes_max=100,
                              history_bytes_max=max(20 * PUT_BYTES, 472))  # fmt: skip


def test_history_is_auto_compacted_at_its_byte_bound() -> None:
    store = KVStore(SMALL_HISTORY)
    put(store, b"k", b"0123456789")  # the first put has no previous version
    for _ in range(50):
        put(store, b"k", b"0123456789")
    kept = list(store.history(store.compact_revision))
    # Exactly the newest revisions that fit are kept, and the bytes are accounted.
    assert len(kept) == SMALL_HISTORY.history_bytes_max // PUT_BYTES == 20
    assert store.history_bytes == 20 * PUT_BYTES <= SMALL_HISTORY.history_bytes_max
    assert store.compact_revision == kept[0][0] == store.revision - 19
    assert store.get(b"k", store.compact_revision) is not None
    with pytest.raises(Compacted):
        store.get(b"k", store.compact_revision - 1)
    with pytest.raises(Compacted):
        store.history(store.compact_revision - 1)


def test_history_bound_counts_bytes_not_events() -> None:
    store = KVStore(SMALL_HISTORY)
    for i in range(20):
        put(store, b"k%d" % i, b"x" * 100)  # twenty big first puts: some are compacted
    big_revisions = len(list(store.history(store.compact_revision)))
    store = KVStore(SMALL_HISTORY)
    for i in range(20):
        put(store, b"k%d" % i, b"")  # twenty small first puts: all fit
    assert store.compact_revision == 0 and len(list(store.history(2))) == 20
    assert big_revisions < 20 and store.history_bytes < SMALL_HISTORY.history_bytes_max


def test_the_newest_revision_is_kept_even_beyond_the_bound() -> None:
    limits = ServiceLimits(key_bytes_max=8, value_bytes_max=100, history_bytes_max=472,
                           ops_per_txn_max=2, events_per_revision_max=2,
                           keys_per_lease_max=2, watch_events_buffered_max=2)  # fmt: skip
    store = KVStore(limits)
    puts = [PutRequest(b"a", b"x" * 100), PutRequest(b"b", b"x" * 100)]
    store.txn([], list(puts), [])
    store.txn([], list(puts), [])  # 2 events of 2 x 101 bytes each: beyond 472 alone
    assert store.history_bytes > limits.history_bytes_max
    assert store.compact_revision == store.revision == 3
    assert [rev for rev, _ in store.history(3)] == [3]
    assert store.get(b"a", 3) is not None
    put(store, b"c", b"")  # the next revision pushes it out
    assert store.compact_revision == 4 and store.history_bytes <= limits.history_bytes_max


def test_snapshot_carries_only_the_kept_history() -> None:
    store = KVStore(SMALL_HISTORY)
    for _ in range(50):
        put(store, b"k", b"0123456789")
    snapshot = store.to_snapshot()
    assert [rev for rev, _ in snapshot["history"]] == list(
        range(store.compact_revision, store.revision + 1)
    )
    other = KVStore(SMALL_HISTORY)
    other.restore(snapshot)
    assert other.history_bytes == store.history_bytes
    assert other.to_snapshot() == snapshot
    put(store, b"k", b"0123456789")
    put(other, b"k", b"0123456789")
    assert other.to_snapshot() == store.to_snapshot()  # both compact the same way


def test_snapshot_with_a_malformed_history_is_refused() -> None:
    store = KVStore()
    put(store, b"a")
    put(store, b"b")
    good = store.to_snapshot()
    gap = {**good, "history": [*good["history"][1:], [9, good["history"][0][1]]]}
    wrong_revision = {**good, "history": [[3, good["history"][0][1]], good["history"][1]]}
    for bad in (gap, wrong_revision):
        other = KVStore()
        with pytest.raises(InvalidArgument):
            other.restore(bad)
        assert other.revision == 1 and len(other) == 0


def test_delete_range_beyond_events_per_revision_is_refused_atomically() -> None:
    limits = ServiceLimits(events_per_revision_max=128, keys_per_lease_max=128,
                           watch_events_buffered_max=128)  # fmt: skip
    store = KVStore(limits)
    for i in range(130):
        put(store, b"k%03d" % i)
    with pytest.raises(LimitExceeded):
        store.delete_range(DeleteRequest(b"k", prefix_end(b"k")))
    assert len(store) == 130 and store.revision == 131


def test_snapshot_restore_round_trip() -> None:
    store = KVStore(lease_exists=lambda lease: True)
    put(store, b"a", lease=3)
    put(store, b"b")
    store.delete_range(DeleteRequest(b"b"))
    store.compact(3)
    other = KVStore(lease_exists=lambda lease: True)
    other.restore(store.to_snapshot())
    assert other.to_snapshot() == store.to_snapshot()
    assert other.keys_of_lease(3) == [b"a"] and other.get(b"b", 3) is not None
    with pytest.raises(InvalidArgument):
        other.restore({"live": [[1, 2]]})
    assert other.to_snapshot() == store.to_snapshot()
