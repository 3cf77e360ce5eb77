"""Majority arithmetic, pulled out of the core so it can be table-tested."""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping

from synod.raft.types import NodeId


class VoteResult(enum.Enum):
    """The outcome of an election so far."""

    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority(voter_count: int) -> int:
    """The smallest number of voters that is more than half of `voter_count`."""
    assert voter_count >= 0
    result = voter_count // 2 + 1
    assert 2 * result > voter_count
    return result


def committed_index(voters: Collection[NodeId], match_index: Mapping[NodeId, int]) -> int:
    """The highest index that a majority of `voters` has stored.

    A voter missing from `match_index` counts as having stored nothing. With no
    voters the result is 0: nothing can commit without a quorum.
    """
    if not voters:
        return 0
    matched = sorted((match_index.get(voter, 0) for voter in voters), reverse=True)
    result = matched[majority(len(voters)) - 1]
    assert result >= 0
    assert sum(1 for index in matched if index >= result) >= majority(len(voters))
    return result


def vote_result(voters: Collection[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    """WON with a majority of yes votes, LOST once that is impossible, else PENDING.

    Votes from nodes that are not voters do not count (learners, strangers).
    """
    granted = sum(1 for voter in voters if votes.get(voter) is True)
    rejected = sum(1 for voter in voters if votes.get(voter) is False)
    assert granted + rejected <= len(voters)
    needed = majority(len(voters))
    if granted >= needed:
        return VoteResult.WON
    if granted + (len(voters) - granted - rejected) >= needed:
        return VoteResult.PENDING
    return VoteResult.LOST


def has_quorum(voters: Collection[NodeId], active: Collection[NodeId]) -> bool:
    """True when the `active` nodes include a majority of `voters`."""
    count = sum(1 for voter in voters if voter in active)
    assert count <= len(voters)
    return bool(voters) and count >= majority(len(voters))
