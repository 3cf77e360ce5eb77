"""DevCluster bookkeeping that needs no processes: ports, shape, command lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from synod.cli.dev import DevCluster, DevClusterError, node_ports


def test_ports_follow_docs_node_md() -> None:
    assert node_ports(2379, 1) == (2379, 2380)
    assert node_ports(2379, 3) == (2579, 2580)


def test_shape_is_stored_and_enforced(tmp_path: Path) -> None:
    cluster = DevCluster(tmp_path, nodes=2, base_port=30000)
    assert cluster.endpoints == ["http://127.0.0.1:30000", "http://127.0.0.1:30100"]
    assert cluster.initial_cluster == (
        "1=127.0.0.1:30001@http://127.0.0.1:30000,2=127.0.0.1:30101@http://127.0.0.1:30100"
    )
    (tmp_path / "cluster.json").write_text('{"nodes": 2, "base_port": 30000}')
    resumed = DevCluster(tmp_path)
    assert resumed.resumed and resumed.nodes_count == 2 and resumed.base_port == 30000
    with pytest.raises(DevClusterError, match="holds a 2-node cluster"):
        DevCluster(tmp_path, nodes=3)
    with pytest.raises(DevClusterError, match="between 1 and 9"):
        DevCluster(tmp_path / "other", nodes=10)


def test_node_command_goes_through_synod_node(tmp_path: Path) -> None:
    cluster = DevCluster(tmp_path, nodes=1, node_args=["--tick-ms=20"])
    command = cluster.command(cluster.nodes[1])
    assert command[1:4] == ["-m", "synod.cli.main", "node"]
    assert "--tick-ms=20" in command and str(tmp_path.resolve() / "node-1") in command
