"""The /v1/ratelimit handlers and this member's counters (docs/ratelimit.md).

Policies come from the replicated state (a serializable read: this member's applied
configuration; parsed once per change). A check matches each descriptor to a limit and
counts it by the limit's consistency mode:

* ``strict``: a ``ratelimit_hit`` write through the Raft log (the request is forwarded
  to the leader like every write; the time is the proposing member's clock, held
  monotonic by the replicated table);
* ``local``: in this member's memory;
* ``owner``: on the descriptor's owner on the consistent-hash ring of the members this
  member sees (gossip ``alive``/``suspect`` members with a client URL; the Raft
  configuration when gossip is off). A non-owner forwards the descriptors over HTTP,
  one request per owner, marked with ``OWNER_HEADER`` so that the owner counts them
  whatever its own ring says. An owner that does not answer within
  ``OWNER_FORWARD_TIMEOUT_MS`` is replaced by this member for that check (counted in
  ``synod_ratelimit_owner_fallbacks_total``): availability over exactness.
* ``global``: every member answers from its own replica of the counter at once; the
  hits it admitted are sent to the owner in a batch every ``GLOBAL_BATCH_INTERVAL_MS``
  (``POST /v1/ratelimit/sync``), the owner merges them into its counter and, in the
  same cycle, broadcasts the counters that changed to every member, which replace
  their replicas. Over-admission while the load is spread: ``rate * (batch interval +
  broadcast lag) * (members - 1)``, exported per domain.

Strict descriptors are counted first, so a check forwarded to the leader has counted
nothing here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from synod.gossip.state import MemberState
from synod.node.gossip_node import GOSSIP
from synod.node.http_state import STATE
from synod.node.problems import Problem, problem_from_result_error
from synod.node.ratelimit_routes import SYNC_ITEMS_MAX
from synod.ratelimit.algorithms import NEVER, Algorithm
from synod.ratelimit.limiter import (
    Code,
    Counters,
    CountersFull,
    DescriptorStatus,
    decide,
    grant_quota,
    over_admission_bound,
    state_fields,
)
from synod.ratelimit.policy import (
    Consistency,
    LimitSpec,
    Match,
    Policy,
    PolicyLimits,
    RequestDescriptor,
    match,
    parse_descriptors,
    parse_limit,
    parse_policy,
)
from synod.ratelimit.ring import MEMBERS_MAX, Ring
from synod.services.ratelimit import (
    ratelimit_hit_op,
    ratelimit_policies_op,
    ratelimit_policy_delete_op,
    ratelimit_policy_set_op,
    status_fields,
)

if TYPE_CHECKING:
    from synod.node.api import NodeApi
    from synod.node.http import Call

__all__ = [
    "OWNER_HEADER",
    "RATELIMITER",
    "RATELIMIT_OPERATIONS",
    "RateLimiter",
    "install",
    "run_check",
]

OWNER_HEADER: Final = "Synod-Ratelimit-Owner"  # a check forwarded to the owner
OWNER_FORWARD_TIMEOUT_MS: Final = 500
GLOBAL_BATCH_INTERVAL_MS: Final = 50  # a member sends its global hits this often
POLICIES_CACHED_MAX: Final = PolicyLimits().policies_max

log = logging.getLogger(__name__)

Answer = tuple[dict[str, Any], int | None]
Clock = Callable[[], int]


def wall_ms() -> int:
    """Unix time in ms. Raises nothing."""
    return time.time_ns() // 1_000_000


def _ok(result: dict[str, Any]) -> dict[str, Any]:
    if result.get("ok") is not True:
        error = result.get("error")
        if not isinstance(error, dict):
            raise Problem("internal", "node answered neither ok nor a service error")
        raise problem_from_result_error(error)
    assert isinstance(result.get("revision", 0), int)
    return result


@dataclass(frozen=True, slots=True)
class _Metrics:
    checks: Counter
    decisions: Counter
    forwards: Counter
    fallbacks: Counter
    counters: Gauge
    ring_members: Gauge
    ring_changes: Counter
    bound: Gauge
    syncs: Counter


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()


def _metrics(registry: CollectorRegistry) -> _Metrics:
    found = _METRICS.get(registry)
    if found is None:
        found = _Metrics(
            Counter("synod_ratelimit_checks", "rate-limit checks answered by this member",
                    ("code",), registry=registry),
            Counter("synod_ratelimit_decisions", "descriptors decided, by mode and code",
                    ("mode", "code"), registry=registry),
            Counter("synod_ratelimit_owner_forwards", "owner-mode checks forwarded to owners",
                    registry=registry),
            Counter("synod_ratelimit_owner_fallbacks",
                    "owner-mode descriptors counted here because the owner did not answer",
                    registry=registry),
            Gauge("synod_ratelimit_counters", "live counters in this member's memory",
                  registry=registry),
            Gauge("synod_ratelimit_ring_members", "members on this member's hash ring",
                  registry=registry),
            Counter("synod_ratelimit_ring_changes",
                    "hash ring changes seen (owned counters that moved away were dropped)",
                    registry=registry),
            Gauge("synod_ratelimit_over_admission_bound",
                  "hits a limit may admit beyond its rate per unit (docs/ratelimit.md)",
                  ("domain", "mode"), registry=registry),
            Counter("synod_ratelimit_global_syncs",
                    "global-mode sync requests sent, by kind (hits to owners, broadcasts)",
                    ("kind", "result"), registry=registry),
        )  # fmt: skip
        _METRICS[registry] = found
    return found


@dataclass(frozen=True, slots=True)
class RingView:
    """The ring this member counts owners on."""

    self_name: str
    ring: Ring
    urls: dict[str, str]
    source: str  # "gossip" or "raft"


class RateLimiter:
    """This member's counters (local and owned), policy cache and ring."""

    def __init__(self, registry: CollectorRegistry, clock: Clock | None = None) -> None:
        """Raises ValueError if another owner registered the metric names."""
        self.clock: Clock = clock or wall_ms
        self.metrics = _metrics(registry)
        self.limits = PolicyLimits()
        self.local = Counters()
        self.owned = Counters()
        self._policies: dict[str, tuple[dict[str, Any], Policy]] = {}
        self.replicas = Counters()  # global mode: replicas here, the owner's counters
        # global hits admitted here and not yet sent: owner -> key -> (domain, raw, hits);
        # each key was just counted in `replicas`, so at most counters_max per owner
        self.pending: dict[str, dict[str, tuple[str, dict[str, Any], int]]] = {}
        self.pending_count = 0
        self.dirty: dict[str, LimitSpec] = {}  # owned global keys changed since a broadcast
        self.broadcast_lag_ms = GLOBAL_BATCH_INTERVAL_MS  # the last broadcast's duration
        self._ring: RingView | None = None
        self._session: aiohttp.ClientSession | None = None
        self._flusher: asyncio.Task[None] | None = None
        assert len(self.local) == len(self.owned) == 0

    def start(self, app: web.Application) -> None:
        """Start the global-mode sync loop. Raises nothing."""
        assert self._flusher is None
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(app))

    async def _flush_loop(self, app: web.Application) -> None:
        while True:  # bound: until close() cancels it
            await asyncio.sleep(GLOBAL_BATCH_INTERVAL_MS / 1000)
            try:
                await self.flush(app)
            except Exception:  # a failed cycle retries next time; never kill the loop
                log.exception("ratelimit: global sync cycle failed")

    async def flush(self, app: web.Application) -> None:
        """One global-mode cycle: send the pending hits to their owners, broadcast the
        owned counters that changed. Raises nothing but bugs."""
        if not self.pending and not self.dirty:
            return
        view = self.ring(app, app[STATE].node)
        pending, self.pending, self.pending_count = self.pending, {}, 0
        for owner, items in sorted(pending.items()):  # bound: ring members
            hits = [{"domain": d, "descriptor": raw, "hits": n} for d, raw, n in items.values()]
            if owner == view.self_name or not view.urls.get(owner):
                await self.merge_hits(app[STATE].node, hits)  # we own it now: merge here
                continue
            for chunk in range(0, len(hits), SYNC_ITEMS_MAX):  # bound: counters_max
                answer = await self.forward(view.urls[owner],
                                            {"hits": hits[chunk:chunk + SYNC_ITEMS_MAX]},
                                            "/v1/ratelimit/sync")  # fmt: skip
                result = "ok" if answer is not None else "failed"
                self.metrics.syncs.labels("hits", result).inc()
        await self.broadcast(view)
        assert self.pending_count >= 0

    async def broadcast(self, view: RingView) -> None:
        """Send the changed owned counters to every other member. Raises nothing."""
        if not self.dirty:
            return
        dirty, self.dirty = self.dirty, {}
        states = []
        for key, limit in dirty.items():  # bound: counters_max
            if key in self.replicas:
                _limit, state = self.replicas.entry(key)
                states.append({"key": key, "rate_limit": limit.to_dict(),
                               "fields": state_fields(state)})  # fmt: skip
        started = time.monotonic()
        for name in view.ring.members:  # bound: ring members
            url = view.urls.get(name)
            if name == view.self_name or not url:
                continue
            for chunk in range(0, len(states), SYNC_ITEMS_MAX):
                answer = await self.forward(url, {"states": states[chunk:chunk + SYNC_ITEMS_MAX]},
                                            "/v1/ratelimit/sync")  # fmt: skip
                self.metrics.syncs.labels("broadcast", "ok" if answer else "failed").inc()
        self.broadcast_lag_ms = int((time.monotonic() - started) * 1000)
        assert self.broadcast_lag_ms >= 0

    def note_global(self, owner: str, domain: str, raw: dict[str, Any], match_: Match,
                    extra: int = 0) -> None:  # fmt: skip
        """Queue hits admitted here for ``owner`` (or mark them for broadcast when we
        own the key). Raises nothing."""
        key = match_.counter_key
        view = self._ring
        if view is not None and owner == view.self_name:
            self.dirty[key] = match_.limit
            return
        items = self.pending.setdefault(owner, {})
        found = items.get(key)
        if found is None:
            self.pending_count += 1
        items[key] = (domain, raw, match_.hits + extra + (found[2] if found else 0))
        assert len(items) <= self.replicas.counters_max

    async def merge_hits(self, node: NodeApi, hits: list[dict[str, Any]]) -> int:
        """The owner merges other members' admitted hits into its counters (saturating
        at the limit: hits beyond it were over-admission already). Returns how many
        keys. Raises nothing (unknown domains and malformed items are skipped)."""
        merged, now_ms = 0, self.clock()
        for item in hits:  # bound: SYNC_ITEMS_MAX
            try:
                policy, _generation = await self.policy(node, str(item["domain"]))
                descriptor = parse_descriptors([item["descriptor"]], self.limits)[0]
                count = int(item["hits"])
            except (Problem, ValueError, KeyError, TypeError):
                continue
            found = match(policy, descriptor, count)
            if found is None or found.limit.consistency is not Consistency.GLOBAL:
                continue
            try:
                state = self.replicas.state(found.counter_key, found.limit, now_ms)
            except CountersFull:
                continue
            decision = state.hit(now_ms, found.hits)
            if not decision.allowed and decision.remaining > 0:
                state.hit(now_ms, decision.remaining)
            self.dirty[found.counter_key] = found.limit
            merged += 1
        return merged

    def adopt_states(self, states: list[dict[str, Any]]) -> int:
        """Replace replicas with the owner's broadcast counters. Returns how many.
        Raises nothing (malformed items are skipped)."""
        adopted, now_ms = 0, self.clock()
        for item in states:  # bound: SYNC_ITEMS_MAX
            try:
                limit = parse_limit(item["rate_limit"], self.limits)
                if limit.consistency is not Consistency.GLOBAL:
                    continue
                self.replicas.replace(str(item["key"]), limit, dict(item["fields"]), now_ms)
            except (ValueError, KeyError, TypeError, CountersFull):
                continue
            adopted += 1
        return adopted

    async def close(self) -> None:
        """Stop the sync loop, close the forwarding session. Raises nothing."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- policies and ring ----------------------------------------------------------------

    async def policy(self, node: NodeApi, domain: str) -> tuple[Policy, int]:
        """``domain``'s policy as applied here and the generation. Raises Problem
        not-found (no policy), NodeErrors."""
        result = _ok(await node.read(ratelimit_policies_op(domain), serializable=True))
        raw = result["policies"][0]
        cached = self._policies.get(domain)
        if cached is None or cached[0] != raw:
            if len(self._policies) >= POLICIES_CACHED_MAX:
                self._policies.clear()
            cached = (raw, parse_policy(raw, self.limits))
            self._policies[domain] = cached
        assert cached[1].domain == domain
        return cached[1], int(result["generation"])

    def ring(self, app: web.Application, node: NodeApi) -> RingView:
        """The ring of the members this member sees. Raises nothing."""
        core = app.get(GOSSIP)
        urls: dict[str, str] = {}
        if core is not None:
            for member in core.members.values():  # bound: the gossip members_max
                if member.state in (MemberState.ALIVE, MemberState.SUSPECT) and (
                    member.meta.client_url
                ):
                    urls[member.name] = member.meta.client_url
            self_name, source = core.name, "gossip"
        else:
            status = node.status()
            for member in status["members"]:
                if member.get("client_url"):
                    urls[str(member["id"])] = member["client_url"]
            self_name, source = str(status["member_id"]), "raft"
        urls.setdefault(self_name, "")
        if len(urls) > MEMBERS_MAX:
            urls = dict(sorted(urls.items())[:MEMBERS_MAX])
        view = self._ring
        if view is None or set(view.urls) != set(urls) or view.self_name != self_name:
            view = RingView(self_name, Ring(urls), urls, source)
            if self._ring is not None:
                self.metrics.ring_changes.inc()
                moved = [k for k in self.owned.names() if view.ring.owner(k) != self_name]
                self.owned.drop(moved)
            self._ring = view
            self.metrics.ring_members.set(len(urls))
        elif view.urls != urls:
            view = RingView(self_name, view.ring, urls, source)
            self._ring = view
        assert self_name in view.ring.members
        return view

    # -- checks ---------------------------------------------------------------------------

    def count_here(
        self, counters: Counters, matches: list[Match | None], lease_id: str
    ) -> list[DescriptorStatus]:
        """Decide ``matches`` on ``counters`` now. Raises Problem limit-exceeded."""
        try:
            statuses = decide(counters, matches, self.clock(), lease_id)
        except CountersFull as error:
            raise Problem("limit-exceeded", str(error), limit="counters_max",
                          max=counters.counters_max) from None  # fmt: skip
        self.metrics.counters.set(len(self.local) + len(self.owned) + len(self.replicas))
        assert len(statuses) == len(matches)
        return statuses

    async def forward(self, url: str, body: dict[str, Any], path: str) -> dict[str, Any] | None:
        """POST ``body`` to the owner at ``url``; its answer, or None when it did not
        answer in time or refused. Raises nothing."""
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=OWNER_FORWARD_TIMEOUT_MS / 1000)
            self._session = aiohttp.ClientSession(timeout=timeout,
                                                  cookie_jar=aiohttp.DummyCookieJar())  # fmt: skip
        self.metrics.forwards.inc()
        try:
            async with self._session.post(url + path, json=body,
                                          headers={OWNER_HEADER: "1"}) as response:  # fmt: skip
                if response.status != 200:
                    return None
                answer = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return answer if isinstance(answer, dict) else None


RATELIMITER: Final = web.AppKey("ratelimiter", RateLimiter)


def install(app: web.Application, registry: CollectorRegistry) -> None:
    """Put a RateLimiter on ``app``. Raises ValueError (metric names taken)."""
    app[RATELIMITER] = RateLimiter(registry)
    app.on_startup.append(_start)
    app.on_cleanup.append(_close)
    assert RATELIMITER in app


async def _start(app: web.Application) -> None:
    app[RATELIMITER].start(app)


async def _close(app: web.Application) -> None:
    await app[RATELIMITER].close()


def _descriptors(body: dict[str, Any], limits: PolicyLimits) -> tuple[RequestDescriptor, ...]:
    try:
        return parse_descriptors(body["descriptors"], limits)
    except ValueError as error:
        raise Problem("invalid-argument", str(error)) from None


def _statuses_of(answer: dict[str, Any], count: int) -> list[dict[str, Any]] | None:
    statuses = answer.get("statuses")
    if not isinstance(statuses, list) or len(statuses) != count:
        return None
    return [s for s in statuses if isinstance(s, dict)] if all(
        isinstance(s, dict) for s in statuses) else None  # fmt: skip


async def _check(call: Call) -> Answer:
    forwarded = OWNER_HEADER in call.request.headers
    fields, headers = await run_check(call.request.app, call.node, call.body, forwarded=forwarded)
    call.response_headers.update(headers)
    return fields, None


async def run_check(
    app: web.Application, node: NodeApi, body: dict[str, Any], *, forwarded: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    """One check (the JSON body of /v1/ratelimit/check, already schema-valid): the
    answer's fields and its RateLimit headers. ``forwarded``: a non-owner sent it, count
    owner-mode descriptors here. Raises Problem, NotLeader (strict limits, on a
    follower) and the other NodeErrors."""
    limiter = app[RATELIMITER]
    domain, hits, lease_id = body["domain"], body.get("hits", 1), body.get("lease_id", "")
    descriptors = _descriptors(body, limiter.limits)
    policy, generation = await limiter.policy(node, domain)
    matches = [match(policy, d, hits) for d in descriptors]
    out: list[dict[str, Any] | None] = [None] * len(matches)
    by_mode: dict[Consistency, list[int]] = {mode: [] for mode in Consistency}
    for i, found in enumerate(matches):
        if found is None:
            out[i] = {"code": "OK"}
        else:
            by_mode[found.limit.consistency].append(i)
    if by_mode[Consistency.STRICT]:  # first: a NotLeader forwards before anything counts
        chosen = by_mode[Consistency.STRICT]
        raw = [body["descriptors"][i] for i in chosen]
        op = ratelimit_hit_op(domain, raw, hits, limiter.clock(), lease_id)
        result = _ok(await node.write(op, None))
        for i, status in zip(chosen, result["statuses"], strict=True):
            out[i] = {**status, "owner": "raft"}
    view = limiter.ring(app, node)
    here = view.self_name
    local = by_mode[Consistency.LOCAL]
    decided = limiter.count_here(limiter.local, [matches[i] for i in local], lease_id)
    _fill(out, local, decided, here)
    _grant(limiter, limiter.local, local, matches, decided, out)
    shared = by_mode[Consistency.GLOBAL]
    if shared:
        decided = limiter.count_here(limiter.replicas, [matches[i] for i in shared], lease_id)
        _fill(out, shared, decided, here)
        granted = _grant(limiter, limiter.replicas, shared, matches, decided, out)
        if not any(s.code is Code.OVER_LIMIT for s in decided):
            for i, status in zip(shared, decided, strict=True):
                m = matches[i]
                assert m is not None
                extra = granted.get(i, 0)
                if status.decision is not None and status.decision.allowed and m.hits + extra:
                    owner = view.ring.owner(m.counter_key)
                    limiter.note_global(owner, domain, body["descriptors"][i], m, extra)
    owners: dict[str, list[int]] = {}
    for i in by_mode[Consistency.OWNER]:
        m = matches[i]
        assert m is not None
        owner = here if forwarded else view.ring.owner(m.counter_key)
        owners.setdefault(owner, []).append(i)
    for owner, chosen in sorted(owners.items()):  # bound: ring members
        if owner != here and view.urls.get(owner):
            sub = {"domain": domain, "descriptors": [body["descriptors"][i] for i in chosen],
                   "hits": hits, **({"lease_id": lease_id} if lease_id else {})}  # fmt: skip
            answer = await limiter.forward(view.urls[owner], sub, "/v1/ratelimit/check")
            statuses = _statuses_of(answer, len(chosen)) if answer is not None else None
            if statuses is not None:
                for i, status in zip(chosen, statuses, strict=True):
                    out[i] = {**status, "owner": owner}
                continue
            limiter.metrics.fallbacks.inc(len(chosen))
        decided = limiter.count_here(limiter.owned, [matches[i] for i in chosen], lease_id)
        _fill(out, chosen, decided, here)
        _grant(limiter, limiter.owned, chosen, matches, decided, out)
    statuses_out = [s if s is not None else {"code": "OK"} for s in out]
    code = "OVER_LIMIT" if any(s["code"] == "OVER_LIMIT" for s in statuses_out) else "OK"
    _observe(limiter, domain, matches, statuses_out, code, len(view.ring.members))
    fields = {"overall_code": code, "statuses": statuses_out, "generation": generation}
    return fields, _headers(matches, statuses_out, code)


def _grant(limiter: RateLimiter, counters: Counters, chosen: list[int],
           matches: list[Match | None], decided: list[DescriptorStatus],
           out: list[dict[str, Any] | None]) -> dict[int, int]:  # fmt: skip
    """Reserve the quota grants of admitted descriptors whose limit grants them (none
    when the check was refused); adds ``quota`` to their statuses. Returns index ->
    hits granted. Raises nothing."""
    if any(s.code is Code.OVER_LIMIT for s in decided):
        return {}
    granted: dict[int, int] = {}
    now_ms = limiter.clock()
    for i, status in zip(chosen, decided, strict=True):  # bound: descriptors_per_request_max
        m, entry = matches[i], out[i]
        if m is None or entry is None or not m.limit.quota_requests:
            continue
        if status.decision is None or not status.decision.allowed:
            continue
        try:
            count = grant_quota(counters, m, now_ms)
        except CountersFull:
            count = 0
        if count:
            granted[i] = count
            valid_ms = m.limit.quota_valid_ms
            entry["quota"] = {"requests": count, "valid_for_ms": valid_ms,
                              "valid_until_ms": now_ms + valid_ms}  # fmt: skip
            entry["remaining"] = max(0, int(entry["remaining"]) - count)
    assert all(count > 0 for count in granted.values())
    return granted


def _fill(out: list[dict[str, Any] | None], chosen: list[int],
          statuses: list[DescriptorStatus], owner: str) -> None:  # fmt: skip
    assert len(chosen) == len(statuses)
    for i, status in zip(chosen, status_fields(statuses), strict=True):
        out[i] = {**status, "owner": owner}


def _observe(limiter: RateLimiter, domain: str, matches: list[Match | None],
             statuses: list[dict[str, Any]], code: str, members: int) -> None:  # fmt: skip
    metrics = limiter.metrics
    metrics.checks.labels(code).inc()
    for found, status in zip(matches, statuses, strict=True):
        if found is not None:
            mode = str(found.limit.consistency)
            metrics.decisions.labels(mode, status["code"]).inc()
            bound = over_admission_bound(found.limit, members,
                                         batch_interval_ms=GLOBAL_BATCH_INTERVAL_MS,
                                         broadcast_lag_ms=limiter.broadcast_lag_ms)  # fmt: skip
            metrics.bound.labels(domain, mode).set(bound)
    assert code in (Code.OK, Code.OVER_LIMIT)


def _headers(matches: list[Match | None], statuses: list[dict[str, Any]],
             code: str) -> dict[str, str]:  # fmt: skip
    """The IETF RateLimit-Policy and RateLimit fields (draft-ietf-httpapi-ratelimit-
    headers: one list item per limited descriptor) and Retry-After when refused."""
    policies, current, waits = [], [], []
    for i, (found, status) in enumerate(zip(matches, statuses, strict=True)):
        if found is None or "remaining" not in status:
            continue
        name = found.limit.name or f"d{i}"
        quota = found.limit.burst or found.limit.requests_per_unit
        window_s = max(1, found.limit.unit_ms // 1000)
        policies.append(f'"{name}";q={quota};w={window_s}')
        current.append(f'"{name}";r={status["remaining"]};t={math.ceil(status["reset_ms"] / 1000)}')
        if status["code"] == "OVER_LIMIT" and status["retry_after_ms"] != NEVER:
            waits.append(status["retry_after_ms"])
    headers: dict[str, str] = {}
    if policies:
        headers["RateLimit-Policy"] = ", ".join(policies)
        headers["RateLimit"] = ", ".join(current)
    if code == "OVER_LIMIT" and waits:
        headers["Retry-After"] = str(max(1, math.ceil(max(waits) / 1000)))
    assert len(policies) == len(current)
    return headers


async def _release(call: Call) -> Answer:
    limiter = call.request.app[RATELIMITER]
    body = call.body
    descriptors = _descriptors(body, limiter.limits)
    policy, _generation = await limiter.policy(call.node, body["domain"])
    view = limiter.ring(call.request.app, call.node)
    forwarded = OWNER_HEADER in call.request.headers
    released, now_ms = 0, limiter.clock()
    for raw, descriptor in zip(body["descriptors"], descriptors, strict=True):
        found = match(policy, descriptor, 1)
        if found is None or found.limit.algorithm is not Algorithm.CONCURRENCY:
            continue
        mode = found.limit.consistency
        owner = view.self_name if forwarded else view.ring.owner(found.counter_key)
        if mode is Consistency.LOCAL:
            released += limiter.local.release(found.counter_key, body["lease_id"], now_ms)
        elif mode is Consistency.OWNER and owner != view.self_name and view.urls.get(owner):
            sub = {"domain": body["domain"], "descriptors": [raw], "lease_id": body["lease_id"]}
            answer = await limiter.forward(view.urls[owner], sub, "/v1/ratelimit/release")
            released += int(answer.get("released", 0)) if answer is not None else 0
        elif mode is Consistency.OWNER:
            released += limiter.owned.release(found.counter_key, body["lease_id"], now_ms)
    assert released >= 0
    return {"released": released}, None


async def _sync(call: Call) -> Answer:
    limiter = call.request.app[RATELIMITER]
    merged = await limiter.merge_hits(call.node, call.body.get("hits", []))
    adopted = limiter.adopt_states(call.body.get("states", []))
    return {"merged": merged, "adopted": adopted}, None


async def _policies(call: Call) -> Answer:
    op = ratelimit_policies_op(call.body.get("domain", ""))
    result = _ok(await call.node.read(op, serializable=False))
    return {"policies": result["policies"], "generation": result["generation"]}, result["revision"]


async def _policy_put(call: Call) -> Answer:
    try:
        parse_policy(call.body)  # a doomed write must not cost a log entry
    except ValueError as error:
        raise Problem("invalid-argument", str(error)) from None
    result = _ok(await call.node.write(ratelimit_policy_set_op(call.body), None))
    fields = {k: result[k] for k in ("policy", "created", "generation")}
    return fields, result["revision"]


async def _policy_delete(call: Call) -> Answer:
    domain = call.request.match_info["domain"]
    result = _ok(await call.node.write(ratelimit_policy_delete_op(domain), None))
    return {k: result[k] for k in ("domain", "deleted", "generation")}, result["revision"]


async def _status(call: Call) -> Answer:
    limiter = call.request.app[RATELIMITER]
    view = limiter.ring(call.request.app, call.node)
    result = _ok(await call.node.read(ratelimit_policies_op(), serializable=True))
    ring = [{"name": name, "client_url": view.urls.get(name, "")} for name in view.ring.members]
    return {
        "self": view.self_name,
        "ring": ring,
        "ring_source": view.source,
        "counters": len(limiter.local) + len(limiter.owned) + len(limiter.replicas),
        "generation": result["generation"],
        "algorithms": [str(a) for a in Algorithm],
        "modes": [str(c) for c in Consistency],
    }, None


RATELIMIT_OPERATIONS: Final[dict[str, Callable[[Call], Awaitable[Answer]]]] = {
    "rateLimitCheck": _check,
    "rateLimitRelease": _release,
    "rateLimitSync": _sync,
    "rateLimitPolicies": _policies,
    "rateLimitPolicyPut": _policy_put,
    "rateLimitPolicyDelete": _policy_delete,
    "rateLimitStatus": _status,
}
