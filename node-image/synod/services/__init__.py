"""Replicated service state machines: kv, leases, sessions, and the node-local watch hub.

Everything here is sans-I/O and deterministic: no clock, no sockets, no threads. The
Raft node feeds committed entries to :class:`ServiceStateMachine`; the leader drives
lease expiry with a :class:`LeaseClock`; each node serves watches from its
``ServiceStateMachine.watches`` hub.
"""

from synod.services.commands import Command, decode_command, encode_command
from synod.services.errors import (
    AlreadyExists,
    Compacted,
    CompareFailed,
    FutureRevision,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    ServiceError,
    SessionExpired,
    TooLarge,
    error_from_dict,
)
from synod.services.kv import Event, KeyValue, KVStore, prefix_end
from synod.services.leases import LeaseClock, LeaseTable
from synod.services.limits import ServiceLimits
from synod.services.sessions import SessionTable
from synod.services.state import ServiceStateMachine
from synod.services.watch import Watcher, WatchHub

__all__ = [
    "AlreadyExists",
    "Command",
    "Compacted",
    "CompareFailed",
    "Event",
    "FutureRevision",
    "InvalidArgument",
    "KVStore",
    "KeyValue",
    "LeaseClock",
    "LeaseTable",
    "LimitExceeded",
    "NotFound",
    "ServiceError",
    "ServiceLimits",
    "ServiceStateMachine",
    "SessionExpired",
    "SessionTable",
    "TooLarge",
    "WatchHub",
    "Watcher",
    "decode_command",
    "encode_command",
    "error_from_dict",
    "prefix_end",
]
