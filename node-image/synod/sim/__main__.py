"""`python -m synod.sim`: run many seeds, or replay one with its trace.

Ends with one summary line:
    sim: seeds=N passed=N violations=0 committed=... elections=... max_ticks_to_recover=...
A failing seed prints its trace tail and the command that replays it exactly.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time

from synod.sim.simulator import SimResult, Simulation


def run_seed(seed: int) -> SimResult:
    """Run one seed (in a worker process)."""
    return Simulation(seed).run()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (1 on any violation)."""
    parser = argparse.ArgumentParser(prog="python -m synod.sim", description=__doc__)
    parser.add_argument("--seeds", type=int, default=100, help="number of seeds to run")
    parser.add_argument("--first-seed", type=int, default=1, help="first seed of the sweep")
    parser.add_argument("--seed", type=int, help="replay exactly this seed")
    parser.add_argument("--trace", action="store_true", help="print the whole trace")
    parser.add_argument("--jobs", type=int, default=0, help="worker processes (0: CPUs)")
    args = parser.parse_args(argv)
    if args.seed is not None:
        result = Simulation(args.seed, trace=args.trace).run()
        results = [result]
    else:
        if args.seeds < 1:
            parser.error("--seeds must be at least 1")
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        jobs = args.jobs or multiprocessing.cpu_count()
        started = time.monotonic()
        with multiprocessing.Pool(jobs) as pool:
            results = pool.map(run_seed, seeds, chunksize=4)
        print(f"sim: {len(results)} seeds in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return report(results, echo_trace=args.seed is not None and not args.trace)


def report(results: list[SimResult], *, echo_trace: bool) -> int:
    """Print failures and the summary line. Returns the exit code."""
    failed = [result for result in results if result.violation is not None]
    for result in failed:
        print(f"\nseed {result.seed} (size {result.cluster_size}): {result.violation}")
        if echo_trace or len(failed) <= 3:
            print("\n".join(result.trace[-60:]))
        print(f"replay: {result.replay_command()}")
    passed = len(results) - len(failed)
    print(
        f"sim: seeds={len(results)} passed={passed} violations={len(failed)} "
        f"committed={sum(r.committed_index for r in results)} "
        f"elections={sum(r.elections for r in results)} "
        f"max_ticks_to_recover={max((r.ticks_to_recover for r in results), default=0)} "
        f"snapshot_installs={sum(r.snapshots_installed for r in results)} "
        f"seeds_with_install={sum(1 for r in results if r.snapshots_installed)} "
        f"follower_reads={sum(r.follower_reads for r in results)} "
        f"keepalives={sum(r.keepalives for r in results)} "
        f"leases_expired={sum(r.leases_expired for r in results)} "
        f"admin_changes={sum(r.admin_changes for r in results)} "
        f"ids_issued={sum(r.ids_issued for r in results)}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
