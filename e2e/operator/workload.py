"""In-cluster KV workload for the operator e2e test (runs as a Job in the node image).

Client threads put unique values, read and compare-and-swap a few keys through
the cluster's client Service with exactly-once sessions, recording a history.
When the key `e2e/stop` appears, they stop; final reads follow, then
`synod.checker` checks the history for linearizability. The last line printed
is `RESULT {json}`; the exit status is 0 only for a linearizable history.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from synod.checker import Get, HistoryRecorder, KvModel, Put, check

URL = os.environ["SYNOD_URL"]
CLIENTS = int(os.environ.get("WORKLOAD_CLIENTS", "3"))
RUN_S_MAX = float(os.environ.get("WORKLOAD_RUN_S_MAX", "1800"))
KEYS = ("a", "b", "c", "d")
STOP_KEY = "e2e/stop"
RETRYABLE = {421, 429, 500, 502, 503, 504}
ATTEMPTS_MAX = 40
REQUEST_TIMEOUT_S = 3.0


def request(path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any] | None:
    data = json.dumps(body).encode()
    req = urllib.request.Request(
        URL + path,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except OSError:
        return None


class Workload:
    def __init__(self) -> None:
        self.history = HistoryRecorder()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.values = iter(range(1, 10**9))
        self.acknowledged_puts = 0
        self.unknown_puts = 0
        self.errors: list[str] = []

    def retrying(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> Any | None:
        for attempt in range(ATTEMPTS_MAX):
            answer = request(path, body, headers)
            if answer is not None and answer[0] == 200:
                return answer[1]
            if answer is not None and answer[0] not in RETRYABLE:
                self.errors.append(f"{path} answered {answer[0]}: {str(answer[1])[:200]}")
                return None
            time.sleep(min(1.0, 0.05 * (attempt + 1)))
        return None

    def invoke(self, client: int, op: object) -> int:
        with self.lock:
            return self.history.invoke(client, op, time.monotonic_ns())

    def complete(self, handle: int, output: object) -> None:
        with self.lock:
            self.history.complete(handle, output, time.monotonic_ns())

    def read(self, client: int, key: str) -> None:
        handle = self.invoke(client, Get(key))
        answer = self.retrying("/v1/kv/range", {"key": key}, {})
        if answer is not None:
            kvs = answer["kvs"]
            self.complete(handle, kvs[0]["value"] if kvs else None)

    def client(self, index: int) -> None:
        rng = random.Random(index)
        opened = self.retrying("/v1/session/open", {}, {})
        assert opened is not None, "could not open a session"
        client_id, seq = int(opened["client_id"]), 0
        while not self.stop.is_set():
            key = rng.choice(KEYS)
            if rng.random() < 0.4:
                self.read(index, key)
                continue
            seq += 1
            headers = {
                "Synod-Client-Id": str(client_id),
                "Synod-Seq": str(seq),
                "Synod-Ack-Seq": str(seq),
            }
            with self.lock:
                value = f"v{next(self.values)}"
            handle = self.invoke(index, Put(key, value))
            if self.retrying("/v1/kv/put", {"key": key, "value": value}, headers) is not None:
                self.complete(handle, None)
                with self.lock:
                    self.acknowledged_puts += 1
            else:
                with self.lock:
                    self.unknown_puts += 1

    def watch_for_stop(self) -> None:
        deadline = time.monotonic() + RUN_S_MAX
        while time.monotonic() < deadline:
            answer = request("/v1/kv/range", {"key": STOP_KEY, "serializable": True}, {})
            if answer is not None and answer[0] == 200 and answer[1]["kvs"]:
                break
            time.sleep(1.0)
        self.stop.set()


def main() -> int:
    workload = Workload()
    threads = [threading.Thread(target=workload.client, args=(i,)) for i in range(CLIENTS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    workload.watch_for_stop()
    for thread in threads:
        thread.join(timeout=120)
    for key in KEYS:
        workload.read(999, key)
    history = workload.history.history()
    result = check(KvModel(), history)
    summary = {
        "linearizable": result.ok,
        "operations": len(history),
        "acknowledged_puts": workload.acknowledged_puts,
        "unknown_puts": workload.unknown_puts,
        "errors": workload.errors[:10],
        "run_s": round(time.monotonic() - started, 1),
        "explanation": "" if result.ok else result.explanation[:2000],
    }
    print("RESULT " + json.dumps(summary), flush=True)
    return 0 if result.ok is True and not workload.errors else 1


if __name__ == "__main__":
    sys.exit(main())
