"""Checker for generated IDs: global uniqueness and per-generator monotonic order.

Each `IssuedId` is one ID a client received, with the interval of the call that
produced it. Order is judged in real time, like linearizability: if one call
returned strictly before another call to the same generator began, the second
ID must be strictly larger. Concurrent calls may return IDs in either order.
A single sequential client per generator thus checks plain issue order.

``namespace`` scopes uniqueness: IDs of different snowflake generators (different
layouts) or different segment tags may coincide as numbers and are not duplicates;
the default namespace ``None`` keeps every record in one space.

Segment mode is checked on the segments themselves (`check_segments`): the segments
of one tag never overlap, and a segment taken after another one was answered starts
above it (dense, increasing IDs per tag).
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Final

from synod.checker.report import VIOLATIONS_MAX_DEFAULT, Report, ViolationLog

IDS_MAX_DEFAULT: Final = 10_000_000

DUPLICATE_ID: Final = "duplicate-id"
ORDER: Final = "order"
SEGMENT_OVERLAP: Final = "segment-overlap"
SEGMENT_ORDER: Final = "segment-order"
SEGMENTS_MAX_DEFAULT: Final = 1_000_000

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
    namespace: Hashable = None  # uniqueness is judged within a namespace

    def __post_init__(self) -> None:
        if self.return_time < self.call_time:
            raise ValueError(f"{self}: returns before its call")

    def __str__(self) -> str:
        return f"{self.value!r} from {self.generator!r} [{self.call_time}..{self.return_time}]"


@dataclass(frozen=True, slots=True)
class TakenSegment:
    """IDs ``start..end`` of ``tag`` answered to a call over [call_time..return_time].

    Raises ValueError (from construction) for an empty segment or a call that returns
    before it began."""

    tag: Hashable
    start: int
    end: int
    call_time: int
    return_time: int

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"{self}: an empty segment")
        if self.return_time < self.call_time:
            raise ValueError(f"{self}: returns before its call")

    def __str__(self) -> str:
        return f"{self.tag!r} {self.start}..{self.end} [{self.call_time}..{self.return_time}]"


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
    first_with_value: dict[tuple[Hashable, IdValue], IssuedId] = {}
    by_generator: dict[Hashable, list[IssuedId]] = {}
    for record in issued:  # bound: ids_max
        key = (record.namespace, record.value)
        if key in first_with_value:
            log.add(DUPLICATE_ID, f"{record} duplicates {first_with_value[key]}")
        else:
            first_with_value[key] = record
        by_generator.setdefault(record.generator, []).append(record)
    for generator, records in by_generator.items():  # bound: ids_max
        if len({type(r.value) for r in records}) > 1:
            raise ValueError(f"generator {generator!r} mixes int and str values")
        _check_order(records, log)
    report = log.report(len(issued))
    assert report.checked_count == len(issued)
    return report


def check_segments(
    taken: Sequence[TakenSegment],
    *,
    segments_max: int = SEGMENTS_MAX_DEFAULT,
    violations_max: int = VIOLATIONS_MAX_DEFAULT,
) -> Report:
    """Check the segments of each tag: no two overlap (`segment-overlap`), and one
    taken by a call that began after another call returned starts above that one's
    end (`segment-order`).

    Raises ValueError when there are more than segments_max records or violations_max
    < 1."""
    if len(taken) > segments_max:
        raise ValueError(f"{len(taken)} segments exceed segments_max={segments_max}")
    log = ViolationLog(violations_max)
    by_tag: dict[Hashable, list[TakenSegment]] = {}
    for segment in taken:  # bound: segments_max
        by_tag.setdefault(segment.tag, []).append(segment)
    for segments in by_tag.values():  # bound: segments_max in all
        ordered = sorted(segments, key=lambda s: (s.start, s.end))
        for low, high in itertools.pairwise(ordered):  # bound: len(segments)
            if high.start <= low.end:
                log.add(SEGMENT_OVERLAP, f"{high} overlaps {low}")
        by_return = sorted(segments, key=lambda s: s.return_time)
        returned, highest = 0, None
        for segment in sorted(segments, key=lambda s: s.call_time):  # bound: len(segments)
            while returned < len(by_return) and by_return[returned].return_time < segment.call_time:
                candidate = by_return[returned]
                if highest is None or candidate.end > highest.end:
                    highest = candidate
                returned += 1
            if highest is not None and segment.start <= highest.end:
                log.add(SEGMENT_ORDER, f"{segment} does not start above {highest}, "
                        "answered before it was asked")  # fmt: skip
    report = log.report(len(taken))
    assert report.checked_count == len(taken)
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
