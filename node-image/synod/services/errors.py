"""Typed service errors with stable machine codes.

Every error carries ``code`` (a stable kebab-case string, part of the public API:
never rename one), ``http_status`` (what the HTTP layer should answer) and a human
``message``. The HTTP layer turns an error into an RFC 9457 problem document whose
``type`` ends with the code, e.g. ``https://synod.dev/problems/compacted``.

Inside the replicated state machine errors never escape ``apply``: they become a
deterministic error *result* (see :meth:`ServiceError.to_dict`), identical on every
replica, and the command changes no state.

The codes, their HTTP statuses and what each one means are declared once, in
:mod:`synod.codes` (and documented in docs/api.md); each class below names its code and
takes the status from there.

410 Gone was chosen for ``compacted`` because the history asked for existed once and has
been removed on purpose, and retrying the same request can never succeed; the client must
re-read at a newer revision (etcd answers 400-ish ``ErrCompacted``; Gone is more precise).
"""

from __future__ import annotations

from typing import Any, ClassVar

from synod.codes import status_of

__all__ = [
    "AlreadyExists",
    "Compacted",
    "CompareFailed",
    "FutureRevision",
    "InvalidArgument",
    "LimitExceeded",
    "NotFound",
    "ServiceError",
    "SessionExpired",
    "TooLarge",
    "error_from_dict",
]

# Detail values must be msgpack-able scalars so error results can be replicated.
DetailValue = int | str | bytes | bool | None


class ServiceError(Exception):
    """Base of every typed service error; never raised itself."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = status_of("internal")

    def __init__(self, message: str, **details: DetailValue) -> None:
        """Build an error with a human ``message`` and scalar ``details``.

        Raises nothing (asserts the message is non-empty and details are scalars).
        """
        assert message, "an error needs a human message"
        assert all(isinstance(v, int | str | bytes | bool | None) for v in details.values())
        super().__init__(message)
        self.message = message
        # Sorted so that the error result has the same bytes on every replica.
        self.details: dict[str, DetailValue] = dict(sorted(details.items()))

    def to_dict(self) -> dict[str, Any]:
        """Return the msgpack-able error body ``{"code", "status", "message", **details}``.

        Raises nothing.
        """
        body: dict[str, Any] = {
            "code": self.code,
            "status": self.http_status,
            "message": self.message,
        }
        for name, value in self.details.items():
            assert name not in body, f"detail {name!r} shadows a reserved field"
            body[name] = value
        return body

    def __repr__(self) -> str:
        """Show the class, message and details (debug aid). Raises nothing."""
        return f"{type(self).__name__}({self.message!r}, {self.details!r})"


class InvalidArgument(ServiceError):
    """The command or a field of it is malformed, has the wrong type or value."""

    code = "invalid-argument"
    http_status = status_of(code)


class FutureRevision(InvalidArgument):
    """A read, watch or compaction asked for a revision beyond the current one."""

    code = "future-revision"
    http_status = status_of(code)


class NotFound(ServiceError):
    """A named object (a lease, a session) does not exist."""

    code = "not-found"
    http_status = status_of(code)


class AlreadyExists(ServiceError):
    """An object with that id already exists (e.g. an explicit lease id)."""

    code = "already-exists"
    http_status = status_of(code)


class CompareFailed(ServiceError):
    """A compare-and-swap did not hold. Transactions report this as a result instead."""

    code = "compare-failed"
    http_status = status_of(code)


class Compacted(ServiceError):
    """The asked revision is older than the compaction point; details: compact_revision."""

    code = "compacted"
    http_status = status_of(code)


class SessionExpired(ServiceError):
    """The client session or the cached response for that sequence number is gone."""

    code = "session-expired"
    http_status = status_of(code)


class TooLarge(ServiceError):
    """A key, value, command or request exceeds a byte bound; details: limit, max."""

    code = "too-large"
    http_status = status_of(code)


class LimitExceeded(ServiceError):
    """A count bound is full (keys, leases, sessions, watchers...); details: limit, max."""

    code = "limit-exceeded"
    http_status = status_of(code)


_BY_CODE: dict[str, type[ServiceError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        FutureRevision,
        NotFound,
        AlreadyExists,
        CompareFailed,
        Compacted,
        SessionExpired,
        TooLarge,
        LimitExceeded,
    )
}


def error_from_dict(body: dict[str, Any]) -> ServiceError:
    """Rebuild the typed error from a :meth:`ServiceError.to_dict` body (client side).

    Raises KeyError if ``body`` has no ``code`` or ``message``; an unknown code gives a
    plain :class:`ServiceError`.
    """
    cls = _BY_CODE.get(body["code"], ServiceError)
    details = {k: v for k, v in body.items() if k not in ("code", "status", "message")}
    error = cls(body["message"], **details)
    assert error.code == body["code"] or cls is ServiceError
    return error
