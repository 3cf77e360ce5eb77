"""The replicated ``ratelimit`` service: policies (every member agrees on the config)
and the counters of ``strict`` limits. Pure and deterministic.

* ``ratelimit_policy_set`` stores a domain's policy (:mod:`synod.ratelimit.policy`),
  replacing the previous one; ``ratelimit_policy_delete`` removes it. Each change
  raises the **generation**, so a member can tell which configuration it applies.
* ``ratelimit_hit`` counts a check of ``strict`` limits in the replicated state: the
  time ``now_ms`` is written in the op by the member that proposed it, and the table
  never lets time go back (a smaller ``now_ms`` counts at the latest time seen), so
  every replica decides the same.

Counters of ``local`` and ``owner`` limits are not here: they live in the memory of a
member (:mod:`synod.node.ratelimit_http`). Bad input changes nothing and every
collection has a named bound (:class:`~synod.ratelimit.policy.PolicyLimits`,
``STRICT_COUNTERS_MAX``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from synod.ratelimit.limiter import (
    Counters,
    CountersFull,
    decide,
    overall,
    state_fields,
)
from synod.ratelimit.policy import (
    Consistency,
    Policy,
    PolicyLimits,
    match,
    parse_descriptors,
    parse_limit,
    parse_policy,
)
from synod.services.commands import read_int, require_fields
from synod.services.errors import InvalidArgument, LimitExceeded, NotFound

__all__ = [
    "RATELIMIT_OP_KINDS",
    "RATELIMIT_READ_KINDS",
    "STRICT_COUNTERS_MAX",
    "RateLimitTable",
    "ratelimit_hit_op",
    "ratelimit_policies_op",
    "ratelimit_policy_delete_op",
    "ratelimit_policy_set_op",
]

STRICT_COUNTERS_MAX: Final = 10_000
RATELIMIT_OP_KINDS: Final = ("ratelimit_policy_set", "ratelimit_policy_delete", "ratelimit_hit")
RATELIMIT_READ_KINDS: Final = ("ratelimit_policies",)


def _domain(op: dict[str, Any]) -> str:
    domain = op.get("domain")
    if not isinstance(domain, str) or not domain:
        raise InvalidArgument("field 'domain' must be a non-empty string")
    return domain


def status_fields(statuses: list[Any]) -> list[dict[str, Any]]:
    """The msgpack/JSON form of descriptor statuses. Raises nothing."""
    out = []
    for status in statuses:
        item: dict[str, Any] = {"code": str(status.code)}
        if status.decision is not None:
            d = status.decision
            item.update(limit=d.limit, remaining=d.remaining, reset_ms=d.reset_ms,
                        retry_after_ms=d.retry_after_ms, shadow_mode=status.shadow_mode,
                        rate_limit=status.limit.to_dict())  # fmt: skip
        out.append(item)
    assert len(out) == len(statuses)
    return out


class RateLimitTable:
    """Policies by domain and the strict counters."""

    def __init__(self, limits: PolicyLimits | None = None) -> None:
        """Create the empty table. Raises nothing."""
        self.limits = limits or PolicyLimits()
        self.policies: dict[str, Policy] = {}
        self.generation = 0
        self.strict = Counters(STRICT_COUNTERS_MAX)
        assert not self.policies

    def ops(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        """The op handlers by kind, for the state machine. Raises nothing."""
        handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "ratelimit_policy_set": self.policy_set,
            "ratelimit_policy_delete": self.policy_delete,
            "ratelimit_hit": self.hit,
        }
        assert set(handlers) == set(RATELIMIT_OP_KINDS)
        return handlers

    def policy_set(self, op: dict[str, Any]) -> dict[str, Any]:
        """Store a policy. Raises InvalidArgument, LimitExceeded (policies_max)."""
        require_fields(op, ("policy",))
        try:
            policy = parse_policy(op["policy"], self.limits)
        except ValueError as error:
            raise InvalidArgument(str(error)) from None
        created = policy.domain not in self.policies
        if created and len(self.policies) >= self.limits.policies_max:
            raise LimitExceeded(f"policies_max={self.limits.policies_max} domains have policies",
                                limit="policies_max", max=self.limits.policies_max)  # fmt: skip
        self.policies[policy.domain] = policy
        self.generation += 1
        assert len(self.policies) <= self.limits.policies_max
        return {"policy": policy.to_dict(), "created": created, "generation": self.generation}

    def policy_delete(self, op: dict[str, Any]) -> dict[str, Any]:
        """Remove a domain's policy. Raises InvalidArgument, NotFound."""
        require_fields(op, ("domain",))
        domain = _domain(op)
        if domain not in self.policies:
            raise NotFound(f"no rate-limit policy for domain {domain!r}", domain=domain)
        del self.policies[domain]
        self.generation += 1
        assert domain not in self.policies
        return {"domain": domain, "deleted": True, "generation": self.generation}

    def hit(self, op: dict[str, Any]) -> dict[str, Any]:
        """Count a check's strict descriptors at ``now_ms``. Descriptors whose limit is
        not strict are answered OK with no status (their members count them). Raises
        InvalidArgument, NotFound (no policy), LimitExceeded (strict counters full)."""
        require_fields(op, ("domain", "descriptors", "hits", "now_ms"), ("lease_id",))
        domain = _domain(op)
        hits = read_int(op, "hits", maximum=self.limits.hits_max)
        now_ms = read_int(op, "now_ms")
        lease_id = op.get("lease_id", "")
        if not isinstance(lease_id, str) or len(lease_id) > self.limits.key_bytes_max:
            raise InvalidArgument("field 'lease_id' must be a short string")
        try:
            descriptors = parse_descriptors(op["descriptors"], self.limits)
        except ValueError as error:
            raise InvalidArgument(str(error)) from None
        policy = self.policies.get(domain)
        if policy is None:
            raise NotFound(f"no rate-limit policy for domain {domain!r}", domain=domain)
        matches = [match(policy, d, hits) for d in descriptors]
        strict = [m if m is not None and m.limit.consistency is Consistency.STRICT else None
                  for m in matches]  # fmt: skip
        try:
            statuses = decide(self.strict, strict, now_ms, lease_id)
        except CountersFull:
            message = f"strict counters are full ({STRICT_COUNTERS_MAX})"
            raise LimitExceeded(
                message, limit="strict_counters_max", max=STRICT_COUNTERS_MAX
            ) from None
        assert len(statuses) == len(descriptors)
        return {"overall_code": str(overall(statuses)), "statuses": status_fields(statuses),
                "generation": self.generation}  # fmt: skip

    # -- reads ---------------------------------------------------------------------------

    def read(self, op: dict[str, Any]) -> dict[str, Any]:
        """``ratelimit_policies``: every policy (or the one of ``domain``) and the
        generation. Raises InvalidArgument, NotFound."""
        require_fields(op, (), ("domain",))
        if "domain" in op:
            domain = _domain(op)
            policy = self.policies.get(domain)
            if policy is None:
                raise NotFound(f"no rate-limit policy for domain {domain!r}", domain=domain)
            chosen = [policy]
        else:
            chosen = [self.policies[d] for d in sorted(self.policies)]
        assert len(chosen) <= self.limits.policies_max
        return {"policies": [p.to_dict() for p in chosen], "generation": self.generation}

    # -- snapshot ------------------------------------------------------------------------

    def to_snapshot(self) -> dict[str, Any]:
        """Deterministic msgpack-able form. Raises nothing."""
        counters = []
        for key in sorted(self.strict.names()):
            limit, state = self.strict.entry(key)
            counters.append([key, limit.to_dict(), state_fields(state)])
        data = {"policies": [self.policies[d].to_dict() for d in sorted(self.policies)],
                "generation": self.generation, "now_ms": self.strict.now_ms,
                "counters": counters}  # fmt: skip
        assert len(counters) <= STRICT_COUNTERS_MAX
        return data

    def restore(self, data: dict[str, Any] | None) -> None:
        """Replace the content with a :meth:`to_snapshot` form (None: empty). Raises
        InvalidArgument if malformed (unchanged)."""
        data = data or {}
        try:
            policies = {}
            for item in data.get("policies", []):
                policy = parse_policy(item, self.limits)
                policies[policy.domain] = policy
            strict = Counters(STRICT_COUNTERS_MAX)
            strict.now_ms = int(data.get("now_ms", 0))
            for key, limit_data, fields in data.get("counters", []):
                limit = parse_limit(limit_data, self.limits)
                strict.replace(str(key), limit, dict(fields), strict.now_ms)
            generation = int(data.get("generation", 0))
        except (KeyError, TypeError, ValueError, CountersFull) as exc:
            raise InvalidArgument(f"malformed ratelimit snapshot: {type(exc).__name__}") from None
        if len(policies) > self.limits.policies_max:
            raise InvalidArgument("ratelimit snapshot exceeds policies_max")
        self.policies, self.generation, self.strict = policies, generation, strict


# -- op builders (the reference for the op formats) ----------------------------------------


def ratelimit_policy_set_op(policy: dict[str, Any]) -> dict[str, Any]:
    """``ratelimit_policy_set``: store ``policy`` (its JSON form). Raises nothing."""
    assert isinstance(policy, dict)
    return {"kind": "ratelimit_policy_set", "policy": policy}


def ratelimit_policy_delete_op(domain: str) -> dict[str, Any]:
    """``ratelimit_policy_delete``: remove ``domain``'s policy. Raises nothing."""
    assert domain
    return {"kind": "ratelimit_policy_delete", "domain": domain}


def ratelimit_hit_op(domain: str, descriptors: list[dict[str, Any]], hits: int, now_ms: int,
                     lease_id: str = "") -> dict[str, Any]:  # fmt: skip
    """``ratelimit_hit``: count a check of strict limits at ``now_ms``. Raises nothing."""
    assert hits >= 0 and now_ms >= 0
    op = {"kind": "ratelimit_hit", "domain": domain, "descriptors": descriptors, "hits": hits,
          "now_ms": now_ms}  # fmt: skip
    if lease_id:
        op["lease_id"] = lease_id
    return op


def ratelimit_policies_op(domain: str = "") -> dict[str, Any]:
    """Read ``ratelimit_policies``: every policy, or ``domain``'s. Raises nothing."""
    return {"kind": "ratelimit_policies", "domain": domain} if domain else {
        "kind": "ratelimit_policies"}  # fmt: skip
