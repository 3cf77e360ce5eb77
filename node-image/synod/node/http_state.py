"""The HTTP layer's bounds and per-app state, shared by the handlers and the watch stream.

``HttpLimits`` names every bound of the HTTP layer (Principle 4); ``AppState`` is what
one ``build_app`` keeps on its application under :data:`STATE`.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import Counter, Histogram

from synod.node.api import NodeApi
from synod.node.forward import HttpForwarder
from synod.node.guard import AdminBucket, HostAllowList
from synod.node.routes import RouteSpec
from synod.services import commands
from synod.services.limits import ServiceLimits

__all__ = [
    "STATE",
    "AppState",
    "HttpLimits",
    "header_for",
    "json_response",
    "jsonable",
    "server_options",
]


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Every bound of the HTTP layer (the service bounds come from ``service``)."""

    service: ServiceLimits = field(default_factory=ServiceLimits)
    # JSON escaping can double a value (and \\u escapes sextuple it), so the body bound is
    # twice the largest command rather than the command bound itself.
    request_body_bytes_max: int = 2 * commands.COMMAND_BYTES_MAX
    # A client that sends part of a request head and stops would hold its connection
    # forever (aiohttp waits ~1 h by default). Enforced by aiohttp's keep-alive timer
    # (see `server_options`), which also closes connections idle this long between
    # requests: above aiohttp clients' own 15 s idle close, so the SDK's pooled
    # connections are closed by the client first.
    header_read_timeout_ms: int = 30_000
    # A client trickling its body would hold a body-read slot forever.
    request_body_read_timeout_ms: int = 10_000
    pending_requests_max: int = 1024  # concurrent /v1 requests past their body read
    # Concurrent request body reads, counted apart (a stalled body holds one for at most
    # request_body_read_timeout_ms): bodies that never come must not starve requests
    # whose body has arrived.
    body_reads_max: int = 4096
    watch_streams_max: int = 10_000  # concurrent SSE streams (the hub has watchers_max)
    # Above the node's default request_timeout_ms (5 s), so the leader's own timeout
    # answer reaches the client rather than ours.
    forward_timeout_ms: int = 7_000
    # How long a watch waits for the node to refuse (compacted, too many watchers)
    # before it starts the stream; a refusal after that ends the stream with `cancel`.
    watch_start_wait_ms: int = 100
    # A client that does not read its stream for this long is dropped: it would
    # otherwise hold a watcher and a connection forever.
    watch_write_timeout_ms: int = 10_000
    # aiohttp tells a handler that its client left only when it writes, so one timer
    # checks the connections of all open streams this often; an idle stream whose
    # client is gone is then closed and its watcher freed.
    watch_disconnect_check_interval_ms: int = 1_000
    session_nonce_bytes: int = 16
    # Admin calls (/v1/admin/: membership, leadership transfer, snapshot, limits) one
    # node serves: a burst of this many, then one more per interval. A leadership
    # transfer costs every client an election; unbounded, 191 of them in 10 s failed
    # 45% of writes.
    admin_calls_burst_max: int = 10
    admin_call_interval_ms_min: int = 1_000

    def __post_init__(self) -> None:
        """Check the bounds. Raises ValueError naming the first bad one."""
        for name in self.__slots__:
            if name != "service" and getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.session_nonce_bytes > 64:
            raise ValueError("session_nonce_bytes must be at most 64 (session_open bound)")


def server_options(limits: HttpLimits) -> dict[str, Any]:
    """Keyword arguments for ``web.AppRunner`` (or ``TestServer``) that enforce the
    connection bounds of ``limits``. Raises nothing."""
    # aiohttp arms its keep-alive timer when a connection opens and after each answer,
    # and closes the connection when it fires while no complete request head has
    # arrived: exactly a bound on reading a head (and on idling between requests).
    return {"keepalive_timeout": limits.header_read_timeout_ms / 1000}


@dataclass(slots=True)
class AppState:
    """Per-app mutable state: the node, bounds, counters and instruments."""

    node: NodeApi
    limits: HttpLimits
    forwarder: HttpForwarder
    specs: dict[str, RouteSpec]
    openapi_bytes: bytes
    requests_total: Counter
    request_duration_seconds: Histogram
    problems_total: Counter
    host_allow: HostAllowList
    admin_bucket: AdminBucket
    pending_requests: int = 0
    body_reads: int = 0
    watch_streams: int = 0


STATE = web.AppKey("synod_state", AppState)


def jsonable(value: Any, base64: bool = False) -> Any:
    """Service results hold bytes (keys, values); JSON holds text. With ``base64`` (a
    request's `"encoding": "base64"`) bytes are answered as base64, exactly; else as
    UTF-8 text: keys and values written as text decode exactly, and bytes written as
    base64 that are not UTF-8 are replaced (U+FFFD) rather than refused, since the
    write has already happened. Raises nothing."""
    if isinstance(value, bytes):
        if base64:
            return binascii.b2a_base64(value, newline=False).decode("ascii")
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(k): jsonable(v, base64) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item, base64) for item in value]
    return value


def header_for(node: NodeApi, revision: int | None) -> dict[str, int]:
    """The node's header, with the revision of the answer when there is one. Raises
    nothing."""
    header = dict(node.header())
    if revision is not None:
        header["revision"] = revision
    assert "member_id" in header
    return header


def json_response(body: dict[str, Any], status: int = 200) -> web.Response:
    """A compact UTF-8 JSON answer. Raises TypeError if ``body`` is not JSON-able."""
    assert 200 <= status <= 599
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return web.Response(status=status, text=text, content_type="application/json")
