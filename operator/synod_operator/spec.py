"""The ConsensusCluster spec as a typed value, with the CRD's defaults applied.

The CRD (crds/synod.dev_consensusclusters.yaml) is the source of truth for the
defaults; the API server applies them before the operator sees an object. The
same defaults are repeated here only so that pure code and tests can build a
spec from a partial dict, and tests/unit/test_operator_crd.py fails when the
two drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GROUP = "synod.dev"
VERSION = "v1alpha1"
PLURAL = "consensusclusters"
KIND = "ConsensusCluster"
API_VERSION = f"{GROUP}/{VERSION}"

REPLICAS_MIN = 1
REPLICAS_MAX = 9
DEFAULT_REPLICAS = 3
DEFAULT_IMAGE = "synod/node"
DEFAULT_VERSION = "dev"
DEFAULT_PULL_POLICY = "IfNotPresent"
DEFAULT_STORAGE_SIZE = "1Gi"
DEFAULT_HEARTBEAT_INTERVAL_MS = 100
DEFAULT_ELECTION_TIMEOUT_MS = 1000
DEFAULT_SNAPSHOT_ENTRIES = 10000
DEFAULT_SCRAPE_INTERVAL = "30s"
# The node refuses an election timeout at or below this many heartbeats (docs/node.md).
ELECTION_TO_HEARTBEAT_RATIO_MIN = 5


class SpecError(ValueError):
    """A spec the API server should have rejected (CRD validation bypassed)."""


@dataclass(frozen=True)
class StorageSpec:
    size: str = DEFAULT_STORAGE_SIZE
    storage_class_name: str | None = None
    retain_on_delete: bool = False
    retain_on_scale_down: bool = False


@dataclass(frozen=True)
class RaftSpec:
    heartbeat_interval_ms: int = DEFAULT_HEARTBEAT_INTERVAL_MS
    election_timeout_ms: int = DEFAULT_ELECTION_TIMEOUT_MS
    snapshot_entries: int = DEFAULT_SNAPSHOT_ENTRIES


@dataclass(frozen=True)
class PodTemplateSpec:
    annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    priority_class_name: str | None = None
    affinity: dict[str, Any] | None = None
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    topology_spread_constraints: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ServiceMonitorSpec:
    enabled: bool = False
    interval: str = DEFAULT_SCRAPE_INTERVAL
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterSpec:
    """What the user asked for; `name`/`namespace` identify the resource."""

    name: str
    namespace: str
    replicas: int = DEFAULT_REPLICAS
    image: str = DEFAULT_IMAGE
    version: str = DEFAULT_VERSION
    image_pull_policy: str = DEFAULT_PULL_POLICY
    resources: dict[str, Any] = field(default_factory=dict)
    storage: StorageSpec = field(default_factory=StorageSpec)
    raft: RaftSpec = field(default_factory=RaftSpec)
    pod_template: PodTemplateSpec = field(default_factory=PodTemplateSpec)
    service_monitor: ServiceMonitorSpec = field(default_factory=ServiceMonitorSpec)

    @property
    def image_ref(self) -> str:
        return f"{self.image}:{self.version}"

    def validate(self) -> None:
        """The CRD's rules again, so that a pure caller cannot build a broken cluster."""
        if not REPLICAS_MIN <= self.replicas <= REPLICAS_MAX or self.replicas % 2 == 0:
            raise SpecError(f"replicas must be odd and in [1, 9], got {self.replicas}")
        ratio_ms = ELECTION_TO_HEARTBEAT_RATIO_MIN * self.raft.heartbeat_interval_ms
        if self.raft.election_timeout_ms <= ratio_ms:
            raise SpecError("raft.electionTimeoutMs must be greater than 5 x heartbeatIntervalMs")


def parse_spec(name: str, namespace: str, spec: dict[str, Any]) -> ClusterSpec:
    """Build a ClusterSpec from the resource's `spec` (missing fields take the defaults)."""
    assert name, "a ConsensusCluster has a name"
    assert namespace, "a ConsensusCluster is namespaced"
    storage = spec.get("storage") or {}
    raft = spec.get("raft") or {}
    template = spec.get("podTemplate") or {}
    monitor = (spec.get("monitoring") or {}).get("serviceMonitor") or {}
    parsed = ClusterSpec(
        name=name,
        namespace=namespace,
        replicas=int(spec.get("replicas", DEFAULT_REPLICAS)),
        image=str(spec.get("image", DEFAULT_IMAGE)),
        version=str(spec.get("version", DEFAULT_VERSION)),
        image_pull_policy=str(spec.get("imagePullPolicy", DEFAULT_PULL_POLICY)),
        resources=dict(spec.get("resources") or {}),
        storage=StorageSpec(
            size=str(storage.get("size", DEFAULT_STORAGE_SIZE)),
            storage_class_name=storage.get("storageClassName"),
            retain_on_delete=bool(storage.get("retainOnDelete", False)),
            retain_on_scale_down=bool(storage.get("retainOnScaleDown", False)),
        ),
        raft=RaftSpec(
            heartbeat_interval_ms=int(
                raft.get("heartbeatIntervalMs", DEFAULT_HEARTBEAT_INTERVAL_MS)
            ),
            election_timeout_ms=int(raft.get("electionTimeoutMs", DEFAULT_ELECTION_TIMEOUT_MS)),
            snapshot_entries=int(raft.get("snapshotEntries", DEFAULT_SNAPSHOT_ENTRIES)),
        ),
        pod_template=PodTemplateSpec(
            annotations=dict(template.get("annotations") or {}),
            labels=dict(template.get("labels") or {}),
            node_selector=dict(template.get("nodeSelector") or {}),
            priority_class_name=template.get("priorityClassName"),
            affinity=template.get("affinity"),
            tolerations=list(template.get("tolerations") or []),
            topology_spread_constraints=list(template.get("topologySpreadConstraints") or []),
        ),
        service_monitor=ServiceMonitorSpec(
            enabled=bool(monitor.get("enabled", False)),
            interval=str(monitor.get("interval", DEFAULT_SCRAPE_INTERVAL)),
            labels=dict(monitor.get("labels") or {}),
        ),
    )
    parsed.validate()
    return parsed
