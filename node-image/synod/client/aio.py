"""The asyncio Synod client: endpoints, leader discovery, sessions, retries, watches.

Retry safety: every write carries this client's session (`Synod-Client-Id`,
`Synod-Seq`, `Synod-Ack-Seq`) and a retry re-sends the same seq, so the cluster applies
it once and answers the retry with the first answer. Reads and admin calls are
idempotent. Hence any request may be retried after a lost connection, a timeout, a
503 or a 421, with bounded exponential backoff and jitter (`attempts_max`,
`backoff_ms_base`, `backoff_ms_max`).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import random
import ssl
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import aiohttp
from opentelemetry import propagate

from synod.client import ratelimit as client_ratelimit
from synod.client.batch import Batcher
from synod.client.errors import (
    PROBLEM_TYPE_PREFIX,
    Compacted,
    CompareFailed,
    LimitExceeded,
    NotLeader,
    OutcomeUnknown,
    ProtocolError,
    SessionExpired,
    SynodError,
    Unavailable,
    error_from_problem,
)
from synod.client.lease import LeaseKeepAlive
from synod.client.locks import (
    DRIFT_DEFAULT,
    SESSIONS_PER_CLIENT_MAX,
    Election,
    Lock,
    LockSession,
    RWLock,
    poll_ms,
    validate_token,
)
from synod.client.ratelimit import RateLimitResult
from synod.client.sse import iter_sse
from synod.client.txn import Txn, range_, value, version
from synod.client.txn import put as put_op
from synod.client.types import (
    KV,
    ClusterStatus,
    DeleteResult,
    LeaseGrant,
    LeaseInfo,
    LeaseList,
    PutResult,
    RangeResult,
    TxnResult,
    WatchEvent,
    to_base64,
)
from synod.tls import client_context

P = ParamSpec("P")
T = TypeVar("T")

__all__ = ["DEV_ENDPOINTS", "AsyncClient", "ConnectionState", "StateListener",
           "normalize_endpoints"]  # fmt: skip

log = logging.getLogger(__name__)

# What `synod dev` (3 nodes) listens on; the default for clients and the CLI.
DEV_ENDPOINTS = ["http://127.0.0.1:2379", "http://127.0.0.1:2479", "http://127.0.0.1:2579"]

# A write that got `session-expired` before it could have been applied is re-sent once
# in a fresh session; a second expiry in a row is reported.
SESSION_REOPENS_MAX = 1
# The server caches at most 256 un-acknowledged answers per session; stay well below.
WRITES_IN_FLIGHT_MAX = 128
# Closing must not hold a program's exit up for long: an unclosed session is evicted.
SESSION_CLOSE_ATTEMPTS_MAX = 2
# A leader probe must not hold a request up for long: a dead endpoint is skipped.
DISCOVERY_TIMEOUT_S_MAX = 2.0

# An endpoint that failed is avoided this long (about one election) unless all failed.
ENDPOINT_PENALTY_S = 1.0

Sleep = Callable[[float], Awaitable[None]]
# Connection-state listeners per client (kazoo's add_listener); more is a caller's bug.
LISTENERS_MAX = 64


class ConnectionState(enum.Enum):
    """What the client knows of its link to the cluster (kazoo's KazooState).

    CONNECTED: the last request reached a node. SUSPENDED: requests fail to reach a
    node and are being retried (writes may be in doubt until it answers again). LOST:
    the cluster evicted this client's session (de-duplication of its writes restarts
    with a new one; locks and leases it held may be gone)."""

    CONNECTED = "connected"
    SUSPENDED = "suspended"
    LOST = "lost"


StateListener = Callable[[ConnectionState], None]
# Keys and values: text (stored as UTF-8) or any bytes. They travel as base64
# (`"encoding": "base64"`), so that bytes come back exactly as they were written.
Data = str | bytes
BASE64 = {"encoding": "base64"}


def _shown_data(data: Data) -> str:
    """A key or value for a message: text as is, bytes that are not UTF-8 as repr.

    Raises nothing."""
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return repr(data)


def _shown(kv: KV) -> str:
    """Raises nothing."""
    return repr(_shown_data(kv.value_bytes))


def normalize_endpoints(endpoints: Sequence[str] | str | None, scheme: str = "http") -> list[str]:
    """Turn `host:port`, URLs or a comma-separated string into distinct base URLs
    (``scheme`` for a bare `host:port`).

    ``None`` or empty means the `synod dev` addresses. Raises ValueError on an empty
    entry in a non-empty list.
    """
    if endpoints is None:
        return list(DEV_ENDPOINTS)
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    urls: list[str] = []
    for item in items:
        text = item.strip()
        if not text:
            if isinstance(endpoints, str) and not endpoints.strip():
                return list(DEV_ENDPOINTS)
            raise ValueError(f"empty endpoint in {endpoints!r}")
        url = text if "://" in text else f"{scheme}://{text}"
        url = url.rstrip("/")
        if url not in urls:
            urls.append(url)
    return urls or list(DEV_ENDPOINTS)


@dataclass(slots=True)
class _WatchCursor:
    """Where a watch resumes: from ``next_revision``, skipping the first ``skip_count``
    events of that revision (already delivered before a disconnect split it)."""

    next_revision: int
    skip_count: int = 0

    def delivered(self, revision: int) -> None:
        """Record one event handed to the caller. Raises nothing."""
        if revision == self.next_revision:
            self.skip_count += 1
        elif revision > self.next_revision:
            self.next_revision, self.skip_count = revision, 1

    def should_skip(self, revision: int, seen_now: int) -> bool:
        """True for an event re-sent after a resume. Raises nothing."""
        return revision < self.next_revision or (
            revision == self.next_revision and seen_now <= self.skip_count
        )

    def accept(self, revision: int, seen: dict[int, int]) -> bool:
        """Whether to deliver the next event of ``revision`` on a stream that has sent
        ``seen[r]`` events of each revision r so far (updated here). Raises nothing."""
        seen[revision] = seen.get(revision, 0) + 1
        if self.should_skip(revision, seen[revision]):
            return False
        self.delivered(revision)
        return True

    def advance_to(self, revision: int) -> None:
        """Everything below ``revision`` has been seen. Raises nothing."""
        if revision > self.next_revision:
            self.next_revision, self.skip_count = revision, 0


class AsyncClient:
    """A Synod client for asyncio code. Use as `async with AsyncClient(...) as client:`.

    ``timeout_s`` bounds one attempt; ``attempts_max`` bounds attempts per call (and
    consecutive failed reconnects of a watch). ``session=False`` sends writes without
    de-duplication: they are then retried only when they surely did not reach a node.
    ``batch=True`` (the default) sends the KV, lease and lock calls that concurrent tasks
    start in the same loop turn as one `/v1/batch` request (synod.client.batch).
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str | None = None,
        *,
        timeout_s: float = 5.0,
        attempts_max: int = 8,
        backoff_ms_base: int = 50,
        backoff_ms_max: int = 2_000,
        session: bool = True,
        discover_leader: bool = True,
        watch_idle_timeout_s: float = 30.0,
        sleep: Sleep | None = None,
        batch: bool = True,
        ca: str = "",
        cert: str = "",
        key: str = "",
        ssl_context: ssl.SSLContext | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Configure; nothing connects until the first call.

        TLS (docs/security.md): ``ca`` is the PEM bundle that signed the nodes'
        certificates (default: the system's CAs); ``cert`` and ``key`` a client
        certificate for nodes that ask for one; or a ready ``ssl_context`` instead.
        With any of them, endpoints given as ``host:port`` mean ``https://host:port``.
        ``headers`` go with every request (e.g. ``{"Authorization": "Bearer ..."}``).

        Raises ValueError on bad endpoints or bounds; OSError / ssl.SSLError when a
        TLS file cannot be loaded.
        """
        if attempts_max < 1 or timeout_s <= 0 or backoff_ms_base < 0:
            raise ValueError("attempts_max >= 1, timeout_s > 0 and backoff_ms_base >= 0")
        if backoff_ms_max < backoff_ms_base:
            raise ValueError("backoff_ms_max must be >= backoff_ms_base")
        self._ssl: ssl.SSLContext | None = ssl_context
        if self._ssl is None and (ca or cert or key):
            self._ssl = client_context(ca, cert, key)
        self.endpoints = normalize_endpoints(endpoints, "https" if self._ssl else "http")
        self.timeout_s = timeout_s
        self.attempts_max = attempts_max
        self.backoff_ms_base = backoff_ms_base
        self.backoff_ms_max = backoff_ms_max
        self.use_session = session
        self.discover_leader = discover_leader
        self.watch_idle_timeout_s = watch_idle_timeout_s
        self._sleep: Sleep = sleep or asyncio.sleep
        self._current = 0
        self._discovery_due = discover_leader
        self._keepers: weakref.WeakSet[LeaseKeepAlive] = weakref.WeakSet()
        self._locks: weakref.WeakSet[Lock] = weakref.WeakSet()
        self._lock_sessions: dict[tuple[int, float], LockSession] = {}
        self.quotas = client_ratelimit.QuotaCache()  # rate-limit grants (Envoy RLS Quota)
        self._penalties: dict[str, float] = {}  # url -> monotonic time it may be used again
        self._http: aiohttp.ClientSession | None = None
        self._client_id = 0
        self._next_seq = 1
        self._in_flight: set[int] = set()
        self._session_lock = asyncio.Lock()
        self._writes = asyncio.Semaphore(WRITES_IN_FLIGHT_MAX)
        self._batcher = Batcher(self._session, self._send_alone) if batch else None
        self._headers = dict(headers or {})
        self._listeners: list[StateListener] = []
        self._state = ConnectionState.SUSPENDED  # until a node answers
        self._closed = False

    def __repr__(self) -> str:
        """Raises nothing."""
        closed = " closed" if self._closed else ""
        return f"<AsyncClient {self.endpoint} {self._state.value}{closed}>"

    def __del__(self) -> None:
        """A client dropped without `close()`: close its connections on their loop
        (if it still runs) rather than leave aiohttp to warn about an unclosed
        session. Raises nothing."""
        http = getattr(self, "_http", None)
        if http is None or http.closed:
            return
        loop = getattr(http, "_loop", None)
        try:
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(_close_later, http)
            else:
                http.detach()  # the loop is gone: nothing left to close but the handle
        except RuntimeError:
            http.detach()

    # -- connection state (kazoo's listeners) -----------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The current connection state. Raises nothing."""
        return self._state

    def add_listener(self, listener: StateListener) -> None:
        """Call ``listener(state)`` on each change of state, on the client's loop: it
        must not block (hand work to a thread). Raises LimitExceeded beyond
        LISTENERS_MAX listeners."""
        if len(self._listeners) >= LISTENERS_MAX:
            raise LimitExceeded(f"{LISTENERS_MAX} state listeners",
                                {"limit": "listeners_max", "max": LISTENERS_MAX})  # fmt: skip
        self._listeners.append(listener)
        assert len(self._listeners) <= LISTENERS_MAX

    def remove_listener(self, listener: StateListener) -> None:
        """Stop calling ``listener``. Raises nothing (an unknown one is ignored)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _set_state(self, state: ConnectionState) -> None:
        """Record ``state`` and tell the listeners if it changed. Raises nothing: a
        listener that raises is logged."""
        if state is self._state:
            return
        self._state = state
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:
                log.exception("connection state listener %r failed", listener)

    # -- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        """Raises nothing."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the connections. Raises nothing."""
        await self.close()

    async def close(self) -> None:
        """Stop lease keepers, close the session on the cluster (kept leases then
        expire by their TTL) and close the HTTP connections.

        Raises nothing: a session that cannot be closed now (no node answers) is
        evicted by the cluster later."""
        for keeper in list(self._keepers):
            await keeper.stop()
        for held in list(self._locks):
            await held.stop_watchdog()  # a private lease then expires by its TTL
        for lock_session in list(self._lock_sessions.values()):  # SESSIONS_PER_CLIENT_MAX
            await lock_session.close()  # revokes the shared lease: its holds are released
        await self.close_session()
        self._closed = True
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def close_session(self) -> bool:
        """Close this client's session (`POST /v1/session/close`) if one is open; the
        next write opens a new one. At most SESSION_CLOSE_ATTEMPTS_MAX attempts.

        Returns whether the cluster confirmed the close (a session it no longer knows
        counts as closed). Raises nothing."""
        async with self._session_lock:
            client_id, self._client_id = self._client_id, 0
            if not client_id:
                return False
            try:
                await self._attempts("POST", "/v1/session/close", {"client_id": client_id},
                                     attempts_max=SESSION_CLOSE_ATTEMPTS_MAX)  # fmt: skip
            except SessionExpired:
                return True  # already closed (a retried close) or evicted
            except SynodError:
                return False
            return True

    @property
    def endpoint(self) -> str:
        """The endpoint the next request goes to. Raises nothing."""
        return self.endpoints[self._current]

    @property
    def client_id(self) -> int:
        """This client's session id (0 until the first write opens it). Raises nothing."""
        return self._client_id

    def _session(self) -> aiohttp.ClientSession:
        """The connection pool: one per client, created on first use (it belongs to the
        running loop) and closed by `close()`. Raises RuntimeError after `close()`."""
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl) if self._ssl else None
            self._http = aiohttp.ClientSession(connector=connector, headers=self._headers)
        return self._http

    # -- endpoints ------------------------------------------------------------------

    def _penalized(self, url: str) -> bool:
        """True while ``url`` failed recently. Raises nothing."""
        return self._penalties.get(url, 0.0) > time.monotonic()

    def _prefer(self, url: str) -> bool:
        """Send the next requests to ``url`` (added if new) unless it failed recently;
        a stale leader hint must not pull the client back to a dead node.

        Returns whether it switched. Raises nothing."""
        url = url.rstrip("/")
        if self._penalized(url):
            return False
        if url not in self.endpoints:
            self.endpoints.append(url)
        self._current = self.endpoints.index(url)
        return True

    def _failover(self, url: str) -> None:
        """``url`` failed: avoid it for a while, move on to the next endpoint that did not
        fail recently, and look for the leader again. Raises nothing."""
        self._penalties[url] = time.monotonic() + ENDPOINT_PENALTY_S
        count = len(self.endpoints)
        if self.endpoint == url:
            order = [(self._current + step) % count for step in range(1, count + 1)]
            healthy = [i for i in order if not self._penalized(self.endpoints[i])]
            self._current = (healthy or order)[0]
        self._discovery_due = self.discover_leader

    async def _endpoint(self) -> str:
        """The endpoint for the next attempt, probing for the leader when due."""
        if self._discovery_due:
            self._discovery_due = False
            url = await self._find_leader()
            if url:
                self._prefer(url)
        return self.endpoint

    async def _find_leader(self) -> str | None:
        """Ask each endpoint that did not fail recently, current first, for the leader's
        client URL. Raises nothing: an endpoint that fails is skipped.
        """
        timeout_s = min(self.timeout_s, DISCOVERY_TIMEOUT_S_MAX)
        count = len(self.endpoints)
        for offset in range(count):
            url = self.endpoints[(self._current + offset) % count]
            if self._penalized(url):
                continue
            try:
                status, doc = await self._send(
                    url, "GET", "/v1/cluster/status", None, {}, timeout_s
                )
            except (aiohttp.ClientError, TimeoutError, ProtocolError):
                continue
            leader = doc.get("leader_client_url") if status == 200 else None
            if isinstance(leader, str) and leader and not self._penalized(leader.rstrip("/")):
                return leader
        return None

    # -- one HTTP exchange ----------------------------------------------------------

    async def _send(
        self,
        url: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        headers: dict[str, str],
        timeout_s: float,
        params: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """One request; returns (status, decoded JSON object).

        Raises aiohttp.ClientError, TimeoutError, ProtocolError (a 2xx that is not a JSON
        object). A non-JSON error body decodes as `{}` (a proxy may have answered).
        """
        headers = dict(headers)
        propagate.inject(headers)  # W3C traceparent of the caller's span, if any (else no-op).
        if self._batcher is not None and Batcher.accepts(method, path, params):
            return await self._batcher.send(url, path, body, headers, timeout_s)
        return await self._exchange(url, method, path, body, headers, timeout_s, params)

    async def _send_alone(
        self, url: str, path: str, body: dict[str, Any] | None, headers: dict[str, str],
        timeout_s: float,
    ) -> tuple[int, dict[str, Any]]:  # fmt: skip
        """A batchable POST sent as its own request. Raises as `_send`."""
        return await self._exchange(url, "POST", path, body, headers, timeout_s, None)

    async def _exchange(
        self,
        url: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        headers: dict[str, str],
        timeout_s: float,
        params: dict[str, str] | None,
    ) -> tuple[int, dict[str, Any]]:
        """One HTTP request. Raises as `_send`."""
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with self._session().request(
            method,
            url + path,
            json=body,
            headers=headers,
            params=params,
            timeout=timeout,
            ssl=self._ssl or True,
        ) as resp:
            raw = await resp.read()
            status = resp.status
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            if status < 300:
                raise ProtocolError(f"{url}{path} answered {status} with a non-object body")
            doc = {}
        return status, doc

    # -- retries --------------------------------------------------------------------

    async def _backoff(self, attempt: int) -> None:
        """Sleep before attempt ``attempt + 1``: exponential, capped, half of it jittered
        so that clients that failed together do not retry together."""
        cap_ms = min(self.backoff_ms_max, self.backoff_ms_base * (2 ** (attempt - 1)))
        await self._sleep((cap_ms / 2 + random.uniform(0, cap_ms / 2)) / 1000)

    def _session_headers(self, session: tuple[int, int] | None) -> dict[str, str]:
        """Synod-* headers for a write of ``session`` = (client id, seq). Raises nothing."""
        if session is None:
            return {}
        client_id, seq = session
        # Everything below the oldest write still in flight has been answered.
        ack_seq = min(self._in_flight, default=seq)
        return {
            "Synod-Client-Id": str(client_id),
            "Synod-Seq": str(seq),
            "Synod-Ack-Seq": str(min(ack_seq, seq)),
        }

    async def _attempts(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        params: dict[str, str] | None = None,
        session: tuple[int, int] | None = None,
        unsafe_write: bool = False,
        attempts_max: int = 0,
    ) -> dict[str, Any]:
        """Run one request with bounded retries over the endpoints.

        ``unsafe_write``: a write without session, retried only when it surely was not
        applied (a lost connection, or an answer whose code is indeterminate in
        docs/api.md, ends it). A write with ``session`` is retried with the same seq
        whatever happened, which learns the outcome of an earlier attempt. Raises the
        typed SynodError of a final answer; when attempts run out, the last retryable
        error, or OutcomeUnknown if a write's earlier attempt may have been applied;
        SessionExpired with ``outcome_unknown``. ``attempts_max`` defaults to the
        client's.
        """
        attempts_max = attempts_max or self.attempts_max
        write = session is not None or unsafe_write
        last: SynodError = Unavailable("no attempt made")
        outcome_unknown = False
        for attempt in range(1, attempts_max + 1):
            url = await self._endpoint()
            headers = self._session_headers(session)
            try:
                status, doc = await self._send(
                    url, method, path, body, headers, self.timeout_s, params
                )
            except aiohttp.ClientConnectorError as exc:
                last = Unavailable(f"{url}: cannot connect ({exc.os_error})")
                self._failover(url)
                self._set_state(ConnectionState.SUSPENDED)
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome_unknown = True
                lost = f"{url}: {type(exc).__name__} {exc}".strip()
                # The request may have been sent: for a write that is an unknown outcome.
                last = OutcomeUnknown(lost) if write else Unavailable(lost)
                self._failover(url)
                self._set_state(ConnectionState.SUSPENDED)
            else:
                if status < 300:
                    self._set_state(ConnectionState.CONNECTED)
                    return doc
                last = error_from_problem(status, doc)
                if isinstance(last, SessionExpired):
                    last.outcome_unknown = outcome_unknown
                    self._set_state(ConnectionState.LOST)
                    raise last
                if isinstance(last, Unavailable | NotLeader):
                    self._set_state(ConnectionState.SUSPENDED)
                else:
                    self._set_state(ConnectionState.CONNECTED)  # a node answered
                redirect = self._judge(url, last)
                # Only a definite answer (no-leader, not-leader...) says nothing was
                # applied; outcome-unknown, timeout or a proxy's 503 may hide a write.
                if not last.definite:
                    outcome_unknown = True
                if redirect:
                    continue
            if unsafe_write and outcome_unknown:
                raise last
            if attempt < attempts_max:
                await self._backoff(attempt)
        if outcome_unknown and write and not isinstance(last, OutcomeUnknown):
            # The last answer may be definite, but an earlier attempt may have applied
            # the write: the caller must not read "not applied" into it.
            raise OutcomeUnknown(
                f"{last.detail} (gave up after {attempts_max} attempts; an earlier "
                "attempt may have been applied)", {**last.problem, "code": OutcomeUnknown.code}
            )  # fmt: skip
        raise _exhausted(last, attempts_max)

    def _judge(self, url: str, error: SynodError) -> bool:
        """Decide what a failed answer means: raise it, or set up the next attempt.

        Returns True to retry at once (redirected to the leader). Raises ``error`` when
        retrying cannot help.
        """
        if isinstance(error, NotLeader):
            leader = error.leader_client_url
            if leader and leader.rstrip("/") != url and self._prefer(leader):
                return True
            self._failover(url)
            return False
        if isinstance(error, Unavailable):
            self._failover(url)
            return False
        if isinstance(error, LimitExceeded) and (
            error.transient or error.problem.get("limit") == "responses_per_session_max"
        ):
            return False
        raise error

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        params: dict[str, str] | None = None,
        write: bool = False,
    ) -> dict[str, Any]:
        """A request with retries; writes go through the session.

        Raises SynodError subclasses (see `_attempts`).
        """
        if not write:
            return await self._attempts(method, path, body, params=params)
        if not self.use_session:
            return await self._attempts(method, path, body, params=params, unsafe_write=True)
        async with self._writes:
            return await self._session_write(method, path, body)

    async def _session_write(
        self, method: str, path: str, body: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Send a write under the session, opening a new one if it was evicted before the
        write could have been applied. Raises SynodError subclasses; SessionExpired when
        the write's outcome is unknown."""
        for reopen in range(SESSION_REOPENS_MAX + 1):
            client_id = await self._open_session()
            seq = self._next_seq
            self._next_seq += 1
            self._in_flight.add(seq)
            try:
                return await self._attempts(method, path, body, session=(client_id, seq))
            except SessionExpired as exc:
                if self._client_id == client_id:
                    self._client_id = 0  # the session is gone for every later write too
                if exc.outcome_unknown or reopen == SESSION_REOPENS_MAX:
                    raise
            finally:
                self._in_flight.discard(seq)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _open_session(self) -> int:
        """The session's client id, opening it on first use. Raises SynodError."""
        async with self._session_lock:
            if not self._client_id:
                # Not de-duplicated: a retried open may leave an unused session behind,
                # which the cluster evicts (least recently active) when it needs room.
                doc = await self._attempts("POST", "/v1/session/open", {})
                client_id = doc.get("client_id")
                if not isinstance(client_id, int) or client_id <= 0:
                    raise ProtocolError(f"session/open answered {doc!r}", doc)
                self._client_id, self._next_seq = client_id, 1
                self._in_flight.clear()
            return self._client_id

    # -- KV -------------------------------------------------------------------------

    async def put(
        self, key: Data, value: Data, *, lease: int = 0, prev_kv: bool = False
    ) -> PutResult:
        """Set ``key`` to ``value`` (attached to ``lease`` when non-zero). Keys and
        values are text (stored as UTF-8) or any bytes.

        Raises InvalidArgument, TooLarge, NotFound (unknown lease), Unavailable, SynodError;
        TypeError for a key or value that is neither str nor bytes.
        """
        body: dict[str, Any] = {"key": to_base64(key), "value": to_base64(value), **BASE64}
        if lease:
            body["lease"] = lease
        if prev_kv:
            body["prev_kv"] = True
        answer = await self._call("POST", "/v1/kv/put", body, write=True)
        return PutResult.from_json(answer, base64=True)

    async def range(
        self,
        key: Data,
        range_end: Data = "",
        *,
        prefix: bool = False,
        limit: int = 0,
        revision: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        serializable: bool = False,
    ) -> RangeResult:
        """Read ``key``, ``[key, range_end)`` or every key under a prefix.

        Raises InvalidArgument, FutureRevision, Compacted, TooLarge, Unavailable.
        """
        body: dict[str, Any] = {"key": to_base64(key), **BASE64}
        for name, arg in (
            ("range_end", to_base64(range_end) if range_end else ""),
            ("prefix", prefix),
            ("limit", limit),
            ("revision", revision),
            ("keys_only", keys_only),
            ("count_only", count_only),
            ("serializable", serializable),
        ):
            if arg:
                body[name] = arg
        return RangeResult.from_json(await self._call("POST", "/v1/kv/range", body), base64=True)

    async def prefix(
        self, prefix: Data, *, limit: int = 0, serializable: bool = False
    ) -> RangeResult:
        """Every key starting with ``prefix``. Raises like `range`."""
        return await self.range(prefix, prefix=True, limit=limit, serializable=serializable)

    async def get(self, key: Data, *, revision: int = 0, serializable: bool = False) -> KV | None:
        """The KV of ``key``, or None when absent. Raises like `range`."""
        result = await self.range(key, revision=revision, serializable=serializable)
        return result.kvs[0] if result.kvs else None

    async def delete(
        self, key: Data, range_end: Data = "", *, prefix: bool = False, prev_kv: bool = False
    ) -> DeleteResult:
        """Delete ``key`` (or a range / prefix); `deleted` counts the keys removed.

        Raises InvalidArgument, Unavailable, SynodError.
        """
        body: dict[str, Any] = {"key": to_base64(key), **BASE64}
        if range_end:
            body["range_end"] = to_base64(range_end)
        if prefix:
            body["prefix"] = True
        if prev_kv:
            body["prev_kv"] = True
        answer = await self._call("POST", "/v1/kv/delete", body, write=True)
        return DeleteResult.from_json(answer, base64=True)

    async def txn(self, txn: Txn) -> TxnResult:
        """Run a transaction; failed compares answer `succeeded=False` (not an error).

        Raises InvalidArgument, TooLarge, Unavailable, SynodError.
        """
        body = {**txn.to_json(base64=True), **BASE64}
        return TxnResult.from_json(
            await self._call("POST", "/v1/kv/txn", body, write=True), base64=True
        )

    async def cas(
        self, key: Data, expected: Data | None, new: Data, *, lease: int = 0
    ) -> PutResult:
        """Set ``key`` to ``new`` only if its value is ``expected`` (None: only if absent).

        Raises CompareFailed (``current`` = the key's KV or None), plus like `txn`.
        """
        check = version(key).eq(0) if expected is None else value(key).eq(expected)
        txn = Txn().when(check).then(put_op(key, new, lease=lease)).otherwise(range_(key))
        result = await self.txn(txn)
        if not result.succeeded:
            kvs = result.range_kvs(0) if result.responses else []
            current = kvs[0] if kvs else None
            shown = "absent" if current is None else _shown(current)
            wanted = "absent" if expected is None else repr(_shown_data(expected))
            raise CompareFailed(
                f"{key!r} is {shown}, expected {wanted}",
                {
                    "key": _shown_data(key),
                    "expected": None if expected is None else _shown_data(expected),
                    "current": current and current.to_json(),
                },
                current=current,
            )
        return PutResult(result.header)

    async def compact(self, revision: int) -> int:
        """Drop history below ``revision``; returns the compact revision.

        Raises FutureRevision, Compacted, Unavailable.
        """
        doc = await self._call("POST", "/v1/kv/compact", {"revision": revision}, write=True)
        return int(doc.get("compact_revision", revision))

    # -- leases ---------------------------------------------------------------------

    async def lease_grant(self, ttl_ms: int, *, lease_id: int = 0) -> LeaseGrant:
        """Grant a lease of ``ttl_ms``. Raises InvalidArgument (TTL out of bounds),
        AlreadyExists, LimitExceeded, Unavailable."""
        body: dict[str, Any] = {"ttl_ms": ttl_ms}
        if lease_id:
            body["id"] = lease_id
        return LeaseGrant.from_json(await self._call("POST", "/v1/lease/grant", body, write=True))

    async def lease_revoke(self, lease_id: int) -> int:
        """Revoke a lease, deleting its keys; returns how many. Raises NotFound, Unavailable."""
        doc = await self._call("POST", "/v1/lease/revoke", {"id": lease_id}, write=True)
        return int(doc.get("keys_deleted", 0))

    async def lease_keepalive(self, lease_id: int) -> int:
        """Renew a lease once; returns its TTL in ms. Raises NotFound (expired), Unavailable."""
        doc = await self._call("POST", "/v1/lease/keepalive", {"id": lease_id})
        return int(doc.get("ttl_ms", 0))

    async def lease_timetolive(self, lease_id: int) -> LeaseInfo:
        """Remaining and granted TTL and attached keys. Raises NotFound, Unavailable."""
        return LeaseInfo.from_json(
            await self._call("POST", "/v1/lease/timetolive", {"id": lease_id})
        )

    def keep_alive(self, lease_id: int, ttl_ms: int) -> LeaseKeepAlive:
        """A started :class:`LeaseKeepAlive` renewing ``lease_id`` every ttl/3.

        Must be called from a running loop. Raises nothing."""
        keeper = LeaseKeepAlive(self, lease_id, ttl_ms)
        keeper.start()
        self._keepers.add(keeper)
        return keeper

    @asynccontextmanager
    async def lease(self, ttl_ms: int) -> AsyncIterator[LeaseKeepAlive]:
        """Grant a lease, keep it alive inside the block, revoke it on exit.

        Yields the running :class:`LeaseKeepAlive` (its ``id`` is the lease id).
        Raises like `lease_grant`; revoke failures on exit are not raised.
        """
        grant = await self.lease_grant(ttl_ms)
        keeper = self.keep_alive(grant.id, grant.ttl_ms)
        try:
            yield keeper
        finally:
            await keeper.stop(revoke=True)

    # -- rate limits (docs/ratelimit.md) ---------------------------------------------

    async def rate_limit(self, domain: str, descriptors: Sequence[Any], hits: int = 1, *,
                         lease_id: str = "") -> RateLimitResult:  # fmt: skip
        """Count ``hits`` against ``domain``'s limits: ``await client.rate_limit("api",
        [{"user": "bob"}])``. ``lease_id`` holds a concurrency limit's slot until
        `ratelimit_release`. Raises ValueError (descriptors), NotFound (no policy),
        InvalidArgument, TooLarge, Unavailable."""
        return await client_ratelimit.check(self, domain, descriptors, hits, lease_id)

    def rate_limited(
        self, domain: str, descriptors: Sequence[Any], hits: int = 1
    ) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
        """Decorate an async function: each call first counts ``hits`` and raises
        :class:`~synod.client.ratelimit.RateLimited` when over the limit. Raises
        TypeError (a sync function) when applied."""
        return client_ratelimit.decorator(
            lambda: client_ratelimit.check(self, domain, descriptors, hits)
        )

    async def ratelimit_release(self, domain: str, descriptors: Sequence[Any],
                                lease_id: str) -> int:  # fmt: skip
        """Release a concurrency lease; how many slots were held. Raises like
        `rate_limit`."""
        return await client_ratelimit.release(self, domain, descriptors, lease_id)

    async def ratelimit_policy_put(self, policy: dict[str, Any]) -> dict[str, Any]:
        """Create or replace a domain's policy (docs/ratelimit.md). Raises
        InvalidArgument, Unavailable."""
        return await client_ratelimit.policy_put(self, policy)

    async def ratelimit_policies(self, domain: str = "") -> dict[str, Any]:
        """``{"policies", "generation"}``. Raises NotFound, Unavailable."""
        return await client_ratelimit.policies(self, domain)

    async def ratelimit_policy_delete(self, domain: str) -> dict[str, Any]:
        """Delete ``domain``'s policy. Raises NotFound, Unavailable."""
        return await client_ratelimit.policy_delete(self, domain)

    async def ratelimit_status(self) -> dict[str, Any]:
        """The answering member's ring, counters and modes. Raises Unavailable."""
        return await client_ratelimit.status(self)

    async def lease_list(self, limit: int = 0) -> LeaseList:
        """The live leases by id (at most ``limit``; 0: the server's bound, 10,000), each
        with its remaining and granted TTL. Raises Unavailable, SynodError."""
        body: dict[str, Any] = {"limit": limit} if limit else {}
        return LeaseList.from_json(await self._call("POST", "/v1/lease/leases", body))

    # -- locks (docs/locks.md) -----------------------------------------------------

    def lock(self, name: str, **options: Any) -> Lock:
        """A fenced mutex: ``async with client.lock("orders/42", ttl_ms=10_000) as
        lock: ... lock.token``. Options: see :class:`~synod.client.locks.Lock`.
        Raises ValueError on bad options."""
        return Lock(self, name, **options)

    def lock_session(self, ttl_ms: int, drift: float = DRIFT_DEFAULT) -> LockSession:
        """The session lease shared by this client's locks of ``ttl_ms`` (and
        ``drift``): a new one if there is none or the last one ended. Nothing is sent
        before a lock uses it. Raises ValueError (bad bounds), LimitExceeded (more than
        SESSIONS_PER_CLIENT_MAX distinct TTLs in use)."""
        key = (ttl_ms, drift)
        found = self._lock_sessions.get(key)
        if found is not None and found.lost is None:
            return found
        if found is None and len(self._lock_sessions) >= SESSIONS_PER_CLIENT_MAX:
            raise LimitExceeded(f"{SESSIONS_PER_CLIENT_MAX} lock session TTLs in use",
                                {"limit": "sessions_per_client_max",
                                 "max": SESSIONS_PER_CLIENT_MAX})  # fmt: skip
        created = LockSession(self, ttl_ms, drift)
        self._lock_sessions[key] = created
        assert len(self._lock_sessions) <= SESSIONS_PER_CLIENT_MAX
        return created

    def _drop_lock_session(self, ended: LockSession) -> None:
        """Forget an ended session (the next lock of its TTL gets a new one)."""
        key = (ended.ttl_ms, ended.drift)
        if self._lock_sessions.get(key) is ended:
            del self._lock_sessions[key]
        assert self._lock_sessions.get(key) is not ended

    def rwlock(self, name: str, **options: Any) -> RWLock:
        """A read-write lock: ``.read()`` / ``.write()`` give Locks. Raises nothing."""
        return RWLock(self, name, **options)

    def semaphore(self, name: str, permits: int, **options: Any) -> Lock:
        """One permit of a counting semaphore of ``permits``. Raises ValueError."""
        return Lock(self, name, lock_type="semaphore", permits=permits, **options)

    def election(self, name: str, *, ns: str = "default") -> Election:
        """Leader election on ``name``: campaign, leader, observe, proclaim.

        Raises nothing."""
        return Election(self, name, ns=ns)

    async def validate_token(self, name: str, token: int, *, ns: str = "default") -> bool:
        """CheckSequencer: is ``token`` a current holder's of ``name``? Raises SynodError."""
        return await validate_token(self, name, token, ns)

    async def election_leader(
        self, name: str, *, ns: str = "default", after_revision: int = 0
    ) -> dict[str, Any]:
        """``{"leader": {owner, token, value, lease} | None, "changed_revision"}``; with
        ``after_revision`` (a changed_revision seen) long-polls until the leader or its
        value changes (or the server's poll bound passes). Raises SynodError."""
        body: dict[str, Any] = {"ns": ns, "name": name}
        if after_revision:
            body["after_revision"] = after_revision
            body["poll_ms"] = poll_ms(self)
        return await self._call("POST", "/v1/election/leader", body)

    async def lock_status(self, name: str, *, ns: str = "default") -> dict[str, Any]:
        """Holders and FIFO waiters of a lock. Raises NotFound (namespace), SynodError."""
        return await self._call("POST", "/v1/locks/status", {"ns": ns, "name": name})

    async def lock_list(self, prefix: str = "", *, ns: str = "default") -> dict[str, Any]:
        """Locks of a namespace by name prefix. Raises NotFound, SynodError."""
        return await self._call("POST", "/v1/locks/list", {"ns": ns, "prefix": prefix})

    async def lock_release(self, name: str, owner: str, *, ns: str = "default",
                           token: int = 0) -> dict[str, Any]:  # fmt: skip
        """Release ``owner``'s hold (all counts) or its wait. Raises LockNotHeld,
        FencingTokenStale, SynodError."""
        body = {"ns": ns, "name": name, "owner": owner, "token": token, "all": True}
        return await self._call("POST", "/v1/locks/release", body, write=True)

    async def lock_revoke(self, name: str, *, ns: str = "default", owner: str = "") -> list[str]:
        """Admin: drop every holder (or ``owner``'s); the token moves on. Returns the
        revoked owners. Raises LockNotHeld, SynodError."""
        body: dict[str, Any] = {"ns": ns, "name": name}
        if owner:
            body["owner"] = owner
        doc = await self._call("POST", "/v1/locks/revoke", body, write=True)
        return [str(owner) for owner in doc.get("revoked", [])]

    # -- cluster and admin ----------------------------------------------------------

    async def status(self, endpoint: str | None = None) -> ClusterStatus:
        """`/v1/cluster/status` of ``endpoint`` (one attempt) or of any node (retried).

        Raises Unavailable, ProtocolError."""
        if endpoint is None:
            return ClusterStatus.from_json(await self._call("GET", "/v1/cluster/status"))
        url = normalize_endpoints(endpoint)[0]
        try:
            status, doc = await self._send(
                url, "GET", "/v1/cluster/status", None, {}, self.timeout_s
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"{url}: {type(exc).__name__} {exc}".strip()) from exc
        if status >= 300:
            raise error_from_problem(status, doc)
        return ClusterStatus.from_json(doc)

    async def gossip_members(self, endpoint: str | None = None) -> dict[str, Any]:
        """`/v1/cluster/members` (the gossip view) of ``endpoint`` (one attempt) or of any
        node (retried): ``{"enabled", "self", "health_score", "members": [...]}``.

        Raises Unavailable, ProtocolError."""
        if endpoint is None:
            return await self._call("GET", "/v1/cluster/members")
        url = normalize_endpoints(endpoint)[0]
        try:
            status, doc = await self._send(
                url, "GET", "/v1/cluster/members", None, {}, self.timeout_s
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"{url}: {type(exc).__name__} {exc}".strip()) from exc
        if status >= 300:
            raise error_from_problem(status, doc)
        if not isinstance(doc, dict) or not isinstance(doc.get("members"), list):
            raise ProtocolError(f"{url}: /v1/cluster/members answered no members list")
        return doc

    async def add_learner(
        self, member_id: int, peer_url: str, client_url: str = ""
    ) -> dict[str, Any]:
        """Add a non-voting member (no-op if present). Raises InvalidArgument, Unavailable."""
        body: dict[str, Any] = {"id": member_id, "peer_url": peer_url}
        if client_url:
            body["client_url"] = client_url
        return await self._call("POST", "/v1/admin/members/add-learner", body)

    async def promote(self, member_id: int) -> dict[str, Any]:
        """Make a caught-up learner a voter. Raises NotCaughtUp, NotFound, Unavailable."""
        return await self._call("POST", "/v1/admin/members/promote", {"id": member_id})

    async def remove_member(self, member_id: int) -> dict[str, Any]:
        """Remove a member (no-op if absent). Raises Unavailable, SynodError."""
        return await self._call("POST", "/v1/admin/members/remove", {"id": member_id})

    async def transfer_leadership(self, to: int | None = None) -> dict[str, Any]:
        """Move leadership to ``to`` or the most caught-up voter. Raises Unavailable."""
        body: dict[str, Any] = {} if to is None else {"to": to}
        return await self._call("POST", "/v1/admin/leadership/transfer", body)

    async def set_limits(self, /, **changes: int) -> dict[str, int]:
        """Change settable replicated bounds (``keys_max``, ``leases_max``,
        ``history_bytes_max``) through the log; returns all of them as applied.
        Raises InvalidArgument (unknown name, out of range, below what is stored),
        Unavailable."""
        doc = await self._call("POST", "/v1/admin/limits", dict(changes))
        return {str(name): int(value) for name, value in doc.get("limits", {}).items()}

    async def snapshot(self) -> int:
        """Take a snapshot now; returns its index. Raises Unavailable."""
        doc = await self._call("POST", "/v1/admin/snapshot", {})
        return int(doc.get("snapshot_index", 0))

    async def snapshot_download(self) -> tuple[int, int, bytes]:
        """Take a snapshot on the leader and download it from there: (index, term, the
        snapshot file's bytes; `synod snapshot status` reads them). Raises NotFound,
        Unavailable, ProtocolError."""
        await self.snapshot()
        url = (await self.status()).leader_client_url or self.endpoint
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout_s,
                                        sock_read=self.timeout_s)  # fmt: skip
        try:
            async with self._session().get(
                url.rstrip("/") + "/v1/admin/snapshot/file", timeout=timeout, ssl=self._ssl or True
            ) as resp:
                content = await resp.read()
                if resp.status >= 300:
                    doc = _json_object(content.decode("utf-8", "replace") or "{}")
                    raise error_from_problem(resp.status, doc)
                index = int(resp.headers.get("Synod-Snapshot-Index", "0"))
                term = int(resp.headers.get("Synod-Snapshot-Term", "0"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"{url}: {type(exc).__name__} {exc}".strip()) from exc
        if index <= 0:
            raise ProtocolError(f"{url}: a snapshot file without Synod-Snapshot-Index")
        return index, term, content

    # -- watches --------------------------------------------------------------------

    async def watch(
        self,
        key: Data,
        range_end: Data = "",
        *,
        prefix: bool = False,
        start_revision: int = 0,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Changes of ``key`` (or a range / prefix) from ``start_revision`` (0 = from now),
        in revision order, without gaps or duplicates across reconnects.

        A lost connection, a node failure or a `too-slow` cancel resumes transparently
        from the last delivered revision. Raises Compacted (history gone), InvalidArgument,
        Unavailable after ``attempts_max`` consecutive failed reconnects.
        """
        if start_revision <= 0:
            # Pin "now" to a revision so that a reconnect cannot miss what came between.
            now = await self.range(key, range_end, prefix=prefix, count_only=True)
            start_revision = now.header.revision + 1
        cursor = _WatchCursor(start_revision)
        failures = 0
        while True:
            url = await self._endpoint()
            position = (cursor.next_revision, cursor.skip_count)
            try:
                async for event in self._watch_once(url, key, range_end, prefix, cursor):
                    failures = 0
                    self._set_state(ConnectionState.CONNECTED)
                    yield event
                if (cursor.next_revision, cursor.skip_count) != position:
                    continue  # it made progress (a too-slow cancel, say): resume at once
                # A stream that ends without progress (a node shutting down) must not
                # make the watch spin on it.
                error: SynodError = Unavailable(f"{url}: watch stream ended")
                self._failover(url)
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = Unavailable(f"{url}: watch lost: {type(exc).__name__} {exc}")
                self._failover(url)
            except (Unavailable, NotLeader, LimitExceeded) as exc:
                error = exc
                self._failover(url)
            failures += 1
            self._set_state(ConnectionState.SUSPENDED)
            if failures >= self.attempts_max:
                raise _exhausted(error, failures)
            await self._backoff(failures)

    async def _watch_once(
        self, url: str, key: Data, range_end: Data, prefix: bool, cursor: _WatchCursor
    ) -> AsyncGenerator[WatchEvent, None]:
        """One SSE stream from ``cursor``; ends on a resumable cancel or a server close.

        Raises Compacted, SynodError answers, aiohttp.ClientError, TimeoutError.
        """
        params = {"key": to_base64(key), "start_revision": str(cursor.next_revision),
                  **BASE64}  # fmt: skip
        if range_end:
            params["range_end"] = to_base64(range_end)
        if prefix:
            params["prefix"] = "true"
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.timeout_s, sock_read=self.watch_idle_timeout_s
        )
        async with self._session().get(
            url + "/v1/watch", params=params, timeout=timeout, ssl=self._ssl or True
        ) as resp:
            if resp.status >= 300:
                try:
                    doc = await resp.json(content_type=None)
                except ValueError:
                    doc = {}
                raise error_from_problem(resp.status, doc)
            seen: dict[int, int] = {}
            async for message in iter_sse(resp.content):
                data = _json_object(message.data)
                if message.event == "events":
                    for raw in data.get("events") or []:
                        event = WatchEvent.from_json(raw, base64=True)
                        if cursor.accept(event.revision, seen):
                            yield event
                elif message.event == "progress":
                    cursor.advance_to(_progress_revision(data) + 1)
                elif message.event == "cancel":
                    _on_cancel(data, cursor)
                    return


def _close_later(http: aiohttp.ClientSession) -> None:
    """Close a dropped client's connections on their own loop. Raises nothing."""
    task = asyncio.ensure_future(http.close())
    _CLOSING.add(task)  # keep the task (and the session) alive until it is done
    task.add_done_callback(_CLOSING.discard)


_CLOSING: set[asyncio.Future[None]] = set()


def _json_object(text: str) -> dict[str, Any]:
    """Decode an SSE data payload. Raises ProtocolError if it is not a JSON object."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ProtocolError(f"watch message is not JSON: {text[:200]!r}") from exc
    if not isinstance(doc, dict):
        raise ProtocolError(f"watch message is not an object: {text[:200]!r}")
    return doc


def _progress_revision(data: dict[str, Any]) -> int:
    """The revision of a progress message (`{"revision"}` or `{"header": {"revision"}}`).

    Raises nothing (0 when absent)."""
    revision = data.get("revision")
    if not isinstance(revision, int):
        header = data.get("header")
        revision = header.get("revision") if isinstance(header, dict) else 0
    return revision if isinstance(revision, int) else 0


def _on_cancel(data: dict[str, Any], cursor: _WatchCursor) -> None:
    """Handle a cancel: move the cursor to `resume_revision` when the watch may resume.

    Raises Compacted when the history to resume from is gone; Unavailable for a node
    that could not go on (the watch reconnects from the cursor); the typed error of any
    other reason."""
    reason = str(data.get("reason", ""))
    message = str(data.get("message") or f"watch cancelled: {reason}")
    resume = data.get("resume_revision")
    if reason == "compacted":
        raise Compacted(message, data)
    if isinstance(resume, int) and resume > 0:
        cursor.advance_to(resume)
        return
    if reason == "restored":  # the node installed a snapshot: start over from the cursor
        raise Unavailable(message, data)
    raise error_from_problem(0, {**data, "type": PROBLEM_TYPE_PREFIX + reason, "detail": message})


def _exhausted(last: SynodError, attempts: int) -> SynodError:
    """The error to raise once retries ran out: the last one, saying how many were made.

    Raises nothing."""
    try:
        return type(last)(f"{last.detail} (gave up after {attempts} attempts)", last.problem)
    except TypeError:  # a subclass with another constructor
        return last
