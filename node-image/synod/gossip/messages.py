"""The gossip wire messages and their msgpack codec.

A datagram is a concatenation of msgpack values: the format version, the sender's
name, the number of messages, then each message as a msgpack array whose first item
is its type. Concatenating pre-encoded messages lets the broadcast queue know each
piggybacked message's size before it packs a datagram (memberlist's compound message).

Decoding never trusts its input: every field is type- and range-checked and any
problem raises `CodecError` (a ValueError) naming it; a datagram over
`DATAGRAM_BYTES_MAX` is refused before it is parsed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import msgpack

from synod.gossip.state import (
    ADDRESS_BYTES_MAX,
    INCARNATION_MAX,
    NAME_BYTES_MAX,
    MemberState,
    Meta,
)

WIRE_VERSION = 1
DATAGRAM_BYTES_MAX = 64 * 1024  # The largest UDP payload; the settings' budgets are below it.
MESSAGES_PER_DATAGRAM_MAX = 512
STATES_PER_PUSH_PULL_MAX = 4096
SEQ_MAX = 2**63 - 1


class CodecError(ValueError):
    """A datagram or message that is malformed or out of bounds."""


class MessageType(enum.IntEnum):
    """Message type tags (on the wire)."""

    PING = 1
    PING_REQ = 2
    ACK = 3
    NACK = 4
    ALIVE = 5
    SUSPECT = 6
    DEAD = 7
    PUSH_PULL = 8


@dataclass(frozen=True, slots=True)
class Ping:
    """A direct probe; `target` guards against a ping reaching a reused address."""

    seq: int
    target: str
    source: str
    source_address: str


@dataclass(frozen=True, slots=True)
class PingReq:
    """Ask the receiver to probe `target` for us (an indirect probe)."""

    seq: int
    target: str
    target_address: str
    source: str
    source_address: str
    nack: bool


@dataclass(frozen=True, slots=True)
class Ack:
    """Answer to a ping (or a relayed answer to a ping-req)."""

    seq: int
    source: str


@dataclass(frozen=True, slots=True)
class Nack:
    """A relay could not reach the target in time (Lifeguard: the relay is alive)."""

    seq: int
    source: str


@dataclass(frozen=True, slots=True)
class Alive:
    """`name` is alive at `incarnation` (also how a member refutes a suspicion)."""

    incarnation: int
    name: str
    address: str
    meta: Meta


@dataclass(frozen=True, slots=True)
class Suspect:
    """`source` suspects `name` at `incarnation`."""

    incarnation: int
    name: str
    source: str


@dataclass(frozen=True, slots=True)
class Dead:
    """`source` declares `name` dead at `incarnation` (`source == name`: it left)."""

    incarnation: int
    name: str
    source: str


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """One row of a push-pull full-state exchange."""

    name: str
    address: str
    incarnation: int
    state: MemberState
    meta: Meta


@dataclass(frozen=True, slots=True)
class PushPull:
    """A full-state exchange: the sender's whole member table."""

    join: bool
    reply: bool
    records: tuple[MemberRecord, ...]


Message = Ping | PingReq | Ack | Nack | Alive | Suspect | Dead | PushPull


def _meta_fields(meta: Meta) -> list[Any]:
    return [meta.client_url, meta.zone, list(meta.services)]


def message_fields(message: Message) -> list[Any]:
    """The msgpack array for one message. Raises nothing for well-formed messages."""
    match message:
        case Ping():
            return [MessageType.PING, message.seq, message.target, message.source,
                    message.source_address]  # fmt: skip
        case PingReq():
            return [MessageType.PING_REQ, message.seq, message.target, message.target_address,
                    message.source, message.source_address, message.nack]  # fmt: skip
        case Ack():
            return [MessageType.ACK, message.seq, message.source]
        case Nack():
            return [MessageType.NACK, message.seq, message.source]
        case Alive():
            return [MessageType.ALIVE, message.incarnation, message.name, message.address,
                    *_meta_fields(message.meta)]  # fmt: skip
        case Suspect():
            return [MessageType.SUSPECT, message.incarnation, message.name, message.source]
        case Dead():
            return [MessageType.DEAD, message.incarnation, message.name, message.source]
        case PushPull():
            rows = [[r.name, r.address, r.incarnation, int(r.state), *_meta_fields(r.meta)]
                    for r in message.records]  # fmt: skip
            return [MessageType.PUSH_PULL, message.join, message.reply, rows]
    raise AssertionError(f"unknown message {message!r}")  # pragma: no cover


def encode_message(message: Message) -> bytes:
    """One message's bytes, ready to be concatenated into a datagram."""
    encoded = msgpack.packb(message_fields(message))
    assert isinstance(encoded, bytes) and encoded
    return encoded


def encode_datagram(sender: str, encoded_messages: list[bytes]) -> bytes:
    """A datagram from pre-encoded messages. Raises CodecError when over the bounds."""
    assert sender
    if not 1 <= len(encoded_messages) <= MESSAGES_PER_DATAGRAM_MAX:
        raise CodecError(f"a datagram carries 1..{MESSAGES_PER_DATAGRAM_MAX} messages")
    header = msgpack.packb(WIRE_VERSION) + msgpack.packb(sender)
    datagram = header + msgpack.packb(len(encoded_messages)) + b"".join(encoded_messages)
    if len(datagram) > DATAGRAM_BYTES_MAX:
        raise CodecError(f"datagram of {len(datagram)} bytes over {DATAGRAM_BYTES_MAX}")
    return datagram


def datagram_overhead_bytes(sender: str, messages: int) -> int:
    """Bytes a datagram header takes for `sender` and a message count."""
    assert sender and messages >= 0
    return len(msgpack.packb(WIRE_VERSION) + msgpack.packb(sender) + msgpack.packb(messages))


def decode_datagram(data: bytes) -> tuple[str, list[Message]]:
    """(sender, messages) of one datagram. Raises CodecError on anything malformed."""
    if not 0 < len(data) <= DATAGRAM_BYTES_MAX:
        raise CodecError(f"datagram must be 1..{DATAGRAM_BYTES_MAX} bytes")
    unpacker = msgpack.Unpacker(max_buffer_size=DATAGRAM_BYTES_MAX, strict_map_key=True)
    unpacker.feed(data)
    try:
        values = list(unpacker)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as error:
        raise CodecError(f"not msgpack: {error}") from error
    if len(values) < 3:
        raise CodecError("datagram too short")
    version, sender, count, *rest = values
    if version != WIRE_VERSION:
        raise CodecError(f"wire version {version!r}, expected {WIRE_VERSION}")
    sender = _name(sender, "sender")
    if type(count) is not int or count != len(rest) or count > MESSAGES_PER_DATAGRAM_MAX:
        raise CodecError("message count does not match the datagram")
    return sender, [decode_message(value) for value in rest]


def _int(value: Any, what: str, maximum: int) -> int:
    if type(value) is not int or not 0 <= value <= maximum:
        raise CodecError(f"{what} must be an integer in 0..{maximum}")
    return value


def _str(value: Any, what: str, bytes_max: int) -> str:
    if type(value) is not str or len(value.encode()) > bytes_max:
        raise CodecError(f"{what} must be a string of at most {bytes_max} bytes")
    return value


def _name(value: Any, what: str) -> str:
    name = _str(value, what, NAME_BYTES_MAX)
    if not name:
        raise CodecError(f"{what} must not be empty")
    return name


def _address(value: Any, what: str) -> str:
    address = _str(value, what, ADDRESS_BYTES_MAX)
    if not address:
        raise CodecError(f"{what} must not be empty")
    return address


def _bool(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise CodecError(f"{what} must be a boolean")
    return value


def _meta(client_url: Any, zone: Any, services: Any) -> Meta:
    if type(services) is not list or not all(type(s) is str for s in services):
        raise CodecError("services must be a list of strings")
    if type(client_url) is not str or type(zone) is not str:
        raise CodecError("client_url and zone must be strings")
    try:
        return Meta(client_url, zone, tuple(services))
    except ValueError as error:
        raise CodecError(str(error)) from error


_FIELD_COUNTS = {
    MessageType.PING: 5,
    MessageType.PING_REQ: 7,
    MessageType.ACK: 3,
    MessageType.NACK: 3,
    MessageType.ALIVE: 7,
    MessageType.SUSPECT: 4,
    MessageType.DEAD: 4,
    MessageType.PUSH_PULL: 4,
}


def decode_message(value: Any) -> Message:
    """One message from its msgpack array. Raises CodecError when malformed."""
    if type(value) is not list or not value or type(value[0]) is not int:
        raise CodecError("a message is a non-empty array starting with its type")
    try:
        kind = MessageType(value[0])
    except ValueError as error:
        raise CodecError(f"unknown message type {value[0]}") from error
    if len(value) != _FIELD_COUNTS[kind]:
        raise CodecError(f"{kind.name} has {_FIELD_COUNTS[kind]} fields, got {len(value)}")
    v = value
    match kind:
        case MessageType.PING:
            return Ping(_int(v[1], "seq", SEQ_MAX), _name(v[2], "target"),
                        _name(v[3], "source"), _address(v[4], "source_address"))  # fmt: skip
        case MessageType.PING_REQ:
            return PingReq(_int(v[1], "seq", SEQ_MAX), _name(v[2], "target"),
                           _address(v[3], "target_address"), _name(v[4], "source"),
                           _address(v[5], "source_address"), _bool(v[6], "nack"))  # fmt: skip
        case MessageType.ACK:
            return Ack(_int(v[1], "seq", SEQ_MAX), _name(v[2], "source"))
        case MessageType.NACK:
            return Nack(_int(v[1], "seq", SEQ_MAX), _name(v[2], "source"))
        case MessageType.ALIVE:
            return Alive(_int(v[1], "incarnation", INCARNATION_MAX), _name(v[2], "name"),
                         _address(v[3], "address"), _meta(v[4], v[5], v[6]))  # fmt: skip
        case MessageType.SUSPECT:
            return Suspect(_int(v[1], "incarnation", INCARNATION_MAX), _name(v[2], "name"),
                           _name(v[3], "source"))  # fmt: skip
        case MessageType.DEAD:
            return Dead(_int(v[1], "incarnation", INCARNATION_MAX), _name(v[2], "name"),
                        _name(v[3], "source"))  # fmt: skip
        case MessageType.PUSH_PULL:
            rows = v[3]
            if type(rows) is not list or len(rows) > STATES_PER_PUSH_PULL_MAX:
                raise CodecError(f"push-pull carries at most {STATES_PER_PUSH_PULL_MAX} records")
            return PushPull(_bool(v[1], "join"), _bool(v[2], "reply"),
                            tuple(_record(row) for row in rows))  # fmt: skip
    raise AssertionError(kind)  # pragma: no cover


def _record(row: Any) -> MemberRecord:
    if type(row) is not list or len(row) != 7:
        raise CodecError("a member record has 7 fields")
    try:
        state = MemberState(_int(row[3], "state", 3))
    except ValueError as error:  # pragma: no cover - _int bounds it already
        raise CodecError("unknown member state") from error
    return MemberRecord(_name(row[0], "name"), _address(row[1], "address"),
                        _int(row[2], "incarnation", INCARNATION_MAX), state,
                        _meta(row[4], row[5], row[6]))  # fmt: skip
