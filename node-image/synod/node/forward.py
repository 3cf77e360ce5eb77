"""Proxy a request once to the leader (followers forward writes and leader-only calls).

The forwarded request carries the original body, the session headers, the W3C trace
context of the current span (so the leader's span is a child of ours) and
``Synod-Forwarded: <member_id>``; a node never forwards a request that already has that
header, so a stale leader hint can cost at most one hop and never loops. The leader's
answer (success or problem document) is streamed back unchanged.
"""

from __future__ import annotations

import logging
import ssl

import aiohttp
from aiohttp import web
from opentelemetry import propagate

from synod.node.problems import Problem

__all__ = ["FORWARDED_HEADER", "PASSED_HEADERS", "HttpForwarder", "StreamAborted"]

log = logging.getLogger(__name__)

FORWARDED_HEADER = "Synod-Forwarded"
# End-to-end headers the leader needs; hop-by-hop ones (Connection, Host...) stay here.
PASSED_HEADERS = ("Content-Type", "Accept", "Synod-Client-Id", "Synod-Seq", "Synod-Ack-Seq")
_TRACE_HEADERS = ("traceparent", "tracestate")
_ANSWER_HEADERS = ("Content-Type", "Content-Encoding", "Allow")
# Bytes copied per read of the leader's answer: bounds the memory of one forward.
FORWARD_CHUNK_BYTES = 64 * 1024


class StreamAborted(Exception):
    """The answer had started when the leader went away: the connection must be cut,
    since a problem document can no longer be sent."""


class HttpForwarder:
    """Forwards requests to a leader over one shared aiohttp ClientSession."""

    def __init__(self, timeout_ms: int, ssl_context: ssl.SSLContext | None = None) -> None:
        """``timeout_ms`` bounds a whole forward (connect, answer, body); ``ssl_context``
        verifies an https leader (and presents this node's certificate). Raises nothing."""
        assert timeout_ms > 0
        self.timeout_ms = timeout_ms
        self.ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the client session (call on app startup). Raises nothing."""
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.timeout_ms / 1000)
            # No automatic redirects or cookies: the proxy must be transparent.
            connector = aiohttp.TCPConnector(ssl=self.ssl_context or True)
            self._session = aiohttp.ClientSession(
                timeout=timeout, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
                connector=connector,
            )  # fmt: skip
        assert self._session is not None

    async def close(self) -> None:
        """Close the client session (call on app cleanup). Raises nothing."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        assert self._session is None

    def headers_for(self, request: web.Request, member_id: int) -> dict[str, str]:
        """The headers of the forwarded request. Raises nothing."""
        headers = {
            name: request.headers[name] for name in PASSED_HEADERS if name in request.headers
        }
        propagate.inject(headers)  # the current (server) span becomes the leader's parent
        for name in _TRACE_HEADERS:
            # No propagator configured (OTEL_PROPAGATORS=none): still pass the caller's.
            if name not in headers and name in request.headers:
                headers[name] = request.headers[name]
        headers[FORWARDED_HEADER] = str(member_id)
        assert FORWARDED_HEADER in headers
        return headers

    async def forward(
        self, request: web.Request, body: bytes, leader_url: str, member_id: int
    ) -> web.StreamResponse:
        """Send ``request`` (with ``body``) to ``leader_url`` and stream the answer back.

        Raises, before the answer starts, Problem ``no-leader`` when the connection to
        the leader could not be made (nothing was sent: definitely not applied),
        ``outcome-unknown`` when the request was (maybe partly) sent and the connection
        was then lost, and ``timeout`` when no answer came in ``timeout_ms`` (both
        indeterminate: retry with the same session seq to learn the outcome);
        StreamAborted if it fails after the answer started.
        """
        assert leader_url and self._session is not None, "start() the forwarder first"
        url = leader_url.rstrip("/") + request.raw_path
        headers = self.headers_for(request, member_id)
        try:
            async with self._session.request(
                request.method, url, data=body or None, headers=headers, allow_redirects=False
            ) as upstream:
                return await self._relay(request, upstream)
        except TimeoutError:
            raise Problem("timeout", f"the leader at {leader_url} did not answer in time; "
                          "retry with the same session seq to learn the outcome",
                          timeout_ms=self.timeout_ms) from None  # fmt: skip
        except aiohttp.ClientConnectorError as exc:
            # No connection was made, so no byte of the request left this node.
            raise Problem("no-leader", f"the leader at {leader_url} is unreachable: {exc}",
                          leader_client_url=leader_url) from None  # fmt: skip
        except aiohttp.ClientError as exc:
            # The connection broke after (part of) the request went out: the leader may
            # have applied it. A pooled connection the leader had closed lands here too;
            # that is rare and "unknown" is still true of it.
            raise Problem("outcome-unknown", f"the connection to the leader at {leader_url} "
                          f"was lost mid-request ({type(exc).__name__}); the write may have "
                          "been applied: retry with the same session seq to learn it",
                          leader_client_url=leader_url) from None  # fmt: skip

    async def _relay(
        self, request: web.Request, upstream: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        """Copy status, content headers and body. Raises StreamAborted mid-answer."""
        answer = web.StreamResponse(status=upstream.status)
        for name in _ANSWER_HEADERS:
            if name in upstream.headers:
                answer.headers[name] = upstream.headers[name]
        if upstream.content_length is not None:
            answer.content_length = upstream.content_length
        await answer.prepare(request)
        try:
            async for chunk in upstream.content.iter_chunked(FORWARD_CHUNK_BYTES):
                await answer.write(chunk)
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            log.warning("forwarded answer cut short: %s", exc)
            raise StreamAborted(str(exc)) from exc
        await answer.write_eof()
        assert answer.prepared
        return answer
