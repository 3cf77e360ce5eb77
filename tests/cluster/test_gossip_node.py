"""`synod node --listen-gossip` as real processes on loopback: three members see each
other alive through `/v1/cluster/members`, then one is killed -9 and the other two
report it dead (and count it in the `gossip` summary of `/v1/cluster/status`); a
member stopped with SIGTERM leaves, and is recorded `left`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.harness import Cluster, request
from tests.ports import free_port

SIZE = 3
# Default gossip timing (probe 1 s): with 3 members a suspicion confirmed by the other
# survivor times out in 4 s; unconfirmed, Lifeguard allows up to 6 x that.
DEAD_WAIT_S_MAX = 60.0
POLL_S = 0.1


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Cluster, dict[int, int]]]:
    made = Cluster(tmp_path, SIZE)
    gossip_ports = {node_id: free_port() for node_id in made.nodes}
    try:
        for node_id in made.nodes:
            seeds = ",".join(f"127.0.0.1:{p}" for n, p in gossip_ports.items() if n != node_id)
            made.extra_args = [
                "--listen-gossip", f"127.0.0.1:{gossip_ports[node_id]}",
                "--gossip-join", seeds,
            ]  # fmt: skip
            made.start(node_id)
        made.wait_for_leader()
        yield made, gossip_ports
    finally:
        made.stop_all()


def _members(cluster: Cluster, node_id: int) -> dict[str, dict[str, Any]] | None:
    try:
        status, body = request(cluster.nodes[node_id].url, "GET", "/v1/cluster/members",
                               timeout_s=1.0)  # fmt: skip
    except OSError:
        return None
    assert status == 200, body
    assert body["enabled"] is True and body["self"] == str(node_id)
    return {m["name"]: m for m in body["members"]}


def _states(cluster: Cluster, node_id: int) -> dict[str, str]:
    members = _members(cluster, node_id)
    return {name: m["state"] for name, m in (members or {}).items()}


def _wait(predicate: Any, what: str, root: Path, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(POLL_S)
    raise AssertionError(f"timed out after {wait_s}s waiting for {what}; logs in {root}")


def test_members_see_each_other_and_a_killed_one_is_declared_dead(
    cluster: tuple[Cluster, dict[int, int]],
) -> None:
    group, gossip_ports = cluster
    everyone_alive = {str(n): "alive" for n in group.nodes}
    _wait(lambda: all(_states(group, n) == everyone_alive for n in group.nodes),
          "every member alive in every view", group.root, DEAD_WAIT_S_MAX)  # fmt: skip
    view = _members(group, 1)
    assert view is not None
    for node_id, node in group.nodes.items():
        assert view[str(node_id)]["client_url"] == node.url
        assert view[str(node_id)]["address"] == f"127.0.0.1:{gossip_ports[node_id]}"

    # The CLI prints the same view.
    cli = subprocess.run(
        [sys.executable, "-m", "synod.cli.main", "members", "-o", "json",
         "--endpoints", group.nodes[2].url],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert {m["name"]: m["state"] for m in json.loads(cli.stdout)["members"]} == everyone_alive

    victim = 3
    group.kill(victim)
    killed_at = time.monotonic()
    survivors = [n for n in group.nodes if n != victim]
    _wait(lambda: all(_states(group, n).get(str(victim)) == "dead" for n in survivors),
          f"members {survivors} to declare {victim} dead", group.root,
          DEAD_WAIT_S_MAX)  # fmt: skip
    print(f"gossip: kill -9 of {victim} seen dead by {survivors} after "
          f"{time.monotonic() - killed_at:.1f} s")  # fmt: skip
    for node_id in survivors:
        assert _states(group, node_id) == {**everyone_alive, str(victim): "dead"}
        status = group.status(node_id)
        assert status is not None
        assert status["gossip"]["members"] == {"alive": 2, "suspect": 0, "dead": 1, "left": 0}
    with urllib.request.urlopen(group.nodes[1].url + "/metrics", timeout=5.0) as response:
        metrics = response.read().decode()
    assert 'synod_gossip_members{state="dead"} 1.0' in metrics

    # SIGTERM: the member leaves before it stops, so the other records "left", not dead.
    assert group.terminate(2) == 0
    _wait(lambda: _states(group, 1).get("2") == "left", "member 1 to see 2 leave",
          group.root, DEAD_WAIT_S_MAX)  # fmt: skip
