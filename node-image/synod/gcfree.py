"""Keep immutable records out of the cyclic garbage collector (a leaf module).

CPython's cyclic collector walks every *tracked* container object in a full
collection. A member holding 100,000 keys had ~900,000 tracked objects — a
version (`KeyValue`), a history `Event` and a log `Entry` per write — and each
full collection stalled the event loop for 300-570 ms (measured with
`gc.callbacks` under `make bench`), freeing nothing. Those records are frozen and
hold only bytes, ints, strings, enum members and other such records: they can
never be part of a reference cycle, so reference counting alone frees them and
the collector need not see them. `untrack` removes one object from its lists
through the public C API (`PyObject_GC_UnTrack`), as CPython itself does for
tuples and dicts that hold only atomic values.

Only call it from the `__post_init__` of a frozen record whose fields cannot refer
back to it (no lists, dicts or mutable objects).

With the records untracked, what a full collection still walked was the few big
containers that hold them: the live-key dict, the sorted key list, the history
deque and the Raft log's entry list, one visit per element (16 ms of CPU at
100,000 keys, ~10x that at a million). Those containers hold only bytes and
untracked records, so they cannot be in a cycle either: `untrack` them when they
are made. CPython never re-tracks a list or a deque, but it re-tracks a dict as
soon as a value of a collectable type goes in: `keep_untracked` after each insert.
An untracked container is never freed wrongly (the collector sees its references
as external); a cycle through it would only leak, and there is none.
"""

from __future__ import annotations

import ctypes
import gc

_gc_untrack = ctypes.pythonapi.PyObject_GC_UnTrack
_gc_untrack.argtypes = [ctypes.py_object]
_gc_untrack.restype = None


def untrack(record: object) -> None:
    """Stop the cyclic collector from tracking `record` (a no-op when it is not
    tracked). Raises nothing."""
    _gc_untrack(record)


def keep_untracked(container: object) -> None:
    """Untrack `container` again if an insert re-tracked it (dicts). Cheap when it is
    not tracked: one `gc.is_tracked`. Raises nothing."""
    if gc.is_tracked(container):
        _gc_untrack(container)
