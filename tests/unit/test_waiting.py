"""The condition-wait helpers every test uses instead of sleeping."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.waiting import async_wait_until, wait_until


def test_returns_the_first_truthy_value() -> None:
    polls = itertools.count(1)
    assert wait_until(lambda: max(0, next(polls) - 2), 5.0, "the third poll") == 1


def test_times_out_naming_what_it_waited_for_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"waiting for the moon \(last: \[\]\)"):
        wait_until(lambda: [], 0.05, "the moon")


def test_async_wait_lets_the_loop_run_until_the_condition_holds() -> None:
    async def main() -> str:
        event = asyncio.Event()
        asyncio.get_running_loop().call_soon(event.set)
        assert await async_wait_until(event.is_set, 5.0, "the event") is True
        with pytest.raises(AssertionError, match="waiting for nothing"):
            await async_wait_until(lambda: None, 0.05, "nothing")
        return "done"

    assert asyncio.run(main()) == "done"


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(AssertionError):
        wait_until(lambda: True, 0.0, "no time at all")
