"""The route specs of the rate-limit service: ``/v1/ratelimit/...``.

Part of the route table of :mod:`synod.node.routes` (and so of the OpenAPI document);
the handlers are in :mod:`synod.node.ratelimit_http`. Bounds come from
:class:`~synod.ratelimit.policy.PolicyLimits`. Policy trees nest, which the schema
subset of :mod:`synod.node.schema` cannot express: their rules are checked by
:func:`~synod.ratelimit.policy.parse_policy` (400 invalid-argument naming the bound).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from synod.node.schema import Schema, boolean, integer, obj, string
from synod.ratelimit.algorithms import REQUESTS_PER_UNIT_MAX, SLIDING_LOG_REQUESTS_MAX, Algorithm
from synod.ratelimit.policy import (
    QUOTA_VALID_MS_MAX,
    UNITS_MS,
    Consistency,
    PolicyLimits,
    counter_key_bytes_max,
)

if TYPE_CHECKING:
    from synod.node.routes import RouteSpec

__all__ = ["CHECK_EXAMPLE", "POLICY_EXAMPLE", "SYNC_ITEMS_MAX", "ratelimit_route_specs"]

SYNC_ITEMS_MAX = 1_000  # hits or states in one /v1/ratelimit/sync request

_COMMON = ("invalid-argument", "limit-exceeded", "internal")
_LEADER = ("not-leader", "no-leader", "outcome-unknown", "timeout")
_WRITE = (*_COMMON, *_LEADER, "too-large", "session-expired")
_READ = (*_COMMON, "no-leader", "timeout", "too-large", "not-found")

POLICY_EXAMPLE: dict[str, Any] = {
    "domain": "api",
    "descriptors": [
        {"key": "remote_address",
         "rate_limit": {"unit": "second", "requests_per_unit": 10, "burst": 20}},
        {"key": "path", "value": "/login",
         "rate_limit": {"unit": "minute", "requests_per_unit": 5,
                        "algorithm": "sliding_window"}},
    ],
}  # fmt: skip
CHECK_EXAMPLE: dict[str, Any] = {
    "domain": "api",
    "descriptors": [{"entries": [{"key": "remote_address", "value": "10.0.0.1"}]}],
    "hits": 1,
}


def _header() -> Schema:
    props = {name: integer() for name in ("revision", "raft_term", "member_id", "leader_id")}
    return obj(props, tuple(props), "where and when the answer was made")


def _answer(fields: dict[str, Schema], description: str = "") -> Schema:
    props = {"header": _header(), **fields}
    return {"type": "object", "properties": props, "required": ["header", *fields],
            "description": description}  # fmt: skip


def _array(items: Schema, items_max: int | None = None, limit: str | None = None) -> Schema:
    schema: Schema = {"type": "array", "items": items}
    if items_max is not None:
        schema["maxItems"] = items_max
    if limit is not None:
        schema["x-synod-limit"] = limit
    return schema


def descriptors_schema(limits: PolicyLimits) -> Schema:
    """The request descriptors of a check. Raises nothing."""
    entry = obj({"key": string("descriptor key", min_length=1, bytes_max=limits.key_bytes_max,
                               limit="key_bytes_max"),
                 "value": string("its value", min_length=1, bytes_max=limits.value_bytes_max,
                                 limit="value_bytes_max")}, ("key", "value"))  # fmt: skip
    descriptor = obj(
        {"entries": _array(entry, limits.entries_per_descriptor_max, "entries_per_descriptor_max"),
         "hits_addend": integer("hits this descriptor counts for (default: the request's)",
                                maximum=limits.hits_max, limit="hits_max")},
        ("entries",), "one descriptor: ordered key/value entries",
    )  # fmt: skip
    schema = _array(descriptor, limits.descriptors_per_request_max, "descriptors_per_request_max")
    schema["minItems"] = 1
    return schema


def policy_schema(limits: PolicyLimits) -> Schema:
    """A policy body: the first level of rules is described; nested ``descriptors`` have
    the same shape (checked by the service). Raises nothing."""
    key = string("descriptor key", min_length=1, bytes_max=limits.key_bytes_max,
                 limit="key_bytes_max")  # fmt: skip
    value = string("descriptor value (absent: any value, a counter per value)", min_length=1,
                   bytes_max=limits.value_bytes_max, limit="value_bytes_max")  # fmt: skip
    rate_limit = _rate_limit(limits)
    nested = {"type": "array", "description": "nested rules of the same shape",
              "maxItems": limits.rules_per_policy_max}  # fmt: skip
    rule = obj({"key": key, "value": value, "rate_limit": rate_limit,
                "shadow_mode": boolean("count and report, never refuse"),
                "descriptors": nested}, ("key",))  # fmt: skip
    domain = string("the domain", min_length=1, bytes_max=limits.name_bytes_max,
                    limit="name_bytes_max")  # fmt: skip
    return obj({"domain": domain,
                "descriptors": _array(rule, limits.rules_per_policy_max, "rules_per_policy_max")},
               ("domain",), "a domain's policy")  # fmt: skip


def _rate_limit(limits: PolicyLimits) -> Schema:
    return obj({
        "unit": string(enum=tuple(UNITS_MS)),
        "requests_per_unit": integer(minimum=1, maximum=REQUESTS_PER_UNIT_MAX),
        "algorithm": string(enum=tuple(map(str, Algorithm))),
        "burst": integer("bucket capacity (token_bucket, gcra; 0: requests_per_unit)",
                         maximum=REQUESTS_PER_UNIT_MAX),
        "consistency": string(enum=tuple(map(str, Consistency))),
        "name": string("the name in the RateLimit headers", bytes_max=limits.name_bytes_max,
                       limit="name_bytes_max"),
        "quota_requests": integer("hits an admitted check also grants the client to spend "
                                  "on its own (0: none)", maximum=REQUESTS_PER_UNIT_MAX),
        "quota_valid_ms": integer("how long a grant may be spent", maximum=QUOTA_VALID_MS_MAX),
    }, ("unit", "requests_per_unit"))  # fmt: skip


def _status() -> Schema:
    rate_limit = {"type": "object", "description": "the limit the descriptor reached"}
    props = {"code": string(enum=("OK", "OVER_LIMIT")), "limit": integer(),
             "remaining": integer(), "reset_ms": integer(),
             "retry_after_ms": {"type": "integer", "minimum": -1,
                                "description": "-1: the hits can never fit"},
             "shadow_mode": boolean(), "rate_limit": rate_limit,
             "owner": string("the member that counted it"),
             "quota": obj({"requests": integer(), "valid_for_ms": integer(),
                           "valid_until_ms": integer("unix ms")},
                          ("requests", "valid_for_ms", "valid_until_ms"),
                          "a grant the client may spend on its own (Envoy RLS Quota)")}  # fmt: skip
    description = "one descriptor's answer (only code when it is not limited)"
    return {"type": "object", "properties": props, "required": ["code"],
            "description": description}  # fmt: skip


def ratelimit_route_specs(limits: PolicyLimits | None = None) -> list[RouteSpec]:
    """The RouteSpecs of /v1/ratelimit. Raises nothing."""
    from synod.node.routes import RouteSpec

    limits = limits or PolicyLimits()
    domain = string("the domain", min_length=1, bytes_max=limits.name_bytes_max,
                    limit="name_bytes_max")  # fmt: skip
    policy = {"type": "object", "description": "a policy (docs/ratelimit.md): domain and "
              "nested descriptor rules, checked by the service"}  # fmt: skip
    policies = _answer({"policies": _array(policy, limits.policies_max, "policies_max"),
                        "generation": integer("policy changes applied so far")})  # fmt: skip
    check_body = obj({
        "domain": domain,
        "descriptors": descriptors_schema(limits),
        "hits": integer("hits the request counts for (0: only ask)", maximum=limits.hits_max,
                        limit="hits_max"),
        "lease_id": string("concurrency limits: the in-flight lease to hold",
                           bytes_max=limits.key_bytes_max, limit="key_bytes_max"),
    }, ("domain", "descriptors"))  # fmt: skip
    hit_item = obj({"domain": domain, "descriptor": descriptors_schema(limits)["items"],
                    "hits": integer(maximum=limits.hits_max, limit="hits_max")},
                   ("domain", "descriptor", "hits"))  # fmt: skip
    log = _array(_array(integer(), 2), SLIDING_LOG_REQUESTS_MAX, "sliding_log_requests_max")
    fields = obj({name: {"type": "integer"} for name in (
        "scaled", "at_ms", "tat_scaled", "start_ms", "count", "current", "previous", "total")}
        | {"log": log},
        description="an algorithm's state (synod.ratelimit.limiter.state_fields)")  # fmt: skip
    key_max = counter_key_bytes_max(limits)
    state_item = obj({"key": string(bytes_max=key_max, limit="counter_key_bytes_max"),
                      "rate_limit": _rate_limit(limits), "fields": fields},
                     ("key", "rate_limit", "fields"))  # fmt: skip
    ring_member = obj({"name": string(), "client_url": string()}, ("name", "client_url"))
    return [
        RouteSpec(
            "rateLimitCheck",
            "POST",
            "/v1/ratelimit/check",
            "Count a request against a domain's limits: OK or OVER_LIMIT, with the IETF "
            "RateLimit and RateLimit-Policy headers",
            _answer(
                {
                    "overall_code": string(enum=("OK", "OVER_LIMIT")),
                    "statuses": _array(_status(), limits.descriptors_per_request_max),
                    "generation": integer("the policy generation applied"),
                }
            ),
            (*_WRITE, "not-found"),
            body=check_body,
            example=CHECK_EXAMPLE,
        ),
        RouteSpec(
            "rateLimitRelease",
            "POST",
            "/v1/ratelimit/release",
            "Release the in-flight lease of concurrency limits",
            _answer({"released": integer("leases released")}),
            (*_WRITE, "not-found"),
            body=obj(
                {
                    "domain": domain,
                    "descriptors": descriptors_schema(limits),
                    "lease_id": string(
                        "the lease to release",
                        min_length=1,
                        bytes_max=limits.key_bytes_max,
                        limit="key_bytes_max",
                    ),
                },
                ("domain", "descriptors", "lease_id"),
            ),
        ),
        RouteSpec(
            "rateLimitSync",
            "POST",
            "/v1/ratelimit/sync",
            "Members only (global mode): admitted hits for the owner to merge, or the "
            "owner's counters replacing the replicas",
            _answer({"merged": integer(), "adopted": integer()}),
            _COMMON,
            body=obj(
                {
                    "hits": _array(hit_item, SYNC_ITEMS_MAX, "sync_items_max"),
                    "states": _array(state_item, SYNC_ITEMS_MAX, "sync_items_max"),
                }
            ),
        ),
        RouteSpec(
            "rateLimitPolicies",
            "GET",
            "/v1/ratelimit/policies",
            "Every rate-limit policy, or the one of domain",
            policies,
            _READ,
            query=obj({"domain": domain}),
        ),
        RouteSpec(
            "rateLimitPolicyPut",
            "PUT",
            "/v1/ratelimit/policies",
            "Create or replace a domain's policy (through the Raft log)",
            _answer({"policy": policy, "created": boolean(), "generation": integer()}),
            _WRITE,
            body=policy_schema(limits),
        ),
        RouteSpec(
            "rateLimitPolicyDelete",
            "DELETE",
            "/v1/ratelimit/policies/{domain}",
            "Delete a domain's policy (through the Raft log)",
            _answer({"domain": string(), "deleted": boolean(), "generation": integer()}),
            (*_WRITE, "not-found"),
            path_params={"domain": domain},
        ),
        RouteSpec(
            "rateLimitStatus",
            "GET",
            "/v1/ratelimit/status",
            "This member's view: the hash ring, its counters, modes and their bounds",
            _answer(
                {
                    "self": string(),
                    "ring": _array(ring_member),
                    "ring_source": string(enum=("gossip", "raft")),
                    "counters": integer(),
                    "generation": integer(),
                    "algorithms": _array(string(enum=tuple(map(str, Algorithm)))),
                    "modes": _array(string(enum=tuple(map(str, Consistency)))),
                }
            ),
            _READ,
        ),
    ]
