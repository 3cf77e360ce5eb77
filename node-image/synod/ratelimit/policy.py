"""Envoy-style rate-limit policies: domains, nested descriptors, matching, validation.

A **policy** is a domain and a tree of descriptor rules, as in envoyproxy/ratelimit's
configuration::

    {"domain": "api",
     "descriptors": [
       {"key": "remote_address",
        "rate_limit": {"unit": "second", "requests_per_unit": 10, "burst": 20,
                       "algorithm": "token_bucket", "consistency": "owner"}},
       {"key": "path", "value": "/login",
        "rate_limit": {"unit": "minute", "requests_per_unit": 5},
        "shadow_mode": true,
        "descriptors": [{"key": "user", "rate_limit": {...}}]}]}

A **request descriptor** is an ordered list of ``(key, value)`` entries. It is matched
level by level: at each level the rule with the same key and value wins, else the rule
with the same key and no value (a value-less rule matches any value, and each value gets
its own counter). The limit of the rule the last entry reached applies; a descriptor
that leaves the tree, or ends on a rule without ``rate_limit``, is not limited.
``hits_addend`` (per request, or per descriptor) says how many hits the request counts
for. A rule in **shadow mode** counts and reports but never refuses.

Every collection has a named bound (:class:`PolicyLimits`); input beyond one is refused
with ``ValueError`` naming the bound, and nothing changes.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Any, Final

from synod.ratelimit.algorithms import Algorithm, Rate, new_state

__all__ = [
    "UNITS_MS",
    "Consistency",
    "DescriptorRule",
    "LimitSpec",
    "Match",
    "Policy",
    "PolicyLimits",
    "RequestDescriptor",
    "match",
    "parse_descriptors",
    "parse_policy",
]

UNITS_MS: Final = {
    "second": 1000,
    "minute": 60_000,
    "hour": 3_600_000,
    "day": 86_400_000,
}
QUOTA_VALID_MS_MAX: Final = 3_600_000  # a grant lives at most an hour
DOMAIN_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class Consistency(enum.StrEnum):
    """Where a limit's counters live (docs/ratelimit.md, "Modes")."""

    LOCAL = "local"  # each member counts alone
    OWNER = "owner"  # the descriptor's owner on the hash ring counts
    STRICT = "strict"  # the replicated state counts, through the Raft log
    GLOBAL = "global"  # every member answers from its replica; the owner merges


@dataclass(frozen=True, slots=True)
class PolicyLimits:
    """Bounds of policies and requests (replicated: every member uses the same)."""

    policies_max: int = 1_000  # domains
    rules_per_policy_max: int = 1_000  # descriptor rules of one domain, all levels
    entries_per_descriptor_max: int = 8  # = the depth of a rule tree
    descriptors_per_request_max: int = 16
    key_bytes_max: int = 128
    value_bytes_max: int = 512
    name_bytes_max: int = 128
    hits_max: int = 1_000_000  # hits one request may count for

    def __post_init__(self) -> None:
        """Raises ValueError for a bound below 1."""
        for name in self.__slots__:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """A rule's limit: ``requests_per_unit`` per ``unit``, its algorithm, burst and
    consistency mode; ``name`` labels it in the RateLimit-Policy header."""

    unit: str
    requests_per_unit: int
    algorithm: Algorithm = Algorithm.TOKEN_BUCKET
    burst: int = 0
    consistency: Consistency = Consistency.OWNER
    name: str = ""
    # Cacheable grants (Envoy RLS `Quota`, Doorman-style): an admitted check also
    # reserves up to `quota_requests` more hits, which the client may spend on its own
    # until `quota_valid_ms` have passed. 0: no grants.
    quota_requests: int = 0
    quota_valid_ms: int = 0

    def __post_init__(self) -> None:
        """Raises ValueError (unknown unit, rate bounds, log and concurrency bounds)."""
        if not 0 <= self.quota_requests <= self.requests_per_unit:
            raise ValueError("quota_requests must be in [0, requests_per_unit]")
        if not 0 <= self.quota_valid_ms <= QUOTA_VALID_MS_MAX:
            raise ValueError(f"quota_valid_ms must be in [0, {QUOTA_VALID_MS_MAX}]")
        if bool(self.quota_requests) != bool(self.quota_valid_ms):
            raise ValueError("quota_requests and quota_valid_ms go together")
        if self.quota_requests and self.algorithm is Algorithm.CONCURRENCY:
            raise ValueError("concurrency limits grant no quota (leases are not rates)")
        if self.unit not in UNITS_MS:
            raise ValueError(f"unit must be one of {sorted(UNITS_MS)}")
        self.rate()  # checks the numbers
        if self.burst and self.algorithm not in (Algorithm.TOKEN_BUCKET, Algorithm.GCRA):
            raise ValueError("burst applies to token_bucket and gcra only")
        if self.algorithm is Algorithm.CONCURRENCY and self.consistency is Consistency.GLOBAL:
            raise ValueError("concurrency limits cannot be global (a lease lives on one member)")
        if self.algorithm is Algorithm.SLIDING_LOG or self.algorithm is Algorithm.CONCURRENCY:
            new_state(self.algorithm, self.rate())  # their own count bounds

    @property
    def unit_ms(self) -> int:
        """The unit in milliseconds. Raises nothing."""
        return UNITS_MS[self.unit]

    def rate(self) -> Rate:
        """The algorithms' rate. Raises ValueError (out of range)."""
        return Rate(self.requests_per_unit, UNITS_MS[self.unit], self.burst)

    def to_dict(self) -> dict[str, Any]:
        """JSON/msgpack form. Raises nothing."""
        out: dict[str, Any] = {"unit": self.unit, "requests_per_unit": self.requests_per_unit,
                               "algorithm": str(self.algorithm), "burst": self.burst,
                               "consistency": str(self.consistency)}  # fmt: skip
        if self.name:
            out["name"] = self.name
        if self.quota_requests:
            out["quota_requests"] = self.quota_requests
            out["quota_valid_ms"] = self.quota_valid_ms
        return out


@dataclass(frozen=True, slots=True)
class DescriptorRule:
    """One level of the tree: ``key`` (and ``value``, None matching any value)."""

    key: str
    value: str | None = None
    limit: LimitSpec | None = None
    shadow_mode: bool = False
    children: tuple[DescriptorRule, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON/msgpack form. Raises nothing."""
        out: dict[str, Any] = {"key": self.key}
        if self.value is not None:
            out["value"] = self.value
        if self.limit is not None:
            out["rate_limit"] = self.limit.to_dict()
        if self.shadow_mode:
            out["shadow_mode"] = True
        if self.children:
            out["descriptors"] = [child.to_dict() for child in self.children]
        return out


@dataclass(frozen=True, slots=True)
class Policy:
    """A domain's rules."""

    domain: str
    rules: tuple[DescriptorRule, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON/msgpack form (what :func:`parse_policy` reads). Raises nothing."""
        return {"domain": self.domain, "descriptors": [rule.to_dict() for rule in self.rules]}

    def rule_count(self) -> int:
        """Rules at every level. Raises nothing."""
        count, stack = 0, list(self.rules)
        while stack:  # bound: rules_per_policy_max (checked when parsed)
            rule = stack.pop()
            count += 1
            stack.extend(rule.children)
        return count


@dataclass(frozen=True, slots=True)
class RequestDescriptor:
    """One descriptor of a check: its entries and its own ``hits_addend`` (None: the
    request's)."""

    entries: tuple[tuple[str, str], ...]
    hits_addend: int | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """A descriptor that reached a limit: its counter key, limit and shadow flag."""

    counter_key: str
    limit: LimitSpec
    shadow_mode: bool
    hits: int


# -- parsing ------------------------------------------------------------------------------


def _str(value: Any, what: str, bytes_max: int, limit: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    if len(value.encode("utf-8")) > bytes_max:
        raise ValueError(f"{what} is longer than {limit}={bytes_max} bytes")
    return value


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer")
    return value


def _only(item: dict[str, Any], allowed: tuple[str, ...], what: str) -> None:
    unknown = sorted(set(item) - set(allowed))
    if unknown:
        raise ValueError(f"{what} has unknown field {unknown[0]!r}")


def parse_limit(data: Any, limits: PolicyLimits) -> LimitSpec:
    """A ``rate_limit`` map. Raises ValueError."""
    if not isinstance(data, dict):
        raise ValueError("rate_limit must be an object")
    _only(data, ("unit", "requests_per_unit", "algorithm", "burst", "consistency", "name",
                 "quota_requests", "quota_valid_ms"), "rate_limit")  # fmt: skip
    try:
        algorithm = Algorithm(data.get("algorithm", "token_bucket"))
        consistency = Consistency(data.get("consistency", "owner"))
    except ValueError:
        algorithms = [str(a) for a in Algorithm]
        modes = [str(c) for c in Consistency]
        raise ValueError(
            f"rate_limit algorithm must be one of {algorithms} and consistency one of {modes}"
        ) from None
    name = data.get("name", "")
    if name:
        _str(name, "rate_limit name", limits.name_bytes_max, "name_bytes_max")
    return LimitSpec(
        unit=str(data.get("unit")),
        requests_per_unit=_int(data.get("requests_per_unit"), "requests_per_unit"),
        algorithm=algorithm,
        burst=_int(data.get("burst", 0), "burst"),
        consistency=consistency,
        name=name,
        quota_requests=_int(data.get("quota_requests", 0), "quota_requests"),
        quota_valid_ms=_int(data.get("quota_valid_ms", 0), "quota_valid_ms"),
    )


def _parse_rules(items: Any, limits: PolicyLimits, depth: int, budget: list[int]) -> tuple[
    DescriptorRule, ...]:  # fmt: skip
    if not isinstance(items, list):
        raise ValueError("descriptors must be a list")
    if depth > limits.entries_per_descriptor_max:
        raise ValueError(f"descriptors nest deeper than entries_per_descriptor_max="
                         f"{limits.entries_per_descriptor_max}")  # fmt: skip
    rules: list[DescriptorRule] = []
    seen: set[tuple[str, str | None]] = set()
    for item in items:  # bound: rules_per_policy_max through the budget
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError(f"the policy has more than rules_per_policy_max="
                             f"{limits.rules_per_policy_max} descriptor rules")  # fmt: skip
        if not isinstance(item, dict):
            raise ValueError("a descriptor rule must be an object")
        _only(item, ("key", "value", "rate_limit", "shadow_mode", "descriptors"), "descriptor")
        key = _str(item.get("key"), "descriptor key", limits.key_bytes_max, "key_bytes_max")
        value = item.get("value")
        if value is not None:
            value = _str(value, "descriptor value", limits.value_bytes_max, "value_bytes_max")
        if (key, value) in seen:
            raise ValueError(f"descriptor {key}={value} appears twice at one level")
        seen.add((key, value))
        shadow = item.get("shadow_mode", False)
        if not isinstance(shadow, bool):
            raise ValueError("shadow_mode must be a boolean")
        limit = parse_limit(item["rate_limit"], limits) if "rate_limit" in item else None
        children = _parse_rules(item.get("descriptors", []), limits, depth + 1, budget)
        rules.append(DescriptorRule(key, value, limit, shadow, children))
    assert len(rules) == len(items)
    return tuple(rules)


def parse_policy(data: Any, limits: PolicyLimits | None = None) -> Policy:
    """A policy from its JSON/msgpack map. Raises ValueError naming the offence."""
    limits = limits or PolicyLimits()
    if not isinstance(data, dict):
        raise ValueError("a policy must be an object")
    _only(data, ("domain", "descriptors"), "policy")
    domain = data.get("domain")
    if not isinstance(domain, str) or not DOMAIN_PATTERN.match(domain):
        raise ValueError(f"domain must match {DOMAIN_PATTERN.pattern}")
    budget = [limits.rules_per_policy_max]
    policy = Policy(domain, _parse_rules(data.get("descriptors", []), limits, 1, budget))
    assert policy.rule_count() <= limits.rules_per_policy_max
    return policy


def parse_descriptors(data: Any, limits: PolicyLimits | None = None) -> tuple[
    RequestDescriptor, ...]:  # fmt: skip
    """Request descriptors ``[{"entries": [{"key", "value"}...], "hits_addend"?}...]``.

    Raises ValueError."""
    limits = limits or PolicyLimits()
    if not isinstance(data, list) or not data:
        raise ValueError("descriptors must be a non-empty list")
    if len(data) > limits.descriptors_per_request_max:
        raise ValueError(f"more than descriptors_per_request_max="
                         f"{limits.descriptors_per_request_max} descriptors")  # fmt: skip
    out: list[RequestDescriptor] = []
    for item in data:  # bound: descriptors_per_request_max
        if not isinstance(item, dict):
            raise ValueError("a descriptor must be an object with entries")
        _only(item, ("entries", "hits_addend"), "descriptor")
        entries = item.get("entries")
        if not isinstance(entries, list) or not entries:
            raise ValueError("a descriptor needs a non-empty entries list")
        if len(entries) > limits.entries_per_descriptor_max:
            raise ValueError(f"more than entries_per_descriptor_max="
                             f"{limits.entries_per_descriptor_max} entries")  # fmt: skip
        pairs = []
        for entry in entries:  # bound: entries_per_descriptor_max
            if not isinstance(entry, dict):
                raise ValueError("an entry must be an object {key, value}")
            _only(entry, ("key", "value"), "entry")
            pairs.append((
                _str(entry.get("key"), "entry key", limits.key_bytes_max, "key_bytes_max"),
                _str(entry.get("value"), "entry value", limits.value_bytes_max,
                     "value_bytes_max"),
            ))  # fmt: skip
        addend = item.get("hits_addend")
        if addend is not None and not 0 <= _int(addend, "hits_addend") <= limits.hits_max:
            raise ValueError(f"hits_addend must be in [0, hits_max={limits.hits_max}]")
        out.append(RequestDescriptor(tuple(pairs), addend))
    assert 1 <= len(out) <= limits.descriptors_per_request_max
    return tuple(out)


# -- matching -----------------------------------------------------------------------------


def _find(rules: tuple[DescriptorRule, ...], key: str, value: str) -> DescriptorRule | None:
    wildcard = None
    for rule in rules:  # bound: rules_per_policy_max
        if rule.key == key:
            if rule.value == value:
                return rule
            if rule.value is None:
                wildcard = rule
    return wildcard


def counter_key_bytes_max(limits: PolicyLimits) -> int:
    """The longest :func:`counter_key` under ``limits`` (JSON escapes a character in at
    most 6 bytes). Raises nothing."""
    entries = limits.entries_per_descriptor_max
    text = limits.name_bytes_max + entries * (limits.key_bytes_max + limits.value_bytes_max)
    size = 6 * text + 8 * entries + 16
    assert size > text
    return size


def counter_key(domain: str, entries: tuple[tuple[str, str], ...]) -> str:
    """The counter's name: unambiguous whatever the keys and values hold. Raises nothing."""
    assert entries, "a counted descriptor has entries"
    key = json.dumps([domain, [list(pair) for pair in entries]], separators=(",", ":"))
    assert key.startswith("[")
    return key


def match(policy: Policy, descriptor: RequestDescriptor, hits: int) -> Match | None:
    """The limit ``descriptor`` reaches in ``policy`` (None: not limited). Raises
    nothing."""
    assert hits >= 0 and descriptor.entries
    rules, found = policy.rules, None
    for key, value in descriptor.entries:  # bound: entries_per_descriptor_max
        found = _find(rules, key, value)
        if found is None:
            return None
        rules = found.children
    assert found is not None
    if found.limit is None:
        return None
    addend = hits if descriptor.hits_addend is None else descriptor.hits_addend
    return Match(counter_key(policy.domain, descriptor.entries), found.limit, found.shadow_mode,
                 addend)  # fmt: skip
