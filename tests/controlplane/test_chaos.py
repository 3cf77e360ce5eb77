"""Tier 4: the ChaosExperiment CRD and its reconciliation against a real kube-apiserver.

envtest has no scheduler and no kubelet: nothing runs. The test plays their part where
the operator reads it — the target's pods (with IPs) and the Jobs' pods ending with a
termination message — and checks what the operator does with the API: the CEL rules,
the recorder and injector Jobs it creates (with the chart's RBAC, injector enabled),
status Running with the fault summary, then the verdict, anomalies and fault timeline
in status and a Failed Event once the recorder's pod ended.
"""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from synod.cli.main import cli
from synod_operator.builders import selector_labels

from .conftest import ControlPlane
from .test_operator import _install_crd, _namespace, _path, cluster_body, ok, run_operator, wait_for

pytestmark = pytest.mark.slow

NAMESPACE = f"synod-cp-chaos-{uuid.uuid4().hex[:6]}"


def chaos_body(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "synod.dev/v1alpha1",
        "kind": "ChaosExperiment",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.fixture(scope="module")
def chaos_operator(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    env = {"SYNOD_OPERATOR_CHAOS_INJECTOR": "1", "SYNOD_OPERATOR_CHAOS_IMAGE": "tools:t"}
    with run_operator(control_plane, tmp_path_factory.mktemp("operator"), env) as log_path:
        yield log_path


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"target": {"name": "kv"}, "workload": {"kind": "kv", "unsafe": "ignore-fencing"}},
            "unsafe serializable-reads is for kv",
        ),
        (
            {
                "target": {"name": "kv"},
                "workload": {"kind": "ids"},
                "checkers": ["linearizability"],
            },
            "checkers must apply to the workload kind",
        ),
        (
            {"target": {"name": "kv"}, "faults": [{"type": "partition", "duration": "5s"}]},
            "a partition (and only a partition) names a shape",
        ),
        (
            {"target": {"name": "kv"}, "faults": [{"type": "netem", "duration": "5s"}]},
            "netem needs delayMs > 0 or lossPercent > 0",
        ),
        (
            {
                "target": {"name": "kv"},
                "faults": [{"type": "partition", "shape": "star", "duration": "5s"}],
            },
            "spec.faults[0].shape",
        ),
        ({"target": {"name": "kv"}, "workload": {"duration": "forever"}}, "spec.workload.duration"),
        ({"target": {"kind": "Secret", "name": "kv"}}, "spec.target.kind"),
    ],
)
def test_invalid_experiments_are_rejected_by_the_api_server(
    control_plane: ControlPlane, spec: dict[str, Any], message: str
) -> None:
    _install_crd(control_plane)
    ns = _namespace(control_plane, "synod-cp-chaos-invalid")
    status, answer = control_plane.request(
        "POST", _path("synod", ns, "chaosexperiments"), chaos_body("bad", **spec)
    )
    assert status == 422, answer
    assert message in answer["message"], answer["message"]


def test_defaults_and_immutable_spec(control_plane: ControlPlane) -> None:
    _install_crd(control_plane)
    ns = _namespace(control_plane, "synod-cp-chaos-defaults")
    created = ok(
        control_plane,
        "POST",
        _path("synod", ns, "chaosexperiments"),
        chaos_body("d", target={"name": "kv"}),
    )
    defaults = {"kind": "kv", "clients": 3, "ratePerSecond": 0, "duration": "60s", "unsafe": ""}
    assert created["spec"]["workload"] == defaults
    assert created["spec"]["target"]["kind"] == "ConsensusCluster"
    created["spec"]["seed"] = 9
    status, answer = control_plane.request(
        "PUT", _path("synod", ns, "chaosexperiments", "d"), created
    )
    assert status == 422 and "spec is immutable" in answer["message"], answer


def _pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }


def _set_pod_status(plane: ControlPlane, ns: str, name: str, status: dict[str, Any]) -> None:
    pod = ok(plane, "GET", _path("core", ns, "pods", name))
    pod["status"] = status
    ok(plane, "PUT", _path("core", ns, "pods", name) + "/status", pod)


def _terminated(message: str) -> dict[str, Any]:
    return {
        "phase": "Failed",
        "containerStatuses": [
            {
                "name": "c",
                "image": "i",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "message": message}},
            }
        ],
    }


def test_experiment_makes_jobs_then_reports_the_verdict(
    control_plane: ControlPlane, chaos_operator: Path
) -> None:
    ns = _namespace(control_plane, NAMESPACE)
    ok(
        control_plane,
        "POST",
        _path("synod", ns, "consensusclusters"),
        cluster_body("kv", replicas=3, version="1.2"),
    )
    for i in range(3):  # the StatefulSet's pods, as the scheduler would have placed them
        ok(control_plane, "POST", _path("core", ns, "pods"), _pod(f"kv-{i}", selector_labels("kv")))
        _set_pod_status(
            control_plane, ns, f"kv-{i}", {"phase": "Running", "podIP": f"10.9.0.{i + 1}"}
        )
    spec = {
        "target": {"name": "kv"},
        "seed": 3,
        "workload": {"kind": "kv", "duration": "30s", "unsafe": "serializable-reads"},
        "faults": [
            {
                "type": "partition",
                "shape": "isolate-member",
                "member": "kv-1",
                "duration": "10s",
                "startAfter": "5s",
            }
        ],
    }
    ok(control_plane, "POST", _path("synod", ns, "chaosexperiments"), chaos_body("exp", **spec))

    def get(plural: str, name: str, group: str = "synod") -> dict[str, Any] | None:
        path = (
            _path(group, ns, plural, name)
            if group != "batch"
            else f"/apis/batch/v1/namespaces/{ns}/jobs/{name}"
        )
        status, answer = control_plane.request("GET", path)
        return answer if status == 200 else None

    def running() -> dict[str, Any] | None:
        status = ((get("chaosexperiments", "exp") or {}).get("status")) or {}
        return status if status.get("phase") == "Running" else None

    try:
        status = wait_for("the experiment to run", running)
    except AssertionError:
        raise AssertionError(chaos_operator.read_text()[-4000:]) from None
    assert status["fault"] == "isolate-member 10s"
    recorder = get("jobs", "exp-recorder", "batch")
    injector = get("jobs", "exp-injector", "batch")
    assert recorder is not None and injector is not None
    command = recorder["spec"]["template"]["spec"]["containers"][0]["command"]
    assert recorder["spec"]["template"]["spec"]["containers"][0]["image"] == "synod/node:1.2"
    assert command[:3] == ["python", "-m", "synod.chaos.recorder"]
    assert "http://kv." + ns + ".svc:2379" in command and "serializable-reads" in command
    pod = injector["spec"]["template"]["spec"]
    assert pod["hostPID"] is True and pod["containers"][0]["image"] == "tools:t"
    script = pod["containers"][0]["command"][2]
    assert "-s 10.9.0.2" in script and "--datestop" in script, "kv-1 cut off, with expiry"

    # The pods of both Jobs end: the recorder with a verdict, the injector with its timeline.
    result = {
        "verdict": "Failed",
        "counts": {"acknowledged": 40, "unknown": 1},
        "figures": {"longest_unavailable_ms": 2100, "run_ms": 30000},
        "checkers": [{"name": "linearizability", "ok": False, "checked": 41}],
        "anomalies": [
            {
                "checker": "linearizability",
                "kind": "not-linearizable",
                "message": "first offending: client 2 Get(key='chaos/exp/a')",
            }
        ],
        "errors": [],
    }
    timeline = (
        "2026-12-01T13:00:05Z fault isolate-member\n2026-12-01T13:00:15Z healed isolate-member\n"
    )
    for job, message in (("exp-recorder", json.dumps(result)), ("exp-injector", timeline)):
        ok(control_plane, "POST", _path("core", ns, "pods"), _pod(f"{job}-x", {"job-name": job}))
        _set_pod_status(control_plane, ns, f"{job}-x", _terminated(message))

    def completed() -> dict[str, Any] | None:
        status = ((get("chaosexperiments", "exp") or {}).get("status")) or {}
        return status if status.get("phase") == "Completed" else None

    try:
        status = wait_for("the verdict", completed)
    except AssertionError:
        raise AssertionError(chaos_operator.read_text()[-4000:]) from None
    assert status["verdict"] == "Failed"
    assert status["anomalies"][0]["kind"] == "not-linearizable"
    assert status["counts"] == {"acknowledged": 40, "unknown": 1}
    assert [e["event"] for e in status["timeline"]] == [
        "fault isolate-member",
        "healed isolate-member",
    ]
    assert "healerJob" not in status, "the injector ended normally"

    def failed_event() -> list[dict[str, Any]] | None:
        events = ok(control_plane, "GET", f"/api/v1/namespaces/{ns}/events")["items"]
        found = [
            e for e in events if e["involvedObject"]["name"] == "exp" and e["reason"] == "Failed"
        ]
        return found or None

    assert "not-linearizable" in wait_for("a Failed event", failed_event)[0]["message"]


def test_cli_run_list_show_history(control_plane: ControlPlane, chaos_operator: Path) -> None:
    """`synod chaos` against the apiserver (no target cluster here: the operator waits, so
    the test writes the status and the history ConfigMap the operator would write)."""
    ns = _namespace(control_plane, f"{NAMESPACE}-cli")
    env = {"KUBECONFIG": str(control_plane.kubeconfig_path)}
    runner = CliRunner()

    def synod(*args: str) -> Result:
        return runner.invoke(cli, ["chaos", *args, "-n", ns], env=env)

    created = synod(
        "run",
        "--target",
        "ghost",
        "--fault",
        "partition-halves",
        "--duration",
        "30s",
        "--name",
        "cli1",
        "--no-follow",
    )
    assert created.exit_code == 0, created.output
    experiment = ok(control_plane, "GET", _path("synod", ns, "chaosexperiments", "cli1"))
    assert experiment["spec"]["faults"][0]["shape"] == "halves"
    again = synod("run", "--target", "ghost", "--name", "cli1", "--no-follow")
    assert again.exit_code == 2 and "already exists" in again.output

    records = [{"type": "kv", "client": 0, "call": 1, "return": 2, "op": "put", "key": "a"}]
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode())
    ok(
        control_plane,
        "POST",
        _path("core", ns, "configmaps"),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cli1-history"},
            "binaryData": {"history.jsonl.gz": base64.b64encode(data).decode()},
        },
    )
    experiment["status"] = {
        "phase": "Completed",
        "verdict": "Passed",
        "fault": "halves 20s",
        "historyConfigMap": "cli1-history",
        "counts": {"acknowledged": 1},
    }
    ok(control_plane, "PUT", _path("synod", ns, "chaosexperiments", "cli1") + "/status", experiment)

    listed = synod("list", "-o", "json")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output) == [
        {
            "name": "cli1",
            "target": "ghost",
            "fault": "halves 20s",
            "phase": "Completed",
            "verdict": "Passed",
        }
    ]
    shown = synod("show", "cli1")
    assert shown.exit_code == 0 and "verdict Passed" in shown.output, shown.output
    history = synod("history", "cli1")
    assert history.exit_code == 0, history.output
    assert [json.loads(line) for line in history.output.splitlines()] == records
    assert synod("show", "nope").exit_code == 3


def test_the_docs_example_is_accepted(control_plane: ControlPlane) -> None:
    """docs/chaos.md's ChaosExperiment passes the apiserver's schema and CEL rules."""
    from tests.unit.test_docs_chaos import chart_examples, doc_experiments

    _install_crd(control_plane)
    ns = _namespace(control_plane, "synod-cp-chaos-docs")
    (example,) = doc_experiments()
    created = ok(control_plane, "POST", _path("synod", ns, "chaosexperiments"), example)
    assert created["spec"]["faults"][1]["member"] == "leader"
    for other in chart_examples():  # charts/synod/examples
        other["metadata"]["name"] = "chart-" + other["metadata"]["name"]
        ok(control_plane, "POST", _path("synod", ns, "chaosexperiments"), other)
