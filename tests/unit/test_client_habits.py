"""The SDK in redis-py / kazoo / python-etcd3 habits (issue 16), against the real HTTP
API of a memory cluster: bytes keys and values, visible signatures, typed results, watch
iterators with cancel and callbacks, connection-state listeners, clean garbage
collection."""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import pydoc
import threading
import urllib.request
import warnings
from collections.abc import Iterator

import pytest

from synod.client import (
    AsyncClient,
    Client,
    ConnectionState,
    DeleteResult,
    PutResult,
    RangeResult,
    Txn,
    Unavailable,
    WatchEvent,
)
from synod.client import txn as ops
from synod.codes import PROBLEM_TYPE_PREFIX
from tests.unit.memory_cluster import MemoryCluster, threaded
from tests.waiting import async_wait_until, wait_until

WAIT_TIMEOUT_S = 10.0
BINARY = bytes(range(256))


@pytest.fixture(scope="module")
def cluster() -> Iterator[MemoryCluster]:
    with threaded(MemoryCluster()) as memory:
        yield memory


def post(url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    """A request as an old client sends it (no encoding field)."""
    request = urllib.request.Request(url, json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=WAIT_TIMEOUT_S) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_bytes_keys_and_values_end_to_end(cluster: MemoryCluster) -> None:
    with Client(cluster.urls) as client:
        first = client.put(b"bin/\xff", BINARY, prev_kv=True)
        found = client.get(b"bin/\xff")
        assert found is not None and found.value_bytes == BINARY
        assert found.key_bytes == b"bin/\xff" and found.key == "bin/\ufffd"
        assert client.put(b"bin/\xff", b"\x00", prev_kv=True).prev_kv.value_bytes == BINARY  # type: ignore[union-attr]
        listed = client.range(b"bin/", prefix=True)
        assert [kv.key_bytes for kv in listed.kvs] == [b"bin/\xff"]
        swapped = client.txn(
            Txn().when(ops.value(b"bin/\xff").eq(b"\x00"))
            .then(ops.put(b"bin/\xff", b"\x01\xfe"), ops.get(b"bin/\xff"))
        )  # fmt: skip
        assert swapped.succeeded and swapped.range_kvs(1)[0].value_bytes == b"\x01\xfe"
        client.cas(b"bin/\xff", b"\x01\xfe", b"\xfe")
        events = client.watch(b"bin/", prefix=True, start_revision=first.revision)
        seen = [next(events).kv.value_bytes for _ in range(4)]
        events.cancel()
        assert seen == [BINARY, b"\x00", b"\x01\xfe", b"\xfe"]
        # Text keeps working, and old clients (no encoding field) still read text.
        client.put("bin/text", "héllo")
        assert client.get("bin/text").value == "héllo"  # type: ignore[union-attr]
        deleted = client.delete(b"bin/", prefix=True, prev_kv=True)
        assert {kv.key_bytes for kv in deleted.prev_kvs} == {b"bin/\xff", b"bin/text"}
    status, old = post(cluster.urls[0] + "/v1/kv/put", {"key": "bin/old", "value": "v"})
    assert status == 200 and "prev_kv" in old
    status, doc = post(cluster.urls[0] + "/v1/kv/range", {"key": "bin/old"})
    assert doc["kvs"][0]["value"] == "v"  # type: ignore[index]
    status, bad = post(cluster.urls[0] + "/v1/kv/put",
                       {"key": "!!", "value": "", "encoding": "base64"})  # fmt: skip
    assert status == 400 and "not base64" in str(bad["detail"])
    status, empty = post(cluster.urls[0] + "/v1/kv/put",
                         {"key": "", "value": "", "encoding": "base64"})  # fmt: skip
    assert status == 400 and empty["type"] == PROBLEM_TYPE_PREFIX + "invalid-argument"


def test_signatures_are_visible() -> None:
    signature = inspect.signature(Client.put)
    assert list(signature.parameters)[:3] == ["self", "key", "value"]
    assert signature.parameters["lease"].kind is inspect.Parameter.KEYWORD_ONLY
    shown = pydoc.render_doc(Client.put)
    assert "*args" not in shown and "prev_kv" in shown
    assert "*args" not in pydoc.render_doc(Client.range)
    assert Client.put.__qualname__ == "Client.put"


def test_typed_txn_results_and_lease_repr(cluster: MemoryCluster) -> None:
    with Client(cluster.urls) as client:
        client.put("typed/a", "1")
        result = client.txn(
            Txn().when(ops.version("typed/a").gt(0))
            .then(ops.put("typed/a", "2", prev_kv=True), ops.get("typed/a"),
                  ops.delete("typed/none"))
        )  # fmt: skip
        put, got, deleted = result.results
        assert isinstance(put, PutResult) and put.prev_kv is not None
        assert put.prev_kv.value == "1"
        assert isinstance(got, RangeResult) and got.kvs[0].value == "2"
        assert isinstance(deleted, DeleteResult) and deleted.deleted == 0
        assert result.responses[1]["range"]["kvs"][0]["value"] == "2"  # docs/api.md form
        with client.lease(10_000) as keeper:
            shown = repr(keeper)
            assert str(keeper.id) in shown and "ttl=10s" in shown and "alive" in shown


def test_watch_iterator_cancel_from_another_thread(cluster: MemoryCluster) -> None:
    with Client(cluster.urls) as client:
        watch = client.watch("cancel/", prefix=True)
        seen: list[WatchEvent] = []
        reader = threading.Thread(target=lambda: seen.extend(watch))
        reader.start()
        client.put("cancel/a", "1")
        wait_until(lambda: len(seen) == 1, WAIT_TIMEOUT_S, "the first event")
        watch.cancel()  # the reader is blocked waiting for the next event
        reader.join(WAIT_TIMEOUT_S)
        assert not reader.is_alive() and watch.cancelled
        assert next(iter(watch), None) is None
        with client.watch("cancel/") as scoped:
            pass
        assert scoped.cancelled


def test_watch_callbacks(cluster: MemoryCluster) -> None:
    with Client(cluster.urls) as client:
        seen: list[str] = []
        handle = client.add_watch_callback("cb/", lambda event: seen.append(event.kv.key),
                                           prefix=True)  # fmt: skip
        wait_until(lambda: cluster.watch_connects > 0, WAIT_TIMEOUT_S, "the watch")
        client.put("cb/a", "1")
        client.put("cb/b", "2")
        wait_until(lambda: seen == ["cb/a", "cb/b"], WAIT_TIMEOUT_S, "two callbacks")
        handle.cancel()
        assert not handle.running and handle.error is None
        errors: list[BaseException] = []
        with Client("127.0.0.1:1", attempts_max=1, timeout_s=0.5) as down:
            failing = down.add_watch_callback("x", seen.append, on_error=errors.append)
            wait_until(lambda: not failing.running, WAIT_TIMEOUT_S, "the failed watch")
        assert isinstance(failing.error, Unavailable) and errors == [failing.error]


def test_connection_state_listener(cluster: MemoryCluster) -> None:
    states: list[ConnectionState] = []
    with Client([*cluster.urls, "127.0.0.1:1"], attempts_max=1, discover_leader=False) as client:
        client.add_listener(states.append)
        client.put("state/a", "1")
        assert states == [ConnectionState.CONNECTED] and client.state is ConnectionState.CONNECTED
        # The cluster evicts the session: LOST, then a new session answers: CONNECTED.
        status, _ = post(cluster.urls[0] + "/v1/session/close",
                         {"client_id": client.aio.client_id})  # fmt: skip
        assert status == 200
        client.put("state/a", "2")
        assert states == [ConnectionState.CONNECTED, ConnectionState.LOST,
                          ConnectionState.CONNECTED]  # fmt: skip
        client.aio._current = len(client.endpoints) - 1  # the next call goes to the dead one
        with pytest.raises(Unavailable):
            client.get("state/a")
        assert states[-1] is ConnectionState.SUSPENDED and "suspended" in repr(client)
        client.remove_listener(states.append)


def test_garbage_collected_clients_close_quietly(cluster: MemoryCluster) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = Client(cluster.urls)
        client.put("gc/a", "1")
        thread, http = client._thread, client.aio._http
        assert http is not None
        del client
        gc.collect()
        wait_until(lambda: not thread.is_alive(), WAIT_TIMEOUT_S, "the loop thread to end")
        assert http.closed
        asyncio.run(_drop_async_client(cluster))
        gc.collect()
    assert not [w for w in caught if "nclosed" in str(w.message)], [str(w.message) for w in caught]


async def _drop_async_client(cluster: MemoryCluster) -> None:
    client = AsyncClient(cluster.urls, session=False)
    await client.get("gc/a")
    http = client._http
    assert http is not None
    del client
    gc.collect()
    # A client in a reference cycle (its batcher's bound methods) goes at a later pass.
    await async_wait_until(lambda: gc.collect() >= 0 and http.closed, WAIT_TIMEOUT_S,
                           "the dropped session's close")  # fmt: skip


def test_one_session_per_client_closed_on_close(cluster: MemoryCluster) -> None:
    client = Client(cluster.urls)
    client.put("one/a", "1")
    http = client.aio._http
    client.get("one/a")
    client.range("one/", prefix=True)
    assert client.aio._http is http and http is not None
    client.close()
    assert http.closed
    with pytest.raises(RuntimeError, match="closed"):
        client.get("one/a")
    with pytest.raises(RuntimeError, match="closed"):
        client.aio._session()
