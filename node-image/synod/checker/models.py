"""Sequential models for `linearizability.check`: a key-value store and a register.

Inputs are small frozen dataclasses. Outputs: `Get` returns the value or None
(absent); `Cas` returns a bool (success); `Put` and `Delete` outputs are ignored.
None is never a stored value, since it means "absent".
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from synod.checker.history import PENDING, Operation
from synod.checker.linearizability import Model


@dataclass(frozen=True, slots=True)
class Put:
    """Set `key` to `value`."""

    key: Hashable
    value: Hashable


@dataclass(frozen=True, slots=True)
class Get:
    """Read `key`; the output is its value, or None when absent."""

    key: Hashable


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove `key` (no effect when absent)."""

    key: Hashable


@dataclass(frozen=True, slots=True)
class Cas:
    """If `key` holds `expected` (None: `key` is absent) set it to `new`; output: bool."""

    key: Hashable
    expected: Hashable | None
    new: Hashable


KvInput = Put | Get | Delete | Cas


class FrozenMap:
    """An immutable, hashable mapping: the KV model's state.

    Updates copy; that is fine because `KvModel.partition` gives one key per
    partition, so a state holds at most one entry.
    """

    __slots__ = ("_hash", "_items")

    def __init__(self, items: dict[Hashable, Hashable] | None = None) -> None:
        self._items: Final = dict(items or {})
        self._hash: Final = hash(frozenset(self._items.items()))

    def get(self, key: Hashable) -> Hashable | None:
        """The value of `key`, or None when absent."""
        return self._items.get(key)

    def set(self, key: Hashable, value: Hashable) -> FrozenMap:
        """A copy with `key` set to `value`; raises ValueError for a None value."""
        if value is None:
            raise ValueError(f"None is not a storable value (key {key!r}): it means absent")
        return FrozenMap({**self._items, key: value})

    def delete(self, key: Hashable) -> FrozenMap:
        """A copy without `key`."""
        if key not in self._items:
            return self
        items = dict(self._items)
        del items[key]
        return FrozenMap(items)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FrozenMap):
            return NotImplemented
        return self._hash == other._hash and self._items == other._items

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: {v!r}" for k, v in self._items.items()) + "}"


class KvModel(Model[FrozenMap]):
    """A dict of keys to values; partitions the history by key."""

    def init(self) -> FrozenMap:
        """An empty store."""
        return FrozenMap()

    def step(self, state: FrozenMap, input: object, output: object) -> tuple[bool, FrozenMap]:
        """Apply one KV input.

        Raises ValueError for an input that is not a KvInput or that stores None.
        """
        unknown = output is PENDING
        match input:
            case Put(key=key, value=value):
                return True, state.set(key, value)
            case Delete(key=key):
                return True, state.delete(key)
            case Get(key=key):
                return unknown or output == state.get(key), state
            case Cas(key=key, expected=expected, new=new):
                success = state.get(key) == expected
                if not unknown and output != success:
                    return False, state
                return True, state.set(key, new) if success else state
        raise ValueError(f"KvModel does not know input {input!r}")

    def partition(self, history: Sequence[Operation]) -> list[list[Operation]]:
        """One partition per key, in first-seen order.

        Reads that never returned are dropped: they change nothing and constrain
        nothing, but would widen the search. Raises ValueError for a non-KvInput.
        """
        by_key: dict[Hashable, list[Operation]] = {}
        for operation in history:  # bound: len(history)
            if not isinstance(operation.input, Put | Get | Delete | Cas):
                raise ValueError(f"KvModel does not know input {operation.input!r}")
            if isinstance(operation.input, Get) and operation.is_pending:
                continue
            by_key.setdefault(operation.input.key, []).append(operation)
        partitions = list(by_key.values())
        assert sum(len(p) for p in partitions) <= len(history)
        return partitions

    def is_read_only(self, input: object, output: object) -> bool:
        """Gets, and compare-and-swaps known to have failed, never change the store."""
        return isinstance(input, Get) or (isinstance(input, Cas) and output is False)

    def describe(self, input: object, output: object) -> str:
        """E.g. `put('x', 1)`, `get('x') -> 1`, `cas('x', None, 2) -> True`."""
        shown = "?" if output is PENDING else repr(output)
        match input:
            case Put(key=key, value=value):
                return f"put({key!r}, {value!r})"
            case Delete(key=key):
                return f"delete({key!r})"
            case Get(key=key):
                return f"get({key!r}) -> {shown}"
            case Cas(key=key, expected=expected, new=new):
                return f"cas({key!r}, {expected!r}, {new!r}) -> {shown}"
        return f"{input!r} -> {shown}"


@dataclass(frozen=True, slots=True)
class Read:
    """Read the register; the output is its value."""


@dataclass(frozen=True, slots=True)
class Write:
    """Write `value` into the register."""

    value: Hashable


@dataclass(frozen=True, slots=True)
class CompareAndSet:
    """If the register holds `expected`, set it to `new`; output: bool success."""

    expected: Hashable
    new: Hashable


RegisterInput = Read | Write | CompareAndSet


class RegisterModel(Model[Hashable]):
    """One register holding `initial` at first; one partition."""

    def __init__(self, initial: Hashable = None) -> None:
        """A register whose value before any write is `initial`."""
        self.initial: Final = initial

    def init(self) -> Hashable:
        """The initial value."""
        return self.initial

    def step(self, state: Hashable, input: object, output: object) -> tuple[bool, Hashable]:
        """Apply one register input; raises ValueError for an unknown input."""
        unknown = output is PENDING
        match input:
            case Write(value=value):
                return True, value
            case Read():
                return unknown or output == state, state
            case CompareAndSet(expected=expected, new=new):
                success = state == expected
                if not unknown and output != success:
                    return False, state
                return True, new if success else state
        raise ValueError(f"RegisterModel does not know input {input!r}")

    def is_read_only(self, input: object, output: object) -> bool:
        """Reads, and compare-and-sets known to have failed, never change the register."""
        return isinstance(input, Read) or (isinstance(input, CompareAndSet) and output is False)

    def describe(self, input: object, output: object) -> str:
        """E.g. `write(1)`, `read() -> 1`, `cas(1, 2) -> False`."""
        shown = "?" if output is PENDING else repr(output)
        match input:
            case Write(value=value):
                return f"write({value!r})"
            case Read():
                return f"read() -> {shown}"
            case CompareAndSet(expected=expected, new=new):
                return f"cas({expected!r}, {new!r}) -> {shown}"
        return f"{input!r} -> {shown}"
