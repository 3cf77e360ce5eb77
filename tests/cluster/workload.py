"""A recorded KV workload against a real cluster, checked for linearizability.

Each client thread opens a session, then loops: put a unique value, read, or
compare-and-swap on a few keys. A write that gets no answer is retried with the
same session seq on another node (exactly-once); after `attempts_max` it is left
pending (unknown outcome) in the history. Time is `time.monotonic_ns()`.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from synod.checker.history import HistoryRecorder
from synod.checker.linearizability import CheckResult, check
from synod.checker.models import Cas, Get, KvModel, Put
from tests.cluster.harness import Cluster, request

KEYS = ("a", "b", "c", "d")
RETRYABLE = {421, 429, 500, 502, 503, 504}


class Workload:
    """Several client threads hammering the cluster until `stop()`."""

    def __init__(self, cluster: Cluster, clients: int = 4, seed: int = 1) -> None:
        self.cluster = cluster
        self.history = HistoryRecorder()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [
            # Daemon threads: a failing test must not leave the process unable to exit.
            threading.Thread(
                target=self._client, args=(i, random.Random(seed * 100 + i)), daemon=True
            )
            for i in range(clients)
        ]
        self.acknowledged_writes = 0
        self.values = iter(range(1, 10**9))

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)
            assert not thread.is_alive(), "a workload client hung"

    def _urls(self) -> list[str]:
        # A copy first: the test thread may add a member while clients run.
        return [n.url for n in list(self.cluster.nodes.values()) if n.alive()]

    def _call(
        self, rng: random.Random, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, Any] | None:
        """One attempt at a random live node; None when nothing answered."""
        urls = self._urls()
        if not urls:
            return None
        try:
            return request(rng.choice(urls), "POST", path, body, headers=headers, timeout_s=3.0)
        except OSError:
            return None

    def _retrying(
        self,
        rng: random.Random,
        path: str,
        body: dict[str, Any],
        headers: dict[str, str],
        attempts_max: int = 12,
    ) -> Any | None:
        for _ in range(attempts_max):
            answer = self._call(rng, path, body, headers)
            if answer is not None and answer[0] == 200:
                return answer[1]
            if answer is not None and answer[0] not in RETRYABLE:
                raise AssertionError(f"{path} {body} answered {answer}")
            time.sleep(0.05 + rng.random() * 0.1)
        return None

    def _client(self, index: int, rng: random.Random) -> None:
        opened = self._retrying(rng, "/v1/session/open", {}, {}, attempts_max=100)
        assert opened is not None, "could not open a session"
        client_id, seq = int(opened["client_id"]), 0
        while not self.stopping.is_set():
            key = rng.choice(KEYS)
            roll = rng.random()
            if roll < 0.35:
                self._read(index, rng, key)
                continue
            seq += 1
            headers = {
                "Synod-Client-Id": str(client_id),
                "Synod-Seq": str(seq),
                "Synod-Ack-Seq": str(seq),
            }
            with self.lock:
                value = f"v{next(self.values)}"
            if roll < 0.8:
                self._put(index, rng, key, value, headers)
            else:
                self._cas(index, rng, key, value, headers)

    def _put(
        self, index: int, rng: random.Random, key: str, value: str, headers: dict[str, str]
    ) -> None:
        handle = self._invoke(index, Put(key, value))
        answer = self._retrying(rng, "/v1/kv/put", {"key": key, "value": value}, headers)
        if answer is not None:
            self._complete(handle, None)
            self.acknowledged_writes += 1

    def _cas(
        self, index: int, rng: random.Random, key: str, value: str, headers: dict[str, str]
    ) -> None:
        current = self._retrying(rng, "/v1/kv/range", {"key": key, "serializable": True}, {})
        expected = current["kvs"][0]["value"] if current and current["kvs"] else None
        compare = (
            {"key": key, "target": "value", "result": "=", "value": expected}
            if expected is not None
            else {"key": key, "target": "version", "result": "=", "value": 0}
        )
        body = {"compare": [compare], "success": [{"put": {"key": key, "value": value}}]}
        handle = self._invoke(index, Cas(key, expected, value))
        answer = self._retrying(rng, "/v1/kv/txn", body, headers)
        if answer is not None:
            self._complete(handle, bool(answer["succeeded"]))

    def _read(self, index: int, rng: random.Random, key: str) -> None:
        handle = self._invoke(index, Get(key))
        answer = self._retrying(rng, "/v1/kv/range", {"key": key}, {})
        if answer is not None:
            kvs = answer["kvs"]
            self._complete(handle, kvs[0]["value"] if kvs else None)

    def _invoke(self, index: int, op: object) -> int:
        with self.lock:
            return self.history.invoke(index, op, time.monotonic_ns())

    def _complete(self, handle: int, output: object) -> None:
        with self.lock:
            self.history.complete(handle, output, time.monotonic_ns())

    def final_reads(self) -> None:
        """Read every key once more after the faults: acknowledged writes must show."""
        rng = random.Random(0)
        for key in KEYS:
            self._read(999, rng, key)

    def check(self) -> CheckResult:
        return check(KvModel(), self.history.history())
