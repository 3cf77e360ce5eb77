"""The node-local watch hub: applied kv events fanned out to bounded watchers.

Not replicated: each node serves its own watch streams from its applied state. A
watcher covers a key or ``[key, range_end)`` from ``start_revision`` (0 = only future
changes). A start in the past is caught up from the kv history; one below the
compaction point raises ``Compacted``. Each watcher buffers at most
``watch_events_buffered_max`` events, and only whole revisions: a watcher too slow to
take the next revision is cancelled with reason ``overflow`` and ``resume_revision`` =
that revision, so the client drains what is buffered and re-watches from there without
a gap or a duplicate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from synod.services.errors import Compacted, LimitExceeded, NotFound, TooLarge
from synod.services.kv import Event, KVStore, in_range
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
    next_revision: int  # the first revision not yet taken into the buffer
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
    """Registry of live watchers over one KVStore; call :meth:`notify` after each apply."""

    def __init__(self, kv: KVStore, limits: ServiceLimits | None = None) -> None:
        """Create an empty hub following ``kv``. Raises nothing."""
        self.kv = kv
        self.limits = limits or ServiceLimits()
        self._watchers: dict[int, Watcher] = {}
        self._next_id = 1
        self._delivered_revision = kv.revision
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
        self._watchers[watcher.watch_id] = watcher
        assert len(self._watchers) <= self.limits.watchers_max
        return watcher

    def cancel(self, watch_id: int) -> Watcher:
        """Cancel a watcher on the client's request. Raises NotFound if not live."""
        watcher = self._watchers.pop(watch_id, None)
        if watcher is None:
            raise NotFound(f"watch {watch_id} not found", watch=watch_id)
        watcher._cancel("client", resume_revision=watcher.next_revision)
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
            for watcher in list(self._watchers.values()):
                if revision < watcher.next_revision:
                    continue  # a future start revision not reached yet
                before = watcher.pending
                watcher._offer(revision, events)
                if watcher.cancelled:
                    del self._watchers[watcher.watch_id]
                if watcher.cancelled or watcher.pending != before:
                    touched[watcher.watch_id] = watcher
        self._delivered_revision = self.kv.revision
        return [touched[watch_id] for watch_id in sorted(touched)]

    def reset(self) -> list[Watcher]:
        """The kv state was replaced (snapshot installed): cancel every watcher with
        ``restored``; each may resume from its ``resume_revision``. Raises nothing."""
        cancelled = [self._watchers[watch_id] for watch_id in sorted(self._watchers)]
        for watcher in cancelled:
            self._drop(watcher, "restored", 0)
        self._delivered_revision = self.kv.revision
        assert not self._watchers
        return cancelled

    def _drop(self, watcher: Watcher, reason: str, compact_revision: int) -> None:
        del self._watchers[watcher.watch_id]
        watcher._cancel(reason, watcher.next_revision, compact_revision)
