"""The gossip simulator tier: many seeds checked for completeness, accuracy,
convergence and monotonic incarnations; replay is exact; the checks catch the
known-bad variants (refutation off; Lifeguard off under CPU starvation) and
known-bad histories."""

from __future__ import annotations

from dataclasses import replace

import pytest

from synod.gossip import sim
from synod.gossip.invariants import History, check, figures, percentile
from synod.gossip.settings import GossipSettings
from synod.gossip.state import EventKind, MembershipEvent, MemberState

SWEEP_SEEDS = 24  # Seeds over the three sizes; each run simulates ~80 s of its cluster.


@pytest.mark.parametrize("members", [5, 12, 20])
def test_seed_sweep_keeps_every_invariant(members: int) -> None:
    detections = []
    for seed in range(1, SWEEP_SEEDS // 3 + 1):
        result = sim.run(sim.random_scenario(seed * 31 + members, members))
        assert result.violations == [], (result.scenario.describe(), result.violations[:5])
        detections += result.figures.detections_periods
    # Every crash was detected, and within the suspicion bounds (max timeout + a round).
    assert detections and max(detections) <= 6 * 4 + members


def test_fifty_members_under_loss_keep_every_invariant() -> None:
    result = sim.run(sim.random_scenario(3, 50, loss=0.05))
    assert result.violations == [], result.violations[:5]
    assert result.figures.detections_periods
    assert result.join_converged_ms is not None


def test_a_seed_replays_exactly() -> None:
    first = sim.run(sim.random_scenario(11, 10))
    second = sim.run(sim.random_scenario(11, 10))
    assert first.packets == second.packets
    assert first.figures == second.figures
    assert first.join_converged_ms == second.join_converged_ms


def _starved(seed: int, settings: GossipSettings, members: int = 10) -> sim.Scenario:
    scenario = sim.random_scenario(seed, members, loss=0.0, settings=settings, faults=False)
    scenario.starves = [sim.Starve(scenario.names[-1 - i], 3000, 23_000, 1200) for i in range(2)]
    return scenario


def test_refutation_disabled_is_caught() -> None:
    bad = replace(GossipSettings(), refute=False)
    caught = [sim.run(_starved(seed, bad)).violations for seed in range(1, 4)]
    assert all(caught), "the known-bad variant passed the checks"
    assert any("convergence" in v for violations in caught for v in violations)


def test_lifeguard_off_under_starvation_is_caught_and_lifeguard_on_is_not() -> None:
    on, off = GossipSettings(), GossipSettings(lifeguard=False)
    suspicions_on = suspicions_off = 0
    caught = []
    for seed in range(1, 5):
        with_lifeguard, without = sim.run(_starved(seed, on)), sim.run(_starved(seed, off))
        assert with_lifeguard.violations == [], with_lifeguard.violations[:3]
        caught += [v for v in without.violations if v.startswith("accuracy")]
        suspicions_on += with_lifeguard.figures.false_suspicions
        suspicions_off += without.figures.false_suspicions
    # Without Lifeguard the starved members keep accusing healthy ones, and some die.
    assert caught, "the known-bad variant (Lifeguard off under starvation) passed"
    assert 2 * suspicions_on < suspicions_off


def test_the_cli_prints_its_seed_and_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim.main(["--members", "5", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert "gossip-sim: seed=4 members=5" in out and "| detect p50 |" in out
    assert sim.main(["--members", "6", "--seed", "1", "--no-refute", "--loss", "0"]) in (0, 1)


# --- the checker on known-bad histories ----------------------------------------------


def _event(kind: EventKind, name: str, incarnation: int, at_ms: int) -> MembershipEvent:
    return MembershipEvent(kind, name, incarnation, at_ms, source="a", suspected_by="a")


def _history(**changes: object) -> History:
    history = History(["a", "b", "c"], 1000, 60_000, 60_000, False, {"c": 10_000}, set())
    history.final_states = {name: {"a": MemberState.ALIVE, "b": MemberState.ALIVE,
                                   "c": MemberState.DEAD} for name in ("a", "b")}  # fmt: skip
    history.record("a", _event(EventKind.DEAD, "c", 0, 14_000))
    history.record("b", _event(EventKind.DEAD, "c", 0, 14_500))
    for name, value in changes.items():
        setattr(history, name, value)
    return history


def test_the_checker_passes_a_good_history_and_measures_it() -> None:
    history = _history()
    assert check(history) == []
    measured = figures(history)
    assert measured.detections_periods == [4.0]
    assert measured.disseminations_periods == [0.5]
    assert measured.false_deaths == 0


def test_the_checker_catches_a_crashed_member_still_held_alive() -> None:
    history = _history()
    history.final_states["b"]["c"] = MemberState.SUSPECT
    assert any(v.startswith("completeness: c") for v in check(history))


def test_the_checker_catches_a_live_member_declared_dead_on_a_clean_network() -> None:
    history = _history()
    history.record("a", _event(EventKind.DEAD, "b", 0, 20_000))
    assert any(v.startswith("accuracy: a declared b") for v in check(history))
    assert figures(history).false_deaths == 1
    history.network_faults = True  # with faults it is a false positive, not a violation
    assert check(history) == []


def test_the_checker_catches_a_live_member_left_dead_at_the_end() -> None:
    history = _history(network_faults=True)
    history.final_states["a"]["b"] = MemberState.DEAD
    assert any(v.startswith("convergence: a holds the live member b dead") for v in check(history))


def test_the_checker_catches_an_incarnation_going_back() -> None:
    history = _history()
    history.record("a", _event(EventKind.REFUTED, "b", 3, 20_000))
    history.record("a", _event(EventKind.SUSPECTED, "b", 2, 21_000))
    assert any(v.startswith("incarnation: a saw b go from 3 back to 2") for v in check(history))


def test_percentile_is_nearest_rank() -> None:
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0
    assert percentile([], 0.5) != percentile([], 0.5)  # NaN
