"""Table tests of the majority arithmetic and of the leader's progress tracking."""

from __future__ import annotations

import pytest

from synod.raft import quorum
from synod.raft.progress import Inflights, Progress, ProgressState
from synod.raft.quorum import VoteResult


@pytest.mark.parametrize(
    ("voters", "match", "expected"),
    [
        ({1}, {1: 5}, 5),
        ({1, 2, 3}, {1: 5, 2: 3, 3: 1}, 3),
        ({1, 2, 3}, {1: 5}, 0),
        ({1, 2, 3}, {1: 5, 2: 5}, 5),
        ({1, 2, 3, 4}, {1: 9, 2: 7, 3: 5, 4: 1}, 5),
        ({1, 2, 3, 4, 5}, {1: 9, 2: 8, 3: 7, 4: 1, 5: 1}, 7),
        ({1, 2, 3}, {1: 5, 2: 4, 3: 4, 9: 100}, 4),  # A learner's match never counts.
        (set(), {1: 5}, 0),
    ],
)
def test_committed_index(voters: set[int], match: dict[int, int], expected: int) -> None:
    assert quorum.committed_index(voters, match) == expected


@pytest.mark.parametrize(
    ("voters", "votes", "expected"),
    [
        ({1}, {1: True}, VoteResult.WON),
        ({1, 2, 3}, {1: True}, VoteResult.PENDING),
        ({1, 2, 3}, {1: True, 2: True}, VoteResult.WON),
        ({1, 2, 3}, {1: True, 2: False, 3: False}, VoteResult.LOST),
        ({1, 2, 3}, {1: True, 2: False}, VoteResult.PENDING),
        ({1, 2, 3, 4}, {1: True, 2: True}, VoteResult.PENDING),
        ({1, 2, 3, 4}, {1: True, 2: False, 3: False}, VoteResult.LOST),
        ({1, 2, 3}, {1: True, 7: True, 8: True}, VoteResult.PENDING),  # Non-voters.
    ],
)
def test_vote_result(voters: set[int], votes: dict[int, bool], expected: VoteResult) -> None:
    assert quorum.vote_result(voters, votes) == expected


@pytest.mark.parametrize(("count", "expected"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)])
def test_majority(count: int, expected: int) -> None:
    assert quorum.majority(count) == expected


def test_inflights_window_is_bounded_and_freed_by_acks() -> None:
    window = Inflights(3)
    for index in (10, 20, 30):
        window.add(index)
    assert window.full()
    window.free_le(20)
    assert window.count() == 1 and not window.full()
    window.free_first_one()
    assert window.count() == 0


def test_progress_probe_backs_off_with_hint_and_ignores_stale_rejects() -> None:
    progress = Progress(next_index=101, inflight_messages_max=4, is_learner=False)
    assert progress.state == ProgressState.PROBE
    assert progress.maybe_decrease_to(100, match_hint=40)
    assert progress.next == 41
    assert not progress.maybe_decrease_to(100, match_hint=10)  # Stale: we probed 40 since.
    assert progress.maybe_update(45)
    progress.become_replicate()
    assert progress.next == 46
    progress.optimistic_update(60)
    progress.inflights.add(60)
    assert not progress.maybe_decrease_to(45, match_hint=0)  # At or below match: stale.
    assert progress.maybe_decrease_to(55, match_hint=0)
    assert progress.next == 46


def test_progress_paused_states() -> None:
    progress = Progress(next_index=5, inflight_messages_max=1, is_learner=False)
    progress.probe_sent = True
    assert progress.is_paused()
    progress.maybe_update(4)
    progress.become_replicate()
    assert not progress.is_paused()
    progress.inflights.add(9)
    assert progress.is_paused()
    progress.become_snapshot(100)
    assert progress.is_paused()
    progress.become_probe()
    assert progress.next == 101  # Resume after the snapshot.
