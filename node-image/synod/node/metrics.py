"""Prometheus metrics of one node, named `synod_*` in the style of etcd's.

Each node owns a `CollectorRegistry` (no global state, so tests can run many
nodes in one process); the HTTP layer adds its request metrics to the same
registry and `/metrics` renders it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from synod.services.locks import LockTable

_FAST_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.004,
    0.008,
    0.016,
    0.032,
    0.064,
    0.128,
    0.256,
    0.512,
    1.0,
)


# Lock waits run from milliseconds (a hand-over) to a minute (a busy lock).
_WAIT_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                   60.0)  # fmt: skip

# synod_lock_<name>_total counters from LockStats, with their help texts.
_LOCK_COUNTERS = {
    "expirations": ("expired", "Holds ended because their lease expired or was revoked."),
    "releases": ("released", "Holds ended by their owner's release."),
    "revocations": ("revoked", "Holds ended by an admin revocation or namespace deletion."),
    "wait_timeouts": ("wait_timeouts", "Waiters dropped by their wait bound."),
    "cancellations": ("cancelled", "Waiters that left the queue."),
    "fencing_rejections": ("fencing_rejected", "Stale fencing tokens refused."),
}


class LockCollector(Collector):
    """The lock gauges and counters, read from the applied LockTable at scrape time (one
    pass over the table per scrape, exact even on an idle follower)."""

    def __init__(self, table: Callable[[], LockTable]) -> None:
        self.table = table

    def collect(self) -> Iterator[Metric]:
        """Yield the families. Raises nothing."""
        table = self.table()
        counts = table.counts()
        stats = table.stats.as_dict()
        assert counts["holders"] >= 0 and counts["waiters"] >= 0
        yield GaugeMetricFamily("synod_lock_held", "Lock holds (applied state).",
                                value=counts["holders"])  # fmt: skip
        yield GaugeMetricFamily("synod_lock_waiters", "Queued lock waiters (applied state).",
                                value=counts["waiters"])  # fmt: skip
        yield GaugeMetricFamily("synod_locks", "Locks held or waited for (applied state).",
                                value=counts["locks"])  # fmt: skip
        acquisitions = CounterMetricFamily(
            "synod_lock_acquisitions", "Grants: at once, or from the queue (hand-overs).",
            labels=["via"],
        )  # fmt: skip
        acquisitions.add_metric(["at_once"], stats["acquired_at_once"])
        acquisitions.add_metric(["queue"], stats["acquired_from_queue"])
        yield acquisitions
        for name, (field, help_text) in _LOCK_COUNTERS.items():
            yield CounterMetricFamily(f"synod_lock_{name}", help_text, value=stats[field])


class NodeMetrics:
    """The node's gauges, counters and histograms."""

    def __init__(self, node_id: int) -> None:
        assert node_id >= 1
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.term = Gauge("synod_raft_term", "Current Raft term.", registry=registry)
        self.is_leader = Gauge("synod_raft_is_leader", "1 if this node leads.", registry=registry)
        self.leader_changes = Counter(
            "synod_raft_leader_changes", "Leader or role changes seen.", registry=registry
        )
        self.voters = Gauge(
            "synod_raft_voters", "Voting members in the configuration.", registry=registry
        )
        self.commit_index = Gauge("synod_raft_commit_index", "Commit index.", registry=registry)
        self.applied_index = Gauge("synod_raft_applied_index", "Applied index.", registry=registry)
        self.proposals_applied = Counter(
            "synod_raft_proposals_applied", "Entries applied.", registry=registry
        )
        self.proposals_pending = Gauge(
            "synod_raft_proposals_pending", "Proposals waiting to commit.", registry=registry
        )
        self.proposals_failed = Counter(
            "synod_raft_proposals_failed",
            "Proposals and read-index requests that failed (dropped, timed out, no leader).",
            registry=registry,
        )
        self.wal_fsync_seconds = Histogram(
            "synod_wal_fsync_duration_seconds",
            "WAL write + fsync per batch.",
            buckets=_FAST_BUCKETS_S,
            registry=registry,
        )
        self.apply_seconds = Histogram(
            "synod_apply_duration_seconds",
            "Applying one batch of committed entries.",
            buckets=_FAST_BUCKETS_S,
            registry=registry,
        )
        self.snapshot_save_seconds = Histogram(
            "synod_snapshot_save_duration_seconds", "Saving a snapshot.", registry=registry
        )
        self.peer_round_trip_seconds = Histogram(
            "synod_peer_round_trip_seconds",
            "Heartbeat round trip to a peer.",
            ["peer"],
            buckets=_FAST_BUCKETS_S,
            registry=registry,
        )
        self.loop_lag_seconds = Histogram(
            "synod_event_loop_lag_seconds",
            "How late the event loop woke a due callback (the loop-lag probe).",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
            registry=registry,
        )
        self.loop_lag_max_seconds = Gauge(
            "synod_event_loop_lag_max_seconds",
            "The largest event-loop lag seen since the process started.",
            registry=registry,
        )
        self.watchers = Gauge("synod_watchers", "Live watchers on this node.", registry=registry)
        self.leases = Gauge("synod_leases", "Live leases.", registry=registry)
        self.lock_wait_seconds = Histogram(
            "synod_lock_wait_duration_seconds",
            "From an acquire queued on this node to its grant answered (the FIFO wait).",
            buckets=_WAIT_BUCKETS_S,
            registry=registry,
        )
        self.lock_handover_seconds = Histogram(
            "synod_lock_handover_duration_seconds",
            "From applying a queued waiter's grant to answering its long-poll.",
            buckets=_FAST_BUCKETS_S,
            registry=registry,
        )
        Gauge("synod_member_id", "This node's member id.", registry=registry).set(node_id)
        self._loop_lag_max_s = 0.0

    def watch_locks(self, table: Callable[[], LockTable]) -> None:
        """Export the lock gauges and counters of ``table()`` (the current applied table:
        a snapshot restore replaces it). Raises ValueError if called twice."""
        self.registry.register(LockCollector(table))

    def observe_loop_lag(self, lag_s: float) -> None:
        """One sample of the loop-lag probe."""
        assert lag_s >= 0
        self.loop_lag_seconds.observe(lag_s)
        if lag_s > self._loop_lag_max_s:
            self._loop_lag_max_s = lag_s
            self.loop_lag_max_seconds.set(lag_s)

    def render(self) -> bytes:
        """Prometheus text exposition."""
        return generate_latest(self.registry)
