"""The etcd gRPC API server over an in-memory node: the production servicers and the
real service state machine, called through grpcio with etcd's own message types."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc import aio

from synod.etcdapi._pb.etcdserverpb import rpc_pb2 as pb
from synod.etcdapi._pb.etcdserverpb import rpc_pb2_grpc as pb_grpc
from synod.etcdapi._pb.mvccpb import kv_pb2 as mvccpb
from synod.etcdapi._pb.v3lockpb import v3lock_pb2 as v3lock
from synod.etcdapi._pb.v3lockpb import v3lock_pb2_grpc as v3lock_grpc
from synod.etcdapi.server import FORWARDED_METADATA, EtcdApiServer
from synod.node.api import NotLeader
from synod.services import commands
from tests.ports import free_port
from tests.unit.memory_node import MemoryNode
from tests.waiting import async_wait_until

CALL_TIMEOUT_S = 10.0
Scenario = Callable[[MemoryNode, aio.Channel], Awaitable[None]]


def _run(scenario: Scenario) -> None:
    async def main() -> None:
        node = MemoryNode()  # its registry gets the synod_etcd_* metrics
        address = f"127.0.0.1:{free_port()}"
        server = EtcdApiServer(
            node, cluster_id=7, listen=address, advertise=address,
            limits=lambda: node.machine.limits,
            lease_ids=lambda: sorted(node.machine.leases.ttls_ms()),
            registry=node.registry,
        )  # fmt: skip
        await server.start()
        try:
            async with aio.insecure_channel(address) as channel:
                await asyncio.wait_for(scenario(node, channel), CALL_TIMEOUT_S)
        finally:
            await server.stop(0)

    asyncio.run(main())


async def _error(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(aio.AioRpcError) as failure:
        await call
    return failure.value.code(), failure.value.details()


def test_range_sorts_filters_limits_and_counts_like_etcd() -> None:
    async def scenario(node: MemoryNode, channel: aio.Channel) -> None:
        kv = pb_grpc.KVStub(channel)
        for key in (b"/p/a", b"/p/b", b"/p/c", b"/q"):
            answer = await kv.Put(pb.PutRequest(key=key, value=key.upper()))
            assert answer.header.cluster_id == 7 and answer.header.member_id == 1
        request = pb.RangeRequest(key=b"/p/", range_end=b"/p0", limit=1,
                                  sort_order=pb.RangeRequest.DESCEND,
                                  sort_target=pb.RangeRequest.MOD, min_mod_revision=3)  # fmt: skip
        got = await kv.Range(request)
        assert [item.key for item in got.kvs] == [b"/p/c"]
        assert got.more and got.count == 3 and got.header.revision == 5
        keys_only = await kv.Range(pb.RangeRequest(key=b"\0", range_end=b"\0", keys_only=True))
        assert [(i.key, i.value) for i in keys_only.kvs][-1] == (b"/q", b"")
        counted = await kv.Range(pb.RangeRequest(key=b"/p/", range_end=b"/p0", count_only=True))
        assert counted.count == 3 and not counted.kvs
        code, message = await _error(kv.Range(pb.RangeRequest(key=b"/q", revision=99)))
        assert code == grpc.StatusCode.OUT_OF_RANGE
        assert message == "etcdserver: mvcc: required revision is a future revision"
        code, message = await _error(kv.Range(pb.RangeRequest()))
        assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT,
                                   "etcdserver: key is not provided")  # fmt: skip

    _run(scenario)


def test_put_ignore_value_and_lease_keep_what_is_stored() -> None:
    async def scenario(node: MemoryNode, channel: aio.Channel) -> None:
        kv, lease = pb_grpc.KVStub(channel), pb_grpc.LeaseStub(channel)
        granted = await lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30))
        await kv.Put(pb.PutRequest(key=b"k", value=b"v1", lease=granted.ID))
        answer = await kv.Put(pb.PutRequest(key=b"k", ignore_value=True, ignore_lease=True,
                                            prev_kv=True))  # fmt: skip
        assert answer.prev_kv.value == b"v1"
        now = (await kv.Range(pb.RangeRequest(key=b"k"))).kvs[0]
        assert (now.value, now.lease, now.version) == (b"v1", granted.ID, 2)
        code, message = await _error(kv.Put(pb.PutRequest(key=b"none", ignore_value=True)))
        assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key not found")
        code, message = await _error(kv.Put(pb.PutRequest(key=b"k", value=b"x",
                                                          ignore_value=True)))  # fmt: skip
        assert message == "etcdserver: value is provided"
        code, message = await _error(kv.Put(pb.PutRequest(key=b"k", value=b"x", lease=999)))
        assert (code, message) == (grpc.StatusCode.NOT_FOUND,
                                   "etcdserver: requested lease not found")  # fmt: skip
        assert (await kv.Range(pb.RangeRequest(key=b"k"))).kvs[0].value == b"v1"  # unchanged

    _run(scenario)


def test_txn_branches_and_refusals() -> None:
    async def scenario(node: MemoryNode, channel: aio.Channel) -> None:
        kv = pb_grpc.KVStub(channel)
        await kv.Put(pb.PutRequest(key=b"a", value=b"1"))
        compare = pb.Compare(key=b"a", target=pb.Compare.VERSION, result=pb.Compare.GREATER,
                             version=1)  # fmt: skip
        txn = pb.TxnRequest(
            compare=[compare],
            success=[pb.RequestOp(request_put=pb.PutRequest(key=b"b", value=b"yes"))],
            failure=[pb.RequestOp(request_range=pb.RangeRequest(key=b"a")),
                     pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(
                         key=b"a", prev_kv=True))],
        )  # fmt: skip
        answer = await kv.Txn(txn)
        assert not answer.succeeded
        assert answer.responses[0].response_range.kvs[0].value == b"1"
        assert answer.responses[1].response_delete_range.prev_kvs[0].key == b"a"
        nested = pb.TxnRequest(success=[pb.RequestOp(request_txn=pb.TxnRequest())])
        code, _message = await _error(kv.Txn(nested))
        assert code == grpc.StatusCode.UNIMPLEMENTED
        put_x = pb.RequestOp(request_put=pb.PutRequest(key=b"x"))
        twice = pb.TxnRequest(success=[put_x, put_x])
        code, message = await _error(kv.Txn(twice))
        assert message == "etcdserver: duplicate key given in txn request"
        assert node.revision == 3  # the refused txns changed nothing

    _run(scenario)


def test_watch_filters_cancels_and_reports_compaction() -> None:
    async def scenario(node: MemoryNode, channel: aio.Channel) -> None:
        kv = pb_grpc.KVStub(channel)
        for value in (b"1", b"2", b"3"):
            await kv.Put(pb.PutRequest(key=b"w", value=value))
        await kv.Compact(pb.CompactionRequest(revision=3))
        requests: asyncio.Queue[pb.WatchRequest] = asyncio.Queue()

        async def send() -> Any:
            while True:
                yield await requests.get()

        stream = pb_grpc.WatchStub(channel).Watch(send())
        create = pb.WatchCreateRequest(key=b"w", start_revision=1)
        await requests.put(pb.WatchRequest(create_request=create))
        created = await stream.read()
        assert created.created and created.watch_id == 0
        compacted = await stream.read()
        assert compacted.canceled and compacted.compact_revision == 3
        no_put = pb.WatchCreateRequest(key=b"w", prev_kv=True,
                                       filters=[pb.WatchCreateRequest.NOPUT])  # fmt: skip
        await requests.put(pb.WatchRequest(create_request=no_put))
        assert (await stream.read()).created
        await kv.Put(pb.PutRequest(key=b"w", value=b"4"))
        await kv.DeleteRange(pb.DeleteRangeRequest(key=b"w"))
        events = await stream.read()
        assert events.watch_id == 1 and len(events.events) == 1
        deleted = events.events[0]
        assert deleted.type == mvccpb.Event.DELETE and deleted.prev_kv.value == b"4"
        assert deleted.kv.mod_revision == events.header.revision == 6
        await requests.put(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=1)))
        cancelled = await stream.read()
        assert cancelled.canceled and cancelled.watch_id == 1
        stream.cancel()

    _run(scenario)


def test_leases_answer_like_etcd_for_unknown_ids() -> None:
    async def scenario(node: MemoryNode, channel: aio.Channel) -> None:
        lease = pb_grpc.LeaseStub(channel)
        granted = await lease.LeaseGrant(pb.LeaseGrantRequest(TTL=20, ID=42))
        assert (granted.ID, granted.TTL) == (42, 20)
        code, message = await _error(lease.LeaseGrant(pb.LeaseGrantRequest(TTL=20, ID=42)))
        assert message == "etcdserver: lease already exists"
        stream = lease.LeaseKeepAlive()
        await stream.write(pb.LeaseKeepAliveRequest(ID=42))
        assert (await stream.read()).TTL == 20
        await stream.write(pb.LeaseKeepAliveRequest(ID=7))
        assert (await stream.read()).TTL == 0
        await stream.done_writing()
        ttl = await lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=7))
        assert ttl.TTL == -1
        assert [s.ID for s in (await lease.LeaseLeases(pb.LeaseLeasesRequest())).leases] == [42]
        await lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=42))
        code, message = await _error(lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=42)))
        assert (code, message) == (grpc.StatusCode.NOT_FOUND,
                                   "etcdserver: requested lease not found")  # fmt: skip

    _run(scenario)


def test_a_forwarded_call_is_never_forwarded_again() -> None:
    async def scenario(node: MemoryNode, channel: aio.Channel) -> None:
        node.not_leader = NotLeader(2, "http://127.0.0.1:1")
        kv = pb_grpc.KVStub(channel)
        put = kv.Put(pb.PutRequest(key=b"k", value=b"v"), metadata=((FORWARDED_METADATA, "3"),))
        code, message = await _error(put)
        assert (code, message) == (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
        assert node.revision == 1 and not node.writes
        got = await kv.Range(pb.RangeRequest(key=b"k"))  # reads stay local
        assert got.count == 0
        assert node.apply(commands.put_op(b"k", b"v"))["ok"]

    _run(scenario)


def test_hash_kv_follows_the_keys_at_a_revision() -> None:
    async def scenario(node: MemoryNode, channel: aio.Channel) -> None:
        kv, maintenance = pb_grpc.KVStub(channel), pb_grpc.MaintenanceStub(channel)
        empty = await maintenance.HashKV(pb.HashKVRequest())
        await kv.Put(pb.PutRequest(key=b"a", value=b"1"))
        one = await maintenance.HashKV(pb.HashKVRequest())
        assert one.hash != empty.hash and one.header.revision == 2
        await kv.Put(pb.PutRequest(key=b"a", value=b"2"))
        assert (await maintenance.HashKV(pb.HashKVRequest(revision=2))).hash == one.hash
        assert (await maintenance.Hash(pb.HashRequest())).hash not in (one.hash, empty.hash)
        code, _message = await _error(maintenance.HashKV(pb.HashKVRequest(revision=9)))
        assert code == grpc.StatusCode.OUT_OF_RANGE

    _run(scenario)


def test_calls_are_counted_by_method_and_code() -> None:
    async def scenario(node: MemoryNode, channel: aio.Channel) -> None:
        kv = pb_grpc.KVStub(channel)
        await kv.Put(pb.PutRequest(key=b"a", value=b"1"))
        await _error(kv.Range(pb.RangeRequest(key=b"a", revision=50)))
        text = node.metrics().decode()
        assert 'synod_etcd_requests_total{code="OK",method="/etcdserverpb.KV/Put"} 1.0' in text
        assert (
            'synod_etcd_requests_total{code="OUT_OF_RANGE",method="/etcdserverpb.KV/Range"} 1.0'
            in text
        )
        assert 'synod_etcd_request_duration_seconds_count{method="/etcdserverpb.KV/Put"} 1.0' in (
            text
        )

    _run(scenario)


def test_v3lock_queues_on_the_lock_service_and_unlock_hands_over() -> None:
    async def scenario(node: MemoryNode, channel: aio.Channel) -> None:
        lease, locks = pb_grpc.LeaseStub(channel), v3lock_grpc.LockStub(channel)
        first = (await lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30))).ID
        second = (await lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30))).ID
        held = await locks.Lock(v3lock.LockRequest(name=b"job", lease=first))
        assert held.key == b"job/" + f"{first:x}".encode()
        waiting = asyncio.ensure_future(locks.Lock(v3lock.LockRequest(name=b"job", lease=second)))
        status = {"kind": "lock_status", "ns": "default", "name": "job"}
        await async_wait_until(lambda: node.machine.read(status)["waiters"], CALL_TIMEOUT_S,
                               "the second Lock call to queue")  # fmt: skip
        assert not waiting.done()
        await locks.Unlock(v3lock.UnlockRequest(key=held.key))
        assert (await waiting).key == b"job/" + f"{second:x}".encode()
        await locks.Unlock(v3lock.UnlockRequest(key=held.key))  # gone already: fine, as etcd
        code, _message = await _error(locks.Lock(v3lock.LockRequest(name=b"job", lease=999)))
        assert code == grpc.StatusCode.NOT_FOUND

    _run(scenario)


def test_membership_calls_go_to_the_admin_api_learners_first() -> None:
    async def scenario(node: MemoryNode, channel: aio.Channel) -> None:
        cluster = pb_grpc.ClusterStub(channel)
        code, message = await _error(cluster.MemberAdd(
            pb.MemberAddRequest(peerURLs=["http://127.0.0.1:2390"])))  # fmt: skip
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "--learner" in message
        added = await cluster.MemberAdd(
            pb.MemberAddRequest(peerURLs=["http://127.0.0.1:2390"], isLearner=True)
        )
        assert added.member.ID == 2 and added.member.isLearner
        await cluster.MemberPromote(pb.MemberPromoteRequest(ID=2))
        await cluster.MemberRemove(pb.MemberRemoveRequest(ID=2))
        assert node.admin_calls == [("add_learner", (2, "127.0.0.1:2390", "")),
                                    ("promote", 2), ("remove", 2)]  # fmt: skip
        listed = await cluster.MemberList(pb.MemberListRequest())
        assert [(m.ID, m.name) for m in listed.members] == [(1, "synod-1")]
        assert listed.members[0].clientURLs[0].startswith("http://127.0.0.1:")

    _run(scenario)
