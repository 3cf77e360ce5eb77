"""Locks on real processes: a holder killed with kill -9 is replaced once its lease
expires (the next waiter gets a larger token), and a holder paused with SIGSTOP past its
TTL has its fenced write refused when it resumes; the history passes the lock checker."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from synod.checker.locks import FencedWrite, LockHold, check_fenced_writes, check_locks
from synod.client import Client, Txn
from synod.client.txn import put
from tests.cluster.harness import WAIT_S_MAX, Cluster

TTL_MS = 1_000  # the smallest lease TTL a node accepts

# A holder process: acquires NAME, writes its token to OUT, then waits for a line on
# stdin and tries a fenced write (reporting accepted/refused to OUT) without checking
# whether it still holds the lock — the paused-holder mistake fencing must catch.
HOLDER = """
import sys
from synod.client import Client, Txn
from synod.client.errors import FencingTokenStale
from synod.client.txn import put

endpoints, name, owner, out = sys.argv[1:5]
with Client(endpoints, timeout_s=2) as client:
    lock = client.lock(name, ttl_ms=int(sys.argv[5]), owner=owner).acquire()
    with open(out, "w") as f:
        f.write(str(lock.token))
    sys.stdin.readline()
    try:
        lock.fenced_txn(Txn(success=[put(name + "/data", owner)]))
        result = "accepted"
    except FencingTokenStale:
        result = "refused"
    with open(out, "w") as f:
        f.write(result + " " + str(int(lock.held)))
"""


def _start_holder(endpoints: str, name: str, owner: str, out: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-c", HOLDER, endpoints, name, owner, str(out), str(TTL_MS)]
    return subprocess.Popen(args, stdin=subprocess.PIPE)


def _read_when_written(cluster: Cluster, path: Path, what: str) -> str:
    cluster.wait_until(lambda: path.exists() and path.read_text().strip() != "", what)
    return path.read_text().strip()


def test_killed_and_paused_holders(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3)
    holders: list[subprocess.Popen[bytes]] = []
    try:
        cluster.start_all()
        endpoints = ",".join(node.url for node in cluster.nodes.values())
        with Client(endpoints, timeout_s=2) as client:
            # 1. kill -9: the waiter is granted once the dead holder's lease expires.
            killed_out = tmp_path / "killed"
            killed = _start_holder(endpoints, "jobs/a", "killed", killed_out)
            holders.append(killed)
            killed_token = int(_read_when_written(cluster, killed_out, "the first holder"))
            killed.send_signal(signal.SIGKILL)
            killed.wait(timeout=WAIT_S_MAX)
            killed_at = time.monotonic()
            with client.lock("jobs/a", ttl_ms=TTL_MS, wait_ms=30_000, owner="next") as taken:
                takeover_s = time.monotonic() - killed_at
                assert taken.token > killed_token
            # 2. SIGSTOP past the TTL: the next holder writes, the resumed one is fenced.
            paused_out = tmp_path / "paused"
            paused = _start_holder(endpoints, "jobs/b", "paused", paused_out)
            holders.append(paused)
            paused_token = int(_read_when_written(cluster, paused_out, "the second holder"))
            paused.send_signal(signal.SIGSTOP)
            paused_out.unlink()
            with client.lock("jobs/b", ttl_ms=TTL_MS, wait_ms=30_000, owner="fresh") as fresh:
                assert fresh.token > paused_token
                assert fresh.fenced_txn(Txn(success=[put("jobs/b/data", "fresh")])).succeeded
                assert paused.stdin is not None
                paused.send_signal(signal.SIGCONT)
                paused.stdin.write(b"go\n")
                paused.stdin.flush()
                outcome = _read_when_written(cluster, paused_out, "the resumed holder")
                data = client.get("jobs/b/data")
                fresh_token = fresh.token
        assert outcome == "refused 0", outcome  # refused, and it knows it no longer holds
        assert data is not None and data.value == "fresh"
        assert paused.wait(timeout=WAIT_S_MAX) == 0
        writes = [
            FencedWrite("jobs/b", "fresh", fresh_token, 1, True, True),
            FencedWrite("jobs/b", "paused", paused_token, 2, False, False),
        ]
        assert check_fenced_writes(writes).ok
        holds = [LockHold("jobs/a", "killed", killed_token, 0, None),
                 LockHold("jobs/b", "paused", paused_token, 0, None),
                 LockHold("jobs/b", "fresh", fresh_token, 1, 2)]  # fmt: skip
        assert check_locks(holds).ok
        with urllib.request.urlopen(cluster.nodes[1].url + "/metrics", timeout=5) as answer:
            metrics = answer.read().decode()
        assert "synod_lock_held " in metrics and "synod_lock_waiters " in metrics
        print(f"takeover after kill -9: {takeover_s:.2f}s (TTL {TTL_MS} ms)")
    finally:
        for holder in holders:
            if holder.poll() is None:
                holder.send_signal(signal.SIGCONT)
                holder.kill()
                holder.wait(timeout=WAIT_S_MAX)
        cluster.stop_all()
