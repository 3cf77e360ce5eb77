"""Typed client errors mapped from the RFC 9457 problem documents of docs/api.md.

Every error carries the problem's ``code`` (the last path segment of its ``type``),
``status``, ``title``, ``detail`` and the whole ``problem`` dict, so callers can read
extra members such as ``compact_revision``, ``limit`` or ``leader_client_url``.

Hierarchy (``except SynodError`` catches them all)::

    SynodError
    ├── InvalidArgument (400) ── FutureRevision (400)
    ├── NotFound (404) ── LeaseExpired (a kept-alive lease is gone)
    ├── HostNotAllowed (403)
    ├── MethodNotAllowed (405)
    ├── Conflict (409) ── CompareFailed, AlreadyExists, NotCaughtUp, ConfChangePending,
    │                     ConfChangeInvalid, TransferInvalid, LockNotHeld,
    │                     LockWaitTimeout, LockUpgradeRefused, FencingTokenStale
    ├── Compacted (410)
    ├── SessionExpired (410)
    ├── TooLarge (413)
    ├── UnsupportedMediaType (415)
    ├── NotLeader (421)
    ├── LimitExceeded (429)
    ├── Unavailable (503 / connection failures) ── NoLeader, OutcomeUnknown,
    │                                               RequestTimeout, NotReady, Unhealthy,
    │                                               BodyTimeout (408)
    └── ProtocolError (an answer that does not follow docs/api.md, e.g. a 404 from
                       something that is not a Synod node)

Statuses and outcomes come from :mod:`synod.codes`: ``error.definite`` is True when the
server said the write was surely not applied.
"""

from __future__ import annotations

from typing import Any, ClassVar

from synod.codes import PROBLEM_TYPE_PREFIX, is_definite, status_of

__all__ = [
    "PROBLEM_TYPE_PREFIX",
    "AlreadyExists",
    "BodyTimeout",
    "ClockRollback",
    "Compacted",
    "CompareFailed",
    "ConfChangeInvalid",
    "ConfChangePending",
    "Conflict",
    "FencingTokenStale",
    "FutureRevision",
    "GeneratorNotFound",
    "HostNotAllowed",
    "InvalidArgument",
    "LeaseExpired",
    "LimitExceeded",
    "LockNotHeld",
    "LockUpgradeRefused",
    "LockWaitTimeout",
    "MethodNotAllowed",
    "NoLeader",
    "NotCaughtUp",
    "NotFound",
    "NotLeader",
    "NotReady",
    "OutcomeUnknown",
    "ProtocolError",
    "RequestTimeout",
    "SessionExpired",
    "SynodError",
    "TooLarge",
    "TransferInvalid",
    "Unavailable",
    "Unhealthy",
    "UnsupportedMediaType",
    "WorkerLeaseLost",
    "error_from_problem",
]


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

    @property
    def definite(self) -> bool:
        """True when the server said a write that failed so was surely not applied
        (docs/api.md, outcome column); False when it may have been, or when no server
        said anything. Raises nothing."""
        code = self.problem.get("code")
        return is_definite(code if isinstance(code, str) else self.code)

    def __repr__(self) -> str:
        """Class and detail, for debugging. Raises nothing."""
        return f"{type(self).__name__}({self.detail!r})"


class InvalidArgument(SynodError):
    """The request was malformed (bad JSON, wrong types, unknown fields, empty key)."""

    code = "invalid-argument"
    status = status_of(code)


class FutureRevision(InvalidArgument):
    """A revision beyond the current one was asked for."""

    code = "future-revision"


class NotFound(SynodError):
    """The key (GET) or lease does not exist."""

    code = "not-found"
    status = status_of(code)


class MethodNotAllowed(SynodError):
    """The route does not take that method (a client built for another API version)."""

    code = "method-not-allowed"
    status = status_of(code)


class HostNotAllowed(SynodError):
    """The node's Host allow-list (``--host-allow``) does not name the host this client
    used in its URL: connect by an allowed name or an IP address."""

    code = "host-not-allowed"
    status = status_of(code)


class UnsupportedMediaType(SynodError):
    """The request body was not sent as ``application/json`` (a client bug)."""

    code = "unsupported-media-type"
    status = status_of(code)


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


class ConfChangePending(Conflict):
    """Another membership change is still in flight; retry later."""

    code = "conf-change-pending"


class ConfChangeInvalid(Conflict):
    """The change does not fit the membership: the last voter, an id that is a member
    with another address, an address another member uses (``member_id``)."""

    code = "conf-change-invalid"


class TransferInvalid(Conflict):
    """Leadership cannot move there: not a voter, or no other voter."""

    code = "transfer-invalid"


class LockNotHeld(Conflict):
    """The owner neither holds nor waits for the lock (released, expired, revoked)."""

    code = "lock-not-held"


class LockWaitTimeout(Conflict):
    """The lock was not granted within the wait bound; the waiter left the queue."""

    code = "lock-wait-timeout"


class LockUpgradeRefused(Conflict):
    """A read holder asked for the write lock of an rw lock: release the read first."""

    code = "lock-upgrade-refused"


class FencingTokenStale(Conflict):
    """A fencing token is not a current holder's; ``problem["current"]`` is the newest
    holder's token (0 if none)."""

    code = "fencing-token-stale"


class Compacted(SynodError):
    """The revision was compacted away; ``compact_revision`` is the oldest readable."""

    code = "compacted"
    status = status_of(code)

    @property
    def compact_revision(self) -> int:
        """The oldest revision still readable (0 when the server did not say). Raises nothing."""
        value = self.problem.get("compact_revision", 0)
        return value if isinstance(value, int) else 0


class SessionExpired(SynodError):
    """The client session is gone. When ``outcome_unknown`` the write may have been
    applied (an earlier attempt went unanswered); otherwise it surely was not."""

    code = "session-expired"
    status = status_of(code)
    outcome_unknown: bool = True


class TooLarge(SynodError):
    """A key, value, request or txn exceeds a named bound (``limit``, ``max``)."""

    code = "too-large"
    status = status_of(code)


class NotLeader(SynodError):
    """Only the leader can serve it and forwarding was impossible."""

    code = "not-leader"
    status = status_of(code)
    retryable = True

    @property
    def leader_client_url(self) -> str | None:
        """The leader's client URL when the node knows it. Raises nothing."""
        url = self.problem.get("leader_client_url")
        return url if isinstance(url, str) and url else None


class LimitExceeded(SynodError):
    """A count bound is full (watchers, pending requests, session responses)."""

    code = "limit-exceeded"
    status = status_of(code)

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
    """No leader is known (an election is in progress or quorum is lost) or it could not
    be reached: the write was surely not applied."""

    code = "no-leader"


class OutcomeUnknown(Unavailable):
    """The write reached the leader but its answer was lost: it may have been applied.
    The client retries it with the same session seq, which answers it exactly once."""

    code = "outcome-unknown"


class RequestTimeout(Unavailable):
    """The node did not finish the request within its request timeout."""

    code = "timeout"


class NotReady(Unavailable):
    """The node is not ready to serve (starting, catching up)."""

    code = "not-ready"


class Unhealthy(Unavailable):
    """The node's Raft loop is dead or stalled (`/healthz`); it needs a restart."""

    code = "unhealthy"


class BodyTimeout(Unavailable):
    """The node did not receive the request body in time (408); nothing was done."""

    code = "request-timeout"
    status = status_of(code)


class GeneratorNotFound(NotFound):
    """No ID generator of that name is defined (/v1/ids)."""

    code = "generator-not-found"


class WorkerLeaseLost(Conflict):
    """An ID generator's worker lease expired, was released or granted again."""

    code = "worker-lease-lost"
    status = status_of(code)


class ClockRollback(SynodError):
    """An ID generator's clock is behind its last timestamp or high-water mark by more
    than it may wait out; ``problem["behind_ms"]`` says by how much. Not retried by the
    client: the caller decides whether to wait."""

    code = "clock-rollback"
    status = status_of(code)


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
        MethodNotAllowed,
        HostNotAllowed,
        UnsupportedMediaType,
        CompareFailed,
        AlreadyExists,
        NotCaughtUp,
        ConfChangePending,
        ConfChangeInvalid,
        TransferInvalid,
        LockNotHeld,
        LockWaitTimeout,
        LockUpgradeRefused,
        FencingTokenStale,
        Compacted,
        SessionExpired,
        TooLarge,
        NotLeader,
        LimitExceeded,
        NoLeader,
        OutcomeUnknown,
        RequestTimeout,
        NotReady,
        Unhealthy,
        BodyTimeout,
        GeneratorNotFound,
        WorkerLeaseLost,
        ClockRollback,
    )
}

# A Synod problem whose code this client does not know (a newer server) is typed by
# its status.
_BY_STATUS: dict[int, type[SynodError]] = {
    400: InvalidArgument,
    404: NotFound,
    408: BodyTimeout,
    409: Conflict,
    410: Compacted,
    413: TooLarge,
    415: UnsupportedMediaType,
    421: NotLeader,
    429: LimitExceeded,
    503: Unavailable,
}
# An answer that is not a Synod problem document came from something else (a proxy, a
# load balancer, another service on the port): only gateway failures mean "retry".
_FOREIGN_RETRYABLE_STATUSES = frozenset({502, 503, 504})


def error_from_problem(status: int, problem: Any) -> SynodError:
    """Map an HTTP error answer to its typed error.

    ``problem`` is the decoded body. Only a Synod problem document (its ``type`` under
    ``PROBLEM_TYPE_PREFIX``) is read for its code: any other 404 is not "key absent",
    it is ProtocolError (a script must not take it for a missing key), like any foreign
    4xx; a foreign 502, 503 or 504 is Unavailable, another 5xx a plain SynodError.
    Raises nothing.
    """
    doc: dict[str, Any] = problem if isinstance(problem, dict) else {}
    type_uri = doc.get("type")
    detail = doc.get("detail") or doc.get("title") or f"HTTP {status}"
    if not isinstance(type_uri, str) or not type_uri.startswith(PROBLEM_TYPE_PREFIX):
        if status in _FOREIGN_RETRYABLE_STATUSES:
            return Unavailable(str(detail), doc)
        if status >= 500:
            return SynodError(str(detail), doc)  # a server failed: outcome unknown
        return ProtocolError(f"HTTP {status} without a Synod problem document ({detail}): "
                             "is this a Synod endpoint?", doc)  # fmt: skip
    code = type_uri.removeprefix(PROBLEM_TYPE_PREFIX)
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or SynodError
    return cls(str(detail), doc)
