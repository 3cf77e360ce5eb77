"""Wait for a condition, never for a fixed time.

A test that sleeps a fixed time to let something happen is slow when the guess is
generous and flaky when it is not. These helpers poll an observable condition until a
deadline instead, and fail naming what they waited for. The poll interval only bounds
how often the condition is evaluated; it synchronises nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# How often a condition is evaluated: short against every timeout used with it.
POLL_INTERVAL_S = 0.01


def wait_until(
    predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = POLL_INTERVAL_S
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that.

    Raises AssertionError naming ``what`` (and the last value) after ``timeout_s``.
    """
    assert timeout_s > 0 and 0 < interval_s <= timeout_s
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what} (last: {value!r})"
            )
        time.sleep(interval_s)


async def async_wait_until(
    predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = POLL_INTERVAL_S
) -> T:
    """:func:`wait_until` for coroutines: the event loop runs while it waits.

    Raises AssertionError naming ``what`` (and the last value) after ``timeout_s``.
    """
    assert timeout_s > 0 and 0 < interval_s <= timeout_s
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what} (last: {value!r})"
            )
        await asyncio.sleep(interval_s)
