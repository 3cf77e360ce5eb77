"""kopf handlers for IdGenerator: thin shells over idgenerator.py and attach.py.

* create/update/resume: make the dedicated cluster if asked for, write the snowflake
  generator's definition through the cluster's API; `kopf.TemporaryError` while the
  cluster has no leader;
* a level-triggered timer: the same, idempotently, then a fresh status;
* delete: nothing is removed from the cluster (kopf's finalizer only stops the timer). The ids
  service keeps a generator's definition and its time high-water marks for good (it has
  no delete route, on purpose: forgetting the marks would let a re-created generator
  issue IDs again). An owned dedicated cluster goes by garbage collection, and with it
  the history (docs/operator.md).

Loaded by `python -m synod_operator` next to the ConsensusCluster handlers.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import kopf

from .admin import AdminClient, AdminError, Unreachable
from .attach import cluster_admin, controlled_by
from .handlers import CLIENTS, RETRY_DELAY_S, Logger
from .idgenerator import (
    IDGENERATOR_PLURAL,
    IdGeneratorSpec,
    IdObservation,
    build_id_status,
    dedicated_cluster_manifest,
    definition_document,
    parse_idgenerator,
)
from .kube import KubeError
from .spec import GROUP, VERSION, SpecError
from .status import now_utc

ID_RECONCILE_INTERVAL_S = 5.0
NOT_READY_DELAY_S = 5.0
_TRANSPORT_ERRORS = (Unreachable, aiohttp.ClientError, TimeoutError)


def _parse(name: str, namespace: str | None, spec: kopf.Spec) -> IdGeneratorSpec:
    if not namespace:
        raise kopf.PermanentError("an IdGenerator is namespaced")
    try:
        return parse_idgenerator(name, namespace, dict(spec))
    except SpecError as error:
        raise kopf.PermanentError(str(error)) from error


class NameTaken(Exception):
    """The dedicated cluster's name belongs to a ConsensusCluster this resource does not own."""


async def _admin(spec: IdGeneratorSpec, uid: str) -> AdminClient | None:
    attach = spec.attachment
    assert attach is not None, "uuidv7 has no cluster"
    kube = CLIENTS.kube_client()
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


async def converge(spec: IdGeneratorSpec, uid: str) -> IdObservation:
    """One idempotent pass: ensure the cluster, write the definition, read the counts."""
    if spec.attachment is None:
        return IdObservation(cluster_found=False, cluster_ready=False, applied=True)
    try:
        admin = await _admin(spec, uid)
    except NameTaken:
        return IdObservation(cluster_found=False, cluster_ready=False, name_taken=True)
    if admin is None:
        return IdObservation(cluster_found=False, cluster_ready=False)
    if await admin.cluster_status() is None:
        return IdObservation(cluster_found=True, cluster_ready=False)
    document = definition_document(spec)
    try:
        if document is not None:
            await admin.ids_define(spec.generator, document)
    except AdminError as error:
        ready = error.status != 503
        return IdObservation(True, ready, error_code=error.code, error_detail=str(error))
    except _TRANSPORT_ERRORS:
        return IdObservation(cluster_found=True, cluster_ready=False)
    try:
        listing = await admin.ids_list()
    except (AdminError, *_TRANSPORT_ERRORS):
        listing = None
    return IdObservation(True, True, applied=True, listing=listing)


def _patch_status(
    spec: IdGeneratorSpec,
    obs: IdObservation,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
) -> dict[str, Any]:
    new = build_id_status(
        spec,
        obs,
        generation=int(meta.get("generation") or 0),
        previous=dict(status),
        now=now_utc(),
    )
    for key, value in new.items():
        patch.status[key] = value
    return new


@kopf.on.create(GROUP, VERSION, IDGENERATOR_PLURAL)
@kopf.on.update(GROUP, VERSION, IDGENERATOR_PLURAL, field="spec")
@kopf.on.resume(GROUP, VERSION, IDGENERATOR_PLURAL)
async def ensure_idgenerator(
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
    new = _patch_status(parsed, obs, meta, status, patch)
    if not new["ready"]:
        reason = obs.error_code or (
            "cluster name taken"
            if obs.name_taken
            else "cluster not found"
            if not obs.cluster_found
            else "no leader"
        )
        if obs.error_code == "already-exists":
            # Another definition under this name is kept by the cluster for good: retrying
            # cannot help; the status says so and the timer keeps looking.
            kopf.warn(body, reason="DefinitionConflict", message=obs.error_detail)
            return
        raise kopf.TemporaryError(
            f"generator {parsed.generator!r} not ready yet: {reason}", delay=NOT_READY_DELAY_S
        )
    kopf.info(body, reason="Ready", message=f"{parsed.mode} generator {parsed.generator}")
    logger.info("%s generator %s ready", parsed.mode, parsed.generator)


@kopf.timer(GROUP, VERSION, IDGENERATOR_PLURAL, interval=ID_RECONCILE_INTERVAL_S)
async def reconcile_idgenerator(
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    """Level-triggered: the definition is written again (idempotent), the status refreshed."""
    if meta.get("deletionTimestamp"):
        return
    parsed = _parse(name, namespace, spec)
    async with CLIENTS.lock(uid):
        obs = await converge(parsed, uid)
    _patch_status(parsed, obs, meta, status, patch)


@kopf.on.delete(GROUP, VERSION, IDGENERATOR_PLURAL, optional=True)
async def forget_idgenerator(name: str, uid: str, logger: Logger, **_: Any) -> None:
    """Optional (never blocks deletion): the cluster keeps the definition and its marks."""
    CLIENTS.locks.pop(uid, None)
    logger.info("IdGenerator %s deleted; the cluster keeps its definition and marks", name)
