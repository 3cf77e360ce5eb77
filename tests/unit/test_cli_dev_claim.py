"""Who owns a `synod dev` data directory.

Regressions: a refused second `synod dev` deleted the running cluster's pid files (its
`finally` stopped what it never started), orphaning the nodes; and a stale `dev.pid`
whose pid had been reused by another process was trusted, refusing every later start.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from synod.cli.dev import DevCluster, DevClusterError, _start_ticks
from synod.cli.main import _run_dev


@pytest.fixture
def other_process() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not `synod dev` (stands in for a reused pid, or, with its
    start time in dev.pid, for the `synod dev` that owns the directory)."""
    process = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                               stdin=subprocess.PIPE)  # fmt: skip
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_refused_second_dev_leaves_the_running_cluster_alone(
    tmp_path: Path, other_process: subprocess.Popen[bytes]
) -> None:
    ticks = _start_ticks(other_process.pid)
    if ticks is None:
        pytest.skip("needs /proc to tell processes apart")
    first = DevCluster(tmp_path, nodes=2)
    (tmp_path / "dev.pid").write_text(f"{other_process.pid} {ticks}\n")
    for node in first.nodes.values():
        node.pid_path.write_text(f"{other_process.pid}\n")  # the running nodes' files
    second = DevCluster(tmp_path)
    with pytest.raises(DevClusterError, match="already runs"):
        _run_dev(second, leader_wait_s=1.0)
    assert all(node.pid_path.exists() for node in first.nodes.values())
    assert (tmp_path / "dev.pid").read_text() == f"{other_process.pid} {ticks}\n"


def test_dev_pid_naming_another_process_is_stale(
    tmp_path: Path, other_process: subprocess.Popen[bytes]
) -> None:
    ticks = _start_ticks(other_process.pid)
    if ticks is None:
        pytest.skip("needs /proc to tell processes apart")
    cluster = DevCluster(tmp_path, nodes=1)
    tmp_path.mkdir(exist_ok=True)
    pid_path = tmp_path / "dev.pid"
    # The pid is alive but started at another time: it was reused.
    pid_path.write_text(f"{other_process.pid} {ticks + 1}\n")
    cluster._claim()
    assert pid_path.read_text().split()[0] == str(os.getpid())
    cluster.release()
    # An older dev.pid without a start time: alive, but its command line is not synod dev.
    pid_path.write_text(f"{other_process.pid}\n")
    cluster._claim()
    assert pid_path.read_text().split()[0] == str(os.getpid())
    cluster.release()
    assert not pid_path.exists()
    # ... while a live holder with the right start time is respected.
    pid_path.write_text(f"{other_process.pid} {ticks}\n")
    with pytest.raises(DevClusterError, match=f"pid {other_process.pid}"):
        cluster._claim()
