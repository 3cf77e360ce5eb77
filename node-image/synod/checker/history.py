"""The history format shared by every checker: one `Operation` per client call.

A history is what clients observed: when each call was invoked, when (and
whether) it returned, and what it returned. Times are any monotone integers,
simulator ticks or `time.monotonic_ns()`, as long as one history uses one clock.

An operation whose client never got an answer (timeout, crash, partition) has
`return_time=None`: it may or may not have taken effect, at any moment after
its call. Checkers treat it as returning at +infinity with an unknown output,
which is exactly "took effect at some point, or never".

Only record operations whose outcome is acknowledged or unknown. A call that
definitely failed without effect (e.g. a 409 before any write) should either be
recorded with its real output (a failed compare is an output) or left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Default bound on operations kept by one recorder; a chaos run of a few minutes
# records tens of thousands, and a runaway workload must fail loudly, not swap.
OPERATIONS_MAX_DEFAULT: Final = 1_000_000


class _Pending:
    """Type of `PENDING`: the output of an operation that never returned."""

    _instance: _Pending | None = None

    def __new__(cls) -> _Pending:
        # A singleton, so that `output is PENDING` is the one test models need.
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "PENDING"

    def __reduce__(self) -> str:
        return "PENDING"


PENDING: Final = _Pending()
"""Output a model's `step` receives for an operation whose outcome is unknown.

It is a sentinel and not None because None is a real output (a `Get` of an
absent key returns None)."""


class HistoryError(ValueError):
    """A history is malformed (time runs backwards, unknown handle, ...)."""


class HistoryFullError(HistoryError):
    """A recorder reached its `operations_max` bound."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One client call as the client saw it.

    `output` is meaningless when `return_time` is None. `input` and `output` are
    opaque here; the model of the checked system interprets them.

    Raises HistoryError (from construction) when return_time < call_time.
    """

    client_id: int
    call_time: int
    return_time: int | None
    input: object
    output: object = None

    def __post_init__(self) -> None:
        if self.return_time is not None and self.return_time < self.call_time:
            raise HistoryError(
                f"operation of client {self.client_id} returns at {self.return_time} "
                f"before its call at {self.call_time}"
            )

    @property
    def is_pending(self) -> bool:
        """True when the client never got an answer."""
        return self.return_time is None

    @property
    def effective_output(self) -> object:
        """The output a checker must use: `PENDING` when the call never returned."""
        return PENDING if self.return_time is None else self.output


@dataclass(slots=True)
class _OpenCall:
    """A call recorded by `HistoryRecorder.invoke`, possibly completed since."""

    client_id: int
    call_time: int
    input: object
    return_time: int | None = None
    output: object = None


class HistoryRecorder:
    """Records calls and returns as they happen; not thread-safe (one event loop).

    Handles are small integers, valid for the recorder that issued them.
    """

    def __init__(self, operations_max: int = OPERATIONS_MAX_DEFAULT) -> None:
        """Create an empty recorder; raises ValueError if operations_max < 1."""
        if operations_max < 1:
            raise ValueError(f"operations_max must be >= 1, got {operations_max}")
        self.operations_max: Final = operations_max
        self._calls: list[_OpenCall] = []
        self._last_time: int | None = None

    def __len__(self) -> int:
        return len(self._calls)

    def invoke(self, client_id: int, input: object, now: int) -> int:
        """Record that `client_id` called with `input` at `now`; return a handle.

        Raises HistoryFullError when `operations_max` operations are recorded, and
        HistoryError when `now` is earlier than a time recorded before.
        """
        if len(self._calls) >= self.operations_max:
            raise HistoryFullError(
                f"history holds operations_max={self.operations_max} operations; "
                "raise the bound or record a shorter run"
            )
        self._advance_clock(now)
        self._calls.append(_OpenCall(client_id=client_id, call_time=now, input=input))
        handle = len(self._calls) - 1
        assert 0 <= handle < self.operations_max
        return handle

    def complete(self, handle: int, output: object, now: int) -> None:
        """Record that the call behind `handle` returned `output` at `now`.

        Raises HistoryError for an unknown or already completed handle, or when
        `now` is earlier than a time recorded before.
        """
        if not 0 <= handle < len(self._calls):
            raise HistoryError(f"unknown operation handle {handle}")
        call = self._calls[handle]
        if call.return_time is not None:
            raise HistoryError(f"operation handle {handle} already completed")
        self._advance_clock(now)
        assert now >= call.call_time, "clock is monotone and the call was recorded"
        call.return_time = now
        call.output = output

    def history(self) -> list[Operation]:
        """Every recorded operation in invocation order; open calls get return_time None."""
        operations = [
            Operation(
                client_id=call.client_id,
                call_time=call.call_time,
                return_time=call.return_time,
                input=call.input,
                output=call.output,
            )
            for call in self._calls
        ]
        assert len(operations) <= self.operations_max
        return operations

    def _advance_clock(self, now: int) -> None:
        """Raise HistoryError if `now` runs backwards; one recorder uses one clock."""
        if self._last_time is not None and now < self._last_time:
            raise HistoryError(f"time runs backwards: {now} after {self._last_time}")
        self._last_time = now
