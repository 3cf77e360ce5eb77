"""The event-loop lag probe (synod.node.looplag) and its metrics."""

from __future__ import annotations

import asyncio
import time

import pytest

from synod.node.looplag import lag_ms, run_probe
from synod.node.metrics import NodeMetrics
from tests.waiting import async_wait_until

WAIT_S_MAX = 10.0


@pytest.mark.parametrize(
    ("asked_ms", "slept_ms", "expected_ms"),
    [(10, 10, 0.0), (10, 12.5, 2.5), (10, 9.9, 0.0), (10, 610, 600.0), (0, 0, 0.0)],
)
def test_lag_is_the_lateness_of_a_wakeup(
    asked_ms: float, slept_ms: float, expected_ms: float
) -> None:
    assert lag_ms(asked_ms, slept_ms) == pytest.approx(expected_ms)


def test_a_blocked_loop_shows_as_lag_and_as_the_maximum() -> None:
    """The loop is blocked for 300 ms by synchronous work (what a snapshot built on
    the loop used to do): the probe reports it, measured with the real clock."""
    metrics = NodeMetrics(1)
    seen: list[float] = []

    def on_lag(lag_s: float) -> None:
        seen.append(lag_s)
        metrics.observe_loop_lag(lag_s)

    async def scenario() -> None:
        probe = asyncio.create_task(run_probe(on_lag, interval_ms=5))
        await async_wait_until(lambda: seen, WAIT_S_MAX, "the probe's first wake-up")
        count = len(seen)
        blocked_until = time.monotonic() + 0.3
        while time.monotonic() < blocked_until:  # Synchronous work, on purpose.
            pass
        await async_wait_until(lambda: len(seen) > count, WAIT_S_MAX, "a wake-up after it")
        probe.cancel()

    asyncio.run(scenario())
    assert max(seen) >= 0.25
    text = metrics.render().decode()
    max_line = next(
        line for line in text.splitlines() if line.startswith("synod_event_loop_lag_max")
    )
    assert float(max_line.split()[-1]) == max(seen)
    assert "synod_event_loop_lag_seconds_bucket" in text
