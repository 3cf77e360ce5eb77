"""`make bench-locks`: Synod's fenced locks against Redis, ZooKeeper and etcd locks.

One run on this machine, every system started here on loopback at the same time, the
measurements alternating between the systems (uncontended for all, then contended for
all, then takeover for all), so a change in the machine's background load hits all alike:

- **synod**: 3 members started like :class:`synod.bench.etcd_compare.SynodCluster`; the
  SDK's ``client.lock(name, ttl_ms=...)`` on the client's session lease (granted once
  per worker process, kept alive by one loop): a queued acquire and a release, 2
  replicated writes per cycle; fencing token on every grant;
- **redis** (persistence off: ``save ""``, ``appendonly no``) and **redis-aof**
  (``appendonly yes``, ``appendfsync everysec``): one ``redis-server`` each, redis-py's
  ``Lock`` (a ``SET NX PX`` + Lua release; waiters poll every ``REDIS_SLEEP_S``);
- **zookeeper**: a three-server ensemble of Debian's ZooKeeper (3 JVMs started here from
  ``/usr/share/java/zookeeper.jar``, not the system service), kazoo's ``Lock``
  (ephemeral sequential nodes, a watch on the predecessor);
- **etcd**: 3 members started like :class:`synod.bench.etcd_compare.EtcdCluster`,
  python-etcd3's ``lock`` (lease + txn create-if-absent, waiters watch the key).

Load: 16 client tasks in 4 worker processes (one client per process: asyncio tasks for
Synod, threads for the synchronous clients), each task doing acquire+release cycles for
``BENCH_LOCKS_DURATION_S`` seconds (default 3): **uncontended** on 16 distinct locks,
**contended** on one lock. Figures: cycles/s, p50/p99 acquire latency, and **hand-over
latency** (in the contended run: a holder starts its release -> another task's acquire
returns, from the monotonic clock, which all processes on one machine share). **Takeover**:
a holder process (TTL ``TAKEOVER_TTL_S``, kept alive by its library's renewal) is killed
with SIGKILL while another process waits; the figure is kill -> waiter holds the lock
(Synod/etcd: lease expiry, ZooKeeper: session expiry, Redis: key TTL). The machine's busy
share (all CPUs, everything running) is reported per measurement: this is a shared
2-core machine.

A benchmark, never a test. Missing prerequisites are reported with what to do (exit 2);
``install-lock-peers.sh`` installs the servers, ``pip install -e '.[bench]'`` the clients.
All processes are killed and the temporary directory removed at exit, also on
SIGINT/SIGTERM/SIGHUP (and every child gets SIGKILL if this process dies).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from synod.bench.etcd_compare import (
    BenchError,
    ClusterUnderTest,
    EtcdCluster,
    Member,
    PrerequisiteError,
    SynodCluster,
    _die_with_parent,
    _on_signal,
    _Terminated,
    free_port,
    machine_cpu_ticks,
)

# "synod-single": the same Synod cluster, its clients sending one request per call
# (AsyncClient(batch=False)): what /v1/batch coalescing gains, in the same run.
SYSTEMS = ("synod", "synod-single", "etcd", "zookeeper", "redis", "redis-aof")
SYNOD_SYSTEMS = ("synod", "synod-single")
MODES = ("uncontended", "contended")
PROCESSES = 4
TASKS_PER_PROCESS = 4
DURATION_S_DEFAULT = 3.0
DURATION_S_MAX = 60.0
CYCLES_PER_TASK_MAX = 200_000  # bounds each task's loop besides its time
LATENCIES_PER_TASK_MAX = 50_000  # samples kept per task (the first ones)
HOLDS_PER_TASK_MAX = 20_000  # (acquired, release started) pairs kept per task
LOCK_TTL_S = 10  # throughput runs: long enough that no lock expires while held
TAKEOVER_TTL_S = 2  # takeover: the dead holder's lease / session / key TTL
ACQUIRE_WAIT_S_MAX = 30.0  # one acquire gives up after this (counted as an error)
REDIS_SLEEP_S = 0.001  # redis-py's poll interval while waiting (its default is 0.1)
ZK_TICK_MS = 1_000  # so a 2 s session is allowed (min session = 2 ticks)
ZK_HEAP_MB = 256
WORKER_READY_S_MAX = 60.0  # a worker that is not connected by then is a failure
WORKER_EXTRA_S_MAX = 60.0  # a worker that has not reported by duration + this is killed
TAKEOVER_WAIT_S_MAX = 30.0
QUEUED_SETTLE_S = 0.5  # the waiter is queued (or polling) before the holder dies
ZK_JAR = "/usr/share/java/zookeeper.jar"
ZK_MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
RESULT_PREFIX = "RESULT "
READY_LINE = "READY"
HELD_LINE = "HELD"
WAITING_LINE = "WAITING"
INSTALL_HINT = "run node-image/synod/bench/install-lock-peers.sh"
PIP_HINT = "pip install -e '.[bench]' into the venv (make bench-locks does it)"
STOP_POLL_S = 0.05


# ---------------------------------------------------------------------------
# pure parts: results, statistics, table, final line (tests/unit/test_bench_locks.py)


@dataclass
class WorkerResult:
    """What one worker process reports (one JSON line, ``RESULT {...}``)."""

    system: str
    mode: str
    cycles: int
    errors: int
    duration_s: float
    acquire_ms: list[float] = field(default_factory=list)
    # (task, acquired at, release started at), monotonic seconds; contended runs only.
    holds: list[tuple[int, float, float]] = field(default_factory=list)
    error: str = ""

    def to_line(self) -> str:
        """The line a worker prints. Raises nothing."""
        return RESULT_PREFIX + json.dumps(asdict(self), separators=(",", ":"))


def parse_worker_output(text: str) -> WorkerResult:
    """The last ``RESULT`` line of a worker's standard output. Raises ValueError when
    there is none or it is malformed."""
    lines = [line for line in text.splitlines() if line.startswith(RESULT_PREFIX)]
    if not lines:
        raise ValueError("worker printed no RESULT line")
    doc = json.loads(lines[-1][len(RESULT_PREFIX) :])
    if not isinstance(doc, dict):
        raise ValueError("RESULT is not an object")
    try:
        result = WorkerResult(
            system=str(doc["system"]),
            mode=str(doc["mode"]),
            cycles=int(doc["cycles"]),
            errors=int(doc["errors"]),
            duration_s=float(doc["duration_s"]),
            acquire_ms=[float(v) for v in doc.get("acquire_ms", [])],
            holds=[(int(t), float(a), float(r)) for t, a, r in doc.get("holds", [])],
            error=str(doc.get("error", "")),
        )
    except (KeyError, TypeError) as error:
        raise ValueError(f"RESULT lacks a field: {error}") from None
    if result.cycles < 0 or result.errors < 0 or result.duration_s < 0:
        raise ValueError("RESULT has negative counts")
    return result


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100, nearest rank) of values; None when empty."""
    assert 0 <= q <= 100, q
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1]


def handover_ms(holds: Sequence[tuple[int, float, float]]) -> list[float]:
    """Hand-over latencies of one lock: for consecutive holds (by acquire time) of
    *different* tasks, next acquired - previous release started, in ms. A task that takes
    the lock again right after releasing it hands nothing over; it is skipped, as are
    overlapping pairs (which would be a mutual-exclusion violation: the caller reports
    them, see `overlaps`)."""
    assert all(r >= a for _, a, r in holds), "a release before its acquire"
    ordered = sorted(holds, key=lambda hold: hold[1])
    out: list[float] = []
    for previous, following in itertools.pairwise(ordered):
        if previous[0] == following[0] or following[1] < previous[2]:
            continue
        out.append((following[1] - previous[2]) * 1000)
    assert len(out) < max(1, len(ordered))
    return out


def overlaps(holds: Sequence[tuple[int, float, float]]) -> int:
    """Holds of one lock that began before the previous one's release started (two
    holders at once as seen by the clients). Raises nothing."""
    ordered = sorted(holds, key=lambda hold: hold[1])
    count = sum(
        1 for previous, following in itertools.pairwise(ordered)
        if following[1] < previous[2]
    )  # fmt: skip
    assert 0 <= count <= len(ordered)
    return count


@dataclass
class Measurement:
    """One (system, mode) run, all workers together."""

    system: str
    mode: str
    cycles: int
    errors: int
    duration_s: float
    acquire_ms: list[float]
    handover: list[float]
    overlaps: int
    busy_pct: float
    error: str = ""

    @property
    def cycles_per_s(self) -> float:
        return self.cycles / self.duration_s if self.duration_s > 0 else 0.0


def combine(
    system: str, mode: str, workers: Sequence[WorkerResult], busy_pct: float
) -> Measurement:
    """All workers' results of one run. The run's duration is the longest worker's
    (workers start together). Raises ValueError on results of another system or mode."""
    if any(w.system != system or w.mode != mode for w in workers):
        raise ValueError(f"results of another run mixed into {system}/{mode}")
    holds = [hold for w in workers for hold in w.holds]
    errors = "; ".join(sorted({w.error for w in workers if w.error}))
    measurement = Measurement(
        system=system,
        mode=mode,
        cycles=sum(w.cycles for w in workers),
        errors=sum(w.errors for w in workers),
        duration_s=max((w.duration_s for w in workers), default=0.0),
        acquire_ms=[v for w in workers for v in w.acquire_ms],
        handover=handover_ms(holds) if mode == "contended" else [],
        overlaps=overlaps(holds) if mode == "contended" else 0,
        busy_pct=busy_pct,
        error=errors,
    )
    assert measurement.cycles >= 0
    return measurement


@dataclass
class Takeover:
    system: str
    ttl_s: float
    takeover_s: float | None
    busy_pct: float
    error: str = ""


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(numerator: float | None, denominator: float | None) -> str:
    """``a/b`` with two decimals, ``n/a`` when either is missing or b is zero."""
    if numerator is None or not denominator:
        return "n/a"
    return f"{numerator / denominator:.2f}"


def cycles_of(results: dict[tuple[str, str], Measurement], system: str, mode: str) -> float | None:
    """cycles/s of a finished run, None if it did not run or failed entirely."""
    found = results.get((system, mode))
    if found is None or found.cycles == 0:
        return None
    return found.cycles_per_s


def table(
    results: dict[tuple[str, str], Measurement],
    takeovers: dict[str, Takeover],
    systems: Sequence[str],
) -> list[str]:
    """The report: one row per system; synod/system ratios for the two throughputs."""
    head = (
        f"{'system':<12} | {'uncont. c/s':>11} {'synod/x':>7} {'p50':>6} {'p99':>7} | "
        f"{'cont. c/s':>9} {'synod/x':>7} {'p50':>6} {'p99':>7} | "
        f"{'handover p50':>12} {'p99':>7} | {'takeover s':>10} | {'busy %':>9}"
    )
    lines = [
        "acquire+release cycles/s, acquire latency p50/p99 ms, hand-over (release -> next "
        "holder) ms,",
        "takeover (holder SIGKILLed -> waiter holds) s; busy % = machine CPU busy during "
        "uncontended/contended",
        head,
        "-" * len(head),
    ]
    for system in systems:
        unc = results.get((system, "uncontended"))
        con = results.get((system, "contended"))
        take = takeovers.get(system)
        lines.append(
            f"{system:<12} | {_fmt(cycles_of(results, system, 'uncontended'), 0):>11} "
            f"{ratio(cycles_of(results, 'synod', 'uncontended'), cycles_of(results, system, 'uncontended')):>7} "  # noqa: E501
            f"{_fmt(percentile(unc.acquire_ms, 50) if unc else None, 2):>6} "
            f"{_fmt(percentile(unc.acquire_ms, 99) if unc else None, 2):>7} | "
            f"{_fmt(cycles_of(results, system, 'contended'), 0):>9} "
            f"{ratio(cycles_of(results, 'synod', 'contended'), cycles_of(results, system, 'contended')):>7} "  # noqa: E501
            f"{_fmt(percentile(con.acquire_ms, 50) if con else None, 2):>6} "
            f"{_fmt(percentile(con.acquire_ms, 99) if con else None, 2):>7} | "
            f"{_fmt(percentile(con.handover, 50) if con else None, 2):>12} "
            f"{_fmt(percentile(con.handover, 99) if con else None, 2):>7} | "
            f"{_fmt(take.takeover_s if take else None, 2):>10} | "
            f"{_fmt(unc.busy_pct if unc else None, 0):>4}/"
            f"{_fmt(con.busy_pct if con else None, 0):<4}"
        )
    for (system, mode), found in results.items():
        if found.errors or found.error or found.overlaps:
            lines.append(
                f"  {system} {mode}: {found.errors} failed acquires, {found.overlaps} "
                f"overlapping holds{'; ' + found.error if found.error else ''}"
            )
    for take in takeovers.values():
        if take.error:
            lines.append(f"  {take.system} takeover: {take.error}")
    return lines


def final_line(results: dict[tuple[str, str], Measurement]) -> str:
    """``bench-locks: synod/etcd=R synod/zookeeper=R synod/redis=R (uncontended
    cycles/s)``; redis is the persistence-off row; n/a for a system that did not run."""
    synod = cycles_of(results, "synod", "uncontended")
    parts = [
        f"synod/{peer}={ratio(synod, cycles_of(results, peer, 'uncontended'))}"
        for peer in ("etcd", "zookeeper", "redis")
    ]
    return f"bench-locks: {' '.join(parts)} (uncontended cycles/s)"


# ---------------------------------------------------------------------------
# workers (run as `python -m synod.bench.locks --worker SPEC`)


@dataclass
class WorkerSpec:
    system: str
    mode: str  # uncontended | contended | holder | waiter
    endpoints: list[str]
    index: int  # worker number, for distinct lock names
    duration_s: float
    tasks: int = TASKS_PER_PROCESS
    ttl_s: int = LOCK_TTL_S


def lock_name(spec: WorkerSpec, task: int) -> str:
    """The lock a task cycles on: one per task uncontended, one for all otherwise."""
    if spec.mode == "uncontended":
        return f"bench-u-{spec.index}-{task}"
    return "bench-c" if spec.mode == "contended" else "bench-takeover"


class _TaskStats:
    def __init__(self) -> None:
        self.cycles = 0
        self.errors = 0
        self.acquire_ms: list[float] = []
        self.holds: list[tuple[int, float, float]] = []
        self.error = ""

    def record(self, task: int, started: float, acquired: float, released: float,
               keep_holds: bool) -> None:  # fmt: skip
        self.cycles += 1
        if len(self.acquire_ms) < LATENCIES_PER_TASK_MAX:
            self.acquire_ms.append(round((acquired - started) * 1000, 3))
        if keep_holds and len(self.holds) < HOLDS_PER_TASK_MAX:
            self.holds.append((task, acquired, released))


def _result(spec: WorkerSpec, stats: Sequence[_TaskStats], duration_s: float) -> WorkerResult:
    return WorkerResult(
        system=spec.system,
        mode=spec.mode,
        cycles=sum(s.cycles for s in stats),
        errors=sum(s.errors for s in stats),
        duration_s=duration_s,
        acquire_ms=[v for s in stats for v in s.acquire_ms],
        holds=[h for s in stats for h in s.holds],
        error="; ".join(sorted({s.error for s in stats if s.error}))[:500],
    )


def _wait_for_go() -> None:
    print(READY_LINE, flush=True)
    if not sys.stdin.readline():
        raise SystemExit(1)  # the benchmark went away


class SyncLockAPI:
    """Acquire/release of one synchronous library, one client per worker process."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.client: Any = None

    def connect(self) -> None:
        raise NotImplementedError

    def new(self, name: str, ttl_s: int) -> Any:
        raise NotImplementedError

    def acquire(self, lock: Any) -> bool:
        raise NotImplementedError

    def release(self, lock: Any) -> None:
        raise NotImplementedError

    def keep_alive(self, lock: Any) -> None:
        """What the library does to keep a held lock (holder mode). Raises nothing
        fatal: an exception ends the holder, which the benchmark then notices."""

    def close(self) -> None:
        pass


class RedisAPI(SyncLockAPI):
    def connect(self) -> None:
        redis = importlib.import_module("redis")
        host, port = self.spec.endpoints[0].rsplit(":", 1)
        self.client = redis.Redis(host=host, port=int(port), socket_timeout=10)
        self.client.ping()

    def new(self, name: str, ttl_s: int) -> Any:
        wait_s = ACQUIRE_WAIT_S_MAX
        return self.client.lock(name, timeout=ttl_s, sleep=REDIS_SLEEP_S,
                                blocking_timeout=wait_s, thread_local=False)  # fmt: skip

    def acquire(self, lock: Any) -> bool:
        return bool(lock.acquire())

    def release(self, lock: Any) -> None:
        lock.release()

    def keep_alive(self, lock: Any) -> None:
        lock.reacquire()  # the TTL starts again (what a Redisson-style watchdog does)


class ZooKeeperAPI(SyncLockAPI):
    def connect(self) -> None:
        kazoo = importlib.import_module("kazoo.client")
        self.client = kazoo.KazooClient(hosts=",".join(self.spec.endpoints),
                                        timeout=float(self.spec.ttl_s))  # fmt: skip
        self.client.start(timeout=30)

    def new(self, name: str, ttl_s: int) -> Any:
        return self.client.Lock(f"/bench/{name}")

    def acquire(self, lock: Any) -> bool:
        return bool(lock.acquire(timeout=ACQUIRE_WAIT_S_MAX))

    def release(self, lock: Any) -> None:
        lock.release()

    def keep_alive(self, lock: Any) -> None:
        pass  # kazoo pings the server in its own thread; the session lives while we do

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.stop()
            self.client.close()


class EtcdAPI(SyncLockAPI):
    def connect(self) -> None:
        os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
        etcd3 = importlib.import_module("etcd3")
        host, port = self.spec.endpoints[0].removeprefix("http://").rsplit(":", 1)
        self.client = etcd3.client(host=host, port=int(port), timeout=10)
        self.client.status()

    def new(self, name: str, ttl_s: int) -> Any:
        return self.client.lock(name, ttl=ttl_s)

    def acquire(self, lock: Any) -> bool:
        return bool(lock.acquire(timeout=ACQUIRE_WAIT_S_MAX))

    def release(self, lock: Any) -> None:
        lock.release()

    def keep_alive(self, lock: Any) -> None:
        lock.refresh()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


SYNC_APIS: dict[str, type[SyncLockAPI]] = {
    "redis": RedisAPI, "redis-aof": RedisAPI, "zookeeper": ZooKeeperAPI, "etcd": EtcdAPI,
}  # fmt: skip


def run_sync_worker(spec: WorkerSpec) -> WorkerResult:
    """Threads, one per task, sharing one client. Bounded by time and count."""
    api = SYNC_APIS[spec.system](spec)
    api.connect()
    if spec.mode in ("holder", "waiter"):
        return _sync_takeover(api, spec)
    stats = [_TaskStats() for _ in range(spec.tasks)]
    _wait_for_go()
    start = time.monotonic()
    deadline = start + spec.duration_s

    def task(number: int) -> None:
        mine = stats[number]
        lock = api.new(lock_name(spec, number), spec.ttl_s)  # reused, as the libraries intend
        for _cycle in range(CYCLES_PER_TASK_MAX):
            if time.monotonic() >= deadline:
                return
            started = time.monotonic()
            try:
                if not api.acquire(lock):
                    mine.errors += 1
                    continue
                acquired = time.monotonic()
                released = time.monotonic()
                api.release(lock)
            except Exception as error:
                mine.errors += 1
                mine.error = f"{type(error).__name__}: {error}"[:200]
                continue
            mine.record(
                spec.index * spec.tasks + number,
                started,
                acquired,
                released,
                spec.mode == "contended",
            )

    threads = [threading.Thread(target=task, args=(n,), daemon=True) for n in range(spec.tasks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(spec.duration_s + ACQUIRE_WAIT_S_MAX + 10)
    duration_s = time.monotonic() - start
    api.close()
    return _result(spec, stats, duration_s)


def _sync_takeover(api: SyncLockAPI, spec: WorkerSpec) -> WorkerResult:
    lock = api.new(lock_name(spec, 0), spec.ttl_s)
    if spec.mode == "waiter":
        print(WAITING_LINE, flush=True)
        started = time.monotonic()
        ok = api.acquire(lock)
        acquired = time.monotonic()
        stats = _TaskStats()
        if ok:
            stats.record(0, started, acquired, acquired, keep_holds=True)
        else:
            stats.errors += 1
        return _result(spec, [stats], acquired - started)
    if not api.acquire(lock):
        raise BenchError("holder could not acquire")
    print(HELD_LINE, flush=True)
    deadline = time.monotonic() + TAKEOVER_WAIT_S_MAX
    while time.monotonic() < deadline:  # killed long before
        time.sleep(spec.ttl_s / 3)
        api.keep_alive(lock)
    raise SystemExit(0)


async def run_synod_worker(spec: WorkerSpec) -> WorkerResult:
    """asyncio tasks sharing one AsyncClient, the SDK's `client.lock`."""
    from synod.client.aio import AsyncClient

    batch = spec.system != "synod-single"
    async with AsyncClient(spec.endpoints, timeout_s=10.0, batch=batch) as client:
        await client.lease_grant(spec.ttl_s * 1000)  # connects and finds the leader
        if spec.mode in ("holder", "waiter"):
            return await _synod_takeover(client, spec)
        stats = [_TaskStats() for _ in range(spec.tasks)]
        await asyncio.get_running_loop().run_in_executor(None, _wait_for_go)
        start = time.monotonic()
        deadline = start + spec.duration_s

        async def task(number: int) -> None:
            mine = stats[number]
            name = lock_name(spec, number)
            for _cycle in range(CYCLES_PER_TASK_MAX):
                if time.monotonic() >= deadline:
                    return
                lock = client.lock(name, ttl_ms=spec.ttl_s * 1000,
                                   wait_ms=int(ACQUIRE_WAIT_S_MAX * 1000))  # fmt: skip
                started = time.monotonic()
                try:
                    await lock.acquire()
                    acquired = time.monotonic()
                    released = time.monotonic()
                    await lock.release()
                except Exception as error:
                    mine.errors += 1
                    mine.error = f"{type(error).__name__}: {error}"[:200]
                    continue
                mine.record(
                    spec.index * spec.tasks + number,
                    started,
                    acquired,
                    released,
                    spec.mode == "contended",
                )

        await asyncio.wait_for(
            asyncio.gather(*(task(n) for n in range(spec.tasks))),
            spec.duration_s + ACQUIRE_WAIT_S_MAX + 10,
        )
        return _result(spec, stats, time.monotonic() - start)


async def _synod_takeover(client: Any, spec: WorkerSpec) -> WorkerResult:
    lock = client.lock(lock_name(spec, 0), ttl_ms=spec.ttl_s * 1000,
                       wait_ms=int(TAKEOVER_WAIT_S_MAX * 1000))  # fmt: skip
    if spec.mode == "waiter":
        print(WAITING_LINE, flush=True)
        started = time.monotonic()
        stats = _TaskStats()
        try:
            await lock.acquire()
            acquired = time.monotonic()
            stats.record(0, started, acquired, acquired, keep_holds=True)
            await lock.release()
        except Exception as error:
            acquired = time.monotonic()
            stats.errors += 1
            stats.error = f"{type(error).__name__}: {error}"[:200]
        return _result(spec, [stats], acquired - started)
    await lock.acquire()
    print(HELD_LINE, flush=True)
    await asyncio.sleep(TAKEOVER_WAIT_S_MAX)  # the watchdog renews meanwhile; killed first
    raise SystemExit(0)


def worker_main(spec_json: str) -> int:
    """Run one worker and print its RESULT line. Returns the exit status."""
    doc = json.loads(spec_json)
    spec = WorkerSpec(**doc)
    try:
        if spec.system in SYNOD_SYSTEMS:
            with contextlib.suppress(ImportError):
                import uvloop

                uvloop.install()
            result = asyncio.run(run_synod_worker(spec))
        else:
            result = run_sync_worker(spec)
    except Exception as error:
        result = WorkerResult(spec.system, spec.mode, 0, 0, 0.0,
                              error=f"{type(error).__name__}: {error}"[:500])  # fmt: skip
    print(result.to_line(), flush=True)
    return 0


# ---------------------------------------------------------------------------
# the peers' servers


class ZooKeeperEnsemble(ClusterUnderTest):
    """Three ZooKeeper servers from Debian's jars, each with its own config and data."""

    system = "zookeeper"

    def __init__(self, root: Path, size: int, java: str) -> None:
        super().__init__(root, size)
        ports = [(free_port(), free_port(), free_port()) for _ in range(size)]
        servers = "\n".join(
            f"server.{i}=127.0.0.1:{quorum}:{election}"
            for i, (_, quorum, election) in enumerate(ports, start=1)
        )
        self.client_ports = [client for client, _, _ in ports]
        for i, (client, _, _) in enumerate(ports, start=1):
            conf_dir = root / f"conf-{i}"
            data_dir = root / f"member-{i}"
            conf = (
                f"tickTime={ZK_TICK_MS}\ninitLimit=10\nsyncLimit=5\n"
                f"dataDir={data_dir}\nclientPort={client}\nclientPortAddress=127.0.0.1\n"
                "admin.enableServer=false\n4lw.commands.whitelist=srvr,ruok\n"
                f"maxClientCnxns=0\n{servers}\n"
            )
            self._files = [*getattr(self, "_files", []), (conf_dir, data_dir, i, conf)]
            args = [
                java, f"-Xmx{ZK_HEAP_MB}m", "-Dzookeeper.admin.enableServer=false",
                "-cp", f"{conf_dir}:{ZK_JAR}", ZK_MAIN, str(conf_dir / "zoo.cfg"),
            ]  # fmt: skip
            url = f"127.0.0.1:{client}"
            self.members.append(Member(f"zookeeper-{i}", url, args, root / f"member-{i}.log"))

    def start(self) -> None:
        for conf_dir, data_dir, number, conf in self._files:
            conf_dir.mkdir(parents=True, exist_ok=True)
            data_dir.mkdir(parents=True, exist_ok=True)
            (conf_dir / "zoo.cfg").write_text(conf)
            (data_dir / "myid").write_text(f"{number}\n")
        super().start()

    def _four_letters(self, member: Member, word: str) -> str:
        host, port = member.client_url.rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=1.0) as sock:
                sock.sendall(word.encode())
                chunks = []
                for _chunk in range(64):
                    data = sock.recv(4096)
                    if not data:
                        break
                    chunks.append(data)
                return b"".join(chunks).decode(errors="replace")
        except OSError:
            return ""

    def _find_leader(self) -> Member | None:
        modes = {m.name: self._four_letters(m, "srvr") for m in self.members}
        # Ready when one leads and the others follow (the ensemble serves sessions).
        leaders = [m for m in self.members if "Mode: leader" in modes[m.name]]
        followers = [m for m in self.members if "Mode: follower" in modes[m.name]]
        return leaders[0] if leaders and len(followers) == self.size - 1 else None


class RedisServer(ClusterUnderTest):
    """One redis-server, persistence off or append-only with fsync every second."""

    def __init__(self, root: Path, redis_server: str, aof: bool) -> None:
        super().__init__(root, 1)
        self.system = "redis-aof" if aof else "redis"
        port = free_port()
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "everysec"] if aof
            else ["--appendonly", "no"]
        )  # fmt: skip
        args = [
            redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--dir", str(root), "--daemonize", "no", "--protected-mode", "yes",
            *persistence,
        ]  # fmt: skip
        self.members.append(Member(self.system, f"127.0.0.1:{port}", args, root / "redis.log"))

    def _find_leader(self) -> Member | None:
        member = self.members[0]
        host, port = member.client_url.rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return member if sock.recv(64).startswith(b"+PONG") else None
        except OSError:
            return None


def endpoints_of(cluster: ClusterUnderTest) -> list[str]:
    """What a worker's client connects to: Synod all members (it finds the leader),
    etcd the leader (python-etcd3 takes one endpoint), ZooKeeper all servers."""
    if cluster.system == "etcd":
        return [cluster.leader().client_url]
    return [m.client_url for m in cluster.members]


# ---------------------------------------------------------------------------
# driving the workers


class Workers:
    """Worker processes of one run; all killed by `kill_all` whatever happened."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[str]] = []

    def spawn(self, spec: WorkerSpec) -> subprocess.Popen[str]:
        env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
               "PYTHONUNBUFFERED": "1"}  # fmt: skip
        process = subprocess.Popen(
            [sys.executable, "-m", "synod.bench.locks", "--worker", json.dumps(asdict(spec))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env, preexec_fn=_die_with_parent,  # noqa: PLW1509 (one thread here)
        )  # fmt: skip
        self.processes.append(process)
        return process

    def kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self.processes.clear()


def read_line(process: subprocess.Popen[str], wanted: Callable[[str], bool],
              timeout_s: float) -> str:  # fmt: skip
    """The first stdout line for which `wanted` holds, within timeout_s. Raises
    BenchError (timeout, or the process ended)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    for _line in range(10_000):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([process.stdout], [], [], left)
        if not ready:
            break
        line = process.stdout.readline()
        if not line:
            err = process.stderr.read()[-800:] if process.stderr else ""
            raise BenchError(f"worker ended early: {err.strip()}")
        if wanted(line.strip()):
            return line.strip()
    raise BenchError(f"no expected line from a worker within {timeout_s:.0f}s")


def run_load(system: str, mode: str, endpoints: list[str], duration_s: float) -> Measurement:
    """4 worker processes x 4 tasks for duration_s, started together."""
    workers = Workers()
    try:
        processes = [
            workers.spawn(WorkerSpec(system, mode, endpoints, index, duration_s))
            for index in range(PROCESSES)
        ]
        for process in processes:
            line = read_line(process, lambda s: s == READY_LINE or s.startswith(RESULT_PREFIX),
                             WORKER_READY_S_MAX)  # fmt: skip
            if line.startswith(RESULT_PREFIX):
                raise BenchError(parse_worker_output(line).error or "worker failed to start")
        busy_before, total_before = machine_cpu_ticks()
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        results = [
            parse_worker_output(
                read_line(
                    process, lambda s: s.startswith(RESULT_PREFIX), duration_s + WORKER_EXTRA_S_MAX
                )
            )
            for process in processes
        ]
        busy_after, total_after = machine_cpu_ticks()
        busy = 100 * (busy_after - busy_before) / max(1, total_after - total_before)
        return combine(system, mode, results, busy)
    finally:
        workers.kill_all()


def run_takeover(system: str, endpoints: list[str]) -> Takeover:
    """Holder acquires (TTL TAKEOVER_TTL_S), waiter queues, holder gets SIGKILL."""
    workers = Workers()
    busy_before, total_before = machine_cpu_ticks()
    try:
        spec = WorkerSpec(system, "holder", endpoints, 0, 0.0, tasks=1, ttl_s=TAKEOVER_TTL_S)
        holder = workers.spawn(spec)
        read_line(holder, lambda s: s == HELD_LINE, WORKER_READY_S_MAX)
        waiter = workers.spawn(WorkerSpec(system, "waiter", endpoints, 1, 0.0, tasks=1,
                                          ttl_s=TAKEOVER_TTL_S))  # fmt: skip
        read_line(waiter, lambda s: s == WAITING_LINE, WORKER_READY_S_MAX)
        time.sleep(QUEUED_SETTLE_S)  # the waiter's acquire is under way
        killed_at = time.monotonic()
        holder.kill()
        result = parse_worker_output(read_line(waiter, lambda s: s.startswith(RESULT_PREFIX),
                                               TAKEOVER_WAIT_S_MAX + 10))  # fmt: skip
        busy_after, total_after = machine_cpu_ticks()
        busy = 100 * (busy_after - busy_before) / max(1, total_after - total_before)
        if not result.holds:
            return Takeover(system, TAKEOVER_TTL_S, None, busy,
                            result.error or "the waiter never held the lock")  # fmt: skip
        return Takeover(system, TAKEOVER_TTL_S, result.holds[0][1] - killed_at, busy)
    finally:
        workers.kill_all()


# ---------------------------------------------------------------------------
# main


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def check_prerequisites(systems: Sequence[str]) -> dict[str, str]:
    """Binaries per system, and every missing piece at once. Raises PrerequisiteError."""
    problems: list[str] = []
    found: dict[str, str] = {}
    modules = {"redis": "redis", "redis-aof": "redis", "zookeeper": "kazoo", "etcd": "etcd3"}
    binaries = {"redis": "redis-server", "redis-aof": "redis-server", "etcd": "etcd",
                "zookeeper": "java"}  # fmt: skip
    os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
    for system in systems:
        if system in SYNOD_SYSTEMS:
            continue
        path = shutil.which(binaries[system])
        if path is None:
            problems.append(f"{system}: {binaries[system]} is not on PATH: {INSTALL_HINT}")
        else:
            found[system] = path
        if system == "zookeeper" and not Path(ZK_JAR).exists():
            problems.append(f"zookeeper: {ZK_JAR} is missing: {INSTALL_HINT}")
        try:
            importlib.import_module(modules[system])
        except ImportError as error:
            problems.append(f"{system}: Python client missing ({error}): {PIP_HINT}")
    if problems:
        raise PrerequisiteError("\n".join(f"  - {p}" for p in problems))
    return found


def _versions(binaries: dict[str, str]) -> str:
    out: list[str] = []
    for system, path in binaries.items():
        if system == "redis-aof":
            continue
        args = [path, "--version"] if system != "zookeeper" else [path, "-version"]
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            run = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
            text = (run.stdout + run.stderr).strip().splitlines()
            out.append(f"{system}: {text[0] if text else '?'}")
    return "; ".join(out)


def _machine_busy_pct(seconds: float) -> float:
    busy_before, total_before = machine_cpu_ticks()
    time.sleep(seconds)
    busy_after, total_after = machine_cpu_ticks()
    return 100 * (busy_after - busy_before) / max(1, total_after - total_before)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m synod.bench.locks",
        description="Synod's locks against Redis, ZooKeeper and etcd: cycles/s, latency, "
        "hand-over and takeover.",
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated subset of {','.join(SYSTEMS)}")  # fmt: skip
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None, help="write all figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.worker is not None:
        return worker_main(args.worker)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if not systems or any(s not in SYSTEMS for s in systems):
        parser.error(f"--systems takes a subset of {','.join(SYSTEMS)}")
    duration_s = float(os.environ.get("BENCH_LOCKS_DURATION_S", DURATION_S_DEFAULT))
    if not 0.5 <= duration_s <= DURATION_S_MAX:
        parser.error(f"BENCH_LOCKS_DURATION_S must be in [0.5, {DURATION_S_MAX}]")
    try:
        binaries = check_prerequisites(systems)
    except PrerequisiteError as error:
        print(f"bench-locks: prerequisites missing:\n{error}", file=sys.stderr)
        return 2

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    root = Path(tempfile.mkdtemp(prefix="synod-bench-locks-",
                                 dir=os.environ.get("BENCH_TMPDIR") or None))  # fmt: skip
    clusters: dict[str, ClusterUnderTest] = {}
    results: dict[tuple[str, str], Measurement] = {}
    takeovers: dict[str, Takeover] = {}
    failures: dict[str, str] = {}
    idle_busy = _machine_busy_pct(2.0)
    _say(f"machine busy before the clusters start: {idle_busy:.0f}% (2 s sample)")
    status = 1
    try:
        for system in systems:
            cluster: ClusterUnderTest
            if system in SYNOD_SYSTEMS and any(s in clusters for s in SYNOD_SYSTEMS):
                # One Synod cluster serves both client variants.
                clusters[system] = next(clusters[s] for s in SYNOD_SYSTEMS if s in clusters)
                continue
            if system in SYNOD_SYSTEMS:
                cluster = SynodCluster(root / "synod", 3)
            elif system == "etcd":
                cluster = EtcdCluster(root / "etcd", 3, binaries["etcd"], "/v3/kv/")
            elif system == "zookeeper":
                cluster = ZooKeeperEnsemble(root / "zookeeper", 3, binaries["zookeeper"])
            else:
                cluster = RedisServer(root / system, binaries[system], system == "redis-aof")
            clusters[system] = cluster
            _say(f"starting {system}")
            try:
                cluster.start()
            except BenchError as error:
                failures[system] = str(error)
                _say(f"{system} did not start: {error}")
        live = [s for s in systems if s not in failures]
        for mode in MODES:
            for system in live:
                _say(f"{system} {mode} ({duration_s:g} s)")
                try:
                    results[(system, mode)] = run_load(
                        system, mode, endpoints_of(clusters[system]), duration_s
                    )
                except BenchError as error:
                    failures[f"{system} {mode}"] = str(error)
                    _say(f"{system} {mode} failed: {error}")
        for system in live:
            if system == "synod-single":
                continue  # the same takeover as synod's: the lease, not the client
            _say(f"{system} takeover (TTL {TAKEOVER_TTL_S} s)")
            try:
                takeovers[system] = run_takeover(system, endpoints_of(clusters[system]))
            except BenchError as error:
                failures[f"{system} takeover"] = str(error)
        status = 0 if not failures else 1
    except (KeyboardInterrupt, _Terminated) as error:
        print(f"bench-locks: interrupted ({error or 'SIGINT'})", file=sys.stderr)
        status = 130
    finally:
        for cluster in {id(c): c for c in clusters.values()}.values():
            cluster.stop()
        if args.keep:
            print(f"bench-locks: kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    print(
        f"\nbench-locks on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
        f"{_versions(binaries)}; {PROCESSES} processes x {TASKS_PER_PROCESS} tasks, "
        f"{duration_s:g} s per run; machine busy before start {idle_busy:.0f}%"
    )
    for line in table(results, takeovers, systems):
        print(line)
    for what, reason in failures.items():
        print(f"  {what} DID NOT FINISH: {reason}")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "idle_busy_pct": idle_busy,
            "runs": [{**asdict(m), "cycles_per_s": m.cycles_per_s,
                      "acquire_ms": None, "handover": None,
                      "acquire_p50_ms": percentile(m.acquire_ms, 50),
                      "acquire_p99_ms": percentile(m.acquire_ms, 99),
                      "handover_p50_ms": percentile(m.handover, 50),
                      "handover_p99_ms": percentile(m.handover, 99)}
                     for m in results.values()],
            "takeovers": [asdict(t) for t in takeovers.values()],
            "failures": failures,
        }, indent=2))  # fmt: skip
    print(final_line(results))
    return status


if __name__ == "__main__":
    sys.exit(main())
