"""`make bench-ids`: ID generation throughput and latency (a benchmark, never a test).

Measured in one run on this machine, each for ``--duration`` seconds (default 3):

- the embedded snowflake generator of the SDK in one Python thread, ``next()`` one
  at a time and ``next_many(1000)``;
- ``POST /v1/ids/{g}/next`` against one node (a 1-member cluster), single and batched
  (``count=1000``), over 16 connections: IDs/s and request p50/p99 latency;
- segment mode through the SDK (``client.segment(...).next()``);
- Redis ``INCR`` one per ID and pipelined (1000 per round trip) over loopback, via a
  redis-py client (pyproject's ``bench`` extra);
- Python UUIDv7 (``synod.ids.uuid7``) and ``uuid.uuid4``.

The last line is ``bench-ids: embedded=N/s http_batched=N/s synod/redis=R`` where R
is the HTTP-batched rate over Redis INCR one-per-ID (both over the network). Redis is
skipped (R = n/a) when ``redis-server`` is not on PATH: ``install-redis.sh``
installs it. The etcd txn counter of the issue is not measured yet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from synod.bench.etcd_compare import free_port
from synod.client import Client
from synod.ids import uuid7

DURATION_S_DEFAULT = 3.0
CONNECTIONS = 16
BATCH = 1000
READY_WAIT_S_MAX = 30.0
POLL_S = 0.05
# Bounds every timed loop in iterations too (a fast loop still ends).
ITERATIONS_MAX = 50_000_000


@dataclass
class Row:
    name: str
    ids_per_s: float
    p50_ms: float | None = None
    p99_ms: float | None = None

    def line(self) -> str:
        lat = "" if self.p50_ms is None else f"  p50 {self.p50_ms:.2f} ms  p99 {self.p99_ms:.2f} ms"
        return f"{self.name:<40} {self.ids_per_s:>14,.0f} IDs/s{lat}"


def _timed(duration_s: float, step: Callable[[], int]) -> float:
    """IDs per second of calling ``step`` (which returns how many IDs it made)."""
    made, started = 0, time.perf_counter()
    deadline = started + duration_s
    for _ in range(ITERATIONS_MAX):  # bound: iterations and time
        made += step()
        if made % 64 == 0 or made >= BATCH:  # read the clock rarely for single IDs
            now = time.perf_counter()
            if now >= deadline:
                return made / (now - started)
    return made / (time.perf_counter() - started)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


@contextlib.contextmanager
def synod_node(root: Path) -> Iterator[str]:
    """A 1-member Synod cluster; yields its client URL."""
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    args = [sys.executable, "-m", "synod.node.main", "--id", "1", "--data-dir",
            str(root / "node"), "--listen-client", f"127.0.0.1:{client}", "--listen-peer",
            f"127.0.0.1:{peer}", "--initial-cluster", f"1=127.0.0.1:{peer}@{url}",
            "--log-level", "warning"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNOD_", "OTEL_"))}
    with (root / "node.log").open("ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait(lambda: _ready(url), "the synod node to be ready")
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _wait(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + READY_WAIT_S_MAX
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(POLL_S)
    raise SystemExit(f"bench-ids: timed out waiting for {what}")


async def _http(url: str, count: int, duration_s: float) -> Row:
    latencies: list[float] = []
    made = 0
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + duration_s

        async def worker() -> None:
            nonlocal made
            for _ in range(ITERATIONS_MAX):  # bound: iterations and time
                if time.perf_counter() >= deadline:
                    return
                started = time.perf_counter()
                async with session.post(f"{url}/v1/ids/bench/next", json={"count": count}) as r:
                    body = await r.json()
                    assert r.status == 200, body
                latencies.append((time.perf_counter() - started) * 1000)
                made += len(body["ids"])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
        elapsed = time.perf_counter() - started
    name = f"HTTP /next count={count}, {CONNECTIONS} conns"
    return Row(name, made / elapsed, _percentile(latencies, 0.5), _percentile(latencies, 0.99))


def _redis_rows(port: int, duration_s: float) -> list[Row]:
    """INCR through redis-py, what a Python service would use: one round trip per ID,
    and BATCH INCRs in one pipeline (no MULTI)."""
    redis = importlib.import_module("redis")  # the `bench` extra (untyped here)
    client = redis.Redis(port=port)
    try:

        def pipelined() -> int:
            pipe = client.pipeline(transaction=False)
            for _ in range(BATCH):  # bound: BATCH commands
                pipe.incr("k")
            return len(pipe.execute())

        return [
            Row("redis INCR one per ID (1 conn)",
                _timed(duration_s, lambda: client.incr("k") and 1)),
            Row(f"redis INCR pipelined {BATCH} (1 conn)", _timed(duration_s, pipelined)),
        ]  # fmt: skip
    finally:
        client.close()


@contextlib.contextmanager
def redis_server(root: Path) -> Iterator[int | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--save", "", "--appendonly", "no",
                                "--dir", str(root)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait(lambda: _connects(port), "redis-server")
        yield port
    finally:
        process.terminate()
        process.wait(10)


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def run(duration_s: float) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="synod-bench-ids-") as tmp:
        root = Path(tmp)
        with synod_node(root) as url, Client(url) as client:
            client.ids_define("bench")
            with client.snowflake("bench") as gen:
                rows.append(Row("embedded snowflake next()", _timed(duration_s, lambda: (
                    gen.next(), 1)[1])))  # fmt: skip
                rows.append(
                    Row(
                        f"embedded snowflake next_many({BATCH})",
                        _timed(duration_s, lambda: len(gen.next_many(BATCH))),
                    )
                )
            rows.append(asyncio.run(_http(url, 1, duration_s)))
            rows.append(asyncio.run(_http(url, BATCH, duration_s)))
            segment = client.segment("bench")
            rows.append(Row("segment (SDK) next()", _timed(duration_s, lambda: (
                segment.next(), 1)[1])))  # fmt: skip
        with redis_server(root) as port:
            if port is not None:
                rows.extend(_redis_rows(port, duration_s))
    rows.append(Row("python uuid7 (synod.ids)", _timed(duration_s, lambda: (uuid7(), 1)[1])))
    rows.append(Row("python uuid.uuid4", _timed(duration_s, lambda: (uuid.uuid4(), 1)[1])))
    assert rows and all(row.ids_per_s > 0 for row in rows)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=DURATION_S_DEFAULT,
                        help="seconds per measurement")  # fmt: skip
    args = parser.parse_args(argv)
    rows = run(args.duration)
    for row in rows:
        print(row.line())
    by_name = {row.name: row.ids_per_s for row in rows}
    embedded = by_name[f"embedded snowflake next_many({BATCH})"]
    batched = by_name[f"HTTP /next count={BATCH}, {CONNECTIONS} conns"]
    redis = by_name.get("redis INCR one per ID (1 conn)")
    ratio = "n/a" if not redis else f"{batched / redis:.1f}"
    print(f"bench-ids: embedded={embedded:.0f}/s http_batched={batched:.0f}/s synod/redis={ratio}")


if __name__ == "__main__":
    main()
