"""The node-local watch hub: applied kv events fanned out to bounded watchers.

Not replicated: each node serves its own watch streams from its applied state. A
watcher covers a key or ``[key, range_end)`` from ``start_revision`` (0 = only future
changes). A start in the past is caught up from the kv history; one below the
compaction point raises ``Compacted``. Each watcher buffers at most
``watch_events_buffered_max`` events, and only whole revisions: a watcher too slow to
take the next revision is cancelled with reason ``overflow`` and ``resume_revision`` =
that revision, so the client drains what is buffered and re-watches from there without
a gap or a duplicate.

Idle watchers cost nothing per write: watchers are indexed by exact key and by prefix,
so a revision is offered only to the watchers it can match (plus those over arbitrary
ranges, scanned), and only the watchers that got events or were cancelled are handed to
the ``wake`` hook, which the node uses to resume exactly those streams.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from synod.services.errors import Compacted, LimitExceeded, NotFound, TooLarge
from synod.services.kv import Event, KVStore, in_range, prefix_end
from synod.services.limits import ServiceLimits

__all__ = ["CANCEL_REASONS", "WatchHub", "Watcher"]

# overflow: too slow; compacted: history needed was compacted; client: cancelled on
# request; restored: the node installed a snapshot (state jumped).
CANCEL_REASONS = ("overflow", "compacted", "client", "restored")


@dataclass(slots=True)
class Watcher:
    """One watch stream. Drain with :meth:`poll`; check ``cancel_reason`` when empty."""

    watch_id: int
    key: bytes
    range_end: bytes
    # The first revision not yet taken into the buffer, or earlier: the hub offers a
    # watcher only revisions that may match it (see WatchHub.next_revision_of).
    next_revision: int
    events_buffered_max: int
    cancel_reason: str | None = None
    resume_revision: int = 0  # where to re-watch from after a cancellation
    compact_revision: int = 0  # set when cancelled for compaction
    _buffer: deque[Event] = field(default_factory=deque)

    @property
    def cancelled(self) -> bool:
        """True once the hub stopped feeding this watcher. Raises nothing."""
        return self.cancel_reason is not None

    @property
    def pending(self) -> int:
        """Number of buffered events. Raises nothing."""
        return len(self._buffer)

    def poll(self, events_max: int) -> list[Event]:
        """Take up to ``events_max`` buffered events, oldest first. Raises nothing."""
        assert events_max >= 1
        count = min(events_max, len(self._buffer))
        out = [self._buffer.popleft() for _ in range(count)]
        assert len(self._buffer) <= self.events_buffered_max
        return out

    def cancel_message(self) -> str:
        """A human explanation of the cancellation ('' if live). Raises nothing."""
        if self.cancel_reason == "overflow":
            return f"watcher too slow; resume from revision {self.resume_revision}"
        if self.cancel_reason == "compacted":
            return f"history compacted at revision {self.compact_revision}; re-read and re-watch"
        if self.cancel_reason is not None:
            return f"watch cancelled ({self.cancel_reason}); resume from {self.resume_revision}"
        return ""

    def _offer(self, revision: int, events: tuple[Event, ...]) -> None:
        """Take revision ``revision`` whole, or cancel with ``overflow``."""
        assert not self.cancelled and revision >= self.next_revision
        matching = [e for e in events if in_range(e.kv.key, self.key, self.range_end)]
        if len(self._buffer) + len(matching) > self.events_buffered_max:
            self._cancel("overflow", resume_revision=revision)
            return
        self._buffer.extend(matching)
        self.next_revision = revision + 1

    def _cancel(self, reason: str, resume_revision: int, compact_revision: int = 0) -> None:
        assert reason in CANCEL_REASONS and not self.cancelled
        self.cancel_reason = reason
        self.resume_revision = resume_revision
        self.compact_revision = compact_revision


class WatchHub:
    """Registry of live watchers over one KVStore; call :meth:`notify` after each apply.

    ``wake``, if set, is called with every watcher that :meth:`notify` gave events or
    cancelled and every watcher :meth:`reset` cancelled; it runs inside the state
    machine's apply, so it must be quick and must not raise.
    """

    def __init__(self, kv: KVStore, limits: ServiceLimits | None = None) -> None:
        """Create an empty hub following ``kv``. Raises nothing."""
        self.kv = kv
        self.limits = limits or ServiceLimits()
        self.wake: Callable[[Watcher], None] | None = None
        self._watchers: dict[int, Watcher] = {}
        # Indexes of _watchers: by exact key, by prefix (with how many prefixes of each
        # length there are, so a key is looked up once per length in use), and the rest.
        self._by_key: dict[bytes, dict[int, Watcher]] = {}
        self._by_prefix: dict[bytes, dict[int, Watcher]] = {}
        self._prefix_lengths: dict[int, int] = {}
        self._over_ranges: dict[int, Watcher] = {}
        self._next_id = 1
        self._delivered_revision = kv.revision
        self.offers = 0  # revisions offered to watchers: what notify costs, for tests
        assert self.limits.watch_events_buffered_max >= self.limits.events_per_revision_max

    def __len__(self) -> int:
        """Number of live watchers. Raises nothing."""
        return len(self._watchers)

    def watch(self, key: bytes, range_end: bytes = b"", start_revision: int = 0) -> Watcher:
        """Start a watcher; ``start_revision`` 0 means changes after the current revision.

        Raises Compacted (start below the compaction point), LimitExceeded (watchers_max),
        TooLarge (key or range_end beyond key_bytes_max). For a prefix pass
        ``range_end=prefix_end(prefix)``; ``range_end=b"\\0"`` watches every key >= ``key``.
        """
        for name, value in (("key", key), ("range_end", range_end)):
            if len(value) > self.limits.key_bytes_max:
                raise TooLarge(f"watch {name} exceeds key_bytes_max", limit="key_bytes_max",
                               max=self.limits.key_bytes_max)  # fmt: skip
        self.notify()
        if len(self._watchers) >= self.limits.watchers_max:
            raise LimitExceeded("watchers_max watchers are live", limit="watchers_max",
                                max=self.limits.watchers_max)  # fmt: skip
        start = start_revision or self.kv.revision + 1
        history = self.kv.history(start)  # raises Compacted before anything is created
        watcher = Watcher(self._next_id, key, range_end, start,
                          self.limits.watch_events_buffered_max)  # fmt: skip
        self._next_id += 1
        for revision, events in history:
            watcher._offer(revision, events)
            if watcher.cancelled:
                return watcher  # overflowed during catch-up: drain, then resume
        watcher.next_revision = max(start, self.kv.revision + 1)
        self._add(watcher)
        assert len(self._watchers) <= self.limits.watchers_max
        return watcher

    def next_revision_of(self, watcher: Watcher) -> int:
        """The first revision a live watcher has not been given (every revision up to
        the last notify was offered to it if it could match). Raises nothing."""
        return max(watcher.next_revision, self._delivered_revision + 1)

    def cancel(self, watch_id: int) -> Watcher:
        """Cancel a watcher on the client's request. Raises NotFound if not live."""
        watcher = self._watchers.get(watch_id)
        if watcher is None:
            raise NotFound(f"watch {watch_id} not found", watch=watch_id)
        self._drop(watcher, "client", 0)
        assert watch_id not in self._watchers
        return watcher

    def notify(self) -> list[Watcher]:
        """Feed every revision applied since the last call to the watchers.

        Returns the watchers that got events or were cancelled (to wake their streams).
        Raises nothing: a gap lost to compaction cancels watchers with ``compacted``.
        """
        if self._delivered_revision >= self.kv.revision:
            return []
        if not self._watchers:
            self._delivered_revision = self.kv.revision  # nobody to feed
            return []
        touched: dict[int, Watcher] = {}
        try:
            history = self.kv.history(self._delivered_revision + 1)
        except Compacted:
            for watcher in list(self._watchers.values()):
                self._drop(watcher, "compacted", self.kv.compact_revision)
                touched[watcher.watch_id] = watcher
            history = iter(())
        for revision, events in history:
            for watcher in self._candidates(events):
                if revision < watcher.next_revision:
                    continue  # a future start revision not reached yet
                self.offers += 1
                before = watcher.pending
                watcher._offer(revision, events)
                if watcher.cancelled:
                    self._remove(watcher)
                if watcher.cancelled or watcher.pending != before:
                    touched[watcher.watch_id] = watcher
        self._delivered_revision = self.kv.revision
        woken = [touched[watch_id] for watch_id in sorted(touched)]
        self._wake_all(woken)
        return woken

    def reset(self) -> list[Watcher]:
        """The kv state was replaced (snapshot installed): cancel every watcher with
        ``restored``; each may resume from its ``resume_revision``. Raises nothing."""
        cancelled = [self._watchers[watch_id] for watch_id in sorted(self._watchers)]
        for watcher in cancelled:
            self._drop(watcher, "restored", 0)
        self._delivered_revision = self.kv.revision
        assert not self._watchers and not self._prefix_lengths
        self._wake_all(cancelled)
        return cancelled

    def _wake_all(self, watchers: list[Watcher]) -> None:
        if self.wake is not None:
            for watcher in watchers:
                self.wake(watcher)

    def _candidates(self, events: tuple[Event, ...]) -> list[Watcher]:
        """The live watchers that one of ``events`` may match, each once."""
        found: dict[int, Watcher] = {}
        for event in events:
            key = event.kv.key
            found.update(self._by_key.get(key, ()))
            for length in self._prefix_lengths:
                if length <= len(key):
                    found.update(self._by_prefix.get(key[:length], ()))
        for watch_id, watcher in self._over_ranges.items():
            if any(in_range(e.kv.key, watcher.key, watcher.range_end) for e in events):
                found[watch_id] = watcher
        return list(found.values())

    def _index_of(self, watcher: Watcher) -> dict[bytes, dict[int, Watcher]] | None:
        """The index a watcher lives in under its key; None for an arbitrary range."""
        if not watcher.range_end:
            return self._by_key
        if watcher.range_end == prefix_end(watcher.key):
            return self._by_prefix  # [key, prefix_end(key)) is "starts with key"
        return None

    def _add(self, watcher: Watcher) -> None:
        self._watchers[watcher.watch_id] = watcher
        index = self._index_of(watcher)
        if index is None:
            self._over_ranges[watcher.watch_id] = watcher
            return
        index.setdefault(watcher.key, {})[watcher.watch_id] = watcher
        if index is self._by_prefix:
            length = len(watcher.key)
            self._prefix_lengths[length] = self._prefix_lengths.get(length, 0) + 1

    def _remove(self, watcher: Watcher) -> None:
        del self._watchers[watcher.watch_id]
        index = self._index_of(watcher)
        if index is None:
            del self._over_ranges[watcher.watch_id]
            return
        same_key = index[watcher.key]
        del same_key[watcher.watch_id]
        if not same_key:
            del index[watcher.key]
        if index is self._by_prefix:
            length = len(watcher.key)
            self._prefix_lengths[length] -= 1
            if not self._prefix_lengths[length]:
                del self._prefix_lengths[length]
        assert watcher.watch_id not in self._watchers

    def _drop(self, watcher: Watcher, reason: str, compact_revision: int) -> None:
        resume_revision = self.next_revision_of(watcher)
        self._remove(watcher)
        watcher._cancel(reason, resume_revision, compact_revision)
