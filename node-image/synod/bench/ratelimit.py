"""`make bench-ratelimit`: Synod's rate limits against gubernator and ``limits`` + Redis.

One run on this machine, every system started here on loopback at the same time, the
timed runs interleaved between the systems (synod, gubernator, limits, synod, ...), so a
change in the machine's background load hits all alike:

- **synod**: 3 members started like :class:`synod.bench.etcd_compare.SynodCluster`, with
  gossip (``--listen-gossip``, the ring is built from it) and the Envoy RLS gRPC API
  (``--listen-rls``); one policy with a limit per consistency mode (``local``, ``owner``,
  ``global``, ``strict``), each asked through HTTP ``POST /v1/ratelimit/check`` and
  through RLS ``ShouldRateLimit``;
- **gubernator** v2.13.0 (built from the Go module proxy by ``install-gubernator.sh``):
  3 members finding each other with memberlist on loopback, its default ``BATCHING``
  behaviour (non-owners forward to the owner) and ``GLOBAL`` (answer from a local copy,
  hits sent to the owner asynchronously), through its HTTP gateway ``POST
  /v1/GetRateLimits`` and gRPC ``pb.gubernator.V1/GetRateLimits``;
- **limits**: the Python ``limits`` library's moving window over one Redis 7 server
  (persistence off), decided in the client processes (Lua scripts on Redis);
- **envoy-ratelimit**: envoyproxy/ratelimit (its main branch of 2026-01-22: the project
  tags no Go module version; built by ``install-envoy-ratelimit.sh``), 3 stateless
  services over one Redis, fixed windows, asked through the same RLS gRPC client as
  Synod. Its windows are calendar minutes, so its run is started inside one minute.

The same offered load for each: ``PROCESSES`` client processes x ``TASKS_PER_PROCESS``
requests in flight (closed loop: asyncio tasks, threads for ``limits``) for
``BENCH_RATELIMIT_DURATION_S`` seconds (default 4), each request one hit on one of
``KEYS`` keys (round robin) whose limit is ``LIMIT`` per minute; requests go round robin
to the members. Keys are fresh in every run and a run is shorter than the minute, so
each key has exactly one window in a run and **over-admission is counted by the
benchmark itself**: the OK answers it received per key beyond ``LIMIT``, summed over the
keys, as a share of ``KEYS x LIMIT``. Synod's limits are exact sliding logs, gubernator's
a token bucket (its bucket refills at the end of the duration: one fixed window starting
at the key's first hit), ``limits``' a moving window, envoyproxy/ratelimit's a
calendar-minute window that the run stays inside: none may admit more than
``LIMIT`` of a key within the run. Figures: decisions/s (OK and OVER_LIMIT answers; errors
apart), p50/p99 latency, admitted hits and over-admission %, and the machine's busy
share during each run (a shared 2-core machine).

The last line: ``bench-ratelimit: synod/gubernator=R over_admission_synod=P%
over_admission_gubernator=P%``: R is the decisions/s of Synod's ``global`` mode (its
faster API) over gubernator's ``GLOBAL`` (its faster API): both answer from a local
copy and reconcile in the background; the over-admission figures are those two rows'.

A benchmark, never a test. Missing prerequisites are reported with what to do (exit
2): ``install-gubernator.sh``, ``install-envoy-ratelimit.sh`` and ``install-redis.sh``
beside this file install the servers, ``pip install -e '.[bench]'`` the ``limits`` and
redis clients. All processes are killed and the temporary directory removed at exit,
also on SIGINT/SIGTERM/SIGHUP.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from synod.bench.etcd_compare import (
    BenchError,
    ClusterUnderTest,
    Member,
    PrerequisiteError,
    SynodCluster,
    _beside_python,
    _on_signal,
    _Terminated,
    free_port,
    http_json,
    machine_cpu_ticks,
    profiling,
    summarize_profile,
)
from synod.bench.locks import RedisServer, Workers, percentile, read_line

PROCESSES: Final = 4
TASKS_PER_PROCESS: Final = 8
KEYS: Final = 8
LIMIT: Final = 20  # hits per key per minute: reached within the run by every system
UNIT: Final = "minute"
WINDOW_MS: Final = 60_000
DURATION_S_DEFAULT: Final = 4.0
DURATION_S_MAX: Final = 30.0  # well inside the minute: one window per key and run
DECISIONS_PER_TASK_MAX: Final = 200_000  # bounds each task's loop besides its time
LATENCIES_PER_WORKER_MAX: Final = 100_000
REQUEST_TIMEOUT_S: Final = 5.0
WORKER_READY_S_MAX: Final = 60.0
WORKER_EXTRA_S_MAX: Final = 60.0
RING_WAIT_S_MAX: Final = 60.0
POLL_S: Final = 0.1
RESULT_PREFIX: Final = "RESULT "
READY_LINE: Final = "READY"
DOMAIN: Final = "bench"
SYNOD_MODES: Final = ("local", "owner", "global", "strict")
GUBERNATOR_MODES: Final = ("batching", "global")
GUBERNATOR_VERSION: Final = "v2.13.0"
GUBERNATOR_DIR: Final = f"/var/cache/synod-toolchain/gubernator-{GUBERNATOR_VERSION}"
INSTALL_HINT: Final = "run node-image/synod/bench/install-{}.sh (make bench-ratelimit does it)"
PIP_HINT: Final = "pip install -e '.[bench]' into the venv (make bench-ratelimit does it)"
HEADLINE_SYNOD_MODE: Final = "global"
HEADLINE_GUBERNATOR_MODE: Final = "global"
SYSTEMS: Final = ("synod", "gubernator", "limits", "envoy-ratelimit")
ENVOY: Final = "envoy-ratelimit"
# envoyproxy/ratelimit has no tagged Go module version: the main branch of 2026-01-22.
ENVOY_VERSION: Final = "v1.4.1-0.20260122083618-3fb702589d36"
ENVOY_DIR: Final = f"/var/cache/synod-toolchain/envoy-ratelimit-{ENVOY_VERSION}"
MINUTE_MARGIN_S: Final = 1.0  # an envoy run starts at least this far from a minute's end


# ---------------------------------------------------------------------------
# pure parts: runs, results, over-admission, table, final line
# (tests/unit/test_bench_ratelimit.py)


@dataclass(frozen=True)
class Run:
    """One timed run: a system, the API its clients use and the limit's mode."""

    system: str  # synod | gubernator | limits
    api: str  # http | grpc | redis
    mode: str  # synod: SYNOD_MODES; gubernator: GUBERNATOR_MODES; limits: moving-window

    @property
    def label(self) -> str:
        return f"{self.system} {self.api} {self.mode}"


def runs_for(systems: Sequence[str]) -> list[Run]:
    """Every run of the chosen systems, interleaved system by system (synod, gubernator,
    limits, synod, ...) so background load changes hit all alike. Raises ValueError on
    an unknown system."""
    per_system: list[list[Run]] = []
    for system in systems:
        if system == "synod":
            per_system.append([Run("synod", api, mode) for mode in SYNOD_MODES
                               for api in ("http", "grpc")])  # fmt: skip
        elif system == "gubernator":
            per_system.append([Run("gubernator", api, mode) for mode in GUBERNATOR_MODES
                               for api in ("http", "grpc")])  # fmt: skip
        elif system == "limits":
            per_system.append([Run("limits", "redis", "moving-window")])
        elif system == ENVOY:
            per_system.append([Run(ENVOY, "grpc", "fixed-window")])
        else:
            raise ValueError(f"unknown system {system!r}")
    out: list[Run] = []
    longest = max((len(runs) for runs in per_system), default=0)
    for i in range(longest):  # bound: the longest run list
        out.extend(runs[i] for runs in per_system if i < len(runs))
    assert len(out) == sum(len(runs) for runs in per_system)
    return out


@dataclass
class WorkerResult:
    """What one worker process reports (one JSON line, ``RESULT {...}``)."""

    label: str
    ok: int
    over: int
    errors: int
    duration_s: float
    latency_ms: list[float] = field(default_factory=list)
    ok_per_key: dict[str, int] = field(default_factory=dict)
    error: str = ""

    def to_line(self) -> str:
        return RESULT_PREFIX + json.dumps(asdict(self), separators=(",", ":"))


def parse_worker_output(text: str) -> WorkerResult:
    """The last ``RESULT`` line of a worker's output. Raises ValueError when there is
    none or it is malformed."""
    lines = [line for line in text.splitlines() if line.startswith(RESULT_PREFIX)]
    if not lines:
        raise ValueError("worker printed no RESULT line")
    doc = json.loads(lines[-1][len(RESULT_PREFIX) :])
    if not isinstance(doc, dict):
        raise ValueError("RESULT is not an object")
    try:
        result = WorkerResult(
            label=str(doc["label"]),
            ok=int(doc["ok"]),
            over=int(doc["over"]),
            errors=int(doc["errors"]),
            duration_s=float(doc["duration_s"]),
            latency_ms=[float(v) for v in doc.get("latency_ms", [])],
            ok_per_key={str(k): int(v) for k, v in doc.get("ok_per_key", {}).items()},
            error=str(doc.get("error", "")),
        )
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"RESULT lacks a field: {error}") from None
    if min(result.ok, result.over, result.errors, result.duration_s) < 0:
        raise ValueError("RESULT has negative counts")
    if any(v < 0 for v in result.ok_per_key.values()):
        raise ValueError("RESULT has a negative count per key")
    return result


def over_admitted(ok_per_key: dict[str, int], limit: int) -> int:
    """Hits admitted beyond ``limit`` summed over the keys (each key: one window)."""
    assert limit > 0, limit
    extra = sum(max(0, admitted - limit) for admitted in ok_per_key.values())
    assert extra >= 0
    return extra


def over_admission_pct(ok_per_key: dict[str, int], limit: int, keys: int) -> float:
    """Over-admitted hits as a share of what the keys may admit (keys x limit), in %."""
    assert keys > 0 and limit > 0, (keys, limit)
    assert len(ok_per_key) <= keys, "more keys answered than were asked"
    return 100.0 * over_admitted(ok_per_key, limit) / (keys * limit)


@dataclass
class Measurement:
    """One run, all workers together."""

    run: Run
    ok: int
    over: int
    errors: int
    duration_s: float
    latency_ms: list[float]
    ok_per_key: dict[str, int]
    busy_pct: float
    error: str = ""
    note: str = ""  # what the servers said about the run (Synod: owner fallbacks)

    @property
    def decisions_per_s(self) -> float:
        return (self.ok + self.over) / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def admitted(self) -> int:
        return sum(self.ok_per_key.values())

    def over_admission(self) -> float:
        return over_admission_pct(self.ok_per_key, LIMIT, KEYS)

    def keys_at_limit(self) -> int:
        """Keys whose limit was reached: only those can show over-admission."""
        return sum(1 for admitted in self.ok_per_key.values() if admitted >= LIMIT)


def combine(run: Run, workers: Sequence[WorkerResult], busy_pct: float) -> Measurement:
    """All workers' results of one run; per-key OK counts summed over the workers. The
    run's duration is the longest worker's. Raises ValueError on another run's results."""
    if any(w.label != run.label for w in workers):
        raise ValueError(f"results of another run mixed into {run.label}")
    per_key: dict[str, int] = {}
    for worker in workers:
        for key, count in worker.ok_per_key.items():
            per_key[key] = per_key.get(key, 0) + count
    measurement = Measurement(
        run=run,
        ok=sum(w.ok for w in workers),
        over=sum(w.over for w in workers),
        errors=sum(w.errors for w in workers),
        duration_s=max((w.duration_s for w in workers), default=0.0),
        latency_ms=[v for w in workers for v in w.latency_ms],
        ok_per_key=per_key,
        busy_pct=busy_pct,
        error="; ".join(sorted({w.error for w in workers if w.error})),
    )
    assert measurement.admitted == measurement.ok, "OK answers and per-key counts disagree"
    return measurement


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: Sequence[Measurement]) -> list[str]:
    """The report, one row per run in the order they ran."""
    head = (
        f"{'run':<28} {'decisions/s':>11} {'p50 ms':>7} {'p99 ms':>7} {'admitted':>8} "
        f"{'at limit':>8} {'over-adm.':>9} {'errors':>6} {'busy %':>6}"
    )
    lines = [
        f"{KEYS} keys x {LIMIT}/{UNIT} (one window per key and run): admitted = OK answers, "
        f"at limit = keys whose limit was reached, over-adm. = admitted beyond the limit / "
        f"({KEYS} x {LIMIT})",
        head,
        "-" * len(head),
    ]
    for m in results:
        lines.append(
            f"{m.run.label:<28} {m.decisions_per_s:>11.0f} "
            f"{_fmt(percentile(m.latency_ms, 50), 2):>7} "
            f"{_fmt(percentile(m.latency_ms, 99), 2):>7} {m.admitted:>8} "
            f"{m.keys_at_limit():>5}/{KEYS:<2} "
            f"{m.over_admission():>8.1f}% {m.errors:>6} {m.busy_pct:>6.0f}"
        )
    for m in results:
        if m.note:
            lines.append(f"  {m.run.label}: {m.note}")
    for m in results:
        if m.error:
            lines.append(f"  {m.run.label}: {m.errors} errors; {m.error}")
    return lines


def best(results: Sequence[Measurement], system: str, mode: str) -> Measurement | None:
    """The run of ``system``/``mode`` with the most decisions/s (over its APIs), None if
    none answered."""
    found = [m for m in results if m.run.system == system and m.run.mode == mode
             and m.ok + m.over > 0]  # fmt: skip
    return max(found, key=lambda m: m.decisions_per_s, default=None)


def final_line(results: Sequence[Measurement]) -> str:
    """``bench-ratelimit: synod/gubernator=R over_admission_synod=P%
    over_admission_gubernator=P%`` for Synod's global mode against gubernator's GLOBAL,
    each on its faster API; n/a for a side that did not run."""
    synod = best(results, "synod", HEADLINE_SYNOD_MODE)
    guber = best(results, "gubernator", HEADLINE_GUBERNATOR_MODE)
    ratio = (
        f"{synod.decisions_per_s / guber.decisions_per_s:.2f}"
        if synod is not None and guber is not None and guber.decisions_per_s > 0
        else "n/a"
    )
    synod_pct = f"{synod.over_admission():.1f}%" if synod is not None else "n/a"
    guber_pct = f"{guber.over_admission():.1f}%" if guber is not None else "n/a"
    return (
        f"bench-ratelimit: synod/gubernator={ratio} over_admission_synod={synod_pct} "
        f"over_admission_gubernator={guber_pct}"
    )


def synod_policy() -> dict[str, Any]:
    """One limit per consistency mode, keyed by the mode's name."""
    return {
        "domain": DOMAIN,
        "descriptors": [
            {"key": mode, "rate_limit": {"unit": UNIT, "requests_per_unit": LIMIT,
                                         "algorithm": "sliding_log", "consistency": mode,
                                         "name": mode}}
            for mode in SYNOD_MODES
        ],
    }  # fmt: skip


def key_name(run_id: str, index: int) -> str:
    """The key a request counts on: fresh per run, ``KEYS`` of them."""
    assert 0 <= index < KEYS, index
    return f"{run_id}-k{index}"


# ---------------------------------------------------------------------------
# gubernator's gRPC messages (gubernator.proto of v2.13.0, package pb.gubernator),
# declared like synod.ratelimit.rls_proto: no generated code. The metadata maps are left
# out (never sent; unknown fields are kept and ignored).


def _gubernator_messages() -> tuple[Any, Any]:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="synod/bench/gubernator.proto", package="pb.gubernator", syntax="proto3"
    )
    request = proto.message_type.add(name="RateLimitReq")
    fields = (("name", 1, f.TYPE_STRING), ("unique_key", 2, f.TYPE_STRING),
              ("hits", 3, f.TYPE_INT64), ("limit", 4, f.TYPE_INT64),
              ("duration", 5, f.TYPE_INT64), ("algorithm", 6, f.TYPE_INT32),
              ("behavior", 7, f.TYPE_INT32), ("burst", 8, f.TYPE_INT64))  # fmt: skip
    for name, number, kind in fields:
        request.field.add(name=name, number=number, type=kind, label=f.LABEL_OPTIONAL)
    response = proto.message_type.add(name="RateLimitResp")
    answer_fields = (("status", 1, f.TYPE_INT32), ("limit", 2, f.TYPE_INT64),
              ("remaining", 3, f.TYPE_INT64), ("reset_time", 4, f.TYPE_INT64),
              ("error", 5, f.TYPE_STRING))  # fmt: skip
    for name, number, kind in answer_fields:
        response.field.add(name=name, number=number, type=kind, label=f.LABEL_OPTIONAL)
    for outer, inner in (("GetRateLimitsReq", "RateLimitReq"),
                         ("GetRateLimitsResp", "RateLimitResp")):  # fmt: skip
        message = proto.message_type.add(name=outer)
        message.field.add(name="requests" if outer.endswith("Req") else "responses", number=1,
                          type=f.TYPE_MESSAGE, label=f.LABEL_REPEATED,
                          type_name=f".pb.gubernator.{inner}")  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(proto.SerializeToString())
    req = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("pb.gubernator.GetRateLimitsReq")
    )
    resp = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("pb.gubernator.GetRateLimitsResp")
    )
    return req, resp


GUBERNATOR_METHOD: Final = "/pb.gubernator.V1/GetRateLimits"
GUBERNATOR_BEHAVIOR: Final = {"batching": 0, "global": 2}  # BATCHING, GLOBAL
GUBERNATOR_OVER_LIMIT: Final = 1


# ---------------------------------------------------------------------------
# workers (run as `python -m synod.bench.ratelimit --worker SPEC`)


@dataclass
class WorkerSpec:
    system: str
    api: str
    mode: str
    endpoints: list[str]
    run_id: str
    index: int
    duration_s: float
    tasks: int = TASKS_PER_PROCESS

    @property
    def run(self) -> Run:
        return Run(self.system, self.api, self.mode)


class _Stats:
    """One worker's counts; tasks (or threads) record into it."""

    def __init__(self) -> None:
        self.ok = 0
        self.over = 0
        self.errors = 0
        self.latency_ms: list[float] = []
        self.ok_per_key: dict[str, int] = {}
        self.error = ""
        self.lock = threading.Lock()

    def record(self, key: str, allowed: bool | None, started: float, error: str = "") -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        with self.lock:
            if allowed is None:
                self.errors += 1
                self.error = self.error or error[:300]
                return
            if allowed:
                self.ok += 1
                self.ok_per_key[key] = self.ok_per_key.get(key, 0) + 1
            else:
                self.over += 1
            if len(self.latency_ms) < LATENCIES_PER_WORKER_MAX:
                self.latency_ms.append(round(elapsed_ms, 3))


Decide = Callable[[str, str], Any]  # (endpoint, key) -> awaitable of allowed


def _synod_http(session: Any, mode: str) -> Decide:
    async def decide(endpoint: str, key: str) -> bool:
        body = {"domain": DOMAIN, "descriptors": [{"entries": [{"key": mode, "value": key}]}]}
        async with session.post(endpoint + "/v1/ratelimit/check", json=body) as answer:
            doc = await answer.json(content_type=None)
            if answer.status != 200:
                raise RuntimeError(f"HTTP {answer.status}: {str(doc)[:200]}")
            return bool(doc["overall_code"] == "OK")

    return decide


def _gubernator_http(session: Any, mode: str) -> Decide:
    async def decide(endpoint: str, key: str) -> bool:
        body = {"requests": [{"name": DOMAIN, "unique_key": key, "hits": 1, "limit": LIMIT,
                              "duration": WINDOW_MS, "algorithm": 0,
                              "behavior": GUBERNATOR_BEHAVIOR[mode]}]}  # fmt: skip
        async with session.post(endpoint + "/v1/GetRateLimits", json=body) as answer:
            doc = await answer.json(content_type=None)
            if answer.status != 200:
                raise RuntimeError(f"HTTP {answer.status}: {str(doc)[:200]}")
            found = doc["responses"][0]
            if found.get("error"):
                raise RuntimeError(str(found["error"])[:200])
            return found.get("status", "UNDER_LIMIT") in ("UNDER_LIMIT", 0)

    return decide


def _grpc_caller(channels: dict[str, Any], system: str, mode: str) -> Decide:
    from synod.ratelimit.rls_proto import METHOD, SERVICE, RateLimitRequest, RateLimitResponse

    if system in ("synod", ENVOY):
        calls = {e: c.unary_unary(f"/{SERVICE}/{METHOD}",
                                  request_serializer=RateLimitRequest.SerializeToString,
                                  response_deserializer=RateLimitResponse.FromString)
                 for e, c in channels.items()}  # fmt: skip

        async def rls(endpoint: str, key: str) -> bool:
            request = RateLimitRequest(domain=DOMAIN)
            entry = request.descriptors.add().entries.add()
            entry.key, entry.value = mode, key
            answer = await calls[endpoint](request, timeout=REQUEST_TIMEOUT_S)
            return bool(answer.overall_code == 1)

        return rls
    req_type, resp_type = _gubernator_messages()
    gcalls = {e: c.unary_unary(GUBERNATOR_METHOD, request_serializer=req_type.SerializeToString,
                               response_deserializer=resp_type.FromString)
              for e, c in channels.items()}  # fmt: skip

    async def gubernator(endpoint: str, key: str) -> bool:
        request = req_type()
        item = request.requests.add()
        item.name, item.unique_key, item.hits, item.limit = DOMAIN, key, 1, LIMIT
        item.duration, item.behavior = WINDOW_MS, GUBERNATOR_BEHAVIOR[mode]
        answer = await gcalls[endpoint](request, timeout=REQUEST_TIMEOUT_S)
        found = answer.responses[0]
        if found.error:
            raise RuntimeError(found.error[:200])
        return bool(found.status != GUBERNATOR_OVER_LIMIT)

    return gubernator


async def _async_load(spec: WorkerSpec, stats: _Stats, go: Callable[[], None]) -> float:
    import aiohttp
    import grpc

    session: Any = None
    channels: dict[str, Any] = {}
    if spec.api == "http":
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        connector = aiohttp.TCPConnector(limit=spec.tasks)
        session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        maker = _synod_http if spec.system == "synod" else _gubernator_http
        decide = maker(session, spec.mode)
    else:
        channels = {e: grpc.aio.insecure_channel(e) for e in spec.endpoints}
        decide = _grpc_caller(channels, spec.system, spec.mode)
    try:
        go()  # READY printed, "go" read: the clients exist, the clock starts now
        started = time.perf_counter()
        deadline = started + spec.duration_s

        async def task(number: int) -> None:
            for i in range(DECISIONS_PER_TASK_MAX):  # bound: count and deadline
                if time.perf_counter() >= deadline:
                    return
                n = number + i * spec.tasks + spec.index * spec.tasks * DECISIONS_PER_TASK_MAX
                key = key_name(spec.run_id, n % KEYS)
                endpoint = spec.endpoints[n % len(spec.endpoints)]
                began = time.perf_counter()
                try:
                    stats.record(key, await decide(endpoint, key), began)
                except Exception as error:  # every failure counts as an error
                    stats.record(key, None, began, f"{type(error).__name__}: {error}")

        await asyncio.gather(*(task(t) for t in range(spec.tasks)))
        return time.perf_counter() - started
    finally:
        if session is not None:
            await session.close()
        for channel in channels.values():
            await channel.close()


def _limits_load(spec: WorkerSpec, stats: _Stats, go: Callable[[], None]) -> float:
    limits: Any = importlib.import_module("limits")
    storage = limits.storage.RedisStorage(spec.endpoints[0])
    limiter = limits.strategies.MovingWindowRateLimiter(storage)
    item = limits.RateLimitItemPerMinute(LIMIT)
    go()
    started = time.perf_counter()
    deadline = started + spec.duration_s

    def thread(number: int) -> None:
        for i in range(DECISIONS_PER_TASK_MAX):  # bound: count and deadline
            if time.perf_counter() >= deadline:
                return
            key = key_name(spec.run_id, (number + i * spec.tasks + spec.index) % KEYS)
            began = time.perf_counter()
            try:
                stats.record(key, bool(limiter.hit(item, DOMAIN, key)), began)
            except Exception as error:  # every failure counts as an error
                stats.record(key, None, began, f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=thread, args=(t,), daemon=True) for t in range(spec.tasks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(spec.duration_s + REQUEST_TIMEOUT_S * 2)
    return time.perf_counter() - started


def worker_main(spec_text: str) -> int:
    """Connect, print READY, wait for "go" on stdin, load, print RESULT."""
    spec = WorkerSpec(**json.loads(spec_text))
    stats = _Stats()

    def go() -> None:
        print(READY_LINE, flush=True)
        sys.stdin.readline()

    try:
        if spec.system == "limits":
            duration = _limits_load(spec, stats, go)
        else:
            duration = asyncio.run(_async_load(spec, stats, go))
    except Exception as error:  # reported to the driver
        print(WorkerResult(spec.run.label, 0, 0, 1, 0.0, error=f"{type(error).__name__}: "
                           f"{error}").to_line(), flush=True)  # fmt: skip
        return 1
    with stats.lock:
        result = WorkerResult(spec.run.label, stats.ok, stats.over, stats.errors, duration,
                              stats.latency_ms, dict(stats.ok_per_key), stats.error)  # fmt: skip
    print(result.to_line(), flush=True)
    return 0


# ---------------------------------------------------------------------------
# the systems


class SynodRateLimitCluster(SynodCluster):
    """3 Synod members with gossip (the ring comes from it) and the RLS gRPC API."""

    def __init__(self, root: Path, size: int) -> None:
        super().__init__(root, size)
        gossip = [free_port() for _ in self.members]
        self.rls = [f"127.0.0.1:{free_port()}" for _ in self.members]
        for i, member in enumerate(self.members):
            seeds = ",".join(f"127.0.0.1:{p}" for j, p in enumerate(gossip) if j != i)
            member.args += ["--listen-gossip", f"127.0.0.1:{gossip[i]}", "--gossip-join", seeds,
                            "--listen-rls", self.rls[i]]  # fmt: skip

    def start(self) -> None:
        super().start()
        _put_policy(self.leader().client_url, synod_policy())
        deadline = time.monotonic() + RING_WAIT_S_MAX
        while time.monotonic() < deadline:  # bound: RING_WAIT_S_MAX
            self.check_alive()
            if all(self._ring_size(m) == self.size for m in self.members):
                return
            time.sleep(POLL_S)
        raise BenchError(f"synod: the rings did not reach {self.size} members ({self.root})")

    def _ring_size(self, member: Member) -> int:
        try:
            status = http_json(member.client_url + "/v1/ratelimit/status", timeout_s=1.0)
        except (OSError, ValueError):
            return 0
        return len(status.get("ring", [])) if isinstance(status, dict) else 0

    def endpoints(self, api: str) -> list[str]:
        return [m.client_url for m in self.members] if api == "http" else list(self.rls)


def metric_sum(metrics_text: str, name: str) -> float:
    """The sum of every sample of ``name`` (any labels) in a Prometheus text page."""
    total = 0.0
    for line in metrics_text.splitlines():  # bound: the page's lines
        if line.startswith((name + " ", name + "{")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def synod_fallbacks(cluster: SynodRateLimitCluster) -> float:
    """Owner-mode checks the members counted themselves because the owner did not answer
    in time (synod_ratelimit_owner_fallbacks_total, all members). Raises nothing."""
    total = 0.0
    for member in cluster.members:
        try:
            with urllib.request.urlopen(member.client_url + "/metrics", timeout=5) as answer:
                text = answer.read().decode()
        except OSError:
            continue
        total += metric_sum(text, "synod_ratelimit_owner_fallbacks_total")
    return total


def _put_policy(url: str, policy: dict[str, Any]) -> None:
    data = json.dumps(policy).encode()
    req = urllib.request.Request(url + "/v1/ratelimit/policies", data=data, method="PUT",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            assert answer.status == 200, answer.status
    except OSError as error:
        raise BenchError(f"synod: the policy was not stored: {error}") from None


class GubernatorCluster(ClusterUnderTest):
    """3 gubernator members (gRPC, HTTP gateway) finding each other with memberlist.

    v2.13.0's memberlist discovery keys peers by IP address and names a member after its
    host name (no setting for either): members sharing an address or a host name see
    only themselves. So member i listens on its own loopback address 127.0.0.i and runs
    in its own UTS namespace with its own host name (``unshare --uts``, as root), as if
    on separate machines."""

    system = "gubernator"

    def __init__(self, root: Path, size: int, binary: str) -> None:
        super().__init__(root, size)
        assert size < 255, size
        ips = [f"127.0.0.{i}" for i in range(1, size + 1)]
        ports = [(free_port(), free_port(), free_port()) for _ in range(size)]
        known = ",".join(f"{ip}:{m}" for ip, (_, _, m) in zip(ips, ports, strict=True))
        base = {k: v for k, v in os.environ.items() if not k.startswith(("GUBER_", "OTEL_"))}
        self.envs: list[dict[str, str]] = []
        self.grpc: list[str] = []
        for i, (ip, (grpc_port, http_port, ml_port)) in enumerate(zip(ips, ports, strict=True),
                                                                  start=1):  # fmt: skip
            self.envs.append({**base,
                "GUBER_GRPC_ADDRESS": f"{ip}:{grpc_port}",
                "GUBER_HTTP_ADDRESS": f"{ip}:{http_port}",
                "GUBER_ADVERTISE_ADDRESS": f"{ip}:{grpc_port}",
                "GUBER_PEER_DISCOVERY_TYPE": "member-list",
                "GUBER_MEMBERLIST_ADDRESS": f"{ip}:{ml_port}",
                "GUBER_MEMBERLIST_BIND_ADDRESS": f"{ip}:{ml_port}",
                "GUBER_MEMBERLIST_KNOWN_NODES": known,
                "GUBER_LOG_LEVEL": "warn",
                "GUBER_INSTANCE_ID": f"guber-{i}",
                "OTEL_TRACES_EXPORTER": "none",
            })  # fmt: skip
            self.grpc.append(f"{ip}:{grpc_port}")
            args = ["unshare", "--uts", "sh", "-c", f'hostname guber-{i} && exec "$0"', binary]
            self.members.append(Member(f"gubernator-{i}", f"http://{ip}:{http_port}", args,
                                       root / f"member-{i}.log"))  # fmt: skip

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for member, env in zip(self.members, self.envs, strict=True):
            member.start(env)
        self.leader(wait_s=RING_WAIT_S_MAX)

    def _find_leader(self) -> Member | None:
        """Every member healthy and seeing all peers (gubernator has no leader)."""
        for member in self.members:
            try:
                health = http_json(member.client_url + "/v1/HealthCheck", timeout_s=1.0)
            except (OSError, ValueError):
                return None
            if health.get("status") != "healthy" or int(health.get("peer_count", 0)) != self.size:
                return None
        return self.members[0]

    def endpoints(self, api: str) -> list[str]:
        return [m.client_url for m in self.members] if api == "http" else list(self.grpc)


ENVOY_CONFIG: Final = f"""domain: {DOMAIN}
descriptors:
  - key: fixed-window
    rate_limit:
      unit: {UNIT}
      requests_per_unit: {LIMIT}
"""


class EnvoyRateLimitCluster(ClusterUnderTest):
    """3 envoyproxy/ratelimit services (stateless) sharing one Redis (persistence off),
    the policy in a runtime directory; a key-only descriptor counts per value."""

    system = ENVOY

    def __init__(self, root: Path, size: int, binary: str, redis_server: str) -> None:
        super().__init__(root, size)
        self.redis = RedisServer(root / "redis", redis_server, aof=False)
        redis_address = self.redis.members[0].client_url
        base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        self.envs: list[dict[str, str]] = []
        self.grpc: list[str] = []
        for i in range(1, size + 1):
            http_port, grpc_port, debug_port = free_port(), free_port(), free_port()
            self.envs.append({**base,
                "HOST": "127.0.0.1", "PORT": str(http_port),
                "GRPC_HOST": "127.0.0.1", "GRPC_PORT": str(grpc_port),
                "DEBUG_HOST": "127.0.0.1", "DEBUG_PORT": str(debug_port),
                "RUNTIME_ROOT": str(root / "runtime"), "RUNTIME_SUBDIRECTORY": "ratelimit",
                "RUNTIME_WATCH_ROOT": "false", "RUNTIME_IGNOREDOTFILES": "true",
                "USE_STATSD": "false", "LOG_LEVEL": "warn",
                "REDIS_SOCKET_TYPE": "tcp", "REDIS_URL": redis_address,
            })  # fmt: skip
            self.grpc.append(f"127.0.0.1:{grpc_port}")
            self.members.append(Member(f"envoy-ratelimit-{i}", f"http://127.0.0.1:{http_port}",
                                       [binary], root / f"member-{i}.log"))  # fmt: skip

    def start(self) -> None:
        config = self.root / "runtime" / "ratelimit" / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "bench.yaml").write_text(ENVOY_CONFIG)
        self.redis.start()
        for member, env in zip(self.members, self.envs, strict=True):
            member.start(env)
        self.leader(wait_s=RING_WAIT_S_MAX)

    def stop(self) -> None:
        super().stop()
        self.redis.stop()

    def _find_leader(self) -> Member | None:
        """Every service answering its health check (no leader: Redis holds the counts)."""
        for member in self.members:
            try:
                with urllib.request.urlopen(member.client_url + "/healthcheck", timeout=1) as r:
                    if r.status != 200:
                        return None
            except OSError:
                return None
        return self.members[0]

    def endpoints(self, api: str) -> list[str]:
        assert api == "grpc", api
        return list(self.grpc)


# ---------------------------------------------------------------------------
# driving


def spawn(workers: Workers, spec: WorkerSpec) -> subprocess.Popen[str]:
    """A worker process of this module (Workers.spawn starts synod.bench.locks')."""
    from synod.bench.etcd_compare import _die_with_parent

    process = subprocess.Popen(
        [sys.executable, "-m", "synod.bench.ratelimit", "--worker", json.dumps(asdict(spec))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=_die_with_parent,  # noqa: PLW1509 (one thread here)
    )  # fmt: skip
    workers.processes.append(process)
    return process


def run_load(run: Run, endpoints: list[str], run_id: str, duration_s: float) -> Measurement:
    """PROCESSES workers x TASKS_PER_PROCESS requests in flight for duration_s."""
    workers = Workers()
    try:
        processes = [
            spawn(
                workers,
                WorkerSpec(run.system, run.api, run.mode, endpoints, run_id, index, duration_s),
            )
            for index in range(PROCESSES)
        ]
        for process in processes:
            line = read_line(process, lambda s: s == READY_LINE or s.startswith(RESULT_PREFIX),
                             WORKER_READY_S_MAX)  # fmt: skip
            if line.startswith(RESULT_PREFIX):
                raise BenchError(parse_worker_output(line).error or "worker failed to start")
        busy_before, total_before = machine_cpu_ticks()
        extra_s = WORKER_EXTRA_S_MAX
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        results = [
            parse_worker_output(
                read_line(process, lambda s: s.startswith(RESULT_PREFIX), duration_s + extra_s)
            )
            for process in processes
        ]
        busy_after, total_after = machine_cpu_ticks()
        busy = 100 * (busy_after - busy_before) / max(1, total_after - total_before)
        return combine(run, results, busy)
    finally:
        workers.kill_all()


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def gubernator_binary() -> str | None:
    """$GUBERNATOR_BIN, else the cached build of install-gubernator.sh, else PATH."""
    for candidate in (os.environ.get("GUBERNATOR_BIN", ""), f"{GUBERNATOR_DIR}/gubernator"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("gubernator")


def envoy_binary() -> str | None:
    """$ENVOY_RATELIMIT_BIN, else the cached build of install-envoy-ratelimit.sh."""
    for candidate in (os.environ.get("ENVOY_RATELIMIT_BIN", ""), f"{ENVOY_DIR}/service_cmd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _own_hostnames() -> bool:
    """Whether a process can get its own host name here (unshare --uts, as root)."""
    try:
        run = subprocess.run(["unshare", "--uts", "hostname", "synod-bench"],
                             capture_output=True, timeout=10, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return run.returncode == 0


def check_prerequisites(systems: Sequence[str]) -> dict[str, str]:
    """Binaries per system; every missing piece at once. Raises PrerequisiteError."""
    problems: list[str] = []
    found: dict[str, str] = {}
    if "gubernator" in systems:
        binary = gubernator_binary()
        if binary is None:
            problems.append(f"gubernator: no binary: {INSTALL_HINT.format('gubernator')}")
        elif not _own_hostnames():
            problems.append("gubernator: `unshare --uts` failed (needs root): its members on "
                            "one host need their own host names")  # fmt: skip
        else:
            found["gubernator"] = binary
    if "limits" in systems:
        redis = shutil.which("redis-server")
        if redis is None:
            problems.append(f"limits: redis-server is not on PATH: {INSTALL_HINT.format('redis')}")
        else:
            found["limits"] = redis
        for module in ("limits", "redis"):
            try:
                importlib.import_module(module)
            except ImportError as error:
                problems.append(f"limits: Python module missing ({error}): {PIP_HINT}")
    if ENVOY in systems:
        envoy = envoy_binary()
        redis = shutil.which("redis-server")
        if envoy is None:
            problems.append(f"{ENVOY}: no binary: {INSTALL_HINT.format('envoy-ratelimit')}")
        elif redis is None:
            problems.append(f"{ENVOY}: redis-server is not on PATH: {INSTALL_HINT.format('redis')}")
        else:
            found[ENVOY], found["redis"] = envoy, redis
    if problems:
        raise PrerequisiteError("\n".join(f"  - {p}" for p in problems))
    return found


def _busy_sample(seconds: float) -> float:
    busy_before, total_before = machine_cpu_ticks()
    time.sleep(seconds)
    busy_after, total_after = machine_cpu_ticks()
    return 100 * (busy_after - busy_before) / max(1, total_after - total_before)


def _versions(binaries: dict[str, str]) -> str:
    out = []
    if "gubernator" in binaries:
        out.append(f"gubernator {GUBERNATOR_VERSION}")
    if ENVOY in binaries:
        out.append(f"envoyproxy/ratelimit {ENVOY_VERSION}")
    if "limits" in binaries:
        limits: Any = importlib.import_module("limits")
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            run = subprocess.run([binaries["limits"], "--version"], capture_output=True, text=True,
                                 timeout=10, check=False)  # fmt: skip
            out.append(f"limits {limits.__version__} + {' '.join(run.stdout.split()[:3])}")
    return "; ".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m synod.bench.ratelimit",
        description="Synod's rate limits against gubernator and limits+Redis: decisions/s, "
        "latency, measured over-admission.",
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated subset of {','.join(SYSTEMS)}")  # fmt: skip
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None, help="write all figures here")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="py-spy one Synod member (the first) during each synod gRPC "
                        "run; raw stacks and a summary into DIR")  # fmt: skip
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.worker is not None:
        return worker_main(args.worker)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    try:
        runs = runs_for(systems)
    except ValueError as error:
        parser.error(str(error))
    duration_s = float(os.environ.get("BENCH_RATELIMIT_DURATION_S", DURATION_S_DEFAULT))
    if not 0.5 <= duration_s <= DURATION_S_MAX:
        parser.error(f"BENCH_RATELIMIT_DURATION_S must be in [0.5, {DURATION_S_MAX}]")
    try:
        binaries = check_prerequisites(systems)
    except PrerequisiteError as error:
        print(f"bench-ratelimit: prerequisites missing:\n{error}", file=sys.stderr)
        return 2
    py_spy = shutil.which("py-spy") or _beside_python("py-spy")
    if args.profile is not None:
        if py_spy is None:
            print("bench-ratelimit: --profile needs py-spy (pip install py-spy)", file=sys.stderr)
            return 2
        args.profile.mkdir(parents=True, exist_ok=True)
    profiles: dict[str, list[str]] = {}

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    root = Path(tempfile.mkdtemp(prefix="synod-bench-ratelimit-",
                                 dir=os.environ.get("BENCH_TMPDIR") or None))  # fmt: skip
    clusters: dict[str, Any] = {}
    results: list[Measurement] = []
    failures: dict[str, str] = {}
    idle_busy = _busy_sample(2.0)
    load_before = os.getloadavg()
    _say(f"machine busy before the clusters start: {idle_busy:.0f}% (2 s sample), "
         f"load average {load_before[0]:.1f}")  # fmt: skip
    status = 1
    try:
        for system in systems:
            cluster: Any
            if system == "synod":
                cluster = SynodRateLimitCluster(root / "synod", 3)
            elif system == ENVOY:
                cluster = EnvoyRateLimitCluster(root / "envoy", 3, binaries[ENVOY],
                                                binaries["redis"])  # fmt: skip
            elif system == "gubernator":
                cluster = GubernatorCluster(root / "gubernator", 3, binaries["gubernator"])
            else:
                cluster = RedisServer(root / "redis", binaries["limits"], aof=False)
            clusters[system] = cluster
            _say(f"starting {system}")
            try:
                cluster.start()
            except BenchError as error:
                failures[system] = str(error)
                _say(f"{system} did not start: {error}")
        for number, run in enumerate(runs):
            if run.system in failures:
                continue
            cluster = clusters[run.system]
            if run.system == "limits":
                endpoints = [f"redis://{cluster.members[0].client_url}"]
            else:
                endpoints = cluster.endpoints(run.api)
            if run.system == ENVOY:  # its windows are calendar minutes: stay inside one
                left = WINDOW_MS / 1000 - time.time() % (WINDOW_MS / 1000)
                if left < duration_s + MINUTE_MARGIN_S:
                    time.sleep(left + MINUTE_MARGIN_S / 2)
            _say(f"{run.label} ({duration_s:g} s)")
            fallbacks = synod_fallbacks(cluster) if run.system == "synod" else 0.0
            profiled = args.profile is not None and run.system == "synod" and run.api == "grpc"
            out = args.profile / f"synod-{run.mode}.txt" if profiled else None
            try:
                with profiling(py_spy, cluster.members[0].pid if profiled else 0, out,
                               duration_s):  # fmt: skip
                    results.append(run_load(run, endpoints, f"r{number}-{os.getpid()}",
                                            duration_s))  # fmt: skip
                if out is not None:
                    profiles[run.label] = summarize_profile(out, duration_s, top_n=12)
                if run.system == "synod" and run.mode == "owner":
                    fallbacks = synod_fallbacks(cluster) - fallbacks
                    results[-1].note = (
                        f"{fallbacks:.0f} owner fallbacks (a non-owner "
                        "counted alone: no answer from the owner in 500 ms)"
                    )
            except BenchError as error:
                failures[run.label] = str(error)
                _say(f"{run.label} failed: {error}")
        status = 0 if not failures else 1
    except (KeyboardInterrupt, _Terminated) as error:
        print(f"bench-ratelimit: interrupted ({error or 'SIGINT'})", file=sys.stderr)
        status = 130
    finally:
        for cluster in clusters.values():
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    load_after = os.getloadavg()
    print(
        f"\nbench-ratelimit on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
        f"{_versions(binaries)}; {PROCESSES} processes x {TASKS_PER_PROCESS} in flight, "
        f"{duration_s:g} s per run; machine busy before start {idle_busy:.0f}%, load "
        f"average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    for line in table(results):
        print(line)
    for what, reason in failures.items():
        print(f"  {what} DID NOT FINISH: {reason}")
    for label, summary in profiles.items():
        print(f"\nprofile of synod member 1 during {label}:")
        for line in summary:
            print(f"  {line}")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "idle_busy_pct": idle_busy,
            "runs": [{"run": m.run.label, "decisions_per_s": m.decisions_per_s,
                      "p50_ms": percentile(m.latency_ms, 50),
                      "p99_ms": percentile(m.latency_ms, 99), "ok": m.ok, "over": m.over,
                      "errors": m.errors, "admitted": m.admitted,
                      "over_admission_pct": m.over_admission(), "busy_pct": m.busy_pct,
                      "ok_per_key": m.ok_per_key, "note": m.note,
                      "error": m.error} for m in results],
            "failures": failures,
        }, indent=2))  # fmt: skip
    print(final_line(results))
    return status


if __name__ == "__main__":
    sys.exit(main())
