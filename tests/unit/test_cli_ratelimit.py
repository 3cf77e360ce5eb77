"""`synod ratelimit check | policies | status` against the real HTTP API (memory
cluster)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from synod.cli.main import cli
from tests.unit.memory_cluster import MemoryCluster, threaded

POLICY = {
    "domain": "cli",
    "descriptors": [
        {"key": "path", "value": "/login",
         "descriptors": [{"key": "user", "rate_limit": {"unit": "hour", "requests_per_unit": 2,
                                                        "algorithm": "gcra"}}]},
    ],
}  # fmt: skip


@pytest.fixture
def cluster() -> Iterator[MemoryCluster]:
    with threaded(MemoryCluster()) as memory:
        yield memory


def synod(cluster: MemoryCluster, *args: str) -> Result:
    env = {"SYNOD_ENDPOINTS": ",".join(cluster.urls)}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_policies_check_status(cluster: MemoryCluster, tmp_path: Path) -> None:
    missing = synod(cluster, "ratelimit", "check", "cli", "path=/login,user=bob")
    assert missing.exit_code == 3, missing.output
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(POLICY))
    put = synod(cluster, "ratelimit", "policies", "--set", str(path), "-o", "json")
    assert put.exit_code == 0 and json.loads(put.output)["created"], put.output
    listing = synod(cluster, "ratelimit", "policies")
    assert listing.exit_code == 0 and "generation 1" in listing.output
    codes = [synod(cluster, "ratelimit", "check", "cli", "path=/login,user=bob").exit_code
             for _ in range(3)]  # fmt: skip
    assert codes == [0, 0, 5]
    over = synod(cluster, "ratelimit", "check", "cli", "path=/login,user=bob")
    assert "over the limit; retry after" in over.output
    free = synod(cluster, "ratelimit", "check", "cli", "path=/other", "-o", "json")
    assert json.loads(free.output)["statuses"] == [{"code": "OK"}]
    bad = synod(cluster, "ratelimit", "check", "cli", "path")
    assert bad.exit_code == 2 and "key=value" in bad.output
    never = synod(cluster, "ratelimit", "check", "cli", "path=/login,user=eve", "--hits", "3")
    assert never.exit_code == 5 and "can never fit" in never.output
    status = synod(cluster, "ratelimit", "status")
    assert status.exit_code == 0 and "ring from raft" in status.output
    path.write_text("[1]")
    assert synod(cluster, "ratelimit", "policies", "--set", str(path)).exit_code == 2
    deleted = synod(cluster, "ratelimit", "policies", "cli", "--delete", "-o", "json")
    assert json.loads(deleted.output)["deleted"] is True
    assert synod(cluster, "ratelimit", "policies", "--delete").exit_code == 2
