"""`make bench`: a 3-member Synod cluster against a 3-member etcd cluster, on this machine.

Both clusters run on loopback at the same time, each member with its own data directory
under one temporary directory that is removed at the end. The timed runs alternate
between the systems (synod 16, etcd 16, synod 64, ...), so a change in the machine's
background load hits both alike; the idle cluster costs little (heartbeats). Each run
also records the CPU time of the three members, as CPU milliseconds per request, which
the background load does not skew much. Both are driven by the same wrk Lua script
(:mod:`synod.bench.wrk_script`) through HTTP/JSON against the leader's client URL:

- writes: a fresh 16-byte key per request and a 256-byte value (Synod ``POST
  /v1/kv/put``, etcd's gRPC gateway ``POST /v3/kv/put`` with base64 strings);
- reads: linearizable point reads of loaded keys (``POST /v1/kv/range``, ``POST
  /v3/kv/range``), an answer without the key counting as a miss;

at 16 and 64 connections for ``BENCH_DURATION_S`` seconds each (default 10; extra
``synod node`` flags for experiments in ``BENCH_SYNOD_ARGS``, none by default). Before the
runs 100,000 keys of 256 bytes are loaded (by wrk as well) and every member's resident
set size (VmRSS) is taken idle and after the load.

This is a benchmark, never a test: it prints figures and ratios and asserts only that
the runs happened. It installs nothing: ``install-peers.sh`` (beside this file) installs
etcd and wrk; missing prerequisites are reported with what to do, exit status 2.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import functools
import importlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from synod.bench.wrk_script import KEY_BYTES, VALUE_BYTES, WRK_LUA

CONNECTIONS = (16, 64)
HEADLINE_CONNECTIONS = 64
DURATION_S_DEFAULT = 10.0
LOAD_KEYS_DEFAULT = 100_000
# From this many keys on, the run is a scale run: writes are first timed at
# BASELINE_KEYS, the load goes on to --keys, and a wiped Synod follower rejoins at the end.
SCALE_KEYS_MIN = 1_000_000
BASELINE_KEYS = 10_000
BASELINE_RUN = "z"  # wrk's run letter for the baseline put run (keys apart from the others)
# Synod refuses keys past its replicated keys_max (1,000,000 by default); timed put runs
# add fresh keys after the load, so the bench raises it to the load plus this much.
PUT_KEYS_HEADROOM = 1_000_000
KEYS_MAX_DEFAULT = 1_000_000
CATCH_UP_WAIT_S_MAX = 900.0  # a wiped follower installing a 1M-key snapshot
PROMOTE_WAIT_S_MAX = 60.0
WRK_THREADS = 2  # This machine class has 2 cores; wrk needs few threads.
WRK_TIMEOUT_S = 10  # A slower answer counts as a wrk timeout error.
LOAD_WAIT_S_MAX = 600.0  # Bounds the 100,000-key load whatever the throughput.
START_WAIT_S_MAX = 60.0  # A cluster that has no leader by then is a failure.
APPLY_WAIT_S_MAX = 60.0  # Followers catching up after the load.
STOP_WAIT_S_MAX = 15.0  # Per member, SIGTERM then SIGKILL.
SETTLE_S = 2.0  # Quiet time before an idle RSS sample.
ETCD_QUOTA_BACKEND_BYTES = 2 * 1024**3  # etcd's default, stated; far above 100k x 256 B.
POLL_S = 0.1
PR_SET_PDEATHSIG = 1


class BenchError(Exception):
    """The benchmark could not run to the end; the message says why."""


class PrerequisiteError(BenchError):
    """Something to install or fix before the benchmark can run."""


# ---------------------------------------------------------------------------
# prerequisites


@dataclass(frozen=True)
class Prerequisites:
    etcd: str
    etcd_version: str
    etcd_gateway: str  # the KV routes' prefix, e.g. "/v3/kv/"
    wrk: str
    wrk_version: str
    py_spy: str | None


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def check_prerequisites(systems: Sequence[str], *, need_py_spy: bool) -> Prerequisites:
    """Find etcd, wrk (and py-spy when profiling); raise PrerequisiteError listing every
    missing piece with the way to get it."""
    problems: list[str] = []
    install = "run node-image/synod/bench/install-peers.sh (apt-get install etcd-server wrk)"
    wrk = shutil.which("wrk")
    wrk_version = ""
    if wrk is None:
        problems.append(f"wrk is not on PATH: {install}")
    else:
        out = subprocess.run(
            [wrk, "--version"], check=False, capture_output=True, text=True, timeout=10
        )
        wrk_version = (out.stdout + out.stderr).split("Copyright")[0].strip()
    etcd = shutil.which("etcd") or ""
    etcd_version = ""
    gateway = "/v3/kv/"
    if "etcd" in systems:
        if not etcd:
            problems.append(f"etcd is not on PATH: {install}")
        else:
            out = subprocess.run(
                [etcd, "--version"], check=False, capture_output=True, text=True, timeout=10
            )
            match = re.search(r"etcd Version:\s*(\S+)", out.stdout)
            etcd_version = match.group(1) if match else "unknown"
            version = _version_tuple(etcd_version)
            if version < (3, 3):
                problems.append(f"etcd {etcd_version} has no usable JSON gateway: need >= 3.3")
            elif version < (3, 4):
                gateway = "/v3beta/kv/"
    if "synod" in systems:
        try:
            importlib.import_module("synod.node.http")
            importlib.import_module("synod.node.server")
        except ImportError as error:
            problems.append(
                f"the Synod node cannot start ({error}): the HTTP layer "
                "(synod/node/http.py) and its modules must be present and importable"
            )
    py_spy = shutil.which("py-spy") or _beside_python("py-spy")
    if need_py_spy and py_spy is None:
        problems.append("--profile needs py-spy: pip install py-spy (into any environment)")
    if problems:
        raise PrerequisiteError("\n".join(f"  - {p}" for p in problems))
    return Prerequisites(etcd, etcd_version, gateway, wrk or "", wrk_version, py_spy)


def _beside_python(name: str) -> str | None:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None


# ---------------------------------------------------------------------------
# processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL if the benchmark itself dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def http_json(url: str, body: dict[str, Any] | None = None, *, timeout_s: float = 2.0) -> Any:
    """POST (GET without a body) and parse the JSON answer. Raises OSError or ValueError."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout_s) as response:
        return json.loads(response.read() or b"null")


def read_rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and its parts (RssAnon, RssFile) of a live process, in KiB."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                fields[name] = int(rest.split()[0])
    return fields


CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far; 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S  # utime, stime


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass
class Member:
    name: str
    client_url: str
    args: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (the benchmark has one thread)
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, bounded wait, then SIGKILL. Never raises for a dead process."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_WAIT_S_MAX)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_WAIT_S_MAX)


class ClusterUnderTest:
    """Three members of one system; subclasses know how to start and query them."""

    system = ""
    kv_prefix = ""

    def __init__(self, root: Path, size: int) -> None:
        self.root = root
        self.size = size
        self.members: list[Member] = []

    # -- lifecycle
    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for member in self.members:
            member.start(self.env())
        self.leader(wait_s=START_WAIT_S_MAX)

    def env(self) -> dict[str, str] | None:
        return None

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def loop_lag_buckets(self) -> dict[float, float] | None:
        """Cumulative loop-lag histogram of all members (le seconds -> count), or None
        for a system without the probe."""
        return None

    def check_alive(self) -> None:
        dead = [m.name for m in self.members if not m.alive()]
        if dead:
            raise BenchError(f"{self.system} member(s) {dead} exited; logs in {self.root}")

    # -- queries
    def leader(self, *, wait_s: float = 10.0) -> Member:
        """The member that is leader, waiting up to wait_s. Raises BenchError."""
        deadline = time.monotonic() + wait_s
        while True:
            self.check_alive()
            found = self._find_leader()
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                raise BenchError(f"{self.system}: no leader within {wait_s:.0f}s ({self.root})")
            time.sleep(POLL_S)

    def _find_leader(self) -> Member | None:
        raise NotImplementedError

    def applied_and_commit(self, member: Member) -> tuple[int, int] | None:
        raise NotImplementedError

    def count_keys(self, leader: Member, prefix: str) -> int:
        raise NotImplementedError

    def put(self, leader: Member, key: str, value: str) -> None:
        raise NotImplementedError

    def get(self, leader: Member, key: str) -> str | None:
        raise NotImplementedError

    def list_keys(self, leader: Member, start: str, end: str, limit: int) -> list[str]:
        """Up to `limit` keys in [start, end), sorted."""
        raise NotImplementedError

    def term(self, member: Member) -> int | None:
        raise NotImplementedError

    def put_url_and_body(self, leader: Member, key: str, value: str) -> tuple[str, bytes]:
        raise NotImplementedError

    def wait_applied(self) -> None:
        """Until every member has applied what the leader has committed (bounded)."""
        deadline = time.monotonic() + APPLY_WAIT_S_MAX
        while time.monotonic() < deadline:
            leader = self.leader()
            leader_state = self.applied_and_commit(leader)
            states = [self.applied_and_commit(m) for m in self.members]
            if leader_state and all(s is not None and s[0] >= leader_state[1] for s in states):
                return
            time.sleep(POLL_S)
        raise BenchError(f"{self.system}: followers did not catch up in {APPLY_WAIT_S_MAX}s")


class SynodCluster(ClusterUnderTest):
    system = "synod"
    kv_prefix = "/v1/kv/"

    def __init__(self, root: Path, size: int) -> None:
        super().__init__(root, size)
        ports = [(free_port(), free_port()) for _ in range(size)]
        spec = ",".join(
            f"{i}=127.0.0.1:{peer}@http://127.0.0.1:{client}"
            for i, (client, peer) in enumerate(ports, start=1)
        )
        for i, (client, peer) in enumerate(ports, start=1):
            args = [
                sys.executable, "-m", "synod.node.main",
                "--id", str(i),
                "--data-dir", str(root / f"member-{i}"),
                "--listen-client", f"127.0.0.1:{client}",
                "--listen-peer", f"127.0.0.1:{peer}",
                "--initial-cluster", spec,
                "--log-level", "warning",
                *shlex.split(os.environ.get("BENCH_SYNOD_ARGS", "")),
            ]  # fmt: skip
            url = f"http://127.0.0.1:{client}"
            self.members.append(Member(f"synod-{i}", url, args, root / f"member-{i}.log"))

    def loop_lag_buckets(self) -> dict[float, float] | None:
        return self.lag_buckets_of(self.members)

    def env(self) -> dict[str, str]:
        # Defaults only: no SYNOD_* settings and no OTEL_* exporters from the caller.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNOD_", "OTEL_"))}
        return {**env, "PYTHONUNBUFFERED": "1"}

    def _status(self, member: Member) -> dict[str, Any] | None:
        try:
            status = http_json(member.client_url + "/v1/cluster/status", timeout_s=1.0)
        except (OSError, ValueError):
            return None
        return status if isinstance(status, dict) else None

    def _find_leader(self) -> Member | None:
        for member in self.members:
            status = self._status(member)
            if status and status.get("role") == "leader":
                return member
        return None

    def applied_and_commit(self, member: Member) -> tuple[int, int] | None:
        status = self._status(member)
        if status is None:
            return None
        return int(status["applied_index"]), int(status["commit_index"])

    def count_keys(self, leader: Member, prefix: str) -> int:
        body = {"key": prefix, "prefix": True, "count_only": True}
        return int(http_json(leader.client_url + "/v1/kv/range", body, timeout_s=30)["count"])

    def put(self, leader: Member, key: str, value: str) -> None:
        http_json(leader.client_url + "/v1/kv/put", {"key": key, "value": value})

    def get(self, leader: Member, key: str) -> str | None:
        kvs = http_json(leader.client_url + "/v1/kv/range", {"key": key})["kvs"]
        return str(kvs[0]["value"]) if kvs else None

    def list_keys(self, leader: Member, start: str, end: str, limit: int) -> list[str]:
        body = {"key": start, "range_end": end, "keys_only": True, "limit": limit}
        answer = http_json(leader.client_url + "/v1/kv/range", body, timeout_s=30)
        return [str(kv["key"]) for kv in answer["kvs"]]

    def term(self, member: Member) -> int | None:
        status = self._status(member)
        return int(status["term"]) if status else None

    def put_url_and_body(self, leader: Member, key: str, value: str) -> tuple[str, bytes]:
        body = json.dumps({"key": key, "value": value}).encode()
        return leader.client_url + "/v1/kv/put", body

    def raise_keys_max(self, keys_n: int) -> None:
        """Let the store hold the load plus the timed runs' fresh keys (keys_max is a
        replicated bound, changed through the log). Raises BenchError."""
        wanted = keys_n + PUT_KEYS_HEADROOM
        if wanted <= KEYS_MAX_DEFAULT:
            return
        try:
            answer = http_json(self.leader().client_url + "/v1/admin/limits",
                               {"keys_max": wanted}, timeout_s=30)  # fmt: skip
        except OSError as error:
            raise BenchError(f"synod: raising keys_max to {wanted} failed: {error}") from None
        if answer.get("limits", {}).get("keys_max") != wanted:
            raise BenchError(f"synod: keys_max was not raised to {wanted}: {answer}")

    def member_id(self, member: Member) -> int:
        return self.members.index(member) + 1

    def lag_buckets_of(self, members: Sequence[Member]) -> dict[float, float]:
        total: dict[float, float] = {}
        for member in members:
            with urllib.request.urlopen(member.client_url + "/metrics", timeout=5) as answer:
                for bound, count in parse_lag_buckets(answer.read().decode()).items():
                    total[bound] = total.get(bound, 0.0) + count
        return total

    def status_of(self, member: Member) -> dict[str, Any] | None:
        return self._status(member)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdCluster(ClusterUnderTest):
    system = "etcd"

    def __init__(self, root: Path, size: int, etcd: str, gateway: str) -> None:
        super().__init__(root, size)
        self.kv_prefix = gateway
        self.api_prefix = gateway.removesuffix("kv/")
        ports = [(free_port(), free_port()) for _ in range(size)]
        spec = ",".join(
            f"m{i}=http://127.0.0.1:{peer}" for i, (_, peer) in enumerate(ports, start=1)
        )
        for i, (client, peer) in enumerate(ports, start=1):
            url = f"http://127.0.0.1:{client}"
            args = [
                etcd,
                "--name", f"m{i}",
                "--data-dir", str(root / f"member-{i}"),
                "--listen-client-urls", url,
                "--advertise-client-urls", url,
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", spec,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", f"synod-bench-{os.getpid()}",
                "--quota-backend-bytes", str(ETCD_QUOTA_BACKEND_BYTES),
                "--logger", "zap",
                "--log-level", "warn",
            ]  # fmt: skip
            self.members.append(Member(f"etcd-{i}", url, args, root / f"member-{i}.log"))

    def env(self) -> dict[str, str]:
        # Keep any ETCD_* of the caller's environment out of these members' configuration.
        return {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}

    def _status(self, member: Member) -> dict[str, Any] | None:
        try:
            status = http_json(
                member.client_url + self.api_prefix + "maintenance/status", {}, timeout_s=1.0
            )
        except (OSError, ValueError):
            return None
        return status if isinstance(status, dict) else None

    def _find_leader(self) -> Member | None:
        for member in self.members:
            status = self._status(member)
            leader = status.get("leader") if status else None
            if status and leader not in (None, "0") and leader == status["header"]["member_id"]:
                return member
        return None

    def applied_and_commit(self, member: Member) -> tuple[int, int] | None:
        status = self._status(member)
        if status is None:
            return None
        # raftIndex is the member's committed index, raftAppliedIndex (3.4+) the applied.
        commit = int(status.get("raftIndex", 0))
        return int(status.get("raftAppliedIndex", commit)), commit

    def count_keys(self, leader: Member, prefix: str) -> int:
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        body = {"key": _b64(prefix), "range_end": _b64(end), "count_only": True}
        answer = http_json(leader.client_url + self.kv_prefix + "range", body, timeout_s=30)
        return int(answer.get("count", 0))

    def put(self, leader: Member, key: str, value: str) -> None:
        body = {"key": _b64(key), "value": _b64(value)}
        http_json(leader.client_url + self.kv_prefix + "put", body)

    def get(self, leader: Member, key: str) -> str | None:
        answer = http_json(leader.client_url + self.kv_prefix + "range", {"key": _b64(key)})
        kvs = answer.get("kvs") or []
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else None

    def list_keys(self, leader: Member, start: str, end: str, limit: int) -> list[str]:
        body = {"key": _b64(start), "range_end": _b64(end), "keys_only": True, "limit": limit}
        answer = http_json(leader.client_url + self.kv_prefix + "range", body, timeout_s=30)
        return [base64.b64decode(kv["key"]).decode() for kv in answer.get("kvs") or []]

    def term(self, member: Member) -> int | None:
        status = self._status(member)
        return int(status["raftTerm"]) if status else None

    def put_url_and_body(self, leader: Member, key: str, value: str) -> tuple[str, bytes]:
        body = json.dumps({"key": _b64(key), "value": _b64(value)}).encode()
        return leader.client_url + self.kv_prefix + "put", body


# ---------------------------------------------------------------------------
# wrk


@dataclass
class WrkResult:
    op: str
    connections: int
    duration_s: float
    requests: int
    errors: dict[str, int]
    latency_us: dict[str, float]
    misses: int
    loaded: int
    leader_changes: str = ""  # "" when the leader and term stayed the same
    cluster_cpu_s: float = 0.0  # CPU time of the three members during the run
    machine_busy_pct: float = 0.0  # all CPUs, everything running (wrk, others) included
    # Event-loop lag of the members during the run (Synod's probe; bucket bounds).
    loop_lag_p99_ms: float | None = None
    loop_lag_max_ms: float | None = None

    @property
    def failed(self) -> int:
        """Requests that did not succeed: non-2xx/3xx answers, timeouts, misses."""
        return self.errors["status"] + self.errors["timeout"] + self.misses

    @property
    def cpu_ms_per_op(self) -> float:
        """Cluster CPU milliseconds per successful request (all members together)."""
        ok = self.ok_per_s * self.duration_s
        return 1000 * self.cluster_cpu_s / ok if ok > 0 else 0.0

    @property
    def ok_per_s(self) -> float:
        ok = self.requests - self.errors["status"] - self.misses
        return max(ok, 0) / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "ok_per_s": round(self.ok_per_s, 1),
            "cpu_ms_per_op": round(self.cpu_ms_per_op, 3),
        }


class Wrk:
    def __init__(self, prereqs: Prerequisites, script: Path) -> None:
        self.prereqs = prereqs
        self.script = script

    def command(
        self, cluster: ClusterUnderTest, leader: Member, op: str, connections: int,
        duration_s: float, run: str, keys_n: int,
    ) -> list[str]:  # fmt: skip
        threads = min(WRK_THREADS, connections)
        return [
            self.prereqs.wrk,
            "-t", str(threads),
            "-c", str(connections),
            "-d", f"{max(1, round(duration_s))}s",
            "--timeout", f"{WRK_TIMEOUT_S}s",
            "--latency",
            "-s", str(self.script),
            leader.client_url,
            "--", cluster.system, op, run, str(keys_n), str(threads), cluster.kv_prefix,
        ]  # fmt: skip

    def run(
        self, cluster: ClusterUnderTest, op: str, connections: int, duration_s: float,
        run: str, keys_n: int,
    ) -> WrkResult:  # fmt: skip
        """One timed wrk run against the current leader."""
        leader = cluster.leader()
        term = cluster.term(leader)
        args = self.command(cluster, leader, op, connections, duration_s, run, keys_n)
        cpu_before = sum(process_cpu_s(m.pid) for m in cluster.members)
        busy_before, total_before = machine_cpu_ticks()
        lag_before = cluster.loop_lag_buckets()
        try:
            out = subprocess.run(
                args, check=False, capture_output=True, text=True, timeout=duration_s + 60,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        except subprocess.TimeoutExpired as error:
            raise BenchError(f"wrk did not finish: {' '.join(args)}") from error
        cluster.check_alive()
        busy_after, total_after = machine_cpu_ticks()
        cpu_after = sum(process_cpu_s(m.pid) for m in cluster.members)
        result = self._parse(op, connections, out.returncode, out.stdout, out.stderr, args)
        result.cluster_cpu_s = cpu_after - cpu_before
        result.machine_busy_pct = (
            100 * (busy_after - busy_before) / max(1, total_after - total_before)
        )
        result.leader_changes = _leader_change(cluster, leader, term)
        _record_loop_lag(result, lag_before, cluster.loop_lag_buckets())
        return result

    def load(self, cluster: ClusterUnderTest, keys_n: int, connections: int) -> WrkResult:
        """Write keys r000000000000000 .. r{keys_n-1} once each; wrk is stopped (SIGINT)
        as soon as every thread has had all its answers."""
        leader = cluster.leader()
        term = cluster.term(leader)
        args = self.command(cluster, leader, "load", connections, LOAD_WAIT_S_MAX, "l", keys_n)
        threads = min(WRK_THREADS, connections)
        lag_before = cluster.loop_lag_buckets()
        process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 (the benchmark has one thread)
        )  # fmt: skip
        stderr_lines: list[str] = []
        try:
            assert process.stderr is not None
            done_threads = 0
            deadline = time.monotonic() + LOAD_WAIT_S_MAX + 30
            os.set_blocking(process.stderr.fileno(), True)
            for line in process.stderr:  # ends when wrk exits (at the -d bound at the latest)
                stderr_lines.append(line)
                if line.startswith("WRK_THREAD_LOADED"):
                    done_threads += 1
                    if done_threads >= threads:
                        process.send_signal(signal.SIGINT)
                        break
                if time.monotonic() > deadline:
                    break
            stdout, stderr_rest = process.communicate(timeout=60)
        except subprocess.TimeoutExpired as error:
            raise BenchError("wrk (load) did not stop") from error
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=STOP_WAIT_S_MAX)
        stderr = "".join(stderr_lines) + stderr_rest
        cluster.check_alive()
        result = self._parse("load", connections, process.returncode, stdout, stderr, args)
        result.leader_changes = _leader_change(cluster, leader, term)
        _record_loop_lag(result, lag_before, cluster.loop_lag_buckets())
        return result

    @staticmethod
    def _parse(
        op: str, connections: int, returncode: int, stdout: str, stderr: str, args: list[str]
    ) -> WrkResult:
        line = next((ln for ln in stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
        if line is None:
            raise BenchError(
                f"wrk gave no result (exit {returncode}): {' '.join(args)}\n{stdout}\n{stderr}"
            )
        data = json.loads(line.removeprefix("WRK_JSON "))
        return WrkResult(
            op=op,
            connections=connections,
            duration_s=data["duration_us"] / 1e6,
            requests=int(data["requests"]),
            errors={k: int(v) for k, v in data["errors"].items()},
            latency_us={k: float(v) for k, v in data["latency_us"].items()},
            misses=int(data["misses"]),
            loaded=int(data["loaded"]),
        )


_LAG_BUCKET = re.compile(r'^synod_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$')


def parse_lag_buckets(metrics_text: str) -> dict[float, float]:
    """The cumulative buckets of `synod_event_loop_lag_seconds` in a /metrics page
    (le in seconds, +Inf as infinity)."""
    buckets: dict[float, float] = {}
    for line in metrics_text.splitlines():
        match = _LAG_BUCKET.match(line)
        if match:
            buckets[float(match.group(1))] = float(match.group(2))
    return buckets


def lag_summary(
    before: dict[float, float], after: dict[float, float], quantile: float = 0.99
) -> tuple[float, float] | None:
    """(quantile, max) of the samples between two scrapes, each as the upper bound in
    ms of the bucket it falls in (inf past the last finite bucket); None without
    samples."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]  # cumulative deltas
    if not counts or counts[-1] <= 0:
        return None
    total = counts[-1]
    at_quantile = next(b for b, c in zip(bounds, counts, strict=True) if c >= quantile * total)
    at_max = next(b for b, c in zip(bounds, counts, strict=True) if c >= total)
    return at_quantile * 1000, at_max * 1000


def _record_loop_lag(
    result: WrkResult, before: dict[float, float] | None, after: dict[float, float] | None
) -> None:
    summary = lag_summary(before, after) if before is not None and after is not None else None
    if summary is not None:
        result.loop_lag_p99_ms, result.loop_lag_max_ms = summary


def _leader_change(cluster: ClusterUnderTest, leader: Member, term: int | None) -> str:
    """'' if `leader` still leads in `term`, else what happened (wrk kept sending to
    the old leader, so a Synod follower forwarded and etcd's proxied)."""
    try:
        now = cluster.leader(wait_s=START_WAIT_S_MAX)
    except BenchError as error:
        return str(error)
    now_term = cluster.term(now)
    if now is leader and now_term == term:
        return ""
    return f"leader {leader.name} term {term} -> {now.name} term {now_term}"


# ---------------------------------------------------------------------------
# top-up after the load


TOP_UP_CONCURRENCY = 64
TOP_UP_ATTEMPTS = 5  # per key
LIST_PAGE_KEYS = 1000


def load_key(i: int) -> str:
    return f"r{i:015d}"


def missing_keys(cluster: ClusterUnderTest, keys_n: int) -> list[str]:
    """The loaded keys that are not in the store (paged key listing, bounded)."""
    leader = cluster.leader()
    present: set[str] = set()
    start, end = load_key(0), "s"
    for _ in range(keys_n // LIST_PAGE_KEYS + 2):
        page = cluster.list_keys(leader, start, end, LIST_PAGE_KEYS)
        present.update(page)
        if len(page) < LIST_PAGE_KEYS:
            break
        start = page[-1] + "\0"
    return [k for k in (load_key(i) for i in range(keys_n)) if k not in present]


def top_up(cluster: ClusterUnderTest, keys: list[str]) -> int:
    """Put `keys` (whose load writes failed) with bounded retries; returns how many are
    still missing afterwards."""
    import asyncio

    import aiohttp

    value = ("0123456789abcdef" * 16)[:VALUE_BYTES]
    leader = cluster.leader()

    async def put_all() -> int:
        semaphore = asyncio.Semaphore(TOP_UP_CONCURRENCY)
        timeout = aiohttp.ClientTimeout(total=10)
        failed = 0
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def put_one(key: str) -> None:
                nonlocal failed
                url, body = cluster.put_url_and_body(leader, key, value)
                async with semaphore:
                    for attempt in range(TOP_UP_ATTEMPTS):
                        try:
                            async with session.post(
                                url, data=body, headers={"Content-Type": "application/json"}
                            ) as answer:
                                await answer.read()
                                if answer.status == 200:
                                    return
                        except (aiohttp.ClientError, TimeoutError):
                            pass
                        await asyncio.sleep(0.2 * (attempt + 1))
                failed += 1

            await asyncio.gather(*(put_one(k) for k in keys))
        return failed

    return asyncio.run(put_all())


# ---------------------------------------------------------------------------
# profiling (optional)


@contextlib.contextmanager
def profiling(py_spy: str | None, pid: int, out: Path | None, duration_s: float) -> Iterator[None]:
    """Sample `pid` with py-spy (raw collapsed stacks into `out`) while the body runs."""
    if py_spy is None or out is None:
        yield
        return
    args = [
        py_spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(out),
        "--duration", str(max(1, round(duration_s))), "--rate", str(PROFILE_RATE_HZ),
        "--nonblocking",
    ]  # fmt: skip
    log = out.with_suffix(".log").open("w")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        try:
            process.wait(timeout=duration_s + 30)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_WAIT_S_MAX)
            if process.poll() is None:
                process.kill()
        log.close()


PROFILE_RATE_HZ = 200


def summarize_profile(path: Path, duration_s: float, top_n: int = 15) -> list[str]:
    """Top functions of py-spy raw (collapsed) stacks: self % and inclusive % of the
    active samples, and how busy the event-loop thread was (its active samples over
    the samples a fully busy thread would give)."""
    if not path.exists():
        return [f"(no profile at {path}; see {path.with_suffix('.log')})"]
    self_samples: dict[str, int] = {}
    total_samples: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(f) for f in stack.split(";")]
        frames = [f for f in frames if f]
        if not frames:
            continue
        self_samples[frames[-1]] = self_samples.get(frames[-1], 0) + count
        for frame in set(frames):
            total_samples[frame] = total_samples.get(frame, 0) + count
    if total == 0:
        return ["(empty profile)"]
    loop = sum(c for n, c in total_samples.items() if n.endswith("uvloop/__init__.py:run"))
    busy = 100 * loop / (PROFILE_RATE_HZ * duration_s)
    lines = [
        f"{total} active samples at {PROFILE_RATE_HZ} Hz over {duration_s:.0f} s; "
        f"event-loop thread active in {loop} ({busy:.0f}% of wall time)",
        "top by self time:",
    ]
    for name, count in sorted(self_samples.items(), key=lambda kv: -kv[1])[:top_n]:
        lines.append(f"  {100 * count / total:5.1f}% self   {name}")
    lines.append("top by inclusive time (synod code):")
    synod = [(n, c) for n, c in total_samples.items() if "synod/" in n]
    for name, count in sorted(synod, key=lambda kv: -kv[1])[:top_n]:
        lines.append(f"  {100 * count / total:5.1f}% incl   {name}")
    return lines


def _frame_name(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'file path:func' with the site-packages prefix cut."""
    match = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame.strip())
    if not match:
        return frame.strip()
    func, path = match.groups()
    for marker in ("site-packages/", "node-image/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{func}"


# ---------------------------------------------------------------------------
# one system


@dataclass
class SystemResult:
    system: str
    version: str
    runs: list[WrkResult] = field(default_factory=list)
    load: WrkResult | None = None
    keys_loaded: int = 0
    topped_up: int = 0  # load writes that failed and were put again
    error: str = ""  # why this system's benchmark stopped early
    rss_idle: list[dict[str, int]] = field(default_factory=list)  # per member, leader first
    rss_loaded: list[dict[str, int]] = field(default_factory=list)
    rss_after: list[dict[str, int]] = field(default_factory=list)
    profiles: dict[str, list[str]] = field(default_factory=dict)
    baseline: WrkResult | None = None  # scale runs: put x HEADLINE at BASELINE_KEYS keys
    lag_before: dict[float, float] | None = None  # loop-lag buckets when the load began
    lag_whole_run_ms: tuple[float, float] | None = None  # (p99, max) from load to the end
    rejoin: dict[str, Any] = field(default_factory=dict)  # the wiped follower's catch-up

    def run_for(self, op: str, connections: int) -> WrkResult | None:
        return next((r for r in self.runs if r.op == op and r.connections == connections), None)


def _ordered(cluster: ClusterUnderTest) -> list[Member]:
    leader = cluster.leader()
    return [leader, *(m for m in cluster.members if m is not leader)]


def setup_system(cluster: ClusterUnderTest, result: SystemResult) -> None:
    """Start the members, check a put reads back, take the idle RSS."""
    _say(f"{cluster.system}: starting 3 members in {cluster.root}")
    cluster.start()
    leader = cluster.leader()
    # A sanity round trip through the same routes wrk uses.
    cluster.put(leader, "bench-check", "v" * VALUE_BYTES)
    if cluster.get(leader, "bench-check") != "v" * VALUE_BYTES:
        raise BenchError(f"{cluster.system}: a put was not read back")
    cluster.wait_applied()
    time.sleep(SETTLE_S)
    result.rss_idle = [read_rss_kib(m.pid) for m in _ordered(cluster)]


def baseline_system(
    cluster: ClusterUnderTest, wrk: Wrk, result: SystemResult, duration_s: float
) -> None:
    """Scale runs: load BASELINE_KEYS keys, then time writes there: the figure that the
    writes after the big load are compared with."""
    result.lag_before = cluster.loop_lag_buckets()
    _say(f"{cluster.system}: baseline: loading {BASELINE_KEYS} keys")
    wrk.load(cluster, BASELINE_KEYS, HEADLINE_CONNECTIONS)
    missing = missing_keys(cluster, BASELINE_KEYS)
    if missing and top_up(cluster, missing):
        raise BenchError(f"{cluster.system}: baseline keys still missing after the top-up")
    cluster.wait_applied()
    _say(f"{cluster.system}: baseline: put x {HEADLINE_CONNECTIONS} connections at "
         f"{BASELINE_KEYS} keys, {duration_s:.0f}s")  # fmt: skip
    result.baseline = wrk.run(cluster, "put", HEADLINE_CONNECTIONS, duration_s, BASELINE_RUN,
                              BASELINE_KEYS)  # fmt: skip


def _poll_until(ready: Any, wait_s: float, what: str) -> float:
    """Seconds until ready() is true, polled every POLL_S. Raises BenchError past wait_s."""
    started = time.monotonic()
    while not ready():
        if time.monotonic() - started > wait_s:
            raise BenchError(f"{what} did not happen within {wait_s:.0f}s")
        time.sleep(POLL_S)
    return time.monotonic() - started


def _admin(member: Member, path: str, body: dict[str, Any]) -> bool:
    """POST an admin call; False on a 4xx/5xx answer (e.g. not caught up yet)."""
    try:
        http_json(member.client_url + "/v1/admin/members/" + path, body, timeout_s=30)
    except urllib.error.HTTPError:
        return False
    return True


def rejoin_wiped_follower(cluster: ClusterUnderTest, result: SystemResult) -> None:
    """Scale runs, Synod: remove a follower, wipe its data directory, add it back as a
    learner with the same id and time how long it takes to apply what the leader had
    committed (by snapshot: the log was compacted long before), then to be promoted."""
    if not isinstance(cluster, SynodCluster):
        return
    leader = cluster.leader()
    follower = next(m for m in cluster.members if m is not leader)
    member_id = cluster.member_id(follower)
    _say(f"synod: wiping {follower.name} and adding it back as a learner")
    if not _admin(leader, "remove", {"id": member_id}):
        raise BenchError(f"synod: the leader refused to remove {follower.name}")
    follower.stop()
    shutil.rmtree(cluster.root / f"member-{member_id}")
    peer_url = follower.args[follower.args.index("--listen-peer") + 1]
    body = {"id": member_id, "peer_url": peer_url, "client_url": follower.client_url}
    if not _admin(leader, "add-learner", body):
        raise BenchError(f"synod: the leader refused to add {follower.name} back")
    state = cluster.applied_and_commit(leader)
    if state is None:
        raise BenchError("synod: the leader did not answer its status")
    lag_before = cluster.lag_buckets_of([leader])
    if "--join" not in follower.args:
        follower.args.append("--join")
    follower.start(cluster.env())

    def caught_up() -> bool:
        if not follower.alive():
            raise BenchError(f"synod: {follower.name} exited while catching up")
        now = cluster.applied_and_commit(follower)
        return now is not None and now[0] >= state[1]

    catch_up_s = _poll_until(caught_up, CATCH_UP_WAIT_S_MAX, f"{follower.name} catching up")
    follower_status = cluster.status_of(follower) or {}
    promote_s = _poll_until(lambda: _admin(leader, "promote", {"id": member_id}),
                            PROMOTE_WAIT_S_MAX, f"promoting {follower.name}")  # fmt: skip
    leader_lag = lag_summary(lag_before, cluster.lag_buckets_of([leader]))
    result.rejoin = {
        "member": follower.name, "target_index": state[1], "catch_up_s": round(catch_up_s, 2),
        "snapshot_index": int(follower_status.get("snapshot_index", 0)),
        "promote_s": round(promote_s, 2),
        "leader_lag_max_ms": leader_lag[1] if leader_lag else None,
    }  # fmt: skip
    cluster.wait_applied()


def load_system(cluster: ClusterUnderTest, wrk: Wrk, result: SystemResult, keys_n: int) -> None:
    """Load the keys (wrk), put again what failed, check the count, take the RSS."""
    if result.lag_before is None:
        result.lag_before = cluster.loop_lag_buckets()
    _say(f"{cluster.system}: loading {keys_n} keys of {VALUE_BYTES} bytes (wrk, "
         f"{HEADLINE_CONNECTIONS} connections)")  # fmt: skip
    result.load = wrk.load(cluster, keys_n, HEADLINE_CONNECTIONS)
    if result.load.leader_changes:
        _say(f"{cluster.system}: leader changed during the load: {result.load.leader_changes}")
    missing = missing_keys(cluster, keys_n)
    if missing:
        _say(f"{cluster.system}: {len(missing)} load writes failed; putting them again")
        result.topped_up = len(missing)
        top_up(cluster, missing)
    result.keys_loaded = cluster.count_keys(cluster.leader(), "r")
    if result.keys_loaded != keys_n:
        raise BenchError(
            f"{cluster.system}: {result.keys_loaded} keys after the load, expected {keys_n} "
            f"(load errors {result.load.errors}, misses {result.load.misses})"
        )
    cluster.wait_applied()
    time.sleep(SETTLE_S)
    result.rss_loaded = [read_rss_kib(m.pid) for m in _ordered(cluster)]


def profile_synod(
    cluster: ClusterUnderTest, wrk: Wrk, result: SystemResult, *, duration_s: float,
    keys_n: int, profile_dir: Path, py_spy: str,
) -> None:  # fmt: skip
    """Extra, unmeasured runs while py-spy samples the leader and one follower."""
    for op in ("put", "range"):
        leader, follower = _ordered(cluster)[:2]
        out = profile_dir / f"synod-{op}-{HEADLINE_CONNECTIONS}-leader.txt"
        out_follower = out.with_name(out.name.replace("leader", "follower"))
        _say(f"synod: profiling the leader (pid {leader.pid}) and a follower "
             f"(pid {follower.pid}) during {op}, not measured")  # fmt: skip
        with (
            profiling(py_spy, leader.pid, out, duration_s),
            profiling(py_spy, follower.pid, out_follower, duration_s),
        ):
            wrk.run(cluster, op, HEADLINE_CONNECTIONS, duration_s, "p", keys_n)
        result.profiles[op] = summarize_profile(out, duration_s)
        result.profiles[f"{op} (a follower)"] = summarize_profile(out_follower, duration_s)


def _timed_run(
    wrk: Wrk, op: str, connections: int, duration_s: float, letter: str, keys_n: int,
    cluster: ClusterUnderTest, result: SystemResult,
) -> None:  # fmt: skip
    _say(f"{cluster.system}: {op} x {connections} connections, {duration_s:.0f}s")
    result.runs.append(wrk.run(cluster, op, connections, duration_s, letter, keys_n))


def bench_all(
    systems: list[tuple[ClusterUnderTest, SystemResult]], wrk: Wrk, *, duration_s: float,
    keys_n: int, profile_dir: Path | None, py_spy: str | None,
) -> None:  # fmt: skip
    """Both clusters run side by side; the timed runs alternate between them, so a
    change in the machine's background load hits both alike. A system that fails is
    stopped and reported; the others go on."""
    live = list(systems)

    def each(phase: Any) -> None:
        for cluster, result in list(live):
            try:
                phase(cluster, result)
            except BenchError as error:
                result.error = str(error)
                print(f"bench: {cluster.system} failed: {error}", file=sys.stderr)
                _tail_logs(cluster)
                cluster.stop()
                live.remove((cluster, result))

    scale = keys_n >= SCALE_KEYS_MIN
    each(setup_system)
    each(lambda c, r: c.raise_keys_max(keys_n) if isinstance(c, SynodCluster) else None)
    if scale:
        each(lambda c, r: baseline_system(c, wrk, r, duration_s))
    each(lambda c, r: load_system(c, wrk, r, keys_n))
    for op in ("put", "range"):
        for run_index, connections in enumerate(CONNECTIONS):
            letter = "abcdefgh"[run_index]
            each(functools.partial(_timed_run, wrk, op, connections, duration_s, letter, keys_n))
    each(lambda c, r: setattr(r, "rss_after", [read_rss_kib(m.pid) for m in _ordered(c)]))
    if profile_dir is not None and py_spy is not None:
        each(
            lambda c, r: profile_synod(c, wrk, r, duration_s=duration_s, keys_n=keys_n,
                                       profile_dir=profile_dir, py_spy=py_spy)
            if c.system == "synod" else None
        )  # fmt: skip
    each(_record_whole_run_lag)
    if scale:
        each(rejoin_wiped_follower)


def _record_whole_run_lag(cluster: ClusterUnderTest, result: SystemResult) -> None:
    after = cluster.loop_lag_buckets()
    if result.lag_before is not None and after is not None:
        result.lag_whole_run_ms = lag_summary(result.lag_before, after)


# ---------------------------------------------------------------------------
# report


def _ms(us: float) -> str:
    return f"{us / 1000:.1f}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if a > 0 and b > 0 else "n/a"


def report(results: dict[str, SystemResult], duration_s: float) -> list[str]:
    lines: list[str] = []
    synod, etcd = results.get("synod"), results.get("etcd")
    titles = {
        "put": f"writes: put, {KEY_BYTES}-byte keys, {VALUE_BYTES}-byte values",
        "range": "reads: linearizable range of one existing key",
    }
    for op in ("put", "range"):
        lines.append("")
        lines.append(f"{titles[op]} ({duration_s:.0f} s per run, wrk -t{WRK_THREADS})")
        header = f"{'conns':>5} | {'synod ops/s':>11} {'p50 ms':>7} {'p99 ms':>7} | "
        header += f"{'etcd ops/s':>10} {'p50 ms':>7} {'p99 ms':>7} | {'synod/etcd':>10}"
        lines.append(header)
        lines.append("-" * len(header))
        for connections in CONNECTIONS:
            s = synod.run_for(op, connections) if synod else None
            e = etcd.run_for(op, connections) if etcd else None
            cells = [f"{connections:>5}"]
            cells.append(
                f"{s.ok_per_s:>11.0f} {_ms(s.latency_us['p50']):>7} {_ms(s.latency_us['p99']):>7}"
                if s else f"{'-':>11} {'-':>7} {'-':>7}"
            )  # fmt: skip
            cells.append(
                f"{e.ok_per_s:>10.0f} {_ms(e.latency_us['p50']):>7} {_ms(e.latency_us['p99']):>7}"
                if e else f"{'-':>10} {'-':>7} {'-':>7}"
            )  # fmt: skip
            ratio = _ratio(s.ok_per_s, e.ok_per_s) if s and e else "n/a"
            lines.append(" | ".join(cells) + f" | {ratio:>10}")
        lines.append(
            "  Synod event-loop lag, all members (p99 / max, bucket bounds in ms): "
            + "; ".join(f"{c} conns {_lag(synod.run_for(op, c) if synod else None)}"
                        for c in CONNECTIONS)
        )  # fmt: skip
        lines.append(
            "  CPU ms per op, 3 members together (machine busy % during the run): "
            + "; ".join(
                f"{c} conns synod {_cpu(synod, op, c)} etcd {_cpu(etcd, op, c)}"
                for c in CONNECTIONS
            )
        )
        for res in (synod, etcd):
            for run in res.runs if res else []:
                if run.op == op and (run.failed or sum(run.errors.values())):
                    lines.append(
                        f"  note: {res.system if res else ''} {run.connections} conns: "
                        f"errors {run.errors}, misses {run.misses} (not counted as ops)"
                    )
                if run.op == op and run.leader_changes:
                    lines.append(
                        f"  note: {res.system if res else ''} {run.connections} conns: "
                        f"{run.leader_changes} during the run"
                    )
    for res in (synod, etcd):
        if res and res.load:
            load = res.load
            lines.append(
                f"  {res.system} load: {load.loaded} writes ok in {load.duration_s:.1f} s "
                f"({load.loaded / load.duration_s:.0f}/s, p99 {_ms(load.latency_us['p99'])} ms)"
                f", {load.misses} failed"
                + (f" (put again: {res.topped_up})" if res.topped_up else "")
                + (f"; {load.leader_changes}" if load.leader_changes else "")
                + (f"; event-loop lag p99 / max {_lag(load)} ms"
                   if load.loop_lag_max_ms is not None else "")
            )  # fmt: skip
    for res in (synod, etcd):
        if res and res.error:
            lines.append(f"  {res.system} DID NOT FINISH: {res.error}")
    lines.append("")
    lines.append(_rss_table(synod, etcd))
    lines.extend(scale_lines(results))
    return lines


def _flat_ratio(res: SystemResult | None) -> float | None:
    """Writes/s after the big load over writes/s at BASELINE_KEYS (same connections)."""
    after = res.run_for("put", HEADLINE_CONNECTIONS) if res else None
    if res is None or res.baseline is None or after is None or res.baseline.ok_per_s <= 0:
        return None
    return after.ok_per_s / res.baseline.ok_per_s


def scale_lines(results: dict[str, SystemResult]) -> list[str]:
    """The scale run's figures: flatness, the longest loop pause, the wiped follower."""
    lines: list[str] = []
    for res in results.values():
        if res.lag_whole_run_ms is not None:
            p99, worst = res.lag_whole_run_ms
            lines.append(f"  {res.system} event-loop lag from the load to the end, all "
                         f"members: p99 <= {p99:g} ms, max <= {worst:g} ms (snapshots "
                         "included)")  # fmt: skip
        ratio = _flat_ratio(res)
        if ratio is not None and res.baseline is not None:
            after = res.run_for("put", HEADLINE_CONNECTIONS)
            assert after is not None
            lines.append(
                f"  {res.system} writes x {HEADLINE_CONNECTIONS} at {res.keys_loaded} keys / at "
                f"{BASELINE_KEYS} keys: {after.ok_per_s:.0f} / {res.baseline.ok_per_s:.0f} = "
                f"{ratio:.2f} (p99 {_ms(after.latency_us['p99'])} / "
                f"{_ms(res.baseline.latency_us['p99'])} ms)"
            )
        if res.rejoin:
            r = res.rejoin
            how = f"by snapshot at index {r['snapshot_index']}" if r["snapshot_index"] else (
                "from the log (no snapshot)")  # fmt: skip
            lines.append(
                f"  {res.system} wiped follower {r['member']}: applied the leader's commit "
                f"index {r['target_index']} after {r['catch_up_s']:.1f} s ({how}), promoted "
                f"{r['promote_s']:.1f} s later; leader loop lag max meanwhile "
                f"<= {r['leader_lag_max_ms']} ms"
            )
    synod = results.get("synod")
    if synod is not None and synod.baseline is not None:
        ratio = _flat_ratio(synod)
        lag = synod.lag_whole_run_ms
        flat = f"{ratio:.2f}" if ratio is not None else "n/a"
        most = f"<={lag[1]:g}" if lag else "=n/a"
        lines.append(f"bench-scale: synod writes {synod.keys_loaded} keys/{BASELINE_KEYS} "
                     f"keys={flat} loop_lag_max_ms{most}")  # fmt: skip
        if synod.rejoin:
            lines[-1] += f" rejoin_s={synod.rejoin['catch_up_s']:.1f}"
    return lines


def _lag(run: WrkResult | None) -> str:
    if run is None or run.loop_lag_p99_ms is None or run.loop_lag_max_ms is None:
        return "-"
    return f"<= {run.loop_lag_p99_ms:g} / <= {run.loop_lag_max_ms:g}"


def _cpu(res: SystemResult | None, op: str, connections: int) -> str:
    run = res.run_for(op, connections) if res else None
    return f"{run.cpu_ms_per_op:.2f} ({run.machine_busy_pct:.0f}%)" if run else "-"


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def _rss_table(synod: SystemResult | None, etcd: SystemResult | None) -> str:
    out = [
        "memory: VmRSS per member in MiB (leader first), idle and after loading the keys",
        f"{'member':>9} | {'synod idle':>10} {'loaded':>7} | {'etcd idle':>9} {'loaded':>7} "
        f"| {'loaded synod/etcd':>17}",
    ]
    out.append("-" * len(out[1]))
    sums = {"si": 0, "sl": 0, "ei": 0, "el": 0}
    for index in range(3):
        name = "leader" if index == 0 else f"follower{index}"
        si = synod.rss_idle[index]["VmRSS"] if synod and synod.rss_idle else 0
        sl = synod.rss_loaded[index]["VmRSS"] if synod and synod.rss_loaded else 0
        ei = etcd.rss_idle[index]["VmRSS"] if etcd and etcd.rss_idle else 0
        el = etcd.rss_loaded[index]["VmRSS"] if etcd and etcd.rss_loaded else 0
        for key, value in (("si", si), ("sl", sl), ("ei", ei), ("el", el)):
            sums[key] += value
        out.append(
            f"{name:>9} | {_mib(si):>10} {_mib(sl):>7} | {_mib(ei):>9} {_mib(el):>7} "
            f"| {_ratio(sl, el):>17}"
        )
    out.append(
        f"{'total':>9} | {_mib(sums['si']):>10} {_mib(sums['sl']):>7} | "
        f"{_mib(sums['ei']):>9} {_mib(sums['el']):>7} | {_ratio(sums['sl'], sums['el']):>17}"
    )
    for res in (synod, etcd):
        if res and res.rss_loaded:
            anon = sum(r.get("RssAnon", 0) for r in res.rss_loaded)
            file_ = sum(r.get("RssFile", 0) for r in res.rss_loaded)
            out.append(
                f"  {res.system} loaded, all members: RssAnon {_mib(anon)} MiB, "
                f"RssFile {_mib(file_)} MiB (mapped files such as bbolt count here)"
            )
    return "\n".join(out)


def headline(results: dict[str, SystemResult]) -> str:
    def ratio(op: str) -> str:
        s, e = results.get("synod"), results.get("etcd")
        sr = s.run_for(op, HEADLINE_CONNECTIONS) if s else None
        er = e.run_for(op, HEADLINE_CONNECTIONS) if e else None
        return f"{sr.ok_per_s / er.ok_per_s:.2f}" if sr and er and er.ok_per_s > 0 else "n/a"

    return (
        f"bench: writes synod/etcd={ratio('put')} reads synod/etcd={ratio('range')} "
        f"({HEADLINE_CONNECTIONS} connections)"
    )


# ---------------------------------------------------------------------------
# main


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class _Terminated(BaseException):
    """SIGTERM/SIGHUP: unwind through every finally so clusters stop and dirs go."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Terminated(signal.Signals(signum).name)


def _duration_from_env() -> float:
    text = os.environ.get("BENCH_DURATION_S", "")
    if not text:
        return DURATION_S_DEFAULT
    try:
        value = float(text)
    except ValueError:
        raise PrerequisiteError(f"  - BENCH_DURATION_S={text!r} is not a number") from None
    if not 1 <= value <= 3600:
        raise PrerequisiteError("  - BENCH_DURATION_S must be between 1 and 3600")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m synod.bench.etcd_compare",
        description="Synod against etcd: writes/s, reads/s, p50/p99 and RSS, same load.",
    )
    parser.add_argument(
        "--systems", default="synod,etcd", help="comma-separated subset of synod,etcd"
    )
    parser.add_argument(
        "--keys", type=int, default=LOAD_KEYS_DEFAULT,
        help=f"keys to load; from {SCALE_KEYS_MIN:,} on a scale run: writes are first timed "
             f"at {BASELINE_KEYS:,} keys, and a wiped Synod follower rejoins at the end",
    )  # fmt: skip
    parser.add_argument(
        "--profile", type=Path, default=None,
        help="directory: also sample the Synod leader with py-spy during extra runs",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write all figures here")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (logs, data)"
    )
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if not systems or any(s not in ("synod", "etcd") for s in systems):
        parser.error("--systems takes synod, etcd or both")
    if not 1 <= args.keys <= 10_000_000:
        parser.error("--keys must be between 1 and 10,000,000")
    try:
        duration_s = _duration_from_env()
        prereqs = check_prerequisites(systems, need_py_spy=args.profile is not None)
    except PrerequisiteError as error:
        print(f"bench: prerequisites missing:\n{error}", file=sys.stderr)
        return 2

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    base = os.environ.get("BENCH_TMPDIR") or None
    root = Path(tempfile.mkdtemp(prefix="synod-bench-", dir=base))
    wrk_script = root / "bench.lua"
    wrk_script.write_text(WRK_LUA)
    wrk = Wrk(prereqs, wrk_script)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    results: dict[str, SystemResult] = {}
    clusters: list[ClusterUnderTest] = []
    status = 1
    try:
        pairs: list[tuple[ClusterUnderTest, SystemResult]] = []
        for system in ("synod", "etcd"):
            if system not in systems:
                continue
            cluster: ClusterUnderTest
            if system == "synod":
                cluster = SynodCluster(root / "synod", 3)
                version = _synod_version()
            else:
                cluster = EtcdCluster(root / "etcd", 3, prereqs.etcd, prereqs.etcd_gateway)
                version = prereqs.etcd_version
            clusters.append(cluster)
            results[system] = SystemResult(system, version)
            pairs.append((cluster, results[system]))
        bench_all(
            pairs, wrk, duration_s=duration_s, keys_n=args.keys,
            profile_dir=args.profile, py_spy=prereqs.py_spy,
        )  # fmt: skip
        for cluster in clusters:
            cluster.stop()
        status = 1 if any(r.error for r in results.values()) else 0
    except (KeyboardInterrupt, _Terminated) as error:
        print(f"bench: interrupted ({error or 'SIGINT'})", file=sys.stderr)
        status = 130
    finally:
        for cluster in clusters:
            cluster.stop()
        if args.keep:
            print(f"bench: kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    print(_environment_line(prereqs, results, duration_s))
    for line in report(results, duration_s):
        print(line)
    for system, res in results.items():
        for op, lines in res.profiles.items():
            who = "a follower" if "follower" in op else "the leader"
            print(f"\nprofile of {who} of {system} during {op.split()[0]} x "
                  f"{HEADLINE_CONNECTIONS}:")  # fmt: skip
            for line in lines:
                print(line)
    if args.json is not None:
        args.json.write_text(json.dumps(_as_json(prereqs, results, duration_s), indent=2))
    print(headline(results))
    return status


def _synod_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("synod")
    except PackageNotFoundError:
        return "source"


def _environment_line(
    prereqs: Prerequisites, results: dict[str, SystemResult], duration_s: float
) -> str:
    return (
        f"\nbench on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{'; '.join(f'{r.system} {r.version}' for r in results.values())}, "
        f"{prereqs.wrk_version}; 3 members each, loopback, {duration_s:.0f} s per run"
    )


def _as_json(
    prereqs: Prerequisites, results: dict[str, SystemResult], duration_s: float
) -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "wrk": prereqs.wrk_version,
        "duration_s": duration_s,
        "systems": {
            name: {
                "version": r.version,
                "runs": [run.as_dict() for run in r.runs],
                "load": r.load.as_dict() if r.load else None,
                "keys_loaded": r.keys_loaded,
                "topped_up": r.topped_up,
                "error": r.error,
                "rss_kib": {"idle": r.rss_idle, "loaded": r.rss_loaded, "after": r.rss_after},
                "profiles": r.profiles,
                "baseline": r.baseline.as_dict() if r.baseline else None,
                "loop_lag_whole_run_ms": r.lag_whole_run_ms,
                "rejoin": r.rejoin,
            }
            for name, r in results.items()
        },
        "headline": headline(results),
    }


def _tail_logs(cluster: ClusterUnderTest, lines_n: int = 15) -> None:
    for member in cluster.members:
        with contextlib.suppress(OSError):
            lines = member.log_path.read_text(errors="replace").splitlines()[-lines_n:]
            print(f"--- {member.name} log (last {len(lines)} lines):", file=sys.stderr)
            for line in lines:
                print(f"    {line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
