"""The simulated network: delays, drops, duplicates, reordering and partitions.

Everything is decided by the `random.Random` the simulator passes in, so one
seed gives one exact schedule.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from synod.raft.types import NodeId


@dataclass(frozen=True, slots=True)
class LinkFaults:
    """Per-message fault probabilities and the delay range, in simulator time units."""

    drop_probability: float = 0.0
    duplicate_probability: float = 0.0
    delay_min_units: int = 1
    delay_max_units: int = 10

    def __post_init__(self) -> None:
        assert 0.0 <= self.drop_probability < 1.0
        assert 0.0 <= self.duplicate_probability < 1.0
        assert 1 <= self.delay_min_units <= self.delay_max_units


class Partition:
    """Which directed links are cut. A cut link silently loses every message."""

    __slots__ = ("blocked", "description")

    def __init__(self) -> None:
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.description = "none"

    def allows(self, source: NodeId, target: NodeId) -> bool:
        """True when `source` can reach `target`."""
        return (source, target) not in self.blocked

    def heal(self) -> None:
        """Restore every link."""
        self.blocked.clear()
        self.description = "none"

    def split(self, side_a: set[NodeId], side_b: set[NodeId], *, one_way: bool) -> None:
        """Cut a -> b (and b -> a unless `one_way`)."""
        assert not (side_a & side_b), "a node cannot be on both sides"
        for source in side_a:
            for target in side_b:
                self.blocked.add((source, target))
                if not one_way:
                    self.blocked.add((target, source))
        arrow = "->" if one_way else "<->"
        self.description = f"{sorted(side_a)} {arrow}x {sorted(side_b)}"

    def bridge(self, side_a: set[NodeId], bridge_node: NodeId, side_b: set[NodeId]) -> None:
        """Two halves that cannot talk, and one node that talks to both."""
        assert bridge_node not in side_a and bridge_node not in side_b
        self.split(side_a, side_b, one_way=False)
        self.description = f"{sorted(side_a)} <-x {sorted(side_b)} bridged by {bridge_node}"


def random_partition(
    rng: random.Random, members: list[NodeId], leader: NodeId | None, partition: Partition
) -> None:
    """Install one randomly chosen partition shape over `members`."""
    assert len(members) >= 2
    partition.heal()
    nodes = sorted(members)
    shape = rng.choice(("symmetric", "one-way", "leader-isolated", "bridge"))
    if shape == "leader-isolated" and leader is not None and leader in nodes:
        partition.split({leader}, set(nodes) - {leader}, one_way=False)
        partition.description = f"leader {leader} isolated"
        return
    if shape == "bridge" and len(nodes) >= 3:
        rng.shuffle(nodes)
        bridge_node = nodes[0]
        half = (len(nodes) - 1) // 2
        partition.bridge(set(nodes[1 : 1 + half]), bridge_node, set(nodes[1 + half :]))
        return
    rng.shuffle(nodes)
    cut = rng.randrange(1, len(nodes))
    partition.split(set(nodes[:cut]), set(nodes[cut:]), one_way=shape == "one-way")
