"""The pure parts of `make bench-ratelimit` (synod.bench.ratelimit): the interleaved runs,
worker results, measured over-admission, the table and the final line. The benchmark
itself is never a test."""

from __future__ import annotations

import re

import pytest

from synod.bench.ratelimit import (
    KEYS,
    LIMIT,
    RESULT_PREFIX,
    SYNOD_MODES,
    Measurement,
    Run,
    WorkerResult,
    _gubernator_messages,
    combine,
    final_line,
    key_name,
    metric_sum,
    over_admission_pct,
    over_admitted,
    parse_worker_output,
    runs_for,
    synod_policy,
    table,
)
from synod.ratelimit.policy import parse_policy


def _measurement(run: Run, decisions: int, per_key: dict[str, int]) -> Measurement:
    ok = sum(per_key.values())
    return Measurement(run, ok, decisions - ok, 0, 2.0, [1.0, 2.0, 30.0], per_key, 80.0)


def test_runs_alternate_between_the_systems() -> None:
    runs = runs_for(["synod", "gubernator", "limits"])
    assert [r.system for r in runs[:5]] == ["synod", "gubernator", "limits", "synod",
                                            "gubernator"]  # fmt: skip
    assert len(runs) == 2 * len(SYNOD_MODES) + 4 + 1
    assert {r.mode for r in runs if r.system == "synod"} == set(SYNOD_MODES)
    assert {r.api for r in runs if r.system != "limits"} == {"http", "grpc"}
    assert runs_for(["limits"]) == [Run("limits", "redis", "moving-window")]
    assert runs_for(["envoy-ratelimit"]) == [Run("envoy-ratelimit", "grpc", "fixed-window")]
    with pytest.raises(ValueError, match="unknown system"):
        runs_for(["envoy"])


def test_worker_result_round_trips_and_the_last_line_wins() -> None:
    first = WorkerResult("synod http owner", 1, 0, 0, 1.0, [1.0], {"k0": 1})
    second = WorkerResult("synod http owner", 3, 2, 1, 2.5, [1.5, 2.0], {"k0": 2, "k1": 1}, "x")
    parsed = parse_worker_output(f"noise\n{first.to_line()}\n{second.to_line()}\n")
    assert parsed == second
    assert parsed.ok_per_key == {"k0": 2, "k1": 1}


@pytest.mark.parametrize(
    "text",
    [
        "no result here",
        RESULT_PREFIX + "[1, 2]",
        RESULT_PREFIX + '{"label": "x", "ok": 1}',
        RESULT_PREFIX + '{"label": "x", "ok": -1, "over": 0, "errors": 0, "duration_s": 1}',
        RESULT_PREFIX + '{"label": "x", "ok": 1, "over": 0, "errors": 0, "duration_s": 1,'
        ' "ok_per_key": {"k": -1}}',
    ],
)
def test_malformed_worker_output_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_worker_output(text)


def test_over_admission_counts_only_hits_beyond_each_keys_limit() -> None:
    # One key over by 3, one exactly at the limit, one under: under-use never offsets.
    per_key = {"a": LIMIT + 3, "b": LIMIT, "c": LIMIT - 5}
    assert over_admitted(per_key, LIMIT) == 3
    assert over_admission_pct(per_key, LIMIT, KEYS) == pytest.approx(100 * 3 / (KEYS * LIMIT))
    assert over_admission_pct({}, LIMIT, KEYS) == 0.0
    # A local-mode shape: every key admitted once per member (3 members).
    every = {key_name("r", i): 3 * LIMIT for i in range(KEYS)}
    assert over_admission_pct(every, LIMIT, KEYS) == pytest.approx(200.0)


def test_combine_sums_keys_over_workers_and_refuses_other_runs() -> None:
    run = Run("gubernator", "grpc", "global")
    workers = [
        WorkerResult(run.label, LIMIT, 10, 0, 2.0, [1.0], {"k0": LIMIT}),
        WorkerResult(run.label, 2, 5, 1, 2.5, [3.0], {"k0": 2}, "boom"),
    ]
    measurement = combine(run, workers, 55.0)
    assert measurement.ok_per_key == {"k0": LIMIT + 2}
    assert measurement.decisions_per_s == pytest.approx((LIMIT + 2 + 15) / 2.5)
    assert measurement.over_admission() == pytest.approx(100 * 2 / (KEYS * LIMIT))
    assert measurement.keys_at_limit() == 1
    assert measurement.error == "boom"
    with pytest.raises(ValueError, match="another run"):
        combine(Run("synod", "grpc", "global"), workers, 55.0)


def test_table_and_final_line_compare_the_global_modes_on_their_faster_api() -> None:
    over = {key_name("r", i): LIMIT for i in range(KEYS)} | {key_name("r", 0): LIMIT + 8}
    exact = {key_name("r", i): LIMIT for i in range(KEYS)}
    results = [
        _measurement(Run("synod", "http", "global"), 1000, exact),
        _measurement(Run("synod", "grpc", "global"), 1600, exact),
        _measurement(Run("synod", "grpc", "owner"), 5000, exact),  # not the headline mode
        _measurement(Run("gubernator", "http", "global"), 800, over),
        _measurement(Run("gubernator", "grpc", "global"), 2000, over),
        _measurement(Run("limits", "redis", "moving-window"), 900, exact),
    ]
    lines = table(results)
    assert any(line.startswith("synod grpc global") and "800" in line for line in lines)
    assert all(run.run.label in "\n".join(lines) for run in results)
    line = final_line(results)
    pct = 100 * 8 / (KEYS * LIMIT)
    assert line == (f"bench-ratelimit: synod/gubernator=0.80 over_admission_synod=0.0% "
                    f"over_admission_gubernator={pct:.1f}%")  # fmt: skip
    assert re.fullmatch(r"bench-ratelimit: synod/gubernator=\S+ over_admission_synod=\S+% "
                        r"over_admission_gubernator=\S+%", line)  # fmt: skip


def test_final_line_without_a_side_says_n_a() -> None:
    only = [_measurement(Run("synod", "http", "global"), 100, {})]
    assert final_line(only) == (
        "bench-ratelimit: synod/gubernator=n/a over_admission_synod=0.0% "
        "over_admission_gubernator=n/a"
    )
    assert final_line([]).count("n/a") == 3


def test_the_policy_is_valid_and_gubernators_messages_round_trip() -> None:
    policy = parse_policy(synod_policy())
    assert policy.domain == "bench"
    assert len(synod_policy()["descriptors"]) == len(SYNOD_MODES)
    request_type, response_type = _gubernator_messages()
    request = request_type()
    item = request.requests.add()
    item.name, item.unique_key, item.limit, item.behavior = "bench", "k", LIMIT, 2
    assert request_type.FromString(request.SerializeToString()) == request
    response = response_type()
    response.responses.add(status=1, remaining=0, error="")
    assert response_type.FromString(response.SerializeToString()).responses[0].status == 1


def test_metric_sum_adds_every_labelled_sample_of_one_name() -> None:
    page = (
        "# TYPE synod_ratelimit_owner_fallbacks_total counter\n"
        "synod_ratelimit_owner_fallbacks_total 3.0\n"
        'synod_ratelimit_owner_fallbacks_total{domain="x"} 2\n'
        "synod_ratelimit_owner_fallbacks_created 1.7e9\n"
        "synod_ratelimit_owner_forwards_total 9\n"
    )
    assert metric_sum(page, "synod_ratelimit_owner_fallbacks_total") == 5.0
    assert metric_sum(page, "synod_ratelimit_absent_total") == 0.0
