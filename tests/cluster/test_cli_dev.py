"""`synod dev --nodes 3` as a real subprocess, driven by the CLI and the SDK.

put/get, status JSON, a watch, a lease whose key vanishes on expiry, SIGTERM (clean
stop of every node), a restart that resumes the data, kill -9 of a node process, and
a second `synod dev` on the same data refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from synod.cli.dev import find_free_base_port, get_status, node_ports
from synod.cli.output import EXIT_NOT_FOUND
from synod.client import Client, WatchEvent
from tests.waiting import wait_until

WAIT_S_MAX = 30.0
# Faster ticks, but an election timeout that a loaded 2-core machine cannot trip.
FAST_NODE_ARGS = [
    "--node-arg=--tick-ms=20",
    "--node-arg=--heartbeat-interval-ms=100",
    "--node-arg=--election-timeout-ms=1000",
]


class DevProcess:
    """One `synod dev` subprocess and its output file."""

    def __init__(self, data_dir: Path, base_port: int) -> None:
        self.data_dir = data_dir
        self.base_port = base_port
        self.log = data_dir.parent / f"dev-{time.monotonic_ns()}.out"
        self.endpoints = ",".join(f"127.0.0.1:{node_ports(base_port, i)[0]}" for i in range(1, 4))
        args = [sys.executable, "-m", "synod.cli.main", "dev", "--nodes", "3",
                "--data-dir", str(data_dir), "--base-port", str(base_port),
                *FAST_NODE_ARGS]  # fmt: skip
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WAIT_S_MAX
        while time.monotonic() < deadline:
            if "Ready." in self.output():
                return
            assert self.process.poll() is None, self.output()
            time.sleep(0.1)
        raise AssertionError(f"synod dev not ready in {WAIT_S_MAX}s:\n{self.output()}")

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=WAIT_S_MAX)

    def cleanup(self) -> None:
        """Never leave processes behind, even when the test failed half-way."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT_S_MAX)
        for pid_file in self.data_dir.glob("node-*.pid"):
            with contextlib.suppress(OSError, ValueError, ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.fixture
def dev_factory(tmp_path: Path) -> Iterator[list[DevProcess]]:
    made: list[DevProcess] = []
    yield made
    for dev in made:
        dev.cleanup()


def start_dev(made: list[DevProcess], data_dir: Path, base_port: int) -> DevProcess:
    dev = DevProcess(data_dir, base_port)
    made.append(dev)
    dev.wait_ready()
    return dev


def synod(dev: DevProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYNOD_ENDPOINTS": dev.endpoints}
    return subprocess.run(
        [sys.executable, "-m", "synod.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_S_MAX,
        check=False,
    )


def watch_in_background(
    client: Client, key: str, count: int, start_revision: int = 0
) -> queue.Queue[WatchEvent]:
    events: queue.Queue[WatchEvent] = queue.Queue()

    def run() -> None:
        stream = client.watch(key, prefix=True, start_revision=start_revision)
        for seen, event in enumerate(stream, start=1):
            events.put(event)
            if seen == count:
                return

    threading.Thread(target=run, daemon=True).start()
    return events


def test_dev_cluster_cli_sdk_sigterm_and_resume(
    dev_factory: list[DevProcess], tmp_path: Path
) -> None:
    base_port = find_free_base_port(3, preferred=random.randrange(20000, 32000))
    data_dir = tmp_path / "dev"
    dev = start_dev(dev_factory, data_dir, base_port)
    assert "starting 3 nodes" in dev.output()
    second = synod(dev, "dev", "--data-dir", str(data_dir))
    assert second.returncode == 1 and "already runs" in second.stderr
    mismatch = synod(dev, "dev", "--data-dir", str(data_dir), "--nodes", "5")
    assert mismatch.returncode == 2 and "holds a 3-node cluster" in mismatch.stderr

    assert synod(dev, "kv", "put", "greeting", "hello").returncode == 0
    got = synod(dev, "kv", "get", "greeting")
    assert (got.returncode, got.stdout) == (0, "hello\n"), got.stderr
    status = json.loads(synod(dev, "status", "-o", "json").stdout)
    assert status["leader_id"] in (1, 2, 3)
    assert [m["reachable"] for m in status["members"]] == [True, True, True]
    roles = {m["status"]["role"] for m in status["members"]}
    assert roles <= {"leader", "follower", "candidate", "pre-candidate"}

    with Client(dev.endpoints, timeout_s=2.0) as client:
        # Start the watch at the next revision: whenever its stream connects, it sees
        # every write made from here on.
        now = client.range("session/", prefix=True, count_only=True).header.revision
        events = watch_in_background(client, "session/", 2, start_revision=now + 1)
        lease = client.lease_grant(1000)
        client.put("session/worker", "alive", lease=lease.id)
        seen = [events.get(timeout=WAIT_S_MAX) for _ in range(2)]
        assert [(e.type, e.kv.key) for e in seen] == [
            ("put", "session/worker"),
            ("delete", "session/worker"),
        ]
        assert client.get("session/worker") is None

    assert dev.terminate() == 0
    assert "stopped." in dev.output()
    assert not list(data_dir.glob("*.pid"))
    assert get_status(f"http://127.0.0.1:{base_port}", 0.5) is None

    again = start_dev(dev_factory, data_dir, base_port)
    assert "resuming 3 nodes" in again.output()
    got = synod(again, "kv", "get", "greeting")
    assert (got.returncode, got.stdout) == (0, "hello\n"), got.stderr
    assert synod(again, "kv", "get", "session/worker").returncode == EXIT_NOT_FOUND

    # kill -9 of one node: `synod dev` reports it, the others keep serving.
    victim = int((data_dir / "node-1.pid").read_text())
    os.kill(victim, signal.SIGKILL)
    with Client(again.endpoints, timeout_s=2.0) as client:
        client.put("after-kill", "ok")
        kv = client.get("after-kill")
        assert kv is not None and kv.value == "ok"
    wait_until(lambda: "node 1 exited" in again.output(), WAIT_S_MAX, "synod dev to report")
    assert "node 1 exited with code -9" in again.output()
    assert again.terminate() == 0
