"""kopf handlers for LockService: thin shells over lockservice.py and attach.py.

* create/update/resume: make the dedicated cluster if asked for, write the namespace's
  settings through the cluster's API; `kopf.TemporaryError` while the cluster has no
  leader;
* a level-triggered timer: the same, idempotently, then a fresh status;
* delete (behind the operator's finalizer): remove the lock namespace, releasing its
  holders; an owned cluster then goes by garbage collection.

Loaded by `python -m synod_operator` next to the ConsensusCluster handlers.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import kopf

from .admin import AdminClient, AdminError, Unreachable
from .attach import cluster_admin, controlled_by
from .handlers import CLIENTS, RETRY_DELAY_S, Logger
from .kube import KubeError
from .lockservice import (
    LOCKSERVICE_PLURAL,
    STATUS_LOCKS_LISTED_MAX,
    LockObservation,
    LockServiceSpec,
    build_lock_status,
    dedicated_cluster_manifest,
    namespace_settings_document,
    parse_lockservice,
)
from .spec import GROUP, VERSION, SpecError
from .status import now_utc

LOCK_RECONCILE_INTERVAL_S = 5.0
NOT_READY_DELAY_S = 5.0
# Deleting waits for an unreachable cluster this many attempts, then lets the resource go
# (a warning event says the namespace may remain).
DELETE_ATTEMPTS_MAX = 12
_TRANSPORT_ERRORS = (Unreachable, aiohttp.ClientError, TimeoutError)


def _parse(name: str, namespace: str | None, spec: kopf.Spec) -> LockServiceSpec:
    if not namespace:
        raise kopf.PermanentError("a LockService is namespaced")
    try:
        return parse_lockservice(name, namespace, dict(spec))
    except SpecError as error:
        raise kopf.PermanentError(str(error)) from error


class NameTaken(Exception):
    """The dedicated cluster's name belongs to a ConsensusCluster this resource does not own."""


async def _admin(spec: LockServiceSpec, uid: str) -> AdminClient | None:
    kube = CLIENTS.kube_client()
    attach = spec.attachment
    try:
        manifest = dedicated_cluster_manifest(spec, uid)
        if manifest is not None:
            existing = await kube.get("ConsensusCluster", attach.namespace, attach.cluster)
            # Never take over (and later garbage-collect) somebody else's cluster.
            if existing is not None and not controlled_by(existing, uid):
                raise NameTaken(attach.cluster)
            await kube.apply(manifest)
        return await cluster_admin(kube, CLIENTS.http_client(), attach)
    except KubeError as error:
        raise kopf.TemporaryError(f"reading the cluster: {error}", delay=RETRY_DELAY_S) from error


async def converge(spec: LockServiceSpec, uid: str) -> LockObservation:
    """One idempotent pass: ensure the cluster, write the settings, read the counts."""
    try:
        admin = await _admin(spec, uid)
    except NameTaken:
        return LockObservation(cluster_found=False, cluster_ready=False, name_taken=True)
    if admin is None:
        return LockObservation(cluster_found=False, cluster_ready=False)
    if await admin.cluster_status() is None:
        return LockObservation(cluster_found=True, cluster_ready=False)
    try:
        await admin.lock_namespace_put(namespace_settings_document(spec))
    except AdminError as error:
        ready = error.status != 503
        return LockObservation(True, ready, error_code=error.code, error_detail=str(error))
    except _TRANSPORT_ERRORS:
        return LockObservation(cluster_found=True, cluster_ready=False)
    try:
        listing = await admin.lock_list(spec.lock_namespace, STATUS_LOCKS_LISTED_MAX)
    except (AdminError, *_TRANSPORT_ERRORS):
        listing = None
    return LockObservation(True, True, applied=True, listing=listing)


def _patch_status(
    spec: LockServiceSpec,
    obs: LockObservation,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
) -> None:
    new = build_lock_status(
        spec,
        obs,
        generation=int(meta.get("generation") or 0),
        previous=dict(status),
        now=now_utc(),
    )
    for key, value in new.items():
        patch.status[key] = value


@kopf.on.create(GROUP, VERSION, LOCKSERVICE_PLURAL)
@kopf.on.update(GROUP, VERSION, LOCKSERVICE_PLURAL, field="spec")
@kopf.on.resume(GROUP, VERSION, LOCKSERVICE_PLURAL)
async def ensure_lockservice(
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    body: kopf.Body,
    logger: Logger,
    **_: Any,
) -> None:
    parsed = _parse(name, namespace, spec)
    async with CLIENTS.lock(uid):
        obs = await converge(parsed, uid)
    _patch_status(parsed, obs, meta, status, patch)
    if not obs.applied:
        reason = obs.error_code or (
            "cluster name taken"
            if obs.name_taken
            else "cluster not found"
            if not obs.cluster_found
            else "no leader"
        )
        raise kopf.TemporaryError(
            f"lock namespace {parsed.lock_namespace!r} not written yet: {reason}",
            delay=NOT_READY_DELAY_S,
        )
    kopf.info(body, reason="SettingsApplied", message=f"lock namespace {parsed.lock_namespace}")
    logger.info(
        "lock namespace %s written into %s", parsed.lock_namespace, parsed.attachment.cluster
    )


@kopf.timer(GROUP, VERSION, LOCKSERVICE_PLURAL, interval=LOCK_RECONCILE_INTERVAL_S)
async def reconcile_lockservice(
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    """Level-triggered: the settings are written again (idempotent), the status refreshed."""
    if meta.get("deletionTimestamp"):
        return
    parsed = _parse(name, namespace, spec)
    async with CLIENTS.lock(uid):
        obs = await converge(parsed, uid)
    _patch_status(parsed, obs, meta, status, patch)


@kopf.on.delete(GROUP, VERSION, LOCKSERVICE_PLURAL)
async def delete_lockservice(
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    body: kopf.Body,
    retry: int,
    logger: Logger,
    **_: Any,
) -> None:
    """Remove the lock namespace (its holders are released), then let the resource go."""
    parsed = _parse(name, namespace, spec)
    kube = CLIENTS.kube_client()
    async with CLIENTS.lock(uid):
        try:
            attach = parsed.attachment
            existing = await kube.get("ConsensusCluster", attach.namespace, attach.cluster)
            if attach.dedicated and existing is not None and not controlled_by(existing, uid):
                existing = None  # another object's cluster: not ours to touch
            admin = None
            if existing is not None:
                admin = await cluster_admin(kube, CLIENTS.http_client(), attach)
            removed = admin is not None and await admin.lock_namespace_delete(parsed.lock_namespace)
        except (KubeError, AdminError, *_TRANSPORT_ERRORS) as error:
            if parsed.attachment.dedicated or retry + 1 >= DELETE_ATTEMPTS_MAX:
                # A dedicated cluster goes with the resource; otherwise give up after a bound.
                kopf.warn(body, reason="NamespaceNotRemoved", message=str(error))
                logger.warning("lock namespace %s not removed: %s", parsed.lock_namespace, error)
                CLIENTS.locks.pop(uid, None)
                return
            raise kopf.TemporaryError(
                f"removing lock namespace: {error}", delay=NOT_READY_DELAY_S
            ) from error
    CLIENTS.locks.pop(uid, None)
    logger.info("lock namespace %s removed: %s", parsed.lock_namespace, removed)
