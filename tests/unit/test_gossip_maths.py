"""The pure maths of synod.gossip, table-tested against memberlist's own tables
(util_test.go, suspicion_test.go, awareness_test.go)."""

from __future__ import annotations

import pytest

from synod.gossip.awareness import Awareness
from synod.gossip.broadcast import BroadcastQueue, retransmit_limit
from synod.gossip.core import push_pull_interval_ms
from synod.gossip.settings import GossipSettings
from synod.gossip.suspicion import (
    Suspicion,
    expected_confirmations,
    suspicion_min_timeout_ms,
    suspicion_timeout_ms,
)


@pytest.mark.parametrize(
    ("members", "expected_ms"),
    [(5, 1000), (10, 1000), (50, 1698), (100, 2000), (500, 2698), (1000, 3000)],
)
def test_suspicion_min_timeout_scales_with_log10_of_members(members: int, expected_ms: int) -> None:
    # memberlist's TestUtil_SuspicionTimeout: suspicionTimeout(3, n, 1s) / 3.
    assert suspicion_min_timeout_ms(3, members, 1000) // 3 == expected_ms


@pytest.mark.parametrize(
    ("confirmations", "expected", "elapsed_ms", "remaining_ms"),
    [(0, 3, 0, 30_000), (1, 3, 2000, 14_000), (2, 3, 3000, 4810), (3, 3, 4000, -2000),
     (4, 3, 5000, -3000), (5, 3, 10_000, -8000)],
)  # fmt: skip
def test_suspicion_timeout_matches_memberlist_table(
    confirmations: int, expected: int, elapsed_ms: int, remaining_ms: int
) -> None:
    # memberlist's TestSuspicion_remainingSuspicionTime with min 2 s and max 30 s.
    total = suspicion_timeout_ms(confirmations, expected, 2000, 30_000)
    assert total - elapsed_ms == remaining_ms


def test_no_expected_confirmations_means_the_minimum_timeout() -> None:
    assert suspicion_timeout_ms(0, 0, 4000, 24_000) == 4000


@pytest.mark.parametrize(("members", "expected"), [(0, 0), (2, 0), (3, 0), (4, 2), (100, 2)])
def test_expected_confirmations_leave_out_ourselves_and_the_suspect(
    members: int, expected: int
) -> None:
    assert expected_confirmations(4, members) == expected


def test_suspicion_counts_only_new_independent_confirmers() -> None:
    suspicion = Suspicion(0, 1000, 2, 4000, 24_000, suspected_by="a")
    assert suspicion.deadline_ms() == 25_000
    assert not suspicion.confirm("a")  # the original suspecter
    assert suspicion.confirm("b")
    assert not suspicion.confirm("b")  # already counted
    assert suspicion.deadline_ms() == 1000 + suspicion_timeout_ms(1, 2, 4000, 24_000)
    assert suspicion.confirm("c")
    assert suspicion.deadline_ms() == 5000  # k reached: the minimum
    assert not suspicion.confirm("d")  # beyond k: nothing to add
    assert suspicion.confirmers == ["b", "c"]


@pytest.mark.parametrize(("members", "expected"), [(0, 0), (1, 3), (9, 3), (99, 6), (100, 9)])
def test_retransmit_limit_grows_with_log10(members: int, expected: int) -> None:
    assert retransmit_limit(3, members) == expected


def test_push_pull_interval_scales_beyond_32_members() -> None:
    assert all(push_pull_interval_ms(1000, n) == 1000 for n in range(33))
    assert all(push_pull_interval_ms(1000, n) == 2000 for n in range(33, 65))
    assert all(push_pull_interval_ms(1000, n) == 3000 for n in range(65, 129))


def test_awareness_matches_memberlist_table() -> None:
    awareness = Awareness(8)
    table = [(0, 0, 1000), (-1, 0, 1000), (-10, 0, 1000), (1, 1, 2000), (-1, 0, 1000),
             (10, 7, 8000), (-1, 6, 7000), (-1, 5, 6000), (-1, 4, 5000), (-1, 3, 4000),
             (-1, 2, 3000), (-1, 1, 2000), (-1, 0, 1000), (-1, 0, 1000)]  # fmt: skip
    for delta, score, timeout_ms in table:
        assert awareness.apply_delta(delta) == score
        assert awareness.scale_ms(1000) == timeout_ms


def test_broadcast_queue_replaces_prefers_fresh_and_retires() -> None:
    queue = BroadcastQueue(broadcasts_max=2)
    queue.queue("a", b"a1")
    queue.queue("a", b"a2")  # a newer fact about a replaces the older
    assert len(queue) == 1 and queue.pending("a") == b"a2"
    queue.queue("b", b"b1")
    assert queue.take(100, 0, limit=2) == [b"b1", b"a2"]  # newest first among equals
    queue.queue("c", b"c1")  # full: the most-transmitted fact is dropped, and counted
    assert queue.dropped == 1 and len(queue) == 2
    assert queue.take(100, 0, limit=2)[0] == b"c1"  # least transmitted first
    assert len(queue) == 1  # the one sent twice is retired
    assert queue.take(1, 0, limit=2) == []  # nothing fits one byte


def test_settings_refuse_misfits() -> None:
    GossipSettings()
    with pytest.raises(ValueError, match="probe_timeout_ms"):
        GossipSettings(probe_timeout_ms=1000)
    with pytest.raises(ValueError, match="gossip_nodes"):
        GossipSettings(gossip_nodes=0)
    with pytest.raises(ValueError, match="broadcasts_max"):
        GossipSettings(members_max=10_000)
