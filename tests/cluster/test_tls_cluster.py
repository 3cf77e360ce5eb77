"""Real `synod node` processes whose peer links are mutual TLS (issue 15): the cluster
forms and commits, and a rogue process speaking the peer protocol — with a certificate
of our CA for another host, one of another CA, none, or plain TCP — is refused while
the cluster keeps its term and keeps serving."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from synod.node.config import load_config
from synod.node.transport import HELLO_MAGIC
from synod.tls import client_context
from tests.cluster.harness import Cluster, request, request_settled
from tests.tls_helpers import Authority, Leaf
from tests.unit.test_transport import HELLO

pytestmark = pytest.mark.slow
ROGUE_TIMEOUT_S = 10.0
WRITES = 20


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Cluster, Authority]]:
    ca = Authority.create(tmp_path / "pki")
    for node_id in (1, 2, 3):
        ca.issue(f"member-{node_id}", ("IP:127.0.0.1",))
    env = {"SYNOD_PEER_TLS_CERT": str(ca.directory / "member-{id}.pem"),
           "SYNOD_PEER_TLS_KEY": str(ca.directory / "member-{id}.key"),
           "SYNOD_PEER_TLS_CA": str(ca.cert)}  # fmt: skip
    made = Cluster(tmp_path, 3, extra_env=env)
    try:
        made.start_all()
        yield made, ca
    finally:
        made.stop_all()


def _rogue(port: int, ca: Path, leaf: Leaf | None, cluster_id: bytes) -> bytes:
    """Say hello as member 1 to a member's peer port over TLS; what it answers."""
    context = client_context(str(ca), str(leaf.cert) if leaf else "", str(leaf.key) if leaf else "")
    context.check_hostname = False
    answer = b""
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=ROGUE_TIMEOUT_S)
        with raw, context.wrap_socket(raw) as tls:
            tls.sendall(HELLO.pack(HELLO_MAGIC, cluster_id, 1, 3))
            while chunk := tls.recv(65536):
                answer += chunk
    except (OSError, ssl.SSLError):
        pass
    return answer


def test_peer_links_are_mutual_tls_and_rogues_are_refused(
    cluster: tuple[Cluster, Authority],
) -> None:
    nodes, ca = cluster
    leader = nodes.wait_for_leader()
    url = nodes.nodes[leader].url
    for i in range(WRITES):
        status, _ = request_settled(url, "POST", "/v1/kv/put", {"key": f"k{i}", "value": "v"})
        assert status == 200
    term = nodes.status(leader)["term"]  # type: ignore[index]
    config = load_config(["--id", "3", "--initial-cluster", nodes.initial_cluster], {})
    target = nodes.nodes[3].peer_port if leader != 3 else nodes.nodes[2].peer_port
    impostor = ca.issue("impostor", ("IP:127.0.0.9",))
    stranger = Authority.create(ca.directory / "other", "other").issue("m1", ("IP:127.0.0.1",))
    # The peer port speaks TLS and shows its member's certificate.
    member = Leaf(ca.directory / "member-1.pem", ca.directory / "member-1.key")
    context = client_context(str(ca.cert), str(member.cert), str(member.key))
    raw = socket.create_connection(("127.0.0.1", target), timeout=ROGUE_TIMEOUT_S)
    with raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        shown = tls.getpeercert()
        assert shown is not None
        assert dict(x[0] for x in shown["subject"])["commonName"].startswith("member-")
    for leaf in (impostor, stranger, None):
        assert _rogue(target, ca.cert, leaf, config.cluster_id) == b""
    target_id = next(n for n, node in nodes.nodes.items() if node.peer_port == target)
    log = nodes.nodes[target_id].log_path.read_text()
    assert "not 127.0.0.1 (member 1's host)" in log, "the impostor was refused by name"
    with socket.create_connection(("127.0.0.1", target), timeout=ROGUE_TIMEOUT_S) as plain:
        plain.sendall(HELLO.pack(HELLO_MAGIC, config.cluster_id, 1, 3))
        with contextlib.suppress(OSError):
            assert plain.recv(65536) == b""
    status, answer = request(url, "POST", "/v1/kv/put", {"key": "after", "value": "v"})
    assert status == 200, answer
    after = nodes.status(nodes.wait_for_leader())
    assert after is not None and after["term"] == term, "no election was caused"
    body = {"key": "k", "prefix": True, "serializable": True, "count_only": True}

    def holds_every_write(node_id: int) -> bool:
        answer = request(nodes.nodes[node_id].url, "POST", "/v1/kv/range", body)[1]
        return bool(answer.get("count") == WRITES)

    for node_id in nodes.nodes:  # replicated over the TLS links
        nodes.wait_until(lambda n=node_id: holds_every_write(n), f"member {node_id}")
