"""The asyncio UDP adapter around `GossipCore`: the only module of synod.gossip that
does I/O. `python -m synod.gossip.udp` runs one member on its own.

Every datagram goes over one UDP socket (memberlist's default port is 7946, the one
the node image exposes). Push-pull full-state messages go over the same socket as
one datagram of at most `state_bytes_max` (60 KiB by default, about 700 members with
short metadata) instead of memberlist's TCP stream; the core marks them
(`Packet.full_state`) so a stream transport can be added without touching it.

Each membership event is logged as one JSON line (logger `synod.gossip`) with its
provenance: who suspected, who confirmed, who declared. That is the record Consul
operators reconstruct by hand from many nodes' logs (hashicorp/consul#1212).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace

from synod.gossip.core import GossipCore
from synod.gossip.settings import GossipSettings
from synod.gossip.state import MembershipEvent, Meta

log = logging.getLogger("synod.gossip")

DEFAULT_PORT = 7946
EVENTS_KEPT_MAX = 1000  # Recent membership events kept for status views.
DATAGRAMS_PER_WAKE_MAX = 10_000  # Packets one flush may send (the core bounds it lower).


def parse_address(address: str) -> tuple[str, int]:
    """("host", port) of "host:port". Raises ValueError when malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not host:port: {address!r}")
    return host, int(port)


def event_record(observer: str, event: MembershipEvent) -> dict[str, object]:
    """The JSON log record of one membership event."""
    return {
        "event": "gossip.membership",
        "observer": observer,
        "kind": str(event.kind),
        "member": event.name,
        "incarnation": event.incarnation,
        "at_ms": event.at_ms,
        "source": event.source,
        "suspected_by": event.suspected_by,
        "confirmed_by": list(event.confirmed_by),
    }


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, member: GossipUdp) -> None:
        self.member = member

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.member.on_datagram(data, f"{addr[0]}:{addr[1]}")

    def error_received(self, exc: Exception) -> None:
        log.debug("gossip socket error: %s", exc)  # ICMP unreachable: a peer is gone


class GossipUdp:
    """One gossip member on a UDP socket, driven by the event loop."""

    def __init__(
        self,
        settings: GossipSettings,
        name: str,
        bind: str,
        meta: Meta,
        *,
        advertise: str | None = None,
        seed: int | None = None,
        on_event: Callable[[MembershipEvent], None] | None = None,
    ) -> None:
        self.settings = settings
        self.bind = parse_address(bind)
        self.address = advertise or bind
        self._started = time.monotonic()
        rng_seed = seed if seed is not None else time.monotonic_ns()
        self.core = GossipCore(settings, name, self.address, meta, seed=rng_seed, now_ms=0)
        self.events: collections.deque[MembershipEvent] = collections.deque(maxlen=EVENTS_KEPT_MAX)
        self.on_event = on_event
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False

    def now_ms(self) -> int:
        """Milliseconds since this member started (monotonic)."""
        return int((time.monotonic() - self._started) * 1000)

    async def start(self, join: list[str]) -> None:
        """Bind the socket, contact the seeds and start the timer task."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=self.bind
        )
        self._transport = transport
        if join:
            self.core.join(join, self.now_ms())
        self._flush()
        self._task = asyncio.create_task(self._run(), name=f"gossip-{self.core.name}")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            delay_s = max(self.core.next_deadline_ms() - self.now_ms(), 0) / 1000
            if delay_s > 0:
                # Not asyncio.wait_for: on Python 3.11 it can swallow the cancellation
                # that close() sends when the wait ends at the same moment.
                self._wake.clear()
                timer = loop.call_later(delay_s, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    timer.cancel()
            else:
                await asyncio.sleep(0)  # Let datagrams in even when always behind.
            if self._closed:
                break
            self.core.tick(self.now_ms())
            self._flush()

    def on_datagram(self, data: bytes, address: str) -> None:
        """Hand one datagram to the core and send what it answers."""
        if self._closed:
            return
        self.core.receive(address, data, self.now_ms())
        self._flush()
        self._wake.set()  # deadlines may have moved earlier

    def _flush(self) -> None:
        transport = self._transport
        for packet in self.core.take_packets()[:DATAGRAMS_PER_WAKE_MAX]:
            if transport is None:
                break
            try:
                transport.sendto(packet.payload, parse_address(packet.address))
            except (OSError, ValueError) as error:
                log.debug("gossip send to %s failed: %s", packet.address, error)
        for event in self.core.take_events():
            self.events.append(event)
            log.info(json.dumps(event_record(self.core.name, event), sort_keys=True))
            if self.on_event is not None:
                self.on_event(event)

    async def leave(self) -> None:
        """Announce a voluntary departure (best effort, one gossip round)."""
        self.core.leave(self.now_ms())
        self._flush()

    async def close(self) -> None:
        """Stop the timer task and close the socket."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None


def settings_from_args(args: argparse.Namespace) -> GossipSettings:
    """GossipSettings from the command line's timing options."""
    return replace(
        GossipSettings(),
        probe_interval_ms=args.probe_interval_ms,
        probe_timeout_ms=args.probe_timeout_ms,
        gossip_interval_ms=args.gossip_interval_ms,
        push_pull_interval_ms=args.push_pull_interval_ms,
    )


async def _serve(args: argparse.Namespace) -> None:
    meta = Meta(args.client_url, args.zone, tuple(s for s in args.services.split(",") if s))
    member = GossipUdp(settings_from_args(args), args.name, args.bind, meta)
    await member.start(args.join)
    log.info(json.dumps({"event": "gossip.started", "name": args.name, "bind": args.bind}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await member.leave()
    await member.close()


def main(argv: list[str] | None = None) -> int:
    """Run one gossip member until SIGTERM (then it leaves). Returns the exit code."""
    defaults = GossipSettings()
    parser = argparse.ArgumentParser(prog="python -m synod.gossip.udp", description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--bind", default=f"127.0.0.1:{DEFAULT_PORT}", help="host:port")
    parser.add_argument("--join", action="append", default=[], help="a seed's host:port")
    parser.add_argument("--client-url", default="")
    parser.add_argument("--zone", default="")
    parser.add_argument("--services", default="", help="comma-separated")
    parser.add_argument("--probe-interval-ms", type=int, default=defaults.probe_interval_ms)
    parser.add_argument("--probe-timeout-ms", type=int, default=defaults.probe_timeout_ms)
    parser.add_argument("--gossip-interval-ms", type=int, default=defaults.gossip_interval_ms)
    parser.add_argument("--push-pull-interval-ms", type=int, default=defaults.push_pull_interval_ms)
    args = parser.parse_args(argv)
    try:
        parse_address(args.bind)
        settings_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
