"""Records the store and the log hold by the hundred thousand stay out of the cyclic
garbage collector (synod.gcfree), and are still freed by reference counting."""

from __future__ import annotations

import gc
import tracemalloc

from synod.raft.storage import MemoryStorage
from synod.raft.types import ConfState, Entry, EntryKind, Snapshot, SnapshotMeta
from synod.services.commands import delete_op, encode_command, put_op
from synod.services.kv import Event, KeyValue
from synod.services.state import ServiceStateMachine


def test_versions_events_and_log_entries_are_not_tracked() -> None:
    kv = KeyValue(b"k", b"v", 1, 1, 1)
    event = Event("PUT", kv, None)
    entry = Entry(term=1, index=1, kind=EntryKind.CONF_CHANGE, data=b"x")
    assert not any(gc.is_tracked(record) for record in (kv, event, entry))


def test_a_loaded_store_adds_no_tracked_objects_per_key() -> None:
    """100 puts or 2,000: the collector's work does not grow with the keys (before,
    three tracked objects per put made a full collection of 100,000 keys 65 ms
    in-process and 300-570 ms in a loaded member)."""

    def tracked_after(puts: int) -> int:
        state = ServiceStateMachine()
        for index in range(1, puts + 1):
            state.apply(index, encode_command(put_op(b"key/%d" % index, b"v" * 32)))
        gc.collect()
        tracked = len(gc.get_objects())
        assert state.kv.revision == puts + 1
        return tracked

    small, large = tracked_after(100), tracked_after(2_000)
    assert large - small < 200  # Nothing per key: only incidental objects differ.


def test_untracked_records_are_still_freed() -> None:
    """Reference counting frees them: the memory of 1,000 versions comes back."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        records = [Event("PUT", KeyValue(b"k%d" % i, (b"%08d" % i) * 125, i, i, 1), None)
                   for i in range(1, 1001)]  # fmt: skip
        held = tracemalloc.get_traced_memory()[0] - before
        assert held > 1000 * 1000 and not gc.is_tracked(records[0])
        del records
        left = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert left < held / 100


def _big_containers(state: ServiceStateMachine) -> list[object]:
    kv = state.kv
    return [kv._live, *kv._sorted_keys._keys._lists, kv._changelog]


def test_the_containers_that_grow_with_the_keys_stay_untracked() -> None:
    """A full collection walks every element of a tracked container: the live dict, the
    sorted keys and the history would cost ~16 ms of CPU per 100,000 keys. CPython
    re-tracks a dict when a record goes in; the store untracks it again."""
    state = ServiceStateMachine()
    ops = [put_op(b"a", b"1"), put_op(b"b", b"2"), put_op(b"a", b"3"), delete_op(b"b")]
    for op in ops:
        state.apply(state.applied_index + 1, encode_command(op))
        assert not any(gc.is_tracked(c) for c in _big_containers(state)), op
    restored = ServiceStateMachine()
    restored.restore(state.snapshot())
    assert len(restored.kv) == 1
    assert not any(gc.is_tracked(c) for c in _big_containers(restored))


def test_the_raft_log_entry_list_stays_untracked() -> None:
    storage = MemoryStorage()
    storage.append([Entry(term=1, index=i) for i in range(1, 11)])
    storage.compact(5)
    assert storage.first_index() == 6 and not gc.is_tracked(storage._entries)
    meta = SnapshotMeta(index=20, term=2, conf=ConfState(voters=frozenset({1})))
    storage.apply_snapshot(Snapshot(meta, b""))
    assert storage.last_index() == 20 and not gc.is_tracked(storage._entries)
