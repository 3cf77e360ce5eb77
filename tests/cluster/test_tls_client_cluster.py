"""Real `synod node` processes serving their client API over HTTPS with client
certificates required (issue 15): the SDK reaches them with ca/cert/key, a follower
forwards a write to the leader over HTTPS (presenting its own certificate), and a
client without a certificate is refused."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from synod.client import Client
from synod.tls import client_context
from tests.cluster.harness import WAIT_S_MAX, Cluster
from tests.tls_helpers import Authority, Leaf

pytestmark = pytest.mark.slow
POLL_S = 0.1


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[Cluster, Authority, Leaf]]:
    ca = Authority.create(tmp_path / "pki")
    for node_id in (1, 2, 3):
        ca.issue(f"node-{node_id}")  # 127.0.0.1 and localhost; server and client use
    alice = ca.issue("alice", client=True)
    env = {"SYNOD_TLS_CERT": str(ca.directory / "node-{id}.pem"),
           "SYNOD_TLS_KEY": str(ca.directory / "node-{id}.key"),
           "SYNOD_TLS_CLIENT_CA": str(ca.cert)}  # fmt: skip
    cluster = Cluster(tmp_path, 3, extra_env=env)
    # Members find each other's client API (forwarding) through these URLs.
    cluster.initial_cluster = cluster.initial_cluster.replace("@http://", "@https://")
    try:
        for node_id in cluster.nodes:
            cluster.start(node_id)
        yield cluster, ca, alice
    finally:
        cluster.stop_all()


def _https(url: str, context: ssl.SSLContext, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method="POST" if data else "GET")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5.0, context=context) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_https_cluster_serves_the_sdk_and_forwards_to_the_leader(
    secured: tuple[Cluster, Authority, Leaf],
) -> None:
    cluster, ca, alice = secured
    urls = {n: node.url.replace("http://", "https://") for n, node in cluster.nodes.items()}
    context = client_context(str(ca.cert), str(alice.cert), str(alice.key))
    deadline = time.monotonic() + WAIT_S_MAX
    leader = 0
    while not leader:  # until every member names the same leader (a follower must know it)
        assert time.monotonic() < deadline, f"no leader; logs in {cluster.root}"
        seen: set[int] = set()
        for url in urls.values():
            try:
                status, doc = _https(url, context, "/v1/cluster/status")
            except OSError:
                break
            seen.add(int(doc.get("leader_id") or 0) if status == 200 else 0)
        else:
            if len(seen) == 1 and 0 not in seen:
                leader = seen.pop()
        time.sleep(POLL_S)
    follower = next(n for n in urls if n != leader)
    status, answer = _https(urls[follower], context, "/v1/kv/put", {"key": "via", "value": "f"})
    assert status == 200, answer  # forwarded to the leader over HTTPS
    assert answer["header"]["member_id"] == leader
    endpoints = ",".join(url.removeprefix("https://") for url in urls.values())
    with Client(endpoints, ca=str(ca.cert), cert=str(alice.cert), key=str(alice.key)) as client:
        client.put("sdk", "yes")
        assert client.get("via").value == "f" and client.get("sdk").value == "yes"
    anonymous = client_context(str(ca.cert))  # trusts the nodes but shows no certificate
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        _https(urls[leader], anonymous, "/v1/cluster/status")
