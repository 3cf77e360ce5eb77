"""The lock workload of the simulator and its checkers, run on every seed.

Clients holding a lease acquire one of ``LOCK_NAMES`` (try-lock or queued with a wait
bound), write to a fenced resource with their token while they hold it, and release.
A queued client learns of its grant the way an HTTP long-poll does: when a node's
applied state grants it (``LockTable.waiter_state``), never by polling the cluster.

Checked on every run (``finish``): mutual exclusion of the holds the clients believed
(``check_locks``), mutual exclusion judged by fencing tokens at the resource
(``check_fenced_writes``), FIFO grant order (``check_fifo``) and no lost wake-up
(``check_wakeups`` with bound 0: Synod grants in the applied command that frees the
lock). On every apply: replicas agree on who got each token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from synod.checker.locks import (
    FencedWrite,
    LockHold,
    LockSample,
    QueuedGrant,
    check_fenced_writes,
    check_fifo,
    check_locks,
    check_wakeups,
)
from synod.services.commands import encode_command
from synod.services.locks import lock_acquire_op, lock_release_op
from synod.sim.invariants import SafetyViolation

if TYPE_CHECKING:
    from synod.sim.node import ClientRequest, SimNode

__all__ = ["LOCK_NAMES", "LockWorkload"]

LOCK_NAMES = ("L1", "L2")
WAIT_UNITS = (0, 300, 3_000)  # wait bounds of the acquires (sim units are ms)
RECORDS_MAX = 200_000  # holds, writes, grants and samples kept per run
ACQUIRE_SHARE = 0.25  # of the operations of an idle client holding a lease


@dataclass(slots=True)
class ClientLock:
    """One simulated client's lock state."""

    state: str = ""  # "", "acquiring", "waiting", "held", "releasing"
    lock: str = ""
    owner: str = ""
    lease: int = 0
    token: int = 0
    waiter_id: int = 0
    revision_min: int = 0  # a node's applied state must be this new to judge the wait
    acquired_at: int = 0
    safe_until: int = 0  # the client's lease validity when last seen
    writes: int = 0


@dataclass(slots=True)
class LockWorkload:
    """Drives the lock operations of the simulated clients and records the history."""

    now: Callable[[], int]
    schedule: Callable[[int, Callable[[], None]], None]
    log: Callable[[str], None]
    rng_int: Callable[[int, int], int]
    safe_until_of: Callable[[int], int]  # the client's lease validity (sim units)
    clients: dict[int, ClientLock] = field(default_factory=dict)
    resource: dict[str, int] = field(default_factory=dict)  # lock -> highest token accepted
    holds: list[LockHold] = field(default_factory=list)
    writes: list[FencedWrite] = field(default_factory=list)
    grants: dict[int, tuple[str, str, int]] = field(default_factory=dict)  # token -> grant
    samples: list[LockSample] = field(default_factory=list)
    owners: int = 0
    acquisitions: int = 0

    # -- client side -----------------------------------------------------------------

    def choose(self, index: int, lease_id: int, safe_until: int, roll: float,
               session: tuple[int, int, int]) -> tuple[str, bytes] | None:  # fmt: skip
        """The next lock op of client ``index`` as (kind, command), or None to do
        something else. Raises nothing."""
        mine = self.clients.setdefault(index, ClientLock())
        self._observe_lease(mine, lease_id, safe_until)
        if mine.state == "held":
            if mine.writes < 2:
                self._write(index, mine)
                return None
            self._end_hold(index, mine, self.now())
            mine.state = "releasing"
            op = lock_release_op(mine.lock, mine.owner, token=mine.token)
            return "lock", encode_command(op, *session)
        if mine.state or not lease_id or roll >= ACQUIRE_SHARE:
            return None
        self.owners += 1
        mine.state, mine.lease, mine.writes = "acquiring", lease_id, 0
        mine.lock = LOCK_NAMES[self.rng_int(0, len(LOCK_NAMES) - 1)]
        mine.owner = f"c{index}-{self.owners}"  # fresh: a lost acquire cannot re-enter
        wait = WAIT_UNITS[self.rng_int(0, len(WAIT_UNITS) - 1)]
        op = lock_acquire_op(mine.lock, mine.owner, lease_id, wait_ms=wait)
        return "lock", encode_command(op, *session)

    def _observe_lease(self, mine: ClientLock, lease_id: int, safe_until: int) -> None:
        if mine.state in ("held", "waiting") and lease_id != mine.lease:
            # The lease was dropped or lost: the hold (or wait) ends with its validity.
            if mine.state == "held":
                self._end_hold(-1, mine, min(self.now(), mine.safe_until))
            self.log(f"lock: {mine.owner} gives up {mine.lock} with its lease")
            mine.state = ""
        elif mine.state == "held":
            mine.safe_until = safe_until

    def _write(self, index: int, mine: ClientLock) -> None:
        """A fenced write to the resource (it keeps the highest token it accepted)."""
        now = self.now()
        believed = now < mine.safe_until
        accepted = mine.token >= self.resource.get(mine.lock, 0)
        if accepted:
            self.resource[mine.lock] = mine.token
        mine.writes += 1
        self._record(self.writes, FencedWrite(mine.lock, mine.owner, mine.token, now,
                                              believed, accepted))  # fmt: skip

    def _end_hold(self, index: int, mine: ClientLock, end: int) -> None:
        end = max(mine.acquired_at, min(end, mine.safe_until))
        self._record(self.holds, LockHold(mine.lock, mine.owner, mine.token,
                                          mine.acquired_at, end))  # fmt: skip

    def answered(self, index: int, request: ClientRequest, result: dict[str, Any]) -> None:
        """The cluster answered a lock op of client ``index``. Raises nothing."""
        mine = self.clients[index]
        if mine.state == "releasing":
            mine.state = ""
            return
        if mine.state != "acquiring":
            return
        if result.get("granted"):
            self._held(index, mine, int(result["token"]))
        else:
            mine.state, mine.waiter_id = "waiting", int(result["waiter_id"])
            mine.revision_min = int(result["lock_revision"])

    def refused(self, index: int, code: str) -> None:
        """A lock op failed definitely (wait timeout, not held, lease gone) or was given
        up (outcome unknown: the client drops its lease so an orphan hold ends).
        Raises nothing."""
        mine = self.clients.get(index)
        if mine is None:
            return
        if mine.state == "held":
            self._end_hold(index, mine, self.now())
        mine.state = ""

    def _held(self, index: int, mine: ClientLock, token: int) -> None:
        mine.state, mine.token, mine.acquired_at = "held", token, self.now()
        mine.safe_until = self.safe_until_of(index)
        self.acquisitions += 1
        self.log(f"lock: {mine.owner} holds {mine.lock} token {token}")

    # -- replicated side ---------------------------------------------------------------

    def applied(self, node: SimNode) -> None:
        """``node`` applied entries: check replicas agree on grants, sample the wake-up
        property and deliver grants to waiting clients (the long-poll). Raises
        SafetyViolation."""
        table = node.state.locks
        now = self.now()
        for name in LOCK_NAMES:
            status = table.status("default", name)
            for hold in status["holders"]:
                grant = (name, str(hold["owner"]), int(hold["waiter_id"]))
                known = self.grants.setdefault(int(hold["token"]), grant)
                if known != grant:
                    raise SafetyViolation(f"n{node.id} granted token {hold['token']} as "
                                          f"{grant}, another replica as {known}")  # fmt: skip
            if status["waiters"]:  # the workload's locks are mutexes
                grantable = not status["delayed"] and not status["holders"]
                self._record(self.samples, LockSample(name, now, grantable))
        for index, mine in sorted(self.clients.items()):
            if mine.state != "waiting" or table.revision < mine.revision_min:
                continue
            state, token = table.waiter_state("default", mine.lock, mine.owner, mine.waiter_id)
            if state == "waiting":
                continue
            self._notify(index, mine, state, token)

    def _notify(self, index: int, mine: ClientLock, state: str, token: int) -> None:
        waiter_id = mine.waiter_id
        mine.state = "notified"

        def deliver() -> None:
            if mine.state != "notified" or mine.waiter_id != waiter_id:
                return
            if state == "granted":
                self._held(index, mine, token)
            else:
                self.log(f"lock: {mine.owner} left the queue of {mine.lock} ({state})")
                mine.state = ""

        self.schedule(self.rng_int(1, 10), deliver)

    @staticmethod
    def _record(records: list[Any], item: Any) -> None:
        if len(records) < RECORDS_MAX:
            records.append(item)

    # -- verdict -----------------------------------------------------------------------

    def finish(self) -> None:
        """Run the checkers over the recorded history. Raises SafetyViolation."""
        for name, report in (
            ("locks", check_locks(self.holds)),
            ("fencing", check_fenced_writes(self.writes)),
            ("fifo", check_fifo([QueuedGrant(lock, owner, waiter_id, token)
                                 for token, (lock, owner, waiter_id) in self.grants.items()
                                 if waiter_id])),
            ("wake-ups", check_wakeups(self.samples, bound=0)),
        ):  # fmt: skip
            if not report.ok:
                raise SafetyViolation(f"{name}: {report.explanation}")
