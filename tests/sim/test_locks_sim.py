"""The lock workload of the simulator: seeds pass with its checkers on, and broken lock
state machines are caught (lost wake-up, tokens that do not grow, unfair queues)."""

from __future__ import annotations

from typing import Any

import pytest

from synod.services.locks import Lock, LockKey, LockTable, Waiter
from synod.sim.simulator import SimOptions, Simulation

# More clients holding leases: queues of two and more waiters are common.
CONTENDED = SimOptions(clients=6, lease_probability=0.4)


def _first_violation(seeds_max: int, options: SimOptions | None = None) -> str | None:
    for seed in range(1, seeds_max + 1):
        result = Simulation(seed, options).run()
        if result.violation:
            return result.violation
    return None


def test_a_contended_sweep_passes() -> None:
    results = [Simulation(seed, CONTENDED).run() for seed in range(1, 11)]
    assert [r.violation for r in results if r.violation] == []


def test_the_lock_workload_passes_and_is_not_vacuous() -> None:
    sims = [Simulation(seed) for seed in range(1, 21)]
    results = [sim.run() for sim in sims]
    assert [r.violation for r in results if r.violation] == []
    assert sum(r.lock_acquisitions for r in results) > 20
    queued = sum(1 for sim in sims for grant in sim.locks.grants.values() if grant[2])
    assert queued > 5  # hand-overs from the FIFO queue happened
    assert sum(len(sim.locks.writes) for sim in sims) > 20


def test_a_release_that_does_not_wake_the_queue_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def settle_without_grant(self: LockTable, key: LockKey) -> None:
        space = self.namespaces[key[0]]
        lock = space.locks[key[1]]
        if not lock.holders and not lock.waiters and not lock.delay_id:
            del space.locks[key[1]]

    monkeypatch.setattr(LockTable, "_settle", settle_without_grant)
    violation = _first_violation(20)
    assert violation is not None and "lost-wakeup" in violation


def test_tokens_that_do_not_grow_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    original = LockTable._grant

    def grant_with_a_fixed_token(self: LockTable, lock: Lock, key: LockKey, want: Waiter) -> Any:
        hold = original(self, lock, key, want)
        hold.token = 1
        return hold

    monkeypatch.setattr(LockTable, "_grant", grant_with_a_fixed_token)
    violation = _first_violation(20)
    assert violation is not None and "token" in violation


def test_a_queue_served_last_come_first_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    original = LockTable._settle

    def settle_lifo(self: LockTable, key: LockKey) -> None:
        lock = self.namespaces[key[0]].locks[key[1]]
        lock.waiters.reverse()
        original(self, key)
        lock.waiters.reverse()

    monkeypatch.setattr(LockTable, "_settle", settle_lifo)
    violation = _first_violation(40, CONTENDED)
    assert violation is not None and "fifo" in violation
