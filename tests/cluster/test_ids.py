"""Unique IDs on a real 3-process cluster: embedded generators issue while the leader
is killed (-9) and then the next leader is paused (SIGSTOP); one generator is paused
past its lease (its worker id is re-leased to another meanwhile); clocks jump
backwards; node-side batches are issued through followers too. The checker finds zero
duplicates and per-generator monotonic order."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from synod.checker.ids import IssuedId, check_ids
from synod.client import Client, SynodError
from synod.client.ids import Snowflake
from synod.ids import ClockRollback, Layout, WorkerLeaseLost
from tests.cluster.harness import Cluster

TTL_MS = 1_000  # the production minimum: the pause below outlives it quickly
ROUNDS_MAX = 400  # bounds every issuing loop
BATCH = 50


class JumpClock:
    """The real clocks, with a wall-clock offset the test moves (a backwards jump)."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def mono_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def sleep_ms(self, ms: int) -> None:
        time.sleep(ms / 1000)  # the generator's own rollback wait (production code path)


@dataclass
class Issuer:
    name: str
    gen: Snowflake
    clock: JumpClock
    records: list[IssuedId] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)

    def issue(self) -> bool:
        called = time.monotonic_ns()
        try:
            values = self.gen.next_many(BATCH)
        except (WorkerLeaseLost, ClockRollback, SynodError) as error:
            kind = type(error).__name__
            self.refused[kind] = self.refused.get(kind, 0) + 1
            return False
        returned = time.monotonic_ns()
        self.records.extend(IssuedId(self.name, v, called, returned, "g") for v in values)
        return True


def _worker_epoch(issuer: Issuer) -> tuple[int, int]:
    grant = issuer.gen.generator.grant  # type: ignore[union-attr]
    assert grant is not None
    return grant.worker, grant.epoch


def test_no_duplicate_ids_through_kill_pause_and_clock_jumps(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3)
    try:
        cluster.start_all()
        urls = [node.url for node in cluster.nodes.values()]
        with Client(urls, timeout_s=2.0, attempts_max=20) as client:
            # Three worker ids for up to four embedded generators: re-leasing is forced.
            client.ids_define("g", Layout(41, 2, 12), worker_min=0, worker_max=2)
            issuers = {}
            for name in ("a", "b", "c"):
                clock = JumpClock()
                issuers[name] = Issuer(name, client.snowflake("g", ttl_ms=TTL_MS, clock=clock),
                                       clock)  # fmt: skip
            remote: list[IssuedId] = []

            def round_() -> None:
                for issuer in issuers.values():
                    issuer.issue()
                called = time.monotonic_ns()
                try:
                    values = client.ids_next("h", BATCH)
                except SynodError:
                    return
                remote.extend(IssuedId("h-http", v, called, time.monotonic_ns(), "h")
                              for v in values)  # fmt: skip

            client.snowflake("h").close()
            for _ in range(20):  # bound: a few rounds before the faults
                round_()
            # 1. Kill the leader (-9) while issuing; the generators ride it out.
            leader = cluster.wait_for_leader()
            cluster.kill(leader)
            second = cluster.wait_for_leader(exclude={leader})
            for _ in range(20):  # bound: rounds through the new leader
                round_()
            # 1b. Bring the killed member back, then pause (SIGSTOP) the new leader past
            # the TTL: the generators ride the election out or stop at safe_until.
            cluster.start(leader)
            process = cluster.nodes[second].process
            assert process is not None
            process.send_signal(signal.SIGSTOP)
            try:
                others = [node_id for node_id in cluster.nodes if node_id != second]
                for _ in range(ROUNDS_MAX):  # bound: until another leader serves
                    round_()
                    statuses = [cluster.status(node_id) for node_id in others]
                    if any(st and st["role"] == "leader" for st in statuses):
                        break
                cluster.wait_for_leader(exclude={second})
                for _ in range(10):  # bound
                    round_()
            finally:
                process.send_signal(signal.SIGCONT)
            # 2. Pause "a" past its lease: the cluster expires it, "d" takes its worker id.
            a = issuers.pop("a")
            worker_a, epoch_a = _worker_epoch(a)

            def a_expired() -> bool:
                workers = client.ids_get("g")["workers"]
                return all(w["epoch"] != epoch_a for w in workers)

            for _ in range(ROUNDS_MAX):  # bound: until the lease expired
                if a_expired():
                    break
                round_()
            assert a_expired(), "a's worker lease must expire while it is paused"
            d_clock = JumpClock()
            d = Issuer("d", client.snowflake("g", ttl_ms=TTL_MS, clock=d_clock), d_clock)
            assert _worker_epoch(d)[0] == worker_a, "the only free worker id is a's"
            issuers["d"] = d
            for _ in range(10):  # bound
                round_()
            # "a" wakes up: it must not issue on its old worker id (past safe_until), and
            # every worker id is taken, so it gets none.
            assert not a.issue() and a.refused.get("LimitExceeded", 0) >= 1, a.refused
            # 3. Clock jumps: "b" a little back (waited out), "c" far back (refused).
            issuers["b"].clock.offset_ms -= 20
            issuers["c"].clock.offset_ms -= 5_000
            for _ in range(10):  # bound
                round_()
            assert issuers["c"].refused.get("ClockRollback", 0) >= 1
            issuers["c"].clock.offset_ms += 5_000
            for _ in range(10):  # bound
                round_()
            records = [r for issuer in (a, *issuers.values()) for r in issuer.records]
            assert len(records) > 1_000 and len(remote) > 100
            report = check_ids(records + remote)
            assert report.ok, report.explanation
            # a's and d's IDs on the shared worker id use disjoint, ordered time ranges.
            layout = Layout(41, 2, 12)
            a_times = [layout.decode(int(r.value)).timestamp_ms for r in a.records
                       if layout.decode(int(r.value)).worker == worker_a]  # fmt: skip
            d_times = [layout.decode(int(r.value)).timestamp_ms for r in d.records]
            assert a_times and d_times and max(a_times) < min(d_times)
    finally:
        cluster.stop_all()
