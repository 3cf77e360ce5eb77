"""Pure manifest builders: a ClusterSpec in, Kubernetes objects (plain dicts) out.

Nothing here talks to the API server. The handlers apply these objects with
server-side apply, so every builder returns the complete desired object and
the same input always gives the same output (the handlers rely on that for
idempotence).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .spec import API_VERSION, KIND, ClusterSpec

CLIENT_PORT = 2379
PEER_PORT = 2380
GOSSIP_PORT = 7946  # SWIM gossip over UDP (docs/gossip.md); the node image exposes it.
RLS_PORT = 8081  # Envoy RLS v3 gRPC of the rate-limit service (docs/ratelimit.md); exposed too.
DATA_MOUNT_PATH = "/var/lib/synod"
DATA_DIR = f"{DATA_MOUNT_PATH}/data"  # a subdirectory: volume roots may hold lost+found
TMP_MOUNT_PATH = "/tmp"
DATA_VOLUME = "data"
NODE_UID = 10001  # the `synod` user of node-image/Dockerfile
TERMINATION_GRACE_S = 30
# Bounds of the preStop hook's HTTP calls; the whole hook must end well within the grace period.
PRESTOP_HTTP_TIMEOUT_S = 5
LIVENESS_PERIOD_S = 10
LIVENESS_FAILURES_MAX = 6
READINESS_PERIOD_S = 5
TMP_SIZE_LIMIT = "64Mi"

ANNOTATION_CONFIG_HASH = "synod.dev/config-hash"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_VERSION = "app.kubernetes.io/version"
APP_NAME = "synod"
COMPONENT = "consensus"
MANAGER = "synod-operator"

# ConfigMap keys the operator owns over the cluster's lifetime rather than
# deriving from the spec; they never enter the config hash, so flipping them
# does not restart members.
ENV_INITIAL_REPLICAS = "SYNOD_INITIAL_REPLICAS"
ENV_JOIN = "SYNOD_JOIN"
LIFETIME_KEYS = (ENV_INITIAL_REPLICAS, ENV_JOIN)
ENV_CLUSTER_TOKEN = "SYNOD_CLUSTER_TOKEN"

# Only a leader moves leadership away before stopping; a follower stopping must
# not disturb the leader. The node also transfers on SIGTERM (docs/node.md);
# this hook makes the hand-over happen before the endpoint is removed.
PRESTOP_SCRIPT = (
    "import json,urllib.request as u\n"
    f"b='http://127.0.0.1:{CLIENT_PORT}'\n"
    "try:\n"
    f"  s=json.load(u.urlopen(b+'/v1/cluster/status',timeout={PRESTOP_HTTP_TIMEOUT_S}))\n"
    "  if s.get('role')=='leader':\n"
    "    r=u.Request(b+'/v1/admin/leadership/transfer',data=b'{}',method='POST',"
    "headers={'Content-Type':'application/json'})\n"
    f"    u.urlopen(r,timeout={PRESTOP_HTTP_TIMEOUT_S})\n"
    "except Exception as e:\n"
    "  print('preStop: leadership transfer skipped:',e)\n"
)


@dataclass(frozen=True)
class Owner:
    """The ConsensusCluster that owns every built object (for garbage collection)."""

    name: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def cluster_token(spec: ClusterSpec, owner: Owner) -> str:
    """SYNOD_CLUSTER_TOKEN of the members: unique per ConsensusCluster object."""
    return f"{spec.namespace}/{owner.name}/{owner.uid}"


def peers_service_name(name: str) -> str:
    return f"{name}-peers"


def config_map_name(name: str) -> str:
    return f"{name}-config"


def pod_name(name: str, ordinal: int) -> str:
    return f"{name}-{ordinal}"


def pvc_name(name: str, ordinal: int) -> str:
    # The StatefulSet controller names claims <template>-<pod>.
    return f"{DATA_VOLUME}-{pod_name(name, ordinal)}"


def member_id(ordinal: int) -> int:
    """Node id of a StatefulSet ordinal (`--id-from-hostname`: ordinal + 1)."""
    assert ordinal >= 0
    return ordinal + 1


def ordinal_of(node_id: int) -> int:
    assert node_id >= 1
    return node_id - 1


def pod_host(spec: ClusterSpec, ordinal: int) -> str:
    """The stable DNS name of one member through the headless Service."""
    return f"{pod_name(spec.name, ordinal)}.{peers_service_name(spec.name)}.{spec.namespace}.svc"


def peer_address(spec: ClusterSpec, ordinal: int) -> str:
    return f"{pod_host(spec, ordinal)}:{PEER_PORT}"


def client_url(spec: ClusterSpec, ordinal: int) -> str:
    return f"http://{pod_host(spec, ordinal)}:{CLIENT_PORT}"


def selector_labels(name: str) -> dict[str, str]:
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: name, LABEL_COMPONENT: COMPONENT}


def selector_string(name: str) -> str:
    """The label selector as `kubectl scale` and the scale subresource want it."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector_labels(name).items()))


def common_labels(spec: ClusterSpec) -> dict[str, str]:
    labels = selector_labels(spec.name)
    labels.update({LABEL_MANAGED_BY: MANAGER, LABEL_PART_OF: APP_NAME})
    return labels


def quorum_size(voters: int) -> int:
    assert voters >= 1
    return voters // 2 + 1


def _metadata(spec: ClusterSpec, owner: Owner, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": spec.namespace,
        "labels": common_labels(spec),
        "ownerReferences": [owner.reference()],
    }


def config_data(spec: ClusterSpec, initial_replicas: int, bootstrapped: bool) -> dict[str, str]:
    """Environment of every member (`SYNOD_*`, docs/node.md).

    `initial_replicas` is the founding size, fixed at creation: ordinals beyond
    it start empty and wait to be added as learners. Once the cluster has
    elected its first leader, `bootstrapped` turns SYNOD_JOIN on, so that a
    founding ordinal whose volume is new (say after scale 5 -> 3 -> 5) joins
    instead of bootstrapping a second time.
    """
    assert initial_replicas >= 1, "a cluster is founded by at least one member"
    data = {
        "SYNOD_ID_FROM_HOSTNAME": "true",
        "SYNOD_DATA_DIR": DATA_DIR,
        "SYNOD_LISTEN_CLIENT": f"0.0.0.0:{CLIENT_PORT}",
        "SYNOD_LISTEN_PEER": f"0.0.0.0:{PEER_PORT}",
        "SYNOD_PEER_DNS": f"{spec.name}.{peers_service_name(spec.name)}.{spec.namespace}.svc",
        "SYNOD_PEER_PORT": str(PEER_PORT),
        "SYNOD_CLIENT_PORT": str(CLIENT_PORT),
        # Advertised as <pod>.<peers service>:7946; seeds are the other founding pods.
        "SYNOD_LISTEN_GOSSIP": f"0.0.0.0:{GOSSIP_PORT}",
        "SYNOD_LISTEN_RLS": f"0.0.0.0:{RLS_PORT}",
        "SYNOD_HEARTBEAT_INTERVAL_MS": str(spec.raft.heartbeat_interval_ms),
        "SYNOD_ELECTION_TIMEOUT_MS": str(spec.raft.election_timeout_ms),
        "SYNOD_SNAPSHOT_ENTRIES": str(spec.raft.snapshot_entries),
        ENV_INITIAL_REPLICAS: str(initial_replicas),
        ENV_JOIN: "true" if bootstrapped else "false",
    }
    assert set(LIFETIME_KEYS) <= set(data)
    return data


def config_hash(data: dict[str, str]) -> str:
    """Hash of the settings a running member reads at start (lifetime keys excluded)."""
    relevant = {key: value for key, value in data.items() if key not in LIFETIME_KEYS}
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()
    return digest[:16]


def build_config_map(
    spec: ClusterSpec, owner: Owner, initial_replicas: int, bootstrapped: bool
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(spec, owner, config_map_name(spec.name)),
        "data": config_data(spec, initial_replicas, bootstrapped),
    }


def build_service_account(spec: ClusterSpec, owner: Owner) -> dict[str, Any]:
    # Members never call the Kubernetes API: no token in the pods.
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(spec, owner, spec.name),
        "automountServiceAccountToken": False,
    }


def build_peers_service(spec: ClusterSpec, owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, owner, peers_service_name(spec.name)),
        "spec": {
            "clusterIP": "None",
            # Members must resolve each other before they are ready: readiness
            # needs a leader, and electing one needs the peers' addresses.
            "publishNotReadyAddresses": True,
            "selector": selector_labels(spec.name),
            "ports": [
                {"name": "peer", "port": PEER_PORT, "targetPort": "peer", "protocol": "TCP"},
                {"name": "client", "port": CLIENT_PORT, "targetPort": "client", "protocol": "TCP"},
                {"name": "gossip", "port": GOSSIP_PORT, "targetPort": "gossip", "protocol": "UDP"},
            ],
        },
    }


def build_client_service(spec: ClusterSpec, owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, owner, spec.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(spec.name),
            "ports": [
                {"name": "client", "port": CLIENT_PORT, "targetPort": "client", "protocol": "TCP"},
                {"name": "rls", "port": RLS_PORT, "targetPort": "rls", "protocol": "TCP"},
            ],
        },
    }


def build_pod_disruption_budget(
    spec: ClusterSpec, owner: Owner, member_count: int
) -> dict[str, Any]:
    """Voluntary disruptions may take away only members above a quorum.

    `member_count` is the StatefulSet's current size: during a scale the pod
    count and the voter count differ by at most one learner, and a quorum of
    the pod count is never smaller than a quorum of the voters.
    """
    assert member_count >= 1
    min_available = quorum_size(member_count)
    assert 2 * min_available > member_count, "a PDB below a majority could lose quorum"
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(spec, owner, spec.name),
        "spec": {
            "minAvailable": min_available,
            "selector": {"matchLabels": selector_labels(spec.name)},
            "unhealthyPodEvictionPolicy": "IfHealthyBudget",
        },
    }


def _default_affinity(name: str) -> dict[str, Any]:
    # Prefer members on different nodes; "preferred" so a one-node kind cluster still works.
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": selector_labels(name)},
                    },
                }
            ]
        }
    }


def _container(spec: ClusterSpec) -> dict[str, Any]:
    host = f"$(POD_NAME).{peers_service_name(spec.name)}.{spec.namespace}.svc"
    container: dict[str, Any] = {
        "name": "synod",
        "image": spec.image_ref,
        "imagePullPolicy": spec.image_pull_policy,
        "args": ["node"],
        "envFrom": [{"configMapRef": {"name": config_map_name(spec.name)}}],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "SYNOD_ADVERTISE_CLIENT", "value": f"http://{host}:{CLIENT_PORT}"},
            {"name": "SYNOD_ADVERTISE_PEER", "value": f"{host}:{PEER_PORT}"},
        ],
        "ports": [
            {"name": "client", "containerPort": CLIENT_PORT, "protocol": "TCP"},
            {"name": "peer", "containerPort": PEER_PORT, "protocol": "TCP"},
            {"name": "gossip", "containerPort": GOSSIP_PORT, "protocol": "UDP"},
            {"name": "rls", "containerPort": RLS_PORT, "protocol": "TCP"},
        ],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "client"},
            "periodSeconds": LIVENESS_PERIOD_S,
            "failureThreshold": LIVENESS_FAILURES_MAX,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "client"},
            "periodSeconds": READINESS_PERIOD_S,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["python", "-c", PRESTOP_SCRIPT]}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": DATA_VOLUME, "mountPath": DATA_MOUNT_PATH},
            {"name": "tmp", "mountPath": TMP_MOUNT_PATH},
        ],
    }
    if spec.resources:
        container["resources"] = spec.resources
    return container


def build_pod_template(spec: ClusterSpec, data: dict[str, str]) -> dict[str, Any]:
    overrides = spec.pod_template
    labels = {**overrides.labels, **selector_labels(spec.name)}
    labels.update({LABEL_PART_OF: APP_NAME, LABEL_VERSION: spec.version})
    annotations = {**overrides.annotations, ANNOTATION_CONFIG_HASH: config_hash(data)}
    pod_spec: dict[str, Any] = {
        "serviceAccountName": spec.name,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": NODE_UID,
            "runAsGroup": NODE_UID,
            "fsGroup": NODE_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(spec)],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}}],
        "affinity": overrides.affinity or _default_affinity(spec.name),
    }
    if overrides.tolerations:
        pod_spec["tolerations"] = overrides.tolerations
    if overrides.topology_spread_constraints:
        pod_spec["topologySpreadConstraints"] = overrides.topology_spread_constraints
    if overrides.node_selector:
        pod_spec["nodeSelector"] = overrides.node_selector
    if overrides.priority_class_name:
        pod_spec["priorityClassName"] = overrides.priority_class_name
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec}


def build_stateful_set(
    spec: ClusterSpec, owner: Owner, replicas: int, data: dict[str, str]
) -> dict[str, Any]:
    """The members' StatefulSet at `replicas` pods (the planner moves it one at a time).

    OnDelete updates: the planner picks the order of a rolling upgrade
    (followers first, the leader last). Parallel pod management: founding
    members must start together, since none is ready before a leader exists.
    """
    assert replicas >= 0
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.storage.size}},
    }
    if spec.storage.storage_class_name:
        claim_spec["storageClassName"] = spec.storage.storage_class_name
    template = build_pod_template(spec, data)
    # The peer hello's cluster id (docs/node.md): fixed for this ConsensusCluster's
    # life, so a member never talks to a namesake's leftover pods or volumes.
    token = {"name": ENV_CLUSTER_TOKEN, "value": cluster_token(spec, owner)}
    template["spec"]["containers"][0]["env"].append(token)
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(spec, owner, spec.name),
        "spec": {
            "replicas": replicas,
            "serviceName": peers_service_name(spec.name),
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "OnDelete"},
            # The operator deletes claims itself, after the member left the
            # Raft configuration, according to spec.storage.
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain",
            },
            "selector": {"matchLabels": selector_labels(spec.name)},
            "template": template,
            "volumeClaimTemplates": [
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": DATA_VOLUME, "labels": selector_labels(spec.name)},
                    "spec": claim_spec,
                }
            ],
        },
    }


def build_service_monitor(spec: ClusterSpec, owner: Owner) -> dict[str, Any]:
    monitor = spec.service_monitor
    metadata = _metadata(spec, owner, spec.name)
    metadata["labels"] = {**monitor.labels, **metadata["labels"]}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": selector_labels(spec.name)},
            "endpoints": [{"port": "client", "path": "/metrics", "interval": monitor.interval}],
        },
    }


def build_all(
    spec: ClusterSpec,
    owner: Owner,
    *,
    initial_replicas: int,
    bootstrapped: bool,
    statefulset_replicas: int,
) -> list[dict[str, Any]]:
    """Every object a ConsensusCluster owns, in creation order (the StatefulSet last)."""
    data = config_data(spec, initial_replicas, bootstrapped)
    objects = [
        build_service_account(spec, owner),
        build_config_map(spec, owner, initial_replicas, bootstrapped),
        build_peers_service(spec, owner),
        build_client_service(spec, owner),
        build_pod_disruption_budget(spec, owner, max(statefulset_replicas, 1)),
        build_stateful_set(spec, owner, statefulset_replicas, data),
    ]
    if spec.service_monitor.enabled:
        objects.append(build_service_monitor(spec, owner))
    assert all(obj["metadata"]["namespace"] == spec.namespace for obj in objects)
    return objects
