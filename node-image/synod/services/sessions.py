"""Exactly-once client sessions (Raft dissertation section 6.3), pure and replicated.

A client opens a session with a ``session_open`` command; its id is the log index of
that command, so ids are unique across the cluster's whole life and never reused. Each
later command carries ``(client_id, seq, ack_seq)``:

* the first time a ``seq`` is applied, the op runs and its response is cached;
* a retried ``seq`` (the client timed out, a follower re-forwarded it) returns the cached
  response without running the op again;
* ``ack_seq`` tells the replicas that the client has received every response below it,
  so those cached responses are dropped; a command whose ``seq`` is below the acked
  floor can only be a stale duplicate and gets ``SessionExpired``;
* an unknown ``client_id`` (never opened, closed, or evicted) gets ``SessionExpired``:
  the client must open a new session and treat its outstanding requests as unknown.

Bounds: ``sessions_max`` sessions (opening one more evicts the least recently active
session, by log index, deterministically) and ``responses_per_session_max`` cached
responses per session (a command beyond it is refused with ``LimitExceeded`` and is NOT
run, so the client may retry it after acknowledging older responses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from synod.services.errors import InvalidArgument, LimitExceeded, SessionExpired

__all__ = [
    "RESPONSES_PER_SESSION_MAX",
    "SESSIONS_MAX",
    "Result",
    "Session",
    "SessionTable",
]

SESSIONS_MAX = 10_000
# In-flight (un-acknowledged) requests one client may pipeline.
RESPONSES_PER_SESSION_MAX = 256

# A response: a msgpack-able map. Cached responses are shared, callers must not mutate.
Result = dict[str, Any]


@dataclass(slots=True)
class Session:
    """One client's replicated session state."""

    client_id: int
    last_active_index: int
    # Responses for seq < acked_seq were dropped; such a seq can only be a stale retry.
    acked_seq: int = 0
    responses: dict[int, Result] = field(default_factory=dict)


class SessionTable:
    """Bounded table of client sessions; part of the replicated state and its snapshot."""

    def __init__(
        self,
        sessions_max: int = SESSIONS_MAX,
        responses_per_session_max: int = RESPONSES_PER_SESSION_MAX,
    ) -> None:
        """Create an empty table. Raises nothing (asserts the bounds are positive)."""
        assert sessions_max >= 1, "sessions_max must be positive"
        assert responses_per_session_max >= 1, "responses_per_session_max must be positive"
        self.sessions_max = sessions_max
        self.responses_per_session_max = responses_per_session_max
        self._sessions: dict[int, Session] = {}

    def __len__(self) -> int:
        """Number of open sessions. Raises nothing."""
        return len(self._sessions)

    def __contains__(self, client_id: object) -> bool:
        """True if ``client_id`` has an open session. Raises nothing."""
        return client_id in self._sessions

    def get(self, client_id: int) -> Session | None:
        """The session of ``client_id`` or None (read-only use). Raises nothing."""
        return self._sessions.get(client_id)

    def open(self, index: int) -> int:
        """Open a session whose client id is ``index`` (the log index of the command).

        Evicts the least recently active session when ``sessions_max`` is reached.
        Raises nothing (asserts ``index`` is a fresh positive log index).
        """
        assert index > 0, "client ids are log indexes, which start at 1"
        assert index not in self._sessions, "a log index opens at most one session"
        if len(self._sessions) >= self.sessions_max:
            self._evict_one()
        self._sessions[index] = Session(client_id=index, last_active_index=index)
        assert len(self._sessions) <= self.sessions_max
        return index

    def close(self, client_id: int) -> None:
        """Forget the session of ``client_id``.

        Raises SessionExpired if there is no such session (already closed or evicted).
        """
        assert client_id >= 0
        if self._sessions.pop(client_id, None) is None:
            raise SessionExpired(f"session {client_id} does not exist", client_id=client_id)
        assert client_id not in self._sessions

    def _evict_one(self) -> None:
        """Drop the least recently active session; ties are impossible (one index, one
        session) but client_id breaks them anyway for determinism."""
        assert self._sessions
        victim = min(self._sessions.values(), key=lambda s: (s.last_active_index, s.client_id))
        del self._sessions[victim.client_id]

    def apply(
        self,
        index: int,
        client_id: int,
        seq: int,
        ack_seq: int,
        fn: Callable[[], Result],
    ) -> Result:
        """Run ``fn`` at most once for ``(client_id, seq)`` and return its response.

        ``client_id`` 0 runs ``fn`` without de-duplication. ``fn`` must not raise (turn
        errors into results first): if it does, nothing is cached and the error propagates.
        Raises SessionExpired (unknown client, or ``seq`` below the acked floor),
        InvalidArgument (``seq`` < 1 or ``ack_seq`` > ``seq``) and LimitExceeded (more than
        ``responses_per_session_max`` un-acknowledged responses); none of these run ``fn``.
        """
        assert index > 0
        if client_id == 0:
            return fn()
        if seq < 1 or ack_seq > seq:
            raise InvalidArgument("session commands need 1 <= seq and ack_seq <= seq")
        session = self._sessions.get(client_id)
        if session is None:
            raise SessionExpired(f"session {client_id} does not exist", client_id=client_id)
        session.last_active_index = index
        self._acknowledge(session, ack_seq)
        cached = session.responses.get(seq)
        if cached is not None:
            return cached
        if seq < session.acked_seq:
            raise SessionExpired(
                f"response to seq {seq} of session {client_id} was acknowledged and dropped",
                client_id=client_id,
                seq=seq,
            )
        if len(session.responses) >= self.responses_per_session_max:
            raise LimitExceeded(
                f"session {client_id} has {len(session.responses)} unacknowledged responses",
                limit="responses_per_session_max",
                max=self.responses_per_session_max,
            )
        response = fn()
        session.responses[seq] = response
        assert len(session.responses) <= self.responses_per_session_max
        return response

    def _acknowledge(self, session: Session, ack_seq: int) -> None:
        """Raise the acked floor to ``ack_seq`` (monotone: stale acks are ignored) and
        drop the responses below it."""
        if ack_seq <= session.acked_seq:
            return
        session.acked_seq = ack_seq
        for seq in [s for s in session.responses if s < ack_seq]:
            del session.responses[seq]
        assert all(s >= ack_seq for s in session.responses)

    # -- snapshot ---------------------------------------------------------------------

    def to_snapshot(self) -> list[Any]:
        """Deterministic msgpack-able form: sessions sorted by client id, responses by
        seq. Raises nothing."""
        out: list[Any] = []
        for client_id in sorted(self._sessions):
            session = self._sessions[client_id]
            responses = [[seq, session.responses[seq]] for seq in sorted(session.responses)]
            out.append([client_id, session.last_active_index, session.acked_seq, responses])
        assert len(out) <= self.sessions_max
        return out

    def restore(self, data: list[Any]) -> None:
        """Replace the table's content with a :meth:`to_snapshot` form.

        Raises InvalidArgument if ``data`` is malformed or exceeds the bounds.
        """
        if not isinstance(data, list) or len(data) > self.sessions_max:
            raise InvalidArgument("snapshot sessions must be a list within sessions_max")
        sessions: dict[int, Session] = {}
        try:
            for client_id, last_active_index, acked_seq, responses in data:
                if len(responses) > self.responses_per_session_max:
                    raise InvalidArgument("snapshot session exceeds responses_per_session_max")
                session = Session(int(client_id), int(last_active_index), int(acked_seq))
                session.responses = {int(seq): dict(result) for seq, result in responses}
                sessions[session.client_id] = session
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"malformed sessions snapshot: {exc}") from None
        self._sessions = sessions
        assert len(self._sessions) <= self.sessions_max
