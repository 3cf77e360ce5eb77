"""Real `synod node` processes on loopback, for the process-cluster tier.

Each node is a separate Python process started with `python -m synod.node.main`;
ports are picked free per test; `kill -9`, SIGTERM and restarts are real.
Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from synod.cli.dev import DevNode
from tests.ports import free_port

WAIT_S_MAX = 30.0


class Cluster:
    """A set of node processes sharing one initial membership."""

    def __init__(
        self,
        root: Path,
        size: int,
        *,
        extra_args: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
        etcd: bool = False,
    ) -> None:
        self.root = root
        # Each node's etcd v3 gRPC port (synod.etcdapi) when `etcd`, else none.
        self.etcd_ports: dict[int, int] = {}
        self.etcd = etcd
        self.extra_env = extra_env or {}
        self.nodes: dict[int, DevNode] = {}
        self.extra_args = extra_args or []
        for node_id in range(1, size + 1):
            self.nodes[node_id] = self._new_node(node_id)
        self.initial_cluster = ",".join(n.member_spec for n in self.nodes.values())

    def _new_node(self, node_id: int) -> DevNode:
        if self.etcd:
            self.etcd_ports[node_id] = free_port()
        return DevNode(
            node_id,
            free_port(),
            free_port(),
            self.root / f"node-{node_id}",
            self.root / f"node-{node_id}.log",
            self.root / f"node-{node_id}.pid",  # Unused here: tests own their processes.
        )

    def start(self, node_id: int, *, join: bool = False) -> None:
        node = self.nodes[node_id]
        assert not node.alive()
        args = [
            sys.executable, "-m", "synod.node.main",
            "--id", str(node_id),
            "--data-dir", str(node.data_dir),
            "--listen-client", f"127.0.0.1:{node.client_port}",
            "--listen-peer", f"127.0.0.1:{node.peer_port}",
            "--initial-cluster", self.initial_cluster,
            # A loaded 2-core CI machine stalls processes for tenths of a second:
            # a 1 s election timeout keeps elections for real failures only.
            "--tick-ms", "20", "--heartbeat-interval-ms", "100", "--election-timeout-ms", "1000",
            *self.extra_args,
        ]  # fmt: skip
        if join:
            args.append("--join")
        if node_id in self.etcd_ports:
            args += ["--listen-etcd", f"127.0.0.1:{self.etcd_ports[node_id]}"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
        env = {key: value.replace("{id}", str(node_id)) for key, value in env.items()}
        with node.log_path.open("ab") as log:
            node.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)

    def start_all(self) -> None:
        for node_id in self.nodes:
            self.start(node_id)
        self.wait_for_agreed_leader()

    def wait_for_agreed_leader(self) -> int:
        """The leader, once every live member names it: a follower that has not heard
        from a new leader yet answers no-leader instead of forwarding."""
        found: list[int] = []

        def agreed() -> bool:
            statuses = [self.status(n) for n, node in self.nodes.items() if node.alive()]
            named = {s.get("leader_id") if s else None for s in statuses}
            if len(named) != 1 or not isinstance(leader := named.pop(), int) or leader < 1:
                return False
            found[:] = [leader]
            return True

        self.wait_until(agreed, "every member to name the same leader")
        return found[0]

    def add_node(self) -> DevNode:
        node_id = max(self.nodes) + 1
        node = self._new_node(node_id)
        self.nodes[node_id] = node
        return node

    def kill(self, node_id: int) -> None:
        node = self.nodes[node_id]
        assert node.process is not None
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(timeout=WAIT_S_MAX)

    def terminate(self, node_id: int) -> int:
        node = self.nodes[node_id]
        assert node.process is not None
        node.process.send_signal(signal.SIGTERM)
        return node.process.wait(timeout=WAIT_S_MAX)

    def stop_all(self) -> None:
        for node_id, node in self.nodes.items():
            if node.alive():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.terminate(node_id)
            if node.alive():
                self.kill(node_id)

    def status(self, node_id: int) -> dict[str, Any] | None:
        try:
            return request(self.nodes[node_id].url, "GET", "/v1/cluster/status", timeout_s=1.0)[1]
        except OSError:
            return None

    def wait_for_leader(self, exclude: set[int] | None = None) -> int:
        deadline = time.monotonic() + WAIT_S_MAX
        while time.monotonic() < deadline:
            for node_id, node in self.nodes.items():
                if not node.alive() or (exclude and node_id in exclude):
                    continue
                status = self.status(node_id)
                if status and status["role"] == "leader":
                    return node_id
            time.sleep(0.05)
        raise AssertionError(f"no leader within {WAIT_S_MAX}s; logs in {self.root}")

    def wait_until(self, predicate: Any, what: str) -> None:
        deadline = time.monotonic() + WAIT_S_MAX
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; logs in {self.root}")


def request_settled(
    base_url: str, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    """Like `request`, but retries (bounded) while the node answers 503: a node that
    has not heard from a leader yet cannot decide anything."""
    deadline = time.monotonic() + WAIT_S_MAX
    while True:
        status, answer = request(base_url, method, path, body)
        if status != 503 or time.monotonic() > deadline:
            return status, answer
        time.sleep(0.1)


def request(
    base_url: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float = 5.0,
) -> tuple[int, Any]:
    """One HTTP request; returns (status, parsed JSON body). Raises OSError on no answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base_url + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else None
