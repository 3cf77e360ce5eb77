"""The simulator's ids workload: embedded snowflake generators on clients, worker ids
leased through Raft under crashes, partitions, pauses and snapshots.

The sim's runs are short against lease TTLs (>= 1 s), so worker ids are rarely
re-leased here; the re-leasing races are proven by tests/unit/test_services_ids.py
(model run, mutation-checked) and tests/cluster/test_ids.py."""

from __future__ import annotations

from synod.sim.simulator import SimOptions, Simulation

OPTIONS = SimOptions(ids_probability=0.3)
SEEDS = 30


def test_ids_workload_issues_unique_ids_under_faults() -> None:
    issued = acquired = 0
    for seed in range(1, SEEDS + 1):  # bound: SEEDS
        sim = Simulation(seed, OPTIONS)
        result = sim.run()
        assert result.violation is None, (seed, result.violation)
        issued += result.ids_issued
        acquired += sim.ids.acquired
    assert issued > 100 and acquired > 10
