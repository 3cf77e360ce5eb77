"""Several members serving the real HTTP API over one in-memory node, for client tests.

Each member is a NodeApi served by the production ``build_app`` (routing, validation,
problem documents, forwarding to the leader, SSE watch streams) on loopback. They all
share one :class:`MemoryNode`, i.e. one real ServiceStateMachine, as if Raft had
replicated every entry to every member at once. One member leads; the others raise
NotLeader like a RaftServer follower does, so the HTTP layer forwards what only the
leader can do. The client under test therefore sees the production answers and
problem documents, never a re-implementation of them.

Faults are injected at the NodeApi level, where a real node fails:

* ``Fault(error=NoLeader(...))`` raises a node error (the HTTP layer renders it);
* ``Fault(drop="before")`` cuts the client's connection without serving,
  ``Fault(drop="after")`` serves (a write is applied) and then cuts it;
* ``Fault(stall=True)`` never answers (until the cluster stops);
* ``Fault(before=fn)`` runs ``fn`` first (expire the session the write carries...);
* ``Fault(watch_end=True)`` / ``Fault(watch_cancel=reason)`` end a watch at once,
  without an item or with a cancel item;
* ``stale_leader[i] = j``: member ``i`` wrongly believes member ``j`` leads (a stale hint
  after an election), so a request to it is forwarded to ``j``, which answers 421;
* ``down``: a member that cuts every connection; ``watch_cut_after_events`` and
  ``watch_too_slow_after_events``: the next watch stream is cut, or cancelled as too
  slow, after that many events.

Member ``i`` (0-based) has member id ``i + 1``; ``requests`` records every HTTP request
each member received, forwarded ones included.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from synod.node.api import NodeError, NotLeader, NotMember, Session
from synod.node.forward import FORWARDED_HEADER, StreamAborted
from synod.node.http import build_app
from synod.node.http_state import HttpLimits
from synod.node.locks_http import LockWaits
from synod.services import commands
from synod.services.limits import ServiceLimits
from tests.unit.memory_node import MemoryNode

T = TypeVar("T")

# Lease keepers renew every ttl/3: short TTLs keep their tests fast. Production's
# minimum (ServiceLimits.lease_ttl_ms_min) is 1 s.
LEASE_TTL_MS_MIN = 100
# Bounds the start and stop of the members' servers and calls onto their loop.
LOOP_CALL_TIMEOUT_S = 10.0
# How long a stopping server waits for open requests (stalled ones are released first).
SHUTDOWN_TIMEOUT_S = 1.0

# The request a member is serving (set by the members' outermost middleware).
_REQUEST: contextvars.ContextVar[web.Request] = contextvars.ContextVar("memory_cluster_request")


class Dropped(StreamAborted):
    """A fault: cut the client's connection. StreamAborted passes the problem middleware
    (which would otherwise render it) up to the member's middleware, which cuts."""


@dataclass(frozen=True)
class Request:
    """One HTTP request a member received."""

    member: int  # index of the member
    path: str
    headers: dict[str, str]
    query: dict[str, str]

    @property
    def forwarded(self) -> bool:
        """True for a request another member forwarded (not sent by the client)."""
        return FORWARDED_HEADER in self.headers


@dataclass
class Fault:
    """What a member does on the next NodeApi call serving a given route."""

    error: NodeError | None = None
    drop: str = ""  # "before" serving, or "after" serving (a write is applied)
    stall: bool = False
    before: Callable[[], object] | None = None
    watch_end: bool = False
    watch_cancel: str = ""
    member: int | None = None  # only on this member index

    def __post_init__(self) -> None:
        """Raises AssertionError for a fault that does nothing or an unknown drop."""
        assert self.drop in ("", "before", "after"), self.drop
        actions = [self.error is not None, bool(self.drop), self.stall, self.watch_end,
                   bool(self.watch_cancel), self.before is not None]  # fmt: skip
        assert sum(actions) >= 1, "a fault must do something"


def _event_revision(event: Any) -> int:
    """The revision of a watch item's event (an Event or its dict)."""
    revision = event["kv"]["mod_revision"] if isinstance(event, dict) else event.revision
    assert isinstance(revision, int)
    return revision


async def _no_items() -> AsyncIterator[dict[str, Any]]:
    """A watch that ends before its first item (a node shutting down)."""
    for item in ():
        yield item


async def _one_item(item: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    yield item


class Member:
    """One member's NodeApi over the cluster's shared MemoryNode."""

    def __init__(self, cluster: MemoryCluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.member_id = index + 1
        self.registry = CollectorRegistry()

    @property
    def node(self) -> MemoryNode:
        return self.cluster.node

    @property
    def lock_waits(self) -> LockWaits:
        return self.cluster.node.lock_waits

    def _believed_leader(self) -> int:
        return self.cluster.stale_leader.get(self.index, self.cluster.leader)

    def _require_leader(self) -> None:
        """Raises NotLeader (with the leader this member believes in) on a follower."""
        believed = self._believed_leader()
        if believed != self.index:
            raise NotLeader(believed + 1, self.cluster.urls[believed])

    async def _fault(self) -> Fault | None:
        """Take and start the fault queued for the route being served, if any."""
        fault = self.cluster.take_fault(_REQUEST.get().path, self.index)
        if fault is None:
            return None
        if fault.before is not None:
            fault.before()
        if fault.error is not None:
            raise fault.error
        if fault.drop == "before":
            raise Dropped("injected: connection cut before serving")
        if fault.stall:
            await self.cluster.stopping.wait()
            raise Dropped("injected: stalled until the cluster stopped")
        return fault

    @staticmethod
    def _after(fault: Fault | None) -> None:
        if fault is not None and fault.drop == "after":
            raise Dropped("injected: connection cut after serving")

    # -- NodeApi ----------------------------------------------------------------------

    def header(self) -> dict[str, int]:
        return {"revision": self.node.revision, "raft_term": self.cluster.term,
                "member_id": self.member_id, "leader_id": self._believed_leader() + 1}  # fmt: skip

    async def write(self, op: dict[str, Any], session: Session | None) -> dict[str, Any]:
        self._require_leader()
        fault = await self._fault()
        result = await self.node.write(op, session)
        self._after(fault)
        return result

    async def read(self, op: dict[str, Any], *, serializable: bool) -> dict[str, Any]:
        fault = await self._fault()
        result = await self.node.read(op, serializable=serializable)
        self._after(fault)
        return result

    async def lease_keepalive(self, lease_id: int) -> dict[str, Any]:
        self._require_leader()
        fault = await self._fault()
        result = await self.node.lease_keepalive(lease_id)
        self._after(fault)
        return result

    async def lease_timetolive(self, lease_id: int) -> dict[str, Any]:
        self._require_leader()
        fault = await self._fault()
        result = await self.node.lease_timetolive(lease_id)
        self._after(fault)
        return result

    async def snapshot_file(self) -> bytes | None:
        return None  # a memory node keeps no snapshot files

    async def lease_list(self, limit: int) -> dict[str, Any]:
        self._require_leader()
        fault = await self._fault()
        result = await self.node.lease_list(limit)
        self._after(fault)
        return result

    def watch(
        self, key: bytes, range_end: bytes, start_revision: int
    ) -> AsyncIterator[dict[str, Any]]:
        fault = self.cluster.take_fault(_REQUEST.get().path, self.index)
        if fault is not None:
            if fault.before is not None:
                fault.before()
            if fault.error is not None:
                raise fault.error
            if fault.drop:
                raise Dropped("injected: watch connection cut")
            if fault.watch_end:
                return _no_items()
            if fault.watch_cancel:
                return _one_item({"cancel": fault.watch_cancel, "resume_revision": 0,
                                  "message": "injected"})  # fmt: skip
        items = self.node.watch(key, range_end, start_revision)  # a refusal raises here
        self.cluster.watch_connects += 1
        return self._relay(items)

    async def _relay(self, items: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """The node's watch items, cut or cancelled as too slow when the cluster says so."""
        cluster = self.cluster
        sent = 0
        try:
            async for item in items:
                if "progress" in item:
                    cluster.watch_progress.append(item["progress"])
                events = item.get("events")
                if events:
                    slow, cut = cluster.watch_too_slow_after_events, cluster.watch_cut_after_events
                    rooms = [max(0, n - sent) for n in (slow, cut) if n is not None]
                    room = min(rooms, default=len(events))
                    if room < len(events):
                        if room > 0:
                            yield {**item, "events": events[:room]}
                        if slow is not None and max(0, slow - sent) == room:
                            cluster.watch_too_slow_after_events = None
                            yield {"cancel": "overflow",
                                   "resume_revision": _event_revision(events[room]),
                                   "message": "injected: the watcher fell behind"}  # fmt: skip
                            return
                        cluster.watch_cut_after_events = None
                        raise Dropped("injected: watch stream cut")
                    sent += len(events)
                yield item
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()

    def status(self) -> dict[str, Any]:
        believed = self._believed_leader()
        index = self.node.index
        return {
            "member_id": self.member_id,
            "role": "leader" if self.cluster.leader == self.index == believed else "follower",
            "term": self.cluster.term, "leader_id": believed + 1,
            "leader_client_url": self.cluster.urls[believed],
            "commit_index": index, "applied_index": index, "last_index": index,
            "snapshot_index": self.cluster.snapshot_index, "revision": self.node.revision,
            "limits": self.node.machine.settable_limits(),
            "members": self.cluster.member_docs(),
        }  # fmt: skip

    def is_ready(self) -> tuple[bool, str]:
        return True, "leader known, caught up"

    def metrics(self) -> bytes:
        return generate_latest(self.registry)

    async def _admin(self) -> None:
        self._require_leader()
        await self._fault()

    async def admin_add_learner(
        self, node_id: int, peer_url: str, client_url: str
    ) -> dict[str, Any]:
        await self._admin()
        config = self.cluster.config
        changed = node_id not in config
        if changed:
            config[node_id] = {"id": node_id, "role": "learner", "peer_url": peer_url,
                               "client_url": client_url or None}  # fmt: skip
        return {"ok": True, "members": self.cluster.member_docs(), "changed": changed}

    async def admin_promote(self, node_id: int) -> dict[str, Any]:
        await self._admin()
        member = self.cluster.config.get(node_id)
        if member is None:
            raise NotMember(f"node {node_id} is not a member; add it as a learner first")
        # Every entry is applied everywhere at once here: a learner is always caught up.
        changed = member["role"] != "voter"
        member["role"] = "voter"
        return {"ok": True, "members": self.cluster.member_docs(), "changed": changed}

    async def admin_remove(self, node_id: int) -> dict[str, Any]:
        await self._admin()
        assert node_id != self.member_id, "removing the leader is not modelled"
        changed = self.cluster.config.pop(node_id, None) is not None
        return {"ok": True, "members": self.cluster.member_docs(), "changed": changed}

    async def admin_transfer_leadership(self, to: int | None) -> dict[str, Any]:
        await self._admin()
        voters = [m for m, doc in self.cluster.config.items()
                  if doc["role"] == "voter" and m <= len(self.cluster.members)]  # fmt: skip
        target = to if to is not None else max(m for m in voters if m != self.member_id)
        if target not in voters:
            raise NodeError(f"node {target} is not a voter")
        if target == self.member_id:
            return {"ok": True, "leader_id": self.member_id, "changed": False}
        self.cluster.leader = target - 1
        self.cluster.term += 1
        return {"ok": True, "leader_id": target, "changed": True}

    async def admin_snapshot(self) -> dict[str, Any]:
        await self._admin()
        answer = await self.node.admin_snapshot()
        self.cluster.snapshot_index = answer["snapshot_index"]
        return {"ok": True, **answer}


class MemoryCluster:
    """``members`` members on loopback; use ``async with`` (or `threaded()` from blocking
    tests, then `call()` to touch the state from the test thread)."""

    def __init__(
        self,
        members: int = 3,
        *,
        leader: int = 0,
        limits: ServiceLimits | None = None,
        progress_interval_ms: int = 200,
    ) -> None:
        assert 0 <= leader < members
        self.limits = limits or ServiceLimits(lease_ttl_ms_min=LEASE_TTL_MS_MIN)
        self.node = MemoryNode(limits=self.limits, progress_interval_ms=progress_interval_ms)
        self.leader = leader
        self.term = 2
        self.snapshot_index = 0
        self.members = [Member(self, index) for index in range(members)]
        self.urls: list[str] = []
        self.config: dict[int, dict[str, Any]] = {}
        self.stale_leader: dict[int, int] = {}
        self.faults: dict[str, list[Fault]] = {}
        self.requests: list[Request] = []
        self.down: set[int] = set()
        self.watch_cut_after_events: int | None = None
        self.watch_too_slow_after_events: int | None = None
        self.watch_connects = 0  # watches the node accepted (faulted ones excluded)
        self.watch_progress: list[int] = []  # revisions of the progress items sent
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._runners: list[web.AppRunner] = []

    @property
    def stopping(self) -> asyncio.Event:
        assert self._stopping is not None, "the cluster is not running"
        return self._stopping

    # -- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> MemoryCluster:
        self.loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        for member in self.members:
            limits = HttpLimits(service=self.limits)
            app = build_app(member, limits=limits, registry=member.registry)
            app.middlewares.insert(0, self._middleware(member.index))
            runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            self.urls.append(f"http://127.0.0.1:{port}")
            self._runners.append(runner)
        for index, url in enumerate(self.urls):
            peer_url = f"127.0.0.1:{2380 + index}"  # never dialled: there is no Raft
            self.config[index + 1] = {"id": index + 1, "role": "voter", "peer_url": peer_url,
                                      "client_url": url}  # fmt: skip
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stopping.set()  # releases stalled calls
        for runner in self._runners:
            await runner.cleanup()

    def _middleware(self, index: int) -> Any:
        @web.middleware
        async def member_middleware(
            request: web.Request, handler: Callable[[web.Request], Any]
        ) -> web.StreamResponse:
            self.requests.append(
                Request(index, request.path, dict(request.headers), dict(request.query))
            )
            token = _REQUEST.set(request)
            try:
                if index in self.down:
                    raise Dropped("injected: the member is down")
                response: web.StreamResponse = await handler(request)
                return response
            except Dropped:
                # Cut the connection: the client sees it closed, with no answer.
                assert request.transport is not None
                request.transport.close()  # flushes what was written, then closes
                # Nothing more reaches the client; aiohttp drops this answer quietly.
                return web.Response(status=499)
            finally:
                _REQUEST.reset(token)

        return member_middleware

    # -- faults and state -------------------------------------------------------------

    def fault(self, path: str, fault: Fault, times: int = 1) -> None:
        """Queue ``fault`` for the next ``times`` NodeApi calls serving ``path``."""
        assert times >= 1
        self.faults.setdefault(path, []).extend([fault] * times)

    def take_fault(self, path: str, index: int) -> Fault | None:
        queue = self.faults.get(path) or []
        for position, fault in enumerate(queue):
            if fault.member is None or fault.member == index:
                return queue.pop(position)
        return None

    def requests_to(self, path: str) -> list[Request]:
        """Every request to ``path`` any member received, forwarded ones included."""
        return [r for r in self.requests if r.path == path]

    def sent_by_client(self, path: str) -> list[Request]:
        """The requests to ``path`` that came from the client (not forwarded)."""
        return [r for r in self.requests_to(path) if not r.forwarded]

    def member_docs(self) -> list[dict[str, Any]]:
        return [{**doc, "match_index": self.node.index, "last_contact_ms": 0, "healthy": True}
                for _, doc in sorted(self.config.items())]  # fmt: skip

    def expire_lease(self, lease_id: int) -> dict[str, Any]:
        """Expire ``lease_id`` now, with the command a leader's LeaseClock proposes."""
        return self.node.apply(commands.lease_expire_op([lease_id]))

    def expire_session(self, client_id: int) -> dict[str, Any]:
        """Forget session ``client_id`` (as eviction does), with the replicated command."""
        assert client_id > 0
        return self.node.apply(commands.session_close_op(), Session(client_id, 1, 0))

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the cluster's loop thread (its state is not thread-safe) and
        return its result. Raises what ``fn`` raises."""
        assert self.loop is not None

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(LOOP_CALL_TIMEOUT_S)


@contextmanager
def threaded(cluster: MemoryCluster) -> Iterator[MemoryCluster]:
    """Run ``cluster`` on a loop in a background thread (for blocking-client tests)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(cluster.__aenter__(), loop).result(LOOP_CALL_TIMEOUT_S)
        yield cluster
        asyncio.run_coroutine_threadsafe(cluster.__aexit__(None, None, None), loop).result(
            LOOP_CALL_TIMEOUT_S
        )
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(LOOP_CALL_TIMEOUT_S)
        assert not thread.is_alive(), "the cluster's loop thread did not stop"
        loop.close()


__all__ = ["Dropped", "Fault", "Member", "MemoryCluster", "Request", "threaded"]
