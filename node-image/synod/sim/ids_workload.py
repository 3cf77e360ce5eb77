"""The ids workload of the simulator: embedded snowflake generators on sim clients.

A client that holds a Synod lease sometimes sends an ids op instead of a keep-alive:
``ids_define`` (once), ``ids_acquire`` bound to its lease, or ``ids_renew``. Between
operations it issues a few IDs from its own :class:`~synod.ids.SnowflakeGenerator`,
whose wall clock is the simulated time plus a per-client skew and occasional
backwards jumps. A generator may issue only until the earlier of its grant's
``safe_until`` and the client's lease ``safe_until`` (both from request send times);
clients that abandon their lease keep trying to issue (a paused generator). At the
end every ID is checked: unique, and increasing per client
(:func:`synod.checker.ids.check_ids`).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from dataclasses import dataclass, field
from typing import Any, Final

from synod.checker.ids import IssuedId, check_ids
from synod.ids import ClockRollback, IdsError, Layout, SnowflakeGenerator, grant_from_answer
from synod.services.ids import ids_acquire_op, ids_define_op, ids_renew_op

__all__ = ["GENERATOR", "IdsClient", "IdsWorkload"]

GENERATOR: Final = "sim"
# Two worker ids for the clients.
LAYOUT: Final = Layout(41, 1, 8, epoch_ms=0)
# Wall-clock skew of a client, and the largest backwards jump.
SKEW_MS_MAX: Final = 300
JUMP_BACK_MS_MAX: Final = 200
JUMP_PROBABILITY: Final = 0.05
IDS_PER_TURN_MAX: Final = 5
# The IDs kept for the final check (a run issues far fewer).
ISSUED_MAX: Final = 1_000_000


@dataclass
class _Clock:
    now_ms: int = 0
    offset_ms: int = 0

    def wall_ms(self) -> int:
        return self.now_ms + self.offset_ms

    def mono_ms(self) -> int:
        return self.now_ms

    def sleep_ms(self, ms: int) -> None:
        # Simulated time does not move inside a call: the generator counts the wait
        # and gives up (ClockStalled) or refuses; the next turn retries.
        raise ClockRollback(f"sim clock cannot wait {ms} ms", behind_ms=ms)


@dataclass
class IdsClient:
    """One client's generator state."""

    clock: _Clock
    generator: SnowflakeGenerator
    defined: bool = False
    ttl_ms: int = 0
    lease_safe_until: int = 0


@dataclass
class IdsWorkload:
    rng: random.Random
    clients: dict[int, IdsClient] = field(default_factory=dict)
    issued: list[IssuedId] = field(default_factory=list)
    acquired: int = 0
    renewed: int = 0
    # (worker, epoch) -> (first, last) timestamp issued under that grant.
    spans: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)

    def client(self, index: int) -> IdsClient:
        found = self.clients.get(index)
        if found is None:
            clock = _Clock(offset_ms=self.rng.randint(-SKEW_MS_MAX, SKEW_MS_MAX))
            found = IdsClient(clock, SnowflakeGenerator(LAYOUT, clock))
            self.clients[index] = found
        return found

    def on_lease(self, index: int, safe_until: int, ttl_ms: int) -> None:
        """The client's lease was granted or renewed (safe until ``safe_until``)."""
        state = self.client(index)
        state.lease_safe_until, state.ttl_ms = safe_until, ttl_ms
        assert ttl_ms > 0

    def next_op(self, index: int, lease_id: int, now: int) -> dict[str, Any]:
        """The ids op the client sends now (it holds ``lease_id``)."""
        state = self.client(index)
        state.clock.now_ms = now
        if not state.defined:
            return ids_define_op(GENERATOR, LAYOUT)
        gen = state.generator
        grant = gen.grant
        if grant is None or grant.lease_id != lease_id:
            reserve = max(state.clock.wall_ms(), gen.last_ms) + state.ttl_ms
            return ids_acquire_op(GENERATOR, lease_id, reserve)
        return ids_renew_op(GENERATOR, grant.worker, grant.epoch, gen.reservation_ms())

    def answered(
        self, index: int, op: dict[str, Any], result: dict[str, Any], sent_at: int
    ) -> None:
        """An ids op was answered (ok or a service error)."""
        state = self.client(index)
        gen = state.generator
        if op["kind"] == "ids_define":
            state.defined = state.defined or bool(result.get("ok"))
            return
        if not result.get("ok"):
            gen.drop()  # lost or refused: acquire afresh next time
            return
        current = gen.grant
        floor = current.floor_ms if op["kind"] == "ids_renew" and current else None
        grant = grant_from_answer(result, sent_mono_ms=sent_at, ttl_ms=state.ttl_ms,
                                  floor_ms=floor)  # fmt: skip
        # The acquire or renew write does not extend the Synod lease: never issue past
        # the lease's own safe_until either.
        safe = min(grant.safe_until_mono_ms, state.lease_safe_until)
        grant = dataclasses.replace(grant, safe_until_mono_ms=safe,
                                    renew_at_mono_ms=min(grant.renew_at_mono_ms, safe))  # fmt: skip
        gen.install(grant)
        if op["kind"] == "ids_acquire":
            self.acquired += 1
        else:
            self.renewed += 1

    def issue(self, index: int, now: int) -> None:
        """Between operations: maybe jump the clock back, then issue a few IDs."""
        state = self.client(index)
        state.clock.now_ms = now
        if self.rng.random() < JUMP_PROBABILITY:
            state.clock.offset_ms -= self.rng.randint(1, JUMP_BACK_MS_MAX)
        count = self.rng.randint(1, IDS_PER_TURN_MAX)
        grant = state.generator.grant
        try:
            values = state.generator.next_many(count)
        except (IdsError, ValueError):
            return
        assert grant is not None
        for value in values:  # bound: IDS_PER_TURN_MAX
            stamp = LAYOUT.decode(value).timestamp_ms
            low, high = self.spans.get((grant.worker, grant.epoch), (stamp, stamp))
            self.spans[grant.worker, grant.epoch] = (min(low, stamp), max(high, stamp))
        if len(self.issued) + len(values) <= ISSUED_MAX:
            self.issued.extend(IssuedId(index, v, now, now, GENERATOR) for v in values)

    def violation(self) -> str | None:
        """None when every issued ID is unique, each client's grow, and the holders of
        a worker id used disjoint time ranges in grant order; else why."""
        report = check_ids(self.issued)
        if not report.ok:
            return report.explanation
        ordered = sorted(self.spans.items())  # by worker, then epoch
        for (key_a, span_a), (key_b, span_b) in itertools.pairwise(ordered):
            if key_a[0] == key_b[0] and span_a[1] >= span_b[0]:
                return (f"worker {key_a[0]}: epoch {key_a[1]} issued up to {span_a[1]} ms, "
                        f"epoch {key_b[1]} from {span_b[0]} ms")  # fmt: skip
        return None
