"""W3C trace context: one trace across a follower and the leader it forwards to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from synod.node import tracing

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN_ID = "b7ad6b7169203331"

# Runs in a child process: configure_tracing installs a global TracerProvider once.
SCRIPT = textwrap.dedent(
    f"""
    import asyncio
    from aiohttp.test_utils import TestClient, TestServer
    from synod.node.api import NotLeader
    from synod.node.http import build_app
    from synod.node.tracing import configure_tracing
    from tests.unit.memory_node import MemoryNode

    configure_tracing("synod-test")

    async def main():
        leader, follower = MemoryNode(member_id=2), MemoryNode(member_id=1)
        server = TestServer(build_app(leader))
        await server.start_server()
        follower.not_leader = NotLeader(2, str(server.make_url("")).rstrip("/"))
        async with TestClient(TestServer(build_app(follower))) as client:
            headers = {{"traceparent": "00-{TRACE_ID}-{CALLER_SPAN_ID}-01"}}
            response = await client.post("/v1/kv/put", json={{"key": "k", "value": "v"}},
                                         headers=headers)
            assert response.status == 200, await response.text()
        await server.close()

    asyncio.run(main())
    """
)


def test_one_trace_across_follower_and_leader(tmp_path: Path) -> None:
    trace_file = tmp_path / "spans.jsonl"
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "file", "SYNOD_TRACE_FILE": str(trace_file)}
    env.pop("OTEL_SERVICE_NAME", None)
    subprocess.run([sys.executable, "-c", SCRIPT], env=env, check=True, timeout=60,
                   cwd=Path(__file__).parents[2])  # fmt: skip
    spans = [json.loads(line) for line in trace_file.read_text().splitlines()]
    server_spans = [s for s in spans if s["name"] == "POST /v1/kv/put"]
    assert len(server_spans) == 2
    assert {s["context"]["trace_id"] for s in server_spans} == {"0x" + TRACE_ID}
    follower = next(s for s in server_spans if s["parent_id"] == "0x" + CALLER_SPAN_ID)
    leader = next(s for s in server_spans if s is not follower)
    assert leader["parent_id"] == follower["context"]["span_id"]
    assert follower["kind"] == "SpanKind.SERVER"
    assert follower["attributes"]["http.route"] == "/v1/kv/put"
    assert follower["attributes"]["http.response.status_code"] == 200
    assert follower["resource"]["attributes"]["service.name"] == "synod-test"


def test_no_exporter_configured_installs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    tracing.configure_tracing("synod-test")
    assert not tracing._configured
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    tracing.configure_tracing("synod-test")
    assert not tracing._configured


def test_exporter_selection(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert tracing._exporter_names() == ["otlp"]
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console, file,none")
    assert tracing._exporter_names() == ["console", "file"]
    assert tracing._span_processor("console") is not None
    monkeypatch.delenv("SYNOD_TRACE_FILE", raising=False)
    assert tracing._span_processor("file") is None  # no path: skipped, not fatal
    monkeypatch.setenv("SYNOD_TRACE_FILE", str(tmp_path / "t.jsonl"))
    assert tracing._span_processor("file") is not None
    assert tracing._span_processor("zipkin-v9") is None


# A queued acquire: the client's span covers its acquire request and its long-poll.
LOCK_SCRIPT = textwrap.dedent(
    """
    import asyncio
    from synod.client.aio import AsyncClient
    from synod.node.tracing import configure_tracing
    from synod.services.commands import lease_grant_op
    from tests.unit.http_helpers import served_url
    from tests.unit.memory_node import MemoryNode

    configure_tracing("synod-test")

    async def main():
        node = MemoryNode()
        node.apply(lease_grant_op(10_000, 1))
        polls = {"route": "/v1/locks/wait", "method": "POST", "code": "200"}
        # timeout_s 0.5: each long-poll answers "still waiting" after 0.3 s.
        async with served_url(node) as url, AsyncClient([url], timeout_s=0.5) as client:
            holder = await client.lock("m", ttl_ms=10_000, own_lease=True).acquire()
            waiter = asyncio.create_task(client.lock("m", ttl_ms=10_000,
                                                     own_lease=True).acquire())
            # Until one poll has answered "still waiting" (bounded by the test's timeout).
            while not node.registry.get_sample_value("synod_http_requests_total", polls):
                await asyncio.sleep(0.01)
            await holder.release()
            await (await waiter).release()

    asyncio.run(main())
    """
)


def test_a_lock_acquire_is_one_client_span_over_its_requests(tmp_path: Path) -> None:
    trace_file = tmp_path / "spans.jsonl"
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "file", "SYNOD_TRACE_FILE": str(trace_file)}
    env.pop("OTEL_SERVICE_NAME", None)
    subprocess.run([sys.executable, "-c", LOCK_SCRIPT], env=env, check=True, timeout=60,
                   cwd=Path(__file__).parents[2])  # fmt: skip
    spans = [json.loads(line) for line in trace_file.read_text().splitlines()]
    acquires = [s for s in spans if s["name"] == "synod.lock.acquire"]
    assert len(acquires) == 2 and all(s["kind"] == "SpanKind.CLIENT" for s in acquires)
    waited = max(acquires, key=lambda s: s["attributes"]["synod.lock.token"])
    children = [s["name"] for s in spans if s["parent_id"] == waited["context"]["span_id"]]
    assert "POST /v1/locks/acquire" in children
    assert "POST /v1/locks/wait" in children  # the poll after "still waiting"
