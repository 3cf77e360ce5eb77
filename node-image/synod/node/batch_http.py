"""`POST /v1/batch`: several independent API operations in one HTTP request.

A client with many calls in flight at once (the SDK's concurrent tasks) sends them
together: one request and one connection turn instead of one each, which is most of
what an operation costs in Python on both sides. Each operation is exactly the request
it stands for — the same route, body schema, session headers (exactly-once writes),
bounds and problem documents — and they run concurrently, so writes that arrive
together share a Raft append and its fsync. Nothing is atomic across operations: use a
txn for that.

The answer streams one JSON line per operation as it completes (NDJSON,
``{"i": index, "status": 200, "body": {...}}``), so a long-poll in the batch (a queued
lock acquire) never holds back the others. An operation that needs the leader on a
follower answers ``not-leader`` (with the leader's address) instead of being forwarded:
the client redirects it like any other request.

Operations allowed: POST routes with a JSON body and no path parameters under
`/v1/kv/`, `/v1/lease/`, `/v1/locks/` and `/v1/election/` (``routes.batchable``); the
whole batch is validated first (each body against its own route's schema), so one bad
operation refuses the batch and runs nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from synod.node.guard import require_json
from synod.node.routes import BATCH_OPS_MAX, NDJSON, RouteSpec, batchable
from synod.node.schema import parse_json, validate

__all__ = ["batch_handler"]

log = logging.getLogger(__name__)

# (request, spec, body, headers) -> (HTTP status, JSON document) of one operation; never
# raises for anything the operation may answer (problems are documents).
RunOp = Callable[[web.Request, RouteSpec, Any, Mapping[str, str]], Awaitable[tuple[int, Any]]]
# Reads the request body within the node's bounds (size, time, concurrent body reads).
ReadBody = Callable[[web.Request], Awaitable[bytes]]
Answer = tuple[int, tuple[int, Any]]  # (operation index, (HTTP status, document))


def _parse_ops(
    raw: bytes, batch: RouteSpec, routes: Mapping[str, RouteSpec]
) -> list[tuple[RouteSpec, Any, dict[str, str]]]:
    """The (spec, body, headers) of each operation, all validated against their routes'
    schemas. Raises Problem invalid-argument, too-large (more than BATCH_OPS_MAX)."""
    assert batch.body is not None
    document = parse_json(raw)
    validate(document, batch.body)
    parsed = []
    for op in document["ops"]:  # bound: BATCH_OPS_MAX (validated)
        ((path, body),) = op["call"].items()
        parsed.append((routes[path], body, op.get("headers", {})))
    assert 1 <= len(parsed) <= BATCH_OPS_MAX
    return parsed


def batch_handler(specs: list[RouteSpec], run_op: RunOp, read: ReadBody) -> Callable[
        [web.Request], Awaitable[web.StreamResponse]]:  # fmt: skip
    """The handler of `POST /v1/batch` over the batchable ``specs``."""
    routes = {spec.path: spec for spec in specs if batchable(spec)}
    batch = next(spec for spec in specs if spec.operation_id == "batch")
    assert routes and all(spec.route_id.startswith("POST ") for spec in routes.values())

    async def handler(request: web.Request) -> web.StreamResponse:
        require_json(request.headers.get("Content-Type"))  # as every body route (guard.py)
        ops = _parse_ops(await read(request), batch, routes)
        tasks = [asyncio.ensure_future(_indexed(i, run_op(request, *op))) for i, op in
                 enumerate(ops)]  # fmt: skip
        try:
            done, pending = await asyncio.wait(tasks, return_when=FIRST_COMPLETED)
            first = b"".join(_line(task.result()) for task in done)
            if not pending:  # all answered together (the usual case): one plain answer
                return web.Response(body=first, headers={"Content-Type": NDJSON})
            return await _stream(request, first, pending)
        finally:
            for task in tasks:  # bound: BATCH_OPS_MAX; the client went away, or done
                task.cancel()

    return handler


async def _stream(
    request: web.Request, first: bytes, pending: set[asyncio.Task[Answer]]
) -> web.StreamResponse:
    """Answer ``first`` now and each of ``pending`` as it completes (the answers ready
    together in one write). Raises nothing but cancellation."""
    response = web.StreamResponse(headers={"Content-Type": NDJSON})
    try:
        await response.prepare(request)
        await response.write(first)
        for _round in range(BATCH_OPS_MAX):  # bound: one answer at least per round
            if not pending:
                break
            done, pending = await asyncio.wait(pending, return_when=FIRST_COMPLETED)
            await response.write(b"".join(_line(task.result()) for task in done))
        await response.write_eof()
    except ConnectionError:
        # The client went away: what is left is stopped by the caller; writes already
        # proposed stay proposed (the session answers their retries).
        log.info("batch stream closed: the client went away")
    assert not pending or response.prepared
    return response


def _line(answer: Answer) -> bytes:
    index, (status, body) = answer
    line = {"i": index, "status": status, "body": body}
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


async def _indexed(index: int, work: Awaitable[tuple[int, Any]]) -> Answer:
    return index, await work
