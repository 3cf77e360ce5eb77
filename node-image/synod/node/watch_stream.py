"""``GET /v1/watch``: a node watch as a Server-Sent Events stream.

The node's ``watch()`` yields ``{"events": [...], "revision": R}``, ``{"progress": R}``
while idle and finally ``{"cancel": reason, "resume_revision": R, "message"}``. They
become ``event: events``, ``event: progress`` and ``event: cancel`` messages (data is
one line of JSON). A refusal (compacted start revision, too many watchers) must be a
problem document with its status, so the stream starts only once the node has
accepted the watch: the first item is awaited for up to ``watch_start_wait_ms``
(enough for a watch that refuses synchronously or on its first step).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from synod.node.api import NodeError
from synod.node.http_state import STATE, AppState, header_for, jsonable
from synod.node.inputs import parse_query
from synod.node.problems import Problem
from synod.services.errors import ServiceError
from synod.services.kv import prefix_end

__all__ = ["CANCEL_REASONS", "close_streams", "handle_watch", "install", "sse_message", "to_sse"]

log = logging.getLogger(__name__)

# The hub's cancel reasons as the API names them (docs/api.md: "too-slow").
CANCEL_REASONS = {"overflow": "too-slow", "compacted": "compacted", "client": "cancelled",
                  "restored": "restored"}  # fmt: skip
_STREAMS = web.AppKey("synod_watch_stopping", asyncio.Event)


def sse_message(event: str, data: dict[str, Any]) -> bytes:
    """One SSE message. Compact JSON escapes newlines, so data is one line. Raises
    TypeError if ``data`` is not JSON-able."""
    assert event and "\n" not in event
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    assert "\n" not in text and "\r" not in text
    return f"event: {event}\ndata: {text}\n\n".encode()


def _event_json(event: Any) -> dict[str, Any]:
    """A watch event (Event or its dict) in API form: lower-case type, text kvs."""
    body = event.to_dict() if hasattr(event, "to_dict") else dict(event)
    body["type"] = str(body["type"]).lower()
    assert body["type"] in ("put", "delete")
    return {"type": body["type"], "kv": jsonable(body["kv"]),
            "prev_kv": jsonable(body.get("prev_kv"))}  # fmt: skip


def to_sse(state: AppState, item: dict[str, Any]) -> tuple[bytes, bool]:
    """(the SSE message of a node watch item, whether it ends the stream). Raises
    ValueError for an item of unknown shape."""
    if "events" in item:
        header = header_for(state.node, item.get("revision"))
        events = [_event_json(event) for event in item["events"]]
        return sse_message("events", {"header": header, "events": events}), False
    if "progress" in item:
        revision = item["progress"]
        return sse_message("progress", {"header": header_for(state.node, revision),
                                        "revision": revision}), False  # fmt: skip
    if "cancel" in item:
        reason = CANCEL_REASONS.get(str(item["cancel"]), str(item["cancel"]))
        data = {"reason": reason, "resume_revision": item.get("resume_revision", 0),
                "message": item.get("message", "")}  # fmt: skip
        if item.get("compact_revision"):
            data["compact_revision"] = item["compact_revision"]
        return sse_message("cancel", data), True
    raise ValueError(f"unknown watch item {sorted(item)}")


def _watch_args(state: AppState, request: web.Request) -> tuple[bytes, bytes, int]:
    """(key, range_end, start_revision) of the query. Raises Problem."""
    query = parse_query(request, state.specs["watch"])
    key = query["key"].encode("utf-8")
    range_end = query.get("range_end", "").encode("utf-8")
    if query.get("prefix", False):
        if range_end:
            raise Problem("invalid-argument", "give either prefix or range_end, not both")
        range_end = prefix_end(key)
    return key, range_end, query.get("start_revision", 0)


async def _first_item(
    items: AsyncIterator[dict[str, Any]], wait_ms: int
) -> asyncio.Task[dict[str, Any]]:
    """Start taking the first item; wait up to ``wait_ms`` so that a refusal raises here
    (before the stream starts). Raises what the node's watch raises."""
    task = asyncio.ensure_future(items.__anext__())
    try:
        await asyncio.wait({task}, timeout=wait_ms / 1000)
    except BaseException:
        await _stop(task)
        raise
    error = task.exception() if task.done() else None
    if error is not None and not isinstance(error, StopAsyncIteration):
        raise error  # the refusal, as a problem document
    return task


async def _stop(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has finished (so the node's generator has run
    its cleanup before it is closed). Raises CancelledError only if we are cancelled."""
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
    assert task.done()


async def handle_watch(request: web.Request) -> web.StreamResponse:
    """Serve one watch stream. Raises Problem (bad query, watch_streams_max), service
    errors (Compacted -> 410, LimitExceeded -> 429, ...) before the stream starts."""
    state = request.app[STATE]
    key, range_end, start_revision = _watch_args(state, request)
    bound = state.limits.watch_streams_max
    if state.watch_streams >= bound:
        raise Problem("limit-exceeded", f"watch_streams_max={bound} watch streams are open",
                      limit="watch_streams_max", max=bound)  # fmt: skip
    state.watch_streams += 1
    items: AsyncIterator[dict[str, Any]] | None = None
    try:
        items = state.node.watch(key, range_end, start_revision)
        first = await _first_item(items, state.limits.watch_start_wait_ms)
        return await _stream(state, request, items, first)
    finally:
        state.watch_streams -= 1
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()  # frees the node's watcher
        assert state.watch_streams >= 0


def _message_of(state: AppState, done: asyncio.Task[dict[str, Any]]) -> tuple[bytes, bool]:
    """The SSE message of a finished item task; a refusal that came after the stream
    started (a slow node) becomes a final ``cancel``. Raises StopAsyncIteration."""
    try:
        return to_sse(state, done.result())
    except (ServiceError, NodeError) as error:
        code = getattr(error, "code", "internal")
        data = {"reason": code, "resume_revision": 0, "message": str(error)}
        return sse_message("cancel", data), True


async def _stream(
    state: AppState,
    request: web.Request,
    items: AsyncIterator[dict[str, Any]],
    pending: asyncio.Task[dict[str, Any]],
) -> web.StreamResponse:
    """Relay items until a cancel, the client leaving, a stuck client or shutdown."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})  # fmt: skip
    await response.prepare(request)
    stopping = request.app[_STREAMS]
    write_timeout_s = state.limits.watch_write_timeout_ms / 1000
    try:
        while True:
            stop = asyncio.ensure_future(stopping.wait())
            await asyncio.wait({pending, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not pending.done():
                break  # the server is shutting down
            message, last = _message_of(state, pending)
            async with asyncio.timeout(write_timeout_s):
                await response.write(message)
            if last:
                break
            pending = asyncio.ensure_future(items.__anext__())
    except StopAsyncIteration:
        pass  # the node ended the watch without a cancel item
    except (ConnectionError, TimeoutError) as exc:
        log.info("watch stream closed: %s", type(exc).__name__)
    finally:
        await _stop(pending)
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


async def close_streams(app: web.Application) -> None:
    """on_shutdown: end every open stream so the server can stop. Raises nothing."""
    app[_STREAMS].set()
    assert app[_STREAMS].is_set()


def install(app: web.Application) -> None:
    """Give ``app`` the shutdown signal the streams wait on. Raises nothing."""
    app[_STREAMS] = asyncio.Event()
    app.on_shutdown.append(close_streams)
    assert _STREAMS in app
