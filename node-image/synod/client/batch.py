"""Coalescing concurrent calls into `POST /v1/batch` (docs/api.md).

The calls a client's tasks start in the same event-loop turn for the same node are sent
as one request; the node runs them concurrently and streams each answer back as soon as
it is ready (NDJSON), so a long-poll among them holds nothing up. Each call keeps its
own headers (its session seq, its trace context) and gets exactly the (status,
document) its own request would have got, so the client's retry logic above is
unchanged. One call alone is sent as itself: nothing changes at low concurrency.

Requests that finish together come back together, so tasks that run request after
request (lock acquire, release, acquire...) keep meeting in the same turn: the batches
form by themselves under load.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from synod.client.errors import ProtocolError

__all__ = ["BATCHABLE_PREFIXES", "BATCH_OPS_MAX", "Batcher"]

# The node's bound on one batch (synod.node.routes.BATCH_OPS_MAX).
BATCH_OPS_MAX = 64
# Routes the node accepts in a batch: POST, JSON body, no path parameters.
BATCHABLE_PREFIXES = ("/v1/kv/", "/v1/lease/", "/v1/locks/", "/v1/election/")
OP_HEADERS = ("Synod-Client-Id", "Synod-Seq", "Synod-Ack-Seq", "traceparent", "tracestate")
# Bytes of the operations in one batch: well under the node's request_body_bytes_max,
# so a batch is never refused as too large when its operations would not be.
BATCH_BYTES_MAX = 256 * 1024
# Batch answers that mean nothing ran: invalid-argument, not-found (no such route: a
# node from before /v1/batch), too-large.
_RUN_NOTHING = (400, 404, 413)
_JSON = {"Content-Type": "application/json"}
# Lines of one batch answer: one per operation, plus slack for a misbehaving server.
_LINES_MAX = BATCH_OPS_MAX + 1

Reply = tuple[int, dict[str, Any]]
# One call sent as its own request: (url, path, body, headers, timeout_s) -> reply.
Single = Callable[[str, str, dict[str, Any] | None, dict[str, str], float], Awaitable[Reply]]


@dataclass(slots=True)
class _Call:
    path: str
    body: dict[str, Any] | None
    headers: dict[str, str]
    timeout_s: float
    reply: asyncio.Future[Reply]


class Batcher:
    """Per client: queues POSTs by node URL and flushes each queue on the next loop turn."""

    def __init__(self, session: Callable[[], aiohttp.ClientSession], single: Single) -> None:
        self._session = session
        self._single = single
        self._queues: dict[str, list[_Call]] = {}
        self._unsupported: set[str] = set()  # nodes that answered 404 to /v1/batch
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches_sent = 0  # requests that carried more than one call

    @staticmethod
    def accepts(method: str, path: str, params: dict[str, str] | None) -> bool:
        """True if the node would run this call inside a batch. Raises nothing."""
        return method == "POST" and params is None and path.startswith(BATCHABLE_PREFIXES)

    async def send(
        self, url: str, path: str, body: dict[str, Any] | None, headers: dict[str, str],
        timeout_s: float,
    ) -> Reply:  # fmt: skip
        """The reply to this call, sent with the others of this loop turn to ``url``.

        Raises aiohttp.ClientError and TimeoutError like a request of its own (the batch
        was lost: a write's outcome is then unknown, as for any lost request)."""
        assert timeout_s > 0 and self.accepts("POST", path, None)
        loop = asyncio.get_running_loop()
        call = _Call(path, body, headers, timeout_s, loop.create_future())
        queue = self._queues.get(url)
        if queue is None:
            queue = self._queues[url] = []
            loop.call_soon(self._flush, url)
        queue.append(call)
        return await call.reply

    def _flush(self, url: str) -> None:
        calls = self._queues.pop(url, [])
        # A lone call is sent as itself, without encoding it for a batch first.
        chunks = [[(calls[0], b"")]] if len(calls) == 1 else _chunks(calls)
        for chunk in chunks:  # bound: len(calls) chunks at most
            task = asyncio.ensure_future(self._send(url, chunk))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, url: str, chunk: list[tuple[_Call, bytes]]) -> None:
        """Send ``chunk`` and settle every reply future. Raises nothing."""
        calls = [call for call, _part in chunk]
        try:
            if len(chunk) == 1 or url in self._unsupported:
                await self._each_alone(url, calls)
            else:
                await self._together(url, chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            _fail(calls, exc)
        except BaseException as exc:  # a bug or cancellation: no caller may hang
            _fail(calls, aiohttp.ClientError(f"batch failed: {type(exc).__name__}: {exc}"))
            if not isinstance(exc, Exception):
                raise
        _fail(calls, aiohttp.ClientPayloadError("the batch ended without this answer"))

    async def _each_alone(self, url: str, calls: list[_Call]) -> None:
        await asyncio.gather(*(self._alone(url, call) for call in calls))

    async def _alone(self, url: str, call: _Call) -> None:
        try:
            reply = await self._single(url, call.path, call.body, call.headers, call.timeout_s)
        except (aiohttp.ClientError, TimeoutError) as exc:
            _fail([call], exc)
            return
        if not call.reply.done():
            call.reply.set_result(reply)

    async def _together(self, url: str, chunk: list[tuple[_Call, bytes]]) -> None:
        calls = [call for call, _part in chunk]
        body = b'{"ops":[' + b",".join(part for _call, part in chunk) + b"]}"
        timeout = aiohttp.ClientTimeout(total=max(c.timeout_s for c in calls))
        self.batches_sent += 1
        async with self._session().post(url + "/v1/batch", data=body, headers=_JSON,
                                        timeout=timeout) as resp:  # fmt: skip
            if resp.status in _RUN_NOTHING:
                # Refused whole before anything ran (a node from before /v1/batch, or one
                # operation it refuses): one request each gives each its own answer.
                if resp.status == 404:
                    self._unsupported.add(url)
                await self._each_alone(url, calls)
                return
            if resp.status != 200:  # a proxy's or overload answer: every call gets it
                doc = _object(await resp.read())
                for call in calls:
                    if not call.reply.done():
                        call.reply.set_result((resp.status, doc))
                return
            for _line in range(_LINES_MAX):
                line = await resp.content.readline()
                if not line:
                    break
                _settle(calls, line)


def _chunks(calls: list[_Call]) -> list[list[tuple[_Call, bytes]]]:
    """``calls`` with their encoded operations, grouped into batches of at most
    BATCH_OPS_MAX operations and BATCH_BYTES_MAX bytes (a larger one goes alone)."""
    chunks: list[list[tuple[_Call, bytes]]] = []
    size_bytes = 0
    for call in calls:  # bound: the calls of one loop turn
        headers = {k: v for k, v in call.headers.items() if k in OP_HEADERS}
        part = json.dumps({"call": {call.path: call.body or {}}, "headers": headers},
                          separators=(",", ":")).encode()  # fmt: skip
        full = bool(chunks) and (len(chunks[-1]) >= BATCH_OPS_MAX
                                 or size_bytes + len(part) > BATCH_BYTES_MAX)  # fmt: skip
        if not chunks or full:
            chunks.append([])
            size_bytes = 0
        chunks[-1].append((call, part))
        size_bytes += len(part)
    assert sum(len(chunk) for chunk in chunks) == len(calls)
    return chunks


def _object(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _settle(calls: list[_Call], line: bytes) -> None:
    """Give one answer line to its call. Raises aiohttp.ClientPayloadError (garbled)."""
    item = _object(line)
    index, status, body = item.get("i"), item.get("status"), item.get("body")
    if not (isinstance(index, int) and 0 <= index < len(calls) and isinstance(status, int)):
        raise aiohttp.ClientPayloadError(f"garbled batch answer line: {line[:200]!r}")
    reply = calls[index].reply
    if reply.done():
        return
    if isinstance(body, dict):
        reply.set_result((status, body))
    elif status < 300:
        reply.set_exception(ProtocolError(f"batched {calls[index].path} answered {status} "
                                          "with a non-object body"))  # fmt: skip
    else:
        reply.set_result((status, {}))


def _fail(calls: list[_Call], exc: BaseException) -> None:
    for call in calls:  # bound: BATCH_OPS_MAX
        if not call.reply.done():
            call.reply.set_exception(exc)
