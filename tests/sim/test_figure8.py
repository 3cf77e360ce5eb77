"""Figure 8 of the Raft paper, scripted step by step, under the simulator's checkers.

With the real commit rule the run is safe. With the deliberately broken rule
("commit an entry of a previous term once a majority stores it") the old entry
is committed and later overwritten, and the safety monitor must say so.
"""

from __future__ import annotations

import pytest

from synod.raft.log import RaftLog
from synod.raft.types import Message, MessageType
from synod.sim.invariants import SafetyMonitor, SafetyViolation
from tests.unit.raft_net import Network


def _isolate_only(net: Network, *nodes: int) -> None:
    net.heal()
    for node_id in nodes:
        net.isolate(node_id)


def _without_term_4_entries(message: Message) -> bool:
    """Deliver appends, but lose every entry of term 4 on the way."""
    if message.type == MessageType.APPEND:
        message.entries = [entry for entry in message.entries if entry.term != 4]
    return True


def run_figure_8(net: Network) -> None:
    """(a)-(d) of Figure 8 with five servers S1..S5."""
    net.campaign(1)  # S1 leads term 2; its no-op (index 2) reaches everyone.
    # (a) S1 replicates index 3 (term 2) to S2 only.
    net.cut |= {(1, 3), (1, 4), (1, 5)}
    net.propose(1, b"x")
    # (b) S1 crashes; S5 wins term 3 with S3, S4 and appends index 3 (term 3) alone.
    _isolate_only(net, 1)
    net.dropped_types.add(MessageType.APPEND)
    net.campaign(5)
    assert net.peers[5].node.term == 3
    # (c) S5 crashes; S1 wins term 4 and spreads index 3 (term 2) to S3, but its own
    # term-4 no-op never leaves.
    _isolate_only(net, 5)
    net.restart(1)
    net.deliver_if = _without_term_4_entries
    net.campaign(1)  # Term 3 is taken (S3, S4 voted for S5): S1 loses, then wins term 4.
    net.campaign(1)
    assert net.peers[1].node.term == 4
    for _ in range(3):
        net.send(Message(MessageType.LOCAL_BEAT, to=1, source=1))
    # (d) S1 crashes; S5 wins term 5 (its last term 3 beats term 2) and overwrites index 3.
    _isolate_only(net, 1)
    net.restart(5)
    net.campaign(5)  # Term 4 is S1's: S5 loses, then wins term 5.
    net.campaign(5)
    net.tick(5, 3)


def test_figure_8_is_safe_with_the_current_term_rule() -> None:
    net = Network(5, pre_vote=False, check_quorum=False, append_batch_bytes_max=1)
    monitor = SafetyMonitor()
    net.monitor_with(monitor)
    run_figure_8(net)
    assert net.peers[1].node.log.committed == 2, "index 3 (term 2) was never committed"
    assert net.peers[5].node.term == 5


def test_broken_commit_rule_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def commit_by_counting(self: RaftLog, index: int, term: int) -> bool:
        if index > self.committed:
            self.commit_to(index)
            return True
        return False

    monkeypatch.setattr(RaftLog, "maybe_commit", commit_by_counting)
    net = Network(5, pre_vote=False, check_quorum=False, append_batch_bytes_max=1)
    net.monitor_with(SafetyMonitor())
    with pytest.raises(SafetyViolation, match=r"leader completeness|state machine safety"):
        run_figure_8(net)
