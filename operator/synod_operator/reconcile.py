"""One reconcile of one ConsensusCluster: ensure the owned objects, observe, plan, act.

The handlers call these; everything that decides is pure (builders, planner,
status) and everything here only gathers inputs or carries out one step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from . import builders
from .admin import AdminClient
from .builders import Owner
from .kube import Kube, KubeError, NotOwned, controller_uid
from .planner import Observed, PodState, Step, StepKind
from .spec import ClusterSpec
from .status import ClusterReport

_ORDINAL = re.compile(r"-(\d+)$")


@dataclass(frozen=True)
class Lifetime:
    """Settings fixed over the cluster's life, read back from its ConfigMap."""

    initial_replicas: int
    bootstrapped: bool


def lifetime_from_config_map(config_map: dict[str, Any] | None, spec: ClusterSpec) -> Lifetime:
    """The founding size and bootstrap flag; a missing ConfigMap means a new cluster."""
    data = (config_map or {}).get("data") or {}
    initial = int(data.get(builders.ENV_INITIAL_REPLICAS, spec.replicas))
    bootstrapped = data.get(builders.ENV_JOIN, "false") == "true"
    assert initial >= 1
    return Lifetime(initial, bootstrapped)


def _ordinal(name: str, prefix: str) -> int | None:
    if not name.startswith(prefix + "-"):
        return None
    match = _ORDINAL.search(name)
    if match is None or name != f"{prefix}-{match[1]}":
        return None
    return int(match[1])


def _is_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pod_states(
    name: str, pods: list[dict[str, Any]], statefulset: dict[str, Any] | None
) -> tuple[PodState, ...]:
    """Pods of the StatefulSet by ordinal; `current` when on the update revision."""
    sts_status = (statefulset or {}).get("status") or {}
    generation = ((statefulset or {}).get("metadata") or {}).get("generation")
    update_revision = sts_status.get("updateRevision")
    # Until the StatefulSet controller has seen the newest template its
    # revision is stale: judge no pod outdated rather than restart on old news.
    settled = update_revision and sts_status.get("observedGeneration") == generation
    states = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        ordinal = _ordinal(str(meta.get("name", "")), name)
        if ordinal is None:
            continue
        revision = (meta.get("labels") or {}).get("controller-revision-hash")
        states.append(
            PodState(
                ordinal=ordinal,
                ready=_is_ready(pod),
                current=not settled or revision == update_revision,
                terminating=bool(meta.get("deletionTimestamp")),
            )
        )
    states.sort(key=lambda p: p.ordinal)
    assert len({p.ordinal for p in states}) == len(states)
    return tuple(states)


def pvc_ordinals(name: str, claims: list[dict[str, Any]]) -> tuple[int, ...]:
    prefix = f"{builders.DATA_VOLUME}-{name}"
    found = (_ordinal(str((c.get("metadata") or {}).get("name", "")), prefix) for c in claims)
    return tuple(sorted(o for o in found if o is not None))


def observed(
    spec: ClusterSpec,
    lifetime: Lifetime,
    statefulset: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    claims: list[dict[str, Any]],
    report: ClusterReport | None,
) -> Observed:
    sts_replicas = int(((statefulset or {}).get("spec") or {}).get("replicas") or 0)
    return Observed(
        desired_replicas=spec.replicas,
        statefulset_replicas=sts_replicas,
        pods=pod_states(spec.name, pods, statefulset),
        pvc_ordinals=pvc_ordinals(spec.name, claims),
        bootstrapped=lifetime.bootstrapped,
        retain_on_scale_down=spec.storage.retain_on_scale_down,
        leader_id=report.leader_id if report else None,
        commit_index=report.commit_index if report else 0,
        members=report.member_states() if report else (),
    )


async def ensure_owned(
    kube: Kube, spec: ClusterSpec, owner: Owner
) -> tuple[Lifetime, dict[str, Any]]:
    """Create or converge every owned object; returns the lifetime and the StatefulSet."""
    config_map = await kube.get("ConfigMap", spec.namespace, builders.config_map_name(spec.name))
    if config_map is not None and controller_uid(config_map) != owner.uid:
        # Somebody else's: its data must not steer our lifetime (never adopted).
        raise NotOwned("ConfigMap", spec.namespace, builders.config_map_name(spec.name))
    lifetime = lifetime_from_config_map(config_map, spec)
    existing = await kube.get("StatefulSet", spec.namespace, spec.name)
    # The planner moves the size one member at a time; a new cluster starts at
    # its founding size.
    replicas = (
        int(existing["spec"]["replicas"]) if existing is not None else lifetime.initial_replicas
    )
    statefulset: dict[str, Any] = {}
    objects = builders.build_all(
        spec,
        owner,
        initial_replicas=lifetime.initial_replicas,
        bootstrapped=lifetime.bootstrapped,
        statefulset_replicas=replicas,
    )
    for obj in objects:  # All checked before any is applied: nothing half-created.
        if obj["kind"] not in ("ConfigMap", "ServiceMonitor"):  # (read above; optional)
            await kube.check_owned(obj)
    for obj in objects:
        try:
            applied = await kube.apply(obj, owner_checked=obj["kind"] != "ServiceMonitor")
        except KubeError as error:
            # Without the Prometheus operator's CRD there is no ServiceMonitor to make.
            if obj["kind"] == "ServiceMonitor" and error.status == 404:
                continue
            raise
        if obj["kind"] == "StatefulSet":
            statefulset = applied
    assert statefulset, "build_all always includes the StatefulSet"
    return lifetime, statefulset


async def execute(
    step: Step,
    kube: Kube,
    admin: AdminClient,
    spec: ClusterSpec,
    owner: Owner,
    lifetime: Lifetime,
    pods: list[dict[str, Any]],
) -> None:
    """Carry out one step. Each is idempotent, so repeating it after a crash is harmless."""
    kind = step.kind
    if kind in (StepKind.NONE, StepKind.WAIT):
        return
    if kind is StepKind.MARK_BOOTSTRAPPED:
        await kube.apply(builders.build_config_map(spec, owner, lifetime.initial_replicas, True))
    elif kind in (StepKind.GROW_STATEFULSET, StepKind.SHRINK_STATEFULSET):
        assert step.replicas is not None and step.replicas >= 1
        data = builders.config_data(spec, lifetime.initial_replicas, lifetime.bootstrapped)
        # Budget first when growing, last when shrinking: it is never looser than the pods.
        pdb = builders.build_pod_disruption_budget(spec, owner, step.replicas)
        if kind is StepKind.GROW_STATEFULSET:
            await kube.apply(pdb)
        await kube.apply(builders.build_stateful_set(spec, owner, step.replicas, data))
        if kind is StepKind.SHRINK_STATEFULSET:
            await kube.apply(pdb)
    elif kind is StepKind.ADD_LEARNER:
        assert step.ordinal is not None and step.member_id is not None
        await admin.add_learner(
            step.member_id,
            builders.peer_address(spec, step.ordinal),
            builders.client_url(spec, step.ordinal),
        )
    elif kind is StepKind.PROMOTE_LEARNER:
        assert step.member_id is not None
        await admin.promote(step.member_id)
    elif kind is StepKind.TRANSFER_LEADERSHIP:
        await admin.transfer_leadership(step.transfer_to)
    elif kind is StepKind.REMOVE_MEMBER:
        assert step.member_id is not None
        await admin.remove(step.member_id)
    elif kind is StepKind.DELETE_PVC:
        assert step.ordinal is not None
        await kube.delete(
            "PersistentVolumeClaim", spec.namespace, builders.pvc_name(spec.name, step.ordinal)
        )
    elif kind is StepKind.RESTART_POD:
        assert step.ordinal is not None
        name = builders.pod_name(spec.name, step.ordinal)
        pod = next((p for p in pods if p["metadata"]["name"] == name), None)
        if pod is not None:
            # The uid precondition: never delete a pod that was already replaced.
            await kube.delete("Pod", spec.namespace, name, uid=pod["metadata"].get("uid"))
    else:  # pragma: no cover - the enum is exhaustive
        raise AssertionError(f"unhandled step {kind}")
