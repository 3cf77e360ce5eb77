"""The `synod` client commands against the real HTTP API (memory cluster): output and exit
codes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner, Result

from synod.cli.main import cli, parse_duration_ms
from synod.cli.output import (
    EXIT_COMPARE_FAILED,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from synod.client import Client
from tests.unit.memory_cluster import MemoryCluster, threaded
from tests.waiting import wait_until

# Bounds every wait on the cluster (it answers in milliseconds).
WAIT_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[MemoryCluster]:
    with threaded(MemoryCluster()) as memory:
        yield memory


def synod(cluster: MemoryCluster, *args: str) -> Result:
    env = {"SYNOD_ENDPOINTS": ",".join(cluster.urls), "COLUMNS": "200"}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_durations() -> None:
    assert parse_duration_ms("10s") == 10_000
    assert parse_duration_ms("1500ms") == 1500
    assert parse_duration_ms("2m") == 120_000
    assert parse_duration_ms("3") == 3000
    with pytest.raises(click.BadParameter):
        parse_duration_ms("soon")


def test_kv_put_get_range_del(cluster: MemoryCluster) -> None:
    put = synod(cluster, "kv", "put", "cli/a", "1")
    assert put.exit_code == 0 and "OK (revision" in put.output
    again = synod(cluster, "kv", "put", "cli/a", "2", "--prev-kv", "-o", "json")
    assert json.loads(again.output)["prev_kv"]["value"] == "1"
    assert synod(cluster, "kv", "get", "cli/a").output == "2\n"
    got = json.loads(synod(cluster, "kv", "get", "cli/a", "--output", "json").output)
    assert (got["key"], got["value"], got["version"]) == ("cli/a", "2", 2)
    synod(cluster, "kv", "put", "cli/b", "3")
    table = synod(cluster, "kv", "range", "cli/", "--prefix", "-o", "table")
    assert "cli/a" in table.output and "cli/b" in table.output and "2 keys" in table.output
    listed = json.loads(synod(cluster, "kv", "range", "cli/", "--prefix", "-o", "json").output)
    assert [k["key"] for k in listed["kvs"]] == ["cli/a", "cli/b"]
    deleted = synod(cluster, "kv", "del", "cli/", "--prefix", "-o", "json")
    assert json.loads(deleted.output)["deleted"] == 2


def test_exit_codes(cluster: MemoryCluster) -> None:
    missing = synod(cluster, "kv", "get", "cli/none")
    assert missing.exit_code == EXIT_NOT_FOUND and "not found" in missing.output
    synod(cluster, "kv", "put", "cli/c", "x")
    failed = synod(cluster, "kv", "cas", "cli/c", "y", "z")
    assert failed.exit_code == EXIT_COMPARE_FAILED and "expected 'y'" in failed.output
    assert synod(cluster, "kv", "cas", "cli/c", "x", "z").exit_code == 0
    assert synod(cluster, "kv", "cas", "cli/new", "-", "v", "--absent").exit_code == 0
    bad = synod(cluster, "kv", "put", "", "x")
    assert bad.exit_code == EXIT_USAGE and "[invalid-argument]" in bad.output
    assert synod(cluster, "lease", "revoke", "424242").exit_code == EXIT_NOT_FOUND
    assert synod(cluster, "kv", "put").exit_code == EXIT_USAGE  # click usage error


def test_unreachable_cluster_exits_5() -> None:
    result = CliRunner().invoke(
        cli,
        ["kv", "get", "k", "--endpoints", "127.0.0.1:1", "--attempts", "2", "--timeout", "0.5"],
    )
    assert result.exit_code == EXIT_UNAVAILABLE
    assert "cannot connect" in result.output and "synod dev" in result.output


def test_leases(cluster: MemoryCluster) -> None:
    grant = json.loads(synod(cluster, "lease", "grant", "5s", "-o", "json").output)
    assert grant["ttl_ms"] == 5000
    lease_id = str(grant["id"])
    assert synod(cluster, "kv", "put", "cli/eph", "1", "--lease", lease_id).exit_code == 0
    ttl = json.loads(synod(cluster, "lease", "ttl", lease_id, "-o", "json").output)
    assert ttl["keys"] == ["cli/eph"] and ttl["granted_ttl_ms"] == 5000
    once = synod(cluster, "lease", "keepalive", lease_id, "--once")
    assert "renewed" in once.output
    revoked = synod(cluster, "lease", "revoke", lease_id)
    assert "1 keys deleted" in revoked.output
    assert synod(cluster, "kv", "get", "cli/eph").exit_code == EXIT_NOT_FOUND


def test_status_admin_and_snapshot(cluster: MemoryCluster) -> None:
    table = synod(cluster, "status", "-o", "table")
    assert table.exit_code == 0 and "leader: 1" in table.output and "follower" in table.output
    doc = json.loads(synod(cluster, "status", "-o", "json").output)
    assert doc["leader_id"] == 1 and [m["reachable"] for m in doc["members"]] == [True] * 3
    applied = cluster.call(lambda: cluster.node.index)
    assert f"index {applied}" in synod(cluster, "snapshot").output
    added = synod(cluster, "member", "add-learner", "4", "127.0.0.1:9", "-o", "json")
    members = {m["id"]: m for m in json.loads(added.output)["members"]}
    assert (members[4]["peer_url"], members[4]["role"]) == ("127.0.0.1:9", "learner")
    assert "voter" in synod(cluster, "member", "promote", "4").output
    assert "removed" in synod(cluster, "member", "remove", "4").output
    moved = synod(cluster, "leader", "transfer", "--to", "1")
    assert moved.exit_code == 0 and "transferred to 1" in moved.output


def test_watch_prints_events(cluster: MemoryCluster) -> None:
    watches = cluster.watch_connects

    def writer() -> None:
        # Write once the node has accepted the command's watch (it pins its start first).
        wait_until(lambda: cluster.watch_connects > watches, WAIT_TIMEOUT_S, "the watch")
        with Client(cluster.urls) as client:
            client.put("cli/w", "1")
            client.delete("cli/w")

    thread = threading.Thread(target=writer)
    thread.start()
    result = synod(cluster, "kv", "watch", "cli/w", "--count", "2", "-o", "json")
    thread.join(WAIT_TIMEOUT_S)
    assert not thread.is_alive()
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [(e["type"], e["value"]) for e in lines] == [("put", "1"), ("delete", "")]


def test_node_passes_its_arguments_through() -> None:
    result = CliRunner().invoke(cli, ["node", "--help"])
    assert result.exit_code == 0 and "--initial-cluster" in result.output


def test_limits_show_and_change(cluster: MemoryCluster) -> None:
    shown = synod(cluster, "limits")
    assert shown.exit_code == 0 and "keys_max = 1000000" in shown.output
    changed = synod(cluster, "limits", "--keys-max", "2000000", "-o", "json")
    assert changed.exit_code == 0 and json.loads(changed.output)["keys_max"] == 2_000_000
    assert "keys_max = 2000000" in synod(cluster, "limits").output
    too_big = synod(cluster, "limits", "--leases-max", str(10**12))
    assert too_big.exit_code == 2 and "field 'leases_max' must be <= 10000000" in too_big.output
    assert "leases_max = 100000" in synod(cluster, "limits").output
