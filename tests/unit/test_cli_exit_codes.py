"""Exit codes a script can trust: only a Synod problem document means "not found", and
a write whose outcome is unknown is told apart from one that surely failed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from click.testing import CliRunner, Result

from synod.cli.main import cli
from synod.cli.output import (
    EXIT_NOT_FOUND,
    EXIT_OUTCOME_UNKNOWN,
    EXIT_UNAVAILABLE,
    exit_code_for,
)
from synod.client.errors import PROBLEM_TYPE_PREFIX, ClockRollback, error_from_problem
from synod.node.api import NoLeader, OutcomeUnknown, Session
from synod.node.http import build_app
from tests.unit.http_helpers import async_test
from tests.unit.memory_node import MemoryNode


@contextlib.asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[str]:
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def _invoke(app: web.Application, *args: str) -> Result:
    async with served(app) as url:
        # The CLI's blocking client runs its own loop: keep it off this one.
        return await asyncio.to_thread(
            CliRunner().invoke, cli, [*args, "--endpoints", url, "--attempts", "2"]
        )


def _foreign_404_app() -> web.Application:
    async def not_synod(request: web.Request) -> web.Response:
        return web.Response(status=404, text="<html>no such page</html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", not_synod)
    return app


@async_test
async def test_a_404_that_is_not_a_synod_problem_is_not_key_absent() -> None:
    result = await _invoke(_foreign_404_app(), "kv", "get", "k")
    assert result.exit_code not in (0, EXIT_NOT_FOUND), result.output
    assert "Synod" in result.output
    node = MemoryNode()
    absent = await _invoke(build_app(node, registry=node.registry), "kv", "get", "k")
    assert absent.exit_code == EXIT_NOT_FOUND, absent.output


class _Failing(MemoryNode):
    """Opens sessions, then fails every put with ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def write(self, op: dict[str, Any], session: Session | None) -> dict[str, Any]:
        if op["kind"] == "put":
            raise self.error
        return await super().write(op, session)


@async_test
async def test_write_of_unknown_outcome_exits_8_and_a_refused_one_5() -> None:
    unknown = _Failing(OutcomeUnknown("answer lost"))
    result = await _invoke(build_app(unknown, registry=unknown.registry), "kv", "put", "k", "v")
    assert result.exit_code == EXIT_OUTCOME_UNKNOWN, result.output
    assert "may have been applied" in result.output
    refused = _Failing(NoLeader("no leader"))
    result = await _invoke(build_app(refused, registry=refused.registry), "kv", "put", "k", "v")
    assert result.exit_code == EXIT_UNAVAILABLE, result.output


class _NoOp(MemoryNode):
    async def admin_remove(self, node_id: int) -> dict[str, Any]:
        return {"ok": True, "changed": False, "message": f"node {node_id} is not a member"}


@async_test
async def test_admin_no_op_says_nothing_changed() -> None:
    node = _NoOp()
    result = await _invoke(build_app(node, registry=node.registry), "member", "remove", "9")
    assert result.exit_code == 0, result.output
    assert "nothing to do: node 9 is not a member" in result.output
    assert "removed" not in result.output


def test_a_clock_rollback_exits_as_unavailable() -> None:
    """Nothing was issued and a later call may succeed: 5, like no leader (not 1)."""
    error = error_from_problem(503, {
        "type": PROBLEM_TYPE_PREFIX + "clock-rollback", "title": "Clock rolled back",
        "status": 503, "detail": "the clock is 80 ms behind", "behind_ms": 80,
    })  # fmt: skip
    assert isinstance(error, ClockRollback)
    assert exit_code_for(error) == EXIT_UNAVAILABLE
