"""SortedKeys: a sorted set of keys (checked against a plain sorted list) whose blocks
stay out of the cyclic collector whatever the inserts and removals did."""

from __future__ import annotations

import gc

from hypothesis import given, settings
from hypothesis import strategies as st

from synod.services.sortedkeys import SortedKeys

# Small keys drawn from a small alphabet collide often: adds and removes both happen.
KEYS = st.binary(min_size=0, max_size=3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), KEYS), max_size=300), KEYS, KEYS)
def test_behaves_like_a_sorted_list(ops: list[tuple[bool, bytes]], lo: bytes, hi: bytes) -> None:
    keys, model = SortedKeys(), set[bytes]()
    for add, key in ops:
        if add and key not in model:
            keys.add(key)
            model.add(key)
        elif not add and key in model:
            keys.remove(key)
            model.discard(key)
    expected = sorted(model)
    assert list(keys) == expected and len(keys) == len(expected)
    start = keys.bisect_left(lo)
    stop = keys.bisect_left(hi, start)
    assert keys.slice(start, stop) == [k for k in expected if lo <= k < hi]


def _tracked_blocks(keys: SortedKeys) -> int:
    return sum(gc.is_tracked(block) for block in keys._keys._lists)


def test_blocks_stay_untracked_through_splits_and_merges() -> None:
    keys = SortedKeys()
    keys.add(b"first")
    assert _tracked_blocks(keys) == 0
    for i in range(20_000):  # ~10 blocks of the default load (1,000): many splits
        keys.add(b"%08d" % ((i * 7919) % 20_000))
    assert len(keys._keys._lists) > 10 and _tracked_blocks(keys) == 0
    for i in range(0, 20_000, 3):  # Removals shrink blocks until they merge (and re-split).
        keys.remove(b"%08d" % i)
    assert _tracked_blocks(keys) == 0
    rebuilt = SortedKeys(list(keys))
    assert list(rebuilt) == list(keys) and _tracked_blocks(rebuilt) == 0
