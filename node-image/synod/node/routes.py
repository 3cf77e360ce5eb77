"""The route table of the client API: one source of truth for the server and its docs.

Each :class:`RouteSpec` names a route (method, path template, operation id), the JSON
Schema of its request body or query, the schema of its success answer and the problem
codes it may answer. :mod:`synod.node.http` registers one handler per spec and
validates requests with these schemas; :mod:`synod.node.openapi` publishes the same
specs as OpenAPI 3.1. The schemas are built from the service limits, so a bound such
as ``key_bytes_max`` appears in the document exactly as it is enforced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from synod.ids.layout import UNIX_MS_MAX, WORKER_BITS_MAX
from synod.ids.snowflake import BATCH_COUNT_MAX
from synod.node.locks_routes import lock_fence_schema, lock_route_specs
from synod.node.ratelimit_routes import ratelimit_route_specs
from synod.node.schema import INT64_MAX, Schema, boolean, integer, obj, string
from synod.services.ids import IdsLimits
from synod.services.limits import SETTABLE_LIMITS_CEILING, ServiceLimits

__all__ = [
    "ENCODINGS",
    "LEASES_LISTED_MAX",
    "URL_BYTES_MAX",
    "RouteSpec",
    "encoding_schema",
    "route_specs",
]

# Leases in one answer of `POST /v1/lease/leases` (leases_max may be larger: `more`).
LEASES_LISTED_MAX = 10_000
# How keys and values travel in JSON: text, or base64 of any bytes (issue 16).
ENCODINGS = ("utf-8", "base64")

# Member URLs are short; the bound keeps a bad admin call from storing megabytes.
URL_BYTES_MAX = 2048

JSON = "application/json"
EVENT_STREAM = "text/event-stream"
NDJSON = "application/x-ndjson"
# Operations in one /v1/batch request (the SDK sends at most this many together), the
# routes they may call, and the per-operation headers they carry (session, trace).
BATCH_OPS_MAX = 64
BATCHABLE_PREFIXES = ("/v1/kv/", "/v1/lease/", "/v1/locks/", "/v1/election/")
BATCH_HEADERS = ("Synod-Client-Id", "Synod-Seq", "Synod-Ack-Seq", "traceparent", "tracestate")
BATCH_HEADER_BYTES_MAX = 512
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
OCTET_STREAM = "application/octet-stream"

# Problem codes every /v1 route may answer (bad input, overload, bugs).
_COMMON_ERRORS = ("invalid-argument", "limit-exceeded", "internal")
# ... and every route that goes through the leader.
# no-leader: nothing was sent; outcome-unknown and timeout: a write may have been applied.
_LEADER_ERRORS = ("not-leader", "no-leader", "outcome-unknown", "timeout")
_WRITE_ERRORS = (*_COMMON_ERRORS, *_LEADER_ERRORS, "too-large", "session-expired")
# ... and every route with a request body (request_body_bytes_max, the read timeout).
_BODY_ERRORS = ("too-large", "request-timeout")
_READ_ERRORS = (*_COMMON_ERRORS, "no-leader", "timeout", "too-large", "future-revision",
                "compacted")  # fmt: skip


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One route of the API and everything the server and the document need of it."""

    operation_id: str
    method: str
    path: str
    summary: str
    response: Schema  # the 200 answer (JSON) or a description of a non-JSON answer
    errors: tuple[str, ...] = ()
    body: Schema | None = None  # JSON request body, validated strictly
    query: Schema | None = None  # query parameters (an object schema of scalars)
    path_params: dict[str, Schema] = field(default_factory=dict)
    session: bool = False  # accepts the Synod-Client-Id / Seq / Ack-Seq headers
    content_type: str = JSON
    example: dict[str, Any] | None = None  # a valid request body or query

    @property
    def all_errors(self) -> tuple[str, ...]:
        """Every problem code of the route, body errors included, without duplicates.

        Raises nothing."""
        extra = _BODY_ERRORS if self.body is not None else ()
        codes = tuple(dict.fromkeys((*self.errors, *extra)))
        assert len(set(codes)) == len(codes)
        return codes

    @property
    def route_id(self) -> str:
        """``"POST /v1/kv/put"``: the metrics label and span name. Raises nothing."""
        return f"{self.method} {self.path}"


# -- shared schemas ----------------------------------------------------------------------


def _key(limits: ServiceLimits, description: str = "the key (non-empty UTF-8)") -> Schema:
    return string(description, min_length=1, bytes_max=limits.key_bytes_max,
                  limit="key_bytes_max")  # fmt: skip


def _range_end(limits: ServiceLimits) -> Schema:
    return string("end of the range [key, range_end); \"\\u0000\" means every key >= key",
                  bytes_max=limits.key_bytes_max, limit="key_bytes_max")  # fmt: skip


def _kv() -> Schema:
    props = {
        "key": string(),
        "value": string(),
        "create_revision": integer(),
        "mod_revision": integer(),
        "version": integer(),
        "lease": integer(),
    }
    return obj(props, tuple(props), "one version of a key")


def _nullable(schema: Schema) -> Schema:
    out = dict(schema)
    out["type"] = [schema["type"], "null"]
    return out


def _array(items: Schema, items_max: int | None = None, limit: str | None = None) -> Schema:
    schema: Schema = {"type": "array", "items": items}
    if items_max is not None:
        schema["maxItems"] = items_max
    if limit is not None:
        schema["x-synod-limit"] = limit
    return schema


def _header() -> Schema:
    props = {name: integer() for name in ("revision", "raft_term", "member_id", "leader_id")}
    return obj(props, tuple(props), "where and when the answer was made")


def _answer(fields: dict[str, Schema], description: str = "") -> Schema:
    """A success answer: ``header`` plus ``fields``, all required."""
    props = {"header": _header(), **fields}
    return obj(props, tuple(props), description)


def _open_answer(fields: dict[str, Schema], description: str) -> Schema:
    """An answer whose members are documented but not closed (node documents)."""
    return {
        "type": "object",
        "properties": {"header": _header(), **fields},
        "required": ["header"],
        "description": description,
    }


def encoding_schema() -> Schema:
    """The ``encoding`` of keys and values in a request and its answer. Raises nothing."""
    return string(
        "utf-8 (default): keys and values are text; base64: they are base64 (RFC 4648) of "
        "any bytes, in the request and in the answer. Size bounds apply to the text sent.",
        enum=ENCODINGS,
    )


def _encoded(properties: dict[str, Schema]) -> dict[str, Schema]:
    """``properties`` plus ``encoding`` (top-level bodies only). Raises nothing."""
    return {**properties, "encoding": encoding_schema()}


def _put_fields(limits: ServiceLimits) -> dict[str, Schema]:
    return {
        "key": _key(limits),
        "value": string(
            "the value (UTF-8)", bytes_max=limits.value_bytes_max, limit="value_bytes_max"
        ),
        "lease": integer("attach to this lease (0: none)"),
        "prev_kv": boolean("answer the previous version"),
    }


def _put_body(limits: ServiceLimits) -> Schema:
    return obj(_put_fields(limits), ("key", "value"))


def _range_fields(limits: ServiceLimits) -> dict[str, Schema]:
    return {
        "key": _key(limits),
        "range_end": _range_end(limits),
        "prefix": boolean("every key that starts with key"),
        "limit": integer(
            "at most this many kvs (0: range_limit_max)",
            maximum=limits.range_limit_max,
            limit="range_limit_max",
        ),
        "revision": integer("read at this revision (0: current)"),
        "keys_only": boolean("answer keys without values"),
        "count_only": boolean("answer only the count"),
    }


def _delete_fields(limits: ServiceLimits) -> dict[str, Schema]:
    return {
        "key": _key(limits),
        "range_end": _range_end(limits),
        "prefix": boolean("every key that starts with key"),
        "prev_kv": boolean("answer the deleted versions"),
    }


def _delete_body(limits: ServiceLimits) -> Schema:
    return obj(_delete_fields(limits), ("key",))


def _compare(limits: ServiceLimits) -> Schema:
    value: Schema = {
        "type": ["string", "integer"],
        "description": "a string for target value, else an integer",
        "maxLength": limits.value_bytes_max,
        "x-maxBytes": limits.value_bytes_max,
        "x-synod-limit": "value_bytes_max",
        "minimum": 0,
    }
    return obj(
        {
            "key": _key(limits),
            "range_end": _range_end(limits),
            "target": string(enum=("value", "version", "create_revision", "mod_revision", "lease")),
            "result": string(enum=("=", "!=", "<", ">")),
            "value": value,
        },
        ("key", "target", "result", "value"),
    )


def _txn_op(limits: ServiceLimits) -> Schema:
    ops = {
        "put": _put_body(limits),
        "delete": _delete_body(limits),
        "range": obj(_range_fields(limits), ("key",)),
    }
    return obj(ops, description="exactly one of put, delete, range", exactly_one=True)


def _txn_response() -> Schema:
    kvs = _array(_kv())
    responses = {
        "put": obj({"prev_kv": _nullable(_kv())}, ("prev_kv",)),
        "delete": obj({"deleted": integer(), "prev_kvs": kvs}, ("deleted", "prev_kvs")),
        "range": obj({"kvs": kvs, "more": boolean(), "count": integer()}, ("kvs", "more", "count")),
    }
    return obj(responses, description="the answer of one txn op", exactly_one=True)


def _id_body(description: str, name: str = "id") -> Schema:
    return obj({name: integer(description, minimum=1)}, (name,))


# -- the table --------------------------------------------------------------------------


def _kv_routes(limits: ServiceLimits) -> list[RouteSpec]:
    kvs = _array(_kv())
    range_answer = _answer({"kvs": kvs, "more": boolean(), "count": integer()})
    txn_ops = _array(_txn_op(limits), limits.ops_per_txn_max, "ops_per_txn_max")
    return [
        RouteSpec(
            "kvPut", "POST", "/v1/kv/put", "Set a key",
            _answer({"prev_kv": _nullable(_kv())}), (*_WRITE_ERRORS, "not-found"),
            body=obj(_encoded(_put_fields(limits)), ("key", "value")), session=True,
            example={"key": "app/config", "value": "v1", "prev_kv": True},
        ),
        RouteSpec(
            "kvRange", "POST", "/v1/kv/range", "Read a key, a range or a prefix",
            range_answer, _READ_ERRORS,
            body=obj(_encoded({**_range_fields(limits),
                      "serializable": boolean("serve from this node without ReadIndex")}),
                     ("key",)),
            example={"key": "app/", "prefix": True, "limit": 10},
        ),
        RouteSpec(
            "kvGet", "GET", "/v1/kv/{key}", "Read one key (404 when absent)",
            range_answer, (*_READ_ERRORS, "not-found"),
            query=obj({"serializable": boolean("serve from this node without ReadIndex"),
                       "revision": integer("read at this revision (0: current)")}),
            path_params={"key": _key(limits)},
            example={"revision": 0, "serializable": False},
        ),
        RouteSpec(
            "kvDelete", "POST", "/v1/kv/delete", "Delete a key, a range or a prefix",
            _answer({"deleted": integer(), "prev_kvs": kvs}), _WRITE_ERRORS,
            body=obj(_encoded(_delete_fields(limits)), ("key",)), session=True,
            example={"key": "app/", "prefix": True},
        ),
        RouteSpec(
            "kvTxn", "POST", "/v1/kv/txn", "Compare, then run success or failure ops atomically",
            _answer({"succeeded": boolean(), "responses": _array(_txn_response())}),
            (*_WRITE_ERRORS, "not-found", "future-revision", "compacted", "fencing-token-stale"),
            body=obj({
                "compare": _array(_compare(limits), limits.compares_per_txn_max,
                                  "compares_per_txn_max"),
                "success": txn_ops,
                "failure": txn_ops,
                "fences": _array(lock_fence_schema(), limits.compares_per_txn_max,
                                 "compares_per_txn_max"),
                "encoding": encoding_schema(),
            }),
            session=True,
            example={
                "compare": [{"key": "k", "target": "version", "result": "=", "value": 0}],
                "success": [{"put": {"key": "k", "value": "first"}}],
                "failure": [{"range": {"key": "k"}}],
            },
        ),
        RouteSpec(
            "kvCompact", "POST", "/v1/kv/compact", "Drop history before a revision",
            _answer({"compact_revision": integer()}),
            (*_WRITE_ERRORS, "future-revision", "compacted"),
            body=obj({"revision": integer("first revision to keep", minimum=1)}, ("revision",)),
            session=True, example={"revision": 1},
        ),
    ]  # fmt: skip


def _lease_routes(limits: ServiceLimits) -> list[RouteSpec]:
    lease_errors = (*_WRITE_ERRORS, "not-found")
    return [
        RouteSpec(
            "leaseGrant", "POST", "/v1/lease/grant", "Grant a lease",
            _answer({"id": integer(), "ttl_ms": integer()}), (*lease_errors, "already-exists"),
            body=obj({
                "ttl_ms": integer("time to live", minimum=limits.lease_ttl_ms_min,
                                  maximum=limits.lease_ttl_ms_max),
                "id": integer("the lease id (0: the cluster picks one)"),
            }, ("ttl_ms",)),
            session=True, example={"ttl_ms": 10_000},
        ),
        RouteSpec(
            "leaseRevoke", "POST", "/v1/lease/revoke", "Revoke a lease and delete its keys",
            _answer({"id": integer(), "keys_deleted": integer()}), lease_errors,
            body=_id_body("the lease id"), session=True, example={"id": 1},
        ),
        RouteSpec(
            "leaseKeepalive", "POST", "/v1/lease/keepalive", "Renew a lease (on the leader)",
            _answer({"id": integer(), "ttl_ms": integer()}), lease_errors,
            body=_id_body("the lease id"), example={"id": 1},
        ),
        RouteSpec(
            "leaseTimeToLive", "POST", "/v1/lease/timetolive", "Remaining time and keys",
            _answer({"id": integer(), "ttl_ms": integer(), "granted_ttl_ms": integer(),
                     "keys": _array(string())}),
            lease_errors, body=_id_body("the lease id"), example={"id": 1},
        ),
        RouteSpec(
            "leaseList", "POST", "/v1/lease/leases", "The live leases, by id",
            _answer({"leases": _array(obj({"id": integer(), "ttl_ms": integer(),
                                           "granted_ttl_ms": integer()},
                                          ("id", "ttl_ms", "granted_ttl_ms"))),
                     "count": integer(), "more": boolean()}),
            (*_COMMON_ERRORS, *_LEADER_ERRORS),
            body=obj({"limit": integer(f"at most this many (default {LEASES_LISTED_MAX})",
                                       minimum=1, maximum=LEASES_LISTED_MAX)}),
            example={"limit": 100},
        ),
    ]  # fmt: skip


def _watch_route(limits: ServiceLimits) -> RouteSpec:
    stream = {
        "type": "string",
        "description": (
            "Server-Sent Events: `event: events` with data {header, events: [{type: "
            "put|delete, kv, prev_kv}]}, `event: progress` with data {header, revision} "
            "while idle, and a final `event: cancel` with data {reason, resume_revision, "
            "message}; resume with start_revision=resume_revision."
        ),
    }
    query = obj({
        "key": _key(limits),
        "range_end": _range_end(limits),
        "prefix": boolean("every key that starts with key"),
        "start_revision": integer("first revision to deliver (0: from now)"),
        "encoding": encoding_schema(),
    }, ("key",))  # fmt: skip
    return RouteSpec(
        "watch", "GET", "/v1/watch", "Stream changes of a key, range or prefix",
        stream, (*_COMMON_ERRORS, "too-large", "compacted", "future-revision"),
        query=query, content_type=EVENT_STREAM, example={"key": "app/", "prefix": True},
    )  # fmt: skip


def _admin_routes() -> list[RouteSpec]:
    errors = (*_COMMON_ERRORS, *_LEADER_ERRORS, "too-large")
    change_errors = (*errors, "conf-change-pending", "conf-change-invalid")
    done = _open_answer({}, "what the node did (`changed`; a no-op also says why in "
                        "`message`)")  # fmt: skip
    return [
        RouteSpec(
            "adminAddLearner", "POST", "/v1/admin/members/add-learner", "Add a learner",
            done, change_errors,
            body=obj({"id": integer("member id", minimum=1),
                      "peer_url": string("the peer listener, HOST:PORT", min_length=1,
                                         bytes_max=URL_BYTES_MAX, limit="url_bytes_max"),
                      "client_url": string("the client API, http(s)://HOST:PORT",
                                           bytes_max=URL_BYTES_MAX, limit="url_bytes_max")},
                     ("id", "peer_url")),
            example={"id": 4, "peer_url": "127.0.0.1:2680", "client_url": "http://127.0.0.1:2679"},
        ),
        RouteSpec(
            "adminPromote", "POST", "/v1/admin/members/promote", "Promote a learner to voter",
            done, (*change_errors, "not-found", "not-caught-up"), body=_id_body("member id"),
            example={"id": 4},
        ),
        RouteSpec(
            "adminRemove", "POST", "/v1/admin/members/remove", "Remove a member",
            done, change_errors, body=_id_body("member id"), example={"id": 4},
        ),
        RouteSpec(
            "adminTransferLeadership", "POST", "/v1/admin/leadership/transfer",
            "Transfer leadership (to the most caught-up voter without `to`)", done,
            (*errors, "transfer-invalid"),
            body=obj({"to": integer("member id", minimum=1)}), example={"to": 2},
        ),
        RouteSpec(
            "adminSetLimits", "POST", "/v1/admin/limits",
            "Change settable replicated bounds through the log (every member applies the "
            "change at the same index; lowering a count below what is stored is refused)",
            _answer({"limits": _settable_limits()}), (*_WRITE_ERRORS,),
            body={**_settable_limits(), "minProperties": 1}, example={"keys_max": 2_000_000},
        ),
        RouteSpec(
            "adminSnapshot", "POST", "/v1/admin/snapshot",
            "The leader takes a snapshot now (followers forward it)",
            _open_answer({"snapshot_index": integer()}, "the snapshot taken"), errors,
            body=obj({}), example={},
        ),
    ]  # fmt: skip


def _settable_limits() -> Schema:
    return obj({
        name: integer(f"replicated bound {name}", minimum=1, maximum=ceiling)
        for name, ceiling in SETTABLE_LIMITS_CEILING.items()
    })  # fmt: skip


def _gossip_summary() -> Schema:
    states = ("alive", "suspect", "dead", "left")
    counts = obj({s: integer() for s in states}, states, "known members by gossip state")
    props = {"self": string(), "health_score": integer(), "members": counts}
    return obj(props, tuple(props), "gossip summary (null when gossip is off)")


def _gossip_members() -> Schema:
    states = ("alive", "suspect", "dead", "left")
    member = obj(
        {
            "name": string("the member id (decimal)"),
            "address": string("its gossip host:port"),
            "state": string(enum=states),
            "incarnation": integer(),
            "client_url": string(),
            "zone": string(),
            "services": _array(string()),
            "state_changed_ms": integer("when it entered this state (ms on this member)"),
        },
        ("name", "address", "state", "incarnation", "client_url", "zone", "services",
         "state_changed_ms"),
    )  # fmt: skip
    return _answer(
        {
            "enabled": boolean("false when this member runs without --listen-gossip"),
            "self": _nullable(string("this member's gossip name")),
            "health_score": integer("Lifeguard local health score (0 healthy)"),
            "members": _array(member),
        },
        "every member this one knows by gossip, dead and left included",
    )


def _cluster_routes() -> list[RouteSpec]:
    nullable_int, nullable_str = {"type": ["integer", "null"]}, {"type": ["string", "null"]}
    member = {
        "type": "object",
        "properties": {
            "id": integer(),
            "role": string(enum=("voter", "learner")),
            "peer_url": nullable_str,
            "client_url": nullable_str,
            "match_index": nullable_int,
            "last_contact_ms": nullable_int,
            "healthy": boolean(),
        },
    }
    status = _open_answer(
        {
            "member_id": integer(),
            "role": string(),
            "term": integer(),
            "leader_id": integer(),
            "leader_client_url": nullable_str,
            "commit_index": integer(),
            "applied_index": integer(),
            "last_index": integer(),
            "snapshot_index": integer(),
            "limits": _settable_limits(),
            "members": _array(member),
            "gossip": _nullable(_gossip_summary()),
        },
        "this member's view of the cluster (match_index and last_contact_ms are known "
        "on the leader)",
    )
    text = {"type": "string", "description": "Prometheus text exposition format 0.0.4"}
    return [
        RouteSpec(
            "sessionOpen", "POST", "/v1/session/open", "Open an exactly-once session",
            _answer({"client_id": integer()}), (*_WRITE_ERRORS,),
            body=obj({}), example={},
        ),
        RouteSpec(
            "sessionClose", "POST", "/v1/session/close",
            "Close a session (its cached answers are dropped; later writes in it answer "
            "session-expired)",
            _answer({"client_id": integer()}), _WRITE_ERRORS,
            body=_id_body("the session to close", "client_id"), example={"client_id": 17},
        ),
        RouteSpec("clusterStatus", "GET", "/v1/cluster/status", "Role, term, leader, members",
                  status, _COMMON_ERRORS),
        RouteSpec("clusterMembers", "GET", "/v1/cluster/members",
                  "This member's gossip view (enabled false and no members when gossip is "
                  "off)", _gossip_members(), _COMMON_ERRORS),
        RouteSpec("healthz", "GET", "/healthz", "200 while the Raft loop turns",
                  obj({"status": string(enum=("ok",)), "reason": string()},
                      ("status", "reason")),
                  ("unhealthy",)),
        RouteSpec("readyz", "GET", "/readyz", "200 when a leader is known and caught up",
                  obj({"ready": boolean(), "reason": string()}, ("ready", "reason")),
                  ("not-ready",)),
        RouteSpec("metrics", "GET", "/metrics", "Prometheus metrics", text,
                  content_type=PROMETHEUS_TEXT),
        RouteSpec("snapshotFile", "GET", "/v1/admin/snapshot/file",
                  "This member's newest snapshot file (`synod snapshot save`)",
                  {"type": "string", "description": "the snapshot file (docs/cli.md); "
                   "headers Synod-Snapshot-Index and Synod-Snapshot-Term"},
                  ("not-found",), content_type=OCTET_STREAM),
        RouteSpec("openapi", "GET", "/v1/openapi.json", "This document",
                  {"type": "object", "description": "OpenAPI 3.1"}),
    ]  # fmt: skip


def batchable(spec: RouteSpec) -> bool:
    """True if ``spec`` may run inside a `/v1/batch`. Raises nothing."""
    return (spec.method == "POST" and spec.body is not None and not spec.path_params
            and spec.path.startswith(BATCHABLE_PREFIXES))  # fmt: skip


def _batch_route(specs: tuple[RouteSpec, ...]) -> RouteSpec:
    """/v1/batch: independent operations in one request, answered as NDJSON lines. Each
    operation is ``{"call": {<route path>: <that route's body>}, "headers": {...}}``."""
    calls = {spec.path: spec.body for spec in specs if batchable(spec) and spec.body}
    call = obj(calls, description="exactly one route path with its own request body",
               exactly_one=True)  # fmt: skip
    headers = obj({name: string(bytes_max=BATCH_HEADER_BYTES_MAX) for name in BATCH_HEADERS})
    op = obj({"call": call, "headers": headers}, ("call",))
    ops = {"type": "array", "items": op, "minItems": 1, "maxItems": BATCH_OPS_MAX,
           "x-synod-limit": "batch_ops_max"}  # fmt: skip
    answer = {"type": "string", "description": (
        'one JSON line per operation, in completion order: {"i": index, "status": '
        "HTTP status, \"body\": the operation's answer or problem document}")}  # fmt: skip
    return RouteSpec(
        "batch", "POST", "/v1/batch", "Run independent operations in one request", answer,
        _COMMON_ERRORS, body=obj({"ops": ops}, ("ops",)), content_type=NDJSON,
        example={"ops": [{"call": {"/v1/kv/range": {"key": "a"}}}]},
    )  # fmt: skip


def _ids_routes(limits: ServiceLimits) -> list[RouteSpec]:
    """/v1/ids: generators (snowflake), their worker leases, segments, decoding."""
    ids_limits = IdsLimits()
    name = {"generator": string("generator name ([A-Za-z0-9][A-Za-z0-9._-]{0,127})",
                                min_length=1, bytes_max=128)}  # fmt: skip
    tag = {"tag": string("segment tag ([A-Za-z0-9][A-Za-z0-9._-]{0,127})", min_length=1,
                         bytes_max=128)}  # fmt: skip
    definition = obj(
        {
            "name": string(),
            "time_bits": integer(),
            "worker_bits": integer(),
            "sequence_bits": integer(),
            "epoch_ms": integer(),
            "worker_min": integer(),
            "worker_max": integer(),
        },
        (
            "name",
            "time_bits",
            "worker_bits",
            "sequence_bits",
            "epoch_ms",
            "worker_min",
            "worker_max",
        ),
        "a generator's layout and worker-id range",
    )
    listed = obj(
        {**definition["properties"], "workers_leased": integer(), "hwm_ms": integer()},
        (*definition["required"], "workers_leased", "hwm_ms"),
        "a generator",
    )
    worker_item = obj(
        {"worker": integer(), "epoch": integer(), "lease": integer(), "hwm_ms": integer()},
        ("worker", "epoch", "lease", "hwm_ms"),
    )
    tag_item = obj({"tag": string(), "max_id": integer()}, ("tag", "max_id"))
    grant = {
        "generator": string(),
        "worker": integer(),
        "epoch": integer(),
        "lease": integer(),
        "floor_ms": integer(),
        "ceiling_ms": integer(),
        "ttl_ms": integer(),
        "layout": definition,
    }
    worker = integer("worker id", maximum=2**WORKER_BITS_MAX)
    epoch = integer("fencing epoch of the grant", minimum=1)
    reserve = integer(
        "time reservation: the caller's wall clock (unix ms) plus the TTL", maximum=UNIX_MS_MAX
    )
    gen_errors = (*_WRITE_ERRORS, "generator-not-found")
    bits = integer("bits", minimum=1, maximum=63)
    return [
        RouteSpec(
            "idsList", "GET", "/v1/ids", "Every generator and segment tag",
            _answer({"generators": _array(listed, ids_limits.list_items_max, "list_items_max"),
                     "tags": _array(tag_item, ids_limits.list_items_max, "list_items_max")}),
            (*_READ_ERRORS,),
        ),
        RouteSpec(
            "idsDefine", "POST", "/v1/ids/{generator}", "Define a snowflake generator "
            "(idempotent for the same definition)",
            _answer({"generator": definition, "created": boolean()}),
            (*_WRITE_ERRORS, "already-exists"),
            body=obj({"time_bits": bits, "worker_bits": integer(
                          "bits", minimum=1, maximum=WORKER_BITS_MAX),
                      "sequence_bits": bits,
                      "epoch_ms": integer("unix ms", maximum=UNIX_MS_MAX),
                      "worker_min": worker, "worker_max": worker}),
            path_params=name, session=True,
            example={"time_bits": 41, "worker_bits": 10, "sequence_bits": 12},
        ),
        RouteSpec(
            "idsGet", "GET", "/v1/ids/{generator}", "A generator and its live worker leases",
            _answer({"generator": definition, "workers": _array(worker_item)}),
            (*_READ_ERRORS, "generator-not-found"), path_params=name,
        ),
        RouteSpec(
            "idsNext", "POST", "/v1/ids/{generator}/next",
            "Issue IDs from this node's own leased worker (count for a batch)",
            _answer({"ids": _array(integer(), BATCH_COUNT_MAX, "batch_count_max"),
                     "worker": integer(), "epoch": integer()}),
            (*gen_errors, "not-found", "worker-lease-lost", "clock-rollback"),
            body=obj({"count": integer("how many IDs", minimum=1, maximum=BATCH_COUNT_MAX,
                                       limit="batch_count_max")}),
            path_params=name, example={"count": 1000},
        ),
        RouteSpec(
            "idsDecode", "GET", "/v1/ids/{generator}/decode",
            "The time, worker and sequence of an ID of the generator",
            _answer({"id": integer(), "timestamp_ms": integer(), "worker": integer(),
                     "sequence": integer()}),
            (*_READ_ERRORS, "generator-not-found"),
            query=obj({"id": integer("the ID")}, ("id",)), path_params=name,
            example={"id": 1234567890123456789},
        ),
        RouteSpec(
            "idsWorkerAcquire", "POST", "/v1/ids/{generator}/workers/acquire",
            "Lease a worker id (for an embedded generator), bound to a new Synod lease",
            _answer(grant), (*gen_errors, "worker-lease-lost"),
            body=obj({"ttl_ms": integer("TTL of the Synod lease", minimum=limits.lease_ttl_ms_min,
                                        maximum=limits.lease_ttl_ms_max),
                      "reserve_ms": reserve}, ("ttl_ms", "reserve_ms")),
            path_params=name, example={"ttl_ms": 10_000, "reserve_ms": 1_800_000_010_000},
        ),
        RouteSpec(
            "idsWorkerRenew", "POST", "/v1/ids/{generator}/workers/renew",
            "Keep a worker lease alive and raise its high-water mark",
            _answer(grant), (*gen_errors, "not-found", "worker-lease-lost"),
            body=obj({"worker": worker, "epoch": epoch, "lease": integer(minimum=1),
                      "reserve_ms": reserve}, ("worker", "epoch", "lease", "reserve_ms")),
            path_params=name,
            example={"worker": 0, "epoch": 1, "lease": 1, "reserve_ms": 1_800_000_010_000},
        ),
        RouteSpec(
            "idsWorkerRelease", "POST", "/v1/ids/{generator}/workers/release",
            "Give a worker id back (and revoke its Synod lease)",
            _answer({"generator": string(), "worker": integer(), "released": boolean()}),
            (*gen_errors, "not-found", "worker-lease-lost"),
            body=obj({"worker": worker, "epoch": epoch, "lease": integer(minimum=1)},
                     ("worker", "epoch", "lease")),
            path_params=name, example={"worker": 0, "epoch": 1, "lease": 1},
        ),
        RouteSpec(
            "idsSegment", "POST", "/v1/ids/{tag}/segment",
            "Take a segment [start, end] of a tag's dense IDs (segment mode)",
            _answer({"tag": string(), "start": integer(), "end": integer()}),
            _WRITE_ERRORS,
            body=obj({"step": integer("IDs in the segment", minimum=ids_limits.segment_step_min,
                                      maximum=ids_limits.segment_step_max,
                                      limit="segment_step_max")}, ("step",)),
            path_params=tag, session=True, example={"step": 1000},
        ),
    ]  # fmt: skip


def route_specs(limits: ServiceLimits | None = None) -> tuple[RouteSpec, ...]:
    """Every route of the client API, with schemas sized by ``limits``. Raises nothing."""
    limits = limits or ServiceLimits()
    specs = (*_kv_routes(limits), *_lease_routes(limits), _watch_route(limits),
             *_admin_routes(), *_cluster_routes(), *lock_route_specs(),
             *_ids_routes(limits), *ratelimit_route_specs())  # fmt: skip
    specs = (*specs, _batch_route(specs))
    assert len({spec.operation_id for spec in specs}) == len(specs)
    assert len({spec.route_id for spec in specs}) == len(specs)
    assert all(spec.example is None or spec.body or spec.query for spec in specs)
    assert limits.range_limit_max < INT64_MAX
    return specs
