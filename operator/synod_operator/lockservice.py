"""The LockService resource (crds/synod.dev_lockservices.yaml): pure spec parsing, the
namespace-settings document written through the cluster's API, and the status.

The handlers (lockservice_handlers.py) only gather inputs for these and carry out what
they return.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from .attach import (
    Attachment,
    Observation,
    attachment,
    cluster_condition,
    owned_cluster,
    refusal_reason,
)
from .spec import GROUP, REPLICAS_MAX, REPLICAS_MIN, VERSION, SpecError
from .status import _condition

LOCKSERVICE_PLURAL = "lockservices"
LOCKSERVICE_KIND = "LockService"
LOCKSERVICE_API_VERSION = f"{GROUP}/{VERSION}"
# The node's LockLimits (synod.services.locks); the CRD repeats them as maxima.
LOCK_DELAY_MS_MAX = 60_000
LOCKS_PER_NAMESPACE_MAX = 100_000
WAITERS_PER_LOCK_MAX = 10_000
NAMESPACE_BYTES_MAX = 253
DEFAULT_NAMESPACE = "default"  # always exists in a cluster; not managed by a LockService
# Status counts come from one bounded list call.
STATUS_LOCKS_LISTED_MAX = 1_000


@dataclass(frozen=True)
class LockSettings:
    lock_delay_ms: int = 0
    locks_max: int = 0  # 0: the node's locks_per_namespace_max
    waiters_per_lock_max: int = 0  # 0: the node's waiters_per_lock_max


@dataclass(frozen=True)
class LockServiceSpec:
    name: str
    namespace: str
    cluster_ref: str | None = None
    replicas: int | None = None
    storage: dict[str, Any] = field(default_factory=dict)
    lock_namespace: str = ""
    settings: LockSettings = field(default_factory=LockSettings)

    @property
    def attachment(self) -> Attachment:
        return attachment(self.namespace, self.name, self.cluster_ref)


def _bounded(value: Any, what: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise SpecError(f"{what} must be an integer in [0, {maximum}], got {value!r}")
    return value


def parse_lockservice(name: str, namespace: str, spec: dict[str, Any]) -> LockServiceSpec:
    """The CRD's rules again (exactly one of clusterRef / replicas, ranges): SpecError."""
    assert name, "a LockService has a name"
    assert namespace, "a LockService is namespaced"
    cluster_ref = spec.get("clusterRef") or None
    replicas = spec.get("replicas")
    if (cluster_ref is None) == (replicas is None):
        raise SpecError("set exactly one of clusterRef or replicas")
    if replicas is not None and (
        not isinstance(replicas, int)
        or not REPLICAS_MIN <= replicas <= REPLICAS_MAX
        or replicas % 2 == 0
    ):
        raise SpecError(f"replicas must be odd and in [1, 9], got {replicas!r}")
    if cluster_ref is not None and spec.get("storage"):
        raise SpecError("storage is only for a dedicated cluster (replicas)")
    lock_namespace = str(spec.get("lockNamespace") or name)
    if lock_namespace == DEFAULT_NAMESPACE or len(lock_namespace.encode()) > NAMESPACE_BYTES_MAX:
        raise SpecError(f"lockNamespace {lock_namespace!r} is reserved or too long")
    raw = spec.get("settings") or {}
    settings = LockSettings(
        lock_delay_ms=_bounded(raw.get("lockDelayMs", 0), "lockDelayMs", LOCK_DELAY_MS_MAX),
        locks_max=_bounded(raw.get("locksMax", 0), "locksMax", LOCKS_PER_NAMESPACE_MAX),
        waiters_per_lock_max=_bounded(
            raw.get("waitersPerLockMax", 0), "waitersPerLockMax", WAITERS_PER_LOCK_MAX
        ),
    )
    return LockServiceSpec(
        name=name,
        namespace=namespace,
        cluster_ref=None if cluster_ref is None else str(cluster_ref),
        replicas=replicas,
        storage=dict(spec.get("storage") or {}),
        lock_namespace=lock_namespace,
        settings=settings,
    )


def namespace_settings_document(spec: LockServiceSpec) -> dict[str, Any]:
    """The body of `POST /v1/locks/namespaces/put` (idempotent: the same body twice is a
    no-op on the namespace's settings)."""
    body = {
        "ns": spec.lock_namespace,
        "lock_delay_ms": spec.settings.lock_delay_ms,
        "locks_max": spec.settings.locks_max,
        "waiters_per_lock_max": spec.settings.waiters_per_lock_max,
    }
    assert body["ns"] != DEFAULT_NAMESPACE
    assert all(isinstance(v, int) and v >= 0 for k, v in body.items() if k != "ns")
    return body


def dedicated_cluster_manifest(spec: LockServiceSpec, uid: str) -> dict[str, Any] | None:
    """The owned ConsensusCluster for a LockService without clusterRef; None with one."""
    return owned_cluster(
        spec.attachment,
        LOCKSERVICE_API_VERSION,
        LOCKSERVICE_KIND,
        spec.name,
        uid,
        spec.replicas,
        spec.storage,
    )


# One reconcile's view: the Observation every service resource shares.
LockObservation = Observation


def _counts(listing: dict[str, Any] | None) -> dict[str, Any]:
    if listing is None:
        return {}
    locks = listing.get("locks") or []
    assert isinstance(locks, list)
    held = sum(1 for lock in locks if int(lock.get("holders") or 0) > 0)
    waiters = sum(int(lock.get("waiters") or 0) for lock in locks)
    assert 0 <= held <= len(locks)
    return {
        "locks": int(listing.get("count") or len(locks)),
        "locksHeld": held,
        "waiters": waiters,
        "countsTruncated": bool(listing.get("more")),
    }


def build_lock_status(
    spec: LockServiceSpec,
    obs: LockObservation,
    *,
    generation: int,
    previous: dict[str, Any],
    now: datetime.datetime,
) -> dict[str, Any]:
    """The whole `.status` (conditions keep their transition times while unchanged)."""
    assert generation >= 0
    before = {c["type"]: c for c in previous.get("conditions") or [] if "type" in c}
    attach = spec.attachment
    cluster = cluster_condition(attach, obs)
    if obs.applied:
        settings = (True, "Applied", f"lock namespace {spec.lock_namespace!r} written")
    elif obs.error_code:
        settings = (False, refusal_reason(obs.error_code), obs.error_detail or obs.error_code)
    else:
        settings = (False, "WaitingForCluster", "the cluster is not ready")
    ready = cluster[0] and settings[0]
    conditions = [
        _condition("ClusterReady", *cluster, before, generation, now),
        _condition("SettingsApplied", *settings, before, generation, now),
        _condition(
            "Ready",
            ready,
            "Ready" if ready else "NotReady",
            "locks can be taken" if ready else settings[2],
            before,
            generation,
            now,
        ),
    ]
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "ready": ready,
        "cluster": attach.cluster,
        "lockNamespace": spec.lock_namespace,
        "endpoint": attach.endpoint,
        "conditions": conditions,
    }
    status.update(_counts(obs.listing) if ready else {})
    assert status["ready"] == (conditions[2]["status"] == "True")
    return status
