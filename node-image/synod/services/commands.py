"""The replicated command envelope, op builders and strict field readers.

A command is the msgpack encoding of the map::

    {"c": client_id, "s": seq, "a": ack_seq, "op": {"kind": <str>, ...fields}}

``client_id`` 0 means "no session" (the op is not de-duplicated); otherwise it is an id
returned by a ``session_open`` op, ``seq`` (>= 1) numbers the client's requests and
``ack_seq`` says the client has received every response with a sequence number below
it, so the replicas may drop those cached responses. ``ack_seq <= seq`` always holds.

Byte fields (keys, values, range ends) are msgpack *bin*, text fields are msgpack *str*.
The op builders below are the reference for every op format; the decoder is strict:
unknown envelope keys, unknown op fields and wrong types are ``InvalidArgument``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from synod.services.errors import InvalidArgument, TooLarge

__all__ = [
    "COMMAND_BYTES_MAX",
    "INT64_MAX",
    "Command",
    "compact_op",
    "compare",
    "decode_command",
    "delete_op",
    "encode_command",
    "lease_expire_op",
    "lease_grant_op",
    "lease_revoke_op",
    "limits_set_op",
    "put_op",
    "range_op",
    "read_bool",
    "read_bytes",
    "read_int",
    "read_list",
    "read_str",
    "require_fields",
    "session_close_op",
    "session_open_op",
    "txn_op",
]

# Largest command the state machine accepts; keeps one log entry bounded.
COMMAND_BYTES_MAX = 4 * 1024 * 1024
# Revisions, ids and sequence numbers are signed 64-bit like etcd's, so any client
# language can hold them.
INT64_MAX = 2**63 - 1

Op = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Command:
    """A decoded envelope: session fields plus the op map (with a str ``kind``)."""

    client_id: int
    seq: int
    ack_seq: int
    op: Op

    @property
    def kind(self) -> str:
        """The op kind, e.g. ``"put"``. Raises nothing (checked by the decoder)."""
        kind = self.op["kind"]
        assert isinstance(kind, str)
        return kind


def encode_command(op: Op, client_id: int = 0, seq: int = 0, ack_seq: int = 0) -> bytes:
    """Encode ``op`` in the envelope; the inverse of :func:`decode_command`.

    Raises InvalidArgument if the session fields are inconsistent, TypeError if ``op``
    holds something msgpack cannot encode.
    """
    _check_session_fields(client_id, seq, ack_seq)
    assert isinstance(op.get("kind"), str), "an op needs a str kind"
    data = msgpack.packb({"c": client_id, "s": seq, "a": ack_seq, "op": op}, use_bin_type=True)
    assert isinstance(data, bytes)
    return data


def decode_command(data: bytes, command_bytes_max: int = COMMAND_BYTES_MAX) -> Command:
    """Decode and validate an envelope.

    Raises TooLarge if ``data`` exceeds ``command_bytes_max``; InvalidArgument if it is
    not a well-formed envelope (bad msgpack, trailing bytes, wrong types, unknown keys).
    """
    assert command_bytes_max > 0
    if len(data) > command_bytes_max:
        raise TooLarge(
            f"command of {len(data)} bytes exceeds {command_bytes_max}",
            limit="command_bytes_max",
            max=command_bytes_max,
        )
    try:
        envelope = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises many unrelated types; all mean "malformed"
        raise InvalidArgument(f"command is not valid msgpack: {type(exc).__name__}") from None
    if not isinstance(envelope, dict):
        raise InvalidArgument("command must be a msgpack map")
    require_fields(envelope, required=("op",), optional=("c", "s", "a"), what="envelope")
    client_id = read_int(envelope, "c", default=0)
    seq = read_int(envelope, "s", default=0)
    ack_seq = read_int(envelope, "a", default=0)
    _check_session_fields(client_id, seq, ack_seq)
    op = envelope["op"]
    if not isinstance(op, dict) or not isinstance(op.get("kind"), str):
        raise InvalidArgument("op must be a map with a str 'kind'")
    return Command(client_id=client_id, seq=seq, ack_seq=ack_seq, op=op)


def _check_session_fields(client_id: int, seq: int, ack_seq: int) -> None:
    """Check the envelope's session numbers. Raises InvalidArgument."""
    for name, value in (("c", client_id), ("s", seq), ("a", ack_seq)):
        if not 0 <= value <= INT64_MAX:
            raise InvalidArgument(f"envelope field {name!r} must be in [0, 2^63-1]")
    if client_id != 0 and seq < 1:
        raise InvalidArgument("a session command needs seq >= 1")
    if ack_seq > seq:
        raise InvalidArgument("ack_seq must not exceed seq: a client cannot ack the future")


# -- strict field readers ------------------------------------------------------------


def require_fields(
    op: dict[str, Any],
    required: tuple[str, ...],
    optional: tuple[str, ...] = (),
    what: str = "op",
) -> None:
    """Check ``op`` has every required field and nothing unknown.

    ``kind`` is always allowed. Raises InvalidArgument naming the first offender.
    """
    assert not set(required) & set(optional)
    for name in required:
        if name not in op:
            raise InvalidArgument(f"{what} is missing field {name!r}")
    allowed = {"kind", *required, *optional}
    if op.keys() <= allowed:
        return  # the common case, without sorting (sorted only to name an offender)
    for name in sorted(op, key=str):
        if name not in allowed:
            raise InvalidArgument(f"{what} has unknown field {name!r}")


def read_int(
    op: dict[str, Any],
    name: str,
    default: int | None = None,
    minimum: int = 0,
    maximum: int = INT64_MAX,
) -> int:
    """Read an int field in ``[minimum, maximum]`` (bools are rejected).

    Raises InvalidArgument if missing without default, of the wrong type or out of range.
    """
    assert minimum <= maximum
    value = op.get(name, default)
    if value is None:
        raise InvalidArgument(f"field {name!r} is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"field {name!r} must be an integer")
    if not minimum <= value <= maximum:
        raise InvalidArgument(f"field {name!r} must be in [{minimum}, {maximum}]")
    return value


def read_bytes(op: dict[str, Any], name: str, default: bytes | None = None) -> bytes:
    """Read a msgpack-bin field. Raises InvalidArgument if missing or not bytes."""
    value = op.get(name, default)
    if value is None:
        raise InvalidArgument(f"field {name!r} is required")
    if not isinstance(value, bytes):
        raise InvalidArgument(f"field {name!r} must be bytes (msgpack bin)")
    return value


def read_bool(op: dict[str, Any], name: str, default: bool = False) -> bool:
    """Read a bool field. Raises InvalidArgument if present and not a bool."""
    value = op.get(name, default)
    if not isinstance(value, bool):
        raise InvalidArgument(f"field {name!r} must be a boolean")
    return value


def read_str(op: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    """Read a str field that must be one of ``choices``. Raises InvalidArgument."""
    assert choices
    value = op.get(name)
    if not isinstance(value, str) or value not in choices:
        raise InvalidArgument(f"field {name!r} must be one of {list(choices)}")
    return value


def read_list(op: dict[str, Any], name: str, items_max: int, limit_name: str) -> list[Any]:
    """Read a list field of at most ``items_max`` items (missing means empty).

    Raises InvalidArgument if not a list, TooLarge if it has more than ``items_max`` items.
    """
    assert items_max >= 0
    value = op.get(name, [])
    if not isinstance(value, list):
        raise InvalidArgument(f"field {name!r} must be a list")
    if len(value) > items_max:
        raise TooLarge(
            f"field {name!r} has {len(value)} items, more than {limit_name}={items_max}",
            limit=limit_name,
            max=items_max,
        )
    return value


# -- op builders (the reference for op formats) ---------------------------------------


def put_op(key: bytes, value: bytes, lease: int = 0, prev_kv: bool = False) -> Op:
    """``put``: set ``key`` to ``value``, attached to ``lease`` (0 = none). Raises nothing."""
    assert isinstance(key, bytes) and isinstance(value, bytes)
    return {"kind": "put", "key": key, "value": value, "lease": lease, "prev_kv": prev_kv}


def delete_op(
    key: bytes, range_end: bytes = b"", prefix: bool = False, prev_kv: bool = False
) -> Op:
    """``delete``: delete ``key``, or ``[key, range_end)``, or every key with prefix ``key``.

    Raises nothing.
    """
    assert isinstance(key, bytes) and not (prefix and range_end)
    return {"kind": "delete", "key": key, "range_end": range_end, "prefix": prefix,
            "prev_kv": prev_kv}  # fmt: skip


def range_op(
    key: bytes,
    range_end: bytes = b"",
    *,
    prefix: bool = False,
    limit: int = 0,
    revision: int = 0,
    keys_only: bool = False,
    count_only: bool = False,
) -> Op:
    """``range``: read ``key`` / ``[key, range_end)`` / prefix at ``revision`` (0 = now).

    ``range_end == b"\\0"`` means every key >= ``key``. ``limit`` 0 means the server's
    ``range_limit_max``. Raises nothing.
    """
    assert isinstance(key, bytes) and not (prefix and range_end)
    return {
        "kind": "range",
        "key": key,
        "range_end": range_end,
        "prefix": prefix,
        "limit": limit,
        "revision": revision,
        "keys_only": keys_only,
        "count_only": count_only,
    }


def compare(key: bytes, target: str, result: str, value: bytes | int, range_end: bytes = b"") -> Op:
    """A txn compare: ``target`` in value/version/create_revision/mod_revision/lease,
    ``result`` in ``=``, ``!=``, ``<``, ``>``; ``value`` is bytes for target value, else int.

    Raises nothing.
    """
    assert target in ("value", "version", "create_revision", "mod_revision", "lease")
    assert result in ("=", "!=", "<", ">")
    return {"key": key, "range_end": range_end, "target": target, "result": result,
            "value": value}  # fmt: skip


def txn_op(compares: list[Op], success: list[Op], failure: list[Op] | None = None) -> Op:
    """``txn``: if every compare holds run ``success`` ops else ``failure`` ops (put,
    delete, range), atomically in one revision. Raises nothing."""
    assert all(op.get("kind") in ("put", "delete", "range") for op in success)
    return {"kind": "txn", "compare": compares, "success": success, "failure": failure or []}


def compact_op(revision: int) -> Op:
    """``compact``: drop history before ``revision``. Raises nothing."""
    assert revision >= 0
    return {"kind": "compact", "revision": revision}


def lease_grant_op(ttl_ms: int, lease_id: int = 0, pick: int = 0) -> Op:
    """``lease_grant``: grant a lease of ``ttl_ms``; ``lease_id`` 0 lets the cluster pick
    one: ``pick`` (a random id in [1, INT64_MAX] the proposing leader drew, written in the
    log so every replica takes the same; the next free one after it on a collision), or
    without it the next sequential id (entries written before ids were random).
    Raises nothing."""
    assert ttl_ms > 0 and lease_id >= 0 and 0 <= pick <= INT64_MAX
    op: Op = {"kind": "lease_grant", "id": lease_id, "ttl_ms": ttl_ms}
    if pick:
        op["pick"] = pick
    return op


def lease_revoke_op(lease_id: int) -> Op:
    """``lease_revoke``: revoke a lease and delete its keys. Raises nothing."""
    assert lease_id > 0
    return {"kind": "lease_revoke", "id": lease_id}


def lease_expire_op(lease_ids: list[int]) -> Op:
    """``lease_expire``: proposed by the leader's LeaseClock; revokes the (still live)
    leases among ``lease_ids``. Raises nothing."""
    assert all(lease_id > 0 for lease_id in lease_ids)
    return {"kind": "lease_expire", "ids": sorted(lease_ids)}


def limits_set_op(changes: dict[str, int]) -> Op:
    """``limits_set``: change settable replicated bounds (see
    `synod.services.limits.SETTABLE_LIMITS_CEILING`); the result's ``limits`` holds them
    all as applied. Raises nothing."""
    assert changes and all(isinstance(name, str) for name in changes)
    return {"kind": "limits_set", "limits": dict(changes)}


def session_open_op(nonce: bytes = b"") -> Op:
    """``session_open`` (sent with client_id 0): the result's ``client_id`` is the new
    session's id (the log index of this command). ``nonce`` (at most 64 bytes) makes
    the entry unique so that the proposing node can tell its own open from another
    client's. Raises nothing."""
    assert len(nonce) <= 64
    return {"kind": "session_open", "nonce": nonce} if nonce else {"kind": "session_open"}


def session_close_op() -> Op:
    """``session_close`` (sent with the session's client_id): forget the session.

    Raises nothing."""
    return {"kind": "session_close"}
