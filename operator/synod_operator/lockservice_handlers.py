"""kopf handlers for LockService: thin shells over lockservice.py and service_handlers.py.

* create/update/resume and a level-triggered timer (service_handlers.py, shared by every
  service resource): make the dedicated cluster if asked for, write the namespace's
  settings through the cluster's API, refresh the status;
* delete (behind the operator's finalizer): remove the lock namespace, releasing its
  holders; an owned cluster then goes by garbage collection.

Loaded by `python -m synod_operator` next to the ConsensusCluster handlers.
"""

from __future__ import annotations

from typing import Any

import kopf

from .admin import AdminClient, AdminError
from .attach import cluster_admin, controlled_by
from .handlers import CLIENTS, Logger
from .kube import KubeError
from .lockservice import (
    LOCKSERVICE_PLURAL,
    STATUS_LOCKS_LISTED_MAX,
    LockServiceSpec,
    build_lock_status,
    dedicated_cluster_manifest,
    namespace_settings_document,
    parse_lockservice,
)
from .service_handlers import (
    NOT_READY_DELAY_S,
    TRANSPORT_ERRORS,
    ServiceResource,
    parse,
    register,
)
from .spec import GROUP, VERSION

LOCK_RECONCILE_INTERVAL_S = 5.0
# Deleting waits for an unreachable cluster this many attempts, then lets the resource go
# (a warning event says the namespace may remain).
DELETE_ATTEMPTS_MAX = 12


async def _write(admin: AdminClient, spec: LockServiceSpec) -> None:
    await admin.lock_namespace_put(namespace_settings_document(spec))


async def _read(admin: AdminClient, spec: LockServiceSpec) -> dict[str, Any] | None:
    return await admin.lock_list(spec.lock_namespace, STATUS_LOCKS_LISTED_MAX)


LOCKSERVICE = ServiceResource(
    kind="LockService",
    plural=LOCKSERVICE_PLURAL,
    parse=parse_lockservice,
    attachment=lambda spec: spec.attachment,
    cluster_manifest=dedicated_cluster_manifest,
    write=_write,
    read=_read,
    build_status=build_lock_status,
    describe=lambda spec: f"lock namespace {spec.lock_namespace!r} in {spec.attachment.cluster}",
    ready_reason="SettingsApplied",
)
register(LOCKSERVICE, LOCK_RECONCILE_INTERVAL_S)


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
    parsed = parse(LOCKSERVICE, name, namespace, spec)
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
        except (KubeError, AdminError, *TRANSPORT_ERRORS) as error:
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
