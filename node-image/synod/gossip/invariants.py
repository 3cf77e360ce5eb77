"""Checks and figures over a gossip history (the simulator's and the process tier's).

A history is what the members reported: every membership event with the observer
and the time, plus the ground truth the harness knows (who crashed when, who was
unreliable (starved) and whether the network dropped packets (loss or cuts). Checks:

- completeness: no member alive at the end still holds a crashed member alive or
  suspect (it was declared dead, or never heard of);
- accuracy: on a network without loss or cuts, a member that never crashed and was
  never starved is never declared dead (with faults such deaths are counted as
  false positives, not violations);
- convergence: once the faults are over and the run has calmed, every live member
  knows every other live member and holds it alive (a false death was refuted);
- monotonic incarnations: what one observer reports of one subject never goes back.

Figures: detection time (crash to the first death declaration), dissemination time
(first declaration to the last live member knowing), false positives per member-hour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from synod.gossip.state import EventKind, MembershipEvent, MemberState

HISTORY_EVENTS_MAX = 5_000_000  # One simulated run records at most this many events.
_GONE = MemberState.DEAD  # What an observer that never heard of a member holds it as.


@dataclass(frozen=True, slots=True)
class Observation:
    """One membership event as one observer reported it."""

    observer: str
    event: MembershipEvent


@dataclass(slots=True)
class History:
    """Events plus the ground truth of one run."""

    members: list[str]
    probe_interval_ms: int
    end_ms: int
    faults_end_ms: int  # Loss stopped here: false positives are per member-hour until then.
    network_faults: bool
    crashed_ms: dict[str, int] = field(default_factory=dict)
    unreliable: set[str] = field(default_factory=set)
    observations: list[Observation] = field(default_factory=list)
    # observer -> the state it holds each member in at the end of the run
    final_states: dict[str, dict[str, MemberState]] = field(default_factory=dict)

    def record(self, observer: str, event: MembershipEvent) -> None:
        """Append one observation. Raises AssertionError beyond HISTORY_EVENTS_MAX."""
        assert observer in self.members or not self.members
        assert len(self.observations) < HISTORY_EVENTS_MAX, "history over its bound"
        self.observations.append(Observation(observer, event))


@dataclass(frozen=True, slots=True)
class Figures:
    """What one run measured (times in protocol periods)."""

    detections_periods: list[float]
    disseminations_periods: list[float]
    false_deaths: int
    false_suspicions: int
    member_hours: float


def _live_at_end(history: History) -> list[str]:
    return [m for m in history.members if m not in history.crashed_ms]


def check(history: History) -> list[str]:
    """Violations of the invariants, as sentences (empty: the run is correct)."""
    assert history.members and history.end_ms > 0
    violations: list[str] = []
    for name, crash_ms in sorted(history.crashed_ms.items()):
        for observer in _live_at_end(history):
            if history.final_states.get(observer, {}).get(name, _GONE) <= MemberState.SUSPECT:
                violations.append(
                    f"completeness: {name} crashed at {crash_ms} ms but {observer} "
                    f"still holds it alive or suspect at {history.end_ms} ms"
                )
    live = _live_at_end(history)
    for observer in live:
        view = history.final_states.get(observer, {})
        for name in live:
            if name not in view:
                violations.append(f"convergence: {observer} never heard of {name}")
            elif view[name] is not MemberState.ALIVE:
                violations.append(
                    f"convergence: {observer} holds the live member {name} "
                    f"{view[name].name.lower()} at the end ({history.end_ms} ms)"
                )
    reported: dict[tuple[str, str], int] = {}
    for observation in history.observations:
        event = observation.event
        key = (observation.observer, event.name)
        if event.incarnation < reported.get(key, 0):
            violations.append(
                f"incarnation: {observation.observer} saw {event.name} go from "
                f"{reported[key]} back to {event.incarnation} at {event.at_ms} ms"
            )
        reported[key] = max(reported.get(key, 0), event.incarnation)
        if event.kind is not EventKind.DEAD or history.network_faults:
            continue
        crashed_ms = history.crashed_ms.get(event.name)
        alive = crashed_ms is None or event.at_ms < crashed_ms
        if alive and event.name not in history.unreliable:
            violations.append(
                f"accuracy: {observation.observer} declared {event.name} dead at "
                f"{event.at_ms} ms (suspected by {event.suspected_by or '?'}, confirmed by "
                f"{list(event.confirmed_by)}) on a fault-free network while it was alive"
            )
    assert all(isinstance(v, str) for v in violations)
    return violations


def figures(history: History) -> Figures:
    """Detection and dissemination times and false-positive counts of one run."""
    assert history.probe_interval_ms > 0
    period = history.probe_interval_ms
    first_dead: dict[str, int] = {}
    last_dead: dict[str, dict[str, int]] = {}
    false_deaths: set[tuple[str, int]] = set()
    false_suspicions: set[tuple[str, int]] = set()
    for observation in history.observations:
        event = observation.event
        crashed_ms = history.crashed_ms.get(event.name)
        alive = crashed_ms is None or event.at_ms < crashed_ms
        if event.kind is EventKind.DEAD:
            if alive:
                false_deaths.add((event.name, event.incarnation))
            else:
                first_dead.setdefault(event.name, event.at_ms)
                seen = last_dead.setdefault(event.name, {})
                seen.setdefault(observation.observer, event.at_ms)
        elif event.kind is EventKind.SUSPECTED and alive:
            false_suspicions.add((event.name, event.incarnation))
    detections = [
        (first_dead[name] - crashed_ms) / period
        for name, crashed_ms in history.crashed_ms.items()
        if name in first_dead
    ]
    live = _live_at_end(history)
    disseminations = []
    for name, seen in last_dead.items():
        if all(observer in seen for observer in live):
            disseminations.append((max(seen[o] for o in live) - first_dead[name]) / period)
    member_hours = len(history.members) * history.faults_end_ms / 3_600_000
    assert member_hours > 0
    return Figures(detections, disseminations, len(false_deaths), len(false_suspicions),
                   member_hours)  # fmt: skip


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` in 0..1); NaN for no values."""
    assert 0.0 <= fraction <= 1.0
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(math.ceil(fraction * len(ordered)) - 1, 0)
    return ordered[min(rank, len(ordered) - 1)]
