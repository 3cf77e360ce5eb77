"""Checker for generated IDs: global uniqueness and per-generator monotonic order.

Each `IssuedId` is one ID a client received, with the interval of the call that
produced it. Order is judged in real time, like linearizability: if one call
returned strictly before another call to the same generator began, the second
ID must be strictly larger. Concurrent calls may return IDs in either order.
A single sequential client per generator thus checks plain issue order.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Final

from synod.checker.report import VIOLATIONS_MAX_DEFAULT, Report, ViolationLog

IDS_MAX_DEFAULT: Final = 10_000_000

DUPLICATE_ID: Final = "duplicate-id"
ORDER: Final = "order"

IdValue = int | str  # Snowflake and segment IDs are ints; UUIDv7 compare as strings.


@dataclass(frozen=True, slots=True)
class IssuedId:
    """`value`, received from `generator` by a call over [call_time..return_time].

    Raises ValueError (from construction) when return_time < call_time.
    """

    generator: Hashable
    value: IdValue
    call_time: int
    return_time: int

    def __post_init__(self) -> None:
        if self.return_time < self.call_time:
            raise ValueError(f"{self}: returns before its call")

    def __str__(self) -> str:
        return f"{self.value!r} from {self.generator!r} [{self.call_time}..{self.return_time}]"


def check_ids(
    issued: Sequence[IssuedId],
    *,
    ids_max: int = IDS_MAX_DEFAULT,
    violations_max: int = VIOLATIONS_MAX_DEFAULT,
) -> Report:
    """Check that all values are unique and each generator's values grow in real time.

    Violations: `duplicate-id` (a value was issued twice, by any generators) and
    `order` (a call to a generator that began strictly after another call to it
    returned got a value that is not larger).

    Raises ValueError when there are more than ids_max records, violations_max < 1,
    or one generator mixes int and str values.
    """
    if len(issued) > ids_max:
        raise ValueError(f"{len(issued)} ids exceed ids_max={ids_max}")
    log = ViolationLog(violations_max)
    first_with_value: dict[IdValue, IssuedId] = {}
    by_generator: dict[Hashable, list[IssuedId]] = {}
    for record in issued:  # bound: ids_max
        if record.value in first_with_value:
            log.add(DUPLICATE_ID, f"{record} duplicates {first_with_value[record.value]}")
        else:
            first_with_value[record.value] = record
        by_generator.setdefault(record.generator, []).append(record)
    for generator, records in by_generator.items():  # bound: ids_max
        if len({type(r.value) for r in records}) > 1:
            raise ValueError(f"generator {generator!r} mixes int and str values")
        _check_order(records, log)
    report = log.report(len(issued))
    assert report.checked_count == len(issued)
    return report


def _check_order(records: Sequence[IssuedId], log: ViolationLog) -> None:
    """Each call must exceed the largest value returned strictly before it began."""
    by_return = sorted(records, key=lambda r: r.return_time)
    returned_count = 0  # Prefix of by_return that returned before the current call.
    largest_returned: IssuedId | None = None
    for record in sorted(records, key=lambda r: r.call_time):  # bound: len(records)
        while (  # bound: len(by_return), the pointer only advances
            returned_count < len(by_return)
            and by_return[returned_count].return_time < record.call_time
        ):
            candidate = by_return[returned_count]
            if largest_returned is None or _larger(candidate.value, largest_returned.value):
                largest_returned = candidate
            returned_count += 1
        if largest_returned is not None and not _larger(record.value, largest_returned.value):
            log.add(ORDER, f"{record} is not larger than {largest_returned}, returned before")
    assert returned_count <= len(records)


def _larger(a: IdValue, b: IdValue) -> bool:
    """a > b for two values of one generator (same type, checked by the caller)."""
    assert type(a) is type(b)
    return a > b  # type: ignore[operator]
