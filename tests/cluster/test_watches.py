"""Process-cluster tier: watches on a follower of real `synod node` processes.

Writes to other keys and Raft traffic must neither keep an idle stream from getting
its progress message nor keep the watcher of a client that left.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.harness import WAIT_S_MAX, Cluster, request, request_settled

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path, 3)
    made.start_all()
    yield made
    made.stop_all()


def follower(cluster: Cluster) -> tuple[str, int]:
    leader = cluster.wait_for_leader()
    node = next(n for node_id, n in cluster.nodes.items() if node_id != leader)
    return node.url, node.client_port


def open_watch(port: int, key: str) -> socket.socket:
    """A watch over a raw connection, read up to the end of the response headers."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S_MAX)
    sock.sendall(f"GET /v1/watch?key={key} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "connection closed before the stream started"
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def next_sse(sock: socket.socket) -> tuple[str, dict[str, object]]:
    """The next SSE message on a chunked stream (chunk framing lines are skipped)."""
    buffer = b""
    while not re.search(rb"event: \w+\r?\ndata: [^\n]*\n", buffer):
        chunk = sock.recv(4096)
        assert chunk, "stream ended"
        buffer += chunk
    match = re.search(rb"event: (\w+)\r?\ndata: ([^\n]*)\n", buffer)
    assert match is not None
    return match.group(1).decode(), json.loads(match.group(2))


def live_watchers(url: str) -> int:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(r"^synod_watchers(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
    assert match is not None, "synod_watchers missing from /metrics"
    return int(float(match.group(1)))


def test_idle_follower_stream_gets_progress_and_leaving_clients_free_watchers(
    cluster: Cluster,
) -> None:
    url, port = follower(cluster)
    status, _ = request_settled(url, "POST", "/v1/kv/put", {"key": "other", "value": "v"})
    assert status == 200
    idle = open_watch(port, "idle")
    progressed = threading.Event()

    def write_elsewhere() -> None:
        # Paced writes to another key: before, each applied entry woke every stream and
        # restarted its progress timer, so the progress never came.
        for i in range(int(WAIT_S_MAX / 0.1)):
            if progressed.wait(0.1):
                return
            request(url, "POST", "/v1/kv/put", {"key": "other", "value": str(i)})

    writer = threading.Thread(target=write_elsewhere, daemon=True)
    writer.start()
    try:
        event, data = next_sse(idle)
    finally:
        progressed.set()
        writer.join(timeout=WAIT_S_MAX)
    assert event == "progress" and isinstance(data["revision"], int) and data["revision"] >= 3
    fin, rst = open_watch(port, "fin"), open_watch(port, "rst")
    cluster.wait_until(lambda: live_watchers(url) == 3, "three watchers")
    fin.close()  # FIN
    rst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    rst.close()  # RST
    # Before, a watcher stayed until a key it covers was written.
    cluster.wait_until(lambda: live_watchers(url) == 1, "the two left watchers freed")
    idle.close()
    cluster.wait_until(lambda: live_watchers(url) == 0, "every watcher freed")
