"""The event-loop lag probe: how late the loop runs a callback that is due.

A task sleeps `interval_ms` and measures how much later than asked it woke: that
delay is what every request, tick and heartbeat of the member waited on top of
its own work (a snapshot built on the loop, a full garbage collection, a long
apply). The maths is pure (`lag_ms`); `run_probe` is the asyncio adapter.
Exported as `synod_event_loop_lag_seconds` (histogram) and
`synod_event_loop_lag_max_seconds` (the largest since start), which `make bench`
scrapes around each timed run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

PROBE_INTERVAL_MS = 10  # How often the probe asks to be woken.


def lag_ms(asked_ms: float, slept_ms: float) -> float:
    """The lateness of one wake-up: asked to sleep `asked_ms`, slept `slept_ms`
    (never negative: an early wake-up, which coarse clocks allow, counts as none)."""
    assert asked_ms >= 0 and slept_ms >= 0
    return max(0.0, slept_ms - asked_ms)


async def run_probe(
    on_lag: Callable[[float], None],
    interval_ms: int = PROBE_INTERVAL_MS,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Forever: sleep `interval_ms`, report the lateness in seconds to `on_lag`.
    Cancel the task to stop it."""
    assert interval_ms > 0
    while True:  # Ends by cancellation with its member.
        started = clock()
        await asyncio.sleep(interval_ms / 1000)
        on_lag(lag_ms(interval_ms, (clock() - started) * 1000) / 1000)
