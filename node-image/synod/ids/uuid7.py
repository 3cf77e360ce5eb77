"""UUIDv7 (RFC 9562 section 5.7), monotonic within a generator (section 6.2, method 1).

Layout (big-endian, 128 bits): 48 bits of unix milliseconds, 4 bits of version (7),
12 bits ``rand_a``, 2 bits of variant (0b10), 62 bits ``rand_b``. Method 1 ("fixed
bit-length dedicated counter"): the 12 bits of ``rand_a`` and the top 30 bits of
``rand_b`` form a 42-bit counter, seeded at random (top bit clear, so at least 2^41
increments fit) on every new millisecond and incremented within one; the other 32
bits are random per UUID. If the clock stands still or steps back, the generator keeps
its last timestamp and counts on; if the counter would overflow, the timestamp moves
on by one millisecond (section 6.2 allows both). So the UUIDs of one generator
strictly increase, as 128-bit integers and as strings.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["COUNTER_BITS", "Uuid7Decoded", "Uuid7Generator", "decode_uuid7", "uuid7"]

COUNTER_BITS: Final = 42
_RANDOM_BITS: Final = 32  # the low bits of rand_b
_COUNTER_MAX: Final = (1 << COUNTER_BITS) - 1
_TIMESTAMP_MAX: Final = (1 << 48) - 1
# uuid7s per call of Uuid7Generator.next_many.
UUID7_BATCH_MAX: Final = 100_000


@dataclass(frozen=True, slots=True)
class Uuid7Decoded:
    """The parts of a UUIDv7."""

    uuid: str
    timestamp_ms: int
    counter: int  # rand_a and the top 30 bits of rand_b (this module's method 1)
    random: int  # the low 32 bits of rand_b

    def to_dict(self) -> dict[str, int | str]:
        """JSON-able form. Raises nothing."""
        return {"uuid": self.uuid, "timestamp_ms": self.timestamp_ms, "counter": self.counter,
                "random": self.random}  # fmt: skip


def _default_random(bits: int) -> int:
    return int.from_bytes(os.urandom((bits + 7) // 8), "big") & ((1 << bits) - 1)


class Uuid7Generator:
    """A monotonic UUIDv7 source; thread-safe."""

    def __init__(
        self,
        clock_ms: Callable[[], int] | None = None,
        random_bits: Callable[[int], int] | None = None,
    ) -> None:
        """``clock_ms`` gives unix ms (default time.time_ns); ``random_bits(n)`` n
        random bits (default os.urandom). Raises nothing."""
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._random = random_bits or _default_random
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0
        assert self._last_ms < 0

    def next_int(self) -> int:
        """The next UUID as a 128-bit integer. Raises ValueError if the clock is
        outside 48 bits."""
        with self._lock:
            now_ms = self._clock_ms()
            if not 0 <= now_ms <= _TIMESTAMP_MAX:
                raise ValueError(f"clock {now_ms} ms does not fit 48 bits")
            if now_ms > self._last_ms:
                self._last_ms = now_ms
                self._counter = self._random(COUNTER_BITS - 1)  # top bit clear
            elif self._counter < _COUNTER_MAX:
                self._counter += 1  # same or earlier millisecond: count on
            else:
                self._last_ms += 1  # counter overflow: borrow the next millisecond
                self._counter = self._random(COUNTER_BITS - 1)
            timestamp_ms, counter = self._last_ms, self._counter
        rand_a = counter >> 30
        rand_b = ((counter & ((1 << 30) - 1)) << _RANDOM_BITS) | self._random(_RANDOM_BITS)
        value = (timestamp_ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
        assert value >> 128 == 0 and (value >> 76) & 0xF == 7
        return value

    def next(self) -> str:
        """The next UUID in canonical text form. Raises ValueError (see next_int)."""
        return str(uuid.UUID(int=self.next_int()))

    def next_many(self, count: int) -> list[str]:
        """``count`` (1..UUID7_BATCH_MAX) increasing UUIDs. Raises ValueError."""
        if not 1 <= count <= UUID7_BATCH_MAX:
            raise ValueError(f"count must be in [1, {UUID7_BATCH_MAX}]")
        out = [self.next() for _ in range(count)]
        assert len(out) == count
        return out


def decode_uuid7(text: str | uuid.UUID) -> Uuid7Decoded:
    """The parts of a UUIDv7. Raises ValueError if it is not a UUID of version 7 and
    variant RFC 9562."""
    value = text if isinstance(text, uuid.UUID) else uuid.UUID(str(text))
    if value.version != 7 or value.variant != uuid.RFC_4122:
        raise ValueError(f"{value} is not a UUIDv7")
    number = value.int
    rand_a = (number >> 64) & 0xFFF
    rand_b = number & ((1 << 62) - 1)
    counter = (rand_a << 30) | (rand_b >> _RANDOM_BITS)
    decoded = Uuid7Decoded(str(value), number >> 80, counter, rand_b & 0xFFFFFFFF)
    assert decoded.timestamp_ms <= _TIMESTAMP_MAX
    return decoded


_DEFAULT = Uuid7Generator()


def uuid7() -> str:
    """A UUIDv7 from this process's shared monotonic generator. Raises ValueError only
    for a clock outside 48 bits."""
    return _DEFAULT.next()
