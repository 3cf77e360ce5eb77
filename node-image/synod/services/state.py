"""ServiceStateMachine: committed log entries in, deterministic results out.

The Raft node calls :meth:`ServiceStateMachine.apply` with each committed entry's
``(index, data)`` in log order. ``data`` is a command envelope (see
:mod:`synod.services.commands`); empty ``data`` is a no-op (e.g. a new leader's empty
entry). ``apply`` never raises for bad input: malformed commands, unknown op kinds,
failed preconditions and exceeded bounds all become an error *result*, the same on every
replica, and change no state (except ``applied_index``).

Every result is a msgpack-able map: ``{"ok": True, "revision": <kv revision>, ...}`` or
``{"ok": False, "revision": ..., "error": {"code", "status", "message", ...details}}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from synod.services.commands import (
    Command,
    decode_command,
    read_bytes,
    read_int,
    read_list,
    require_fields,
)
from synod.services.errors import InvalidArgument, ServiceError
from synod.services.ids import IDS_READ_KINDS, IdsTable
from synod.services.kv import (
    DeleteRequest,
    KeyValue,
    KVStore,
    PutRequest,
    RangeRequest,
    RangeResult,
    Request,
    parse_request,
    parse_txn,
    prefix_end,
)
from synod.services.leases import LeaseTable
from synod.services.limits import ServiceLimits, settable_limits, with_settable_limits
from synod.services.locks import LOCK_OPS, LOCK_READS, LockTable
from synod.services.ratelimit import RATELIMIT_READ_KINDS, RateLimitTable
from synod.services.sessions import Result, SessionTable
from synod.services.watch import WatchHub

__all__ = ["SNAPSHOT_FORMAT", "ServiceStateMachine"]

SNAPSHOT_FORMAT = 1


def _kv_or_none(kv: KeyValue | None) -> dict[str, Any] | None:
    return None if kv is None else kv.to_dict()


def _range_body(result: RangeResult, keys_only: bool) -> dict[str, Any]:
    return {
        "kvs": [kv.to_dict(keys_only) for kv in result.kvs],
        "more": result.more,
        "count": result.count,
    }


class ServiceStateMachine:
    """kv + leases + sessions + locks + ids + ratelimit policies, replicated; plus the
    node-local watch hub."""

    def __init__(self, limits: ServiceLimits | None = None) -> None:
        """Create the empty state (applied_index 0, kv revision 1). Raises nothing."""
        self.limits = limits or ServiceLimits()
        # The bounds a snapshot without a "limits" map was taken under (and the start of a
        # fresh log): settable bounds changed by `limits_set` travel in snapshots.
        self._base_limits = self.limits
        self._build()
        self.watches = WatchHub(self.kv, self.limits)
        assert self.applied_index == 0

    def _build(self) -> None:
        self.applied_index = 0
        self.leases = LeaseTable(self.limits)
        self.kv = KVStore(self.limits, self.leases.exists)
        self.locks = LockTable(self.leases.exists)
        self.sessions = SessionTable(self.limits.sessions_max,
                                     self.limits.responses_per_session_max)  # fmt: skip
        self._ops: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "put": self._op_put,
            "delete": self._op_delete,
            "range": self._op_range,
            "txn": self._op_txn,
            "compact": self._op_compact,
            "lease_grant": self._op_lease_grant,
            "lease_revoke": self._op_lease_revoke,
            "lease_expire": self._op_lease_expire,
            "limits_set": self._op_limits_set,
            **{kind: self._op_lock for kind in LOCK_OPS},
        }
        self.ids = IdsTable(self._lease_exists)
        self._ops.update(self.ids.ops())
        self.ratelimit = RateLimitTable()
        self._ops.update(self.ratelimit.ops())

    def _lease_exists(self, lease_id: int) -> bool:
        return self.leases.exists(lease_id)

    # -- apply ----------------------------------------------------------------------------

    def apply(self, index: int, data: bytes) -> Result:
        """Apply the committed entry ``(index, data)`` and return its result.

        Raises nothing for any ``data``; asserts ``index`` > ``applied_index`` (the node
        must skip entries a restored snapshot already covers).
        """
        assert index > self.applied_index, "entries are applied once, in log order"
        self.applied_index = index
        if not data:
            return {"ok": True, "revision": self.kv.revision}
        try:
            command = decode_command(data, self.limits.command_bytes_max)
            result = self._apply_command(index, command)
        except ServiceError as error:
            result = self._error(error)
        self.watches.notify()
        assert self.applied_index == index
        return result

    def _apply_command(self, index: int, command: Command) -> Result:
        """Route through the session table. Raises session errors (not cached)."""
        if command.kind == "session_open":
            require_fields(command.op, (), optional=("nonce",))
            if len(read_bytes(command.op, "nonce", default=b"")) > 64:
                raise InvalidArgument("session_open nonce is longer than 64 bytes")
            if command.client_id != 0:
                raise InvalidArgument("session_open must be sent without a session (c=0)")
            return self._ok(client_id=self.sessions.open(index))
        if command.kind == "session_close":
            require_fields(command.op, ())
            if command.client_id == 0:
                raise InvalidArgument("session_close needs the session's client id")
            self.sessions.close(command.client_id)
            return self._ok()
        return self.sessions.apply(
            index, command.client_id, command.seq, command.ack_seq, lambda: self._run(command.op)
        )

    def _run(self, op: dict[str, Any]) -> Result:
        """Run one op; errors become results (so a session caches them too)."""
        handler = self._ops.get(op["kind"])
        try:
            if handler is None:
                raise InvalidArgument(f"unknown op kind {op['kind']!r}")
            return self._ok(**handler(op))
        except ServiceError as error:
            return self._error(error)

    def _ok(self, **fields: Any) -> Result:
        assert "ok" not in fields and "revision" not in fields
        return {"ok": True, "revision": self.kv.revision, **fields}

    def _error(self, error: ServiceError) -> Result:
        assert error.code != "internal", "only typed errors become results"
        return {"ok": False, "revision": self.kv.revision, "error": error.to_dict()}

    # -- op handlers (each returns the result's op-specific fields) ------------------------

    def _op_put(self, op: dict[str, Any]) -> dict[str, Any]:
        request = parse_request(op, self.limits)
        assert isinstance(request, PutRequest)
        prev, _revision = self.kv.put(request)
        return {"prev_kv": _kv_or_none(prev) if request.prev_kv else None}

    def _op_delete(self, op: dict[str, Any]) -> dict[str, Any]:
        request = parse_request(op, self.limits)
        assert isinstance(request, DeleteRequest)
        deleted, _revision = self.kv.delete_range(request)
        prev_kvs = [kv.to_dict() for kv in deleted] if request.prev_kv else []
        return {"deleted": len(deleted), "prev_kvs": prev_kvs}

    def _op_range(self, op: dict[str, Any]) -> dict[str, Any]:
        request = parse_request(op, self.limits)
        assert isinstance(request, RangeRequest)
        return _range_body(self.kv.range(request), request.keys_only)

    def _op_txn(self, op: dict[str, Any]) -> dict[str, Any]:
        if "fences" in op:  # lock-token guards: all must hold, else nothing happens
            fences = read_list(op, "fences", self.limits.compares_per_txn_max,
                               "compares_per_txn_max")  # fmt: skip
            op = {k: v for k, v in op.items() if k != "fences"}
            compares, success, failure = parse_txn(op, self.limits)
            self.locks.check_fences(fences)
        else:
            compares, success, failure = parse_txn(op, self.limits)
        succeeded, results, _revision = self.kv.txn(compares, success, failure)
        branch = success if succeeded else failure
        assert len(branch) == len(results)
        responses = [_txn_response(r, out) for r, out in zip(branch, results, strict=True)]
        return {"succeeded": succeeded, "responses": responses}

    def _op_lock(self, op: dict[str, Any]) -> dict[str, Any]:
        return self.locks.apply(op)

    def _op_compact(self, op: dict[str, Any]) -> dict[str, Any]:
        require_fields(op, ("revision",))
        self.kv.compact(read_int(op, "revision", minimum=1))
        return {"compact_revision": self.kv.compact_revision}

    def _op_lease_grant(self, op: dict[str, Any]) -> dict[str, Any]:
        require_fields(op, ("ttl_ms",), ("id", "pick"))
        lease = self.leases.grant(read_int(op, "id", 0), read_int(op, "ttl_ms", minimum=1),
                                  pick=read_int(op, "pick", 0))  # fmt: skip
        return {"id": lease.lease_id, "ttl_ms": lease.ttl_ms}

    def _op_lease_revoke(self, op: dict[str, Any]) -> dict[str, Any]:
        require_fields(op, ("id",))
        lease_id = read_int(op, "id", minimum=1)
        return {"id": lease_id, "keys_deleted": self._revoke(lease_id)}

    def _op_lease_expire(self, op: dict[str, Any]) -> dict[str, Any]:
        require_fields(op, ("ids",))
        items = read_list(op, "ids", self.limits.lease_expire_batch_max, "lease_expire_batch_max")
        lease_ids = sorted({read_int({"id": item}, "id", minimum=1) for item in items})
        # A lease revoked since the leader decided is skipped, not an error: the leader
        # may propose the same expiry twice.
        expired = [lease_id for lease_id in lease_ids if self.leases.exists(lease_id)]
        for lease_id in expired:
            self._revoke(lease_id)
        return {"expired": expired}

    def _op_limits_set(self, op: dict[str, Any]) -> dict[str, Any]:
        require_fields(op, ("limits",))
        changes = op["limits"]
        if not isinstance(changes, dict) or not all(isinstance(k, str) for k in changes):
            raise InvalidArgument("limits must be a map of limit names to integers")
        try:
            updated = with_settable_limits(self.limits, changes)
        except ValueError as error:
            raise InvalidArgument(str(error)) from None
        # Lowering a count bound below what is stored would break the tables' invariants
        # (and could not be honoured without deleting data): refused, nothing changes.
        in_use = {"keys_max": len(self.kv), "leases_max": len(self.leases)}
        for name, used in in_use.items():
            if getattr(updated, name) < used:
                raise InvalidArgument(f"{name} cannot go below the {used} stored")
        self._use_limits(updated)
        return {"limits": settable_limits(self.limits)}

    def _use_limits(self, limits: ServiceLimits) -> None:
        """Switch the replicated tables to ``limits``; the watch hub keeps its own
        (node-local) bounds. Raises nothing."""
        self.limits = limits
        self.kv.limits = limits
        self.leases.limits = limits
        assert self.kv.limits is self.leases.limits is self.limits

    def settable_limits(self) -> dict[str, int]:
        """The settable replicated bounds as applied here. Raises nothing."""
        return settable_limits(self.limits)

    def _revoke(self, lease_id: int) -> int:
        """Delete the lease's keys (one revision) then the lease. Raises NotFound."""
        self.leases.get(lease_id)
        keys = self.kv.keys_of_lease(lease_id)
        assert len(keys) <= self.limits.keys_per_lease_max
        self.kv.delete_keys(keys)
        self.leases.revoke(lease_id)
        self.locks.on_lease_revoked(lease_id)
        self.ids.release_lease(lease_id)
        assert not self.kv.keys_of_lease(lease_id)
        return len(keys)

    # -- reads (no log entry; linearizable after ReadIndex, else serializable) -----------

    def read(self, op: dict[str, Any]) -> Result:
        """Serve a ``range`` op map from the applied state (same result format as an
        applied range). Raises InvalidArgument, TooLarge, Compacted, FutureRevision."""
        if op.get("kind") in LOCK_READS:
            return self._ok(**self.locks.read(op))
        if op.get("kind") in IDS_READ_KINDS:
            return self._ok(**self.ids.read(op))
        if op.get("kind") in RATELIMIT_READ_KINDS:
            return self._ok(**self.ratelimit.read(op))
        if op.get("kind") != "range":
            raise InvalidArgument(
                "only range, lock, ids_get/ids_list and ratelimit_policies ops can be served "
                "as reads"
            )
        return self._ok(**self._op_range(op))

    def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        prefix: bool = False,
        limit: int = 0,
        revision: int = 0,
    ) -> Result:
        """Convenience for :meth:`read`. Raises as :meth:`read`."""
        end = prefix_end(key) if prefix else range_end
        op = {"kind": "range", "key": key, "range_end": end, "limit": limit, "revision": revision}
        return self.read(op)

    def lease_info(self, lease_id: int) -> Result:
        """``{"id", "ttl_ms", "keys"}`` of a live lease (remaining time comes from the
        leader's LeaseClock). Raises NotFound."""
        lease = self.leases.get(lease_id)
        return self._ok(id=lease.lease_id, ttl_ms=lease.ttl_ms,
                        keys=self.kv.keys_of_lease(lease_id))  # fmt: skip

    def lock_timers_ms(self) -> dict[int, int]:
        """``{timer_id: duration_ms}`` of the lock timers for the leader's lock clock.

        Raises nothing."""
        return self.locks.timers()

    def lease_ttls_ms(self) -> dict[int, int]:
        """``{lease_id: ttl_ms}`` for ``LeaseClock.on_become_leader``. Raises nothing."""
        return self.leases.ttls_ms()

    # -- snapshot -------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Serialize the replicated state; identical bytes on replicas that applied the
        same entries. Raises nothing."""
        state = {
            "format": SNAPSHOT_FORMAT,
            "applied_index": self.applied_index,
            "kv": self.kv.to_snapshot(),
            "leases": self.leases.to_snapshot(),
            "sessions": self.sessions.to_snapshot(),
            "limits": settable_limits(self.limits),
            "locks": self.locks.to_snapshot(),
            "ids": self.ids.to_snapshot(),
            "ratelimit": self.ratelimit.to_snapshot(),
        }
        data = msgpack.packb(state, use_bin_type=True)
        assert isinstance(data, bytes)
        return data

    def restore(self, data: bytes) -> None:
        """Replace the state with a :meth:`snapshot`; live watchers are cancelled with
        ``restored``. Raises InvalidArgument if ``data`` is malformed (state unchanged)."""
        self.adopt(self.decode(data))

    def decode(self, data: bytes) -> RestoredState:
        """Build the state of a :meth:`snapshot` without touching this one: it only reads
        ``limits``, so a worker thread may run it while the owner keeps serving.
        Raises InvalidArgument if ``data`` is malformed."""
        try:
            state = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
            if state["format"] != SNAPSHOT_FORMAT:
                raise InvalidArgument(f"unknown snapshot format {state['format']!r}")
            applied_index = read_int(state, "applied_index")
            leases, kv_data, sessions = state["leases"], state["kv"], state["sessions"]
            limits = with_settable_limits(self._base_limits, state.get("limits") or {})
            locks_data = state.get("locks")  # absent in snapshots from before locks
        except (KeyError, TypeError, ValueError, AttributeError, msgpack.UnpackException) as exc:
            raise InvalidArgument(f"malformed snapshot: {type(exc).__name__}") from None
        leases_table = LeaseTable(limits)
        kv = KVStore(limits, leases_table.exists)
        session_table = SessionTable(self.limits.sessions_max,
                                     self.limits.responses_per_session_max)  # fmt: skip
        locks = LockTable(leases_table.exists, self.locks.limits)
        ids = IdsTable(leases_table.exists)
        try:
            leases_table.restore(leases)
            kv.restore(kv_data)
            session_table.restore(sessions)
            if locks_data is not None:
                locks.restore(locks_data)
            ids.restore(state.get("ids"))  # absent in snapshots of versions without ids
            ratelimit = RateLimitTable()
            ratelimit.restore(state.get("ratelimit"))  # absent before the ratelimit service
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError,
                IndexError) as exc:  # fmt: skip
            # Found by tests/unit/test_storage_fuzz.py: a section of the wrong shape
            # (a bool where a map was) or an integer beyond 64 bits.
            raise InvalidArgument(f"malformed snapshot: {type(exc).__name__}") from None
        assert kv.revision >= 1
        return RestoredState(applied_index, leases_table, kv, session_table, limits, ids, locks,
                             ratelimit)  # fmt: skip

    def adopt(self, restored: RestoredState) -> None:
        """Replace the state with a decoded one (cheap: references only); live watchers
        are cancelled with ``restored``. Raises nothing."""
        self.applied_index = restored.applied_index
        self.leases, self.kv, self.sessions = restored.leases, restored.kv, restored.sessions
        self._use_limits(restored.limits)
        if restored.locks is not None:
            restored.locks.stats = self.locks.stats  # counters of this process go on
            self.locks = restored.locks
        self.ids = restored.ids
        self._ops.update(self.ids.ops())
        if restored.ratelimit is not None:
            self.ratelimit = restored.ratelimit
            self._ops.update(self.ratelimit.ops())
        self.watches.kv = restored.kv
        self.watches.reset()
        assert self.kv is restored.kv and self.kv.revision >= 1


@dataclass(frozen=True, slots=True)
class RestoredState:
    """A snapshot decoded by :meth:`ServiceStateMachine.decode`, ready to adopt."""

    applied_index: int
    leases: LeaseTable
    kv: KVStore
    sessions: SessionTable
    limits: ServiceLimits
    ids: IdsTable
    locks: LockTable | None = None
    ratelimit: RateLimitTable | None = None


def _txn_response(request: Request, out: Any) -> dict[str, Any]:
    """The per-op response of a txn branch."""
    if isinstance(request, PutRequest):
        return {"kind": "put", "prev_kv": _kv_or_none(out) if request.prev_kv else None}
    if isinstance(request, DeleteRequest):
        prev_kvs = [kv.to_dict() for kv in out] if request.prev_kv else []
        return {"kind": "delete", "deleted": len(out), "prev_kvs": prev_kvs}
    assert isinstance(out, RangeResult)
    return {"kind": "range", **_range_body(out, request.keys_only)}
