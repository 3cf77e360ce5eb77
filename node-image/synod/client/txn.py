"""A small builder for `POST /v1/kv/txn` bodies.

txn = (
    Txn()
    .when(value("config").eq("v1"), version("lock").eq(0))
    .then(put("config", "v2"), put("lock", "me", lease=lease_id))
    .otherwise(get("config"))
)
result = await client.txn(txn)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from synod.client.types import to_base64

Data = str | bytes  # keys and values: text (UTF-8) or any bytes

__all__ = [
    "Compare",
    "Txn",
    "create_revision",
    "delete",
    "get",
    "lease",
    "mod_revision",
    "put",
    "range_",
    "value",
    "version",
]


@dataclass(frozen=True, slots=True)
class CompareTarget:
    """One field of one key, waiting for its comparison (`eq`, `ne`, `lt`, `gt`)."""

    key: Data
    target: str

    def _compare(self, result: str, operand: Data | int) -> Compare:
        """Raises nothing."""
        return Compare(self.key, self.target, result, operand)

    def eq(self, operand: Data | int) -> Compare:
        """`target == operand`. Raises nothing."""
        return self._compare("=", operand)

    def ne(self, operand: Data | int) -> Compare:
        """`target != operand`. Raises nothing."""
        return self._compare("!=", operand)

    def lt(self, operand: Data | int) -> Compare:
        """`target < operand`. Raises nothing."""
        return self._compare("<", operand)

    def gt(self, operand: Data | int) -> Compare:
        """`target > operand`. Raises nothing."""
        return self._compare(">", operand)


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction."""

    key: Data
    target: str
    result: str
    value: Data | int

    def to_json(self, base64: bool = False) -> dict[str, Any]:
        """The docs/api.md `Compare` object (``base64``: keys and values as base64).

        Raises TypeError for a text compare with bytes when not ``base64``."""
        operand = self.value
        if not isinstance(operand, int):
            operand = _encode(operand, base64)
        return {"key": _encode(self.key, base64), "target": self.target,
                "result": self.result, "value": operand}  # fmt: skip


def _encode(data: Data, base64: bool) -> str:
    """Text for the JSON body: base64, or the text itself. Raises TypeError for bytes
    without ``base64`` (JSON has no bytes)."""
    if base64:
        return to_base64(data)
    if isinstance(data, bytes):
        raise TypeError("bytes keys and values need base64=True (the clients use it)")
    return data


def _encode_op(op: dict[str, Any], base64: bool) -> dict[str, Any]:
    """A txn op with its keys and values encoded. Raises TypeError like `_encode`."""
    ((kind, body),) = op.items()
    encoded = dict(body)
    for name in ("key", "value", "range_end"):
        if name in encoded:
            encoded[name] = _encode(encoded[name], base64)
    return {kind: encoded}


def value(key: Data) -> CompareTarget:
    """Compare the value of ``key``. Raises nothing."""
    return CompareTarget(key, "value")


def version(key: Data) -> CompareTarget:
    """Compare the version of ``key`` (0 = absent). Raises nothing."""
    return CompareTarget(key, "version")


def create_revision(key: Data) -> CompareTarget:
    """Compare the create revision of ``key`` (0 = absent). Raises nothing."""
    return CompareTarget(key, "create_revision")


def mod_revision(key: Data) -> CompareTarget:
    """Compare the last modification revision of ``key``. Raises nothing."""
    return CompareTarget(key, "mod_revision")


def lease(key: Data) -> CompareTarget:
    """Compare the lease id ``key`` is attached to. Raises nothing."""
    return CompareTarget(key, "lease")


def put(key: Data, value: Data, *, lease: int = 0, prev_kv: bool = False) -> dict[str, Any]:
    """A put op. Raises nothing."""
    body: dict[str, Any] = {"key": key, "value": value}
    if lease:
        body["lease"] = lease
    if prev_kv:
        body["prev_kv"] = True
    return {"put": body}


def delete(key: Data, *, prefix: bool = False, prev_kv: bool = False) -> dict[str, Any]:
    """A delete op. Raises nothing."""
    body: dict[str, Any] = {"key": key}
    if prefix:
        body["prefix"] = True
    if prev_kv:
        body["prev_kv"] = True
    return {"delete": body}


def range_(key: Data, *, prefix: bool = False, limit: int = 0) -> dict[str, Any]:
    """A range op. Raises nothing."""
    body: dict[str, Any] = {"key": key}
    if prefix:
        body["prefix"] = True
    if limit:
        body["limit"] = limit
    return {"range": body}


def get(key: Data) -> dict[str, Any]:
    """A range op for one key. Raises nothing."""
    return range_(key)


@dataclass(slots=True)
class Txn:
    """Compares, then the ops to run if all hold (`then`) or else (`otherwise`)."""

    compares: list[Compare] = field(default_factory=list)
    success: list[dict[str, Any]] = field(default_factory=list)
    failure: list[dict[str, Any]] = field(default_factory=list)

    def when(self, *compares: Compare) -> Txn:
        """Add conditions (all must hold). Raises nothing."""
        self.compares.extend(compares)
        return self

    def then(self, *ops: dict[str, Any]) -> Txn:
        """Add ops run when every compare holds. Raises nothing."""
        self.success.extend(ops)
        return self

    def otherwise(self, *ops: dict[str, Any]) -> Txn:
        """Add ops run when a compare fails. Raises nothing."""
        self.failure.extend(ops)
        return self

    def to_json(self, base64: bool = False) -> dict[str, Any]:
        """The `POST /v1/kv/txn` body; ``base64``: keys and values as base64 (the body
        then needs `"encoding": "base64"`). Raises TypeError for bytes without it."""
        return {
            "compare": [c.to_json(base64) for c in self.compares],
            "success": [_encode_op(op, base64) for op in self.success],
            "failure": [_encode_op(op, base64) for op in self.failure],
        }
