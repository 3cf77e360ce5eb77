"""The SWIM + Lifeguard protocol core: events and `now_ms` in, packets and membership
events out. No socket, no clock, no task: the UDP adapter and the simulator drive it.

A shell calls `tick(now_ms)` no later than `next_deadline_ms()`, `receive(address,
payload, now_ms)` for every datagram, then sends `take_packets()` and handles
`take_events()`. Randomness comes from a seeded `random.Random`, so the simulator
replays a run exactly.

Protocol (memberlist's, see docs/gossip.md): every probe period one member, in a
shuffled round-robin order, is pinged; without an ack within the probe timeout,
`indirect_checks` members are asked to ping it (and to nack if they cannot); without
any ack by the end of the period it is suspected. Suspicions, refutations (a higher
incarnation) and deaths are piggybacked on every packet and gossiped every gossip
interval; a periodic push-pull exchanges full state with one random member.
Lifeguard: the probe interval and timeout are scaled by the local health score,
suspicion timeouts shrink with independent confirmations, and a suspect is told it
is suspected in the ping itself (the buddy system).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from synod.gossip.awareness import Awareness
from synod.gossip.broadcast import BroadcastQueue, retransmit_limit
from synod.gossip.messages import (
    SEQ_MAX,
    Ack,
    Alive,
    CodecError,
    Dead,
    MemberRecord,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Suspect,
    datagram_overhead_bytes,
    decode_datagram,
    encode_datagram,
    encode_message,
)
from synod.gossip.probe import ProbeOrder
from synod.gossip.settings import GossipSettings
from synod.gossip.state import (
    INCARNATION_MAX,
    EventKind,
    Member,
    MembershipEvent,
    MemberState,
    Meta,
)
from synod.gossip.suspicion import (
    Suspicion,
    expected_confirmations,
    suspicion_min_timeout_ms,
)

PUSH_PULL_SCALE_THRESHOLD = 32  # memberlist's pushPullScaleThreshold (members).
PIGGYBACK_OVERHEAD_BYTES = 0  # Messages are concatenated: no per-message framing.
RELAY_NACK_PERCENT = 80  # A relay nacks after this share of the probe timeout (memberlist).
NOW_MS_MAX = 2**62


def push_pull_interval_ms(interval_ms: int, members: int) -> int:
    """memberlist's pushPullScale: the interval grows with log2(N) beyond 32 members."""
    assert interval_ms > 0 and members >= 0
    if members <= PUSH_PULL_SCALE_THRESHOLD:
        return interval_ms
    multiplier = math.ceil(math.log2(members) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
    assert multiplier >= 2
    return multiplier * interval_ms


@dataclass(frozen=True, slots=True)
class Packet:
    """A datagram to send. `full_state` marks a push-pull (a shell may use a stream)."""

    address: str
    payload: bytes
    full_state: bool = False


@dataclass(slots=True)
class GossipStats:
    """Counters the node exports as `synod_gossip_*` metrics."""

    probes_sent: int = 0
    probes_failed: int = 0
    indirect_probes_sent: int = 0
    nacks_received: int = 0
    suspicions_raised: int = 0  # by our own failed probes
    suspicions_refuted: int = 0  # members we suspected (or heard suspected) that refuted
    self_refutations: int = 0
    stale_accusations: int = 0  # accusations of us at an older incarnation, answered again
    deaths_declared: int = 0  # by our own suspicion timers
    dead_revived: int = 0  # a member we held dead came back alive: a false positive
    decode_errors: int = 0
    packets_dropped: int = 0  # outbox full (the shell is not draining)
    events_dropped: int = 0  # event queue full (the shell is not draining)
    relays_dropped: int = 0
    members_refused: int = 0  # members_max reached
    push_pulls: int = 0
    join_attempts: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}


@dataclass(slots=True)
class _Probe:
    seq: int
    target: str
    ack_deadline_ms: int
    end_ms: int
    indirect_sent: bool = False
    expected_nacks: int = 0
    nackers: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Relay:
    origin_address: str
    origin_seq: int
    target: str
    nack_deadline_ms: int
    nack: bool


class GossipCore:
    """One member's view of the cluster and the protocol driving it."""

    def __init__(
        self,
        settings: GossipSettings,
        name: str,
        address: str,
        meta: Meta,
        *,
        seed: int,
        now_ms: int,
    ) -> None:
        assert 0 <= now_ms <= NOW_MS_MAX
        self.settings = settings
        self.name = name
        self.address = address
        self.now_ms = now_ms
        self.rng = random.Random(seed)
        self.members: dict[str, Member] = {
            name: Member(name, address, 0, MemberState.ALIVE, meta, now_ms)
        }
        self.suspicions: dict[str, Suspicion] = {}
        self.awareness = Awareness(settings.awareness_max_multiplier)
        self.broadcasts = BroadcastQueue(settings.broadcasts_max)
        self.order = ProbeOrder(self.rng, settings.members_max)
        self.stats = GossipStats()
        self._seq = self.rng.randrange(1 << 32)
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        # Stagger the timers so members started together do not tick in lockstep.
        self._next_probe_ms = now_ms + self.rng.randrange(settings.probe_interval_ms)
        self._next_gossip_ms = now_ms + self.rng.randrange(settings.gossip_interval_ms)
        self._next_push_pull_ms = now_ms + self.rng.randrange(settings.push_pull_interval_ms)
        self._packets: list[Packet] = []
        self._events: list[MembershipEvent] = []
        self._left = False
        self._join_addresses: list[str] = []
        self._next_join_ms = now_ms
        self._queue_alive(self.members[name])
        assert self.local.state is MemberState.ALIVE

    # --- views -------------------------------------------------------------------

    @property
    def local(self) -> Member:
        """The local member's own record."""
        return self.members[self.name]

    @property
    def incarnation(self) -> int:
        """The local member's incarnation."""
        return self.local.incarnation

    def live_count(self) -> int:
        """Members (ourselves included) not dead or left: memberlist's estimate of N."""
        count = sum(1 for m in self.members.values() if m.state <= MemberState.SUSPECT)
        assert count >= 1 or self._left
        return count

    def member_list(self) -> list[Member]:
        """Every known member (dead and left included), sorted by name."""
        return [self.members[name] for name in sorted(self.members)]

    def health_score(self) -> int:
        """Lifeguard's local health score (0 is healthy)."""
        return self.awareness.score

    def next_deadline_ms(self) -> int:
        """The latest time by which `tick` must be called."""
        deadlines = [self._next_gossip_ms, self._next_push_pull_ms]
        if self._join_addresses:
            deadlines.append(self._next_join_ms)
        if self._probe is None:
            deadlines.append(self._next_probe_ms)
        else:
            if not self._probe.indirect_sent:
                deadlines.append(self._probe.ack_deadline_ms)
            deadlines.append(self._probe.end_ms)
        deadlines.extend(s.deadline_ms() for s in self.suspicions.values())
        deadlines.extend(r.nack_deadline_ms for r in self._relays.values())
        deadline = min(deadlines)
        assert deadline >= 0
        return deadline

    def take_packets(self) -> list[Packet]:
        """Datagrams produced since the last call, to send in order."""
        packets, self._packets = self._packets, []
        assert not self._packets
        return packets

    def take_events(self) -> list[MembershipEvent]:
        """Membership events produced since the last call."""
        events, self._events = self._events, []
        assert not self._events
        return events

    # --- inputs ------------------------------------------------------------------

    def join(self, addresses: list[str], now_ms: int) -> None:
        """Contact seed members: a full-state push-pull to each."""
        self._advance(now_ms)
        assert len(addresses) <= self.settings.members_max
        self._join_addresses = [a for a in addresses if a != self.address]
        self._next_join_ms = now_ms
        self._tick_join()

    def _tick_join(self) -> None:
        """Push-pull to the seeds until one answers (or join_attempts_max)."""
        if not self._join_addresses or self.now_ms < self._next_join_ms:
            return
        if len(self.members) > 1 or self.stats.join_attempts >= self.settings.join_attempts_max:
            self._join_addresses = []  # joined (or given up: counted in join_attempts)
            return
        self.stats.join_attempts += 1
        self._next_join_ms = self.now_ms + self.settings.join_retry_ms
        for address in self._join_addresses:
            self._send_push_pull(address, join=True, reply=False)
        assert self._next_join_ms > self.now_ms

    def leave(self, now_ms: int) -> None:
        """Announce a voluntary departure (a dead message from ourselves)."""
        self._advance(now_ms)
        assert not self._left
        self._left = True
        self._on_dead(Dead(self.incarnation, self.name, self.name))
        self._gossip()
        # A member that left runs no protocol: no probe, relay, suspicion or join.
        self._probe = None
        self._relays.clear()
        self.suspicions.clear()
        self._join_addresses = []
        assert self.local.state is MemberState.LEFT

    def tick(self, now_ms: int) -> None:
        """Run every timer that is due at `now_ms`."""
        self._advance(now_ms)
        if self._left:
            idle_ms = now_ms + self.settings.push_pull_interval_ms
            self._next_gossip_ms = self._next_push_pull_ms = self._next_probe_ms = idle_ms
            return
        self._tick_join()
        self._tick_probe()
        for name, suspicion in list(self.suspicions.items()):
            if suspicion.deadline_ms() <= now_ms:
                self.stats.deaths_declared += 1
                self._on_dead(Dead(suspicion.incarnation, name, self.name))
        for seq, relay in list(self._relays.items()):
            if relay.nack_deadline_ms <= now_ms:
                del self._relays[seq]
                if relay.nack:
                    self._send(relay.origin_address, [Nack(relay.origin_seq, self.name)])
        if now_ms >= self._next_gossip_ms:
            self._next_gossip_ms = now_ms + self.settings.gossip_interval_ms
            self._gossip()
        if now_ms >= self._next_push_pull_ms:
            interval = push_pull_interval_ms(self.settings.push_pull_interval_ms, self.live_count())
            self._next_push_pull_ms = now_ms + interval
            peers = self._random_members(1, lambda m: m.state is MemberState.ALIVE)
            for peer in peers:
                self._send_push_pull(peer.address, join=False, reply=False)
        assert self.next_deadline_ms() > now_ms or self._probe is not None

    def receive(self, address: str, payload: bytes, now_ms: int) -> None:
        """Handle one datagram from `address`. Malformed input changes nothing but a
        counter."""
        self._advance(now_ms)
        assert address
        try:
            sender, messages = decode_datagram(payload)
        except CodecError:
            self.stats.decode_errors += 1
            return
        if self._left:
            return
        for message in messages:
            self._dispatch(sender, address, message)

    # --- protocol ------------------------------------------------------------------

    def _advance(self, now_ms: int) -> None:
        assert now_ms >= self.now_ms, (now_ms, self.now_ms)
        assert now_ms <= NOW_MS_MAX
        self.now_ms = now_ms

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % SEQ_MAX
        assert 0 <= self._seq < SEQ_MAX
        return self._seq

    def _dispatch(self, sender: str, address: str, message: Message) -> None:
        assert sender and address
        match message:
            case Ping():
                if message.target == self.name:
                    self._send(message.source_address, [Ack(message.seq, self.name)])
            case PingReq():
                self._relay(message)
            case Ack():
                self._on_ack(message)
            case Nack():
                probe = self._probe
                if probe is not None and message.seq == probe.seq:
                    self.stats.nacks_received += 1
                    probe.nackers.add(message.source)
            case Alive():
                self._on_alive(message)
            case Suspect():
                self._answer_stale_accusation(address, message)
                self._on_suspect(message)
            case Dead():
                self._answer_stale_accusation(address, message)
                self._on_dead(message)
            case PushPull():
                self._on_push_pull(sender, address, message)

    def _tick_probe(self) -> None:
        probe = self._probe
        now = self.now_ms
        if probe is not None and not probe.indirect_sent and now >= probe.ack_deadline_ms:
            self._send_indirect(probe)
        if probe is not None and now >= probe.end_ms:
            self._probe_failed(probe)
        if self._probe is None and now >= self._next_probe_ms:
            self._start_probe()
        assert self._probe is None or self._probe.end_ms > now

    def _start_probe(self) -> None:
        assert self._probe is None
        candidates = {
            m.name
            for m in self.members.values()
            if m.name != self.name and m.state <= MemberState.SUSPECT
        }
        interval = self.awareness.scale_ms(self.settings.probe_interval_ms)
        self._next_probe_ms = self.now_ms + interval
        target_name = self.order.next(candidates)
        if target_name is None:
            return
        target = self.members[target_name]
        seq = self._next_seq()
        timeout = self.awareness.scale_ms(self.settings.probe_timeout_ms)
        self._probe = _Probe(seq, target_name, self.now_ms + timeout, self.now_ms + interval)
        messages: list[Message] = [Ping(seq, target_name, self.name, self.address)]
        if target.state is MemberState.SUSPECT and self.settings.lifeguard:
            # Buddy system: the suspect hears of its suspicion in the ping itself.
            messages.append(Suspect(target.incarnation, target_name, self.name))
        self.stats.probes_sent += 1
        self._send(target.address, messages)
        assert self._probe.ack_deadline_ms < self._probe.end_ms

    def _send_indirect(self, probe: _Probe) -> None:
        assert not probe.indirect_sent
        probe.indirect_sent = True
        target = self.members.get(probe.target)
        if target is None or target.state > MemberState.SUSPECT:
            return
        relays = self._random_members(
            self.settings.indirect_checks,
            lambda m: m.name != probe.target and m.state is MemberState.ALIVE,
        )
        probe.expected_nacks = len(relays)
        for relay in relays:
            self.stats.indirect_probes_sent += 1
            request = PingReq(probe.seq, target.name, target.address, self.name, self.address, True)
            self._send(relay.address, [request])
        assert probe.expected_nacks <= self.settings.indirect_checks

    def _probe_failed(self, probe: _Probe) -> None:
        assert self._probe is probe
        self._probe = None
        self.stats.probes_failed += 1
        if self.settings.lifeguard:
            # Relays that did not even nack suggest that we are the slow one.
            if probe.expected_nacks > 0:
                missed = max(probe.expected_nacks - len(probe.nackers), 0)
            else:
                missed = 1
            self.awareness.apply_delta(missed)
        target = self.members.get(probe.target)
        if target is None or target.state > MemberState.SUSPECT:
            return
        self.stats.suspicions_raised += 1
        self._on_suspect(Suspect(target.incarnation, target.name, self.name))
        assert probe.target != self.name

    def _on_ack(self, ack: Ack) -> None:
        relay = self._relays.pop(ack.seq, None)
        if relay is not None:
            self._send(relay.origin_address, [Ack(relay.origin_seq, ack.source)])
            return
        probe = self._probe
        if probe is not None and ack.seq == probe.seq:
            self._probe = None
            if self.settings.lifeguard:
                self.awareness.apply_delta(-1)
        assert self._probe is None or self._probe.seq != ack.seq

    def _relay(self, request: PingReq) -> None:
        assert request.source
        if len(self._relays) >= self.settings.relays_max:
            self.stats.relays_dropped += 1
            return
        seq = self._next_seq()
        nack_after = self.settings.probe_timeout_ms * RELAY_NACK_PERCENT // 100
        self._relays[seq] = _Relay(
            request.source_address, request.seq, request.target, self.now_ms + nack_after,
            request.nack,
        )  # fmt: skip
        self._send(request.target_address, [Ping(seq, request.target, self.name, self.address)])
        assert len(self._relays) <= self.settings.relays_max

    def _on_alive(self, alive: Alive) -> None:
        member = self.members.get(alive.name)
        if alive.name == self.name:
            assert member is not None
            if alive.incarnation > member.incarnation and not self._left:
                self._refute(alive.incarnation)  # Someone speaks for us: correct them.
            return
        if member is None:
            if not self._make_room():
                self.stats.members_refused += 1
                return
            member = Member(alive.name, alive.address, alive.incarnation, MemberState.ALIVE,
                            alive.meta, self.now_ms)  # fmt: skip
            self.members[alive.name] = member
            self.order.add(alive.name)
            self._queue_alive(member)
            self._emit(EventKind.JOINED, member)
            return
        if alive.incarnation <= member.incarnation:
            return
        previous = member.state
        suspicion = self.suspicions.pop(alive.name, None)
        member.incarnation = alive.incarnation
        member.address = alive.address
        member.meta = alive.meta
        member.state = MemberState.ALIVE
        member.state_changed_ms = self.now_ms
        self._queue_alive(member)
        if previous is MemberState.SUSPECT:
            self.stats.suspicions_refuted += 1
            suspected_by = "" if suspicion is None else suspicion.suspected_by
            self._emit(EventKind.REFUTED, member, suspected_by=suspected_by)
        elif previous in (MemberState.DEAD, MemberState.LEFT):
            self.stats.dead_revived += 1
            self._emit(EventKind.JOINED, member)
        else:
            self._emit(EventKind.UPDATED, member)
        assert member.state is MemberState.ALIVE

    def _on_suspect(self, suspect: Suspect) -> None:
        member = self.members.get(suspect.name)
        if member is None:
            return
        if suspect.incarnation < member.incarnation:
            return
        suspicion = self.suspicions.get(suspect.name)
        if suspicion is not None:
            if suspicion.confirm(suspect.source):
                self._queue(suspect.name, suspect)
                self._emit(EventKind.CONFIRMED, member, source=suspect.source,
                           suspected_by=suspicion.suspected_by,
                           confirmed_by=tuple(suspicion.confirmers))  # fmt: skip
            return
        if member.state is not MemberState.ALIVE:
            return
        if suspect.name == self.name:
            if self.settings.refute and not self._left:
                self._refute(suspect.incarnation)
            return
        members = self.live_count()
        min_ms = suspicion_min_timeout_ms(
            self.settings.suspicion_mult, members, self.settings.probe_interval_ms
        )
        if self.settings.lifeguard:
            expected = expected_confirmations(self.settings.suspicion_mult, members)
            max_ms = self.settings.suspicion_max_timeout_mult * min_ms
        else:
            expected, max_ms = 0, min_ms
        member.incarnation = suspect.incarnation
        member.state = MemberState.SUSPECT
        member.state_changed_ms = self.now_ms
        self.suspicions[suspect.name] = Suspicion(
            suspect.incarnation, self.now_ms, expected, min_ms, max_ms, suspect.source
        )
        self._queue(suspect.name, suspect)
        self._emit(EventKind.SUSPECTED, member, source=suspect.source,
                   suspected_by=suspect.source)  # fmt: skip
        assert len(self.suspicions) <= self.settings.members_max

    def _on_dead(self, dead: Dead) -> None:
        member = self.members.get(dead.name)
        if member is None:
            return
        if dead.incarnation < member.incarnation:
            return
        if member.state in (MemberState.DEAD, MemberState.LEFT):
            return
        if dead.name == self.name and not self._left:
            if self.settings.refute:
                self._refute(dead.incarnation)
            return
        suspicion = self.suspicions.pop(dead.name, None)
        member.incarnation = dead.incarnation
        member.state = MemberState.LEFT if dead.source == dead.name else MemberState.DEAD
        member.state_changed_ms = self.now_ms
        self._queue(dead.name, dead)
        kind = EventKind.LEFT if member.state is MemberState.LEFT else EventKind.DEAD
        if suspicion is None:
            self._emit(kind, member, source=dead.source)
        else:
            self._emit(kind, member, source=dead.source, suspected_by=suspicion.suspected_by,
                       confirmed_by=tuple(suspicion.confirmers))  # fmt: skip
        assert dead.name not in self.suspicions

    def _answer_stale_accusation(self, address: str, message: Suspect | Dead) -> None:
        """The sender still accuses us at an older incarnation: our refutation did not
        reach it (it was cut off while the refutation spread). Tell it directly instead
        of waiting for a push-pull (memberlist ignores these)."""
        local = self.local
        if message.name != self.name or message.incarnation >= local.incarnation:
            return
        if self._left or not self.settings.refute:
            return
        self.stats.stale_accusations += 1
        self._send(address, [Alive(local.incarnation, self.name, self.address, local.meta)])
        assert local.incarnation > message.incarnation

    def _refute(self, accused_incarnation: int) -> None:
        local = self.local
        assert not self._left
        incarnation = min(max(local.incarnation, accused_incarnation) + 1, INCARNATION_MAX)
        assert incarnation > local.incarnation, "incarnation space exhausted"
        local.incarnation = incarnation
        self.stats.self_refutations += 1
        if self.settings.lifeguard:
            self.awareness.apply_delta(1)  # Being suspected hints that we are slow.
        self._queue_alive(local)
        self._emit(EventKind.SELF_REFUTED, local)

    def _on_push_pull(self, sender: str, address: str, message: PushPull) -> None:
        assert sender and address
        self.stats.push_pulls += 1
        for record in message.records[: self.settings.members_max]:
            if record.state is MemberState.ALIVE:
                self._on_alive(Alive(record.incarnation, record.name, record.address, record.meta))
            elif record.state is MemberState.LEFT:
                self._on_dead(Dead(record.incarnation, record.name, record.name))
            else:
                # Someone else's "dead" is only a suspicion here: it may be refuted.
                self._on_suspect(Suspect(record.incarnation, record.name, sender))
        if not message.reply:
            self._send_push_pull(address, join=message.join, reply=True)

    # --- output --------------------------------------------------------------------

    def _make_room(self) -> bool:
        if len(self.members) < self.settings.members_max:
            return True
        gone = [m for m in self.members.values() if m.state >= MemberState.DEAD]
        if not gone:
            return False
        oldest = min(gone, key=lambda m: m.state_changed_ms)
        del self.members[oldest.name]
        assert len(self.members) < self.settings.members_max
        return True

    def _random_members(self, count: int, accept: Callable[[Member], bool]) -> list[Member]:
        assert count >= 0 and self.name in self.members
        pool = [self.members[n] for n in sorted(self.members) if n != self.name]
        pool = [m for m in pool if accept(m)]
        chosen = self.rng.sample(pool, min(count, len(pool)))
        assert len(chosen) <= count
        return chosen

    def _gossip(self) -> None:
        horizon = self.now_ms - self.settings.gossip_to_the_dead_ms

        def gossip_target(member: Member) -> bool:
            if member.state <= MemberState.SUSPECT:
                return True
            return member.state is MemberState.DEAD and member.state_changed_ms >= horizon

        if not len(self.broadcasts):
            return
        for peer in self._random_members(self.settings.gossip_nodes, gossip_target):
            budget = self.settings.packet_bytes_max - datagram_overhead_bytes(self.name, 255)
            limit = retransmit_limit(self.settings.retransmit_mult, self.live_count())
            encoded = self.broadcasts.take(budget, PIGGYBACK_OVERHEAD_BYTES, max(limit, 1))
            if not encoded:
                break
            self._emit_packet(peer.address, encoded, full_state=False)
        assert len(self._packets) <= self.settings.outbox_packets_max

    def _send(self, address: str, messages: list[Message]) -> None:
        """Send `messages` to `address`, filling the packet with piggybacked facts."""
        assert messages and address
        encoded = [encode_message(m) for m in messages]
        used = sum(len(e) for e in encoded) + datagram_overhead_bytes(self.name, 255)
        budget = self.settings.packet_bytes_max - used
        if budget > 0 and len(self.broadcasts):
            limit = retransmit_limit(self.settings.retransmit_mult, self.live_count())
            encoded += self.broadcasts.take(budget, PIGGYBACK_OVERHEAD_BYTES, max(limit, 1))
        self._emit_packet(address, encoded, full_state=False)

    def _send_push_pull(self, address: str, *, join: bool, reply: bool) -> None:
        assert address
        records = tuple(
            MemberRecord(m.name, m.address, m.incarnation, m.state, m.meta)
            for m in self.member_list()
        )
        message = encode_message(PushPull(join, reply, records))
        if len(message) + datagram_overhead_bytes(self.name, 1) > self.settings.state_bytes_max:
            self.stats.packets_dropped += 1  # The table outgrew state_bytes_max: counted.
            return
        self._emit_packet(address, [message], full_state=True)

    def _emit_packet(self, address: str, encoded: list[bytes], *, full_state: bool) -> None:
        assert encoded
        if len(self._packets) >= self.settings.outbox_packets_max:
            self.stats.packets_dropped += 1
            return
        self._packets.append(Packet(address, encode_datagram(self.name, encoded), full_state))
        assert len(self._packets) <= self.settings.outbox_packets_max

    def _queue(self, name: str, message: Alive | Suspect | Dead) -> None:
        assert name == message.name
        self.broadcasts.queue(name, encode_message(message))
        assert len(self.broadcasts) <= self.settings.broadcasts_max

    def _queue_alive(self, member: Member) -> None:
        assert member.state is MemberState.ALIVE
        self._queue(member.name, Alive(member.incarnation, member.name, member.address,
                                       member.meta))  # fmt: skip

    def _emit(
        self,
        kind: EventKind,
        member: Member,
        *,
        source: str = "",
        suspected_by: str = "",
        confirmed_by: tuple[str, ...] = (),
    ) -> None:
        assert member.name
        if len(self._events) >= self.settings.events_max:
            self._events.pop(0)
            self.stats.events_dropped += 1
        event = MembershipEvent(kind, member.name, member.incarnation, self.now_ms, source,
                                confirmed_by, suspected_by)  # fmt: skip
        self._events.append(event)
        assert len(self._events) <= self.settings.events_max
