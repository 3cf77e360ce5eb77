"""The simulator's safety checkers must reject hand-made bad histories and logs."""

from __future__ import annotations

import pytest

from synod.raft.types import Entry
from synod.sim.invariants import SafetyMonitor, SafetyViolation


def entries(*spec: tuple[int, int, bytes]) -> list[Entry]:
    return [Entry(term=term, index=index, data=data) for index, term, data in spec]


def test_two_leaders_in_one_term_rejected() -> None:
    monitor = SafetyMonitor()
    monitor.on_leader(1, 5, {})
    monitor.on_leader(1, 5, {})  # The same leader reported twice is fine.
    with pytest.raises(SafetyViolation, match="election safety"):
        monitor.on_leader(2, 5, {})


def test_log_matching_rejects_same_index_and_term_with_other_data() -> None:
    monitor = SafetyMonitor()
    monitor.on_persist(1, entries((2, 1, b"x"), (3, 1, b"y")), prev_term=1)
    monitor.on_persist(2, entries((2, 1, b"x")), prev_term=1)
    with pytest.raises(SafetyViolation, match="log matching"):
        monitor.on_persist(3, entries((3, 1, b"DIFFERENT")), prev_term=1)


def test_log_matching_rejects_different_predecessor() -> None:
    monitor = SafetyMonitor()
    monitor.on_persist(1, entries((3, 2, b"x")), prev_term=2)
    with pytest.raises(SafetyViolation, match="log matching"):
        monitor.on_persist(2, entries((3, 2, b"x")), prev_term=1)


def test_state_machine_safety_rejects_divergent_apply() -> None:
    monitor = SafetyMonitor()
    monitor.on_apply(1, entries((2, 1, b"x"), (3, 1, b"y")))
    monitor.on_apply(2, entries((2, 1, b"x")))
    with pytest.raises(SafetyViolation, match="state machine safety"):
        monitor.on_apply(3, entries((2, 2, b"z")))


def test_leader_completeness_rejects_leader_missing_committed_entry() -> None:
    monitor = SafetyMonitor()
    monitor.on_commit(1, 3, entries((2, 1, b"x"), (3, 1, b"y")))
    monitor.on_leader(2, 2, {2: 1, 3: 1})
    with pytest.raises(SafetyViolation, match="leader completeness"):
        monitor.on_leader(3, 3, {2: 1, 3: 2})


def test_commit_index_never_decreases() -> None:
    monitor = SafetyMonitor()
    monitor.on_commit(1, 5, [])
    with pytest.raises(SafetyViolation, match="went back"):
        monitor.on_commit(1, 4, [])
    monitor.on_hard_state(1, 3, 5)
    with pytest.raises(SafetyViolation, match="persisted"):
        monitor.on_hard_state(1, 3, 4)
    with pytest.raises(SafetyViolation, match="persisted"):
        monitor.on_hard_state(1, 2, 6)
