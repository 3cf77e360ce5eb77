"""One W3C trace follows a write from a follower, through forwarding, to the leader."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from tests.cluster.harness import Cluster, request


def test_one_trace_spans_two_node_processes(tmp_path: Path) -> None:
    env = {
        "OTEL_TRACES_EXPORTER": "file",
        "SYNOD_TRACE_FILE": str(tmp_path / "spans-{id}.jsonl"),
    }
    cluster = Cluster(tmp_path, 3, extra_env=env)
    try:
        cluster.start_all()
        leader = cluster.wait_for_leader()
        follower = next(n for n in cluster.nodes.values() if n.node_id != leader)

        def follower_knows_leader() -> bool:
            state = cluster.status(follower.node_id)
            return bool(state and state["leader_id"] == leader)

        cluster.wait_until(follower_knows_leader, "the follower to learn the leader")
        trace_id = secrets.token_hex(16)
        headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
        status, _ = request(
            follower.url, "POST", "/v1/kv/put", {"key": "t", "value": "v"}, headers=headers
        )
        assert status == 200
    finally:
        cluster.stop_all()  # Flushes the span processors.
    spans = []
    for path in tmp_path.glob("spans-*.jsonl"):
        for line in path.read_text().splitlines():
            span = json.loads(line)
            if span["context"]["trace_id"].removeprefix("0x") == trace_id:
                spans.append((path.name, span["name"]))
    processes = {name for name, _ in spans}
    assert len(processes) >= 2, spans
    assert any(name == "synod.propose" for _, name in spans), spans


def test_the_sdk_propagates_the_callers_trace(tmp_path: Path) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from synod.client import Client

    env = {"OTEL_TRACES_EXPORTER": "file", "SYNOD_TRACE_FILE": str(tmp_path / "s-{id}.jsonl")}
    cluster = Cluster(tmp_path, 1, extra_env=env)
    provider = TracerProvider()  # Local to this test: spans are only needed for their ids.
    try:
        cluster.start_all()
        with provider.get_tracer("test").start_as_current_span("caller") as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            with Client(cluster.nodes[1].url) as client:
                client.put("traced", "yes")
    finally:
        cluster.stop_all()
    ids = {
        json.loads(line)["context"]["trace_id"].removeprefix("0x")
        for line in (tmp_path / "s-1.jsonl").read_text().splitlines()
    }
    assert trace_id in ids
    assert trace.get_tracer_provider() is not provider
