"""Metrics and OpenTelemetry spans per etcd gRPC method (a grpcio server interceptor).

Unary calls get a SERVER span named after the method (``/etcdserverpb.KV/Put``), a
duration observation and a count by status code; streams (Watch, LeaseKeepAlive) are
counted when they open, since their length says nothing about the server. The method
label comes from the registered services only, so its cardinality is bounded.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Histogram

from synod.node.tracing import TRACER_NAME, tracing_enabled

__all__ = ["ObserveInterceptor"]

tracer = trace.get_tracer(TRACER_NAME)
UNKNOWN_METHOD = "unknown"
_INSTRUMENTS: dict[CollectorRegistry, tuple[Counter, Histogram]] = {}


def _instruments(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    """The etcd API instruments of ``registry``, registered on first use."""
    found = _INSTRUMENTS.get(registry)
    if found is None:
        total = Counter("synod_etcd_requests_total", "etcd gRPC calls answered (streams: "
                        "opened)", ("method", "code"), registry=registry)  # fmt: skip
        duration = Histogram("synod_etcd_request_duration_seconds", "etcd unary gRPC call "
                             "duration", ("method",), registry=registry)  # fmt: skip
        found = _INSTRUMENTS[registry] = (total, duration)
    assert len(found) == 2
    return found


class ObserveInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    """Counts, times and traces the calls of the methods in ``methods``."""

    def __init__(self, registry: CollectorRegistry, methods: frozenset[str]) -> None:
        """Raises ValueError if another owner registered the metric names."""
        self.total, self.duration = _instruments(registry)
        self.methods = methods
        assert all(method.startswith("/") for method in methods)

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        details: Any,
    ) -> Any:
        handler = await continuation(details)
        method = details.method if details.method in self.methods else UNKNOWN_METHOD
        if handler is None:
            return None
        if handler.unary_unary is None:  # a stream: counted as it opens
            self.total.labels(method, "STREAM").inc()
            return handler
        inner = handler.unary_unary

        async def observed(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            code = "OK"
            try:
                if not tracing_enabled():
                    return await inner(request, context)
                with tracer.start_as_current_span(method, kind=trace.SpanKind.SERVER) as span:
                    span.set_attribute("rpc.system", "grpc")
                    return await inner(request, context)
            except BaseException:
                status = context.code()
                code = status.name if isinstance(status, grpc.StatusCode) else "UNKNOWN"
                raise
            finally:
                self.total.labels(method, code).inc()
                self.duration.labels(method).observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
