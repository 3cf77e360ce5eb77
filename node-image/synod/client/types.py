"""Typed views of the JSON answers of docs/api.md."""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from synod.client.errors import ProtocolError

__all__ = [
    "KV",
    "ClusterStatus",
    "DeleteResult",
    "Header",
    "LeaseGrant",
    "LeaseInfo",
    "LeaseList",
    "MemberStatus",
    "PutResult",
    "RangeResult",
    "TxnResponse",
    "TxnResult",
    "WatchEvent",
    "from_base64",
    "to_base64",
]


def _int(doc: dict[str, Any], name: str, default: int | None = None) -> int:
    """Read an integer member. Raises ProtocolError when it is missing or not an int."""
    value = doc.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"expected integer {name!r} in answer, got {value!r}", doc)
    return value


def _str(doc: dict[str, Any], name: str, default: str | None = None) -> str:
    """Read a string member. Raises ProtocolError when it is missing or not a string."""
    value = doc.get(name, default)
    if not isinstance(value, str):
        raise ProtocolError(f"expected string {name!r} in answer, got {value!r}", doc)
    return value


def to_base64(data: str | bytes) -> str:
    """Base64 of ``data`` (text as UTF-8) for a request with `"encoding": "base64"`.

    Raises TypeError for anything but str or bytes."""
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogateescape")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"keys and values are str or bytes, not {type(data).__name__}")
    return binascii.b2a_base64(bytes(data), newline=False).decode("ascii")


def from_base64(doc: dict[str, Any], name: str) -> bytes:
    """Decode a base64 member of an answer. Raises ProtocolError."""
    text = _str(doc, name, "")
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"expected base64 {name!r} in answer, got {text[:40]!r}", doc) from None


def _text(data: bytes) -> str:
    """Bytes shown as text: UTF-8, anything else replaced (U+FFFD). Raises nothing."""
    return data.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class Header:
    """The `header` of every successful answer."""

    revision: int = 0
    raft_term: int = 0
    member_id: int = 0
    leader_id: int = 0

    @classmethod
    def from_json(cls, doc: Any) -> Header:
        """Decode; a missing header gives zeros. Raises ProtocolError on wrong types."""
        if not isinstance(doc, dict):
            return cls()
        return cls(
            revision=_int(doc, "revision", 0),
            raft_term=_int(doc, "raft_term", 0),
            member_id=_int(doc, "member_id", 0),
            leader_id=_int(doc, "leader_id", 0),
        )


@dataclass(frozen=True, slots=True)
class KV:
    """One key-value pair with its revisions.

    ``key`` and ``value`` are text (bytes that are not UTF-8 show as U+FFFD);
    ``key_bytes`` and ``value_bytes`` are exactly what is stored."""

    key: str
    value: str
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0
    raw_key: bytes | None = field(default=None, compare=False, repr=False)
    raw_value: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_json(cls, doc: Any, base64: bool = False) -> KV:
        """Decode (``base64``: the answer to a request with `"encoding": "base64"`).

        Raises ProtocolError on a malformed KV."""
        if not isinstance(doc, dict):
            raise ProtocolError(f"expected a KV object, got {doc!r}")
        if base64:
            key, value = from_base64(doc, "key"), from_base64(doc, "value")
            return cls(
                key=_text(key),
                value=_text(value),
                create_revision=_int(doc, "create_revision", 0),
                mod_revision=_int(doc, "mod_revision", 0),
                version=_int(doc, "version", 0),
                lease=_int(doc, "lease", 0),
                raw_key=key,
                raw_value=value,
            )
        return cls(
            key=_str(doc, "key"),
            value=_str(doc, "value", ""),
            create_revision=_int(doc, "create_revision", 0),
            mod_revision=_int(doc, "mod_revision", 0),
            version=_int(doc, "version", 0),
            lease=_int(doc, "lease", 0),
        )

    @property
    def key_bytes(self) -> bytes:
        """The key exactly as stored. Raises nothing."""
        if self.raw_key is not None:
            return self.raw_key
        return self.key.encode("utf-8", errors="surrogateescape")

    @property
    def value_bytes(self) -> bytes:
        """The value exactly as stored. Raises nothing."""
        if self.raw_value is not None:
            return self.raw_value
        return self.value.encode("utf-8", errors="surrogateescape")

    @classmethod
    def maybe(cls, doc: Any, base64: bool = False) -> KV | None:
        """Decode a KV or null. Raises ProtocolError on a malformed KV."""
        return None if doc is None else cls.from_json(doc, base64)

    def to_json(self) -> dict[str, Any]:
        """The docs/api.md form. Raises nothing."""
        return {
            "key": self.key,
            "value": self.value,
            "create_revision": self.create_revision,
            "mod_revision": self.mod_revision,
            "version": self.version,
            "lease": self.lease,
        }


def _kvs(doc: dict[str, Any], name: str, base64: bool = False) -> list[KV]:
    """Decode a list of KVs (absent = empty). Raises ProtocolError."""
    items = doc.get(name) or []
    if not isinstance(items, list):
        raise ProtocolError(f"expected a list {name!r}", doc)
    return [KV.from_json(item, base64) for item in items]


@dataclass(frozen=True, slots=True)
class PutResult:
    """Answer of a put: the revision it created and the previous KV when asked."""

    header: Header
    prev_kv: KV | None = None

    @property
    def revision(self) -> int:
        """The store revision after the put. Raises nothing."""
        return self.header.revision

    @classmethod
    def from_json(cls, doc: dict[str, Any], base64: bool = False) -> PutResult:
        """Raises ProtocolError."""
        return cls(Header.from_json(doc.get("header")), KV.maybe(doc.get("prev_kv"), base64))


@dataclass(frozen=True, slots=True)
class RangeResult:
    """Answer of a range read."""

    header: Header
    kvs: list[KV] = field(default_factory=list)
    more: bool = False
    count: int = 0

    @classmethod
    def from_json(cls, doc: dict[str, Any], base64: bool = False) -> RangeResult:
        """Raises ProtocolError."""
        kvs = _kvs(doc, "kvs", base64)
        return cls(
            Header.from_json(doc.get("header")),
            kvs,
            bool(doc.get("more", False)),
            _int(doc, "count", len(kvs)),
        )


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """Answer of a delete."""

    header: Header
    deleted: int = 0
    prev_kvs: list[KV] = field(default_factory=list)

    @classmethod
    def from_json(cls, doc: dict[str, Any], base64: bool = False) -> DeleteResult:
        """Raises ProtocolError."""
        return cls(
            Header.from_json(doc.get("header")),
            _int(doc, "deleted", 0),
            _kvs(doc, "prev_kvs", base64),
        )


TxnResponse: TypeAlias = PutResult | DeleteResult | RangeResult
_TXN_RESPONSE_TYPES: dict[str, Any] = {
    "put": PutResult,
    "delete": DeleteResult,
    "range": RangeResult,
}


def _text_kv(doc: Any) -> Any:
    """A base64 KV answer in the text form (for ``TxnResult.responses``). Raises
    ProtocolError."""
    if not isinstance(doc, dict):
        return doc
    return {**doc, "key": _text(from_base64(doc, "key")), "value": _text(from_base64(doc, "value"))}


def _text_response(answer: dict[str, Any]) -> dict[str, Any]:
    """One base64 op answer in the text form. Raises ProtocolError."""
    out: dict[str, Any] = {}
    for kind, body in answer.items():
        if not isinstance(body, dict):
            raise ProtocolError(f"malformed txn response {answer!r}")
        inner = dict(body)
        for name in ("kvs", "prev_kvs"):
            if isinstance(inner.get(name), list):
                inner[name] = [_text_kv(item) for item in inner[name]]
        if inner.get("prev_kv") is not None:
            inner["prev_kv"] = _text_kv(inner["prev_kv"])
        out[kind] = inner
    return out


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Answer of a transaction: which branch ran, the answer of each of its ops typed
    (``results``: PutResult, DeleteResult or RangeResult, in op order) and as the
    JSON of docs/api.md (``responses``, keys and values as text)."""

    header: Header
    succeeded: bool
    responses: list[dict[str, Any]] = field(default_factory=list)
    results: list[TxnResponse] = field(default_factory=list)

    @classmethod
    def from_json(cls, doc: dict[str, Any], base64: bool = False) -> TxnResult:
        """Raises ProtocolError."""
        responses = doc.get("responses") or []
        if not isinstance(responses, list):
            raise ProtocolError("expected a list 'responses'", doc)
        header = Header.from_json(doc.get("header"))
        results: list[TxnResponse] = []
        for answer in responses:
            if not isinstance(answer, dict) or len(answer) != 1:
                raise ProtocolError(f"malformed txn response {answer!r}", doc)
            ((kind, body),) = answer.items()
            if kind not in _TXN_RESPONSE_TYPES or not isinstance(body, dict):
                raise ProtocolError(f"unknown txn response {answer!r}", doc)
            results.append(
                _TXN_RESPONSE_TYPES[kind].from_json({**body, "header": doc.get("header")}, base64)
            )
        if base64:
            responses = [_text_response(answer) for answer in responses]
        return cls(header, bool(doc.get("succeeded")), responses, results)

    def range_kvs(self, index: int) -> list[KV]:
        """The KVs answered by the range op at ``index`` of the branch that ran.

        Raises ProtocolError when that answer is not a range answer, IndexError when
        there is no op at ``index``."""
        answer = self.results[index] if self.results else None
        if isinstance(answer, RangeResult):
            return answer.kvs
        raw = self.responses[index]
        inner = raw.get("range", raw) if isinstance(raw, dict) else None
        if not isinstance(inner, dict):
            raise ProtocolError(f"txn response {index} is not a range answer: {raw!r}")
        return _kvs(inner, "kvs")


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """A granted lease."""

    id: int
    ttl_ms: int

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LeaseGrant:
        """Raises ProtocolError."""
        return cls(_int(doc, "id"), _int(doc, "ttl_ms"))


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """Answer of time-to-live: remaining and granted TTL and the attached keys."""

    id: int
    ttl_ms: int
    granted_ttl_ms: int
    keys: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LeaseInfo:
        """Raises ProtocolError."""
        keys = doc.get("keys") or []
        if not isinstance(keys, list):
            raise ProtocolError("expected a list 'keys'", doc)
        return cls(
            _int(doc, "id"),
            _int(doc, "ttl_ms"),
            _int(doc, "granted_ttl_ms", 0),
            [str(k) for k in keys],
        )


@dataclass(frozen=True, slots=True)
class LeaseList:
    """Answer of `lease_list`: live leases (``LeaseInfo`` without keys) by id, how many
    there are in all and whether some were left out."""

    leases: list[LeaseInfo]
    count: int = 0
    more: bool = False

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LeaseList:
        """Raises ProtocolError."""
        items = doc.get("leases") or []
        if not isinstance(items, list):
            raise ProtocolError("expected a list 'leases'", doc)
        leases = [LeaseInfo.from_json(item) for item in items]
        return cls(leases, _int(doc, "count", len(leases)), bool(doc.get("more", False)))


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change seen by a watch: `put` or `delete` of ``kv`` at ``kv.mod_revision``."""

    type: str
    kv: KV
    prev_kv: KV | None = None

    @property
    def revision(self) -> int:
        """The revision of the change. Raises nothing."""
        return self.kv.mod_revision

    @classmethod
    def from_json(cls, doc: Any, base64: bool = False) -> WatchEvent:
        """Raises ProtocolError."""
        if not isinstance(doc, dict) or doc.get("type") not in ("put", "delete"):
            raise ProtocolError(f"malformed watch event {doc!r}")
        return cls(
            str(doc["type"]),
            KV.from_json(doc.get("kv"), base64),
            KV.maybe(doc.get("prev_kv"), base64),
        )


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """One member as a node reports it."""

    id: int
    role: str
    peer_url: str = ""
    client_url: str = ""
    match_index: int = 0
    last_contact_ms: int | None = None
    healthy: bool | None = None

    @classmethod
    def from_json(cls, doc: Any) -> MemberStatus:
        """Raises ProtocolError."""
        if not isinstance(doc, dict):
            raise ProtocolError(f"malformed member {doc!r}")
        contact = doc.get("last_contact_ms")
        healthy = doc.get("healthy")
        return cls(
            id=_int(doc, "id"),
            role=str(doc.get("role", "")),
            peer_url=str(doc.get("peer_url") or ""),
            client_url=str(doc.get("client_url") or ""),
            match_index=_int(doc, "match_index", 0) if doc.get("match_index") is not None else 0,
            last_contact_ms=contact if isinstance(contact, int) else None,
            healthy=healthy if isinstance(healthy, bool) else None,
        )


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """`GET /v1/cluster/status` of one node; ``raw`` keeps every member of the answer."""

    member_id: int
    role: str
    term: int
    leader_id: int
    leader_client_url: str | None
    commit_index: int
    applied_index: int
    members: list[MemberStatus]
    raw: dict[str, Any]
    limits: dict[str, int] = field(default_factory=dict)  # settable replicated bounds

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ClusterStatus:
        """Raises ProtocolError."""
        members = doc.get("members") or []
        if not isinstance(members, list):
            raise ProtocolError("expected a list 'members'", doc)
        limits = doc.get("limits") or {}
        if not isinstance(limits, dict):
            raise ProtocolError("expected a map 'limits'", doc)
        url = doc.get("leader_client_url")
        return cls(
            member_id=_int(doc, "member_id"),
            role=str(doc.get("role", "")),
            term=_int(doc, "term", 0),
            leader_id=_int(doc, "leader_id", 0) if doc.get("leader_id") is not None else 0,
            leader_client_url=url if isinstance(url, str) and url else None,
            commit_index=_int(doc, "commit_index", 0),
            applied_index=_int(doc, "applied_index", 0),
            members=[MemberStatus.from_json(m) for m in members],
            raw=doc,
            limits={str(name): _int(limits, name) for name in limits},
        )
