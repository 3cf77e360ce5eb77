"""Unique IDs: snowflake layouts and generators, UUIDv7, segment buffers (pure).

Everything here is sans-I/O and importable by the nodes, the SDK and the CLI::

    from synod.ids import uuid7, Layout
    print(uuid7())                      # a monotonic RFC 9562 UUIDv7
    print(Layout().decode(1234567890123456789))

The replicated side (worker leases, high-water marks, segment ``max_id``) is
:mod:`synod.services.ids`; the guarantees are explained in docs/ids.md.
"""

from synod.ids.layout import EPOCH_MS_DEFAULT, Decoded, Layout
from synod.ids.segment import Segment, SegmentBuffer, SegmentExhausted, StepPolicy
from synod.ids.snowflake import (
    BATCH_COUNT_MAX,
    ROLLBACK_WAIT_MS_MAX_DEFAULT,
    Clock,
    ClockRollback,
    IdsError,
    SnowflakeGenerator,
    SystemClock,
    WorkerGrant,
    WorkerLeaseLost,
    grant_from_answer,
)
from synod.ids.uuid7 import Uuid7Decoded, Uuid7Generator, decode_uuid7, uuid7

__all__ = [
    "BATCH_COUNT_MAX",
    "EPOCH_MS_DEFAULT",
    "ROLLBACK_WAIT_MS_MAX_DEFAULT",
    "Clock",
    "ClockRollback",
    "Decoded",
    "IdsError",
    "Layout",
    "Segment",
    "SegmentBuffer",
    "SegmentExhausted",
    "SnowflakeGenerator",
    "StepPolicy",
    "SystemClock",
    "Uuid7Decoded",
    "Uuid7Generator",
    "WorkerGrant",
    "WorkerLeaseLost",
    "decode",
    "decode_uuid7",
    "grant_from_answer",
    "uuid7",
]


def decode(value: int | str, layout: Layout | None = None) -> Decoded | Uuid7Decoded:
    """Decode a snowflake ID (an int, or its decimal text) with ``layout`` (default:
    the default layout) or a UUIDv7 (text with dashes). Raises ValueError."""
    if isinstance(value, str) and "-" in value:
        return decode_uuid7(value)
    number = int(value)
    return (layout or Layout()).decode(number)
