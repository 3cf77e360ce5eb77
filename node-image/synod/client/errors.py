"""Typed client errors mapped from the RFC 9457 problem documents of docs/api.md.

Every error carries the problem's ``code`` (the last path segment of its ``type``),
``status``, ``title``, ``detail`` and the whole ``problem`` dict, so callers can read
extra members such as ``compact_revision``, ``limit`` or ``leader_client_url``.

Hierarchy (``except SynodError`` catches them all)::

    SynodError
    ├── InvalidArgument (400) ── FutureRevision (400)
    ├── NotFound (404) ── LeaseExpired (a kept-alive lease is gone)
    ├── Conflict (409) ── CompareFailed, AlreadyExists, NotCaughtUp
    ├── Compacted (410)
    ├── SessionExpired (410)
    ├── TooLarge (413)
    ├── NotLeader (421)
    ├── LimitExceeded (429)
    ├── Unavailable (503 / connection failures) ── NoLeader, RequestTimeout, NotReady,
    │                                               BodyTimeout (408)
    └── ProtocolError (an answer that does not follow docs/api.md)
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "PROBLEM_TYPE_PREFIX",
    "AlreadyExists",
    "BodyTimeout",
    "Compacted",
    "CompareFailed",
    "Conflict",
    "FutureRevision",
    "InvalidArgument",
    "LeaseExpired",
    "LimitExceeded",
    "NoLeader",
    "NotCaughtUp",
    "NotFound",
    "NotLeader",
    "NotReady",
    "ProtocolError",
    "RequestTimeout",
    "SessionExpired",
    "SynodError",
    "TooLarge",
    "Unavailable",
    "error_from_problem",
]

PROBLEM_TYPE_PREFIX = "https://synod.dev/problems/"


class SynodError(Exception):
    """Base of every client error. ``problem`` holds the server's document, if any."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    # Whether the client may retry the same request (with the same session seq).
    retryable: ClassVar[bool] = False

    def __init__(self, detail: str, problem: dict[str, Any] | None = None) -> None:
        """Build an error from a human ``detail`` and the optional problem document.

        Raises nothing.
        """
        super().__init__(detail)
        self.detail = detail
        self.problem: dict[str, Any] = dict(problem or {})
        self.title: str = str(self.problem.get("title", self.code))

    def __repr__(self) -> str:
        """Class and detail, for debugging. Raises nothing."""
        return f"{type(self).__name__}({self.detail!r})"


class InvalidArgument(SynodError):
    """The request was malformed (bad JSON, wrong types, unknown fields, empty key)."""

    code = "invalid-argument"
    status = 400


class FutureRevision(InvalidArgument):
    """A revision beyond the current one was asked for."""

    code = "future-revision"


class NotFound(SynodError):
    """The key (GET) or lease does not exist."""

    code = "not-found"
    status = 404


class LeaseExpired(NotFound):
    """A lease kept alive by :class:`synod.client.LeaseKeepAlive` expired or was revoked."""

    code = "lease-expired"


class Conflict(SynodError):
    """Base of the 409 answers."""

    code = "conflict"
    status = 409


class CompareFailed(Conflict):
    """A compare-and-swap did not hold. ``current`` is the key's KV when known."""

    code = "compare-failed"

    def __init__(
        self, detail: str, problem: dict[str, Any] | None = None, current: Any = None
    ) -> None:
        """Raises nothing."""
        super().__init__(detail, problem)
        self.current = current


class AlreadyExists(Conflict):
    """An object with that id already exists (e.g. an explicit lease id)."""

    code = "already-exists"


class NotCaughtUp(Conflict):
    """A learner cannot be promoted before it has caught up; retry later."""

    code = "not-caught-up"


class Compacted(SynodError):
    """The revision was compacted away; ``compact_revision`` is the oldest readable."""

    code = "compacted"
    status = 410

    @property
    def compact_revision(self) -> int:
        """The oldest revision still readable (0 when the server did not say). Raises nothing."""
        value = self.problem.get("compact_revision", 0)
        return value if isinstance(value, int) else 0


class SessionExpired(SynodError):
    """The client session is gone. When ``outcome_unknown`` the write may have been
    applied (an earlier attempt went unanswered); otherwise it surely was not."""

    code = "session-expired"
    status = 410
    outcome_unknown: bool = True


class TooLarge(SynodError):
    """A key, value, request or txn exceeds a named bound (``limit``, ``max``)."""

    code = "too-large"
    status = 413


class NotLeader(SynodError):
    """Only the leader can serve it and forwarding was impossible."""

    code = "not-leader"
    status = 421
    retryable = True

    @property
    def leader_client_url(self) -> str | None:
        """The leader's client URL when the node knows it. Raises nothing."""
        url = self.problem.get("leader_client_url")
        return url if isinstance(url, str) and url else None


class LimitExceeded(SynodError):
    """A count bound is full (watchers, pending requests, session responses)."""

    code = "limit-exceeded"
    status = 429

    @property
    def transient(self) -> bool:
        """True when waiting helps (a node's pending queue), not a replicated bound.

        Raises nothing."""
        return self.problem.get("limit") in (None, "pending_requests_max")


class Unavailable(SynodError):
    """No node could serve the request (no quorum, no answer, connection refused)."""

    code = "unavailable"
    status = 503
    retryable = True


class NoLeader(Unavailable):
    """No leader is known: an election is in progress or quorum is lost."""

    code = "no-leader"


class RequestTimeout(Unavailable):
    """The node did not finish the request within its request timeout."""

    code = "timeout"


class NotReady(Unavailable):
    """The node is not ready to serve (starting, catching up)."""

    code = "not-ready"


class BodyTimeout(Unavailable):
    """The node did not receive the request body in time (408); nothing was done."""

    code = "request-timeout"
    status = 408


class ProtocolError(SynodError):
    """The server answered something docs/api.md does not allow."""

    code = "protocol-error"
    status = 502


_BY_CODE: dict[str, type[SynodError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        FutureRevision,
        NotFound,
        CompareFailed,
        AlreadyExists,
        NotCaughtUp,
        Compacted,
        SessionExpired,
        TooLarge,
        NotLeader,
        LimitExceeded,
        NoLeader,
        RequestTimeout,
        NotReady,
        BodyTimeout,
    )
}

_BY_STATUS: dict[int, type[SynodError]] = {
    400: InvalidArgument,
    404: NotFound,
    408: BodyTimeout,
    409: Conflict,
    410: Compacted,
    413: TooLarge,
    421: NotLeader,
    429: LimitExceeded,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def error_from_problem(status: int, problem: Any) -> SynodError:
    """Map an HTTP error answer to its typed error.

    ``problem`` is the decoded body (a problem document, or anything else when a proxy
    answered). Unknown codes fall back on the HTTP status. Raises nothing.
    """
    doc: dict[str, Any] = problem if isinstance(problem, dict) else {}
    type_uri = doc.get("type")
    code = type_uri.rsplit("/", 1)[-1] if isinstance(type_uri, str) else ""
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or SynodError
    detail = doc.get("detail") or doc.get("title") or f"HTTP {status}"
    return cls(str(detail), doc)
