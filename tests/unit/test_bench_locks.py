"""The pure parts of `make bench-locks` (synod.bench.locks): worker results, statistics,
hand-over, the table and the final line. The benchmark itself is never a test."""

from __future__ import annotations

import re

import pytest

from synod.bench.locks import (
    RESULT_PREFIX,
    Measurement,
    Takeover,
    WorkerResult,
    WorkerSpec,
    combine,
    final_line,
    handover_ms,
    lock_name,
    overlaps,
    parse_worker_output,
    percentile,
    ratio,
    table,
)


def _measurement(system: str, mode: str, cycles: int, duration_s: float = 2.0) -> Measurement:
    return Measurement(system, mode, cycles, 0, duration_s, [1.0, 2.0, 3.0], [0.5], 0, 50.0)


def test_worker_result_round_trips_through_its_line() -> None:
    result = WorkerResult("etcd", "contended", 3, 1, 2.5, [1.5, 2.0], [(4, 1.0, 1.25)], "x")
    text = "noise from a library\n" + result.to_line() + "\n"
    parsed = parse_worker_output(text)
    assert parsed == result
    assert parsed.holds[0] == (4, 1.0, 1.25)


def test_the_last_result_line_wins() -> None:
    first = WorkerResult("redis", "uncontended", 1, 0, 1.0).to_line()
    second = WorkerResult("redis", "uncontended", 7, 0, 1.0).to_line()
    assert parse_worker_output(f"{first}\n{second}\n").cycles == 7


@pytest.mark.parametrize(
    "text",
    [
        "",
        "READY\n",
        RESULT_PREFIX + "[1, 2]",
        RESULT_PREFIX + '{"system": "synod"}',
        RESULT_PREFIX + '{"system": "s", "mode": "m", "cycles": -1, "errors": 0, "duration_s": 1}',
        RESULT_PREFIX + "{not json",
    ],
)
def test_bad_worker_output_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_worker_output(text)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([], 50) is None
    with pytest.raises(AssertionError):
        percentile([1.0], 101)


def test_handover_skips_the_same_task_taking_the_lock_again() -> None:
    holds = [
        (1, 0.000, 0.010),  # task 1 holds, releases at 10 ms
        (2, 0.013, 0.020),  # task 2 holds 3 ms after: a hand-over
        (2, 0.021, 0.030),  # task 2 again: no hand-over
        (3, 0.040, 0.041),  # task 3, 10 ms after task 2's release
    ]
    assert handover_ms(list(reversed(holds))) == pytest.approx([3.0, 10.0])
    assert overlaps(holds) == 0


def test_overlapping_holds_are_counted_not_handed_over() -> None:
    holds = [(1, 0.0, 0.010), (2, 0.005, 0.020), (3, 0.025, 0.030)]
    assert overlaps(holds) == 1
    assert handover_ms(holds) == pytest.approx([5.0])


def test_handover_of_nothing() -> None:
    assert handover_ms([]) == []
    assert handover_ms([(1, 0.0, 0.1)]) == []
    assert overlaps([]) == 0


def test_combine_adds_workers_and_checks_they_belong_together() -> None:
    workers = [
        WorkerResult("synod", "contended", 10, 1, 2.0, [1.0], [(0, 0.0, 0.1)]),
        WorkerResult("synod", "contended", 20, 0, 2.5, [2.0], [(4, 0.2, 0.3)], "boom"),
    ]
    found = combine("synod", "contended", workers, 42.0)
    assert (found.cycles, found.errors, found.duration_s) == (30, 1, 2.5)
    assert found.cycles_per_s == 12.0
    assert found.handover == pytest.approx([100.0])
    assert found.error == "boom"
    assert found.busy_pct == 42.0
    unc = combine("synod", "uncontended", [WorkerResult("synod", "uncontended", 5, 0, 1.0)], 1)
    assert unc.handover == [] and unc.cycles_per_s == 5.0
    with pytest.raises(ValueError):
        combine("etcd", "contended", workers, 0.0)


def test_lock_names_are_per_task_only_when_uncontended() -> None:
    spec = WorkerSpec("synod", "uncontended", [], 2, 1.0)
    names = {lock_name(WorkerSpec("synod", "uncontended", [], w, 1.0), t)
             for w in range(4) for t in range(4)}  # fmt: skip
    assert len(names) == 16
    assert lock_name(spec, 1) != lock_name(spec, 2)
    contended = WorkerSpec("synod", "contended", [], 3, 1.0)
    assert lock_name(contended, 0) == lock_name(contended, 3)


def test_ratio_formats_and_refuses_missing_figures() -> None:
    assert ratio(300.0, 100.0) == "3.00"
    assert ratio(None, 100.0) == "n/a"
    assert ratio(1.0, None) == "n/a"
    assert ratio(1.0, 0.0) == "n/a"


def test_final_line_has_the_three_ratios_on_uncontended_cycles() -> None:
    results = {
        ("synod", "uncontended"): _measurement("synod", "uncontended", 2000),  # 1000/s
        ("synod", "contended"): _measurement("synod", "contended", 10_000),
        ("etcd", "uncontended"): _measurement("etcd", "uncontended", 500),  # 250/s
        ("zookeeper", "uncontended"): _measurement("zookeeper", "uncontended", 1000),
        ("redis", "uncontended"): _measurement("redis", "uncontended", 4000),
        ("redis-aof", "uncontended"): _measurement("redis-aof", "uncontended", 8000),
    }
    line = final_line(results)
    assert line == (
        "bench-locks: synod/etcd=4.00 synod/zookeeper=2.00 synod/redis=0.50 (uncontended cycles/s)"
    )
    assert re.fullmatch(
        r"bench-locks: synod/etcd=\S+ synod/zookeeper=\S+ synod/redis=\S+ "
        r"\(uncontended cycles/s\)", line
    )  # fmt: skip


def test_final_line_says_n_a_for_a_peer_that_did_not_run() -> None:
    results = {("synod", "uncontended"): _measurement("synod", "uncontended", 100)}
    assert final_line(results) == (
        "bench-locks: synod/etcd=n/a synod/zookeeper=n/a synod/redis=n/a (uncontended cycles/s)"
    )
    failed = {**results, ("etcd", "uncontended"): _measurement("etcd", "uncontended", 0)}
    assert "synod/etcd=n/a" in final_line(failed)


def test_table_has_a_row_per_system_with_ratios_and_problems() -> None:
    bad = Measurement("etcd", "contended", 100, 3, 2.0, [5.0], [], 2, 97.0, "TypeError: x")
    results = {
        ("synod", "uncontended"): _measurement("synod", "uncontended", 2000),
        ("synod", "contended"): _measurement("synod", "contended", 1000),
        ("etcd", "uncontended"): _measurement("etcd", "uncontended", 500),
        ("etcd", "contended"): bad,
    }
    takeovers = {
        "synod": Takeover("synod", 2, 2.25, 60.0),
        "etcd": Takeover("etcd", 2, None, 60.0, "the waiter never held the lock"),
    }
    lines = table(results, takeovers, ["synod", "etcd", "zookeeper"])
    rows = {line.split("|")[0].strip(): line for line in lines if "|" in line}
    assert set(rows) >= {"system", "synod", "etcd", "zookeeper"}
    assert "4.00" in rows["etcd"]  # synod/etcd uncontended: 1000 / 250
    assert "10.00" in rows["etcd"]  # contended: 500 / 50
    assert "2.25" in rows["synod"]
    assert rows["zookeeper"].count("-") >= 5  # no figures, no ratios
    assert any("etcd contended: 3 failed acquires, 2 overlapping holds" in ln for ln in lines)
    assert any("etcd takeover: the waiter never held the lock" in ln for ln in lines)
