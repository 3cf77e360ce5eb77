"""Client of a node's admin and status API (docs/api.md), over aiohttp.

Every admin call is idempotent and forwarded to the leader by any member, so
the operator may send it to whichever member answers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

from .status import ClusterReport, parse_cluster_status

ADMIN_TIMEOUT_S = 10.0
STATUS_TIMEOUT_S = 3.0
PROBLEM_PREFIX = "https://synod.dev/problems/"
ERROR_BODY_CHARS_MAX = 500


class AdminError(Exception):
    """A member answered with a problem document (`code` is its stable type)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code


class Unreachable(Exception):
    """No member answered."""


async def _call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: dict[str, Any] | None,
    timeout_s: float,
) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    data = None if body is None else json.dumps(body)
    headers = {"Content-Type": "application/json"} if data is not None else {}
    async with session.request(method, url, data=data, headers=headers, timeout=timeout) as resp:
        text = await resp.text()
        if resp.status >= 400:
            try:
                problem = json.loads(text)
                code = str(problem.get("type", "")).removeprefix(PROBLEM_PREFIX)
                detail = str(problem.get("detail") or problem.get("title") or "")
            except (ValueError, AttributeError):
                code, detail = "unknown", text[:ERROR_BODY_CHARS_MAX]
            raise AdminError(resp.status, code, detail)
        answer = json.loads(text) if text else {}
        assert isinstance(answer, dict)
        return answer


class AdminClient:
    """Talks to the members at `client_urls` (tried in order until one answers)."""

    def __init__(self, session: aiohttp.ClientSession, client_urls: Sequence[str]) -> None:
        assert client_urls, "a cluster has at least one member URL"
        self.session = session
        self.client_urls = list(client_urls)

    async def cluster_status(self) -> ClusterReport | None:
        """The leader's view (members with progress), or None when no leader answers."""
        for url in self.client_urls:
            try:
                body = await _call(self.session, "GET", url + "/v1/cluster/status", None,
                                   STATUS_TIMEOUT_S)  # fmt: skip
            except (aiohttp.ClientError, TimeoutError, AdminError, ValueError):
                continue
            if body.get("role") == "leader":
                return parse_cluster_status(body)
            leader_url = body.get("leader_client_url")
            if body.get("leader_id") and leader_url:
                try:
                    leader = await _call(self.session, "GET", leader_url + "/v1/cluster/status",
                                         None, STATUS_TIMEOUT_S)  # fmt: skip
                except (aiohttp.ClientError, TimeoutError, AdminError, ValueError):
                    continue
                if leader.get("role") == "leader":
                    return parse_cluster_status(leader)
        return None

    async def admin(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST an admin call to the first member that answers (it forwards to the leader)."""
        assert route.startswith("/v1/admin/")
        return await self.post(route, body)

    async def post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST any API call (admin, lock namespaces) to the first member that answers."""
        assert route.startswith("/v1/")
        last: Exception | None = None
        for url in self.client_urls:
            try:
                return await _call(self.session, "POST", url + route, body, ADMIN_TIMEOUT_S)
            except (aiohttp.ClientError, TimeoutError) as error:
                last = error
            except AdminError as error:
                # 503 no-leader / timeout: another member will not do better right now.
                raise error
        raise Unreachable(f"no member answered {route}: {last}")

    async def add_learner(self, node_id: int, peer_url: str, client_url: str) -> dict[str, Any]:
        body = {"id": node_id, "peer_url": peer_url, "client_url": client_url}
        return await self.admin("/v1/admin/members/add-learner", body)

    async def promote(self, node_id: int) -> dict[str, Any]:
        return await self.admin("/v1/admin/members/promote", {"id": node_id})

    async def remove(self, node_id: int) -> dict[str, Any]:
        return await self.admin("/v1/admin/members/remove", {"id": node_id})

    async def transfer_leadership(self, to: int | None) -> dict[str, Any]:
        return await self.admin("/v1/admin/leadership/transfer", {} if to is None else {"to": to})

    async def lock_namespace_put(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Create or update a lock namespace (idempotent; docs/locks.md)."""
        return await self.post("/v1/locks/namespaces/put", settings)

    async def lock_namespace_delete(self, ns: str) -> bool:
        """Delete a lock namespace, releasing its holders; False when it was already gone."""
        try:
            await self.post("/v1/locks/namespaces/delete", {"ns": ns})
        except AdminError as error:
            if error.code == "not-found":
                return False
            raise
        return True

    async def lock_list(self, ns: str, limit: int) -> dict[str, Any]:
        """The first `limit` locks of a namespace with holder and waiter counts."""
        return await self.post("/v1/locks/list", {"ns": ns, "limit": limit})

    async def get(self, route: str) -> dict[str, Any]:
        """GET any API read from the first member that answers."""
        assert route.startswith("/v1/")
        last: Exception | None = None
        for url in self.client_urls:
            try:
                return await _call(self.session, "GET", url + route, None, ADMIN_TIMEOUT_S)
            except (aiohttp.ClientError, TimeoutError) as error:
                last = error
        raise Unreachable(f"no member answered {route}: {last}")

    async def ids_define(self, generator: str, definition: dict[str, Any]) -> dict[str, Any]:
        """Define a snowflake generator (idempotent for the same definition; another one is
        AdminError `already-exists`; docs/ids.md)."""
        assert generator and "/" not in generator
        return await self.post(f"/v1/ids/{generator}", definition)

    async def ids_list(self) -> dict[str, Any]:
        """Every generator (live worker leases, highest mark) and segment tag (`max_id`)."""
        return await self.get("/v1/ids")

    async def _each(self, route: str) -> list[dict[str, Any] | None]:
        """GET ``route`` from every member at once (None where one did not answer)."""
        assert route.startswith("/v1/") and self.client_urls

        async def one(url: str) -> dict[str, Any] | None:
            try:
                return await _call(self.session, "GET", url + route, None, STATUS_TIMEOUT_S)
            except (aiohttp.ClientError, TimeoutError, AdminError, ValueError):
                return None

        answers = await asyncio.gather(*(one(url) for url in self.client_urls))
        assert len(answers) == len(self.client_urls)
        return list(answers)

    async def _send(self, method: str, route: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """PUT/DELETE to the first member that answers (it forwards to the leader)."""
        assert route.startswith("/v1/") and method in ("PUT", "DELETE")
        last: Exception | None = None
        for url in self.client_urls:
            try:
                return await _call(self.session, method, url + route, body, ADMIN_TIMEOUT_S)
            except (aiohttp.ClientError, TimeoutError) as error:
                last = error
        raise Unreachable(f"no member answered {method} {route}: {last}")

    async def ratelimit_policy_get(self, domain: str) -> tuple[dict[str, Any] | None, int]:
        """The domain's stored rate-limit policy (None: none) and the policy generation
        (a linearizable read; docs/ratelimit.md)."""
        assert domain and "/" not in domain
        try:
            answer = await self.get(f"/v1/ratelimit/policies?domain={quote(domain)}")
        except AdminError as error:
            if error.code != "not-found":
                raise
            answer = await self.get("/v1/ratelimit/policies")
            return None, int(answer.get("generation") or 0)
        policies = answer.get("policies") or []
        assert len(policies) <= 1
        return (policies[0] if policies else None), int(answer.get("generation") or 0)

    async def ratelimit_policy_put(self, policy: dict[str, Any]) -> dict[str, Any]:
        """Create or replace a domain's policy (each call raises the generation)."""
        assert policy.get("domain")
        return await self._send("PUT", "/v1/ratelimit/policies", policy)

    async def ratelimit_policy_delete(self, domain: str) -> bool:
        """Delete a domain's policy; False when it was already gone."""
        assert domain and "/" not in domain
        try:
            await self._send("DELETE", f"/v1/ratelimit/policies/{quote(domain)}", None)
        except AdminError as error:
            if error.code == "not-found":
                return False
            raise
        return True

    async def ratelimit_member_status(self) -> list[dict[str, Any] | None]:
        """Every member's own view (`GET /v1/ratelimit/status`: its ring and the policy
        generation it applied), in member URL order; None where one did not answer."""
        return await self._each("/v1/ratelimit/status")
