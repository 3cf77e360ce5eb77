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

    key: str
    target: str

    def _compare(self, result: str, operand: str | int) -> Compare:
        """Raises nothing."""
        return Compare(self.key, self.target, result, operand)

    def eq(self, operand: str | int) -> Compare:
        """`target == operand`. Raises nothing."""
        return self._compare("=", operand)

    def ne(self, operand: str | int) -> Compare:
        """`target != operand`. Raises nothing."""
        return self._compare("!=", operand)

    def lt(self, operand: str | int) -> Compare:
        """`target < operand`. Raises nothing."""
        return self._compare("<", operand)

    def gt(self, operand: str | int) -> Compare:
        """`target > operand`. Raises nothing."""
        return self._compare(">", operand)


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction."""

    key: str
    target: str
    result: str
    value: str | int

    def to_json(self) -> dict[str, Any]:
        """The docs/api.md `Compare` object. Raises nothing."""
        return {"key": self.key, "target": self.target, "result": self.result, "value": self.value}


def value(key: str) -> CompareTarget:
    """Compare the value of ``key``. Raises nothing."""
    return CompareTarget(key, "value")


def version(key: str) -> CompareTarget:
    """Compare the version of ``key`` (0 = absent). Raises nothing."""
    return CompareTarget(key, "version")


def create_revision(key: str) -> CompareTarget:
    """Compare the create revision of ``key`` (0 = absent). Raises nothing."""
    return CompareTarget(key, "create_revision")


def mod_revision(key: str) -> CompareTarget:
    """Compare the last modification revision of ``key``. Raises nothing."""
    return CompareTarget(key, "mod_revision")


def lease(key: str) -> CompareTarget:
    """Compare the lease id ``key`` is attached to. Raises nothing."""
    return CompareTarget(key, "lease")


def put(key: str, value: str, *, lease: int = 0, prev_kv: bool = False) -> dict[str, Any]:
    """A put op. Raises nothing."""
    body: dict[str, Any] = {"key": key, "value": value}
    if lease:
        body["lease"] = lease
    if prev_kv:
        body["prev_kv"] = True
    return {"put": body}


def delete(key: str, *, prefix: bool = False, prev_kv: bool = False) -> dict[str, Any]:
    """A delete op. Raises nothing."""
    body: dict[str, Any] = {"key": key}
    if prefix:
        body["prefix"] = True
    if prev_kv:
        body["prev_kv"] = True
    return {"delete": body}


def range_(key: str, *, prefix: bool = False, limit: int = 0) -> dict[str, Any]:
    """A range op. Raises nothing."""
    body: dict[str, Any] = {"key": key}
    if prefix:
        body["prefix"] = True
    if limit:
        body["limit"] = limit
    return {"range": body}


def get(key: str) -> dict[str, Any]:
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

    def to_json(self) -> dict[str, Any]:
        """The `POST /v1/kv/txn` body. Raises nothing."""
        return {
            "compare": [c.to_json() for c in self.compares],
            "success": list(self.success),
            "failure": list(self.failure),
        }
