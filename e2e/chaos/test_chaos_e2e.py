"""ChaosExperiments on a real kind cluster (`make e2e-chaos`; needs `make kind-up images`).

NOT YET RUN (written in the session that added ChaosExperiment; kind was not started
there): scenarios, expected verdicts and the timing file are in place, the figures are
not. helm install (namespace scope, injector enabled) -> a 3-member ConsensusCluster ->
each scenario is a ChaosExperiment applied with kubectl and waited on for its verdict.
The unsafe clients must end Failed with the anomaly named. Step durations go to
$SYNOD_E2E_TIMINGS (default /tmp/synod-chaos-e2e.json).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CLUSTER = os.environ.get("SYNOD_CLUSTER_NAME", "synod")
KUBECONFIG = os.environ.get("SYNOD_KUBECONFIG", f"/var/cache/synod-toolchain/kubeconfig-{CLUSTER}")
NAMESPACE = os.environ.get("SYNOD_E2E_NAMESPACE", "synod-e2e-chaos")
RELEASE = "synod-chaos"
TARGET = "kv"
IMAGE_TAG = os.environ.get("SYNOD_IMAGE_TAG", "dev")
TIMINGS_PATH = Path(os.environ.get("SYNOD_E2E_TIMINGS", "/tmp/synod-chaos-e2e.json"))
COMMAND_TIMEOUT_S = 120.0
STEP_TIMEOUT_S = 600.0
POLL_S = 2.0
TIMINGS: dict[str, float] = {}
T = TypeVar("T")

# (name, workload, faults, expected verdict, anomaly kind expected when Failed)
SCENARIOS: list[tuple[str, dict[str, Any], list[dict[str, Any]], str, str]] = [
    (
        "kv-leader-isolation",
        {"kind": "kv", "duration": "60s"},
        [{"type": "partition", "shape": "isolate-leader", "startAfter": "10s", "duration": "20s"}],
        "Passed",
        "",
    ),
    (
        "kv-bridge",
        {"kind": "kv", "duration": "60s"},
        [{"type": "partition", "shape": "bridge", "startAfter": "10s", "duration": "20s"}],
        "Passed",
        "",
    ),
    (
        "locks-leader-kill",
        {"kind": "locks", "duration": "60s"},
        [{"type": "kill", "member": "leader", "startAfter": "10s", "duration": "15s"}],
        "Passed",
        "",
    ),
    (
        "locks-leader-pause",
        {"kind": "locks", "duration": "60s"},
        [{"type": "pause", "member": "leader", "startAfter": "10s", "duration": "15s"}],
        "Passed",
        "",
    ),
    (
        "ids-halves",
        {"kind": "ids", "duration": "60s"},
        [{"type": "partition", "shape": "halves", "startAfter": "10s", "duration": "20s"}],
        "Passed",
        "",
    ),
    # Checkers that bite: serializable reads served by a cut-off minority member.
    (
        "kv-unsafe-reads",
        {"kind": "kv", "duration": "60s", "clients": 6, "unsafe": "serializable-reads"},
        [
            {
                "type": "partition",
                "shape": "isolate-member",
                "member": f"{TARGET}-2",
                "startAfter": "5s",
                "duration": "40s",
            }
        ],
        "Failed",
        "not-linearizable",
    ),
]


def run(
    *args: str, check: bool = True, stdin: str | None = None, timeout: float = COMMAND_TIMEOUT_S
) -> str:
    result = subprocess.run(
        list(args), input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


def kubectl(*args: str, check: bool = True, stdin: str | None = None) -> str:
    return run(
        "kubectl", f"--kubeconfig={KUBECONFIG}", "-n", NAMESPACE, *args, check=check, stdin=stdin
    )


def get_json(*args: str) -> Any:
    out = kubectl("get", *args, "-o", "json", check=False)
    return json.loads(out) if out.strip() else None


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = STEP_TIMEOUT_S) -> T:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(POLL_S)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}")


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    if not Path(KUBECONFIG).exists():
        pytest.skip(f"no kind cluster (kubeconfig {KUBECONFIG} absent): run `make kind-up images`")
    run("kubectl", f"--kubeconfig={KUBECONFIG}", "create", "namespace", NAMESPACE, check=False)
    run(
        "helm",
        f"--kubeconfig={KUBECONFIG}",
        "-n",
        NAMESPACE,
        "upgrade",
        "--install",
        RELEASE,
        str(ROOT / "charts" / "synod"),
        "--wait",
        "--timeout=5m",
        "--set=operator.scope=namespace",
        f"--set=operator.image.tag={IMAGE_TAG}",
        "--set=chaos.injector.enabled=true",
        f"--set=chaos.injector.image.tag={IMAGE_TAG}",
        timeout=COMMAND_TIMEOUT_S * 3,
    )
    cluster = {
        "apiVersion": "synod.dev/v1alpha1",
        "kind": "ConsensusCluster",
        "metadata": {"name": TARGET},
        "spec": {"replicas": 3, "version": IMAGE_TAG, "storage": {"size": "256Mi"}},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(cluster))

    def available() -> bool:
        status = (get_json("consensuscluster", TARGET) or {}).get("status") or {}
        return bool(status.get("leader")) and status.get("readyReplicas") == 3

    wait_for("the target cluster", available)
    try:
        yield
    finally:
        TIMINGS_PATH.write_text(json.dumps(TIMINGS, indent=2))
        print(f"[e2e-chaos] timings: {json.dumps(TIMINGS)}", flush=True)
        if os.environ.get("SYNOD_E2E_KEEP") != "1":
            kubectl("delete", "chaosexperiments", "--all", check=False)
            kubectl("delete", "consensuscluster", TARGET, "--wait=true", check=False)
            run(
                "helm",
                f"--kubeconfig={KUBECONFIG}",
                "-n",
                NAMESPACE,
                "uninstall",
                RELEASE,
                check=False,
            )


@pytest.mark.parametrize(
    ("name", "workload", "faults", "verdict", "anomaly"), SCENARIOS, ids=[s[0] for s in SCENARIOS]
)
def test_scenario(
    installed: None,
    name: str,
    workload: dict[str, Any],
    faults: list[dict[str, Any]],
    verdict: str,
    anomaly: str,
) -> None:
    experiment = {
        "apiVersion": "synod.dev/v1alpha1",
        "kind": "ChaosExperiment",
        "metadata": {"name": name},
        "spec": {"target": {"name": TARGET}, "workload": workload, "faults": faults, "seed": 1},
    }
    kubectl("delete", "chaosexperiment", name, "--wait=true", check=False)
    started = time.monotonic()
    kubectl("apply", "-f", "-", stdin=json.dumps(experiment))

    def ended() -> dict[str, Any] | None:
        status = (get_json("chaosexperiment", name) or {}).get("status") or {}
        return status if status.get("phase") in ("Completed", "Failed") else None

    status = wait_for(f"the verdict of {name}", ended)
    TIMINGS[name] = round(time.monotonic() - started, 1)
    print(f"[e2e-chaos] {name}: {json.dumps(status)}", flush=True)
    assert status.get("verdict") == verdict, status
    if anomaly:
        assert anomaly in {a["kind"] for a in status.get("anomalies") or []}, status
    assert status.get("historyConfigMap"), "the history is kept"
    # The injector ran its schedule to the end (its own heal included).
    assert status["timeline"][-1]["event"] == "schedule done", status
