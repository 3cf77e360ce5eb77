"""The RateLimitPolicy resource (crds/synod.dev_ratelimitpolicies.yaml): pure spec parsing,
the policy document written through the cluster's API (`PUT /v1/ratelimit/policies`,
docs/ratelimit.md), the dedicated cluster and the status.

The spec is the node's policy in Kubernetes spelling (camelCase); the node's own parser
(:func:`synod.ratelimit.policy.parse_policy`) is the judge of the document, so the operator
and the node cannot disagree on what a valid policy is. The handlers
(ratelimitpolicy_handlers.py) only gather inputs for these and carry out what they return.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Final

from synod.ratelimit.policy import PolicyLimits, parse_policy

from . import builders
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

RATELIMITPOLICY_PLURAL = "ratelimitpolicies"
RATELIMITPOLICY_KIND = "RateLimitPolicy"
RATELIMITPOLICY_API_VERSION = f"{GROUP}/{VERSION}"
# The node's bounds (synod.ratelimit.policy.PolicyLimits, synod.ratelimit.algorithms); the
# CRD repeats them and test_operator_ratelimitpolicy_crd.py checks that it does.
LIMITS: Final = PolicyLimits()
RULES_MAX: Final = LIMITS.rules_per_policy_max  # rules of a policy, all levels
KEY_BYTES_MAX: Final = LIMITS.key_bytes_max
VALUE_BYTES_MAX: Final = LIMITS.value_bytes_max
NAME_BYTES_MAX: Final = LIMITS.name_bytes_max
# The CRD spells out DESCRIPTOR_DEPTH_MAX levels of nested rules (a structural schema
# cannot recurse; the API server's CEL cost budget grows with every level's maxItems).
# The node allows entries_per_descriptor_max levels; deeper trees go through the API.
DESCRIPTOR_DEPTH_MAX: Final = 3
NESTED_RULES_MAX: Final = 32  # maxItems of a nested level in the CRD
assert LIMITS.entries_per_descriptor_max >= DESCRIPTOR_DEPTH_MAX
ALGORITHM_DEFAULT: Final = "token_bucket"
CONSISTENCY_DEFAULT: Final = "owner"
# The status reads every member's /v1/ratelimit/status (bounded by the member URLs,
# REPLICAS_MAX or an override of at most as many) and keeps this many ring names.
STATUS_RING_NAMES_MAX: Final = 64

_LIMIT_FIELDS: Final = {
    "unit": "unit",
    "requestsPerUnit": "requests_per_unit",
    "algorithm": "algorithm",
    "burst": "burst",
    "consistency": "consistency",
    "name": "name",
    "quotaRequests": "quota_requests",
    "quotaValidMs": "quota_valid_ms",
}
_RULE_FIELDS: Final = ("key", "value", "rateLimit", "shadowMode", "descriptors")


@dataclass(frozen=True)
class RateLimitPolicySpec:
    name: str
    namespace: str
    cluster_ref: str | None = None
    replicas: int | None = None
    storage: dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    # The node's normalised form (what `GET /v1/ratelimit/policies` answers for it).
    document: dict[str, Any] = field(default_factory=dict)
    rules: int = 0  # descriptor rules at every level

    @property
    def attachment(self) -> Attachment:
        return attachment(self.namespace, self.name, self.cluster_ref)


def _rate_limit(raw: Any, where: str) -> dict[str, Any]:
    """A `rateLimit` in the node's spelling (unknown fields refused). Raises SpecError."""
    if not isinstance(raw, dict):
        raise SpecError(f"{where}.rateLimit must be an object")
    unknown = sorted(set(raw) - set(_LIMIT_FIELDS))
    if unknown:
        raise SpecError(f"{where}.rateLimit has unknown field {unknown[0]!r}")
    out = {_LIMIT_FIELDS[key]: value for key, value in raw.items()}
    out.setdefault("algorithm", ALGORITHM_DEFAULT)
    out.setdefault("consistency", CONSISTENCY_DEFAULT)
    if not out.get("name"):
        out.pop("name", None)
    if not out.get("quota_requests") and not out.get("quota_valid_ms"):
        out.pop("quota_requests", None)
        out.pop("quota_valid_ms", None)
    assert set(out) <= set(_LIMIT_FIELDS.values())
    assert "algorithm" in out and "consistency" in out
    return out


def _rules(raw: Any, where: str, depth: int, budget: list[int]) -> list[dict[str, Any]]:
    """Descriptor rules in the node's spelling. Raises SpecError (shape, depth, count)."""
    if not isinstance(raw, list):
        raise SpecError(f"{where} must be a list")
    if depth > DESCRIPTOR_DEPTH_MAX:
        raise SpecError(f"{where}: rules nest deeper than {DESCRIPTOR_DEPTH_MAX} levels")
    out: list[dict[str, Any]] = []
    for index, item in enumerate(raw):  # bound: RULES_MAX through the budget
        budget[0] -= 1
        if budget[0] < 0:
            raise SpecError(f"more than {RULES_MAX} descriptor rules (rules_per_policy_max)")
        here = f"{where}[{index}]"
        if not isinstance(item, dict):
            raise SpecError(f"{here} must be an object")
        unknown = sorted(set(item) - set(_RULE_FIELDS))
        if unknown:
            raise SpecError(f"{here} has unknown field {unknown[0]!r}")
        rule: dict[str, Any] = {"key": item.get("key")}
        if item.get("value") is not None:
            rule["value"] = item["value"]
        if item.get("rateLimit") is not None:
            rule["rate_limit"] = _rate_limit(item["rateLimit"], here)
        if item.get("shadowMode"):
            rule["shadow_mode"] = item["shadowMode"]
        children = _rules(item.get("descriptors") or [], f"{here}.descriptors", depth + 1, budget)
        if children:
            rule["descriptors"] = children
        out.append(rule)
    assert len(out) == len(raw)
    assert budget[0] >= 0
    return out


def _count(rules: list[dict[str, Any]]) -> int:
    count, stack = 0, list(rules)
    while stack:  # bound: RULES_MAX (checked when parsed)
        rule = stack.pop()
        count += 1
        stack.extend(rule.get("descriptors") or [])
    assert count <= RULES_MAX
    return count


def parse_ratelimitpolicy(name: str, namespace: str, spec: dict[str, Any]) -> RateLimitPolicySpec:
    """The CRD's rules again (exactly one of clusterRef / replicas) and the node's policy
    rules (:func:`synod.ratelimit.policy.parse_policy`): SpecError naming the offence."""
    assert name, "a RateLimitPolicy has a name"
    assert namespace, "a RateLimitPolicy is namespaced"
    cluster_ref = spec.get("clusterRef") or None
    replicas = spec.get("replicas")
    if (cluster_ref is None) == (replicas is None):
        raise SpecError("set exactly one of clusterRef or replicas")
    if replicas is not None and (
        isinstance(replicas, bool)
        or not isinstance(replicas, int)
        or not REPLICAS_MIN <= replicas <= REPLICAS_MAX
        or replicas % 2 == 0
    ):
        raise SpecError(f"replicas must be odd and in [1, 9], got {replicas!r}")
    if cluster_ref is not None and spec.get("storage"):
        raise SpecError("storage is only for a dedicated cluster (replicas)")
    domain = spec.get("domain") or name
    rules = _rules(spec.get("descriptors") or [], "descriptors", 1, [RULES_MAX])
    try:
        document = parse_policy({"domain": domain, "descriptors": rules}, LIMITS).to_dict()
    except ValueError as error:
        raise SpecError(f"the policy is refused: {error}") from None
    return RateLimitPolicySpec(
        name=name,
        namespace=namespace,
        cluster_ref=None if cluster_ref is None else str(cluster_ref),
        replicas=replicas,
        storage=dict(spec.get("storage") or {}),
        domain=str(domain),
        document=document,
        rules=_count(rules),
    )


def policy_document(spec: RateLimitPolicySpec) -> dict[str, Any]:
    """The body of `PUT /v1/ratelimit/policies` (the node's normalised form: the node
    stores and answers exactly this)."""
    document = spec.document
    assert document["domain"] == spec.domain
    assert isinstance(document["descriptors"], list)
    return document


def needs_write(stored: dict[str, Any] | None, spec: RateLimitPolicySpec) -> bool:
    """Whether the cluster's policy of the domain differs from the spec's (None: absent).
    Writing only then keeps the generation still while nothing changes."""
    document = policy_document(spec)
    differs = stored != document
    assert stored is not None or differs
    return differs


def dedicated_cluster_manifest(spec: RateLimitPolicySpec, uid: str) -> dict[str, Any] | None:
    """The owned ConsensusCluster for a RateLimitPolicy without clusterRef; None with one."""
    return owned_cluster(
        spec.attachment,
        RATELIMITPOLICY_API_VERSION,
        RATELIMITPOLICY_KIND,
        spec.name,
        uid,
        spec.replicas,
        spec.storage,
    )


# One reconcile's view: the Observation every service resource shares. Its listing is
# {"policy": stored or None, "generation": int, "members": [{"url", "status"|None}]}
# (ratelimitpolicy_handlers._read).
RateLimitObservation = Observation


def _propagation(listing: dict[str, Any] | None) -> dict[str, Any]:
    """policyGeneration, ring and members applied from one listing (absent: not read)."""
    if listing is None:
        return {}
    generation = int(listing.get("generation") or 0)
    members = listing.get("members") or []
    assert isinstance(members, list)
    answered = [m["status"] for m in members if isinstance(m.get("status"), dict)]
    applied = sum(1 for s in answered if int(s.get("generation") or 0) >= generation)
    out: dict[str, Any] = {
        "policyGeneration": generation,
        "members": len(members),
        "membersAnswered": len(answered),
        "membersApplied": applied,
        "applied": f"{applied}/{len(members)}",
    }
    if answered:
        rings = [[str(m.get("name", "")) for m in s.get("ring") or []] for s in answered]
        first = rings[0]
        out["ringMembers"] = len(first)
        out["ring"] = first[:STATUS_RING_NAMES_MAX]
        out["ringSource"] = str(answered[0].get("ring_source") or "")
        out["ringsAgree"] = all(sorted(r) == sorted(first) for r in rings)
    assert 0 <= applied <= len(answered) <= len(members)
    return out


def build_ratelimit_status(
    spec: RateLimitPolicySpec,
    obs: RateLimitObservation,
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
        policy = (True, "Applied", f"policy of domain {spec.domain!r} written")
    elif obs.error_code:
        policy = (False, refusal_reason(obs.error_code), obs.error_detail or obs.error_code)
    else:
        policy = (False, "WaitingForCluster", "the cluster is not ready")
    ready = cluster[0] and policy[0]
    counts = _propagation(obs.listing) if ready else {}
    if not counts:
        propagated = (False, "NotRead", "the members' generations were not read")
    elif counts["membersApplied"] == counts["members"]:
        propagated = (True, "AllMembers", f"every member applies generation "
                      f"{counts['policyGeneration']}")  # fmt: skip
    else:
        propagated = (False, "MembersBehind", f"{counts['applied']} members apply generation "
                      f"{counts['policyGeneration']}")  # fmt: skip
    conditions = [
        _condition("ClusterReady", *cluster, before, generation, now),
        _condition("PolicyApplied", *policy, before, generation, now),
        _condition("Propagated", *propagated, before, generation, now),
        _condition(
            "Ready",
            ready,
            "Ready" if ready else "NotReady",
            "the limits are enforced" if ready else (policy[2] if cluster[0] else cluster[2]),
            before,
            generation,
            now,
        ),
    ]
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "ready": ready,
        "cluster": attach.cluster,
        "domain": spec.domain,
        "rules": spec.rules,
        "endpoint": attach.endpoint,
        # Envoy's rate_limit_service (grpc): the members' RLS port behind the same Service.
        "rlsEndpoint": f"{attach.cluster}.{attach.namespace}.svc:{builders.RLS_PORT}",
        "conditions": conditions,
    }
    status.update(counts)
    assert status["ready"] == (conditions[3]["status"] == "True")
    return status
