"""The chaos recorder's locks and ids workloads on real `synod node` processes: kill -9
of the leader while clients acquire fenced locks and take node-issued IDs; the verdict
(mutual exclusion, fencing, fenced writes; unique and per-generator ordered IDs) passes.
The kv workload runs in test_cluster.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from synod.chaos.recorder import RecorderThread, WorkloadSpec
from tests.cluster.harness import Cluster

# Acknowledged operations before the kill and after it: the history spans both.
ACKS_PER_PHASE = 20
RUN_S_MAX = 600.0  # the recorder is stopped by the test; this only bounds a hang


@pytest.mark.parametrize("kind", ["locks", "ids"])
def test_recorder_workload_survives_leader_kill(tmp_path: Path, kind: str) -> None:
    cluster = Cluster(tmp_path, 3)
    try:
        cluster.start_all()
        urls = [node.url for node in cluster.nodes.values()]
        spec = WorkloadSpec(
            kind=kind, clients=3, keys=("a", "b"), duration_s=RUN_S_MAX, lock_ttl_ms=2_000
        )
        recorder = RecorderThread(urls, spec)
        recorder.start()
        floor = ACKS_PER_PHASE
        cluster.wait_until(lambda: recorder.acknowledged >= floor, "history before the kill")
        leader = cluster.wait_for_leader()
        cluster.kill(leader)
        cluster.wait_for_leader(exclude={leader})
        floor = recorder.acknowledged + ACKS_PER_PHASE
        cluster.wait_until(lambda: recorder.acknowledged >= floor, "history after the kill")
        verdict = recorder.stop()
    finally:
        cluster.stop_all()
    assert verdict.passed, verdict.explanation
    assert verdict.counts["recorded"] > 2 * ACKS_PER_PHASE
    print(f"[chaos-recorder] {kind}: {verdict.to_json()['counts']} {verdict.to_json()['figures']}")
