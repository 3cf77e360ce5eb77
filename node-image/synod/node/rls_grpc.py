"""The Envoy RLS v3 gRPC API: ``envoy.service.ratelimit.v3.RateLimitService/
ShouldRateLimit`` on ``--listen-rls`` (docs/ratelimit.md, "Envoy RLS").

A request is turned into the JSON body of ``/v1/ratelimit/check`` and decided by the
same code (:func:`synod.node.ratelimit_http.run_check`): the same policies, modes,
owner forwarding and metrics. Envoy's semantics: ``hits_addend`` 0 means 1; a
descriptor's own ``hits_addend`` wins; a domain without policy, or a check the service
cannot decide, answers gRPC ``UNAVAILABLE`` / ``INVALID_ARGUMENT`` / ``NOT_FOUND`` (Envoy's
``failure_mode_deny`` decides what the proxy does then). A check with ``strict`` limits
on a follower is sent on to the leader's HTTP API. ``RateLimitOverride`` (a limit
carried in the request) is not supported: the server's policy decides.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import grpc
from aiohttp import web

from synod.node.api import NodeApi, NodeError, NotLeader
from synod.node.problems import Problem
from synod.node.ratelimit_http import RATELIMITER, run_check
from synod.node.schema import validate
from synod.node.transport import split_host_port
from synod.ratelimit.algorithms import NEVER
from synod.ratelimit.rls_proto import METHOD, SERVICE, RateLimitRequest, RateLimitResponse

__all__ = ["RlsServer", "check_body"]

log = logging.getLogger(__name__)

CODE_OK: Final = 1
CODE_OVER_LIMIT: Final = 2
UNITS: Final = {"second": 1, "minute": 2, "hour": 3, "day": 4}
SHUTDOWN_GRACE_S: Final = 1.0
GRPC_STATUS: Final = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
                      413: grpc.StatusCode.INVALID_ARGUMENT,
                      429: grpc.StatusCode.RESOURCE_EXHAUSTED}  # fmt: skip


def check_body(request: Any) -> dict[str, Any]:
    """The /v1/ratelimit/check body of a RateLimitRequest. Raises nothing."""
    descriptors = []
    for descriptor in request.descriptors:
        item: dict[str, Any] = {"entries": [{"key": e.key, "value": e.value}
                                            for e in descriptor.entries]}  # fmt: skip
        if descriptor.HasField("hits_addend"):
            item["hits_addend"] = int(descriptor.hits_addend.value)
        descriptors.append(item)
    body = {"domain": request.domain, "descriptors": descriptors,
            "hits": int(request.hits_addend) or 1}  # fmt: skip
    assert body["hits"] >= 1
    return body


def response_of(fields: dict[str, Any]) -> Any:
    """The RateLimitResponse of a check's answer fields. Raises nothing."""
    response = RateLimitResponse()
    response.overall_code = CODE_OK if fields["overall_code"] == "OK" else CODE_OVER_LIMIT
    for status in fields["statuses"]:
        out = response.statuses.add()
        out.code = CODE_OK if status["code"] == "OK" else CODE_OVER_LIMIT
        limit = status.get("rate_limit")
        if limit is not None:
            out.current_limit.requests_per_unit = min(int(limit["requests_per_unit"]), 2**32 - 1)
            out.current_limit.unit = UNITS.get(limit["unit"], 0)
            out.current_limit.name = limit.get("name", "")
            out.limit_remaining = min(int(status["remaining"]), 2**32 - 1)
            out.duration_until_reset.FromMilliseconds(int(status["reset_ms"]))
        quota = status.get("quota")
        if quota is not None:  # the Quota extension: a grant the client may cache
            out.quota.requests = int(quota["requests"])
            out.quota.valid_until.FromMilliseconds(int(quota["valid_until_ms"]))
    waits = [int(s["retry_after_ms"]) for s in fields["statuses"]
             if s["code"] == "OVER_LIMIT" and "retry_after_ms" in s]  # fmt: skip
    if waits and NEVER not in waits:
        header = response.response_headers_to_add.add()
        header.key, header.value = "retry-after", str(max(1, -(-max(waits) // 1000)))
    assert len(response.statuses) == len(fields["statuses"])
    return response


class RlsServer:
    """A grpc.aio server answering ShouldRateLimit for ``app``'s node."""

    def __init__(self, app: web.Application, node: NodeApi, listen: str) -> None:
        """Raises ValueError for a bad ``listen`` address."""
        split_host_port(listen)
        self.app, self.node, self.listen = app, node, listen
        # The HTTP check's body schema, built once (not per call: it is ~7% of a
        # member's time under load when rebuilt, bench-ratelimit's profile).
        from synod.node.ratelimit_routes import ratelimit_route_specs

        spec = next(s for s in ratelimit_route_specs() if s.operation_id == "rateLimitCheck")
        assert spec.body is not None
        self._check_schema = spec.body
        self._server: Any = None
        self.port = 0

    async def start(self) -> int:
        """Bind and serve; returns the port. Raises RuntimeError when it cannot bind."""
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(
            self._should_rate_limit,
            request_deserializer=RateLimitRequest.FromString,
            response_serializer=RateLimitResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),)
        )
        self.port = server.add_insecure_port(self.listen)
        await server.start()
        self._server = server
        log.info("Envoy RLS v3 gRPC on %s", self.listen)
        assert self.port > 0
        return self.port

    async def stop(self) -> None:
        """Stop serving. Raises nothing."""
        if self._server is not None:
            await self._server.stop(SHUTDOWN_GRACE_S)
            self._server = None

    async def _should_rate_limit(self, request: Any, context: Any) -> Any:
        body = check_body(request)
        try:
            validate(body, self._check_schema)
            try:
                fields, _headers = await run_check(self.app, self.node, body)
            except NotLeader as error:
                fields = await self._on_leader(error, body)
        except Problem as problem:
            code = GRPC_STATUS.get(problem.status, grpc.StatusCode.UNAVAILABLE)
            await context.abort(code, f"{problem.code}: {problem.detail}")
        except NodeError as error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{error.code}: {error}")
        return response_of(fields)

    async def _on_leader(self, error: NotLeader, body: dict[str, Any]) -> dict[str, Any]:
        """Strict limits on a follower: the leader's HTTP API decides. Raises Problem
        no-leader when it is unknown or did not answer."""
        if not error.leader_client_url:
            raise Problem("no-leader", "no leader is known; retry shortly")
        limiter = self.app[RATELIMITER]
        answer = await limiter.forward(error.leader_client_url, body, "/v1/ratelimit/check")
        if answer is None:
            raise Problem("no-leader", "the leader did not answer")
        return answer
