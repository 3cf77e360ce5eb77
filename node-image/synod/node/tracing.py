"""OpenTelemetry tracing of the HTTP API: a server span per request, W3C context in/out.

The middleware uses ``opentelemetry.trace.get_tracer("synod.node")``: with no SDK
configured that is the API's no-op tracer, so tracing costs nothing unless a process
calls :func:`configure_tracing`. Even then, incoming ``traceparent`` headers are
extracted and re-injected when forwarding, so a trace crosses untraced nodes intact.

:func:`configure_tracing` installs an SDK TracerProvider only when the standard
variables ask for one: ``OTEL_TRACES_EXPORTER`` (a comma list of ``console``, ``otlp``,
``file`` or ``none``) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (implies ``otlp``). ``file``
appends one JSON object per finished span to ``SYNOD_TRACE_FILE``, so tests can
assemble one trace from several processes; ``otlp`` needs an OTLP exporter package.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = [
    "TRACER_NAME",
    "JsonLinesSpanExporter",
    "configure_tracing",
    "route_label",
    "tracing_enabled",
    "tracing_middleware",
]

log = logging.getLogger(__name__)

TRACER_NAME = "synod.node"
UNMATCHED_ROUTE = "unmatched"
# Whether this process installed its TracerProvider (set_tracer_provider works once).
_configured: list[bool] = []
_configure_lock = threading.Lock()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_label(request: web.Request) -> str:
    """The route template of ``request`` (``/v1/kv/{key}``), or ``unmatched``: raw paths
    would give metrics and span names unbounded cardinality. Raises nothing."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    if resource is None:
        return UNMATCHED_ROUTE
    canonical = resource.canonical
    assert canonical.startswith("/")
    return canonical


def tracing_enabled() -> bool:
    """True when a real (SDK) tracer provider is installed in this process. Raises nothing."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def tracing_middleware() -> Middleware:
    """An aiohttp middleware starting a SERVER span named ``"<METHOD> <route>"`` (the
    OpenTelemetry HTTP convention) as a child of the caller's W3C trace context.

    The returned middleware raises whatever the handler raises (recorded on the span).
    """
    tracer = trace.get_tracer(TRACER_NAME)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not tracing_enabled():
            # No SDK: spans would be no-ops, but attaching contexts still costs ~10% of a
            # request. Forwarding copies the caller's traceparent by itself.
            return await handler(request)
        route = route_label(request)
        parent = propagate.extract(request.headers)
        attributes = {"http.request.method": request.method, "http.route": route,
                      "url.path": request.path}  # fmt: skip
        with tracer.start_as_current_span(
            f"{request.method} {route}", context=parent, kind=trace.SpanKind.SERVER,
            attributes=attributes,
        ) as span:  # fmt: skip
            response = await handler(request)
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(trace.StatusCode.ERROR)
            return response

    return middleware


@contextlib.contextmanager
def operation_span(method: str, route: str, headers: Mapping[str, str]) -> Iterator[Any]:
    """A SERVER span like the middleware's for one operation of a batch, child of the
    trace context in its own ``headers``; a no-op without an SDK. Raises what the block
    raises (recorded on the span)."""
    if not tracing_enabled():
        yield None
        return
    tracer = trace.get_tracer(TRACER_NAME)
    attributes: dict[str, str | bool] = {"http.request.method": method, "http.route": route,
                                         "synod.batched": True}  # fmt: skip
    with tracer.start_as_current_span(
        f"{method} {route}", context=propagate.extract(headers), kind=trace.SpanKind.SERVER,
        attributes=attributes,
    ) as span:  # fmt: skip
        yield span


# -- SDK configuration --------------------------------------------------------------------


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span as one JSON line to a file shared by processes.

    Each line is written with a single ``write`` on an ``O_APPEND`` descriptor, so lines
    of concurrent processes never interleave.
    """

    def __init__(self, path: str) -> None:
        """Open ``path`` for appending. Raises OSError if it cannot be opened."""
        assert path
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write the spans. Returns SUCCESS, or FAILURE if the file cannot be written."""
        lines = "".join(span.to_json(indent=None).replace("\n", " ") + "\n" for span in spans)
        try:
            with self._lock:
                os.write(self._fd, lines.encode("utf-8"))
        except OSError as exc:
            log.warning("cannot write spans to %s: %s", self.path, exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Close the file. Raises nothing."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Spans are written synchronously: nothing to flush. Raises nothing."""
        return timeout_millis >= 0


def _exporter_names() -> list[str]:
    """The exporters asked for by the environment ([] for none). Raises nothing."""
    raw = os.environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not raw and os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        raw = "otlp"
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    return [name for name in names if name != "none"]


def _span_processor(name: str) -> SpanProcessor | None:
    """The span processor for one exporter name, or None if unavailable. Raises nothing."""
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    if name == "console":
        return SimpleSpanProcessor(ConsoleSpanExporter())
    if name == "file":
        path = os.environ.get("SYNOD_TRACE_FILE", "")
        if not path:
            log.warning("OTEL_TRACES_EXPORTER=file needs SYNOD_TRACE_FILE; not tracing to file")
            return None
        # Synchronous, so a span is in the file when its request has been answered.
        return SimpleSpanProcessor(JsonLinesSpanExporter(path))
    if name == "otlp":
        try:
            # Imported by name: the package is optional, so mypy may not see it.
            module = importlib.import_module(
                "opentelemetry.exporter.otlp.proto.http.trace_exporter"
            )
        except ImportError:
            log.warning("OTLP exporter package not installed; not exporting spans over OTLP")
            return None
        return BatchSpanProcessor(module.OTLPSpanExporter())
    log.warning("unknown OTEL_TRACES_EXPORTER %r ignored", name)
    return None


def configure_tracing(service_name: str) -> None:
    """Install an SDK TracerProvider with the exporters the ``OTEL_*`` environment asks
    for (see the module doc); do nothing if it asks for none. Idempotent per process.

    ``OTEL_SERVICE_NAME`` wins over ``service_name``. Raises nothing (an exporter that
    cannot be set up is logged and skipped).
    """
    assert service_name
    with _configure_lock:
        if _configured:
            return
        processors = [p for p in map(_span_processor, _exporter_names()) if p is not None]
        if not processors:
            return
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
        provider = TracerProvider(resource=Resource.create(attributes))
        for processor in processors:
            provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
        _configured.append(True)
        assert _configured
