"""Free loopback ports for tests that start servers.

The kernel may give the same free port to two calls in a row (once a node's client
port was the next node's peer port, and the second node could not bind), so a port is
never handed out twice by one process.
"""

from __future__ import annotations

import socket

PORT_PICKS_MAX = 100  # Attempts to find a port not handed out before.
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now and never returned before by this process.
    Raises AssertionError after PORT_PICKS_MAX attempts."""
    for _ in range(PORT_PICKS_MAX):
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise AssertionError(f"no fresh port in {PORT_PICKS_MAX} attempts")
