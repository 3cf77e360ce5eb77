"""Rate limits from the SDK (docs/ratelimit.md): checks, a decorator, policies.

``await client.rate_limit("api", [{"user": "bob"}])`` counts one hit and answers a
:class:`RateLimitResult` (``allowed``, per-descriptor statuses, ``retry_after_ms``).
A descriptor is a mapping of entries in order (``{"path": "/login", "user": "bob"}``),
a sequence of ``(key, value)`` pairs, or the wire form ``{"entries": [...]}``.
``client.rate_limited(domain, descriptors)`` decorates a function: a call over the
limit raises :class:`RateLimited` instead of running it. A check is sent as a write
without session: it is retried only when it surely did not count.

**Local quota** (Envoy RLS ``Quota``, Doorman-style): when a limit grants quotas
(``quota_requests``), an admitted check's status carries a grant the cluster already
counted; :class:`QuotaCache` keeps it, and later checks whose every descriptor holds
enough unexpired grant are answered here, without a request (``cached`` statuses).
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar
from urllib.parse import quote

from synod.client.errors import SynodError

if TYPE_CHECKING:
    from synod.client.aio import AsyncClient

__all__ = ["QuotaCache", "RateLimitResult", "RateLimited", "check", "descriptors_to_wire"]

DESCRIPTORS_MAX: Final = 16  # the server's descriptors_per_request_max
QUOTAS_MAX: Final = 10_000  # grants one client caches (expired ones make room first)

P = ParamSpec("P")
T = TypeVar("T")
Descriptor = Mapping[str, str] | Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    """The answer of a check."""

    allowed: bool
    overall_code: str
    statuses: list[dict[str, Any]]
    generation: int

    @property
    def retry_after_ms(self) -> int:
        """The longest wait among refusing descriptors (-1: never fits; 0: allowed).

        Raises nothing."""
        waits = [int(s.get("retry_after_ms", 0)) for s in self.statuses
                 if s.get("code") == "OVER_LIMIT"]  # fmt: skip
        return -1 if -1 in waits else max(waits, default=0)


class QuotaCache:
    """Grants by (domain, descriptor): hits left and when they expire (monotonic)."""

    def __init__(self, quotas_max: int = QUOTAS_MAX) -> None:
        """Raises ValueError for a bound below 1."""
        if quotas_max < 1:
            raise ValueError("quotas_max must be positive")
        self.quotas_max = quotas_max
        self._grants: dict[str, tuple[int, float]] = {}
        self.served = 0  # checks answered from grants
        assert not self._grants

    def __len__(self) -> int:
        """Grants held. Raises nothing."""
        return len(self._grants)

    @staticmethod
    def key(domain: str, descriptor: dict[str, Any]) -> str:
        """The cache key of one wire descriptor. Raises nothing."""
        return json.dumps([domain, descriptor], sort_keys=True, separators=(",", ":"))

    def take(self, domain: str, wire: list[dict[str, Any]], hits: int) -> RateLimitResult | None:
        """Spend ``hits`` of every descriptor's grant, or None (nothing spent) when one
        lacks an unexpired grant of that many. Raises nothing."""
        if hits < 1:
            return None
        now = time.monotonic()
        keys = [self.key(domain, descriptor) for descriptor in wire]
        found = [self._grants.get(key) for key in keys]
        if any(g is None or g[0] < hits or g[1] <= now for g in found):
            return None
        statuses = []
        for key, grant in zip(keys, found, strict=True):
            assert grant is not None
            self._grants[key] = (grant[0] - hits, grant[1])
            statuses.append({"code": "OK", "cached": True, "remaining": grant[0] - hits})
        self.served += 1
        return RateLimitResult(True, "OK", statuses, -1)

    def put(self, domain: str, wire: list[dict[str, Any]], result: RateLimitResult) -> None:
        """Keep the grants ``result`` carries. Raises nothing (a full cache keeps none
        of them: the cluster then answers every check)."""
        now = time.monotonic()
        for descriptor, status in zip(wire, result.statuses, strict=True):
            quota = status.get("quota")
            if not isinstance(quota, dict):
                continue
            key = self.key(domain, descriptor)
            if key not in self._grants and len(self._grants) >= self.quotas_max:
                self._grants = {k: g for k, g in self._grants.items() if g[1] > now}
                if len(self._grants) >= self.quotas_max:
                    return
            self._grants[key] = (int(quota["requests"]), now + int(quota["valid_for_ms"]) / 1000)
        assert len(self._grants) <= self.quotas_max


class RateLimited(SynodError):
    """A decorated call was over its limit (``result`` says which and for how long)."""

    code = "rate-limited"
    status = 429

    def __init__(self, result: RateLimitResult) -> None:
        """Raises nothing."""
        super().__init__(f"over the rate limit; retry after {result.retry_after_ms} ms",
                         {"statuses": result.statuses})  # fmt: skip
        self.result = result


def descriptors_to_wire(descriptors: Sequence[Descriptor | Mapping[str, Any]]) -> list[
    dict[str, Any]]:  # fmt: skip
    """The wire form of ``descriptors``. Raises ValueError (empty, too many, not
    strings)."""
    if not descriptors or len(descriptors) > DESCRIPTORS_MAX:
        raise ValueError(f"a check needs 1 to {DESCRIPTORS_MAX} descriptors")
    wire = []
    for descriptor in descriptors:
        if isinstance(descriptor, Mapping) and "entries" in descriptor:
            wire.append(dict(descriptor))
            continue
        pairs = list(descriptor.items()) if isinstance(descriptor, Mapping) else list(descriptor)
        if not pairs or not all(isinstance(k, str) and isinstance(v, str) for k, v in pairs):
            raise ValueError("a descriptor is a non-empty mapping of str keys to str values")
        wire.append({"entries": [{"key": k, "value": v} for k, v in pairs]})
    assert len(wire) == len(descriptors)
    return wire


async def check(client: AsyncClient, domain: str, descriptors: Sequence[Any], hits: int = 1,
                lease_id: str = "") -> RateLimitResult:  # fmt: skip
    """Count ``hits`` against ``domain``'s limits. Raises ValueError (descriptors),
    NotFound (no policy), InvalidArgument, TooLarge, Unavailable."""
    wire = descriptors_to_wire(descriptors)
    if not lease_id:
        cached = client.quotas.take(domain, wire, hits)
        if cached is not None:
            return cached
    body: dict[str, Any] = {"domain": domain, "descriptors": wire, "hits": hits}
    if lease_id:
        body["lease_id"] = lease_id
    doc = await client._attempts("POST", "/v1/ratelimit/check", body, unsafe_write=True)
    result = RateLimitResult(doc["overall_code"] == "OK", doc["overall_code"], doc["statuses"],
                             int(doc["generation"]))  # fmt: skip
    assert len(result.statuses) == len(wire)
    if result.allowed:
        client.quotas.put(domain, wire, result)
    return result


async def release(client: AsyncClient, domain: str, descriptors: Sequence[Any],
                  lease_id: str) -> int:  # fmt: skip
    """Release a concurrency lease; how many were held. Raises like :func:`check`."""
    body = {"domain": domain, "descriptors": descriptors_to_wire(descriptors),
            "lease_id": lease_id}  # fmt: skip
    doc = await client._attempts("POST", "/v1/ratelimit/release", body, unsafe_write=True)
    return int(doc["released"])


async def policy_put(client: AsyncClient, policy: dict[str, Any]) -> dict[str, Any]:
    """Create or replace a policy. Raises InvalidArgument, Unavailable."""
    doc = await client._attempts("PUT", "/v1/ratelimit/policies", policy, unsafe_write=True)
    return {k: doc[k] for k in ("policy", "created", "generation")}


async def policies(client: AsyncClient, domain: str = "") -> dict[str, Any]:
    """Every policy (or ``domain``'s) and the generation. Raises NotFound, Unavailable."""
    params = {"domain": domain} if domain else None
    doc = await client._call("GET", "/v1/ratelimit/policies", params=params)
    return {"policies": doc["policies"], "generation": doc["generation"]}


async def policy_delete(client: AsyncClient, domain: str) -> dict[str, Any]:
    """Delete ``domain``'s policy. Raises NotFound, Unavailable."""
    path = "/v1/ratelimit/policies/" + quote(domain, safe="")
    doc = await client._attempts("DELETE", path, None, unsafe_write=True)
    return {k: doc[k] for k in ("domain", "deleted", "generation")}


async def status(client: AsyncClient) -> dict[str, Any]:
    """The answering member's ring, counters and modes. Raises Unavailable."""
    doc = await client._call("GET", "/v1/ratelimit/status")
    return {k: v for k, v in doc.items() if k != "header"}


def decorator(
    run_check: Callable[[], Awaitable[RateLimitResult]],
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """An async-function decorator calling ``run_check`` first. Raises nothing."""

    def wrap(function: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        if not inspect.iscoroutinefunction(function):
            raise TypeError("AsyncClient.rate_limited decorates async functions")

        @functools.wraps(function)
        async def limited(*args: P.args, **kwargs: P.kwargs) -> T:
            result = await run_check()
            if not result.allowed:
                raise RateLimited(result)
            return await function(*args, **kwargs)

        return limited

    return wrap
