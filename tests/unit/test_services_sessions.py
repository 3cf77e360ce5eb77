"""Exactly-once sessions: dedupe, replay, ack floor, bounds, eviction, snapshot."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from synod.services.commands import (
    Command,
    decode_command,
    encode_command,
    put_op,
    session_open_op,
)
from synod.services.errors import (
    Compacted,
    InvalidArgument,
    LimitExceeded,
    ServiceError,
    SessionExpired,
    TooLarge,
    error_from_dict,
)
from synod.services.sessions import SessionTable


class Counter:
    """A side-effecting fn that counts how often it ran."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self) -> dict[str, Any]:
        self.runs += 1
        return {"ok": True, "run": self.runs}


def test_first_apply_runs_and_retry_replays_cached_response() -> None:
    table = SessionTable()
    client = table.open(index=1)
    fn = Counter()
    first = table.apply(2, client, seq=1, ack_seq=0, fn=fn)
    again = table.apply(3, client, seq=1, ack_seq=0, fn=fn)
    assert fn.runs == 1
    assert first == again == {"ok": True, "run": 1}


def test_client_zero_is_never_deduplicated() -> None:
    table = SessionTable()
    fn = Counter()
    table.apply(1, 0, seq=0, ack_seq=0, fn=fn)
    table.apply(2, 0, seq=0, ack_seq=0, fn=fn)
    assert fn.runs == 2
    assert len(table) == 0


def test_unknown_client_is_session_expired_and_does_not_run() -> None:
    table = SessionTable()
    fn = Counter()
    with pytest.raises(SessionExpired):
        table.apply(5, 42, seq=1, ack_seq=0, fn=fn)
    assert fn.runs == 0


def test_acknowledged_seq_is_expired_and_newer_ones_run() -> None:
    table = SessionTable()
    client = table.open(1)
    fn = Counter()
    for seq in (1, 2, 3):
        table.apply(1 + seq, client, seq=seq, ack_seq=0, fn=fn)
    table.apply(5, client, seq=4, ack_seq=3, fn=fn)  # client got responses 1 and 2
    session = table.get(client)
    assert session is not None and sorted(session.responses) == [3, 4]
    with pytest.raises(SessionExpired):
        table.apply(6, client, seq=2, ack_seq=0, fn=fn)  # stale duplicate
    assert table.apply(7, client, seq=3, ack_seq=0, fn=fn)["run"] == 3  # still cached
    assert fn.runs == 4


def test_ack_is_monotone() -> None:
    table = SessionTable()
    client = table.open(1)
    fn = Counter()
    table.apply(2, client, seq=5, ack_seq=5, fn=fn)
    table.apply(3, client, seq=6, ack_seq=2, fn=fn)  # a late, lower ack changes nothing
    session = table.get(client)
    assert session is not None and session.acked_seq == 5
    assert sorted(session.responses) == [5, 6]


def test_bad_session_numbers_are_invalid() -> None:
    table = SessionTable()
    client = table.open(1)
    fn = Counter()
    with pytest.raises(InvalidArgument):
        table.apply(2, client, seq=0, ack_seq=0, fn=fn)
    with pytest.raises(InvalidArgument):
        table.apply(3, client, seq=3, ack_seq=4, fn=fn)
    assert fn.runs == 0


def test_too_many_unacknowledged_responses_is_refused_without_running() -> None:
    table = SessionTable(responses_per_session_max=2)
    client = table.open(1)
    fn = Counter()
    table.apply(2, client, 1, 0, fn)
    table.apply(3, client, 2, 0, fn)
    with pytest.raises(LimitExceeded) as info:
        table.apply(4, client, 3, 0, fn)
    assert info.value.details["limit"] == "responses_per_session_max"
    assert fn.runs == 2
    assert table.apply(5, client, 3, 2, fn)["run"] == 3  # after acking, the retry runs


def test_eviction_drops_least_recently_active_session() -> None:
    table = SessionTable(sessions_max=2)
    a = table.open(1)
    b = table.open(2)
    table.apply(3, a, 1, 0, Counter())  # a is now more recent than b
    c = table.open(4)
    assert a in table and c in table and b not in table
    with pytest.raises(SessionExpired):
        table.apply(5, b, 1, 0, Counter())


def test_close_then_use_is_expired() -> None:
    table = SessionTable()
    client = table.open(7)
    table.close(client)
    with pytest.raises(SessionExpired):
        table.close(client)
    with pytest.raises(SessionExpired):
        table.apply(8, client, 1, 0, Counter())


def test_snapshot_round_trip_is_byte_identical() -> None:
    table = SessionTable()
    for index in (1, 2, 3):
        table.open(index)
    table.apply(4, 2, 1, 0, lambda: {"ok": True, "v": b"x"})
    table.apply(5, 1, 3, 1, lambda: {"ok": False})
    data = msgpack.packb(table.to_snapshot())
    other = SessionTable()
    other.restore(msgpack.unpackb(data))
    assert msgpack.packb(other.to_snapshot()) == data
    assert other.apply(6, 2, 1, 0, Counter()) == {"ok": True, "v": b"x"}


def test_restore_rejects_malformed_snapshot() -> None:
    table = SessionTable(sessions_max=1)
    with pytest.raises(InvalidArgument):
        table.restore([[1, 1, 0, []], [2, 2, 0, []]])
    with pytest.raises(InvalidArgument):
        table.restore([["x", 1]])


# -- envelope -------------------------------------------------------------------------


def test_envelope_round_trip() -> None:
    data = encode_command(put_op(b"k", b"v"), client_id=9, seq=3, ack_seq=2)
    command = decode_command(data)
    assert command == Command(9, 3, 2, put_op(b"k", b"v"))
    assert command.kind == "put"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({"op": {"kind": "put"}}) + b"\x00",
        msgpack.packb({"op": "put"}),
        msgpack.packb({"op": {"no": "kind"}}),
        msgpack.packb({"op": {"kind": 3}}),
        msgpack.packb({"c": -1, "op": {"kind": "put"}}),
        msgpack.packb({"c": 1, "s": 0, "op": {"kind": "put"}}),
        msgpack.packb({"c": 1, "s": 1, "a": 2, "op": {"kind": "put"}}),
        msgpack.packb({"c": True, "op": {"kind": "put"}}),
        msgpack.packb({"x": 1, "op": {"kind": "put"}}),
        msgpack.packb({1: 1, "op": {"kind": "put"}}),
        msgpack.packb({"c": 2**64 - 1, "op": {"kind": "put"}}),
    ],
)
def test_malformed_envelopes_are_invalid_argument(data: bytes) -> None:
    with pytest.raises(InvalidArgument):
        decode_command(data)


def test_oversized_command_is_too_large() -> None:
    with pytest.raises(TooLarge) as info:
        decode_command(encode_command(put_op(b"k", b"v" * 100)), command_bytes_max=50)
    assert info.value.to_dict()["limit"] == "command_bytes_max"


def test_session_open_op_encodes() -> None:
    assert decode_command(encode_command(session_open_op())).kind == "session_open"


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (InvalidArgument("bad"), "invalid-argument", 400),
        (Compacted("old", compact_revision=5), "compacted", 410),
        (SessionExpired("gone"), "session-expired", 410),
        (TooLarge("big", limit="x", max=1), "too-large", 413),
        (LimitExceeded("full", limit="keys_max", max=3), "limit-exceeded", 429),
    ],
)
def test_errors_have_stable_codes_and_round_trip(
    error: ServiceError, code: str, status: int
) -> None:
    body = error.to_dict()
    assert (body["code"], body["status"]) == (code, status)
    again = error_from_dict(body)
    assert type(again) is type(error) and again.details == error.details
