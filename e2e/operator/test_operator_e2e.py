"""The operator on a real kind cluster (`make e2e-operator`; needs `make kind-up images`).

helm install (namespace scope) -> a 3-member ConsensusCluster becomes Available
-> an in-cluster client Job writes and reads keys the whole time while the test
scales 3 -> 5 (killing the operator pod mid-scale) -> 3, upgrades the image tag
(rolling, leader last) and deletes the leader pod -> the Job stops, checks its
history for linearizability with `synod.checker`, and the status is compared
with what the members themselves report. `helm test` then writes and reads a
key through the client Service. Every wait is bounded; step durations are
printed and written to $SYNOD_E2E_TIMINGS (default /tmp/synod-operator-e2e.json).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from synod_operator.builders import member_id

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CLUSTER = os.environ.get("SYNOD_CLUSTER_NAME", "synod")
KUBECONFIG = os.environ.get("SYNOD_KUBECONFIG", f"/var/cache/synod-toolchain/kubeconfig-{CLUSTER}")
NAMESPACE = os.environ.get("SYNOD_E2E_NAMESPACE", "synod-e2e-operator")
RELEASE = "synod-e2e"
NAME = "kv"
IMAGE_TAG = os.environ.get("SYNOD_IMAGE_TAG", "dev")
UPGRADE_TAG = f"{IMAGE_TAG}-upgrade"
TIMINGS_PATH = Path(os.environ.get("SYNOD_E2E_TIMINGS", "/tmp/synod-operator-e2e.json"))
KEEP = os.environ.get("SYNOD_E2E_KEEP") == "1"
STEP_TIMEOUT_S = 420.0
COMMAND_TIMEOUT_S = 120.0
POLL_S = 2.0
# Writes the workload must have made before the test scales, upgrades or kills anything.
WRITES_BEFORE_FIRST_CHANGE = 50

T = TypeVar("T")
TIMINGS: dict[str, float] = {}


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


def helm(*args: str, timeout: float = COMMAND_TIMEOUT_S * 3) -> str:
    return run("helm", f"--kubeconfig={KUBECONFIG}", "-n", NAMESPACE, *args, timeout=timeout)


def get_json(*args: str) -> Any:
    out = kubectl("get", *args, "-o", "json", check=False)
    return json.loads(out) if out.strip() else None


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = STEP_TIMEOUT_S) -> T:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (AssertionError, KeyError, TypeError, ValueError) as error:
            last = error
        if last and not isinstance(last, Exception):
            return last
        time.sleep(POLL_S)
    status = (get_json("consensuscluster", NAME) or {}).get("status")
    raise AssertionError(
        f"timed out waiting for {what}; last={last!r}\nstatus={json.dumps(status)}"
    )


def timed(step: str, action: Callable[[], T]) -> T:
    started = time.monotonic()
    result = action()
    TIMINGS[step] = round(time.monotonic() - started, 1)
    print(f"[e2e] {step}: {TIMINGS[step]}s", flush=True)
    return result


def status() -> dict[str, Any]:
    return dict((get_json("consensuscluster", NAME) or {}).get("status") or {})


def condition(kind: str) -> dict[str, Any]:
    return next((c for c in status().get("conditions") or [] if c["type"] == kind), {})


def settled(voters: int, version: str | None = None) -> bool:
    """Available, not progressing, `voters` healthy voters, every pod ready (and on `version`)."""
    current = status()
    members = current.get("members") or []
    ok = (
        condition("Available").get("status") == "True"
        and condition("Progressing").get("status") == "False"
        and len(members) == voters
        and all(m["role"] == "voter" and m["healthy"] for m in members)
        and current.get("readyReplicas") == voters
    )
    if ok and version is not None:
        pods = get_json("pods", "-l", f"app.kubernetes.io/instance={NAME}")["items"]
        ok = len(pods) == voters and all(
            p["spec"]["containers"][0]["image"].endswith(f":{version}") for p in pods
        )
    return ok


# The planner's step messages during a rolling upgrade (synod_operator.planner._upgrade);
# they name Raft member ids, which are pod ordinal + 1 (builders.member_id).
RESTART_MESSAGE = re.compile(
    r"^restarting (?:follower|the single member) (\d+) on the new revision$"
)
TRANSFER_MESSAGE = re.compile(r"^moving leadership from (\d+) to (\d+) before restarting it$")


def member_of_pod(pod: str) -> int:
    """The Raft member id of StatefulSet pod ``<name>-<ordinal>`` (as the operator maps it)."""
    name, _, ordinal = pod.rpartition("-")
    if not name or not ordinal.isdigit():
        raise ValueError(f"{pod!r} is not a StatefulSet pod name")
    return member_id(int(ordinal))


def event_time(event: dict[str, Any]) -> datetime:
    """When the event happened: kopf sets eventTime (microseconds), else the second-grained
    timestamps."""
    for stamp in (
        event.get("eventTime"),
        event.get("firstTimestamp"),
        event["metadata"].get("creationTimestamp"),
    ):
        if stamp:
            return datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    raise ValueError(f"event {event['metadata'].get('name')} has no timestamp")


def upgrade_steps(events: list[dict[str, Any]]) -> list[tuple[datetime, str, int, int | None]]:
    """The operator's rolling-upgrade steps among ``events``, oldest first:
    (time, "restart" | "transfer", member id, transfer target or None)."""
    steps: list[tuple[datetime, str, int, int | None]] = []
    for event in events:
        if event.get("involvedObject", {}).get("kind") != "ConsensusCluster":
            continue
        message = event.get("message", "")
        if event.get("reason") == "RestartPod" and (found := RESTART_MESSAGE.match(message)):
            steps.append((event_time(event), "restart", int(found[1]), None))
        elif event.get("reason") == "TransferLeadership" and (
            moved := TRANSFER_MESSAGE.match(message)
        ):
            steps.append((event_time(event), "transfer", int(moved[1]), int(moved[2])))
    return sorted(steps, key=lambda step: step[0])


def assert_leader_restarted_last(
    events: list[dict[str, Any]], leader: int, members: set[int]
) -> None:
    """Every member of ``members`` was restarted; leadership moved from ``leader`` to
    another member before ``leader`` was restarted, and after every other member was.
    Raises AssertionError naming the steps otherwise."""
    steps = upgrade_steps(events)
    restarted = {member for _, kind, member, _ in steps if kind == "restart"}
    assert restarted == members, (
        f"restarted {sorted(restarted)}, expected {sorted(members)}: {steps}"
    )
    transfers = [
        (at, to) for at, kind, member, to in steps if kind == "transfer" and member == leader
    ]
    assert transfers, f"leadership never moved away from leader {leader}: {steps}"
    moved_at, moved_to = transfers[0]
    assert moved_to is not None and moved_to != leader and moved_to in members, steps
    leader_restarts = [
        at for at, kind, member, _ in steps if kind == "restart" and member == leader
    ]
    others = [at for at, kind, member, _ in steps if kind == "restart" and member != leader]
    assert min(leader_restarts) >= moved_at, (
        f"leader {leader} restarted before the transfer: {steps}"
    )
    assert all(at <= moved_at for at in others), (
        f"a follower restarted after the leader moved: {steps}"
    )


def node_status(pod: str) -> dict[str, Any]:
    script = (
        "import json,urllib.request as u;"
        "print(json.dumps(json.load(u.urlopen('http://127.0.0.1:2379/v1/cluster/status',timeout=5))))"
    )
    return dict(json.loads(kubectl("exec", pod, "-c", "synod", "--", "python", "-c", script)))


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    if not Path(KUBECONFIG).exists():
        pytest.skip(f"no kind cluster (kubeconfig {KUBECONFIG} absent): run `make kind-up images`")
    run("kubectl", f"--kubeconfig={KUBECONFIG}", "create", "namespace", NAMESPACE, check=False)
    # A second tag of the same node image: the rolling upgrade changes the pod template.
    run("docker", "tag", f"synod/node:{IMAGE_TAG}", f"synod/node:{UPGRADE_TAG}")
    run("kind", "load", "docker-image", "--name", CLUSTER, f"synod/node:{UPGRADE_TAG}", timeout=600)
    timed(
        "helm install",
        lambda: helm(
            "upgrade", "--install", RELEASE, str(ROOT / "charts" / "synod"), "--wait",
            "--timeout=5m", "--set=operator.scope=namespace", f"--set=tests.clusterName={NAME}",
            f"--set=operator.image.tag={IMAGE_TAG}", f"--set=tests.image.tag={IMAGE_TAG}",
            "--set=operator.logVerbose=true",
        ),
    )  # fmt: skip
    try:
        yield
    finally:
        TIMINGS_PATH.write_text(json.dumps(TIMINGS, indent=2))
        print(f"[e2e] timings: {json.dumps(TIMINGS)}", flush=True)
        if not KEEP:
            kubectl(
                "delete", "consensuscluster", NAME, "--wait=true", "--timeout=180s", check=False
            )
            run(
                "helm",
                f"--kubeconfig={KUBECONFIG}",
                "-n",
                NAMESPACE,
                "uninstall",
                RELEASE,
                check=False,
            )
            run("kubectl", f"--kubeconfig={KUBECONFIG}", "delete", "namespace", NAMESPACE,
                "--wait=false", check=False)  # fmt: skip


def cluster_manifest(replicas: int) -> str:
    return json.dumps(
        {
            "apiVersion": "synod.dev/v1alpha1",
            "kind": "ConsensusCluster",
            "metadata": {"name": NAME},
            "spec": {"replicas": replicas, "version": IMAGE_TAG, "storage": {"size": "256Mi"}},
        }
    )


def workload_command() -> list[str]:
    """The shared chaos recorder (synod.chaos.recorder, in the node image): KV ops through
    the SDK until the key `e2e/stop` appears, then the linearizability verdict."""
    return [
        "python", "-m", "synod.chaos.recorder",
        "--endpoints", f"http://{NAME}.{NAMESPACE}.svc:2379",
        "--kind", "kv", "--clients", "3", "--duration", "30m", "--stop-key", "e2e/stop",
    ]  # fmt: skip


def workload_job() -> str:
    return json.dumps(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "kv-workload"},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "workload",
                                "image": f"synod/node:{IMAGE_TAG}",
                                "imagePullPolicy": "IfNotPresent",
                                "command": workload_command(),
                            }
                        ],
                    }
                },
            },
        }
    )


def test_scale_upgrade_and_leader_loss_under_load(installed: None) -> None:
    kubectl("apply", "-f", "-", stdin=cluster_manifest(3))
    timed("create 3 members -> Available", lambda: wait_for("3 voters", lambda: settled(3)))

    kubectl("delete", "job", "kv-workload", "--wait=true", check=False)
    kubectl("apply", "-f", "-", stdin=workload_job())
    wait_for(
        "the workload to run",
        lambda: any(
            p["status"].get("phase") == "Running"
            for p in get_json("pods", "-l", "job-name=kv-workload")["items"]
        ),
    )
    # Some history before the first change: the workload's puts advance the revision.
    first = int(node_status(f"{NAME}-0")["revision"])
    wait_for(
        f"{WRITES_BEFORE_FIRST_CHANGE} workload writes",
        lambda: int(node_status(f"{NAME}-0")["revision"]) >= first + WRITES_BEFORE_FIRST_CHANGE,
    )

    def scale_up() -> None:
        kubectl("scale", f"consensuscluster/{NAME}", "--replicas=5")
        # Kill the operator once the StatefulSet grew: the next operator finishes the job.
        wait_for(
            "the StatefulSet to grow",
            lambda: get_json("statefulset", NAME)["spec"]["replicas"] >= 4,
        )
        kubectl("delete", "pod", "-l", "app.kubernetes.io/component=operator", "--wait=false")
        wait_for("5 voters", lambda: settled(5))

    timed("scale 3 -> 5 (operator killed mid-scale)", scale_up)

    def scale_down() -> None:
        kubectl("scale", f"consensuscluster/{NAME}", "--replicas=3")
        wait_for("3 voters", lambda: settled(3))
        wait_for(
            "the removed members' claims to go",
            lambda: (
                sorted(c["metadata"]["name"] for c in get_json("pvc")["items"])
                == [f"data-{NAME}-{i}" for i in range(3)]
            ),
        )

    timed("scale 5 -> 3", scale_down)

    def cluster_events() -> list[dict[str, Any]]:
        selector = f"involvedObject.name={NAME},involvedObject.kind=ConsensusCluster"
        return list(get_json("events", "--field-selector", selector)["items"])

    def upgrade() -> None:
        leader_before = member_of_pod(status()["leader"])
        # Only the upgrade's own steps count (the scale-down may have moved leadership).
        earlier = {e["metadata"]["uid"] for e in cluster_events()}
        kubectl("patch", "consensuscluster", NAME, "--type=merge", "-p",
                json.dumps({"spec": {"version": UPGRADE_TAG}}))  # fmt: skip
        wait_for("every pod on the new tag", lambda: settled(3, UPGRADE_TAG))
        assert status()["currentVersion"] == UPGRADE_TAG
        events = [e for e in cluster_events() if e["metadata"]["uid"] not in earlier]
        # Followers first, then leadership moves away from the old leader, then it restarts.
        assert_leader_restarted_last(events, leader_before, {1, 2, 3})

    timed("rolling upgrade", upgrade)

    def leader_loss() -> None:
        leader = status()["leader"]
        kubectl("delete", "pod", leader, "--wait=false")
        wait_for("a new leader", lambda: status().get("leader") not in (None, leader))
        wait_for("3 healthy voters again", lambda: settled(3))

    timed("delete the leader pod", leader_loss)

    def stop_workload() -> dict[str, Any]:
        script = (
            "import json,urllib.request as u;u.urlopen(u.Request('http://127.0.0.1:2379/v1/kv/put',"
            "data=json.dumps({'key':'e2e/stop','value':'1'}).encode(),method='POST',"
            "headers={'Content-Type':'application/json'}),timeout=10)"
        )
        kubectl("exec", f"{NAME}-0", "-c", "synod", "--", "python", "-c", script)
        wait_for(
            "the workload to finish",
            lambda: (
                (get_json("job", "kv-workload")["status"].get("succeeded") or 0)
                + (get_json("job", "kv-workload")["status"].get("failed") or 0)
            ),
        )
        logs = kubectl("logs", "job/kv-workload")
        line = next(ln for ln in reversed(logs.splitlines()) if ln.startswith("RESULT "))
        return dict(json.loads(line.removeprefix("RESULT ")))

    result = timed("stop the workload and check the history", stop_workload)
    print(f"[e2e] workload: {json.dumps(result)}", flush=True)
    assert result["verdict"] == "Passed", result
    assert result["counts"]["acknowledged"] > 0, result

    # The status reflects what the members report.
    current = status()
    reported = node_status(current["leader"])
    assert reported["role"] == "leader"
    assert (
        {m["id"] for m in reported["members"]} == {m["id"] for m in current["members"]} == {1, 2, 3}
    )
    assert current["term"] <= reported["term"]

    timed("helm test", lambda: helm("test", RELEASE, "--timeout=3m"))
