"""`make bench-core`: how fast the sans-I/O Raft core commits, with no I/O at all.

Three cores are wired by an in-memory network in one process; the leader is
kept busy with proposals and every Ready is "persisted" to a MemoryStorage.
Prints committed entries per second and CPU microseconds per committed entry,
with batching (many proposals per append) and without (one per append).
This is a benchmark, not a test: it asserts progress, never a speed.
"""

from __future__ import annotations

import argparse
import time
from collections import deque

from synod.raft.core import Config, RaftNode
from synod.raft.storage import MemoryStorage, bootstrap
from synod.raft.types import ConfState, Message, Role

PAYLOAD = b"k" * 16 + b"v" * 64  # A small KV put, as the node would propose.
ROUNDS_MAX = 10_000_000  # Bounds the delivery loop whatever happens.


class Cluster:
    """Three in-process cores with an instant, lossless network."""

    def __init__(self, size: int = 3) -> None:
        ids = list(range(1, size + 1))
        self.storages = {i: MemoryStorage() for i in ids}
        for storage in self.storages.values():
            bootstrap(storage, ConfState(voters=frozenset(ids)))
        self.nodes = {i: RaftNode(Config(node_id=i, seed=7), self.storages[i]) for i in ids}
        self.queue: deque[Message] = deque()
        self.applied = 0

    def drain(self) -> None:
        """Handle every Ready and deliver every message until quiet."""
        for _ in range(ROUNDS_MAX):
            progressed = False
            for node_id, node in self.nodes.items():
                if node.has_ready():
                    self._handle(node_id, node)
                    progressed = True
            if self.queue:
                progressed = True
                while self.queue:
                    message = self.queue.popleft()
                    self.nodes[message.to].step(message)
            if not progressed:
                return
        raise AssertionError("cluster did not quiesce")

    def _handle(self, node_id: int, node: RaftNode) -> None:
        ready = node.ready()
        storage = self.storages[node_id]
        storage.append(ready.entries)
        if ready.hard_state is not None:
            storage.set_hard_state(ready.hard_state)
        self.queue.extend(ready.messages)
        if node_id == 1:
            self.applied += len(ready.committed_entries)
        node.advance(ready)


def measure(total_entries: int, batch_size: int) -> tuple[float, float]:
    """Commit `total_entries` in proposals of `batch_size`. Returns (entries/s, CPU µs/entry)."""
    cluster = Cluster()
    cluster.nodes[1].campaign()
    cluster.drain()
    assert cluster.nodes[1].role == Role.LEADER
    leader = cluster.nodes[1]
    start_applied = cluster.applied
    batch = [PAYLOAD] * batch_size
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    proposed = 0
    while proposed < total_entries:
        for _ in range(8):  # Several proposals in flight before the network runs.
            leader.propose_batch(batch)
            proposed += batch_size
        cluster.drain()
        # Compact now and then so the in-memory log stays small, as a node would.
        storage = cluster.storages[1]
        if storage.last_index() - storage.first_index() > 100_000:
            for node_storage in cluster.storages.values():
                node_storage.compact(node_storage.last_index() - 1000)
    wall_s = time.perf_counter() - wall_start
    cpu_s = time.process_time() - cpu_start
    committed = cluster.applied - start_applied
    assert committed >= proposed, (committed, proposed)
    return committed / wall_s, cpu_s * 1e6 / committed


def main(argv: list[str] | None = None) -> int:
    """Print the table and one summary line."""
    parser = argparse.ArgumentParser(prog="python -m synod.bench.core", description=__doc__)
    parser.add_argument("--entries", type=int, default=200_000)
    args = parser.parse_args(argv)
    print(f"{'mode':<24}{'entries/s':>14}{'CPU µs/entry':>16}")
    results = {}
    for label, batch_size, entries in (
        ("batched (256/append)", 256, args.entries),
        ("batched (64/append)", 64, args.entries),
        ("unbatched (1/append)", 1, max(args.entries // 20, 1000)),
    ):
        rate, cpu_us = measure(entries, batch_size)
        results[label] = rate
        print(f"{label:<24}{rate:>14,.0f}{cpu_us:>16.2f}")
    best = max(results.values())
    print(f"bench-core: committed_entries_per_s={best:,.0f} (3 cores, one process)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
