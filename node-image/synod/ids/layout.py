"""The snowflake bit layout: time | worker | sequence in a positive signed 64-bit int.

An ID is ``(ms - epoch_ms) << (worker_bits + sequence_bits) | worker << sequence_bits |
sequence``. The default layout is Twitter's: 41 bits of milliseconds since the epoch
(69 years), 10 bits of worker id, 12 bits of sequence (4,096 IDs per worker per ms).
Every layout is validated to fit 63 bits, so IDs are positive in every language's
signed 64-bit integer, and IDs of one layout sort by time first.

Pure: no clock, no I/O. This module is a leaf (it imports no other synod module).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "EPOCH_MS_DEFAULT",
    "ID_BITS_MAX",
    "WORKER_BITS_MAX",
    "Decoded",
    "Layout",
]

# 2024-01-01T00:00:00Z: the default epoch of every generator.
EPOCH_MS_DEFAULT: Final = 1_704_067_200_000
# IDs are positive signed 64-bit integers.
ID_BITS_MAX: Final = 63
# The worker id space of one generator is at most 2^16 (the service scans it to pick
# a free id, so it stays bounded).
WORKER_BITS_MAX: Final = 16
# Unix milliseconds beyond this are refused (year 2255): epochs and clocks are sane.
UNIX_MS_MAX: Final = 2**53


@dataclass(frozen=True, slots=True)
class Decoded:
    """The parts of a snowflake ID."""

    id: int
    timestamp_ms: int  # unix milliseconds
    worker: int
    sequence: int

    def to_dict(self) -> dict[str, int]:
        """JSON-able form. Raises nothing."""
        return {"id": self.id, "timestamp_ms": self.timestamp_ms, "worker": self.worker,
                "sequence": self.sequence}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Layout:
    """Bits of time, worker and sequence and the epoch; validated on construction."""

    time_bits: int = 41
    worker_bits: int = 10
    sequence_bits: int = 12
    epoch_ms: int = EPOCH_MS_DEFAULT

    def __post_init__(self) -> None:
        """Raises ValueError naming the misfit (a bit count below 1, worker bits above
        WORKER_BITS_MAX, more than 63 bits in all, an epoch outside [0, 2^53))."""
        for name in ("time_bits", "worker_bits", "sequence_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, not {value!r}")
        if self.worker_bits > WORKER_BITS_MAX:
            raise ValueError(f"worker_bits must be <= {WORKER_BITS_MAX}")
        total = self.time_bits + self.worker_bits + self.sequence_bits
        if total > ID_BITS_MAX:
            raise ValueError(
                f"time_bits + worker_bits + sequence_bits = {total} exceeds {ID_BITS_MAX}: "
                "IDs must be positive signed 64-bit integers"
            )
        if not isinstance(self.epoch_ms, int) or not 0 <= self.epoch_ms < UNIX_MS_MAX:
            raise ValueError(
                f"epoch_ms must be unix milliseconds in [0, 2^53), not {self.epoch_ms}"
            )

    @property
    def worker_max(self) -> int:
        """The largest worker id. Raises nothing."""
        return (1 << self.worker_bits) - 1

    @property
    def sequence_max(self) -> int:
        """The largest sequence number within one millisecond. Raises nothing."""
        return (1 << self.sequence_bits) - 1

    @property
    def last_ms(self) -> int:
        """The last unix millisecond this layout can encode. Raises nothing."""
        return self.epoch_ms + (1 << self.time_bits) - 1

    @property
    def time_shift(self) -> int:
        """Bit position of the time field. Raises nothing."""
        return self.worker_bits + self.sequence_bits

    def base(self, timestamp_ms: int, worker: int) -> int:
        """The ID of sequence 0 at ``timestamp_ms`` for ``worker``: the IDs of that
        millisecond are ``base .. base + sequence_max``, consecutive integers.

        Raises ValueError if the time or worker is out of the layout's range."""
        if not self.epoch_ms <= timestamp_ms <= self.last_ms:
            raise ValueError(
                f"timestamp {timestamp_ms} ms is outside this layout's range "
                f"[{self.epoch_ms}, {self.last_ms}]"
            )
        if not 0 <= worker <= self.worker_max:
            raise ValueError(f"worker {worker} is outside [0, {self.worker_max}]")
        value = ((timestamp_ms - self.epoch_ms) << self.time_shift) | (worker << self.sequence_bits)
        assert 0 <= value < 2**ID_BITS_MAX
        return value

    def encode(self, timestamp_ms: int, worker: int, sequence: int) -> int:
        """The ID of those parts. Raises ValueError if a part is out of range."""
        if not 0 <= sequence <= self.sequence_max:
            raise ValueError(f"sequence {sequence} is outside [0, {self.sequence_max}]")
        value = self.base(timestamp_ms, worker) | sequence
        assert self.decode(value).sequence == sequence
        return value

    def decode(self, value: int) -> Decoded:
        """The parts of ``value``. Raises ValueError for a value outside this layout
        (negative, or wider than its bits)."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"an ID is an integer, not {value!r}")
        bits = self.time_bits + self.worker_bits + self.sequence_bits
        if not 0 <= value < (1 << bits):
            raise ValueError(f"{value} is not an ID of a {bits}-bit layout")
        sequence = value & self.sequence_max
        worker = (value >> self.sequence_bits) & self.worker_max
        timestamp_ms = (value >> self.time_shift) + self.epoch_ms
        assert timestamp_ms <= self.last_ms
        return Decoded(value, timestamp_ms, worker, sequence)

    def to_dict(self) -> dict[str, int]:
        """The msgpack/JSON form (the service and the API carry it). Raises nothing."""
        return {"time_bits": self.time_bits, "worker_bits": self.worker_bits,
                "sequence_bits": self.sequence_bits, "epoch_ms": self.epoch_ms}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Layout:
        """Inverse of :meth:`to_dict`; missing fields take the defaults.

        Raises ValueError for unknown fields or an invalid layout."""
        unknown = set(data) - {"time_bits", "worker_bits", "sequence_bits", "epoch_ms"}
        if unknown:
            raise ValueError(f"unknown layout fields {sorted(unknown)}")
        return cls(**data)
