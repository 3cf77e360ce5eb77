"""Every problem code of the client API, declared once: HTTP status, outcome, meaning.

A problem code is the stable machine name of a failure (the last segment of a problem
document's ``type``, ``https://synod.dev/problems/<code>``); it is public API and is
never renamed. The Raft core, the services, the node, the HTTP layer, the OpenAPI
document, the SDK and docs/api.md all take their codes and statuses from here (a unit
test checks the docs and the served document against this table).

``outcome`` tells a client what a failed *write* did:

* ``DEFINITE``: nothing was applied. Retrying is safe even without a session.
* ``INDETERMINATE``: the write may or may not have been applied. Only a retry with the
  same session ``Synod-Seq`` learns which (the cluster answers it once, with the first
  answer); without a session the outcome cannot be learned.

This module is a leaf: it imports no other synod module, so every layer may use it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "CODES",
    "PROBLEM_TYPE_PREFIX",
    "Outcome",
    "ProblemCode",
    "is_definite",
    "status_of",
]

PROBLEM_TYPE_PREFIX = "https://synod.dev/problems/"


class Outcome(enum.Enum):
    """What a write that failed with a code did."""

    DEFINITE = "definite"  # nothing applied
    INDETERMINATE = "indeterminate"  # maybe applied: retry with the same session seq


@dataclass(frozen=True, slots=True)
class ProblemCode:
    """One problem code: its HTTP status, its outcome and a one-line meaning."""

    code: str
    status: int
    title: str
    outcome: Outcome
    description: str

    def __post_init__(self) -> None:
        assert 400 <= self.status <= 599, f"{self.code}: a problem is a 4xx or 5xx answer"
        assert self.code == self.code.lower() and " " not in self.code, "codes are kebab-case"


_D, _I = Outcome.DEFINITE, Outcome.INDETERMINATE

_TABLE = (
    ProblemCode("invalid-argument", 400, "Invalid argument", _D,
                "malformed JSON, wrong types, unknown fields or parameters, bad addresses"),
    ProblemCode("future-revision", 400, "Revision is in the future", _D,
                "a revision beyond the current one was asked for"),
    ProblemCode("host-not-allowed", 403, "Host not allowed", _D,
                "the Host header names no host of the node's allow-list (--host-allow)"),
    ProblemCode("not-found", 404, "Not found", _D,
                "the key (GET), lease, member or route does not exist"),
    ProblemCode("generator-not-found", 404, "Generator not found", _D,
                "no ID generator of that name is defined (/v1/ids)"),
    ProblemCode("method-not-allowed", 405, "Method not allowed", _D,
                "the route exists for other methods (listed in Allow)"),
    ProblemCode("request-timeout", 408, "Request body not received in time", _D,
                "the request body did not arrive within request_body_read_timeout_ms"),
    ProblemCode("already-exists", 409, "Already exists", _D,
                "an object with that id exists (an explicit lease id)"),
    ProblemCode("compare-failed", 409, "Compare failed", _D,
                "a compare-and-swap did not hold"),
    ProblemCode("lock-not-held", 409, "Lock not held", _D,
                "the owner neither holds nor waits for the lock (released, expired, revoked)"),
    ProblemCode("lock-wait-timeout", 409, "Lock wait timed out", _D,
                "the lock was not granted within wait_ms; the waiter left the queue"),
    ProblemCode("lock-upgrade-refused", 409, "Lock upgrade refused", _D,
                "a read holder asked for the write lock; release the read lock first"),
    ProblemCode("fencing-token-stale", 409, "Fencing token stale", _D,
                "the token is not a current holder's (released, expired or revoked); "
                "current is the newest holder's token, 0 if none"),
    ProblemCode("not-caught-up", 409, "Learner not caught up", _D,
                "a learner cannot be promoted before it has caught up; retry later"),
    ProblemCode("conf-change-pending", 409, "Membership change pending", _D,
                "another membership change is still in flight; retry later"),
    ProblemCode("conf-change-invalid", 409, "Membership change invalid", _D,
                "the change does not fit the membership: last voter, id or address in use"),
    ProblemCode("transfer-invalid", 409, "Leadership transfer invalid", _D,
                "leadership cannot move there: not a voter, or no other voter"),
    ProblemCode("worker-lease-lost", 409, "Worker lease lost", _D,
                "the ID generator's worker lease expired, was released or granted again "
                "(fencing epoch); acquire a new one"),
    ProblemCode("compacted", 410, "Revision compacted", _D,
                "the revision was compacted away (compact_revision is the oldest kept)"),
    ProblemCode("session-expired", 410, "Session expired", _I,
                "the session is gone (closed, evicted) or the seq was acknowledged; "
                "earlier attempts of the write may have been applied"),
    ProblemCode("too-large", 413, "Too large", _D,
                "a key, value, body or txn exceeds a named bound (limit, max)"),
    ProblemCode("unsupported-media-type", 415, "Unsupported media type", _D,
                "a request body must be sent as Content-Type: application/json"),
    ProblemCode("not-leader", 421, "Not the leader", _D,
                "only the leader serves it and forwarding was impossible (leader_client_url)"),
    ProblemCode("limit-exceeded", 429, "Limit exceeded", _D,
                "a count bound is full (limit names it: pending requests, watchers...)"),
    ProblemCode("internal", 500, "Internal error", _I,
                "a bug; the node's log says more"),
    ProblemCode("no-leader", 503, "No leader", _D,
                "no leader is known or it could not be reached; nothing was sent to it"),
    ProblemCode("outcome-unknown", 503, "Outcome unknown", _I,
                "the write reached the leader but its answer was lost (forward cut, "
                "leader lost, node stopping); retry with the same session seq"),
    ProblemCode("timeout", 503, "Timeout", _I,
                "no answer within request_timeout_ms; retry with the same session seq"),
    ProblemCode("clock-rollback", 503, "Clock rolled back", _D,
                "the ID generator's clock is behind its last timestamp or high-water mark "
                "by more than rollback_wait_ms_max (behind_ms); retry later"),
    ProblemCode("not-ready", 503, "Not ready", _D,
                "/readyz: no leader known or still catching up (reason)"),
    ProblemCode("unhealthy", 503, "Unhealthy", _D,
                "/healthz: the Raft loop is dead or has not turned within "
                "loop_stall_ms_max (reason); restart the process"),
)  # fmt: skip

CODES: Mapping[str, ProblemCode] = MappingProxyType({entry.code: entry for entry in _TABLE})
assert len(CODES) == len(_TABLE), "a code is declared once"


def status_of(code: str) -> int:
    """The HTTP status of ``code``. Raises KeyError for an undeclared code."""
    return CODES[code].status


def is_definite(code: str) -> bool:
    """True when a write that failed with ``code`` was surely not applied; False for
    indeterminate and undeclared codes (an unknown failure may have done anything).

    Raises nothing."""
    entry = CODES.get(code)
    return entry is not None and entry.outcome is Outcome.DEFINITE
