"""The history format and its recorder."""

from __future__ import annotations

import pickle

import pytest

from synod.checker.history import (
    PENDING,
    HistoryError,
    HistoryFullError,
    HistoryRecorder,
    Operation,
)


def test_operation_rejects_return_before_call() -> None:
    with pytest.raises(HistoryError, match="before its call"):
        Operation(client_id=1, call_time=10, return_time=9, input="x")


def test_pending_operation_has_pending_effective_output() -> None:
    pending = Operation(client_id=1, call_time=10, return_time=None, input="x", output=5)
    done = Operation(client_id=1, call_time=10, return_time=10, input="x", output=None)
    assert pending.is_pending and pending.effective_output is PENDING
    assert not done.is_pending and done.effective_output is None


def test_pending_is_a_singleton_that_survives_pickling() -> None:
    assert pickle.loads(pickle.dumps(PENDING)) is PENDING
    assert repr(PENDING) == "PENDING"


def test_recorder_records_completed_and_open_calls_in_invocation_order() -> None:
    recorder = HistoryRecorder(operations_max=10)
    first = recorder.invoke(client_id=1, input="put", now=5)
    second = recorder.invoke(client_id=2, input="get", now=6)
    recorder.complete(second, output="value", now=8)
    assert len(recorder) == 2
    assert recorder.history() == [
        Operation(1, 5, None, "put", None),
        Operation(2, 6, 8, "get", "value"),
    ]
    recorder.complete(first, output="ok", now=9)
    assert recorder.history()[0] == Operation(1, 5, 9, "put", "ok")


def test_recorder_bound_is_a_clear_error() -> None:
    recorder = HistoryRecorder(operations_max=2)
    recorder.invoke(1, "a", 0)
    recorder.invoke(1, "b", 0)
    with pytest.raises(HistoryFullError, match="operations_max=2"):
        recorder.invoke(1, "c", 0)
    with pytest.raises(ValueError):
        HistoryRecorder(operations_max=0)


def test_recorder_rejects_bad_handles_and_double_completion() -> None:
    recorder = HistoryRecorder()
    handle = recorder.invoke(1, "a", 0)
    recorder.complete(handle, None, 1)
    with pytest.raises(HistoryError, match="already completed"):
        recorder.complete(handle, None, 2)
    with pytest.raises(HistoryError, match="unknown operation handle"):
        recorder.complete(7, None, 2)


def test_recorder_rejects_time_running_backwards() -> None:
    recorder = HistoryRecorder()
    handle = recorder.invoke(1, "a", 10)
    with pytest.raises(HistoryError, match="backwards"):
        recorder.complete(handle, None, 9)
    with pytest.raises(HistoryError, match="backwards"):
        recorder.invoke(2, "b", 3)
