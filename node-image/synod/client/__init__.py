"""Synod's Python SDK: `AsyncClient` for asyncio code, `Client` for blocking code.

from synod.client import Client

with Client("127.0.0.1:2379,127.0.0.1:2479,127.0.0.1:2579") as client:
    client.put("greeting", "hello")
    print(client.get("greeting"))
"""

from synod.client.aio import DEV_ENDPOINTS, AsyncClient, normalize_endpoints
from synod.client.errors import (
    AlreadyExists,
    BodyTimeout,
    ClockRollback,
    Compacted,
    CompareFailed,
    ConfChangeInvalid,
    ConfChangePending,
    Conflict,
    FutureRevision,
    GeneratorNotFound,
    InvalidArgument,
    LeaseExpired,
    LimitExceeded,
    NoLeader,
    NotCaughtUp,
    NotFound,
    NotLeader,
    NotReady,
    OutcomeUnknown,
    ProtocolError,
    RequestTimeout,
    SessionExpired,
    SynodError,
    TooLarge,
    TransferInvalid,
    Unavailable,
    Unhealthy,
    WorkerLeaseLost,
)
from synod.client.ids import SegmentIds, Snowflake
from synod.client.lease import LeaseKeepAlive
from synod.client.locks import Election, Leader, Lock, LockLost, RWLock, SyncLock
from synod.client.ratelimit import RateLimited, RateLimitResult
from synod.client.sync import Client, SyncLeaseKeepAlive
from synod.client.txn import Compare, Txn
from synod.client.types import (
    KV,
    ClusterStatus,
    DeleteResult,
    Header,
    LeaseGrant,
    LeaseInfo,
    MemberStatus,
    PutResult,
    RangeResult,
    TxnResult,
    WatchEvent,
)

__all__ = [
    "DEV_ENDPOINTS",
    "KV",
    "AlreadyExists",
    "AsyncClient",
    "BodyTimeout",
    "Client",
    "ClockRollback",
    "ClusterStatus",
    "Compacted",
    "Compare",
    "CompareFailed",
    "ConfChangeInvalid",
    "ConfChangePending",
    "Conflict",
    "DeleteResult",
    "Election",
    "FutureRevision",
    "GeneratorNotFound",
    "Header",
    "InvalidArgument",
    "Leader",
    "LeaseExpired",
    "LeaseGrant",
    "LeaseInfo",
    "LeaseKeepAlive",
    "LimitExceeded",
    "Lock",
    "LockLost",
    "MemberStatus",
    "NoLeader",
    "NotCaughtUp",
    "NotFound",
    "NotLeader",
    "NotReady",
    "OutcomeUnknown",
    "ProtocolError",
    "PutResult",
    "RWLock",
    "RangeResult",
    "RateLimitResult",
    "RateLimited",
    "RequestTimeout",
    "SegmentIds",
    "SessionExpired",
    "Snowflake",
    "SyncLeaseKeepAlive",
    "SyncLock",
    "SynodError",
    "TooLarge",
    "TransferInvalid",
    "Txn",
    "TxnResult",
    "Unavailable",
    "Unhealthy",
    "WatchEvent",
    "WorkerLeaseLost",
    "normalize_endpoints",
]
