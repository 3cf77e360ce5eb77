"""A consistent-hash ring with virtual nodes: which member owns a counter.

The ring is a pure function of the member names (their order does not matter): every
member that sees the same membership computes the same owner for every key. Each member
holds ``vnodes`` points (``blake2b(name#i)``); a key belongs to the first point at or
after ``blake2b(key)``, wrapping around. When a member joins, it takes about ``1 / n``
of the keys (from every other member); when one leaves, only its keys move, to the
others. A moved counter starts afresh on its new owner (docs/ratelimit.md, "Membership
changes"): for one window, that key may admit up to one more limit's worth.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable
from typing import Final

__all__ = ["MEMBERS_MAX", "VNODES_DEFAULT", "Ring"]

VNODES_DEFAULT: Final = 128
VNODES_MAX: Final = 1024
MEMBERS_MAX: Final = 1024


def _hash(data: str) -> int:
    digest = hashlib.blake2b(data.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Ring:
    """The ring of ``members`` (names, at most MEMBERS_MAX) with ``vnodes`` points each."""

    def __init__(self, members: Iterable[str], vnodes: int = VNODES_DEFAULT) -> None:
        """Raises ValueError for no members, too many, or vnodes out of [1, VNODES_MAX]."""
        names = sorted(set(members))
        if not names:
            raise ValueError("a ring needs at least one member")
        if len(names) > MEMBERS_MAX:
            raise ValueError(f"more than MEMBERS_MAX={MEMBERS_MAX} members")
        if not 1 <= vnodes <= VNODES_MAX:
            raise ValueError(f"vnodes must be in [1, {VNODES_MAX}]")
        points = sorted((_hash(f"{name}#{i}"), name) for name in names for i in range(vnodes))
        self.members: tuple[str, ...] = tuple(names)
        self.vnodes = vnodes
        self._hashes = [h for h, _ in points]
        self._owners = [name for _, name in points]
        assert len(self._hashes) == len(names) * vnodes

    def owner(self, key: str) -> str:
        """The member owning ``key``. Raises nothing."""
        index = bisect.bisect_left(self._hashes, _hash(key))
        owner = self._owners[index % len(self._owners)]
        assert owner in self.members
        return owner

    def __eq__(self, other: object) -> bool:
        """Rings are equal when built from the same members and vnodes. Raises nothing."""
        if not isinstance(other, Ring):
            return False
        return (self.members, self.vnodes) == (other.members, other.vnodes)

    def __hash__(self) -> int:
        """Hash of the members and vnodes. Raises nothing."""
        return hash((self.members, self.vnodes))


def moved(before: Ring, after: Ring, keys: Iterable[str]) -> int:
    """How many of ``keys`` change owner from ``before`` to ``after``. Raises nothing."""
    count = sum(1 for key in keys if before.owner(key) != after.owner(key))
    assert count >= 0
    return count
