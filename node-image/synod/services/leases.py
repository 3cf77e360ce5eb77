"""Leases: a replicated lease table and the leader-side, pure expiry clock.

Principle 2: followers never expire leases on their own clocks. The replicated
:class:`LeaseTable` knows only which leases exist and their granted TTL. The leader's
:class:`LeaseClock` tracks deadlines from explicit ``now_ms`` values, refreshes them on
keep-alive (keep-alives are leader-local, not replicated, as in etcd), and tells the
node which leases to expire; the node proposes a ``lease_expire`` command, and the
leases (with their attached keys) vanish when that command is applied on every replica.
A new leader first extends every live lease by its full TTL (``on_become_leader``), so
a leader change never expires a lease whose holder kept it alive.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from synod.services.commands import INT64_MAX
from synod.services.errors import AlreadyExists, InvalidArgument, LimitExceeded, NotFound
from synod.services.limits import ServiceLimits

__all__ = ["EXPIRE_RETRY_MS", "Lease", "LeaseClock", "LeaseTable"]

# If an expire proposal is lost (dropped, leader unchanged), offer the lease again after
# this long; until then it is not offered twice.
EXPIRE_RETRY_MS = 1_000


@dataclass(frozen=True, slots=True)
class Lease:
    """A replicated lease: its id and the TTL it was granted with."""

    lease_id: int
    ttl_ms: int


class LeaseTable:
    """The replicated set of live leases (attached keys live in the kv store's index)."""

    def __init__(self, limits: ServiceLimits | None = None) -> None:
        """Create an empty table. Raises nothing."""
        self.limits = limits or ServiceLimits()
        self._leases: dict[int, Lease] = {}
        # Auto ids count up (skipping ids in use) so every replica picks the same one.
        self._next_id = 1
        assert self.limits.leases_max >= 1

    def __len__(self) -> int:
        """Number of live leases. Raises nothing."""
        return len(self._leases)

    def exists(self, lease_id: int) -> bool:
        """True if ``lease_id`` is live. Raises nothing."""
        return lease_id in self._leases

    def get(self, lease_id: int) -> Lease:
        """The live lease ``lease_id``. Raises NotFound."""
        lease = self._leases.get(lease_id)
        if lease is None:
            raise NotFound(f"lease {lease_id} not found", lease=lease_id)
        assert lease.lease_id == lease_id
        return lease

    def ttls_ms(self) -> dict[int, int]:
        """``{lease_id: ttl_ms}`` of every live lease, sorted by id (for LeaseClock).

        Raises nothing.
        """
        return {lease_id: self._leases[lease_id].ttl_ms for lease_id in sorted(self._leases)}

    def grant(self, lease_id: int, ttl_ms: int, pick: int = 0) -> Lease:
        """Grant a lease; ``lease_id`` 0 picks a free id deterministically: ``pick`` (the
        leader's random draw, in the log) or the next one after it on a collision;
        without ``pick``, the next sequential id (log entries older than random ids).

        Raises InvalidArgument (ttl outside [lease_ttl_ms_min, lease_ttl_ms_max]),
        AlreadyExists (explicit id in use), LimitExceeded (leases_max).
        """
        limits = self.limits
        if not limits.lease_ttl_ms_min <= ttl_ms <= limits.lease_ttl_ms_max:
            raise InvalidArgument(
                f"ttl_ms must be in [{limits.lease_ttl_ms_min}, {limits.lease_ttl_ms_max}]"
            )
        if lease_id in self._leases:
            raise AlreadyExists(f"lease {lease_id} already exists", lease=lease_id)
        if len(self._leases) >= limits.leases_max:
            raise LimitExceeded("leases_max leases are live", limit="leases_max",
                                max=limits.leases_max)  # fmt: skip
        if lease_id == 0:
            lease_id = self._probe(pick) if pick else self._pick_id()
        lease = Lease(lease_id, ttl_ms)
        self._leases[lease_id] = lease
        assert len(self._leases) <= limits.leases_max
        return lease

    def _pick_id(self) -> int:
        """The next free auto id; at most leases_max ids can be taken, so the loop ends."""
        for _attempt in range(self.limits.leases_max + 1):
            candidate = self._next_id
            self._next_id += 1
            if candidate not in self._leases:
                return candidate
        raise AssertionError("more than leases_max leases are live")

    def _probe(self, pick: int) -> int:
        """``pick``, or the first free id after it (wrapping within [1, INT64_MAX]): at most
        leases_max ids are taken, so the loop ends. Raises nothing."""
        assert 1 <= pick <= INT64_MAX
        candidate = pick
        for _attempt in range(self.limits.leases_max + 1):
            if candidate not in self._leases:
                return candidate
            candidate = candidate % INT64_MAX + 1
        raise AssertionError("more than leases_max leases are live")

    def revoke(self, lease_id: int) -> Lease:
        """Remove ``lease_id`` (the caller deletes its keys). Raises NotFound."""
        lease = self.get(lease_id)
        del self._leases[lease_id]
        assert lease_id not in self._leases
        return lease

    def to_snapshot(self) -> dict[str, Any]:
        """Deterministic msgpack-able form (sorted by id). Raises nothing."""
        leases = [[lease_id, self._leases[lease_id].ttl_ms] for lease_id in sorted(self._leases)]
        assert len(leases) <= self.limits.leases_max
        return {"next_id": self._next_id, "leases": leases}

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the content with a :meth:`to_snapshot` form.

        Raises InvalidArgument if malformed or beyond leases_max (table unchanged).
        """
        try:
            leases = {int(i): Lease(int(i), int(ttl)) for i, ttl in data["leases"]}
            next_id = int(data["next_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"malformed lease snapshot: {exc}") from None
        if len(leases) > self.limits.leases_max:
            raise InvalidArgument("lease snapshot exceeds leases_max")
        if any(not 1 <= i <= INT64_MAX or lease.ttl_ms < 1 for i, lease in leases.items()):
            raise InvalidArgument("lease snapshot holds an id or ttl out of range")
        self._leases, self._next_id = leases, next_id


class LeaseClock:
    """Leader-side deadlines of the live leases. Pure: time enters only as ``now_ms``.

    Feed it the replicated table's changes: ``on_become_leader`` with every live lease,
    then ``on_granted`` / ``on_revoked`` as lease commands are applied on the leader (or
    ``sync`` with the whole table). ``expired(now_ms)`` gives ids to propose as a
    ``lease_expire`` command.
    """

    def __init__(
        self,
        expire_batch_max: int = 1_000,
        expire_retry_ms: int = EXPIRE_RETRY_MS,
    ) -> None:
        """Create a clock for a follower (it tracks nothing until it leads).

        Raises nothing.
        """
        assert expire_batch_max >= 1 and expire_retry_ms >= 1
        self.expire_batch_max = expire_batch_max
        self.expire_retry_ms = expire_retry_ms
        self.is_leader = False
        self._ttl_ms: dict[int, int] = {}
        self._deadline_ms: dict[int, int] = {}
        # (deadline, id) min-heap with lazy deletion: an entry is stale when its deadline
        # differs from _deadline_ms; it is rebuilt when stale entries dominate.
        self._heap: list[tuple[int, int]] = []
        self._expiring: set[int] = set()

    def on_become_leader(self, now_ms: int, ttls_ms: Mapping[int, int]) -> None:
        """Start leading: every live lease gets a full TTL from ``now_ms`` before any can
        expire (the old leader's keep-alives are unknown here). Raises nothing."""
        self.is_leader = True
        self._ttl_ms = dict(ttls_ms)
        self._deadline_ms = {lease_id: now_ms + ttl for lease_id, ttl in self._ttl_ms.items()}
        self._expiring.clear()
        self._rebuild_heap()
        assert len(self._deadline_ms) == len(self._ttl_ms)

    def on_become_follower(self) -> None:
        """Stop leading: forget every deadline. Raises nothing."""
        self.is_leader = False
        self._ttl_ms.clear()
        self._deadline_ms.clear()
        self._heap.clear()
        self._expiring.clear()
        assert not self._deadline_ms

    def on_granted(self, lease_id: int, ttl_ms: int, now_ms: int) -> None:
        """A grant was applied: its deadline is ``now_ms + ttl_ms``. Raises nothing."""
        assert ttl_ms > 0
        if not self.is_leader:
            return
        self._ttl_ms[lease_id] = ttl_ms
        self._set_deadline(lease_id, now_ms + ttl_ms)

    def on_revoked(self, lease_id: int) -> None:
        """A revoke or expiry was applied: stop tracking ``lease_id``. Raises nothing."""
        self._ttl_ms.pop(lease_id, None)
        self._deadline_ms.pop(lease_id, None)
        self._expiring.discard(lease_id)
        assert lease_id not in self._deadline_ms

    def sync(self, ttls_ms: Mapping[int, int], now_ms: int) -> None:
        """Reconcile with the whole replicated table: track new leases from ``now_ms``,
        forget vanished ones, keep the deadlines of the others. Raises nothing."""
        if not self.is_leader:
            return
        for lease_id in sorted(set(self._ttl_ms) - set(ttls_ms)):
            self.on_revoked(lease_id)
        for lease_id, ttl_ms in sorted(ttls_ms.items()):
            if lease_id not in self._ttl_ms:
                self.on_granted(lease_id, ttl_ms, now_ms)
        assert set(self._deadline_ms) == set(ttls_ms)

    def keepalive(self, lease_id: int, now_ms: int) -> int:
        """Refresh ``lease_id`` to a full TTL from ``now_ms``; returns the TTL in ms.

        Raises NotFound if the lease is unknown or already being expired. Only the leader
        may be asked (asserted: the node must route keep-alives to the leader).
        """
        assert self.is_leader, "keep-alives are served by the leader"
        ttl_ms = self._ttl_ms.get(lease_id)
        if ttl_ms is None or lease_id in self._expiring:
            raise NotFound(f"lease {lease_id} not found or expired", lease=lease_id)
        self._set_deadline(lease_id, now_ms + ttl_ms)
        return ttl_ms

    def remaining_ms(self, lease_id: int, now_ms: int) -> int:
        """Milliseconds until ``lease_id`` expires (0 if due). Raises NotFound."""
        deadline_ms = self._deadline_ms.get(lease_id)
        if deadline_ms is None:
            raise NotFound(f"lease {lease_id} not found", lease=lease_id)
        return max(0, deadline_ms - now_ms)

    def expired(self, now_ms: int) -> list[int]:
        """Ids (sorted, at most ``expire_batch_max``) whose deadline is <= ``now_ms``.

        Each returned id is offered again only after ``expire_retry_ms`` in case the
        proposal is lost. Returns [] on a follower. Raises nothing.
        """
        if not self.is_leader:
            return []
        out: list[int] = []
        for _step in range(len(self._heap)):  # each step pops one entry: bounded
            if not self._heap or len(out) >= self.expire_batch_max:
                break
            deadline_ms, lease_id = self._heap[0]
            if self._deadline_ms.get(lease_id) != deadline_ms:
                heapq.heappop(self._heap)  # stale entry
                continue
            if deadline_ms > now_ms:
                break
            heapq.heappop(self._heap)
            out.append(lease_id)
            self._expiring.add(lease_id)
            self._set_deadline(lease_id, now_ms + self.expire_retry_ms)
        assert len(out) <= self.expire_batch_max
        return sorted(out)

    def _set_deadline(self, lease_id: int, deadline_ms: int) -> None:
        self._deadline_ms[lease_id] = deadline_ms
        heapq.heappush(self._heap, (deadline_ms, lease_id))
        if len(self._heap) > 2 * len(self._deadline_ms) + 64:
            self._rebuild_heap()  # bound the stale entries keep-alives leave behind
        assert len(self._heap) <= 2 * len(self._deadline_ms) + 64

    def _rebuild_heap(self) -> None:
        self._heap = [(deadline, lease_id) for lease_id, deadline in self._deadline_ms.items()]
        heapq.heapify(self._heap)
