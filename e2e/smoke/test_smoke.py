"""Smoke test on the real kind cluster (``make e2e-smoke``; ``make kind-up`` first).

Checks what the rest of the project relies on: the synod-node image runs and
becomes Ready, a headless Service resolves through cluster DNS, a StatefulSet's
PersistentVolumeClaim binds, ``kubectl logs`` and ``kubectl port-forward``
work, and a privileged pod can enter another pod's network namespace
(nsenter) and drop, then restore, its traffic to a third pod with iptables --
the mechanism of the chaos jobs' partitions.

Every wait is bounded; the only addresses used are cluster-internal ones and
127.0.0.1 (the port-forward).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CLUSTER = os.environ.get("SYNOD_CLUSTER_NAME", "synod")
KUBECONFIG = os.environ.get("SYNOD_KUBECONFIG", f"/var/cache/synod-toolchain/kubeconfig-{CLUSTER}")
IMAGE_TAG = os.environ.get("SYNOD_IMAGE_TAG", "dev")
NODE_IMAGE = f"synod/node:{IMAGE_TAG}"
CHAOS_IMAGE = f"synod/chaos-tools:{IMAGE_TAG}"
NODE_PORT = 8080

# ---------------------------------------------------------------------------
# The Deployment runs a single-member Synod node (`synod node`) on its client
# port; its readiness probe is the node's /readyz (has a leader, caught up).
PEER_PORT = 7000
NODE_COMMAND = [
    "synod",
    "node",
    "--id",
    "1",
    "--data-dir",
    "/var/lib/synod",
    "--listen-client",
    f"0.0.0.0:{NODE_PORT}",
    "--listen-peer",
    f"0.0.0.0:{PEER_PORT}",
    "--initial-cluster",
    f"1=127.0.0.1:{PEER_PORT}@http://127.0.0.1:{NODE_PORT}",
]
READINESS_PATH = "/readyz"
# ---------------------------------------------------------------------------

WAIT_S = 240
SHORT_TIMEOUT_S = 60


def kubectl(
    *args: str, check: bool = True, timeout: float = SHORT_TIMEOUT_S, stdin: str | None = None
) -> str:
    result = subprocess.run(
        ["kubectl", f"--kubeconfig={KUBECONFIG}", *args],
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
        )
    return result.stdout


def apply(namespace: str, manifest: dict[str, Any]) -> None:
    kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(manifest))


def get_json(namespace: str, *what: str) -> Any:
    return json.loads(kubectl("-n", namespace, "get", *what, "-o", "json"))


def pod_exec(
    namespace: str, pod: str, *command: str, check: bool = True, timeout: float = SHORT_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["kubectl", f"--kubeconfig={KUBECONFIG}", "-n", namespace, "exec", pod, "--", *command],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"exec {command} in {pod} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def pod_spec(name: str, image: str, command: list[str], **extra: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
    }
    container.update(extra.pop("container", {}))
    spec: dict[str, Any] = {"containers": [container], "terminationGracePeriodSeconds": 1}
    spec.update(extra)
    return spec


def affinity_term(weight: int | None = None) -> dict[str, Any]:
    """A pod-affinity term selecting the synod-node pods on the same node."""
    term = {
        "labelSelector": {"matchLabels": {"app": "synod-node"}},
        "topologyKey": "kubernetes.io/hostname",
    }
    return term if weight is None else {"weight": weight, "podAffinityTerm": term}


CONNECT_PROBE = (
    "import socket, sys\n"
    "s = socket.socket(); s.settimeout(3)\n"
    "try:\n"
    "    s.connect((sys.argv[1], int(sys.argv[2]))); s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
    "    print(s.recv(12).decode()); sys.exit(0)\n"
    "except OSError as err:\n"
    "    print('unreachable:', err); sys.exit(1)\n"
)


@pytest.fixture(scope="module")
def ns() -> Iterator[str]:
    if not Path(KUBECONFIG).exists():
        pytest.fail(f"no kubeconfig at {KUBECONFIG}: run `make kind-up` first")
    name = f"synod-smoke-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    labels = {"app": "synod-node"}
    apply(
        name,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "synod-node"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": pod_spec(
                        "node",
                        NODE_IMAGE,
                        NODE_COMMAND,
                        container={
                            "ports": [{"containerPort": NODE_PORT, "name": "http"}],
                            "readinessProbe": {
                                "httpGet": {"path": READINESS_PATH, "port": NODE_PORT},
                                "periodSeconds": 2,
                            },
                        },
                    ),
                },
            },
        },
    )
    apply(
        name,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "synod-peers"},
            "spec": {
                "clusterIP": "None",
                "selector": labels,
                "ports": [{"port": NODE_PORT, "name": "http"}],
                "publishNotReadyAddresses": True,
            },
        },
    )
    sts_labels = {"app": "synod-pvc"}
    apply(
        name,
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "synod-pvc"},
            "spec": {
                "serviceName": "synod-peers",
                "replicas": 1,
                "selector": {"matchLabels": sts_labels},
                "template": {
                    "metadata": {"labels": sts_labels},
                    "spec": pod_spec(
                        "data",
                        NODE_IMAGE,
                        ["sh", "-c", "echo persisted > /var/lib/synod/probe && exec sleep 3600"],
                        container={
                            "volumeMounts": [{"name": "data", "mountPath": "/var/lib/synod"}]
                        },
                        securityContext={"fsGroup": 10001},
                    ),
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "64Mi"}},
                        },
                    }
                ],
            },
        },
    )
    # The third pod of the partition check, and the privileged chaos pod.
    apply(
        name,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "client", "labels": {"app": "synod-client"}},
            # On a multi-node cluster, preferably on another node than the target.
            "spec": pod_spec(
                "client",
                NODE_IMAGE,
                ["sleep", "3600"],
                affinity={
                    "podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [affinity_term(100)]
                    }
                },
            ),
        },
    )
    apply(
        name,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "chaos"},
            "spec": pod_spec(
                "chaos",
                CHAOS_IMAGE,
                ["sleep", "3600"],
                hostPID=True,
                container={"securityContext": {"privileged": True}},
                # hostPID shows only its own node's processes: run beside the target.
                affinity={
                    "podAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": [affinity_term()]
                    }
                },
            ),
        },
    )
    try:
        yield name
    finally:
        if os.environ.get("SYNOD_SMOKE_KEEP") != "1":
            kubectl("delete", "namespace", name, "--wait=false", check=False)


def node_pod(ns: str) -> dict[str, Any]:
    pods = get_json(ns, "pods", "-l", "app=synod-node")["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    pod: dict[str, Any] = pods[0]
    return pod


def test_node_deployment_becomes_ready(ns: str) -> None:
    kubectl(
        "-n",
        ns,
        "rollout",
        "status",
        "deploy/synod-node",
        f"--timeout={WAIT_S}s",
        timeout=WAIT_S + 30,
    )
    pod = node_pod(ns)
    assert pod["spec"]["containers"][0]["image"] == NODE_IMAGE
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert ready["Ready"] == "True"


def test_headless_service_resolves_through_cluster_dns(ns: str) -> None:
    kubectl(
        "-n",
        ns,
        "wait",
        "--for=condition=Ready",
        "pod/client",
        f"--timeout={WAIT_S}s",
        timeout=WAIT_S + 30,
    )
    kubectl(
        "-n",
        ns,
        "rollout",
        "status",
        "deploy/synod-node",
        f"--timeout={WAIT_S}s",
        timeout=WAIT_S + 30,
    )
    pod_ip = node_pod(ns)["status"]["podIP"]
    fqdn = f"synod-peers.{ns}.svc.cluster.local"
    deadline = time.monotonic() + SHORT_TIMEOUT_S
    answer = ""
    while time.monotonic() < deadline:
        result = pod_exec(
            ns,
            "client",
            "python",
            "-c",
            f"import socket; print(socket.gethostbyname({fqdn!r}))",
            check=False,
        )
        answer = (result.stdout + result.stderr).strip()
        if result.returncode == 0 and answer == pod_ip:
            break
        time.sleep(2)
    assert answer == pod_ip, f"{fqdn} resolved to {answer!r}, expected {pod_ip}"
    # The short name works too, through the pod's search path.
    short = pod_exec(
        ns, "client", "python", "-c", "import socket; print(socket.gethostbyname('synod-peers'))"
    )
    assert short.stdout.strip() == pod_ip


def test_statefulset_pvc_binds(ns: str) -> None:
    kubectl(
        "-n", ns, "rollout", "status", "sts/synod-pvc", f"--timeout={WAIT_S}s", timeout=WAIT_S + 30
    )
    pvc = get_json(ns, "pvc", "data-synod-pvc-0")
    assert pvc["status"]["phase"] == "Bound"
    pv = json.loads(kubectl("get", "pv", pvc["spec"]["volumeName"], "-o", "json"))
    assert pv["spec"]["storageClassName"] == pvc["spec"]["storageClassName"]
    content = pod_exec(ns, "synod-pvc-0", "cat", "/var/lib/synod/probe").stdout.strip()
    assert content == "persisted"


def test_kubectl_logs(ns: str) -> None:
    kubectl(
        "-n",
        ns,
        "rollout",
        "status",
        "deploy/synod-node",
        f"--timeout={WAIT_S}s",
        timeout=WAIT_S + 30,
    )
    deadline = time.monotonic() + SHORT_TIMEOUT_S
    logs = ""
    while time.monotonic() < deadline and "node 1 started" not in logs:
        logs = kubectl("-n", ns, "logs", "deploy/synod-node", "--tail=20")
        time.sleep(1)
    assert logs.strip(), "the node wrote no logs"
    assert "node 1 started" in logs, logs


def test_kubectl_port_forward(ns: str) -> None:
    kubectl(
        "-n",
        ns,
        "rollout",
        "status",
        "deploy/synod-node",
        f"--timeout={WAIT_S}s",
        timeout=WAIT_S + 30,
    )
    pod = node_pod(ns)["metadata"]["name"]
    proc = subprocess.Popen(
        [
            "kubectl",
            f"--kubeconfig={KUBECONFIG}",
            "-n",
            ns,
            "port-forward",
            "--address=127.0.0.1",
            f"pod/{pod}",
            f":{NODE_PORT}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "Forwarding from 127.0.0.1:NNNNN -> 8080"
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert match, f"unexpected port-forward output: {line!r}"
        url = f"http://127.0.0.1:{match.group(1)}{READINESS_PATH}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _pid_in_pod(ns: str, pod_uid: str) -> str:
    """A host PID (seen from the hostPID chaos pod) of a process of the pod."""
    needles = [pod_uid, pod_uid.replace("-", "_")]
    script = (
        "for f in /proc/[0-9]*/cgroup; do "
        + " ".join(
            f"grep -q {n} $f 2>/dev/null && {{ p=${{f#/proc/}}; echo ${{p%/cgroup}}; exit 0; }};"
            for n in needles
        )
        + " done; exit 1"
    )
    return pod_exec(ns, "chaos", "sh", "-c", script).stdout.strip()


def test_privileged_pod_partitions_with_nsenter_and_iptables(ns: str) -> None:
    for pod in ("client", "chaos"):
        kubectl(
            "-n",
            ns,
            "wait",
            "--for=condition=Ready",
            f"pod/{pod}",
            f"--timeout={WAIT_S}s",
            timeout=WAIT_S + 30,
        )
    kubectl(
        "-n",
        ns,
        "rollout",
        "status",
        "deploy/synod-node",
        f"--timeout={WAIT_S}s",
        timeout=WAIT_S + 30,
    )
    target = node_pod(ns)
    target_ip = target["status"]["podIP"]
    client_ip = get_json(ns, "pod", "client")["status"]["podIP"]

    def client_can_connect() -> bool:
        result = pod_exec(
            ns,
            "client",
            "python",
            "-c",
            CONNECT_PROBE,
            target_ip,
            str(NODE_PORT),
            check=False,
            timeout=30,
        )
        return result.returncode == 0

    assert client_can_connect(), "client cannot reach the node before the partition"
    pid = _pid_in_pod(ns, target["metadata"]["uid"])
    assert pid.isdigit(), pid
    rules = [["INPUT", "-s", client_ip, "-j", "DROP"], ["OUTPUT", "-d", client_ip, "-j", "DROP"]]
    enter = ["nsenter", "--target", pid, "--net", "--"]
    for rule in rules:
        pod_exec(ns, "chaos", *enter, "iptables", "-I", *rule)
    try:
        listing = pod_exec(ns, "chaos", *enter, "iptables", "-S").stdout
        assert f"-A INPUT -s {client_ip}/32 -j DROP" in listing, listing
        assert not client_can_connect(), "client still reaches the node during the partition"
        # Only the client is cut off: the node still serves its kubelet readiness probe.
    finally:
        for rule in rules:
            pod_exec(ns, "chaos", *enter, "iptables", "-D", *rule, check=False)
    deadline = time.monotonic() + SHORT_TIMEOUT_S
    healed = client_can_connect()
    while not healed and time.monotonic() < deadline:
        time.sleep(1)
        healed = client_can_connect()
    assert healed, "client cannot reach the node after the partition was healed"


def test_helm_installs_a_chart(ns: str, tmp_path: Path) -> None:
    chart = tmp_path / "smoke"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: smoke\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-greeting\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    helm = ["helm", f"--kubeconfig={KUBECONFIG}", "-n", ns]
    subprocess.run(
        [
            *helm,
            "install",
            "smoke",
            str(chart),
            "--set",
            "greeting=synod",
            "--wait",
            "--timeout=120s",
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    assert get_json(ns, "configmap", "smoke-greeting")["data"] == {"greeting": "synod"}
    releases = json.loads(
        subprocess.run(
            [*helm, "list", "-o", "json"], check=True, capture_output=True, text=True, timeout=60
        ).stdout
    )
    assert [(r["name"], r["status"]) for r in releases] == [("smoke", "deployed")]
    subprocess.run(
        [*helm, "uninstall", "smoke", "--wait"], check=True, capture_output=True, timeout=180
    )
