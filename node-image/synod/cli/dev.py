"""`synod dev`: a local cluster of `synod node` subprocesses on loopback.

Layout of the data directory (kept between runs, so a second run resumes the data)::

    DIR/cluster.json     {"nodes": N, "base_port": P}: the cluster's shape, fixed at creation
    DIR/node-<i>/        node i's WAL and snapshots
    DIR/node-<i>.log     node i's output
    DIR/node-<i>.pid     node i's process id while it runs
    DIR/dev.pid          "<pid> <start time>" of the supervising `synod dev` while it runs

Node i listens on 127.0.0.1:P+100·(i-1) for clients and P+1+100·(i-1) for peers
(docs/node.md; P = 2379 unless `--base-port` says otherwise).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BASE_PORT_DEFAULT",
    "DevCluster",
    "DevClusterError",
    "find_free_base_port",
    "node_ports",
]

BASE_PORT_DEFAULT = 2379
PORT_STRIDE = 100
NODES_MAX = 9  # ports of node 10 would collide with other services' conventions
STATUS_TIMEOUT_S = 1.0
POLL_INTERVAL_S = 0.1
STOP_WAIT_S_MAX = 10.0  # SIGTERM, then SIGKILL: a leader hands over within one election
FREE_PORT_PROBES_MAX = 50
FREE_BASE_PORT_FIRST = 20000
EPHEMERAL_PORT_FIRST = 32768


class DevClusterError(Exception):
    """The dev cluster cannot start or misbehaves; the message says what to do."""


def node_ports(base_port: int, node_id: int) -> tuple[int, int]:
    """(client port, peer port) of ``node_id`` (1-based). Raises nothing."""
    client = base_port + PORT_STRIDE * (node_id - 1)
    return client, client + 1


def _port_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:``port``. Raises nothing."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports_free(base_port: int, nodes: int) -> bool:
    """True when every port of an ``nodes``-node cluster at ``base_port`` is free."""
    return all(_port_free(port) for i in range(1, nodes + 1) for port in node_ports(base_port, i))


def find_free_base_port(nodes: int, preferred: int = BASE_PORT_DEFAULT) -> int:
    """``preferred`` if all its ports are free, else a free base port in 20000-32767.

    Raises DevClusterError after FREE_PORT_PROBES_MAX tries."""
    if _ports_free(preferred, nodes):
        return preferred
    for probe in range(FREE_PORT_PROBES_MAX):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        # Below the kernel's ephemeral range (32768+), where outgoing connections could
        # take a node's port between this check and the node's bind.
        span = EPHEMERAL_PORT_FIRST - FREE_BASE_PORT_FIRST - PORT_STRIDE * nodes
        base = FREE_BASE_PORT_FIRST + (port + probe * 7919) % span
        if _ports_free(base, nodes):
            return base
    raise DevClusterError("no free ports for a local cluster")


def get_status(url: str, timeout_s: float = STATUS_TIMEOUT_S) -> dict[str, Any] | None:
    """`/v1/cluster/status` of ``url``, or None when it does not answer. Raises nothing."""
    try:
        with urllib.request.urlopen(url + "/v1/cluster/status", timeout=timeout_s) as resp:
            doc = json.loads(resp.read())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists (and is not a zombie of ours). Raises nothing."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return False
    return True


def _start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, /proc/<pid>/stat field 22), None
    when unknown. With the pid it names one process even after the pid is reused.

    Raises nothing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[-1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _holder_alive(text: str) -> int | None:
    """The pid of the live `synod dev` that wrote dev.pid ``text``, None if it is stale
    (dead, or the pid now belongs to another process). Raises nothing."""
    fields = text.split()
    try:
        pid = int(fields[0])
        ticks = int(fields[1]) if len(fields) > 1 else None
    except (IndexError, ValueError):
        return None
    if not _pid_alive(pid):
        return None
    if ticks is not None:
        now = _start_ticks(pid)
        return pid if now is None or now == ticks else None
    # An older dev.pid without a start time: trust it only if the process is `synod dev`.
    words = _cmdline(pid).split()
    return pid if "dev" in words and any("synod" in word for word in words) else None


def _cmdline(pid: int) -> str:
    """The command line of ``pid`` ("" when unknown). Raises nothing."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class DevNode:
    """One member process of the dev cluster."""

    node_id: int
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    pid_path: Path
    process: subprocess.Popen[bytes] | None = None
    exit_reported: bool = False

    @property
    def url(self) -> str:
        """Client URL. Raises nothing."""
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def member_spec(self) -> str:
        """This member in `--initial-cluster` form. Raises nothing."""
        return f"{self.node_id}=127.0.0.1:{self.peer_port}@{self.url}"

    def alive(self) -> bool:
        """True while the process runs. Raises nothing."""
        return self.process is not None and self.process.poll() is None


class DevCluster:
    """Starts, watches and stops the node processes of a `synod dev` cluster."""

    def __init__(
        self,
        data_dir: Path,
        *,
        nodes: int | None = None,
        base_port: int | None = None,
        node_args: Sequence[str] = (),
    ) -> None:
        """Load or create the cluster's shape in ``data_dir``.

        Raises DevClusterError when the flags contradict an existing cluster."""
        self.data_dir = data_dir.resolve()
        self.node_args = list(node_args)
        self.resumed = False
        self._claimed = False  # dev.pid is ours: only then may stop() touch the nodes
        shape = self._shape(nodes, base_port)
        self.nodes_count, self.base_port = shape
        self.nodes: dict[int, DevNode] = {i: self._node(i) for i in range(1, shape[0] + 1)}

    def _shape(self, nodes: int | None, base_port: int | None) -> tuple[int, int]:
        """(nodes, base port): stored ones when resuming. Raises DevClusterError."""
        path = self.data_dir / "cluster.json"
        if path.exists():
            stored = json.loads(path.read_text())
            self.resumed = True
            if nodes not in (None, stored["nodes"]) or base_port not in (None, stored["base_port"]):
                raise DevClusterError(
                    f"{self.data_dir} holds a {stored['nodes']}-node cluster on base port "
                    f"{stored['base_port']}; drop --nodes/--base-port or use another --data-dir"
                )
            return int(stored["nodes"]), int(stored["base_port"])
        count = 3 if nodes is None else nodes
        if not 1 <= count <= NODES_MAX:
            raise DevClusterError(f"--nodes must be between 1 and {NODES_MAX}")
        return count, BASE_PORT_DEFAULT if base_port is None else base_port

    def _node(self, node_id: int) -> DevNode:
        """Raises nothing."""
        client, peer = node_ports(self.base_port, node_id)
        root = self.data_dir
        return DevNode(
            node_id,
            client,
            peer,
            root / f"node-{node_id}",
            root / f"node-{node_id}.log",
            root / f"node-{node_id}.pid",
        )

    @property
    def endpoints(self) -> list[str]:
        """Client URLs of every member. Raises nothing."""
        return [node.url for node in self.nodes.values()]

    @property
    def initial_cluster(self) -> str:
        """The `--initial-cluster` value. Raises nothing."""
        return ",".join(node.member_spec for node in self.nodes.values())

    # -- start ----------------------------------------------------------------------

    def start(self) -> None:
        """Claim the data directory and start every node.

        Raises DevClusterError when another `synod dev` runs on it or a port is taken."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._claim()
        self._stop_orphans()
        busy = [
            port
            for node in self.nodes.values()
            for port in (node.client_port, node.peer_port)
            if not _port_free(port)
        ]
        if busy:
            self.release()
            raise DevClusterError(
                f"ports {busy} are in use (another cluster?); stop it or pass --base-port"
            )
        (self.data_dir / "cluster.json").write_text(
            json.dumps({"nodes": self.nodes_count, "base_port": self.base_port}) + "\n"
        )
        for node_id in self.nodes:
            self.start_node(node_id)

    def _claim(self) -> None:
        """Write dev.pid. Raises DevClusterError when a live `synod dev` holds it (a
        stale file, or one whose pid now names another process, is taken over)."""
        pid_path = self.data_dir / "dev.pid"
        with contextlib.suppress(OSError):
            other = _holder_alive(pid_path.read_text())
            if other is not None and other != os.getpid():
                raise DevClusterError(
                    f"synod dev (pid {other}) already runs with data in {self.data_dir}"
                )
        ticks = _start_ticks(os.getpid())
        pid_path.write_text(f"{os.getpid()}{'' if ticks is None else f' {ticks}'}\n")
        self._claimed = True

    def release(self) -> None:
        """Remove dev.pid if it is ours. Raises nothing."""
        pid_path = self.data_dir / "dev.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            if self._claimed and int(pid_path.read_text().split()[0]) == os.getpid():
                pid_path.unlink()
        self._claimed = False

    def _stop_orphans(self) -> None:
        """Stop node processes a killed `synod dev` left behind on this data directory
        (recognised by their pid file and their command line naming our data dir)."""
        for node in self.nodes.values():
            with contextlib.suppress(OSError, ValueError):
                pid = int(node.pid_path.read_text())
                if _pid_alive(pid) and str(node.data_dir) in _cmdline(pid):
                    print(f"stopping node {node.node_id} left running (pid {pid})", flush=True)
                    _terminate_pid(pid)
                node.pid_path.unlink()

    def command(self, node: DevNode) -> list[str]:
        """The `synod node` command line of ``node``. Raises nothing."""
        return [
            sys.executable, "-m", "synod.cli.main", "node",
            "--id", str(node.node_id),
            "--data-dir", str(node.data_dir),
            "--listen-client", f"127.0.0.1:{node.client_port}",
            "--listen-peer", f"127.0.0.1:{node.peer_port}",
            "--initial-cluster", self.initial_cluster,
            *self.node_args,
        ]  # fmt: skip

    def start_node(self, node_id: int) -> None:
        """Start (or restart) one node. Raises OSError when the process cannot start."""
        node = self.nodes[node_id]
        assert not node.alive(), f"node {node_id} already runs"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with node.log_path.open("ab") as log:
            # A session of its own: Ctrl-C in the terminal reaches `synod dev` only, which
            # then stops the nodes in order (SIGTERM lets a leader hand over first).
            node.process = subprocess.Popen(
                self.command(node),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        node.exit_reported = False
        node.pid_path.write_text(f"{node.process.pid}\n")

    # -- observe --------------------------------------------------------------------

    def statuses(self) -> dict[int, dict[str, Any] | None]:
        """Each running node's status document (None: not answering). Raises nothing."""
        return {i: get_status(n.url) if n.alive() else None for i, n in self.nodes.items()}

    def leader(self) -> int | None:
        """The id of a node that reports itself leader, if any. Raises nothing."""
        for node_id, status in self.statuses().items():
            if status and status.get("role") == "leader":
                return node_id
        return None

    def wait_for_leader(self, timeout_s: float, exclude: int | None = None) -> int:
        """Wait until a node other than ``exclude`` leads and answers.

        Raises DevClusterError on timeout or when every node has exited."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None and leader != exclude:
                return leader
            if not any(node.alive() for node in self.nodes.values()):
                raise DevClusterError(f"every node exited; see the logs in {self.data_dir}")
            time.sleep(POLL_INTERVAL_S)
        raise DevClusterError(f"no leader within {timeout_s:.0f}s; see logs in {self.data_dir}")

    def exited(self) -> list[tuple[int, int]]:
        """(node id, exit code) of nodes that exited since the last call. Raises nothing."""
        gone: list[tuple[int, int]] = []
        for node in self.nodes.values():
            if node.process is not None and not node.alive() and not node.exit_reported:
                node.exit_reported = True
                gone.append((node.node_id, node.process.returncode))
        return gone

    def tail_log(self, node_id: int, lines: int = 5) -> str:
        """The last ``lines`` lines of a node's log. Raises nothing."""
        with contextlib.suppress(OSError):
            text = self.nodes[node_id].log_path.read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    # -- stop -----------------------------------------------------------------------

    def kill(self, node_id: int, signum: int = signal.SIGKILL) -> None:
        """Send ``signum`` to one node and wait (bounded) for it to exit.

        Raises subprocess.TimeoutExpired when it outlives STOP_WAIT_S_MAX."""
        node = self.nodes[node_id]
        if node.process is not None and node.alive():
            node.process.send_signal(signum)
            node.process.wait(timeout=STOP_WAIT_S_MAX)
        node.exit_reported = True
        with contextlib.suppress(OSError):
            node.pid_path.unlink()

    def stop(self, wait_s: float = STOP_WAIT_S_MAX) -> None:
        """SIGTERM every node this object started, wait up to ``wait_s`` in all,
        SIGKILL what is left, and remove their pid files and our dev.pid. A `synod dev`
        that was refused (another one holds the data directory) started nothing and
        touches nothing: the running cluster's pid files are not ours to delete.

        Raises nothing."""
        started = [n for n in self.nodes.values() if n.process is not None]
        running = [n for n in started if n.alive()]
        for node in running:
            assert node.process is not None
            with contextlib.suppress(ProcessLookupError):
                node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        for node in running:
            assert node.process is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            if node.process.poll() is None:
                node.process.kill()
                node.process.wait()
        for node in started:
            with contextlib.suppress(OSError):
                node.pid_path.unlink()
            node.exit_reported = True
        self.release()


def _terminate_pid(pid: int) -> None:
    """SIGTERM a process that is not our child, then SIGKILL it after STOP_WAIT_S_MAX."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S_MAX
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(POLL_INTERVAL_S)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
