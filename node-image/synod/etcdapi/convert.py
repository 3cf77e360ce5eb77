"""etcd v3 messages <-> Synod service ops and results, and etcd's error statuses.

Pure: no I/O. The request side builds the op maps of `synod.services.commands`, so an
etcd request goes through the same parser, limits and state machine as an HTTP one;
the result side turns the service results (`synod.services.state`) into etcd's
messages. Errors become etcd's gRPC status codes and messages (its ``rpctypes``), so
clients that match on them (python-etcd3, clientv3, etcdctl) behave as against etcd.
"""

from __future__ import annotations

from typing import Any

import grpc

from synod.etcdapi._pb.etcdserverpb import rpc_pb2 as pb
from synod.etcdapi._pb.mvccpb import kv_pb2 as mvccpb
from synod.services import commands

__all__ = [
    "EtcdError",
    "compare_of",
    "error_of_result",
    "event_pb",
    "kv_pb",
    "range_op_of",
    "request_op_of",
    "txn_op_of",
]

# etcd's Compare enums -> the service's target / result names.
_TARGETS = {
    pb.Compare.VERSION: "version",
    pb.Compare.CREATE: "create_revision",
    pb.Compare.MOD: "mod_revision",
    pb.Compare.VALUE: "value",
    pb.Compare.LEASE: "lease",
}
_RESULTS = {
    pb.Compare.EQUAL: "=",
    pb.Compare.NOT_EQUAL: "!=",
    pb.Compare.LESS: "<",
    pb.Compare.GREATER: ">",
}
_UNION_OF_TARGET = {"version": "version", "create_revision": "create_revision",
                    "mod_revision": "mod_revision", "value": "value", "lease": "lease"}  # fmt: skip


class EtcdError(Exception):
    """An answer in etcd's words: a gRPC status code and etcd's message. The module's
    constants are templates: raise ``COMPACTED.new()``, never the shared instance."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        assert message
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    def new(self) -> EtcdError:
        """A fresh exception with this status (to raise). Raises nothing."""
        return EtcdError(self.code, self.message)


# etcd's own messages (go.etcd.io/etcd/api/v3/v3rpc/rpctypes), by name.
COMPACTED = EtcdError(grpc.StatusCode.OUT_OF_RANGE,
                      "etcdserver: mvcc: required revision has been compacted")  # fmt: skip
FUTURE_REV = EtcdError(grpc.StatusCode.OUT_OF_RANGE,
                       "etcdserver: mvcc: required revision is a future revision")  # fmt: skip
LEASE_NOT_FOUND = EtcdError(grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
LEASE_EXIST = EtcdError(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: lease already exists")
EMPTY_KEY = EtcdError(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")
KEY_NOT_FOUND = EtcdError(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key not found")
TOO_MANY_OPS = EtcdError(grpc.StatusCode.INVALID_ARGUMENT,
                         "etcdserver: too many operations in txn request")  # fmt: skip
DUPLICATE_KEY = EtcdError(grpc.StatusCode.INVALID_ARGUMENT,
                          "etcdserver: duplicate key given in txn request")  # fmt: skip
REQUEST_TOO_LARGE = EtcdError(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large")
NO_LEADER = EtcdError(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
NOT_LEADER = EtcdError(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: not leader")
TIMEOUT = EtcdError(grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out")
TOO_MANY_REQUESTS = EtcdError(grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: too many requests")
VALUE_PROVIDED = EtcdError(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: value is provided")
LEASE_PROVIDED = EtcdError(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: lease is provided")


def invalid(message: str) -> EtcdError:
    """An INVALID_ARGUMENT in etcd's style. Raises nothing."""
    assert message
    return EtcdError(grpc.StatusCode.INVALID_ARGUMENT, f"etcdserver: {message}")


def unimplemented(what: str) -> EtcdError:
    """UNIMPLEMENTED naming what Synod does not serve (docs/etcd-compat.md)."""
    assert what
    return EtcdError(grpc.StatusCode.UNIMPLEMENTED, f"synod: {what} is not supported")


def error_of_result(error: dict[str, Any]) -> EtcdError:
    """The etcd status of a service error body (``{"code", "message", ...}``).

    Raises nothing."""
    code, message = str(error.get("code")), str(error.get("message", ""))
    assert code
    if code == "compacted":
        return COMPACTED.new()
    if code == "future-revision":
        return FUTURE_REV.new()
    if code == "not-found" and "lease" in error:
        return LEASE_NOT_FOUND.new()
    if code == "already-exists" and "lease" in error:
        return LEASE_EXIST.new()
    if code == "too-large":
        limit = error.get("limit")
        if limit in ("ops_per_txn_max", "compares_per_txn_max"):
            return TOO_MANY_OPS.new()
        if limit == "range_limit_max":
            return invalid(f"{message} (Synod's range_limit_max)")
        return REQUEST_TOO_LARGE.new()
    if code == "invalid-argument":
        if message == "key must not be empty":
            return EMPTY_KEY.new()
        if message.startswith("duplicate key"):
            return DUPLICATE_KEY.new()
        return invalid(message)
    if code == "limit-exceeded":
        return EtcdError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"etcdserver: {message}")
    if code == "not-found":
        return EtcdError(grpc.StatusCode.NOT_FOUND, f"etcdserver: {message}")
    return EtcdError(grpc.StatusCode.UNKNOWN, f"synod: {code}: {message}")


# -- requests -----------------------------------------------------------------------------


def range_op_of(request: pb.RangeRequest, limit: int) -> dict[str, Any]:
    """The service ``range`` op of a RangeRequest, reading at most ``limit`` keys (0:
    the server's range_limit_max); sorting and the revision filters are the caller's.

    Raises EtcdError for an empty key."""
    if not request.key:
        raise EMPTY_KEY.new()
    assert limit >= 0
    return commands.range_op(
        request.key,
        request.range_end,
        limit=limit,
        revision=request.revision,
        keys_only=request.keys_only,
        count_only=request.count_only,
    )


def needs_full_range(request: pb.RangeRequest) -> bool:
    """Whether the answer needs every key of the range before the limit applies
    (sorting or revision filters, as etcd's range does). Raises nothing."""
    return bool(
        request.sort_order != pb.RangeRequest.NONE
        or request.min_mod_revision or request.max_mod_revision
        or request.min_create_revision or request.max_create_revision
    )  # fmt: skip


def compare_of(item: pb.Compare) -> dict[str, Any]:
    """The service compare map of an etcd Compare. Raises EtcdError (bad enum)."""
    target = _TARGETS.get(item.target)
    result = _RESULTS.get(item.result)
    if target is None or result is None:
        raise invalid("unknown compare target or result")
    union = item.WhichOneof("target_union")
    value: bytes | int
    if target == "value":
        value = item.value
    elif union is None:
        value = 0
    else:
        value = int(getattr(item, union))
    return commands.compare(item.key, target, result, value, item.range_end)


def request_op_of(item: pb.RequestOp) -> dict[str, Any]:
    """The service op of one txn RequestOp. Raises EtcdError (nested txn, ignore_*)."""
    which = item.WhichOneof("request")
    if which == "request_range":
        return range_op_of(item.request_range, item.request_range.limit)
    if which == "request_put":
        put = item.request_put
        if put.ignore_value or put.ignore_lease:
            raise unimplemented("ignore_value / ignore_lease inside a txn")
        if not put.key:
            raise EMPTY_KEY.new()
        return commands.put_op(put.key, put.value, put.lease, put.prev_kv)
    if which == "request_delete_range":
        delete = item.request_delete_range
        if not delete.key:
            raise EMPTY_KEY.new()
        return commands.delete_op(delete.key, delete.range_end, prev_kv=delete.prev_kv)
    if which == "request_txn":
        raise unimplemented("a txn nested in a txn")
    raise invalid("empty txn request op")


def txn_op_of(request: pb.TxnRequest) -> dict[str, Any]:
    """The service ``txn`` op of a TxnRequest. Raises EtcdError."""
    return commands.txn_op(
        [compare_of(c) for c in request.compare],
        [request_op_of(op) for op in request.success],
        [request_op_of(op) for op in request.failure],
    )


# -- results ------------------------------------------------------------------------------


def kv_pb(kv: dict[str, Any]) -> mvccpb.KeyValue:
    """An etcd KeyValue of a service kv map. Raises KeyError if one is malformed."""
    return mvccpb.KeyValue(
        key=kv["key"],
        value=kv["value"],
        create_revision=kv["create_revision"],
        mod_revision=kv["mod_revision"],
        version=kv["version"],
        lease=kv["lease"],
    )


def event_pb(event: dict[str, Any], prev_kv: bool) -> mvccpb.Event:
    """An etcd Event of a service event map (``prev_kv`` only when asked).

    Raises KeyError if it is malformed."""
    kind = mvccpb.Event.PUT if event["type"] == "PUT" else mvccpb.Event.DELETE
    kv = event["kv"]
    if kind == mvccpb.Event.DELETE:  # etcd's delete event: key and mod_revision only
        kv = {**kv, "value": b"", "create_revision": 0, "version": 0, "lease": 0}
    out = mvccpb.Event(type=kind, kv=kv_pb(kv))
    if prev_kv and event.get("prev_kv") is not None:
        out.prev_kv.CopyFrom(kv_pb(event["prev_kv"]))
    return out
