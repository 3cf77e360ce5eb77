"""Attaching a service resource (LockService now, IdGenerator and RateLimitPolicy later) to
a ConsensusCluster: which cluster, where its members answer, and the owned cluster made
for a resource without `clusterRef` (DESIGN.md "The operator": one code path).

Pure except `cluster_admin`, which reads the ConsensusCluster and builds an AdminClient.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from . import builders
from .admin import AdminClient
from .kube import Kube
from .spec import API_VERSION, KIND, REPLICAS_MAX, ClusterSpec, parse_spec

# Member URLs per "<namespace>/<cluster>" as a JSON object, for an operator that runs
# outside the cluster (development, the control-plane tests): cluster DNS names do not
# resolve there. Unset in the chart's Deployment.
CLUSTER_URLS_ENV = "SYNOD_OPERATOR_CLUSTER_URLS"
CLUSTER_URLS_PER_CLUSTER_MAX = REPLICAS_MAX
DEDICATED_SUFFIX = "-cluster"
LABEL_SERVICE_KIND = "synod.dev/service-kind"
LABEL_SERVICE_NAME = "synod.dev/service-name"


@dataclass(frozen=True)
class Attachment:
    """Which ConsensusCluster a service resource lives in."""

    namespace: str
    cluster: str
    dedicated: bool

    @property
    def endpoint(self) -> str:
        """The cluster's client Service, the address to give applications."""
        return f"http://{self.cluster}.{self.namespace}.svc:{builders.CLIENT_PORT}"


@dataclass(frozen=True)
class Observation:
    """What one reconcile of a service resource saw and did."""

    cluster_found: bool
    cluster_ready: bool  # a leader answered
    applied: bool = False  # the resource's document was accepted (or there is none)
    error_code: str = ""  # the problem type when the write was refused
    error_detail: str = ""
    listing: dict[str, Any] | None = None  # what the status counts come from
    name_taken: bool = False  # the dedicated cluster's name is another object's cluster


def cluster_condition(attach: Attachment, obs: Observation) -> tuple[bool, str, str]:
    """(ok, reason, message) of the ClusterReady condition. Raises nothing."""
    if obs.name_taken:
        message = f"ConsensusCluster {attach.cluster!r} exists and is not this resource's"
        return (False, "ClusterNameTaken", message)
    if not obs.cluster_found:
        reason = "ClusterNotFound" if not attach.dedicated else "ClusterCreating"
        return (False, reason, f"ConsensusCluster {attach.cluster!r} does not exist (yet)")
    if not obs.cluster_ready:
        return (False, "NoLeader", f"no leader of {attach.cluster!r} answered")
    return (True, "LeaderAnswered", f"{attach.cluster!r} has a leader")


def refusal_reason(code: str) -> str:
    """A problem code as a condition reason: ``already-exists`` -> ``AlreadyExists``."""
    return "".join(part.capitalize() for part in code.split("-")) or "Refused"


def dedicated_cluster_name(resource_name: str) -> str:
    assert resource_name
    name = resource_name + DEDICATED_SUFFIX
    assert name.endswith(DEDICATED_SUFFIX)
    return name


def attachment(namespace: str, resource_name: str, cluster_ref: str | None) -> Attachment:
    """The referenced cluster, or the dedicated one named after the resource."""
    assert namespace and resource_name
    if cluster_ref:
        return Attachment(namespace, cluster_ref, dedicated=False)
    return Attachment(namespace, dedicated_cluster_name(resource_name), dedicated=True)


def owner_reference(api_version: str, kind: str, name: str, uid: str) -> dict[str, Any]:
    assert api_version and kind and name and uid
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_dedicated_cluster(
    attach: Attachment,
    owner: dict[str, Any],
    replicas: int,
    storage: Mapping[str, Any],
) -> dict[str, Any]:
    """The ConsensusCluster owned by a service resource without `clusterRef`."""
    assert attach.dedicated, "only a dedicated cluster is built"
    assert replicas % 2 == 1, "replicas is odd (the CRD says so)"
    spec: dict[str, Any] = {"replicas": replicas}
    if storage:
        spec["storage"] = {k: v for k, v in storage.items() if k in ("size", "storageClassName")}
    labels = {LABEL_SERVICE_KIND: str(owner["kind"]), LABEL_SERVICE_NAME: str(owner["name"])}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": attach.cluster,
            "namespace": attach.namespace,
            "labels": labels,
            "ownerReferences": [owner],
        },
        "spec": spec,
    }


def owned_cluster(
    attach: Attachment | None,
    api_version: str,
    kind: str,
    name: str,
    uid: str,
    replicas: int | None,
    storage: Mapping[str, Any],
) -> dict[str, Any] | None:
    """The ConsensusCluster a service resource owns when it has no clusterRef (the
    resource ``kind``/``name``/``uid`` as its controller); None when attached to an
    existing cluster or to none."""
    if attach is None or not attach.dedicated:
        return None
    assert replicas is not None, "a dedicated cluster has replicas (parsed)"
    owner = owner_reference(api_version, kind, name, uid)
    return build_dedicated_cluster(attach, owner, replicas, storage)


def controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether `obj` is controlled by the object with `uid` (its controller reference)."""
    assert uid
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def parse_cluster_urls(text: str) -> dict[str, list[str]]:
    """`SYNOD_OPERATOR_CLUSTER_URLS`: {"ns/cluster": ["http://host:port", ...]}."""
    if not text.strip():
        return {}
    loaded = json.loads(text)
    if not isinstance(loaded, dict):
        raise ValueError(f"{CLUSTER_URLS_ENV} must be a JSON object")
    out: dict[str, list[str]] = {}
    for key, urls in loaded.items():
        if "/" not in key or not isinstance(urls, list) or not urls:
            raise ValueError(f"{CLUSTER_URLS_ENV}: {key!r} must map 'ns/cluster' to URLs")
        if len(urls) > CLUSTER_URLS_PER_CLUSTER_MAX:
            raise ValueError(
                f"{CLUSTER_URLS_ENV}: {key!r} has more than {CLUSTER_URLS_PER_CLUSTER_MAX} URLs"
            )
        out[key] = [str(url).rstrip("/") for url in urls]
    assert all(out.values())
    return out


def member_urls(
    spec: ClusterSpec, overrides: Mapping[str, list[str]], statefulset_replicas: int = 0
) -> list[str]:
    """Where the cluster's members answer: the override, else every member's pod URL."""
    override = overrides.get(f"{spec.namespace}/{spec.name}")
    if override:
        return list(override)
    count = max(spec.replicas, statefulset_replicas, 1)
    urls = [builders.client_url(spec, ordinal) for ordinal in range(count)]
    assert 1 <= len(urls) <= max(REPLICAS_MAX, statefulset_replicas)
    return urls


async def cluster_admin(
    kube: Kube, http: aiohttp.ClientSession, attach: Attachment
) -> AdminClient | None:
    """An AdminClient for the attached cluster; None while the ConsensusCluster is absent."""
    obj = await kube.get(KIND, attach.namespace, attach.cluster)
    if obj is None:
        return None
    spec = parse_spec(attach.cluster, attach.namespace, dict(obj.get("spec") or {}))
    overrides = parse_cluster_urls(os.environ.get(CLUSTER_URLS_ENV, ""))
    return AdminClient(http, member_urls(spec, overrides))
