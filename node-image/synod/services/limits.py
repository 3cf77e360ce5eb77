"""Every named bound of the service state machines, in one place (Principle 4).

All replicas of a cluster must use the same replicated bounds (those marked
*replicated*): they decide whether a command succeeds, so they are part of the
deterministic state transition. The node should load them from cluster configuration,
never from per-node flags.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HISTORY_EVENT_OVERHEAD_BYTES", "ServiceLimits", "history_event_bytes"]

# What one history event is charged beyond the bytes of its keys and values: roughly the
# Python objects holding it (the event, its versions, their integers). It decides the
# automatic compaction point, so it is part of the replicated state transition: every
# replica must use the same value.
HISTORY_EVENT_OVERHEAD_BYTES = 256


def history_event_bytes(key: bytes, value: bytes, prev_key: bytes, prev_value: bytes) -> int:
    """The bytes one history event is charged: its new version's and its previous
    version's key and value (what a snapshot carries) plus the object overhead.
    Raises nothing."""
    return HISTORY_EVENT_OVERHEAD_BYTES + len(key) + len(value) + len(prev_key) + len(prev_value)


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    """Bounds for kv, leases, sessions (replicated) and the watch hub (node-local)."""

    # kv (replicated)
    key_bytes_max: int = 4096
    value_bytes_max: int = 1024 * 1024
    keys_max: int = 1_000_000
    ops_per_txn_max: int = 128
    compares_per_txn_max: int = 128
    range_limit_max: int = 10_000
    # One revision may not produce more events than this (a big delete_range must be
    # chunked), so a watcher buffer of at least this size can always take a revision.
    events_per_revision_max: int = 10_000
    # History kept (in memory and in snapshots) for reads at old revisions and watch
    # catch-up, charged by history_event_bytes; the oldest revisions are compacted
    # automatically (deterministically, in apply) beyond it. The newest revision is
    # always kept, even if alone it is larger (its versions are mostly the live ones).
    history_bytes_max: int = 64 * 1024 * 1024
    # leases (replicated)
    leases_max: int = 100_000
    keys_per_lease_max: int = 10_000
    lease_ttl_ms_min: int = 1_000
    lease_ttl_ms_max: int = 366 * 24 * 3600 * 1000
    lease_expire_batch_max: int = 1_000
    # sessions (replicated)
    sessions_max: int = 10_000
    responses_per_session_max: int = 256
    command_bytes_max: int = 4 * 1024 * 1024
    # watch hub (node-local)
    watchers_max: int = 10_000
    watch_events_buffered_max: int = 10_000

    def __post_init__(self) -> None:
        """Check the bounds fit together. Raises ValueError naming the misfit."""
        for name in self.__slots__:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.events_per_revision_max < max(self.ops_per_txn_max, self.keys_per_lease_max):
            raise ValueError("events_per_revision_max must cover a txn and a lease's keys")
        largest_put = history_event_bytes(b"", b"", b"", b"") + 2 * (
            self.key_bytes_max + self.value_bytes_max
        )
        if self.history_bytes_max < largest_put:
            raise ValueError("history_bytes_max must hold a put of the largest key and value")
        if self.watch_events_buffered_max < self.events_per_revision_max:
            raise ValueError("watch_events_buffered_max must hold at least one revision")
        if self.lease_ttl_ms_min > self.lease_ttl_ms_max:
            raise ValueError("lease_ttl_ms_min must not exceed lease_ttl_ms_max")
