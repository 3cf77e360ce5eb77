"""Watch hub: live delivery, catch-up, compaction, overflow with resume, bounds."""

from __future__ import annotations

import pytest

from synod.services.errors import Compacted, LimitExceeded, NotFound
from synod.services.kv import DeleteRequest, KVStore, PutRequest, prefix_end
from synod.services.limits import ServiceLimits
from synod.services.watch import WatchHub

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
