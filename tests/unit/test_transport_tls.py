"""Mutual TLS on the peer links (issue 15): a connection is accepted only with a
certificate of the peer CA naming the host of the member its hello claims; strangers,
other CAs and plain TCP are refused and never replace the live link; rotated files are
used by new links without a restart."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from synod.node.transport import HELLO_MAGIC, PeerTls, certificate_names, names_host
from synod.raft.types import Message, MessageType
from synod.tls import client_context
from tests.ports import free_port
from tests.tls_helpers import Authority, Leaf
from tests.unit.test_transport import HELLO
from tests.unit.transport_helpers import CLUSTER_ID, Member, wait_until

HOSTS = {1: "127.0.0.1", 2: "127.0.0.2"}  # one loopback host per member
READ_TIMEOUT_S = 10.0


def heartbeat(source: int, to: int, term: int = 5) -> Message:
    return Message(MessageType.HEARTBEAT, to=to, source=source, term=term, commit=1)


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Authority, dict[int, Leaf]]:
    ca = Authority.create(tmp_path / "pki")
    leaves = {n: ca.issue(f"member-{n}", (f"IP:{host}",)) for n, host in HOSTS.items()}
    return ca, leaves


def _tls(ca: Authority, leaf: Leaf) -> PeerTls:
    return PeerTls(str(leaf.cert), str(leaf.key), str(ca.cert))


async def _rogue(address: str, claimed: int, ca: Path, leaf: Leaf | None) -> bytes:
    """Speak TLS to ``address`` with ``leaf`` (None: no certificate), say hello as
    member ``claimed`` and return what the member answers before closing."""
    context = client_context(str(ca), str(leaf.cert) if leaf else "", str(leaf.key) if leaf else "")
    context.check_hostname = False
    answer = b""
    host, port = address.rsplit(":", 1)
    try:
        reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
        writer.write(HELLO.pack(HELLO_MAGIC, CLUSTER_ID, claimed, 2))
        await writer.drain()
        while chunk := await asyncio.wait_for(reader.read(65536), READ_TIMEOUT_S):
            answer += chunk
    except (ConnectionError, OSError):
        pass
    return answer


def test_members_link_over_mutual_tls_and_rogues_are_refused(
    pki: tuple[Authority, dict[int, Leaf]],
) -> None:
    ca, leaves = pki
    stranger_ca = Authority.create(ca.directory / "other", "other")
    impostor = ca.issue("impostor", ("IP:127.0.0.3",))  # our CA, another host

    async def test() -> None:
        addresses = {n: f"{host}:{free_port(host)}" for n, host in HOSTS.items()}
        one = Member(1, addresses, tls=_tls(ca, leaves[1]))
        two = Member(2, addresses, tls=_tls(ca, leaves[2]))
        await one.transport.start()
        await two.transport.start()
        try:
            one.transport.send([heartbeat(1, 2)])
            await wait_until(lambda: len(two.received) == 1, "1 -> 2 over TLS")
            two.transport.send([heartbeat(2, 1)])
            await wait_until(lambda: len(one.received) == 1, "2 -> 1 over TLS")
            refused_before = two.transport.stats.hellos_refused
            # Our CA but a certificate for another host, claiming to be member 1.
            assert await _rogue(addresses[2], 1, ca.cert, impostor) == b""
            assert two.transport.stats.hellos_refused == refused_before + 1
            # Another CA, and no certificate at all: the handshake itself fails.
            other = stranger_ca.issue("m1", ("IP:127.0.0.1",))
            assert await _rogue(addresses[2], 1, ca.cert, other) == b""
            assert await _rogue(addresses[2], 1, ca.cert, None) == b""
            # Plain TCP is not TLS: nothing is answered.
            reader, writer = await asyncio.open_connection(*addresses[2].rsplit(":", 1))
            writer.write(HELLO.pack(HELLO_MAGIC, CLUSTER_ID, 1, 2))
            with contextlib.suppress(ConnectionError, OSError):
                assert await asyncio.wait_for(reader.read(), READ_TIMEOUT_S) == b""
            writer.close()
            assert two.transport.stats.connections == 1, "the real link was never replaced"
            one.transport.send([heartbeat(1, 2, term=6)])
            await wait_until(lambda: len(two.received) == 2, "the real link still works")
        finally:
            await one.transport.stop()
            await two.transport.stop()

    asyncio.run(test())


def test_rotated_peer_certificates_are_used_by_new_links(
    pki: tuple[Authority, dict[int, Leaf]],
) -> None:
    ca, leaves = pki
    renewed = ca.issue("member-2-renewed", ("IP:127.0.0.2",))
    live = Leaf(ca.directory / "live-2.pem", ca.directory / "live-2.key")
    live.cert.write_bytes(leaves[2].cert.read_bytes())
    live.key.write_bytes(leaves[2].key.read_bytes())

    async def test() -> None:
        addresses = {n: f"{host}:{free_port(host)}" for n, host in HOSTS.items()}
        one = Member(1, addresses, tls=_tls(ca, leaves[1]))
        tls_two = _tls(ca, live)
        two = Member(2, addresses, tls=tls_two)
        await one.transport.start()
        await two.transport.start()
        try:
            one.transport.send([heartbeat(1, 2)])
            await wait_until(lambda: len(two.received) == 1, "the first link")
            live.key.write_bytes(renewed.key.read_bytes())
            live.cert.write_bytes(renewed.cert.read_bytes())
            assert tls_two.server.reload_if_changed() is True
            one.transport.send([heartbeat(1, 2, term=6)])  # the open link keeps working
            await wait_until(lambda: len(two.received) == 2, "the open link")
            # A new link (member 1 dials again) is shown the renewed certificate.
            context = client_context(str(ca.cert), str(leaves[1].cert), str(leaves[1].key))
            host, port = addresses[2].rsplit(":", 1)
            _reader, writer = await asyncio.open_connection(host, int(port), ssl=context,
                                                            server_hostname=host)  # fmt: skip
            shown = writer.get_extra_info("peercert")
            writer.close()
            assert dict(x[0] for x in shown["subject"])["commonName"] == "member-2-renewed"
        finally:
            await one.transport.stop()
            await two.transport.stop()

    asyncio.run(test())


def test_certificate_names_and_host_matching() -> None:
    cert = {"subject": ((("commonName", "ignored-with-sans"),),),
            "subjectAltName": (("DNS", "DB-0.peers.ns.svc"), ("IP Address", "10.0.0.7"),
                               ("DNS", "*.peers.other.svc"), ("URI", "spiffe://x"))}  # fmt: skip
    names = certificate_names(cert)
    assert names == {"db-0.peers.ns.svc", "10.0.0.7", "*.peers.other.svc"}
    assert names_host(names, "db-0.peers.ns.svc") and names_host(names, "DB-0.Peers.ns.svc.")
    assert names_host(names, "10.0.0.7") and not names_host(names, "10.0.0.8")
    assert names_host(names, "db-4.peers.other.svc")
    assert not names_host(names, "a.b.peers.other.svc") and not names_host(names, "db-1.ns.svc")
    assert certificate_names({"subject": ((("commonName", "Node-1"),),)}) == {"node-1"}
    assert names_host({"::1"}, "[::1]") and not names_host(set(), "x")
