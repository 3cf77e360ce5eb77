"""Prometheus metrics of one node, named `synod_*` in the style of etcd's.

Each node owns a `CollectorRegistry` (no global state, so tests can run many
nodes in one process); the HTTP layer adds its request metrics to the same
registry and `/metrics` renders it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
        self.lock_holders = Gauge("synod_lock_held", "Lock holds (applied state).",
                                  registry=registry)  # fmt: skip
        self.lock_waiters = Gauge("synod_lock_waiters", "Queued lock waiters (applied state).",
                                  registry=registry)  # fmt: skip
        Gauge("synod_member_id", "This node's member id.", registry=registry).set(node_id)
        self._loop_lag_max_s = 0.0

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
