"""The chaos recorder: client tasks drive the Synod SDK and record what they observed.

One module for every tier: the ChaosExperiment's recorder Job (``python -m
synod.chaos.recorder``), the process-cluster tests (`RecorderThread`) and the operator
e2e test. Calls go through `synod.client.AsyncClient`, one client (one session) per
task, so the SDK's retries, leader discovery and exactly-once sessions are part of what
is checked. Workloads:

* ``kv``: put a unique value, read (linearizable; ``unsafe=serializable-reads`` reads
  serializably, which a checker must catch under a partition), compare-and-swap;
* ``locks``: acquire a fenced lock, write the resource through ``fenced_txn`` (the
  cluster refuses a stale token), release; ``unsafe=ignore-fencing`` writes without the
  fence;
* ``ids``: node-issued snowflake IDs of one generator (strict order checked per worker
  id, i.e. per node generator; uniqueness across all of them).

A call whose outcome the SDK reports unknown stays pending in the history (it may have
taken effect at any later moment). Every loop is bounded: by the duration, by
`operations_max` (the history stops growing, the run ends), and by `stop()`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from synod.chaos.verdict import (
    CHECKERS_BY_KIND,
    KINDS,
    Recording,
    Verdict,
    encode_history,
    judge,
)
from synod.checker.history import HistoryRecorder
from synod.checker.ids import IssuedId
from synod.checker.locks import FencedWrite, LockHold
from synod.checker.models import Cas, Get, Put
from synod.client import AsyncClient, CompareFailed, SynodError, normalize_endpoints
from synod.client.errors import AlreadyExists, FencingTokenStale
from synod.client.ids import define, get_remote, next_remote
from synod.client.txn import Txn
from synod.client.txn import put as put_op
from synod.ids import Layout

CLIENTS_MAX: Final = 64
RATE_PER_S_MAX: Final = 10_000.0
DURATION_S_MAX: Final = 24 * 3600.0
OPERATIONS_MAX_DEFAULT: Final = 100_000
# The stop key is polled this often (a serializable read of any member).
STOP_POLL_S: Final = 1.0
# Fenced writes per hold, and IDs per call.
WRITES_PER_HOLD: Final = 2
IDS_PER_CALL: Final = 5
# A recorder thread must wind down within this after stop(): the SDK's attempts are
# bounded (attempts_max x timeout_s), the stop is checked between calls.
THREAD_STOP_S_MAX: Final = 120.0
UNSAFE_BY_KIND: Final[dict[str, tuple[str, ...]]] = {
    "kv": ("", "serializable-reads"),
    "locks": ("", "ignore-fencing"),
    "ids": ("",),
}
# SDK options of the recorder's clients: short attempts, enough of them to ride out an
# election; the SDK's own backoff spaces them.
CLIENT_OPTIONS_DEFAULT: Final[dict[str, Any]] = {"timeout_s": 3.0, "attempts_max": 12}


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """What to run. `rate_per_s` is for all clients together (0: as fast as answers
    come). Raises ValueError (from construction) on anything out of bounds."""

    kind: str = "kv"
    clients: int = 3
    rate_per_s: float = 0.0
    duration_s: float = 60.0
    seed: int = 1
    keys: tuple[str, ...] = ("a", "b", "c", "d")
    prefix: str = "chaos/"
    operations_max: int = OPERATIONS_MAX_DEFAULT
    unsafe: str = ""
    lock_ttl_ms: int = 3_000
    lock_wait_ms: int = 10_000
    generator: str = "chaos"
    checkers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not 1 <= self.clients <= CLIENTS_MAX:
            raise ValueError(f"clients must be in [1, {CLIENTS_MAX}], got {self.clients}")
        if not 0 <= self.rate_per_s <= RATE_PER_S_MAX:
            raise ValueError(f"rate_per_s must be in [0, {RATE_PER_S_MAX}]")
        if not 0 < self.duration_s <= DURATION_S_MAX:
            raise ValueError(f"duration_s must be in (0, {DURATION_S_MAX}]")
        if not self.keys or self.operations_max < 1:
            raise ValueError("at least one key and operations_max >= 1")
        if self.unsafe not in UNSAFE_BY_KIND[self.kind]:
            raise ValueError(f"unsafe must be one of {UNSAFE_BY_KIND[self.kind]} for "
                             f"{self.kind}, got {self.unsafe!r}")  # fmt: skip
        bad = [c for c in self.checkers if c not in CHECKERS_BY_KIND[self.kind]]
        if bad:
            raise ValueError(f"checkers {bad} do not apply to {self.kind}")


class Recorder:
    """Runs one workload against `endpoints` and keeps its `Recording`.

    Not thread-safe: one event loop runs `run`; `stop` is called on that loop (see
    `RecorderThread` for other threads)."""

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        spec: WorkloadSpec,
        *,
        client_options: dict[str, Any] | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        """Nothing connects before `run`. Raises nothing."""
        self.endpoints = endpoints
        self.spec = spec
        self.client_options = {**CLIENT_OPTIONS_DEFAULT, **(client_options or {})}
        self.clock_ns = clock_ns
        self.recording = Recording(spec.kind)
        self.history = HistoryRecorder(spec.operations_max)
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._values = 0
        self._last_ack_ns = 0
        self._started_ns = 0
        self._layout: Layout | None = None
        self._readers: dict[int, AsyncClient] = {}  # unsafe serializable readers

    @property
    def acknowledged(self) -> int:
        """Operations acknowledged so far (read from any thread: one int)."""
        return self.recording.acknowledged

    def stop(self) -> None:
        """End the run after the calls in flight (call on the recorder's loop)."""
        self._stop_requested = True
        if self._stopping is not None:
            self._stopping.set()

    def _stopped(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()

    async def run(self, *, stop_key: str = "", final_reads: bool = True) -> Recording:
        """Run until the duration passes, `stop()`, `stop_key` appears in the cluster or
        `operations_max` is reached; then (kv) read every key once more, so that the
        history ends with what survived. Returns the recording. Raises SynodError when
        no client could start (the cluster never answered)."""
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        self._started_ns = self._last_ack_ns = self.clock_ns()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.spec.duration_s
        tasks = [loop.create_task(self._client(index, deadline)) for index in
                 range(self.spec.clients)]  # fmt: skip
        watcher = loop.create_task(self._watch_stop(stop_key, deadline))
        try:
            results = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        for result in results:
            if isinstance(result, BaseException):
                self.recording.note_error(f"client task ended: {type(result).__name__} {result}")
        if final_reads and self.spec.kind == "kv":
            await self._final_reads()
        self._note_gap(self.clock_ns())
        self.recording.run_ms = (self.clock_ns() - self._started_ns) // 1_000_000
        self.recording.operations = self.history.history()
        assert len(self.recording.operations) <= self.spec.operations_max
        return self.recording

    def verdict(self) -> Verdict:
        """The checkers' verdict over the recording (after `run`)."""
        return judge(self.recording, self.spec.checkers)

    # -- the loop of one client --------------------------------------------------------

    async def _client(self, index: int, deadline: float) -> None:
        rng = random.Random(self.spec.seed * 1000 + index)
        interval_s = self.spec.clients / self.spec.rate_per_s if self.spec.rate_per_s else 0.0
        loop = asyncio.get_running_loop()
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(
                AsyncClient(self.endpoints, **self.client_options)
            )
            if self.spec.unsafe == "serializable-reads":
                # The unsafe client reads where it happens to be connected, never looking
                # for the leader: client i starts at endpoint i.
                urls = normalize_endpoints(self.endpoints)
                shift = index % len(urls)
                reader = AsyncClient(urls[shift:] + urls[:shift], **{
                    **self.client_options, "discover_leader": False})  # fmt: skip
                self._readers[index] = await stack.enter_async_context(reader)
            if self.spec.kind == "ids":
                with contextlib.suppress(AlreadyExists):
                    await define(client, self.spec.generator)
                if self._layout is None:
                    definition = (await get_remote(client, self.spec.generator))["generator"]
                    fields = ("time_bits", "worker_bits", "sequence_bits", "epoch_ms")
                    self._layout = Layout.from_dict({k: definition[k] for k in fields
                                                     if k in definition})  # fmt: skip
            for _op in range(self.spec.operations_max):  # bound: operations_max
                if self._stopped() or loop.time() >= deadline or self._full():
                    break
                if self.spec.kind == "kv":
                    await self._kv_op(client, index, rng)
                elif self.spec.kind == "locks":
                    await self._lock_op(client, index, rng)
                else:
                    await self._ids_op(client)
                if interval_s:
                    with contextlib.suppress(TimeoutError):
                        assert self._stopping is not None
                        await asyncio.wait_for(self._stopping.wait(), interval_s)

    def _full(self) -> bool:
        """The history is at its bound: the run ends rather than lose records."""
        r = self.recording
        recorded = len(self.history) + len(r.holds) + len(r.writes) + len(r.ids)
        return recorded + self.spec.clients * WRITES_PER_HOLD + len(self.spec.keys) >= (
            self.spec.operations_max
        )

    async def _watch_stop(self, stop_key: str, deadline: float) -> None:
        """Stop at the deadline, or when `stop_key` appears (serializable reads)."""
        assert self._stopping is not None
        loop = asyncio.get_running_loop()
        async with AsyncClient(self.endpoints, **self.client_options) as client:
            for _poll in range(int(DURATION_S_MAX / STOP_POLL_S)):  # bound: the longest run
                if loop.time() >= deadline:
                    break
                if stop_key:
                    with contextlib.suppress(SynodError):
                        if await client.get(stop_key, serializable=True) is not None:
                            break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), STOP_POLL_S)
                    return
        self._stopping.set()

    # -- bookkeeping -------------------------------------------------------------------

    def _invoke(self, client: int, op: object) -> int:
        return self.history.invoke(client, op, self.clock_ns())

    def _acked(self) -> int:
        now = self.clock_ns()
        self._note_gap(now)
        self._last_ack_ns = now
        self.recording.acknowledged += 1
        return now

    def _note_gap(self, now: int) -> None:
        gap_ms = (now - self._last_ack_ns) // 1_000_000
        self.recording.longest_unavailable_ms = max(self.recording.longest_unavailable_ms, gap_ms)

    def _unknown(self, what: str, error: SynodError) -> None:
        self.recording.unknown += 1
        self.recording.note_error(f"{what}: {type(error).__name__}: {error}")

    # -- kv ----------------------------------------------------------------------------

    async def _kv_op(self, client: AsyncClient, index: int, rng: random.Random) -> None:
        key = self.spec.prefix + rng.choice(self.spec.keys)
        roll = rng.random()
        if roll < 0.35:
            await self._read(client, index, key)
            return
        self._values += 1
        value = f"v{self.spec.seed}-{self._values}"
        if roll < 0.8:
            handle = self._invoke(index, Put(key, value))
            try:
                await client.put(key, value)
            except SynodError as error:
                self._unknown(f"put {key}", error)
                return
            self.history.complete(handle, None, self._acked())
            return
        try:
            current = await client.get(key, serializable=True)
        except SynodError as error:
            self.recording.failed += 1
            self.recording.note_error(f"read before cas {key}: {error}")
            return
        expected = current.value if current is not None else None
        handle = self._invoke(index, Cas(key, expected, value))
        try:
            await client.cas(key, expected, value)
            succeeded = True
        except CompareFailed:
            succeeded = False
        except SynodError as error:
            self._unknown(f"cas {key}", error)
            return
        self.history.complete(handle, succeeded, self._acked())

    async def _read(self, client: AsyncClient, index: int, key: str) -> None:
        handle = self._invoke(index, Get(key))
        serializable = self.spec.unsafe == "serializable-reads"
        try:
            kv = await self._readers.get(index, client).get(key, serializable=serializable)
        except SynodError as error:
            self.recording.failed += 1  # a read that never returned constrains nothing
            self.recording.note_error(f"get {key}: {type(error).__name__}: {error}")
            return
        self.history.complete(handle, kv.value if kv is not None else None, self._acked())

    async def _final_reads(self) -> None:
        """Each key read once after the run: acknowledged writes must show."""
        async with AsyncClient(self.endpoints, **self.client_options) as client:
            for key in self.spec.keys:  # bound: keys
                await self._read(client, self.spec.clients, self.spec.prefix + key)

    # -- locks -------------------------------------------------------------------------

    async def _lock_op(self, client: AsyncClient, index: int, rng: random.Random) -> None:
        name = self.spec.prefix + "lock/" + rng.choice(self.spec.keys)
        holder = f"client-{index}"
        lock = client.lock(
            name,
            ttl_ms=self.spec.lock_ttl_ms,
            wait_ms=self.spec.lock_wait_ms,
            owner=f"chaos-{self.spec.seed}-{index}",
            cancel_on_lost=False,
        )
        try:
            await lock.acquire()
        except SynodError as error:
            self.recording.failed += 1
            self.recording.note_error(f"acquire {name}: {type(error).__name__}: {error}")
            return
        acquired = self._acked()
        token = lock.token
        for _write in range(WRITES_PER_HOLD):  # bound: writes per hold
            await self._fenced_write(client, lock, name, holder, token)
        releasing = self.clock_ns()
        if lock.lost is not None:
            # The holder relied on the lock only until its conservative deadline.
            releasing = max(acquired, min(releasing, int(lock.safe_until * 1e9)))
        await lock.release()
        self.recording.holds.append(LockHold(name, holder, token, acquired, releasing))

    async def _fenced_write(
        self, client: AsyncClient, lock: Any, name: str, holder: str, token: int
    ) -> None:
        """Write the lock's resource key; record the revision the cluster answered at."""
        txn = Txn().then(put_op(name + "/resource", f"{holder}:{token}"))
        try:
            if self.spec.unsafe == "ignore-fencing":
                result = await client.txn(txn)
            else:
                result = await lock.fenced_txn(txn)
            revision, accepted = result.header.revision, True
            self._acked()
        except FencingTokenStale:
            accepted = False
            try:  # the refusal happened at or before the revision a read sees now
                revision = (await client.range(name + "/resource")).header.revision
            except SynodError as error:
                self._unknown(f"revision after refusal {name}", error)
                return
        except SynodError as error:
            self._unknown(f"fenced write {name}", error)
            return
        self.recording.writes.append(
            FencedWrite(name, holder, token, revision, bool(lock.held), accepted)
        )

    # -- ids ---------------------------------------------------------------------------

    async def _ids_op(self, client: AsyncClient) -> None:
        called = self.clock_ns()
        try:
            values = await next_remote(client, self.spec.generator, IDS_PER_CALL)
        except SynodError as error:
            self.recording.failed += 1
            self.recording.note_error(f"ids next: {type(error).__name__}: {error}")
            return
        returned = self._acked()
        assert self._layout is not None, "read when the client started"
        # Strict order is promised per node generator, i.e. per worker id (a new leader's
        # generator is another worker: across them IDs are only k-sorted, docs/ids.md);
        # uniqueness across the whole generator.
        self.recording.ids.extend(
            IssuedId(f"{self.spec.generator}/worker-{self._layout.decode(value).worker}",
                     value, called, returned, self.spec.generator)
            for value in values
        )  # fmt: skip


class RecorderThread:
    """A `Recorder` on its own event loop thread, for blocking callers (the
    process-cluster tests): `start()`, watch `acknowledged`, `stop()` → verdict."""

    def __init__(
        self, endpoints: Sequence[str] | str, spec: WorkloadSpec, **client_options: Any
    ) -> None:
        self.recorder = Recorder(endpoints, spec, client_options=client_options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        # Daemon: a failing test must not leave the process unable to exit.
        self._thread = threading.Thread(target=self._main, daemon=True, name="chaos-recorder")

    @property
    def acknowledged(self) -> int:
        return self.recorder.acknowledged

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(timeout=THREAD_STOP_S_MAX), "the recorder loop did not start"

    def _main(self) -> None:
        async def body() -> None:
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await self.recorder.run()

        try:
            asyncio.run(body())
        except BaseException as error:  # reported by stop()
            self._error = error
            self._ready.set()

    def stop(self) -> Verdict:
        """Stop the clients, wait for the final reads, judge. Raises AssertionError when
        the recorder failed or hung."""
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.recorder.stop)
        self._thread.join(timeout=THREAD_STOP_S_MAX)
        assert not self._thread.is_alive(), "the recorder hung"
        if self._error is not None:
            raise AssertionError(f"the recorder failed: {self._error!r}") from self._error
        return self.recorder.verdict()


# -- the Job's entry point -------------------------------------------------------------


def parse_duration_s(text: str) -> float:
    """'90', '90s', '2m', '1h' or '500ms' as seconds. Raises ValueError."""
    text = text.strip()
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m synod.chaos.recorder",
        description="Record a workload's history against a Synod cluster and judge it.",
    )
    parser.add_argument("--endpoints", required=True, help="comma-separated client URLs")
    parser.add_argument("--kind", choices=KINDS, default="kv")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--rate", type=float, default=0.0, help="ops/s of all clients (0: max)")
    parser.add_argument("--duration", type=parse_duration_s, default=60.0, help="e.g. 60s, 2m")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--prefix", default="chaos/")
    parser.add_argument("--operations-max", type=int, default=OPERATIONS_MAX_DEFAULT)
    parser.add_argument("--unsafe", default="", help="serializable-reads | ignore-fencing")
    parser.add_argument("--generator", default="chaos")
    parser.add_argument("--checkers", default="", help="comma-separated; default: the kind's")
    parser.add_argument("--stop-key", default="", help="stop when this key appears")
    parser.add_argument("--history-out", type=Path, help="write the gzip'd JSON-lines history")
    parser.add_argument("--history-log", action="store_true", help="print the gzip'd history "
                        "as one 'HISTORY <base64>' line (the operator keeps it)")  # fmt: skip
    parser.add_argument("--result-out", type=Path, help="write the verdict JSON (e.g. "
                        "/dev/termination-log, read back by the operator)")  # fmt: skip
    return parser


def spec_from_args(args: argparse.Namespace) -> WorkloadSpec:
    """Raises ValueError on bad values."""
    return WorkloadSpec(
        kind=args.kind, clients=args.clients, rate_per_s=args.rate, duration_s=args.duration,
        seed=args.seed, prefix=args.prefix, operations_max=args.operations_max,
        unsafe=args.unsafe, generator=args.generator,
        checkers=tuple(c for c in args.checkers.split(",") if c),
    )  # fmt: skip


def result_document(verdict: Verdict, history_dropped: int) -> dict[str, Any]:
    """The RESULT line: the verdict plus how much of the history was kept."""
    doc = verdict.to_json()
    doc["historyRecordsDropped"] = history_dropped
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when Passed, 1 when Failed, 3 when Unknown, 2 on bad arguments."""
    args = build_parser().parse_args(argv)
    try:
        spec = spec_from_args(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    recorder = Recorder(args.endpoints.split(","), spec)
    recording = asyncio.run(recorder.run(stop_key=args.stop_key))
    verdict = recorder.verdict()
    data, dropped = encode_history(recording)
    if args.history_out:
        args.history_out.write_bytes(data)
    doc = result_document(verdict, dropped)
    if args.history_log:
        print("HISTORY " + base64.b64encode(data).decode(), flush=True)
    if args.result_out:
        # A termination message holds 4 KiB: the anomalies are cut to fit.
        args.result_out.write_text(json.dumps(_fit(doc, 4000)))
    print("RESULT " + json.dumps(doc), flush=True)
    return {"Passed": 0, "Failed": 1}.get(verdict.verdict, 3)


def _fit(doc: dict[str, Any], chars_max: int) -> dict[str, Any]:
    """Drop errors, then anomalies from the end, until the JSON fits."""
    fitted = {**doc, "anomalies": list(doc["anomalies"]), "errors": list(doc["errors"])}
    for _drop in range(len(fitted["errors"]) + len(fitted["anomalies"])):  # bound: items
        if len(json.dumps(fitted)) <= chars_max:
            break
        (fitted["errors"] or fitted["anomalies"]).pop()
    for anomaly in fitted["anomalies"]:  # bound: ANOMALIES_PER_CHECKER_MAX per checker
        if len(json.dumps(fitted)) <= chars_max:
            break
        anomaly["message"] = anomaly["message"][:200]
    return fitted


if __name__ == "__main__":
    sys.exit(main())
