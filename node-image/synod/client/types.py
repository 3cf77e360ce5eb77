"""Typed views of the JSON answers of docs/api.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from synod.client.errors import ProtocolError

__all__ = [
    "KV",
    "ClusterStatus",
    "DeleteResult",
    "Header",
    "LeaseGrant",
    "LeaseInfo",
    "MemberStatus",
    "PutResult",
    "RangeResult",
    "TxnResult",
    "WatchEvent",
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
    """One key-value pair with its revisions."""

    key: str
    value: str
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0

    @classmethod
    def from_json(cls, doc: Any) -> KV:
        """Decode. Raises ProtocolError on a malformed KV."""
        if not isinstance(doc, dict):
            raise ProtocolError(f"expected a KV object, got {doc!r}")
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
        """The key as stored (UTF-8). Raises nothing."""
        return self.key.encode("utf-8", errors="surrogateescape")

    @property
    def value_bytes(self) -> bytes:
        """The value as stored (UTF-8). Raises nothing."""
        return self.value.encode("utf-8", errors="surrogateescape")

    @classmethod
    def maybe(cls, doc: Any) -> KV | None:
        """Decode a KV or null. Raises ProtocolError on a malformed KV."""
        return None if doc is None else cls.from_json(doc)

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


def _kvs(doc: dict[str, Any], name: str) -> list[KV]:
    """Decode a list of KVs (absent = empty). Raises ProtocolError."""
    items = doc.get(name) or []
    if not isinstance(items, list):
        raise ProtocolError(f"expected a list {name!r}", doc)
    return [KV.from_json(item) for item in items]


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
    def from_json(cls, doc: dict[str, Any]) -> PutResult:
        """Raises ProtocolError."""
        return cls(Header.from_json(doc.get("header")), KV.maybe(doc.get("prev_kv")))


@dataclass(frozen=True, slots=True)
class RangeResult:
    """Answer of a range read."""

    header: Header
    kvs: list[KV] = field(default_factory=list)
    more: bool = False
    count: int = 0

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RangeResult:
        """Raises ProtocolError."""
        kvs = _kvs(doc, "kvs")
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
    def from_json(cls, doc: dict[str, Any]) -> DeleteResult:
        """Raises ProtocolError."""
        return cls(
            Header.from_json(doc.get("header")), _int(doc, "deleted", 0), _kvs(doc, "prev_kvs")
        )


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Answer of a transaction: which branch ran and the raw answers of its ops."""

    header: Header
    succeeded: bool
    responses: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TxnResult:
        """Raises ProtocolError."""
        responses = doc.get("responses") or []
        if not isinstance(responses, list):
            raise ProtocolError("expected a list 'responses'", doc)
        return cls(Header.from_json(doc.get("header")), bool(doc.get("succeeded")), responses)

    def range_kvs(self, index: int) -> list[KV]:
        """The KVs answered by the range op at ``index`` of the branch that ran.

        Raises ProtocolError when that answer is not a range answer, IndexError when
        there is no op at ``index``."""
        answer = self.responses[index]
        inner = answer.get("range", answer) if isinstance(answer, dict) else None
        if not isinstance(inner, dict):
            raise ProtocolError(f"txn response {index} is not a range answer: {answer!r}")
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
    def from_json(cls, doc: Any) -> WatchEvent:
        """Raises ProtocolError."""
        if not isinstance(doc, dict) or doc.get("type") not in ("put", "delete"):
            raise ProtocolError(f"malformed watch event {doc!r}")
        return cls(str(doc["type"]), KV.from_json(doc.get("kv")), KV.maybe(doc.get("prev_kv")))


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
