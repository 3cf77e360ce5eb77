"""`synod lock` and `synod election` against the real HTTP API (memory cluster)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from synod.cli.main import cli
from synod.cli.output import EXIT_COMPARE_FAILED, EXIT_LEASE_EXPIRED
from synod.client import Client
from tests.unit.memory_cluster import MemoryCluster, threaded


@pytest.fixture(scope="module")
def cluster() -> Iterator[MemoryCluster]:
    with threaded(MemoryCluster()) as memory:
        yield memory


def synod(cluster: MemoryCluster, *args: str) -> Result:
    env = {"SYNOD_ENDPOINTS": ",".join(cluster.urls), "COLUMNS": "200"}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_acquire_runs_the_command_with_the_token(cluster: MemoryCluster, tmp_path: Path) -> None:
    out = tmp_path / "token"
    script = ("import os, sys; open(sys.argv[1], 'w').write(os.environ['SYNOD_LOCK_TOKEN'] + "
              "' ' + os.environ['SYNOD_LOCK_NAME']); sys.exit(3)")  # fmt: skip
    result = synod(cluster, "lock", "acquire", "cli/job", "--ttl", "2s", "--",
                   sys.executable, "-c", script, str(out))  # fmt: skip
    assert result.exit_code == 3  # the command's status
    token, name = out.read_text().split()
    assert int(token) > 0 and name == "cli/job"
    shown = synod(cluster, "lock", "show", "cli/job")
    assert "free" in shown.output  # released (and its lease revoked) afterwards


def test_acquire_kills_the_command_when_the_lock_is_lost(cluster: MemoryCluster) -> None:
    # The child revokes its own lock through the CLI, then waits to be killed.
    endpoints = ",".join(cluster.urls)
    script = (
        "import os, subprocess, sys, time\n"
        "subprocess.run([sys.executable, '-m', 'synod.cli.main', 'lock', 'revoke', "
        "'cli/lost', '--endpoints', " + repr(endpoints) + "], check=True)\n"
        "time.sleep(60)\n"
        "sys.exit(0)\n"
    )
    result = synod(cluster, "lock", "acquire", "cli/lost", "--ttl", "300ms", "--kill-grace",
                   "1", "--", sys.executable, "-c", script)  # fmt: skip
    assert result.exit_code == EXIT_LEASE_EXPIRED, result.output
    assert "lost" in result.output


def test_list_show_release_revoke(cluster: MemoryCluster) -> None:
    with Client(cluster.urls, timeout_s=2) as client:
        held = client.lock("cli/a", owner="holder", ttl_ms=60_000).acquire()
        try:
            listed = json.loads(synod(cluster, "lock", "list", "cli/", "-o", "json").output)
            assert [item["name"] for item in listed["locks"]] == ["cli/a"]
            shown = synod(cluster, "lock", "show", "cli/a")
            assert f"holder holder token {held.token}" in shown.output
            busy = synod(cluster, "lock", "release", "cli/a", "--owner", "other")
            assert busy.exit_code == EXIT_COMPARE_FAILED and "does not hold" in busy.output
            released = synod(cluster, "lock", "release", "cli/a", "--owner", "holder")
            assert released.exit_code == 0 and "holder released cli/a" in released.output
            held.lock.token = 0  # released from the outside
        finally:
            held.release()
        held_b = client.lock("cli/b", owner="x", ttl_ms=60_000).acquire()
        revoked = synod(cluster, "lock", "revoke", "cli/b", "-o", "json")
        assert json.loads(revoked.output) == {"revoked": ["x"]}
        held_b.release()
        again = synod(cluster, "lock", "revoke", "cli/b")
        assert again.exit_code == EXIT_COMPARE_FAILED


def test_election_campaign_leader_observe(cluster: MemoryCluster) -> None:
    none = synod(cluster, "election", "leader", "cli/e")
    assert none.exit_code == 3 and "no leader" in none.output
    script = "import os; print(os.environ['SYNOD_LOCK_TOKEN'])"
    ran = synod(cluster, "election", "campaign", "cli/e", "http://me", "--ttl", "2s", "--",
                sys.executable, "-c", script)  # fmt: skip
    assert ran.exit_code == 0, ran.output
    with Client(cluster.urls, timeout_s=2) as client:
        leadership = client.lock("cli/e", lock_type="election", value="v1", owner="pod",
                                 ttl_ms=60_000).acquire()  # fmt: skip
        try:
            shown = json.loads(synod(cluster, "election", "leader", "cli/e", "-o", "json").output)
            assert shown["leader"]["owner"] == "pod" and shown["leader"]["value"] == "v1"
            observed = synod(cluster, "election", "observe", "cli/e", "--count", "1")
            assert "pod token" in observed.output
        finally:
            leadership.release()
