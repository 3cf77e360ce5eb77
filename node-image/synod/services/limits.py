"""Every named bound of the service state machines, in one place (Principle 4).

All replicas of a cluster must use the same replicated bounds (those marked
*replicated*): they decide whether a command succeeds, so they are part of the
deterministic state transition. They are never per-node flags: the defaults below are
compiled in, and the settable ones (`SETTABLE_LIMITS_CEILING`) change only through a
committed `limits_set` command, which snapshots carry.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = [
    "HISTORY_EVENT_OVERHEAD_BYTES",
    "SETTABLE_LIMITS_CEILING",
    "ServiceLimits",
    "history_event_bytes",
    "settable_limits",
    "with_settable_limits",
]

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


# The replicated bounds a running cluster may change through the log (`limits_set`, the
# admin route POST /v1/admin/limits), each with the ceiling it may be raised to. They are
# changed by a committed entry, so every replica applies the same command with the same
# bounds, and a restart replays the entries after the snapshot with the bounds the
# snapshot carries. Bounds that also shape the wire or the OpenAPI document (key and
# value sizes, command bytes, txn sizes) are not settable: they are compiled in.
SETTABLE_LIMITS_CEILING: dict[str, int] = {
    "keys_max": 100_000_000,
    "leases_max": 10_000_000,
    "history_bytes_max": 4 * 1024**3,
}


def settable_limits(limits: ServiceLimits) -> dict[str, int]:
    """The settable bounds of ``limits``, by name. Raises nothing."""
    values = {name: int(getattr(limits, name)) for name in SETTABLE_LIMITS_CEILING}
    assert all(value >= 1 for value in values.values())
    return values


def with_settable_limits(limits: ServiceLimits, changes: dict[str, int]) -> ServiceLimits:
    """``limits`` with the settable bounds in ``changes`` replaced.

    Raises ValueError naming the first unknown field, a value that is not an integer in
    1..ceiling, or a combination that ServiceLimits refuses.
    """
    for name, value in changes.items():
        ceiling = SETTABLE_LIMITS_CEILING.get(name)
        if ceiling is None:
            raise ValueError(f"{name!r} is not a settable limit "
                             f"(settable: {', '.join(SETTABLE_LIMITS_CEILING)})")  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ceiling:
            raise ValueError(f"{name} must be an integer from 1 to {ceiling}")
    updated = replace(limits, **changes)
    assert settable_limits(updated).items() >= changes.items()
    return updated
