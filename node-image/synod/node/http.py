"""The client HTTP API (docs/api.md) on top of any :class:`~synod.node.api.NodeApi`.

``build_app(node)`` serves every route of :mod:`synod.node.routes`. A request goes
through, outermost first: a tracing span, HTTP metrics and the problem renderer (every
failure becomes an RFC 9457 document); then its handler reads the body within
``request_body_bytes_max`` and ``request_body_read_timeout_ms`` (counted against
``body_reads_max``), takes one of ``pending_requests_max`` slots, parses strict JSON,
validates it against the route's schema, converts JSON strings to the services' bytes,
builds the op with :mod:`synod.services.commands` and calls the node. Bad input is
refused before the node is called, so it changes nothing. A node that is not the
leader raises NotLeader and the request is forwarded once to the leader.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from synod.codes import is_definite
from synod.gossip.core import GossipCore
from synod.node import batch_http, ids_http, ratelimit_http, watch_stream
from synod.node.api import NodeApi, NodeError, NotLeader, Session
from synod.node.forward import FORWARDED_HEADER, HttpForwarder, StreamAborted
from synod.node.gossip_node import GOSSIP, members_answer, status_summary
from synod.node.guard import (
    ADMIN_PATH_PREFIX,
    LOCAL_NAMES,
    AdminBucket,
    HostAllowList,
    lease_id_pick,
    require_json,
)
from synod.node.http_state import (
    STATE,
    AppState,
    HttpLimits,
    header_for,
    json_response,
    jsonable,
    server_options,
)
from synod.node.inputs import (
    SESSION_HEADERS,
    client_url_from_json,
    delete_from_json,
    is_base64,
    parse_query,
    parse_session,
    parse_session_values,
    peer_address_from_json,
    put_from_json,
    range_from_json,
    read_body,
    txn_from_json,
)
from synod.node.locks_http import LOCK_OPERATIONS
from synod.node.openapi import openapi_document
from synod.node.problems import (
    PROBLEM_CODE,
    Problem,
    problem_from_node_error,
    problem_from_result_error,
    problem_from_service_error,
)
from synod.node.routes import LEASES_LISTED_MAX, PROMETHEUS_TEXT, RouteSpec, route_specs
from synod.node.schema import parse_json, validate
from synod.node.tracing import operation_span, route_label, tracing_middleware
from synod.services import commands
from synod.services.errors import ServiceError
from synod.services.kv import parse_request, parse_txn
from synod.services.limits import ServiceLimits
from synod.storage.snapfile import decode_snapshot_content

__all__ = [
    "SESSION_HEADERS",
    "AppState",
    "HttpLimits",
    "build_app",
    "jsonable",
    "register_metrics",
    "server_options",
]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Answer = tuple[dict[str, Any], int | None]  # (fields besides header, header revision)


# -- conversion results -> JSON ---------------------------------------------------------


def _service_ok(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` if it succeeded. Raises the Problem of a service error result."""
    if result.get("ok") is not True:
        error = result.get("error")
        if not isinstance(error, dict):
            raise Problem("internal", "node answered neither ok nor a service error")
        raise problem_from_result_error(error)
    assert isinstance(result.get("revision", 0), int)
    return result


def _fields(result: dict[str, Any], *names: str, base64: bool = False) -> Answer:
    ok = _service_ok(result)
    return {name: jsonable(ok[name], base64) for name in names}, ok.get("revision")


def _txn_fields(result: dict[str, Any], base64: bool = False) -> Answer:
    ok = _service_ok(result)
    responses = []
    for response in ok["responses"]:
        kind = response["kind"]
        fields = {k: v for k, v in response.items() if k != "kind"}
        responses.append({kind: jsonable(fields, base64)})
    return {"succeeded": ok["succeeded"], "responses": responses}, ok.get("revision")


# -- handlers -------------------------------------------------------------------------------
# Each operation below takes a validated Call and returns (fields, header revision). Each
# may raise Problem or ServiceError (input the services refuse; nothing was written),
# NotLeader (forwarded by _json_handler) and the other NodeErrors of the node call; the
# problem middleware renders all of them.


@dataclass(frozen=True, slots=True)
class Call:
    """One validated request on its way to the node."""

    state: AppState
    request: web.Request
    body: dict[str, Any]  # the validated JSON body, or the validated query
    session: Session | None
    response_headers: dict[str, str] = field(default_factory=dict)  # set by the operation

    @property
    def node(self) -> NodeApi:
        """The node serving this app. Raises nothing."""
        return self.state.node


def _checked(op: dict[str, Any], limits: ServiceLimits) -> dict[str, Any]:
    """``op`` after the state machine's own parser accepted it: a doomed write must not
    cost a log entry. Raises InvalidArgument, TooLarge (as the apply would)."""
    if op["kind"] == "txn":
        parse_txn({k: v for k, v in op.items() if k != "fences"}, limits)
    else:
        parse_request(op, limits)
    return op


async def _kv_put(call: Call) -> Answer:
    op = _checked(put_from_json(call.body), call.state.limits.service)
    return _fields(await call.node.write(op, call.session), "prev_kv",
                   base64=is_base64(call.body))  # fmt: skip


async def _kv_range(call: Call) -> Answer:
    result = await call.node.read(range_from_json(call.body),
                                  serializable=call.body.get("serializable", False))  # fmt: skip
    return _fields(result, "kvs", "more", "count", base64=is_base64(call.body))


async def _kv_get(call: Call) -> Answer:
    key = call.request.match_info["key"]
    validate(key, call.state.specs["kvGet"].path_params["key"], "key")
    op = commands.range_op(key.encode("utf-8"), revision=call.body.get("revision", 0))
    result = await call.node.read(op, serializable=call.body.get("serializable", False))
    fields, revision = _fields(result, "kvs", "more", "count")
    if not fields["kvs"]:
        raise Problem("not-found", f"key {key!r} does not exist", key=key, revision=revision)
    return fields, revision


async def _kv_delete(call: Call) -> Answer:
    op = _checked(delete_from_json(call.body), call.state.limits.service)
    result = await call.node.write(op, call.session)
    return _fields(result, "deleted", "prev_kvs", base64=is_base64(call.body))


async def _kv_txn(call: Call) -> Answer:
    op = _checked(txn_from_json(call.body), call.state.limits.service)
    return _txn_fields(await call.node.write(op, call.session), is_base64(call.body))


async def _kv_compact(call: Call) -> Answer:
    result = await call.node.write(commands.compact_op(call.body["revision"]), call.session)
    return _fields(result, "compact_revision")


async def _lease_grant(call: Call) -> Answer:
    lease_id = call.body.get("id", 0)
    op = commands.lease_grant_op(call.body["ttl_ms"], lease_id, 0 if lease_id else lease_id_pick())
    return _fields(await call.node.write(op, call.session), "id", "ttl_ms")


async def _lease_revoke(call: Call) -> Answer:
    op = commands.lease_revoke_op(call.body["id"])
    return _fields(await call.node.write(op, call.session), "id", "keys_deleted")


async def _lease_keepalive(call: Call) -> Answer:
    return _fields(await call.node.lease_keepalive(call.body["id"]), "id", "ttl_ms")


async def _lease_timetolive(call: Call) -> Answer:
    result = await call.node.lease_timetolive(call.body["id"])
    return _fields(result, "id", "ttl_ms", "granted_ttl_ms", "keys")


async def _lease_list(call: Call) -> Answer:
    result = await call.node.lease_list(call.body.get("limit", LEASES_LISTED_MAX))
    return _fields(result, "leases", "count", "more")


async def _session_open(call: Call) -> Answer:
    # The nonce makes this entry unique so the node can recognise its own open.
    nonce = os.urandom(call.state.limits.session_nonce_bytes)
    return _fields(await call.node.write(commands.session_open_op(nonce), None), "client_id")


async def _session_close(call: Call) -> Answer:
    # session_close ignores the seq (closing is not de-duplicated: a repeated close
    # answers session-expired), but the envelope of a session command needs one >= 1.
    session = Session(call.body["client_id"], seq=1, ack_seq=0)
    fields, revision = _fields(await call.node.write(commands.session_close_op(), session))
    return {**fields, "client_id": call.body["client_id"]}, revision


def _node_answer(result: dict[str, Any]) -> Answer:
    """An admin answer: the node's document minus the service envelope."""
    if result.get("ok") is False:
        _service_ok(result)
    return {k: jsonable(v) for k, v in result.items() if k not in ("ok", "revision")}, None


async def _admin_add_learner(call: Call) -> Answer:
    # Checked here, before the node: a bad address in the membership would make the
    # leader dial it forever.
    peer = peer_address_from_json(call.body["peer_url"])
    client = client_url_from_json(call.body.get("client_url", ""))
    return _node_answer(await call.node.admin_add_learner(call.body["id"], peer, client))


async def _admin_promote(call: Call) -> Answer:
    return _node_answer(await call.node.admin_promote(call.body["id"]))


async def _admin_remove(call: Call) -> Answer:
    return _node_answer(await call.node.admin_remove(call.body["id"]))


async def _admin_transfer(call: Call) -> Answer:
    return _node_answer(await call.node.admin_transfer_leadership(call.body.get("to")))


async def _admin_set_limits(call: Call) -> Answer:
    result = await call.node.write(commands.limits_set_op(call.body), None)
    return _fields(result, "limits")


async def _admin_snapshot(call: Call) -> Answer:
    return _node_answer(await call.node.admin_snapshot())


async def _cluster_status(call: Call) -> Answer:
    fields = {k: jsonable(v) for k, v in call.node.status().items() if k != "header"}
    fields["gossip"] = status_summary(call.request.app.get(GOSSIP))
    return fields, None


async def _cluster_members(call: Call) -> Answer:
    return members_answer(call.request.app.get(GOSSIP)), None


_JSON_OPERATIONS: dict[str, Callable[[Call], Awaitable[Answer]]] = {
    "kvPut": _kv_put,
    "kvRange": _kv_range,
    "kvGet": _kv_get,
    "kvDelete": _kv_delete,
    "kvTxn": _kv_txn,
    "kvCompact": _kv_compact,
    "leaseGrant": _lease_grant,
    "leaseRevoke": _lease_revoke,
    "leaseKeepalive": _lease_keepalive,
    "leaseTimeToLive": _lease_timetolive,
    "leaseList": _lease_list,
    "sessionOpen": _session_open,
    "sessionClose": _session_close,
    "adminAddLearner": _admin_add_learner,
    "adminPromote": _admin_promote,
    "adminRemove": _admin_remove,
    "adminTransferLeadership": _admin_transfer,
    "adminSetLimits": _admin_set_limits,
    "adminSnapshot": _admin_snapshot,
    "clusterStatus": _cluster_status,
    "clusterMembers": _cluster_members,
    **LOCK_OPERATIONS,
    **ratelimit_http.RATELIMIT_OPERATIONS,
}


def _ids_operation(operation: ids_http.IdsOperation) -> Callable[[Call], Awaitable[Answer]]:
    async def run(call: Call) -> Answer:
        return await operation(call.node, call.request, call.body, call.session)

    return run


_JSON_OPERATIONS.update({op_id: _ids_operation(op) for op_id, op in ids_http.OPERATIONS.items()})


async def _forward(call: Call, error: NotLeader, body: bytes) -> web.StreamResponse:
    """Proxy once to the leader. Raises Problem not-leader (already forwarded once),
    no-leader (no leader address), timeout; StreamAborted."""
    leader_id, leader_url = error.leader_id, error.leader_client_url
    if FORWARDED_HEADER in call.request.headers:
        # The node that sent this thought we lead: its view is stale. One hop only.
        raise Problem("not-leader", str(error), leader_id=leader_id, leader_client_url=leader_url)
    if not leader_url:
        raise Problem(
            "no-leader",
            "no leader is known; retry shortly",
            leader_id=leader_id,
            leader_client_url=leader_url,
        )
    member_id = call.state.node.member_id
    return await call.state.forwarder.forward(call.request, body, leader_url, member_id)


def _json_handler(spec: RouteSpec) -> Handler:
    """The handler of a JSON route: input, node call, forwarding, answer."""
    operation = _JSON_OPERATIONS[spec.operation_id]

    async def handler(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        raw = b""
        if spec.query is None and request.query:
            raise Problem("invalid-argument", f"{spec.route_id} takes no query parameters")
        if spec.body is not None:
            # Before the body is read: a page of another origin can POST text/plain or
            # a form without a preflight; JSON it cannot (docs/security.md).
            require_json(request.headers.get("Content-Type"))
            # Counted apart from the pending requests: clients that stall their bodies
            # must not starve requests that are ready for the node.
            with _slot(state, "body_reads", state.limits.body_reads_max, "body_reads_max"):
                raw = await read_body(request, state.limits.request_body_bytes_max,
                                      state.limits.request_body_read_timeout_ms)  # fmt: skip
        with _slot(state, "pending_requests", state.limits.pending_requests_max,
                   "pending_requests_max"):  # fmt: skip
            if spec.body is not None:
                # An empty body is the empty object: POST /v1/session/open needs no body.
                body = parse_json(raw) if raw.strip() else {}
                validate(body, spec.body)
            else:
                body = parse_query(request, spec) if spec.query is not None else {}
            assert isinstance(body, dict)
            session = parse_session(request) if spec.session else None
            call = Call(state, request, body, session)
            admin = spec.path.startswith(ADMIN_PATH_PREFIX)
            if admin:
                state.admin_bucket.take()
            try:
                fields, revision = await operation(call)
            except NotLeader as error:
                if admin:  # the leader counts it
                    state.admin_bucket.refund()
                return await _forward(call, error, raw)
            except Exception as error:
                code = getattr(error, "code", None)
                if admin and isinstance(code, str) and is_definite(code):
                    state.admin_bucket.refund()  # refused: surely nothing changed
                raise
            if admin and fields.get("changed") is False:
                state.admin_bucket.refund()
            response = json_response({"header": header_for(state.node, revision), **fields})
            response.headers.update(call.response_headers)
            return response

    return handler


async def _run_batched(
    request: web.Request, spec: RouteSpec, body: Any, headers: Mapping[str, str]
) -> tuple[int, Any]:
    """One operation of a `/v1/batch`: what its own request would answer, except that
    NotLeader is answered (not-leader / no-leader), not forwarded. Counted in the HTTP
    metrics under its own route. Raises nothing but cancellation."""
    state = request.app[STATE]
    started = time.perf_counter()
    try:
        with operation_span("POST", spec.path, headers):
            status, document = 200, await _batched_answer(state, request, spec, body, headers)
    except Exception as error:
        problem = problem_of(error, "POST", spec.path)
        status, document = problem.status, problem.to_dict()
        state.problems_total.labels(spec.path, problem.code).inc()
    state.requests_total.labels(spec.path, "POST", str(status)).inc()
    state.request_duration_seconds.labels(spec.path).observe(time.perf_counter() - started)
    assert 200 <= status <= 599
    return status, document


async def _batched_answer(
    state: AppState, request: web.Request, spec: RouteSpec, body: Any,
    headers: Mapping[str, str],
) -> dict[str, Any]:  # fmt: skip
    """Raises Problem, NodeError, ServiceError as the route's own handler would."""
    with _slot(state, "pending_requests", state.limits.pending_requests_max,
               "pending_requests_max"):  # fmt: skip
        assert isinstance(body, dict), "validated by the batch's schema"
        session = None
        if spec.session:
            session = parse_session_values({name: [headers[name]] if name in headers else []
                                            for name in SESSION_HEADERS})  # fmt: skip
        try:
            fields, revision = await _JSON_OPERATIONS[spec.operation_id](
                Call(state, request, body, session)
            )
        except NotLeader as error:
            code = "not-leader" if error.leader_client_url else "no-leader"
            raise Problem(code, str(error), leader_id=error.leader_id,
                          leader_client_url=error.leader_client_url) from None  # fmt: skip
        return {"header": header_for(state.node, revision), **fields}


async def _read_batch_body(request: web.Request) -> bytes:
    """A batch's body, read as any route's (bounded in size, time and concurrent
    reads). Raises Problem too-large, request-timeout, limit-exceeded."""
    state = request.app[STATE]
    limits = state.limits
    with _slot(state, "body_reads", limits.body_reads_max, "body_reads_max"):
        return await read_body(request, limits.request_body_bytes_max,
                               limits.request_body_read_timeout_ms)  # fmt: skip


@contextlib.contextmanager
def _slot(state: AppState, counter: str, bound: int, limit: str) -> Iterator[None]:
    """Hold one of ``bound`` slots counted in ``state.<counter>`` (pending_requests or
    body_reads). Raises Problem limit-exceeded when they are all taken."""
    taken = getattr(state, counter)
    if taken >= bound:
        raise Problem("limit-exceeded", f"{limit}={bound} requests in flight",
                      limit=limit, max=bound)  # fmt: skip
    setattr(state, counter, taken + 1)
    try:
        yield
    finally:
        setattr(state, counter, getattr(state, counter) - 1)
        assert getattr(state, counter) >= 0


async def _healthz(request: web.Request) -> web.StreamResponse:
    healthy, reason = request.app[STATE].node.health()
    if not healthy:
        raise Problem("unhealthy", reason, reason=reason)
    return json_response({"status": "ok", "reason": reason})


async def _readyz(request: web.Request) -> web.StreamResponse:
    ready, reason = request.app[STATE].node.is_ready()
    if not ready:
        raise Problem("not-ready", reason or "not ready", reason=reason)
    return json_response({"ready": True, "reason": reason})


async def _metrics(request: web.Request) -> web.StreamResponse:
    body = request.app[STATE].node.metrics()
    return web.Response(body=body, headers={"Content-Type": PROMETHEUS_TEXT})


async def _openapi(request: web.Request) -> web.StreamResponse:
    return web.Response(body=request.app[STATE].openapi_bytes, content_type="application/json")


async def _snapshot_file(request: web.Request) -> web.StreamResponse:
    content = await request.app[STATE].node.snapshot_file()
    if content is None:
        raise Problem("not-found", "this member holds no snapshot yet: take one with "
                      "POST /v1/admin/snapshot (`synod snapshot`)")  # fmt: skip
    snapshot = decode_snapshot_content("answer", content)  # verifies what goes out
    headers = {"Synod-Snapshot-Index": str(snapshot.meta.index),
               "Synod-Snapshot-Term": str(snapshot.meta.term)}  # fmt: skip
    return web.Response(body=content, content_type="application/octet-stream", headers=headers)


_OTHER_HANDLERS: dict[str, Handler] = {
    "snapshotFile": _snapshot_file,
    "healthz": _healthz,
    "readyz": _readyz,
    "metrics": _metrics,
    "openapi": _openapi,
    "watch": watch_stream.handle_watch,
}


# -- middlewares ----------------------------------------------------------------------------


@web.middleware
async def host_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a Host outside the allow-list (DNS rebinding, docs/security.md). Raises
    Problem host-not-allowed, and what the handler raises."""
    request.app[STATE].host_allow.check(request.path, request.headers.get("Host"))
    return await handler(request)


def _problem_of_http_exception(exc: web.HTTPException) -> Problem:
    if exc.status == 404:
        return Problem("not-found", "no such route")
    if exc.status == 405:
        return Problem(
            "method-not-allowed", f"method not allowed; allowed: {exc.headers.get('Allow', '')}"
        )
    if exc.status == 413:
        return Problem("too-large", exc.reason or "request too large")
    code = "invalid-argument" if 400 <= exc.status < 500 else "internal"
    return Problem(code, exc.reason or code)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure as a problem document. Raises StreamAborted (the answer
    had started) and cancellation; nothing else."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        allow = exc.headers.get("Allow")
        return _problem_of_http_exception(exc).response({"Allow": allow} if allow else None)
    except StreamAborted:
        raise
    except Exception as error:
        return problem_of(error, request.method, request.path).response()


def problem_of(error: Exception, method: str, path: str) -> Problem:
    """The problem document of a failed operation (an unexpected error is logged and
    answered ``internal``). Raises nothing."""
    if isinstance(error, Problem):
        return error
    if isinstance(error, NodeError):
        return problem_from_node_error(error)
    if isinstance(error, ServiceError):
        return problem_from_service_error(error)
    log.error("internal error serving %s %s", method, path, exc_info=error)
    return Problem("internal", "internal error; see the node's log")


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count requests by route template, method and status; time them by route.
    Raises what the handler raises (counted as code 500, or 499 if aborted)."""
    state = request.app[STATE]
    route = route_label(request)
    started = time.perf_counter()
    code = "500"
    try:
        response = await handler(request)
        code = str(response.status)
        problem = response.get(PROBLEM_CODE)
        if problem is not None:
            state.problems_total.labels(route, problem).inc()
        return response
    except StreamAborted:
        code = "499"
        raise
    finally:
        state.requests_total.labels(route, request.method, code).inc()
        state.request_duration_seconds.labels(route).observe(time.perf_counter() - started)


# -- the app ----------------------------------------------------------------------------------


# One set of instruments per registry: a node may rebuild its app (tests, restarts of
# the listener) without registering the metrics twice.
_INSTRUMENTS: weakref.WeakKeyDictionary[CollectorRegistry, tuple[Counter, Histogram, Counter]] = (
    weakref.WeakKeyDictionary()
)


def _instruments(registry: CollectorRegistry) -> tuple[Counter, Histogram, Counter]:
    """The HTTP counters of ``registry``, registered on first use. Raises ValueError if
    another owner registered metrics of the same names."""
    found = _INSTRUMENTS.get(registry)
    if found is not None:
        return found
    total = Counter("synod_http_requests_total", "HTTP requests answered",
                    ("route", "method", "code"), registry=registry)  # fmt: skip
    duration = Histogram("synod_http_request_duration_seconds", "HTTP request duration",
                         ("route",), registry=registry)  # fmt: skip
    # Problem answers by their stable code (synod/codes.py): alerts pick the codes that
    # mean trouble (fencing-token-stale, lease-not-found on keepalive) by name rather
    # than by status, which many benign answers share.
    problems = Counter("synod_http_problems_total", "Problem answers by route and code",
                       ("route", "code"), registry=registry)  # fmt: skip
    _INSTRUMENTS[registry] = (total, duration, problems)
    return total, duration, problems


def register_metrics(registry: CollectorRegistry) -> None:
    """Register the HTTP layer's metrics on ``registry`` (idempotent; the metric catalog
    of synod.observability uses it). Raises ValueError on a name clash."""
    instruments = _instruments(registry)
    assert len(instruments) == 3 and _INSTRUMENTS[registry] == instruments


def build_app(
    node: NodeApi,
    *,
    limits: HttpLimits | None = None,
    forwarder: HttpForwarder | None = None,
    registry: CollectorRegistry | None = None,
    gossip: GossipCore | None = None,
    host_allow: HostAllowList | None = None,
    clock_ms: Callable[[], float] | None = None,
) -> web.Application:
    """The aiohttp application serving docs/api.md for ``node``.

    ``registry`` receives the HTTP metrics (the node renders it in ``metrics()``; a
    private one is made if None; apps built on one registry share the instruments).
    ``forwarder`` defaults to an HttpForwarder bounded by ``limits.forward_timeout_ms``.
    ``gossip`` is the node's gossip core (`/v1/cluster/members`); None when it is off.
    ``host_allow`` is the Host allow-list (None: localhost and IP literals only).
    ``clock_ms`` is the monotonic clock of the admin call bound (tests pass their own).
    Raises ValueError if something else registered metrics of the same names.
    """
    limits = limits or HttpLimits()
    specs = route_specs(limits.service)
    assert {s.operation_id for s in specs} == (
        set(_JSON_OPERATIONS) | set(_OTHER_HANDLERS) | {"batch"}
    )
    total, duration, problems = _instruments(
        registry if registry is not None else CollectorRegistry()
    )
    document = openapi_document(specs)
    state = AppState(
        node=node, limits=limits, forwarder=forwarder or HttpForwarder(limits.forward_timeout_ms),
        specs={spec.operation_id: spec for spec in specs},
        openapi_bytes=json.dumps(document, separators=(",", ":")).encode("utf-8"),
        requests_total=total, request_duration_seconds=duration, problems_total=problems,
        host_allow=host_allow or HostAllowList.parse(LOCAL_NAMES),
        admin_bucket=AdminBucket(limits.admin_calls_burst_max, limits.admin_call_interval_ms_min,
                                 clock_ms or _monotonic_ms),
    )  # fmt: skip
    app = web.Application(
        middlewares=[tracing_middleware(), metrics_middleware, problem_middleware,
                     host_middleware],
        # Bodies are read through read_body's own bound; this only guards request.read().
        client_max_size=limits.request_body_bytes_max,
    )  # fmt: skip
    app[STATE] = state
    if gossip is not None:
        app[GOSSIP] = gossip
    others = {
        **_OTHER_HANDLERS,
        "batch": batch_http.batch_handler(list(specs), _run_batched, _read_batch_body),
    }
    for spec in specs:
        handler = others.get(spec.operation_id) or _json_handler(spec)
        path = spec.path.replace("{key}", "{key:.+}")  # keys may contain "/"
        app.router.add_route(spec.method, path, handler, name=spec.operation_id)
    app.on_startup.append(_start_forwarder)
    app.on_cleanup.append(_close_forwarder)
    watch_stream.install(app)
    ids_http.install(app, registry if registry is not None else CollectorRegistry())
    ratelimit_http.install(app, registry if registry is not None else CollectorRegistry())
    assert len(app.router.routes()) >= len(specs)
    return app


def _monotonic_ms() -> float:
    return time.monotonic() * 1000


async def _start_forwarder(app: web.Application) -> None:
    await app[STATE].forwarder.start()


async def _close_forwarder(app: web.Application) -> None:
    await app[STATE].forwarder.close()
