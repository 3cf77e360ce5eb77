"""etcd's v3 gRPC API on a Synod node: KV, Watch, Lease, Cluster, Maintenance and
the v3lock Lock service (on Synod's LockService).

Every call goes through the node's `NodeApi` entry points, the ones the HTTP API uses:
the same state machine, limits, linearizable reads (ReadIndex unless ``serializable``)
and leader-only paths. A follower forwards what only the leader can do (writes, lease
keep-alives and time-to-live) once, over gRPC, to the leader's etcd endpoint, which it
learns from the leader's ``/v1/cluster/status`` (``etcd_endpoint``); the forwarded call
carries ``synod-forwarded`` metadata and is never forwarded again. Watches are served
by the member the client is connected to, as etcd does. See docs/etcd-compat.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import grpc
from google.protobuf.message import Message
from grpc import aio
from prometheus_client import CollectorRegistry

from synod.etcdapi import convert
from synod.etcdapi._pb.etcdserverpb import rpc_pb2 as pb
from synod.etcdapi._pb.etcdserverpb import rpc_pb2_grpc as pb_grpc
from synod.etcdapi._pb.v3lockpb import v3lock_pb2 as v3lock
from synod.etcdapi._pb.v3lockpb import v3lock_pb2_grpc as v3lock_grpc
from synod.etcdapi.convert import EtcdError, event_pb, kv_pb
from synod.etcdapi.observe import ObserveInterceptor
from synod.node.api import (
    ChangeInvalid,
    ChangePending,
    NodeApi,
    NodeError,
    NoLeader,
    NotCaughtUp,
    NotLeader,
    NotMember,
    Overloaded,
    Timeout,
)
from synod.services import commands
from synod.services.errors import Compacted, ServiceError
from synod.services.limits import ServiceLimits
from synod.services.locks import DEFAULT_NAMESPACE, LockLimits, lock_acquire_op, lock_release_op

__all__ = ["ETCD_API_VERSION_REPORTED", "EtcdApiServer", "EtcdLimits"]

log = logging.getLogger(__name__)

# Maintenance.Status's version: the etcd API release whose .proto files are served.
ETCD_API_VERSION_REPORTED = "3.5.17"
FORWARDED_METADATA = "synod-forwarded"
SERVED_SERVICES = ("KV", "Lease", "Watch", "Cluster", "Maintenance")
# "/etcdserverpb.KV/Range", ...: the method label values of the metrics and spans.
SERVED_METHODS = frozenset(
    f"/etcdserverpb.{service}/{method.name}"
    for service in SERVED_SERVICES
    for method in pb.DESCRIPTOR.services_by_name[service].methods
) | {"/v3lockpb.Lock/Lock", "/v3lockpb.Lock/Unlock"}
_Response = TypeVar("_Response", bound=Message)


class EtcdLimits:
    """Bounds of the etcd API server (node-local, like the HTTP server's)."""

    def __init__(
        self,
        rpcs_max: int = 10_000,
        message_bytes_max: int = commands.COMMAND_BYTES_MAX + 64 * 1024,
        watches_per_stream_max: int = 1_000,
        watch_responses_queued_max: int = 64,
        ignore_retries_max: int = 8,
        forward_timeout_ms: int = 10_000,
        channels_max: int = 16,
    ) -> None:
        """Raises ValueError naming a bound that is not positive."""
        self.rpcs_max = rpcs_max
        self.message_bytes_max = message_bytes_max
        self.watches_per_stream_max = watches_per_stream_max
        self.watch_responses_queued_max = watch_responses_queued_max
        self.ignore_retries_max = ignore_retries_max
        self.forward_timeout_ms = forward_timeout_ms
        self.channels_max = channels_max
        for name, value in vars(self).items():
            if value < 1:
                raise ValueError(f"{name} must be positive")


def _node_error(error: NodeError) -> EtcdError:
    """etcd's status for a node-level failure. Raises nothing."""
    if isinstance(error, NoLeader | NotLeader):
        return convert.NO_LEADER.new()
    if isinstance(error, Timeout):
        return convert.TIMEOUT.new()
    if isinstance(error, Overloaded):
        return convert.TOO_MANY_REQUESTS.new()
    if isinstance(error, NotMember):
        return EtcdError(grpc.StatusCode.NOT_FOUND, "etcdserver: member not found")
    if isinstance(error, NotCaughtUp):
        return EtcdError(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: can only promote a "
                         "learner member which is in sync with leader")  # fmt: skip
    if isinstance(error, ChangePending | ChangeInvalid):
        return EtcdError(grpc.StatusCode.FAILED_PRECONDITION, f"etcdserver: {error}")
    return EtcdError(grpc.StatusCode.UNAVAILABLE, f"etcdserver: {error}")


def _ok(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` if it succeeded. Raises the EtcdError of a service error."""
    if result.get("ok") is True:
        return result
    error = result.get("error")
    if not isinstance(error, dict):
        raise EtcdError(grpc.StatusCode.INTERNAL, "synod: neither ok nor a service error")
    raise convert.error_of_result(error)


def _forwarded(context: aio.ServicerContext[Any, Any]) -> bool:
    metadata = context.invocation_metadata() or ()
    return any(item[0] == FORWARDED_METADATA for item in metadata)


class LeaderLink:
    """Finds the leader's etcd endpoint and calls it (a follower's forwarding)."""

    def __init__(self, member_id: int, limits: EtcdLimits) -> None:
        """Raises nothing; `start` opens the HTTP session."""
        self.member_id = member_id
        self.limits = limits
        self._endpoints: dict[int, str] = {}  # member id -> etcd endpoint (bounded)
        self._channels: dict[str, aio.Channel] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP session. Raises nothing."""
        timeout = aiohttp.ClientTimeout(total=self.limits.forward_timeout_ms / 1000)
        self._session = aiohttp.ClientSession(timeout=timeout)
        assert self._session is not None

    async def close(self) -> None:
        """Close the session and the channels. Raises nothing."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        assert not self._channels

    async def endpoint_of(self, member_id: int, client_url: str | None) -> str | None:
        """The etcd endpoint (host:port) of a member, asked of its HTTP API once and
        then cached; None if it has none or cannot be asked. Raises nothing."""
        known = self._endpoints.get(member_id)
        if known is not None or not client_url or self._session is None:
            return known
        try:
            async with self._session.get(client_url.rstrip("/") + "/v1/cluster/status") as got:
                document = await got.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            log.info("etcd endpoint of member %d unknown: %s", member_id, error)
            return None
        endpoint = document.get("etcd_endpoint") if isinstance(document, dict) else None
        if isinstance(endpoint, str) and endpoint:
            if len(self._endpoints) >= self.limits.channels_max:
                self._endpoints.pop(next(iter(self._endpoints)))
            self._endpoints[member_id] = endpoint
            return endpoint
        return None

    def forget(self, member_id: int) -> None:
        """Drop a cached endpoint (the member may have moved). Raises nothing."""
        self._endpoints.pop(member_id, None)

    async def channel_to(self, error: NotLeader) -> aio.Channel:
        """A channel to the leader named by ``error``. Raises EtcdError no leader."""
        endpoint = await self.endpoint_of(error.leader_id, error.leader_client_url)
        if endpoint is None:
            raise convert.NO_LEADER.new()
        channel = self._channels.get(endpoint)
        if channel is None:
            if len(self._channels) >= self.limits.channels_max:
                oldest = next(iter(self._channels))
                await self._channels.pop(oldest).close()
            options = [("grpc.max_receive_message_length", self.limits.message_bytes_max),
                       ("grpc.max_send_message_length", self.limits.message_bytes_max)]  # fmt: skip
            channel = aio.insecure_channel(endpoint, options=options)
            self._channels[endpoint] = channel
        return channel

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata of a forwarded call. Raises nothing."""
        return ((FORWARDED_METADATA, str(self.member_id)),)

    async def unary(
        self,
        error: NotLeader,
        method: str,
        request: Message,
        response: type[_Response],
        timeout_s: float | None = None,
    ) -> _Response:
        """Call ``method`` (``/etcdserverpb.KV/Put``) on the leader, for at most
        ``timeout_s`` (default: forward_timeout_ms). Raises EtcdError."""
        channel = await self.channel_to(error)
        call = channel.unary_unary(
            method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response.FromString,
        )
        try:
            timeout = timeout_s or self.limits.forward_timeout_ms / 1000
            answer = await call(request, metadata=self.metadata(), timeout=timeout)
        except aio.AioRpcError as failure:
            if failure.code() == grpc.StatusCode.UNAVAILABLE:
                self.forget(error.leader_id)
            raise EtcdError(failure.code(), failure.details() or "forwarding failed") from None
        assert isinstance(answer, response)
        return answer

    async def keepalive(self, error: NotLeader, lease_id: int) -> pb.LeaseKeepAliveResponse:
        """One keep-alive on the leader's LeaseKeepAlive stream. Raises EtcdError."""
        channel = await self.channel_to(error)
        stub = pb_grpc.LeaseStub(channel)
        call = stub.LeaseKeepAlive(metadata=self.metadata(),
                                   timeout=self.limits.forward_timeout_ms / 1000)  # fmt: skip
        try:
            await call.write(pb.LeaseKeepAliveRequest(ID=lease_id))
            answer = await call.read()
        except aio.AioRpcError as failure:
            raise EtcdError(failure.code(), failure.details() or "forwarding failed") from None
        finally:
            call.cancel()
        if not isinstance(answer, pb.LeaseKeepAliveResponse):
            raise convert.NO_LEADER.new()
        return answer


class _Base:
    """What every service needs: the node, the header, forwarding, error mapping."""

    def __init__(self, api: EtcdApiServer) -> None:
        self.api = api
        self.node: NodeApi = api.node

    def header(self, revision: int | None = None) -> pb.ResponseHeader:
        """The response header; ``revision`` overrides the member's current one."""
        now = self.node.header()
        return pb.ResponseHeader(
            cluster_id=self.api.cluster_id,
            member_id=now["member_id"],
            revision=now["revision"] if revision is None else revision,
            raft_term=now["raft_term"],
        )

    async def leader_call(
        self,
        context: aio.ServicerContext[Any, Any],
        method: str,
        request: Message,
        response: type[_Response],
        local: Callable[[], Awaitable[_Response]],
        timeout_s: float | None = None,
    ) -> _Response:
        """Run ``local``; on a follower, forward the call to the leader once (for at
        most ``timeout_s``, default forward_timeout_ms).

        Raises EtcdError."""
        try:
            return await local()
        except NotLeader as error:
            if _forwarded(context):
                raise convert.NO_LEADER.new() from None
            return await self.api.link.unary(error, method, request, response, timeout_s)


async def _serve(
    context: aio.ServicerContext[Any, Any], work: Callable[[], Awaitable[_Response]]
) -> _Response:
    """Run a unary call, answering errors as etcd's statuses (context.abort raises)."""
    try:
        return await work()
    except EtcdError as error:
        await context.abort(error.code, error.message)
    except NodeError as error:
        failure = _node_error(error)
        await context.abort(failure.code, failure.message)
    except ServiceError as error:
        failure = convert.error_of_result(error.to_dict())
        await context.abort(failure.code, failure.message)
    raise AssertionError("context.abort returned")


# -- KV ----------------------------------------------------------------------------------

_SORT_KEYS: dict[int, Callable[[dict[str, Any]], Any]] = {
    pb.RangeRequest.KEY: lambda kv: kv["key"],
    pb.RangeRequest.VERSION: lambda kv: kv["version"],
    pb.RangeRequest.CREATE: lambda kv: kv["create_revision"],
    pb.RangeRequest.MOD: lambda kv: kv["mod_revision"],
    pb.RangeRequest.VALUE: lambda kv: kv["value"],
}


def _filtered(request: pb.RangeRequest, kvs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """etcd's revision filters and sort over a whole range. Raises nothing."""
    out = [
        kv for kv in kvs
        if (not request.min_mod_revision or kv["mod_revision"] >= request.min_mod_revision)
        and (not request.max_mod_revision or kv["mod_revision"] <= request.max_mod_revision)
        and (not request.min_create_revision
             or kv["create_revision"] >= request.min_create_revision)
        and (not request.max_create_revision
             or kv["create_revision"] <= request.max_create_revision)
    ]  # fmt: skip
    order = request.sort_order
    if order == pb.RangeRequest.NONE and request.sort_target != pb.RangeRequest.KEY:
        order = pb.RangeRequest.ASCEND  # as etcd: a sort target alone sorts ascending
    if order != pb.RangeRequest.NONE:
        key = _SORT_KEYS.get(request.sort_target, _SORT_KEYS[pb.RangeRequest.KEY])
        out.sort(key=key, reverse=order == pb.RangeRequest.DESCEND)
    assert len(out) <= len(kvs)
    return out


def _range_response(
    header: pb.ResponseHeader, request: pb.RangeRequest, body: dict[str, Any]
) -> pb.RangeResponse:
    kvs, more = body["kvs"], body["more"]
    if convert.needs_full_range(request):
        kvs = _filtered(request, kvs)
        if request.limit and len(kvs) > request.limit:
            kvs, more = kvs[: request.limit], True
    if request.count_only:
        kvs = []
    return pb.RangeResponse(header=header, kvs=[kv_pb(kv) for kv in kvs], more=more,
                            count=body["count"])  # fmt: skip


class KVService(_Base, pb_grpc.KVServicer):
    """etcdserverpb.KV."""

    def _limit(self, request: pb.RangeRequest) -> int:
        """The service limit of a range: all keys when sorting or filtering, else the
        client's, at most range_limit_max (the answer's ``more`` says there is more)."""
        range_limit_max = self.api.limits().range_limit_max
        if convert.needs_full_range(request) or not request.limit:
            return range_limit_max
        return min(request.limit, range_limit_max)

    async def Range(
        self, request: pb.RangeRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.RangeResponse:
        async def work() -> pb.RangeResponse:
            op = convert.range_op_of(request, self._limit(request))
            ok = _ok(await self.node.read(op, serializable=request.serializable))
            return _range_response(self.header(ok["revision"]), request, ok)

        return await _serve(context, work)

    async def Put(
        self, request: pb.PutRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.PutResponse:
        async def local() -> pb.PutResponse:
            if request.ignore_value or request.ignore_lease:
                return await self._put_ignoring(request)
            if not request.key:
                raise convert.EMPTY_KEY.new()
            op = commands.put_op(request.key, request.value, request.lease, request.prev_kv)
            ok = _ok(await self.node.write(op, None))
            return self._put_response(ok["revision"], ok.get("prev_kv"))

        async def work() -> pb.PutResponse:
            return await self.leader_call(context, "/etcdserverpb.KV/Put", request,
                                          pb.PutResponse, local)  # fmt: skip

        return await _serve(context, work)

    def _put_response(self, revision: int, prev: dict[str, Any] | None) -> pb.PutResponse:
        answer = pb.PutResponse(header=self.header(revision))
        if prev is not None:
            answer.prev_kv.CopyFrom(kv_pb(prev))
        return answer

    async def _put_ignoring(self, request: pb.PutRequest) -> pb.PutResponse:
        """A put keeping the key's current value and/or lease (etcd's ignore_value /
        ignore_lease): read it, then a txn guarded by its mod_revision, retried at most
        ``ignore_retries_max`` times while other writes change the key."""
        if request.ignore_value and request.value:
            raise convert.VALUE_PROVIDED.new()
        if request.ignore_lease and request.lease:
            raise convert.LEASE_PROVIDED.new()
        for _attempt in range(self.api.etcd_limits.ignore_retries_max):
            current = _ok(await self.node.read(commands.range_op(request.key), serializable=False))
            if not current["kvs"]:
                raise convert.KEY_NOT_FOUND.new()
            kv = current["kvs"][0]
            value = kv["value"] if request.ignore_value else request.value
            lease = kv["lease"] if request.ignore_lease else request.lease
            guard = commands.compare(request.key, "mod_revision", "=", kv["mod_revision"])
            put = commands.put_op(request.key, value, lease, request.prev_kv)
            ok = _ok(await self.node.write(commands.txn_op([guard], [put]), None))
            if ok["succeeded"]:
                return self._put_response(ok["revision"], ok["responses"][0].get("prev_kv"))
        raise EtcdError(grpc.StatusCode.ABORTED, "synod: the key kept changing; retry")

    async def DeleteRange(
        self, request: pb.DeleteRangeRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.DeleteRangeResponse:
        async def local() -> pb.DeleteRangeResponse:
            if not request.key:
                raise convert.EMPTY_KEY.new()
            op = commands.delete_op(request.key, request.range_end, prev_kv=request.prev_kv)
            ok = _ok(await self.node.write(op, None))
            return pb.DeleteRangeResponse(
                header=self.header(ok["revision"]),
                deleted=ok["deleted"],
                prev_kvs=[kv_pb(kv) for kv in ok["prev_kvs"]],
            )

        async def work() -> pb.DeleteRangeResponse:
            return await self.leader_call(context, "/etcdserverpb.KV/DeleteRange", request,
                                          pb.DeleteRangeResponse, local)  # fmt: skip

        return await _serve(context, work)

    async def Txn(
        self, request: pb.TxnRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.TxnResponse:
        async def local() -> pb.TxnResponse:
            ok = _ok(await self.node.write(convert.txn_op_of(request), None))
            header = self.header(ok["revision"])
            branch = request.success if ok["succeeded"] else request.failure
            responses = [self._response_op(header, item, out)
                         for item, out in zip(branch, ok["responses"], strict=True)]  # fmt: skip
            return pb.TxnResponse(header=header, succeeded=ok["succeeded"], responses=responses)

        async def work() -> pb.TxnResponse:
            return await self.leader_call(context, "/etcdserverpb.KV/Txn", request,
                                          pb.TxnResponse, local)  # fmt: skip

        return await _serve(context, work)

    @staticmethod
    def _response_op(
        header: pb.ResponseHeader, item: pb.RequestOp, out: dict[str, Any]
    ) -> pb.ResponseOp:
        kind = out["kind"]
        if kind == "put":
            put = pb.PutResponse(header=header)
            if out.get("prev_kv") is not None:
                put.prev_kv.CopyFrom(kv_pb(out["prev_kv"]))
            return pb.ResponseOp(response_put=put)
        if kind == "delete":
            delete = pb.DeleteRangeResponse(
                header=header,
                deleted=out["deleted"],
                prev_kvs=[kv_pb(kv) for kv in out["prev_kvs"]],
            )
            return pb.ResponseOp(response_delete_range=delete)
        assert kind == "range"
        return pb.ResponseOp(response_range=_range_response(header, item.request_range, out))

    async def Compact(
        self, request: pb.CompactionRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.CompactionResponse:
        async def local() -> pb.CompactionResponse:
            ok = _ok(await self.node.write(commands.compact_op(request.revision), None))
            return pb.CompactionResponse(header=self.header(ok["revision"]))

        async def work() -> pb.CompactionResponse:
            return await self.leader_call(context, "/etcdserverpb.KV/Compact", request,
                                          pb.CompactionResponse, local)  # fmt: skip

        return await _serve(context, work)


# -- Lease -------------------------------------------------------------------------------


def _seconds_up(ms: int) -> int:
    return (ms + 999) // 1000


class LeaseService(_Base, pb_grpc.LeaseServicer):
    """etcdserverpb.Lease. TTLs are whole seconds on etcd's wire, milliseconds inside."""

    async def LeaseGrant(
        self, request: pb.LeaseGrantRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.LeaseGrantResponse:
        async def local() -> pb.LeaseGrantResponse:
            if request.ID < 0:
                raise convert.invalid("lease id must not be negative")
            ttl_ms = max(request.TTL * 1000, self.api.limits().lease_ttl_ms_min)
            ok = _ok(await self.node.write(commands.lease_grant_op(ttl_ms, request.ID), None))
            return pb.LeaseGrantResponse(header=self.header(ok["revision"]), ID=ok["id"],
                                         TTL=_seconds_up(ok["ttl_ms"]))  # fmt: skip

        async def work() -> pb.LeaseGrantResponse:
            return await self.leader_call(context, "/etcdserverpb.Lease/LeaseGrant", request,
                                          pb.LeaseGrantResponse, local)  # fmt: skip

        return await _serve(context, work)

    async def LeaseRevoke(
        self, request: pb.LeaseRevokeRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.LeaseRevokeResponse:
        async def local() -> pb.LeaseRevokeResponse:
            if request.ID <= 0:
                raise convert.LEASE_NOT_FOUND.new()
            ok = _ok(await self.node.write(commands.lease_revoke_op(request.ID), None))
            return pb.LeaseRevokeResponse(header=self.header(ok["revision"]))

        async def work() -> pb.LeaseRevokeResponse:
            return await self.leader_call(context, "/etcdserverpb.Lease/LeaseRevoke", request,
                                          pb.LeaseRevokeResponse, local)  # fmt: skip

        return await _serve(context, work)

    async def _keepalive(self, lease_id: int, forwarded: bool) -> pb.LeaseKeepAliveResponse:
        """One renewal; TTL 0 when the lease does not exist (as etcd). Raises
        EtcdError, NodeError."""
        try:
            result = await self.node.lease_keepalive(lease_id)
        except NotLeader as error:
            if forwarded:
                raise convert.NO_LEADER.new() from None
            return await self.api.link.keepalive(error, lease_id)
        if result.get("ok") is not True:
            return pb.LeaseKeepAliveResponse(header=self.header(), ID=lease_id, TTL=0)
        return pb.LeaseKeepAliveResponse(header=self.header(), ID=lease_id,
                                         TTL=_seconds_up(result["ttl_ms"]))  # fmt: skip

    async def LeaseKeepAlive(
        self,
        request_iterator: AsyncIterator[pb.LeaseKeepAliveRequest],
        context: aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.LeaseKeepAliveResponse]:
        forwarded = _forwarded(context)
        async for request in request_iterator:
            try:
                yield await self._keepalive(request.ID, forwarded)
            except EtcdError as error:
                await context.abort(error.code, error.message)
            except NodeError as error:
                failure = _node_error(error)
                await context.abort(failure.code, failure.message)

    async def LeaseTimeToLive(
        self, request: pb.LeaseTimeToLiveRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.LeaseTimeToLiveResponse:
        async def local() -> pb.LeaseTimeToLiveResponse:
            result = await self.node.lease_timetolive(request.ID)
            if result.get("ok") is not True:  # etcd: TTL -1 for a lease that is gone
                return pb.LeaseTimeToLiveResponse(header=self.header(), ID=request.ID, TTL=-1)
            return pb.LeaseTimeToLiveResponse(
                header=self.header(),
                ID=request.ID,
                TTL=result["ttl_ms"] // 1000,
                grantedTTL=_seconds_up(result["granted_ttl_ms"]),
                keys=list(result["keys"]) if request.keys else [],
            )

        async def work() -> pb.LeaseTimeToLiveResponse:
            return await self.leader_call(context, "/etcdserverpb.Lease/LeaseTimeToLive",
                                          request, pb.LeaseTimeToLiveResponse, local)  # fmt: skip

        return await _serve(context, work)

    async def LeaseLeases(
        self, request: pb.LeaseLeasesRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.LeaseLeasesResponse:
        async def work() -> pb.LeaseLeasesResponse:
            leases = [pb.LeaseStatus(ID=lease_id) for lease_id in self.api.lease_ids()]
            return pb.LeaseLeasesResponse(header=self.header(), leases=leases)

        return await _serve(context, work)


# -- Watch -------------------------------------------------------------------------------


class _WatchStream:
    """One Watch stream: its watchers (tasks) feeding one bounded response queue."""

    def __init__(self, service: WatchService) -> None:
        self.service = service
        limits = service.api.etcd_limits
        self.queue: asyncio.Queue[pb.WatchResponse | None] = asyncio.Queue(
            limits.watch_responses_queued_max
        )
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.next_id = 0

    async def read(self, requests: AsyncIterator[pb.WatchRequest]) -> None:
        """Serve the client's requests until it closes its side, then end the stream."""
        try:
            async for request in requests:
                which = request.WhichOneof("request_union")
                if which == "create_request":
                    await self.create(request.create_request)
                elif which == "cancel_request":
                    await self.cancel(request.cancel_request.watch_id)
                elif which == "progress_request":
                    header = self.service.header()
                    await self.queue.put(pb.WatchResponse(header=header, watch_id=-1))
        finally:
            await self.queue.put(None)

    async def create(self, create: pb.WatchCreateRequest) -> None:
        watch_id = create.watch_id or self.next_id
        self.next_id = max(self.next_id, watch_id) + 1
        header = self.service.header()
        if len(self.tasks) >= self.service.api.etcd_limits.watches_per_stream_max:
            await self.queue.put(
                pb.WatchResponse(
                    header=header,
                    watch_id=watch_id,
                    created=True,
                    canceled=True,
                    cancel_reason="synod: watches_per_stream_max watches are open on this stream",
                )
            )
            return
        try:
            items = self.service.node.watch(create.key, create.range_end, create.start_revision)
        except Compacted as error:
            compact = error.details.get("compact_revision", 0)
            assert isinstance(compact, int)
            await self.queue.put(pb.WatchResponse(header=header, watch_id=watch_id, created=True))
            await self.queue.put(pb.WatchResponse(
                header=header, watch_id=watch_id, canceled=True, compact_revision=compact,
                cancel_reason=convert.COMPACTED.message))  # fmt: skip
            return
        except ServiceError as error:
            failure = convert.error_of_result(error.to_dict())
            await self.queue.put(
                pb.WatchResponse(
                    header=header,
                    watch_id=watch_id,
                    created=True,
                    canceled=True,
                    cancel_reason=failure.message,
                )
            )
            return
        await self.queue.put(pb.WatchResponse(header=header, watch_id=watch_id, created=True))
        task = asyncio.create_task(self.run(watch_id, create, items))
        self.tasks[watch_id] = task
        task.add_done_callback(lambda _done: self.tasks.pop(watch_id, None))

    async def run(
        self, watch_id: int, create: pb.WatchCreateRequest, items: AsyncIterator[dict[str, Any]]
    ) -> None:
        no_put = pb.WatchCreateRequest.NOPUT in create.filters
        no_delete = pb.WatchCreateRequest.NODELETE in create.filters
        async for item in items:
            if "events" in item:
                events = [event_pb(event, create.prev_kv) for event in item["events"]
                          if not (no_put and event["type"] == "PUT")
                          and not (no_delete and event["type"] == "DELETE")]  # fmt: skip
                if events:
                    header = self.service.header(item["revision"])
                    await self.queue.put(pb.WatchResponse(header=header, watch_id=watch_id,
                                                          events=events))  # fmt: skip
            elif "progress" in item:
                if create.progress_notify:
                    header = self.service.header(item["progress"])
                    await self.queue.put(pb.WatchResponse(header=header, watch_id=watch_id))
            elif "cancel" in item:
                compact = int(item.get("compact_revision") or 0)
                reason = convert.COMPACTED.message if compact else str(item.get("message"))
                await self.queue.put(pb.WatchResponse(
                    header=self.service.header(), watch_id=watch_id, canceled=True,
                    compact_revision=compact, cancel_reason=reason))  # fmt: skip
                return

    async def cancel(self, watch_id: int) -> None:
        task = self.tasks.pop(watch_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.queue.put(pb.WatchResponse(header=self.service.header(), watch_id=watch_id,
                                              canceled=True))  # fmt: skip

    async def close(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert all(task.done() for task in tasks)


class WatchService(_Base, pb_grpc.WatchServicer):
    """etcdserverpb.Watch: served by this member from its own applied state."""

    async def Watch(
        self,
        request_iterator: AsyncIterator[pb.WatchRequest],
        context: aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.WatchResponse]:
        stream = _WatchStream(self)
        reader = asyncio.create_task(stream.read(request_iterator))
        try:
            while True:
                response = await stream.queue.get()
                if response is None:
                    return
                yield response
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await stream.close()


# -- Cluster and Maintenance -------------------------------------------------------------


def _url(address: str | None) -> list[str]:
    if not address:
        return []
    return [address if "://" in address else f"http://{address}"]


class ClusterService(_Base, pb_grpc.ClusterServicer):
    """etcdserverpb.Cluster on Synod's membership and admin calls. Members join as
    learners (MemberAdd needs isLearner; MemberPromote makes them voters once caught
    up); MemberUpdate is not served (a Synod member keeps its addresses)."""

    async def _members(self) -> list[pb.Member]:
        members = self.node.status()["members"]
        endpoints = await asyncio.gather(*(self._endpoint(m) for m in members))
        return [
            pb.Member(ID=m["id"], name=f"synod-{m['id']}", peerURLs=_url(m.get("peer_url")),
                      clientURLs=_url(endpoint), isLearner=m.get("role") == "learner")
            for m, endpoint in zip(members, endpoints, strict=True)
        ]  # fmt: skip

    async def MemberList(
        self, request: pb.MemberListRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.MemberListResponse:
        async def work() -> pb.MemberListResponse:
            return pb.MemberListResponse(header=self.header(), members=await self._members())

        return await _serve(context, work)

    async def _endpoint(self, member: dict[str, Any]) -> str | None:
        if member["id"] == self.node.member_id:
            return self.api.advertise
        return await self.api.link.endpoint_of(member["id"], member.get("client_url"))

    async def MemberAdd(
        self, request: pb.MemberAddRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.MemberAddResponse:
        async def local() -> pb.MemberAddResponse:
            if not request.isLearner:
                raise EtcdError(grpc.StatusCode.FAILED_PRECONDITION, "synod: members join as "
                                "learners: add it with --learner, then promote it")  # fmt: skip
            if len(request.peerURLs) != 1:
                raise convert.invalid("give exactly one peer URL")
            peer = request.peerURLs[0].split("://", 1)[-1]
            node_id = max(m["id"] for m in self.node.status()["members"]) + 1
            await self.node.admin_add_learner(node_id, peer, "")
            added = pb.Member(ID=node_id, name=f"synod-{node_id}", peerURLs=_url(peer),
                              isLearner=True)  # fmt: skip
            return pb.MemberAddResponse(header=self.header(), member=added,
                                        members=await self._members())  # fmt: skip

        async def work() -> pb.MemberAddResponse:
            return await self.leader_call(context, "/etcdserverpb.Cluster/MemberAdd", request,
                                          pb.MemberAddResponse, local)  # fmt: skip

        return await _serve(context, work)

    async def MemberRemove(
        self, request: pb.MemberRemoveRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.MemberRemoveResponse:
        async def local() -> pb.MemberRemoveResponse:
            await self.node.admin_remove(request.ID)
            return pb.MemberRemoveResponse(header=self.header(), members=await self._members())

        async def work() -> pb.MemberRemoveResponse:
            return await self.leader_call(context, "/etcdserverpb.Cluster/MemberRemove",
                                          request, pb.MemberRemoveResponse, local)  # fmt: skip

        return await _serve(context, work)

    async def MemberPromote(
        self, request: pb.MemberPromoteRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.MemberPromoteResponse:
        async def local() -> pb.MemberPromoteResponse:
            await self.node.admin_promote(request.ID)
            return pb.MemberPromoteResponse(header=self.header(), members=await self._members())

        async def work() -> pb.MemberPromoteResponse:
            return await self.leader_call(context, "/etcdserverpb.Cluster/MemberPromote",
                                          request, pb.MemberPromoteResponse, local)  # fmt: skip

        return await _serve(context, work)


class MaintenanceService(_Base, pb_grpc.MaintenanceServicer):
    """etcdserverpb.Maintenance: Status, Alarm (none), Hash, HashKV and MoveLeader."""

    async def Status(
        self, request: pb.StatusRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.StatusResponse:
        async def work() -> pb.StatusResponse:
            status = self.node.status()
            me = [m for m in status["members"] if m["id"] == self.node.member_id]
            return pb.StatusResponse(
                header=self.header(),
                version=ETCD_API_VERSION_REPORTED,
                leader=status["leader_id"],
                raftIndex=status["commit_index"],
                raftTerm=status["term"],
                raftAppliedIndex=status["applied_index"],
                isLearner=bool(me) and me[0]["role"] == "learner",
            )

        return await _serve(context, work)

    async def Alarm(
        self, request: pb.AlarmRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.AlarmResponse:
        async def work() -> pb.AlarmResponse:
            return pb.AlarmResponse(header=self.header())  # Synod raises no alarms

        return await _serve(context, work)

    async def _hash_kv(self, revision: int) -> tuple[int, int]:
        """(CRC-32 of every key at ``revision`` (0: now), that revision), in key order
        over each key's encoded KeyValue; read in pages of range_limit_max from this
        member's state (etcd's HashKV: equal on members that applied the same history).

        Raises EtcdError (compacted or future revision), NodeError."""
        limits = self.api.limits()
        if revision == 0:
            revision = self.node.header()["revision"]
        pages_max = limits.keys_max // limits.range_limit_max + 2
        start, crc = b"\0", 0
        for _page in range(pages_max):
            op = commands.range_op(start, b"\0", limit=limits.range_limit_max, revision=revision)
            ok = _ok(await self.node.read(op, serializable=True))
            for kv in ok["kvs"]:
                crc = zlib.crc32(kv_pb(kv).SerializeToString(deterministic=True), crc)
            if not ok["more"]:
                return crc, revision
            start = ok["kvs"][-1]["key"] + b"\0"
        raise EtcdError(grpc.StatusCode.RESOURCE_EXHAUSTED, "synod: more keys than keys_max")

    async def HashKV(
        self, request: pb.HashKVRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.HashKVResponse:
        async def work() -> pb.HashKVResponse:
            crc, revision = await self._hash_kv(request.revision)
            return pb.HashKVResponse(header=self.header(revision), hash=crc)

        return await _serve(context, work)

    async def Hash(
        self, request: pb.HashRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.HashResponse:
        async def work() -> pb.HashResponse:
            crc, revision = await self._hash_kv(0)  # Synod has no backend file to hash
            return pb.HashResponse(header=self.header(revision), hash=crc)

        return await _serve(context, work)

    async def MoveLeader(
        self, request: pb.MoveLeaderRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.MoveLeaderResponse:
        async def local() -> pb.MoveLeaderResponse:
            await self.node.admin_transfer_leadership(request.targetID or None)
            return pb.MoveLeaderResponse(header=self.header())

        async def work() -> pb.MoveLeaderResponse:
            return await self.leader_call(context, "/etcdserverpb.Maintenance/MoveLeader",
                                          request, pb.MoveLeaderResponse, local)  # fmt: skip

        return await _serve(context, work)


# -- v3lock ------------------------------------------------------------------------------

# A Lock call waits at most this long for its turn (LockService's default wait_ms_max).
LOCK_WAIT_MS = LockLimits().wait_ms_max
LOCK_WAKEUPS_MAX = 100_000  # bounds the wait loop (each wakeup is a change of the lock)


def _lock_owner(lease: int) -> str:
    """The LockService owner of an etcd lock taken under ``lease``. Raises nothing."""
    assert lease > 0
    return f"etcd-lease-{lease:x}"


def _lock_name(name: bytes) -> str:
    """The LockService name of an etcd lock name. Raises EtcdError (not UTF-8, empty)."""
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise convert.invalid("lock names must be UTF-8 on Synod") from None
    if not text:
        raise convert.EMPTY_KEY.new()
    return text


class LockService(_Base, v3lock_grpc.LockServicer):
    """v3lockpb.Lock mapped onto the LockService: ``Lock(name, lease)`` is a mutex
    acquire by the owner ``etcd-lease-<lease hex>`` bound to that lease, waiting in
    the lock's FIFO queue; the answer's key is etcd's ``<name>/<lease hex>``, which
    ``Unlock`` takes back. The key is not a KV key (see docs/etcd-compat.md)."""

    async def Lock(
        self, request: v3lock.LockRequest, context: aio.ServicerContext[Any, Any]
    ) -> v3lock.LockResponse:
        async def local() -> v3lock.LockResponse:
            name = _lock_name(request.name)
            if request.lease <= 0:
                raise convert.LEASE_NOT_FOUND.new()
            owner = _lock_owner(request.lease)
            op = lock_acquire_op(name, owner, request.lease, wait_ms=LOCK_WAIT_MS)
            ok = _ok(await self.node.write(op, None))
            if not ok["granted"]:
                await self._await_turn(name, owner, ok["waiter_id"])
            key = request.name + b"/" + f"{request.lease:x}".encode()
            return v3lock.LockResponse(header=self.header(), key=key)

        async def work() -> v3lock.LockResponse:
            return await self.leader_call(context, "/v3lockpb.Lock/Lock", request,
                                          v3lock.LockResponse, local,
                                          LOCK_WAIT_MS / 1000 + 10)  # fmt: skip

        return await _serve(context, work)

    async def _await_turn(self, name: str, owner: str, waiter_id: int) -> None:
        """Wait on this (leader) member's applied state until the waiter holds the lock.
        A caller that goes away leaves the queue. Raises EtcdError when the waiter left
        the queue without the lock (lease ended, wait bound, revoked)."""
        waits = self.node.lock_waits
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCK_WAIT_MS / 1000
        try:
            for _wakeup in range(LOCK_WAKEUPS_MAX):
                state, _token = waits.table().waiter_state(DEFAULT_NAMESPACE, name, owner,
                                                           waiter_id)  # fmt: skip
                if state == "granted":
                    return
                if state == "gone" or loop.time() >= deadline:
                    break
                await waits.wait((DEFAULT_NAMESPACE, name), deadline - loop.time())
        except asyncio.CancelledError:
            release = lock_release_op(name, owner, release_all=True)
            await asyncio.shield(self.node.write(release, None))
            raise
        raise EtcdError(grpc.StatusCode.FAILED_PRECONDITION,
                        f"synod: {owner} left the queue of lock {name!r} without it (lease "
                        "ended, wait bound or revoked)")  # fmt: skip

    async def Unlock(
        self, request: v3lock.UnlockRequest, context: aio.ServicerContext[Any, Any]
    ) -> v3lock.UnlockResponse:
        async def local() -> v3lock.UnlockResponse:
            name_bytes, slash, lease_hex = request.key.rpartition(b"/")
            try:
                lease = int(lease_hex, 16) if slash else 0
            except ValueError:
                lease = 0
            if lease <= 0:
                raise convert.invalid("not a lock key (<name>/<lease hex>)")
            op = lock_release_op(_lock_name(name_bytes), _lock_owner(lease), release_all=True)
            result = await self.node.write(op, None)
            error = result.get("error") if result.get("ok") is not True else None
            if isinstance(error, dict) and error.get("code") != "lock-not-held":
                _ok(result)  # etcd deletes a missing lock key without complaint
            return v3lock.UnlockResponse(header=self.header())

        async def work() -> v3lock.UnlockResponse:
            return await self.leader_call(context, "/v3lockpb.Lock/Unlock", request,
                                          v3lock.UnlockResponse, local)  # fmt: skip

        return await _serve(context, work)


# -- the server --------------------------------------------------------------------------


class EtcdApiServer:
    """The gRPC server of one node; `start` and `stop` it with the HTTP server."""

    def __init__(
        self,
        node: NodeApi,
        *,
        cluster_id: int,
        listen: str,
        advertise: str,
        limits: Callable[[], ServiceLimits],
        lease_ids: Callable[[], list[int]],
        etcd_limits: EtcdLimits | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """Serve ``node`` on ``listen`` (host:port); ``advertise`` is the endpoint other
        members and MemberList give clients. ``limits`` returns the service limits in
        force, ``lease_ids`` the live leases; calls are counted and timed in ``registry``
        (synod_etcd_* metrics) when one is given. Raises nothing."""
        assert listen and advertise
        self.node = node
        self.cluster_id = cluster_id
        self.listen = listen
        self.advertise = advertise
        self.limits = limits
        self.lease_ids = lease_ids
        self.etcd_limits = etcd_limits or EtcdLimits()
        self.link = LeaderLink(node.member_id, self.etcd_limits)
        self.registry = registry
        self._server: aio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        """Listen and serve. Raises OSError if the address cannot be bound."""
        limits = self.etcd_limits
        options = [("grpc.max_receive_message_length", limits.message_bytes_max),
                   ("grpc.max_send_message_length", limits.message_bytes_max),
                   ("grpc.so_reuseport", 0)]  # fmt: skip
        interceptors = []
        if self.registry is not None:
            interceptors.append(ObserveInterceptor(self.registry, SERVED_METHODS))
        server = aio.server(options=options, maximum_concurrent_rpcs=limits.rpcs_max,
                            interceptors=interceptors)  # fmt: skip
        pb_grpc.add_KVServicer_to_server(KVService(self), server)
        pb_grpc.add_LeaseServicer_to_server(LeaseService(self), server)
        pb_grpc.add_WatchServicer_to_server(WatchService(self), server)
        pb_grpc.add_ClusterServicer_to_server(ClusterService(self), server)
        pb_grpc.add_MaintenanceServicer_to_server(MaintenanceService(self), server)
        v3lock_grpc.add_LockServicer_to_server(LockService(self), server)
        try:
            self.port = server.add_insecure_port(self.listen)
        except RuntimeError as error:
            raise OSError(f"cannot listen for etcd clients on {self.listen}: {error}") from None
        await self.link.start()
        await server.start()
        self._server = server
        assert self.port > 0

    async def stop(self, grace_s: float = 1.0) -> None:
        """Stop serving (streams are cut after ``grace_s``). Raises nothing."""
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
        await self.link.close()
        assert self._server is None
