"""The replicated ratelimit service: policies through the log, strict counters, snapshots."""

from __future__ import annotations

from typing import Any

from synod.services import ServiceStateMachine, encode_command
from synod.services.ratelimit import (
    ratelimit_hit_op,
    ratelimit_policies_op,
    ratelimit_policy_delete_op,
    ratelimit_policy_set_op,
)

POLICY = {
    "domain": "pay",
    "descriptors": [
        {"key": "account", "rate_limit": {"unit": "minute", "requests_per_unit": 2,
                                          "algorithm": "sliding_log", "consistency": "strict"}},
        {"key": "ip", "rate_limit": {"unit": "second", "requests_per_unit": 100}},
    ],
}  # fmt: skip


class Log:
    """A state machine fed commands in index order."""

    def __init__(self) -> None:
        self.sm = ServiceStateMachine()
        self.index = 0

    def apply(self, op: dict[str, Any]) -> dict[str, Any]:
        self.index += 1
        return self.sm.apply(self.index, encode_command(op))


def _account(value: str) -> list[dict[str, Any]]:
    return [{"entries": [{"key": "account", "value": value}]}]


def test_policies_through_the_log() -> None:
    log = Log()
    result = log.apply(ratelimit_policy_set_op(POLICY))
    assert result["ok"] and result["created"] and result["generation"] == 1
    assert log.apply(ratelimit_policy_set_op(POLICY))["created"] is False
    read = log.sm.read(ratelimit_policies_op())
    assert read["policies"] == [log.sm.ratelimit.policies["pay"].to_dict()]
    assert read["generation"] == 2
    deleted = log.apply(ratelimit_policy_delete_op("pay"))
    assert deleted["ok"] and deleted["generation"] == 3
    again = log.apply(ratelimit_policy_delete_op("pay"))
    assert again["error"]["code"] == "not-found"


def test_bad_policies_change_nothing() -> None:
    log = Log()
    log.apply(ratelimit_policy_set_op(POLICY))
    before = log.sm.ratelimit.to_snapshot()
    bad = {"domain": "pay", "descriptors": [{"key": "a", "rate_limit": {"unit": "week"}}]}
    result = log.apply(ratelimit_policy_set_op(bad))
    assert result["error"]["code"] == "invalid-argument"
    assert log.apply({"kind": "ratelimit_policy_set"})["error"]["code"] == "invalid-argument"
    assert log.sm.ratelimit.to_snapshot() == before


def test_strict_hits_count_in_the_replicated_state() -> None:
    log = Log()
    log.apply(ratelimit_policy_set_op(POLICY))
    answers = [log.apply(ratelimit_hit_op("pay", _account("a"), 1, 1000 + i))["overall_code"]
               for i in range(3)]  # fmt: skip
    assert answers == ["OK", "OK", "OVER_LIMIT"]
    # A smaller now_ms (another proposer's clock) does not reopen the window.
    assert log.apply(ratelimit_hit_op("pay", _account("a"), 1, 0))["overall_code"] == "OVER_LIMIT"
    assert log.apply(ratelimit_hit_op("pay", _account("b"), 1, 5))["overall_code"] == "OK"
    # Non-strict descriptors are not counted here.
    ip = [{"entries": [{"key": "ip", "value": "x"}]}]
    answer = log.apply(ratelimit_hit_op("pay", ip, 1000, 5))
    assert answer["overall_code"] == "OK" and "remaining" not in answer["statuses"][0]
    missing = log.apply(ratelimit_hit_op("nope", ip, 1, 5))
    assert missing["error"]["code"] == "not-found"


def test_replicas_agree_and_snapshots_carry_policies_and_strict_counters() -> None:
    a, b = Log(), Log()
    ops = [ratelimit_policy_set_op(POLICY)] + [
        ratelimit_hit_op("pay", _account("a"), 1, 100 * i) for i in range(4)
    ]
    for op in ops:
        assert a.apply(op) == b.apply(op)
    snapshot = a.sm.snapshot()
    assert snapshot == b.sm.snapshot()
    restored = ServiceStateMachine()
    restored.restore(snapshot)
    assert restored.snapshot() == snapshot
    assert restored.ratelimit.generation == 1
    follow = ratelimit_hit_op("pay", _account("a"), 1, 500)
    a.index += 1
    assert restored.apply(a.index, encode_command(follow))["overall_code"] == "OVER_LIMIT"
    assert a.apply(follow)["overall_code"] == "OVER_LIMIT"
