"""A forged peer packet must not brick a cluster (issue 8, defect 1).

Before: the hello was a magic string and a claimed id, and decoded terms were
not range-checked, so one heartbeat claiming term 2^64-1 sent to a member's peer
port left every member a pre-candidate forever (the term is persisted), with
OverflowError in the transport's write loop. Here a real 3-member process
cluster receives that heartbeat three ways (old hello, hello with a wrong
cluster id, and hello with the right cluster id in a well-formed frame) and
must keep its term and keep committing writes.
"""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from synod.node.config import CLUSTER_ID_BYTES, load_config
from synod.node.transport import CLUSTER_ID_FILE, HELLO_MAGIC, FrameKind
from synod.raft import codec
from synod.raft.types import MessageType
from tests.cluster.harness import WAIT_S_MAX, Cluster, free_port, request_settled

TERM_2_64 = 2**64 - 1
HELLO = struct.Struct(f">8s{CLUSTER_ID_BYTES}sQQ")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path, 3)
    made.start_all()
    yield made
    made.stop_all()


def forged_heartbeat(source: int, to: int) -> bytes:
    message = [int(MessageType.HEARTBEAT), to, source, TERM_2_64, 0, 0, [], 0, False, 0, None, b""]
    return bytes([codec.FRAME_VERSION]) + msgpack.packb([message], use_bin_type=True)


def send_raw(port: int, payload: bytes) -> None:
    """Send `payload` to 127.0.0.1:`port` and read until the member closes (bounded)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S_MAX) as sock:
        sock.sendall(payload)
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass  # Reset by the member: also a refusal.


def terms(cluster: Cluster) -> dict[int, int]:
    found = {}
    for node_id in cluster.nodes:
        status = cluster.status(node_id)
        assert status is not None, f"member {node_id} does not answer"
        found[node_id] = int(status["term"])
    return found


def test_forged_heartbeat_with_term_2_64_changes_nothing(cluster: Cluster) -> None:
    leader = cluster.wait_for_leader()
    target = max(node_id for node_id in cluster.nodes if node_id != leader)
    sender = min(node_id for node_id in cluster.nodes if node_id != target)
    assert sender < target, "only a lower id may dial"
    port = cluster.nodes[target].peer_port
    cluster_id = load_config(
        ["--id", "1", "--initial-cluster", cluster.initial_cluster], {}
    ).cluster_id
    before = terms(cluster)
    frame = forged_heartbeat(sender, target)
    old_hello = struct.pack(">8sQ", b"SYNODP1\n", sender)
    send_raw(port, old_hello + struct.pack(">I", len(frame)) + frame)
    wrong = HELLO.pack(HELLO_MAGIC, bytes(CLUSTER_ID_BYTES), sender, target)
    send_raw(port, wrong + struct.pack(">IB", len(frame), FrameKind.MESSAGES) + frame)
    right = HELLO.pack(HELLO_MAGIC, cluster_id, sender, target)
    send_raw(port, right + struct.pack(">IB", len(frame), FrameKind.MESSAGES) + frame)

    status, answer = request_settled(
        cluster.nodes[leader].url, "POST", "/v1/kv/put", {"key": "after", "value": "forgery"}
    )
    assert status == 200, answer
    after = terms(cluster)
    assert all(term < 2**53 for term in after.values()), after
    # An election for unrelated reasons (a stalled CI machine) may bump the term by a
    # few; the forged term would have taken it to 2^64-1 and stuck it there.
    assert max(after.values()) <= max(before.values()) + 3, (before, after)
    log = cluster.nodes[target].log_path.read_text()
    assert "refused peer connection" in log and "refused a frame" in log


def test_member_refuses_to_start_on_another_clusters_data_dir(tmp_path: Path) -> None:
    """The cluster id is pinned in the data dir at first start; a member started
    later with another token (or membership) exits with a clear error."""
    data_dir = tmp_path / "node-1"
    peer, client = free_port(), free_port()
    members = f"1=127.0.0.1:{peer}@http://127.0.0.1:{client}"
    argv = [
        sys.executable, "-m", "synod.node.main", "--id", "1", "--data-dir", str(data_dir),
        "--listen-client", f"127.0.0.1:{client}", "--listen-peer", f"127.0.0.1:{peer}",
        "--initial-cluster", members,
    ]  # fmt: skip
    first = subprocess.Popen([*argv, "--cluster-token", "team-a/demo/uid-1"])
    try:
        deadline = time.monotonic() + WAIT_S_MAX
        while not (data_dir / CLUSTER_ID_FILE).exists():
            assert time.monotonic() < deadline, "the first start pins the cluster id"
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=WAIT_S_MAX)
    second = subprocess.run(
        [*argv, "--cluster-token", "team-a/demo/uid-2"],
        capture_output=True, text=True, timeout=WAIT_S_MAX, check=False,
    )  # fmt: skip
    assert second.returncode == 2, second.stderr
    assert "belongs to cluster id" in second.stderr
