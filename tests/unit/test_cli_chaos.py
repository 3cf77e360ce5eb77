"""`synod chaos`: the manifest `run` creates and the progress lines it prints (pure); the
commands against a real apiserver are in tests/controlplane/test_chaos.py."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from synod.cli.chaos import FAULTS, experiment_manifest, progress_lines
from synod.cli.main import cli


def test_run_manifest_for_a_leader_partition() -> None:
    manifest = experiment_manifest("e1", "kv", fault="partition-leader", duration="60s")
    spec = manifest["spec"]
    assert manifest["kind"] == "ChaosExperiment" and manifest["metadata"]["name"] == "e1"
    assert spec["target"] == {"kind": "ConsensusCluster", "name": "kv"}
    assert spec["workload"] == {"kind": "kv", "clients": 3, "duration": "60s"}
    assert spec["faults"] == [
        {"type": "partition", "shape": "isolate-leader", "startAfter": "10s", "duration": "20s"}
    ]


def test_every_fault_shorthand_makes_a_valid_entry() -> None:
    for fault in FAULTS:
        spec = experiment_manifest("e", "jobs", target_kind="LockService", fault=fault)["spec"]
        assert spec["workload"]["kind"] == "locks"
        if fault == "none":
            assert "faults" not in spec
            continue
        (entry,) = spec["faults"]
        assert ("shape" in entry) == (entry["type"] == "partition")
        assert entry["type"] != "netem" or entry["delayMs"] > 0
    with pytest.raises(ValueError, match="--fault"):
        experiment_manifest("e", "kv", fault="meteor")


def test_progress_lines_show_only_what_changed() -> None:
    running = {
        "phase": "Running",
        "message": "recording kv",
        "timeline": [{"time": "t1", "event": "fault halves"}],
    }
    assert progress_lines({}, running) == ["phase Running: recording kv", "t1 fault halves"]
    done = {
        **running,
        "phase": "Completed",
        "verdict": "Failed",
        "counts": {"acknowledged": 3},
        "message": "Failed: x",
        "timeline": [*running["timeline"], {"time": "t2", "event": "healed halves"}],
        "anomalies": [{"kind": "not-linearizable", "message": "get"}],
    }
    assert progress_lines(running, done) == [
        "phase Completed: Failed: x",
        "t2 healed halves",
        'verdict Failed {"acknowledged": 3}',
        "  [not-linearizable] get",
    ]


def test_bad_duration_and_missing_kubeconfig_are_usage_errors(tmp_path: object) -> None:
    runner = CliRunner()
    bad = runner.invoke(cli, ["chaos", "run", "--target", "kv", "--duration", "soon"])
    assert bad.exit_code == 2, bad.output
    missing = runner.invoke(
        cli,
        ["chaos", "list"],
        env={"KUBECONFIG": "/nonexistent/kubeconfig", "HOME": "/nonexistent"},
    )
    assert missing.exit_code == 2, missing.output
