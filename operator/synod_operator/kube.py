"""A small async Kubernetes REST client over aiohttp, authenticated like kopf itself.

kopf's login (kubeconfig or in-cluster service account) yields a
`kopf.ConnectionInfo`; this client reuses its headers and TLS context, so the
operator needs no second Kubernetes library. Objects are plain dicts: the
builders' output is applied as is with server-side apply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import kopf

FIELD_MANAGER = "synod-operator"
REQUEST_TIMEOUT_S = 30.0
LIST_LIMIT_ITEMS = 500  # one page is plenty for one cluster's pods and claims
ERROR_BODY_CHARS_MAX = 2000


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class NotOwned(KubeError):
    """An object of the name we would apply exists and is not ours: it is never taken
    over (a forced apply would make our owner its controller, and deleting the owner
    would then garbage-collect somebody else's object)."""

    def __init__(self, kind: str, namespace: str, name: str) -> None:
        super().__init__(409, f"{kind} {namespace}/{name} exists and is not owned by us")
        self.kind = kind
        self.name = name


def controller_uid(obj: dict[str, Any]) -> str | None:
    """The uid of `obj`'s controller owner reference, if it has one."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    uids = [ref.get("uid") for ref in refs if ref.get("controller") and ref.get("uid")]
    assert len(uids) <= 1, "Kubernetes allows one controller reference"
    return str(uids[0]) if uids else None


# Where each kind the operator touches lives in the API (group path, plural).
RESOURCES: dict[str, tuple[str, str]] = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Service": ("/api/v1", "services"),
    "Pod": ("/api/v1", "pods"),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "ServiceMonitor": ("/apis/monitoring.coreos.com/v1", "servicemonitors"),
    "ConsensusCluster": ("/apis/synod.dev/v1alpha1", "consensusclusters"),
    "LockService": ("/apis/synod.dev/v1alpha1", "lockservices"),
    "IdGenerator": ("/apis/synod.dev/v1alpha1", "idgenerators"),
    "RateLimitPolicy": ("/apis/synod.dev/v1alpha1", "ratelimitpolicies"),
    "ChaosExperiment": ("/apis/synod.dev/v1alpha1", "chaosexperiments"),
    "Job": ("/apis/batch/v1", "jobs"),
}


def resource_path(kind: str, namespace: str, name: str | None = None, sub: str = "") -> str:
    base, plural = RESOURCES[kind]
    path = f"{base}/namespaces/{quote(namespace)}/{plural}"
    if name is not None:
        path += f"/{quote(name)}"
    if sub:
        path += f"/{sub}"
    return path


@dataclass
class Kube:
    server: str
    session: aiohttp.ClientSession

    @classmethod
    def from_connection(cls, info: kopf.ConnectionInfo) -> Kube:
        connector = aiohttp.TCPConnector(ssl=info.as_ssl_context())
        session = aiohttp.ClientSession(
            connector=connector,
            headers=info.as_http_headers(),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        )
        return cls(info.server.rstrip("/"), session)

    async def close(self) -> None:
        await self.session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        url = self.server + path + (f"?{urlencode(params)}" if params else "")
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        async with self.session.request(method, url, data=data, headers=headers) as response:
            text = await response.text()
            if response.status >= 400:
                raise KubeError(response.status, text[:ERROR_BODY_CHARS_MAX])
            return json.loads(text) if text else None

    async def text(self, path: str, *, params: dict[str, str] | None = None) -> str:
        """GET a non-JSON resource (a pod's log). Raises KubeError."""
        url = self.server + path + (f"?{urlencode(params)}" if params else "")
        async with self.session.get(url) as response:
            body = await response.text()
            if response.status >= 400:
                raise KubeError(response.status, body[:ERROR_BODY_CHARS_MAX])
            return body

    async def check_owned(self, obj: dict[str, Any]) -> None:
        """Raise NotOwned if an object of `obj`'s name exists with another controller
        than `obj`'s (or none). Raises KubeError."""
        owner = controller_uid(obj)
        if owner is None:
            return
        meta = obj["metadata"]
        existing = await self.get(obj["kind"], meta["namespace"], meta["name"])
        if existing is not None and controller_uid(existing) != owner:
            raise NotOwned(obj["kind"], meta["namespace"], meta["name"])

    async def apply(self, obj: dict[str, Any], *, owner_checked: bool = False) -> dict[str, Any]:
        """Server-side apply: create or converge `obj`; the operator owns its fields.

        An `obj` with a controller owner reference is applied only if no object of its
        name exists or the existing one has the same controller (`owner_checked`: the
        caller just called check_owned). Raises NotOwned (nothing applied), KubeError."""
        meta = obj["metadata"]
        path = resource_path(obj["kind"], meta["namespace"], meta["name"])
        if not owner_checked:
            await self.check_owned(obj)
        result = await self.request(
            "PATCH",
            path,
            obj,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            content_type="application/apply-patch+yaml",
        )
        assert isinstance(result, dict)
        return result

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result = await self.request("GET", resource_path(kind, namespace, name))
        except KubeError as error:
            if error.status == 404:
                return None
            raise
        assert isinstance(result, dict)
        return result

    async def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        params = {"labelSelector": selector, "limit": str(LIST_LIMIT_ITEMS)}
        result = await self.request("GET", resource_path(kind, namespace), params=params)
        items = result.get("items") or []
        assert isinstance(items, list)
        return items

    async def delete(self, kind: str, namespace: str, name: str, *, uid: str | None = None) -> bool:
        """Delete; False when already gone. `uid` guards against deleting a successor."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if uid:
            body["preconditions"] = {"uid": uid}  # type: ignore[assignment]
        try:
            await self.request("DELETE", resource_path(kind, namespace, name), body)
        except KubeError as error:
            if error.status in (404, 409):
                return False
            raise
        return True

    async def patch_merge(
        self, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        result = await self.request(
            "PATCH",
            resource_path(kind, namespace, name),
            patch,
            content_type="application/merge-patch+json",
        )
        assert isinstance(result, dict)
        return result
