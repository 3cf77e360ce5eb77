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

from .admin import AdminClient
from .handlers import Logger
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
    ServiceResource,
    parse,
    register,
    remove,
)
from .spec import GROUP, VERSION

LOCK_RECONCILE_INTERVAL_S = 5.0


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
    await remove(
        LOCKSERVICE, parsed, uid, lambda admin: admin.lock_namespace_delete(parsed.lock_namespace),
        retry=retry, body=body, logger=logger, failure_reason="NamespaceNotRemoved",
    )  # fmt: skip
