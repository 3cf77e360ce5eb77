"""An in-memory fake of the docs/api.md HTTP API with fault injection, for client tests.

Several fake nodes share one state; one is the leader. Faults are queued per route:
answer a problem document, drop the connection before or after applying, delay.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PROBLEM = "https://synod.dev/problems/"


def problem(code: str, status: int, detail: str, **extra: Any) -> web.Response:
    """A problem+json answer."""
    body = {"type": PROBLEM + code, "title": code, "status": status, "detail": detail, **extra}
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/problem+json"
    )


@dataclass
class Fault:
    """One injected fault: ``kind`` is `problem`, `drop` (before applying) or
    `drop-after` (apply, then drop the connection), or `delay` (sleep ``delay_s``)."""

    kind: str
    status: int = 503
    code: str = "no-leader"
    extra: dict[str, Any] = field(default_factory=dict)
    delay_s: float = 0.0
    node: int | None = None  # only on this node index


class FakeState:
    """The replicated state all fake nodes share."""

    def __init__(self) -> None:
        self.kv: dict[str, dict[str, Any]] = {}
        self.revision = 1
        self.compact_revision = 0
        self.history: list[dict[str, Any]] = []  # events with their revision
        self.sessions: dict[int, dict[int, Any]] = {}
        self.next_client_id = 100
        self.leases: dict[int, dict[str, Any]] = {}
        self.next_lease = 7000
        self.changed = asyncio.Condition()
        self.applied_writes = 0


class FakeCluster:
    """N fake nodes on loopback; use ``async with`` (or `threaded()` from sync tests)."""

    def __init__(self, nodes: int = 3, *, leader: int = 0, forward: bool = True) -> None:
        self.count = nodes
        self.leader = leader
        self.forward = forward  # False: writes on followers answer 421
        self.state = FakeState()
        self.faults: dict[str, list[Fault]] = {}
        self.requests: list[tuple[int, str, dict[str, str]]] = []
        self.urls: list[str] = []
        self.down: set[int] = set()
        self.watch_cut_after_events: int | None = None  # drop a stream after N events
        self.watch_too_slow_after_events: int | None = None
        self.watch_progress_s = 0.2
        self.watch_connects = 0
        self._runners: list[web.AppRunner] = []

    # -- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> FakeCluster:
        for index in range(self.count):
            app = web.Application()
            self._routes(app, index)
            runner = web.AppRunner(app, shutdown_timeout=0.1)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.urls.append(f"http://127.0.0.1:{port}")
            self._runners.append(runner)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for runner in self._runners:
            await runner.cleanup()

    def fault(self, path: str, fault: Fault, times: int = 1) -> None:
        """Queue ``fault`` for the next ``times`` requests to ``path``."""
        self.faults.setdefault(path, []).extend([fault] * times)

    def requests_to(self, path: str) -> list[tuple[int, str, dict[str, str]]]:
        return [r for r in self.requests if r[1] == path]

    # -- routing --------------------------------------------------------------------

    def _routes(self, app: web.Application, index: int) -> None:
        routes = {
            "/v1/session/open": self._session_open,
            "/v1/kv/put": self._put,
            "/v1/kv/range": self._range,
            "/v1/kv/delete": self._delete,
            "/v1/kv/txn": self._txn,
            "/v1/kv/compact": self._compact,
            "/v1/lease/grant": self._lease_grant,
            "/v1/lease/revoke": self._lease_revoke,
            "/v1/lease/keepalive": self._lease_keepalive,
            "/v1/lease/timetolive": self._lease_ttl,
            "/v1/admin/members/add-learner": self._admin,
            "/v1/admin/members/promote": self._admin,
            "/v1/admin/members/remove": self._admin,
            "/v1/admin/leadership/transfer": self._transfer,
            "/v1/admin/snapshot": self._snapshot,
        }
        for path, handler in routes.items():
            app.router.add_post(path, self._wrap(index, path, handler))
        status = self._wrap(index, "/status", lambda body: self._status_doc(index))
        app.router.add_get("/v1/cluster/status", status)
        app.router.add_get("/v1/watch", self._watch_handler(index))

    def _wrap(self, index: int, path: str, handler: Any) -> Any:
        async def serve(request: web.Request) -> web.StreamResponse:
            self.requests.append((index, path, dict(request.headers)))
            if index in self.down:
                assert request.transport is not None
                request.transport.close()
                raise ConnectionResetError
            fault = self._take_fault(path, index)
            if fault is not None and fault.kind == "delay":
                await asyncio.sleep(fault.delay_s)
            if fault is not None and fault.kind == "problem":
                return problem(fault.code, fault.status, "injected", **fault.extra)
            if fault is not None and fault.kind == "drop":
                assert request.transport is not None
                request.transport.close()
                raise ConnectionResetError
            body = await request.json() if request.can_read_body else {}
            is_write = path not in ("/v1/kv/range", "/status")
            if is_write and index != self.leader and not self.forward and path != "/status":
                return problem(
                    "not-leader",
                    421,
                    "not the leader",
                    leader_id=self.leader + 1,
                    leader_client_url=self.urls[self.leader],
                )
            answer = self._dedup(request, path, body, handler)
            if isinstance(answer, web.Response):
                return answer
            if fault is not None and fault.kind == "drop-after":
                assert request.transport is not None
                request.transport.close()
                raise ConnectionResetError
            status = answer.pop("_status", 200)
            if status != 200:
                return problem(answer.pop("code"), status, answer.pop("detail"), **answer)
            answer["header"] = self._header(index)
            return web.json_response(answer)

        return serve

    def _take_fault(self, path: str, index: int) -> Fault | None:
        queue = self.faults.get(path) or []
        for i, fault in enumerate(queue):
            if fault.node is None or fault.node == index:
                return queue.pop(i)
        return None

    def _dedup(self, request: web.Request, path: str, body: Any, handler: Any) -> Any:
        client_id = int(request.headers.get("Synod-Client-Id", "0"))
        if not client_id:
            return handler(body)
        seq = int(request.headers["Synod-Seq"])
        ack = int(request.headers["Synod-Ack-Seq"])
        assert seq >= 1 and ack <= seq, (seq, ack)
        responses = self.state.sessions.get(client_id)
        if responses is None:
            return problem("session-expired", 410, f"session {client_id} does not exist")
        for old in [s for s in responses if s < ack]:
            del responses[old]
        if seq in responses:
            return dict(responses[seq])
        answer = handler(body)
        responses[seq] = dict(answer)
        return answer

    def _header(self, index: int) -> dict[str, int]:
        return {
            "revision": self.state.revision,
            "raft_term": 2,
            "member_id": index + 1,
            "leader_id": self.leader + 1,
        }

    # -- handlers -------------------------------------------------------------------

    def _session_open(self, body: Any) -> dict[str, Any]:
        self.state.next_client_id += 1
        self.state.sessions[self.state.next_client_id] = {}
        return {"client_id": self.state.next_client_id}

    def _event(self, kind: str, kv: dict[str, Any], prev: dict[str, Any] | None) -> None:
        self.state.history.append({"type": kind, "kv": kv, "prev_kv": prev})

    def _notify(self) -> None:
        async def wake() -> None:
            async with self.state.changed:
                self.state.changed.notify_all()

        asyncio.get_running_loop().create_task(wake())

    def _apply_put(self, body: dict[str, Any], revision: int) -> dict[str, Any]:
        key = body["key"]
        if not key:
            return {"_status": 400, "code": "invalid-argument", "detail": "empty key"}
        if len(body["value"]) > 1000:
            return {"_status": 413, "code": "too-large", "detail": "value", "limit": "v"}
        lease = body.get("lease", 0)
        if lease and lease not in self.state.leases:
            return {"_status": 404, "code": "not-found", "detail": f"lease {lease}"}
        prev = self.state.kv.get(key)
        kv = {
            "key": key,
            "value": body["value"],
            "create_revision": prev["create_revision"] if prev else revision,
            "mod_revision": revision,
            "version": prev["version"] + 1 if prev else 1,
            "lease": lease,
        }
        self.state.kv[key] = kv
        if lease:
            self.state.leases[lease]["keys"].add(key)
        self._event("put", kv, prev)
        return {"prev_kv": prev if body.get("prev_kv") else None}

    def _put(self, body: dict[str, Any]) -> dict[str, Any]:
        self.state.applied_writes += 1
        answer = self._apply_put(body, self.state.revision + 1)
        if "_status" not in answer:
            self.state.revision += 1
            self._notify()
        return answer

    def _select(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        key = body["key"]
        if body.get("prefix"):
            keys = [k for k in self.state.kv if k.startswith(key)]
        elif body.get("range_end"):
            keys = [k for k in self.state.kv if key <= k < body["range_end"]]
        else:
            keys = [key] if key in self.state.kv else []
        return [self.state.kv[k] for k in sorted(keys)]

    def _range(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("key"):
            return {"_status": 400, "code": "invalid-argument", "detail": "empty key"}
        kvs = self._select(body)
        count = len(kvs)
        if body.get("limit"):
            kvs = kvs[: body["limit"]]
        if body.get("count_only"):
            kvs = []
        return {"kvs": kvs, "more": len(kvs) < count and not body.get("count_only"), "count": count}

    def _delete_now(self, body: dict[str, Any], revision: int) -> dict[str, Any]:
        gone = self._select(body)
        for kv in gone:
            del self.state.kv[kv["key"]]
            tomb = {**kv, "value": "", "mod_revision": revision, "version": 0}
            self._event("delete", tomb, kv)
        return {"deleted": len(gone), "prev_kvs": gone if body.get("prev_kv") else []}

    def _delete(self, body: dict[str, Any]) -> dict[str, Any]:
        self.state.applied_writes += 1
        answer = self._delete_now(body, self.state.revision + 1)
        if answer["deleted"]:
            self.state.revision += 1
            self._notify()
        return answer

    def _holds(self, compare: dict[str, Any]) -> bool:
        kv = self.state.kv.get(compare["key"])
        target = compare["target"]
        actual = (kv or {}).get(target, "" if target == "value" else 0)
        operand = compare["value"]
        return bool(
            {
                "=": actual == operand,
                "!=": actual != operand,
                "<": actual < operand,
                ">": actual > operand,
            }[compare["result"]]
        )

    def _txn(self, body: dict[str, Any]) -> dict[str, Any]:
        self.state.applied_writes += 1
        succeeded = all(self._holds(c) for c in body["compare"])
        revision = self.state.revision + 1
        responses: list[dict[str, Any]] = []
        wrote = False
        for op in body["success" if succeeded else "failure"]:
            if "put" in op:
                responses.append({"put": self._apply_put(op["put"], revision)})
                wrote = True
            elif "delete" in op:
                responses.append({"delete": self._delete_now(op["delete"], revision)})
                wrote = True
            else:
                responses.append({"range": self._range(op["range"])})
        if wrote:
            self.state.revision = revision
            self._notify()
        return {"succeeded": succeeded, "responses": responses}

    def _compact(self, body: dict[str, Any]) -> dict[str, Any]:
        self.state.compact_revision = body["revision"]
        return {"compact_revision": body["revision"]}

    def _lease_grant(self, body: dict[str, Any]) -> dict[str, Any]:
        self.state.applied_writes += 1
        self.state.next_lease += 1
        self.state.leases[self.state.next_lease] = {"ttl_ms": body["ttl_ms"], "keys": set()}
        return {"id": self.state.next_lease, "ttl_ms": body["ttl_ms"]}

    def expire_lease(self, lease_id: int) -> None:
        """Expire a lease now (as the leader would), deleting its keys."""
        lease = self.state.leases.pop(lease_id)
        revision = self.state.revision + 1
        for key in sorted(lease["keys"]):
            if key in self.state.kv:
                self._delete_now({"key": key}, revision)
        if lease["keys"]:
            self.state.revision = revision
            self._notify()

    def _lease_revoke(self, body: dict[str, Any]) -> dict[str, Any]:
        if body["id"] not in self.state.leases:
            return {"_status": 404, "code": "not-found", "detail": "no such lease"}
        keys = len(self.state.leases[body["id"]]["keys"])
        self.expire_lease(body["id"])
        return {"id": body["id"], "keys_deleted": keys}

    def _lease_keepalive(self, body: dict[str, Any]) -> dict[str, Any]:
        lease = self.state.leases.get(body["id"])
        if lease is None:
            return {"_status": 404, "code": "not-found", "detail": "no such lease"}
        return {"id": body["id"], "ttl_ms": lease["ttl_ms"]}

    def _lease_ttl(self, body: dict[str, Any]) -> dict[str, Any]:
        lease = self.state.leases.get(body["id"])
        if lease is None:
            return {"_status": 404, "code": "not-found", "detail": "no such lease"}
        return {
            "id": body["id"],
            "ttl_ms": lease["ttl_ms"] - 100,
            "granted_ttl_ms": lease["ttl_ms"],
            "keys": sorted(lease["keys"]),
        }

    def _admin(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, **body}

    def _transfer(self, body: dict[str, Any]) -> dict[str, Any]:
        self.leader = (body.get("to") or (self.leader + 1) % self.count + 1) - 1
        return {"leader_id": self.leader + 1}

    def _snapshot(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"snapshot_index": 42}

    def _status_doc(self, index: int) -> dict[str, Any]:
        return {
            "member_id": index + 1,
            "role": "leader" if index == self.leader else "follower",
            "term": 2,
            "leader_id": self.leader + 1,
            "leader_client_url": self.urls[self.leader],
            "commit_index": 10,
            "applied_index": 10,
            "last_index": 10,
            "snapshot_index": 0,
            "members": [
                {
                    "id": i + 1,
                    "role": "voter",
                    "peer_url": f"127.0.0.1:{i}",
                    "client_url": url,
                    "match_index": 10,
                    "last_contact_ms": 5,
                    "healthy": True,
                }
                for i, url in enumerate(self.urls)
            ],
        }

    # -- watch ----------------------------------------------------------------------

    def _watch_handler(self, index: int) -> Any:
        async def serve(request: web.Request) -> web.StreamResponse:
            self.requests.append((index, "/v1/watch", dict(request.query)))
            fault = self._take_fault("/v1/watch", index)
            if index in self.down or (fault is not None and fault.kind == "drop"):
                assert request.transport is not None
                request.transport.close()
                raise ConnectionResetError
            if fault is not None and fault.kind == "problem":
                return problem(fault.code, fault.status, "injected", **fault.extra)
            if fault is not None and fault.kind == "end":
                resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await resp.prepare(request)
                return resp
            if fault is not None and fault.kind == "cancel":
                resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await resp.prepare(request)
                cancel = {"reason": fault.code, "resume_revision": 0, "message": "injected"}
                await resp.write(f"event: cancel\ndata: {json.dumps(cancel)}\n\n".encode())
                return resp
            start = int(request.query.get("start_revision", "0"))
            if start and start <= self.state.compact_revision:
                return problem(
                    "compacted", 410, "compacted", compact_revision=self.state.compact_revision
                )
            return await self._stream(request, index, start)

        return serve

    def _matches(self, query: Any, key: str) -> bool:
        if query.get("prefix") == "true":
            return key.startswith(query["key"])
        if query.get("range_end"):
            return bool(query["key"] <= key < query["range_end"])
        return bool(key == query["key"])

    async def _stream(self, request: web.Request, index: int, start: int) -> web.StreamResponse:
        self.watch_connects += 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        sent = 0
        position = 0 if start else len(self.state.history)
        while True:
            batch = [
                e
                for e in self.state.history[position:]
                if e["kv"]["mod_revision"] >= start and self._matches(request.query, e["kv"]["key"])
            ]
            position = len(self.state.history)
            # One message per revision, like the node.
            by_rev: dict[int, list[dict[str, Any]]] = {}
            for event in batch:
                by_rev.setdefault(event["kv"]["mod_revision"], []).append(event)
            for revision, events in sorted(by_rev.items()):
                if self.watch_too_slow_after_events is not None and sent >= (
                    self.watch_too_slow_after_events
                ):
                    self.watch_too_slow_after_events = None
                    cancel = {"reason": "too-slow", "resume_revision": revision, "message": "slow"}
                    await resp.write(f"event: cancel\ndata: {json.dumps(cancel)}\n\n".encode())
                    return resp
                if self.watch_cut_after_events is not None and sent >= self.watch_cut_after_events:
                    self.watch_cut_after_events = None
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                doc = {"header": self._header(index), "events": events}
                await resp.write(f"event: events\ndata: {json.dumps(doc)}\n\n".encode())
                sent += len(events)
            async with self.state.changed:
                try:
                    await asyncio.wait_for(self.state.changed.wait(), self.watch_progress_s)
                except TimeoutError:
                    progress = {"revision": self.state.revision}
                    await resp.write(
                        f": idle\nevent: progress\ndata: {json.dumps(progress)}\n\n".encode()
                    )


@contextmanager
def threaded(cluster: FakeCluster) -> Iterator[FakeCluster]:
    """Run ``cluster`` on a loop in a background thread (for blocking-client tests)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(cluster.__aenter__(), loop).result(10)
    cluster.loop = loop  # type: ignore[attr-defined]
    try:
        yield cluster
    finally:
        asyncio.run_coroutine_threadsafe(cluster.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
