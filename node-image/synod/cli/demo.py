"""`synod demo`: a scripted tour of a 3-node cluster for newcomers. Every wait is bounded."""

from __future__ import annotations

import contextlib
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rich.markup import escape
from rich.panel import Panel

from synod.cli.dev import DevCluster, DevClusterError, find_free_base_port
from synod.cli.output import Failure, out_console
from synod.client import Client, SynodError, WatchEvent, normalize_endpoints

__all__ = ["run_demo"]

LEADER_WAIT_S_MAX = 30.0
WATCH_EVENT_WAIT_S_MAX = 5.0
LEASE_TTL_MS = 2_000
# Lease expiry is decided by the leader on its ticks: allow the TTL plus a margin.
LEASE_VANISH_WAIT_S_MAX = LEASE_TTL_MS / 1000 + 8.0
POLL_INTERVAL_S = 0.2
console = out_console


def run_demo(endpoints: str | None) -> None:
    """Run the tour on a fresh temporary cluster, or on ``endpoints`` when given.

    Raises Failure when a step does not behave as shown, SynodError from the client."""
    console.print(
        Panel.fit(
            "Synod keeps a small key-value store replicated on several nodes with Raft.\n"
            "This tour writes and reads keys, watches changes, lets a lease expire, and\n"
            "kills the leader to show that the cluster carries on.",
            title="synod demo",
        )
    )
    if endpoints:
        with Client(normalize_endpoints(endpoints), timeout_s=2.0) as client:
            _tour(client, None)
        return
    root = Path(tempfile.mkdtemp(prefix="synod-demo-"))
    cluster = DevCluster(root, nodes=3, base_port=find_free_base_port(3))
    try:
        _step("1. Start a 3-node cluster (`synod dev --nodes 3` does the same)")
        cluster.start()
        for node in cluster.nodes.values():
            console.print(f"  node {node.node_id} serves clients on {node.url}")
        leader = cluster.wait_for_leader(LEADER_WAIT_S_MAX)
        console.print(f"  the nodes elected node [bold]{leader}[/] as leader")
        with Client(cluster.endpoints, timeout_s=2.0) as client:
            _tour(client, cluster)
    except DevClusterError as exc:
        raise Failure(str(exc)) from exc
    finally:
        _step("Stop everything")
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        console.print("  all nodes stopped, temporary data removed. Try `synod dev` next!")


def _step(title: str) -> None:
    """Raises nothing."""
    console.rule(f"[bold cyan]{escape(title)}", align="left")


def _show(command: str, result: str) -> None:
    """Print the CLI equivalent of a step and its result. Raises nothing."""
    console.print(f"  [dim]$ {escape(command)}[/]")
    console.print(f"  {result}")


def _tour(client: Client, cluster: DevCluster | None) -> None:
    """The steps after start-up. Raises Failure, SynodError."""
    _put_get(client)
    _watch(client)
    _lease(client)
    if cluster is None:
        _step("5. Leader failover: skipped (only on a cluster the demo started itself)")
    else:
        _failover(client, cluster)


def _put_get(client: Client) -> None:
    """Raises SynodError."""
    _step("2. Write and read a key")
    put = client.put("demo/greeting", "hello, synod")
    _show("synod kv put demo/greeting 'hello, synod'", f"OK, revision {put.revision}")
    kv = client.get("demo/greeting")
    if kv is None:
        raise Failure("demo/greeting vanished right after being written")
    _show("synod kv get demo/greeting", escape(kv.value))
    console.print(
        "  The write was acknowledged only after a majority of nodes stored it; the read "
        "asked the leader to confirm it still leads (a linearizable read).",
        style="dim",
    )


def _watch(client: Client) -> None:
    """Raises Failure, SynodError."""
    _step("3. Watch changes as they happen")
    events: queue.Queue[WatchEvent | BaseException] = queue.Queue()
    wanted = 3
    start = client.get("demo/greeting")
    revision = (start.mod_revision + 1) if start else 0
    thread = threading.Thread(
        target=_collect, args=(client, revision, wanted, events.put), daemon=True
    )
    thread.start()
    console.print("  [dim]$ synod kv watch --prefix demo/config/[/]  (in the background)")
    client.put("demo/config/color", "blue")
    client.put("demo/config/color", "green")
    client.delete("demo/config/color")
    for _ in range(wanted):
        try:
            item = events.get(timeout=WATCH_EVENT_WAIT_S_MAX)
        except queue.Empty as exc:
            raise Failure("the watch saw no event within 5 s") from exc
        if isinstance(item, BaseException):
            raise item
        shown = f"= {item.kv.value}" if item.type == "put" else ""
        console.print(
            f"  watch saw [bold]{item.type.upper()}[/] {escape(item.kv.key)} {escape(shown)} "
            f"[dim](revision {item.revision})[/]"
        )
    thread.join(WATCH_EVENT_WAIT_S_MAX)


def _collect(
    client: Client, revision: int, wanted: int, emit: Callable[[WatchEvent | BaseException], None]
) -> None:
    """Forward ``wanted`` watch events (or the error) to ``emit``. Raises nothing."""
    try:
        stream = client.watch("demo/config/", prefix=True, start_revision=revision)
        for count, event in enumerate(stream, start=1):
            emit(event)
            if count >= wanted:
                stream.close()
                return
    except (SynodError, RuntimeError) as exc:
        emit(exc)


def _lease(client: Client) -> None:
    """Raises Failure, SynodError."""
    _step("4. A key attached to a lease vanishes when the lease expires")
    grant = client.lease_grant(LEASE_TTL_MS)
    _show(f"synod lease grant {LEASE_TTL_MS // 1000}s", f"lease {grant.id}")
    client.put("demo/worker-1", "alive", lease=grant.id)
    _show(f"synod kv put demo/worker-1 alive --lease {grant.id}", "OK")
    console.print("  nobody keeps the lease alive (a crashed worker, say); waiting...")
    started = time.monotonic()
    deadline = started + LEASE_VANISH_WAIT_S_MAX
    while time.monotonic() < deadline:
        if client.get("demo/worker-1") is None:
            elapsed = time.monotonic() - started
            console.print(f"  demo/worker-1 is gone after {elapsed:.1f}s: the leader expired it")
            return
        time.sleep(POLL_INTERVAL_S)
    raise Failure(f"demo/worker-1 still exists {LEASE_VANISH_WAIT_S_MAX:.0f}s after its lease")


def _failover(client: Client, cluster: DevCluster) -> None:
    """Raises Failure, DevClusterError, SynodError."""
    _step("5. Kill the leader (kill -9) and watch the cluster carry on")
    old = cluster.leader() or cluster.wait_for_leader(LEADER_WAIT_S_MAX)
    process = cluster.nodes[old].process
    pid = process.pid if process else "?"
    cluster.kill(old)
    console.print(f"  [red]killed node {old}[/] (pid {pid}), the leader, with SIGKILL")
    started = time.monotonic()
    new = cluster.wait_for_leader(LEADER_WAIT_S_MAX, exclude=old)
    console.print(
        f"  the two survivors elected node [bold]{new}[/] in {time.monotonic() - started:.1f}s"
    )
    kv = client.get("demo/greeting")
    if kv is None:
        raise Failure("demo/greeting was lost in the failover")
    _show("synod kv get demo/greeting", f"{escape(kv.value)}  (still there)")
    put = client.put("demo/after-failover", "writes work too")
    console.print(f"  a new write succeeded at revision {put.revision}, with one node down")
    with contextlib.suppress(OSError):
        cluster.start_node(old)
        console.print(f"  node {old} restarted: it recovers its data and catches up")
