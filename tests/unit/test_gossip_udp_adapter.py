"""The UDP adapter in one event loop: members join over loopback, a closed member is
declared dead, and events reach the callback and the log."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from synod.gossip.settings import GossipSettings
from synod.gossip.state import EventKind, MembershipEvent, MemberState, Meta
from synod.gossip.udp import GossipUdp, event_record, main, parse_address
from tests.ports import free_port
from tests.waiting import async_wait_until

WAIT_S_MAX = 30.0
FAST = GossipSettings(
    probe_interval_ms=200, probe_timeout_ms=100, gossip_interval_ms=50, push_pull_interval_ms=2000
)


def test_members_join_and_a_closed_one_is_declared_dead(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[MembershipEvent] = []

    async def scenario() -> None:
        members = [
            GossipUdp(
                FAST,
                f"u{i}",
                f"127.0.0.1:{free_port()}",
                Meta(zone="z"),
                seed=i,
                on_event=seen.append if i == 0 else None,
            )
            for i in range(3)
        ]
        try:
            await members[0].start([])
            for member in members[1:]:
                await member.start([members[0].address])
            await async_wait_until(
                lambda: all(len(m.core.members) == 3 for m in members), WAIT_S_MAX, "joins"
            )
            await members[2].close()
            await async_wait_until(
                lambda: all(m.core.members["u2"].state is MemberState.DEAD for m in members[:2]),
                WAIT_S_MAX,
                "u2 declared dead",
            )
        finally:
            for member in members:
                await member.close()

    with caplog.at_level(logging.INFO, logger="synod.gossip"):
        asyncio.run(scenario())
    assert EventKind.DEAD in [e.kind for e in seen if e.name == "u2"]
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "synod.gossip"]
    assert any(r["kind"] == "dead" and r["member"] == "u2" for r in records)


def test_event_records_carry_provenance() -> None:
    event = MembershipEvent(EventKind.DEAD, "b", 2, 50, "a", ("c", "d"), "e")
    assert event_record("a", event) == {
        "event": "gossip.membership",
        "observer": "a",
        "kind": "dead",
        "member": "b",
        "incarnation": 2,
        "at_ms": 50,
        "source": "a",
        "suspected_by": "e",
        "confirmed_by": ["c", "d"],
    }


@pytest.mark.parametrize("address", ["", "host", ":1", "h:0", "h:70000", "h:x"])
def test_bad_addresses_are_refused(address: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        parse_address(address)


def test_the_command_refuses_a_bad_bind_address() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--name", "x", "--bind", "nowhere"])
    assert exit_info.value.code == 2
