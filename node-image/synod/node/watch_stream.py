"""Watch streams: the node side (:class:`WatchStreams`) and ``GET /v1/watch`` as a
Server-Sent Events stream (:func:`handle_watch`).

The node side costs nothing while a watcher is idle: a stream parks on a future that
only the watch hub (when the watcher got events or was cancelled) or the one shared
progress timer resolves, so writes to other keys and Raft traffic wake no stream.

The node's ``watch()`` yields ``{"events": [...], "revision": R}``, ``{"progress": R}``
while idle and finally ``{"cancel": reason, "resume_revision": R, "message"}``. They
become ``event: events``, ``event: progress`` and ``event: cancel`` messages (data is
one line of JSON). A refusal (compacted start revision, too many watchers) must be a
problem document with its status, so the stream starts only once the node has
accepted the watch: the first item is awaited for up to ``watch_start_wait_ms``
(enough for a watch that refuses synchronously or on its first step). A client that
leaves (FIN or RST) while its stream is idle is noticed within
``watch_disconnect_check_interval_ms`` and its watcher freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from synod.node.api import NodeError
from synod.node.http_state import STATE, AppState, header_for, jsonable
from synod.node.inputs import decoder, is_base64, parse_query
from synod.node.problems import Problem
from synod.services.errors import ServiceError
from synod.services.kv import prefix_end
from synod.services.state import ServiceStateMachine
from synod.services.watch import Watcher

__all__ = [
    "CANCEL_REASONS",
    "DisconnectCheck",
    "WatchStreamLimits",
    "WatchStreams",
    "close_streams",
    "handle_watch",
    "install",
    "sse_message",
    "to_sse",
]

log = logging.getLogger(__name__)

# The hub's cancel reasons as the API names them (docs/api.md: "too-slow").
CANCEL_REASONS = {"overflow": "too-slow", "compacted": "compacted", "client": "cancelled",
                  "restored": "restored"}  # fmt: skip
_STREAMS = web.AppKey("synod_watch_stopping", asyncio.Event)


# -- the node side ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchStreamLimits:
    """Bounds of the node's watch streams."""

    events_per_message_max: int = 1000
    # An idle stream gets a progress message this often (clients drop a stream that
    # stays silent for their read timeout, 30 s by default in the SDK).
    progress_interval_ms: int = 5_000

    def __post_init__(self) -> None:
        """Raises ValueError naming a bound that is not positive."""
        for name in self.__slots__:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")


class WatchStreams:
    """The node's watch streams over one state machine's watch hub (``NodeApi.watch``).

    Each stream parks, while idle, on a future of its own. The hub's ``wake`` hook
    resolves it when the watcher got events or was cancelled; one shared timer resolves
    it when a progress message is due. Nothing else wakes a stream, so ``wakeups`` (the
    number of times a parked stream resumed) stays at zero for idle watchers whatever
    else the node does. Must be used from one event loop.
    """

    def __init__(self, state: ServiceStateMachine, limits: WatchStreamLimits | None = None) -> None:
        """Serve watches of ``state`` (takes over its hub's ``wake`` hook). Raises nothing."""
        self._state = state
        self.limits = limits or WatchStreamLimits()
        self._parked: dict[int, asyncio.Future[bool]] = {}  # watch_id -> resolves to "progress due"
        # watch_id -> loop time a progress is due. Every entry is now + the one interval
        # when (re)inserted, so insertion order is deadline order: the timer looks only at
        # the front.
        self._progress_due: dict[int, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.wakeups = 0
        state.watches.wake = self._wake

    @property
    def parked(self) -> int:
        """Number of streams waiting idle. Raises nothing."""
        return len(self._parked)

    def watch(
        self, key: bytes, range_end: bytes, start_revision: int
    ) -> AsyncIterator[dict[str, Any]]:
        """See ``NodeApi.watch``. The watcher is registered before this returns, so a
        compacted start revision or a full watcher table raises here."""
        watcher = self._state.watches.watch(key, range_end, start_revision)
        return self._stream(watcher)

    async def _stream(self, watcher: Watcher) -> AsyncIterator[dict[str, Any]]:
        watch_id = watcher.watch_id
        try:
            self._progress_sent(watch_id)
            while True:
                events = watcher.poll(self.limits.events_per_message_max)
                if events:
                    self._progress_sent(watch_id)
                    yield {"events": [event.to_dict() for event in events],
                           "revision": self._state.kv.revision}  # fmt: skip
                elif watcher.cancelled:
                    yield {"cancel": watcher.cancel_reason,
                           "resume_revision": watcher.resume_revision,
                           "compact_revision": watcher.compact_revision,
                           "message": watcher.cancel_message()}  # fmt: skip
                    return
                elif await self._park(watch_id) and not watcher.pending and not watcher.cancelled:
                    # Nothing is buffered, and the hub is fed in apply, so every event up
                    # to the current revision has been sent: the client may skip past it.
                    self._progress_sent(watch_id)
                    yield {"progress": self._state.kv.revision}
        finally:
            self._parked.pop(watch_id, None)
            self._progress_due.pop(watch_id, None)
            if not watcher.cancelled:
                self._state.watches.cancel(watch_id)
            assert watch_id not in self._parked

    async def _park(self, watch_id: int) -> bool:
        """Wait for the hub or the progress timer; True if a progress is due."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._parked[watch_id] = future
        if watch_id not in self._progress_due:
            self._progress_sent(watch_id)  # the timer dropped it while we were busy
        try:
            progress_due = await future
        finally:
            if self._parked.get(watch_id) is future:
                del self._parked[watch_id]
        self.wakeups += 1
        return progress_due

    def _wake(self, watcher: Watcher) -> None:
        """The hub's hook: the watcher got events or was cancelled. Raises nothing."""
        future = self._parked.pop(watcher.watch_id, None)
        if future is not None and not future.done():
            future.set_result(False)

    def _progress_sent(self, watch_id: int) -> None:
        """The stream just sent (or started): its next progress is one interval away."""
        loop = asyncio.get_running_loop()
        self._progress_due.pop(watch_id, None)
        self._progress_due[watch_id] = loop.time() + self.limits.progress_interval_ms / 1000
        if self._timer is None:
            self._timer = loop.call_at(self._progress_due[watch_id], self._on_timer)

    def _on_timer(self) -> None:
        """Wake the parked streams whose progress is due; re-arm for the next one."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._progress_due:
            watch_id, due = next(iter(self._progress_due.items()))
            if due > now:
                self._timer = loop.call_at(due, self._on_timer)
                break
            del self._progress_due[watch_id]
            # A stream that is not parked is sending; it re-arms when it parks again.
            future = self._parked.pop(watch_id, None)
            if future is not None and not future.done():
                future.set_result(True)


# -- the HTTP side ------------------------------------------------------------------------


class DisconnectCheck:
    """Notices streams whose client went away. aiohttp reports a closed connection to a
    handler only when it writes, and an idle stream does not write; so one timer per
    app looks at every open stream's connection each ``interval_ms`` (a cheap attribute
    check, no task wake-up) and resolves the future of each stream whose peer is gone.
    """

    def __init__(self, interval_ms: int) -> None:
        """Raises nothing; the timer starts with the first stream."""
        assert interval_ms >= 1
        self.interval_ms = interval_ms
        self._streams: dict[asyncio.Future[None], web.BaseRequest] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        """Number of streams watched. Raises nothing."""
        return len(self._streams)

    def gone(self, request: web.BaseRequest) -> asyncio.Future[None]:
        """A future resolved once ``request``'s connection is closed; cancel it when the
        stream ends. Raises nothing."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._streams[future] = request
        future.add_done_callback(self._forget)
        if self._timer is None:
            self._timer = loop.call_later(self.interval_ms / 1000, self._check)
        return future

    def _forget(self, future: asyncio.Future[None]) -> None:
        self._streams.pop(future, None)

    def _check(self) -> None:
        self._timer = None
        for future, request in list(self._streams.items()):
            transport = request.transport
            if (transport is None or transport.is_closing()) and not future.done():
                future.set_result(None)
        if self._streams:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.interval_ms / 1000, self._check)


_DISCONNECTS = web.AppKey("synod_watch_disconnects", DisconnectCheck)


def sse_message(event: str, data: dict[str, Any]) -> bytes:
    """One SSE message. Compact JSON escapes newlines, so data is one line. Raises
    TypeError if ``data`` is not JSON-able."""
    assert event and "\n" not in event
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    assert "\n" not in text and "\r" not in text
    return f"event: {event}\ndata: {text}\n\n".encode()


def _event_json(event: Any, base64: bool = False) -> dict[str, Any]:
    """A watch event (Event or its dict) in API form: lower-case type, text (or base64)
    kvs."""
    body = event.to_dict() if hasattr(event, "to_dict") else dict(event)
    body["type"] = str(body["type"]).lower()
    assert body["type"] in ("put", "delete")
    return {"type": body["type"], "kv": jsonable(body["kv"], base64),
            "prev_kv": jsonable(body.get("prev_kv"), base64)}  # fmt: skip


def to_sse(state: AppState, item: dict[str, Any], base64: bool = False) -> tuple[bytes, bool]:
    """(the SSE message of a node watch item, whether it ends the stream); ``base64``:
    keys and values as base64. Raises ValueError for an item of unknown shape."""
    if "events" in item:
        header = header_for(state.node, item.get("revision"))
        events = [_event_json(event, base64) for event in item["events"]]
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


def _watch_args(state: AppState, request: web.Request) -> tuple[bytes, bytes, int, bool]:
    """(key, range_end, start_revision, base64) of the query. Raises Problem."""
    query = parse_query(request, state.specs["watch"])
    decode = decoder(query)
    key = decode(query["key"])
    if not key:
        raise Problem("invalid-argument", "query parameter 'key' must not be empty")
    range_end = decode(query.get("range_end", ""))
    if query.get("prefix", False):
        if range_end:
            raise Problem("invalid-argument", "give either prefix or range_end, not both")
        range_end = prefix_end(key)
    return key, range_end, query.get("start_revision", 0), is_base64(query)


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
    key, range_end, start_revision, base64 = _watch_args(state, request)
    bound = state.limits.watch_streams_max
    if state.watch_streams >= bound:
        raise Problem("limit-exceeded", f"watch_streams_max={bound} watch streams are open",
                      limit="watch_streams_max", max=bound)  # fmt: skip
    state.watch_streams += 1
    items: AsyncIterator[dict[str, Any]] | None = None
    try:
        items = state.node.watch(key, range_end, start_revision)
        first = await _first_item(items, state.limits.watch_start_wait_ms)
        return await _stream(state, request, items, first, base64)
    finally:
        state.watch_streams -= 1
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()  # frees the node's watcher
        assert state.watch_streams >= 0


def _message_of(
    state: AppState, done: asyncio.Task[dict[str, Any]], base64: bool = False
) -> tuple[bytes, bool]:
    """The SSE message of a finished item task; a refusal that came after the stream
    started (a slow node) becomes a final ``cancel``. Raises StopAsyncIteration."""
    try:
        return to_sse(state, done.result(), base64)
    except (ServiceError, NodeError) as error:
        code = getattr(error, "code", "internal")
        data = {"reason": code, "resume_revision": 0, "message": str(error)}
        return sse_message("cancel", data), True


async def _stream(
    state: AppState,
    request: web.Request,
    items: AsyncIterator[dict[str, Any]],
    pending: asyncio.Task[dict[str, Any]],
    base64: bool = False,
) -> web.StreamResponse:
    """Relay items until a cancel, the client leaving, a stuck client or shutdown."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})  # fmt: skip
    await response.prepare(request)
    # Created once per stream, not once per message: relaying costs no task per item.
    stop = asyncio.ensure_future(request.app[_STREAMS].wait())
    gone = request.app[_DISCONNECTS].gone(request)
    write_timeout_s = state.limits.watch_write_timeout_ms / 1000
    try:
        while True:
            waiting: set[asyncio.Future[Any]] = {pending, stop, gone}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if gone.done():
                log.info("watch stream closed: the client went away")
                break
            if not pending.done():
                break  # the server is shutting down
            message, last = _message_of(state, pending, base64)
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
        stop.cancel()
        gone.cancel()
        await _stop(pending)
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


async def close_streams(app: web.Application) -> None:
    """on_shutdown: end every open stream so the server can stop. Raises nothing."""
    app[_STREAMS].set()
    assert app[_STREAMS].is_set()


def install(app: web.Application) -> None:
    """Give ``app`` the shutdown signal and the disconnect check the streams wait on
    (after ``app[STATE]`` is set). Raises nothing."""
    app[_STREAMS] = asyncio.Event()
    app[_DISCONNECTS] = DisconnectCheck(app[STATE].limits.watch_disconnect_check_interval_ms)
    app.on_shutdown.append(close_streams)
    assert _STREAMS in app
