"""A seeded, deterministic gossip simulator: `python -m synod.gossip.sim`.

Members are real `GossipCore`s exchanging encoded datagrams over a simulated network
with latency, loss, partitions (a group cut off from the rest), one-way links (one
direction dropped) and CPU-starved members (they run only in bursts every `lag_ms`
and, when they do, their timers fire before they read their packets: the case
Lifeguard is for). Members join through the first one, a few crash, and the run
continues long enough for every crash to be detected. The history is checked by
`synod.gossip.invariants`; the same seed replays the same run exactly.

    python -m synod.gossip.sim --members 50 --seed 7
    python -m synod.gossip.sim --table          # the report in docs/gossip.md
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sys
import time
from dataclasses import dataclass, field, replace

from synod.gossip.core import GossipCore, push_pull_interval_ms
from synod.gossip.invariants import Figures, History, check, figures, percentile
from synod.gossip.settings import GossipSettings
from synod.gossip.state import Meta
from synod.gossip.suspicion import suspicion_min_timeout_ms

MEMBERS_MIN = 2
MEMBERS_MAX = 500
QUEUE_EVENTS_MAX = 2_000_000  # Pending simulator events (packets and timers) at once.
STEPS_MAX = 50_000_000  # Events one run may process.
LATENCY_MS = (1, 5)  # Uniform one-way network latency.
JOIN_STAGGER_MS = 500
SCENARIO_END_MS = 25_000  # Crashes, cuts and starvation all happen before this.
CONVERGENCE_CHECK_MS = 100  # How often the simulator checks that the joins converged.

_TIMER, _PACKET, _CRASH = 0, 1, 2
KNOWN_BAD = "no Lifeguard (known-bad)"  # Table rows expected to violate accuracy.


@dataclass(frozen=True, slots=True)
class Cut:
    """Packets between `group` and everyone else dropped in [start_ms, end_ms)."""

    group: frozenset[str]
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class OneWay:
    """Packets from `source` to `target` dropped in [start_ms, end_ms)."""

    source: str
    target: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class Starve:
    """`name` runs only every `lag_ms` in [start_ms, end_ms), timers before packets."""

    name: str
    start_ms: int
    end_ms: int
    lag_ms: int


@dataclass(slots=True)
class Scenario:
    """Everything one run does; derived from the seed by `random_scenario`."""

    seed: int
    names: list[str]
    settings: GossipSettings
    loss: float
    end_ms: int
    faults_end_ms: int = 0  # Loss stops here; the rest of the run is calm.
    crashes: dict[str, int] = field(default_factory=dict)
    cuts: list[Cut] = field(default_factory=list)
    one_ways: list[OneWay] = field(default_factory=list)
    starves: list[Starve] = field(default_factory=list)

    def describe(self) -> str:
        """One line naming the faults of this run."""
        parts = [f"members={len(self.names)}", f"loss={self.loss:.0%}"]
        parts.append(f"crashes={sorted(self.crashes.items())}")
        parts += [f"cut={sorted(c.group)}@{c.start_ms}..{c.end_ms}" for c in self.cuts]
        parts += [f"oneway={o.source}->{o.target}@{o.start_ms}..{o.end_ms}" for o in self.one_ways]
        parts += [f"starve={s.name}@{s.start_ms}..{s.end_ms}/{s.lag_ms}ms" for s in self.starves]
        parts.append(f"lifeguard={self.settings.lifeguard} refute={self.settings.refute}")
        return " ".join(parts)

    def unreliable(self) -> set[str]:
        """Members the accuracy check excuses as subjects: the starved ones (a member
        that answers seconds late may rightly be declared dead)."""
        return {s.name for s in self.starves}

    def network_faults(self) -> bool:
        """Loss or cuts: a live member may then be declared dead without a bug (a
        minority side's suspicion can outlive a short cut); counted, not a violation."""
        return self.loss > 0 or bool(self.cuts)


def detect_ms(settings: GossipSettings, members: int) -> int:
    """Time after the last crash within which it must be detected and known: the
    longest suspicion (no confirmations) plus probe rounds to suspect and spread.
    Packet loss lasts until then."""
    assert members >= MEMBERS_MIN
    min_ms = suspicion_min_timeout_ms(settings.suspicion_mult, members, settings.probe_interval_ms)
    detect = settings.suspicion_max_timeout_mult * min_ms + 30 * settings.probe_interval_ms
    assert detect > min_ms
    return detect


def calm_ms(settings: GossipSettings, members: int) -> int:
    """The fault-free end of a run: a suspicion raised just before the loss stopped is
    refuted, and a minority side's stale death that gossip no longer carries (the
    refutation spread while it was cut off) is repaired by a push-pull."""
    assert members >= MEMBERS_MIN
    calm = push_pull_interval_ms(settings.push_pull_interval_ms, members)
    calm += 10 * settings.probe_interval_ms
    assert calm > 0
    return calm


def random_scenario(
    seed: int,
    members: int,
    *,
    loss: float | None = None,
    settings: GossipSettings | None = None,
    faults: bool = True,
) -> Scenario:
    """The run a seed stands for: its faults are drawn from the seed alone."""
    assert MEMBERS_MIN <= members <= MEMBERS_MAX
    rng = random.Random(seed)
    settings = settings or GossipSettings()
    names = [f"m{i:03d}" for i in range(members)]
    if loss is None:
        loss = rng.choice([0.0, 0.0, 0.01, 0.05])
    assert 0.0 <= loss < 1.0
    min_ms = suspicion_min_timeout_ms(settings.suspicion_mult, members, settings.probe_interval_ms)
    scenario = Scenario(seed, names, settings, loss, 0)
    others = names[1:]  # m000 is the seed member everyone joins through.
    crash_count = rng.randint(1, max(1, min(3, members // 5)))
    for name in rng.sample(others, crash_count):
        scenario.crashes[name] = rng.randrange(5_000, 15_000)
    survivors = [n for n in others if n not in scenario.crashes]
    if faults and survivors:
        if rng.random() < 0.3:
            size = rng.randint(1, max(1, len(names) // 5))
            group = frozenset(rng.sample(survivors, min(size, len(survivors))))
            start = rng.randrange(5_000, 15_000)
            scenario.cuts.append(Cut(group, start, start + rng.randint(500, min_ms // 2)))
        if rng.random() < 0.5 and len(survivors) >= 2:
            source, target = rng.sample(survivors, 2)
            start = rng.randrange(3_000, 10_000)
            scenario.one_ways.append(OneWay(source, target, start, start + 10_000))
        if rng.random() < 0.5:
            start = rng.randrange(3_000, 10_000)
            lag = rng.choice([300, 600, 1200])
            scenario.starves.append(Starve(rng.choice(survivors), start, start + 15_000, lag))
    scenario.faults_end_ms = SCENARIO_END_MS + detect_ms(settings, members)
    scenario.end_ms = scenario.faults_end_ms + calm_ms(settings, members)
    return scenario


@dataclass(slots=True)
class _Sim:
    scenario: Scenario
    rng: random.Random
    cores: dict[str, GossipCore] = field(default_factory=dict)
    queue: list[tuple[int, int, int, int, str, str, bytes]] = field(default_factory=list)
    wake_ms: dict[str, int] = field(default_factory=dict)
    crashed: set[str] = field(default_factory=set)
    seq: int = 0
    packets: int = 0

    def push(
        self, at_ms: int, kind: int, name: str, source: str = "", payload: bytes = b""
    ) -> None:
        assert len(self.queue) < QUEUE_EVENTS_MAX, "simulator queue over its bound"
        self.seq += 1
        heapq.heappush(self.queue, (at_ms, kind, self.seq, 0, name, source, payload))


def _dropped(scenario: Scenario, rng: random.Random, source: str, target: str, at_ms: int) -> bool:
    if scenario.loss and at_ms < scenario.faults_end_ms and rng.random() < scenario.loss:
        return True
    for cut in scenario.cuts:
        if cut.start_ms <= at_ms < cut.end_ms and ((source in cut.group) != (target in cut.group)):
            return True
    return any(
        o.source == source and o.target == target and o.start_ms <= at_ms < o.end_ms
        for o in scenario.one_ways
    )


def _starved_until(scenario: Scenario, name: str, at_ms: int) -> int:
    """When a member starved at `at_ms` next runs (`at_ms` itself when not starved)."""
    for starve in scenario.starves:
        if starve.name == name and starve.start_ms <= at_ms < starve.end_ms:
            offset = at_ms - starve.start_ms
            if offset % starve.lag_ms:
                return starve.start_ms + (offset // starve.lag_ms + 1) * starve.lag_ms
    return at_ms


def _converged(sim: _Sim, everyone: int) -> bool:
    """Every member started, and every live member knows every other live one."""
    assert everyone >= MEMBERS_MIN
    if len(sim.cores) < everyone:
        return False
    live = set(sim.cores) - sim.crashed
    return all(live <= set(sim.cores[name].members) for name in live)


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of one seed."""

    scenario: Scenario
    violations: list[str]
    figures: Figures
    join_converged_ms: int | None
    packets: int
    wall_s: float


def run(scenario: Scenario) -> RunResult:
    """Simulate `scenario` to its end and check its history."""
    started = time.monotonic()
    rng = random.Random(scenario.seed * 7919 + 1)
    sim = _Sim(scenario, rng)
    settings = scenario.settings
    history = History(
        list(scenario.names),
        settings.probe_interval_ms,
        scenario.end_ms,
        scenario.faults_end_ms,
        scenario.network_faults(),
        dict(scenario.crashes),
        scenario.unreliable(),
    )
    for index, name in enumerate(scenario.names):
        start_ms = 0 if index == 0 else rng.randrange(JOIN_STAGGER_MS)
        sim.push(start_ms, _TIMER, name, "start")
    for name, at_ms in scenario.crashes.items():
        sim.push(at_ms, _CRASH, name)
    join_converged_ms: int | None = None
    next_convergence_check_ms = 0
    everyone = len(scenario.names)
    for _step in range(STEPS_MAX):
        if not sim.queue:
            break
        at_ms, kind, _seq, _, name, source, payload = heapq.heappop(sim.queue)
        if at_ms > scenario.end_ms:
            break
        if name in sim.crashed:
            continue
        if kind == _CRASH:
            sim.crashed.add(name)
            continue
        run_ms = _starved_until(scenario, name, at_ms)
        if run_ms != at_ms:
            if kind == _TIMER:
                if sim.wake_ms.get(name) != at_ms and source != "start":
                    continue  # A stale wake-up.
                sim.wake_ms[name] = run_ms  # The deadline is served late, not lost.
            sim.push(run_ms, kind, name, source, payload)
            continue
        core = sim.cores.get(name)
        if kind == _TIMER:
            if core is None:
                if source != "start":
                    continue
                seed = scenario.seed * 100_003 + scenario.names.index(name)
                zone = f"zone-{scenario.names.index(name) % 3}"
                meta = Meta(f"http://{name}:2379", zone, ("kv",))
                core = GossipCore(settings, name, name, meta, seed=seed, now_ms=at_ms)
                sim.cores[name] = core
                if name != scenario.names[0]:
                    core.join([scenario.names[0]], at_ms)
            elif sim.wake_ms.get(name) != at_ms:
                continue  # A stale wake-up: a later deadline replaced it.
            core.tick(at_ms)
        else:
            if core is None:
                continue
            core.receive(source, payload, at_ms)
        for event in core.take_events():
            history.record(name, event)
        for packet in core.take_packets():
            sim.packets += 1
            if _dropped(scenario, rng, name, packet.address, at_ms):
                continue
            arrive_ms = at_ms + rng.randint(*LATENCY_MS)
            sim.push(arrive_ms, _PACKET, packet.address, name, packet.payload)
        wake = max(core.next_deadline_ms(), at_ms + 1)
        if sim.wake_ms.get(name) != wake:
            sim.wake_ms[name] = wake
            sim.push(wake, _TIMER, name)
        if join_converged_ms is None and at_ms >= next_convergence_check_ms:
            next_convergence_check_ms = at_ms + CONVERGENCE_CHECK_MS
            if _converged(sim, everyone):
                join_converged_ms = at_ms
    else:
        raise AssertionError(f"seed {scenario.seed}: over {STEPS_MAX} steps")
    for name, core in sim.cores.items():
        if name not in sim.crashed:
            history.final_states[name] = {m.name: m.state for m in core.members.values()}
    return RunResult(scenario, check(history), figures(history), join_converged_ms,
                     sim.packets, time.monotonic() - started)  # fmt: skip


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"  # NaN: nothing measured


def summarize(label: str, results: list[RunResult]) -> str:
    """One table row over many seeds."""
    assert results
    detections = [d for r in results for d in r.figures.detections_periods]
    spreads = [d for r in results for d in r.figures.disseminations_periods]
    hours = sum(r.figures.member_hours for r in results)
    deaths = sum(r.figures.false_deaths for r in results)
    suspicions = sum(r.figures.false_suspicions for r in results)
    joins = [r.join_converged_ms / 1000 for r in results if r.join_converged_ms is not None]
    violations = sum(len(r.violations) for r in results)
    return (
        f"| {label} | {len(results)} | {_fmt(percentile(detections, 0.5))} | "
        f"{_fmt(percentile(detections, 0.99))} | {_fmt(percentile(spreads, 0.5))} | "
        f"{_fmt(percentile(spreads, 0.99))} | {deaths / hours:.2f} | {suspicions / hours:.1f} | "
        f"{_fmt(percentile(joins, 0.5))} | {violations} |"
    )


TABLE_HEADER = (
    "| run | seeds | detect p50 | detect p99 | spread p50 | spread p99 | false deaths/member-h "
    "| false suspicions/member-h | join converged p50 s | violations |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def _table() -> list[tuple[str, Scenario]]:
    runs: list[tuple[str, Scenario]] = []
    plain = GossipSettings()
    no_lifeguard = replace(plain, lifeguard=False)
    for members, seeds in ((5, 20), (20, 10), (50, 4), (200, 1)):
        for loss in (0.0, 0.05):
            for seed in range(1, seeds + 1):
                label = f"N={members} loss={loss:.0%}"
                runs.append((label, random_scenario(seed, members, loss=loss)))
    for settings, name in ((plain, "Lifeguard"), (no_lifeguard, KNOWN_BAD)):
        for seed in range(1, 11):
            scenario = random_scenario(seed, 20, loss=0.0, settings=settings, faults=False)
            scenario.starves = [
                Starve(scenario.names[-1 - i], 3_000, 23_000, 1200) for i in range(3)
            ]
            runs.append((f"N=20 3 starved, {name}", scenario))
    return runs


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 1 when any run violates an invariant."""
    parser = argparse.ArgumentParser(
        prog="python -m synod.gossip.sim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None, help="replay one seed (default: random)")
    parser.add_argument("--seeds", type=int, default=1, help="run SEED, SEED+1, ... (a sweep)")
    parser.add_argument("--loss", type=float, default=None, help="packet loss (default: drawn)")
    parser.add_argument("--no-lifeguard", action="store_true")
    parser.add_argument("--no-refute", action="store_true", help="a known-bad variant")
    parser.add_argument("--table", action="store_true", help="the report table of docs/gossip.md")
    args = parser.parse_args(argv)
    if not MEMBERS_MIN <= args.members <= MEMBERS_MAX:
        parser.error(f"--members must be {MEMBERS_MIN}..{MEMBERS_MAX}")
    if args.table:
        rows: dict[str, list[RunResult]] = {}
        for label, scenario in _table():
            rows.setdefault(label, []).append(run(scenario))
        print(TABLE_HEADER)
        for label, results in rows.items():
            print(summarize(label, results))
        bad = [
            r
            for label, results in rows.items()
            if KNOWN_BAD not in label
            for r in results
            if r.violations
        ]
        return 1 if bad else 0
    first = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    settings = GossipSettings(lifeguard=not args.no_lifeguard, refute=not args.no_refute)
    results = []
    for seed in range(first, first + max(args.seeds, 1)):
        scenario = random_scenario(seed, args.members, loss=args.loss, settings=settings)
        result = run(scenario)
        results.append(result)
        status = "ok" if not result.violations else f"{len(result.violations)} violations"
        print(f"gossip-sim: seed={seed} {scenario.describe()} packets={result.packets} "
              f"wall={result.wall_s:.2f}s {status}")  # fmt: skip
        for violation in result.violations[:10]:
            print(f"  {violation}")
        if result.violations:
            print(f"  replay: python -m synod.gossip.sim --members {args.members} --seed {seed}"
                  + (" --no-refute" if args.no_refute else "")
                  + (" --no-lifeguard" if args.no_lifeguard else "")
                  + (f" --loss {args.loss}" if args.loss is not None else ""))  # fmt: skip
    print(TABLE_HEADER)
    print(summarize(f"N={args.members} seeds {first}..{first + len(results) - 1}", results))
    return 1 if any(r.violations for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
