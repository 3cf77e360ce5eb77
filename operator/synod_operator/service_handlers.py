"""The reconciliation every service resource shares (LockService, IdGenerator, and the
ones to come): one code path, DESIGN.md "The operator".

A pass ensures the dedicated ConsensusCluster when the resource has no `clusterRef`
(never taking over another object's cluster), writes the resource's document into the
cluster through its admin API (idempotent), reads what the status counts, and patches
`.status`. Each kind supplies its pure parts as a :class:`ServiceResource`;
:func:`register` installs the kopf handlers: create/update/resume (`TemporaryError`
until the document is written) and a level-triggered timer. Deletion differs per kind
and stays with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import aiohttp
import kopf

from .admin import AdminClient, AdminError, Unreachable
from .attach import Attachment, Observation, cluster_admin, controlled_by
from .handlers import CLIENTS, RETRY_DELAY_S, Logger
from .kube import KubeError
from .spec import GROUP, VERSION, SpecError
from .status import now_utc

NOT_READY_DELAY_S = 5.0
# Removing a resource's document from an unreachable cluster is retried this many times,
# then the resource goes anyway (a warning event says the document may remain).
DELETE_ATTEMPTS_MAX = 12
TRANSPORT_ERRORS = (Unreachable, aiohttp.ClientError, TimeoutError)

S = TypeVar("S")


@dataclass(frozen=True)
class ServiceResource(Generic[S]):
    """What one kind of service resource contributes to the shared reconciliation."""

    kind: str  # "LockService"
    plural: str  # "lockservices"
    parse: Callable[[str, str, dict[str, Any]], S]  # raises SpecError
    attachment: Callable[[S], Attachment | None]  # None: the kind needs no cluster
    cluster_manifest: Callable[[S, str], dict[str, Any] | None]  # (spec, uid): dedicated
    write: Callable[[AdminClient, S], Awaitable[None]]  # raises AdminError, transport
    read: Callable[[AdminClient, S], Awaitable[dict[str, Any] | None]]  # for the status
    build_status: Callable[..., dict[str, Any]]  # (spec, obs, *, generation, previous, now)
    describe: Callable[[S], str]  # "lock namespace 'jobs'", for events and logs
    ready_reason: str  # the event's reason once written
    # Refusals that retrying cannot fix, by problem code: a warning event with this
    # reason, no TemporaryError (the timer keeps looking).
    final_refusals: Mapping[str, str] = field(default_factory=dict)


def parse(resource: ServiceResource[S], name: str, namespace: str | None, spec: kopf.Spec) -> S:
    """The typed spec. Raises kopf.PermanentError (bad spec, or not namespaced)."""
    if not namespace:
        raise kopf.PermanentError(f"a {resource.kind} is namespaced")
    try:
        return resource.parse(name, namespace, dict(spec))
    except SpecError as error:
        raise kopf.PermanentError(str(error)) from error


class NameTaken(Exception):
    """The dedicated cluster's name belongs to a ConsensusCluster this resource does not own."""


async def _admin(
    resource: ServiceResource[S], spec: S, attach: Attachment, uid: str
) -> AdminClient | None:
    """The admin client of the attached cluster (made first if dedicated); None while it
    does not exist. Raises NameTaken, kopf.TemporaryError (the API server failed)."""
    kube = CLIENTS.kube_client()
    try:
        manifest = resource.cluster_manifest(spec, uid)
        if manifest is not None:
            existing = await kube.get("ConsensusCluster", attach.namespace, attach.cluster)
            # Never take over (and later garbage-collect) somebody else's cluster.
            if existing is not None and not controlled_by(existing, uid):
                raise NameTaken(attach.cluster)
            await kube.apply(manifest)
        return await cluster_admin(kube, CLIENTS.http_client(), attach)
    except KubeError as error:
        raise kopf.TemporaryError(f"reading the cluster: {error}", delay=RETRY_DELAY_S) from error


async def converge(resource: ServiceResource[S], spec: S, uid: str) -> Observation:
    """One idempotent pass: ensure the cluster, write the document, read the counts.
    Raises kopf.TemporaryError (the API server failed)."""
    attach = resource.attachment(spec)
    if attach is None:
        return Observation(cluster_found=False, cluster_ready=False, applied=True)
    try:
        admin = await _admin(resource, spec, attach, uid)
    except NameTaken:
        return Observation(cluster_found=False, cluster_ready=False, name_taken=True)
    if admin is None:
        return Observation(cluster_found=False, cluster_ready=False)
    if await admin.cluster_status() is None:
        return Observation(cluster_found=True, cluster_ready=False)
    try:
        await resource.write(admin, spec)
    except AdminError as error:
        ready = error.status != 503
        return Observation(True, ready, error_code=error.code, error_detail=str(error))
    except TRANSPORT_ERRORS:
        return Observation(cluster_found=True, cluster_ready=False)
    try:
        listing = await resource.read(admin, spec)
    except (AdminError, *TRANSPORT_ERRORS):
        listing = None
    return Observation(True, True, applied=True, listing=listing)


def patch_status(
    resource: ServiceResource[S],
    spec: S,
    obs: Observation,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
) -> dict[str, Any]:
    """Put the whole new `.status` into ``patch``; returns it. Raises nothing."""
    new = resource.build_status(
        spec, obs, generation=int(meta.get("generation") or 0), previous=dict(status),
        now=now_utc(),
    )  # fmt: skip
    for key, value in new.items():
        patch.status[key] = value
    assert "ready" in new
    return new


def _not_ready_reason(obs: Observation) -> str:
    if obs.error_code:
        return obs.error_code
    if obs.name_taken:
        return "cluster name taken"
    return "cluster not found" if not obs.cluster_found else "no leader"


def register(resource: ServiceResource[S], interval_s: float) -> None:
    """Install the create/update/resume handler and the timer of ``resource``'s kind
    (handler ids ``ensure_<kind>`` and ``reconcile_<kind>``, as before they were shared).
    Raises nothing."""
    assert interval_s > 0
    kind = resource.kind.lower()

    async def ensure(
        name: str, namespace: str | None, uid: str, spec: kopf.Spec, meta: kopf.Meta,
        status: kopf.Status, patch: kopf.Patch, body: kopf.Body, logger: Logger, **_: Any,
    ) -> None:  # fmt: skip
        try:
            parsed = parse(resource, name, namespace, spec)
        except kopf.PermanentError as error:
            # Refused for good: say why where `kubectl describe` shows it.
            kopf.warn(body, reason="InvalidSpec", message=str(error))
            raise
        async with CLIENTS.lock(uid):
            obs = await converge(resource, parsed, uid)
        new = patch_status(resource, parsed, obs, meta, status, patch)
        what = resource.describe(parsed)
        if not new["ready"]:
            final = resource.final_refusals.get(obs.error_code)
            if final is not None:
                kopf.warn(body, reason=final, message=obs.error_detail)
                return
            raise kopf.TemporaryError(
                f"{what} not ready yet: {_not_ready_reason(obs)}", delay=NOT_READY_DELAY_S
            )
        kopf.info(body, reason=resource.ready_reason, message=what)
        logger.info("%s ready", what)

    async def reconcile(
        name: str, namespace: str | None, uid: str, spec: kopf.Spec, meta: kopf.Meta,
        status: kopf.Status, patch: kopf.Patch, **_: Any,
    ) -> None:  # fmt: skip
        """Level-triggered: the document is written again (idempotent), the status
        refreshed."""
        if meta.get("deletionTimestamp"):
            return
        parsed = parse(resource, name, namespace, spec)
        async with CLIENTS.lock(uid):
            obs = await converge(resource, parsed, uid)
        patch_status(resource, parsed, obs, meta, status, patch)

    on = kopf.on
    on.create(GROUP, VERSION, resource.plural, id=f"ensure_{kind}")(ensure)
    on.update(GROUP, VERSION, resource.plural, field="spec", id=f"ensure_{kind}")(ensure)
    on.resume(GROUP, VERSION, resource.plural, id=f"ensure_{kind}")(ensure)
    kopf.timer(GROUP, VERSION, resource.plural, interval=interval_s,
               id=f"reconcile_{kind}")(reconcile)  # fmt: skip


async def remove(
    resource: ServiceResource[S],
    spec: S,
    uid: str,
    drop: Callable[[AdminClient], Awaitable[Any]],
    *,
    retry: int,
    body: kopf.Body,
    logger: Logger,
    failure_reason: str,
) -> None:
    """The delete path of a kind whose document leaves the cluster with the resource:
    ``drop(admin)`` runs against the attached cluster (never against a dedicated cluster
    that is not this resource's). A dedicated cluster goes with the resource, so its
    failure only warns; otherwise failures are retried DELETE_ATTEMPTS_MAX times.
    Raises kopf.TemporaryError (retry)."""
    attach = resource.attachment(spec)
    assert attach is not None, "a kind without a cluster has nothing to remove"
    what = resource.describe(spec)
    kube = CLIENTS.kube_client()
    async with CLIENTS.lock(uid):
        try:
            existing = await kube.get("ConsensusCluster", attach.namespace, attach.cluster)
            if attach.dedicated and existing is not None and not controlled_by(existing, uid):
                existing = None  # another object's cluster: not ours to touch
            admin = None
            if existing is not None:
                admin = await cluster_admin(kube, CLIENTS.http_client(), attach)
            removed = admin is not None and await drop(admin)
        except (KubeError, AdminError, *TRANSPORT_ERRORS) as error:
            if attach.dedicated or retry + 1 >= DELETE_ATTEMPTS_MAX:
                kopf.warn(body, reason=failure_reason, message=str(error))
                logger.warning("%s not removed: %s", what, error)
                CLIENTS.locks.pop(uid, None)
                return
            raise kopf.TemporaryError(f"removing {what}: {error}",
                                      delay=NOT_READY_DELAY_S) from error  # fmt: skip
    CLIENTS.locks.pop(uid, None)
    logger.info("%s removed: %s", what, removed)
