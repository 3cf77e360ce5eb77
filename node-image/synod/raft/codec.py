"""msgpack encoding of the Raft values: peer frames, WAL payloads and snapshot files.

Every value is a msgpack *array* with a fixed field order (no maps, no field
names): a heartbeat is about 15 bytes. Entries inside a message are flattened
into one array of `term, index, kind, data` quadruples, so decoding a batch of
entries allocates one list instead of one per entry.

Only peer frames carry a version byte here (`FRAME_VERSION`); the WAL and the
snapshot files carry their own format version in their headers, so their
payloads use the bare `encode_*`/`decode_*` functions.

Decoding never trusts its input: every field is type- and range-checked, and
any problem raises `CodecError` (a `ValueError`) naming what was wrong. A peer
frame is held to the named bounds below (terms, indexes, node ids, sizes), so
that no value a peer sends can overflow arithmetic or encodings downstream (a
term of 2^64-1 once made every `term + 1` fail and bricked a cluster).
"""

from __future__ import annotations

from typing import Any

import msgpack

from synod.raft.types import (
    LOCAL_MESSAGES,
    NONE,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

FRAME_VERSION = 1
FRAME_BYTES_MAX = 64 * 1024 * 1024  # A frame larger than this is refused, not decoded.
SNAPSHOT_BYTES_MAX = 4 * 1024 * 1024 * 1024  # Bound on a snapshot file's body.
# Bounds of a peer message's fields. Terms and indexes stay exact as JSON numbers
# (doubles: the HTTP API reports them) and far from uint64 overflow when the core
# adds to them; at a million entries a second an index reaches this in 285 years.
TERM_MAX = 2**53 - 1
INDEX_MAX = 2**53 - 1
NODE_ID_MAX = 2**63 - 1  # Fits a signed 64-bit integer (Kubernetes, Prometheus labels).
CONTEXT_BYTES_MAX = 64 * 1024  # ReadIndex / campaign context of one message.
CONF_MEMBERS_MAX = 1024  # Voters plus learners in a snapshot's membership.

_ENTRY_FIELDS = 4
_MESSAGE_FIELDS = 12
_META_FIELDS = 4
_ENTRY_KIND_BY_VALUE = {int(kind): kind for kind in EntryKind}
_MESSAGE_TYPES = frozenset(int(kind) for kind in MessageType)
# LOCAL_* messages never leave a node: one arriving from a peer (a forged
# LOCAL_HUP would force an election) is refused.
_PEER_MESSAGE_TYPES = frozenset(int(kind) for kind in MessageType if kind not in LOCAL_MESSAGES)


class CodecError(ValueError):
    """Bytes that do not decode to the expected value (truncated, corrupt, wrong version)."""


# -- checks ------------------------------------------------------------------
def _uint(value: Any, what: str) -> int:
    """`value` if it is a non-negative integer (bools are refused), else CodecError."""
    if type(value) is not int or value < 0:
        raise CodecError(f"{what}: expected an unsigned integer, got {value!r:.40}")
    return value


def _bounded(value: Any, maximum: int, what: str) -> int:
    """`value` if it is an unsigned integer at most `maximum`, else CodecError."""
    number = _uint(value, what)
    if number > maximum:
        raise CodecError(f"{what}: {number} exceeds the bound {maximum}")
    return number


def _node_id(value: Any, what: str) -> int:
    """A real node id: 1..NODE_ID_MAX. Raises CodecError."""
    node_id = _bounded(value, NODE_ID_MAX, what)
    if node_id == NONE:
        raise CodecError(f"{what}: node id {NONE} is reserved")
    return node_id


def _bytes(value: Any, what: str) -> bytes:
    """`value` if it is a msgpack bin (bytes), else CodecError."""
    if type(value) is not bytes:
        raise CodecError(f"{what}: expected bytes, got {type(value).__name__}")
    return value


def _array(value: Any, length: int | None, what: str) -> list[Any]:
    """`value` if it is an array (of `length` items when given), else CodecError."""
    if type(value) is not list:
        raise CodecError(f"{what}: expected an array, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise CodecError(f"{what}: expected {length} fields, got {len(value)}")
    return value


def _unpack(data: bytes | memoryview, what: str, bytes_max: int = FRAME_BYTES_MAX) -> Any:
    """msgpack-decode `data` completely. Raises CodecError on any malformed input."""
    assert isinstance(data, bytes | bytearray | memoryview), type(data)
    if len(data) > bytes_max:
        raise CodecError(f"{what}: {len(data)} bytes exceeds {bytes_max}")
    try:
        return msgpack.unpackb(data, use_list=True, raw=False, strict_map_key=True)
    except Exception as error:  # msgpack raises many unrelated types on bad input.
        raise CodecError(f"{what}: malformed msgpack: {error}") from error


def _pack(value: Any) -> bytes:
    """msgpack-encode `value` (bytes as bin, never as str)."""
    encoded = msgpack.packb(value, use_bin_type=True)
    assert isinstance(encoded, bytes)
    return encoded


# -- entries -----------------------------------------------------------------
def pack_entries(entries: list[Entry]) -> list[Any]:
    """Entries as one flat array of term, index, kind, data quadruples."""
    flat: list[Any] = []
    for entry in entries:
        flat += (entry.term, entry.index, int(entry.kind), entry.data)
    assert len(flat) == _ENTRY_FIELDS * len(entries)
    return flat


def unpack_entries(flat: Any) -> list[Entry]:
    """Inverse of `pack_entries`. Raises CodecError."""
    flat = _array(flat, None, "entries")
    if len(flat) % _ENTRY_FIELDS:
        raise CodecError(f"entries: {len(flat)} fields is not a multiple of {_ENTRY_FIELDS}")
    entries: list[Entry] = []
    kinds = _ENTRY_KIND_BY_VALUE
    # zip over strided slices: the hot loop of peer traffic, so checks are inlined.
    for term, index, kind, data in zip(flat[0::4], flat[1::4], flat[2::4], flat[3::4], strict=True):
        if not (
            type(term) is int and term >= 0 and type(index) is int and index >= 0
            and type(kind) is int and kind in kinds and type(data) is bytes
        ):  # fmt: skip
            _refuse_entry(term, index, kind, data)
        entries.append(Entry(term, index, kinds[kind], data))
    assert len(entries) * _ENTRY_FIELDS == len(flat)
    return entries


def _refuse_entry(term: Any, index: Any, kind: Any, data: Any) -> None:
    """Raise the CodecError that names what is wrong with an entry's fields."""
    _uint(term, "entry term")
    _uint(index, "entry index")
    if type(kind) is not int or kind not in _ENTRY_KIND_BY_VALUE:
        raise CodecError(f"entry: unknown kind {kind!r:.40}")
    _bytes(data, "entry data")
    raise AssertionError("unreachable: a field of the entry must be wrong")


def encode_entry(entry: Entry) -> bytes:
    """One entry, unversioned (WAL record payload)."""
    assert entry.index >= 0 and entry.term >= 0, entry
    return _pack(pack_entries([entry]))


def decode_entry(data: bytes) -> Entry:
    """Inverse of `encode_entry`. Raises CodecError."""
    entries = unpack_entries(_unpack(data, "entry"))
    if len(entries) != 1:
        raise CodecError(f"entry: expected exactly one, got {len(entries)}")
    return entries[0]


# -- hard state --------------------------------------------------------------
def encode_hard_state(hard_state: HardState) -> bytes:
    """Hard state as [term, vote, commit], unversioned (WAL record payload)."""
    assert hard_state.term >= 0 and hard_state.commit >= 0, hard_state
    return _pack((hard_state.term, hard_state.vote, hard_state.commit))


def decode_hard_state(data: bytes) -> HardState:
    """Inverse of `encode_hard_state`. Raises CodecError."""
    term, vote, commit = _array(_unpack(data, "hard state"), 3, "hard state")
    return HardState(_uint(term, "term"), _uint(vote, "vote"), _uint(commit, "commit"))


# -- snapshots ---------------------------------------------------------------
def pack_snapshot_meta(meta: SnapshotMeta) -> list[Any]:
    """Snapshot metadata as [index, term, voters, learners] (sorted id arrays)."""
    assert meta.index >= 0 and meta.term >= 0, meta
    return [meta.index, meta.term, sorted(meta.conf.voters), sorted(meta.conf.learners)]


def _unpack_ids(value: Any, what: str) -> frozenset[int]:
    """A set of node ids (never NONE). Raises CodecError."""
    ids = frozenset(_uint(node_id, what) for node_id in _array(value, None, what))
    if NONE in ids:
        raise CodecError(f"{what}: node id {NONE} is reserved")
    return ids


def unpack_snapshot_meta(value: Any) -> SnapshotMeta:
    """Inverse of `pack_snapshot_meta`. Raises CodecError."""
    index, term, voters, learners = _array(value, _META_FIELDS, "snapshot meta")
    voter_ids = _unpack_ids(voters, "voters")
    learner_ids = _unpack_ids(learners, "learners")
    if voter_ids & learner_ids:
        raise CodecError(f"snapshot meta: {sorted(voter_ids & learner_ids)} both voter and learner")
    conf = ConfState(voter_ids, learner_ids)
    return SnapshotMeta(_uint(index, "snapshot index"), _uint(term, "snapshot term"), conf)


def encode_snapshot_meta(meta: SnapshotMeta) -> bytes:
    """Snapshot metadata alone, unversioned."""
    return _pack(pack_snapshot_meta(meta))


def decode_snapshot_meta(data: bytes) -> SnapshotMeta:
    """Inverse of `encode_snapshot_meta`. Raises CodecError."""
    return unpack_snapshot_meta(_unpack(data, "snapshot meta"))


def pack_snapshot(snapshot: Snapshot) -> list[Any]:
    """A snapshot as [meta, data]."""
    assert isinstance(snapshot.data, bytes), type(snapshot.data)
    return [pack_snapshot_meta(snapshot.meta), snapshot.data]


def unpack_snapshot(value: Any) -> Snapshot:
    """Inverse of `pack_snapshot`. Raises CodecError."""
    meta, data = _array(value, 2, "snapshot")
    return Snapshot(unpack_snapshot_meta(meta), _bytes(data, "snapshot data"))


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """A whole snapshot, unversioned (snapshot file body)."""
    return _pack(pack_snapshot(snapshot))


def decode_snapshot(data: bytes, bytes_max: int = SNAPSHOT_BYTES_MAX) -> Snapshot:
    """Inverse of `encode_snapshot`. Raises CodecError (also above `bytes_max`)."""
    return unpack_snapshot(_unpack(data, "snapshot", bytes_max))


# -- messages ----------------------------------------------------------------
def pack_message(message: Message) -> tuple[Any, ...]:
    """One message as a 12-field array in `Message` field order."""
    assert message.term <= TERM_MAX and message.index <= INDEX_MAX, message.type
    snapshot = None if message.snapshot is None else pack_snapshot(message.snapshot)
    return (
        int(message.type), message.to, message.source, message.term, message.log_term,
        message.index, pack_entries(message.entries), message.commit, message.reject,
        message.reject_hint, snapshot, message.context,
    )  # fmt: skip


def unpack_message(value: Any) -> Message:
    """Inverse of `pack_message` for a message from a peer. Raises CodecError.

    Beyond the types, every field is held to its bound (TERM_MAX, INDEX_MAX,
    NODE_ID_MAX, CONTEXT_BYTES_MAX, CONF_MEMBERS_MAX), `to` and `source` must be
    real node ids, and LOCAL_* types are refused: they never leave a node.
    """
    (kind, to, source, term, log_term, index, entries, commit, reject, reject_hint, snapshot,
     context) = _array(value, _MESSAGE_FIELDS, "message")  # fmt: skip
    if type(kind) is not int or kind not in _MESSAGE_TYPES:
        raise CodecError(f"message: unknown type {kind!r:.40}")
    if kind not in _PEER_MESSAGE_TYPES:
        raise CodecError(f"message: type {MessageType(kind).name} never leaves a node")
    if type(reject) is not bool:
        raise CodecError(f"message: reject must be a bool, got {type(reject).__name__}")
    context = _bytes(context, "context")
    if len(context) > CONTEXT_BYTES_MAX:
        raise CodecError(f"context: {len(context)} bytes exceeds {CONTEXT_BYTES_MAX}")
    message = Message(
        type=MessageType(kind), to=_node_id(to, "to"), source=_node_id(source, "source"),
        term=_bounded(term, TERM_MAX, "term"), log_term=_bounded(log_term, TERM_MAX, "log term"),
        index=_bounded(index, INDEX_MAX, "index"), entries=unpack_entries(entries),
        commit=_bounded(commit, INDEX_MAX, "commit"), reject=reject,
        reject_hint=_bounded(reject_hint, INDEX_MAX, "reject hint"),
        snapshot=None if snapshot is None else unpack_snapshot(snapshot),
        context=context,
    )  # fmt: skip
    for entry in message.entries:
        if entry.term > TERM_MAX or entry.index > INDEX_MAX:
            raise CodecError(f"entry ({entry.term}, {entry.index}): term or index out of bounds")
    if message.snapshot is not None:
        _check_peer_snapshot_meta(message.snapshot.meta)
    return message


def _check_peer_snapshot_meta(meta: SnapshotMeta) -> None:
    """Hold a snapshot's metadata from a peer to the message bounds. Raises CodecError."""
    _bounded(meta.term, TERM_MAX, "snapshot term")
    _bounded(meta.index, INDEX_MAX, "snapshot index")
    members = meta.conf.members()
    if len(members) > CONF_MEMBERS_MAX:
        raise CodecError(f"snapshot meta: {len(members)} members exceeds {CONF_MEMBERS_MAX}")
    for node_id in members:
        _node_id(node_id, "snapshot member")


def encode_messages(messages: list[Message]) -> bytes:
    """One peer frame: the version byte, then an array of messages."""
    assert isinstance(messages, list), type(messages)
    frame = bytes((FRAME_VERSION,)) + _pack([pack_message(message) for message in messages])
    assert len(frame) > 1
    return frame


def decode_messages(frame: bytes | bytearray | memoryview) -> list[Message]:
    """Inverse of `encode_messages`.

    Raises CodecError on an empty or oversized frame, an unknown version, or
    any malformed or out-of-bounds message (the whole frame is refused: frames
    are atomic).
    """
    if not frame:
        raise CodecError("frame: empty")
    if frame[0] != FRAME_VERSION:
        raise CodecError(f"frame: version {frame[0]} is not {FRAME_VERSION}")
    packed = _array(_unpack(memoryview(frame)[1:], "frame"), None, "frame")
    messages = [unpack_message(value) for value in packed]
    assert len(messages) == len(packed)
    return messages


def message_bytes_bound(message: Message) -> int:
    """An upper bound of `message`'s share of an encoded frame, without encoding it.

    msgpack spends at most 9 bytes on an integer and 5 on a bin header: an entry
    costs at most its data plus 24 bytes (`Entry.size_bytes`), the fixed fields
    and headers of a message at most `_MESSAGE_OVERHEAD_BYTES_MAX`.
    """
    size = _MESSAGE_OVERHEAD_BYTES_MAX + len(message.context)
    for entry in message.entries:
        size += entry.size_bytes()
    if message.snapshot is not None:
        conf = message.snapshot.meta.conf
        size += len(message.snapshot.data) + 64 + 9 * (len(conf.voters) + len(conf.learners))
    return size


# 12 fields of at most 9 bytes, the array headers and a context bin header.
_MESSAGE_OVERHEAD_BYTES_MAX = 12 * 9 + 16
FRAME_OVERHEAD_BYTES_MAX = 1 + 5  # Version byte and the outer array header.
