"""`synod dev --restart`: a member that dies is started again (on its data), and without
the flag the message says how to get that; `synod snapshot save|status|restore` with
real members."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from synod.cli.dev import DevCluster, find_free_base_port
from synod.cli.main import RESTARTS_PER_NODE_MAX, cli, handle_exits
from synod.cli.output import EXIT_USAGE
from synod.client import Client
from tests.ports import free_port
from tests.waiting import wait_until

WAIT_S_MAX = 30.0
FAST_NODE_ARGS = ["--tick-ms=20", "--heartbeat-interval-ms=100", "--election-timeout-ms=1000"]


def _crash(cluster: DevCluster, node_id: int) -> None:
    """SIGKILL the node behind the supervisor's back (as a crash would)."""
    process = cluster.nodes[node_id].process
    assert process is not None
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=WAIT_S_MAX)


def test_dead_member_is_restarted_with_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base_port = find_free_base_port(1, preferred=free_port())
    cluster = DevCluster(tmp_path, nodes=1, base_port=base_port, node_args=FAST_NODE_ARGS)
    try:
        cluster.start()
        cluster.wait_for_leader(WAIT_S_MAX)
        with Client(cluster.endpoints) as client:
            client.put("dev/kept", "1")
        _crash(cluster, 1)
        assert wait_until(lambda: handle_exits(cluster, False, {}) == [] and
                          "synod dev --restart" in capsys.readouterr().err,
                          WAIT_S_MAX, "the exit report")  # fmt: skip
        assert not cluster.nodes[1].alive()  # reported once, not restarted
        cluster.nodes[1].exit_reported = False  # report it again, now with the flag
        restarts: dict[int, int] = {}
        assert handle_exits(cluster, True, restarts) == [1] and restarts == {1: 1}
        assert "node 1 restarted" in capsys.readouterr().out
        cluster.wait_for_leader(WAIT_S_MAX)
        with Client(cluster.endpoints) as client:
            kept = client.get("dev/kept")
        assert kept is not None and kept.value == "1"  # it resumed its data
        _crash(cluster, 1)
        restarts[1] = RESTARTS_PER_NODE_MAX
        assert wait_until(lambda: handle_exits(cluster, True, restarts) == [] and
                          "not again" in capsys.readouterr().err,
                          WAIT_S_MAX, "the crash-loop refusal")  # fmt: skip
        assert not cluster.nodes[1].alive()
    finally:
        cluster.stop()


def test_snapshot_save_status_and_restore(tmp_path: Path) -> None:
    base_port = find_free_base_port(1, preferred=free_port())
    cluster = DevCluster(tmp_path / "dev", nodes=1, base_port=base_port,
                         node_args=FAST_NODE_ARGS)  # fmt: skip
    runner = CliRunner()
    try:
        cluster.start()
        cluster.wait_for_leader(WAIT_S_MAX)
        with Client(cluster.endpoints) as client:
            for index in range(5):
                client.put(f"snap/{index}", str(index))
            revision = client.put(b"snap/\xff", b"\x00").revision
        path = tmp_path / "backup.snap"
        endpoints = ",".join(cluster.endpoints)
        saved = runner.invoke(cli, ["snapshot", "save", str(path), "--endpoints", endpoints])
        assert saved.exit_code == 0 and "snapshot saved" in saved.output, saved.output
        status = runner.invoke(cli, ["snapshot", "status", str(path), "-o", "json"])
        facts = json.loads(status.output)
        assert (facts["keys"], facts["revision"], facts["voters"]) == (6, revision, [1])
        assert facts["members"][0]["client_url"] == cluster.endpoints[0]
    finally:
        cluster.stop()
    # Restore it as a new cluster on other ports: the data is there, the members new.
    new_base = find_free_base_port(1, preferred=free_port())
    restored = DevCluster(tmp_path / "new", nodes=1, base_port=new_base,
                          node_args=FAST_NODE_ARGS)  # fmt: skip
    args = ["snapshot", "restore", str(path), "--data-dir", str(tmp_path / "new"),
            "--initial-cluster", restored.initial_cluster]  # fmt: skip
    done = runner.invoke(cli, args)
    assert done.exit_code == 0 and "restored at index" in done.output, done.output
    again = runner.invoke(cli, args)  # directories in use: refused
    assert again.exit_code == EXIT_USAGE and "not empty" in again.output
    try:
        restored.start()
        restored.wait_for_leader(WAIT_S_MAX)
        with Client(restored.endpoints) as client:
            assert [kv.value for kv in client.prefix("snap/").kvs] == [*"01234", "\x00"]
            status = client.status()
            assert status.members[0].client_url == restored.endpoints[0]
            assert client.put("snap/after", "x").revision == revision + 1
    finally:
        restored.stop()
    path.write_bytes(path.read_bytes()[:-1])  # damaged: refused, exit 2
    damaged = runner.invoke(cli, ["snapshot", "status", str(path)])
    assert damaged.exit_code == EXIT_USAGE and "not a valid Synod snapshot" in damaged.output
