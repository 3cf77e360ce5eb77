"""Watch hub: live delivery, catch-up, compaction, overflow with resume, bounds, and
that writes wake only the watchers they match."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.services.errors import Compacted, LimitExceeded, NotFound
from synod.services.kv import DeleteRequest, Event, KVStore, PutRequest, in_range, prefix_end
from synod.services.limits import ServiceLimits
from synod.services.watch import Watcher, WatchHub

SMALL = ServiceLimits(
    ops_per_txn_max=4,
    keys_per_lease_max=4,
    events_per_revision_max=4,
    watch_events_buffered_max=4,
    watchers_max=2,
)


def setup(limits: ServiceLimits = SMALL) -> tuple[KVStore, WatchHub]:
    kv = KVStore(limits)
    return kv, WatchHub(kv, limits)


def test_live_events_for_prefix_only() -> None:
    kv, hub = setup()
    watcher = hub.watch(b"p/", prefix_end(b"p/"))
    kv.put(PutRequest(b"p/1", b"a"))
    kv.put(PutRequest(b"q", b"a"))
    kv.delete_range(DeleteRequest(b"p/1"))
    touched = hub.notify()
    assert touched == [watcher]
    events = watcher.poll(10)
    assert [(e.type, e.kv.key, e.revision) for e in events] == [("PUT", b"p/1", 2),
                                                                ("DELETE", b"p/1", 4)]  # fmt: skip
    assert events[1].prev_kv is not None and events[1].prev_kv.value == b"a"


def test_catch_up_from_past_revision_then_live() -> None:
    kv, hub = setup()
    for value in (b"1", b"2", b"3"):
        kv.put(PutRequest(b"k", value))  # revisions 2, 3, 4
    hub.notify()
    watcher = hub.watch(b"k", start_revision=3)
    assert [e.kv.value for e in watcher.poll(10)] == [b"2", b"3"]
    kv.put(PutRequest(b"k", b"4"))
    hub.notify()
    assert [e.kv.value for e in watcher.poll(10)] == [b"4"]


def test_future_start_revision_waits() -> None:
    kv, hub = setup()
    watcher = hub.watch(b"k", start_revision=3)
    kv.put(PutRequest(b"k", b"skipped"))  # revision 2
    kv.put(PutRequest(b"k", b"seen"))  # revision 3
    hub.notify()
    assert [e.kv.value for e in watcher.poll(10)] == [b"seen"]


def test_watch_below_compaction_is_compacted() -> None:
    kv, hub = setup()
    for value in (b"1", b"2", b"3"):
        kv.put(PutRequest(b"k", value))
    kv.compact(3)
    with pytest.raises(Compacted) as info:
        hub.watch(b"k", start_revision=2)
    assert info.value.details["compact_revision"] == 3
    assert len(hub) == 0


def test_overflow_cancels_with_resume_revision_and_no_gap() -> None:
    kv, hub = setup()
    watcher = hub.watch(b"\0", b"\0")
    for i in range(6):
        kv.put(PutRequest(b"k%d" % i, b""))  # revisions 2..7
    hub.notify()
    assert watcher.cancelled and watcher.cancel_reason == "overflow"
    assert watcher.resume_revision == 6 and "resume from revision 6" in watcher.cancel_message()
    assert [e.revision for e in watcher.poll(10)] == [2, 3, 4, 5]
    assert len(hub) == 0
    resumed = hub.watch(b"\0", b"\0", start_revision=watcher.resume_revision)
    assert [e.revision for e in resumed.poll(10)] == [6, 7]


def test_overflow_during_catch_up() -> None:
    kv, hub = setup()
    for i in range(5):
        kv.put(PutRequest(b"k%d" % i, b""))
    watcher = hub.watch(b"\0", b"\0", start_revision=1)
    assert watcher.cancel_reason == "overflow" and watcher.resume_revision == 6
    assert watcher.pending == 4 and len(hub) == 0


def test_watchers_max_and_client_cancel() -> None:
    _kv, hub = setup()
    first = hub.watch(b"a")
    hub.watch(b"b")
    with pytest.raises(LimitExceeded):
        hub.watch(b"c")
    cancelled = hub.cancel(first.watch_id)
    assert cancelled.cancel_reason == "client"
    with pytest.raises(NotFound):
        hub.cancel(first.watch_id)
    hub.watch(b"c")
    assert len(hub) == 2


def test_oversized_watch_key_is_too_large() -> None:
    from synod.services.errors import TooLarge

    _kv, hub = setup(ServiceLimits(key_bytes_max=3))
    with pytest.raises(TooLarge):
        hub.watch(b"long")
    assert len(hub) == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"keys_max": 0},
        {"ops_per_txn_max": 20_000},
        {"history_bytes_max": 10},
        {"watch_events_buffered_max": 10},
        {"lease_ttl_ms_min": 10, "lease_ttl_ms_max": 5},
    ],
)
def test_limits_that_do_not_fit_together_are_refused(fields: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        ServiceLimits(**fields)


MANY = ServiceLimits(watchers_max=10_000)


def test_writes_to_other_keys_offer_nothing_to_idle_watchers() -> None:
    kv, hub = setup(MANY)
    woken: list[int] = []
    hub.wake = lambda watcher: woken.append(watcher.watch_id)
    exact = [hub.watch(b"idle/%d" % i) for i in range(2_500)]
    prefixes = [hub.watch(b"pre/%d/" % i, prefix_end(b"pre/%d/" % i)) for i in range(2_500)]
    for i in range(200):
        kv.put(PutRequest(b"other/%d" % i, b"v"))
        assert hub.notify() == []
    # Before, every revision was offered to every watcher: 200 x 5,000 offers.
    assert hub.offers == 0 and woken == []
    kv.put(PutRequest(b"idle/7", b"v"))
    kv.put(PutRequest(b"pre/9/x", b"v"))
    assert hub.notify() == [exact[7], prefixes[9]]
    assert hub.offers == 2 and woken == [exact[7].watch_id, prefixes[9].watch_id]
    assert [e.kv.key for e in prefixes[9].poll(10)] == [b"pre/9/x"]


def test_a_watcher_resumes_after_the_revisions_it_was_not_offered() -> None:
    kv, hub = setup()
    watcher = hub.watch(b"a")
    for i in range(3):
        kv.put(PutRequest(b"b%d" % i, b""))  # revisions 2..4, none for "a"
    hub.notify()
    assert hub.next_revision_of(watcher) == 5
    cancelled = hub.cancel(watcher.watch_id)
    assert cancelled.resume_revision == 5  # not 2: nothing was missed in between


def test_reset_wakes_every_watcher_it_cancels() -> None:
    kv, hub = setup()
    woken: list[int] = []
    hub.wake = lambda watcher: woken.append(watcher.watch_id)
    first, second = hub.watch(b"a"), hub.watch(b"b", b"c")
    kv.put(PutRequest(b"z", b""))
    hub.notify()
    assert hub.reset() == [first, second]
    assert woken == [first.watch_id, second.watch_id]
    assert first.cancel_reason == second.cancel_reason == "restored"
    assert first.resume_revision == second.resume_revision == 3


# -- the indexes deliver exactly what a scan of every watcher would ------------------------

FUZZ_KEYS = st.sampled_from([b"a", b"a/", b"a/1", b"a/2", b"a\xff", b"a\xff1", b"b", b"b/1"])
FUZZ_LIMITS = ServiceLimits(watchers_max=64, watch_events_buffered_max=10_000)
WATCH_SHAPES = st.tuples(
    FUZZ_KEYS,
    st.sampled_from(["key", "prefix", "range", "from"]),
    FUZZ_KEYS,
    st.one_of(st.just(0), st.integers(min_value=1, max_value=8)),  # start (0: from now)
    st.integers(min_value=0, max_value=4),  # how many writes happen before it starts
)
WRITES = st.lists(
    st.tuples(st.sampled_from(["put", "put", "txn", "delete", "delete_prefix"]), FUZZ_KEYS),
    min_size=4,
    max_size=12,
)


def _range_of(shape: tuple[bytes, str, bytes, int, int]) -> tuple[bytes, bytes]:
    key, kind, other, _start, _after = shape
    if kind == "key":
        return key, b""
    if kind == "prefix":
        return key, prefix_end(key)
    if kind == "from":
        return key, b"\0"
    return min(key, other), max(key, other)


@settings(max_examples=200, deadline=None)
@given(st.lists(WATCH_SHAPES, min_size=1, max_size=8), WRITES)
def test_indexed_delivery_matches_a_scan(
    shapes: list[tuple[bytes, str, bytes, int, int]], writes: list[tuple[str, bytes]]
) -> None:
    kv, hub = setup(FUZZ_LIMITS)
    watchers: list[tuple[Watcher, bytes, bytes, int]] = []
    delivered: dict[int, list[Event]] = {}
    for step in range(len(writes) + 1):
        for shape in shapes:
            if shape[4] == step:
                key, range_end = _range_of(shape)
                start = shape[3] if shape[3] >= kv.compact_revision else 0
                watcher = hub.watch(key, range_end, start)
                watchers.append((watcher, key, range_end, start or kv.revision + 1))
                delivered[watcher.watch_id] = watcher.poll(10_000)
        if step < len(writes):
            kind, key = writes[step]
            if kind == "put":
                kv.put(PutRequest(key, b"%d" % step))
            elif kind == "txn":  # a revision of several events, the given key last
                kv.txn([], [PutRequest(k, b"%d" % step) for k in sorted({b"0", key})], [])
            else:
                end = prefix_end(key) if kind == "delete_prefix" else b""
                kv.delete_range(DeleteRequest(key, end))
            hub.notify()
            for watcher, *_ in watchers:
                delivered[watcher.watch_id] += watcher.poll(10_000)
    history = [e for _, events in kv.history(kv.compact_revision) for e in events]
    for watcher, key, range_end, start in watchers:
        expected = [
            e for e in history if e.revision >= start and in_range(e.kv.key, key, range_end)
        ]
        assert delivered[watcher.watch_id] == expected
        assert hub.next_revision_of(watcher) == max(start, kv.revision + 1)
    for watcher, *_ in watchers:
        hub.cancel(watcher.watch_id)
    assert len(hub) == 0 and not hub._by_key and not hub._by_prefix and not hub._prefix_lengths


def test_history_compacted_by_bytes_refuses_an_old_start_and_a_late_resume() -> None:
    limits = ServiceLimits(key_bytes_max=8, value_bytes_max=100, history_bytes_max=2_000,
                           ops_per_txn_max=4, keys_per_lease_max=4, events_per_revision_max=4,
                           watch_events_buffered_max=4)  # fmt: skip
    kv, hub = setup(limits)
    slow = hub.watch(b"k", b"l")
    lagging = hub.watch(b"k", b"l")
    for i in range(6):
        kv.put(PutRequest(b"k%d" % i, b"x" * 100))  # 358 bytes each: 6 exceed 2,000
        hub.notify()  # as apply does, after every entry
        lagging.poll(10)
    assert slow.cancel_reason == "overflow" and slow.resume_revision == 6
    assert kv.compact_revision == 3  # revisions 3..7 (5 x 358 bytes) are kept
    resumed = hub.watch(b"k", b"l", start_revision=slow.resume_revision)
    assert [e.revision for e in resumed.poll(10)] == [6, 7]
    for i in range(6):
        kv.put(PutRequest(b"k%d" % i, b""))
    hub.notify()  # late: the revisions since the last notify were partly compacted
    with pytest.raises(Compacted) as info:
        hub.watch(b"k", b"l", start_revision=6)
    assert info.value.details["compact_revision"] == kv.compact_revision > 6
    assert lagging.cancel_reason == "compacted" == resumed.cancel_reason
    assert lagging.compact_revision == kv.compact_revision and len(hub) == 0
