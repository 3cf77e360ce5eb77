"""The pure parts of `make bench` (synod.bench.etcd_compare): wrk output parsing, the
profile summary, the tables and the final line. The benchmark itself is not a test."""

from __future__ import annotations

import json
from pathlib import Path

from synod.bench import etcd_compare as bench
from synod.bench.wrk_script import KEY_BYTES, WRK_LUA


def _wrk_stdout(requests: int, status_errors: int = 0, misses: int = 0) -> str:
    data = {
        "duration_us": 10_000_000, "requests": requests, "bytes": 1,
        "errors": {"connect": 0, "read": 0, "write": 0, "status": status_errors, "timeout": 0},
        "latency_us": {"p50": 5000, "p90": 9000, "p99": 20000, "p999": 30000,
                       "mean": 6000.0, "max": 40000},
        "misses": misses, "loaded": 0,
    }  # fmt: skip
    return "Running 10s test\nWRK_JSON " + json.dumps(data) + "\n"


def test_wrk_result_counts_only_successes() -> None:
    result = bench.Wrk._parse("put", 64, 0, _wrk_stdout(50_000, status_errors=1000), "", [])
    assert result.ok_per_s == 4_900
    assert result.latency_us["p99"] == 20_000
    result.cluster_cpu_s = 4.9
    assert round(result.cpu_ms_per_op, 3) == 0.1


def _system(name: str, writes: int, reads: int) -> bench.SystemResult:
    res = bench.SystemResult(name, "1")
    for op, n in (("put", writes), ("range", reads)):
        for connections in bench.CONNECTIONS:
            res.runs.append(bench.Wrk._parse(op, connections, 0, _wrk_stdout(n), "", []))
    rss = {"VmRSS": 100 * 1024, "RssAnon": 90 * 1024, "RssFile": 10 * 1024}
    res.rss_idle = [rss] * 3
    res.rss_loaded = [rss] * 3
    return res


def test_report_and_the_final_line() -> None:
    results = {"synod": _system("synod", 30_000, 60_000), "etcd": _system("etcd", 50_000, 40_000)}
    lines = bench.report(results, 10.0)
    assert any(line.strip().startswith("64 |") and "0.60x" in line for line in lines)
    assert bench.headline(results) == (
        "bench: writes synod/etcd=0.60 reads synod/etcd=1.50 (64 connections)"
    )


def test_final_line_without_one_system() -> None:
    assert bench.headline({"etcd": _system("etcd", 1, 1)}) == (
        "bench: writes synod/etcd=n/a reads synod/etcd=n/a (64 connections)"
    )


def test_profile_summary(tmp_path: Path) -> None:
    raw = tmp_path / "p.txt"
    loop = "run (uvloop/__init__.py:92);Runner.run (asyncio/runners.py:118)"
    raw.write_text(
        f"{loop};apply (synod/services/kv.py:10) 150\n"
        f"{loop};write (aiohttp/http_writer.py:5) 50\n"
        "_worker (concurrent/futures/thread.py:81) 100\n"
    )
    lines = bench.summarize_profile(raw, duration_s=1.0)
    assert "event-loop thread active in 200 (100% of wall time)" in lines[0]
    assert any("50.0% self   synod/services/kv.py:apply" in line for line in lines)


def test_lua_keys_are_sixteen_bytes() -> None:
    assert KEY_BYTES == 16
    assert 'string.format("w%s%02d%012d"' in WRK_LUA  # 1 + 1 + 2 + 12
    assert 'string.format("r%015d"' in WRK_LUA  # 1 + 15
    assert len(bench.load_key(99_999)) == KEY_BYTES


METRICS_PAGE = """# HELP synod_event_loop_lag_seconds How late the event loop woke a due callback.
# TYPE synod_event_loop_lag_seconds histogram
synod_event_loop_lag_seconds_bucket{le="0.001"} 90.0
synod_event_loop_lag_seconds_bucket{le="0.01"} 99.0
synod_event_loop_lag_seconds_bucket{le="0.5"} 100.0
synod_event_loop_lag_seconds_bucket{le="+Inf"} 100.0
synod_event_loop_lag_seconds_count 100.0
synod_raft_term 3.0
"""


def test_loop_lag_buckets_are_parsed_from_a_metrics_page() -> None:
    buckets = bench.parse_lag_buckets(METRICS_PAGE)
    assert buckets == {0.001: 90.0, 0.01: 99.0, 0.5: 100.0, float("inf"): 100.0}


def test_loop_lag_summary_is_taken_between_two_scrapes() -> None:
    before = {0.001: 50.0, 0.01: 50.0, 0.5: 50.0, float("inf"): 50.0}
    after = bench.parse_lag_buckets(METRICS_PAGE)
    # 50 new samples: 40 under 1 ms, 9 more under 10 ms, 1 more under 500 ms.
    assert bench.lag_summary(before, after) == (500.0, 500.0)  # p99 needs 49.5 samples
    assert bench.lag_summary(before, after, quantile=0.9) == (10.0, 500.0)
    assert bench.lag_summary(after, after) is None
    beyond = {**after, float("inf"): 101.0}
    assert bench.lag_summary(after, beyond) == (float("inf"), float("inf"))


def test_scale_lines_report_flatness_the_longest_pause_and_the_rejoin() -> None:
    synod = _system("synod", 30_000, 60_000)
    synod.baseline = bench.Wrk._parse("put", 64, 0, _wrk_stdout(40_000), "", [])
    synod.keys_loaded = 1_000_000
    synod.lag_whole_run_ms = (10.0, 250.0)
    synod.rejoin = {
        "member": "synod-2", "target_index": 1_200_000, "catch_up_s": 31.25,
        "snapshot_index": 1_100_000, "promote_s": 0.5, "leader_lag_max_ms": 50.0,
    }  # fmt: skip
    lines = bench.scale_lines({"synod": synod, "etcd": _system("etcd", 50_000, 40_000)})
    assert any("3000 / 4000 = 0.75" in line for line in lines)
    assert any("after 31.2 s (by snapshot at index 1100000)" in line for line in lines)
    assert lines[-1] == (
        "bench-scale: synod writes 1000000 keys/10000 keys=0.75 loop_lag_max_ms<=250 rejoin_s=31.2"
    )


def test_no_scale_lines_without_a_baseline() -> None:
    assert bench.scale_lines({"synod": _system("synod", 1, 1)}) == []
