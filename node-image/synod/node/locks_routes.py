"""The route specs of the locks service: ``/v1/locks/...`` and ``/v1/election/...``.

Part of the route table of :mod:`synod.node.routes` (and so of the OpenAPI document);
the handlers are in :mod:`synod.node.locks_http`. Bounds come from
:class:`~synod.services.locks.LockLimits` so the document shows what is enforced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from synod.node.schema import Schema, boolean, integer, obj, string
from synod.services.locks import KINDS, LockLimits

if TYPE_CHECKING:
    from synod.node.routes import RouteSpec

__all__ = ["LOCK_POLL_MS_MAX", "lock_fence_schema", "lock_route_specs"]

# One HTTP long-poll waits at most this long (under the forwarder's timeout); a waiter
# still queued then gets `granted: false` and polls again with /v1/locks/wait.
LOCK_POLL_MS_MAX = 5_000

_COMMON = ("invalid-argument", "limit-exceeded", "internal")
_LEADER = ("not-leader", "no-leader", "outcome-unknown", "timeout")
_WRITE = (*_COMMON, *_LEADER, "too-large", "session-expired", "not-found")
_READ = (*_COMMON, "no-leader", "timeout", "too-large", "not-found")


def _header() -> Schema:
    props = {name: integer() for name in ("revision", "raft_term", "member_id", "leader_id")}
    return obj(props, tuple(props), "where and when the answer was made")


def _answer(fields: dict[str, Schema], description: str = "") -> Schema:
    props = {"header": _header(), **fields}
    return {"type": "object", "properties": props, "required": ["header", *fields],
            "description": description}  # fmt: skip


def _names(limits: LockLimits) -> dict[str, Schema]:
    return {
        "ns": string("lock namespace (default: \"default\")", min_length=1,
                     bytes_max=limits.namespace_bytes_max, limit="namespace_bytes_max"),
        "name": string("lock name", min_length=1, bytes_max=limits.lock_name_bytes_max,
                       limit="lock_name_bytes_max"),
    }  # fmt: skip


def _owner(limits: LockLimits) -> Schema:
    return string("owner identity (reentrancy is by owner)", min_length=1,
                  bytes_max=limits.owner_bytes_max, limit="owner_bytes_max")  # fmt: skip


def _value(limits: LockLimits) -> Schema:
    return string("election value (UTF-8)", bytes_max=limits.election_value_bytes_max,
                  limit="election_value_bytes_max")  # fmt: skip


def _poll() -> Schema:
    return integer("wait in this call at most this long (default and max LOCK_POLL_MS_MAX)",
                   maximum=LOCK_POLL_MS_MAX, limit="lock_poll_ms_max")  # fmt: skip


def _grant_answer() -> Schema:
    return _answer({
        "granted": boolean("the owner holds the lock"),
        "token": integer("fencing token (0 while waiting)"),
        "count": integer("reentrancy count"),
        "waiter_id": integer("the queued wait (poll /v1/locks/wait with it)"),
        "lock_revision": integer(),
    }, "granted, or still queued after the poll bound")  # fmt: skip


def _acquire_body(limits: LockLimits, election: bool = False) -> Schema:
    props: dict[str, Schema] = {
        **_names(limits),
        "owner": _owner(limits),
        "lease": integer("the holder's lease: the lock is released when it ends", minimum=1),
        "wait_ms": integer("queue at most this long (0: try-lock)",
                           maximum=limits.wait_ms_max, limit="wait_ms_max"),
        "poll_ms": _poll(),
    }  # fmt: skip
    if election:
        props["value"] = _value(limits)
        return obj(props, ("name", "owner", "lease"))
    props.update({
        "type": string("lock type", enum=KINDS[:3]),
        "mode": string("x: exclusive/write, s: shared/read (rw locks)", enum=("x", "s")),
        "permits": integer("semaphore permits", minimum=1,
                           maximum=limits.holders_per_semaphore_max,
                           limit="holders_per_semaphore_max"),
    })  # fmt: skip
    return obj(props, ("name", "owner", "lease"))


def _status_answer() -> Schema:
    return _answer({
        "ns": string(), "name": string(), "held": boolean(), "type": {"type": ["string", "null"]},
        "permits": integer(), "holders": {"type": "array"}, "waiters": {"type": "array"},
        "delayed": boolean(), "changed_revision": integer(), "lock_revision": integer(),
    }, "holders (owner, lease, mode, count, token, value) and FIFO waiters")  # fmt: skip


def lock_fence_schema(limits: LockLimits | None = None) -> Schema:
    """A txn fence: the txn runs only if ``token`` is a current holder's of the lock
    (else 409 fencing-token-stale, nothing written). Raises nothing."""
    limits = limits or LockLimits()
    return obj({**_names(limits), "token": integer("fencing token", minimum=1)},
               ("name", "token"), "a lock-token guard")  # fmt: skip


def lock_route_specs(limits: LockLimits | None = None) -> list[RouteSpec]:
    """The RouteSpecs of the locks and election routes. Raises nothing."""
    from synod.node.routes import RouteSpec

    limits = limits or LockLimits()
    names = _names(limits)
    lock_errors = (*_WRITE, "lock-wait-timeout", "lock-upgrade-refused")
    grant = _grant_answer()
    ex = {"name": "orders/42", "owner": "worker-1", "lease": 1}
    specs = [
        RouteSpec(
            "lockAcquire", "POST", "/v1/locks/acquire",
            "Acquire a lock; with wait_ms, long-poll until granted (FIFO)",
            grant, lock_errors, body=_acquire_body(limits), session=True,
            example={**ex, "wait_ms": 10_000},
        ),
        RouteSpec(
            "lockWait", "POST", "/v1/locks/wait",
            "Long-poll a queued acquire until granted (409 lock-wait-timeout when gone)",
            grant, (*_READ, "lock-wait-timeout"),
            body=obj({**names, "owner": _owner(limits),
                      "waiter_id": integer("from the acquire answer", minimum=1),
                      "poll_ms": _poll()}, ("name", "owner", "waiter_id")),
            example={"name": "orders/42", "owner": "worker-1", "waiter_id": 1},
        ),
        RouteSpec(
            "lockRelease", "POST", "/v1/locks/release",
            "Release a hold (count down) or leave the queue",
            _answer({"released": boolean(), "cancelled": boolean(), "count": integer(),
                     "lock_revision": integer()}),
            (*_WRITE, "lock-not-held", "fencing-token-stale"),
            body=obj({**names, "owner": _owner(limits),
                      "token": integer("the hold's fencing token (0: unchecked)"),
                      "all": boolean("drop every reentrant count")}, ("name", "owner")),
            session=True, example={"name": "orders/42", "owner": "worker-1", "token": 7},
        ),
        RouteSpec(
            "lockRenew", "POST", "/v1/locks/renew",
            "Renew the holder's lease (on the leader) and confirm the hold",
            _answer({"token": integer(), "ttl_ms": integer(), "count": integer()}),
            (*_WRITE, "lock-not-held"),
            body=obj({**names, "owner": _owner(limits),
                      "lease": integer("the holder's lease", minimum=1)},
                     ("name", "owner", "lease")),
            example=ex,
        ),
        RouteSpec(
            "lockStatus", "POST", "/v1/locks/status", "Holders and waiters of a lock",
            _status_answer(), _READ,
            body=obj({**names, "serializable": boolean("serve from this node")}, ("name",)),
            example={"name": "orders/42"},
        ),
        RouteSpec(
            "lockList", "POST", "/v1/locks/list", "Locks of a namespace (by prefix)",
            _answer({"ns": string(), "locks": {"type": "array"}, "more": boolean(),
                     "count": integer()}),
            _READ,
            body=obj({"ns": names["ns"], "prefix": string("name prefix"),
                      "limit": integer("at most this many (0: list_limit_max)",
                                       maximum=limits.list_limit_max, limit="list_limit_max"),
                      "serializable": boolean("serve from this node")}),
            example={"prefix": "orders/"},
        ),
        RouteSpec(
            "lockValidate", "POST", "/v1/locks/validate",
            "CheckSequencer: is this token a current holder's?",
            _answer({"valid": boolean(), "token": integer(), "lock_revision": integer()}),
            (*_READ, "fencing-token-stale"),
            body=obj({**names, "token": integer("the fencing token", minimum=1)},
                     ("name", "token")),
            example={"name": "orders/42", "token": 7},
        ),
        RouteSpec(
            "lockRevoke", "POST", "/v1/locks/revoke",
            "Admin: drop every holder (or one owner's hold); the token moves on",
            _answer({"revoked": {"type": "array", "items": string()},
                     "lock_revision": integer()}),
            (*_WRITE, "lock-not-held"),
            body=obj({**names, "owner": _owner(limits)}, ("name",)), session=True,
            example={"name": "orders/42"},
        ),
        RouteSpec(
            "lockNamespacePut", "POST", "/v1/locks/namespaces/put",
            "Admin: create or update a lock namespace (idempotent)",
            _answer({"ns": string(), "created": boolean(), "lock_revision": integer()}),
            _WRITE,
            body=obj({"ns": names["ns"],
                      "lock_delay_ms": integer("no grant this long after a holder's lease "
                                               "died", maximum=limits.lock_delay_ms_max,
                                               limit="lock_delay_ms_max"),
                      "locks_max": integer("0: locks_per_namespace_max",
                                           maximum=limits.locks_per_namespace_max,
                                           limit="locks_per_namespace_max"),
                      "waiters_per_lock_max": integer(
                          "0: waiters_per_lock_max", maximum=limits.waiters_per_lock_max,
                          limit="waiters_per_lock_max")}, ("ns",)),
            session=True, example={"ns": "jobs", "lock_delay_ms": 1_000},
        ),
        RouteSpec(
            "lockNamespaceDelete", "POST", "/v1/locks/namespaces/delete",
            "Admin: delete a lock namespace (its holders are released)",
            _answer({"ns": string(), "released": integer(), "lock_revision": integer()}),
            _WRITE, body=obj({"ns": names["ns"]}, ("ns",)), session=True,
            example={"ns": "jobs"},
        ),
        RouteSpec(
            "electionCampaign", "POST", "/v1/election/campaign",
            "Campaign: become the leader (long-poll with wait_ms) with a value",
            grant, (*_WRITE, "lock-wait-timeout"), body=_acquire_body(limits, election=True),
            session=True, example={"name": "scheduler", "owner": "pod-a", "lease": 1,
                                   "value": "http://pod-a:8080", "wait_ms": 30_000},
        ),
        RouteSpec(
            "electionProclaim", "POST", "/v1/election/proclaim",
            "The leader changes its value (fenced by its token)",
            _answer({"token": integer(), "lock_revision": integer()}),
            (*_WRITE, "lock-not-held", "fencing-token-stale"),
            body=obj({**names, "owner": _owner(limits),
                      "token": integer("the leader's token", minimum=1),
                      "value": _value(limits)}, ("name", "owner", "token", "value")),
            session=True,
            example={"name": "scheduler", "owner": "pod-a", "token": 7, "value": "v2"},
        ),
        RouteSpec(
            "electionResign", "POST", "/v1/election/resign",
            "Resign (or stop campaigning)",
            _answer({"released": boolean(), "cancelled": boolean(), "count": integer(),
                     "lock_revision": integer()}),
            (*_WRITE, "lock-not-held", "fencing-token-stale"),
            body=obj({**names, "owner": _owner(limits),
                      "token": integer("the leader's token (0: unchecked)")},
                     ("name", "owner")),
            session=True, example={"name": "scheduler", "owner": "pod-a"},
        ),
        RouteSpec(
            "electionLeader", "POST", "/v1/election/leader",
            "The current leader (owner, token, value), null if none; with after_revision "
            "(the changed_revision seen), long-poll until the leader or its value changes "
            "(observe)",
            _answer({"leader": {"type": ["object", "null"]}, "changed_revision": integer(),
                     "lock_revision": integer()}),
            _READ,
            body=obj({**names,
                      "after_revision": integer("answer when the election's changed_revision "
                                                "differs from this (0: now)"),
                      "poll_ms": _poll()}, ("name",)),
            example={"name": "scheduler"},
        ),
    ]  # fmt: skip
    assert len({spec.operation_id for spec in specs}) == len(specs)
    return specs
