"""The SDK tells definite failures from indeterminate ones (docs/api.md, outcome column).

* an indeterminate answer (`outcome-unknown`) is retried through the session with the
  same seq, which learns the outcome;
* a write that ran out of attempts after an indeterminate one raises OutcomeUnknown,
  never a "not applied" error such as NoLeader;
* without a session, a definite failure (`no-leader`) is retried and an indeterminate
  one is not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from synod.client import AsyncClient, NoLeader, OutcomeUnknown
from synod.codes import CODES, PROBLEM_TYPE_PREFIX


class Script:
    """A fake node whose put answers come from a list (then 200)."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.puts: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/v1/session/open":
            return web.json_response({"header": {}, "client_id": 7})
        if request.path == "/v1/session/close":
            return web.json_response({"header": {}, "client_id": 7})
        if request.path == "/v1/cluster/status":
            return web.json_response({"leader_client_url": None, "members": []})
        self.puts.append({k: v for k, v in request.headers.items() if k.startswith("Synod-")})
        if self.answers:
            code = self.answers.pop(0)
            problem = {"type": PROBLEM_TYPE_PREFIX + code, "title": code, "code": code,
                       "status": CODES[code].status, "detail": code}  # fmt: skip
            return web.json_response(problem, status=CODES[code].status)
        return web.json_response({"header": {"revision": 5}, "prev_kv": None})


@contextlib.asynccontextmanager
async def fake(script: Script) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", script.handle)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def _no_sleep(_delay_s: float) -> None:
    return None


def _client(url: str, **options: Any) -> AsyncClient:
    return AsyncClient(url, discover_leader=False, sleep=_no_sleep, **options)


def test_outcome_unknown_is_retried_with_the_same_seq() -> None:
    async def run() -> None:
        script = Script(["outcome-unknown", "timeout"])
        async with fake(script) as url, _client(url) as client:
            assert (await client.put("k", "v")).revision == 5
        assert [p["Synod-Seq"] for p in script.puts] == ["1", "1", "1"]
        assert {p["Synod-Client-Id"] for p in script.puts} == {"7"}

    asyncio.run(run())


def test_exhausted_write_after_an_indeterminate_attempt_is_outcome_unknown() -> None:
    async def run() -> None:
        script = Script(["outcome-unknown", "no-leader", "no-leader"])
        async with fake(script) as url, _client(url, attempts_max=3) as client:
            with pytest.raises(OutcomeUnknown, match="may have been applied") as raised:
                await client.put("k", "v")
        assert not raised.value.definite
        definite = Script(["no-leader"] * 3)
        async with fake(definite) as url, _client(url, attempts_max=3) as client:
            with pytest.raises(NoLeader) as refused:
                await client.put("k", "v")
        assert refused.value.definite

    asyncio.run(run())


def test_sessionless_write_retries_definite_failures_only() -> None:
    async def run() -> None:
        script = Script(["no-leader"])
        async with fake(script) as url, _client(url, session=False) as client:
            assert (await client.put("k", "v")).revision == 5
        assert len(script.puts) == 2 and "Synod-Seq" not in script.puts[0]
        unknown = Script(["outcome-unknown"])
        async with fake(unknown) as url, _client(url, session=False) as client:
            with pytest.raises(OutcomeUnknown):
                await client.put("k", "v")
        assert len(unknown.puts) == 1  # re-sending could apply it twice

    asyncio.run(run())
