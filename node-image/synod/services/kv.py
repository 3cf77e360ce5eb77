"""MVCC key-value store with etcd's revision semantics, pure and replicated.

* ``revision`` starts at 1 (the empty store) and grows by one per write transaction
  that changes something: a put always does, a delete only if it deletes a key, a txn
  if any of its ops did. All changes of one txn share the revision.
* Per key: ``create_revision`` (revision of the put that created it since it last did
  not exist), ``mod_revision`` (last change), ``version`` (puts since creation, 1 after
  the first) and ``lease`` (0 = none).
* History: every revision since ``compact_revision`` is kept as its tuple of events, so
  reads at an old revision and watch catch-up work. Reads below ``compact_revision``
  raise ``Compacted``; beyond the current revision ``FutureRevision``. History beyond
  ``history_bytes_max`` (charged by ``history_event_bytes``) is compacted automatically
  and deterministically, oldest revision first; the newest revision is always kept.
* Every write is all-or-nothing: on any error the changes already made are undone.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from synod.gcfree import keep_untracked, untrack
from synod.services.commands import (
    read_bool,
    read_bytes,
    read_int,
    read_list,
    read_str,
    require_fields,
)
from synod.services.errors import (
    Compacted,
    FutureRevision,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    TooLarge,
)
from synod.services.limits import ServiceLimits, history_event_bytes
from synod.services.sortedkeys import SortedKeys

__all__ = [
    "Compare",
    "DeleteRequest",
    "Event",
    "KVStore",
    "KeyValue",
    "PutRequest",
    "RangeRequest",
    "RangeResult",
    "Request",
    "in_range",
    "parse_compare",
    "parse_request",
    "parse_txn",
    "prefix_end",
]

PUT = "PUT"
DELETE = "DELETE"
ALL_KEYS_END = b"\0"  # etcd's "every key >= key" range end
COMPARE_TARGETS = ("value", "version", "create_revision", "mod_revision", "lease")
COMPARE_RESULTS = ("=", "!=", "<", ">")


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One version of a key. For a DELETE event only key and mod_revision are set."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0

    def __post_init__(self) -> None:
        untrack(self)  # Bytes and ints only: never in a cycle (synod.gcfree).

    def to_dict(self, keys_only: bool = False) -> dict[str, Any]:
        """The result form; ``keys_only`` blanks the value. Raises nothing."""
        assert self.mod_revision >= self.create_revision
        return {
            "key": self.key,
            "value": b"" if keys_only else self.value,
            "create_revision": self.create_revision,
            "mod_revision": self.mod_revision,
            "version": self.version,
            "lease": self.lease,
        }

    def to_list(self) -> list[Any]:
        """Compact snapshot form. Raises nothing."""
        return [self.key, self.value, self.create_revision, self.mod_revision, self.version,
                self.lease]  # fmt: skip

    @staticmethod
    def from_list(data: list[Any]) -> KeyValue:
        """Inverse of :meth:`to_list`. Raises ValueError/TypeError if malformed."""
        key, value, create_revision, mod_revision, version, lease = data
        if not isinstance(key, bytes) or not isinstance(value, bytes):
            raise TypeError("key and value must be bytes")
        return KeyValue(key, value, int(create_revision), int(mod_revision), int(version),
                        int(lease))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Event:
    """A change at ``revision``: PUT (kv is the new version) or DELETE (kv holds the key and
    the deletion revision); ``prev_kv`` is the version before, None if there was none."""

    type: str
    kv: KeyValue
    prev_kv: KeyValue | None

    def __post_init__(self) -> None:
        untrack(self)  # Records of records: never in a cycle (synod.gcfree).

    @property
    def revision(self) -> int:
        """The revision of the change. Raises nothing."""
        return self.kv.mod_revision

    def to_dict(self) -> dict[str, Any]:
        """The watch/result form. Raises nothing."""
        assert self.type in (PUT, DELETE)
        return {
            "type": self.type,
            "kv": self.kv.to_dict(),
            "prev_kv": None if self.prev_kv is None else self.prev_kv.to_dict(),
        }

    def to_list(self) -> list[Any]:
        """Compact snapshot form. Raises nothing."""
        return [self.type, self.kv.to_list(), None if self.prev_kv is None else
                self.prev_kv.to_list()]  # fmt: skip

    @staticmethod
    def from_list(data: list[Any]) -> Event:
        """Inverse of :meth:`to_list`. Raises ValueError/TypeError if malformed."""
        kind, kv, prev = data
        if kind not in (PUT, DELETE):
            raise ValueError(f"unknown event type {kind!r}")
        return Event(kind, KeyValue.from_list(kv), None if prev is None else
                     KeyValue.from_list(prev))  # fmt: skip


def _sealed(events: list[Event]) -> tuple[Event, ...]:
    """One revision's events as the history keeps them: a tuple of records, which
    CPython would keep tracked for the cyclic collector (it untracks only tuples of
    atomic values), untracked here (synod.gcfree)."""
    sealed = tuple(events)
    untrack(sealed)
    return sealed


def prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with ``prefix`` (etcd's
    GetPrefixRangeEnd); an empty or all-0xff prefix gives ``b"\\0"`` (all keys).

    Raises nothing.
    """
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()  # 0xff cannot be incremented: carry into the byte before
    if not end:
        return ALL_KEYS_END
    end[-1] += 1
    assert bytes(end) > prefix
    return bytes(end)


# -- typed requests ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PutRequest:
    """Set ``key`` to ``value`` attached to ``lease`` (0 = none)."""

    key: bytes
    value: bytes
    lease: int = 0
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    """Delete ``key`` (range_end empty) or ``[key, range_end)``."""

    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class RangeRequest:
    """Read ``key`` or ``[key, range_end)`` at ``revision`` (0 = current)."""

    key: bytes
    range_end: bytes = b""
    limit: int = 0
    revision: int = 0
    keys_only: bool = False
    count_only: bool = False


Request = PutRequest | DeleteRequest | RangeRequest


@dataclass(frozen=True, slots=True)
class Compare:
    """``target`` of every key in ``key`` / ``[key, range_end)`` ``result`` ``value``."""

    key: bytes
    target: str
    result: str
    value: bytes | int
    range_end: bytes = b""


def _check_key(key: bytes, limits: ServiceLimits, name: str = "key") -> None:
    """Raises TooLarge if ``key`` exceeds key_bytes_max."""
    if len(key) > limits.key_bytes_max:
        raise TooLarge(f"{name} of {len(key)} bytes exceeds key_bytes_max",
                       limit="key_bytes_max", max=limits.key_bytes_max)  # fmt: skip


def _read_range(op: dict[str, Any], limits: ServiceLimits) -> tuple[bytes, bytes]:
    """Read key, range_end and prefix into (key, range_end). Raises InvalidArgument,
    TooLarge."""
    key = read_bytes(op, "key")
    range_end = read_bytes(op, "range_end", b"")
    if read_bool(op, "prefix"):
        if range_end:
            raise InvalidArgument("give either prefix or range_end, not both")
        range_end = prefix_end(key)
    _check_key(key, limits)
    _check_key(range_end, limits, "range_end")
    if not key and not range_end:
        raise InvalidArgument("key must not be empty")
    return key, range_end


def parse_request(op: dict[str, Any], limits: ServiceLimits) -> Request:
    """Parse a put, delete or range op map into its typed request.

    Raises InvalidArgument (unknown kind, bad field) and TooLarge (key/value bounds).
    """
    kind = op.get("kind")
    if kind == "put":
        require_fields(op, ("key", "value"), ("lease", "prev_kv"))
        key, value = read_bytes(op, "key"), read_bytes(op, "value")
        if not key:
            raise InvalidArgument("key must not be empty")
        _check_key(key, limits)
        if len(value) > limits.value_bytes_max:
            raise TooLarge(f"value of {len(value)} bytes exceeds value_bytes_max",
                           limit="value_bytes_max", max=limits.value_bytes_max)  # fmt: skip
        return PutRequest(key, value, read_int(op, "lease", 0), read_bool(op, "prev_kv"))
    if kind == "delete":
        require_fields(op, ("key",), ("range_end", "prefix", "prev_kv"))
        key, range_end = _read_range(op, limits)
        return DeleteRequest(key, range_end, read_bool(op, "prev_kv"))
    if kind == "range":
        optional = ("range_end", "prefix", "limit", "revision", "keys_only", "count_only")
        require_fields(op, ("key",), optional)
        key, range_end = _read_range(op, limits)
        return RangeRequest(key, range_end, read_int(op, "limit", 0), read_int(op, "revision", 0),
                            read_bool(op, "keys_only"), read_bool(op, "count_only"))  # fmt: skip
    raise InvalidArgument(f"unknown kv op kind {kind!r} (expected put, delete or range)")


def parse_compare(item: Any, limits: ServiceLimits) -> Compare:
    """Parse one txn compare map. Raises InvalidArgument, TooLarge."""
    if not isinstance(item, dict):
        raise InvalidArgument("a compare must be a map")
    require_fields(item, ("key", "target", "result", "value"), ("range_end",), "compare")
    key = read_bytes(item, "key")
    range_end = read_bytes(item, "range_end", b"")
    _check_key(key, limits)
    _check_key(range_end, limits, "range_end")
    target = read_str(item, "target", COMPARE_TARGETS)
    result = read_str(item, "result", COMPARE_RESULTS)
    value: bytes | int
    if target == "value":
        value = read_bytes(item, "value")
        if len(value) > limits.value_bytes_max:
            raise TooLarge("compare value exceeds value_bytes_max", limit="value_bytes_max",
                           max=limits.value_bytes_max)  # fmt: skip
    else:
        value = read_int(item, "value")
    return Compare(key, target, result, value, range_end)


def parse_txn(
    op: dict[str, Any], limits: ServiceLimits
) -> tuple[list[Compare], list[Request], list[Request]]:
    """Parse a txn op map into (compares, success, failure), checking overlaps.

    Raises InvalidArgument, TooLarge (too many compares/ops, key/value bounds).
    """
    require_fields(op, (), ("compare", "success", "failure"))
    compares = read_list(op, "compare", limits.compares_per_txn_max, "compares_per_txn_max")
    branches = []
    for name in ("success", "failure"):
        items = read_list(op, name, limits.ops_per_txn_max, "ops_per_txn_max")
        if not all(isinstance(item, dict) for item in items):
            raise InvalidArgument(f"txn {name} ops must be maps")
        requests = [parse_request(item, limits) for item in items]
        _check_no_overlap(requests)
        branches.append(requests)
    return [parse_compare(c, limits) for c in compares], branches[0], branches[1]


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    """True if ``key`` is in the etcd range ``start`` / ``[start, end)``."""
    if not end:
        return key == start
    return key >= start and (end == ALL_KEYS_END or key < end)


def _check_no_overlap(requests: list[Request]) -> None:
    """etcd refuses a txn branch that puts one key twice or puts a key it also deletes,
    because the resulting version would depend on op order. Raises InvalidArgument."""
    puts = [r.key for r in requests if isinstance(r, PutRequest)]
    if len(set(puts)) != len(puts):
        raise InvalidArgument("duplicate key given in txn request")
    for request in requests:
        if isinstance(request, DeleteRequest) and any(
            in_range(key, request.key, request.range_end) for key in puts
        ):
            raise InvalidArgument("txn branch deletes a key it also puts")


# -- the store ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RangeResult:
    """``kvs`` (at most the limit), ``more`` if the range holds more, ``count`` of all keys
    in the range, ``revision`` = the store's current (header) revision."""

    kvs: list[KeyValue]
    more: bool
    count: int
    revision: int


class KVStore:
    """The MVCC store. Reads never change state; writes are atomic."""

    def __init__(
        self,
        limits: ServiceLimits | None = None,
        lease_exists: Callable[[int], bool] | None = None,
    ) -> None:
        """Create an empty store at revision 1. ``lease_exists`` tells whether a lease id
        may be attached to a key (None: no lease exists). Raises nothing."""
        self.limits = limits or ServiceLimits()
        self._lease_exists = lease_exists or (lambda _lease: False)
        self.revision = 1
        self.compact_revision = 0
        # The two big containers (one element per key) and the history deque are kept
        # out of the cyclic collector (synod.gcfree): a full collection would walk them.
        self._live: dict[bytes, KeyValue] = {}
        self._sorted_keys = SortedKeys()
        self._keys_by_lease: dict[int, set[bytes]] = {}
        # The events of every revision >= compact_revision that had events, oldest
        # first; revisions are contiguous, so position = revision - first revision. A
        # revision is its events' (shared) revision: no per-revision record is kept.
        self._changelog: deque[tuple[Event, ...]] = deque()
        untrack(self._changelog)
        self._history_bytes = 0  # sum of _revision_bytes over _changelog

    # -- reads ----------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of live keys. Raises nothing."""
        return len(self._live)

    def _check_read_revision(self, revision: int) -> int:
        """Resolve 0 to the current revision. Raises Compacted, FutureRevision."""
        if revision == 0:
            return self.revision
        if revision > self.revision:
            raise FutureRevision(f"revision {revision} is newer than current {self.revision}",
                                 revision=self.revision)  # fmt: skip
        if revision < self.compact_revision:
            raise Compacted(f"revision {revision} is compacted",
                            compact_revision=self.compact_revision)  # fmt: skip
        return revision

    def get(self, key: bytes, revision: int = 0) -> KeyValue | None:
        """The version of ``key`` at ``revision`` (0 = current), None if absent.

        Raises Compacted, FutureRevision.
        """
        result = self.range(RangeRequest(key, b"", limit=1, revision=revision))
        assert len(result.kvs) <= 1
        return result.kvs[0] if result.kvs else None

    def range(self, request: RangeRequest) -> RangeResult:
        """Keys of the range in key order at the request's revision.

        Raises Compacted, FutureRevision, TooLarge (limit above range_limit_max).
        """
        if request.limit > self.limits.range_limit_max:
            raise TooLarge(f"limit {request.limit} exceeds range_limit_max",
                           limit="range_limit_max", max=self.limits.range_limit_max)  # fmt: skip
        revision = self._check_read_revision(request.revision)
        limit = request.limit or self.limits.range_limit_max
        overrides = {} if revision == self.revision else self._overrides_after(revision)
        if overrides:
            keys = self._keys_at(request.key, request.range_end, overrides)
            count, keys = len(keys), keys[:limit]
        else:  # The live keys: count by position, copy only what is returned.
            lo, hi = self._live_bounds(request.key, request.range_end)
            count, keys = hi - lo, self._sorted_keys.slice(lo, min(hi, lo + limit))
        kvs: list[KeyValue] = []
        if not request.count_only:
            for key in keys:
                kv = overrides[key] if key in overrides else self._live[key]
                assert kv is not None
                kvs.append(kv)
        assert len(kvs) <= limit
        return RangeResult(kvs, count > limit, count, self.revision)

    def _live_bounds(self, key: bytes, range_end: bytes) -> tuple[int, int]:
        """Positions [lo, hi) of the range's live keys in the sorted keys."""
        if not range_end:
            lo = self._sorted_keys.bisect_left(key)
            return lo, lo + (key in self._live)
        lo = self._sorted_keys.bisect_left(key)
        if range_end == ALL_KEYS_END:
            return lo, len(self._sorted_keys)
        return lo, self._sorted_keys.bisect_left(range_end, lo)

    def _live_keys_in(self, key: bytes, range_end: bytes) -> list[bytes]:
        """Sorted live keys in the range."""
        if not range_end:
            return [key] if key in self._live else []
        return self._sorted_keys.slice(*self._live_bounds(key, range_end))

    def _overrides_after(self, revision: int) -> dict[bytes, KeyValue | None]:
        """The state at ``revision`` of every key changed after it: undo newer events."""
        overrides: dict[bytes, KeyValue | None] = {}
        for events in reversed(self._changelog):
            if events[0].revision <= revision:
                break
            for event in reversed(events):
                overrides[event.kv.key] = event.prev_kv
        return overrides

    def _keys_at(
        self, key: bytes, range_end: bytes, overrides: dict[bytes, KeyValue | None]
    ) -> list[bytes]:
        """Sorted keys present in the range at the revision ``overrides`` describes."""
        if not overrides:
            return self._live_keys_in(key, range_end)
        keys = set(self._live_keys_in(key, range_end))
        keys.update(k for k in overrides if in_range(k, key, range_end))
        return sorted(k for k in keys if (overrides[k] if k in overrides else self._live[k]))

    def keys_of_lease(self, lease: int) -> list[bytes]:
        """Sorted live keys attached to ``lease``. Raises nothing."""
        return sorted(self._keys_by_lease.get(lease, ()))

    def history(self, start_revision: int) -> Iterator[tuple[int, tuple[Event, ...]]]:
        """Iterate ``(revision, events)`` for every revision >= ``start_revision`` in order.

        Raises Compacted (now, not lazily) if ``start_revision`` < compact_revision.
        Revisions without events (only revision 1, the empty store) are skipped.
        """
        if start_revision < self.compact_revision:
            raise Compacted(f"revision {start_revision} is compacted",
                            compact_revision=self.compact_revision)  # fmt: skip
        return self._history_from(start_revision)

    def _history_from(self, start_revision: int) -> Iterator[tuple[int, tuple[Event, ...]]]:
        if not self._changelog or start_revision > self.revision:
            return
        first = self._changelog[0][0].revision
        wanted = len(self._changelog) - max(0, start_revision - first)
        # Take from the right: a watcher usually wants the last few revisions, so this
        # costs O(revisions delivered), not O(history).
        newest = list(itertools.islice(reversed(self._changelog), wanted))
        for position, events in enumerate(reversed(newest)):
            revision = events[0].revision
            assert revision == self.revision - wanted + 1 + position, "contiguous revisions"
            yield revision, events

    # -- writes ---------------------------------------------------------------------------

    def put(self, request: PutRequest) -> tuple[KeyValue | None, int]:
        """Apply one put; returns (previous version or None, new revision).

        Raises NotFound (lease does not exist), LimitExceeded (keys_max, keys_per_lease_max).
        """
        events: list[Event] = []
        try:
            self._put(request, events)
        except BaseException:
            self._undo(events)
            raise
        self._commit(events)
        return events[0].prev_kv, self.revision

    def delete_range(self, request: DeleteRequest) -> tuple[list[KeyValue], int]:
        """Delete the range; returns (deleted versions, header revision).

        Raises LimitExceeded (events_per_revision_max: delete in chunks).
        """
        events: list[Event] = []
        try:
            self._delete(request, events)
        except BaseException:
            self._undo(events)
            raise
        self._commit(events)
        return [e.prev_kv for e in events if e.prev_kv is not None], self.revision

    def txn(
        self, compares: list[Compare], success: list[Request], failure: list[Request]
    ) -> tuple[bool, list[Any], int]:
        """Evaluate ``compares`` on the current state, then run one branch atomically.

        Returns (succeeded, per-op results, header revision); a put's result is its
        previous version, a delete's the deleted versions, a range's a RangeResult.
        Raises what the branch's ops raise; on error nothing changed.
        """
        assert len(success) <= self.limits.ops_per_txn_max
        succeeded = all(self._compare_holds(c) for c in compares)
        events: list[Event] = []
        results: list[Any] = []
        try:
            for request in success if succeeded else failure:
                results.append(self._run_in_txn(request, events))
        except BaseException:
            self._undo(events)
            raise
        self._commit(events)
        return succeeded, results, self.revision

    def _run_in_txn(self, request: Request, events: list[Event]) -> Any:
        """Run one op of a txn; reads see the txn's earlier writes."""
        if isinstance(request, PutRequest):
            self._put(request, events)
            return events[-1].prev_kv
        if isinstance(request, DeleteRequest):
            start = len(events)
            self._delete(request, events)
            return [e.prev_kv for e in events[start:] if e.prev_kv is not None]
        return self.range(request)

    def _compare_holds(self, compare: Compare) -> bool:
        """etcd semantics: a value compare on a missing key fails; other targets compare
        a missing key as zero. With a range, every key in it must satisfy the compare."""
        keys = self._live_keys_in(compare.key, compare.range_end)
        if not keys:
            if compare.target == "value":
                return False
            return _holds(compare.result, 0, compare.value)
        return all(_holds(compare.result, _target(self._live[k], compare.target),
                          compare.value) for k in keys)  # fmt: skip

    def delete_keys(self, keys: list[bytes]) -> int:
        """Delete ``keys`` (those still live) in one revision, e.g. a revoked lease's.

        Returns the header revision. Raises LimitExceeded (events_per_revision_max).
        """
        events: list[Event] = []
        try:
            for key in sorted(keys):
                if key in self._live:
                    self._delete_one(key, events)
        except BaseException:
            self._undo(events)
            raise
        self._commit(events)
        return self.revision

    def compact(self, revision: int) -> None:
        """Drop history before ``revision``; reads and watches below it raise Compacted.

        Raises FutureRevision (beyond current), Compacted (at or below the current
        compaction point, as etcd does).
        """
        if revision > self.revision:
            raise FutureRevision(f"cannot compact future revision {revision}",
                                 revision=self.revision)  # fmt: skip
        if revision <= self.compact_revision:
            raise Compacted(f"revision {revision} is already compacted",
                            compact_revision=self.compact_revision)  # fmt: skip
        while self._changelog and self._changelog[0][0].revision < revision:
            self._history_bytes -= _revision_bytes(self._changelog.popleft())
        self.compact_revision = revision
        assert self._history_bytes >= 0

    # -- write internals ------------------------------------------------------------------

    def _next_revision(self) -> int:
        return self.revision + 1

    def _check_event_room(self, events: list[Event]) -> None:
        if len(events) >= self.limits.events_per_revision_max:
            raise LimitExceeded("one revision may not change more keys than "
                                "events_per_revision_max; delete in chunks",
                                limit="events_per_revision_max",
                                max=self.limits.events_per_revision_max)  # fmt: skip

    def _put(self, request: PutRequest, events: list[Event]) -> None:
        """Put into the pending revision, appending its event."""
        self._check_event_room(events)
        prev = self._live.get(request.key)
        if prev is None and len(self._live) >= self.limits.keys_max:
            raise LimitExceeded("the store holds keys_max keys", limit="keys_max",
                                max=self.limits.keys_max)  # fmt: skip
        if request.lease and not self._lease_exists(request.lease):
            raise NotFound(f"lease {request.lease} not found", lease=request.lease)
        attached = self._keys_by_lease.get(request.lease, set())
        if (
            request.lease
            and request.key not in attached
            and (len(attached) >= self.limits.keys_per_lease_max)
        ):
            raise LimitExceeded("the lease holds keys_per_lease_max keys",
                                limit="keys_per_lease_max",
                                max=self.limits.keys_per_lease_max)  # fmt: skip
        revision = self._next_revision()
        kv = KeyValue(request.key, request.value,
                      prev.create_revision if prev else revision, revision,
                      prev.version + 1 if prev else 1, request.lease)  # fmt: skip
        self._set(request.key, kv)
        events.append(Event(PUT, kv, prev))

    def _delete(self, request: DeleteRequest, events: list[Event]) -> None:
        """Delete the live keys of the range into the pending revision."""
        for key in self._live_keys_in(request.key, request.range_end):
            self._delete_one(key, events)

    def _delete_one(self, key: bytes, events: list[Event]) -> None:
        self._check_event_room(events)
        prev = self._live[key]
        self._set(key, None)
        events.append(Event(DELETE, KeyValue(key, b"", 0, self._next_revision(), 0), prev))

    def _set(self, key: bytes, kv: KeyValue | None) -> None:
        """Make ``kv`` the live version of ``key`` (None deletes), keeping the sorted key
        list and the lease index in step."""
        prev = self._live.get(key)
        if prev is not None and prev.lease:
            attached = self._keys_by_lease[prev.lease]
            attached.discard(key)
            if not attached:
                del self._keys_by_lease[prev.lease]
        if kv is None:
            del self._live[key]
            self._sorted_keys.remove(key)
        else:
            if prev is None:
                self._sorted_keys.add(key)
            self._live[key] = kv
            keep_untracked(self._live)
            if kv.lease:
                self._keys_by_lease.setdefault(kv.lease, set()).add(key)
        assert len(self._sorted_keys) == len(self._live)

    def _undo(self, events: list[Event]) -> None:
        """Revert pending events newest first (a failed txn changes nothing)."""
        for event in reversed(events):
            self._set(event.kv.key, event.prev_kv)
        events.clear()

    def _commit(self, events: list[Event]) -> None:
        """Seal the pending revision (if anything changed) into the history."""
        if not events:
            return
        self.revision += 1
        assert all(e.revision == self.revision for e in events)
        self._changelog.append(_sealed(events))
        self._history_bytes += _revision_bytes(self._changelog[-1])
        self._trim_history()

    def _trim_history(self) -> None:
        """Compact the oldest revisions while the history exceeds history_bytes_max,
        keeping at least the newest revision (watchers are fed from it)."""
        while self._history_bytes > self.limits.history_bytes_max and len(self._changelog) > 1:
            self._history_bytes -= _revision_bytes(self._changelog.popleft())
            self.compact_revision = self._changelog[0][0].revision
        assert self._history_bytes >= 0

    @property
    def history_bytes(self) -> int:
        """The bytes the kept history is charged (see ``history_event_bytes``). Raises
        nothing."""
        return self._history_bytes

    # -- snapshot -------------------------------------------------------------------------

    def to_snapshot(self) -> dict[str, Any]:
        """Deterministic msgpack-able form (live keys sorted, history in order).

        Raises nothing.
        """
        assert len(self._sorted_keys) == len(self._live)
        return {
            "revision": self.revision,
            "compact_revision": self.compact_revision,
            "live": [self._live[key].to_list() for key in self._sorted_keys],
            "history": [
                [events[0].revision, [e.to_list() for e in events]] for events in self._changelog
            ],
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the content with a :meth:`to_snapshot` form.

        Raises InvalidArgument if malformed (the store is then unchanged).
        """
        try:
            live = [KeyValue.from_list(item) for item in data["live"]]
            history = [(int(rev), _sealed([Event.from_list(e) for e in events]))
                       for rev, events in data["history"]]  # fmt: skip
            revision, compact_revision = int(data["revision"]), int(data["compact_revision"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"malformed kv snapshot: {exc}") from None
        _check_history(history, revision)
        fresh = KVStore(self.limits, self._lease_exists)
        for kv in live:  # What _set does, in bulk: the keys are sorted once below.
            fresh._live[kv.key] = kv
            if kv.lease:
                fresh._keys_by_lease.setdefault(kv.lease, set()).add(kv.key)
        keep_untracked(fresh._live)
        fresh._sorted_keys = SortedKeys(fresh._live)
        fresh.revision, fresh.compact_revision = revision, compact_revision
        fresh._changelog = deque(events for _, events in history)
        untrack(fresh._changelog)
        fresh._history_bytes = sum(_revision_bytes(events) for _, events in history)
        fresh._trim_history()  # a no-op for a snapshot taken under the same limits
        if len(fresh._live) != len(live) or len(live) > self.limits.keys_max:
            raise InvalidArgument("kv snapshot has duplicate keys or exceeds keys_max")
        self.__dict__.update(fresh.__dict__)
        assert len(self._sorted_keys) == len(self._live)


_NO_VERSION = KeyValue(b"", b"", 0, 0, 0)  # charges nothing for an absent previous version


def _revision_bytes(events: tuple[Event, ...]) -> int:
    """What one revision of history is charged against history_bytes_max."""
    total = 0
    for event in events:
        prev = event.prev_kv or _NO_VERSION
        total += history_event_bytes(event.kv.key, event.kv.value, prev.key, prev.value)
    return total


def _check_history(history: list[tuple[int, tuple[Event, ...]]], revision: int) -> None:
    """A snapshot's history must be contiguous revisions up to ``revision``, each with
    events of that revision. Raises InvalidArgument."""
    for position, (rev, events) in enumerate(history):
        if not events or any(e.revision != rev for e in events):
            raise InvalidArgument(f"kv snapshot history revision {rev} is malformed")
        if rev != revision - len(history) + 1 + position:
            raise InvalidArgument("kv snapshot history is not contiguous up to its revision")


def _target(kv: KeyValue, target: str) -> bytes | int:
    """The compared field of ``kv``."""
    value: bytes | int = getattr(kv, target)
    return value


def _holds(result: str, actual: bytes | int, expected: bytes | int) -> bool:
    """Apply a compare operator; types match by construction (parse_compare)."""
    assert type(actual) is type(expected) or result in ("=", "!=")
    if result == "=":
        return actual == expected
    if result == "!=":
        return actual != expected
    if result == "<":
        return actual < expected  # type: ignore[operator]
    return actual > expected  # type: ignore[operator]
