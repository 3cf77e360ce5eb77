"""The randomized round-robin probe order (memberlist's probe list with shuffling).

Every member is probed once per round, in an order shuffled at the start of each
round, so a failed member is probed within at most 2N - 1 protocol periods (SWIM's
time-bounded completeness) instead of only in expectation.
"""

from __future__ import annotations

import random


class ProbeOrder:
    """Names to probe this round; reshuffled when the round is over."""

    def __init__(self, rng: random.Random, members_max: int) -> None:
        assert members_max >= 1
        self._rng = rng
        self._members_max = members_max
        self._order: list[str] = []
        self._index = 0
        assert self._index == 0

    def next(self, candidates: set[str]) -> str | None:
        """The next name still in `candidates`, starting a new round when needed."""
        assert len(candidates) <= self._members_max
        for _ in range(2):
            while self._index < len(self._order):
                name = self._order[self._index]
                self._index += 1
                if name in candidates:
                    return name
            self._order = sorted(candidates)
            self._rng.shuffle(self._order)
            self._index = 0
        assert not candidates
        return None

    def add(self, name: str) -> None:
        """Put a new member at a random place in the rest of this round."""
        assert name
        assert self._index <= len(self._order)
        if len(self._order) >= 2 * self._members_max:
            return  # It is in the next round's shuffle anyway.
        position = self._rng.randint(self._index, len(self._order))
        self._order.insert(position, name)
