"""`synod id next | decode | list` against the real HTTP API (memory cluster)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from synod.cli.main import cli
from synod.client import Client
from synod.ids import Layout, uuid7
from tests.unit.memory_cluster import MemoryCluster, threaded


@pytest.fixture
def cluster() -> Iterator[MemoryCluster]:
    with threaded(MemoryCluster()) as memory:
        yield memory


def synod(cluster: MemoryCluster, *args: str) -> Result:
    env = {"SYNOD_ENDPOINTS": ",".join(cluster.urls)}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_id_next_decode_list(cluster: MemoryCluster) -> None:
    missing = synod(cluster, "id", "next", "orders")
    assert missing.exit_code == 3, missing.output
    assert "generator-not-found" in missing.output or "not defined" in missing.output
    with Client(cluster.urls) as client:
        client.snowflake("orders", layout=Layout(41, 10, 12)).close()
    result = synod(cluster, "id", "next", "orders", "-n", "5")
    assert result.exit_code == 0, result.output
    ids = [int(line) for line in result.output.split()]
    assert len(ids) == 5 and ids == sorted(set(ids))
    decoded = synod(cluster, "id", "decode", str(ids[0]), "-g", "orders", "-o", "json")
    remote = json.loads(decoded.output)
    offline = json.loads(synod(cluster, "id", "decode", str(ids[0]), "-o", "json").output)
    assert remote == offline and remote["id"] == ids[0]
    text = synod(cluster, "id", "decode", str(ids[0])).output
    assert f"worker={remote['worker']}" in text and "time=20" in text
    uuid_parts = json.loads(synod(cluster, "id", "decode", uuid7(), "-o", "json").output)
    assert {"uuid", "timestamp_ms", "counter"} <= set(uuid_parts)
    bad = synod(cluster, "id", "decode", "not-an-id")
    assert bad.exit_code == 2
    listing = synod(cluster, "id", "list")
    assert listing.exit_code == 0 and "orders" in listing.output
    doc = json.loads(synod(cluster, "id", "list", "-o", "json").output)
    assert doc["generators"][0]["workers_leased"] == 1  # the node's own worker
