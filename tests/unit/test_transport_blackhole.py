"""A black-holed peer link is found dead and re-dialled (issue 8, defect 2).

Before: no keepalive, read deadline or TCP_USER_TIMEOUT, so a link whose packets
vanish stayed "connected" until the kernel's retransmit backoff next fired (25 s
after a 30 s partition). Here two transports run inside a network namespace of
the test's own (`unshare -n`, so iptables DROP on its loopback touches nothing
else); the test drops every packet to and from one member's peer port, checks
both sides declare the link dead and keep re-dialling, heals, and checks the
link comes back and carries messages. Assertions are on counters; waits are
bounded polls.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from synod.node.transport import TransportLimits
from synod.raft.types import Message, MessageType
from tests.unit.transport_helpers import Member, addresses_for, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
CHILD_TIMEOUT_S = 120

# Election timeout 500 ms: dead after 1 s of silence, re-dial within 0.5 s.
LIMITS = TransportLimits.for_election_timeout(500)


def _iptables(action: str, port: int) -> None:
    for direction in ("--dport", "--sport"):
        rule = ["INPUT", "-i", "lo", "-p", "tcp", direction, str(port), "-j", "DROP"]
        subprocess.run(["iptables", action, *rule], check=True)


async def _child() -> dict[str, int]:
    addresses = addresses_for(1, 2)
    port_two = int(addresses[2].rsplit(":", 1)[1])
    one, two = Member(1, addresses, LIMITS), Member(2, addresses, LIMITS)
    await one.transport.start()
    await two.transport.start()
    try:
        beat = Message(MessageType.HEARTBEAT, to=2, source=1, term=3)
        one.transport.send([beat])
        await wait_until(lambda: len(two.received) == 1, "the first link")
        _iptables("-A", port_two)
        await wait_until(
            lambda: (
                one.transport.stats.links_declared_dead >= 1
                and two.transport.stats.links_declared_dead >= 1
            ),
            "both sides to declare the black-holed link dead",
        )
        dials_when_dead = one.transport.stats.dials
        await wait_until(
            lambda: one.transport.stats.dials >= dials_when_dead + 2, "re-dials (with backoff)"
        )
        _iptables("-D", port_two)
        one.transport.send([beat])
        await wait_until(lambda: len(two.received) >= 2, "the re-dialled link to carry a message")
        return {
            "one_dead": one.transport.stats.links_declared_dead,
            "two_dead": two.transport.stats.links_declared_dead,
            "one_connections": one.transport.stats.connections,
            "two_connections": two.transport.stats.connections,
            "received": len(two.received),
            "unreachable_reports": len(one.unreachable),
        }
    finally:
        await one.transport.stop()
        await two.transport.stop()


def child() -> None:
    """Runs inside the private network namespace: prints the counters as JSON."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    print(json.dumps(asyncio.run(_child())))


@pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("unshare", "iptables", "ip")),
    reason="needs root, unshare, iptables and ip (apt-get install iptables iproute2)",
)
def test_black_holed_link_is_declared_dead_and_redialled() -> None:
    code = "import tests.unit.test_transport_blackhole as t; t.child()"
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", code],
        check=False, cwd=REPO_ROOT, env=environment, capture_output=True, text=True,
        timeout=CHILD_TIMEOUT_S,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    counters = json.loads(result.stdout.strip().splitlines()[-1])
    assert counters["one_dead"] >= 1 and counters["two_dead"] >= 1
    assert counters["one_connections"] >= 2 and counters["two_connections"] >= 2
    assert counters["received"] >= 2
    assert counters["unreachable_reports"] >= 1, "the core heard the peer was unreachable"
