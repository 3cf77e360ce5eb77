"""kopf handlers for ConsensusCluster: thin shells over builders, planner and status.

Run with `kopf run -m synod_operator.handlers -m synod_operator.lockservice_handlers
-m synod_operator.idgenerator_handlers --standalone -A` or
`python -m synod_operator` (docs/operator.md).

* create/update/resume: apply the owned objects (a spec change reacts at once);
* a level-triggered timer: apply again, observe, plan one step, do it, patch
  the status and emit an event for the step;
* delete: claims go unless `storage.retainOnDelete`; owned objects are garbage
  collected through their owner references.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf

from . import builders
from .admin import AdminClient, AdminError, Unreachable
from .builders import Owner
from .kube import Kube, KubeError, NotOwned
from .planner import ACTIVE_KINDS, plan
from .reconcile import ensure_owned, execute, observed
from .spec import GROUP, PLURAL, VERSION, ClusterSpec, SpecError, parse_spec
from .status import build_status, not_owned_status, now_utc

RECONCILE_INTERVAL_S = 5.0
RETRY_DELAY_S = 10.0
FINALIZER = "synod.dev/finalizer"
ANNOTATION_PREFIX = "synod.dev"
Logger = logging.Logger | logging.LoggerAdapter[Any]


@dataclass
class Clients:
    """API clients shared by all handlers, created in the operator's event loop."""

    connection: kopf.ConnectionInfo | None = None
    kube: Kube | None = None
    http: aiohttp.ClientSession | None = None
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def kube_client(self) -> Kube:
        if self.kube is None:
            if self.connection is None:
                raise kopf.TemporaryError("not logged in to the API server yet", delay=1)
            self.kube = Kube.from_connection(self.connection)
        return self.kube

    def http_client(self) -> aiohttp.ClientSession:
        if self.http is None:
            self.http = aiohttp.ClientSession()
        return self.http

    def lock(self, uid: str) -> asyncio.Lock:
        # The timer and the change handlers of one object must not act at once.
        return self.locks.setdefault(uid, asyncio.Lock())


CLIENTS = Clients()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    assert settings.persistence.finalizer == FINALIZER


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Log in as kopf does by default and keep the credentials for our own client."""
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    CLIENTS.connection = info
    return info


@kopf.on.cleanup()
async def close_clients(**_: Any) -> None:
    if CLIENTS.kube is not None:
        await CLIENTS.kube.close()
    if CLIENTS.http is not None:
        await CLIENTS.http.close()


def _spec(name: str, namespace: str | None, spec: kopf.Spec) -> ClusterSpec:
    if not namespace:
        raise kopf.PermanentError("a ConsensusCluster is namespaced")
    try:
        return parse_spec(name, namespace, dict(spec))
    except SpecError as error:
        # The API server validates the same rules; reaching here means it was bypassed.
        raise kopf.PermanentError(str(error)) from error


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@kopf.on.resume(GROUP, VERSION, PLURAL)
async def ensure(
    body: kopf.Body,
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    logger: Logger,
    **_: Any,
) -> None:
    cluster = _spec(name, namespace, spec)
    async with CLIENTS.lock(uid):
        try:
            await ensure_owned(CLIENTS.kube_client(), cluster, Owner(name, uid))
        except NotOwned as error:
            _refuse_adoption(error, body, status, meta, patch, logger)
            return
        except KubeError as error:
            raise kopf.TemporaryError(
                f"applying owned objects: {error}", delay=RETRY_DELAY_S
            ) from error
    kopf.info(body, reason="Applied", message="owned objects created or converged")
    logger.info("owned objects of %s applied", name)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RECONCILE_INTERVAL_S)
async def reconcile(
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    body: kopf.Body,
    patch: kopf.Patch,
    logger: Logger,
    **_: Any,
) -> None:
    """Level-triggered: one safe step per tick towards the spec, then a fresh status."""
    if meta.get("deletionTimestamp"):
        return
    cluster = _spec(name, namespace, spec)
    owner = Owner(name, uid)
    kube = CLIENTS.kube_client()
    async with CLIENTS.lock(uid):
        try:
            lifetime, statefulset = await ensure_owned(kube, cluster, owner)
        except NotOwned as error:
            _refuse_adoption(error, body, status, meta, patch, logger)
            return
        except KubeError as error:
            raise kopf.TemporaryError(f"applying: {error}", delay=RETRY_DELAY_S) from error
        try:
            selector = builders.selector_string(name)
            pods = await kube.list("Pod", cluster.namespace, selector)
            claims = await kube.list("PersistentVolumeClaim", cluster.namespace, selector)
        except KubeError as error:
            raise kopf.TemporaryError(f"observing: {error}", delay=RETRY_DELAY_S) from error
        ordinals = range(max(cluster.replicas, int(statefulset["spec"].get("replicas") or 0)))
        admin = AdminClient(
            CLIENTS.http_client(), [builders.client_url(cluster, o) for o in ordinals] or
            [builders.client_url(cluster, 0)]
        )  # fmt: skip
        report = await admin.cluster_status()
        obs = observed(cluster, lifetime, statefulset, pods, claims, report)
        step = plan(obs)
        previous = dict(status)
        new_status = build_status(
            cluster,
            obs,
            report,
            step,
            generation=int(meta.get("generation") or 0),
            previous=previous,
            now=now_utc(),
        )
        for key, value in new_status.items():
            patch.status[key] = value
        if step.kind not in ACTIVE_KINDS:
            return
        try:
            await execute(step, kube, admin, cluster, owner, lifetime, pods)
        except (AdminError, Unreachable, KubeError) as error:
            # The next tick observes again and picks the step that is safe then.
            kopf.warn(body, reason=f"{step.kind}Failed", message=f"{step.message}: {error}")
            logger.warning("step %s failed: %s", step.kind, error)
            return
        kopf.info(body, reason=str(step.kind), message=step.message)
        logger.info("step %s (%s): %s", step.kind, step.reason, step.message)


def _refuse_adoption(
    error: NotOwned,
    body: kopf.Body,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    logger: Logger,
) -> None:
    """An object we would own exists and is somebody else's: say so on the status and
    in an Event (once per change), touch nothing, and look again on the next tick."""
    message = f"{error.kind} {error.name} already exists and is not owned by this cluster; " \
        "rename the cluster or remove the object (it is never adopted)"  # fmt: skip
    previous = dict(status)
    degraded = {c.get("type"): c for c in previous.get("conditions") or []}.get("Degraded")
    new_status = not_owned_status(message, generation=int(meta.get("generation") or 0),
                                  previous=previous, now=now_utc())  # fmt: skip
    for key, value in new_status.items():
        patch.status[key] = value
    if not degraded or degraded.get("message") != message:
        kopf.warn(body, reason="NotOwned", message=message)
    logger.warning("not adopting: %s", message)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete(
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    logger: Logger,
    **_: Any,
) -> None:
    """Owned objects go by garbage collection; the claims per `storage.retainOnDelete`."""
    cluster = _spec(name, namespace, spec)
    if cluster.storage.retain_on_delete:
        logger.info("keeping the claims of %s (storage.retainOnDelete)", name)
        return
    kube = CLIENTS.kube_client()
    async with CLIENTS.lock(uid):
        try:
            claims = await kube.list(
                "PersistentVolumeClaim", cluster.namespace, builders.selector_string(name)
            )
            for claim in claims:
                await kube.delete(
                    "PersistentVolumeClaim", cluster.namespace, claim["metadata"]["name"]
                )
        except KubeError as error:
            raise kopf.TemporaryError(f"deleting claims: {error}", delay=RETRY_DELAY_S) from error
    CLIENTS.locks.pop(uid, None)
    logger.info("deleted %d claims of %s", len(claims), name)
