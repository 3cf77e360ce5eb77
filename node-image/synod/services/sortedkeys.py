"""The store's live keys in order: O(log n) inserts, kept out of the cyclic collector.

A plain sorted list costs a memmove of the whole tail per new key: 200 us per random
insert at 1,000,000 keys on this machine class, paid by every member for every new
key (a workload with random keys — UUIDs, hashes — would slow down as the store
grows). `sortedcontainers.SortedList` keeps the keys in blocks of about a thousand,
so an insert moves one block.

Its blocks are plain lists of bytes: the cyclic collector would walk every key in a
full collection (synod.gcfree). They cannot be in a cycle, so each is untracked when
it is made: by the constructor, by the first insert, and by a split
(`SortedList._expand`, which a removal's merge also calls). Those two internals
(`_lists`, `_expand`) are all this module relies on; the version is pinned and
tests/unit/test_sortedkeys.py fails if they change.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator

from sortedcontainers import SortedList

from synod.gcfree import untrack

__all__ = ["SortedKeys"]


class _Blocks(SortedList):  # type: ignore[misc]  # (sortedcontainers has no types)
    """A SortedList whose blocks stay out of the cyclic collector."""

    def _expand(self, pos: int) -> None:
        super()._expand(pos)  # May split block pos in two: a new list at pos + 1.
        for block in self._lists[pos : pos + 2]:
            if gc.is_tracked(block):
                untrack(block)


class SortedKeys:
    """A sorted set of distinct byte keys with positional slicing."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[bytes] = ()) -> None:
        """Raises nothing."""
        self._keys = _Blocks(keys)
        for block in self._keys._lists:
            untrack(block)

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._keys)

    def add(self, key: bytes) -> None:
        """Insert ``key`` (not present). Raises nothing."""
        size = len(self._keys)
        self._keys.add(key)
        assert len(self._keys) == size + 1
        if size == 0:  # The first key makes the first block.
            untrack(self._keys._lists[0])

    def remove(self, key: bytes) -> None:
        """Remove ``key`` (present). Raises ValueError if it is not."""
        size = len(self._keys)
        self._keys.remove(key)
        assert len(self._keys) == size - 1

    def bisect_left(self, key: bytes, lo: int = 0) -> int:
        """The position of the first key >= ``key``, at least ``lo``. Raises nothing."""
        position = int(self._keys.bisect_left(key))
        assert 0 <= position <= len(self._keys)
        return max(position, lo)

    def slice(self, start: int, stop: int) -> list[bytes]:
        """The keys at positions ``start`` to ``stop`` (exclusive). Raises nothing."""
        assert start >= 0
        keys = list(self._keys.islice(start, stop))
        assert len(keys) <= max(0, stop - start)
        return keys
