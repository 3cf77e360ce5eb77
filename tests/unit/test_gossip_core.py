"""GossipCore driven by hand: join, probe, indirect probe, suspicion with provenance,
refutation, the buddy system, Lifeguard awareness, and bad input changing nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from synod.gossip.core import GossipCore, Packet
from synod.gossip.messages import (
    Alive,
    Dead,
    Ping,
    PingReq,
    Suspect,
    decode_datagram,
    encode_datagram,
    encode_message,
)
from synod.gossip.settings import GossipSettings
from synod.gossip.state import EventKind, MembershipEvent, MemberState, Meta

STEPS_MAX = 200_000
SETTINGS = GossipSettings()


class Net:
    """Cores exchanging datagrams with 1 ms latency; `drop(source, target)` cuts links."""

    def __init__(self, names: list[str], settings: GossipSettings = SETTINGS) -> None:
        self.now_ms = 0
        self.cores = {
            name: GossipCore(
                settings, name, name, Meta(f"http://{name}", "z1", ("kv",)), seed=index, now_ms=0
            )
            for index, name in enumerate(names)
        }
        self.in_flight: list[tuple[int, str, Packet]] = []
        self.events: dict[str, list[MembershipEvent]] = {name: [] for name in names}
        self.drop: Callable[[str, str], bool] = lambda source, target: False
        self.stopped: set[str] = set()

    def join_all(self) -> None:
        first = next(iter(self.cores))
        for name, core in self.cores.items():
            if name != first:
                core.join([first], self.now_ms)
        self.run_until(self.now_ms + 3000)

    def _collect(self, name: str) -> None:
        core = self.cores[name]
        self.events[name].extend(core.take_events())
        for packet in core.take_packets():
            if not self.drop(name, packet.address):
                self.in_flight.append((self.now_ms + 1, name, packet))

    def run_until(self, end_ms: int) -> None:
        for _ in range(STEPS_MAX):
            live = [n for n in self.cores if n not in self.stopped]
            for name in live:
                self._collect(name)
            due = [self.cores[n].next_deadline_ms() for n in live]
            due += [at for at, _, _ in self.in_flight]
            step = max(min(due), self.now_ms + 1)
            if step > end_ms:
                self.now_ms = end_ms
                return
            self.now_ms = step
            arrived = [f for f in self.in_flight if f[0] <= step]
            self.in_flight = [f for f in self.in_flight if f[0] > step]
            for _, source, packet in arrived:
                if packet.address not in self.stopped:
                    self.cores[packet.address].receive(source, packet.payload, step)
            for name in live:
                if self.cores[name].next_deadline_ms() <= step:
                    self.cores[name].tick(step)
        raise AssertionError("over STEPS_MAX")

    def state(self, observer: str, subject: str) -> MemberState:
        return self.cores[observer].members[subject].state

    def kinds(self, observer: str, subject: str) -> list[EventKind]:
        return [e.kind for e in self.events[observer] if e.name == subject]


def test_members_join_through_one_seed_and_learn_metadata() -> None:
    net = Net(["a", "b", "c", "d"])
    net.join_all()
    for core in net.cores.values():
        assert sorted(core.members) == ["a", "b", "c", "d"]
        assert all(m.state is MemberState.ALIVE for m in core.members.values())
    assert net.cores["d"].members["b"].meta == Meta("http://b", "z1", ("kv",))
    assert net.kinds("b", "c") == [EventKind.JOINED]
    assert net.cores["a"].stats.probes_sent > 0


def test_a_stopped_member_is_suspected_then_declared_dead_with_provenance() -> None:
    net = Net(["a", "b", "c", "d", "e"])
    net.join_all()
    net.stopped.add("e")
    net.run_until(net.now_ms + 40_000)
    for observer in "abcd":
        assert net.state(observer, "e") is MemberState.DEAD
        assert EventKind.DEAD in net.kinds(observer, "e")
    dead = [e for o in "abcd" for e in net.events[o] if e.kind is EventKind.DEAD]
    assert all(e.suspected_by in {"a", "b", "c", "d"} for e in dead)
    # Lifeguard: independent confirmations (k = 2 with five members) were recorded.
    assert any(e.confirmed_by for e in dead)
    local = [e for o in "abcd" for e in net.events[o] if e.kind is EventKind.DEAD and
             e.source == next(iter(net.cores))]  # fmt: skip
    assert all(e.incarnation == 0 for e in local)


def test_an_unreachable_direct_link_is_covered_by_indirect_probes() -> None:
    net = Net(["a", "b", "c", "d"])
    net.join_all()
    net.drop = lambda source, target: {source, target} == {"a", "b"}
    net.run_until(net.now_ms + 20_000)
    assert net.cores["a"].stats.indirect_probes_sent > 0
    assert net.state("a", "b") is MemberState.ALIVE
    assert EventKind.SUSPECTED not in net.kinds("a", "b")


def test_a_suspected_member_refutes_with_a_higher_incarnation() -> None:
    net = Net(["a", "b", "c"])
    net.join_all()
    cut = {"c"}
    net.drop = lambda source, target: (source in cut) != (target in cut)
    net.run_until(net.now_ms + 2500)
    assert MemberState.SUSPECT in {net.state("a", "c"), net.state("b", "c")}
    cut.clear()  # heal before the suspicion (4 s at least) times out
    net.run_until(net.now_ms + 10_000)
    assert net.cores["c"].incarnation >= 1
    assert EventKind.SELF_REFUTED in net.kinds("c", "c")
    assert net.state("a", "c") is MemberState.ALIVE and net.state("b", "c") is MemberState.ALIVE
    assert EventKind.REFUTED in net.kinds("a", "c") + net.kinds("b", "c")
    assert net.cores["c"].health_score() >= 0


def test_without_refutation_the_same_member_is_declared_dead() -> None:
    net = Net(["a", "b", "c"], replace(SETTINGS, refute=False))
    net.join_all()
    cut = {"c"}
    net.drop = lambda source, target: (source in cut) != (target in cut)
    net.run_until(net.now_ms + 2500)
    cut.clear()
    net.run_until(net.now_ms + 10_000)
    assert net.state("a", "c") is MemberState.DEAD


def test_a_ping_to_a_suspect_carries_its_suspicion_first() -> None:
    core = GossipCore(SETTINGS, "a", "a", Meta(), seed=1, now_ms=0)
    core.receive("b", encode_datagram("b", [encode_message(Alive(0, "b", "b", Meta()))]), 0)
    core.receive("c", encode_datagram("c", [encode_message(Suspect(0, "b", "c"))]), 0)
    assert core.members["b"].state is MemberState.SUSPECT
    core.take_packets()
    for now_ms in range(0, 3000, 10):
        core.tick(now_ms)
        pings = [p for p in core.take_packets() if p.address == "b"]
        messages = [m for p in pings for m in decode_datagram(p.payload)[1]]
        if any(isinstance(m, Ping) for m in messages):
            assert Suspect(0, "b", "a") in messages
            return
    raise AssertionError("b was never probed")


def test_failed_probes_without_nacks_raise_the_health_score_and_slow_probing() -> None:
    core = GossipCore(SETTINGS, "a", "a", Meta(), seed=1, now_ms=0)
    for name in ("b", "c"):
        core.receive(name, encode_datagram(name, [encode_message(Alive(0, name, name, Meta()))]), 0)
    for now_ms in range(0, 6000, 10):  # nobody answers anything
        core.tick(now_ms)
        core.take_packets()
    assert core.health_score() >= 2
    assert core.stats.probes_failed >= 2
    assert core.awareness.scale_ms(SETTINGS.probe_interval_ms) >= 3000


def test_a_ping_req_is_relayed_and_nacked_when_the_target_is_silent() -> None:
    core = GossipCore(SETTINGS, "b", "b", Meta(), seed=1, now_ms=0)
    request = PingReq(42, "c", "c", "a", "a", True)
    core.receive("a", encode_datagram("a", [encode_message(request)]), 0)
    (ping,) = [p for p in core.take_packets() if p.address == "c"]
    assert isinstance(decode_datagram(ping.payload)[1][0], Ping)
    core.tick(SETTINGS.probe_timeout_ms)
    nacks = [p for p in core.take_packets() if p.address == "a"]
    assert any(type(m).__name__ == "Nack" and m.seq == 42  # type: ignore[union-attr]
               for p in nacks for m in decode_datagram(p.payload)[1])  # fmt: skip


def test_bad_and_stale_input_changes_nothing() -> None:
    core = GossipCore(SETTINGS, "a", "a", Meta(), seed=1, now_ms=0)
    core.receive("b", encode_datagram("b", [encode_message(Alive(5, "b", "b", Meta()))]), 0)
    core.take_events()
    before = {n: (m.state, m.incarnation) for n, m in core.members.items()}
    for payload in (b"", b"garbage", b"\x01\xa1b\x01\x93\x05"):
        core.receive("b", payload, 1)
    assert core.stats.decode_errors == 3
    for stale in (Suspect(4, "b", "c"), Dead(3, "b", "c"), Alive(5, "b", "b", Meta("x"))):
        core.receive("c", encode_datagram("c", [encode_message(stale)]), 1)
    core.receive("c", encode_datagram("c", [encode_message(Suspect(0, "zz", "c"))]), 1)
    assert {n: (m.state, m.incarnation) for n, m in core.members.items()} == before
    assert core.take_events() == []


def test_a_death_heard_about_ourselves_is_refuted() -> None:
    core = GossipCore(SETTINGS, "a", "a", Meta(), seed=1, now_ms=0)
    core.receive("b", encode_datagram("b", [encode_message(Dead(0, "a", "b"))]), 5)
    assert core.incarnation == 1 and core.local.state is MemberState.ALIVE
    assert [e.kind for e in core.take_events()] == [EventKind.SELF_REFUTED]
    assert core.broadcasts.pending("a") == encode_message(Alive(1, "a", "a", Meta()))


def test_a_member_that_leaves_is_reported_left() -> None:
    net = Net(["a", "b", "c"])
    net.join_all()
    net.cores["c"].leave(net.now_ms)
    net.run_until(net.now_ms + 2000)
    assert net.state("a", "c") is MemberState.LEFT
    assert net.kinds("a", "c")[-1] is EventKind.LEFT


def test_a_stale_accusation_is_answered_directly_with_our_incarnation() -> None:
    core = GossipCore(SETTINGS, "a", "a", Meta(), seed=1, now_ms=0)
    core.receive("b", encode_datagram("b", [encode_message(Dead(0, "a", "b"))]), 5)
    assert core.incarnation == 1
    core.take_packets()
    core.receive("c", encode_datagram("c", [encode_message(Suspect(0, "a", "c"))]), 6)
    assert core.incarnation == 1  # no new refutation: c only lags behind
    (answer,) = core.take_packets()
    assert answer.address == "c"
    assert Alive(1, "a", "a", Meta()) in decode_datagram(answer.payload)[1]
    assert core.stats.stale_accusations == 1


def test_a_member_that_left_goes_quiet() -> None:
    core = GossipCore(SETTINGS, "a", "a", Meta(), seed=1, now_ms=0)
    core.receive("b", encode_datagram("b", [encode_message(Alive(0, "b", "b", Meta()))]), 0)
    core.leave(10)
    core.take_packets()
    core.tick(20)
    assert core.next_deadline_ms() > 20 + SETTINGS.gossip_interval_ms
    core.receive("b", encode_datagram("b", [encode_message(Ping(1, "a", "b", "b"))]), 30)
    assert core.take_packets() == []
